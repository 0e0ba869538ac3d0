//! `kavwatch report merge`: several sensors' (or runs') JSON reports into one. Hosts are
//! joined by VLAN tags + IP, counts added, first/last times widened, and the verdict worked
//! out again from the merged domains, so two halves of a capture merge into the report of
//! the whole.

use std::collections::BTreeMap;
use std::net::IpAddr;

use thiserror::Error;

use super::report::{HostRow, Period, Report, summary, union};
use super::rfc3339;
use crate::host::MAX_DOMAINS_PER_HOST;
use crate::rules::load::parse_instant;
use crate::rules::model::Category;

#[derive(Debug, Error)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("reports with different cutoffs cannot be merged: {0} and {1}")]
    Cutoffs(String, String),
    #[error("bad cutoff {0:?} in a report")]
    BadCutoff(String),
}

fn min_s(a: &str, b: &str) -> String {
    a.min(b).to_string()
}

fn max_s(a: &str, b: &str) -> String {
    a.max(b).to_string()
}

/// Adds up numbers, recursively through objects (the `stats` counters).
pub fn add_values(a: &mut serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x1), Some(y1)) = (x.as_u64(), y.as_u64()) {
                *x = (x1 + y1).into();
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in y {
                match x.get_mut(k) {
                    Some(xv) => add_values(xv, v),
                    None => {
                        x.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Null, b) => *a = b.clone(),
        _ => {}
    }
}

/// Folds host row `b` into `a` (same key): counts added, times widened, names and domains
/// joined. The fleet collector folds every observation in with it.
pub fn merge_host(a: &mut HostRow, b: HostRow) {
    a.first_seen = min_s(&a.first_seen, &b.first_seen);
    a.mac = a.mac.take().or(b.mac.clone());
    a.role = a.role.take().or(b.role.clone());
    // Host names: the newer report's is the current one; all of them are listed.
    let names_of =
        |h: &HostRow| if h.hostnames.is_empty() { h.hostname.iter().cloned().collect() } else { h.hostnames.clone() };
    let mut names: Vec<String> = names_of(a);
    for n in names_of(&b) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if b.hostname.is_some() && (b.last_seen >= a.last_seen || a.hostname.is_none()) {
        a.hostname = b.hostname.clone();
    }
    a.hostnames = if names.len() > 1 { names } else { Vec::new() };
    // The tunnel of the latest observation, as in one report.
    if b.tunnel.is_some() && (b.last_seen >= a.last_seen || a.tunnel.is_none()) {
        a.tunnel = b.tunnel.clone();
    }
    let server = |r: &Option<String>| r.as_deref() == Some("admin-server");
    if a.ksc_role.is_none() || server(&b.ksc_role) {
        a.ksc_role = b.ksc_role.clone().or(a.ksc_role.take());
    }
    a.relayed_queries += b.relayed_queries;
    a.flags = a.flags.iter().chain(&b.flags).cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    a.last_seen = max_s(&a.last_seen, &b.last_seen);
    for (c, n) in b.categories {
        *a.categories.entry(c).or_default() += n;
    }
    let mut domains: BTreeMap<String, _> =
        std::mem::take(&mut a.domains).into_iter().map(|d| (d.domain.clone(), d)).collect();
    for d in b.domains {
        let room = domains.len() < MAX_DOMAINS_PER_HOST;
        match domains.get_mut(&d.domain) {
            Some(x) => {
                x.count += d.count;
                x.first_seen = min_s(&x.first_seen, &d.first_seen);
                x.last_seen = max_s(&x.last_seen, &d.last_seen);
                x.via = union(&x.via, &d.via);
            }
            None if room => {
                domains.insert(d.domain.clone(), d);
            }
            None => a.domains_dropped += d.count,
        }
    }
    a.domains_dropped += b.domains_dropped;
    a.domains = domains.into_values().collect();
    a.domains.sort_by(|x, y| y.count.cmp(&x.count).then(x.domain.cmp(&y.domain)));
    a.sensors = union(&a.sensors, &b.sensors);
    a.evidence.extend(b.evidence);
    a.evidence.sort_by(|x, y| x.timestamp.cmp(&y.timestamp));
    let n = a.evidence.len();
    a.evidence.drain(..n.saturating_sub(crate::host::RECENT_PER_HOST));
}

/// The verdict from the host's categories and domains, as `host::Host::verdict` decides it.
fn recompute(h: &mut HostRow, cutoff: &str) {
    h.last_seen_after_cutoff = h
        .domains
        .iter()
        .filter(|d| d.category.is_banned_service() && d.last_seen.as_str() >= cutoff)
        .map(|d| d.last_seen.clone())
        .max();
    let banned = h.categories.keys().any(|c| c.is_banned_service());
    h.verdict = if h.last_seen_after_cutoff.is_some() {
        "active-after-cutoff"
    } else if banned {
        "active-before-cutoff"
    } else if h.categories.keys().all(|c| *c == Category::Excluded) {
        "excluded-only"
    } else {
        "other-only"
    }
    .into();
}

pub fn merge(reports: Vec<Report>) -> Result<Report, MergeError> {
    let mut it = reports.into_iter();
    let mut out = it.next().ok_or(MergeError::Empty)?;
    // A host is its VLAN tags, overlay (with --split-by-overlay) and address, as in one report.
    let key = |h: &HostRow| (h.vlan.clone().unwrap_or_default(), h.overlay, h.ip);
    let mut hosts: BTreeMap<(Vec<u16>, Option<u32>, IpAddr), HostRow> =
        std::mem::take(&mut out.hosts).into_iter().map(|h| (key(&h), h)).collect();
    for r in it {
        if r.cutoff != out.cutoff {
            return Err(MergeError::Cutoffs(out.cutoff, r.cutoff));
        }
        out.sensors = union(&out.sensors, &r.sensors);
        for ri in r.rules {
            if !out.rules.contains(&ri) {
                out.rules.push(ri);
            }
        }
        out.inputs.extend(r.inputs);
        out.errors.extend(r.errors);
        out.period = Period {
            first: [out.period.first.take(), r.period.first].into_iter().flatten().min(),
            last: [out.period.last.take(), r.period.last].into_iter().flatten().max(),
        };
        add_values(&mut out.stats, &r.stats);
        for (hour, cats) in r.timeline {
            let e = out.timeline.entry(hour).or_default();
            for (c, n) in cats {
                *e.entry(c).or_default() += n;
            }
        }
        for h in r.hosts {
            match hosts.get_mut(&key(&h)) {
                Some(a) => merge_host(a, h),
                None => {
                    hosts.insert(key(&h), h);
                }
            }
        }
    }
    finish_hosts(&mut out, hosts.into_values().collect())?;
    Ok(out)
}

/// Puts `hosts` in `out`: each verdict worked out again against `out.cutoff`, report order,
/// the summary, and the stats' derived numbers.
pub fn finish_hosts(out: &mut Report, mut hosts: Vec<HostRow>) -> Result<(), MergeError> {
    let cutoff = rfc3339(parse_instant(&out.cutoff).ok_or_else(|| MergeError::BadCutoff(out.cutoff.clone()))?);
    for h in &mut hosts {
        recompute(h, &cutoff);
    }
    let rank = |v: &str| super::report::VERDICTS.iter().position(|x| *x == v).unwrap_or(9);
    hosts.sort_by(|a, b| {
        rank(&a.verdict)
            .cmp(&rank(&b.verdict))
            .then(b.last_seen_after_cutoff.cmp(&a.last_seen_after_cutoff))
            .then(a.vlan.cmp(&b.vlan))
            .then(a.overlay.cmp(&b.overlay))
            .then(a.ip.cmp(&b.ip))
    });
    out.summary = summary(&hosts);
    out.finish_stats();
    out.hosts = hosts;
    out.kavwatch_version = env!("CARGO_PKG_VERSION").into();
    Ok(())
}
