//! The per-host report: JSON (the contract), CSV (one row per host), and the readable
//! table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::{rfc3339, vlan_opt};
use crate::host::{Host, Verdict};
use crate::pipeline::{Analysis, InputSummary, Stats};
use crate::rules::matcher::Rules;
use crate::rules::model::Category;

#[derive(Serialize)]
struct RulesOut<'a> {
    file: &'a str,
    vendor: &'a str,
    name: &'a str,
    version: &'a str,
    cutoff: &'a str,
    legal_reference: &'a str,
    rules: usize,
}

#[derive(Serialize)]
struct DomainOut<'a> {
    domain: &'a str,
    category: Category,
    rule_id: &'a str,
    count: u64,
    first_seen: String,
    last_seen: String,
    via: Vec<&'static str>,
}

#[derive(Serialize)]
struct HostOut<'a> {
    ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<&'a [u16]>,
    verdict: Verdict,
    first_seen: String,
    last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_after_cutoff: Option<String>,
    categories: BTreeMap<Category, u64>,
    domains: Vec<DomainOut<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    domains_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Period {
    first: Option<String>,
    last: Option<String>,
}

#[derive(Serialize)]
struct ReportOut<'a> {
    kavwatch_version: &'static str,
    cutoff: String,
    rules: Vec<RulesOut<'a>>,
    inputs: &'a [InputSummary],
    period: Period,
    summary: BTreeMap<&'static str, usize>,
    stats: &'a Stats,
    hosts: Vec<HostOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    errors: &'a [String],
}

/// What every report needs.
pub struct ReportInput<'a> {
    pub analysis: &'a Analysis,
    pub hosts: &'a [Host],
    pub rules: &'a Rules,
    /// The cutoff in force (override or the first vendor's).
    pub cutoff_ns: i64,
}

pub fn summary(hosts: &[Host]) -> BTreeMap<&'static str, usize> {
    let mut s: BTreeMap<&'static str, usize> =
        [Verdict::ActiveAfterCutoff, Verdict::ActiveBeforeCutoff, Verdict::ExcludedOnly, Verdict::OtherOnly]
            .into_iter()
            .map(|v| (v.as_str(), 0))
            .collect();
    for h in hosts {
        *s.entry(h.verdict().as_str()).or_default() += 1;
    }
    s.insert("hosts", hosts.len());
    s
}

pub fn json(r: &ReportInput<'_>) -> String {
    let rules = r.rules;
    let out = ReportOut {
        kavwatch_version: env!("CARGO_PKG_VERSION"),
        cutoff: rfc3339_s(r.cutoff_ns),
        rules: rules
            .set
            .vendors
            .iter()
            .enumerate()
            .map(|(i, v)| RulesOut {
                file: &v.file,
                vendor: &v.id,
                name: &v.name,
                version: &v.version,
                cutoff: &v.cutoff,
                legal_reference: &v.legal_reference,
                rules: rules.set.rules.iter().filter(|x| x.vendor == i).count(),
            })
            .collect(),
        inputs: &r.analysis.inputs,
        period: Period { first: r.analysis.first_ts.map(rfc3339), last: r.analysis.last_ts.map(rfc3339) },
        summary: summary(r.hosts),
        stats: &r.analysis.stats,
        hosts: r
            .hosts
            .iter()
            .map(|h| HostOut {
                ip: h.key.ip,
                vlan: vlan_opt(&h.key.vlan),
                verdict: h.verdict(),
                first_seen: rfc3339(h.first_ns),
                last_seen: rfc3339(h.last_ns),
                last_seen_after_cutoff: h.last_after_cutoff_ns.map(rfc3339),
                categories: h.categories.clone(),
                domains: h
                    .top_domains()
                    .into_iter()
                    .map(|(name, d)| DomainOut {
                        domain: name,
                        category: d.category,
                        rule_id: &rules.rule(d.rule).id,
                        count: d.count,
                        first_seen: rfc3339(d.first_ns),
                        last_seen: rfc3339(d.last_ns),
                        via: d.via.iter().copied().collect(),
                    })
                    .collect(),
                domains_dropped: h.domains_dropped,
            })
            .collect(),
        errors: &r.analysis.errors,
    };
    let mut s = serde_json::to_string_pretty(&out).expect("report serialises");
    s.push('\n');
    s
}

/// Seconds precision for the cutoff, as it is written in the rules.
fn rfc3339_s(ns: i64) -> String {
    let s = rfc3339(ns);
    s.replace(".000000Z", "Z")
}

/// A CSV cell: quoted when needed, and defused when a spreadsheet would read it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

fn vlan_text(h: &Host) -> String {
    h.key.vlan.as_slice().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(".")
}

fn category_count(h: &Host, c: Category) -> u64 {
    h.categories.get(&c).copied().unwrap_or(0)
}

pub fn csv(r: &ReportInput<'_>) -> String {
    let mut s = String::from("ip,vlan,verdict,first_seen,last_seen,last_seen_after_cutoff");
    for c in Category::ALL {
        let _ = write!(s, ",{}", c.as_str());
    }
    s.push_str(",domains\n");
    for h in r.hosts {
        let _ = write!(
            s,
            "{},{},{},{},{},{}",
            h.key.ip,
            vlan_text(h),
            h.verdict().as_str(),
            rfc3339(h.first_ns),
            rfc3339(h.last_ns),
            h.last_after_cutoff_ns.map(rfc3339).unwrap_or_default()
        );
        for c in Category::ALL {
            let _ = write!(s, ",{}", category_count(h, c));
        }
        let domains: Vec<String> = h.top_domains().iter().map(|(n, d)| format!("{n} ({})", d.count)).collect();
        let _ = writeln!(s, ",{}", csv_cell(&domains.join("; ")));
    }
    s
}

/// The readable table for the terminal.
pub fn text(r: &ReportInput<'_>) -> String {
    let mut s = String::new();
    let sum = summary(r.hosts);
    let active = sum.get("active-after-cutoff").copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "{} host(s) with Kaspersky traffic; {} still contacted update, telemetry, activation or management servers after the cutoff {}.",
        r.hosts.len(),
        active,
        rfc3339_s(r.cutoff_ns)
    );
    if !r.hosts.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<26} {:<5} {:<20} {:<20} {:<20} {:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  TOP DOMAINS",
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
    let short = |ns: i64| rfc3339(ns)[..19].replace('T', " ");
    for h in r.hosts {
        let vlan = vlan_text(h);
        let top: Vec<String> = h.top_domains().iter().take(3).map(|(n, d)| format!("{n} ({})", d.count)).collect();
        let more = h.domains.len().saturating_sub(3);
        let _ = writeln!(
            s,
            "{:<26} {:<5} {:<20} {:<20} {:<20} {:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  {}{}",
            h.key.ip.to_string(),
            if vlan.is_empty() { "-".to_string() } else { vlan },
            h.verdict().as_str(),
            short(h.first_ns),
            short(h.last_ns),
            h.last_after_cutoff_ns.map(short).unwrap_or_else(|| "-".into()),
            category_count(h, Category::Update),
            category_count(h, Category::Telemetry),
            category_count(h, Category::Activation),
            category_count(h, Category::Management),
            category_count(h, Category::Excluded),
            category_count(h, Category::Other),
            top.join(", "),
            if more > 0 { format!(" +{more} more") } else { String::new() }
        );
    }
    let st = &r.analysis.stats;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Totals: {} input(s), {} packets ({} bytes), {} decoded, {} skipped, {} malformed, {} truncated by snaplen; {} DNS messages, {} TLS ClientHellos, {} HTTP requests; {} observations.",
        r.analysis.inputs.len(),
        st.packets,
        st.bytes,
        st.decoded,
        st.skipped.not_ip + st.skipped.not_tcp_udp + st.skipped.unsupported_link,
        st.malformed,
        st.truncated,
        st.workers.dns_messages,
        st.workers.tls_client_hellos,
        st.workers.http_requests,
        st.observations
    );
    if st.skipped.unsupported_link > 0 {
        let lts: Vec<String> = st.link_types.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(
            s,
            "Unsupported link types skipped ({} packets); link types seen: {}.",
            st.skipped.unsupported_link,
            lts.join(", ")
        );
    }
    if st.workers.flows_evicted + st.workers.reassembly_gave_up + st.fragments.evicted > 0 {
        let _ = writeln!(
            s,
            "Limits reached: {} flows evicted, {} streams given up before their ClientHello/request was whole, {} fragment sets evicted.",
            st.workers.flows_evicted, st.workers.reassembly_gave_up, st.fragments.evicted
        );
    }
    s
}
