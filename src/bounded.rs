//! Tables that must not grow with hostile traffic share one eviction rule: when full, the half
//! that has been quiet longest goes at once (one partial sort, not a scan per insertion).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Removes the entries whose `age` key (a time: last seen, expiry) is in the older half;
/// returns how many went.
pub fn evict_older_half<K: Hash + Eq, V, S: BuildHasher>(map: &mut HashMap<K, V, S>, age: impl Fn(&V) -> i64) -> u64 {
    let mut ages: Vec<i64> = map.values().map(&age).collect();
    if ages.is_empty() {
        return 0;
    }
    let mid = ages.len() / 2;
    let cut = *ages.select_nth_unstable(mid).1;
    let before = map.len();
    map.retain(|_, v| age(v) > cut);
    (before - map.len()) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_older_half_goes() {
        let mut m: std::collections::HashMap<u32, i64> = (0..10).map(|i| (i, i as i64)).collect();
        assert_eq!(super::evict_older_half(&mut m, |v| *v), 6);
        assert!(m.values().all(|v| *v > 5));
        let mut empty: std::collections::HashMap<u32, i64> = Default::default();
        assert_eq!(super::evict_older_half(&mut empty, |v| *v), 0);
    }
}
