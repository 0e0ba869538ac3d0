//! Attribution by DNS answers. A ClientHello without SNI (or with only an ECH provider's public
//! name), a QUIC Initial likewise, or an HTTP request whose Host is a bare address names nothing;
//! but if a DNS answer matched by a rule gave that client the address it connects to, the
//! connection is that name's. Workers emit such connections as `Attribution::Pending`
//! observations; this module, in the sink, learns addresses from matched DNS observations (A and
//! AAAA answers, whatever CNAMEs led to them) per client and VLAN, and turns each pending one into
//! an observation of the answered name, or drops it. A connection to an address that no answer to
//! that client gave is never attributed.
//!
//! Done in the sink rather than the workers because the DNS answer and the connection are two
//! flows, hashed to different workers.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::decode::VlanTags;
use crate::observation::{Attribution, Detail, Observation};
use crate::rules::matcher::Rules;

/// Addresses remembered at once; past this the half that expires first goes (counted).
pub const MAX_ENTRIES: usize = 262_144;
/// How long past its TTL an answer still attributes: clients and their resolvers cache.
pub const GRACE_NS: i64 = 600 * 1_000_000_000;
/// Live capture: how long a pending connection waits for DNS observations from other workers.
pub const LIVE_HOLD_NS: i64 = 2_000_000_000;

#[derive(Debug, Default, Clone, Serialize)]
pub struct AttributionStats {
    /// Connections without a usable name, looked up.
    pub candidates: u64,
    /// Attributed to a name from a DNS answer.
    pub attributed: u64,
    /// No answer to that client gave that address (or it had expired): dropped.
    pub unattributed: u64,
    /// Addresses learned from answers, and evicted because of [`MAX_ENTRIES`].
    pub dns_map_added: u64,
    pub dns_map_evicted: u64,
}

struct Entry {
    name: String,
    /// The rule, as numbered in `rules` (live capture may reload the rules in between).
    rule: u32,
    rules: Arc<Rules>,
    expires_ns: i64,
}

#[derive(Default)]
pub struct Attributor {
    map: HashMap<(VlanTags, IpAddr, IpAddr), Entry>,
    /// Live: pending connections waiting [`LIVE_HOLD_NS`], oldest first.
    held: VecDeque<Observation>,
    newest_ns: i64,
    pub stats: AttributionStats,
}

impl Attributor {
    /// Takes observations (in time order, or nearly: see `hold_ns`) matched with `rules`, and
    /// returns those to keep, numbered for `rules`: every named one, and the pending ones
    /// attributed so far. `hold_ns` is 0 for time-sorted input; live capture holds pending
    /// connections that long for answers still on their way.
    pub fn process(&mut self, observations: Vec<Observation>, rules: &Arc<Rules>, hold_ns: i64) -> Vec<Observation> {
        let mut out = Vec::with_capacity(observations.len());
        for o in observations {
            self.newest_ns = self.newest_ns.max(o.ts_ns);
            if o.attribution == Attribution::Pending {
                if hold_ns == 0 {
                    self.resolve(o, rules, &mut out);
                } else {
                    self.held.push_back(o);
                }
                continue;
            }
            self.learn(&o, rules);
            out.push(o);
        }
        while self.held.front().is_some_and(|o| o.ts_ns <= self.newest_ns - hold_ns) {
            let o = self.held.pop_front().expect("front exists");
            self.resolve(o, rules, &mut out);
        }
        out
    }

    /// Resolves whatever is still held (end of capture), numbered for `rules`.
    pub fn finish(&mut self, rules: &Arc<Rules>) -> Vec<Observation> {
        let mut out = Vec::new();
        while let Some(o) = self.held.pop_front() {
            self.resolve(o, rules, &mut out);
        }
        out
    }

    fn learn(&mut self, o: &Observation, rules: &Arc<Rules>) {
        let Detail::Dns(d) = &o.detail else {
            return;
        };
        for a in d.answers.iter().filter(|a| a.rtype == 1 || a.rtype == 28) {
            let Ok(addr) = a.data.parse::<IpAddr>() else {
                continue;
            };
            if self.map.len() >= MAX_ENTRIES {
                self.evict_half();
            }
            let expires_ns = o.ts_ns.saturating_add(i64::from(a.ttl) * 1_000_000_000).saturating_add(GRACE_NS);
            let entry = Entry { name: o.domain.clone(), rule: o.rule, rules: rules.clone(), expires_ns };
            self.map.insert((o.vlan, o.host, addr), entry);
            self.stats.dns_map_added += 1;
        }
    }

    fn resolve(&mut self, mut o: Observation, rules: &Arc<Rules>, out: &mut Vec<Observation>) {
        self.stats.candidates += 1;
        let found = self.map.get(&(o.vlan, o.host, o.dst)).filter(|e| o.ts_ns <= e.expires_ns).and_then(|e| {
            let rule = if Arc::ptr_eq(&e.rules, rules) { Some(e.rule) } else { rules.find_index(&e.name) };
            rule.map(|r| (e.name.clone(), r))
        });
        match found {
            Some((name, rule)) => {
                o.domain = name;
                o.rule = rule;
                o.attribution = Attribution::DnsAnswer;
                self.stats.attributed += 1;
                out.push(o);
            }
            _ => self.stats.unattributed += 1,
        }
    }

    fn evict_half(&mut self) {
        self.stats.dns_map_evicted += crate::bounded::evict_older_half(&mut self.map, |e| e.expires_ns);
    }
}
