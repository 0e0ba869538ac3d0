//! The command line: every subcommand and option (clap derive). The `config` module maps the
//! long option names to configuration file keys, so an option added here is a key there too.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use kavwatch::attribution::IpNet;
use kavwatch::decode::DecodeConfig;
use kavwatch::worker::Limits;

#[derive(Parser)]
#[command(
    name = "kavwatch",
    version,
    about = "Finds hosts still talking to Kaspersky update, telemetry, activation and management servers after the US ban (BIS, 89 FR 52434)."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Check a configuration file, or print the effective configuration of `live`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A fleet of sensors on NATS JetStream: create the stream, run the collector.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Generate man pages, shell completions or the default configuration file (for packaging).
    #[command(subcommand)]
    Generate(super::generate::GenerateCommand),
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a configuration file; each error names the file, line and key.
    Check {
        /// Configuration file [default: /etc/kavwatch/kavwatch.toml].
        path: Option<PathBuf>,
    },
    /// Print the effective configuration of `live` (file, then command line) as a file, each
    /// value with where it came from.
    Show {
        /// Configuration file [default: /etc/kavwatch/kavwatch.toml if it exists].
        path: Option<PathBuf>,
        /// Options of `live` given after `--`, as on its command line.
        #[arg(last = true, value_name = "LIVE OPTIONS")]
        options: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ReportCommand {
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
pub(crate) struct RulesArg {
    /// Rules file or directory of .toml files [default: the shipped rules/kaspersky.toml].
    #[arg(long, value_name = "PATH")]
    pub(crate) rules: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct AnalyzeArgs {
    /// Configuration file: one `option-name = value` line per option (TOML); the command line
    /// overrides it. Keys of `live` only are ignored.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Capture files, directories (recursed in name order) or - for standard input.
    #[arg(required = true, value_name = "INPUT")]
    pub(crate) inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) rules: RulesArg,
    /// Override the rules' cutoff instant (RFC 3339, e.g. 2024-09-29T04:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    pub(crate) cutoff: Option<String>,
    /// Worker threads [default: available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) workers: Option<u16>,
    /// Write one JSON line per observation to PATH (- for stdout).
    #[arg(long, value_name = "PATH")]
    pub(crate) events: Option<PathBuf>,
    /// Write the host report to PATH: JSON, or CSV / HTML when PATH ends in .csv / .html.
    #[arg(long, value_name = "PATH")]
    pub(crate) report: Option<PathBuf>,
    /// This sensor's name in reports [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(crate) sensor_name: Option<String>,
    /// State directory: the alert spool (unless --spool-dir), and the first packet of each kind of
    /// contained parser panic [default: $STATE_DIRECTORY, else /var/lib/kavwatch if it exists,
    /// else TMPDIR/kavwatch].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Exit with status 3 when any host is active after the cutoff.
    #[arg(long)]
    pub(crate) fail_on_active: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Most TCP flows tracked at once, over all workers.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    pub(crate) max_flows: usize,
    /// A DNS resolver of yours (IP or CIDR, repeatable); others are found by seeing them answer.
    #[arg(long = "resolver", value_name = "IP|CIDR", value_parser = parse_net)]
    pub(crate) resolvers: Vec<IpNet>,
    /// Decoder threads: 1 decodes in the thread that reads; more decode chunks of records side
    /// by side while framing threads read several inputs at once [default: 1 up to 2 workers,
    /// else half the workers].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) decoders: Option<u16>,
    /// Where observations waiting for time order go past --memory-budget [default: the
    /// system temporary directory]. Nothing is left there by any exit (unnamed files).
    #[arg(long, value_name = "DIR")]
    pub(crate) spill_dir: Option<PathBuf>,
    /// Memory for observations waiting for time order before they spill to disk (e.g. 64M, 1G).
    #[arg(long, value_name = "BYTES", default_value = "32M", value_parser = parse_size)]
    pub(crate) memory_budget: u64,
    #[command(flatten)]
    pub(crate) alerts: AlertArgs,
    #[command(flatten)]
    pub(crate) publish: PublishArgs,
    #[command(flatten)]
    pub(crate) decap: DecapArgs,
}

/// `64M`, `1G`, `512K` or plain bytes (binary units).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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

pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse()
}

/// Tunnels and overlays: which UDP ports carry them, and how their hosts are keyed.
#[derive(Args, Clone)]
#[command(next_help_heading = "Tunnels and overlays")]
pub(crate) struct DecapArgs {
    /// Another UDP port carrying VXLAN (repeatable, up to 2; 4789 and 8472 always do).
    #[arg(long = "vxlan-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) vxlan_ports: Vec<u16>,
    /// Another UDP port carrying Geneve (repeatable, up to 3; 6081 always does).
    #[arg(long = "geneve-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) geneve_ports: Vec<u16>,
    /// Keep the VXLAN/Geneve VNI or GRE key in the host key: tenants of different overlays with
    /// the same addresses are different hosts.
    #[arg(long)]
    pub(crate) split_by_overlay: bool,
}

impl DecapArgs {
    pub(crate) fn config(&self) -> Result<DecodeConfig> {
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
pub(crate) struct AlertArgs {
    /// Send alerts to a collector: syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT,
    /// syslog+tls://HOST:PORT or file:PATH (repeatable).
    #[arg(long = "alert", value_name = "URL")]
    pub(crate) urls: Vec<String>,
    /// Alert record format (inside syslog messages, or one per line in files).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = ["json", "cef", "ecs"])]
    pub(crate) alert_format: String,
    /// At most one alert per host and category in this time (e.g. 3600, 90s, 30m, 1h, 1d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) alert_interval: std::time::Duration,
    /// Also alert on contacts before the cutoff and on excluded or other services.
    #[arg(long)]
    pub(crate) alert_all: bool,
    /// PEM file of the CA that signed the syslog+tls collector's certificate [default: the system's CAs].
    #[arg(long, value_name = "FILE")]
    pub(crate) alert_ca: Option<PathBuf>,
    /// Syslog facility number (0-23) [default: 4, security/authorization].
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=23))]
    pub(crate) syslog_facility: u8,
    /// Where alerts wait while a collector is down [default: STATE_DIR/spool].
    #[arg(long, value_name = "DIR")]
    pub(crate) spool_dir: Option<PathBuf>,
    /// Spool bound per destination; past it the oldest alerts are dropped (and counted).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub(crate) spool_max_bytes: u64,
    /// file: destinations are rotated past this size (PATH.1 ... PATH.5; 0: never).
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20)]
    pub(crate) alert_file_max_bytes: u64,
    /// At the end of a run, how long to keep trying an unreachable collector before leaving alerts in the spool.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) alert_drain_timeout: std::time::Duration,
}

/// `90`, `90s`, `30m`, `1h`, `1d`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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
pub(crate) struct LiveArgs {
    /// Configuration file: one `option-name = value` line per option (TOML); the command line
    /// overrides it. [default: /etc/kavwatch/kavwatch.toml if it exists]
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Interface to capture on (repeatable).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    pub(crate) interfaces: Vec<String>,
    /// Capture filter in tcpdump syntax, applied in the kernel.
    #[arg(long, value_name = "EXPR")]
    pub(crate) bpf: Option<String>,
    /// Worker threads [default: available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) workers: Option<u16>,
    /// Capture engine: AF_PACKET rings with fanout (Linux), or libpcap.
    #[arg(long, value_name = "ENGINE", default_value = "afpacket", value_parser = ["afpacket", "pcap"])]
    pub(crate) engine: String,
    /// Bytes kept of each packet.
    #[arg(long, value_name = "N", default_value_t = 65535)]
    pub(crate) snaplen: u32,
    /// Do not put the interfaces in promiscuous mode.
    #[arg(long)]
    pub(crate) no_promisc: bool,
    /// AF_PACKET ring per worker: block size in bytes (a multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub(crate) ring_block_size: u32,
    /// AF_PACKET ring per worker: number of blocks.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) ring_blocks: u32,
    #[command(flatten)]
    pub(crate) rules: RulesArg,
    /// Override the rules' cutoff instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub(crate) cutoff: Option<String>,
    /// Write one JSON line per observation to PATH as they happen (- for stdout). The file
    /// rotates by size (--events-max-bytes) and is reopened on SIGHUP (for logrotate).
    #[arg(long, value_name = "PATH")]
    pub(crate) events: Option<PathBuf>,
    /// Rotate the --events file past this size: PATH to PATH.1, PATH.1 to PATH.2, ... (never
    /// cutting a line; 0: never rotate).
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20)]
    pub(crate) events_max_bytes: u64,
    /// Rotated --events files kept (PATH.1 ... PATH.N; 0: the old file is deleted).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) events_keep: u32,
    /// Rewrite the host report at PATH (JSON, or CSV / HTML by extension) atomically, every
    /// --report-interval and at exit.
    #[arg(long, value_name = "PATH")]
    pub(crate) report: Option<PathBuf>,
    /// How often the report is rewritten (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) report_interval: std::time::Duration,
    /// A statistics line on stderr this often.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) stats_interval: std::time::Duration,
    /// Stop after this long (as SIGTERM would).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<std::time::Duration>,
    /// Drop root to this user once the capture sockets are open.
    #[arg(long, value_name = "NAME")]
    pub(crate) user: Option<String>,
    /// This sensor's name in reports and alerts [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(crate) sensor_name: Option<String>,
    /// State directory: checkpoints of the host table and alert windows, the alert spool, and
    /// the first packet of each kind of contained parser panic [default: $STATE_DIRECTORY, else
    /// /var/lib/kavwatch as root, else ~/.local/state/kavwatch].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Start over: set the checkpoint in the state directory aside (live.checkpoint.old)
    /// instead of restoring the hosts it holds.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Most TCP flows tracked at once, over all workers.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_flows)]
    pub(crate) max_flows: usize,
    /// Most hosts kept; past it the longest-quiet half is forgotten (counted in stats.hosts_evicted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) max_hosts: usize,
    /// A DNS resolver of yours (IP or CIDR, repeatable); others are found by seeing them answer.
    #[arg(long = "resolver", value_name = "IP|CIDR", value_parser = parse_net)]
    pub(crate) resolvers: Vec<IpNet>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (bind a management address: there is
    /// no authentication).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub(crate) alerts: AlertArgs,
    #[command(flatten)]
    pub(crate) publish: PublishArgs,
    #[command(flatten)]
    pub(crate) decap: DecapArgs,
}

/// How to reach NATS: servers, credentials, TLS. User and password or a token come from the
/// environment (NATS_USER and NATS_PASSWORD, or NATS_TOKEN), never from the command line.
#[derive(Args, Clone)]
pub(crate) struct NatsArgs {
    /// NKey/JWT credentials file (as `nsc` writes it).
    #[arg(long, value_name = "FILE")]
    pub(crate) nats_creds: Option<PathBuf>,
    /// PEM file of the CA that signed the NATS servers' certificates (turns TLS on).
    #[arg(long, value_name = "FILE")]
    pub(crate) nats_ca: Option<PathBuf>,
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Fleet (NATS JetStream)")]
pub(crate) struct PublishArgs {
    /// Publish every observation and a status to NATS JetStream: nats://HOST:PORT, comma-
    /// separated for a cluster (stream KAVWATCH, see `fleet init`). What no server acknowledges
    /// waits in the spool (--spool-dir, --spool-max-bytes).
    #[arg(long, value_name = "URLS")]
    pub(crate) publish: Option<String>,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// At the end of a run, how long to keep trying unreachable servers before leaving the rest in the spool.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) publish_drain_timeout: std::time::Duration,
}

#[derive(Subcommand)]
pub(crate) enum FleetCommand {
    /// Create the KAVWATCH stream (subjects kavwatch.>), or check an existing one and say what differs.
    Init(FleetInitArgs),
    /// Read the stream and keep the merged host table of the whole fleet: reports rewritten
    /// every interval, fleet alerts, checkpoints in the state directory.
    Collect(Box<FleetCollectArgs>),
}

#[derive(Args)]
pub(crate) struct FleetInitArgs {
    /// NATS servers: nats://HOST:PORT, comma-separated for a cluster.
    #[arg(long, value_name = "URLS")]
    pub(crate) nats: String,
    #[command(flatten)]
    pub(crate) auth: NatsArgs,
    /// Copies of each message in the cluster (1, or 3 for a three-server cluster).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) replicas: u8,
    /// Messages older than this are deleted (e.g. 400d; 0: by size only).
    #[arg(long, value_name = "DURATION", default_value = "400d", value_parser = parse_duration)]
    pub(crate) max_age: std::time::Duration,
    /// Past this size the oldest messages are deleted (e.g. 20G).
    #[arg(long, value_name = "BYTES", default_value = "20G", value_parser = parse_size)]
    pub(crate) max_bytes: u64,
    /// A message whose Nats-Msg-Id the stream stored this recently is dropped as a duplicate.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub(crate) duplicate_window: std::time::Duration,
}

#[derive(Args)]
pub(crate) struct FleetCollectArgs {
    /// NATS servers: nats://HOST:PORT, comma-separated for a cluster.
    #[arg(long, value_name = "URLS")]
    pub(crate) nats: String,
    #[command(flatten)]
    pub(crate) auth: NatsArgs,
    /// Rewrite the fleet report at PATH (JSON, or CSV / HTML by extension) atomically, every
    /// --report-interval and at exit (repeatable).
    #[arg(long, value_name = "PATH", required = true)]
    pub(crate) report: Vec<PathBuf>,
    /// How often the reports are rewritten and the state checkpointed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) report_interval: std::time::Duration,
    /// The collector's name (alert ids, syslog HOSTNAME) [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// State directory: the checkpoint (fleet.checkpoint) and the alert spool [default:
    /// $STATE_DIRECTORY, else /var/lib/kavwatch/fleet as root, else ~/.local/state/kavwatch/fleet].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Start over from the start of the stream (the checkpoint is set aside as fleet.checkpoint.old).
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Most hosts kept; past it the longest-quiet half is forgotten (counted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) max_hosts: usize,
    #[command(flatten)]
    pub(crate) rules: RulesArg,
    /// Override the rules' cutoff instant (RFC 3339); sensors must use the same.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) cutoff: Option<String>,
    /// Stop after this long (as SIGTERM would).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub(crate) alerts: AlertArgs,
}

#[derive(Subcommand)]
pub(crate) enum RulesCommand {
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
