//! Per-host aggregation of observations and the verdict against the cutoff.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

use serde::Serialize;

use crate::decode::VlanTags;
use crate::decode::intern::TunnelId;
use crate::observation::{Detail, Observation};
use crate::rules::matcher::Rules;
use crate::rules::model::{Category, Rule};

/// Domains listed per host; past this, further names are only counted.
pub const MAX_DOMAINS_PER_HOST: usize = 1000;

/// A host: its address, qualified by the VLAN tags it was seen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostKey {
    pub vlan: VlanTags,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// An update, telemetry, activation or management contact at or after the cutoff.
    ActiveAfterCutoff,
    /// Such contacts, all before the cutoff.
    ActiveBeforeCutoff,
    ExcludedOnly,
    OtherOnly,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::ActiveAfterCutoff => "active-after-cutoff",
            Verdict::ActiveBeforeCutoff => "active-before-cutoff",
            Verdict::ExcludedOnly => "excluded-only",
            Verdict::OtherOnly => "other-only",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DomainStats {
    pub category: Category,
    pub rule_id: String,
    pub count: u64,
    pub first_ns: i64,
    pub last_ns: i64,
    pub via: BTreeSet<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub key: HostKey,
    pub first_ns: i64,
    pub last_ns: i64,
    /// Last banned-service contact (update, telemetry, activation, management) at or after the cutoff.
    pub last_after_cutoff_ns: Option<i64>,
    pub banned_seen: bool,
    pub categories: BTreeMap<Category, u64>,
    pub domains: BTreeMap<String, DomainStats>,
    /// Observations of names beyond [`MAX_DOMAINS_PER_HOST`].
    pub domains_dropped: u64,
    /// The host's own MAC address: the one most of its packets came from, unless that MAC
    /// also sends for other addresses (a router's, on a routed segment).
    pub mac: Option<[u8; 6]>,
    /// Packets per source MAC (the first few MACs).
    pub mac_counts: BTreeMap<[u8; 6], u64>,
    /// The latest observations, oldest first.
    pub recent: VecDeque<Observation>,
    /// Asked a public resolver (see `observation::PUBLIC_RESOLVERS`) for a Kaspersky name.
    pub public_dns_fallback: bool,
    /// `resolver`: it answers other hosts' DNS queries (set by the caller, see `attribution`).
    pub role: Option<&'static str>,
    /// Upstream queries made for its clients: listed, never part of its own verdict.
    pub relayed_queries: u64,
    /// Its DHCP host name at its latest observation, and the names it had before (in order).
    pub hostname: Option<String>,
    pub hostnames: Vec<String>,
    /// The MAC its DHCP lease names: preferred to the one its packets came from.
    pub dhcp_mac: Option<[u8; 6]>,
    /// Kaspersky Security Center: `agent` (talks to an Administration Server) or `admin-server`.
    pub ksc_role: Option<&'static str>,
    /// The tunnels its latest observation came through.
    pub tunnel: TunnelId,
}

/// Host names listed per host (an address passed from client to client).
const HOSTNAMES_PER_HOST: usize = 8;

impl Host {
    fn new(key: HostKey, ts_ns: i64) -> Host {
        Host {
            key,
            first_ns: ts_ns,
            last_ns: ts_ns,
            last_after_cutoff_ns: None,
            banned_seen: false,
            categories: BTreeMap::new(),
            domains: BTreeMap::new(),
            domains_dropped: 0,
            mac: None,
            mac_counts: BTreeMap::new(),
            recent: VecDeque::new(),
            public_dns_fallback: false,
            role: None,
            relayed_queries: 0,
            hostname: None,
            hostnames: Vec::new(),
            dhcp_mac: None,
            ksc_role: None,
            tunnel: TunnelId::NONE,
        }
    }

    /// One observation of `category` at `ts_ns`, for the verdict.
    fn count(&mut self, category: Category, ts_ns: i64, cutoff: i64) {
        *self.categories.entry(category).or_default() += 1;
        if category.is_banned_service() {
            self.banned_seen = true;
            if ts_ns >= cutoff {
                self.last_after_cutoff_ns = Some(self.last_after_cutoff_ns.map_or(ts_ns, |t| t.max(ts_ns)));
            }
        }
    }

    /// Keeps `o` as evidence and counts it under `domain`.
    fn note(&mut self, o: &Observation, domain: &str, rule: &Rule) {
        if self.recent.len() == RECENT_PER_HOST {
            self.recent.pop_front();
        }
        self.recent.push_back(o.clone());
        let len = self.domains.len();
        match self.domains.get_mut(domain) {
            Some(d) => {
                d.count += 1;
                d.first_ns = d.first_ns.min(o.ts_ns);
                d.last_ns = d.last_ns.max(o.ts_ns);
                d.via.insert(o.via().as_str());
            }
            None if len < MAX_DOMAINS_PER_HOST => {
                self.domains.insert(
                    domain.to_string(),
                    DomainStats {
                        category: rule.category,
                        rule_id: rule.id.clone(),
                        count: 1,
                        first_ns: o.ts_ns,
                        last_ns: o.ts_ns,
                        via: BTreeSet::from([o.via().as_str()]),
                    },
                );
            }
            None => self.domains_dropped += 1,
        }
    }

    /// Notes about the host beyond its verdict: `public-dns-fallback`.
    pub fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.public_dns_fallback {
            f.push("public-dns-fallback".to_string());
        }
        f
    }

    pub fn verdict(&self) -> Verdict {
        if self.last_after_cutoff_ns.is_some() {
            Verdict::ActiveAfterCutoff
        } else if self.banned_seen {
            Verdict::ActiveBeforeCutoff
        } else if self.categories.keys().all(|c| *c == Category::Excluded) {
            Verdict::ExcludedOnly
        } else {
            Verdict::OtherOnly
        }
    }

    /// Domains by count (most first), then name.
    pub fn top_domains(&self) -> Vec<(&String, &DomainStats)> {
        let mut v: Vec<_> = self.domains.iter().collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        v
    }
}

/// `aa:bb:cc:dd:ee:ff`
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The cutoff that applies to an observation: the override, else its vendor's.
pub fn cutoff_for(rules: &Rules, o: &Observation, cutoff_override: Option<i64>) -> i64 {
    cutoff_override.unwrap_or_else(|| rules.set.vendors[rules.rule(o.rule).vendor].cutoff_ns)
}

/// Evidence kept per host: its latest observations.
pub const RECENT_PER_HOST: usize = 5;
/// MAC addresses counted per host.
const MACS_PER_HOST: usize = 16;

/// The hosts seen so far, built one observation at a time (observations in time order), with
/// a bound on hosts for runs that last weeks: past `max_hosts`, the longest-quiet half goes.
pub struct HostTable {
    hosts: HashMap<HostKey, Host>,
    /// Which addresses each MAC sent for (two are enough to know): a MAC sending for several
    /// is a router's.
    macs: HashMap<[u8; 6], SmallIps>,
    /// Observations per hour (seconds at the hour's start) and category.
    pub timeline: BTreeMap<i64, BTreeMap<Category, u64>>,
    max_hosts: usize,
    /// Hosts forgotten because of `max_hosts`.
    pub hosts_evicted: u64,
}

#[derive(Default)]
struct SmallIps(Option<IpAddr>, Option<IpAddr>);

impl SmallIps {
    fn insert(&mut self, ip: IpAddr) {
        match (self.0, self.1) {
            (None, _) => self.0 = Some(ip),
            (Some(a), None) if a != ip => self.1 = Some(ip),
            _ => {}
        }
    }

    fn single(&self) -> bool {
        self.1.is_none()
    }
}

impl HostTable {
    pub fn new(max_hosts: usize) -> HostTable {
        HostTable {
            hosts: HashMap::new(),
            macs: HashMap::new(),
            timeline: BTreeMap::new(),
            max_hosts: max_hosts.max(1),
            hosts_evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts per verdict, every verdict listed (the report's `summary`, without building rows).
    pub fn verdict_counts(&self) -> Vec<(&'static str, u64)> {
        let mut n = [0u64; 4];
        for h in self.hosts.values() {
            n[h.verdict() as usize] += 1;
        }
        [Verdict::ActiveAfterCutoff, Verdict::ActiveBeforeCutoff, Verdict::ExcludedOnly, Verdict::OtherOnly]
            .into_iter()
            .map(|v| (v.as_str(), n[v as usize]))
            .collect()
    }

    /// Adds one observation, judged with the rules it was matched with.
    pub fn add(&mut self, o: &Observation, rules: &Rules, cutoff_override: Option<i64>) {
        let key = HostKey { vlan: o.vlan, ip: o.host };
        if !self.hosts.contains_key(&key) && self.hosts.len() >= self.max_hosts {
            self.evict_half();
        }
        if let Some(m) = o.host_mac {
            if self.macs.len() >= self.max_hosts.saturating_mul(4) {
                self.macs.clear();
            }
            self.macs.entry(m).or_default().insert(o.host);
        }
        let rule = rules.rule(o.rule);
        let cutoff = cutoff_for(rules, o, cutoff_override);
        if !o.relayed {
            *self
                .timeline
                .entry(o.ts_ns.div_euclid(3_600_000_000_000) * 3600)
                .or_default()
                .entry(rule.category)
                .or_default() += 1;
        }
        if let Detail::Ksc(k) = &o.detail {
            self.credit_server(o, k.server, rule, cutoff);
        }
        let h = self.hosts.entry(key).or_insert_with(|| Host::new(key, o.ts_ns));
        h.first_ns = h.first_ns.min(o.ts_ns);
        if o.ts_ns >= h.last_ns {
            h.tunnel = o.tunnel;
        }
        h.last_ns = h.last_ns.max(o.ts_ns);
        if let Some(name) = &o.hostname {
            if !h.hostnames.contains(name) && h.hostnames.len() < HOSTNAMES_PER_HOST {
                h.hostnames.push(name.clone());
            }
            h.hostname = Some(name.clone());
        }
        if o.lease_mac.is_some() {
            h.dhcp_mac = o.lease_mac;
        }
        if matches!(o.detail, Detail::Ksc(_)) {
            h.ksc_role.get_or_insert("agent");
        }
        if o.relayed {
            // A client's query passed on: not the resolver's own Kaspersky traffic.
            h.relayed_queries += 1;
            return;
        }
        h.public_dns_fallback |= o.public_resolver();
        h.count(rule.category, o.ts_ns, cutoff);
        if let Some(m) = o.host_mac {
            let n = h.mac_counts.len();
            match h.mac_counts.get_mut(&m) {
                Some(c) => *c += 1,
                None if n < MACS_PER_HOST => {
                    h.mac_counts.insert(m, 1);
                }
                None => {}
            }
        }
        h.note(o, &o.domain, rule);
    }

    /// A Security Center contact counts for the Administration Server too: it serves the agent
    /// (or wakes it), so Kaspersky software runs there as well.
    fn credit_server(&mut self, o: &Observation, server: IpAddr, rule: &Rule, cutoff: i64) {
        let key = HostKey { vlan: o.vlan, ip: server };
        if !self.hosts.contains_key(&key) && self.hosts.len() >= self.max_hosts {
            self.evict_half();
        }
        let h = self.hosts.entry(key).or_insert_with(|| Host::new(key, o.ts_ns));
        h.first_ns = h.first_ns.min(o.ts_ns);
        h.last_ns = h.last_ns.max(o.ts_ns);
        h.ksc_role = Some("admin-server");
        h.count(rule.category, o.ts_ns, cutoff);
        // Its "domains" are the agents it serves.
        h.note(o, &o.host.to_string(), rule);
    }

    fn evict_half(&mut self) {
        self.hosts_evicted += crate::bounded::evict_older_half(&mut self.hosts, |h| h.last_ns);
    }

    /// The hosts in report order (verdict, then last contact after the cutoff, latest first,
    /// then address), each with its own MAC worked out.
    pub fn hosts(&self) -> Vec<Host> {
        let mut out: Vec<Host> = self
            .hosts
            .values()
            .map(|h| {
                let mut h = h.clone();
                h.mac = h.dhcp_mac.or_else(|| {
                    h.mac_counts
                        .iter()
                        .filter(|(m, _)| self.macs.get(*m).is_none_or(|ips| ips.single()))
                        .max_by_key(|(m, n)| (**n, std::cmp::Reverse(**m)))
                        .map(|(m, _)| *m)
                });
                h
            })
            .collect();
        out.sort_by(|a, b| {
            a.verdict()
                .cmp(&b.verdict())
                .then(b.last_after_cutoff_ns.cmp(&a.last_after_cutoff_ns))
                .then(a.key.cmp(&b.key))
        });
        out
    }
}

/// Builds the host table of a whole analysis (observations in time order), in report order.
pub fn aggregate(observations: &[Observation], rules: &Rules, cutoff_override: Option<i64>) -> Vec<Host> {
    let mut t = HostTable::new(usize::MAX);
    for o in observations {
        t.add(o, rules, cutoff_override);
    }
    t.hosts()
}

/// A host as a checkpoint keeps it (see [`crate::state`]): [`Host`] with its `&'static str`s as
/// text. The tunnel and the observations' tunnels and rules are still this process's numbers:
/// `state` turns them into layers and rule ids around this.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    pub vlan: VlanTags,
    pub ip: IpAddr,
    pub first_ns: i64,
    pub last_ns: i64,
    pub last_after_cutoff_ns: Option<i64>,
    pub banned_seen: bool,
    pub categories: Vec<(Category, u64)>,
    pub domains: Vec<DomainState>,
    pub domains_dropped: u64,
    pub mac_counts: Vec<([u8; 6], u64)>,
    pub recent: Vec<Observation>,
    pub public_dns_fallback: bool,
    pub role: Option<String>,
    pub relayed_queries: u64,
    pub hostname: Option<String>,
    pub hostnames: Vec<String>,
    pub dhcp_mac: Option<[u8; 6]>,
    pub ksc_role: Option<String>,
    pub tunnel: TunnelId,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DomainState {
    pub name: String,
    pub category: Category,
    pub rule_id: String,
    pub count: u64,
    pub first_ns: i64,
    pub last_ns: i64,
    pub via: Vec<String>,
}

/// The host table as a checkpoint keeps it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostTableState {
    pub hosts: Vec<HostState>,
    /// Per MAC, the (at most two) addresses it sent for.
    pub macs: Vec<([u8; 6], Option<IpAddr>, Option<IpAddr>)>,
    pub timeline: Vec<(i64, Vec<(Category, u64)>)>,
    pub hosts_evicted: u64,
}

/// The `&'static str`s a host holds, back from text (anything else is dropped).
fn known_str(s: &str) -> Option<&'static str> {
    const KNOWN: [&str; 9] = ["dns", "tls", "http", "quic", "ksc", "dhcp", "resolver", "agent", "admin-server"];
    KNOWN.iter().find(|k| **k == s).copied()
}

impl HostTable {
    /// Everything the table holds, for a checkpoint (hosts in address order: the same table
    /// gives the same bytes).
    pub fn snapshot(&self) -> HostTableState {
        let mut hosts: Vec<HostState> = self
            .hosts
            .values()
            .map(|h| HostState {
                vlan: h.key.vlan,
                ip: h.key.ip,
                first_ns: h.first_ns,
                last_ns: h.last_ns,
                last_after_cutoff_ns: h.last_after_cutoff_ns,
                banned_seen: h.banned_seen,
                categories: h.categories.iter().map(|(c, n)| (*c, *n)).collect(),
                domains: h
                    .domains
                    .iter()
                    .map(|(name, d)| DomainState {
                        name: name.clone(),
                        category: d.category,
                        rule_id: d.rule_id.clone(),
                        count: d.count,
                        first_ns: d.first_ns,
                        last_ns: d.last_ns,
                        via: d.via.iter().map(|v| v.to_string()).collect(),
                    })
                    .collect(),
                domains_dropped: h.domains_dropped,
                mac_counts: h.mac_counts.iter().map(|(m, n)| (*m, *n)).collect(),
                recent: h.recent.iter().cloned().collect(),
                public_dns_fallback: h.public_dns_fallback,
                role: h.role.map(str::to_string),
                relayed_queries: h.relayed_queries,
                hostname: h.hostname.clone(),
                hostnames: h.hostnames.clone(),
                dhcp_mac: h.dhcp_mac,
                ksc_role: h.ksc_role.map(str::to_string),
                tunnel: h.tunnel,
            })
            .collect();
        hosts.sort_by_key(|h| (h.vlan, h.ip));
        let mut macs: Vec<_> = self.macs.iter().map(|(m, ips)| (*m, ips.0, ips.1)).collect();
        macs.sort();
        HostTableState {
            hosts,
            macs,
            timeline: self.timeline.iter().map(|(t, c)| (*t, c.iter().map(|(c, n)| (*c, *n)).collect())).collect(),
            hosts_evicted: self.hosts_evicted,
        }
    }

    /// A table holding what `snapshot` gave, bounded by `max_hosts` (which may be smaller now:
    /// then the longest-quiet hosts go, counted as evicted).
    pub fn restore(state: HostTableState, max_hosts: usize) -> HostTable {
        let mut t = HostTable::new(max_hosts);
        t.hosts_evicted = state.hosts_evicted;
        t.timeline = state.timeline.into_iter().map(|(t, c)| (t, c.into_iter().collect())).collect();
        for (m, a, b) in state.macs.into_iter().take(t.max_hosts.saturating_mul(4)) {
            t.macs.insert(m, SmallIps(a, b));
        }
        for s in state.hosts {
            let key = HostKey { vlan: s.vlan, ip: s.ip };
            if !t.hosts.contains_key(&key) && t.hosts.len() >= t.max_hosts {
                t.evict_half();
            }
            let mut recent: VecDeque<Observation> = s.recent.into_iter().collect();
            while recent.len() > RECENT_PER_HOST {
                recent.pop_front();
            }
            let h = Host {
                key,
                first_ns: s.first_ns,
                last_ns: s.last_ns,
                last_after_cutoff_ns: s.last_after_cutoff_ns,
                banned_seen: s.banned_seen,
                categories: s.categories.into_iter().collect(),
                domains: s
                    .domains
                    .into_iter()
                    .take(MAX_DOMAINS_PER_HOST)
                    .map(|d| {
                        let stats = DomainStats {
                            category: d.category,
                            rule_id: d.rule_id,
                            count: d.count,
                            first_ns: d.first_ns,
                            last_ns: d.last_ns,
                            via: d.via.iter().filter_map(|v| known_str(v)).collect(),
                        };
                        (d.name, stats)
                    })
                    .collect(),
                domains_dropped: s.domains_dropped,
                mac: None,
                mac_counts: s.mac_counts.into_iter().take(MACS_PER_HOST).collect(),
                recent,
                public_dns_fallback: s.public_dns_fallback,
                role: s.role.as_deref().and_then(known_str),
                relayed_queries: s.relayed_queries,
                hostname: s.hostname,
                hostnames: s.hostnames.into_iter().take(HOSTNAMES_PER_HOST).collect(),
                dhcp_mac: s.dhcp_mac,
                ksc_role: s.ksc_role.as_deref().and_then(known_str),
                tunnel: s.tunnel,
            };
            t.hosts.insert(key, h);
        }
        t
    }
}
