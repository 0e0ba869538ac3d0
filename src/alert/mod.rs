//! Alerts for SIEMs: [`engine`] turns time-ordered observations into alerts (one per host and
//! category, then at most one per interval), [`format`] renders them (JSON, CEF, ECS, RFC 5424),
//! [`deliver`] sends them to collectors (syslog over UDP/TCP/TLS, files) with an on-disk spool.

pub mod format;

use std::net::IpAddr;

use serde::Serialize;

use crate::rules::model::Category;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    /// High for update and telemetry, medium for activation and management, low for the rest.
    pub fn of(c: Category) -> Severity {
        match c {
            Category::Update | Category::Telemetry => Severity::High,
            Category::Activation | Category::Management => Severity::Medium,
            _ => Severity::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// The packet behind an alert's last observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// "dns", "tls" or "http".
    pub event_type: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    /// "TCP" or "UDP".
    pub proto: &'static str,
    /// The name in that packet (DNS question, TLS SNI or HTTP Host).
    pub domain: String,
    /// HTTP request path, when the event is HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// Capture interface (live) or input file (analyze).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// One alert. Every string that came from the wire (domains, evidence) is already printable
/// ASCII without backslashes (see `proto::name`), but may hold `|`, `=`, `]`, `"` and spaces
/// escaped as `\x20`: formats must still quote their own special characters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable and unique: the same capture gives the same ids, so a collector can drop duplicates.
    pub id: String,
    pub sensor: String,
    /// Packet time the alert was raised at (its last observation), ns since the epoch.
    pub time_ns: i64,
    pub host: IpAddr,
    /// VLAN tags, outer first; empty when untagged.
    pub vlan: Vec<u16>,
    /// Lowercase, colon-separated.
    pub mac: Option<String>,
    /// The host's DHCP host name at the time (as escaped by the DHCP parser).
    pub hostname: Option<String>,
    pub vendor: String,
    pub category: Category,
    pub severity: Severity,
    /// 1 for the first alert of this host and category, then 2, 3...
    pub sequence: u64,
    /// Observations since the previous alert of this host and category (this one included).
    pub count: u64,
    /// Observations of this host and category since the first alert.
    pub total: u64,
    /// First and last observation covered by this alert.
    pub first_ns: i64,
    pub last_ns: i64,
    /// Names seen since the previous alert, most frequent first (at most 20).
    pub domains: Vec<String>,
    /// Ids of the rules that matched them.
    pub rule_ids: Vec<String>,
    pub after_cutoff: bool,
    pub cutoff_ns: i64,
    pub evidence: Evidence,
}

pub mod deliver;
pub mod engine;
pub mod spool;

use std::collections::BTreeMap;

use deliver::DestStats;
use engine::EngineStats;

/// The report's `stats.alerts`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AlertStats {
    #[serde(flatten)]
    pub engine: EngineStats,
    /// Per destination URL.
    pub destinations: BTreeMap<String, DestStats>,
}

/// One line for people: `alerts 6 raised; syslog+tcp://h:514 sent 6, spooled 0, dropped 0, reconnects 0`.
pub fn summary_line(engine: &EngineStats, dests: &[DestStats]) -> String {
    let mut s = format!("alerts {} raised", engine.raised);
    for d in dests {
        s.push_str(&format!(
            "; {} sent {}, spooled {}, dropped {}, reconnects {}, waiting {}",
            d.destination, d.sent, d.spooled, d.dropped, d.reconnects, d.waiting
        ));
    }
    s
}
