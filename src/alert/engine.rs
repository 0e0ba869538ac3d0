//! When to alert. Observations arrive in time order; the first banned-service contact at or
//! after the cutoff raises an alert for its host and category at once, and later ones are
//! folded into the next alert, raised at most once per interval. Time is packet time, so the
//! same capture always gives the same alerts (and the same ids).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Alert, Evidence, Severity};
use crate::decode::{IPPROTO_TCP, VlanTags};
use crate::host::{cutoff_for, mac_text};
use crate::observation::{Detail, Observation};
use crate::rules::matcher::Rules;
use crate::rules::model::Category;

/// Names listed in one alert; the rest are only counted.
pub const DOMAINS_PER_ALERT: usize = 20;
/// Hosts x categories followed at once; past this the longest-quiet half is forgotten (counted).
pub const MAX_WINDOWS: usize = 200_000;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub interval_ns: i64,
    /// Also alert on observations before the cutoff and on excluded/other services.
    pub alert_all: bool,
    pub sensor: String,
    pub cutoff_override: Option<i64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct EngineStats {
    /// Alerts raised.
    pub raised: u64,
    /// Observations folded into a later alert (within an interval of the previous one).
    pub folded: u64,
    /// Observations that raise no alert (before the cutoff, excluded or other, without --alert-all).
    pub not_alertable: u64,
    /// Observations still waiting for their interval when the run ended (in the report, not alerted).
    pub pending_at_end: u64,
    /// Host/category windows forgotten because [`MAX_WINDOWS`] was reached.
    pub windows_evicted: u64,
}

#[derive(Debug)]
struct Window {
    sequence: u64,
    total: u64,
    last_alert_ns: i64,
    /// Since the last alert.
    pending: u64,
    first_ns: i64,
    last_ns: i64,
    domains: BTreeMap<String, u64>,
    /// Rule ids, vendor and cutoff are kept as text: the rules may be reloaded before the alert.
    rule_ids: BTreeSet<String>,
    vendor: String,
    cutoff_ns: i64,
    last: Option<Observation>,
}

/// Host (VLAN tags, address), category, and the MAC of the DHCP lease the address was under: an
/// address that passes to another machine is another host to alert on.
type WindowKey = (VlanTags, IpAddr, Category, Option<[u8; 6]>);

pub struct AlertEngine {
    cfg: EngineConfig,
    windows: HashMap<WindowKey, Window>,
    pub stats: EngineStats,
}

impl AlertEngine {
    pub fn new(cfg: EngineConfig) -> AlertEngine {
        AlertEngine { cfg, windows: HashMap::new(), stats: EngineStats::default() }
    }

    /// A new interval and alert-all (SIGHUP); open windows keep what they hold.
    pub fn set_policy(&mut self, interval_ns: i64, alert_all: bool) {
        (self.cfg.interval_ns, self.cfg.alert_all) = (interval_ns, alert_all);
    }

    /// Takes the next observation (in time order); returns the alert it raises, if any.
    pub fn observe(&mut self, o: &Observation, rules: &Rules) -> Option<Alert> {
        if o.relayed {
            // A resolver passing on a client's query: the client is the one to alert on.
            self.stats.not_alertable += 1;
            return None;
        }
        let rule = rules.rule(o.rule);
        let category = rule.category;
        let cutoff_ns = cutoff_for(rules, o, self.cfg.cutoff_override);
        let after = o.ts_ns >= cutoff_ns;
        if !(self.cfg.alert_all || (after && category.is_banned_service())) {
            self.stats.not_alertable += 1;
            return None;
        }
        if self.windows.len() >= MAX_WINDOWS {
            self.evict_half();
        }
        let key = (o.vlan, o.host, category, o.lease_mac);
        let w = self.windows.entry(key).or_insert_with(|| Window {
            sequence: 0,
            total: 0,
            last_alert_ns: i64::MIN,
            pending: 0,
            first_ns: o.ts_ns,
            last_ns: o.ts_ns,
            domains: BTreeMap::new(),
            rule_ids: BTreeSet::new(),
            vendor: String::new(),
            cutoff_ns,
            last: None,
        });
        if w.pending == 0 {
            w.first_ns = o.ts_ns;
        }
        w.pending += 1;
        w.total += 1;
        w.last_ns = o.ts_ns;
        let n = w.domains.len();
        if let Some(c) = w.domains.get_mut(&o.domain) {
            *c += 1;
        } else if n < DOMAINS_PER_ALERT {
            w.domains.insert(o.domain.clone(), 1);
        }
        if !w.rule_ids.contains(&rule.id) {
            w.rule_ids.insert(rule.id.clone());
        }
        if w.vendor.is_empty() {
            w.vendor = rules.set.vendors[rule.vendor].id.clone();
        }
        w.cutoff_ns = cutoff_ns;
        w.last = Some(o.clone());
        if w.sequence == 0 || o.ts_ns.saturating_sub(w.last_alert_ns) >= self.cfg.interval_ns {
            return Some(self.raise(key, o.ts_ns));
        }
        self.stats.folded += 1;
        None
    }

    /// Raises the alerts whose interval has passed by `now_ns` (live capture calls this as time goes on).
    pub fn tick(&mut self, now_ns: i64) -> Vec<Alert> {
        let due: Vec<WindowKey> = self
            .windows
            .iter()
            .filter(|(_, w)| w.pending > 0 && now_ns.saturating_sub(w.last_alert_ns) >= self.cfg.interval_ns)
            .map(|(k, _)| *k)
            .collect();
        let mut out: Vec<Alert> = due.into_iter().map(|k| self.raise(k, now_ns)).collect();
        out.sort_by(|a, b| (a.time_ns, &a.id).cmp(&(b.time_ns, &b.id)));
        // Those observations were counted as folded when they arrived; they are alerted now.
        out
    }

    /// Ends the run: what waits for its interval stays in the report only (counted).
    pub fn finish(&mut self) {
        self.stats.pending_at_end += self.windows.values().map(|w| w.pending).sum::<u64>();
    }

    fn evict_half(&mut self) {
        self.stats.windows_evicted += crate::bounded::evict_older_half(&mut self.windows, |w| w.last_ns);
    }

    fn raise(&mut self, key: WindowKey, now_ns: i64) -> Alert {
        let (vlan, host, category, _) = key;
        let w = self.windows.get_mut(&key).expect("window exists");
        w.sequence += 1;
        w.last_alert_ns = if w.sequence == 1 { w.last_ns } else { now_ns.max(w.last_ns) };
        let o = w.last.take().expect("a window with pending observations has a last one");
        let mut domains: Vec<(&String, &u64)> = w.domains.iter().collect();
        domains.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let cutoff_ns = w.cutoff_ns;
        let vlan_list = vlan.as_slice().to_vec();
        let id = alert_id(&self.cfg.sensor, &vlan_list, host, category, w.sequence, w.first_ns);
        let alert = Alert {
            id,
            sensor: self.cfg.sensor.clone(),
            time_ns: w.last_alert_ns,
            host,
            vlan: vlan_list,
            mac: o.lease_mac.or(o.host_mac).as_ref().map(mac_text),
            hostname: o.hostname.clone(),
            vendor: w.vendor.clone(),
            category,
            severity: Severity::of(category),
            sequence: w.sequence,
            count: w.pending,
            total: w.total,
            first_ns: w.first_ns,
            last_ns: w.last_ns,
            domains: domains.into_iter().map(|(d, _)| d.clone()).collect(),
            rule_ids: w.rule_ids.iter().cloned().collect(),
            after_cutoff: o.ts_ns >= cutoff_ns,
            cutoff_ns,
            evidence: Evidence {
                event_type: o.via().as_str(),
                src_ip: o.src,
                src_port: o.sport,
                dest_ip: o.dst,
                dest_port: o.dport,
                proto: if o.proto == IPPROTO_TCP { "TCP" } else { "UDP" },
                domain: o.domain.clone(),
                http_path: match &o.detail {
                    Detail::Http(h) => Some(h.path.clone()),
                    _ => None,
                },
                input: None,
            },
        };
        w.pending = 0;
        w.domains.clear();
        w.rule_ids.clear();
        self.stats.raised += 1;
        alert
    }
}

/// 128 bits of SHA-256 over what makes the alert itself: sensor, host, category, its number and start.
fn alert_id(sensor: &str, vlan: &[u16], host: IpAddr, category: Category, seq: u64, first_ns: i64) -> String {
    let mut h = Sha256::new();
    h.update(sensor.as_bytes());
    h.update([0]);
    for v in vlan {
        h.update(v.to_be_bytes());
    }
    h.update(host.to_string().as_bytes());
    h.update([0]);
    h.update(category.as_str().as_bytes());
    h.update(seq.to_be_bytes());
    h.update(first_ns.to_be_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// One host/category window as a checkpoint keeps it (see [`crate::state`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowState {
    pub vlan: VlanTags,
    pub host: IpAddr,
    pub category: Category,
    pub lease_mac: Option<[u8; 6]>,
    pub sequence: u64,
    pub total: u64,
    pub last_alert_ns: i64,
    pub pending: u64,
    pub first_ns: i64,
    pub last_ns: i64,
    pub domains: Vec<(String, u64)>,
    pub rule_ids: Vec<String>,
    pub vendor: String,
    pub cutoff_ns: i64,
    /// Its rule and tunnel numbered as in the process that saved it.
    pub last: Option<Observation>,
}

impl AlertEngine {
    /// Every window, for a checkpoint (in key order: the same windows give the same bytes).
    pub fn windows_state(&self) -> Vec<WindowState> {
        let mut v: Vec<WindowState> = self
            .windows
            .iter()
            .map(|((vlan, host, category, lease_mac), w)| WindowState {
                vlan: *vlan,
                host: *host,
                category: *category,
                lease_mac: *lease_mac,
                sequence: w.sequence,
                total: w.total,
                last_alert_ns: w.last_alert_ns,
                pending: w.pending,
                first_ns: w.first_ns,
                last_ns: w.last_ns,
                domains: w.domains.iter().map(|(d, n)| (d.clone(), *n)).collect(),
                rule_ids: w.rule_ids.iter().cloned().collect(),
                vendor: w.vendor.clone(),
                cutoff_ns: w.cutoff_ns,
                last: w.last.clone(),
            })
            .collect();
        v.sort_by_key(|w| (w.vlan, w.host, w.category, w.lease_mac));
        v
    }

    /// Takes the windows of a checkpoint: alerts go on with their sequence numbers and intervals.
    /// A window with observations pending but no last one (damaged) is dropped: raising it would
    /// have nothing to show.
    pub fn restore_windows(&mut self, windows: Vec<WindowState>) {
        for w in windows {
            if w.pending > 0 && w.last.is_none() {
                continue;
            }
            if self.windows.len() >= MAX_WINDOWS {
                self.evict_half();
            }
            let key = (w.vlan, w.host, w.category, w.lease_mac);
            let mut domains: BTreeMap<String, u64> = BTreeMap::new();
            for (d, n) in w.domains.into_iter() {
                if domains.len() < DOMAINS_PER_ALERT {
                    domains.insert(d, n);
                }
            }
            self.windows.insert(
                key,
                Window {
                    sequence: w.sequence,
                    total: w.total,
                    last_alert_ns: w.last_alert_ns,
                    pending: w.pending,
                    first_ns: w.first_ns,
                    last_ns: w.last_ns,
                    domains,
                    rule_ids: w.rule_ids.into_iter().collect(),
                    vendor: w.vendor,
                    cutoff_ns: w.cutoff_ns,
                    last: w.last,
                },
            );
        }
    }
}
