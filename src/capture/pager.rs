//! The pager of a mapped capture file: a thread of its own that fills the page tables a few
//! megabytes ahead of the reader (`MADV_POPULATE_READ`) and gives the pages behind it back to
//! the kernel (`MADV_DONTNEED`), so that RSS stays flat.
//!
//! Done by the reader itself, mapping and unmapping were about a sixth of its time (a page
//! fault every 16 pages, then the unmapping and its TLB shootdowns), and the reader is the
//! narrowest stage of `analyze`. Page tables belong to the process, so pages mapped here are
//! mapped for the reader too. Everything here is a hint: if the pager falls behind, the
//! reader faults its pages in itself, as without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use memmap2::{Advice, Mmap, UncheckedAdvice};

/// The reader tells the pager where it is every this many bytes.
pub(super) const STEP: usize = 2 * 1024 * 1024;
/// Page tables are filled this far ahead of the reader...
const AHEAD: usize = 8 * 1024 * 1024;
/// ...and pages released this far behind it, so that pages that decoders and workers still read
/// from queued chunks and batches (a few MB at most) are not released under them.
const LAG: usize = 8 * 1024 * 1024;

struct Shared {
    /// The reader's offset in the mapping.
    pos: AtomicUsize,
    stop: AtomicBool,
}

pub(super) struct Pager {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Pager {
    /// A pager for `map`; None when no thread can be started (the reader then faults its
    /// pages in as it goes).
    pub(super) fn start(map: Arc<Mmap>) -> Option<Pager> {
        let shared = Arc::new(Shared { pos: AtomicUsize::new(0), stop: AtomicBool::new(false) });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("kavwatch-pager".into()).spawn(move || run(&map, &s)).ok()?;
        Some(Pager { shared, thread: Some(thread) })
    }

    /// The reader is at `pos`.
    pub(super) fn advance(&self, pos: usize) {
        self.shared.pos.store(pos, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(map: &Mmap, shared: &Shared) {
    let (mut populated, mut released) = (0usize, 0usize);
    while !shared.stop.load(Ordering::Acquire) {
        let pos = shared.pos.load(Ordering::Acquire).min(map.len());
        let ahead = (pos + AHEAD).min(map.len());
        while populated < ahead && !shared.stop.load(Ordering::Acquire) {
            let len = STEP.min(map.len() - populated);
            // Linux 5.14+; before, pages fault in as the reader reaches them.
            let _ = map.advise_range(Advice::PopulateRead, populated, len);
            populated += len;
        }
        if pos >= released + LAG + STEP {
            let upto = (pos - LAG) & !(4096 - 1);
            // The previous step again too: a worker that fell further behind than the lag has
            // faulted those pages back in.
            let from = released.saturating_sub(STEP);
            // Safety: DONTNEED on a read-only file mapping only drops page-table entries; a later
            // access (a worker still reading a batch) faults the page back in from the file.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, upto - from) };
            released = upto;
        }
        std::thread::park();
    }
}
