//! Per-host aggregation of observations and the verdict against the cutoff.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::decode::VlanTags;
use crate::observation::Observation;
use crate::rules::matcher::Rules;
use crate::rules::model::Category;

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
    pub rule: u32,
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
}

impl Host {
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

fn own_mac(observations: &[Observation], key: &HostKey, macs: &BTreeMap<[u8; 6], BTreeSet<IpAddr>>) -> Option<[u8; 6]> {
    let mut counts: BTreeMap<[u8; 6], u64> = BTreeMap::new();
    for o in observations.iter().filter(|o| o.host == key.ip && o.vlan == key.vlan) {
        if let Some(m) = o.host_mac.filter(|m| macs.get(m).is_some_and(|ips| ips.len() == 1)) {
            *counts.entry(m).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(m, n)| (*n, std::cmp::Reverse(*m))).map(|(m, _)| m)
}

/// `aa:bb:cc:dd:ee:ff`
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The cutoff that applies to an observation: the override, else its vendor's.
pub fn cutoff_for(rules: &Rules, o: &Observation, cutoff_override: Option<i64>) -> i64 {
    cutoff_override.unwrap_or_else(|| rules.set.vendors[rules.rule(o.rule).vendor].cutoff_ns)
}

/// Builds the host table; hosts come out in report order: verdict, then last contact
/// after the cutoff (latest first), then address.
pub fn aggregate(observations: &[Observation], rules: &Rules, cutoff_override: Option<i64>) -> Vec<Host> {
    let mut hosts: BTreeMap<HostKey, Host> = BTreeMap::new();
    // Which addresses each MAC sent for: a MAC sending for several is a router's.
    let mut macs: BTreeMap<[u8; 6], BTreeSet<IpAddr>> = BTreeMap::new();
    for o in observations {
        if let Some(m) = o.host_mac {
            let ips = macs.entry(m).or_default();
            if ips.len() < 2 {
                ips.insert(o.host);
            }
        }
    }
    for o in observations {
        let key = HostKey { vlan: o.vlan, ip: o.host };
        let rule = rules.rule(o.rule);
        let cutoff = cutoff_for(rules, o, cutoff_override);
        let h = hosts.entry(key).or_insert_with(|| Host {
            key,
            first_ns: o.ts_ns,
            last_ns: o.ts_ns,
            last_after_cutoff_ns: None,
            banned_seen: false,
            categories: BTreeMap::new(),
            domains: BTreeMap::new(),
            domains_dropped: 0,
            mac: None,
        });
        h.first_ns = h.first_ns.min(o.ts_ns);
        h.last_ns = h.last_ns.max(o.ts_ns);
        *h.categories.entry(rule.category).or_default() += 1;
        if rule.category.is_banned_service() {
            h.banned_seen = true;
            if o.ts_ns >= cutoff {
                h.last_after_cutoff_ns = Some(h.last_after_cutoff_ns.map_or(o.ts_ns, |t| t.max(o.ts_ns)));
            }
        }
        let len = h.domains.len();
        match h.domains.get_mut(&o.domain) {
            Some(d) => {
                d.count += 1;
                d.first_ns = d.first_ns.min(o.ts_ns);
                d.last_ns = d.last_ns.max(o.ts_ns);
                d.via.insert(o.via().as_str());
            }
            None if len < MAX_DOMAINS_PER_HOST => {
                h.domains.insert(
                    o.domain.clone(),
                    DomainStats {
                        category: rule.category,
                        rule: o.rule,
                        count: 1,
                        first_ns: o.ts_ns,
                        last_ns: o.ts_ns,
                        via: BTreeSet::from([o.via().as_str()]),
                    },
                );
            }
            None => h.domains_dropped += 1,
        }
    }
    for (key, h) in hosts.iter_mut() {
        h.mac = own_mac(observations, key, &macs);
    }
    let mut out: Vec<Host> = hosts.into_values().collect();
    out.sort_by(|a, b| {
        a.verdict().cmp(&b.verdict()).then(b.last_after_cutoff_ns.cmp(&a.last_after_cutoff_ns)).then(a.key.cmp(&b.key))
    });
    out
}
