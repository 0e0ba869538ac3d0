//! Frame builders and checks for the decoder's tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};

use super::*;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const INNER_DST4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
pub const INNER_DST6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9));

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn eth_from(src: [u8; 6], et: u16, body: &[u8]) -> Vec<u8> {
    cat(&[&[0x02, 0, 0, 0, 0, 0x02], &src, &et.to_be_bytes(), body])
}

pub fn eth(et: u16, body: &[u8]) -> Vec<u8> {
    eth_from(SRC_MAC, et, body)
}

pub fn vlan_tag(id: u16, next: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = next.to_be_bytes();
    [a, b, c, d]
}

/// IPv4/TCP 10.1.1.1:40000 -> 10.9.9.9:`dport`, ACK, payload "GET".
pub fn ipv4_tcp(dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 1, 1, 1], [10, 9, 9, 9], 64)
        .tcp(40000, dport, 1000, 1024)
        .ack(1)
        .write(&mut v, b"GET")
        .unwrap();
    v
}

/// IPv6/UDP 2001:db8::1 -> 2001:db8::9:`dport`.
pub fn ipv6_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
    s[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    d[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    s[15] = 1;
    d[15] = 9;
    PacketBuilder::ipv6(s, d, 64).udp(40001, dport).write(&mut v, payload).unwrap();
    v
}

/// An outer IPv4 header 192.0.2.1 -> 192.0.2.2 with protocol `proto`, then `payload`.
pub fn ipv4_raw(proto: u8, payload: &[u8]) -> Vec<u8> {
    let h = Ipv4Header::new(payload.len() as u16, 64, IpNumber(proto), [192, 0, 2, 1], [192, 0, 2, 2]).unwrap();
    let mut v = Vec::new();
    h.write(&mut v).unwrap();
    v.extend_from_slice(payload);
    v
}

/// Like [`ipv4_raw`], but the first fragment (more fragments set).
pub fn ipv4_frag(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload.len() as u16, 64, IpNumber(proto), [192, 0, 2, 1], [192, 0, 2, 2]).unwrap();
    h.more_fragments = true;
    let mut v = Vec::new();
    h.write(&mut v).unwrap();
    v.extend_from_slice(payload);
    v
}

pub fn ipv6_raw(proto: u8, payload: &[u8]) -> Vec<u8> {
    let h = Ipv6Header {
        payload_length: payload.len() as u16,
        next_header: IpNumber(proto),
        hop_limit: 64,
        source: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 1],
        destination: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 2],
        ..Ipv6Header::default()
    };
    let mut v = Vec::new();
    h.write(&mut v).unwrap();
    v.extend_from_slice(payload);
    v
}

/// An outer IPv4/UDP packet 192.0.2.1:`sport` -> 192.0.2.2:`dport` (checksum 0).
pub fn ipv4_udp_ports(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + 8) as u16;
    let udp = cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &len.to_be_bytes(), &[0, 0], payload]);
    ipv4_raw(17, &udp)
}

pub fn ipv4_udp_raw(dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_udp_ports(50000, dport, payload)
}

pub fn packet<'a>(o: &Decap<'a>) -> Decoded<'a> {
    match o {
        Outcome::Packet(d) => *d,
        other => panic!("not a packet: {other:?}"),
    }
}

pub fn assert_tcp(o: &Outcome<'_>, dport: u16) {
    match o {
        Outcome::Packet(d) => assert_eq!((d.dport, matches!(d.transport, Transport::Tcp { .. })), (dport, true)),
        other => panic!("not a packet: {other:?}"),
    }
}

pub fn assert_malformed(o: &Decap<'_>, layer: Option<TunnelKind>) {
    match o {
        Outcome::Malformed(m) => assert_eq!(m.layer, layer, "{m}"),
        other => panic!("not malformed: {other:?}"),
    }
}

pub fn kinds(t: &Tunnels) -> Vec<TunnelKind> {
    t.as_slice().iter().map(|l| l.kind).collect()
}

/// Every truncation of the frame decodes to something, without panicking, within the depth.
pub fn all_truncations(linktype: u32, frame: &[u8]) {
    let split = DecodeConfig { split_by_overlay: true, ..DecodeConfig::default() };
    for n in 0..=frame.len() {
        for cfg in [&DecodeConfig::default(), &split] {
            let o = decode_with(cfg, linktype, &frame[..n]);
            assert!(o.tunnels().len() <= MAX_ENCAP_DEPTH);
            if let Outcome::Fragment(f) = &o {
                let _ = decode_reassembled_with(cfg, f, f.payload);
            }
        }
        let _ = decode(linktype, &frame[..n]);
    }
}
