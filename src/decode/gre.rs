//! GRE (RFC 2784 with RFC 2890's key and sequence number; RFC 1701's routing skipped over)
//! and ERSPAN type I, II and III carried in it.

use super::ether::{ETH_IPV4, ETH_IPV6, ETH_MPLS, ETH_MPLS_MC, ETH_TEB};
use super::{Ctx, Proto, SkipCause, Step, TunnelKind, TunnelLayer, Tunnels, be16, be32};

const GRE_C: u16 = 0x8000;
const GRE_R: u16 = 0x4000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;

const GRE_ERSPAN_2: u16 = 0x88be;
const GRE_ERSPAN_3: u16 = 0x22eb;
const GRE_PPP: u16 = 0x880b;

const L: Option<TunnelKind> = Some(TunnelKind::Gre);
const LE: Option<TunnelKind> = Some(TunnelKind::Erspan);
const TOO_DEEP: Step<'static> = Step::Skip(SkipCause::TooDeep);

pub(super) fn gre<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let h = match header(data) {
        Gre::V0(h) => h,
        Gre::V1 => {
            // PPTP's enhanced GRE (RFC 2637): not followed.
            if !cx.enter(TunnelLayer::new(TunnelKind::Gre, None)) {
                return TOO_DEEP;
            }
            return Step::Skip(SkipCause::GreVersion(1));
        }
        Gre::Malformed(what) => return Step::Malformed(L, what),
    };
    if !cx.enter(TunnelLayer::new(TunnelKind::Gre, h.key)) {
        return TOO_DEEP;
    }
    if h.key.is_some() {
        cx.overlay = h.key;
    }
    let inner = h.inner;
    match h.proto {
        ETH_IPV4 | ETH_IPV6 => Step::Next(Proto::Ip, inner),
        ETH_TEB => Step::Next(Proto::Ether, inner),
        GRE_ERSPAN_2 if !h.seq => {
            // Type I: no ERSPAN header.
            if !cx.enter(TunnelLayer::new(TunnelKind::Erspan, None)) {
                return TOO_DEEP;
            }
            Step::Next(Proto::Ether, inner)
        }
        GRE_ERSPAN_2 => match erspan2(inner) {
            Ok((layer, inner)) if cx.enter(layer) => Step::Next(Proto::Ether, inner),
            Ok(_) => TOO_DEEP,
            Err(what) => Step::Malformed(LE, what),
        },
        GRE_ERSPAN_3 => match erspan3(inner) {
            Ok((layer, frame_type, inner)) => {
                if !cx.enter(layer) {
                    return TOO_DEEP;
                }
                match frame_type {
                    0 => Step::Next(Proto::Ether, inner),
                    2 => Step::Next(Proto::Ip, inner),
                    _ => Step::Malformed(LE, "ERSPAN III frame type neither Ethernet nor IP"),
                }
            }
            Err(what) => Step::Malformed(LE, what),
        },
        ETH_MPLS | ETH_MPLS_MC => Step::Next(Proto::Mpls, inner),
        GRE_PPP => Step::Next(Proto::Ppp, inner),
        p => Step::Skip(SkipCause::GreProto(p)),
    }
}

/// A GRE header of version 0, read.
struct GreHeader<'a> {
    key: Option<u32>,
    /// The S flag: a sequence number is present (it tells ERSPAN II from type I).
    seq: bool,
    proto: u16,
    inner: &'a [u8],
}

enum Gre<'a> {
    V0(GreHeader<'a>),
    /// PPTP's enhanced GRE.
    V1,
    Malformed(&'static str),
}

fn header(data: &[u8]) -> Gre<'_> {
    let (Some(flags), Some(proto)) = (be16(data, 0), be16(data, 2)) else {
        return Gre::Malformed("GRE header truncated");
    };
    match flags & 7 {
        0 => {}
        1 => return Gre::V1,
        _ => return Gre::Malformed("GRE version neither 0 nor 1"),
    }
    let mut at = 4;
    if flags & (GRE_C | GRE_R) != 0 {
        at += 4; // checksum and offset (RFC 1701) or reserved1 (RFC 2784)
    }
    let mut key = None;
    if flags & GRE_K != 0 {
        let Some(k) = be32(data, at) else { return Gre::Malformed("GRE key truncated") };
        key = Some(k);
        at += 4;
    }
    let seq = flags & GRE_S != 0;
    if seq {
        at += 4;
    }
    if flags & GRE_R != 0 {
        // Source route entries: address family(2) offset(1) length(1) and `length` bytes,
        // ended by one with family 0 and length 0.
        let mut n = 0;
        loop {
            let (Some(af), Some(&len)) = (be16(data, at), data.get(at + 3)) else {
                return Gre::Malformed("GRE routing truncated");
            };
            at += 4 + usize::from(len);
            n += 1;
            if af == 0 && len == 0 {
                break;
            }
            if n > 16 {
                return Gre::Malformed("GRE routing too long");
            }
        }
    }
    match data.get(at..) {
        Some(inner) => Gre::V0(GreHeader { key, seq, proto, inner }),
        None => Gre::Malformed("GRE header truncated"),
    }
}

/// The Ethernet frame a GRE header carries bridged (0x6558) or mirrored (ERSPAN I, II, III of
/// an Ethernet frame), for the tunnel fast path: the layers go on `tunnels`, as [`gre`] adds
/// them; returns the overlay id (the GRE key) and the frame. None for anything else, including
/// what [`gre`] counts as malformed.
#[inline]
pub(super) fn ether_in_gre<'a>(data: &'a [u8], tunnels: &mut Tunnels) -> Option<(Option<u32>, &'a [u8])> {
    let Gre::V0(h) = header(data) else { return None };
    let gre = TunnelLayer::new(TunnelKind::Gre, h.key);
    let (erspan, inner) = match h.proto {
        ETH_TEB => (None, h.inner),
        GRE_ERSPAN_2 if !h.seq => (Some(TunnelLayer::new(TunnelKind::Erspan, None)), h.inner),
        GRE_ERSPAN_2 => erspan2(h.inner).ok().map(|(l, inner)| (Some(l), inner))?,
        GRE_ERSPAN_3 => match erspan3(h.inner) {
            Ok((l, 0, inner)) => (Some(l), inner),
            _ => return None,
        },
        _ => return None,
    };
    if !tunnels.push(gre) || erspan.is_some_and(|l| !tunnels.push(l)) {
        return None;
    }
    Some((h.key, inner))
}

fn erspan_layer(vlan: u16, session: u16) -> TunnelLayer {
    TunnelLayer::new(TunnelKind::Erspan, Some(u32::from(session & 0x03ff))).with_vlan(vlan & 0x0fff)
}

/// ERSPAN type II: Ver(4)=1 VLAN(12) | COS(3) En(2) T(1) session id(10) | reserved(12) index(20).
fn erspan2(data: &[u8]) -> Result<(TunnelLayer, &[u8]), &'static str> {
    let (Some(a), Some(b), Some(inner)) = (be16(data, 0), be16(data, 2), data.get(8..)) else {
        return Err("ERSPAN II header truncated");
    };
    if a >> 12 != 1 {
        return Err("ERSPAN II version not 1");
    }
    Ok((erspan_layer(a, b), inner))
}

/// ERSPAN type III: Ver(4)=2 VLAN(12) | COS(3) BSO(2) T(1) session id(10) | timestamp(32) |
/// SGT(16) | P(1) FT(5) HW ID(6) D(1) Gra(2) O(1), then an 8-byte platform sub-header if O.
/// Returns the layer, the frame type (0 Ethernet, 2 IP) and what follows.
fn erspan3(data: &[u8]) -> Result<(TunnelLayer, u8, &[u8]), &'static str> {
    let (Some(a), Some(b), Some(&flags_hi), Some(&flags_lo)) =
        (be16(data, 0), be16(data, 2), data.get(10), data.get(11))
    else {
        return Err("ERSPAN III header truncated");
    };
    if a >> 12 != 2 {
        return Err("ERSPAN III version not 2");
    }
    let len = if flags_lo & 1 != 0 { 20 } else { 12 };
    let Some(inner) = data.get(len..) else { return Err("ERSPAN III sub-header truncated") };
    Ok((erspan_layer(a, b), (flags_hi >> 2) & 0x1f, inner))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn gre_frame(gre: &[u8]) -> Vec<u8> {
        eth(0x0800, &ipv4_raw(47, gre))
    }

    #[test]
    fn gre_key_checksum_sequence() {
        let cfg = DecodeConfig::default();
        let ip = ipv4_tcp(80);
        // C, K and S: checksum+reserved, key 0x01020304, sequence.
        let f = gre_frame(&cat(&[&[0xb0, 0, 0x08, 0], &[0; 4], &[1, 2, 3, 4], &[0, 0, 0, 9], &ip]));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Gre, Some(0x01020304))]);
        assert_eq!(d.dport, 80);
        assert_eq!(d.vlan.overlay(), None, "not split by default");
        all_truncations(1, &f);
        // Without any option.
        let f = gre_frame(&cat(&[&[0, 0, 0x86, 0xdd], &ipv6_udp(53, b"x")]));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).tunnels.as_slice()[0].id(), None);
        // RFC 1701 routing: one SRE of 4 bytes, then the terminating one.
        let f = gre_frame(&cat(&[&[0x40, 0, 0x08, 0], &[0; 4], &[0, 2, 0, 4, 1, 2, 3, 4], &[0, 0, 0, 0], &ip]));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).dport, 80);
    }

    #[test]
    fn split_by_gre_key() {
        let cfg = DecodeConfig { split_by_overlay: true, ..DecodeConfig::default() };
        let f = gre_frame(&cat(&[&[0x20, 0, 0x08, 0], &[0, 0, 0, 42], &ipv4_tcp(80)]));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).vlan.overlay(), Some(42));
        assert_eq!(packet(&decode_with(&DecodeConfig::default(), 1, &f)).vlan.overlay(), None);
    }

    #[test]
    fn gre_skips_and_malformed() {
        let cfg = DecodeConfig::default();
        let f = gre_frame(&[0x30, 0x01, 0x88, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0]);
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert_eq!(s.cause, SkipCause::GreVersion(1));
        let f = gre_frame(&[0, 0, 0x12, 0x34, 0, 0, 0, 0]);
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert_eq!(s.cause.to_string(), "GRE protocol 0x1234");
        assert_eq!(kinds(&s.tunnels), [TunnelKind::Gre]);
        // Key flag without the key: truncated.
        let f = gre_frame(&[0x20, 0, 0x08, 0, 0, 0]);
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Gre));
        let f = gre_frame(&[0, 3, 0x08, 0]);
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Gre));
        // Routing entry longer than the packet.
        let f = gre_frame(&[0x40, 0, 0x08, 0, 0, 0, 0, 0, 0, 2, 0, 200, 1]);
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Gre));
    }

    #[test]
    fn erspan_types() {
        let cfg = DecodeConfig::default();
        let inner = eth_from([7; 6], 0x0800, &ipv4_tcp(443));
        // Type I: no sequence flag, Ethernet follows GRE.
        let f = gre_frame(&cat(&[&[0, 0, 0x88, 0xbe], &inner]));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(kinds(&d.tunnels), [TunnelKind::Gre, TunnelKind::Erspan]);
        assert_eq!(d.src_mac, Some([7; 6]));
        // Type II: version 1, VLAN 12, session 0x155.
        let f = gre_frame(&cat(&[&[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1], &[0x10, 0x0c, 0x01, 0x55, 0, 0, 0, 0], &inner]));
        let d = packet(&decode_with(&cfg, 1, &f));
        let e = d.tunnels.as_slice()[1];
        assert_eq!((e.kind, e.id(), e.vlan()), (TunnelKind::Erspan, Some(0x155), Some(12)));
        assert_eq!(d.dport, 443);
        all_truncations(1, &f);
        let bad = gre_frame(&cat(&[&[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1], &[0x20, 0x0c, 0x01, 0x55, 0, 0, 0, 0], &inner]));
        assert_malformed(&decode_with(&cfg, 1, &bad), Some(TunnelKind::Erspan));
    }

    #[test]
    fn erspan3_with_vlan_frame_carrying_vxlan() {
        let cfg = DecodeConfig::default();
        // Innermost: Ethernet/IPv4/TCP in VXLAN VNI 5000, in UDP, in IPv4, in a VLAN 33 frame.
        let host = eth_from([0xaa; 6], 0x0800, &ipv4_tcp(443));
        let vx = cat(&[&[0x08, 0, 0, 0, 0, 0x13, 0x88, 0], &host]);
        let mirrored = eth_from([5; 6], 0x8100, &cat(&[&vlan_tag(33, 0x0800), &ipv4_udp_raw(4789, &vx)]));
        // ERSPAN III: ver 2, VLAN 33, session 7, O flag set: 8-byte platform sub-header.
        let e3 = cat(&[&[0x20, 0x21, 0x00, 0x07], &[0; 4], &[0, 0], &[0x00, 0x01], &[0; 8]]);
        let f = eth(0x0800, &ipv4_raw(47, &cat(&[&[0, 0, 0x22, 0xeb], &e3, &mirrored])));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(kinds(&d.tunnels), [TunnelKind::Gre, TunnelKind::Erspan, TunnelKind::Vxlan]);
        let e = d.tunnels.as_slice()[1];
        assert_eq!((e.id(), e.vlan()), (Some(7), Some(33)));
        assert_eq!(d.tunnels.as_slice()[2].id(), Some(5000));
        assert_eq!(d.src_mac, Some([0xaa; 6]));
        assert!(d.vlan.is_empty(), "the VLAN of the VXLAN carrier is not the host's");
        assert_eq!(d.dport, 443);
        all_truncations(1, &f);
        // O flag set but no room for the sub-header.
        let e3 = cat(&[&[0x20, 0x21, 0x00, 0x07], &[0; 4], &[0, 0], &[0x00, 0x01], &[0; 3]]);
        let f = eth(0x0800, &ipv4_raw(47, &cat(&[&[0, 0, 0x22, 0xeb], &e3])));
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Erspan));
    }
}
