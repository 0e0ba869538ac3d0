//! UDP, and the tunnels recognised by UDP port: VXLAN (RFC 7348), Geneve (RFC 8926), Teredo
//! (RFC 4380). What does not look like the tunnel is a plain UDP packet to that port.

use super::ether::{ETH_IPV4, ETH_IPV6, ETH_TEB};
use super::{Ctx, DecodeConfig, Proto, SkipCause, Step, Transport, TunnelKind, TunnelLayer, Tunnels};

const TEREDO_PORT: u16 = 3544;

/// Whether a UDP packet with these ports is looked at as a tunnel.
#[inline]
pub(super) fn maybe_tunnel(cfg: &DecodeConfig, sport: u16, dport: u16) -> bool {
    cfg.is_vxlan_port(dport)
        || cfg.is_geneve_port(dport)
        || cfg.is_vxlan_port(sport)
        || cfg.is_geneve_port(sport)
        || (cfg.teredo && (sport == TEREDO_PORT || dport == TEREDO_PORT))
}

#[inline]
pub(super) fn udp<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let Ok(u) = etherparse::UdpSlice::from_slice_lax(data) else { return Step::Malformed(None, "bad UDP header") };
    let (sport, dport, payload) = (u.source_port(), u.destination_port(), u.payload());
    if cx.cfg.is_vxlan_port(dport) {
        if let Some(step) = vxlan(payload, cx) {
            return step;
        }
    } else if cx.cfg.is_geneve_port(dport) {
        if let Some(step) = geneve(payload, cx) {
            return step;
        }
    } else if cx.cfg.is_vxlan_port(sport) && strict_vxlan(payload) {
        // Endpoints send to the VXLAN port; some tools and captures also answer from it. Only a
        // header that is exactly VXLAN's (flags 0x08, reserved bits zero) is taken there.
        if let Some(step) = vxlan(payload, cx) {
            return step;
        }
    } else if cx.cfg.is_geneve_port(sport) && strict_geneve(payload) {
        if let Some(step) = geneve(payload, cx) {
            return step;
        }
    } else if cx.cfg.teredo
        && (sport == TEREDO_PORT || dport == TEREDO_PORT)
        && let Some(step) = teredo(payload, cx)
    {
        return step;
    }
    Step::Packet((sport, dport, Transport::Udp, payload))
}

/// VXLAN: flags(8) with I (0x08) | reserved(24) | VNI(24) | reserved(8), then Ethernet.
/// None: not VXLAN (empty, or no I flag), a plain UDP packet. Shorter than the header: a
/// truncated VXLAN header, counted as malformed rather than passed as a UDP packet.
fn vxlan<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Option<Step<'a>> {
    if data.is_empty() {
        return None;
    }
    if data.len() < 8 {
        return Some(Step::Malformed(Some(TunnelKind::Vxlan), "VXLAN header truncated"));
    }
    let (vni, inner) = vxlan_header(data)?;
    if !cx.enter(TunnelLayer::new(TunnelKind::Vxlan, Some(vni))) {
        return Some(Step::Skip(SkipCause::TooDeep));
    }
    cx.overlay = Some(vni);
    Some(Step::Next(Proto::Ether, inner))
}

/// A whole VXLAN header with the I flag: the VNI and the Ethernet frame after it.
#[inline]
fn vxlan_header(data: &[u8]) -> Option<(u32, &[u8])> {
    let h = data.get(..8)?;
    (h[0] & 0x08 != 0).then(|| (u32::from_be_bytes([0, h[4], h[5], h[6]]), &data[8..]))
}

/// A VXLAN header with nothing but the I flag and the VNI set.
fn strict_vxlan(d: &[u8]) -> bool {
    matches!(d, [0x08, 0, 0, 0, _, _, _, 0, _, ..])
}

/// A Geneve header of version 0 carrying Ethernet, IPv4 or IPv6.
fn strict_geneve(d: &[u8]) -> bool {
    d.len() > 8 && d[0] >> 6 == 0 && matches!(u16::from_be_bytes([d[2], d[3]]), ETH_TEB | ETH_IPV4 | ETH_IPV6)
}

/// Geneve: Ver(2)=0 Opt len(6) | O C rsvd(6) | protocol type(16) | VNI(24) | reserved(8),
/// then `opt len` 4-byte words of options. None: not Geneve (version not 0, too short).
fn geneve<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Option<Step<'a>> {
    let (vni, proto, inner) = geneve_header(data)?;
    let Some(inner) = inner else {
        return Some(Step::Malformed(Some(TunnelKind::Geneve), "Geneve options beyond the packet"));
    };
    if !cx.enter(TunnelLayer::new(TunnelKind::Geneve, Some(vni))) {
        return Some(Step::Skip(SkipCause::TooDeep));
    }
    cx.overlay = Some(vni);
    Some(match proto {
        ETH_TEB => Step::Next(Proto::Ether, inner),
        ETH_IPV4 | ETH_IPV6 => Step::Next(Proto::Ip, inner),
        // The protocol type is an ether type.
        et => Step::Next(Proto::EtherType(et), inner),
    })
}

/// A Geneve header of version 0: the VNI, the protocol type, and what follows the options
/// (None when they run beyond the packet).
#[inline]
fn geneve_header(data: &[u8]) -> Option<(u32, u16, Option<&[u8]>)> {
    let h = data.get(..8)?;
    if h[0] >> 6 != 0 {
        return None;
    }
    let len = 8 + usize::from(h[0] & 0x3f) * 4;
    Some((u32::from_be_bytes([0, h[4], h[5], h[6]]), u16::from_be_bytes([h[2], h[3]]), data.get(len..)))
}

/// The Ethernet frame a UDP header carries in VXLAN or Geneve, decided as [`udp`] decides
/// (the same ports, in the same order, and the same checks), for the tunnel fast path: the
/// layer goes on `tunnels`; returns the VNI and the frame. None for anything else, including
/// what [`udp`] counts as malformed.
#[inline]
pub(super) fn ether_in_udp<'a>(cfg: &DecodeConfig, data: &'a [u8], tunnels: &mut Tunnels) -> Option<(u32, &'a [u8])> {
    let u = etherparse::UdpSlice::from_slice_lax(data).ok()?;
    let (sport, dport, payload) = (u.source_port(), u.destination_port(), u.payload());
    let vxlan = if cfg.is_vxlan_port(dport) {
        true
    } else if cfg.is_geneve_port(dport) {
        false
    } else if cfg.is_vxlan_port(sport) && strict_vxlan(payload) {
        true
    } else if cfg.is_geneve_port(sport) && strict_geneve(payload) {
        false
    } else {
        return None;
    };
    let (kind, vni, inner) = if vxlan {
        let (vni, inner) = vxlan_header(payload)?;
        (TunnelKind::Vxlan, vni, inner)
    } else {
        match geneve_header(payload)? {
            (vni, ETH_TEB, Some(inner)) => (TunnelKind::Geneve, vni, inner),
            _ => return None,
        }
    };
    tunnels.push(TunnelLayer::new(kind, Some(vni))).then_some((vni, inner))
}

/// Teredo: an optional authentication indicator (00 01, id len, auth len, id, auth, nonce(8),
/// confirmation(1)), an optional origin indicator (00 00, port(2), address(4)), then IPv6.
/// None: no IPv6 header there, a plain UDP packet.
fn teredo<'a>(mut data: &'a [u8], cx: &mut Ctx<'_>) -> Option<Step<'a>> {
    const L: Option<TunnelKind> = Some(TunnelKind::Teredo);
    if let [0x00, 0x01, id_len, au_len, ..] = *data {
        let len = 4 + usize::from(id_len) + usize::from(au_len) + 9;
        let Some(rest) = data.get(len..) else {
            return Some(Step::Malformed(L, "Teredo authentication indicator beyond the packet"));
        };
        data = rest;
    }
    if let [0x00, 0x00, ..] = *data {
        let Some(rest) = data.get(8..) else {
            return Some(Step::Malformed(L, "Teredo origin indicator beyond the packet"));
        };
        data = rest;
    }
    if data.len() < 40 || data[0] >> 4 != 6 {
        return None;
    }
    if !cx.enter(TunnelLayer::new(TunnelKind::Teredo, None)) {
        return Some(Step::Skip(SkipCause::TooDeep));
    }
    Some(Step::Next(Proto::Ip, data))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn vxlan_frame(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
        let v = vni.to_be_bytes();
        let vx = cat(&[&[flags, 0, 0, 0, v[1], v[2], v[3], 0], inner]);
        eth(0x0800, &ipv4_udp_raw(4789, &vx))
    }

    #[test]
    fn vxlan() {
        let inner = eth_from([0xab; 6], 0x8100, &cat(&[&vlan_tag(12, 0x0800), &ipv4_tcp(443)]));
        let f = vxlan_frame(0x08, 0x123456, &inner);
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Vxlan, Some(0x123456))]);
        assert_eq!(d.vlan.as_slice(), &[12], "the inner frame's VLAN");
        assert_eq!(d.src_mac, Some([0xab; 6]));
        assert_eq!(d.dst, INNER_DST4);
        all_truncations(1, &f);
        // Port 8472 (Linux's old default) too.
        let vx = cat(&[&[0x08, 0, 0, 0, 0, 0, 1, 0], &inner]);
        let f2 = eth(0x0800, &ipv4_udp_raw(8472, &vx));
        assert_eq!(kinds(&packet(&decode_with(&DecodeConfig::default(), 1, &f2)).tunnels), [TunnelKind::Vxlan]);
        // Not with a configuration without it.
        let cfg = DecodeConfig { vxlan_ports: [4789, 0, 0, 0], ..DecodeConfig::default() };
        assert_eq!(packet(&decode_with(&cfg, 1, &f2)).dport, 8472);
    }

    #[test]
    fn vxlan_from_the_vxlan_port_only_when_strictly_vxlan() {
        let vx = cat(&[&[0x08, 0, 0, 0, 0, 0, 42, 0], &eth(0x0800, &ipv4_tcp(443))]);
        let f = eth(0x0800, &ipv4_udp_ports(4789, 40000, &vx));
        assert_eq!(packet(&decode_with(&DecodeConfig::default(), 1, &f)).dport, 443);
        // A reserved bit set: from the port, that is not taken for VXLAN.
        let vx = cat(&[&[0x08, 0, 1, 0, 0, 0, 42, 0], &eth(0x0800, &ipv4_tcp(443))]);
        let f = eth(0x0800, &ipv4_udp_ports(4789, 40000, &vx));
        assert_eq!(packet(&decode_with(&DecodeConfig::default(), 1, &f)).dport, 40000);
    }

    #[test]
    fn vxlan_without_i_flag_is_plain_udp() {
        let inner = eth(0x0800, &ipv4_tcp(443));
        let f = vxlan_frame(0x00, 7, &inner);
        let d = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert!(d.tunnels.is_empty());
        assert_eq!((d.dport, d.transport), (4789, Transport::Udp));
        assert_eq!(d.src_mac, Some(SRC_MAC));
        // Shorter than the VXLAN header: a truncated one, malformed.
        let f = eth(0x0800, &ipv4_udp_raw(4789, &[8, 0, 0]));
        assert!(matches!(
            decode_with(&DecodeConfig::default(), 1, &f),
            Outcome::Malformed(m) if m.layer == Some(TunnelKind::Vxlan)
        ));
    }

    #[test]
    fn split_by_vni() {
        let inner = eth(0x0800, &ipv4_tcp(443));
        let f = vxlan_frame(0x08, 99, &inner);
        let on = DecodeConfig { split_by_overlay: true, ..DecodeConfig::default() };
        let a = packet(&decode_with(&on, 1, &f));
        let b = packet(&decode_with(&DecodeConfig::default(), 1, &f));
        assert_eq!(a.vlan.overlay(), Some(99));
        assert_eq!(b.vlan.overlay(), None);
        assert_eq!(a.vlan.as_slice(), b.vlan.as_slice());
        assert_ne!(a.vlan, b.vlan);
        // The innermost overlay wins: VXLAN 99 carrying GRE key 5.
        let gre = cat(&[&[0x20, 0, 0x08, 0], &[0, 0, 0, 5], &ipv4_tcp(80)]);
        let f = vxlan_frame(0x08, 99, &eth(0x0800, &ipv4_raw(47, &gre)));
        assert_eq!(packet(&decode_with(&on, 1, &f)).vlan.overlay(), Some(5));
    }

    #[test]
    fn geneve_with_options() {
        let cfg = DecodeConfig::default();
        let inner = eth_from([3; 6], 0x0800, &ipv4_tcp(22));
        // Opt len 2 words (one option: class, type, len 1 word, 4 bytes of data), protocol TEB.
        let g = cat(&[&[0x02, 0, 0x65, 0x58, 0, 0, 0x2a, 0], &[0x01, 0x02, 0x03, 0x01, 1, 2, 3, 4], &inner]);
        let f = eth(0x0800, &ipv4_udp_raw(6081, &g));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Geneve, Some(42))]);
        assert_eq!((d.src_mac, d.dport), (Some([3; 6]), 22));
        all_truncations(1, &f);
        // IPv4 directly.
        let g = cat(&[&[0x00, 0, 0x08, 0x00, 0, 0, 1, 0], &ipv4_tcp(22)]);
        let f = eth(0x0800, &ipv4_udp_raw(6081, &g));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).src_mac, None);
        // Options longer than the packet.
        let g = [0x3f, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 0];
        let f = eth(0x0800, &ipv4_udp_raw(6081, &g));
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Geneve));
        // Version 1: not Geneve.
        let g = [0x40, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 0];
        let f = eth(0x0800, &ipv4_udp_raw(6081, &g));
        assert!(packet(&decode_with(&cfg, 1, &f)).tunnels.is_empty());
    }

    #[test]
    fn teredo_with_both_indicators() {
        let cfg = DecodeConfig::default();
        let inner = ipv6_udp(53, b"query");
        // Authentication: id len 2, auth len 3, id, auth, nonce 8, confirmation 1.
        let auth = cat(&[&[0, 1, 2, 3], &[9, 9], &[8, 8, 8], &[0; 8], &[0]]);
        let origin = [0, 0, 0x12, 0x34, 1, 2, 3, 4];
        let f = eth(0x0800, &ipv4_udp_ports(3544, 40000, &cat(&[&auth, &origin, &inner])));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(kinds(&d.tunnels), [TunnelKind::Teredo]);
        assert_eq!((d.dst, d.dport, d.payload), (INNER_DST6, 53, &b"query"[..]));
        all_truncations(1, &f);
        // Only the origin indicator, the client side.
        let f = eth(0x0800, &ipv4_udp_ports(40000, 3544, &cat(&[&origin, &inner])));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).dport, 53);
        // Not IPv6 after the indicators: plain UDP to 3544.
        let f = eth(0x0800, &ipv4_udp_ports(40000, 3544, &cat(&[&origin, &[0x45; 40]])));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).dport, 3544);
        // Teredo off.
        let off = DecodeConfig { teredo: false, ..cfg };
        let f = eth(0x0800, &ipv4_udp_ports(40000, 3544, &inner));
        assert_eq!(packet(&decode_with(&off, 1, &f)).dport, 3544);
        // Lying authentication lengths.
        let f = eth(0x0800, &ipv4_udp_ports(40000, 3544, &[0, 1, 200, 200, 0, 0, 0, 0]));
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Teredo));
    }
}
