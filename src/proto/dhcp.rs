//! DHCPv4 (RFC 2131/2132) and DHCPv6 (RFC 8415) messages: who a host says it is (MAC, DUID, host
//! name, FQDN) and which address it asked for or was given.
//!
//! A message whose option framing runs past its end is an error. An option whose contents are
//! malformed is skipped and its field stays `None`: one bad option must not hide the others, and
//! the sender controls every byte either way.

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::name::{normalize_name, push_normalized};

/// Options read from one message (DHCPv4: the options field and any overloaded sname/file;
/// DHCPv6: each level, the message and each relay). Real clients send about 10.
const MAX_OPTIONS: usize = 128;
/// RFC 8415 §7.6: HOP_COUNT_LIMIT is 8, so relays with hop counts 0..=8 make at most 9 layers.
const MAX_RELAY_DEPTH: usize = 9;
const MAX_IA_NA: usize = 8;
const MAX_IA_ADDRESSES: usize = 8;
/// RFC 8415 §11.1: a 2-byte type and at most 128 bytes.
const MAX_DUID: usize = 130;
const MAX_NAME_WIRE: usize = 255;

/// op .. file (RFC 2131 §2), then the magic cookie.
const BOOTP_HEADER: usize = 236;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

const V4_PAD: u8 = 0;
const V4_HOST_NAME: u8 = 12;
const V4_REQUESTED_ADDRESS: u8 = 50;
const V4_LEASE_TIME: u8 = 51;
const V4_OVERLOAD: u8 = 52;
const V4_MESSAGE_TYPE: u8 = 53;
const V4_SERVER_ID: u8 = 54;
const V4_CLIENT_ID: u8 = 61;
const V4_CLIENT_FQDN: u8 = 81;
const V4_END: u8 = 255;

const V6_CLIENTID: u16 = 1;
const V6_SERVERID: u16 = 2;
const V6_IA_NA: u16 = 3;
const V6_IAADDR: u16 = 5;
const V6_RELAY_MSG: u16 = 9;
const V6_CLIENT_FQDN: u16 = 39;

/// Client FQDN flags (RFC 4702 §2.1, RFC 4704 §4.1).
pub const FQDN_S: u8 = 0x01;
pub const FQDN_O: u8 = 0x02;
/// DHCPv4 only: the name is in DNS wire format.
pub const FQDN_E: u8 = 0x04;
pub const FQDN_N: u8 = 0x08;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DhcpError {
    #[error("message truncated")]
    Truncated,
    #[error("BOOTP op {0} is neither request nor reply")]
    BadOp(u8),
    #[error("no DHCP magic cookie")]
    BadMagicCookie,
    #[error("more than {} options", MAX_OPTIONS)]
    TooManyOptions,
    #[error("relay messages nested more than {} deep", MAX_RELAY_DEPTH)]
    RelayTooDeep,
    #[error("relay message without a Relay Message option")]
    NoRelayMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootpOp {
    Request,
    Reply,
}

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcpv4Type {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    ForceRenew,
    Other(u8),
}

impl From<u8> for Dhcpv4Type {
    fn from(t: u8) -> Self {
        match t {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            9 => Self::ForceRenew,
            other => Self::Other(other),
        }
    }
}

impl Dhcpv4Type {
    pub fn name(self) -> &'static str {
        match self {
            Self::Discover => "DISCOVER",
            Self::Offer => "OFFER",
            Self::Request => "REQUEST",
            Self::Decline => "DECLINE",
            Self::Ack => "ACK",
            Self::Nak => "NAK",
            Self::Release => "RELEASE",
            Self::Inform => "INFORM",
            Self::ForceRenew => "FORCERENEW",
            Self::Other(_) => "unknown",
        }
    }
}

/// Client FQDN: DHCPv4 option 81 (RFC 4702), DHCPv6 option 39 (RFC 4704).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFqdn {
    /// [`FQDN_S`], [`FQDN_O`], [`FQDN_E`], [`FQDN_N`].
    pub flags: u8,
    /// Normalised; may be partial (a bare host name, as servers often answer), and empty when the
    /// client leaves the name to the server.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv4 {
    pub op: BootpOp,
    pub xid: u32,
    /// `None` when 0.0.0.0, i.e. not set.
    pub ciaddr: Option<Ipv4Addr>,
    pub yiaddr: Option<Ipv4Addr>,
    /// The relay agent's address (`None` when not relayed).
    pub giaddr: Option<Ipv4Addr>,
    /// Only for Ethernet (htype 1, hlen 6).
    pub chaddr: Option<[u8; 6]>,
    /// `None`: plain BOOTP, or option 53 missing.
    pub msg_type: Option<Dhcpv4Type>,
    pub requested_address: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Seconds; 0xffffffff is infinite.
    pub lease_time: Option<u32>,
    /// Option 12, normalised.
    pub host_name: Option<String>,
    pub fqdn: Option<ClientFqdn>,
    /// Option 61 as sent: a type byte (1 = Ethernet, 255 = RFC 4361 IAID and DUID), then the id.
    pub client_id: Option<Vec<u8>>,
}

impl Dhcpv4 {
    /// The MAC in the client identifier: type 1 with 6 bytes, or an RFC 4361 DUID-LL(T) on Ethernet.
    pub fn client_id_mac(&self) -> Option<[u8; 6]> {
        match self.client_id.as_deref()? {
            [1, mac @ ..] => mac.try_into().ok(),
            [255, _, _, _, _, duid @ ..] => duid_mac(duid),
            _ => None,
        }
    }
}

/// DHCPv6 message type (RFC 8415 §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcpv6Type {
    Solicit,
    Advertise,
    Request,
    Confirm,
    Renew,
    Rebind,
    Reply,
    Release,
    Decline,
    Reconfigure,
    InformationRequest,
    RelayForw,
    RelayRepl,
    Other(u8),
}

impl From<u8> for Dhcpv6Type {
    fn from(t: u8) -> Self {
        match t {
            1 => Self::Solicit,
            2 => Self::Advertise,
            3 => Self::Request,
            4 => Self::Confirm,
            5 => Self::Renew,
            6 => Self::Rebind,
            7 => Self::Reply,
            8 => Self::Release,
            9 => Self::Decline,
            10 => Self::Reconfigure,
            11 => Self::InformationRequest,
            12 => Self::RelayForw,
            13 => Self::RelayRepl,
            other => Self::Other(other),
        }
    }
}

impl Dhcpv6Type {
    pub fn name(self) -> &'static str {
        match self {
            Self::Solicit => "SOLICIT",
            Self::Advertise => "ADVERTISE",
            Self::Request => "REQUEST",
            Self::Confirm => "CONFIRM",
            Self::Renew => "RENEW",
            Self::Rebind => "REBIND",
            Self::Reply => "REPLY",
            Self::Release => "RELEASE",
            Self::Decline => "DECLINE",
            Self::Reconfigure => "RECONFIGURE",
            Self::InformationRequest => "INFORMATION-REQUEST",
            Self::RelayForw => "RELAY-FORW",
            Self::RelayRepl => "RELAY-REPL",
            Self::Other(_) => "unknown",
        }
    }
}

/// The relay layers a DHCPv6 message came wrapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dhcpv6Relay {
    /// Relay messages unwrapped, 1..=9.
    pub depth: u8,
    /// Of the innermost relay, the one on the client's link: the link it serves, and the client's
    /// address (usually link-local).
    pub link_address: Ipv6Addr,
    pub peer_address: Ipv6Addr,
}

/// IA_NA (option 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    /// IAADDR options (5), at most 8.
    pub addresses: Vec<IaAddress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaAddress {
    pub address: Ipv6Addr,
    pub preferred_lifetime: u32,
    pub valid_lifetime: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv6 {
    /// Of the client's or server's message, inside any relay messages.
    pub msg_type: Dhcpv6Type,
    /// 24 bits.
    pub transaction_id: u32,
    pub relay: Option<Dhcpv6Relay>,
    /// CLIENTID (option 1), the DUID as sent (at most 130 bytes).
    pub client_duid: Option<Vec<u8>>,
    /// From a DUID-LLT or DUID-LL with hardware type 1 (Ethernet).
    pub client_mac: Option<[u8; 6]>,
    /// SERVERID (option 2).
    pub server_duid: Option<Vec<u8>>,
    /// At most 8.
    pub ia_na: Vec<IaNa>,
    pub fqdn: Option<ClientFqdn>,
}

impl Dhcpv6 {
    /// Every IAADDR of every IA_NA.
    pub fn addresses(&self) -> impl Iterator<Item = &IaAddress> {
        self.ia_na.iter().flat_map(|ia| &ia.addresses)
    }
}

/// The Ethernet MAC in a DUID-LLT (type 1) or DUID-LL (type 3) of hardware type 1 (RFC 8415
/// §11.2, §11.4); `None` for other DUIDs, which carry no MAC or one that cannot be told apart.
pub fn duid_mac(duid: &[u8]) -> Option<[u8; 6]> {
    match duid {
        [0, 1, 0, 1, _, _, _, _, mac @ ..] | [0, 3, 0, 1, mac @ ..] => mac.try_into().ok(),
        _ => None,
    }
}

/// `N` bytes at `at`, if there are that many.
fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..)?.first_chunk::<N>().copied()
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_be_bytes)
}

fn nonzero_v4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    array::<4>(b, at).map(Ipv4Addr::from).filter(|a| !a.is_unspecified())
}

/// A name in DNS wire format, without compression (RFC 4702 §2.3.1, RFC 4704 §4.1): labels up
/// to the root label, or to the end of the data for a partial name; bytes after the root label
/// are ignored. `None` when a label overruns the data, a label has a pointer or reserved type,
/// or the name is longer than 255 bytes (RFC 1035 3.1: with the root label's length byte when
/// the name has one, as in dns.rs).
fn wire_name(mut data: &[u8]) -> Option<String> {
    let mut name = String::with_capacity(data.len().min(MAX_NAME_WIRE) + 8);
    let mut wire = 0;
    while let Some((&len, rest)) = data.split_first() {
        if len == 0 {
            if wire >= MAX_NAME_WIRE {
                return None;
            }
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let (label, next) = rest.split_at_checked(len as usize)?;
        wire += 1 + label.len();
        if wire > MAX_NAME_WIRE {
            return None;
        }
        if wire > 1 + label.len() {
            name.push('.');
        }
        for &b in label {
            // A dot inside a label is no label boundary: escaped, as in dns.rs, so that the
            // name never passes for more labels than it has.
            if b == b'.' {
                name.push_str("\\x2e");
            } else {
                push_normalized(&mut name, b);
            }
        }
        data = next;
    }
    Some(name)
}

/// A name in ASCII (option 12, option 81 without E). Some clients count a trailing NUL in
/// the length: dropped, so that their names equal everyone else's.
fn ascii_name(raw: &[u8]) -> String {
    let mut raw = raw;
    while let [rest @ .., 0] = raw {
        raw = rest;
    }
    normalize_name(raw)
}

/// Walks one DHCPv4 options area to its End option or its end, counting options in `count`
/// across areas. Pads are not counted: each advances one byte, so the area's length bounds them.
fn walk_v4(area: &[u8], count: &mut usize, mut f: impl FnMut(u8, &[u8])) -> Result<(), DhcpError> {
    let mut rest = area;
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            V4_PAD => {
                rest = tail;
                continue;
            }
            V4_END => return Ok(()),
            _ => {}
        }
        let (&len, tail) = tail.split_first().ok_or(DhcpError::Truncated)?;
        let (body, next) = tail.split_at_checked(len as usize).ok_or(DhcpError::Truncated)?;
        *count += 1;
        if *count > MAX_OPTIONS {
            return Err(DhcpError::TooManyOptions);
        }
        f(code, body);
        rest = next;
    }
    Ok(())
}

/// Reads one DHCPv4 option into `m`; the first valid instance of each option wins.
fn apply_v4(m: &mut Dhcpv4, overload: &mut u8, code: u8, body: &[u8]) {
    match (code, body) {
        (V4_MESSAGE_TYPE, &[t]) => m.msg_type = m.msg_type.or(Some(t.into())),
        (V4_REQUESTED_ADDRESS, _) => m.requested_address = m.requested_address.or(ipv4(body)),
        (V4_SERVER_ID, _) => m.server_id = m.server_id.or(ipv4(body)),
        (V4_LEASE_TIME, _) => m.lease_time = m.lease_time.or(<[u8; 4]>::try_from(body).ok().map(u32::from_be_bytes)),
        (V4_HOST_NAME, _) if m.host_name.is_none() && !body.is_empty() => m.host_name = Some(ascii_name(body)),
        (V4_CLIENT_FQDN, &[flags, _rcode1, _rcode2, ref name @ ..]) if m.fqdn.is_none() => {
            let name = if flags & FQDN_E != 0 { wire_name(name) } else { Some(ascii_name(name)) };
            m.fqdn = name.map(|name| ClientFqdn { flags, name });
        }
        // RFC 2132 §9.14: a type byte and at least one byte of id.
        (V4_CLIENT_ID, _) if m.client_id.is_none() && body.len() >= 2 => m.client_id = Some(body.to_vec()),
        (V4_OVERLOAD, &[v @ 1..=3]) if *overload == 0 => *overload = v,
        _ => {}
    }
}

fn ipv4(body: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(body).ok().map(Ipv4Addr::from)
}

/// Parses a DHCPv4 message: the UDP payload to or from port 67 or 68.
pub fn parse_dhcpv4(udp_payload: &[u8]) -> Result<Dhcpv4, DhcpError> {
    let Some((head, options)) = udp_payload.split_first_chunk::<{ BOOTP_HEADER + 4 }>() else {
        return Err(DhcpError::Truncated);
    };
    let op = match head[0] {
        1 => BootpOp::Request,
        2 => BootpOp::Reply,
        other => return Err(DhcpError::BadOp(other)),
    };
    if array::<4>(head, BOOTP_HEADER) != Some(MAGIC_COOKIE) {
        return Err(DhcpError::BadMagicCookie);
    }
    let (htype, hlen) = (head[1], head[2]);
    let mut m = Dhcpv4 {
        op,
        xid: be32(head, 4).ok_or(DhcpError::Truncated)?,
        ciaddr: nonzero_v4(head, 12),
        yiaddr: nonzero_v4(head, 16),
        giaddr: nonzero_v4(head, 24),
        chaddr: if (htype, hlen) == (1, 6) { array(head, 28) } else { None },
        msg_type: None,
        requested_address: None,
        server_id: None,
        lease_time: None,
        host_name: None,
        fqdn: None,
        client_id: None,
    };
    let mut count = 0;
    let mut overload = 0;
    walk_v4(options, &mut count, |code, body| apply_v4(&mut m, &mut overload, code, body))?;
    // RFC 2131 §4.1: with option 52, the options go on in 'file' (bit 1), then in 'sname' (bit 2).
    // An option 52 in there has nothing more to overload.
    let (sname, file) = (head.get(44..108).unwrap_or_default(), head.get(108..BOOTP_HEADER).unwrap_or_default());
    for (bit, area) in [(1, file), (2, sname)] {
        if overload & bit != 0 {
            let mut ignored = 0;
            walk_v4(area, &mut count, |code, body| apply_v4(&mut m, &mut ignored, code, body))?;
        }
    }
    Ok(m)
}

/// Walks DHCPv6 options (RFC 8415 §21.1): 2-byte code, 2-byte length, data.
fn walk_v6<'a>(mut data: &'a [u8], mut f: impl FnMut(u16, &'a [u8])) -> Result<(), DhcpError> {
    let mut count = 0;
    while !data.is_empty() {
        let (head, rest) = data.split_first_chunk::<4>().ok_or(DhcpError::Truncated)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let (body, next) = rest.split_at_checked(len).ok_or(DhcpError::Truncated)?;
        count += 1;
        if count > MAX_OPTIONS {
            return Err(DhcpError::TooManyOptions);
        }
        f(code, body);
        data = next;
    }
    Ok(())
}

/// IA_NA: IAID, T1, T2, then options, of which the IAADDRs are kept. A damaged option list
/// inside keeps the addresses read before the damage.
fn ia_na(body: &[u8]) -> Option<IaNa> {
    let (head, options) = body.split_first_chunk::<12>()?;
    let mut ia = IaNa { iaid: be32(head, 0)?, t1: be32(head, 4)?, t2: be32(head, 8)?, addresses: Vec::new() };
    let _ = walk_v6(options, |code, b| {
        if code == V6_IAADDR
            && ia.addresses.len() < MAX_IA_ADDRESSES
            && let (Some(a), Some(preferred_lifetime), Some(valid_lifetime)) =
                (array::<16>(b, 0), be32(b, 16), be32(b, 20))
        {
            ia.addresses.push(IaAddress { address: Ipv6Addr::from(a), preferred_lifetime, valid_lifetime });
        }
    });
    Some(ia)
}

fn duid(body: &[u8]) -> Option<Vec<u8>> {
    (2..=MAX_DUID).contains(&body.len()).then(|| body.to_vec())
}

/// Parses a DHCPv6 message: the UDP payload to or from port 546 or 547. Relay messages are
/// unwrapped to the client's or server's message inside, at most 9 deep.
pub fn parse_dhcpv6(udp_payload: &[u8]) -> Result<Dhcpv6, DhcpError> {
    let mut msg = udp_payload;
    let mut relay = None;
    let mut depth = 0u8;
    while let Some(12 | 13) = msg.first() {
        if depth as usize >= MAX_RELAY_DEPTH {
            return Err(DhcpError::RelayTooDeep);
        }
        // msg-type, hop-count, link-address, peer-address (RFC 8415 §9).
        let (head, options) = msg.split_first_chunk::<34>().ok_or(DhcpError::Truncated)?;
        let (link, peer) = (array::<16>(head, 2), array::<16>(head, 18));
        let (Some(link), Some(peer)) = (link, peer) else {
            return Err(DhcpError::Truncated);
        };
        let mut inner = None;
        walk_v6(options, |code, body| {
            if code == V6_RELAY_MSG && inner.is_none() {
                inner = Some(body);
            }
        })?;
        msg = inner.ok_or(DhcpError::NoRelayMessage)?;
        depth += 1;
        relay = Some(Dhcpv6Relay { depth, link_address: Ipv6Addr::from(link), peer_address: Ipv6Addr::from(peer) });
    }
    let (head, options) = msg.split_first_chunk::<4>().ok_or(DhcpError::Truncated)?;
    let mut m = Dhcpv6 {
        msg_type: head[0].into(),
        transaction_id: u32::from_be_bytes([0, head[1], head[2], head[3]]),
        relay,
        client_duid: None,
        client_mac: None,
        server_duid: None,
        ia_na: Vec::new(),
        fqdn: None,
    };
    walk_v6(options, |code, body| match code {
        V6_CLIENTID if m.client_duid.is_none() => {
            m.client_duid = duid(body);
            m.client_mac = duid_mac(body);
        }
        V6_SERVERID if m.server_duid.is_none() => m.server_duid = duid(body),
        V6_IA_NA if m.ia_na.len() < MAX_IA_NA => m.ia_na.extend(ia_na(body)),
        V6_CLIENT_FQDN if m.fqdn.is_none() => {
            if let Some((&flags, name)) = body.split_first() {
                m.fqdn = wire_name(name).map(|name| ClientFqdn { flags, name });
            }
        }
        _ => {}
    })?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded by testdata/make-dhcp-captures.sh: ISC dhclient 4.4.3 against dnsmasq 2.90 in
    // network namespaces. v4: two DISCOVER/OFFER/REQUEST/ACK exchanges, the first with the FQDN
    // in wire format, the second with it in ASCII and an RFC 4361 client identifier. v6: two
    // SOLICIT/ADVERTISE/REQUEST/REPLY exchanges (DUID-LLT, then DUID-LL), and one through a
    // dnsmasq relay, recorded between relay and server.
    const V4: &[u8] = include_bytes!("testdata/dhcpv4.pcap");
    const V6: &[u8] = include_bytes!("testdata/dhcpv6.pcap");
    const V6_RELAY: &[u8] = include_bytes!("testdata/dhcpv6-relay.pcap");

    const MAC: [u8; 6] = [0x02, 0x6b, 0x61, 0x76, 0x00, 0x17];
    const MAC_RELAYED: [u8; 6] = [0x02, 0x6b, 0x61, 0x76, 0x00, 0x18];
    const HOST: &str = "kav-laptop-17";
    const FQDN: &str = "kav-laptop-17.corp.example";

    fn udp_payloads(pcap: &[u8]) -> Vec<&[u8]> {
        crate::proto::udp_datagrams(pcap).into_iter().map(|(_, p)| p).collect()
    }

    fn v4_messages() -> Vec<Dhcpv4> {
        udp_payloads(V4).into_iter().map(|p| parse_dhcpv4(p).unwrap()).collect()
    }

    #[test]
    fn real_dhcpv4_exchanges() {
        use Dhcpv4Type::*;
        let m = v4_messages();
        let types: Vec<_> = m.iter().map(|m| m.msg_type.unwrap()).collect();
        assert_eq!(types, [Discover, Offer, Request, Ack, Discover, Offer, Request, Ack]);
        let lease = Some(Ipv4Addr::new(10, 77, 0, 51));
        let server = Some(Ipv4Addr::new(10, 77, 0, 1));
        for (i, m) in m.iter().enumerate() {
            assert_eq!(m.chaddr, Some(MAC), "{i}");
            assert_eq!(m.xid, if i < 4 { 0xb4efcd72 } else { 0x4df1e30a }, "{i}");
            assert_eq!(m.ciaddr, None, "{i}");
            assert_eq!(m.giaddr, None, "{i}");
            // Every message carries the host name: dnsmasq echoes it.
            assert_eq!(m.host_name.as_deref(), Some(HOST), "{i}");
            let is_reply = matches!(m.msg_type, Some(Offer | Ack));
            assert_eq!(m.op, if is_reply { BootpOp::Reply } else { BootpOp::Request });
            if is_reply {
                assert_eq!((m.yiaddr, m.server_id, m.lease_time), (lease, server, Some(3600)), "{i}");
                // dnsmasq answers with only the host part, S and O set, in the client's encoding.
                let fqdn = m.fqdn.as_ref().unwrap();
                assert_eq!(fqdn.name, HOST);
                assert_eq!(fqdn.flags & (FQDN_S | FQDN_O), FQDN_S | FQDN_O);
            } else {
                assert_eq!((m.yiaddr, m.lease_time), (None, None), "{i}");
                assert_eq!(m.fqdn.as_ref().unwrap().name, FQDN, "{i}");
            }
        }
        assert_eq!((m[0].requested_address, m[0].server_id), (None, None));
        assert_eq!((m[2].requested_address, m[2].server_id), (lease, server));
        assert_eq!((m[6].requested_address, m[6].server_id), (lease, server));
        // Run 1: FQDN in DNS wire format, no client identifier.
        assert_eq!(m[0].fqdn, Some(ClientFqdn { flags: FQDN_E, name: FQDN.into() }));
        assert_eq!(m[3].fqdn.as_ref().unwrap().flags & FQDN_E, FQDN_E);
        assert_eq!((m[0].client_id.as_ref(), m[0].client_id_mac()), (None, None));
        // Run 2: ASCII FQDN, and a client identifier of type 255: IAID, then a DUID-LLT.
        assert_eq!(m[4].fqdn, Some(ClientFqdn { flags: 0, name: FQDN.into() }));
        assert_eq!(m[7].fqdn.as_ref().unwrap().flags & FQDN_E, 0);
        let id = m[4].client_id.as_deref().unwrap();
        assert_eq!((id[0], &id[5..9]), (255, &[0, 1, 0, 1][..]));
        assert_eq!(m[4].client_id_mac(), Some(MAC));
        assert_eq!(m[6].client_id, m[4].client_id);
        assert_eq!(Discover.name(), "DISCOVER");
    }

    #[test]
    fn real_dhcpv6_exchanges() {
        use Dhcpv6Type::*;
        let m: Vec<Dhcpv6> = udp_payloads(V6).into_iter().map(|p| parse_dhcpv6(p).unwrap()).collect();
        let types: Vec<_> = m.iter().map(|m| m.msg_type).collect();
        assert_eq!(types, [Solicit, Advertise, Request, Reply, Solicit, Advertise, Request, Reply]);
        let ids: Vec<_> = m.iter().map(|m| m.transaction_id).collect();
        assert_eq!(ids, [0x4ccabd, 0x4ccabd, 0x78999a, 0x78999a, 0x231ccb, 0x231ccb, 0xb349ec, 0xb349ec]);
        let fd77 = |last| Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, last);
        for (i, m) in m.iter().enumerate() {
            assert_eq!(m.client_mac, Some(MAC), "{i}");
            assert_eq!(m.relay, None);
            let duid = m.client_duid.as_deref().unwrap();
            // DUID-LLT (type 1, Ethernet, time, MAC) in run 1, DUID-LL (type 3) in run 2.
            if i < 4 {
                assert_eq!((&duid[..4], &duid[8..], duid.len()), (&[0, 1, 0, 1][..], &MAC[..], 14));
            } else {
                assert_eq!(duid, [0, 3, 0, 1, 2, 0x6b, 0x61, 0x76, 0, 0x17]);
            }
            let ia = &m.ia_na[0];
            assert_eq!((m.ia_na.len(), ia.iaid), (1, 0x61760017), "{i}");
            let fqdn = m.fqdn.as_ref().unwrap();
            let expected =
                if matches!(m.msg_type, Solicit) { vec![] } else { vec![fd77(if i < 4 { 0x5d } else { 0x53 })] };
            assert_eq!(m.addresses().map(|a| a.address).collect::<Vec<_>>(), expected, "{i}");
            if matches!(m.msg_type, Advertise | Reply) {
                assert!(m.server_duid.is_some());
                assert_eq!((ia.t1, ia.t2), (1800, 3150));
                assert_eq!((ia.addresses[0].preferred_lifetime, ia.addresses[0].valid_lifetime), (3600, 3600));
                // dnsmasq answers with the host part only (a partial name), S and O set.
                assert_eq!((fqdn.flags, fqdn.name.as_str()), (FQDN_S | FQDN_O, HOST));
            } else {
                assert_eq!((fqdn.flags, fqdn.name.as_str()), (0, FQDN), "{i}");
            }
        }
        // The client asks for the lifetimes it would like.
        assert_eq!(
            (m[2].ia_na[0].addresses[0].preferred_lifetime, m[2].ia_na[0].addresses[0].valid_lifetime),
            (7200, 7500)
        );
        assert_eq!(m[0].server_duid, None);
        assert_eq!(m[1].server_duid, m[7].server_duid);
        assert_eq!(InformationRequest.name(), "INFORMATION-REQUEST");
    }

    #[test]
    fn real_dhcpv6_relay_messages_are_unwrapped() {
        use Dhcpv6Type::*;
        let payloads = udp_payloads(V6_RELAY);
        let outer: Vec<_> = payloads.iter().map(|p| Dhcpv6Type::from(p[0])).collect();
        assert_eq!(outer, [RelayForw, RelayRepl, RelayForw, RelayRepl]);
        let m: Vec<Dhcpv6> = payloads.iter().map(|p| parse_dhcpv6(p).unwrap()).collect();
        let types: Vec<_> = m.iter().map(|m| m.msg_type).collect();
        assert_eq!(types, [Solicit, Advertise, Request, Reply]);
        let relay = Dhcpv6Relay {
            depth: 1,
            link_address: "fd78::1".parse().unwrap(),
            peer_address: "fe80::6b:61ff:fe76:18".parse().unwrap(),
        };
        for m in &m {
            assert_eq!(m.relay, Some(relay));
            assert_eq!(m.client_mac, Some(MAC_RELAYED));
        }
        assert_eq!(m[0].fqdn.as_ref().unwrap().name, FQDN);
        let fd78_55: Ipv6Addr = "fd78::55".parse().unwrap();
        for m in &m[1..] {
            assert_eq!(m.addresses().next().unwrap().address, fd78_55);
        }
    }

    fn relay_forw(inner: &[u8]) -> Vec<u8> {
        let mut r = vec![12, 0];
        r.extend_from_slice(&[0; 32]);
        r.extend_from_slice(&[0, 9]);
        r.extend_from_slice(&(inner.len() as u16).to_be_bytes());
        r.extend_from_slice(inner);
        r
    }

    #[test]
    fn relays_nested_beyond_the_bound_are_refused() {
        let solicit = udp_payloads(V6)[0];
        let mut msg = solicit.to_vec();
        for depth in 1..=MAX_RELAY_DEPTH {
            msg = relay_forw(&msg);
            let m = parse_dhcpv6(&msg).unwrap();
            assert_eq!((m.relay.unwrap().depth as usize, m.client_mac), (depth, Some(MAC)));
        }
        msg = relay_forw(&msg);
        assert_eq!(parse_dhcpv6(&msg), Err(DhcpError::RelayTooDeep));
        // 1,500 deep (near the most a UDP payload holds) costs no more than ten: the bound is
        // checked on the way in.
        for _ in 0..1500 {
            msg = relay_forw(&msg);
        }
        assert!(msg.len() < 65_507);
        assert_eq!(parse_dhcpv6(&msg), Err(DhcpError::RelayTooDeep));
        // A relay message without a Relay Message option, or cut short.
        let mut empty = relay_forw(&[]);
        empty.truncate(34);
        assert_eq!(parse_dhcpv6(&empty), Err(DhcpError::NoRelayMessage));
        assert_eq!(parse_dhcpv6(&empty[..20]), Err(DhcpError::Truncated));
        assert_eq!(parse_dhcpv6(&relay_forw(&[])), Err(DhcpError::Truncated));
    }

    /// A BOOTP header with the cookie, then `options`.
    fn v4_with(options: &[u8]) -> Vec<u8> {
        let mut m = vec![0; BOOTP_HEADER];
        m[..3].copy_from_slice(&[1, 1, 6]);
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(options);
        m
    }

    #[test]
    fn option_lengths_beyond_the_end() {
        assert_eq!(parse_dhcpv4(&v4_with(&[53, 1, 1, 12, 200, b'a', b'b'])), Err(DhcpError::Truncated));
        assert_eq!(parse_dhcpv4(&v4_with(&[53, 1, 1, 12])), Err(DhcpError::Truncated));
        // Past the End option nothing is read.
        let m = parse_dhcpv4(&v4_with(&[53, 1, 1, 255, 12, 200])).unwrap();
        assert_eq!(m.msg_type, Some(Dhcpv4Type::Discover));
        // DHCPv6: top level, and inside an IA_NA, which keeps what came before the damage.
        assert_eq!(parse_dhcpv6(&[1, 0, 0, 1, 0, 1, 0, 50, 0, 1]), Err(DhcpError::Truncated));
        assert_eq!(parse_dhcpv6(&[1, 0, 0, 1, 0, 1, 0]), Err(DhcpError::Truncated));
        let mut ia = vec![0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 24];
        ia.extend_from_slice(&[0xfd; 16]);
        ia.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 10, 0, 5, 0xff, 0xff]);
        let mut msg = vec![7, 1, 2, 3, 0, 3];
        msg.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        msg.extend_from_slice(&ia);
        let m = parse_dhcpv6(&msg).unwrap();
        assert_eq!((m.ia_na[0].iaid, m.ia_na[0].t2, m.addresses().count()), (7, 2, 1));
        assert_eq!(m.addresses().next().unwrap().valid_lifetime, 10);
    }

    #[test]
    fn only_pads_and_too_many_options() {
        let m = parse_dhcpv4(&v4_with(&[0; 1200])).unwrap();
        assert_eq!((m.msg_type, m.host_name, m.chaddr), (None, None, Some([0; 6])));
        assert!(parse_dhcpv4(&v4_with(&[])).is_ok());
        // Pads do not count towards the bound; options do.
        let mut opts = vec![0; 5000];
        opts.extend_from_slice(&[53, 1, 5]);
        assert_eq!(parse_dhcpv4(&v4_with(&opts)).unwrap().msg_type, Some(Dhcpv4Type::Ack));
        let many: Vec<u8> = [224, 0].repeat(MAX_OPTIONS + 1);
        assert_eq!(parse_dhcpv4(&v4_with(&many)), Err(DhcpError::TooManyOptions));
        assert!(parse_dhcpv4(&v4_with(&many[2..])).is_ok());
        let mut v6 = vec![1, 0, 0, 1];
        v6.extend_from_slice(&[0, 99, 0, 0].repeat(MAX_OPTIONS + 1));
        assert_eq!(parse_dhcpv6(&v6), Err(DhcpError::TooManyOptions));
        assert!(parse_dhcpv6(&v6[..v6.len() - 4]).is_ok());
    }

    #[test]
    fn header_errors_and_every_prefix() {
        let real = udp_payloads(V4);
        for n in 0..real[0].len() {
            let r = parse_dhcpv4(&real[0][..n]);
            if n < BOOTP_HEADER + 4 {
                assert_eq!(r, Err(DhcpError::Truncated), "prefix {n}");
            }
        }
        let mut m = real[0].to_vec();
        m[0] = 3;
        assert_eq!(parse_dhcpv4(&m), Err(DhcpError::BadOp(3)));
        m[0] = 1;
        m[BOOTP_HEADER] = 0;
        assert_eq!(parse_dhcpv4(&m), Err(DhcpError::BadMagicCookie));
        // Not Ethernet: no chaddr.
        let mut m = real[0].to_vec();
        m[1] = 6;
        assert_eq!(parse_dhcpv4(&m).unwrap().chaddr, None);
        for p in udp_payloads(V6).into_iter().chain(udp_payloads(V6_RELAY)) {
            for n in 0..p.len() {
                let _ = parse_dhcpv6(&p[..n]);
            }
            assert_eq!(parse_dhcpv6(&p[..3]), Err(DhcpError::Truncated));
        }
        assert_eq!(parse_dhcpv6(&[]), Err(DhcpError::Truncated));
    }

    #[test]
    fn overloaded_file_and_sname_fields_are_read() {
        let mut m = v4_with(&[53, 1, 3, 52, 1, 3, 255]);
        // The file field (108..236), then the sname field (44..108).
        let file = [12, 4, b'h', b'o', b's', b't', 52, 1, 2, 255];
        m[108..108 + file.len()].copy_from_slice(&file);
        m[44..50].copy_from_slice(&[50, 4, 10, 0, 0, 9]);
        let p = parse_dhcpv4(&m).unwrap();
        assert_eq!(p.host_name.as_deref(), Some("host"));
        assert_eq!(p.requested_address, Some(Ipv4Addr::new(10, 0, 0, 9)));
        // Without a valid option 52 the same fields are left alone.
        m[BOOTP_HEADER + 9] = 0;
        let p = parse_dhcpv4(&m).unwrap();
        assert_eq!((p.host_name, p.requested_address), (None, None));
        // Damaged options in an overloaded field are an error like any other.
        let mut m = v4_with(&[52, 1, 2]);
        m[44..46].copy_from_slice(&[12, 200]);
        assert_eq!(parse_dhcpv4(&m), Err(DhcpError::Truncated));
    }

    #[test]
    fn hostile_names() {
        // Wire format: a dot and a control character stay inside their label, escaped.
        let fqdn = b"\x04\xff\xff\x09Evil.\nCom\x07example\x00";
        let m = parse_dhcpv4(&v4_with(&[&[81, fqdn.len() as u8][..], fqdn].concat())).unwrap();
        assert_eq!(m.fqdn.unwrap().name, "evil\\x2e\\x0acom.example");
        // A compression pointer, a label past the end: the option is skipped, the rest kept.
        for bad in [&b"\x04\0\0\x03abc\xc0\x00"[..], b"\x04\0\0\x09abc"] {
            let m = parse_dhcpv4(&v4_with(&[&[53, 1, 1, 81, bad.len() as u8][..], bad].concat())).unwrap();
            assert_eq!((m.fqdn, m.msg_type), (None, Some(Dhcpv4Type::Discover)));
        }
        // Host name with a trailing NUL, upper case, a space; a second one is ignored.
        let m = parse_dhcpv4(&v4_with(b"\x0c\x07My PC.\x00\x0c\x01x")).unwrap();
        assert_eq!(m.host_name.as_deref(), Some("my\\x20pc"));
        // DHCPv6: more than 255 bytes of labels is no name.
        let mut name = vec![0];
        for _ in 0..5 {
            name.push(60);
            name.extend_from_slice(&[b'a'; 60]);
        }
        let mut msg = vec![1, 0, 0, 1, 0, 39];
        msg.extend_from_slice(&(name.len() as u16).to_be_bytes());
        msg.extend_from_slice(&name);
        assert_eq!(parse_dhcpv6(&msg).unwrap().fqdn, None);
        // 255 bytes of labels: a partial name, or with its root label one byte too long.
        let labels: Vec<u8> =
            [63u8, 63, 63, 62].iter().flat_map(|&n| [&[n][..], &vec![b'a'; n.into()]].concat()).collect();
        let fqdn = |root: bool| {
            let mut msg = vec![1, 0, 0, 1, 0, 39];
            msg.extend_from_slice(&(labels.len() as u16 + 1 + u16::from(root)).to_be_bytes());
            msg.push(0);
            msg.extend_from_slice(&labels);
            if root {
                msg.push(0);
            }
            parse_dhcpv6(&msg).unwrap().fqdn
        };
        assert_eq!(fqdn(false).map(|f| f.name.len()), Some(63 * 3 + 62 + 3));
        assert_eq!(fqdn(true), None);
        // Flags only: the client leaves the name to the server.
        let m = parse_dhcpv6(&[1, 0, 0, 1, 0, 39, 0, 1, 1]).unwrap();
        assert_eq!(m.fqdn, Some(ClientFqdn { flags: FQDN_S, name: String::new() }));
    }

    #[test]
    fn duids_and_client_identifiers() {
        assert_eq!(duid_mac(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(duid_mac(&[0, 1, 0, 1, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6]), Some([1, 2, 3, 4, 5, 6]));
        // Not Ethernet, wrong length, DUID-EN (type 2), DUID-UUID (type 4).
        assert_eq!(duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]), None);
        assert_eq!(duid_mac(&[0, 3, 0, 1, 1, 2, 3, 4, 5]), None);
        assert_eq!(duid_mac(&[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6]), None);
        assert_eq!(duid_mac(&[0, 4, 1, 2, 3, 4, 5, 6]), None);
        let m = parse_dhcpv4(&v4_with(&[61, 7, 1, 1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(m.client_id_mac(), Some([1, 2, 3, 4, 5, 6]));
        let m = parse_dhcpv4(&v4_with(&[61, 1, 1])).unwrap();
        assert_eq!(m.client_id, None);
        // A DUID longer than RFC 8415 allows is not kept.
        let mut msg = vec![1, 0, 0, 1, 0, 1, 0, 200];
        msg.extend_from_slice(&[0; 200]);
        assert_eq!(parse_dhcpv6(&msg).unwrap().client_duid, None);
    }

    fn printable(s: &str) -> bool {
        s.bytes().all(|b| (0x21..0x7f).contains(&b))
    }

    /// 100,000 random mutations of the real messages, each parsed as DHCPv4 and as DHCPv6: no
    /// panic, names printable, bounds kept.
    #[test]
    fn random_mutations_never_panic() {
        let mut real = udp_payloads(V4);
        real.extend(udp_payloads(V6));
        real.extend(udp_payloads(V6_RELAY));
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: usize| {
            // xorshift64*: deterministic, so a failure reproduces.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
        };
        let (mut ok4, mut ok6) = (0, 0);
        for _ in 0..100_000 {
            let mut m = real[rand(real.len())].to_vec();
            for _ in 0..1 + rand(8) {
                if m.is_empty() {
                    m.push(rand(256) as u8);
                    continue;
                }
                let at = rand(m.len());
                match rand(6) {
                    0 => m[at] = rand(256) as u8,
                    1 => m[at] ^= 1 << rand(8),
                    2 => m[at] = [0, 1, 0xff, 0x3f, 0xc0][rand(5)],
                    3 => m.truncate(at),
                    4 => m.insert(at, rand(256) as u8),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            if let Ok(p) = parse_dhcpv4(&m) {
                ok4 += 1;
                assert!(p.host_name.as_deref().is_none_or(printable));
                assert!(p.fqdn.as_ref().is_none_or(|f| printable(&f.name)));
                assert!(p.client_id.as_ref().is_none_or(|c| c.len() <= 255));
            }
            if let Ok(p) = parse_dhcpv6(&m) {
                ok6 += 1;
                assert!(p.fqdn.as_ref().is_none_or(|f| printable(&f.name) && f.name.len() <= 4 * MAX_NAME_WIRE));
                assert!(p.ia_na.len() <= MAX_IA_NA && p.ia_na.iter().all(|ia| ia.addresses.len() <= MAX_IA_ADDRESSES));
                assert!(p.client_duid.as_ref().is_none_or(|d| d.len() <= MAX_DUID));
            }
        }
        // Enough mutated messages must still parse for the test to reach past the headers
        // (about 6,600 and 7,700 with this seed).
        assert!(ok4 > 5_000 && ok6 > 5_000, "{ok4} {ok6}");
    }
}
