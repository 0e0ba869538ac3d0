//! What the workers find: one `Observation` per name in a DNS query, TLS ClientHello or
//! HTTP request that a rule matched, with the evidence around it.

use std::net::IpAddr;

use crate::decode::VlanTags;
use crate::decode::intern::TunnelId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    Dns,
    Tls,
    Http,
    Quic,
    Ksc,
    Dhcp,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Dns => "dns",
            Via::Tls => "tls",
            Via::Http => "http",
            Via::Quic => "quic",
            Via::Ksc => "ksc",
            Via::Dhcp => "dhcp",
        }
    }
}

/// Where a packet came from: input file and packet number in it, and its place in the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Index over all packets of all inputs, in reading order.
    pub seq: u64,
    pub input: u32,
    /// 1-based, as Wireshark numbers frames.
    pub packet: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DnsAnswer {
    pub name: String,
    pub rtype: u16,
    /// Address or target name; empty for other record types.
    pub data: String,
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DnsDetail {
    pub id: u16,
    pub qtype: u16,
    /// `None` when no response was seen.
    pub rcode: Option<u8>,
    pub answers: Vec<DnsAnswer>,
    /// Only the response was seen (the host is then the response's destination).
    pub response_only: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TlsDetail {
    pub versions: Vec<u16>,
    pub alpn: Vec<String>,
    pub ech: bool,
    pub ja4: String,
    pub ja3: String,
    pub ja3_full: String,
    /// TLS records the ClientHello spanned (0 over QUIC).
    pub records: u16,
    /// Over QUIC: the version of its Initial packets (1, or 0x6b3343cf for v2).
    pub quic_version: Option<u32>,
    /// A ClientHello waiting for attribution keeps what its fingerprints are made of: most such
    /// connections are never attributed, and hashing them all would cost the workers dearly.
    pub unfingerprinted: Option<Box<crate::proto::tls::ClientHello>>,
}

impl TlsDetail {
    /// Fills `ja4`, `ja3`, `ja3_full` from the ClientHello (`ja4` starts with `q` over QUIC).
    pub fn fingerprint(&mut self, ch: &crate::proto::tls::ClientHello) {
        self.ja4 = ch.ja4();
        if self.quic_version.is_some() {
            self.ja4.replace_range(..1, "q");
        }
        (self.ja3_full, self.ja3) = ch.ja3();
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HttpDetail {
    pub method: String,
    pub path: String,
    pub version: String,
    pub user_agent: Option<String>,
}

/// What a Kaspersky Security Center port showed (see `ksc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KscContact {
    /// A TCP connection to the server's port carrying a TLS ClientHello.
    Tls,
    /// A TCP connection carrying data that is neither TLS nor HTTP (legacy 14000, KSN proxy 13111).
    Tcp,
    /// A datagram from the server to an agent's wake-up port (15000/udp).
    WakeUp,
    /// A datagram from an agent to the server (13000/udp, 15111/udp).
    Datagram,
}

impl KscContact {
    pub fn as_str(self) -> &'static str {
        match self {
            KscContact::Tls => "tls",
            KscContact::Tcp => "tcp",
            KscContact::WakeUp => "wake-up",
            KscContact::Datagram => "datagram",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KscDetail {
    pub contact: KscContact,
    /// The Administration Server (or KSN proxy) and the agent: the observation's `host` is the agent.
    pub server: IpAddr,
    pub agent: IpAddr,
    /// The server's port, or the agent's for wake-ups.
    pub port: u16,
}

/// A DHCP message's identity facts (see `dhcp_leases`): consumed by the sink, never an event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DhcpDetail {
    /// DHCPv4 ACK / DHCPv6 REPLY with an address: the lease.
    pub ack: bool,
    /// RELEASE or DECLINE: the client gives the address up.
    pub release: bool,
    pub mac: Option<[u8; 6]>,
    /// Assigned (ACK, REPLY) or given up (RELEASE) address.
    pub address: Option<IpAddr>,
    /// Option 12 / option 81 / DHCPv6 client FQDN (first label kept as sent, escaped on output).
    pub hostname: Option<String>,
    pub lease_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Detail {
    Dns(DnsDetail),
    Tls(TlsDetail),
    Http(HttpDetail),
    Ksc(KscDetail),
    Dhcp(DhcpDetail),
}

/// How the observation's name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Attribution {
    /// In the packet itself (DNS question, SNI, Host).
    #[default]
    Name,
    /// The packet named nothing a rule matched (no SNI, ECH, a bare IP as Host): it waits for
    /// `attribution::Attributor` to find a DNS answer that gave its client this address. Never
    /// leaves the pipeline as such: `rule` means nothing yet.
    Pending,
    /// From a DNS answer that gave this client the address it connected to.
    DnsAnswer,
    /// An HTTP request's path or User-Agent (an `http-path` or `user-agent` rule); `domain` is
    /// the Host it gave, or the server's address.
    HttpPath,
    /// A Kaspersky Security Center port pattern (`port` rule, see `ksc`).
    Port,
}

impl Attribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Name => "name",
            Attribution::Pending => "pending",
            Attribution::DnsAnswer => "dns-answer",
            Attribution::HttpPath => "http-path",
            Attribution::Port => "port",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observation {
    pub ts_ns: i64,
    pub pos: Position,
    pub vlan: VlanTags,
    /// The tunnels its packet came through.
    pub tunnel: TunnelId,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: u8,
    /// The client: DNS querier, ClientHello sender, HTTP requester.
    pub host: IpAddr,
    /// The client's MAC address as its packet showed it (none for a response seen alone).
    pub host_mac: Option<[u8; 6]>,
    pub domain: String,
    /// Index of the matching rule.
    pub rule: u32,
    pub detail: Detail,
    pub attribution: Attribution,
    /// With `DnsAnswer`: the name the packet carried, if any (an ECH outer SNI, a Host that is
    /// an IP address); `domain` is then the name from the DNS answer.
    pub wire_name: Option<String>,
    /// A resolver's upstream query for a name one of its clients asked it for.
    pub relayed: bool,
    /// Pending HTTP: the `http-path` / `user-agent` rule to use when no DNS answer names it.
    pub fallback_rule: Option<u32>,
    /// The host's DHCP hostname and MAC at this moment (filled in by the sink).
    pub hostname: Option<String>,
    pub lease_mac: Option<[u8; 6]>,
}

/// Public resolvers Kaspersky products fall back to when system DNS does not give them their
/// servers' addresses (KES-DE, KSK-PT in the indicators file): 8.8.8.8, 1.1.1.1, 223.6.6.6,
/// 9.9.9.9, 185.228.168.168.
pub const PUBLIC_RESOLVERS: [[u8; 4]; 5] =
    [[8, 8, 8, 8], [1, 1, 1, 1], [223, 6, 6, 6], [9, 9, 9, 9], [185, 228, 168, 168]];

impl Observation {
    /// A pending observation for unit tests of the sink's stages.
    #[cfg(test)]
    pub fn test_pending(
        ts_ns: i64,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        host: IpAddr,
        detail: Detail,
    ) -> Observation {
        let proto = match &detail {
            Detail::Tls(_) | Detail::Http(_) => crate::decode::IPPROTO_TCP,
            Detail::Ksc(k) if matches!(k.contact, KscContact::Tls | KscContact::Tcp) => crate::decode::IPPROTO_TCP,
            _ => crate::decode::IPPROTO_UDP,
        };
        Observation {
            ts_ns,
            pos: Position::default(),
            vlan: VlanTags::default(),
            tunnel: TunnelId::NONE,
            src: src.0,
            sport: src.1,
            dst: dst.0,
            dport: dst.1,
            proto,
            host,
            host_mac: None,
            domain: String::new(),
            rule: 0,
            detail,
            attribution: Attribution::Pending,
            wire_name: None,
            relayed: false,
            fallback_rule: None,
            hostname: None,
            lease_mac: None,
        }
    }

    /// A DNS observation whose resolver side (the query's destination, or a lone response's
    /// source) is one of [`PUBLIC_RESOLVERS`].
    pub fn public_resolver(&self) -> bool {
        let Detail::Dns(d) = &self.detail else {
            return false;
        };
        let resolver = if d.response_only { self.src } else { self.dst };
        matches!(resolver, IpAddr::V4(v4) if PUBLIC_RESOLVERS.contains(&v4.octets()))
    }

    pub fn via(&self) -> Via {
        match &self.detail {
            Detail::Dns(_) => Via::Dns,
            Detail::Tls(t) if t.quic_version.is_some() => Via::Quic,
            Detail::Tls(_) => Via::Tls,
            Detail::Http(_) => Via::Http,
            Detail::Ksc(_) => Via::Ksc,
            Detail::Dhcp(_) => Via::Dhcp,
        }
    }

    /// The order of events in every output: packet time, then input position.
    pub fn sort_key(&self) -> (i64, Position) {
        (self.ts_ns, self.pos)
    }
}

fn string_bytes(s: &str) -> usize {
    s.len() + ALLOCATION
}

/// What an allocation costs besides its bytes (the allocator's header, rounding).
const ALLOCATION: usize = 16;

impl crate::spill::Spill for Observation {
    type Key = (i64, Position);

    fn key(&self) -> (i64, Position) {
        self.sort_key()
    }

    fn mem_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_deref().map_or(0, string_bytes);
        let detail = match &self.detail {
            Detail::Dns(d) => {
                d.answers
                    .iter()
                    .map(|a| std::mem::size_of::<DnsAnswer>() + string_bytes(&a.name) + string_bytes(&a.data))
                    .sum::<usize>()
                    + ALLOCATION
            }
            Detail::Tls(t) => {
                t.versions.len() * 2
                    + t.alpn.iter().map(|a| string_bytes(a) + 24).sum::<usize>()
                    + string_bytes(&t.ja4)
                    + string_bytes(&t.ja3)
                    + string_bytes(&t.ja3_full)
                    + t.unfingerprinted.as_ref().map_or(0, |c| c.mem_bytes())
                    + 2 * ALLOCATION
            }
            Detail::Http(h) => {
                string_bytes(&h.method) + string_bytes(&h.path) + string_bytes(&h.version) + opt(&h.user_agent)
            }
            Detail::Ksc(_) => 0,
            Detail::Dhcp(d) => opt(&d.hostname),
        };
        std::mem::size_of::<Observation>()
            + string_bytes(&self.domain)
            + opt(&self.wire_name)
            + opt(&self.hostname)
            + detail
    }
}
