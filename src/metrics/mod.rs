//! Prometheus metrics for `live --metrics ADDR:PORT`. The live sink fills a [`LiveSnapshot`]
//! from the very counters its JSON report carries, [`render_live`] turns it into the text
//! exposition format 0.0.4 (one family per metric with `# HELP` and `# TYPE`, label values
//! escaped), and a small HTTP/1.x server on `std::net` ([`server`]) answers `GET /metrics` with
//! it. The sink never waits on the server: they share a [`Published`] text; a scrape raises its
//! "wanted" flag, the sink (which wakes at least every 100 ms) sees it and publishes a fresh
//! rendering, and the server serves that, or the last one if none came within a second. The
//! server bounds what a client can cost: a request head of at most 8 KiB read within 2 s, at most
//! 4 connections at a time (more are closed at once and counted), one request per connection.

mod exposition;
pub mod server;

pub use exposition::{AlertDestMetrics, InterfaceMetrics, LiveSnapshot, SocketMetrics, escape_label, render_live};
pub use server::{Published, ServerCounters, serve};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What `live` needs to feed the metrics server (a field of `live::LiveOutputs`).
pub struct Exporter {
    pub published: Arc<Published>,
    /// When this process started (`kavwatch_start_time_seconds`).
    pub start_time: SystemTime,
    /// How long the rules in use took to load, and when they were.
    pub rules_load: Duration,
    pub rules_loaded_at: SystemTime,
}

impl Exporter {
    pub fn new(published: Arc<Published>, rules_load: Duration) -> Exporter {
        let now = SystemTime::now();
        Exporter { published, start_time: now, rules_load, rules_loaded_at: now }
    }

    /// New rules are in use (a SIGHUP reload that took `took`).
    pub fn rules_loaded(&mut self, took: Duration) {
        self.rules_load = took;
        self.rules_loaded_at = SystemTime::now();
    }
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
