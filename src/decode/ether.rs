//! Ethernet II and 802.3 (LLC/SNAP), and what an ether type names: VLAN tags (802.1Q,
//! 802.1ad, old 0x9100 QinQ), Cisco VN-Tag, 802.1BR E-Tag, 802.1ah PBB, NSH (RFC 8300), and
//! the hand-off to IP, MPLS and PPPoE.

use super::{Ctx, Proto, SkipCause, Step, TunnelKind, TunnelLayer, be16, be32, mac};

pub(super) const ETH_IPV4: u16 = 0x0800;
pub(super) const ETH_ARP: u16 = 0x0806;
pub(super) const ETH_IPV6: u16 = 0x86dd;
pub(super) const ETH_VLAN: u16 = 0x8100;
pub(super) const ETH_QINQ: u16 = 0x88a8;
pub(super) const ETH_QINQ_OLD: u16 = 0x9100;
pub(super) const ETH_MPLS: u16 = 0x8847;
pub(super) const ETH_MPLS_MC: u16 = 0x8848;
pub(super) const ETH_PPPOE_DISC: u16 = 0x8863;
pub(super) const ETH_PPPOE_SESS: u16 = 0x8864;
pub(super) const ETH_VNTAG: u16 = 0x8926;
pub(super) const ETH_ETAG: u16 = 0x893f;
pub(super) const ETH_PBB: u16 = 0x88e7;
pub(super) const ETH_NSH: u16 = 0x894f;
/// Transparent Ethernet bridging (GRE, Geneve): an Ethernet frame follows.
pub(super) const ETH_TEB: u16 = 0x6558;

const TOO_DEEP: Step<'static> = Step::Skip(SkipCause::TooDeep);

/// An Ethernet header: MACs, then an ether type or an 802.3 length.
#[inline]
pub(super) fn ethernet<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let Some(h) = data.get(..14) else { return Step::Malformed(None, "frame shorter than its Ethernet header") };
    cx.src_mac = mac(&h[6..]);
    by_ether_type(u16::from_be_bytes([h[12], h[13]]), &data[14..], cx)
}

/// Follows an ether type through tags in the same frame to the next protocol.
#[inline]
pub(super) fn by_ether_type<'a>(mut et: u16, mut rest: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    loop {
        match et {
            ETH_IPV4 | ETH_IPV6 => return Step::Next(Proto::Ip, rest),
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => {
                let Some(tag) = rest.get(..4) else { return Step::Malformed(None, "VLAN tag truncated") };
                cx.vlan.push(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
                et = u16::from_be_bytes([tag[2], tag[3]]);
                rest = &rest[4..];
            }
            _ => return other(et, rest, cx),
        }
    }
}

/// The less common ether types, out of the way of the VLAN/IP loop.
#[inline(never)]
fn other<'a>(et: u16, rest: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    match et {
        ETH_MPLS | ETH_MPLS_MC => Step::Next(Proto::Mpls, rest),
        ETH_PPPOE_SESS => Step::Next(Proto::Pppoe, rest),
        ETH_TEB => Step::Next(Proto::Ether, rest),
        ETH_VNTAG => {
            // d(1) p(1) dst vif(14) | l(1) r(1) ver(2) src vif(12), then the next ether type.
            let (Some(tag), Some(next)) = (be32(rest, 0), be16(rest, 4)) else {
                return Step::Malformed(Some(TunnelKind::Vntag), "VN-Tag truncated");
            };
            if !cx.tag(TunnelLayer::new(TunnelKind::Vntag, Some((tag >> 16) & 0x3fff))) {
                return TOO_DEEP;
            }
            by_ether_type(next, &rest[6..], cx)
        }
        ETH_ETAG => {
            // E-PCP(3) E-DEI(1) ingress E-CID base(12) | res(2) GRP(2) E-CID base(12) |
            // ingress E-CID ext(8) E-CID ext(8), then the next ether type.
            let (Some(h), Some(next)) = (rest.get(..6), be16(rest, 6)) else {
                return Step::Malformed(Some(TunnelKind::Etag), "E-Tag truncated");
            };
            let ecid = (u32::from(h[5]) << 12) | u32::from(u16::from_be_bytes([h[2], h[3]]) & 0x0fff);
            if !cx.tag(TunnelLayer::new(TunnelKind::Etag, Some(ecid))) {
                return TOO_DEEP;
            }
            by_ether_type(next, &rest[8..], cx)
        }
        ETH_PBB => {
            // I-TAG: PCP(3) DEI(1) UCA(1) res(3) I-SID(24), then the customer's Ethernet header.
            let Some(isid) = be32(rest, 0) else { return Step::Malformed(Some(TunnelKind::Pbb), "I-TAG truncated") };
            if !cx.enter(TunnelLayer::new(TunnelKind::Pbb, Some(isid & 0x00ff_ffff))) {
                return TOO_DEEP;
            }
            Step::Next(Proto::Ether, &rest[4..])
        }
        ETH_NSH => nsh(rest, cx),
        et if et < 0x0600 => llc(rest, cx),
        _ => Step::Skip(SkipCause::EtherType(et)),
    }
}

/// An 802.3 frame: IP only behind a SNAP header with a zero OUI (RFC 1042).
fn llc<'a>(rest: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    match rest.get(..8) {
        Some([0xaa, 0xaa, 0x03, 0, 0, 0, a, b]) if u16::from_be_bytes([*a, *b]) >= 0x0600 => {
            by_ether_type(u16::from_be_bytes([*a, *b]), &rest[8..], cx)
        }
        _ => Step::Skip(SkipCause::Llc),
    }
}

/// NSH (RFC 8300): base header, service path header, context headers.
fn nsh<'a>(rest: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    const L: Option<TunnelKind> = Some(TunnelKind::Nsh);
    // Ver(2) O(1) U(1) TTL(6) Length(6) | U(4) MD type(4) | next protocol(8) | SPI(24) SI(8)
    let Some(h) = rest.get(..8) else { return Step::Malformed(L, "NSH header truncated") };
    if h[0] >> 6 != 0 {
        return Step::Malformed(L, "NSH version not 0");
    }
    let len = usize::from(h[1] & 0x3f) * 4;
    if len < 8 {
        return Step::Malformed(L, "NSH length shorter than its base header");
    }
    let Some(inner) = rest.get(len..) else { return Step::Malformed(L, "NSH length beyond the packet") };
    let spi = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    if !cx.enter(TunnelLayer::new(TunnelKind::Nsh, Some(spi))) {
        return TOO_DEEP;
    }
    match h[3] {
        1 | 2 => Step::Next(Proto::Ip, inner),
        3 => Step::Next(Proto::Ether, inner),
        4 => Step::Next(Proto::EtherType(ETH_NSH), inner),
        5 => Step::Next(Proto::Mpls, inner),
        p => Step::Skip(SkipCause::NshProto(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
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
        assert!(d.tunnels.is_empty());
        all_truncations(link::LINKTYPE_ETHERNET, &frame);
    }

    #[test]
    fn arp_lldp_stp_are_benign() {
        let cfg = DecodeConfig::default();
        for (et, cause) in [
            (ETH_ARP, SkipCause::EtherType(ETH_ARP)),
            (0x88cc, SkipCause::EtherType(0x88cc)),
            (0x0026, SkipCause::Llc),
            (ETH_PPPOE_DISC, SkipCause::EtherType(ETH_PPPOE_DISC)),
        ] {
            let f = eth(et, &[0x42; 40]);
            let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
            assert_eq!(s.cause, cause);
            assert!(s.cause.benign());
            assert_eq!(s.kind(), Skip::NotIp);
        }
        let f = eth(0x88e5, &[0; 40]); // MACsec: encrypted, not benign
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert!(!s.cause.benign());
        assert_eq!(s.cause.to_string(), "EtherType 0x88e5");
        // The legacy interface still says NotIp.
        assert!(matches!(decode(1, &f), Outcome::Skipped(Skip::NotIp)));
    }

    #[test]
    fn llc_snap_ip() {
        let ip = ipv4_tcp(443);
        let mut body = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
        body.extend_from_slice(&ip);
        let f = eth(body.len() as u16, &body);
        assert_tcp(&decode(1, &f), 443);
    }

    #[test]
    fn vntag_and_etag_keep_the_host() {
        let ip = ipv4_tcp(80);
        // VN-Tag then a VLAN tag then IPv4.
        let f = eth(ETH_VNTAG, &cat(&[&[0x80, 0x05, 0x00, 0x07, 0x81, 0x00], &vlan_tag(30, 0x0800), &ip]));
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(d.vlan.as_slice(), &[30]);
        assert_eq!(d.src_mac, Some(SRC_MAC));
        assert_eq!(kinds(&d.tunnels), [TunnelKind::Vntag]);
        assert_eq!(d.tunnels.as_slice()[0].id(), Some(5));
        // E-Tag: 6 bytes then the ether type.
        let f = eth(ETH_ETAG, &cat(&[&[0, 0, 0x00, 0x2a, 0, 1, 0x08, 0x00], &ip]));
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(d.src_mac, Some(SRC_MAC));
        assert_eq!(d.tunnels.as_slice()[0], TunnelLayer::new(TunnelKind::Etag, Some((1 << 12) | 42)));
        all_truncations(1, &f);
    }

    #[test]
    fn pbb_resets_to_the_customer_frame() {
        let inner = eth_from([9; 6], ETH_VLAN, &cat(&[&vlan_tag(7, 0x0800), &ipv4_tcp(22)]));
        let f = eth(ETH_QINQ, &cat(&[&vlan_tag(500, ETH_PBB), &[0, 0x01, 0x02, 0x03], &inner]));
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(d.vlan.as_slice(), &[7], "the backbone VLAN is forgotten");
        assert_eq!(d.src_mac, Some([9; 6]));
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Pbb, Some(0x010203))]);
        all_truncations(1, &f);
    }

    #[test]
    fn nsh() {
        let ip = ipv4_tcp(80);
        // MD type 2, length 2 words (no context), next protocol IPv4, SPI 0x000102, SI 255.
        let f = eth(ETH_NSH, &cat(&[&[0x0f, 0xc2, 0x02, 0x01, 0x00, 0x01, 0x02, 0xff], &ip]));
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Nsh, Some(0x102))]);
        assert_eq!(d.src_mac, None);
        // MD type 1 with 16 bytes of context, then Ethernet.
        let inner = eth(0x0800, &ip);
        let mut h = vec![0x0f, 0xc6, 0x01, 0x03, 0, 0, 9, 0xfe];
        h.extend_from_slice(&[0; 16]);
        let f = eth(ETH_NSH, &cat(&[&h, &inner]));
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(d.tunnels.as_slice()[0].id(), Some(9));
        assert_eq!(d.src_mac, Some(SRC_MAC));
        all_truncations(1, &f);
        // Lying length, wrong version, unknown next protocol.
        let bad_len = eth(ETH_NSH, &[0x0f, 0xff, 0x01, 0x03, 0, 0, 9, 0xfe, 0, 0]);
        assert_malformed(&decode_with(&DecodeConfig::default(), 1, &bad_len), Some(TunnelKind::Nsh));
        let bad_ver = eth(ETH_NSH, &cat(&[&[0x4f, 0xc2, 0x02, 0x01, 0, 0, 1, 0xff], &ip]));
        assert_malformed(&decode_with(&DecodeConfig::default(), 1, &bad_ver), Some(TunnelKind::Nsh));
        let f = eth(ETH_NSH, &cat(&[&[0x0f, 0xc2, 0x02, 0x09, 0, 0, 1, 0xff], &ip]));
        let Outcome::Skipped(s) = decode_with(&DecodeConfig::default(), 1, &f) else { panic!() };
        assert_eq!((s.cause, s.tunnels.len()), (SkipCause::NshProto(9), 1));
    }

    #[test]
    fn truncated_tags_are_malformed() {
        let f = eth(ETH_VLAN, &[0, 5]);
        assert_malformed(&decode_with(&DecodeConfig::default(), 1, &f), None);
        let f = eth(ETH_VNTAG, &[0, 5, 0, 0]);
        assert_malformed(&decode_with(&DecodeConfig::default(), 1, &f), Some(TunnelKind::Vntag));
        let f = eth(ETH_PBB, &[0, 5]);
        assert_malformed(&decode_with(&DecodeConfig::default(), 1, &f), Some(TunnelKind::Pbb));
    }
}
