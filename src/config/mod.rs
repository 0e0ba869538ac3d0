//! Configuration files: one flat TOML table whose keys are the long option names of a
//! subcommand (`report-interval = "5m"`, `interface = ["eth1"]`, `no-promisc = true`), so
//! every option is a key and nothing is kept in two lists. A file is read into [`Setting`]s
//! with the line of each key, then each setting is checked with the option's own clap value
//! parser, so a file accepts exactly what the command line accepts and its errors name the
//! file, line and key. The caller turns the valid settings into `--key=value` arguments
//! placed before the command line's own, which therefore wins.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use toml::de::{DeTable, DeValue};

/// Larger files are refused before parsing: a configuration is a few KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Longest value (a path, a filter expression, a URL).
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most values of one repeatable option.
pub const MAX_VALUES: usize = 256;
/// Options that have no place in a file: they would name another file or print and exit.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// One error in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("{path}:{line}: {key}: {message}")]
    Key { path: String, line: usize, key: String, message: String },
}

/// A key and its values as text, as they would be written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
    pub value: SettingValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    Bool(bool),
    One(String),
    Many(Vec<String>),
}

/// A file read into settings (not yet checked against any subcommand).
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
    /// Keys whose value no option could take (a table, an array of arrays, a control character).
    pub errors: Vec<ConfigError>,
}

impl ConfigFile {
    /// Reads and parses a file; every error found is returned, not only the first.
    pub fn read(path: &Path) -> Result<ConfigFile, Vec<ConfigError>> {
        let shown = path.display().to_string();
        let file_err = |message: String| vec![ConfigError::File { path: shown.clone(), message }];
        let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(file_err("not a regular file".into()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(file_err(format!("{} bytes: larger than {MAX_FILE_BYTES}, not a configuration", meta.len())));
        }
        let bytes = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| file_err(format!("not UTF-8: {e}")))?;
        ConfigFile::parse(path, &text)
    }

    /// Parses the text of a file named `path` (the name is used in errors only).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Vec<ConfigError>> {
        let shown = path.display().to_string();
        let (table, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            return Err(errors
                .iter()
                .map(|e| ConfigError::Syntax {
                    path: shown.clone(),
                    line: e.span().map_or(1, |s| line_of(text, s.start)),
                    message: e.message().trim().replace('\n', " "),
                })
                .collect());
        }
        let mut settings = Vec::new();
        let mut errors = Vec::new();
        for (key, value) in table.get_ref() {
            let line = line_of(text, key.span().start);
            let key = key.get_ref().to_string();
            match setting_value(value.get_ref()) {
                Ok(value) => settings.push(Setting { key, line, value }),
                Err(message) => errors.push(ConfigError::Key { path: shown.clone(), line, key, message }),
            }
        }
        settings.sort_by_key(|s| s.line);
        Ok(ConfigFile { path: path.to_path_buf(), settings, errors })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn setting_value(v: &DeValue<'_>) -> Result<SettingValue, String> {
    match v {
        DeValue::Boolean(b) => Ok(SettingValue::Bool(*b)),
        DeValue::Array(items) => {
            if items.len() > MAX_VALUES {
                return Err(format!("{} values: at most {MAX_VALUES}", items.len()));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Array(_) | DeValue::Table(_) => return Err("an array of arrays or tables".into()),
                    scalar => out.push(scalar_text(scalar)?),
                }
            }
            Ok(SettingValue::Many(out))
        }
        DeValue::Table(_) => Err("a table: the file is one flat list of `option-name = value` lines".into()),
        scalar => scalar_text(scalar).map(SettingValue::One),
    }
}

/// A scalar as command-line text, refusing what no option takes.
fn scalar_text(v: &DeValue<'_>) -> Result<String, String> {
    let s = match v {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| format!("integer {} out of range", i.as_str()))?
            .to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) | DeValue::Table(_) => unreachable!("scalars only"),
    };
    if s.len() > MAX_VALUE_BYTES {
        return Err(format!("a value of {} bytes: at most {MAX_VALUE_BYTES}", s.len()));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!("the value holds the control character {:?}", c));
    }
    Ok(s)
}

/// A setting checked against a subcommand: the arguments it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The clap id of the option (to ask whether the command line gave it too).
    pub id: String,
    pub key: String,
    pub line: usize,
    /// `--key=value`, once per value; empty for a flag set to false.
    pub args: Vec<OsString>,
}

/// What a file means for one subcommand.
#[derive(Debug, Default)]
pub struct Resolution {
    pub settings: Vec<Resolved>,
    /// Keys that are options of another subcommand only (e.g. `interface` for `analyze`).
    pub ignored: Vec<String>,
    pub errors: Vec<ConfigError>,
}

/// The options of `cmd` that may be keys, by long name.
pub fn keys(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| a.get_long().is_some_and(|l| !NOT_KEYS.contains(&l)))
}

/// Checks every setting of `file` with the value parsers of `cmd`'s options. A key that is not an
/// option of `cmd` is an error unless it is one of `others` (then it is only ignored).
pub fn resolve(file: &ConfigFile, cmd: &Command, others: &[&Command]) -> Resolution {
    let shown = file.path.display().to_string();
    let mut r = Resolution { errors: file.errors.clone(), ..Resolution::default() };
    let mut seen: Vec<&str> = Vec::new();
    for s in &file.settings {
        let err = |message: String| ConfigError::Key { path: shown.clone(), line: s.line, key: s.key.clone(), message };
        if NOT_KEYS.contains(&s.key.as_str()) {
            r.errors.push(err("not an option a configuration file can set".into()));
            continue;
        }
        let Some(arg) = keys(cmd).find(|a| a.get_long() == Some(s.key.as_str())) else {
            if others.iter().any(|o| keys(o).any(|a| a.get_long() == Some(s.key.as_str()))) {
                r.ignored.push(s.key.clone());
            } else {
                r.errors.push(err(format!("unknown key{}", suggestion(&s.key, cmd, others))));
            }
            continue;
        };
        if seen.contains(&s.key.as_str()) {
            r.errors.push(err("given twice".into()));
            continue;
        }
        seen.push(&s.key);
        match arguments(arg, &s.value) {
            Ok(args) => {
                r.settings.push(Resolved { id: arg.get_id().to_string(), key: s.key.clone(), line: s.line, args })
            }
            Err(m) => r.errors.push(err(m)),
        }
    }
    r.errors.sort_by_key(|e| match e {
        ConfigError::File { .. } => 0,
        ConfigError::Syntax { line, .. } | ConfigError::Key { line, .. } => *line,
    });
    r
}

/// The command-line arguments a value stands for, after checking it as the command line would.
fn arguments(arg: &Arg, value: &SettingValue) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().expect("keys have long names");
    let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let values: Vec<&String> = match value {
        SettingValue::Bool(b) if flag => {
            // A flag is given or not: `true` gives it, `false` leaves the default.
            let on = *b == matches!(arg.get_action(), ArgAction::SetTrue);
            return Ok(if on { vec![format!("--{long}").into()] } else { Vec::new() });
        }
        _ if flag => return Err("a flag: true or false".into()),
        SettingValue::Bool(b) => return Err(format!("{b} is not a value of this option ({})", value_hint(arg))),
        SettingValue::One(v) => vec![v],
        SettingValue::Many(vs) if repeatable => vs.iter().collect(),
        SettingValue::Many(_) => return Err("takes one value, not an array".into()),
    };
    // The option alone in a command of its own: its value parser, possible values and ranges.
    let alone = Command::new("kavwatch")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(arg.clone().required(false).num_args(1).action(ArgAction::Append));
    let out: Vec<OsString> = values.iter().map(|v| OsString::from(format!("--{long}={v}"))).collect();
    alone.try_get_matches_from(&out).map_err(|e| clap_message(&e))?;
    Ok(out)
}

fn value_hint(arg: &Arg) -> String {
    arg.get_value_names().and_then(|n| n.first()).map_or_else(|| "a value".into(), |n| n.to_string())
}

/// clap's message without its "error:" prefix, usage and tips: one line.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid value");
    first.trim().trim_start_matches("error:").trim().to_string()
}

/// ", did you mean `x`?" for a key close to an option's name.
fn suggestion(key: &str, cmd: &Command, others: &[&Command]) -> String {
    let all = std::iter::once(cmd).chain(others.iter().copied());
    let best =
        all.flat_map(|c| keys(c).filter_map(|a| a.get_long())).map(|l| (distance(key, l), l)).min_by_key(|(d, _)| *d);
    match best {
        Some((d, l)) if d <= 2 || l.starts_with(key) => format!(", did you mean `{l}`?"),
        _ => String::new(),
    }
}

/// Levenshtein distance, for short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The effective value of one option, for `config show`.
pub struct Effective {
    pub key: String,
    pub values: Vec<String>,
    pub repeatable: bool,
    pub flag: bool,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    File { path: String, line: usize },
    Default,
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::CommandLine => f.write_str("command line"),
            Source::File { path, line } => write!(f, "{path}:{line}"),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("not set"),
        }
    }
}

/// Renders effective values as a configuration file that reads back to the same values.
pub fn render(effective: &[Effective]) -> String {
    let mut out = String::new();
    for e in effective {
        let value = if e.flag {
            e.values.first().map_or("false".to_string(), |v| v.clone())
        } else if e.repeatable {
            let items: Vec<String> = e.values.iter().map(|v| toml_scalar(v)).collect();
            format!("[{}]", items.join(", "))
        } else if let Some(v) = e.values.first() {
            toml_scalar(v)
        } else {
            out.push_str(&format!("# {} =   # {}\n", e.key, e.source));
            continue;
        };
        out.push_str(&format!("{} = {value}   # {}\n", e.key, e.source));
    }
    out
}

/// Integers as integers (when they read back to the same text), everything else as a string.
fn toml_scalar(v: &str) -> String {
    match v.parse::<i64>() {
        Ok(n) if n.to_string() == v => v.to_string(),
        _ => toml::Value::String(v.to_string()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command, value_parser};

    fn cmd() -> Command {
        Command::new("live")
            .arg(Arg::new("interfaces").long("interface").action(ArgAction::Append))
            .arg(Arg::new("workers").long("workers").value_parser(value_parser!(u16).range(1..=256)))
            .arg(Arg::new("no_promisc").long("no-promisc").action(ArgAction::SetTrue))
            .arg(Arg::new("engine").long("engine").value_parser(["afpacket", "pcap"]))
            .arg(Arg::new("config").long("config"))
    }

    fn resolve_text(text: &str) -> Resolution {
        let f = ConfigFile::parse(Path::new("k.toml"), text).expect("parses");
        resolve(&f, &cmd(), &[&Command::new("analyze").arg(Arg::new("jobs").long("jobs"))])
    }

    #[test]
    fn values_become_arguments() {
        let r = resolve_text("interface = [\"eth1\", \"eth2\"]\nworkers = 4\nno-promisc = true\nengine = \"pcap\"\n");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let args: Vec<OsString> = r.settings.iter().flat_map(|s| s.args.clone()).collect();
        assert_eq!(args, ["--interface=eth1", "--interface=eth2", "--workers=4", "--no-promisc", "--engine=pcap"]);
        assert_eq!(r.settings[1].line, 2);
    }

    #[test]
    fn errors_name_line_and_key() {
        let r =
            resolve_text("\n\nworkers = 0\nengine = \"dpdk\"\nwokers = 2\njobs = 3\nconfig = \"x\"\nno-promisc = 1\n");
        let msgs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(r.errors.len(), 5, "{msgs:?}");
        assert!(msgs[0].starts_with("k.toml:3: workers: "), "{msgs:?}");
        assert!(msgs[1].starts_with("k.toml:4: engine: ") && msgs[1].contains("dpdk"), "{msgs:?}");
        assert!(msgs[2].contains("k.toml:5: wokers: unknown key, did you mean `workers`?"), "{msgs:?}");
        assert!(msgs[3].starts_with("k.toml:7: config: "), "{msgs:?}");
        assert!(msgs[4].starts_with("k.toml:8: no-promisc: a flag"), "{msgs:?}");
        assert_eq!(r.ignored, ["jobs"]);
    }

    #[test]
    fn hostile_files_are_refused() {
        for (text, needle) in [
            ("workers = 99999999999999999999999999999999999999999", "out of range"),
            ("engine = \"pcap\\u0000\"", "control character"),
            ("[live]\nworkers = 2", "table"),
            ("interface = [[\"a\"]]", "array of arrays"),
            ("workers = 2\nworkers = 3", "duplicate"),
            ("workers = ", ""),
        ] {
            let errs = match ConfigFile::parse(Path::new("k.toml"), text) {
                Err(e) => e,
                Ok(f) => resolve(&f, &cmd(), &[]).errors,
            };
            assert!(!errs.is_empty(), "{text:?} accepted");
            let all: String = errs.iter().map(|e| e.to_string()).collect();
            assert!(all.to_lowercase().contains(needle), "{text:?}: {all}");
        }
        let long = format!("engine = \"{}\"", "a".repeat(MAX_VALUE_BYTES + 1));
        assert!(!resolve(&ConfigFile::parse(Path::new("k.toml"), &long).unwrap(), &cmd(), &[]).errors.is_empty());
    }

    #[test]
    fn rendered_values_read_back() {
        let eff = vec![
            Effective {
                key: "interface".into(),
                values: vec!["eth1".into(), "a\"b".into()],
                repeatable: true,
                flag: false,
                source: Source::CommandLine,
            },
            Effective {
                key: "workers".into(),
                values: vec!["4".into()],
                repeatable: false,
                flag: false,
                source: Source::Default,
            },
            Effective {
                key: "engine".into(),
                values: vec!["007".into()],
                repeatable: false,
                flag: false,
                source: Source::Default,
            },
            Effective {
                key: "no-promisc".into(),
                values: vec!["true".into()],
                repeatable: false,
                flag: true,
                source: Source::Default,
            },
        ];
        let text = render(&eff);
        let f = ConfigFile::parse(Path::new("k.toml"), &text).expect("reads back");
        let vals: Vec<SettingValue> = f.settings.into_iter().map(|s| s.value).collect();
        assert_eq!(
            vals,
            [
                SettingValue::Many(vec!["eth1".into(), "a\"b".into()]),
                SettingValue::One("4".into()),
                SettingValue::One("007".into()),
                SettingValue::Bool(true)
            ]
        );
    }
}
