//! Decoding: link layer, VLAN tags, IPv4/IPv6 (with extension headers), TCP and UDP,
//! as borrowed slices of the frame. Fragments go to [`defrag`].

pub mod defrag;
pub mod link;

use std::net::IpAddr;

use etherparse::LaxIpSlice;

/// Up to three VLAN ids, outer first (802.1ad / QinQ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanTags {
    ids: [u16; 3],
    len: u8,
}

impl VlanTags {
    pub fn push(&mut self, id: u16) {
        if (self.len as usize) < self.ids.len() {
            self.ids[self.len as usize] = id;
            self.len += 1;
        }
    }
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp { seq: u32, flags: u8 },
    Udp,
}

/// A decoded TCP or UDP packet.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    pub vlan: VlanTags,
    pub src_mac: Option<[u8; 6]>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub payload: &'a [u8],
    /// The capture cut the payload short (snap length).
    pub payload_cut: bool,
}

/// One IP fragment, to be reassembled.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    pub vlan: VlanTags,
    pub src_mac: Option<[u8; 6]>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// ARP, LLDP, ... : no IP layer.
    NotIp,
    /// ICMP, ESP, ... : IP but neither TCP nor UDP.
    NotTcpUdp,
    UnsupportedLink,
}

#[derive(Debug)]
pub enum Outcome<'a> {
    Packet(Decoded<'a>),
    Fragment(Fragment<'a>),
    Skipped(Skip),
    Malformed(&'static str),
}

impl Outcome<'_> {
    pub fn is_packet(&self) -> bool {
        matches!(self, Outcome::Packet(_))
    }
}

/// Decodes one frame.
pub fn decode(linktype: u32, frame: &[u8]) -> Outcome<'_> {
    let l = match link::slice(linktype, frame) {
        Ok(l) => l,
        Err(link::LinkError::Unsupported) => return Outcome::Skipped(Skip::UnsupportedLink),
        Err(link::LinkError::NotIp) => return Outcome::Skipped(Skip::NotIp),
        Err(link::LinkError::Short) => return Outcome::Malformed("frame shorter than its link header"),
    };
    let Ok((ip, _ext_err)) = LaxIpSlice::from_slice(l.ip) else { return Outcome::Malformed("bad IP header") };
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let pl = ip.payload();
    if pl.fragmented {
        let (id, offset, more) = match &ip {
            LaxIpSlice::Ipv4(v4) => {
                let h = v4.header();
                (h.identification() as u32, h.fragments_offset().value(), h.more_fragments())
            }
            LaxIpSlice::Ipv6(v6) => {
                let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                    etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                    _ => None,
                });
                let Some(f) = frag else { return Outcome::Malformed("IPv6 fragment without fragment header") };
                (f.identification(), f.fragment_offset().value(), f.more_fragments())
            }
        };
        return Outcome::Fragment(Fragment {
            vlan: l.vlan,
            src_mac: l.src_mac,
            src,
            dst,
            id,
            proto: pl.ip_number.0,
            offset,
            more,
            payload: pl.payload,
        });
    }
    let (sport, dport, transport, payload) = match transport(pl.ip_number.0, pl.payload) {
        Ok(Some(t)) => t,
        Ok(None) => return Outcome::Skipped(Skip::NotTcpUdp),
        Err(e) => return Outcome::Malformed(e),
    };
    Outcome::Packet(Decoded {
        vlan: l.vlan,
        src_mac: l.src_mac,
        src,
        dst,
        sport,
        dport,
        transport,
        payload,
        payload_cut: pl.incomplete,
    })
}

type TransportParts<'a> = (u16, u16, Transport, &'a [u8]);

/// TCP or UDP header and payload; `None` for other protocols.
fn transport(proto: u8, data: &[u8]) -> Result<Option<TransportParts<'_>>, &'static str> {
    match proto {
        IPPROTO_TCP => {
            let t = etherparse::TcpSlice::from_slice(data).map_err(|_| "bad TCP header")?;
            let flags = t.header_slice()[13];
            Ok(Some((
                t.source_port(),
                t.destination_port(),
                Transport::Tcp { seq: t.sequence_number(), flags },
                t.payload(),
            )))
        }
        IPPROTO_UDP => {
            let u = etherparse::UdpSlice::from_slice_lax(data).map_err(|_| "bad UDP header")?;
            Ok(Some((u.source_port(), u.destination_port(), Transport::Udp, u.payload())))
        }
        _ => Ok(None),
    }
}

/// Decodes the transport header of a reassembled datagram.
pub fn decode_reassembled<'a>(frag: &Fragment<'_>, datagram: &'a [u8]) -> Outcome<'a> {
    let (sport, dport, transport, payload) = match transport(frag.proto, datagram) {
        Ok(Some(t)) => t,
        Ok(None) => return Outcome::Skipped(Skip::NotTcpUdp),
        Err(e) => return Outcome::Malformed(e),
    };
    Outcome::Packet(Decoded {
        vlan: frag.vlan,
        src_mac: frag.src_mac,
        src: frag.src,
        dst: frag.dst,
        sport,
        dport,
        transport,
        payload,
        payload_cut: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qinq_udp() {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(etherparse::VlanId::try_new(100).unwrap(), etherparse::VlanId::try_new(20).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5000, 53);
        let mut frame = Vec::new();
        b.write(&mut frame, b"hello").unwrap();
        let Outcome::Packet(d) = decode(link::LINKTYPE_ETHERNET, &frame) else { panic!() };
        assert_eq!(d.vlan.as_slice(), &[100, 20]);
        assert_eq!((d.sport, d.dport, d.payload), (5000, 53, &b"hello"[..]));
        assert_eq!(d.src_mac, Some([1; 6]), "the builder takes the source MAC first");
        // Every truncation decodes to something without panicking.
        for n in 0..frame.len() {
            let _ = decode(link::LINKTYPE_ETHERNET, &frame[..n]);
        }
    }

    #[test]
    fn unknown_link_is_skipped() {
        assert!(matches!(decode(147, b"abcd"), Outcome::Skipped(Skip::UnsupportedLink)));
    }
}
