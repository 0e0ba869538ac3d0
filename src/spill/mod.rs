//! Spilling to disk: an external merge sort for whatever must wait for time order. `analyze`
//! finds observations out of order (each worker in its own flows' order; the sink's Security
//! Center check releases held contacts late), and a month of a network still running Kaspersky
//! is tens of millions of them. Each [`Sorter`] keeps items in memory up to its share of the
//! memory budget, then sorts them and writes them out as a run: an unnamed file in the spill
//! directory (`O_TMPFILE`, so nothing is left behind by any exit, even SIGKILL). [`merge`] reads
//! the runs back in one k-way merge. Items are encoded with postcard, each framed by its length.
//!
//! The first error writing a run (a full disk, a read-only directory) is kept in the
//! [`SpillArea`] and raised to the caller; the sorter then keeps items in memory, so that what
//! was analysed until then is still reported.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Runs one sorter keeps before it merges them into one (open files and read buffers stay few).
const MAX_RUNS: usize = 32;
const WRITE_BUFFER: usize = 256 * 1024;
const READ_BUFFER: usize = 32 * 1024;
/// An item larger than this in a run is damage, not data.
const MAX_ITEM: usize = 64 * 1024 * 1024;

/// What can be spilled: ordered by a key, and able to say roughly how much memory it holds.
pub trait Spill: Serialize + DeserializeOwned {
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    /// Bytes in memory, its own size included (an estimate: the budget is a soft bound).
    fn mem_bytes(&self) -> usize;
}

#[derive(Debug, thiserror::Error)]
#[error("spill directory {dir}: {source}")]
pub struct SpillError {
    pub dir: PathBuf,
    pub source: io::Error,
}

/// The spill directory and what went to it, shared by every sorter of a run.
#[derive(Debug)]
pub struct SpillArea {
    dir: PathBuf,
    pub runs: AtomicU64,
    pub items: AtomicU64,
    pub bytes: AtomicU64,
    error: Mutex<Option<String>>,
}

impl SpillArea {
    pub fn new(dir: PathBuf) -> Arc<SpillArea> {
        Arc::new(SpillArea {
            dir,
            runs: AtomicU64::new(0),
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            error: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first error, as one line naming the directory.
    pub fn error(&self) -> Option<String> {
        self.error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    pub fn failed(&self) -> bool {
        self.error().is_some()
    }

    fn fail(&self, e: io::Error) {
        let line = SpillError { dir: self.dir.clone(), source: e }.to_string();
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(line);
        }
    }

    fn err(&self, source: io::Error) -> io::Error {
        io::Error::new(source.kind(), SpillError { dir: self.dir.clone(), source })
    }
}

/// A sorted run on disk: its items, in key order, framed by a 4-byte length.
struct Run {
    file: File,
    items: u64,
}

/// Items kept in key order in bounded memory.
pub struct Sorter<T: Spill> {
    area: Arc<SpillArea>,
    budget: usize,
    buf: Vec<T>,
    buf_bytes: usize,
    runs: Vec<Run>,
    items: u64,
}

impl<T: Spill> Sorter<T> {
    /// `budget`: bytes of items held in memory before they are written out.
    pub fn new(area: Arc<SpillArea>, budget: usize) -> Sorter<T> {
        Sorter { area, budget: budget.max(1), buf: Vec::new(), buf_bytes: 0, runs: Vec::new(), items: 0 }
    }

    pub fn push(&mut self, item: T) {
        self.buf_bytes += item.mem_bytes();
        self.buf.push(item);
        self.items += 1;
        if self.buf_bytes >= self.budget && !self.area.failed() {
            self.spill();
        }
    }

    /// Items pushed so far.
    pub fn len(&self) -> u64 {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Runs written so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Writes the items in memory out as a run, in key order; on error they stay in memory.
    fn spill(&mut self) {
        let order = sort_order(&self.buf);
        match self.write_run(order.iter().map(|&i| &self.buf[i as usize])) {
            Ok(run) => {
                self.area.runs.fetch_add(1, Ordering::Relaxed);
                self.area.items.fetch_add(run.items, Ordering::Relaxed);
                self.runs.push(run);
                // The capacity stays: the next run fills it again.
                self.buf.clear();
                self.buf_bytes = 0;
            }
            Err(e) => self.area.fail(e),
        }
        if self.runs.len() >= MAX_RUNS && !self.area.failed() {
            self.compact();
        }
    }

    fn write_run<'a>(&self, items: impl Iterator<Item = &'a T>) -> io::Result<Run>
    where
        T: 'a,
    {
        let file = tempfile::tempfile_in(&self.area.dir).map_err(|e| self.area.err(e))?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut frame = Vec::new();
        let mut n = 0u64;
        for t in items {
            write_item(&mut w, &mut frame, t).map_err(|e| self.area.err(e))?;
            n += 1;
            self.area.bytes.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        }
        let mut file = w.into_inner().map_err(|e| self.area.err(e.into_error()))?;
        file.rewind().map_err(|e| self.area.err(e))?;
        Ok(Run { file, items: n })
    }

    /// Merges every run into one.
    fn compact(&mut self) {
        let runs = std::mem::take(&mut self.runs);
        let count = runs.len();
        let mut merged =
            Merged::<T>::new(runs.into_iter().map(RunReader::new).collect(), Vec::new(), self.area.clone());
        let file = match tempfile::tempfile_in(&self.area.dir) {
            Ok(f) => f,
            Err(e) => return self.area.fail(e),
        };
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut frame = Vec::new();
        let mut n = 0u64;
        for t in merged.by_ref() {
            if let Err(e) = write_item(&mut w, &mut frame, &t) {
                return self.area.fail(e);
            }
            n += 1;
            self.area.bytes.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        }
        let file = w.into_inner().map_err(|e| e.into_error()).and_then(|mut f| f.rewind().map(|_| f));
        match file {
            Ok(file) => {
                self.area.runs.fetch_add(1, Ordering::Relaxed);
                self.runs.push(Run { file, items: n });
            }
            Err(e) => self.area.fail(e),
        }
        debug_assert!(count > 1);
    }

    /// Done pushing: once anything went to disk the rest goes too, so that the memory of this
    /// stage is free for the next one.
    fn seal(&mut self) {
        if !self.runs.is_empty() && !self.buf.is_empty() && !self.area.failed() {
            self.spill();
        }
        let order = sort_order(&self.buf);
        let mut slots: Vec<Option<T>> = std::mem::take(&mut self.buf).into_iter().map(Some).collect();
        self.buf = order.iter().filter_map(|&i| slots[i as usize].take()).collect();
    }
}

/// The items' indices in key order (stable): sorting the keys, not the items, which may be
/// hundreds of bytes each.
fn sort_order<T: Spill>(items: &[T]) -> Vec<u32> {
    let mut keyed: Vec<(T::Key, u32)> = items.iter().enumerate().map(|(i, t)| (t.key(), i as u32)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

fn write_item<T: Serialize>(w: &mut impl Write, frame: &mut Vec<u8>, t: &T) -> io::Result<()> {
    frame.clear();
    let bytes = postcard::to_extend(t, std::mem::take(frame)).map_err(io::Error::other)?;
    *frame = bytes;
    w.write_all(&(frame.len() as u32).to_le_bytes())?;
    w.write_all(frame)
}

struct RunReader {
    r: BufReader<File>,
    left: u64,
    frame: Vec<u8>,
}

impl RunReader {
    fn new(run: Run) -> RunReader {
        RunReader { r: BufReader::with_capacity(READ_BUFFER, run.file), left: run.items, frame: Vec::new() }
    }

    fn next<T: Spill>(&mut self) -> io::Result<Option<T>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_ITEM {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "damaged run (item length)"));
        }
        self.frame.resize(len, 0);
        self.r.read_exact(&mut self.frame)?;
        postcard::from_bytes(&self.frame).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Items of several sorters in one key order (ties: the sorter given first, then run order).
pub struct Merged<T: Spill> {
    runs: Vec<RunReader>,
    /// (key, source): sources are the runs, then the in-memory remainders.
    heap: BinaryHeap<Reverse<(T::Key, usize)>>,
    heads: Vec<Option<T>>,
    memory: Vec<std::vec::IntoIter<T>>,
    area: Arc<SpillArea>,
}

impl<T: Spill> Merged<T> {
    /// Nothing.
    pub fn empty(area: Arc<SpillArea>) -> Merged<T> {
        Merged::new(Vec::new(), Vec::new(), area)
    }

    fn new(runs: Vec<RunReader>, memory: Vec<Vec<T>>, area: Arc<SpillArea>) -> Merged<T> {
        let sources = runs.len() + memory.len();
        let mut m = Merged {
            runs,
            heap: BinaryHeap::with_capacity(sources),
            heads: (0..sources).map(|_| None).collect(),
            memory: memory.into_iter().map(|v| v.into_iter()).collect(),
            area,
        };
        for s in 0..sources {
            m.refill(s);
        }
        m
    }

    fn refill(&mut self, s: usize) {
        let next = if s < self.runs.len() {
            match self.runs[s].next::<T>() {
                Ok(t) => t,
                Err(e) => {
                    // A read error loses the rest of this run: said, never silent.
                    self.area.fail(e);
                    None
                }
            }
        } else {
            self.memory[s - self.runs.len()].next()
        };
        if let Some(t) = next {
            self.heap.push(Reverse((t.key(), s)));
            self.heads[s] = Some(t);
        }
    }
}

impl<T: Spill> Iterator for Merged<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        let Reverse((_, s)) = self.heap.pop()?;
        let t = self.heads[s].take();
        self.refill(s);
        t
    }
}

/// All items of `sorters`, in key order. Equal keys come out in the order the sorters are given.
pub fn merge<T: Spill>(sorters: Vec<Sorter<T>>, area: Arc<SpillArea>) -> Merged<T> {
    let mut runs = Vec::new();
    let mut memory = Vec::new();
    for mut s in sorters {
        s.seal();
        runs.extend(s.runs.drain(..).map(RunReader::new));
        memory.push(std::mem::take(&mut s.buf));
    }
    Merged::new(runs, memory, area)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Item {
        key: (i64, u32),
        text: String,
    }

    impl Spill for Item {
        type Key = (i64, u32);
        fn key(&self) -> (i64, u32) {
            self.key
        }
        fn mem_bytes(&self) -> usize {
            std::mem::size_of::<Item>() + self.text.capacity()
        }
    }

    fn items(n: u32, seed: u64) -> Vec<Item> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                Item { key: ((x >> 40) as i64 % 1000, i), text: "x".repeat((x >> 58) as usize) }
            })
            .collect()
    }

    fn sorted_through(budget: usize, sorters: usize, all: &[Item]) -> (Vec<Item>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let area = SpillArea::new(dir.path().to_path_buf());
        let mut ss: Vec<Sorter<Item>> = (0..sorters).map(|_| Sorter::new(area.clone(), budget)).collect();
        for (i, it) in all.iter().enumerate() {
            ss[i % sorters].push(it.clone());
        }
        let out: Vec<Item> = merge(ss, area.clone()).collect();
        assert!(area.error().is_none());
        // Unnamed files: nothing is ever visible in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (out, area.runs.load(Ordering::Relaxed))
    }

    #[test]
    fn spilled_and_in_memory_give_the_same_order() {
        let all = items(20_000, 7);
        let mut want = all.clone();
        want.sort_by_key(|t| t.key);
        let (mem, runs) = sorted_through(usize::MAX, 3, &all);
        assert_eq!(runs, 0);
        assert_eq!(mem, want);
        // A tiny budget: a run every few items, and compaction past MAX_RUNS.
        let (spilled, runs) = sorted_through(4096, 3, &all);
        assert!(runs > 3 * MAX_RUNS as u64, "{runs} runs");
        assert_eq!(spilled, want);
    }

    #[test]
    fn an_unwritable_directory_is_one_error_and_nothing_lost() {
        let area = SpillArea::new(PathBuf::from("/nonexistent/kavwatch-spill"));
        let mut s = Sorter::new(area.clone(), 1);
        let all = items(100, 3);
        for it in all.clone() {
            s.push(it);
        }
        let e = area.error().expect("an error");
        assert!(e.starts_with("spill directory /nonexistent/kavwatch-spill: "), "{e}");
        let out: Vec<Item> = merge(vec![s], area).collect();
        let mut want = all;
        want.sort_by_key(|t| t.key);
        assert_eq!(out, want);
    }
}
