//! Link layers: which link types we read, and what protocol follows the link header of each.
//!
//! Peeled by hand: it is a handful of fixed offsets, and etherparse's whole-packet slicer
//! (`LaxSlicedPacket`, 328 bytes moved around per packet) was the largest cost of the reader
//! in a profile of the reference workload. etherparse takes over at the IP layer.

use super::{Ctx, Proto, SkipCause, Step, be16, ether, mac, ppp};

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
/// PPP (RFC 1661), with or without the FF 03 address and control bytes.
pub const LINKTYPE_PPP: u32 = 9;
/// PPP in HDLC-like framing (RFC 1662); some captures put Cisco HDLC under it.
pub const LINKTYPE_PPP_HDLC: u32 = 50;
/// PPPoE (RFC 2516): the frame starts with the PPPoE header.
pub const LINKTYPE_PPP_ETHER: u32 = 51;
/// LINKTYPE_RAW, and the DLT_RAW values some systems write instead.
pub const LINKTYPE_RAW: u32 = 101;
const DLT_RAW_BSD1: u32 = 12;
const DLT_RAW_BSD2: u32 = 14;
/// Cisco HDLC.
pub const LINKTYPE_C_HDLC: u32 = 104;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Readable name of a link type for the report.
pub fn linktype_name(lt: u32) -> String {
    match lt {
        LINKTYPE_NULL => "NULL".into(),
        LINKTYPE_ETHERNET => "EN10MB".into(),
        LINKTYPE_PPP => "PPP".into(),
        LINKTYPE_PPP_HDLC => "PPP_HDLC".into(),
        LINKTYPE_PPP_ETHER => "PPP_ETHER".into(),
        LINKTYPE_RAW | DLT_RAW_BSD1 | DLT_RAW_BSD2 => "RAW".into(),
        LINKTYPE_C_HDLC => "C_HDLC".into(),
        LINKTYPE_LOOP => "LOOP".into(),
        LINKTYPE_LINUX_SLL => "LINUX_SLL".into(),
        LINKTYPE_IPV4 => "IPV4".into(),
        LINKTYPE_IPV6 => "IPV6".into(),
        LINKTYPE_LINUX_SLL2 => "LINUX_SLL2".into(),
        other => format!("LINKTYPE_{other}"),
    }
}

pub fn is_supported(lt: u32) -> bool {
    matches!(
        lt,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_PPP
            | LINKTYPE_PPP_HDLC
            | LINKTYPE_PPP_ETHER
            | LINKTYPE_RAW
            | DLT_RAW_BSD1
            | DLT_RAW_BSD2
            | LINKTYPE_C_HDLC
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    )
}

const SHORT: &str = "frame shorter than its link header";

/// The first layer: the link header of a frame of the given link type.
#[inline]
pub(super) fn layer<'a>(linktype: u32, frame: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    match linktype {
        LINKTYPE_ETHERNET => ether::ethernet(frame, cx),
        LINKTYPE_RAW | DLT_RAW_BSD1 | DLT_RAW_BSD2 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Step::Next(Proto::Ip, frame),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            // 4-byte address family: host byte order for NULL (so either), network order for LOOP.
            let Some(fam) = frame.get(..4) else { return Step::Malformed(None, SHORT) };
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let family = if linktype == LINKTYPE_LOOP || le > 0xffff { be } else { le };
            // AF_INET is 2 everywhere; AF_INET6 is 10, 24, 28 or 30 depending on the OS.
            match family {
                2 | 10 | 24 | 28 | 30 => Step::Next(Proto::Ip, &frame[4..]),
                af => Step::Skip(SkipCause::AddressFamily(af)),
            }
        }
        LINKTYPE_LINUX_SLL => {
            // packet type(2) arphrd(2) addr len(2) addr(8) protocol(2)
            let Some(h) = frame.get(..16) else { return Step::Malformed(None, SHORT) };
            cx.src_mac = if h[4..6] == [0, 6] { mac(&h[6..]) } else { None };
            ether::by_ether_type(u16::from_be_bytes([h[14], h[15]]), &frame[16..], cx)
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) arphrd(2) packet type(1) addr len(1) addr(8)
            let Some(h) = frame.get(..20) else { return Step::Malformed(None, SHORT) };
            cx.src_mac = if h[11] == 6 { mac(&h[12..]) } else { None };
            ether::by_ether_type(u16::from_be_bytes([h[0], h[1]]), &frame[20..], cx)
        }
        LINKTYPE_PPP => Step::Next(Proto::Ppp, frame),
        LINKTYPE_PPP_HDLC => match frame.first() {
            Some(0x0f | 0x8f) => c_hdlc(frame, cx),
            Some(0xff) => match (frame.get(1), be16(frame, 2)) {
                (Some(0x03), Some(p)) => ppp::by_ppp_proto(p, &frame[4..], cx),
                (Some(_), Some(_)) => Step::Malformed(None, "PPP in HDLC framing without FF 03"),
                _ => Step::Malformed(None, SHORT),
            },
            Some(_) => Step::Malformed(None, "PPP in HDLC framing without FF 03"),
            None => Step::Malformed(None, SHORT),
        },
        LINKTYPE_PPP_ETHER => Step::Next(Proto::Pppoe, frame),
        LINKTYPE_C_HDLC => c_hdlc(frame, cx),
        _ => Step::Skip(SkipCause::LinkType(linktype)),
    }
}

/// Cisco HDLC: address 0x0F (unicast) or 0x8F (broadcast), control 0, then an ether type.
fn c_hdlc<'a>(frame: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    let Some(h) = frame.get(..4) else { return Step::Malformed(None, SHORT) };
    if !matches!(h[0], 0x0f | 0x8f) || h[1] != 0 {
        return Step::Malformed(None, "bad Cisco HDLC address or control");
    }
    ether::by_ether_type(u16::from_be_bytes([h[2], h[3]]), &frame[4..], cx)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;

    #[test]
    fn names_and_support() {
        for lt in [0, 1, 9, 50, 51, 101, 104, 108, 113, 228, 229, 276] {
            assert!(is_supported(lt), "{lt}");
            assert!(!linktype_name(lt).starts_with("LINKTYPE_"), "{lt}");
        }
        assert!(!is_supported(147));
        assert_eq!(linktype_name(147), "LINKTYPE_147");
        assert_eq!(linktype_name(104), "C_HDLC");
    }

    #[test]
    fn ppp_link_types() {
        let ip = ipv4_tcp(80);
        // PPP with FF 03 and a 2-byte protocol, without, and with a compressed 1-byte protocol.
        for head in [&[0xff, 0x03, 0x00, 0x21][..], &[0x00, 0x21], &[0x21]] {
            let f = cat(&[head, &ip]);
            assert_tcp(&decode(LINKTYPE_PPP, &f), 80);
        }
        let f = cat(&[&[0xff, 0x03, 0x00, 0x21], &ip]);
        assert_tcp(&decode(LINKTYPE_PPP_HDLC, &f), 80);
        let f = cat(&[&[0x0f, 0x00, 0x08, 0x00], &ip]);
        assert_tcp(&decode(LINKTYPE_PPP_HDLC, &f), 80);
        assert_tcp(&decode(LINKTYPE_C_HDLC, &f), 80);
        // LCP is skipped, benign.
        let d = decode_with(&DecodeConfig::default(), LINKTYPE_PPP, &[0xff, 0x03, 0xc0, 0x21, 1, 1, 0, 4]);
        let Outcome::Skipped(s) = d else { panic!("{d:?}") };
        assert_eq!(s.cause, SkipCause::PppProto(0xc021));
        assert!(s.cause.benign());
        assert_eq!(s.cause.to_string(), "PPP protocol 0xc021");
        // Cisco HDLC SLARP: benign.
        let d = decode_with(&DecodeConfig::default(), LINKTYPE_C_HDLC, &[0x8f, 0, 0x80, 0x35, 0, 0, 0, 2]);
        assert!(matches!(d, Outcome::Skipped(Skipped { cause: SkipCause::EtherType(0x8035), .. })));
        let d = decode_with(&DecodeConfig::default(), LINKTYPE_C_HDLC, &[0x11, 0, 0x08, 0x00]);
        assert!(matches!(d, Outcome::Malformed(Malformed { layer: None, .. })));
    }

    #[test]
    fn unknown_link_type_names_it() {
        let d = decode_with(&DecodeConfig::default(), 147, b"abcd");
        let Outcome::Skipped(s) = d else { panic!() };
        assert_eq!(s.cause, SkipCause::LinkType(147));
        assert_eq!(s.cause.to_string(), "link type 147");
        assert_eq!(s.kind(), Skip::UnsupportedLink);
    }
}
