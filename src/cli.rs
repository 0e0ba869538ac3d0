//! Command-line definitions and the glue from options to the library.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use kavwatch::alert::AlertStats;
use kavwatch::alert::deliver::{Delivery, DeliveryConfig};
use kavwatch::alert::engine::{AlertEngine, EngineConfig};
use kavwatch::alert::format::Format;
use kavwatch::attribution::{Attributor, IpNet, mark_resolvers};
use kavwatch::capture::expand_inputs;
use kavwatch::decode::DecodeConfig;
use kavwatch::host::{HostTable, Verdict};
use kavwatch::live::{Control, Engine, LiveOptions, LiveOutputs, open_sources};
use kavwatch::output::events::{Inputs, write_event};
use kavwatch::output::html::to_html;
use kavwatch::output::merge::merge;
use kavwatch::output::report::{Report, RunInfo};
use kavwatch::pipeline::{self, Options};
use kavwatch::proto::name::normalize_name;
use kavwatch::rules::load::{load, parse_instant};
use kavwatch::rules::matcher::Rules;
use kavwatch::spill::{self, Merged, Sorter, SpillArea, SpillError};
use kavwatch::worker::Limits;
use kavwatch::worker::contain;

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
    /// Capture live from interfaces (a SPAN/mirror port or TAP) until SIGINT/SIGTERM.
    Live(LiveArgs),
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
    /// State directory: the first packet of each kind of contained parser panic is saved here
    /// [default: $STATE_DIRECTORY, else /var/lib/kavwatch if it exists, else TMPDIR/kavwatch].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Exit with status 3 when any host is active after the cutoff.
    #[arg(long)]
    fail_on_active: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Most TCP flows tracked at once, over all workers.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    max_flows: usize,
    /// A DNS resolver of yours (IP or CIDR, repeatable); others are found by seeing them answer.
    #[arg(long = "resolver", value_name = "IP|CIDR", value_parser = parse_net)]
    resolvers: Vec<IpNet>,
    /// Decoder threads: 1 decodes in the thread that reads; more decode chunks of records side
    /// by side while framing threads read several inputs at once [default: 1 up to 2 workers,
    /// else half the workers].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    decoders: Option<u16>,
    /// Where observations waiting for time order go past --memory-budget [default: the
    /// system temporary directory]. Nothing is left there by any exit (unnamed files).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Memory for observations waiting for time order before they spill to disk (e.g. 64M, 1G).
    #[arg(long, value_name = "BYTES", default_value = "32M", value_parser = parse_size)]
    memory_budget: u64,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    decap: DecapArgs,
}

/// `64M`, `1G`, `512K` or plain bytes (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size (e.g. 64M, 1G, 500000)");
    let (num, mult) = match s.trim().char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&s.trim()[..i], m)
        }
        _ => (s.trim(), 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v < 1 << 10 {
        return Err(format!("{s:?}: at least 1K"));
    }
    Ok(v)
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse()
}

/// Tunnels and overlays: which UDP ports carry them, and how their hosts are keyed.
#[derive(Args, Clone)]
#[command(next_help_heading = "Tunnels and overlays")]
struct DecapArgs {
    /// Another UDP port carrying VXLAN (repeatable, up to 2; 4789 and 8472 always do).
    #[arg(long = "vxlan-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    vxlan_ports: Vec<u16>,
    /// Another UDP port carrying Geneve (repeatable, up to 3; 6081 always does).
    #[arg(long = "geneve-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    geneve_ports: Vec<u16>,
    /// Keep the VXLAN/Geneve VNI or GRE key in the host key: tenants of different overlays with
    /// the same addresses are different hosts.
    #[arg(long)]
    split_by_overlay: bool,
}

impl DecapArgs {
    fn config(&self) -> Result<DecodeConfig> {
        let mut c = DecodeConfig { split_by_overlay: self.split_by_overlay, ..DecodeConfig::default() };
        let add = |slots: &mut [u16; 4], ports: &[u16], what: &str| -> Result<()> {
            for &p in ports {
                if slots.contains(&p) {
                    continue;
                }
                let Some(free) = slots.iter_mut().find(|s| **s == 0) else {
                    bail!(
                        "--{what}-port: too many ports ({} given; the decoder has {} slots in all)",
                        ports.len(),
                        slots.len()
                    );
                };
                *free = p;
            }
            Ok(())
        };
        add(&mut c.vxlan_ports, &self.vxlan_ports, "vxlan")?;
        add(&mut c.geneve_ports, &self.geneve_ports, "geneve")?;
        Ok(c)
    }
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Alerts")]
struct AlertArgs {
    /// Send alerts to a collector: syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT,
    /// syslog+tls://HOST:PORT or file:PATH (repeatable).
    #[arg(long = "alert", value_name = "URL")]
    urls: Vec<String>,
    /// Alert record format (inside syslog messages, or one per line in files).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = ["json", "cef", "ecs"])]
    alert_format: String,
    /// At most one alert per host and category in this time (e.g. 3600, 90s, 30m, 1h, 1d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    alert_interval: std::time::Duration,
    /// Also alert on contacts before the cutoff and on excluded or other services.
    #[arg(long)]
    alert_all: bool,
    /// PEM file of the CA that signed the syslog+tls collector's certificate [default: the system's CAs].
    #[arg(long, value_name = "FILE")]
    alert_ca: Option<PathBuf>,
    /// Syslog facility number (0-23) [default: 4, security/authorization].
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=23))]
    syslog_facility: u8,
    /// Where alerts wait while a collector is down [default: STATE_DIR/spool].
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Spool bound per destination; past it the oldest alerts are dropped (and counted).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    spool_max_bytes: u64,
    /// kavwatch's state directory [default: $STATE_DIRECTORY, else /var/lib/kavwatch as root, else ~/.local/state/kavwatch].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// file: destinations are rotated past this size (PATH.1 ... PATH.5).
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20)]
    alert_file_max_bytes: u64,
    /// At the end of a run, how long to keep trying an unreachable collector before leaving alerts in the spool.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    alert_drain_timeout: std::time::Duration,
}

/// `90`, `90s`, `30m`, `1h`, `1d`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 30m, 1h)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult).map(std::time::Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

#[derive(Args)]
struct LiveArgs {
    /// Interface to capture on (repeatable).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    interfaces: Vec<String>,
    /// Capture filter in tcpdump syntax, applied in the kernel.
    #[arg(long, value_name = "EXPR")]
    bpf: Option<String>,
    /// Worker threads [default: available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Capture engine: AF_PACKET rings with fanout (Linux), or libpcap.
    #[arg(long, value_name = "ENGINE", default_value = "afpacket", value_parser = ["afpacket", "pcap"])]
    engine: String,
    /// Bytes kept of each packet.
    #[arg(long, value_name = "N", default_value_t = 65535)]
    snaplen: u32,
    /// Do not put the interfaces in promiscuous mode.
    #[arg(long)]
    no_promisc: bool,
    /// AF_PACKET ring per worker: block size in bytes (a multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    ring_block_size: u32,
    /// AF_PACKET ring per worker: number of blocks.
    #[arg(long, value_name = "N", default_value_t = 16)]
    ring_blocks: u32,
    #[command(flatten)]
    rules: RulesArg,
    /// Override the rules' cutoff instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    cutoff: Option<String>,
    /// Write one JSON line per observation to PATH as they happen (- for stdout).
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// Rewrite the host report at PATH (JSON, or CSV / HTML by extension) atomically, every
    /// --report-interval and at exit.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// How often the report is rewritten (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    report_interval: std::time::Duration,
    /// A statistics line on stderr this often.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    stats_interval: std::time::Duration,
    /// Stop after this long (as SIGTERM would).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<std::time::Duration>,
    /// Drop root to this user once the capture sockets are open.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// This sensor's name in reports and alerts [default: the host name].
    #[arg(long, value_name = "NAME")]
    sensor_name: Option<String>,
    /// State directory: the first packet of each kind of contained parser panic is saved here
    /// [default: $STATE_DIRECTORY, else /var/lib/kavwatch if it exists, else TMPDIR/kavwatch].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Most TCP flows tracked at once, over all workers.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    max_flows: usize,
    /// Most hosts kept; past it the longest-quiet half is forgotten (counted in stats.hosts_evicted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    max_hosts: usize,
    /// A DNS resolver of yours (IP or CIDR, repeatable); others are found by seeing them answer.
    #[arg(long = "resolver", value_name = "IP|CIDR", value_parser = parse_net)]
    resolvers: Vec<IpNet>,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    decap: DecapArgs,
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
        Command::Live(a) => live(a),
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

/// Writes next to the target, then renames: a reader never sees half a report.
fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, text)
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| format!("writing report {}: {e}", path.display()))
}

/// Drops root for NAME (its uid, gid, no supplementary groups).
fn drop_privileges(name: &str) -> Result<()> {
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

fn live(a: LiveArgs) -> Result<ExitCode> {
    let control = Control::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, control.stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing signal handlers")?;
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
    let cutoff_override = parse_cutoff(a.cutoff.as_deref())?;
    let sensor = a.sensor_name.clone().unwrap_or_else(default_sensor_name);
    contain::set_sample_dir(a.state_dir.clone().unwrap_or_else(contain::default_state_dir));
    let workers =
        a.workers.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = LiveOptions {
        interfaces: a.interfaces.clone(),
        engine: if a.engine == "pcap" { Engine::Pcap } else { Engine::AfPacket },
        bpf: a.bpf.clone(),
        workers,
        snaplen: a.snaplen,
        promisc: !a.no_promisc,
        ring_block_size: a.ring_block_size,
        ring_blocks: a.ring_blocks,
        limits: Limits { max_flows: a.max_flows.max(1024), ..Limits::default() },
        max_hosts: a.max_hosts,
        resolvers: a.resolvers.clone(),
        cutoff_override,
        cutoff_ns: cutoff_override.unwrap_or(rules.set.vendors[0].cutoff_ns),
        sensor: sensor.clone(),
        stats_interval: a.stats_interval.max(std::time::Duration::from_secs(1)),
        report_interval: a.report_interval.max(std::time::Duration::from_secs(1)),
        duration: a.duration,
        decode: a.decap.config()?,
    };
    let events = a.events.as_deref().map(create).transpose()?;
    let delivery = start_alerts(&a.alerts, &sensor)?;
    let sources = open_sources(&opts)?;
    if let Some(user) = &a.user {
        drop_privileges(user)?;
    }
    let engine = delivery.map(|d| {
        let e = AlertEngine::new(EngineConfig {
            interval_ns: a.alerts.alert_interval.as_nanos().min(i64::MAX as u128) as i64,
            alert_all: a.alerts.alert_all,
            sensor: sensor.clone(),
            cutoff_override,
        });
        (e, d)
    });
    let report_path = a.report.clone();
    let write_report = |r: &Report| -> Result<(), String> {
        match &report_path {
            Some(p) => write_atomic(p, &render(r, p)),
            None => Ok(()),
        }
    };
    let rules_path = a.rules.rules.clone();
    let reload = || -> Result<Rules, String> {
        let p = rules_path.as_deref().expect("reload is offered only with --rules");
        load(Some(p)).map(Rules::new).map_err(|e| format!("{e:#}"))
    };
    let out = LiveOutputs {
        events,
        write_report: Some(&write_report),
        alerts: engine,
        reload: rules_path.is_some().then_some(&reload as &dyn Fn() -> Result<Rules, String>),
    };
    eprintln!(
        "kavwatch: live on {} ({} engine, {} workers){}",
        a.interfaces.join(", "),
        opts.engine.as_str(),
        workers,
        a.bpf.as_deref().map(|b| format!(", filter {b:?}")).unwrap_or_default()
    );
    let report = kavwatch::live::run(sources, rules, &opts, out, &control).map_err(anyhow::Error::msg)?;
    if a.report.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        print!("{}", report.to_json());
    }
    if let Some(dests) = report.stats.get("alerts").and_then(|a| a.get("destinations")).and_then(|d| d.as_object()) {
        for (url, d) in dests {
            let (waiting, dropped) = (d["waiting"].as_u64().unwrap_or(0), d["dropped"].as_u64().unwrap_or(0));
            if waiting > 0 || dropped > 0 {
                eprintln!("kavwatch: alerts to {url}: {waiting} waiting in the spool, {dropped} dropped");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// `$STATE_DIRECTORY` (systemd), else /var/lib/kavwatch as root, else the XDG state directory.
fn default_state_dir() -> PathBuf {
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
fn start_alerts(a: &AlertArgs, sensor: &str) -> Result<Option<Delivery>> {
    if a.urls.is_empty() {
        return Ok(None);
    }
    let format: Format = a.alert_format.parse().map_err(anyhow::Error::msg)?;
    let spool_dir =
        a.spool_dir.clone().unwrap_or_else(|| a.state_dir.clone().unwrap_or_else(default_state_dir).join("spool"));
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

/// SIGINT and SIGTERM stop reading (the analysis of what was read goes on and is reported);
/// a second one ends the process at once.
/// Returns the stop flag and the signal that set it.
fn stop_on_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
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

fn parse_cutoff(s: Option<&str>) -> Result<Option<i64>> {
    s.map(|s| {
        parse_instant(s)
            .with_context(|| format!("--cutoff {s:?} is not an RFC 3339 instant (e.g. 2024-09-29T04:00:00Z)"))
    })
    .transpose()
}

fn analyze(a: AnalyzeArgs) -> Result<ExitCode> {
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
    let cutoff_override = parse_cutoff(a.cutoff.as_deref())?;
    let cutoff_ns = cutoff_override.unwrap_or(rules.set.vendors[0].cutoff_ns);
    if a.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        bail!("standard input (-) can be given only once");
    }
    let inputs = expand_inputs(&a.inputs).map_err(anyhow::Error::msg)?;
    // Open outputs before the long part, so a bad path fails at once.
    let mut events_out = a.events.as_deref().map(create).transpose()?;
    let sensor = a.sensor_name.clone().unwrap_or_else(default_sensor_name);
    contain::set_sample_dir(a.state_dir.clone().unwrap_or_else(contain::default_state_dir));
    let delivery = start_alerts(&a.alerts, &sensor)?;
    let workers =
        a.workers.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let spill = SpillArea::new(a.spill_dir.clone().unwrap_or_else(std::env::temp_dir));
    // A directory the spill cannot use fails now, not an hour into the run.
    tempfile::tempfile_in(spill.dir())
        .map_err(|e| anyhow::anyhow!(SpillError { dir: spill.dir().into(), source: e }))?;
    let budget = usize::try_from(a.memory_budget).unwrap_or(usize::MAX);
    let (stop, signal) = stop_on_signals()?;
    let decoders = a.decoders.map(usize::from).unwrap_or(if workers <= 2 { 1 } else { workers / 2 });
    let opts = Options {
        workers,
        decoders,
        limits: Limits { max_flows: a.max_flows.max(1024), ..Limits::default() },
        progress: !a.quiet,
        decode: a.decap.config()?,
        spill: spill.clone(),
        memory_budget: budget,
        stop,
    };
    let mut analysis = pipeline::run(&inputs, rules.clone(), &opts);
    // Connections that named nothing: a DNS answer to the same client may. In time order, as
    // the workers' observations come out of the merge.
    let mut attributor = Attributor::default();
    attributor.set_configured(a.resolvers.clone());
    // Security Center contacts wait for their pair's pattern: sorted again.
    let mut kept = Sorter::new(spill.clone(), budget);
    let mut out = Vec::new();
    for o in std::mem::replace(&mut analysis.observations, Merged::empty(spill.clone())) {
        attributor.process_one(o, &rules, &mut out);
        out.drain(..).for_each(|o| kept.push(o));
    }
    attributor.finish(&rules).into_iter().for_each(|o| kept.push(o));
    analysis.stats.observations = kept.len();
    let input_names: Vec<String> = analysis.inputs.iter().map(|i| i.path.clone()).collect();
    let mut engine = delivery.as_ref().map(|_| {
        AlertEngine::new(EngineConfig {
            interval_ns: a.alerts.alert_interval.as_nanos().min(i64::MAX as u128) as i64,
            alert_all: a.alerts.alert_all,
            sensor: sensor.clone(),
            cutoff_override,
        })
    });
    // One pass over the sorted observations: host table, events and alerts.
    let mut table = HostTable::new(usize::MAX);
    for o in spill::merge(vec![kept], spill.clone()) {
        table.add(&o, &rules, cutoff_override);
        if let Some(out) = events_out.as_mut() {
            write_event(out, &o, &rules, Inputs::Files(&input_names), cutoff_override).context("writing events")?;
        }
        if let (Some(engine), Some(delivery)) = (engine.as_mut(), delivery.as_ref())
            && let Some(mut alert) = engine.observe(&o, &rules)
        {
            alert.evidence.input = input_names.get(o.pos.input as usize).cloned();
            delivery.send(&alert);
        }
    }
    if let Some(out) = events_out.as_mut() {
        out.flush().context("writing events")?;
    }
    drop(events_out);
    if let Some(e) = spill.error()
        && !analysis.errors.iter().any(|x| x.starts_with(&e))
    {
        analysis.errors.push(e);
    }
    let spilled = spill.runs.load(Ordering::Relaxed);
    if spilled > 0 && !a.quiet {
        eprintln!(
            "kavwatch: {} observations waited on disk in {} ({:.1} MB in {spilled} sorted runs)",
            spill.items.load(Ordering::Relaxed),
            spill.dir().display(),
            spill.bytes.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
    let mut hosts = table.hosts();
    mark_resolvers(&mut hosts, &attributor);
    let mut report = Report::build(&RunInfo::of(&analysis), &hosts, &table.timeline, &rules, cutoff_ns, &sensor);
    report.stats["attribution"] = serde_json::to_value(&attributor.stats).expect("stats serialise");
    report.stats["ksc"] = serde_json::to_value(&attributor.ksc.stats).expect("stats serialise");
    report.stats["dhcp"] = serde_json::to_value(&attributor.leases.stats).expect("stats serialise");
    let mut alerts_undelivered = false;
    if let (Some(delivery), Some(mut engine)) = (delivery, engine) {
        engine.finish();
        let dests = delivery.finish();
        if !a.quiet {
            eprintln!("kavwatch: {}", kavwatch::alert::summary_line(&engine.stats, &dests));
        }
        for d in &dests {
            if d.waiting > 0 || d.dropped > 0 {
                alerts_undelivered = true;
                eprintln!(
                    "kavwatch: alerts to {}: {} waiting in the spool, {} dropped{}",
                    d.destination,
                    d.waiting,
                    d.dropped,
                    d.last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
                );
            }
        }
        let stats = AlertStats {
            engine: engine.stats,
            destinations: dests.into_iter().map(|d| (d.destination.clone(), d)).collect(),
        };
        report.stats["alerts"] = serde_json::to_value(&stats).expect("alert stats serialise");
    }
    if let Some(path) = &a.report {
        write_file(path, &render(&report, path))?;
    }
    if !a.quiet {
        if let Some(w) = report.undecoded_text() {
            eprintln!("kavwatch: warning: {w}");
        }
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
    if analysis.interrupted {
        let signal = signal.load(Ordering::Relaxed);
        eprintln!(
            "kavwatch: interrupted by signal {signal}: the report covers the {} packets read before it",
            analysis.stats.packets
        );
        return Ok(ExitCode::from(128u8.saturating_add(signal as u8)));
    }
    if !analysis.errors.is_empty() {
        return Ok(ExitCode::from(2));
    }
    let (panics, restarts) = (report.stat(&["parser_panics", "total"]), report.stat(&["worker_restarts"]));
    if panics + restarts > 0 {
        eprintln!(
            "kavwatch: the run is incomplete: {panics} packet(s) skipped after a contained panic ({restarts} worker restart(s)); see stats.parser_panics"
        );
        return Ok(ExitCode::from(5));
    }
    if alerts_undelivered {
        return Ok(ExitCode::from(4));
    }
    if a.fail_on_active && hosts.iter().any(|h| h.verdict() == Verdict::ActiveAfterCutoff) {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
