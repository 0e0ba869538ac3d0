//! Kaspersky Security Center by port. Agents (klnagent) talk to their Administration Server on
//! TCP 13000 (TLS), legacy 14000, the KSN proxy on 13111/17111, and report on 13000/udp; the
//! server wakes agents on 15000/udp. No name is on the wire, and a port proves nothing: other
//! software uses these ports too. So workers hand every plausible contact (TLS on a KSC TCP port,
//! non-HTTP data on one, a datagram to one) to this module, in the sink, which reports an
//! (agent, server) pair only once it shows a pattern chance does not make:
//!
//! - repeated: two TLS connections, or two non-TLS TCP connections, from the agent to the server;
//! - both directions: a TCP contact from the agent and a wake-up from the server to it.
//!
//! Datagrams from an agent never confirm a pair on their own. Until a pair is confirmed its
//! contacts wait here (a few per pair, pairs bounded); then they and every later one become
//! `event_type: "ksc"` observations with `attribution: "port"`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::decode::{IPPROTO_TCP, IPPROTO_UDP, VlanTags};
use crate::observation::{Attribution, Detail, KscContact, Observation};
use crate::rules::matcher::Rules;

/// (agent, server) pairs followed at once; past this, the half quiet longest goes (counted).
pub const MAX_PAIRS: usize = 65_536;
/// Contacts of an unconfirmed pair kept to report once it is confirmed; more are only counted.
pub const HELD_PER_PAIR: usize = 8;

#[derive(Debug, Default, Clone, Serialize)]
pub struct KscStats {
    /// Contacts on KSC ports looked at.
    pub contacts: u64,
    /// Pairs that showed the pattern, and the events reported for them.
    pub pairs_confirmed: u64,
    pub events: u64,
    /// Contacts of pairs never confirmed (decoys, other software on the ports), at the end.
    pub unconfirmed: u64,
    /// Contacts of unconfirmed pairs past [`HELD_PER_PAIR`]: counted, never reported.
    pub held_dropped: u64,
    pub pairs_evicted: u64,
}

#[derive(Default)]
struct Pair {
    tls: u32,
    tcp: u32,
    wake_ups: u32,
    confirmed: bool,
    last_ns: i64,
    held: Vec<Observation>,
}

impl Pair {
    fn shows_pattern(&self) -> bool {
        self.tls >= 2 || self.tcp >= 2 || (self.tls + self.tcp >= 1 && self.wake_ups >= 1)
    }
}

#[derive(Default)]
pub struct KscDetector {
    pairs: HashMap<(VlanTags, IpAddr, IpAddr), Pair>,
    pub stats: KscStats,
}

impl KscDetector {
    /// One contact (a pending `Detail::Ksc` observation, in time order): appends to `out` what
    /// can now be reported, numbered for `rules`.
    pub fn contact(&mut self, o: Observation, rules: &Arc<Rules>, out: &mut Vec<Observation>) {
        let Detail::Ksc(k) = &o.detail else {
            return;
        };
        self.stats.contacts += 1;
        let key = (o.vlan, k.agent, k.server);
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_PAIRS {
            let before = self.pairs.len();
            let evicted: u64 = self.pairs.values().filter(|p| !p.confirmed).map(|p| p.held.len() as u64).sum();
            self.stats.pairs_evicted += crate::bounded::evict_older_half(&mut self.pairs, |p| p.last_ns);
            // Held contacts of evicted pairs are lost to the report: counted as unconfirmed.
            let after: u64 = self.pairs.values().filter(|p| !p.confirmed).map(|p| p.held.len() as u64).sum();
            self.stats.unconfirmed += evicted - after.min(evicted);
            debug_assert!(self.pairs.len() < before);
        }
        let pair = self.pairs.entry(key).or_default();
        pair.last_ns = pair.last_ns.max(o.ts_ns);
        match k.contact {
            KscContact::Tls => pair.tls += 1,
            KscContact::Tcp => pair.tcp += 1,
            KscContact::WakeUp => pair.wake_ups += 1,
            KscContact::Datagram => {}
        }
        if !pair.confirmed && pair.shows_pattern() {
            pair.confirmed = true;
            self.stats.pairs_confirmed += 1;
            for held in std::mem::take(&mut pair.held) {
                self.stats.events += report(held, rules, out) as u64;
            }
        }
        if pair.confirmed {
            self.stats.events += report(o, rules, out) as u64;
        } else if pair.held.len() < HELD_PER_PAIR {
            pair.held.push(o);
        } else {
            self.stats.held_dropped += 1;
        }
    }

    /// End of input: contacts still waiting belong to pairs that never showed the pattern.
    pub fn finish(&mut self) {
        self.stats.unconfirmed += self.pairs.values().map(|p| p.held.len() as u64).sum::<u64>();
        for p in self.pairs.values_mut() {
            p.held.clear();
        }
    }
}

/// A confirmed contact as an observation of the `port` rule for its port; false if the rules
/// (reloaded since) have none.
fn report(mut o: Observation, rules: &Rules, out: &mut Vec<Observation>) -> bool {
    let Detail::Ksc(k) = &o.detail else {
        return false;
    };
    let proto = if matches!(k.contact, KscContact::Tls | KscContact::Tcp) { IPPROTO_TCP } else { IPPROTO_UDP };
    let Some(rule) = rules.find_port(k.port, proto) else {
        return false;
    };
    o.domain = k.server.to_string();
    o.rule = rule;
    o.attribution = Attribution::Port;
    out.push(o);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::KscDetail;
    use crate::rules::load::load;

    fn contact(ts: i64, agent: &str, server: &str, contact: KscContact, port: u16) -> Observation {
        let (agent, server): (IpAddr, IpAddr) = (agent.parse().unwrap(), server.parse().unwrap());
        let (src, dst) = if contact == KscContact::WakeUp { (server, agent) } else { (agent, server) };
        let detail = Detail::Ksc(KscDetail { contact, server, agent, port });
        Observation::test_pending(ts, (src, 40000), (dst, port), agent, detail)
    }

    #[test]
    fn a_pair_is_reported_only_once_it_shows_the_pattern() {
        let rules = Arc::new(Rules::new(load(None).unwrap()));
        let mut d = KscDetector::default();
        let mut out = Vec::new();
        // One TLS connection: nothing yet. The second: both reported.
        d.contact(contact(1, "10.0.0.21", "10.0.0.1", KscContact::Tls, 13000), &rules, &mut out);
        assert!(out.is_empty());
        d.contact(contact(2, "10.0.0.21", "10.0.0.1", KscContact::Tls, 13000), &rules, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.attribution == Attribution::Port && o.domain == "10.0.0.1"));
        assert_eq!(rules.rule(out[0].rule).id, "kl-management-ksc-ports");
        // One TLS connection and a wake-up the other way: both directions.
        d.contact(contact(3, "10.0.0.22", "10.0.0.1", KscContact::Tls, 13000), &rules, &mut out);
        d.contact(contact(4, "10.0.0.22", "10.0.0.1", KscContact::WakeUp, 15000), &rules, &mut out);
        assert_eq!(out.len(), 4);
        // Wake-ups alone, datagrams alone, one TLS connection to another server: never.
        for t in 5..15 {
            d.contact(contact(t, "10.0.0.33", "10.0.0.2", KscContact::WakeUp, 15000), &rules, &mut out);
            d.contact(contact(t, "10.0.0.34", "10.0.0.2", KscContact::Datagram, 13000), &rules, &mut out);
        }
        d.contact(contact(20, "10.0.0.21", "10.0.0.2", KscContact::Tls, 13000), &rules, &mut out);
        assert_eq!(out.len(), 4);
        d.finish();
        assert_eq!(d.stats.pairs_confirmed, 2);
        assert_eq!(d.stats.unconfirmed, 2 * HELD_PER_PAIR as u64 + 1);
        assert_eq!(d.stats.held_dropped, 4);
    }

    #[test]
    fn pairs_stay_bounded() {
        let rules = Arc::new(Rules::new(load(None).unwrap()));
        let mut d = KscDetector::default();
        let mut out = Vec::new();
        for i in 0..(MAX_PAIRS as u32 + 100) {
            let agent = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            d.contact(contact(i64::from(i), &agent, "10.255.0.1", KscContact::Tls, 13000), &rules, &mut out);
            assert!(d.pairs.len() <= MAX_PAIRS);
        }
        assert!(d.stats.pairs_evicted > 0 && out.is_empty());
    }
}
