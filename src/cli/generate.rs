//! `kavwatch generate`: man pages, shell completions and the default configuration file, all
//! derived from the clap definitions in [`super::args`] (nothing here is written by hand, so
//! an option added there shows up in all three).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory, Subcommand};
use clap_complete::Shell;

use super::args::Cli;

#[derive(Subcommand)]
pub(crate) enum GenerateCommand {
    /// Write man pages to DIR: kavwatch.1 and one per subcommand (kavwatch-live.1,
    /// kavwatch-rules-check.1, ...).
    Man {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write bash, zsh and fish completions to DIR (kavwatch.bash, _kavwatch, kavwatch.fish).
    Completions {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the default configuration file (/etc/kavwatch/kavwatch.toml): every option of
    /// `live` with its help and default, all commented out.
    Config,
}

pub(crate) fn generate(what: GenerateCommand) -> Result<ExitCode> {
    match what {
        GenerateCommand::Man { dir } => {
            for page in man_pages(&dir)? {
                println!("{}", page.display());
            }
        }
        GenerateCommand::Completions { dir } => {
            for file in completions(&dir)? {
                println!("{}", file.display());
            }
        }
        GenerateCommand::Config => print!("{}", default_config()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages into `dir`; returns their paths, sorted.
pub(crate) fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Pages are named after the display name clap builds (kavwatch-rules-check), as git's are.
    clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("writing man pages to {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

/// Writes the bash, zsh and fish completion scripts into `dir`; returns their paths.
pub(crate) fn completions(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cmd, "kavwatch", dir)
                .with_context(|| format!("writing {shell} completions to {}", dir.display()))
        })
        .collect()
}

/// Options of `live` that have no place in a file.
const NOT_IN_FILE: &[&str] = &["help", "version", "config"];

/// The default /etc/kavwatch/kavwatch.toml: every option of `live` (from its clap definition)
/// as a commented-out key = default line under its help text.
pub(crate) fn default_config() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let live = cmd.find_subcommand("live").expect("the live subcommand");
    let mut out = String::from(HEADER);
    let mut heading: Option<&str> = None;
    for arg in live.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_positional() || NOT_IN_FILE.contains(&long) {
            continue;
        }
        if arg.get_help_heading() != heading {
            heading = arg.get_help_heading();
            if let Some(h) = heading {
                let _ = write!(out, "\n# ---- {h} ----\n");
            }
        }
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        for line in wrap(&help, 94) {
            let _ = writeln!(out, "# {line}");
        }
        let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let placeholder = arg.get_value_names().and_then(|n| n.first()).map_or("VALUE".to_string(), |n| n.to_string());
        let value = match arg.get_action() {
            ArgAction::SetTrue => "false".to_string(),
            ArgAction::SetFalse => "true".to_string(),
            ArgAction::Append => {
                format!("[{}]", defaults.iter().map(|d| toml_scalar(d)).collect::<Vec<_>>().join(", "))
            }
            _ if !defaults.is_empty() => toml_scalar(&defaults[0]),
            _ => {
                let _ = writeln!(out, "# (no default)");
                toml::Value::String(placeholder).to_string()
            }
        };
        let _ = writeln!(out, "# {long} = {value}");
    }
    out
}

const HEADER: &str = "\
# /etc/kavwatch/kavwatch.toml: configuration of `kavwatch live` (also read by
# `kavwatch analyze --config FILE` for the options the two share).
#
# Keys are the long option names of `kavwatch live` (see kavwatch-live(1)), with their dashes;
# options given on the command line override the values here. Every line below is commented
# out and shows the built-in default: uncomment and edit the ones you want to change.
# Repeatable options take a list, e.g. interface = [\"eth1\", \"eth2\"].
#
# `kavwatch config check` validates this file; `kavwatch config show` prints the effective
# configuration (file plus command line).
# This file is generated by `kavwatch generate config`.
";

/// A default value as TOML: an integer when it is all digits, else a quoted string.
fn toml_scalar(v: &str) -> String {
    match v.parse::<i64>() {
        Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
        _ => toml::Value::String(v.to_string()).to_string(),
    }
}

/// Words of `text` in lines of at most `width` characters (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}
