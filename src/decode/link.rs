//! Link layers: which link types we read, and where the IP header starts in each.
//!
//! Peeled by hand: it is a handful of fixed offsets, and etherparse's whole-packet slicer
//! (`LaxSlicedPacket`, 328 bytes moved around per packet) was the largest cost of the reader
//! in a profile of the reference workload. etherparse takes over at the IP layer.

use super::VlanTags;

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
    /// Not IP (ARP, LLDP, ...).
    NotIp,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;

/// The IP packet inside a frame, with the VLAN tags and sender MAC found on the way.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub ip: &'a [u8],
    pub vlan: VlanTags,
    pub src_mac: Option<[u8; 6]>,
}

fn mac(b: &[u8]) -> Option<[u8; 6]> {
    b.get(..6).and_then(|m| m.try_into().ok())
}

/// Follows an ether type through VLAN tags (802.1Q, 802.1ad, old QinQ) to IPv4 or IPv6.
fn by_ether_type(
    mut et: u16,
    mut rest: &[u8],
    mut vlan: VlanTags,
    src_mac: Option<[u8; 6]>,
) -> Result<Link<'_>, LinkError> {
    loop {
        match et {
            ETH_IPV4 | ETH_IPV6 => return Ok(Link { ip: rest, vlan, src_mac }),
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => {
                let tag = rest.get(..4).ok_or(LinkError::Short)?;
                vlan.push(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
                et = u16::from_be_bytes([tag[2], tag[3]]);
                rest = &rest[4..];
            }
            _ => return Err(LinkError::NotIp),
        }
    }
}

/// Finds the IP packet in a frame of the given link type.
pub fn slice(linktype: u32, frame: &[u8]) -> Result<Link<'_>, LinkError> {
    let none = VlanTags::default();
    match linktype {
        LINKTYPE_ETHERNET => {
            let h = frame.get(..14).ok_or(LinkError::Short)?;
            by_ether_type(u16::from_be_bytes([h[12], h[13]]), &frame[14..], none, mac(&h[6..]))
        }
        LINKTYPE_RAW | DLT_RAW_BSD1 | DLT_RAW_BSD2 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            Ok(Link { ip: frame, vlan: none, src_mac: None })
        }
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            // 4-byte address family: host byte order for NULL (so either), network order for LOOP.
            let fam = frame.get(..4).ok_or(LinkError::Short)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let family = if linktype == LINKTYPE_LOOP || le > 0xffff { be } else { le };
            // AF_INET is 2 everywhere; AF_INET6 is 10, 24, 28 or 30 depending on the OS.
            match family {
                2 | 10 | 24 | 28 | 30 => Ok(Link { ip: &frame[4..], vlan: none, src_mac: None }),
                _ => Err(LinkError::NotIp),
            }
        }
        LINKTYPE_LINUX_SLL => {
            // packet type(2) arphrd(2) addr len(2) addr(8) protocol(2)
            let h = frame.get(..16).ok_or(LinkError::Short)?;
            let src_mac = if h[4..6] == [0, 6] { mac(&h[6..]) } else { None };
            by_ether_type(u16::from_be_bytes([h[14], h[15]]), &frame[16..], none, src_mac)
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) arphrd(2) packet type(1) addr len(1) addr(8)
            let h = frame.get(..20).ok_or(LinkError::Short)?;
            let src_mac = if h[11] == 6 { mac(&h[12..]) } else { None };
            by_ether_type(u16::from_be_bytes([h[0], h[1]]), &frame[20..], none, src_mac)
        }
        _ => Err(LinkError::Unsupported),
    }
}
