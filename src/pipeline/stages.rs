//! Each stage's cost on one thread, measured with the stages' own code run one after another
//! on a capture (`cargo bench --bench stages -- FILE`): framing, decoding, sequencing, one
//! worker, and the sink (merge, attribution, host table, events). The README's estimate for
//! machines with more cores is computed from these figures (`benches/line_rate.py --stages`).
//!
//! Run on one thread, each stage finds the packet in cache where the previous one left it; in
//! the real pipeline it crosses cores. The figures are therefore a little optimistic, the
//! same way for every stage.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use serde::Serialize;

use super::frame::{CHUNK_PACKETS, Chunk};
use super::parallel::{Sequencer, decode_chunk, decoder_reader};
use super::progress::Progress;
use super::{Batch, Options};
use crate::attribution::Attributor;
use crate::capture::file::CaptureReader;
use crate::host::HostTable;
use crate::observation::Observation;
use crate::output::events::{Inputs, write_event};
use crate::rules::matcher::Rules;
use crate::worker::{Limits, Worker};

/// Seconds each stage took over the whole capture, and what it handled.
#[derive(Debug, Default, Serialize)]
pub struct StageTimes {
    pub packets: u64,
    /// Packets passed on to a worker (DNS, TCP with data or SYN/RST, QUIC, DHCP...).
    pub passed_on: u64,
    pub observations: u64,
    pub framing_s: f64,
    pub decoding_s: f64,
    pub sequencing_s: f64,
    pub worker_s: f64,
    pub sink_s: f64,
}

/// Runs every stage of `analyze` on `path`, one after another on this thread.
pub fn measure(path: &Path, rules: Arc<Rules>, opts: &Options) -> Result<StageTimes, String> {
    let mut r = CaptureReader::open(path).map_err(|e| e.to_string())?;
    let map = r.mapping().cloned();
    let (free_tx, free_rx) = unbounded::<Batch>();
    let mut decoder = decoder_reader(rules.clone(), opts.decode, free_rx);
    let mut sequencer = Sequencer::new(&rules, opts, 1, free_tx.clone(), Progress::new(false, &[]));
    let mut worker = Worker::new(rules.clone(), Limits::default());
    let mut observations: Vec<Observation> = Vec::new();
    let mut t = StageTimes::default();
    let (mut framing, mut decoding, mut sequencing, mut working) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut seq = 0u64;
    let mut run_chunk = |chunk: Chunk, t: &mut StageTimes| {
        let start = Instant::now();
        let decoded = decode_chunk(&mut decoder, chunk, 1);
        let decoded_at = Instant::now();
        let batches = sequencer.order(decoded);
        let ordered_at = Instant::now();
        for mut b in batches {
            b.raise_clocks();
            t.passed_on += b.metas.len() as u64;
            worker.process_batch_contained(&b.metas, |m| b.payload(m));
            observations.extend(worker.take_observations());
            b.clear();
            let _ = free_tx.send(b);
        }
        decoding += decoded_at - start;
        sequencing += ordered_at - decoded_at;
        working += ordered_at.elapsed();
    };
    let mut started = Instant::now();
    let mut chunk = Chunk::new(0, map.clone());
    loop {
        match r.next_packet() {
            Ok(Some(p)) => {
                t.packets += 1;
                chunk.push(&p);
                if chunk.full(CHUNK_PACKETS) {
                    let mut full = std::mem::replace(&mut chunk, Chunk::new(0, map.clone()));
                    full.seq_base = seq;
                    seq += full.records.len() as u64;
                    framing += started.elapsed();
                    run_chunk(full, &mut t);
                    started = Instant::now();
                }
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    framing += started.elapsed();
    chunk.seq_base = seq;
    run_chunk(chunk, &mut t);
    let start = Instant::now();
    worker.finish();
    observations.extend(worker.take_observations());
    working += start.elapsed();

    // The sink: time order, attribution, the host table and the events.
    let start = Instant::now();
    observations.sort_by_key(|o| o.sort_key());
    let mut attributor = Attributor::default();
    let mut kept = Vec::new();
    for o in observations {
        attributor.process_one(o, &rules, &mut kept);
    }
    kept.extend(attributor.finish(&rules));
    kept.sort_by_key(|o| o.sort_key());
    let mut table = HostTable::new(usize::MAX);
    let names = [path.display().to_string()];
    let mut events = std::io::sink();
    for o in &kept {
        table.add(o, &rules, None);
        write_event(&mut events, o, &rules, Inputs::Files(&names), None).map_err(|e| e.to_string())?;
    }
    t.observations = kept.len() as u64;
    t.sink_s = start.elapsed().as_secs_f64();
    t.framing_s = framing.as_secs_f64();
    t.decoding_s = decoding.as_secs_f64();
    t.sequencing_s = sequencing.as_secs_f64();
    t.worker_s = working.as_secs_f64();
    Ok(t)
}
