//! State checkpoints of `live`, so that a restart (an upgrade, a reboot, a crash) does not forget
//! every host seen since the first start: the report after a restart holds them all. Kept: the
//! host table (every host with its counts per category, domains, first/last seen, verdict facts,
//! MACs, host names, latest observations; the MAC table; the hourly timeline; hosts evicted), the
//! alert windows (so alerts go on with their sequence numbers and intervals), the resolvers
//! learned from the traffic, and the run's first/last packet time and observation and event
//! counts. Written to `STATE_DIR/live.checkpoint` every report interval and at exit, atomically
//! (a temporary file with an unpredictable name, mode 0600, fsynced, renamed over the old one,
//! the directory fsynced), so a SIGKILL loses at most one interval. Format: the magic
//! `KAVWCKPT`, a format version (u32, little endian), the payload length (u64 LE), the SHA-256
//! of the payload, then the payload: a [`Checkpoint`] in postcard (serde). Rules and tunnel
//! stacks are numbered per process, so the checkpoint carries rule ids and tunnel layers and they
//! are numbered again at load. A file that does not check out (magic, version, length, hash,
//! decoding, a length past the bound for `--max-hosts`) is set aside as
//! `live.checkpoint.damaged-<unix time>` and live starts fresh with one warning; `--fresh` sets
//! any checkpoint aside as `live.checkpoint.old`. Not kept: capture, worker, attribution, alert
//! engine, Security Center and DHCP counters (they count this run), the DHCP lease book, the DNS
//! answer map and the resolvers' recent queries (they age out in minutes anyway), observations
//! still held for time order (at most [`crate::attribution::LIVE_HOLD_NS`]), the alert spool
//! (it keeps itself).

mod checkpoint;

pub use checkpoint::*;

use std::path::PathBuf;

use serde::Serialize;

/// Where `live` keeps its checkpoint, and whether to start over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub dir: PathBuf,
    /// `--fresh`: set the checkpoint aside (`.old`) and start with an empty table.
    pub fresh: bool,
}

/// Checkpoint counters of a `live` run (in the report as `stats.checkpoint`).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct CheckpointStats {
    /// Checkpoints written.
    pub writes: u64,
    /// Checkpoints that could not be written (live went on).
    pub failures: u64,
    /// Size of the last one written, and how long the sink paused for it (snapshot of the
    /// tables, encoding, writing, fsync).
    pub last_bytes: u64,
    pub last_elapsed_ms: f64,
    /// Wall-clock time of the last one written (ns since the epoch).
    pub last_saved_ns: Option<i64>,
    /// Hosts taken from the checkpoint at start.
    pub restored_hosts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("checkpoint {path} is damaged ({reason}): set aside as {set_aside}, starting fresh")]
    Damaged { path: PathBuf, reason: String, set_aside: PathBuf },
    #[error(
        "checkpoint {path} is damaged ({reason}) and could not be set aside ({error}): starting fresh, it will be overwritten"
    )]
    DamagedStays { path: PathBuf, reason: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("encoding the checkpoint: {0}")]
    Encode(String),
}
