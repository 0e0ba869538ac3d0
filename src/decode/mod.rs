//! Decoding: link layer, VLAN tags, IPv4/IPv6 (with extension headers), TCP and UDP,
//! as borrowed slices of the frame. Fragments go to [`defrag`].

pub mod defrag;
pub mod link;

use std::net::IpAddr;

use etherparse::{LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};

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
    let (p, src_mac) = match link::slice(linktype, frame) {
        Ok(v) => v,
        Err(link::LinkError::Unsupported) => return Outcome::Skipped(Skip::UnsupportedLink),
        Err(link::LinkError::Short) => {
            return Outcome::Malformed("frame shorter than its link header");
        }
    };
    from_sliced(&p, src_mac)
}

fn vlans(p: &LaxSlicedPacket<'_>) -> VlanTags {
    let mut tags = VlanTags::default();
    for ext in &p.link_exts {
        if let LaxLinkExtSlice::Vlan(v) = ext {
            tags.push(v.vlan_identifier().value());
        }
    }
    tags
}

fn from_sliced<'a>(p: &LaxSlicedPacket<'a>, src_mac: Option<[u8; 6]>) -> Outcome<'a> {
    let vlan = vlans(p);
    let (src, dst, ip_payload) = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let pl = v4.payload();
            if pl.fragmented {
                return Outcome::Fragment(Fragment {
                    vlan,
                    src_mac,
                    src: IpAddr::V4(h.source_addr()),
                    dst: IpAddr::V4(h.destination_addr()),
                    id: h.identification() as u32,
                    proto: pl.ip_number.0,
                    offset: h.fragments_offset().value(),
                    more: h.more_fragments(),
                    payload: pl.payload,
                });
            }
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                pl,
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let pl = v6.payload();
            if pl.fragmented {
                let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                    etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                    _ => None,
                });
                let Some(f) = frag else {
                    return Outcome::Malformed("IPv6 fragment without fragment header");
                };
                return Outcome::Fragment(Fragment {
                    vlan,
                    src_mac,
                    src: IpAddr::V6(h.source_addr()),
                    dst: IpAddr::V6(h.destination_addr()),
                    id: f.identification(),
                    proto: pl.ip_number.0,
                    offset: f.fragment_offset().value(),
                    more: f.more_fragments(),
                    payload: pl.payload,
                });
            }
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                pl,
            )
        }
        Some(LaxNetSlice::Arp(_)) => return Outcome::Skipped(Skip::NotIp),
        None => {
            return match &p.stop_err {
                Some(_) => Outcome::Malformed("bad IP header"),
                None => Outcome::Skipped(Skip::NotIp),
            };
        }
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => Outcome::Packet(Decoded {
            vlan,
            src_mac,
            src,
            dst,
            sport: t.source_port(),
            dport: t.destination_port(),
            transport: Transport::Tcp {
                seq: t.sequence_number(),
                flags: t.header_slice()[13],
            },
            payload: t.payload(),
            payload_cut: ip_payload.incomplete,
        }),
        Some(TransportSlice::Udp(u)) => Outcome::Packet(Decoded {
            vlan,
            src_mac,
            src,
            dst,
            sport: u.source_port(),
            dport: u.destination_port(),
            transport: Transport::Udp,
            payload: u.payload(),
            payload_cut: ip_payload.incomplete,
        }),
        _ => match ip_payload.ip_number.0 {
            IPPROTO_TCP | IPPROTO_UDP => Outcome::Malformed("bad TCP/UDP header"),
            _ => Outcome::Skipped(Skip::NotTcpUdp),
        },
    }
}

/// Decodes the transport header of a reassembled datagram.
pub fn decode_reassembled<'a>(frag: &Fragment<'_>, datagram: &'a [u8]) -> Outcome<'a> {
    let (sport, dport, transport, payload) = match frag.proto {
        IPPROTO_TCP => match etherparse::TcpSlice::from_slice(datagram) {
            Ok(t) => (
                t.source_port(),
                t.destination_port(),
                Transport::Tcp {
                    seq: t.sequence_number(),
                    flags: t.header_slice()[13],
                },
                t.payload(),
            ),
            Err(_) => return Outcome::Malformed("bad TCP header in reassembled datagram"),
        },
        IPPROTO_UDP => match etherparse::UdpSlice::from_slice_lax(datagram) {
            Ok(u) => (
                u.source_port(),
                u.destination_port(),
                Transport::Udp,
                u.payload(),
            ),
            Err(_) => return Outcome::Malformed("bad UDP header in reassembled datagram"),
        },
        _ => return Outcome::Skipped(Skip::NotTcpUdp),
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
            .double_vlan(
                etherparse::VlanId::try_new(100).unwrap(),
                etherparse::VlanId::try_new(20).unwrap(),
            )
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5000, 53);
        let mut frame = Vec::new();
        b.write(&mut frame, b"hello").unwrap();
        let Outcome::Packet(d) = decode(link::LINKTYPE_ETHERNET, &frame) else {
            panic!()
        };
        assert_eq!(d.vlan.as_slice(), &[100, 20]);
        assert_eq!((d.sport, d.dport, d.payload), (5000, 53, &b"hello"[..]));
        assert_eq!(
            d.src_mac,
            Some([1; 6]),
            "the builder takes the source MAC first"
        );
        // Every truncation decodes to something without panicking.
        for n in 0..frame.len() {
            let _ = decode(link::LINKTYPE_ETHERNET, &frame[..n]);
        }
    }

    #[test]
    fn unknown_link_is_skipped() {
        assert!(matches!(
            decode(147, b"abcd"),
            Outcome::Skipped(Skip::UnsupportedLink)
        ));
    }
}
