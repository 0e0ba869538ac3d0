//! The offline pipeline (`analyze`): framing -> decoding -> sequencing -> workers -> spill.
//!
//! - [`frame`]: one thread per input file (a few at once) walks the record headers and cuts the
//!   records into chunks; gzip is decompressed there, on that file's own thread.
//! - [`parallel`]: decoder threads decode chunks side by side ([`reader::Reader`]) into one
//!   batch per worker; the sequencer takes their results back in chunk order, applies what
//!   needs packet order (DNS answers seen so far, IP reassembly, the packet clock) and hands
//!   each worker its batch. Workers therefore see their flows' packets in capture order,
//!   whatever the number of threads, and the output is the same for any `--workers`.
//! - Workers push observations into their own [`Sorter`], which spills sorted runs to disk
//!   past its share of the memory budget; [`Analysis::observations`] merges them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::decode::counters::{TunnelStats, UndecodedStats};
use crate::decode::defrag::DefragStats;
use crate::decode::{self};
use crate::observation::Observation;
use crate::spill::{Merged, SpillArea};
use crate::worker::{Limits, WorkerStats};

mod frame;
mod parallel;
mod progress;
pub(crate) mod reader;
pub mod stages;

pub use parallel::run;
pub(crate) use reader::{Batch, Dispatcher, PacketSink, Reader};

#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    /// Decoder threads: 1 decodes in the reading thread, more in their own threads.
    pub decoders: usize,
    pub limits: Limits,
    /// Progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Tunnels and overlays.
    pub decode: decode::DecodeConfig,
    /// Where observations waiting for time order go past the memory budget.
    pub spill: Arc<SpillArea>,
    pub memory_budget: usize,
    /// Set (by SIGINT or SIGTERM) to stop reading; what was read is still analysed.
    pub stop: Arc<AtomicBool>,
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
    /// Sorted by packet time, then input position (read from the spill files as it goes).
    pub observations: Merged<Observation>,
    pub stats: Stats,
    pub inputs: Vec<InputSummary>,
    /// First-seen and last-seen packet times over all inputs.
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    /// Problems that stopped reading an input (the rest was still analysed).
    pub errors: Vec<String>,
    /// Reading stopped early at `Options::stop`.
    pub interrupted: bool,
}

impl Stats {
    /// Adds the packet counters of another reader (the derived maps are filled in by
    /// [`Reader::stats_now`]).
    pub(crate) fn add_counts(&mut self, o: &Stats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.decoded += o.decoded;
        self.skipped.not_ip += o.skipped.not_ip;
        self.skipped.not_tcp_udp += o.skipped.not_tcp_udp;
        self.skipped.unsupported_link += o.skipped.unsupported_link;
        self.skipped.not_inspected += o.skipped.not_inspected;
        self.malformed += o.malformed;
        self.truncated += o.truncated;
    }
}
