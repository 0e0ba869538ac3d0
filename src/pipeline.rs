//! Wires the stages: reader (capture + decode + defrag) -> symmetric flow hash -> N workers
//! over crossbeam channels, in batches -> observations sorted by (time, position).
//!
//! The reader decodes every packet once and passes on only what can matter (UDP on port 53,
//! TCP segments with data or a SYN/RST); each batch carries packet headers plus one arena of
//! payload bytes, and batches are recycled through a return channel.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use memmap2::Mmap;
use serde::Serialize;

use crate::capture::file::{CaptureError, CaptureReader, RawPacket};
use crate::decode::counters::{DecapCounters, TunnelStats, UndecodedStats};
use crate::decode::defrag::{DefragStats, Defragmenter};
use crate::decode::intern::LocalCache;
use crate::decode::{self, DecodeConfig, Decoded, Outcome, Skip, TCP_RST, TCP_SYN, Transport, link};
use crate::flow::FlowKey;
use crate::observation::{Observation, Position};
use crate::rules::matcher::Rules;
use crate::worker::contain::{self, Stage};
use crate::worker::{Limits, PacketMeta, Worker, WorkerStats};

const BATCH_PACKETS: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;
const QUEUE_BATCHES: usize = 4;

#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    pub limits: Limits,
    /// Progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Tunnels and overlays.
    pub decode: decode::DecodeConfig,
}

/// Per-input summary for the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct InputSummary {
    pub path: String,
    pub packets: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SkipStats {
    /// ARP, LLDP and other frames without IP.
    pub not_ip: u64,
    /// ICMP and other IP protocols.
    pub not_tcp_udp: u64,
    /// Link types kavwatch does not decode.
    pub unsupported_link: u64,
    /// TCP/UDP packets that cannot carry a name we look for (not port 53, no payload...).
    pub not_inspected: u64,
    /// What stopped decoding the skipped packets, top causes ("EtherType 0x0806": 12).
    pub causes: BTreeMap<String, u64>,
}

/// Every packet counted once in `decoded`, `skipped.*` or `malformed`; fragments count
/// as themselves, and a reassembled datagram is decoded again.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
    pub link_types: BTreeMap<String, u64>,
    pub decoded: u64,
    pub skipped: SkipStats,
    pub malformed: u64,
    /// Packets cut short by the capture's snap length.
    pub truncated: u64,
    pub fragments: DefragStats,
    /// Packets per tunnel layer type, malformed headers per layer, too deep.
    pub tunnels: TunnelStats,
    /// Packets that could not be decoded to TCP/UDP over IP for a reason that may hide hosts.
    pub undecoded: UndecodedStats,
    #[serde(flatten)]
    pub workers: WorkerStats,
    pub observations: u64,
}

pub struct Analysis {
    /// Sorted by packet time, then input position.
    pub observations: Vec<Observation>,
    pub stats: Stats,
    pub inputs: Vec<InputSummary>,
    /// First-seen and last-seen packet times over all inputs.
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    /// Problems that stopped reading an input (the rest was still analysed).
    pub errors: Vec<String>,
}

/// Packets for one worker. Payloads stay in the mapped capture file when they can (no copy);
/// others (pipes, gzip, reassembled fragments) are copied into `bytes`.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) metas: Vec<PacketMeta>,
    bytes: Vec<u8>,
    map: Option<Arc<Mmap>>,
}

impl Batch {
    /// Empties the batch for reuse.
    pub(crate) fn clear(&mut self) {
        self.metas.clear();
        self.bytes.clear();
        self.map = None;
    }

    pub(crate) fn payload(&self, m: &PacketMeta) -> &[u8] {
        let src: &[u8] = match (&self.map, m.payload_mapped) {
            (Some(map), true) => map,
            _ => &self.bytes,
        };
        &src[m.payload_start..m.payload_start + m.payload_len as usize]
    }
}

/// Where the reader puts the packets that matter: worker queues (here), or a worker in the
/// same thread (live capture on AF_PACKET, where the kernel already spread flows over threads).
pub(crate) trait PacketSink {
    /// `map` is the mapped file `payload` lies in, if any.
    fn push(&mut self, meta: PacketMeta, payload: &[u8], map: Option<&Arc<Mmap>>, hash: u64);
}

pub(crate) struct Dispatcher {
    senders: Vec<Sender<Batch>>,
    free: Receiver<Batch>,
    batches: Vec<Batch>,
}

impl PacketSink for Dispatcher {
    /// Queues a packet for its worker.
    fn push(&mut self, meta: PacketMeta, payload: &[u8], map: Option<&Arc<Mmap>>, hash: u64) {
        let w = (hash % self.senders.len() as u64) as usize;
        let mut meta = meta;
        meta.payload_len = payload.len() as u32;
        let offset = map
            .and_then(|m| (payload.as_ptr() as usize).checked_sub(m.as_ptr() as usize))
            .filter(|o| o + payload.len() <= map.map_or(0, |m| m.len()));
        let b = &mut self.batches[w];
        match (map, offset) {
            (Some(m), Some(o)) => {
                if b.map.as_ref().is_some_and(|bm| !Arc::ptr_eq(bm, m)) {
                    self.flush(w);
                }
                let b = &mut self.batches[w];
                b.map.get_or_insert_with(|| m.clone());
                meta.payload_mapped = true;
                meta.payload_start = o;
                b.metas.push(meta);
            }
            _ => {
                meta.payload_mapped = false;
                meta.payload_start = b.bytes.len();
                b.bytes.extend_from_slice(payload);
                b.metas.push(meta);
            }
        }
        let b = &self.batches[w];
        if b.metas.len() >= BATCH_PACKETS || b.bytes.len() >= BATCH_BYTES {
            self.flush(w);
        }
    }
}

impl Dispatcher {
    /// One queue per worker; used batches come back on `free`.
    pub(crate) fn new(senders: Vec<Sender<Batch>>, free: Receiver<Batch>) -> Dispatcher {
        let n = senders.len();
        Dispatcher { senders, free, batches: (0..n).map(|_| Batch::default()).collect() }
    }

    pub(crate) fn workers(&self) -> usize {
        self.senders.len()
    }

    pub(crate) fn flush(&mut self, w: usize) {
        if self.batches[w].metas.is_empty() {
            return;
        }
        let fresh = self.free.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batches[w], fresh);
        // A worker only stops when its channel closes, so send cannot fail while we run.
        let _ = self.senders[w].send(full);
    }
}

/// Addresses that DNS answers for names a rule matches have given, learned by the reader in
/// capture order. A connection that names nothing is worth keeping for DNS-answer attribution
/// only if it goes to one of them; deciding it here, in packet order, keeps `analyze`'s memory
/// flat and its output the same for any number of workers. (The sink then checks the client too.)
pub(crate) struct AnsweredAddrs {
    rules: Arc<Rules>,
    set: rustc_hash::FxHashSet<std::net::IpAddr>,
}

/// Addresses remembered; past this the set starts over (the sink's own map is the precise one).
const ANSWERED_MAX: usize = 262_144;

impl AnsweredAddrs {
    pub(crate) fn new(rules: Arc<Rules>) -> AnsweredAddrs {
        AnsweredAddrs { rules, set: Default::default() }
    }

    /// A DNS message from port 53: a response with answers for a matched name adds its addresses.
    fn learn(&mut self, msg: &[u8]) {
        // QR set and at least one answer, before any parsing.
        if msg.len() < 12 || msg[2] & 0x80 == 0 || (msg[6] == 0 && msg[7] == 0) {
            return;
        }
        let Ok(m) = crate::proto::dns::parse(msg) else {
            return;
        };
        if !m.questions.iter().any(|q| self.rules.find_index(&q.name).is_some()) {
            return;
        }
        if self.set.len() >= ANSWERED_MAX {
            self.set.clear();
        }
        for a in &m.answers {
            match a.data {
                crate::proto::dns::AnswerData::A(v4) => self.set.insert(v4.into()),
                crate::proto::dns::AnswerData::Aaaa(v6) => self.set.insert(v6.into()),
                _ => false,
            };
        }
    }
}

/// Counts, decodes and defragments packets, and passes on what matters.
pub(crate) struct Reader<S> {
    pub(crate) stats: Stats,
    pub(crate) defrag: Defragmenter,
    pub(crate) dispatch: S,
    /// Packets per link type; a short list (captures have one or two), cheaper per packet than a map.
    link_counts: Vec<(u32, u64)>,
    seq: u64,
    pub(crate) first_ts: Option<i64>,
    pub(crate) last_ts: Option<i64>,
    /// `analyze` only: see [`AnsweredAddrs`]. Without it every nameless connection is kept.
    pub(crate) answered: Option<AnsweredAddrs>,
    /// UDP ports passed on besides DNS and QUIC: DHCP, and the `port` rules' (KSC).
    udp_ports: PortSet,
    /// Tunnels and overlays to decode.
    pub(crate) decode_cfg: DecodeConfig,
    decap: DecapCounters,
    tunnel_ids: LocalCache,
}

/// A set of ports, one bit each: a look-up per UDP packet costs a shift and a mask.
struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    fn new() -> PortSet {
        PortSet(Box::new([0; 1024]))
    }
    fn insert(&mut self, p: u16) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
}

impl<S: PacketSink> Reader<S> {
    pub(crate) fn new(dispatch: S) -> Reader<S> {
        Reader {
            stats: Stats::default(),
            defrag: Defragmenter::default(),
            dispatch,
            link_counts: Vec::new(),
            seq: 0,
            first_ts: None,
            last_ts: None,
            answered: None,
            decode_cfg: DecodeConfig::default(),
            decap: DecapCounters::default(),
            tunnel_ids: LocalCache::default(),
            udp_ports: {
                let mut p = PortSet::new();
                for port in [67, 68, 546, 547] {
                    p.insert(port);
                }
                p
            },
        }
    }

    /// Passes on UDP to the ports of the `port` rules (a rules reload does not change them).
    pub(crate) fn watch_port_rules(&mut self, rules: &Rules) {
        for r in rules.set.rules.iter().filter(|r| r.kind == crate::rules::model::MatchKind::Port) {
            for (port, proto) in r.patterns.iter().filter_map(|p| crate::rules::matcher::parse_port(p)) {
                if proto == decode::IPPROTO_UDP {
                    self.udp_ports.insert(port);
                }
            }
        }
    }

    /// The counters so far (link types and fragments filled in).
    pub(crate) fn stats_now(&self) -> Stats {
        let mut s = self.stats.clone();
        s.fragments = self.defrag.stats.clone();
        s.link_types = self.link_counts.iter().map(|(lt, c)| (link::linktype_name(*lt), *c)).collect();
        s.tunnels = self.decap.tunnel_stats();
        s.skipped.causes = self.decap.skip_causes();
        s.undecoded = self.decap.undecoded();
        s
    }

    /// [`Reader::packet`], with a panic in decoding (or, with a worker in this thread, in the
    /// worker) contained to this packet and counted.
    pub(crate) fn packet_contained(&mut self, p: &RawPacket<'_>, map: Option<&Arc<Mmap>>, input: u32, packet: u64) {
        if let Err(msg) = contain::contained(|| self.packet(p, map, input, packet)) {
            self.stats.workers.parser_panics.count(Stage::Decode);
            contain::report(Stage::Decode, &msg, p.data);
        }
    }

    pub(crate) fn packet(&mut self, p: &RawPacket<'_>, map: Option<&Arc<Mmap>>, input: u32, packet: u64) {
        self.seq += 1;
        let pos = Position { seq: self.seq, input, packet };
        self.stats.packets += 1;
        self.stats.bytes += p.orig_len as u64;
        match self.link_counts.iter_mut().find(|(lt, _)| *lt == p.linktype) {
            Some((_, n)) => *n += 1,
            None => self.link_counts.push((p.linktype, 1)),
        }
        self.first_ts = Some(self.first_ts.map_or(p.ts_ns, |t| t.min(p.ts_ns)));
        self.last_ts = Some(self.last_ts.map_or(p.ts_ns, |t| t.max(p.ts_ns)));
        if (p.data.len() as u32) < p.orig_len {
            self.stats.truncated += 1;
        }
        let outcome = decode::decode_with(&self.decode_cfg, p.linktype, p.data);
        self.decap.count(&outcome);
        match outcome {
            Outcome::Packet(d) => self.decoded(&d, map, p.ts_ns, pos),
            Outcome::Fragment(f) => {
                let Some(datagram) = self.defrag.add(&f, p.ts_ns) else {
                    return;
                };
                // The reassembled datagram may be a tunnel's (GRE, IP-in-IP, VXLAN...): decoding goes on.
                let inner = decode::decode_reassembled_with(&self.decode_cfg, &f, &datagram);
                self.decap.count_reassembled(&inner, f.tunnels.len());
                match inner {
                    Outcome::Packet(d) => self.decoded(&d, None, p.ts_ns, pos),
                    Outcome::Malformed(_) => self.stats.malformed += 1,
                    Outcome::Skipped(s) => self.count_skip(s.kind()),
                    // A fragment inside a reassembled tunnel datagram: not reassembled again.
                    Outcome::Fragment(_) => self.stats.skipped.not_tcp_udp += 1,
                }
            }
            Outcome::Skipped(s) => self.count_skip(s.kind()),
            Outcome::Malformed(_) => self.stats.malformed += 1,
        }
    }

    fn count_skip(&mut self, s: Skip) {
        match s {
            Skip::NotIp => self.stats.skipped.not_ip += 1,
            Skip::NotTcpUdp => self.stats.skipped.not_tcp_udp += 1,
            Skip::UnsupportedLink => self.stats.skipped.unsupported_link += 1,
        }
    }

    fn decoded(&mut self, d: &Decoded<'_>, map: Option<&Arc<Mmap>>, ts_ns: i64, pos: Position) {
        self.stats.decoded += 1;
        let wanted = match d.transport {
            Transport::Udp => {
                ((d.sport == 53 || d.dport == 53) && !d.payload.is_empty())
                    || crate::proto::quic::is_quic_long_header_initial(d.payload)
                    || self.udp_ports.contains(d.dport)
            }
            Transport::Tcp { flags, .. } => !d.payload.is_empty() || flags & (TCP_SYN | TCP_RST) != 0,
        };
        if !wanted {
            self.stats.skipped.not_inspected += 1;
            return;
        }
        let proto = match d.transport {
            Transport::Tcp { .. } => decode::IPPROTO_TCP,
            Transport::Udp => decode::IPPROTO_UDP,
        };
        let attributable = match &mut self.answered {
            None => true,
            Some(a) => {
                if d.sport == 53 && matches!(d.transport, Transport::Udp) {
                    a.learn(d.payload);
                }
                !a.set.is_empty() && a.set.contains(&d.dst)
            }
        };
        let (key, reverse) = FlowKey::new(d.vlan, (d.src, d.sport), (d.dst, d.dport), proto);
        let hash = key.hash64();
        let meta = PacketMeta {
            ts_ns,
            clock_ns: self.last_ts.unwrap_or(ts_ns),
            pos,
            key,
            hash,
            reverse,
            src_mac: d.src_mac,
            transport: d.transport,
            tunnel: self.tunnel_ids.id(&d.tunnels),
            attributable,
            payload_mapped: false,
            payload_start: 0,
            payload_len: 0,
        };
        self.dispatch.push(meta, d.payload, map, hash);
    }
}

fn progress_line(done: u64, total: u64, packets: u64, started: Instant) {
    let pct = if total > 0 { done as f64 * 100.0 / total as f64 } else { 0.0 };
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprint!("\r{pct:5.1}%  {packets} packets  {:.2} Mpps ", packets as f64 / secs / 1e6);
    let _ = std::io::stderr().flush();
}

/// Analyses the inputs in order and returns what the workers found.
pub fn run(inputs: &[PathBuf], rules: Arc<Rules>, opts: &Options) -> Analysis {
    let n = opts.workers.max(1);
    let (free_tx, free_rx) = unbounded::<Batch>();
    let mut senders = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = bounded::<Batch>(QUEUE_BATCHES);
        senders.push(tx);
        let rules = rules.clone();
        let free_tx = free_tx.clone();
        let limits = opts.limits.per_worker(n);
        let h = std::thread::Builder::new()
            .name(format!("kavwatch-worker-{i}"))
            .spawn(move || {
                let mut w = Worker::new(rules, limits);
                for mut batch in rx {
                    // A panic outside one packet's work (each packet's is contained) restarts the worker.
                    w.process_batch_contained(&batch.metas, |m| batch.payload(m));
                    let r = contain::contained(|| w.planted_worker_panic());
                    if let Err(msg) = r {
                        w.restart_after_panic(&msg);
                    }
                    batch.clear();
                    let _ = free_tx.send(batch);
                }
                if let Err(msg) = contain::contained(|| w.finish()) {
                    w.restart_after_panic(&msg);
                }
                (w.observations, w.stats)
            })
            .expect("spawning a worker thread");
        handles.push(h);
    }
    let mut reader = Reader::new(Dispatcher::new(senders, free_rx));
    reader.watch_port_rules(&rules);
    reader.answered = Some(AnsweredAddrs::new(rules.clone()));
    reader.decode_cfg = opts.decode;
    let show_progress = opts.progress && std::io::stderr().is_terminal();
    let total_bytes: u64 = inputs.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut done_bytes = 0u64;
    let mut summaries = Vec::new();
    let mut errors = Vec::new();
    for (idx, path) in inputs.iter().enumerate() {
        let mut summary = InputSummary { path: path.display().to_string(), packets: 0, bytes: 0, error: None };
        let mut r = match CaptureReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                summary.error = Some(e.to_string());
                errors.push(e.to_string());
                summaries.push(summary);
                continue;
            }
        };
        let before = reader.stats.bytes;
        let map = r.mapping().cloned();
        loop {
            match r.next_packet() {
                Ok(Some(p)) => {
                    reader.packet_contained(&p, map.as_ref(), idx as u32, p.number);
                    let packet = p.number;
                    if show_progress && packet % 65_536 == 0 && last_progress.elapsed() > Duration::from_millis(250) {
                        last_progress = Instant::now();
                        progress_line(done_bytes + r.offset(), total_bytes, reader.stats.packets, started);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let e: CaptureError = e;
                    summary.error = Some(e.to_string());
                    errors.push(e.to_string());
                    break;
                }
            }
        }
        done_bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        summary.packets = r.packets();
        summary.bytes = reader.stats.bytes - before;
        summaries.push(summary);
    }
    if show_progress {
        progress_line(total_bytes, total_bytes, reader.stats.packets, started);
        eprintln!();
    }
    for w in 0..n {
        reader.dispatch.flush(w);
    }
    reader.defrag.finish();
    let mut stats = reader.stats_now();
    let Reader { dispatch, first_ts, last_ts, .. } = reader;
    drop(dispatch);
    let mut observations = Vec::new();
    for h in handles {
        match h.join() {
            Ok((obs, ws)) => {
                observations.extend(obs);
                stats.workers.add(&ws);
            }
            // Its packets are contained; this would be a panic in the restart itself.
            Err(_) => {
                stats.workers.worker_restarts += 1;
                errors.push("a worker thread died: its findings are lost (a bug; see stats.worker_restarts)".into());
            }
        }
    }
    observations.sort_by_key(|o| o.sort_key());
    stats.observations = observations.len() as u64;
    Analysis { observations, stats, inputs: summaries, first_ts, last_ts, errors }
}
