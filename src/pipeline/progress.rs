//! The progress line of `analyze` on a terminal: bytes done of all inputs, packets per second and
//! the time left, rewritten in place at most four times a second.

use std::io::Write;
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    /// Bytes of the inputs before each input (file sizes; compressed ones for gzip).
    before: Vec<u64>,
    total: u64,
}

impl Progress {
    /// `sizes`: each input's size in bytes, 0 when unknown (standard input).
    pub(crate) fn new(enabled: bool, sizes: &[u64]) -> Progress {
        let mut before = Vec::with_capacity(sizes.len());
        let mut total = 0u64;
        for s in sizes {
            before.push(total);
            total += s;
        }
        let now = Instant::now();
        Progress { enabled, started: now, last: now, before, total }
    }

    /// After a chunk of input `input` that ended `offset` bytes into it.
    pub(crate) fn update(&mut self, input: u32, offset: u64, packets: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let done = self.before.get(input as usize).copied().unwrap_or(self.total) + offset;
        eprint!("\r{}", self.line(done, packets));
        let _ = std::io::stderr().flush();
    }

    pub(crate) fn finish(&mut self, packets: u64) {
        if self.enabled {
            eprintln!("\r{}", self.line(self.total, packets));
        }
    }

    fn line(&self, done: u64, packets: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = format!("{packets} packets  {:.2} Mpps", packets as f64 / secs / 1e6);
        if self.total == 0 {
            return format!("{}  {rate} ", size(done));
        }
        let done = done.min(self.total);
        let pct = done as f64 * 100.0 / self.total as f64;
        let eta = match done {
            0 => "--:--:--".to_string(),
            d => {
                let left = (secs * (self.total - d) as f64 / d as f64) as u64;
                format!("{}:{:02}:{:02}", left / 3600, left / 60 % 60, left % 60)
            }
        };
        format!("{pct:5.1}%  {} of {}  {rate}  ETA {eta} ", size(done), size(self.total))
    }
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GB", b as f64 / (1u64 << 30) as f64),
        b => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_covers_every_input() {
        let p = Progress::new(false, &[1 << 30, 1 << 30, 0]);
        let l = p.line((1 << 30) + (1 << 29), 1_000);
        assert!(l.contains(" 75.0%  1.50 GB of 2.00 GB  1000 packets"), "{l}");
        assert!(l.contains("ETA "), "{l}");
        let stdin = Progress::new(false, &[0]);
        assert!(stdin.line(3 << 20, 5).starts_with("3.0 MB  5 packets"));
    }
}
