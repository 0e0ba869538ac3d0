//! Live capture: interfaces -> capture threads -> workers -> one sink (this thread) that keeps
//! the host table, writes events, raises alerts and rewrites the report.
//!
//! AF_PACKET: one TPACKET_V3 ring per worker, all in one fanout group per interface, so the
//! kernel hashes flows (both directions, fragments reassembled) to threads that each decode and
//! inspect their own packets. libpcap: one capture thread per interface decodes and dispatches
//! batches to the workers, as `analyze` does. Either way workers ship their observations every
//! few hundred milliseconds; every table they keep is bounded (see `worker::Limits`). Packets
//! that came through a tunnel are handed between AF_PACKET workers by their inner flow
//! ([`tunnel_forward`]).

mod sink;
mod threads;
pub mod tunnel_forward;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{RecvTimeoutError, bounded, unbounded};
use serde::Serialize;

use crate::alert::AlertStats;
use crate::alert::deliver::Delivery;
use crate::alert::engine::AlertEngine;
use crate::attribution::LIVE_HOLD_NS;
use crate::capture::afpacket::{AfPacketSocket, LiveError, RingConfig, SocketStats, compile_bpf};
use crate::capture::libpcap::PcapSource;
use crate::observation::Observation;
use crate::output::files::EventsOut;
use crate::output::report::Report;
use crate::pipeline::{Batch, Dispatcher, Stats};
use crate::rules::matcher::Rules;
use crate::worker::{Limits, WorkerStats};
use sink::Sink;
use threads::{Capture, afpacket_thread, pcap_capture_thread, pcap_worker_thread};
use tunnel_forward::TunnelForward;

/// How often workers hand over what they found, and check for new rules and a stop.
const SHIP_EVERY: Duration = Duration::from_millis(200);
/// How often a vanished interface is looked for again.
const REOPEN_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    AfPacket,
    Pcap,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::AfPacket => "afpacket",
            Engine::Pcap => "pcap",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub interfaces: Vec<String>,
    pub engine: Engine,
    pub bpf: Option<String>,
    pub workers: usize,
    pub snaplen: u32,
    pub promisc: bool,
    /// AF_PACKET ring per worker: blocks of `block_size` bytes.
    pub ring_block_size: u32,
    pub ring_blocks: u32,
    pub limits: Limits,
    pub max_hosts: usize,
    /// `--resolver`: DNS resolvers given by the operator.
    pub resolvers: Vec<crate::attribution::IpNet>,
    pub cutoff_override: Option<i64>,
    pub cutoff_ns: i64,
    pub sensor: String,
    pub stats_interval: Duration,
    pub report_interval: Duration,
    pub duration: Option<Duration>,
    /// Tunnels and overlays.
    pub decode: crate::decode::DecodeConfig,
    /// Checkpoints of the host table and alert windows (`None`: none kept).
    pub state: Option<crate::state::StateConfig>,
}

/// Opened capture sources, before privileges are dropped.
pub struct Sources {
    afpacket: Vec<(usize, AfPacketSocket, RingConfig)>,
    pcap: Vec<(usize, PcapSource)>,
}

/// Opens every socket now, so that errors (no interface, no permission, interface down, bad
/// filter) end the command before anything runs, and `--user` can drop root afterwards.
pub fn open_sources(opts: &LiveOptions) -> Result<Sources, LiveError> {
    let mut sources = Sources { afpacket: Vec::new(), pcap: Vec::new() };
    for (i, iface) in opts.interfaces.iter().enumerate() {
        match opts.engine {
            Engine::AfPacket => {
                let bpf = opts.bpf.as_deref().map(|e| compile_bpf(e, opts.snaplen)).transpose()?;
                // One fanout group per interface and process.
                let group = ((std::process::id() as u16) ^ ((i as u16) << 12)).max(1);
                let cfg = RingConfig {
                    block_size: opts.ring_block_size,
                    block_count: opts.ring_blocks,
                    snaplen: opts.snaplen,
                    promisc: opts.promisc,
                    fanout_group: Some(group),
                    bpf,
                };
                for _ in 0..opts.workers {
                    sources.afpacket.push((i, AfPacketSocket::open(iface, &cfg)?, cfg.clone()));
                }
            }
            Engine::Pcap => {
                sources.pcap.push((i, PcapSource::open(iface, opts.snaplen, opts.promisc, opts.bpf.as_deref())?))
            }
        }
    }
    Ok(sources)
}

/// Writes a report (the caller picks the format and writes atomically).
pub type ReportWriter<'a> = &'a dyn Fn(&Report) -> Result<(), String>;
/// Reads the rules and the configuration again (SIGHUP).
pub type Reloader<'a> = &'a dyn Fn() -> Reload;

/// What a SIGHUP changes: each `None` stays as it is.
#[derive(Default)]
pub struct Reload {
    /// New rules, or why they could not be loaded (the old ones stay).
    pub rules: Option<Result<Rules, String>>,
    pub report_interval: Option<Duration>,
    pub stats_interval: Option<Duration>,
    /// The alert engine's interval (ns) and alert-all.
    pub alerts: Option<(i64, bool)>,
    /// What changed, what needs a restart, what was wrong: one line each, for stderr.
    pub notes: Vec<String>,
}

/// What the sink needs besides packets.
pub struct LiveOutputs<'a> {
    /// The events file (rotating, reopened on SIGHUP) or stdout.
    pub events: Option<EventsOut>,
    /// Writes the report (the caller picks the format and writes atomically).
    pub write_report: Option<ReportWriter<'a>>,
    pub alerts: Option<(AlertEngine, Delivery)>,
    /// Reads rules and configuration again (SIGHUP); `None` when nothing can change (the
    /// built-in rules and no configuration file).
    pub reload: Option<Reloader<'a>>,
    /// `--metrics`: the server's published text, refreshed when a scrape wants it.
    pub metrics: Option<crate::metrics::Exporter>,
    /// `--publish`: observations and statuses to NATS JetStream.
    pub publish: Option<crate::fleet::publish::Publisher>,
}

/// Flags set by signal handlers.
#[derive(Clone, Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// Rules shared with the capture threads: a new generation number tells them to pick up new ones.
struct SharedRules {
    rules: RwLock<Arc<Rules>>,
    generation: AtomicU64,
}

impl SharedRules {
    fn get(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

enum Msg {
    Observations(Arc<Rules>, Vec<Observation>),
    Reader { id: usize, stats: Box<Stats>, first_ts: Option<i64>, last_ts: Option<i64> },
    Worker { id: usize, stats: Box<WorkerStats> },
    Socket { id: usize, iface: usize, stats: SocketStats, reopened: u64 },
    Log(String),
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct InterfaceStats {
    /// Packets the kernel (or libpcap) delivered.
    pub packets: u64,
    /// Dropped because a ring or buffer was full (kavwatch too slow).
    pub drops: u64,
    /// AF_PACKET: times the ring was frozen full; libpcap: dropped by the interface/driver.
    pub freeze_q: u64,
    /// Times the interface vanished and was opened again.
    pub reopened: u64,
}

/// Runs until a stop signal or the duration ends; returns the last report.
pub fn run(
    sources: Sources,
    rules: Arc<Rules>,
    opts: &LiveOptions,
    mut out: LiveOutputs<'_>,
    control: &Control,
) -> Result<Report, String> {
    let shared = Arc::new(SharedRules { rules: RwLock::new(rules), generation: AtomicU64::new(0) });
    let stop_capture = Arc::new(AtomicBool::new(false));
    let (tx, rx) = unbounded::<Msg>();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0;
    // Each AF_PACKET socket has its worker: they share the limits.
    let per_socket = opts.limits.per_worker(sources.afpacket.len());
    let mut forwards = TunnelForward::group(sources.afpacket.len().max(1)).into_iter();
    let all_stopped = Arc::new(Barrier::new(sources.afpacket.len()));
    for (iface, sock, cfg) in sources.afpacket {
        let (forward, all_stopped) = (forwards.next().expect("one per socket"), all_stopped.clone());
        let (shared, stop, tx, limits, decode) =
            (shared.clone(), stop_capture.clone(), tx.clone(), per_socket, opts.decode);
        let (id, name) = (next_id, opts.interfaces[iface].clone());
        next_id += 1;
        let cap = Capture::new(id, iface, name, sock);
        handles.push(spawn(format!("kavwatch-afp-{id}"), move || {
            afpacket_thread(cap, (cfg, decode), (forward, all_stopped), shared, limits, stop, tx)
        }));
    }
    if !sources.pcap.is_empty() {
        let n = opts.workers;
        let (free_tx, free_rx) = unbounded::<Batch>();
        let mut senders = Vec::new();
        for _ in 0..n {
            let (btx, brx) = bounded::<Batch>(64);
            senders.push(btx);
            let (shared, tx, free_tx) = (shared.clone(), tx.clone(), free_tx.clone());
            let limits = opts.limits.per_worker(n);
            let id = next_id;
            next_id += 1;
            handles.push(spawn(format!("kavwatch-worker-{id}"), move || {
                pcap_worker_thread(id, brx, free_tx, shared, limits, tx)
            }));
        }
        for (iface, src) in sources.pcap {
            let (stop, tx) = (stop_capture.clone(), tx.clone());
            let dispatch = Dispatcher::new(senders.clone(), free_rx.clone());
            let (id, name, bpf, snaplen, promisc, decode) =
                (next_id, opts.interfaces[iface].clone(), opts.bpf.clone(), opts.snaplen, opts.promisc, opts.decode);
            next_id += 1;
            let cap = Capture::new(id, iface, name, src);
            let rules = shared.get();
            handles.push(spawn(format!("kavwatch-pcap-{id}"), move || {
                pcap_capture_thread(cap, (snaplen, promisc, bpf, decode), dispatch, &rules, stop, tx)
            }));
        }
    }
    drop(tx);
    let mut sink = Sink::new(opts);
    sink.restore_state(opts, &shared.get(), &mut out);
    let started = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_report = Instant::now();
    let mut last_tick = Instant::now();
    let mut stopping = false;
    // SIGHUP may change these.
    let (mut report_interval, mut stats_interval) = (opts.report_interval, opts.stats_interval);
    if let Some(m) = &out.metrics {
        m.published.publish(crate::metrics::render_live(&sink.metrics(opts, m, &shared, &out)));
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => sink.take(m, &mut out)?,
            Err(RecvTimeoutError::Timeout) => {}
            // Every capture thread has ended: they do so only after a stop.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(m) = rx.try_recv() {
            sink.take(m, &mut out)?;
        }
        if !stopping && (control.stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| started.elapsed() >= d))
        {
            // Capture threads drain their workers and hang up; the loop ends when all have.
            stopping = true;
            stop_capture.store(true, Ordering::Relaxed);
        }
        let reload_asked = Instant::now();
        if control.reload.swap(false, Ordering::Relaxed) {
            match out.reload {
                None => {
                    eprintln!("kavwatch: SIGHUP: the built-in rules cannot change; start with --rules PATH to reload")
                }
                Some(reload) => {
                    let r = reload();
                    for note in &r.notes {
                        eprintln!("kavwatch: SIGHUP: {note}");
                    }
                    match r.rules {
                        Some(Ok(rules)) => {
                            if let Some(m) = out.metrics.as_mut() {
                                m.rules_loaded(reload_asked.elapsed());
                            }
                            let n = rules.set.rules.len();
                            *shared.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
                            shared.generation.fetch_add(1, Ordering::Relaxed);
                            eprintln!("kavwatch: rules reloaded: {n} rules");
                        }
                        Some(Err(e)) => {
                            eprintln!("kavwatch: rules NOT reloaded, the old rules stay: {}", e.replace('\n', " "))
                        }
                        None => {}
                    }
                    report_interval = r.report_interval.unwrap_or(report_interval);
                    stats_interval = r.stats_interval.unwrap_or(stats_interval);
                    if let (Some((interval_ns, all)), Some((engine, _))) = (r.alerts, out.alerts.as_mut()) {
                        engine.set_policy(interval_ns, all);
                    }
                }
            }
            // For logrotate: new lines go to a new file at the same path.
            if let Some(Err(e)) = out.events.as_mut().map(EventsOut::reopen) {
                eprintln!("kavwatch: SIGHUP: events file NOT reopened: {e}");
            }
            for e in out.alerts.as_ref().map(|(_, d)| d.reopen_files()).unwrap_or_default() {
                eprintln!("kavwatch: SIGHUP: alert file NOT reopened: {e}");
            }
        }
        let rules_now = shared.get();
        let due = sink.attributor.release_until(now_ns() - LIVE_HOLD_NS, &rules_now);
        sink.fold(due, &rules_now, &mut out)?;
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            if let Some((engine, delivery)) = out.alerts.as_mut() {
                for a in engine.tick(now_ns()) {
                    delivery.send(&a);
                }
            }
        }
        if last_stats.elapsed() >= stats_interval {
            let alerts = out.alerts.as_ref().map(|(e, d)| crate::alert::summary_line(&e.stats, &d.stats()));
            let mut line = sink.stats_line(last_stats.elapsed(), alerts);
            if let Some(p) = &out.publish {
                let status = sink.status(opts, &shared.get(), &out, stats_interval, false);
                p.status(&status);
                line.push_str(", ");
                line.push_str(&crate::fleet::publish::summary_line(&p.stats()));
            }
            eprintln!("{line}");
            last_stats = Instant::now();
        }
        if last_report.elapsed() >= report_interval {
            last_report = Instant::now();
            if let Some(w) = out.write_report {
                w(&sink.report(opts, &shared.get(), &out))?;
            }
            sink.save_state(opts, &shared.get(), &out, false);
        }
        if let Some(m) = out.metrics.as_ref().filter(|m| m.published.wanted()) {
            m.published.publish(crate::metrics::render_live(&sink.metrics(opts, m, &shared, &out)));
        }
    }
    for h in handles {
        let _ = h.join();
    }
    // Connections still waiting for a DNS answer from another worker: the last word.
    let rules_now = shared.get();
    let last = sink.attributor.finish(&rules_now);
    sink.fold(last, &rules_now, &mut out)?;
    if let Some(e) = out.events.as_mut() {
        e.flush().map_err(|e| format!("writing events: {e}"))?;
    }
    sink.save_state(opts, &rules_now, &out, true);
    let mut final_alerts = None;
    let mut alerts_line = None;
    if let Some((mut engine, delivery)) = out.alerts.take() {
        engine.finish();
        let dests = delivery.finish();
        alerts_line = Some(crate::alert::summary_line(&engine.stats, &dests));
        final_alerts = Some(AlertStats {
            engine: engine.stats,
            destinations: dests.into_iter().map(|d| (d.destination.clone(), d)).collect(),
        });
    }
    let mut line = sink.stats_line(last_stats.elapsed(), alerts_line);
    let mut final_publish = None;
    let mut report = sink.report(opts, &shared.get(), &out);
    if let Some(a) = &final_alerts {
        report.stats["alerts"] = serde_json::to_value(a).expect("alert stats serialise");
    }
    if let Some(p) = out.publish.take() {
        // The last status, then everything acknowledged or spooled.
        let status = crate::fleet::message::SensorStatus::of(
            &report,
            "live",
            opts.interfaces.clone(),
            stats_interval.as_secs().max(1),
            true,
            p.stats(),
        );
        p.status(&status);
        let ps = p.finish();
        line.push_str(", ");
        line.push_str(&crate::fleet::publish::summary_line(&ps));
        report.stats["publish"] = serde_json::to_value(&ps).expect("stats serialise");
        final_publish = Some(ps);
    }
    eprintln!("{line}");
    if let Some(m) = &out.metrics {
        let mut snap = sink.metrics(opts, m, &shared, &out);
        if let Some(a) = &final_alerts {
            snap.set_alerts(a.engine.raised, &a.destinations.values().cloned().collect::<Vec<_>>());
        }
        snap.publish = final_publish.or(snap.publish);
        m.published.publish(crate::metrics::render_live(&snap));
    }
    if let Some(a) = final_alerts {
        report.stats["alerts"] = serde_json::to_value(a).expect("alert stats serialise");
    }
    if let Some(w) = out.write_report {
        w(&report)?;
    }
    Ok(report)
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name).spawn(f).expect("spawning a capture thread")
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}
