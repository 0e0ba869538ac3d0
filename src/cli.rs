//! Command-line definitions and the glue from options to the library.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use kavwatch::capture::expand_inputs;
use kavwatch::host::{Verdict, aggregate};
use kavwatch::output::events::write_events;
use kavwatch::output::html::to_html;
use kavwatch::output::merge::merge;
use kavwatch::output::report::Report;
use kavwatch::pipeline::{self, Options};
use kavwatch::proto::name::normalize_name;
use kavwatch::rules::load::{load, parse_instant};
use kavwatch::rules::matcher::Rules;
use kavwatch::worker::Limits;

#[derive(Parser)]
#[command(
    name = "kavwatch",
    version,
    about = "Finds hosts still talking to Kaspersky update, telemetry, activation and management servers after the US ban (BIS, 89 FR 52434)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse pcap / pcapng files (or directories of them, or - for stdin) and report per host.
    Analyze(AnalyzeArgs),
    /// Check rules files and try names against them.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Work with JSON reports.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Merge the JSON reports of several sensors or runs into one (hosts joined by VLAN + IP).
    Merge {
        /// JSON reports written by `analyze --report X.json`.
        #[arg(required = true, value_name = "REPORT")]
        reports: Vec<PathBuf>,
        /// Output: JSON, or CSV / HTML when the name ends in .csv / .html (- for stdout).
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
}

#[derive(Args)]
struct RulesArg {
    /// Rules file or directory of .toml files [default: the shipped rules/kaspersky.toml].
    #[arg(long, value_name = "PATH")]
    rules: Option<PathBuf>,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Capture files, directories (recursed in name order) or - for standard input.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    rules: RulesArg,
    /// Override the rules' cutoff instant (RFC 3339, e.g. 2024-09-29T04:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    cutoff: Option<String>,
    /// Worker threads [default: available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Write one JSON line per observation to PATH (- for stdout).
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// Write the host report to PATH: JSON, or CSV / HTML when PATH ends in .csv / .html.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// This sensor's name in reports [default: the host name].
    #[arg(long, value_name = "NAME")]
    sensor_name: Option<String>,
    /// Exit with status 3 when any host is active after the cutoff.
    #[arg(long)]
    fail_on_active: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Most TCP flows tracked at once, over all workers.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    max_flows: usize,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rules file or directory; errors name the file, line and field.
    Check {
        /// Rules file or directory [default: the shipped rules].
        path: Option<PathBuf>,
    },
    /// Print the rule and category each name gets.
    Match {
        #[command(flatten)]
        rules: RulesArg,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(a) => analyze(a),
        Command::Rules(RulesCommand::Check { path }) => rules_check(path.as_deref()),
        Command::Rules(RulesCommand::Match { rules, names }) => rules_match(rules.rules.as_deref(), &names),
        Command::Report(ReportCommand::Merge { reports, output }) => report_merge(&reports, &output),
    }
}

fn load_rules(path: Option<&Path>) -> Result<Rules> {
    Ok(Rules::new(load(path)?))
}

fn rules_check(path: Option<&Path>) -> Result<ExitCode> {
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

fn rules_match(path: Option<&Path>, names: &[String]) -> Result<ExitCode> {
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

fn create(path: &Path) -> Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::BufWriter::new(io::stdout().lock())));
    }
    let f = fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(io::BufWriter::new(f)))
}

/// The report in the format its file name asks for.
fn render(report: &Report, path: &Path) -> String {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("csv") => report.to_csv(),
        Some("html") | Some("htm") => to_html(report),
        _ => report.to_json(),
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut w = create(path)?;
    w.write_all(text.as_bytes()).and_then(|_| w.flush()).with_context(|| format!("writing {}", path.display()))
}

fn report_merge(inputs: &[PathBuf], output: &Path) -> Result<ExitCode> {
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

fn default_sensor_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kavwatch".into())
}

fn analyze(a: AnalyzeArgs) -> Result<ExitCode> {
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
    let cutoff_override = match &a.cutoff {
        Some(s) => Some(
            parse_instant(s)
                .with_context(|| format!("--cutoff {s:?} is not an RFC 3339 instant (e.g. 2024-09-29T04:00:00Z)"))?,
        ),
        None => None,
    };
    let cutoff_ns = cutoff_override.unwrap_or(rules.set.vendors[0].cutoff_ns);
    if a.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        bail!("standard input (-) can be given only once");
    }
    let inputs = expand_inputs(&a.inputs).map_err(anyhow::Error::msg)?;
    // Open outputs before the long part, so a bad path fails at once.
    let mut events_out = a.events.as_deref().map(create).transpose()?;
    let workers =
        a.workers.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = Options {
        workers,
        limits: Limits { max_flows: a.max_flows.max(1024), ..Limits::default() },
        progress: !a.quiet,
    };
    let analysis = pipeline::run(&inputs, rules.clone(), &opts);
    let hosts = aggregate(&analysis.observations, &rules, cutoff_override);
    let input_names: Vec<String> = analysis.inputs.iter().map(|i| i.path.clone()).collect();
    if let Some(out) = events_out.as_mut() {
        write_events(out, &analysis.observations, &rules, &input_names, cutoff_override).context("writing events")?;
    }
    drop(events_out);
    let sensor = a.sensor_name.clone().unwrap_or_else(default_sensor_name);
    let report = Report::build(&analysis, &hosts, &rules, cutoff_ns, &sensor);
    if let Some(path) = &a.report {
        write_file(path, &render(&report, path))?;
    }
    if !a.quiet {
        let table = report.to_text();
        // With events on stdout, the table goes to stderr so the JSON stays clean.
        if a.events.as_deref().is_some_and(|p| p.as_os_str() == "-")
            || a.report.as_deref().is_some_and(|p| p.as_os_str() == "-")
        {
            eprint!("{table}");
        } else {
            print!("{table}");
        }
    }
    // The process ends here: freeing the rules (perhaps 100,000 names) would only cost time.
    std::mem::forget(rules);
    for e in &analysis.errors {
        eprintln!("kavwatch: {}", e.replace('\n', " "));
    }
    if !analysis.errors.is_empty() {
        return Ok(ExitCode::from(2));
    }
    if a.fail_on_active && hosts.iter().any(|h| h.verdict() == Verdict::ActiveAfterCutoff) {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
