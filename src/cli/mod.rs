//! Command-line definitions and the glue from options to the library: one module per
//! subcommand, the option definitions in [`args`].

mod analyze;
mod args;
mod config;
mod fleet;
mod generate;
mod live;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use anyhow::{Context, Result, bail};

use args::*;

use kavwatch::alert::deliver::{Delivery, DeliveryConfig};
use kavwatch::alert::format::Format;
use kavwatch::output::files;
use kavwatch::output::html::to_html;
use kavwatch::output::merge::merge;
use kavwatch::output::report::Report;
use kavwatch::proto::name::normalize_name;
use kavwatch::rules::load::{load, parse_instant};
use kavwatch::rules::matcher::Rules;

pub fn run() -> Result<ExitCode> {
    let merged = config::parse(std::env::args_os().collect())?;
    match merged.cli.command {
        Command::Analyze(a) => analyze::analyze(a),
        Command::Live(a) => live::live(a, merged.reread),
        Command::Rules(RulesCommand::Check { path }) => rules_check(path.as_deref()),
        Command::Rules(RulesCommand::Match { rules, names }) => rules_match(rules.rules.as_deref(), &names),
        Command::Report(ReportCommand::Merge { reports, output }) => report_merge(&reports, &output),
        Command::Config(ConfigCommand::Check { path }) => config::check(path.as_deref()),
        Command::Config(ConfigCommand::Show { path, options }) => config::show(path.as_deref(), &options),
        Command::Fleet(FleetCommand::Init(a)) => fleet::init(a),
        Command::Fleet(FleetCommand::Collect(a)) => fleet::collect(*a),
        Command::Generate(what) => generate::generate(what),
    }
}

pub(crate) fn load_rules(path: Option<&Path>) -> Result<Rules> {
    Ok(Rules::new(load(path)?))
}

pub(crate) fn rules_check(path: Option<&Path>) -> Result<ExitCode> {
    let rules = load_rules(path)?;
    for v in &rules.set.vendors {
        let mine = rules.set.rules.iter().filter(|r| rules.set.vendors[r.vendor].file == v.file);
        let (n, names) = mine.fold((0, 0), |(n, p), r| (n + 1, p + r.patterns.len()));
        println!(
            "{}: ok: vendor {} ({}), version {}, cutoff {}, {n} rules, {names} names",
            v.file, v.id, v.name, v.version, v.cutoff
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn rules_match(path: Option<&Path>, names: &[String]) -> Result<ExitCode> {
    let rules = load_rules(path)?;
    for raw in names {
        let name = normalize_name(raw.as_bytes());
        match rules.find_pattern(&name) {
            Some((r, pattern)) => println!(
                "{name}\t{}\t{}\t{} {}",
                r.category.as_str(),
                r.id,
                format!("{:?}", r.kind).to_lowercase(),
                pattern
            ),
            None => println!("{name}\t-\t(no rule)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn create(path: &Path) -> Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::BufWriter::new(io::stdout().lock())));
    }
    let f = files::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(io::BufWriter::new(f)))
}

/// The report in the format its file name asks for.
pub(crate) fn render(report: &Report, path: &Path) -> String {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("csv") => report.to_csv(),
        Some("html") | Some("htm") => to_html(report),
        _ => report.to_json(),
    }
}

/// Writes a whole file atomically ([`files::write_atomic`]); "-" is stdout.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        let mut w = io::stdout().lock();
        return w.write_all(text.as_bytes()).and_then(|_| w.flush()).context("writing to stdout");
    }
    files::write_atomic(path, text.as_bytes(), true).with_context(|| format!("cannot create {}", path.display()))
}

/// Writes under a temporary name, then renames: a reader never sees half a report, and a link
/// planted in the directory is never followed ([`files::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    files::write_atomic(path, text.as_bytes(), true).map_err(|e| format!("writing report {}: {e}", path.display()))
}

/// Drops root for NAME (its uid, gid, no supplementary groups).
pub(crate) fn drop_privileges(name: &str) -> Result<()> {
    let cname = std::ffi::CString::new(name).context("--user: bad name")?;
    // SAFETY: getpwnam returns null or a pointer to a static record we read at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        bail!("--user {name}: no such user");
    }
    // SAFETY: pw is non-null (checked above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    // SAFETY: plain system calls on integers; order matters (groups and gid before uid).
    let ok = unsafe { libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(gid) == 0 && libc::setuid(uid) == 0 };
    if !ok {
        bail!("--user {name}: cannot switch user: {}", io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn report_merge(inputs: &[PathBuf], output: &Path) -> Result<ExitCode> {
    let mut reports = Vec::new();
    for p in inputs {
        let text = fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let r: Report =
            serde_json::from_str(&text).with_context(|| format!("{}: not a kavwatch JSON report", p.display()))?;
        reports.push(r);
    }
    let merged = merge(reports)?;
    write_file(output, &render(&merged, output))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn default_sensor_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kavwatch".into())
}

/// `$STATE_DIRECTORY` (systemd), else /var/lib/kavwatch as root, else the XDG state directory.
pub(crate) fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several, separated by ':'.
        let first = d.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return PathBuf::from(first);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/kavwatch");
    }
    match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
        (Some(x), _) if !x.is_empty() => PathBuf::from(x).join("kavwatch"),
        (_, Some(h)) => PathBuf::from(h).join(".local/state/kavwatch"),
        _ => PathBuf::from(".kavwatch-state"),
    }
}

/// Checks and starts the alert destinations (before any packet is read, so mistakes show at once).
pub(crate) fn start_alerts(a: &AlertArgs, sensor: &str, state_dir: Option<&Path>) -> Result<Option<Delivery>> {
    if a.urls.is_empty() {
        return Ok(None);
    }
    let format: Format = a.alert_format.parse().map_err(anyhow::Error::msg)?;
    let spool_dir = a
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.map_or_else(default_state_dir, Path::to_path_buf).join("spool"));
    let cfg = DeliveryConfig {
        format,
        facility: a.syslog_facility,
        hostname: sensor.to_string(),
        spool_dir,
        spool_max_bytes: a.spool_max_bytes,
        ca_file: a.alert_ca.clone(),
        file_max_bytes: a.alert_file_max_bytes,
        file_keep: 5,
        drain_timeout: a.alert_drain_timeout,
    };
    Ok(Some(Delivery::start(&a.urls, &cfg)?))
}

/// The alert engine of a command with `--alert` options: its interval and policy, alert ids
/// made with `sensor`.
pub(crate) fn alert_engine(
    a: &AlertArgs,
    sensor: &str,
    cutoff_override: Option<i64>,
) -> kavwatch::alert::engine::AlertEngine {
    kavwatch::alert::engine::AlertEngine::new(kavwatch::alert::engine::EngineConfig {
        interval_ns: a.alert_interval.as_nanos().min(i64::MAX as u128) as i64,
        alert_all: a.alert_all,
        sensor: sensor.to_string(),
        cutoff_override,
    })
}

/// SIGINT and SIGTERM stop reading (the analysis of what was read goes on and is reported);
/// a second one ends the process at once.
/// Returns the stop flag and the signal that set it.
pub(crate) fn stop_on_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        let installed = signal_hook::flag::register_conditional_shutdown(sig, code, stop.clone())
            .and_then(|_| signal_hook::flag::register_usize(sig, which.clone(), sig as usize))
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()));
        installed.context("installing a signal handler")?;
    }
    Ok((stop, which))
}

pub(crate) fn parse_cutoff(s: Option<&str>) -> Result<Option<i64>> {
    s.map(|s| {
        parse_instant(s)
            .with_context(|| format!("--cutoff {s:?} is not an RFC 3339 instant (e.g. 2024-09-29T04:00:00Z)"))
    })
    .transpose()
}
