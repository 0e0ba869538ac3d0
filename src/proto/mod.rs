//! Protocol parsers: pure functions over `&[u8]` that know nothing of flows, rules or output.

pub mod dhcp;
pub mod dns;
pub mod http;
pub mod ja3;
pub mod name;
pub mod quic;
pub mod tls;

/// Test data: the UDP datagrams of a recorded capture, read with the project's own decoder.
#[cfg(test)]
pub(crate) fn udp_datagrams(pcap: &[u8]) -> Vec<(u16, &[u8])> {
    assert_eq!(pcap[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap, as tcpdump writes");
    let linktype = u32::from_le_bytes(pcap[20..24].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        match crate::decode::decode(linktype, frame) {
            crate::decode::Outcome::Packet(d) if matches!(d.transport, crate::decode::Transport::Udp) => {
                out.push((d.dport, d.payload))
            }
            _ => panic!("not a UDP datagram in the test capture"),
        }
    }
    out
}
