//! The fleet's host table: every observation from the stream becomes the row a one-event
//! report would hold, and is folded into the table with `report merge`'s rules
//! ([`crate::output::merge::merge_host`]); sensors' statuses are kept per sensor, and their
//! reports without hosts give the counters, inputs and period as `report merge` adds them up.
//! So the collector's report is the merge of the sensors' own reports for the same traffic.
//! Bounded: hosts (the longest-quiet half goes), sensors, and the size of every field read.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::message::SensorStatus;
use crate::output::merge::{finish_hosts, merge, merge_host};
use crate::output::report::{DomainRow, Evidence, HostRow, Period, Report};
use crate::output::rfc3339;
use crate::rules::load::parse_instant;
use crate::rules::model::Category;

/// Sensors followed; past this, statuses of new sensors are counted, not kept.
pub const MAX_SENSORS: usize = 10_000;
/// Largest field read from a message (a domain name is at most 1,024 bytes after escaping).
const MAX_FIELD: usize = 4096;

/// What an observation message holds that the table uses (the rest of the event is ignored).
#[derive(Debug, Deserialize)]
pub struct EventIn {
    pub sensor: String,
    pub timestamp: String,
    pub event_type: String,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    #[serde(default)]
    pub proto: String,
    pub host: IpAddr,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub vlan: Option<Vec<u16>>,
    #[serde(default)]
    pub overlay: Option<u32>,
    #[serde(default)]
    pub tunnel: Option<serde_json::Value>,
    pub domain: String,
    pub category: Category,
    pub rule_id: String,
    #[serde(default)]
    pub relayed: bool,
    #[serde(default)]
    pub dns: Option<DnsIn>,
    #[serde(default)]
    pub tls: Option<TlsIn>,
    #[serde(default)]
    pub http: Option<HttpIn>,
    #[serde(default)]
    pub ksc: Option<KscIn>,
    /// Set by [`EventIn::parse`]: the timestamp in nanoseconds.
    #[serde(skip)]
    pub ts_ns: i64,
}

#[derive(Debug, Deserialize)]
pub struct DnsIn {
    #[serde(default)]
    pub public_resolver: bool,
}

#[derive(Debug, Deserialize)]
pub struct TlsIn {
    #[serde(default)]
    pub ja4: String,
}

#[derive(Debug, Deserialize)]
pub struct HttpIn {
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Deserialize)]
pub struct KscIn {
    pub server: IpAddr,
}

impl EventIn {
    /// Reads and checks one observation message: known event type, a real time, bounded fields.
    pub fn parse(body: &[u8]) -> Result<EventIn, String> {
        let mut e: EventIn = serde_json::from_slice(body).map_err(|e| format!("not an event: {e}"))?;
        e.ts_ns = parse_instant(&e.timestamp).ok_or("bad timestamp")?;
        e.timestamp = rfc3339(e.ts_ns);
        if !["dns", "tls", "quic", "http", "ksc"].contains(&e.event_type.as_str()) {
            return Err(format!("unknown event_type {:?}", e.event_type.chars().take(32).collect::<String>()));
        }
        let long = [Some(&e.sensor), Some(&e.domain), Some(&e.rule_id), e.hostname.as_ref()]
            .into_iter()
            .flatten()
            .any(|s| s.len() > MAX_FIELD)
            || e.http.as_ref().is_some_and(|h| h.path.len() > MAX_FIELD)
            || e.tls.as_ref().is_some_and(|t| t.ja4.len() > 64)
            || e.tunnel.as_ref().is_some_and(|t| t.to_string().len() > MAX_FIELD);
        if long || e.vlan.as_ref().is_some_and(|v| v.len() > 3) || e.sensor.is_empty() {
            return Err("a field is too long".into());
        }
        Ok(e)
    }

    fn evidence(&self) -> Evidence {
        Evidence {
            timestamp: self.timestamp.clone(),
            event_type: self.event_type.clone(),
            domain: self.domain.clone(),
            src_ip: self.src_ip,
            src_port: self.src_port,
            dest_ip: self.dest_ip,
            dest_port: self.dest_port,
            ja4: self.tls.as_ref().map(|t| t.ja4.clone()),
        }
    }

    fn row(&self, ip: IpAddr) -> HostRow {
        HostRow {
            ip,
            vlan: self.vlan.clone().filter(|v| !v.is_empty()),
            overlay: self.overlay,
            tunnel: self.tunnel.clone(),
            mac: None,
            hostname: None,
            hostnames: Vec::new(),
            verdict: String::new(),
            first_seen: self.timestamp.clone(),
            last_seen: self.timestamp.clone(),
            last_seen_after_cutoff: None,
            categories: BTreeMap::new(),
            domains: Vec::new(),
            domains_dropped: 0,
            sensors: vec![self.sensor.clone()],
            flags: Vec::new(),
            role: None,
            relayed_queries: 0,
            ksc_role: None,
            evidence: Vec::new(),
        }
    }

    fn count(&self, row: &mut HostRow, domain: &str) {
        row.categories.insert(self.category, 1);
        row.domains.push(DomainRow {
            domain: domain.to_string(),
            category: self.category,
            rule_id: self.rule_id.clone(),
            count: 1,
            first_seen: self.timestamp.clone(),
            last_seen: self.timestamp.clone(),
            via: vec![self.event_type.clone()],
        });
        row.evidence.push(self.evidence());
    }

    /// The rows a report of this one event would hold, as `host::HostTable::add` makes them:
    /// the client's, and for a Security Center contact the Administration Server's too.
    pub fn rows(&self) -> Vec<HostRow> {
        let mut client = self.row(self.host);
        client.hostname = self.hostname.clone();
        if self.ksc.is_some() {
            client.ksc_role = Some("agent".into());
        }
        if self.relayed {
            client.relayed_queries = 1;
            return vec![client];
        }
        if self.dns.as_ref().is_some_and(|d| d.public_resolver) {
            client.flags.push("public-dns-fallback".into());
        }
        self.count(&mut client, &self.domain);
        let mut rows = vec![client];
        if let Some(k) = &self.ksc {
            let mut server = self.row(k.server);
            server.ksc_role = Some("admin-server".into());
            server.tunnel = None;
            self.count(&mut server, &self.host.to_string());
            rows.insert(0, server);
        }
        rows
    }
}

/// A sensor as the collector knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SensorEntry {
    pub name: String,
    #[serde(default)]
    pub status: Option<SensorStatus>,
    /// Observations received from it.
    pub observations: u64,
    /// When the stream stored its last message (ns since the epoch, the server's clock).
    pub last_heard_ns: i64,
}

/// The collector's counters (the report's `stats.collector`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableCounts {
    pub observations: u64,
    pub statuses: u64,
    /// Messages that were not a valid observation or status (counted, never applied).
    pub malformed: u64,
    pub hosts_evicted: u64,
    /// Statuses from sensors past [`MAX_SENSORS`].
    pub sensors_refused: u64,
    /// Statuses whose cutoff is not the collector's: their counters are left out of the total.
    pub cutoff_mismatches: u64,
}

type Key = (Vec<u16>, Option<u32>, IpAddr);

/// Everything the collector has folded in: checkpointed whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FleetTable {
    hosts: Vec<HostRow>,
    #[serde(skip)]
    index: HashMap<Key, usize>,
    pub timeline: BTreeMap<String, BTreeMap<Category, u64>>,
    pub sensors: BTreeMap<String, SensorEntry>,
    pub counts: TableCounts,
    pub max_hosts: usize,
}

fn key(h: &HostRow) -> Key {
    (h.vlan.clone().unwrap_or_default(), h.overlay, h.ip)
}

impl FleetTable {
    pub fn new(max_hosts: usize) -> FleetTable {
        FleetTable { max_hosts: max_hosts.max(1), ..FleetTable::default() }
    }

    /// After a checkpoint was read: the index, and the bounds.
    pub fn reindex(&mut self) {
        self.hosts.truncate(self.max_hosts.max(1));
        self.index = self.hosts.iter().enumerate().map(|(i, h)| (key(h), i)).collect();
        if self.index.len() != self.hosts.len() {
            // Two rows with one key (a damaged checkpoint): fold them.
            let rows = std::mem::take(&mut self.hosts);
            self.index.clear();
            for r in rows {
                self.fold(r);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn sensor(&mut self, name: &str, at_ns: i64) -> Option<&mut SensorEntry> {
        if !self.sensors.contains_key(name) {
            if self.sensors.len() >= MAX_SENSORS {
                return None;
            }
            self.sensors.insert(
                name.to_string(),
                SensorEntry { name: name.into(), status: None, observations: 0, last_heard_ns: at_ns },
            );
        }
        let s = self.sensors.get_mut(name)?;
        s.last_heard_ns = s.last_heard_ns.max(at_ns);
        Some(s)
    }

    fn fold(&mut self, row: HostRow) {
        let k = key(&row);
        match self.index.get(&k) {
            Some(&i) => merge_host(&mut self.hosts[i], row),
            None => {
                if self.hosts.len() >= self.max_hosts {
                    self.evict_half();
                }
                self.index.insert(k, self.hosts.len());
                self.hosts.push(row);
            }
        }
    }

    fn evict_half(&mut self) {
        let mut by_age: Vec<&str> = self.hosts.iter().map(|h| h.last_seen.as_str()).collect();
        by_age.sort_unstable();
        let median = by_age[by_age.len() / 2].to_string();
        let before = self.hosts.len();
        self.hosts.retain(|h| h.last_seen > median);
        self.counts.hosts_evicted += (before - self.hosts.len()) as u64;
        self.index = self.hosts.iter().enumerate().map(|(i, h)| (key(h), i)).collect();
    }

    /// Folds one observation in.
    pub fn observe(&mut self, e: &EventIn, stored_ns: i64) {
        self.counts.observations += 1;
        if let Some(s) = self.sensor(&e.sensor, stored_ns) {
            s.observations += 1;
        }
        if !e.relayed {
            let hour = e.timestamp[..13].to_string();
            *self.timeline.entry(hour).or_default().entry(e.category).or_default() += 1;
        }
        for r in e.rows() {
            self.fold(r);
        }
    }

    /// Keeps a sensor's latest status.
    pub fn status(&mut self, s: SensorStatus, stored_ns: i64) {
        self.counts.statuses += 1;
        let name = s.sensor.clone();
        match self.sensor(&name, stored_ns) {
            Some(e) => e.status = Some(s),
            None => self.counts.sensors_refused += 1,
        }
    }

    /// The fleet's report: the merge of the sensors' last statuses (counters, inputs, period),
    /// with the fleet's hosts. `cutoff` is the collector's (RFC 3339); statuses with another
    /// are left out of the totals and named in `errors`.
    pub fn report(&self, cutoff: &str, base: Report) -> Report {
        let mut parts = vec![base];
        let mut errors = Vec::new();
        let mut mismatches = 0;
        for s in self.sensors.values() {
            if let Some(st) = &s.status {
                if st.report.cutoff == parts[0].cutoff {
                    let mut r = st.report.clone();
                    r.hosts.clear();
                    r.timeline.clear();
                    parts.push(r);
                } else {
                    mismatches += 1;
                    errors.push(format!(
                        "sensor {:?} uses the cutoff {} (the collector's is {cutoff}): its counters are left out",
                        s.name, st.report.cutoff
                    ));
                }
            }
        }
        let mut out = merge(parts).unwrap_or_else(|_| Report::empty(cutoff));
        out.errors.extend(errors);
        out.timeline = self.timeline.clone();
        if let Some(o) = out.stats.as_object_mut() {
            let mut counts = serde_json::to_value(&self.counts).unwrap_or_default();
            counts["cutoff_mismatches"] = mismatches.into();
            o.insert("collector".into(), counts);
        }
        let _ = finish_hosts(&mut out, self.hosts.clone());
        out
    }

    /// The time of the latest observation (alert ticks go by it).
    pub fn period(&self) -> Period {
        Period {
            first: self.hosts.iter().map(|h| h.first_seen.clone()).min(),
            last: self.hosts.iter().map(|h| h.last_seen.clone()).max(),
        }
    }
}
