//! What decoding could not see, counted: packets per tunnel layer, malformed headers per layer,
//! and the identifiers that stopped decoding (an unknown EtherType, GRE protocol, link type...).
//!
//! "No silent blindness": a capture full of an encapsulation kavwatch does not decode must not
//! read as a clean bill of health. Skips of protocols that carry no hosts' traffic (ARP, ICMP,
//! LLDP... see [`SkipCause::benign`]) are counted but are not blindness; everything else that
//! did not decode to TCP/UDP over IP (unknown protocols, malformed headers, too deep) is
//! `undecoded`, and the report warns when it is more than [`UNDECODED_WARN_SHARE`] of packets.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{Decap, Outcome, SkipCause, TunnelKind};

/// The share of undecoded packets above which the table, the report and stderr warn.
pub const UNDECODED_WARN_SHARE: f64 = 0.01;
/// Distinct causes kept per counter (a crafted capture could name thousands); beyond, `other`.
const CAUSES_MAX: usize = 256;
/// Causes listed in the stats.
const TOP: usize = 10;

/// Per tunnel layer type: packets that came through it (decoded or not), and malformed headers.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct TunnelStats {
    pub packets: BTreeMap<&'static str, u64>,
    pub malformed: BTreeMap<&'static str, u64>,
    /// Packets with more than [`super::MAX_ENCAP_DEPTH`] encapsulations (not decoded).
    pub too_deep: u64,
}

/// Packets that could not be decoded to TCP/UDP over IP, for a reason that may hide hosts.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct UndecodedStats {
    pub packets: u64,
    /// The top causes ("GRE protocol 0x880b", "malformed vxlan header"...) with their packets.
    pub causes: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone)]
pub struct DecapCounters {
    layer_packets: [u64; TunnelKind::ALL.len()],
    layer_malformed: [u64; TunnelKind::ALL.len()],
    too_deep: u64,
    skip_causes: FxHashMap<SkipCause, u64>,
    malformed_causes: FxHashMap<(Option<TunnelKind>, &'static str), u64>,
    /// Causes not kept because the maps were full: (all skips, undecoded).
    other: (u64, u64),
    undecoded: u64,
}

fn bump<K: std::hash::Hash + Eq>(m: &mut FxHashMap<K, u64>, k: K) -> bool {
    if let Some(n) = m.get_mut(&k) {
        *n += 1;
        return true;
    }
    if m.len() >= CAUSES_MAX {
        return false;
    }
    m.insert(k, 1);
    true
}

fn bump_by<K: std::hash::Hash + Eq>(m: &mut FxHashMap<K, u64>, k: K, n: u64) -> bool {
    if let Some(c) = m.get_mut(&k) {
        *c += n;
        return true;
    }
    if m.len() >= CAUSES_MAX {
        return false;
    }
    m.insert(k, n);
    true
}

fn top(mut v: Vec<(String, u64)>, other: u64) -> BTreeMap<String, u64> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rest: u64 = v.iter().skip(TOP).map(|(_, n)| n).sum::<u64>() + other;
    let mut m: BTreeMap<String, u64> = v.into_iter().take(TOP).collect();
    if rest > 0 {
        m.insert("other".into(), rest);
    }
    m
}

impl DecapCounters {
    /// Counts one outcome of [`super::decode_with`].
    #[inline(always)]
    pub fn count(&mut self, o: &Decap<'_>) {
        // The common case, a plain TCP/UDP packet, has nothing to count here.
        if !matches!(o, Outcome::Packet(d) if d.tunnels.is_empty()) {
            self.count_other(o);
        }
    }

    /// Counts the outcome of decoding a reassembled datagram, whose fragments' outer layers
    /// (`counted`) were counted with each fragment.
    pub fn count_reassembled(&mut self, o: &Decap<'_>, counted: usize) {
        self.count_from(o, counted);
    }

    #[inline(never)]
    fn count_other(&mut self, o: &Decap<'_>) {
        self.count_from(o, 0);
    }

    fn count_from(&mut self, o: &Decap<'_>, skip_layers: usize) {
        for l in o.tunnels().iter().skip(skip_layers) {
            self.layer_packets[l.kind as usize] += 1;
        }
        match o {
            Outcome::Packet(_) | Outcome::Fragment(_) => {}
            Outcome::Skipped(s) => self.skipped(s.cause),
            Outcome::Malformed(m) => {
                if let Some(k) = m.layer {
                    self.layer_packets[k as usize] += 1;
                    self.layer_malformed[k as usize] += 1;
                }
                self.undecoded += 1;
                if !bump(&mut self.malformed_causes, (m.layer, m.what)) {
                    self.other.1 += 1;
                }
            }
        }
    }

    #[cold]
    fn skipped(&mut self, cause: SkipCause) {
        if cause == SkipCause::TooDeep {
            self.too_deep += 1;
        }
        if !bump(&mut self.skip_causes, cause) {
            self.other.0 += 1;
        }
        if !cause.benign() {
            self.undecoded += 1;
        }
    }

    /// Adds another thread's counters (causes past the maps' bound go to `other`, as counting does).
    pub fn add(&mut self, o: &DecapCounters) {
        for (a, b) in self.layer_packets.iter_mut().zip(o.layer_packets) {
            *a += b;
        }
        for (a, b) in self.layer_malformed.iter_mut().zip(o.layer_malformed) {
            *a += b;
        }
        self.too_deep += o.too_deep;
        self.undecoded += o.undecoded;
        self.other.0 += o.other.0;
        self.other.1 += o.other.1;
        // Sorted, so that which causes fit does not depend on hash order.
        let mut skips: Vec<_> = o.skip_causes.iter().collect();
        skips.sort_by_key(|(c, _)| format!("{c:?}"));
        for (c, n) in skips {
            if !bump_by(&mut self.skip_causes, *c, *n) {
                self.other.0 += n;
            }
        }
        let mut malformed: Vec<_> = o.malformed_causes.iter().collect();
        malformed.sort_by_key(|(c, _)| format!("{c:?}"));
        for (c, n) in malformed {
            if !bump_by(&mut self.malformed_causes, *c, *n) {
                self.other.1 += n;
            }
        }
    }

    pub fn tunnel_stats(&self) -> TunnelStats {
        let map = |a: &[u64]| -> BTreeMap<&'static str, u64> {
            TunnelKind::ALL.iter().zip(a).filter(|(_, n)| **n > 0).map(|(k, n)| (k.as_str(), *n)).collect()
        };
        TunnelStats {
            packets: map(&self.layer_packets),
            malformed: map(&self.layer_malformed),
            too_deep: self.too_deep,
        }
    }

    /// The top causes of every skipped packet, benign ones included.
    pub fn skip_causes(&self) -> BTreeMap<String, u64> {
        top(self.skip_causes.iter().map(|(c, n)| (c.to_string(), *n)).collect(), self.other.0)
    }

    pub fn undecoded(&self) -> UndecodedStats {
        let mut v: Vec<(String, u64)> =
            self.skip_causes.iter().filter(|(c, _)| !c.benign()).map(|(c, n)| (c.to_string(), *n)).collect();
        v.extend(self.malformed_causes.iter().map(|((layer, what), n)| {
            let cause = match layer {
                Some(l) => format!("malformed {l} header ({what})"),
                None => format!("malformed ({what})"),
            };
            (cause, *n)
        }));
        UndecodedStats { packets: self.undecoded, causes: top(v, self.other.1) }
    }
}
