//! Flows: a direction-free key with its hash (so both directions meet on one worker),
//! the bounded flow table, and TCP stream reassembly.

pub mod reassembly;
pub mod table;

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use crate::decode::VlanTags;

/// The two endpoints of a flow in a fixed order (lower address/port first), so both
/// directions give the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub vlan: VlanTags,
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
    pub proto: u8,
}

impl FlowKey {
    /// The key and whether the packet goes from `a` to `b` (false) or back (true).
    pub fn new(vlan: VlanTags, src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8) -> (FlowKey, bool) {
        if src <= dst {
            (FlowKey { vlan, a: src, b: dst, proto }, false)
        } else {
            (FlowKey { vlan, a: dst, b: src, proto }, true)
        }
    }

    /// Hash used to pick the worker; the same for both directions.
    pub fn hash64(&self) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        // Fx's low bits are weak on their own; fold the high half in.
        let v = h.finish();
        v ^ (v >> 29) ^ (v >> 47)
    }
}
