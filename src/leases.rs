//! DHCP leases over time: which client (MAC, host name) held an address at a given moment. Fed
//! with the workers' DHCP observations in time order (in the sink, since a client's REQUEST and
//! the server's ACK are different flows, hashed to different workers); asked for each
//! observation's host, at the observation's time.
//!
//! A host name comes from the ACK/REPLY itself or, as most servers do not echo it, from the
//! client's latest message carrying option 12, option 81 or the DHCPv6 client FQDN (by MAC).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::decode::VlanTags;
use crate::observation::{Detail, Observation};

/// Addresses with lease history, and MACs with a host name, remembered at once; past this the
/// half not seen longest goes (counted).
pub const MAX_ENTRIES: usize = 262_144;
/// Leases kept per address (older ones go first).
const LEASES_PER_ADDRESS: usize = 8;
/// A lease without a lease time (option 51 missing): taken to last this long.
const DEFAULT_LEASE_NS: i64 = 86_400 * 1_000_000_000;
/// A client that keeps using its address a little after the lease ran out (a renewal not seen).
const GRACE_NS: i64 = 600 * 1_000_000_000;

#[derive(Debug, Default, Clone, Serialize)]
pub struct LeaseStats {
    /// DHCPv4 ACKs and DHCPv6 REPLYs with an address.
    pub leases: u64,
    pub releases: u64,
    /// Leases with a host name (from the ACK, or the client's own messages).
    pub with_hostname: u64,
    /// Observations given a host name / a DHCP MAC.
    pub hosts_named: u64,
    pub evicted: u64,
}

#[derive(Debug, Clone)]
struct Lease {
    mac: Option<[u8; 6]>,
    hostname: Option<String>,
    start_ns: i64,
    end_ns: i64,
    /// Ended by a RELEASE or by another client's lease: no grace after `end_ns`.
    closed: bool,
}

impl Lease {
    fn covers(&self, ts_ns: i64) -> bool {
        let grace = if self.closed { 0 } else { GRACE_NS };
        self.start_ns <= ts_ns && ts_ns <= self.end_ns.saturating_add(grace)
    }
}

#[derive(Default)]
pub struct LeaseBook {
    by_address: HashMap<(VlanTags, IpAddr), Vec<Lease>>,
    /// Host names clients gave, by MAC: (name, when).
    names: HashMap<[u8; 6], (String, i64)>,
    pub stats: LeaseStats,
}

impl LeaseBook {
    /// A DHCP observation (`Detail::Dhcp`), in time order.
    pub fn learn(&mut self, o: &Observation) {
        let Detail::Dhcp(d) = &o.detail else {
            return;
        };
        if let (Some(mac), Some(name)) = (d.mac, &d.hostname) {
            if self.names.len() >= MAX_ENTRIES && !self.names.contains_key(&mac) {
                self.stats.evicted += crate::bounded::evict_older_half(&mut self.names, |(_, t)| *t);
            }
            self.names.insert(mac, (name.clone(), o.ts_ns));
        }
        let Some(addr) = d.address else {
            return;
        };
        if d.release {
            self.stats.releases += 1;
            if let Some(l) = self.by_address.get_mut(&(o.vlan, addr)).and_then(|v| v.last_mut())
                && (d.mac.is_none() || l.mac == d.mac)
            {
                l.end_ns = l.end_ns.min(o.ts_ns);
                l.closed = true;
            }
            return;
        }
        if !d.ack {
            return;
        }
        self.stats.leases += 1;
        let hostname = d.hostname.clone().or_else(|| d.mac.and_then(|m| self.names.get(&m)).map(|(n, _)| n.clone()));
        if hostname.is_some() {
            self.stats.with_hostname += 1;
        }
        let secs = d.lease_secs.filter(|s| *s != u32::MAX);
        let end_ns = secs
            .map_or(o.ts_ns.saturating_add(DEFAULT_LEASE_NS), |s| o.ts_ns.saturating_add(i64::from(s) * 1_000_000_000));
        let key = (o.vlan, addr);
        if !self.by_address.contains_key(&key) && self.by_address.len() >= MAX_ENTRIES {
            self.stats.evicted +=
                crate::bounded::evict_older_half(&mut self.by_address, |v| v.last().map_or(i64::MIN, |l| l.start_ns));
        }
        let leases = self.by_address.entry(key).or_default();
        // A renewal by the same client extends its lease; another client's ACK ends the previous one.
        if let Some(last) = leases.last_mut() {
            if last.mac == d.mac && !last.closed && last.end_ns.saturating_add(GRACE_NS) >= o.ts_ns {
                last.end_ns = last.end_ns.max(end_ns);
                if hostname.is_some() {
                    last.hostname = hostname;
                }
                return;
            }
            last.end_ns = last.end_ns.min(o.ts_ns);
            last.closed = true;
        }
        if leases.len() == LEASES_PER_ADDRESS {
            leases.remove(0);
        }
        leases.push(Lease { mac: d.mac, hostname, start_ns: o.ts_ns, end_ns, closed: false });
    }

    /// Who held `(vlan, ip)` at `ts_ns`: its MAC and host name, from the lease then in force.
    pub fn holder(&self, vlan: VlanTags, ip: IpAddr, ts_ns: i64) -> Option<(Option<[u8; 6]>, Option<&str>)> {
        let leases = self.by_address.get(&(vlan, ip))?;
        let l = leases.iter().rev().find(|l| l.covers(ts_ns))?;
        Some((l.mac, l.hostname.as_deref()))
    }

    /// Fills in an observation's `hostname` and `lease_mac` from the lease its host held then.
    pub fn stamp(&mut self, o: &mut Observation) {
        if self.by_address.is_empty() {
            return;
        }
        if let Some((mac, name)) = self.holder(o.vlan, o.host, o.ts_ns) {
            o.lease_mac = mac;
            o.hostname = name.map(str::to_string);
            self.stats.hosts_named += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::DhcpDetail;

    fn dhcp(ts: i64, mac: u8, addr: Option<&str>, name: Option<&str>, ack: bool, release: bool) -> Observation {
        let a: Option<IpAddr> = addr.map(|a| a.parse().unwrap());
        let detail = Detail::Dhcp(DhcpDetail {
            ack,
            release,
            mac: Some([2, 0, 0, 0, 0, mac]),
            address: a,
            hostname: name.map(str::to_string),
            lease_secs: Some(3600),
        });
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        Observation::test_pending(
            ts * 1_000_000_000,
            (any, 68),
            ("255.255.255.255".parse().unwrap(), 67),
            a.unwrap_or(any),
            detail,
        )
    }

    #[test]
    fn an_address_goes_with_whoever_held_it_then() {
        let mut b = LeaseBook::default();
        let ip: IpAddr = "10.0.0.50".parse().unwrap();
        let v = VlanTags::default();
        b.learn(&dhcp(0, 1, None, Some("alpha"), false, false)); // REQUEST with option 12
        b.learn(&dhcp(1, 1, Some("10.0.0.50"), None, true, false)); // ACK without it
        assert_eq!(b.holder(v, ip, 5_000_000_000), Some((Some([2, 0, 0, 0, 0, 1]), Some("alpha"))));
        b.learn(&dhcp(10, 1, Some("10.0.0.50"), None, false, true)); // RELEASE
        b.learn(&dhcp(20, 2, None, Some("bravo"), false, false));
        b.learn(&dhcp(21, 2, Some("10.0.0.50"), None, true, false));
        assert_eq!(b.holder(v, ip, 5_000_000_000).unwrap().1, Some("alpha"));
        assert_eq!(b.holder(v, ip, 15_000_000_000), None, "released, not yet leased again");
        assert_eq!(b.holder(v, ip, 30_000_000_000).unwrap().1, Some("bravo"));
        assert_eq!(b.holder(v, ip, 0), None, "before any lease");
        // Long after the lease (and grace) ran out: nobody known.
        assert_eq!(b.holder(v, ip, (21 + 3600 + 601) * 1_000_000_000), None);
        assert_eq!((b.stats.leases, b.stats.releases, b.stats.with_hostname), (2, 1, 2));
    }
}
