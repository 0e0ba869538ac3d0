//! The capture threads: each reads one source (an AF_PACKET ring with its own worker, or a
//! libpcap handle that dispatches batches to worker threads), reopens it when its interface
//! vanishes, and ships observations and counters to the sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::tunnel_forward::TunnelForward;
use super::{Msg, REOPEN_EVERY, SHIP_EVERY, SharedRules, now_ns};
use crate::capture::afpacket::{AfPacketSocket, LiveError, LivePacket, RingConfig, SocketStats};
use crate::capture::file::RawPacket;
use crate::capture::libpcap::PcapSource;
use crate::pipeline::{Batch, Dispatcher, PacketSink, Reader};
use crate::rules::matcher::Rules;
use crate::worker::contain;
use crate::worker::{Limits, PacketMeta, Worker, WorkerStats};

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
pub(super) trait Source: Sized {
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
pub(super) struct Capture<S> {
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
    pub(super) fn new(id: usize, iface: usize, name: String, src: S) -> Capture<S> {
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
pub(super) fn afpacket_thread(
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
pub(super) fn pcap_capture_thread(
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

pub(super) fn pcap_worker_thread(
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
