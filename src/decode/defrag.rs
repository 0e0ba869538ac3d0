//! IP fragment reassembly with bounded memory.
//!
//! etherparse's `IpDefragBuf` puts the pieces of one datagram together (overlaps, holes,
//! order); its `IpDefragPool` is documented as unsafe against memory exhaustion, so the
//! table of datagrams in progress, its limits and its timeouts are ours.

use std::net::IpAddr;

use etherparse::defrag::IpDefragBuf;
use etherparse::{IpFragOffset, IpNumber};
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{Fragment, VlanTags};

/// Datagrams reassembled at once.
pub const MAX_DATAGRAMS: usize = 4096;
/// Bytes held by datagrams in progress.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Fragments per datagram: 64 KiB in 1480-byte pieces is 45; thousands of tiny crafted ones
/// would make each addition slower (the buffer merges its list of pieces).
pub const MAX_FRAGMENTS: u16 = 64;
/// A datagram whose first fragment is older than this (capture time) is dropped.
pub const TIMEOUT_NS: i64 = 30_000_000_000;

#[derive(Debug, Default, Clone, Serialize)]
pub struct DefragStats {
    pub fragments: u64,
    pub reassembled: u64,
    pub timed_out: u64,
    /// Dropped to stay within the limits.
    pub evicted: u64,
    pub invalid: u64,
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct Key {
    vlan: VlanTags,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct Pending {
    buf: IpDefragBuf,
    first_ts: i64,
    pieces: u16,
}

#[derive(Default)]
pub struct Defragmenter {
    table: FxHashMap<Key, Pending>,
    bytes: usize,
    last_sweep: i64,
    pub stats: DefragStats,
}

impl Defragmenter {
    /// Adds a fragment; returns the whole transport-layer datagram once complete.
    pub fn add(&mut self, f: &Fragment<'_>, ts: i64) -> Option<Vec<u8>> {
        self.stats.fragments += 1;
        if ts.saturating_sub(self.last_sweep) > 1_000_000_000 {
            self.expire(ts);
        }
        let key = Key { vlan: f.vlan, src: f.src, dst: f.dst, id: f.id, proto: f.proto };
        if !self.table.contains_key(&key) && (self.table.len() >= MAX_DATAGRAMS || self.bytes >= MAX_BYTES) {
            self.evict_older_half();
        }
        let entry = self.table.entry(key).or_insert_with(|| Pending {
            buf: IpDefragBuf::new(IpNumber(f.proto), Vec::new(), Vec::new()),
            first_ts: ts,
            pieces: 0,
        });
        entry.pieces += 1;
        if entry.pieces > MAX_FRAGMENTS {
            self.stats.invalid += 1;
            self.remove(&key);
            return None;
        }
        let before = entry.buf.data().capacity();
        let offset = IpFragOffset::try_new(f.offset).unwrap_or(IpFragOffset::ZERO);
        let ok = entry.buf.add(offset, f.more, f.payload).is_ok();
        let after = entry.buf.data().capacity();
        self.bytes = self.bytes + after - before.min(after);
        if !ok {
            self.stats.invalid += 1;
            self.remove(&key);
            return None;
        }
        if entry.buf.is_complete() {
            let p = self.remove(&key)?;
            self.stats.reassembled += 1;
            return Some(p.buf.take_bufs().0);
        }
        None
    }

    fn remove(&mut self, key: &Key) -> Option<Pending> {
        let p = self.table.remove(key)?;
        self.bytes -= p.buf.data().capacity().min(self.bytes);
        Some(p)
    }

    /// Full: drop the older half at once, so a flood costs one sort per half-table, not a
    /// scan per fragment.
    fn evict_older_half(&mut self) {
        let mut by_age: Vec<(i64, Key)> = self.table.iter().map(|(k, p)| (p.first_ts, *k)).collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        for (_, key) in by_age.iter().take(by_age.len().div_ceil(2)) {
            self.remove(key);
            self.stats.evicted += 1;
        }
    }

    /// Drops datagrams that did not complete in time.
    pub fn expire(&mut self, now: i64) {
        self.last_sweep = now;
        let before = self.table.len();
        let mut freed = 0;
        self.table.retain(|_, p| {
            let keep = now.saturating_sub(p.first_ts) <= TIMEOUT_NS;
            if !keep {
                freed += p.buf.data().capacity();
            }
            keep
        });
        self.bytes -= freed.min(self.bytes);
        self.stats.timed_out += (before - self.table.len()) as u64;
    }

    /// Datagrams still incomplete at the end of the input count as timed out.
    pub fn finish(&mut self) {
        self.stats.timed_out += self.table.len() as u64;
        self.table.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(id: u32, offset: u16, more: bool, payload: &[u8]) -> Fragment<'_> {
        Fragment {
            vlan: VlanTags::default(),
            src_mac: None,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            id,
            proto: 17,
            offset,
            more,
            payload,
            tunnels: Default::default(),
        }
    }

    #[test]
    fn reassembles_out_of_order() {
        let mut d = Defragmenter::default();
        assert!(d.add(&frag(1, 1, false, b"ijkl"), 0).is_none());
        assert_eq!(d.add(&frag(1, 0, true, b"abcdefgh"), 1).unwrap(), b"abcdefghijkl");
        assert_eq!(d.stats.reassembled, 1);
        assert_eq!(d.bytes, 0);
    }

    #[test]
    fn too_many_pieces_drop_the_datagram() {
        let mut d = Defragmenter::default();
        for i in 0..=MAX_FRAGMENTS {
            assert!(d.add(&frag(7, i * 2, true, b"12345678"), 0).is_none());
        }
        assert_eq!(d.stats.invalid, 1);
        assert!(d.table.is_empty() && d.bytes == 0);
    }

    #[test]
    fn bounded_under_flood() {
        let mut d = Defragmenter::default();
        let data = vec![0u8; 1480];
        for id in 0..(MAX_DATAGRAMS as u32 * 3) {
            d.add(&frag(id, 0, true, &data), 0);
            assert!(d.table.len() <= MAX_DATAGRAMS);
        }
        let held = d.table.len() as u64;
        assert_eq!(d.stats.evicted + held, MAX_DATAGRAMS as u64 * 3, "every datagram is held or counted");
        d.expire(TIMEOUT_NS + 1);
        assert_eq!(d.stats.timed_out, held);
    }
}
