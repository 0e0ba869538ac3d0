//! What the workers find: one `Observation` per name in a DNS query, TLS ClientHello or
//! HTTP request that a rule matched, with the evidence around it.

use std::net::IpAddr;

use crate::decode::VlanTags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    Dns,
    Tls,
    Http,
    Quic,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Dns => "dns",
            Via::Tls => "tls",
            Via::Http => "http",
            Via::Quic => "quic",
        }
    }
}

/// Where a packet came from: input file and packet number in it, and its place in the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Index over all packets of all inputs, in reading order.
    pub seq: u64,
    pub input: u32,
    /// 1-based, as Wireshark numbers frames.
    pub packet: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsAnswer {
    pub name: String,
    pub rtype: u16,
    /// Address or target name; empty for other record types.
    pub data: String,
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsDetail {
    pub id: u16,
    pub qtype: u16,
    /// `None` when no response was seen.
    pub rcode: Option<u8>,
    pub answers: Vec<DnsAnswer>,
    /// Only the response was seen (the host is then the response's destination).
    pub response_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct HttpDetail {
    pub method: String,
    pub path: String,
    pub version: String,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Dns(DnsDetail),
    Tls(TlsDetail),
    Http(HttpDetail),
}

/// How the observation's name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
}

impl Attribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Name => "name",
            Attribution::Pending => "pending",
            Attribution::DnsAnswer => "dns-answer",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub ts_ns: i64,
    pub pos: Position,
    pub vlan: VlanTags,
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
}

/// Public resolvers Kaspersky products fall back to when system DNS does not give them their
/// servers' addresses (KES-DE, KSK-PT in the indicators file): 8.8.8.8, 1.1.1.1, 223.6.6.6,
/// 9.9.9.9, 185.228.168.168.
pub const PUBLIC_RESOLVERS: [[u8; 4]; 5] =
    [[8, 8, 8, 8], [1, 1, 1, 1], [223, 6, 6, 6], [9, 9, 9, 9], [185, 228, 168, 168]];

impl Observation {
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
        }
    }

    /// The order of events in every output: packet time, then input position.
    pub fn sort_key(&self) -> (i64, Position) {
        (self.ts_ns, self.pos)
    }
}
