//! Decoder threads and the sequencer (see the module comment of [`super`]).
//!
//! Chunk `k` goes to decoder `k % D`, and the sequencer reads decoder `k % D`'s results for
//! chunk `k`: chunk order comes back without a reorder buffer. What needs packet order is
//! left to the sequencer, which does it in sequence-number order: the DNS answers that make a
//! packet `attributable`, IP reassembly, and the packet clock.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use memmap2::Mmap;

use super::frame::{Chunk, frame_input};
use super::progress::Progress;
use super::reader::{AnswerFilter, AnsweredAddrs, Batch, Dispatcher, PacketSink, Reader};
use super::{Analysis, InputSummary, Options};
use crate::capture::file::CaptureReader;
use crate::decode::{self, Outcome};
use crate::observation::{Observation, Position};
use crate::rules::matcher::Rules;
use crate::spill::{Sorter, merge};
use crate::worker::contain::{self, Stage};
use crate::worker::{PacketMeta, Worker, WorkerStats};

/// Batches queued for each worker.
const WORKER_QUEUE: usize = 4;
/// Chunks queued for and from each decoder, and from each framing thread.
const CHUNK_QUEUE: usize = 2;

/// A decoder's packets for one chunk: a batch per worker, in packet order.
pub(super) struct ChunkSink {
    batches: Vec<Batch>,
    /// Every packet passed on, as (worker, index in its batch), in packet order: the
    /// sequencer marks each `attributable`.
    order: Vec<(u32, u32)>,
    /// Matched DNS answers, by the sequence number of their response.
    learned: Vec<(u64, Vec<IpAddr>)>,
    free: Receiver<Batch>,
}

impl ChunkSink {
    fn begin(&mut self, workers: usize) {
        self.batches = (0..workers).map(|_| self.free.try_recv().unwrap_or_default()).collect();
    }
}

impl PacketSink for ChunkSink {
    fn push(&mut self, meta: PacketMeta, payload: &[u8], map: Option<&Arc<Mmap>>, hash: u64) {
        let w = (hash % self.batches.len() as u64) as usize;
        let b = &mut self.batches[w];
        // A chunk lies in one input, so in one mapping.
        let added = b.add(meta, payload, map);
        debug_assert!(added);
        self.order.push((w as u32, (b.metas.len() - 1) as u32));
    }

    fn learned(&mut self, seq: u64, addrs: Vec<IpAddr>) {
        self.learned.push((seq, addrs));
    }
}

pub(super) struct DecodedChunk {
    chunk: Chunk,
    batches: Vec<Batch>,
    order: Vec<(u32, u32)>,
    learned: Vec<(u64, Vec<IpAddr>)>,
    /// Sequence numbers of the fragments, reassembled by the sequencer.
    fragments: Vec<u64>,
}

/// A decoder thread's reader: answers and fragments deferred to the sequencer.
pub(super) fn decoder_reader(
    rules: Arc<Rules>,
    decode: decode::DecodeConfig,
    free: Receiver<Batch>,
) -> Reader<ChunkSink> {
    let sink = ChunkSink { batches: Vec::new(), order: Vec::new(), learned: Vec::new(), free };
    let mut reader = Reader::new(sink);
    reader.watch_port_rules(&rules);
    reader.answered = Some(AnswerFilter::Deferred { rules });
    reader.decode_cfg = decode;
    reader.defer_fragments = true;
    reader
}

/// Decodes one chunk into a batch per worker.
pub(super) fn decode_chunk(reader: &mut Reader<ChunkSink>, chunk: Chunk, workers: usize) -> DecodedChunk {
    reader.set_seq(chunk.seq_base);
    reader.dispatch.begin(workers);
    for i in 0..chunk.records.len() {
        let p = chunk.packet(i);
        reader.packet_contained(&p, chunk.map.as_ref(), chunk.input, p.number);
    }
    let d = &mut reader.dispatch;
    DecodedChunk {
        batches: std::mem::take(&mut d.batches),
        order: std::mem::take(&mut d.order),
        learned: std::mem::take(&mut d.learned),
        fragments: std::mem::take(&mut reader.deferred_fragments),
        chunk,
    }
}

fn decoder(
    rules: Arc<Rules>,
    opts: &Options,
    workers: usize,
    free: Receiver<Batch>,
    input: Receiver<Chunk>,
    output: Sender<DecodedChunk>,
) -> Reader<ChunkSink> {
    let mut reader = decoder_reader(rules, opts.decode, free);
    for chunk in input {
        if output.send(decode_chunk(&mut reader, chunk, workers)).is_err() {
            break;
        }
    }
    reader
}

/// Puts reassembled datagrams aside, to be slotted into the chunk's batches by sequence number.
#[derive(Default)]
struct Reassembled {
    workers: usize,
    packets: Vec<(usize, PacketMeta, Vec<u8>)>,
}

impl PacketSink for Reassembled {
    fn push(&mut self, meta: PacketMeta, payload: &[u8], _map: Option<&Arc<Mmap>>, hash: u64) {
        let w = (hash % self.workers as u64) as usize;
        self.packets.push((w, meta, payload.to_vec()));
    }
}

/// Takes the decoders' results in chunk order and hands the workers their batches.
pub(super) struct Sequencer {
    /// Reassembles fragments and decodes the datagrams; its answer filter is the run's.
    reader: Reader<Reassembled>,
    workers: Vec<Sender<Batch>>,
    free: Sender<Batch>,
    /// The latest packet time of the chunks handed out so far.
    clock: Option<i64>,
    packets: u64,
    progress: Progress,
}

impl Sequencer {
    fn answers(&mut self) -> &mut AnsweredAddrs {
        match &mut self.reader.answered {
            Some(AnswerFilter::Inline { addrs, .. }) => addrs,
            _ => unreachable!("the sequencer's filter is inline"),
        }
    }

    /// The sequencer of a run with `workers` workers (their queues given to [`Sequencer::chunk`]).
    pub(super) fn new(
        rules: &Arc<Rules>,
        opts: &Options,
        workers: usize,
        free: Sender<Batch>,
        progress: Progress,
    ) -> Sequencer {
        let mut reader = Reader::new(Reassembled { workers, packets: Vec::new() });
        reader.watch_port_rules(rules);
        reader.answered = Some(AnswerFilter::Inline { rules: rules.clone(), addrs: AnsweredAddrs::default() });
        reader.decode_cfg = opts.decode;
        Sequencer { reader, workers: Vec::new(), free, clock: None, packets: 0, progress }
    }

    /// Hands each worker its batch of the chunk.
    fn chunk(&mut self, d: DecodedChunk) {
        let batches = self.order(d);
        for (w, b) in batches.into_iter().enumerate() {
            if b.metas.is_empty() {
                let mut b = b;
                b.clear();
                let _ = self.free.send(b);
            } else {
                // A worker only stops when its channel closes, so send cannot fail while we run.
                let _ = self.workers[w].send(b);
            }
        }
    }

    /// Does what needs packet order for one chunk, the next in order, and returns its batches.
    pub(super) fn order(&mut self, d: DecodedChunk) -> Vec<Batch> {
        let DecodedChunk { chunk, mut batches, order, learned, fragments } = d;
        // Everything that needs packet order, in sequence-number order.
        let (mut li, mut fi) = (0, 0);
        let skip_lookups = learned.is_empty() && fragments.is_empty() && self.answers().is_empty();
        if !skip_lookups {
            for &(w, i) in &order {
                let m = &batches[w as usize].metas[i as usize];
                let seq = m.pos.seq;
                let dst = if m.reverse { m.key.a.0 } else { m.key.b.0 };
                self.ordered_until(seq, &chunk, &learned, &mut li, &fragments, &mut fi);
                let attributable = self.answers().contains(&dst);
                batches[w as usize].metas[i as usize].attributable = attributable;
            }
        }
        self.ordered_until(u64::MAX, &chunk, &learned, &mut li, &fragments, &mut fi);
        for (w, meta, payload) in std::mem::take(&mut self.reader.dispatch.packets) {
            let b = &mut batches[w];
            let at = b.metas.partition_point(|m| m.pos.seq < meta.pos.seq);
            let mut meta = meta;
            meta.payload_mapped = false;
            meta.payload_start = b.bytes.len();
            meta.payload_len = payload.len() as u32;
            b.bytes.extend_from_slice(&payload);
            b.metas.insert(at, meta);
        }
        let floor = self.clock.unwrap_or(i64::MIN);
        for b in &mut batches {
            b.clock_floor = floor;
        }
        if let Some(t) = chunk.max_ts {
            self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        }
        self.packets += chunk.records.len() as u64;
        self.progress.update(chunk.input, chunk.source_offset, self.packets);
        batches
    }

    /// Applies the answers learned and reassembles the fragments up to sequence number `seq`.
    fn ordered_until(
        &mut self,
        seq: u64,
        chunk: &Chunk,
        learned: &[(u64, Vec<IpAddr>)],
        li: &mut usize,
        fragments: &[u64],
        fi: &mut usize,
    ) {
        loop {
            let l = learned.get(*li).map(|(s, _)| *s).filter(|s| *s <= seq);
            let f = fragments.get(*fi).copied().filter(|s| *s < seq);
            match (l, f) {
                (Some(ls), Some(fs)) if fs < ls => self.fragment(chunk, fs, fi),
                (Some(_), _) => {
                    self.answers().insert(&learned[*li].1);
                    *li += 1;
                }
                (None, Some(fs)) => self.fragment(chunk, fs, fi),
                (None, None) => return,
            }
        }
    }

    pub(super) fn finish(&mut self) {
        self.reader.defrag.finish();
    }

    fn fragment(&mut self, chunk: &Chunk, seq: u64, fi: &mut usize) {
        *fi += 1;
        let i = (seq - chunk.seq_base - 1) as usize;
        let p = chunk.packet(i);
        // The packet clock as the single reader had it: the latest time up to this packet.
        let upto = chunk.records[..=i].iter().map(|r| r.ts_ns).max();
        self.reader.last_ts = self.clock.max(upto);
        let pos = Position { seq, input: chunk.input, packet: p.number };
        let r = contain::contained(|| {
            if let Outcome::Fragment(f) = decode::decode_with(&self.reader.decode_cfg, p.linktype, p.data) {
                self.reader.fragment(&f, p.ts_ns, pos);
            }
        });
        if let Err(msg) = r {
            self.reader.stats.workers.parser_panics.count(Stage::Decode);
            contain::report(Stage::Decode, &msg, p.data);
        }
    }
}

type WorkerHandle = JoinHandle<(Sorter<Observation>, WorkerStats)>;

/// Lowers the calling worker thread's scheduling priority a little (nice +5). The thread that
/// reads and decodes is the pipeline's narrowest stage: when there are more threads than cores,
/// the workers, which have time to spare, should wait for it rather than the other way round.
fn yield_to_reader() {
    #[cfg(target_os = "linux")]
    // Safety: plain system calls on this thread's own id; a failure only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, (now + 5).min(19));
    }
}

fn spawn_workers(
    rules: &Arc<Rules>,
    opts: &Options,
    free_tx: &Sender<Batch>,
) -> (Vec<Sender<Batch>>, Vec<WorkerHandle>) {
    let n = opts.workers.max(1);
    let mut senders = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = bounded::<Batch>(WORKER_QUEUE);
        senders.push(tx);
        let rules = rules.clone();
        let free_tx = free_tx.clone();
        let limits = opts.limits.per_worker(n);
        let mut sorter = Sorter::new(opts.spill.clone(), opts.memory_budget / n);
        let h = std::thread::Builder::new()
            .name(format!("kavwatch-worker-{i}"))
            .spawn(move || {
                yield_to_reader();
                let mut w = Worker::new(rules, limits);
                for mut batch in rx {
                    batch.raise_clocks();
                    // A panic outside one packet's work (each packet's is contained) restarts the worker.
                    w.process_batch_contained(&batch.metas, |m| batch.payload(m));
                    let r = contain::contained(|| w.planted_worker_panic());
                    if let Err(msg) = r {
                        w.restart_after_panic(&msg);
                    }
                    // Handed over after every batch: what the worker holds for the sink is never
                    // more than a batch's worth, and nothing waits in its bounded queues to be dropped.
                    for o in w.take_observations() {
                        sorter.push(o);
                    }
                    batch.clear();
                    let _ = free_tx.send(batch);
                }
                if let Err(msg) = contain::contained(|| w.finish()) {
                    w.restart_after_panic(&msg);
                }
                for o in w.take_observations() {
                    sorter.push(o);
                }
                (sorter, w.stats)
            })
            .expect("spawning a worker thread");
        handles.push(h);
    }
    (senders, handles)
}

/// What reading the inputs came to, whichever way they were read.
struct Read {
    reader_stats: super::Stats,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    summaries: Vec<InputSummary>,
    interrupted: bool,
}

impl Read {
    fn of<S: PacketSink>(reader: &Reader<S>, summaries: Vec<InputSummary>, opts: &Options) -> Read {
        Read {
            reader_stats: reader.stats_now(),
            first_ts: reader.first_ts,
            last_ts: reader.last_ts,
            summaries,
            interrupted: opts.stop.load(Ordering::Relaxed),
        }
    }
}

/// Analyses the inputs in their order and returns what the workers found. With one decoder
/// the reader thread decodes (the cheapest on two cores); with more, framing threads (several
/// inputs at once), decoder threads and the sequencer share the work.
pub fn run(inputs: &[PathBuf], rules: Arc<Rules>, opts: &Options) -> Analysis {
    let n = opts.workers.max(1);
    let (free_tx, free_rx) = unbounded::<Batch>();
    let (worker_tx, worker_handles) = spawn_workers(&rules, opts, &free_tx);
    let sizes: Vec<u64> = inputs.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).collect();
    let progress = Progress::new(opts.progress && std::io::stderr().is_terminal(), &sizes);
    let read = if opts.decoders <= 1 {
        read_inline(inputs, &rules, opts, Dispatcher::new(worker_tx, free_rx), progress)
    } else {
        read_parallel(inputs, &rules, opts, worker_tx, free_tx, free_rx, progress)
    };
    let mut stats = read.reader_stats;
    let mut errors: Vec<String> = read.summaries.iter().filter_map(|s| s.error.clone()).collect();
    let mut sorters = Vec::with_capacity(n);
    for h in worker_handles {
        match h.join() {
            Ok((sorter, ws)) => {
                stats.workers.add(&ws);
                sorters.push(sorter);
            }
            // Its packets are contained; this would be a panic in the restart itself.
            Err(_) => {
                stats.workers.worker_restarts += 1;
                errors.push("a worker thread died: its findings are lost (a bug; see stats.worker_restarts)".into());
            }
        }
    }
    stats.observations = sorters.iter().map(|s| s.len()).sum();
    if let Some(e) = opts.spill.error() {
        errors.push(format!("{e}: reading stopped there; the report covers the packets read before"));
    }
    Analysis {
        observations: merge(sorters, opts.spill.clone()),
        stats,
        inputs: read.summaries,
        first_ts: read.first_ts,
        last_ts: read.last_ts,
        errors,
        interrupted: read.interrupted,
    }
}

/// Why reading stopped early, if it did.
fn stop_reason(opts: &Options) -> Option<&'static str> {
    if opts.stop.load(Ordering::Relaxed) {
        Some("interrupted")
    } else if opts.spill.failed() {
        Some("stopped (spill directory)")
    } else {
        None
    }
}

/// The summaries of the inputs never reached.
fn not_read(inputs: &[PathBuf], summaries: &mut Vec<InputSummary>, opts: &Options) {
    let reason = stop_reason(opts).unwrap_or("stopped");
    for path in &inputs[summaries.len()..] {
        summaries.push(InputSummary {
            path: path.display().to_string(),
            packets: 0,
            bytes: 0,
            error: Some(format!("not read: the analysis was {reason}")),
        });
    }
}

/// One thread reads, decodes and dispatches every packet, input after input.
fn read_inline(
    inputs: &[PathBuf],
    rules: &Arc<Rules>,
    opts: &Options,
    dispatch: Dispatcher,
    mut progress: Progress,
) -> Read {
    let mut reader = Reader::new(dispatch);
    reader.watch_port_rules(rules);
    reader.answered = Some(AnswerFilter::Inline { rules: rules.clone(), addrs: AnsweredAddrs::default() });
    reader.decode_cfg = opts.decode;
    let mut summaries = Vec::with_capacity(inputs.len());
    for (idx, path) in inputs.iter().enumerate() {
        if stop_reason(opts).is_some() {
            break;
        }
        let mut summary = InputSummary { path: path.display().to_string(), packets: 0, bytes: 0, error: None };
        let (packets, bytes) = (reader.stats.packets, reader.stats.bytes);
        match CaptureReader::open(path) {
            Err(e) => summary.error = Some(e.to_string()),
            Ok(mut r) => {
                let map = r.mapping().cloned();
                loop {
                    match r.next_packet() {
                        Ok(Some(p)) => {
                            reader.packet_contained(&p, map.as_ref(), idx as u32, p.number);
                            let number = p.number;
                            if number % 1024 == 0 {
                                progress.update(idx as u32, r.source_offset(), reader.stats.packets);
                                if let Some(reason) = stop_reason(opts) {
                                    summary.error = Some(format!("{reason} after packet {number} of this input"));
                                    break;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            summary.error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        summary.packets = reader.stats.packets - packets;
        summary.bytes = reader.stats.bytes - bytes;
        summaries.push(summary);
    }
    not_read(inputs, &mut summaries, opts);
    progress.finish(reader.stats.packets);
    for w in 0..reader.dispatch.workers() {
        reader.dispatch.flush(w);
    }
    reader.defrag.finish();
    Read::of(&reader, summaries, opts)
}

/// Framing threads, decoder threads and the sequencer.
fn read_parallel(
    inputs: &[PathBuf],
    rules: &Arc<Rules>,
    opts: &Options,
    worker_tx: Vec<Sender<Batch>>,
    free_tx: Sender<Batch>,
    free_rx: Receiver<Batch>,
    progress: Progress,
) -> Read {
    let n = worker_tx.len();
    let decoders = opts.decoders.max(1);
    let mut to_decoders = Vec::with_capacity(decoders);
    let mut from_decoders = Vec::with_capacity(decoders);
    let mut decoder_handles = Vec::with_capacity(decoders);
    for i in 0..decoders {
        let (in_tx, in_rx) = bounded::<Chunk>(CHUNK_QUEUE);
        let (out_tx, out_rx) = bounded::<DecodedChunk>(CHUNK_QUEUE);
        to_decoders.push(in_tx);
        from_decoders.push(out_rx);
        let (rules, opts, free) = (rules.clone(), opts.clone(), free_rx.clone());
        let h = std::thread::Builder::new()
            .name(format!("kavwatch-decoder-{i}"))
            .spawn(move || decoder(rules, &opts, n, free, in_rx, out_tx))
            .expect("spawning a decoder thread");
        decoder_handles.push(h);
    }
    let mut sequencer = Sequencer::new(rules, opts, n, free_tx, progress);
    sequencer.workers = worker_tx;
    let sequencer = std::thread::Builder::new()
        .name("kavwatch-sequencer".into())
        .spawn(move || {
            for k in 0usize.. {
                match from_decoders[k % from_decoders.len()].recv() {
                    Ok(d) => sequencer.chunk(d),
                    Err(_) => break,
                }
            }
            sequencer.progress.finish(sequencer.packets);
            sequencer.finish();
            sequencer.reader
        })
        .expect("spawning the sequencer thread");

    let summaries = distribute(inputs, opts, &to_decoders);
    drop(to_decoders);
    // Decoders end when their queue closes, the sequencer when they have, the workers when it has.
    let mut reader = sequencer.join().expect("the sequencer does not panic (its packets are contained)");
    for h in decoder_handles {
        let d = h.join().expect("a decoder does not panic (its packets are contained)");
        reader.absorb(&d);
    }
    Read::of(&reader, summaries, opts)
}

/// Frames the inputs, a few at once, and deals their chunks to the decoders in input order.
fn distribute(inputs: &[PathBuf], opts: &Options, decoders: &[Sender<Chunk>]) -> Vec<InputSummary> {
    let at_once = opts.workers.max(2);
    let mut framing: VecDeque<(Receiver<Chunk>, JoinHandle<Option<String>>)> = VecDeque::new();
    let mut next_input = 0usize;
    let start = |framing: &mut VecDeque<_>, next_input: &mut usize| {
        while framing.len() < at_once && *next_input < inputs.len() {
            let (tx, rx) = bounded::<Chunk>(CHUNK_QUEUE);
            let (path, idx, stop) = (inputs[*next_input].clone(), *next_input as u32, opts.stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("kavwatch-frame-{idx}"))
                .spawn(move || frame_input(&path, idx, tx, stop))
                .expect("spawning a framing thread");
            framing.push_back((rx, h));
            *next_input += 1;
        }
    };
    let mut summaries = Vec::with_capacity(inputs.len());
    let (mut k, mut seq) = (0usize, 0u64);
    while summaries.len() < inputs.len() && stop_reason(opts).is_none() {
        start(&mut framing, &mut next_input);
        let Some((rx, handle)) = framing.pop_front() else { break };
        let idx = summaries.len();
        let mut summary = InputSummary { path: inputs[idx].display().to_string(), packets: 0, bytes: 0, error: None };
        let mut cut_short = None;
        loop {
            if let Some(reason) = stop_reason(opts) {
                cut_short = Some(reason);
                break;
            }
            let Ok(mut chunk) = rx.recv() else { break };
            chunk.seq_base = seq;
            seq += chunk.records.len() as u64;
            summary.packets += chunk.records.len() as u64;
            summary.bytes += chunk.records.iter().map(|r| u64::from(r.orig_len)).sum::<u64>();
            // A decoder only stops when its queue closes.
            let _ = decoders[k % decoders.len()].send(chunk);
            k += 1;
        }
        drop(rx);
        summary.error = handle.join().expect("framing does not panic");
        if let Some(reason) = cut_short
            && summary.error.is_none()
        {
            summary.error = Some(format!("{reason} after packet {} of this input", summary.packets));
        }
        summaries.push(summary);
    }
    // Inputs not reached because the analysis stopped: their framing threads end on the
    // closed channel.
    for (rx, handle) in framing {
        drop(rx);
        let _ = handle.join();
    }
    not_read(inputs, &mut summaries, opts);
    summaries
}
