//! Framing: one thread per input walks its record headers and cuts the records into chunks for
//! the decoders. A mapped file's chunks only point into the mapping; gzip and standard input
//! are read (and decompressed) here, on the input's own thread, and their records copied.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use memmap2::Mmap;

use crate::capture::file::{CaptureReader, RawPacket};

/// A chunk ends after this many records...
pub(super) const CHUNK_PACKETS: usize = 1024;
/// ...or this many bytes of them.
const CHUNK_BYTES: usize = 256 * 1024;

/// Records per chunk: [`CHUNK_PACKETS`], or fewer in tests (`KAVWATCH_TEST_CHUNK_PACKETS`), so
/// that small captures cross many chunks and decoders.
fn chunk_packets() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("KAVWATCH_TEST_CHUNK_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(CHUNK_PACKETS).max(1)
    })
}

/// One record: its header fields, and where its bytes are (in the mapping, or in `bytes`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pub ts_ns: i64,
    pub linktype: u32,
    pub orig_len: u32,
    pub number: u64,
    start: usize,
    len: u32,
}

/// Consecutive records of one input.
pub(crate) struct Chunk {
    pub input: u32,
    pub map: Option<Arc<Mmap>>,
    pub records: Vec<Record>,
    bytes: Vec<u8>,
    /// Packets of all inputs before this chunk (set when it is handed out).
    pub seq_base: u64,
    /// The latest packet time in the chunk.
    pub max_ts: Option<i64>,
    /// How far into its input file the chunk ends, in the file's own bytes (progress).
    pub source_offset: u64,
}

impl Chunk {
    pub(super) fn new(input: u32, map: Option<Arc<Mmap>>) -> Chunk {
        Chunk {
            input,
            map,
            records: Vec::with_capacity(CHUNK_PACKETS),
            bytes: Vec::new(),
            seq_base: 0,
            max_ts: None,
            source_offset: 0,
        }
    }

    /// Record `i` as the decoders take it.
    pub fn packet(&self, i: usize) -> RawPacket<'_> {
        let r = &self.records[i];
        let src: &[u8] = self.map.as_deref().map_or(&self.bytes, |m| m);
        RawPacket {
            ts_ns: r.ts_ns,
            linktype: r.linktype,
            iface: 0,
            data: &src[r.start..r.start + r.len as usize],
            orig_len: r.orig_len,
            number: r.number,
        }
    }

    pub(super) fn push(&mut self, p: &RawPacket<'_>) {
        let start = match &self.map {
            // The reader's packets are slices of the mapping.
            Some(m) => p.data.as_ptr() as usize - m.as_ptr() as usize,
            None => {
                self.bytes.extend_from_slice(p.data);
                self.bytes.len() - p.data.len()
            }
        };
        self.records.push(Record {
            ts_ns: p.ts_ns,
            linktype: p.linktype,
            orig_len: p.orig_len,
            number: p.number,
            start,
            len: p.data.len() as u32,
        });
        self.max_ts = Some(self.max_ts.map_or(p.ts_ns, |t| t.max(p.ts_ns)));
    }

    pub(super) fn full(&self, packets: usize) -> bool {
        let span = match (&self.map, self.records.first(), self.records.last()) {
            (Some(_), Some(a), Some(b)) => b.start + b.len as usize - a.start,
            _ => self.bytes.len(),
        };
        self.records.len() >= packets || span >= CHUNK_BYTES
    }
}

/// Frames `path` (input number `input`) into chunks sent to `out`, until its end, an error, a
/// closed channel or `stop`. Returns the error that ended it, if any.
pub(crate) fn frame_input(path: &Path, input: u32, out: Sender<Chunk>, stop: Arc<AtomicBool>) -> Option<String> {
    let mut r = match CaptureReader::open(path) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    let map = r.mapping().cloned();
    let mut chunk = Chunk::new(input, map.clone());
    let packets = chunk_packets();
    loop {
        match r.next_packet() {
            Ok(Some(p)) => {
                chunk.push(&p);
                if chunk.full(packets) {
                    chunk.source_offset = r.source_offset();
                    let full = std::mem::replace(&mut chunk, Chunk::new(input, map.clone()));
                    if out.send(full).is_err() || stop.load(Ordering::Relaxed) {
                        return None;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                if !chunk.records.is_empty() {
                    chunk.source_offset = r.source_offset();
                    let _ = out.send(chunk);
                }
                return Some(e.to_string());
            }
        }
    }
    if !chunk.records.is_empty() {
        chunk.source_offset = r.source_offset();
        let _ = out.send(chunk);
    }
    None
}
