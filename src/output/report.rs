//! The per-host report. One owned model, [`Report`], built from an analysis or merged from
//! other reports (`merge.rs`), and written as JSON (the contract), CSV, the terminal table
//! or HTML (`html.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::rfc3339;
use crate::host::Host;
use crate::observation::{Detail, Observation};
use crate::pipeline::{Analysis, InputSummary};
use crate::rules::matcher::Rules;
use crate::rules::model::Category;

/// Evidence kept per host: the latest few observations.
pub const EVIDENCE_PER_HOST: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RulesInfo {
    pub file: String,
    pub vendor: String,
    pub name: String,
    pub version: String,
    pub cutoff: String,
    pub legal_reference: String,
    pub rules: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainRow {
    pub domain: String,
    pub category: Category,
    pub rule_id: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub via: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub timestamp: String,
    pub event_type: String,
    pub domain: String,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRow {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vec<u16>>,
    /// The host's own MAC address, when known (see `host::Host::mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub verdict: String,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_after_cutoff: Option<String>,
    pub categories: BTreeMap<Category, u64>,
    pub domains: Vec<DomainRow>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub domains_dropped: u64,
    /// The sensors whose captures showed this host.
    #[serde(default)]
    pub sensors: Vec<String>,
    /// The latest observations, for the reader of the HTML report.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Period {
    pub first: Option<String>,
    pub last: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub kavwatch_version: String,
    #[serde(default)]
    pub sensors: Vec<String>,
    pub cutoff: String,
    pub rules: Vec<RulesInfo>,
    pub inputs: Vec<InputSummary>,
    pub period: Period,
    pub summary: BTreeMap<String, usize>,
    /// Counters, as `pipeline::Stats` writes them (merging adds them up).
    pub stats: serde_json::Value,
    /// Observations per hour (`2024-09-29T04`) and category.
    #[serde(default)]
    pub timeline: BTreeMap<String, BTreeMap<Category, u64>>,
    pub hosts: Vec<HostRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub const VERDICTS: [&str; 4] = ["active-after-cutoff", "active-before-cutoff", "excluded-only", "other-only"];

/// Hosts per verdict, plus `hosts`.
pub fn summary(hosts: &[HostRow]) -> BTreeMap<String, usize> {
    let mut s: BTreeMap<String, usize> = VERDICTS.iter().map(|v| (v.to_string(), 0)).collect();
    for h in hosts {
        *s.entry(h.verdict.clone()).or_default() += 1;
    }
    s.insert("hosts".into(), hosts.len());
    s
}

/// Seconds precision for the cutoff, as it is written in the rules.
pub fn rfc3339_s(ns: i64) -> String {
    rfc3339(ns).replace(".000000Z", "Z")
}

fn evidence_of(o: &Observation) -> Evidence {
    Evidence {
        timestamp: rfc3339(o.ts_ns),
        event_type: o.via().as_str().into(),
        domain: o.domain.clone(),
        src_ip: o.src,
        src_port: o.sport,
        dest_ip: o.dst,
        dest_port: o.dport,
        ja4: match &o.detail {
            Detail::Tls(t) => Some(t.ja4.clone()),
            _ => None,
        },
    }
}

impl Report {
    /// The report of one analysis. `hosts` come from `host::aggregate` over the same observations.
    pub fn build(analysis: &Analysis, hosts: &[Host], rules: &Rules, cutoff_ns: i64, sensor: &str) -> Report {
        let mut evidence: BTreeMap<(crate::decode::VlanTags, IpAddr), Vec<Evidence>> = BTreeMap::new();
        let mut timeline: BTreeMap<String, BTreeMap<Category, u64>> = BTreeMap::new();
        // Observations are in time order: the last ones per host are the latest.
        for o in &analysis.observations {
            let ev = evidence.entry((o.vlan, o.host)).or_default();
            if ev.len() == EVIDENCE_PER_HOST {
                ev.remove(0);
            }
            ev.push(evidence_of(o));
            let hour = rfc3339(o.ts_ns)[..13].to_string();
            *timeline.entry(hour).or_default().entry(rules.rule(o.rule).category).or_default() += 1;
        }
        let hosts: Vec<HostRow> = hosts
            .iter()
            .map(|h| HostRow {
                ip: h.key.ip,
                vlan: (!h.key.vlan.is_empty()).then(|| h.key.vlan.as_slice().to_vec()),
                mac: h.mac.as_ref().map(crate::host::mac_text),
                verdict: h.verdict().as_str().into(),
                first_seen: rfc3339(h.first_ns),
                last_seen: rfc3339(h.last_ns),
                last_seen_after_cutoff: h.last_after_cutoff_ns.map(rfc3339),
                categories: h.categories.clone(),
                domains: h
                    .top_domains()
                    .into_iter()
                    .map(|(name, d)| DomainRow {
                        domain: name.clone(),
                        category: d.category,
                        rule_id: rules.rule(d.rule).id.clone(),
                        count: d.count,
                        first_seen: rfc3339(d.first_ns),
                        last_seen: rfc3339(d.last_ns),
                        via: d.via.iter().map(|v| v.to_string()).collect(),
                    })
                    .collect(),
                domains_dropped: h.domains_dropped,
                sensors: vec![sensor.to_string()],
                evidence: evidence.remove(&(h.key.vlan, h.key.ip)).unwrap_or_default(),
            })
            .collect();
        Report {
            kavwatch_version: env!("CARGO_PKG_VERSION").into(),
            sensors: vec![sensor.to_string()],
            cutoff: rfc3339_s(cutoff_ns),
            rules: rules
                .set
                .vendors
                .iter()
                .enumerate()
                .map(|(i, v)| RulesInfo {
                    file: v.file.clone(),
                    vendor: v.id.clone(),
                    name: v.name.clone(),
                    version: v.version.clone(),
                    cutoff: v.cutoff.clone(),
                    legal_reference: v.legal_reference.clone(),
                    rules: rules.set.rules.iter().filter(|x| x.vendor == i).count(),
                })
                .collect(),
            inputs: analysis.inputs.clone(),
            period: Period { first: analysis.first_ts.map(rfc3339), last: analysis.last_ts.map(rfc3339) },
            summary: summary(&hosts),
            stats: serde_json::to_value(&analysis.stats).expect("stats serialise"),
            timeline,
            hosts,
            errors: analysis.errors.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serialises");
        s.push('\n');
        s
    }

    pub fn stat(&self, path: &[&str]) -> u64 {
        let mut v = &self.stats;
        for p in path {
            v = &v[*p];
        }
        v.as_u64().unwrap_or(0)
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::from("ip,vlan,verdict,first_seen,last_seen,last_seen_after_cutoff");
        for c in Category::ALL {
            let _ = write!(s, ",{}", c.as_str());
        }
        s.push_str(",domains,mac\n");
        for h in &self.hosts {
            let _ = write!(
                s,
                "{},{},{},{},{},{}",
                h.ip,
                vlan_text(h),
                h.verdict,
                h.first_seen,
                h.last_seen,
                h.last_seen_after_cutoff.as_deref().unwrap_or("")
            );
            for c in Category::ALL {
                let _ = write!(s, ",{}", h.categories.get(&c).copied().unwrap_or(0));
            }
            let domains: Vec<String> = h.domains.iter().map(|d| format!("{} ({})", d.domain, d.count)).collect();
            let _ = writeln!(s, ",{},{}", csv_cell(&domains.join("; ")), h.mac.as_deref().unwrap_or(""));
        }
        s
    }

    /// The readable table for the terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let active = self.summary.get("active-after-cutoff").copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "{} host(s) with Kaspersky traffic; {} still contacted update, telemetry, activation or management servers after the cutoff {}.",
            self.hosts.len(),
            active,
            self.cutoff
        );
        if !self.hosts.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "{:<26} {:<6} {:<20} {:<20} {:<20} {:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  TOP DOMAINS",
                "HOST",
                "VLAN",
                "VERDICT",
                "FIRST SEEN",
                "LAST SEEN",
                "LAST AFTER CUTOFF",
                "UPD",
                "TEL",
                "ACT",
                "MGT",
                "EXCL",
                "OTHER"
            );
        }
        let short = |t: &str| t.get(..19).unwrap_or(t).replace('T', " ");
        for h in &self.hosts {
            let vlan = vlan_text(h);
            let top: Vec<String> = h.domains.iter().take(3).map(|d| format!("{} ({})", d.domain, d.count)).collect();
            let more = h.domains.len().saturating_sub(3);
            let count = |c: Category| h.categories.get(&c).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<26} {:<6} {:<20} {:<20} {:<20} {:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  {}{}",
                h.ip.to_string(),
                if vlan.is_empty() { "-".to_string() } else { vlan },
                h.verdict,
                short(&h.first_seen),
                short(&h.last_seen),
                h.last_seen_after_cutoff.as_deref().map(short).unwrap_or_else(|| "-".into()),
                count(Category::Update),
                count(Category::Telemetry),
                count(Category::Activation),
                count(Category::Management),
                count(Category::Excluded),
                count(Category::Other),
                top.join(", "),
                if more > 0 { format!(" +{more} more") } else { String::new() }
            );
        }
        let st = |p: &[&str]| self.stat(p);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Totals: {} input(s), {} packets ({} bytes), {} decoded, {} skipped, {} malformed, {} truncated by snaplen; {} DNS messages, {} TLS ClientHellos, {} HTTP requests; {} observations.",
            self.inputs.len(),
            st(&["packets"]),
            st(&["bytes"]),
            st(&["decoded"]),
            st(&["skipped", "not_ip"]) + st(&["skipped", "not_tcp_udp"]) + st(&["skipped", "unsupported_link"]),
            st(&["malformed"]),
            st(&["truncated"]),
            st(&["dns_messages"]),
            st(&["tls_client_hellos"]),
            st(&["http_requests"]),
            st(&["observations"])
        );
        if st(&["skipped", "unsupported_link"]) > 0 {
            let lts: Vec<String> = self.stats["link_types"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "Unsupported link types skipped ({} packets); link types seen: {}.",
                st(&["skipped", "unsupported_link"]),
                lts.join(", ")
            );
        }
        let (ev, gu, fe) = (st(&["flows_evicted"]), st(&["reassembly_gave_up"]), st(&["fragments", "evicted"]));
        if ev + gu + fe > 0 {
            let _ = writeln!(
                s,
                "Limits reached: {ev} flows evicted, {gu} streams given up before their ClientHello/request was whole, {fe} fragment sets evicted."
            );
        }
        s
    }
}

/// A CSV cell: quoted when needed, and defused when a spreadsheet would read it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

pub fn vlan_text(h: &HostRow) -> String {
    h.vlan.as_deref().unwrap_or(&[]).iter().map(|v| v.to_string()).collect::<Vec<_>>().join(".")
}

/// Union of two sorted string lists.
pub(crate) fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().chain(b).cloned().collect::<BTreeSet<_>>().into_iter().collect()
}
