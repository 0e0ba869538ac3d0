//! MPLS (RFC 3032): the label stack, then IPv4, IPv6 or an Ethernet pseudowire (RFC 4448),
//! guessed from the first nibble after the bottom of the stack since MPLS does not say.

use super::{Ctx, Proto, SkipCause, Step, TunnelKind, TunnelLayer, be16};
use super::{ether, mac};

/// Labels followed at most; a deeper stack is malformed.
pub(super) const MAX_LABELS: usize = 16;
/// The generic associated channel label (RFC 5586).
const GAL: u32 = 13;

const L: Option<TunnelKind> = Some(TunnelKind::Mpls);

pub(super) fn mpls<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let mut layer = TunnelLayer::new(TunnelKind::Mpls, None);
    let mut at = 0;
    loop {
        // label(20) TC(3) S(1) TTL(8)
        let Some(e) = data.get(at..at + 4) else { return Step::Malformed(L, "MPLS label stack truncated") };
        let entry = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
        layer.push_label(entry >> 12);
        at += 4;
        if entry & 0x100 != 0 {
            break;
        }
        if at / 4 >= MAX_LABELS {
            return Step::Malformed(L, "MPLS label stack deeper than 16");
        }
    }
    if !cx.enter(layer) {
        return Step::Skip(SkipCause::TooDeep);
    }
    let rest = &data[at..];
    let Some(&first) = rest.first() else { return Step::Malformed(L, "nothing after the MPLS labels") };
    let bottom = u32::from_be_bytes([data[at - 4], data[at - 3], data[at - 2], data[at - 1]]) >> 12;
    match first >> 4 {
        4 | 6 => Step::Next(Proto::Ip, rest),
        // An associated channel (OAM, BFD) only under the G-ACh label (13, RFC 5586): elsewhere a
        // first nibble of 1 is an Ethernet pseudowire whose destination MAC starts with 1x, which
        // must not be skipped unseen (Wireshark takes it as a channel even there).
        1 if bottom == GAL => Step::Skip(SkipCause::MplsAch),
        // Ethernet pseudowire. Wireshark's `mpls.pw_ethernet_heuristic` (packet-pw-eth.c,
        // dissect_pw_eth_heuristic): a first nibble of 0 means a control word, unless the bytes
        // read without it look strictly more like Ethernet than with it
        // (looks_like_plain_eth(tvb, 4) >= looks_like_plain_eth(tvb, 0) => control word);
        // any other nibble means Ethernet without control word. We follow that rule with the
        // same scoring minus Wireshark's OUI lookup, which has no table here: see `eth_score`.
        0 if eth_score(rest.get(4..).unwrap_or(&[])) >= eth_score(rest) => {
            Step::Next(Proto::Ether, rest.get(4..).unwrap_or(&[]))
        }
        _ => Step::Next(Proto::Ether, rest),
    }
}

/// How much `d` looks like the start of an Ethernet frame: 0 not at all, 1 with a locally
/// administered address, 2 fully (Wireshark's looks_like_plain_eth without the OUI table):
/// 14 bytes at least, a unicast source MAC, and an ether type we know.
fn eth_score(d: &[u8]) -> u8 {
    let (Some(dst), Some(src), Some(et)) = (mac(d), d.get(6..12).and_then(mac), be16(d, 12)) else { return 0 };
    if src[0] & 1 != 0 {
        return 0;
    }
    let known = matches!(
        et,
        ether::ETH_IPV4
            | ether::ETH_IPV6
            | ether::ETH_ARP
            | ether::ETH_VLAN
            | ether::ETH_QINQ
            | ether::ETH_QINQ_OLD
            | ether::ETH_MPLS
            | ether::ETH_MPLS_MC
            | ether::ETH_PPPOE_DISC
            | ether::ETH_PPPOE_SESS
            | 0x88cc
            | 0x8809
            | 0x888e
    );
    match (known, (dst[0] | src[0]) & 2 != 0) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn labels(ls: &[u32]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, l) in ls.iter().enumerate() {
            let bos = if i + 1 == ls.len() { 0x100 } else { 0 };
            v.extend_from_slice(&((l << 12) | bos | 64).to_be_bytes());
        }
        v
    }

    #[test]
    fn a_first_nibble_of_1_is_a_channel_only_under_the_gal() {
        let cfg = DecodeConfig::default();
        // A pseudowire frame whose destination MAC starts 1e: Ethernet, not an associated channel.
        let inner = eth_from([0x2e, 0xab, 0x84, 0xce, 0xca, 0xd8], 0x0800, &ipv4_tcp(80));
        let mut inner = inner;
        inner[0] = 0x1e;
        let f = eth(0x8847, &cat(&[&labels(&[300]), &inner]));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).dport, 80);
        let ach = eth(0x8847, &cat(&[&labels(&[13]), &[0x10, 0, 0, 0x07], &[0; 20]]));
        assert!(matches!(decode_with(&cfg, 1, &ach), Outcome::Skipped(s) if s.cause == SkipCause::MplsAch));
    }

    #[test]
    fn labels_then_ip() {
        let cfg = DecodeConfig::default();
        let f = eth(0x8847, &cat(&[&labels(&[100, 200, 300, 400, 500]), &ipv4_tcp(80)]));
        let d = packet(&decode_with(&cfg, 1, &f));
        let l = d.tunnels.as_slice()[0];
        assert_eq!((l.kind, l.labels(), l.id()), (TunnelKind::Mpls, &[100, 200][..], None));
        assert_eq!(d.src_mac, None);
        all_truncations(1, &f);
        let f = eth(0x8847, &cat(&[&labels(&[16]), &ipv6_udp(53, b"a")]));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).dport, 53);
    }

    #[test]
    fn too_many_labels_and_no_bottom() {
        let cfg = DecodeConfig::default();
        let ls: Vec<u32> = (1..=17).collect();
        let f = eth(0x8847, &cat(&[&labels(&ls), &ipv4_tcp(80)]));
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Mpls));
        let ls: Vec<u32> = (1..=16).collect();
        let f = eth(0x8847, &cat(&[&labels(&ls), &ipv4_tcp(80)]));
        assert!(decode_with(&cfg, 1, &f).is_packet());
        let f = eth(0x8847, &[0, 1, 0, 64, 0, 2, 0, 64]);
        assert_malformed(&decode_with(&cfg, 1, &f), Some(TunnelKind::Mpls));
    }

    #[test]
    fn pseudowire_with_and_without_control_word() {
        let cfg = DecodeConfig::default();
        // A customer MAC starting with a 0 nibble, without control word: still no CW.
        let inner = eth_from([0x00, 0x1b, 0x21, 1, 2, 3], 0x0800, &ipv4_tcp(443));
        let f = eth(0x8847, &cat(&[&labels(&[1000]), &inner]));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!(d.src_mac, Some([0x00, 0x1b, 0x21, 1, 2, 3]));
        // With the control word (first nibble 0, sequence number 5).
        let f = eth(0x8847, &cat(&[&labels(&[1000]), &[0, 0, 0, 5], &inner]));
        let d = packet(&decode_with(&cfg, 1, &f));
        assert_eq!((d.src_mac, d.dport), (Some([0x00, 0x1b, 0x21, 1, 2, 3]), 443));
        all_truncations(1, &f);
        // A first nibble other than 0, 4, 6: Ethernet directly.
        let inner = eth_from([0x00, 0x1b, 0x21, 1, 2, 3], 0x0800, &ipv4_tcp(443));
        let mut inner_dst_a = inner.clone();
        inner_dst_a[0] = 0xa0;
        let f = eth(0x8847, &cat(&[&labels(&[1000]), &inner_dst_a]));
        assert_eq!(packet(&decode_with(&cfg, 1, &f)).dport, 443);
        // Associated channel: skipped, benign.
        let f = eth(0x8847, &cat(&[&labels(&[13]), &[0x10, 0, 0, 0x07, 0, 0]]));
        let Outcome::Skipped(s) = decode_with(&cfg, 1, &f) else { panic!() };
        assert!(s.cause == SkipCause::MplsAch && s.cause.benign());
    }
}
