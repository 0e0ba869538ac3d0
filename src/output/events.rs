//! Events: one JSON line per observation (the `--events` contract).

use std::io::{self, Write};
use std::net::IpAddr;

use serde::Serialize;

use super::{rfc3339, vlan_opt};
use crate::host::cutoff_for;
use crate::observation::{Attribution, Detail, Observation};
use crate::proto::{dns, tls};
use crate::rules::matcher::Rules;
use crate::rules::model::Category;

pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

#[derive(Serialize)]
struct AnswerOut<'a> {
    rrname: &'a str,
    rrtype: String,
    rdata: &'a str,
    ttl: u32,
}

#[derive(Serialize)]
struct DnsOut<'a> {
    id: u16,
    query_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rcode: Option<String>,
    answers: Vec<AnswerOut<'a>>,
    response_only: bool,
    /// The resolver is a public one Kaspersky falls back to.
    public_resolver: bool,
}

#[derive(Serialize)]
struct TlsOut<'a> {
    /// The SNI in the packet (none, or an ECH provider's, when attributed by a DNS answer).
    sni: Option<&'a str>,
    versions: Vec<&'static str>,
    alpn: &'a [String],
    ech: bool,
    ja4: &'a str,
    ja3: &'a str,
    ja3_full: &'a str,
    records: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    quic_version: Option<String>,
}

#[derive(Serialize)]
struct HttpOut<'a> {
    /// The Host in the request (a bare address, or none, when attributed by a DNS answer).
    hostname: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    version: &'a str,
    user_agent: Option<&'a str>,
}

#[derive(Serialize)]
struct KscOut {
    /// `tls`, `tcp`, `wake-up` or `datagram`.
    contact: &'static str,
    server: IpAddr,
    agent: IpAddr,
    port: u16,
}

#[derive(Serialize)]
struct EventOut<'a> {
    timestamp: String,
    event_type: &'static str,
    src_ip: IpAddr,
    src_port: u16,
    dest_ip: IpAddr,
    dest_port: u16,
    proto: &'static str,
    host: IpAddr,
    /// The host's DHCP host name at that moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<&'a [u16]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<serde_json::Value>,
    domain: &'a str,
    vendor: &'a str,
    category: Category,
    rule_id: &'a str,
    after_cutoff: bool,
    /// `name` (in the packet), `dns-answer`, `http-path` or `port`.
    attribution: &'static str,
    /// A resolver's query for a name one of its clients asked it for.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    relayed: bool,
    input: &'a str,
    /// Live capture: the interface (also in `input`).
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<&'a str>,
    packet: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<DnsOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ksc: Option<KscOut>,
}

/// Where observations came from: capture files, or interfaces (live).
#[derive(Debug, Clone, Copy)]
pub enum Inputs<'a> {
    Files(&'a [String]),
    Interfaces(&'a [String]),
}

/// Writes every observation as one JSON line, and flushes.
pub fn write_events(
    out: &mut dyn Write,
    observations: &[Observation],
    rules: &Rules,
    inputs: Inputs<'_>,
    cutoff_override: Option<i64>,
) -> io::Result<()> {
    for o in observations {
        write_event(out, o, rules, inputs, cutoff_override)?;
    }
    out.flush()
}

/// Writes one observation as a JSON line (DHCP ones are never events); no flush.
pub fn write_event(
    out: &mut dyn Write,
    o: &Observation,
    rules: &Rules,
    inputs: Inputs<'_>,
    cutoff_override: Option<i64>,
) -> io::Result<()> {
    let (names, live) = match inputs {
        Inputs::Files(n) => (n, false),
        Inputs::Interfaces(n) => (n, true),
    };
    {
        let rule = rules.rule(o.rule);
        let (mut dns_out, mut tls_out, mut http_out, mut ksc_out) = (None, None, None, None);
        // The name the packet itself carried.
        let wire = match o.attribution {
            Attribution::DnsAnswer | Attribution::HttpPath => o.wire_name.as_deref(),
            _ => Some(o.domain.as_str()),
        };
        match &o.detail {
            Detail::Dns(d) => {
                dns_out = Some(DnsOut {
                    id: d.id,
                    query_type: dns::qtype_name(d.qtype).into_owned(),
                    rcode: d.rcode.map(rcode_name),
                    answers: d
                        .answers
                        .iter()
                        .map(|a| AnswerOut {
                            rrname: &a.name,
                            rrtype: dns::qtype_name(a.rtype).into_owned(),
                            rdata: &a.data,
                            ttl: a.ttl,
                        })
                        .collect(),
                    response_only: d.response_only,
                    public_resolver: o.public_resolver(),
                })
            }
            Detail::Tls(t) => {
                tls_out = Some(TlsOut {
                    sni: wire,
                    versions: t.versions.iter().map(|v| tls::version_name(*v)).collect(),
                    alpn: &t.alpn,
                    ech: t.ech,
                    ja4: &t.ja4,
                    ja3: &t.ja3,
                    ja3_full: &t.ja3_full,
                    records: t.records,
                    quic_version: t.quic_version.map(|v| match v {
                        1 => "1".to_string(),
                        0x6b33_43cf => "2".to_string(),
                        v => format!("0x{v:08x}"),
                    }),
                })
            }
            Detail::Http(h) => {
                http_out = Some(HttpOut {
                    hostname: wire,
                    method: &h.method,
                    path: &h.path,
                    version: &h.version,
                    user_agent: h.user_agent.as_deref(),
                })
            }
            Detail::Ksc(k) => {
                ksc_out = Some(KscOut { contact: k.contact.as_str(), server: k.server, agent: k.agent, port: k.port })
            }
            // Consumed by the lease book; never an event.
            Detail::Dhcp(_) => return Ok(()),
        }
        let ev = EventOut {
            timestamp: rfc3339(o.ts_ns),
            event_type: o.via().as_str(),
            src_ip: o.src,
            src_port: o.sport,
            dest_ip: o.dst,
            dest_port: o.dport,
            proto: if o.proto == crate::decode::IPPROTO_TCP { "TCP" } else { "UDP" },
            host: o.host,
            hostname: o.hostname.as_deref(),
            vlan: vlan_opt(&o.vlan),
            overlay: o.vlan.overlay(),
            tunnel: crate::decode::intern::to_json(o.tunnel),
            domain: &o.domain,
            vendor: &rules.set.vendors[rule.vendor].id,
            category: rule.category,
            rule_id: &rule.id,
            after_cutoff: o.ts_ns >= cutoff_for(rules, o, cutoff_override),
            attribution: o.attribution.as_str(),
            relayed: o.relayed,
            input: names.get(o.pos.input as usize).map_or("", |s| s.as_str()),
            interface: live.then(|| names.get(o.pos.input as usize).map_or("", |s| s.as_str())),
            packet: o.pos.packet,
            dns: dns_out,
            tls: tls_out,
            http: http_out,
            ksc: ksc_out,
        };
        serde_json::to_writer(&mut *out, &ev)?;
        out.write_all(b"\n")
    }
}
