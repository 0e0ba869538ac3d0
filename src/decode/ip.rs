//! IPv4 and IPv6 (etherparse's lax slicer: extension headers, lengths longer than the
//! capture), then by IP protocol: TCP here, UDP, IP-in-IP (4, 41) and GRE (47) handed on.

use std::net::IpAddr;

use etherparse::LaxIpSlice;

use super::{Ctx, IPPROTO_TCP, IPPROTO_UDP, Proto, SkipCause, Step, Transport, TunnelKind, TunnelLayer};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
pub(super) const IPPROTO_GRE: u8 = 47;

/// An IPv4 or IPv6 header (by its version nibble).
#[inline]
pub(super) fn ip<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let Ok((ip, _ext_err)) = LaxIpSlice::from_slice(data) else { return Step::Malformed(None, "bad IP header") };
    (cx.src, cx.dst) = addrs(&ip);
    let pl = ip.payload();
    cx.cut |= pl.incomplete;
    if pl.fragmented {
        return fragment(&ip);
    }
    by_proto(pl.ip_number.0, pl.payload, cx)
}

/// Source and destination, read as arrays (`LaxIpSlice::source_addr` returns through memory
/// in pieces, and the caller's wide load of it stalls).
#[inline(always)]
pub(super) fn addrs(ip: &LaxIpSlice<'_>) -> (IpAddr, IpAddr) {
    match ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            (IpAddr::from(h.source()), IpAddr::from(h.destination()))
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            (IpAddr::from(h.source()), IpAddr::from(h.destination()))
        }
    }
}

#[cold]
fn fragment<'a>(ip: &LaxIpSlice<'a>) -> Step<'a> {
    let pl = ip.payload();
    let (id, offset, more) = match ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            (h.identification() as u32, h.fragments_offset().value(), h.more_fragments())
        }
        LaxIpSlice::Ipv6(v6) => {
            let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            });
            let Some(f) = frag else { return Step::Malformed(None, "IPv6 fragment without fragment header") };
            (f.identification(), f.fragment_offset().value(), f.more_fragments())
        }
    };
    Step::Fragment { id, proto: pl.ip_number.0, offset, more, payload: pl.payload }
}

/// What follows an IP header (or a reassembled datagram).
#[inline]
pub(super) fn by_proto<'a>(proto: u8, data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    match proto {
        IPPROTO_TCP => match tcp(data) {
            Some(t) => Step::Packet(t),
            None => Step::Malformed(None, "bad TCP header"),
        },
        IPPROTO_UDP => Step::Next(Proto::Udp, data),
        IPPROTO_IPIP | IPPROTO_IPV6 => {
            if !cx.enter(TunnelLayer::new(TunnelKind::Ipip, None)) {
                return Step::Skip(SkipCause::TooDeep);
            }
            Step::Next(Proto::Ip, data)
        }
        IPPROTO_GRE => Step::Next(Proto::Gre, data),
        p => Step::Skip(SkipCause::IpProto(p)),
    }
}

#[inline]
pub(super) fn tcp(data: &[u8]) -> Option<super::TransportParts<'_>> {
    let t = etherparse::TcpSlice::from_slice(data).ok()?;
    let flags = t.header_slice()[13];
    Some((t.source_port(), t.destination_port(), Transport::Tcp { seq: t.sequence_number(), flags }, t.payload()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    #[test]
    fn ip_in_ip_both_ways() {
        let inner4 = ipv4_tcp(443);
        let inner6 = ipv6_udp(53, b"q");
        let cfg = DecodeConfig::default();
        for (outer_proto, inner, v6outer) in
            [(4u8, &inner4, false), (41, &inner6, false), (4, &inner4, true), (41, &inner6, true)]
        {
            let outer = if v6outer { ipv6_raw(outer_proto, inner) } else { ipv4_raw(outer_proto, inner) };
            let f = eth(if v6outer { 0x86dd } else { 0x0800 }, &outer);
            let d = packet(&decode_with(&cfg, 1, &f));
            assert_eq!(kinds(&d.tunnels), [TunnelKind::Ipip]);
            assert_eq!(d.src_mac, None, "entering a tunnel forgets the outer MAC");
            assert!(d.dst == INNER_DST4 || d.dst == INNER_DST6);
            all_truncations(1, &f);
        }
    }

    #[test]
    fn esp_is_not_benign_icmp_is() {
        let cfg = DecodeConfig::default();
        let f = eth(0x0800, &ipv4_raw(50, &[0; 24]));
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert_eq!(s.cause, SkipCause::IpProto(50));
        assert_eq!(s.cause.to_string(), "IP protocol 50");
        assert!(!s.cause.benign());
        assert!(matches!(decode(1, &f), Outcome::Skipped(Skip::NotTcpUdp)));
        let f = eth(0x0800, &ipv4_raw(1, &[8, 0, 0, 0, 0, 0, 0, 0]));
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert!(s.cause.benign());
    }

    #[test]
    fn nine_deep_is_too_deep() {
        let cfg = DecodeConfig::default();
        // 8 encapsulations decode...
        let mut p = ipv4_tcp(80);
        for _ in 0..8 {
            p = ipv4_raw(4, &p);
        }
        let d = packet(&decode_with(&cfg, 101, &p));
        assert_eq!(d.tunnels.len(), MAX_ENCAP_DEPTH);
        // ... a 9th does not.
        let p = ipv4_raw(4, &p);
        let out = decode_with(&cfg, 101, &p);
        let Outcome::Skipped(s) = out else { panic!("{out:?}") };
        assert_eq!(s.cause, SkipCause::TooDeep);
        assert_eq!(s.cause.to_string(), "more than 8 encapsulations");
        assert_eq!(s.tunnels.len(), MAX_ENCAP_DEPTH);
        assert_eq!(out.tunnels().len(), MAX_ENCAP_DEPTH);
    }

    #[test]
    fn fragmented_gre_goes_on_after_reassembly() {
        let cfg = DecodeConfig::default();
        let inner = ipv4_tcp(8080);
        let gre = cat(&[&[0x20, 0, 0x08, 0x00, 0, 0, 0, 77], &inner]);
        // Outer IPv4 fragment 0 of 1 carries all of GRE: reassembly gives it back whole.
        let outer = ipv4_frag(47, &gre);
        let f = eth(0x0800, &outer);
        let Outcome::Fragment(fr) = decode_with(&cfg, 1, &f) else { panic!() };
        assert_eq!(fr.proto, 47);
        let d = packet(&decode_reassembled_with(&cfg, &fr, fr.payload));
        assert_eq!(d.dport, 8080);
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Gre, Some(77))]);
        // The legacy entry point too.
        assert!(decode_reassembled(&fr, fr.payload).is_packet());
    }
}
