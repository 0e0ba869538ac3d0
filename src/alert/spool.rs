//! The on-disk queue of one destination: records waiting for a collector, in order, across
//! restarts. Segment files of whole lines (`00000000000000000001.spool`, ...) in the
//! destination's directory; a segment is deleted once sent. Bounded: past `max_bytes` the
//! oldest segments go, and their records are counted as dropped.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::output::files;

const SEGMENT_BYTES: u64 = 1 << 20;

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment numbers on disk, oldest first, with their sizes and record counts.
    segments: Vec<(u64, u64, u64)>,
    /// Records of the oldest segment already sent (it is deleted when all are).
    sent_in_oldest: u64,
    writer: Option<File>,
    /// Held for the spool's lifetime: two processes must not share one.
    _lock: File,
}

fn seg_name(n: u64) -> String {
    format!("{n:020}.spool")
}

impl Spool {
    /// Opens (creating, mode 0750) the spool directory and finds the records a previous run
    /// left. Its files are opened without following links (mode 0640), and a link planted in
    /// it is not read.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        files::create_dir(dir)?;
        let lock = files::open_append(&dir.join("lock"))?;
        // SAFETY: flock on a valid open descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::other(format!("spool {} is in use by another kavwatch", dir.display())));
        }
        let mut segments = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            if !e.file_type()?.is_file() {
                continue;
            }
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|s| s.strip_suffix(".spool")).and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let mut bytes = Vec::new();
            files::open_read(&e.path())?.read_to_end(&mut bytes)?;
            // A run that died mid-write leaves half a record: cut it, never send it.
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if whole < bytes.len() {
                bytes.truncate(whole);
                files::write_atomic(&e.path(), &bytes, true)?;
            }
            let records = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            segments.push((n, bytes.len() as u64, records));
        }
        segments.sort();
        Ok(Spool { dir: dir.to_path_buf(), max_bytes, segments, sent_in_oldest: 0, writer: None, _lock: lock })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records waiting.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.2).sum::<u64>() - self.sent_in_oldest
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    /// Appends one record (a line without its newline). Returns how many old records were
    /// dropped to stay under the size bound.
    pub fn push(&mut self, record: &str) -> io::Result<u64> {
        let need = record.len() as u64 + 1;
        let mut dropped = 0;
        while !self.segments.is_empty() && self.bytes() + need > self.max_bytes {
            dropped += self.drop_oldest()?;
        }
        let start_new = match self.segments.last() {
            Some(&(_, size, _)) => size + need > SEGMENT_BYTES || self.writer.is_none(),
            None => true,
        };
        if start_new {
            let n = self.segments.last().map_or(1, |s| s.0 + 1);
            let f = files::open_append(&self.dir.join(seg_name(n)))?;
            self.writer = Some(f);
            self.segments.push((n, 0, 0));
        }
        let w = self.writer.as_mut().expect("writer opened above");
        w.write_all(format!("{record}\n").as_bytes())?;
        let last = self.segments.last_mut().expect("segment pushed above");
        last.1 += need;
        last.2 += 1;
        Ok(dropped)
    }

    /// Forces what was pushed to disk (after a batch, not per record).
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.writer {
            Some(w) => w.sync_data(),
            None => Ok(()),
        }
    }

    fn drop_oldest(&mut self) -> io::Result<u64> {
        let (n, _, records) = self.segments.remove(0);
        if self.segments.is_empty() {
            self.writer = None;
        }
        fs::remove_file(self.dir.join(seg_name(n)))?;
        let lost = records - self.sent_in_oldest;
        self.sent_in_oldest = 0;
        Ok(lost)
    }

    /// The oldest waiting records, at most `max` (from the oldest segment only).
    pub fn peek(&self, max: usize) -> io::Result<Vec<String>> {
        let Some(&(n, _, _)) = self.segments.first() else {
            return Ok(Vec::new());
        };
        let f = BufReader::new(files::open_read(&self.dir.join(seg_name(n)))?);
        f.lines().skip(self.sent_in_oldest as usize).take(max).collect()
    }

    /// Marks the first `n` records of the last `peek` as delivered.
    pub fn consume(&mut self, n: u64) -> io::Result<()> {
        self.sent_in_oldest += n;
        if let Some(&(_, _, records)) = self.segments.first()
            && self.sent_in_oldest >= records
        {
            self.drop_oldest()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kavwatch-spool-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keeps_order_across_reopen_and_drops_oldest_when_full() {
        let d = dir("order");
        {
            let mut s = Spool::open(&d, 1 << 30).unwrap();
            for i in 0..5 {
                s.push(&format!("r{i}")).unwrap();
            }
            assert_eq!(s.peek(2).unwrap(), ["r0", "r1"]);
            s.consume(2).unwrap();
            assert!(Spool::open(&d, 1 << 30).is_err(), "a second process must not share the spool");
        }
        // Consumed-but-not-deleted records come back after a restart (duplicates, same ids).
        let mut s = Spool::open(&d, 1 << 30).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s.peek(10).unwrap(), ["r0", "r1", "r2", "r3", "r4"]);
        s.consume(5).unwrap();
        assert!(s.is_empty());
        // Half a record at the end of a segment (a crash mid-write) is dropped on the next start.
        let d2 = dir("partial");
        {
            let mut s = Spool::open(&d2, 1 << 30).unwrap();
            s.push("whole").unwrap();
        }
        let seg = d2.join(seg_name(1));
        std::fs::write(&seg, b"whole\nhalf a rec").unwrap();
        let s = Spool::open(&d2, 1 << 30).unwrap();
        assert_eq!(s.peek(10).unwrap(), ["whole"]);
        assert_eq!(std::fs::read(&seg).unwrap(), b"whole\n");
        // 3 MB bound, 1 MB segments of 100-byte records: the oldest segment goes.
        let mut s = Spool::open(&dir("full"), 3 << 20).unwrap();
        let rec = "x".repeat(99);
        let mut dropped = 0;
        for _ in 0..40_000 {
            dropped += s.push(&rec).unwrap();
        }
        assert!(s.bytes() <= 3 << 20);
        assert_eq!(dropped + s.len(), 40_000);
        assert!(dropped > 0);
    }
}
