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

use std::collections::{HashMap, HashSet, VecDeque};
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
/// Live capture: how long observations wait for those of other workers (time order). Workers
/// hand over every 200 ms.
pub const LIVE_HOLD_NS: i64 = 1_000_000_000;
/// A resolver's query for a name within this time after a client asked it for that name is a relay.
pub const RELAY_WINDOW_NS: i64 = 5_000_000_000;

/// An address block (`--resolver 10.0.0.53` or `10.0.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let bad = || format!("{s:?} is not an address or address/prefix (e.g. 10.0.0.53 or 10.0.0.0/24)");
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct AttributionStats {
    /// Connections without a usable name, looked up.
    pub candidates: u64,
    /// Attributed to a name from a DNS answer.
    pub attributed: u64,
    /// HTTP requests to a bare address no answer named, recognised by path or User-Agent instead.
    pub http_path: u64,
    /// No answer to that client gave that address (or it had expired): dropped.
    pub unattributed: u64,
    /// Addresses learned from answers, and evicted because of [`MAX_ENTRIES`].
    pub dns_map_added: u64,
    pub dns_map_evicted: u64,
    /// Resolvers' upstream queries for names their clients asked (`relayed` events).
    pub relayed: u64,
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
    /// Live: observations waiting [`LIVE_HOLD_NS`] (with the rules they were matched with), oldest first.
    held: VecDeque<(Observation, Arc<Rules>)>,
    /// DNS queries per (resolver, name): when a client last asked. By address alone: the
    /// resolver's upstream leg is often on another VLAN than its clients'.
    asked: HashMap<(IpAddr, String), i64>,
    resolvers: HashSet<IpAddr>,
    configured: Vec<IpNet>,
    newest_ns: i64,
    pub stats: AttributionStats,
    /// Also in time order here: the Security Center pattern check and the DHCP lease book.
    pub ksc: crate::ksc::KscDetector,
    pub leases: crate::leases::LeaseBook,
}

impl Attributor {
    /// Takes observations matched with `rules` and returns those to keep, in time order and
    /// numbered for `rules`: every named one (DNS ones marked `relayed` when they are a
    /// resolver's upstream query for a client), and the pending ones attributed. `hold_ns` is 0
    /// for time-sorted input; live capture holds everything that long, so that what other workers
    /// found a moment earlier is read first.
    pub fn process(&mut self, observations: Vec<Observation>, rules: &Arc<Rules>, hold_ns: i64) -> Vec<Observation> {
        let mut out = Vec::with_capacity(observations.len());
        if hold_ns == 0 {
            for o in observations {
                self.one(o, rules, &mut out);
            }
            return out;
        }
        for o in observations {
            self.newest_ns = self.newest_ns.max(o.ts_ns);
            self.held.push_back((o, rules.clone()));
        }
        self.held.make_contiguous().sort_by_key(|(o, _)| o.sort_key());
        out.extend(self.release_until(self.newest_ns - hold_ns, rules));
        out
    }

    /// One observation of a time-sorted stream (`analyze`): appends to `out` what to keep, as
    /// [`Attributor::process`] with no hold.
    pub fn process_one(&mut self, o: Observation, rules: &Arc<Rules>, out: &mut Vec<Observation>) {
        self.one(o, rules, out);
    }

    /// Live: hands out what was held with a packet time up to `t_ns` (the sink calls it with the
    /// clock minus the hold, so a quiet link does not keep observations back).
    pub fn release_until(&mut self, t_ns: i64, rules: &Arc<Rules>) -> Vec<Observation> {
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(o, _)| o.ts_ns <= t_ns) {
            let (o, matched_with) = self.held.pop_front().expect("front exists");
            self.release(o, &matched_with, rules, &mut out);
        }
        out
    }

    /// Whatever is still held (end of capture), numbered for `rules`.
    pub fn finish(&mut self, rules: &Arc<Rules>) -> Vec<Observation> {
        let mut out = Vec::new();
        while let Some((o, matched_with)) = self.held.pop_front() {
            self.release(o, &matched_with, rules, &mut out);
        }
        self.ksc.finish();
        out
    }

    /// A held observation, matched with rules that SIGHUP may have replaced since: numbered again by its name.
    fn release(
        &mut self,
        mut o: Observation,
        matched_with: &Arc<Rules>,
        rules: &Arc<Rules>,
        out: &mut Vec<Observation>,
    ) {
        if !Arc::ptr_eq(matched_with, rules) {
            match o.attribution {
                Attribution::Pending => o.fallback_rule = None,
                Attribution::HttpPath => {
                    let Detail::Http(h) = &o.detail else { return };
                    match rules.find_http(&h.path, h.user_agent.as_deref()) {
                        Some(r) => o.rule = r,
                        None => return,
                    }
                }
                _ => match rules.find_index(&o.domain) {
                    Some(r) => o.rule = r,
                    None => return,
                },
            }
        }
        self.one(o, rules, out);
    }

    fn one(&mut self, mut o: Observation, rules: &Arc<Rules>, out: &mut Vec<Observation>) {
        let first = out.len();
        match (&o.detail, o.attribution) {
            (Detail::Dhcp(_), _) => self.leases.learn(&o),
            (Detail::Ksc(_), _) => self.ksc.contact(o, rules, out),
            (_, Attribution::Pending) => self.resolve(o, rules, out),
            _ => {
                self.relay(&mut o);
                self.learn(&o, rules);
                out.push(o);
            }
        }
        // Who the host was at that moment, by its DHCP lease.
        for o in &mut out[first..] {
            self.leases.stamp(o);
        }
    }

    /// Resolvers: a host seen answering a DNS query of another is one. Its query for a name a
    /// client asked it for within [`RELAY_WINDOW_NS`] is that client's, relayed.
    fn relay(&mut self, o: &mut Observation) {
        let Detail::Dns(d) = &o.detail else {
            return;
        };
        let asked_at = self.asked.get(&(o.host, o.domain.clone())).copied();
        if self.is_resolver(o.host) && asked_at.is_some_and(|t| o.ts_ns >= t && o.ts_ns - t <= RELAY_WINDOW_NS) {
            o.relayed = true;
            self.stats.relayed += 1;
            return;
        }
        if d.response_only {
            return;
        }
        if d.rcode.is_some() && o.host != o.dst && !self.resolvers.contains(&o.dst) {
            if self.resolvers.len() >= MAX_ENTRIES {
                self.resolvers.clear();
            }
            self.resolvers.insert(o.dst);
        }
        if self.asked.len() >= MAX_ENTRIES {
            self.stats.dns_map_evicted += crate::bounded::evict_older_half(&mut self.asked, |t| *t);
        }
        self.asked.insert((o.dst, o.domain.clone()), o.ts_ns);
    }

    /// Hosts known as resolvers: seen answering others' queries, or given with `--resolver`.
    pub fn is_resolver(&self, ip: IpAddr) -> bool {
        self.resolvers.contains(&ip) || self.configured.iter().any(|n| n.contains(ip))
    }

    /// Resolvers learned from the traffic (hosts seen answering others' queries), for a
    /// checkpoint (see [`crate::state`]), in address order.
    pub fn learned_resolvers(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.resolvers.iter().copied().collect();
        v.sort();
        v
    }

    /// Resolvers learned before a restart.
    pub fn restore_resolvers(&mut self, resolvers: Vec<IpAddr>) {
        for ip in resolvers {
            if self.resolvers.len() >= MAX_ENTRIES {
                break;
            }
            self.resolvers.insert(ip);
        }
    }

    /// Resolvers given by the operator (`--resolver IP|CIDR`).
    pub fn set_configured(&mut self, nets: Vec<IpNet>) {
        self.configured = nets;
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
                o.fallback_rule = None;
                o.domain = name;
                o.rule = rule;
                if let Detail::Tls(t) = &mut o.detail
                    && let Some(ch) = t.unfingerprinted.take()
                {
                    t.fingerprint(&ch);
                }
                o.attribution = Attribution::DnsAnswer;
                self.stats.attributed += 1;
                out.push(o);
            }
            None => match o.fallback_rule {
                // No answer named the server, but the request's path or User-Agent is an updater's.
                Some(rule) => {
                    let Detail::Http(_) = &o.detail else { return };
                    o.domain = o.dst.to_string();
                    o.rule = rule;
                    o.attribution = Attribution::HttpPath;
                    self.stats.http_path += 1;
                    out.push(o);
                }
                None => self.stats.unattributed += 1,
            },
        }
    }

    fn evict_half(&mut self) {
        self.stats.dns_map_evicted += crate::bounded::evict_older_half(&mut self.map, |e| e.expires_ns);
    }
}

/// Sets `role: resolver` on the hosts the attributor knows as resolvers.
pub fn mark_resolvers(hosts: &mut [crate::host::Host], attributor: &Attributor) {
    for h in hosts {
        if attributor.is_resolver(h.key.ip) {
            h.role = Some("resolver");
        }
    }
}
