//! A bounded flow table with idle expiry, as two generations: new and touched flows live in
//! the current map; when it is full, or the idle timeout has passed since the last turn, the
//! previous generation is dropped (flows nobody touched for a whole generation) and the
//! current one becomes previous. O(1) per packet, no per-entry timers, at most twice the
//! generation size in memory.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::FlowKey;

/// A key with its hash, computed once per look-up rather than once per probe of each map.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hashed {
    hash: u64,
    key: FlowKey,
}

impl Hash for Hashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands the precomputed hash through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (see `Hashed`); fold anything else in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Map<V> = HashMap<Hashed, V, BuildHasherDefault<PassThrough>>;

pub struct FlowTable<V> {
    cur: Map<V>,
    old: Map<V>,
    gen_cap: usize,
    idle_ns: i64,
    turned_at: i64,
    /// Flows dropped because the table was full.
    pub evicted: u64,
    /// Flows dropped after being idle.
    pub expired: u64,
    /// The last key looked up and its hash: a packet's flow is looked up several times.
    last: Option<Hashed>,
}

impl<V> FlowTable<V> {
    /// `max_flows` bounds the entries held; idle flows go after `idle_ns` to twice that.
    pub fn new(max_flows: usize, idle_ns: i64) -> FlowTable<V> {
        FlowTable {
            cur: Map::default(),
            old: Map::default(),
            gen_cap: (max_flows / 2).max(1),
            idle_ns,
            turned_at: i64::MIN,
            evicted: 0,
            expired: 0,
            last: None,
        }
    }

    fn hashed(&mut self, key: &FlowKey) -> Hashed {
        match self.last {
            Some(h) if h.key == *key => h,
            _ => *self.last.insert(Hashed { hash: key.hash64(), key: *key }),
        }
    }

    pub fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Turns generations when due; `dropped` sees every flow that goes.
    ///
    /// Idle turns happen at multiples of the idle timeout in capture time, the same instants
    /// on every worker, so which flows expire does not depend on how many workers there are.
    pub fn maintain(&mut self, now: i64, dropped: &mut impl FnMut(FlowKey, V)) {
        let window = now.div_euclid(self.idle_ns.max(1));
        if self.turned_at == i64::MIN {
            self.turned_at = window;
        }
        let full = self.cur.len() >= self.gen_cap;
        let windows = window.saturating_sub(self.turned_at);
        if !full && windows < 1 {
            return;
        }
        let n = self.old.len() as u64;
        let old = std::mem::replace(&mut self.old, std::mem::take(&mut self.cur));
        if full && windows < 1 {
            self.evicted += n;
        } else {
            self.expired += n;
        }
        for (k, v) in old {
            dropped(k.key, v);
        }
        if windows >= 2 {
            // Two windows without a turn: the flows just moved are idle too.
            self.expired += self.old.len() as u64;
            for (k, v) in std::mem::take(&mut self.old) {
                dropped(k.key, v);
            }
        }
        if windows >= 1 {
            self.turned_at = window;
        }
    }

    /// Looks a flow up, moving it to the current generation.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        let k = self.hashed(key);
        // One probe of the current map for the usual case (a flow seen this generation).
        match self.cur.entry(k) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                let v = self.old.remove(&k)?;
                Some(e.insert(v))
            }
        }
    }

    /// Looks a flow up, or inserts `make()`'s (true when inserted): one probe where
    /// [`FlowTable::get_mut`] then [`FlowTable::insert`] take two or three.
    pub fn get_or_insert_with(&mut self, key: &FlowKey, make: impl FnOnce() -> V) -> (&mut V, bool) {
        let k = self.hashed(key);
        match self.cur.entry(k) {
            Entry::Occupied(e) => (e.into_mut(), false),
            Entry::Vacant(e) => match self.old.remove(&k) {
                Some(v) => (e.insert(v), false),
                None => (e.insert(make()), true),
            },
        }
    }

    pub fn insert(&mut self, key: FlowKey, v: V) -> &mut V {
        let k = self.hashed(&key);
        self.old.remove(&k);
        self.cur.entry(k).insert_entry(v).into_mut()
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        let k = self.hashed(key);
        self.cur.remove(&k).or_else(|| self.old.remove(&k))
    }

    /// Flows least recently used first: the previous generation, then the current one.
    pub fn iter_mut_oldest_first(&mut self) -> impl Iterator<Item = (&FlowKey, &mut V)> {
        self.old.iter_mut().chain(self.cur.iter_mut()).map(|(k, v)| (&k.key, v))
    }

    /// Empties the table at the end of the input.
    pub fn drain(&mut self) -> impl Iterator<Item = (FlowKey, V)> + '_ {
        self.cur.drain().chain(self.old.drain()).map(|(k, v)| (k.key, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::VlanTags;

    fn key(i: u16) -> FlowKey {
        FlowKey::new(VlanTags::default(), ("10.0.0.1".parse().unwrap(), i), ("10.0.0.2".parse().unwrap(), 80), 6).0
    }

    #[test]
    fn bounded_and_keeps_touched_flows() {
        let mut t = FlowTable::new(100, i64::MAX);
        let mut gone = 0;
        t.insert(key(0), 0);
        for i in 1..1000u16 {
            t.maintain(0, &mut |_, _| gone += 1);
            t.insert(key(i), i);
            assert!(t.get_mut(&key(0)).is_some(), "a flow in use is never evicted");
            assert!(t.len() <= 100);
        }
        assert_eq!(t.evicted, gone);
        assert!(gone > 800);
    }

    #[test]
    fn get_or_insert_finds_both_generations() {
        let mut t = FlowTable::new(4, i64::MAX);
        assert_eq!(t.get_or_insert_with(&key(1), || 1), (&mut 1, true));
        assert_eq!(t.get_or_insert_with(&key(1), || 9), (&mut 1, false));
        t.insert(key(2), 2);
        t.maintain(0, &mut |_, _| {}); // full: key 1 and 2 become the previous generation
        assert_eq!(t.get_or_insert_with(&key(2), || 9), (&mut 2, false), "found in the old generation");
        assert_eq!(t.len(), 2);
        t.insert(key(3), 3);
        t.maintain(0, &mut |_, _| {}); // full again: key 1, left in the old generation, goes
        assert_eq!(t.get_or_insert_with(&key(1), || 7), (&mut 7, true), "key 1 was dropped with its generation");
    }

    #[test]
    fn idle_flows_expire() {
        let mut t = FlowTable::new(100, 10);
        t.insert(key(1), 1);
        t.maintain(0, &mut |_, _| {});
        t.maintain(10, &mut |_, _| {});
        assert_eq!(t.len(), 1, "one window idle: kept");
        t.maintain(20, &mut |_, _| {});
        assert!(t.is_empty());
        assert_eq!(t.expired, 1);
    }
}
