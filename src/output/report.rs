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
    /// With `--split-by-overlay`: the VXLAN/Geneve VNI or GRE key that is part of the host's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<u32>,
    /// The tunnels of its latest observation, outer first (`[{"type":"vxlan","vni":42}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<serde_json::Value>,
    /// The host's own MAC address, when known (see `host::Host::mac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its DHCP host name (option 12 / 81, DHCPv6 client FQDN) at its latest observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Every host name the address had during the observations, when more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
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
    /// `public-dns-fallback`: asked a public resolver for a Kaspersky name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// `resolver`: answers other hosts' DNS queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A resolver's upstream queries for its clients' Kaspersky names (not its own traffic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub relayed_queries: u64,
    /// Kaspersky Security Center: `agent` or `admin-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksc_role: Option<String>,
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
    /// A fleet collector's report: each sensor's last status (the Sensors section).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet_sensors: Vec<SensorRow>,
}

/// One sensor in a fleet collector's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SensorRow {
    pub sensor: String,
    /// `live` or `analyze` (empty before its first status).
    pub mode: String,
    /// `reporting`, `finished` (an analysis that ended), `stale` (silent for more than three
    /// stats intervals: a blind spot) or `no-status` (observations but no status yet).
    pub state: String,
    /// When its last message reached the stream (the server's clock).
    pub last_heard: String,
    /// Its own clock at its last status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    pub interval_s: u64,
    pub version: String,
    pub inputs: Vec<String>,
    pub packets: u64,
    pub kernel_drops: u64,
    pub undecoded_share: f64,
    pub hosts: u64,
    pub observations: u64,
    pub alerts_raised: u64,
    /// Its publisher's counters: acknowledged, spooled, dropped, waiting.
    pub published_acked: u64,
    pub publish_spooled: u64,
    pub publish_dropped: u64,
    pub publish_waiting: u64,
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

/// What a run says about itself, apart from its hosts.
pub struct RunInfo<'a> {
    /// Counters (`pipeline::Stats`, plus what the caller adds).
    pub stats: serde_json::Value,
    pub inputs: &'a [InputSummary],
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub errors: &'a [String],
}

impl<'a> RunInfo<'a> {
    pub fn of(analysis: &'a Analysis) -> RunInfo<'a> {
        RunInfo {
            stats: serde_json::to_value(&analysis.stats).expect("stats serialise"),
            inputs: &analysis.inputs,
            first_ts: analysis.first_ts,
            last_ts: analysis.last_ts,
            errors: &analysis.errors,
        }
    }
}

impl Report {
    /// The report of one run: `hosts` in report order (`HostTable::hosts`), `timeline` from
    /// the same table.
    pub fn build(
        run: &RunInfo<'_>,
        hosts: &[Host],
        timeline: &BTreeMap<i64, BTreeMap<Category, u64>>,
        rules: &Rules,
        cutoff_ns: i64,
        sensor: &str,
    ) -> Report {
        let timeline: BTreeMap<String, BTreeMap<Category, u64>> =
            timeline.iter().map(|(hour_s, c)| (rfc3339(hour_s * 1_000_000_000)[..13].to_string(), c.clone())).collect();
        let hosts: Vec<HostRow> = hosts
            .iter()
            .map(|h| HostRow {
                ip: h.key.ip,
                vlan: (!h.key.vlan.is_empty()).then(|| h.key.vlan.as_slice().to_vec()),
                overlay: h.key.vlan.overlay(),
                tunnel: crate::decode::intern::to_json(h.tunnel),
                mac: h.mac.as_ref().map(crate::host::mac_text),
                hostname: h.hostname.clone(),
                hostnames: if h.hostnames.len() > 1 { h.hostnames.clone() } else { Vec::new() },
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
                        rule_id: d.rule_id.clone(),
                        count: d.count,
                        first_seen: rfc3339(d.first_ns),
                        last_seen: rfc3339(d.last_ns),
                        via: d.via.iter().map(|v| v.to_string()).collect(),
                    })
                    .collect(),
                domains_dropped: h.domains_dropped,
                sensors: vec![sensor.to_string()],
                flags: h.flags(),
                role: h.role.map(str::to_string),
                relayed_queries: h.relayed_queries,
                ksc_role: h.ksc_role.map(str::to_string),
                evidence: h.recent.iter().map(evidence_of).collect(),
            })
            .collect();
        let mut report = Report {
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
            inputs: run.inputs.to_vec(),
            period: Period { first: run.first_ts.map(rfc3339), last: run.last_ts.map(rfc3339) },
            summary: summary(&hosts),
            stats: run.stats.clone(),
            timeline,
            hosts,
            errors: run.errors.to_vec(),
            fleet_sensors: Vec::new(),
        };
        report.finish_stats();
        report
    }

    /// A report of nothing yet, against `cutoff` (RFC 3339): where a fleet collector starts.
    pub fn empty(cutoff: &str) -> Report {
        Report {
            kavwatch_version: env!("CARGO_PKG_VERSION").into(),
            sensors: Vec::new(),
            cutoff: cutoff.to_string(),
            rules: Vec::new(),
            inputs: Vec::new(),
            period: Period::default(),
            summary: summary(&[]),
            stats: serde_json::Value::Object(Default::default()),
            timeline: BTreeMap::new(),
            hosts: Vec::new(),
            errors: Vec::new(),
            fleet_sensors: Vec::new(),
        }
    }

    /// Sensors marked stale, for the warning at the top of every format.
    pub fn stale_sensors_text(&self) -> Option<String> {
        let stale: Vec<&str> =
            self.fleet_sensors.iter().filter(|s| s.state == "stale").map(|s| s.sensor.as_str()).collect();
        (!stale.is_empty()).then(|| {
            format!(
                "{} sensor(s) stale (silent for more than three stats intervals; what they see is missing): {}",
                stale.len(),
                stale.join(", ")
            )
        })
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serialises");
        s.push('\n');
        s
    }

    /// The share of packets that could not be decoded to TCP/UDP over IP for a reason that may
    /// hide hosts (`stats.undecoded`), from the counts (so that merged reports add up).
    pub fn undecoded_share(&self) -> f64 {
        let packets = self.stat(&["packets"]);
        if packets == 0 { 0.0 } else { self.stat(&["undecoded", "packets"]) as f64 / packets as f64 }
    }

    /// Puts `stats.undecoded.share` (0 to 1) in, from the counts.
    pub fn finish_stats(&mut self) {
        let share = (self.undecoded_share() * 10_000.0).round() / 10_000.0;
        if let Some(u) = self.stats.get_mut("undecoded").and_then(|u| u.as_object_mut()) {
            u.insert("share".into(), share.into());
        }
    }

    /// A warning when more than 1 % of the packets could not be decoded (or none could), with
    /// the top causes: hosts behind those packets are missing from the answer.
    pub fn undecoded_text(&self) -> Option<String> {
        let (packets, decoded) = (self.stat(&["packets"]), self.stat(&["decoded"]));
        let share = self.undecoded_share();
        let nothing = packets > 0 && decoded == 0;
        if share <= crate::decode::counters::UNDECODED_WARN_SHARE && !nothing {
            return None;
        }
        let mut causes: Vec<(String, u64)> = self.stats["undecoded"]["causes"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default();
        causes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let pct = |n: u64| n as f64 * 100.0 / packets.max(1) as f64;
        let why: Vec<String> =
            causes.iter().take(3).map(|(c, n)| format!("{:.1} % of packets: {c}, not decoded", pct(*n))).collect();
        let why = if why.is_empty() { String::from("see stats.skipped.causes") } else { why.join("; ") };
        Some(if nothing {
            format!(
                "Nothing could be decoded: none of the {packets} packets reached TCP or UDP over IP ({why}), so this run says nothing about which hosts use Kaspersky."
            )
        } else {
            format!(
                "Not seen: {:.1} % of packets could not be decoded to TCP/UDP over IP ({why}); hosts in that traffic are missing from this answer.",
                share * 100.0
            )
        })
    }

    /// A sentence on contained parser panics and worker restarts, when there were any.
    pub fn panics_text(&self) -> Option<String> {
        let total = self.stat(&["parser_panics", "total"]);
        if total + self.stat(&["worker_restarts"]) == 0 {
            return None;
        }
        let by: Vec<String> = self.stats["parser_panics"]
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| *k != "total").map(|(k, v)| format!("{k}: {v}")).collect())
            .unwrap_or_default();
        Some(format!(
            "Incomplete: {total} packet(s) skipped after a contained parser panic ({}), {} worker restart(s) losing {} open flow(s); a bug: the first packet of each kind was saved for a report.",
            by.join(", "),
            self.stat(&["worker_restarts"]),
            self.stat(&["flows_lost_to_restarts"])
        ))
    }

    /// What bounded tables let go of that could have been evidence, with why; `None` when nothing.
    pub fn evidence_dropped_text(&self) -> Option<String> {
        let items = [
            (&["ksc", "held_dropped"][..], "Security Center contacts of a pair not yet confirmed, past 8 per pair"),
            (&["ksc", "pairs_evicted"], "Security Center pairs forgotten (65,536 followed at once)"),
            (&["attribution", "dns_map_evicted"], "DNS answers forgotten (262,144 addresses remembered at once)"),
            (&["dhcp", "evicted"], "DHCP leases forgotten (262,144 at once)"),
            (
                &["attribution_candidates_dropped"],
                "nameless connections not held for attribution (131,072 per worker between hand-overs)",
            ),
            (&["ksc_contacts_dropped"], "Security Center contacts not held (65,536 per worker between hand-overs)"),
            (&["dhcp_dropped"], "DHCP messages not held (65,536 per worker between hand-overs)"),
            (
                &["dns_unanswered_evicted"],
                "unanswered DNS queries reported without their answer (16,384 waiting per worker)",
            ),
        ];
        let parts: Vec<String> = items
            .iter()
            .filter_map(|(path, what)| match self.stat(path) {
                0 => None,
                n => Some(format!("{n} {what} ({})", path.join("."))),
            })
            .collect();
        (!parts.is_empty()).then(|| format!("Evidence not kept, to stay within memory bounds: {}.", parts.join("; ")))
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
        s.push_str(",domains,mac,flags,hostname,ksc_role\n");
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
            let _ = writeln!(
                s,
                ",{},{},{},{},{}",
                csv_cell(&domains.join("; ")),
                h.mac.as_deref().unwrap_or(""),
                h.flags.join(" "),
                csv_cell(h.hostname.as_deref().unwrap_or("")),
                h.ksc_role.as_deref().unwrap_or("")
            );
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
            let host = match &h.hostname {
                Some(n) => format!("{} {n}", h.ip),
                None => h.ip.to_string(),
            };
            let role = match (h.ksc_role.as_deref(), h.role.as_deref()) {
                (Some(k), _) => format!("[KSC {k}] "),
                (None, Some(r)) => format!("[{r}] "),
                _ => String::new(),
            };
            let count = |c: Category| h.categories.get(&c).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<26} {:<6} {:<20} {:<20} {:<20} {:<20} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  {role}{}{}",
                host,
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
        if let Some(line) = self.evidence_dropped_text() {
            let _ = writeln!(s, "{line}");
        }
        if let Some(line) = self.panics_text() {
            let _ = writeln!(s, "{line}");
        }
        if let Some(line) = self.undecoded_text() {
            let _ = writeln!(s, "{line}");
        }
        if let Some(line) = self.stale_sensors_text() {
            let _ = writeln!(s, "{line}");
        }
        s
    }
}

/// A CSV cell: quoted when needed, and defused when a spreadsheet would read it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The tunnel of a host's latest observation for people: `gre > erspan 7 > vxlan 9`.
pub fn tunnel_text(h: &HostRow) -> Option<String> {
    let layers = h.tunnel.as_ref()?.as_array()?;
    let one = |l: &serde_json::Value| {
        let kind = l["type"].as_str().unwrap_or("?");
        let id = ["key", "session", "vni", "isid", "spi", "vif", "ecid"].iter().find_map(|k| l[*k].as_u64());
        let labels: Vec<String> =
            l["labels"].as_array().map(|a| a.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
        match (id, labels.is_empty()) {
            (Some(id), _) => format!("{kind} {id}"),
            (None, false) => format!("{kind} {}", labels.join("/")),
            (None, true) => kind.to_string(),
        }
    };
    Some(layers.iter().map(one).collect::<Vec<_>>().join(" > "))
}

pub fn vlan_text(h: &HostRow) -> String {
    h.vlan.as_deref().unwrap_or(&[]).iter().map(|v| v.to_string()).collect::<Vec<_>>().join(".")
}

/// Union of two sorted string lists.
pub(crate) fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().chain(b).cloned().collect::<BTreeSet<_>>().into_iter().collect()
}
