//! `--config PATH` for `live` and `analyze`, and `kavwatch config check|show`: the file's
//! settings ([`kavwatch::config`]) become `--key=value` arguments placed right after the
//! subcommand, for every option the command line did not give itself, and the whole is
//! parsed again by clap. So the command line wins, and a value in a file is checked exactly as
//! on the command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};

use kavwatch::config::{self, ConfigFile, Effective, Resolved, Source};

use super::args::Cli;

/// Read by `live` when it exists and no `--config` is given.
pub(crate) const DEFAULT_PATH: &str = "/etc/kavwatch/kavwatch.toml";
/// Subcommands that read a configuration file.
const CONFIGURABLE: [&str; 2] = ["live", "analyze"];

/// The command line with a configuration file merged in.
pub(crate) struct Merged {
    pub(crate) cli: Cli,
    /// What `live` needs to read the file again on SIGHUP.
    pub(crate) reread: Option<Reread>,
}

/// The original arguments and the file they named, to merge again.
#[derive(Clone)]
pub(crate) struct Reread {
    pub(crate) argv: Vec<OsString>,
    pub(crate) path: PathBuf,
    /// The subcommand's matches after merging, to tell what a new file changes.
    pub(crate) matches: ArgMatches,
}

/// Parses the command line, with the configuration file's settings for `live` and `analyze`.
/// Errors in the file are returned (one line each); errors on the command line exit as clap does.
pub(crate) fn parse(argv: Vec<OsString>) -> Result<Merged> {
    let (matches, sub, path, _) = merge(&argv, false)?;
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let reread = path.map(|path| Reread { argv, path, matches: sub });
    Ok(Merged { cli, reread })
}

/// Merges again (SIGHUP): the new matches of the subcommand, or the file's errors.
pub(crate) fn remerge(r: &Reread) -> Result<(Cli, ArgMatches)> {
    let (matches, sub, _, _) = merge(&r.argv, false)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{}", first_line(&e)))?;
    Ok((cli, sub))
}

/// Every key whose value differs between two merged matches of `live`.
pub(crate) fn changed_keys(old: &ArgMatches, new: &ArgMatches) -> Vec<String> {
    let cmd = live_command();
    config::keys(&cmd)
        .filter(|a| raw(old, a.get_id().as_str()) != raw(new, a.get_id().as_str()))
        .map(|a| a.get_long().expect("keys have long names").to_string())
        .collect()
}

/// The whole command, its matches, the subcommand's, the file read (if any) and its settings.
fn merge(argv: &[OsString], relaxed: bool) -> Result<(ArgMatches, ArgMatches, Option<PathBuf>, Vec<Resolved>)> {
    let first = relax(Cli::command()).try_get_matches_from(argv).unwrap_or_else(|e| {
        // Let clap say what is wrong with the full definitions (required options included).
        Cli::command().try_get_matches_from(argv).err().unwrap_or(e).exit()
    });
    let Some((name, sub)) = first.subcommand().filter(|(n, _)| CONFIGURABLE.contains(n)) else {
        let m = Cli::command().try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
        return Ok((m, ArgMatches::default(), None, Vec::new()));
    };
    let path = match sub.get_one::<PathBuf>("config") {
        Some(p) => Some(p.clone()),
        None if name == "live" && Path::new(DEFAULT_PATH).exists() => Some(PathBuf::from(DEFAULT_PATH)),
        None => None,
    };
    let mut from_file = Vec::new();
    let mut argv = argv.to_vec();
    if let Some(path) = &path {
        let file = read(path)?;
        let cmd = Cli::command();
        let this = cmd.find_subcommand(name).expect("configurable subcommands exist");
        let others: Vec<&Command> =
            CONFIGURABLE.iter().filter(|n| **n != name).filter_map(|n| cmd.find_subcommand(n)).collect();
        let r = config::resolve(&file, this, &others);
        if !r.errors.is_empty() {
            bail!("{}", r.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\nkavwatch: "));
        }
        from_file =
            r.settings.into_iter().filter(|s| sub.value_source(&s.id) != Some(ValueSource::CommandLine)).collect();
        let at = argv.iter().skip(1).position(|a| a == name).map_or(argv.len(), |i| i + 2);
        argv.splice(at..at, from_file.iter().flat_map(|s| s.args.iter().cloned()));
    }
    let cmd = if relaxed { relax(Cli::command()) } else { Cli::command() };
    let matches = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand_matches(name).cloned().unwrap_or_default();
    Ok((matches, sub, path, from_file))
}

fn read(path: &Path) -> Result<ConfigFile> {
    ConfigFile::read(path).map_err(|errs| {
        anyhow::anyhow!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\nkavwatch: "))
    })
}

/// The definitions with no required argument in `live` and `analyze`, so the file can be read
/// before the file's values are known (`interface` may come from it).
fn relax(cmd: Command) -> Command {
    CONFIGURABLE.iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| {
            let ids: Vec<_> = sub.get_arguments().filter(|a| a.is_required_set()).map(|a| a.get_id().clone()).collect();
            ids.into_iter().fold(sub, |sub, id| sub.mut_arg(id, |a| a.required(false)))
        })
    })
}

fn live_command() -> Command {
    Cli::command().find_subcommand("live").expect("live exists").clone()
}

fn raw(m: &ArgMatches, id: &str) -> Vec<String> {
    m.get_raw(id).map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string()
}

/// `kavwatch config check [PATH]`: every error with its line and key, for `live` and `analyze`.
pub(crate) fn check(path: Option<&Path>) -> Result<ExitCode> {
    let path = path.unwrap_or(Path::new(DEFAULT_PATH));
    let file = read(path)?;
    let cmd = Cli::command();
    let live = cmd.find_subcommand("live").expect("live exists");
    let analyze = cmd.find_subcommand("analyze").expect("analyze exists");
    let r = config::resolve(&file, live, &[analyze]);
    if !r.errors.is_empty() {
        for e in &r.errors {
            eprintln!("kavwatch: {e}");
        }
        return Ok(ExitCode::from(1));
    }
    let also: Vec<&str> = r.ignored.iter().map(String::as_str).collect();
    println!(
        "{}: ok: {} settings for live{}",
        path.display(),
        r.settings.len(),
        if also.is_empty() { String::new() } else { format!(", and {} for analyze only", also.join(", ")) }
    );
    Ok(ExitCode::SUCCESS)
}

/// `kavwatch config show [PATH] [-- LIVE OPTIONS]`: the effective configuration of `live`, as a
/// file that reads back to the same values, each line saying where its value came from.
pub(crate) fn show(path: Option<&Path>, extra: &[String]) -> Result<ExitCode> {
    let mut argv: Vec<OsString> = vec!["kavwatch".into(), "live".into()];
    let path = path.map(Path::to_path_buf).or_else(|| Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()));
    if let Some(p) = &path {
        argv.extend(["--config".into(), p.clone().into_os_string()]);
    }
    argv.extend(extra.iter().map(OsString::from));
    let (_, sub, file, from_file) = merge(&argv, true)?;
    let cmd = live_command();
    let effective: Vec<Effective> = config::keys(&cmd)
        .map(|a| {
            let id = a.get_id().as_str();
            let source = match sub.value_source(id) {
                _ if from_file.iter().any(|s| s.id == id) => {
                    let s = from_file.iter().find(|s| s.id == id).expect("found");
                    Source::File {
                        path: file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                        line: s.line,
                    }
                }
                Some(ValueSource::CommandLine) => Source::CommandLine,
                Some(_) => Source::Default,
                None => Source::Unset,
            };
            Effective {
                key: a.get_long().expect("keys have long names").to_string(),
                values: raw(&sub, id),
                repeatable: matches!(a.get_action(), clap::ArgAction::Append),
                flag: matches!(a.get_action(), clap::ArgAction::SetTrue),
                source,
            }
        })
        .collect();
    println!(
        "# The effective configuration of `kavwatch live`{}",
        match &file {
            Some(p) => format!(" with {}", p.display()),
            None => " (no configuration file)".into(),
        }
    );
    print!("{}", config::render(&effective));
    Ok(ExitCode::SUCCESS)
}
