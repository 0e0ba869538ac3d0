//! Link layers: which link types we read, and where the network layer starts in each.
//!
//! Ethernet (with 802.1Q / 802.1ad / QinQ tags) is sliced by etherparse; the Linux cooked
//! and BSD loopback headers are peeled here and the rest handed to etherparse by ether type.

use etherparse::{EtherType, LaxSlicedPacket};

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW, and the DLT_RAW values some systems write instead.
pub const LINKTYPE_RAW: u32 = 101;
const DLT_RAW_BSD1: u32 = 12;
const DLT_RAW_BSD2: u32 = 14;
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
        LINKTYPE_RAW | DLT_RAW_BSD1 | DLT_RAW_BSD2 => "RAW".into(),
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
            | LINKTYPE_RAW
            | DLT_RAW_BSD1
            | DLT_RAW_BSD2
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    )
}

/// Why a frame yields no network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    Unsupported,
    /// Shorter than its link header.
    Short,
}

/// Slices a frame of the given link type. `src_mac` is the sender's MAC when the link has one.
pub fn slice(
    linktype: u32,
    frame: &[u8],
) -> Result<(LaxSlicedPacket<'_>, Option<[u8; 6]>), LinkError> {
    match linktype {
        LINKTYPE_ETHERNET => {
            let p = LaxSlicedPacket::from_ethernet(frame).map_err(|_| LinkError::Short)?;
            let mac = frame.get(6..12).and_then(|m| m.try_into().ok());
            Ok((p, mac))
        }
        LINKTYPE_RAW | DLT_RAW_BSD1 | DLT_RAW_BSD2 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Ok((
            LaxSlicedPacket::from_ip(frame).map_err(|_| LinkError::Short)?,
            None,
        )),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            // 4-byte address family: host byte order for NULL (so either), network order for LOOP.
            let fam = frame.get(..4).ok_or(LinkError::Short)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let family = if linktype == LINKTYPE_LOOP || le > 0xffff {
                be
            } else {
                le
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10, 24, 28 or 30 depending on the OS.
            let et = match family {
                2 => EtherType::IPV4,
                10 | 24 | 28 | 30 => EtherType::IPV6,
                _ => return Ok((LaxSlicedPacket::from_ether_type(EtherType(0), &[]), None)),
            };
            Ok((LaxSlicedPacket::from_ether_type(et, &frame[4..]), None))
        }
        LINKTYPE_LINUX_SLL => {
            // packet type(2) arphrd(2) addr len(2) addr(8) protocol(2)
            let h = frame.get(..16).ok_or(LinkError::Short)?;
            let proto = u16::from_be_bytes([h[14], h[15]]);
            let mac = (h[4..6] == [0, 6])
                .then(|| h[6..12].try_into().ok())
                .flatten();
            Ok((
                LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[16..]),
                mac,
            ))
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) arphrd(2) packet type(1) addr len(1) addr(8)
            let h = frame.get(..20).ok_or(LinkError::Short)?;
            let proto = u16::from_be_bytes([h[0], h[1]]);
            let mac = (h[11] == 6).then(|| h[12..18].try_into().ok()).flatten();
            Ok((
                LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[20..]),
                mac,
            ))
        }
        _ => Err(LinkError::Unsupported),
    }
}
