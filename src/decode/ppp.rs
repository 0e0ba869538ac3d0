//! PPP (RFC 1661/1662) framing and protocol numbers, and PPPoE sessions (RFC 2516).

use super::ether::ETH_PPPOE_DISC;
use super::{Ctx, Proto, SkipCause, Step, TunnelKind, TunnelLayer};

const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
const PPP_MPLS: u16 = 0x0281;
const PPP_MPLS_MC: u16 = 0x0283;

const L: Option<TunnelKind> = Some(TunnelKind::Pppoe);

/// A PPP frame: optional FF 03 (address, control), then the protocol, 1 byte when compressed
/// (odd first byte, RFC 1661 section 6.5) or 2.
pub(super) fn ppp<'a>(mut data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    if let [0xff, 0x03, rest @ ..] = data {
        data = rest;
    }
    match *data {
        [p, ref rest @ ..] if p & 1 == 1 => by_ppp_proto(u16::from(p), rest, cx),
        [a, b, ref rest @ ..] => by_ppp_proto(u16::from_be_bytes([a, b]), rest, cx),
        _ => Step::Malformed(None, "PPP header truncated"),
    }
}

/// What a PPP protocol number names.
pub(super) fn by_ppp_proto<'a>(proto: u16, rest: &'a [u8], _cx: &mut Ctx<'_>) -> Step<'a> {
    match proto {
        PPP_IPV4 | PPP_IPV6 => Step::Next(Proto::Ip, rest),
        PPP_MPLS | PPP_MPLS_MC => Step::Next(Proto::Mpls, rest),
        p => Step::Skip(SkipCause::PppProto(p)),
    }
}

/// PPPoE: ver(4)=1 type(4)=1 | code(8) | session id(16) | length(16), then PPP without FF 03.
/// A code other than 0 is discovery (PADI, PADO...), only seen so under LINKTYPE_PPP_ETHER.
///
/// A length beyond the capture is taken as a cut capture (the payload is what is there, marked
/// cut), not as malformed; a length too short for the PPP protocol is malformed.
pub(super) fn pppoe<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let Some(h) = data.get(..6) else { return Step::Malformed(L, "PPPoE header truncated") };
    if h[0] != 0x11 {
        return Step::Malformed(L, "PPPoE version and type not 1");
    }
    if h[1] != 0 {
        return Step::Skip(SkipCause::EtherType(ETH_PPPOE_DISC));
    }
    let session = u16::from_be_bytes([h[2], h[3]]);
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if len < 2 {
        return Step::Malformed(L, "PPPoE length too short for PPP");
    }
    let body = &data[6..];
    let body = match body.get(..len) {
        Some(b) => b,
        None => {
            cx.cut = true;
            body
        }
    };
    if !cx.enter(TunnelLayer::new(TunnelKind::Pppoe, Some(u32::from(session)))) {
        return Step::Skip(SkipCause::TooDeep);
    }
    let [a, b, ref rest @ ..] = *body else { return Step::Malformed(L, "PPPoE payload truncated") };
    by_ppp_proto(u16::from_be_bytes([a, b]), rest, cx)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn pppoe(session: u16, proto: u16, body: &[u8]) -> Vec<u8> {
        let len = (body.len() + 2) as u16;
        cat(&[&[0x11, 0], &session.to_be_bytes(), &len.to_be_bytes(), &proto.to_be_bytes(), body])
    }

    #[test]
    fn pppoe_session() {
        let cfg = DecodeConfig::default();
        let f = eth(0x8100, &cat(&[&vlan_tag(10, 0x8864), &pppoe(0x1234, 0x0021, &ipv4_tcp(80))]));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(d.tunnels.as_slice(), &[TunnelLayer::new(TunnelKind::Pppoe, Some(0x1234))]);
        assert!(d.vlan.is_empty() && d.src_mac.is_none());
        all_truncations(1, &f);
        let f = pppoe(7, 0x0057, &ipv6_udp(53, b"z"));
        assert_eq!(packet(&decode_with(&cfg, link::LINKTYPE_PPP_ETHER, &f)).dport, 53);
        // Ethernet padding after the PPPoE payload is not payload.
        let mut f = eth(0x8864, &pppoe(7, 0x0021, &ipv4_udp_ports(1, 53, b"abc")));
        f.extend_from_slice(&[0; 10]);
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).payload, b"abc");
    }

    #[test]
    fn mpls_over_pppoe() {
        let cfg = DecodeConfig::default();
        let mpls = cat(&[&((77u32 << 12) | 0x100 | 64).to_be_bytes(), &ipv4_tcp(8443)]);
        let f = eth(0x8864, &pppoe(1, 0x0281, &mpls));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(kinds(&d.tunnels), [TunnelKind::Pppoe, TunnelKind::Mpls]);
        assert_eq!(d.tunnels.as_slice()[1].labels(), &[77]);
        assert_eq!(d.dport, 8443);
        all_truncations(1, &f);
    }

    #[test]
    fn pppoe_discovery_control_and_lies() {
        let cfg = DecodeConfig::default();
        let f = eth(0x8863, &[0x11, 0x09, 0, 0, 0, 0]);
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert!(s.cause == SkipCause::EtherType(0x8863) && s.cause.benign());
        let Outcome::Skipped(s) = decode_with(&cfg, link::LINKTYPE_PPP_ETHER, &[0x11, 0x09, 0, 0, 0, 0]) else {
            panic!()
        };
        assert!(s.cause.benign());
        // IPCP: benign, and the PPPoE layer was passed.
        let f = eth(0x8864, &pppoe(3, 0x8021, &[1, 1, 0, 4]));
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert_eq!((s.cause.to_string().as_str(), s.cause.benign()), ("PPP protocol 0x8021", true));
        assert_eq!(kinds(&s.tunnels), [TunnelKind::Pppoe]);
        // Length 1, bad version.
        let f = eth(0x8864, &[0x11, 0, 0, 3, 0, 1, 0, 0x21]);
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Pppoe));
        let f = eth(0x8864, &[0x21, 0, 0, 3, 0, 2, 0, 0x21]);
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Pppoe));
        // A length beyond the capture: the packet, marked cut.
        let mut body = pppoe(3, 0x0021, &ipv4_tcp(80));
        body[5] += 100;
        let f = eth(0x8864, &body);
        let d = packet(&decode_with(&cfg, 1, &f));
        assert!(d.payload_cut);
    }
}
