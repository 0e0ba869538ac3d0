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

pub mod tunnel_forward;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use serde::Serialize;

use crate::alert::deliver::Delivery;
use crate::alert::engine::AlertEngine;
use crate::alert::{AlertStats, engine::EngineStats};
use crate::attribution::{Attributor, LIVE_HOLD_NS};
use crate::capture::afpacket::{AfPacketSocket, LiveError, LivePacket, RingConfig, SocketStats, compile_bpf};
use crate::capture::file::RawPacket;
use crate::capture::libpcap::PcapSource;
use crate::host::HostTable;
use crate::observation::Observation;
use crate::output::events::{Inputs, write_events};
use crate::output::files::EventsOut;
use crate::output::merge::add_values;
use crate::output::report::{Report, RunInfo};
use crate::pipeline::{Batch, Dispatcher, PacketSink, Reader, Stats};
use crate::rules::matcher::Rules;
use crate::worker::contain;
use crate::worker::{Limits, PacketMeta, Worker, WorkerStats};
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
/// Loads the rules again.
pub type RulesLoader<'a> = &'a dyn Fn() -> Result<Rules, String>;

/// What the sink needs besides packets.
pub struct LiveOutputs<'a> {
    /// The events file (rotating, reopened on SIGHUP) or stdout.
    pub events: Option<EventsOut>,
    /// Writes the report (the caller picks the format and writes atomically).
    pub write_report: Option<ReportWriter<'a>>,
    pub alerts: Option<(AlertEngine, Delivery)>,
    /// Loads the rules again (SIGHUP); `None` when they cannot change (the built-in rules).
    pub reload: Option<RulesLoader<'a>>,
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
    let started = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_report = Instant::now();
    let mut last_tick = Instant::now();
    let mut stopping = false;
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
        if control.reload.swap(false, Ordering::Relaxed) {
            match out.reload {
                None => {
                    eprintln!("kavwatch: SIGHUP: the built-in rules cannot change; start with --rules PATH to reload")
                }
                Some(load) => match load() {
                    Ok(r) => {
                        let n = r.set.rules.len();
                        *shared.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(r);
                        shared.generation.fetch_add(1, Ordering::Relaxed);
                        eprintln!("kavwatch: rules reloaded: {n} rules");
                    }
                    Err(e) => eprintln!("kavwatch: rules NOT reloaded, the old rules stay: {}", e.replace('\n', " ")),
                },
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
        if last_stats.elapsed() >= opts.stats_interval {
            let alerts = out.alerts.as_ref().map(|(e, d)| crate::alert::summary_line(&e.stats, &d.stats()));
            eprintln!("{}", sink.stats_line(last_stats.elapsed(), alerts));
            last_stats = Instant::now();
        }
        if last_report.elapsed() >= opts.report_interval {
            last_report = Instant::now();
            if let Some(w) = out.write_report {
                w(&sink.report(opts, &shared.get(), &out))?;
            }
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
    eprintln!("{}", sink.stats_line(last_stats.elapsed(), alerts_line));
    let mut report = sink.report(opts, &shared.get(), &out);
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

/// A worker in the capture thread itself (AF_PACKET fanout already chose the thread by flow,
/// except for tunnelled packets: see [`tunnel_forward`]).
struct LocalWorker {
    worker: Worker,
    forward: TunnelForward,
}

impl PacketSink for LocalWorker {
    fn push(&mut self, meta: PacketMeta, payload: &[u8], _map: Option<&Arc<memmap2::Mmap>>, hash: u64) {
        let mut meta = meta;
        meta.payload_len = payload.len() as u32;
        if !self.forward.take(meta, payload, hash) {
            self.worker.process_contained(&meta, payload);
        }
    }
}

impl LocalWorker {
    /// The counters, with the forwarding's.
    fn stats_now(&self) -> Box<WorkerStats> {
        let mut s = self.worker.stats_now();
        (s.tunnel_forwarded, s.tunnel_forward_full) = (self.forward.forwarded, self.forward.full);
        Box::new(s)
    }
}

/// Hands the worker's findings to the sink, and takes new rules if there are.
fn ship(w: &mut Worker, generation: &mut u64, shared: &SharedRules, tx: &Sender<Msg>) {
    let current = shared.generation.load(Ordering::Relaxed);
    if current != *generation {
        *generation = current;
        let rules = shared.get();
        // Pending DNS queries leave with the old rules.
        let old = w.rules().clone();
        w.set_rules(rules);
        if !w.observations.is_empty() {
            let _ = tx.send(Msg::Observations(old, w.take_observations()));
        }
    }
    if !w.observations.is_empty() {
        let _ = tx.send(Msg::Observations(w.rules().clone(), w.take_observations()));
    }
}

/// A capture source that may vanish with its interface and be opened again.
trait Source: Sized {
    fn poll(&mut self, budget: Duration, f: impl FnMut(LivePacket<'_>)) -> Result<usize, LiveError>;
    fn counters(&mut self) -> SocketStats;
    fn linktype(&self) -> u32;
}

impl Source for AfPacketSocket {
    fn poll(&mut self, budget: Duration, f: impl FnMut(LivePacket<'_>)) -> Result<usize, LiveError> {
        AfPacketSocket::poll(self, budget, f)
    }
    fn counters(&mut self) -> SocketStats {
        self.stats().unwrap_or_default()
    }
    fn linktype(&self) -> u32 {
        AfPacketSocket::linktype(self)
    }
}

impl Source for PcapSource {
    fn poll(&mut self, budget: Duration, f: impl FnMut(LivePacket<'_>)) -> Result<usize, LiveError> {
        PcapSource::poll(self, budget, f)
    }
    fn counters(&mut self) -> SocketStats {
        self.stats()
    }
    fn linktype(&self) -> u32 {
        PcapSource::linktype(self)
    }
}

/// One capture thread's source and its counters across reopenings.
struct Capture<S> {
    id: usize,
    iface: usize,
    name: String,
    src: Option<S>,
    /// Counters of the sources closed before the current one.
    closed: SocketStats,
    reopened: u64,
    last_try: Instant,
    number: u64,
}

impl<S: Source> Capture<S> {
    fn new(id: usize, iface: usize, name: String, src: S) -> Capture<S> {
        Capture {
            id,
            iface,
            name,
            src: Some(src),
            closed: SocketStats::default(),
            reopened: 0,
            last_try: Instant::now(),
            number: 0,
        }
    }

    /// Reads for up to 100 ms into `reader`; when the interface has gone, tries `reopen` every few seconds.
    fn step<K: PacketSink>(&mut self, reader: &mut Reader<K>, reopen: impl Fn() -> Option<S>, tx: &Sender<Msg>) {
        let Some(s) = self.src.as_mut() else {
            std::thread::sleep(Duration::from_millis(200));
            if self.last_try.elapsed() >= REOPEN_EVERY {
                self.last_try = Instant::now();
                if let Some(s) = reopen() {
                    self.reopened += 1;
                    let _ = tx.send(Msg::Log(format!("kavwatch: {}: capturing again", self.name)));
                    self.src = Some(s);
                }
            }
            return;
        };
        let (linktype, iface, number) = (s.linktype(), self.iface as u32, &mut self.number);
        let r = s.poll(Duration::from_millis(100), |p| {
            *number += 1;
            let raw =
                RawPacket { ts_ns: p.ts_ns, linktype, iface: 0, data: p.data, orig_len: p.orig_len, number: *number };
            reader.packet_contained(&raw, None, iface, *number);
        });
        if let Err(e) = r {
            self.closed = add_socket(self.closed, s.counters());
            self.src = None;
            self.last_try = Instant::now();
            let _ = tx.send(Msg::Log(format!("kavwatch: {}: {e}; trying to open it again every 3 s", self.name)));
        }
    }

    fn send_stats<K: PacketSink>(&mut self, reader: &Reader<K>, tx: &Sender<Msg>) {
        let st = match self.src.as_mut() {
            Some(s) => add_socket(self.closed, s.counters()),
            None => self.closed,
        };
        let _ = tx.send(Msg::Reader {
            id: self.id,
            stats: Box::new(reader.stats_now()),
            first_ts: reader.first_ts,
            last_ts: reader.last_ts,
        });
        let _ = tx.send(Msg::Socket { id: self.id, iface: self.iface, stats: st, reopened: self.reopened });
    }
}

fn add_socket(a: SocketStats, b: SocketStats) -> SocketStats {
    SocketStats {
        packets: a.packets + b.packets,
        drops: a.drops + b.drops,
        freeze_q: a.freeze_q + b.freeze_q,
        bad_blocks: a.bad_blocks + b.bad_blocks,
    }
}

/// An AF_PACKET socket and the worker that inspects what it receives.
fn afpacket_thread(
    mut cap: Capture<AfPacketSocket>,
    (cfg, decode): (RingConfig, crate::decode::DecodeConfig),
    (forward, all_stopped): (TunnelForward, Arc<Barrier>),
    shared: Arc<SharedRules>,
    limits: Limits,
    stop: Arc<AtomicBool>,
    tx: Sender<Msg>,
) {
    let mut generation = shared.generation.load(Ordering::Relaxed);
    let mut reader = Reader::new(LocalWorker { worker: Worker::new(shared.get(), limits), forward });
    reader.watch_port_rules(&shared.get());
    reader.decode_cfg = decode;
    let mut last_ship = Instant::now();
    let name = cap.name.clone();
    let reopen = || AfPacketSocket::open(&name, &cfg).ok();
    while !stop.load(Ordering::Relaxed) {
        // Each packet's work is contained; a panic outside it restarts the worker, and the
        // socket stays in its fanout group.
        let r = contain::contained(|| {
            cap.step(&mut reader, reopen, &tx);
            let LocalWorker { worker, forward } = &mut reader.dispatch;
            forward.release(now_ns(), worker);
            worker.planted_worker_panic();
            if last_ship.elapsed() >= SHIP_EVERY {
                last_ship = Instant::now();
                // A quiet link still expires flows and DNS queries waiting for answers.
                reader.dispatch.worker.maintain(reader.last_ts.map_or(now_ns(), |t| t.max(now_ns())));
                ship(&mut reader.dispatch.worker, &mut generation, &shared, &tx);
                cap.send_stats(&reader, &tx);
                let _ = tx.send(Msg::Worker { id: cap.id, stats: reader.dispatch.stats_now() });
            }
        });
        if let Err(msg) = r {
            reader.dispatch.worker.restart_after_panic(&msg);
        }
    }
    // Once no socket reads any more, nothing more is forwarded: what is held goes through.
    all_stopped.wait();
    let LocalWorker { worker, forward } = &mut reader.dispatch;
    if let Err(msg) = contain::contained(|| {
        forward.release(i64::MAX, worker);
        worker.finish()
    }) {
        worker.restart_after_panic(&msg);
    }
    ship(worker, &mut generation, &shared, &tx);
    cap.send_stats(&reader, &tx);
    let _ = tx.send(Msg::Worker { id: cap.id, stats: reader.dispatch.stats_now() });
}

/// A libpcap handle; its packets go to the workers in batches.
fn pcap_capture_thread(
    mut cap: Capture<PcapSource>,
    (snaplen, promisc, bpf, decode): (u32, bool, Option<String>, crate::decode::DecodeConfig),
    dispatch: Dispatcher,
    rules: &Rules,
    stop: Arc<AtomicBool>,
    tx: Sender<Msg>,
) {
    let mut reader = Reader::new(dispatch);
    reader.watch_port_rules(rules);
    reader.decode_cfg = decode;
    let mut last_ship = Instant::now();
    let name = cap.name.clone();
    let reopen = || PcapSource::open(&name, snaplen, promisc, bpf.as_deref()).ok();
    while !stop.load(Ordering::Relaxed) {
        cap.step(&mut reader, reopen, &tx);
        if last_ship.elapsed() >= SHIP_EVERY {
            last_ship = Instant::now();
            for w in 0..reader.dispatch.workers() {
                reader.dispatch.flush(w);
            }
            cap.send_stats(&reader, &tx);
        }
    }
    for w in 0..reader.dispatch.workers() {
        reader.dispatch.flush(w);
    }
    cap.send_stats(&reader, &tx);
}

fn pcap_worker_thread(
    id: usize,
    rx: Receiver<Batch>,
    free: Sender<Batch>,
    shared: Arc<SharedRules>,
    limits: Limits,
    tx: Sender<Msg>,
) {
    let mut generation = shared.generation.load(Ordering::Relaxed);
    let mut w = Worker::new(shared.get(), limits);
    let mut last_ship = Instant::now();
    let mut last_ts = None;
    loop {
        let batch = match rx.recv_timeout(SHIP_EVERY) {
            Ok(batch) => Some(batch),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Each packet's work is contained; a panic outside it restarts the worker.
        let r = contain::contained(|| {
            if let Some(batch) = &batch {
                w.process_batch_contained(&batch.metas, |m| batch.payload(m));
                last_ts = batch.metas.last().map(|m| m.clock_ns).or(last_ts);
                w.planted_worker_panic();
            }
            if last_ship.elapsed() >= SHIP_EVERY {
                last_ship = Instant::now();
                w.maintain(last_ts.map_or(now_ns(), |t: i64| t.max(now_ns())));
                ship(&mut w, &mut generation, &shared, &tx);
                let _ = tx.send(Msg::Worker { id, stats: Box::new(w.stats_now()) });
            }
        });
        if let Err(msg) = r {
            w.restart_after_panic(&msg);
        }
        if let Some(mut batch) = batch {
            batch.clear();
            let _ = free.send(batch);
        }
    }
    if let Err(msg) = contain::contained(|| w.finish()) {
        w.restart_after_panic(&msg);
    }
    ship(&mut w, &mut generation, &shared, &tx);
    let _ = tx.send(Msg::Worker { id, stats: Box::new(w.stats_now()) });
}

/// The sink's state: hosts, counters of every thread, alerts.
struct Sink {
    table: HostTable,
    attributor: Attributor,
    cutoff_override: Option<i64>,
    interfaces: Vec<String>,
    engine: &'static str,
    readers: BTreeMap<usize, (Stats, Option<i64>, Option<i64>)>,
    workers: BTreeMap<usize, WorkerStats>,
    sockets: BTreeMap<usize, (usize, SocketStats, u64)>,
    events: u64,
    observations: u64,
    /// Counters at the last stats line, for rates and new drops.
    last_packets: u64,
    last_drops: u64,
    last_undecoded: u64,
}

impl Sink {
    fn new(opts: &LiveOptions) -> Sink {
        Sink {
            table: HostTable::new(opts.max_hosts),
            attributor: {
                let mut a = Attributor::default();
                a.set_configured(opts.resolvers.clone());
                a
            },
            cutoff_override: opts.cutoff_override,
            interfaces: opts.interfaces.clone(),
            engine: opts.engine.as_str(),
            readers: BTreeMap::new(),
            workers: BTreeMap::new(),
            sockets: BTreeMap::new(),
            events: 0,
            observations: 0,
            last_packets: 0,
            last_drops: 0,
            last_undecoded: 0,
        }
    }

    fn take(&mut self, m: Msg, out: &mut LiveOutputs<'_>) -> Result<(), String> {
        match m {
            Msg::Observations(rules, mut obs) => {
                obs.sort_by_key(|o| o.sort_key());
                let obs = self.attributor.process(obs, &rules, LIVE_HOLD_NS);
                self.fold(obs, &rules, out)?;
            }
            Msg::Reader { id, stats, first_ts, last_ts } => {
                self.readers.insert(id, (*stats, first_ts, last_ts));
            }
            Msg::Worker { id, stats } => {
                self.workers.insert(id, *stats);
            }
            Msg::Socket { id, iface, stats, reopened } => {
                self.sockets.insert(id, (iface, stats, reopened));
            }
            Msg::Log(line) => eprintln!("{line}"),
        }
        Ok(())
    }

    /// Observations into the host table, alerts and events.
    fn fold(&mut self, obs: Vec<Observation>, rules: &Rules, out: &mut LiveOutputs<'_>) -> Result<(), String> {
        for o in &obs {
            self.table.add(o, rules, self.cutoff_override);
            if let Some((engine, delivery)) = out.alerts.as_mut()
                && let Some(mut a) = engine.observe(o, rules)
            {
                a.evidence.input = self.interfaces.get(o.pos.input as usize).cloned();
                delivery.send(&a);
            }
        }
        if let Some(e) = out.events.as_mut() {
            write_events(e, &obs, rules, Inputs::Interfaces(&self.interfaces), self.cutoff_override)
                .map_err(|e| format!("writing events: {e}"))?;
            e.flush().map_err(|e| format!("writing events: {e}"))?;
        }
        self.observations += obs.len() as u64;
        self.events += obs.len() as u64;
        Ok(())
    }

    fn per_interface(&self) -> BTreeMap<String, InterfaceStats> {
        let mut m: BTreeMap<String, InterfaceStats> = BTreeMap::new();
        for name in &self.interfaces {
            m.entry(name.clone()).or_default();
        }
        for (iface, s, reopened) in self.sockets.values() {
            let e = m.entry(self.interfaces[*iface].clone()).or_default();
            e.packets += s.packets;
            e.drops += s.drops;
            e.freeze_q += s.freeze_q;
            e.reopened += reopened;
        }
        m
    }

    fn totals(&self) -> serde_json::Value {
        let mut v = serde_json::Value::Null;
        for (s, _, _) in self.readers.values() {
            add_values(&mut v, &serde_json::to_value(s).expect("stats serialise"));
        }
        let mut w = WorkerStats::default();
        for s in self.workers.values() {
            w.add(s);
        }
        add_values(&mut v, &serde_json::to_value(w).expect("stats serialise"));
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("observations".into(), self.observations.into());
        }
        v
    }

    fn stats_line(&mut self, since: Duration, alerts: Option<String>) -> String {
        let packets: u64 = self.readers.values().map(|(s, _, _)| s.packets).sum();
        let bytes: u64 = self.readers.values().map(|(s, _, _)| s.bytes).sum();
        let ifs = self.per_interface();
        let drops: u64 = ifs.values().map(|s| s.drops).sum();
        let freeze: u64 = ifs.values().map(|s| s.freeze_q).sum();
        let rate = (packets - self.last_packets.min(packets)) as f64 / since.as_secs_f64().max(1e-3);
        // Per socket (AF_PACKET: one per worker), so a hot worker shows.
        let per_socket: Vec<String> =
            self.sockets.values().map(|(i, s, _)| format!("{}:{}", self.interfaces[*i], s.drops)).collect();
        let mut line = format!(
            "kavwatch: live: {packets} packets, {:.1} MB, {rate:.0} pkt/s, drops kernel {drops} ({} {freeze}; per socket {}), events {}, hosts {}",
            bytes as f64 / 1e6,
            if self.engine == "afpacket" { "ring frozen" } else { "interface" },
            per_socket.join(" "),
            self.events,
            self.table.len()
        );
        if let Some(a) = alerts {
            line.push_str(", ");
            line.push_str(&a);
        }
        let undecoded: u64 = self.readers.values().map(|(s, _, _)| s.undecoded.packets).sum();
        let new_packets = packets - self.last_packets.min(packets);
        let new_undecoded = undecoded - self.last_undecoded.min(undecoded);
        if new_undecoded as f64 > new_packets as f64 * crate::decode::counters::UNDECODED_WARN_SHARE {
            let mut causes: BTreeMap<&str, u64> = BTreeMap::new();
            for (s, _, _) in self.readers.values() {
                for (c, n) in &s.undecoded.causes {
                    *causes.entry(c).or_default() += n;
                }
            }
            let top = causes.iter().max_by_key(|(_, n)| **n).map(|(c, _)| *c).unwrap_or("-");
            line.push_str(&format!(
                "\nkavwatch: warning: {:.1} % of the packets since the last report could not be decoded to TCP/UDP over IP (top cause: {top}): hosts in them are not seen",
                new_undecoded as f64 * 100.0 / new_packets.max(1) as f64
            ));
        }
        self.last_undecoded = undecoded;
        if drops > self.last_drops {
            line.push_str(&format!(
                "\nkavwatch: warning: {} packets dropped since the last report: add workers (--workers), a bigger ring, or a --bpf filter",
                drops - self.last_drops
            ));
        }
        self.last_packets = packets;
        self.last_drops = drops;
        line
    }

    fn report(&self, opts: &LiveOptions, rules: &Rules, out: &LiveOutputs<'_>) -> Report {
        let mut stats = self.totals();
        let first = self.readers.values().filter_map(|r| r.1).min();
        let last = self.readers.values().filter_map(|r| r.2).max();
        if let serde_json::Value::Object(m) = &mut stats {
            m.insert(
                "capture".into(),
                serde_json::json!({
                    "engine": self.engine,
                    "interfaces": self.per_interface(),
                    "sockets": self.sockets.values().map(|(i, s, reopened)| serde_json::json!({
                        "interface": self.interfaces[*i],
                        "packets": s.packets,
                        "drops": s.drops,
                        "freeze_q": s.freeze_q,
                        "bad_blocks": s.bad_blocks,
                        "reopened": reopened,
                    })).collect::<Vec<_>>(),
                }),
            );
            m.insert("hosts_evicted".into(), self.table.hosts_evicted.into());
            if let Some((rotations, bytes)) = out.events.as_ref().and_then(EventsOut::file_stats) {
                m.insert("events_file".into(), serde_json::json!({"rotations": rotations, "bytes": bytes}));
            }
            m.insert("attribution".into(), serde_json::to_value(&self.attributor.stats).expect("stats serialise"));
            m.insert("ksc".into(), serde_json::to_value(&self.attributor.ksc.stats).expect("stats serialise"));
            m.insert("dhcp".into(), serde_json::to_value(&self.attributor.leases.stats).expect("stats serialise"));
            if let Some((engine, delivery)) = &out.alerts {
                let a = AlertStats {
                    engine: EngineStats::clone(&engine.stats),
                    destinations: delivery.stats().into_iter().map(|d| (d.destination.clone(), d)).collect(),
                };
                m.insert("alerts".into(), serde_json::to_value(a).expect("alert stats serialise"));
            }
        }
        let inputs: Vec<crate::pipeline::InputSummary> = self
            .per_interface()
            .into_iter()
            .map(|(name, s)| crate::pipeline::InputSummary { path: name, packets: s.packets, bytes: 0, error: None })
            .collect();
        let run = RunInfo { stats, inputs: &inputs, first_ts: first, last_ts: last, errors: &[] };
        let mut hosts = self.table.hosts();
        crate::attribution::mark_resolvers(&mut hosts, &self.attributor);
        Report::build(&run, &hosts, &self.table.timeline, rules, opts.cutoff_ns, &opts.sensor)
    }
}
