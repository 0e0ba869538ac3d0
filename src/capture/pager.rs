//! The pager of a mapped capture file: a thread of its own that fills the page tables a step
//! ahead of the reader (`MADV_POPULATE_READ`); the reader gives the pages behind it back to the
//! kernel (`MADV_DONTNEED`, [`release_behind`]), so that RSS stays flat.
//!
//! Faulting its pages in itself (a page fault every 16 pages) was about a tenth of the reader's
//! time, and the reader is the narrowest stage of `analyze`. Page tables belong to the process,
//! so pages mapped here are mapped for the reader too, and its cache-line prefetches across a
//! page boundary then land. Everything here is a hint: if the pager falls behind, the reader
//! faults its pages in itself, as without it. Releasing stays with the reader: left to the
//! pager, whose wake-ups may come late, the window kept mapped behind the reader grew by MBs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use memmap2::{Advice, Mmap, UncheckedAdvice};

/// The reader tells the pager where it is every this many bytes.
pub(super) const STEP: usize = 2 * 1024 * 1024;
/// Page tables are filled this far ahead of the reader (more only adds to RSS: measured, 8 MB
/// was no faster)...
const AHEAD: usize = 2 * 1024 * 1024;
/// ...and pages released this far behind it, so that pages that decoders and workers still read
/// from queued chunks and batches (4 MB at most on the reference workload) are not released
/// under them. With the step ahead, the window kept mapped is the 10 MB it was before the pager.
const LAG: usize = 6 * 1024 * 1024;

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

/// Gives the pages of `map` behind the reader (at `pos`) back to the kernel, `LAG` behind it,
/// from `released` on (updated). Done by the reader itself, in step: left to the pager thread,
/// whose wake-ups may come late, the mapped window behind the reader grew by several MB.
pub(super) fn release_behind(map: &Mmap, pos: usize, released: &mut usize) {
    if pos < *released + LAG + STEP {
        return;
    }
    let upto = (pos - LAG) & !(4096 - 1);
    // The previous step again too: a worker that fell further behind than the lag has faulted
    // those pages back in.
    let from = released.saturating_sub(STEP);
    // Safety: DONTNEED on a read-only file mapping only drops page-table entries; a later access
    // (a worker still reading a batch) faults the page back in from the file.
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, upto - from) };
    *released = upto;
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
    let mut populated = 0usize;
    while !shared.stop.load(Ordering::Acquire) {
        let pos = shared.pos.load(Ordering::Acquire).min(map.len());
        let ahead = (pos + AHEAD).min(map.len());
        while populated < ahead && !shared.stop.load(Ordering::Acquire) {
            let len = STEP.min(map.len() - populated);
            // Linux 5.14+; before, pages fault in as the reader reaches them.
            let _ = map.advise_range(Advice::PopulateRead, populated, len);
            populated += len;
        }
        std::thread::park();
    }
}
