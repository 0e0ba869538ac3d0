//! Flows the workers are finished with, so the reader can drop their later packets without
//! sending them over: a fixed table of atomics indexed by flow hash, written by workers and
//! read by the reader without locks.
//!
//! A slot holds the full 64-bit hash of the last flow marked there; a collision only means a
//! packet is sent to its worker after all (which ignores it), never that one is lost.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct DecidedFlows {
    slots: Box<[AtomicU64]>,
    mask: u64,
}

impl DecidedFlows {
    /// `slots` is rounded up to a power of two.
    pub fn new(slots: usize) -> DecidedFlows {
        let n = slots.next_power_of_two().max(2);
        DecidedFlows { slots: (0..n).map(|_| AtomicU64::new(0)).collect(), mask: n as u64 - 1 }
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        &self.slots[(hash & self.mask) as usize]
    }

    /// Hash 0 is reserved for "empty".
    fn tag(hash: u64) -> u64 {
        hash | 1 << 63
    }

    pub fn mark(&self, hash: u64) {
        self.slot(hash).store(Self::tag(hash), Ordering::Relaxed);
    }

    /// A new connection reuses the flow's addresses: its packets must flow again.
    pub fn unmark(&self, hash: u64) {
        let _ = self.slot(hash).compare_exchange(Self::tag(hash), 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.slot(hash).load(Ordering::Relaxed) == Self::tag(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_unmark_and_collisions() {
        let d = DecidedFlows::new(4);
        d.mark(5);
        assert!(d.contains(5));
        assert!(!d.contains(9), "same slot, other flow");
        d.mark(9);
        assert!(!d.contains(5), "overwritten: its packets go to the worker again");
        d.unmark(9);
        assert!(!d.contains(9));
    }
}
