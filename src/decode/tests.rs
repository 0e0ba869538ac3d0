//! Dispatcher-wide tests: the old interface, hostile input, timing.

use super::testutil::*;
use super::*;

#[test]
fn unknown_link_is_skipped() {
    assert!(matches!(decode(147, b"abcd"), Outcome::Skipped(Skip::UnsupportedLink)));
}

#[test]
fn tunnel_kind_names() {
    let names: Vec<&str> = TunnelKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["gre", "erspan", "vxlan", "geneve", "ipip", "teredo", "mpls", "pppoe", "vntag", "etag", "pbb", "nsh"]
    );
    assert_eq!(TunnelKind::default(), TunnelKind::Gre);
}

#[test]
fn skip_cause_display_and_benign() {
    let cases = [
        (SkipCause::EtherType(0x880b), "EtherType 0x880b", false),
        (SkipCause::IpProto(50), "IP protocol 50", false),
        (SkipCause::IpProto(51), "IP protocol 51", false),
        (SkipCause::IpProto(89), "IP protocol 89", true),
        (SkipCause::GreProto(0x880b), "GRE protocol 0x880b", false),
        (SkipCause::PppProto(0x8021), "PPP protocol 0x8021", true),
        (SkipCause::LinkType(147), "link type 147", false),
        (SkipCause::TooDeep, "more than 8 encapsulations", false),
        (SkipCause::EtherType(0x88cc), "EtherType 0x88cc", true),
        (SkipCause::EtherType(0x888e), "EtherType 0x888e", true),
        (SkipCause::EtherType(0x8809), "EtherType 0x8809", true),
        (SkipCause::Llc, "802.3 LLC frame", true),
    ];
    for (c, s, benign) in cases {
        assert_eq!((c.to_string().as_str(), c.benign()), (s, benign), "{c:?}");
    }
}

#[test]
fn tunnels_for_every_outcome() {
    let cfg = DecodeConfig::default();
    let gre = |proto: [u8; 2], rest: &[u8]| eth(0x0800, &ipv4_raw(47, &cat(&[&[0, 0], &proto, rest])));
    let p = gre([0x08, 0], &ipv4_tcp(80));
    assert_eq!(decode_with(&cfg, 1, &p).tunnels().len(), 1);
    let s = gre([0x12, 0x34], &[]);
    assert_eq!(decode_with(&cfg, 1, &s).tunnels().len(), 1);
    let m = gre([0x08, 0], &[0x45, 0, 0]);
    let out = decode_with(&cfg, 1, &m);
    assert!(matches!(out, Outcome::Malformed(Malformed { layer: None, .. })));
    assert_eq!(out.tunnels().len(), 1, "malformed inner IP: the GRE layer was passed");
    let fr = gre([0x08, 0], &ipv4_frag(6, &[0; 16]));
    assert_eq!(decode_with(&cfg, 1, &fr).tunnels().len(), 1);
    // The short form keeps the stack of packets and fragments.
    assert_eq!(decode(1, &p).tunnels().len(), 1);
}

#[test]
fn malformed_names_its_layer() {
    let m = Malformed { layer: Some(TunnelKind::Gre), what: "GRE key truncated", tunnels: Tunnels::default() };
    assert_eq!(m.to_string(), "gre: GRE key truncated");
    assert!(matches!(decode(1, &[0; 10]), Outcome::Malformed(_)));
}

/// Frames of every layer, for the hostile-input tests and the fuzz corpus.
pub(crate) fn samples() -> Vec<(u32, Vec<u8>)> {
    let tcp = ipv4_tcp(443);
    let inner = eth_from([0xaa; 6], 0x8100, &cat(&[&vlan_tag(5, 0x0800), &tcp]));
    let vx = eth(0x0800, &ipv4_udp_raw(4789, &cat(&[&[0x08, 0, 0, 0, 0, 0, 7, 0], &inner])));
    let gn = eth(0x0800, &ipv4_udp_raw(6081, &cat(&[&[0x01, 0, 0x65, 0x58, 0, 0, 7, 0], &[0; 4], &inner])));
    let e2 = eth(
        0x0800,
        &ipv4_raw(47, &cat(&[&[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1], &[0x10, 0x05, 0x00, 0x07, 0, 0, 0, 0], &vx])),
    );
    let e3 = eth(
        0x0800,
        &ipv4_raw(47, &cat(&[&[0, 0, 0x22, 0xeb], &[0x20, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1], &[0; 8], &inner])),
    );
    let grek = eth(0x86dd, &ipv6_raw(47, &cat(&[&[0xb0, 0, 0x08, 0], &[0; 12], &tcp])));
    let plen = (6 + tcp.len() as u16).to_be_bytes();
    let pppoe = eth(0x8864, &cat(&[&[0x11, 0, 0, 9], &plen, &[0x02, 0x81], &[0, 0x11, 0x01, 64], &tcp]));
    let mpls_pw = eth(0x8847, &cat(&[&[0, 0x11, 0x01, 64], &[0, 0, 0, 1], &inner]));
    let teredo = eth(
        0x0800,
        &ipv4_udp_ports(
            3544,
            5000,
            &cat(&[&[0, 1, 1, 1, 9, 9], &[0; 9], &[0, 0, 1, 2, 3, 4, 5, 6], &ipv6_udp(53, b"q")]),
        ),
    );
    let nsh = eth(0x894f, &cat(&[&[0x0f, 0xc2, 0x02, 0x03, 0, 0, 1, 0xff], &inner]));
    let pbb = eth(0x88e7, &cat(&[&[0, 0, 0, 1], &inner]));
    let vntag = eth(0x8926, &cat(&[&[0, 1, 0, 0, 0x08, 0x00], &tcp]));
    let ipip = ipv4_raw(41, &ipv6_raw(4, &tcp));
    vec![
        (1, eth(0x0800, &tcp)),
        (1, vx),
        (1, gn),
        (1, e2),
        (1, e3),
        (1, grek),
        (1, pppoe),
        (1, mpls_pw),
        (1, teredo),
        (1, nsh),
        (1, pbb),
        (1, vntag),
        (101, ipip),
        (9, cat(&[&[0xff, 0x03, 0x00, 0x21], &tcp])),
        (50, cat(&[&[0x0f, 0x00, 0x86, 0xdd], &ipv6_udp(53, b"x")])),
        (51, cat(&[&[0x11, 0, 0, 1, 0, 42, 0, 0x21], &tcp])),
        (104, cat(&[&[0x8f, 0x00, 0x08, 0x00], &tcp])),
        (113, cat(&[&[0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00], &tcp])),
        (276, cat(&[&[0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0], &tcp])),
    ]
}

/// One tunnel around a plain frame takes the tunnel fast path, and gives what the layers give;
/// so do its near misses (cut short, lying, nested), which the fast path leaves to the layers.
#[test]
fn tunnel_fast_path_is_the_dispatcher() {
    let s = samples();
    // VXLAN, Geneve, ERSPAN II, ERSPAN III, GRE with a key (IPv4 inside: not the fast path).
    let mut tunnels: Vec<Vec<u8>> = s[1..6].iter().map(|(_, f)| f.clone()).collect();
    let inner = eth(0x0800, &ipv4_tcp(443));
    // ERSPAN II and I, and GRE bridging, of a plain frame.
    tunnels.push(eth(
        0x0800,
        &ipv4_raw(47, &cat(&[&[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1], &[0x10, 5, 0, 7, 0, 0, 0, 0], &inner])),
    ));
    tunnels.push(eth(0x0800, &ipv4_raw(47, &cat(&[&[0, 0, 0x88, 0xbe], &inner]))));
    tunnels.push(eth(0x0800, &ipv4_raw(47, &cat(&[&[0x20, 0, 0x65, 0x58, 0, 0, 0, 9], &inner]))));
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for f in &tunnels {
        frames.push(f.to_vec());
        for cut in [1, 8, 20, 40] {
            frames.push(f[..f.len().saturating_sub(cut)].to_vec());
        }
        for at in [14 + 20 + 8, 14 + 20 + 4, 14 + 20 + 12, 14 + 20 + 16] {
            for v in [0x00, 0xff, 0x10] {
                let mut g = f.to_vec();
                if let Some(b) = g.get_mut(at) {
                    *b = v;
                    frames.push(g);
                }
            }
        }
    }
    let mut taken = 0;
    for f in &frames {
        for cfg in [DecodeConfig::default(), DecodeConfig { split_by_overlay: true, ..DecodeConfig::default() }] {
            let fast = decode_with(&cfg, 1, f);
            assert_eq!(format!("{fast:?}"), format!("{:?}", dispatch(&cfg, 1, f)));
            if let Err(Some(r)) = fast_path::<Skipped, Malformed>(&cfg, 1, f) {
                taken += usize::from(tunnel_fast(&cfg, &r).is_some());
            }
        }
    }
    // The six single tunnels around a plain frame whole, in both configurations, at the least.
    assert!(taken >= 12, "the tunnel fast path took {taken}");
}

#[test]
fn fast_path_is_the_dispatcher() {
    let mut frames: Vec<Vec<u8>> = vec![eth(0x0800, &ipv4_tcp(443)), eth(0x86dd, &ipv6_udp(53, b"abc"))];
    frames.push(eth(0x8100, &cat(&[&vlan_tag(5, 0x88a8), &vlan_tag(6, 0x0800), &ipv4_udp_raw(53, &[0; 4])])));
    let mut cut = ipv4_tcp(80);
    cut.truncate(cut.len() - 1);
    frames.push(eth(0x0800, &cut));
    for f in &frames {
        for cfg in [DecodeConfig::default(), DecodeConfig { split_by_overlay: true, ..DecodeConfig::default() }] {
            let Ok(fast) = fast_path::<Skipped, Malformed>(&cfg, 1, f) else { panic!("the fast path takes it") };
            let slow = dispatch(&cfg, 1, f);
            let (a, b) = (packet(&fast), packet(&slow));
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }
    // Not the fast path: tunnels, fragments, other link types.
    let cfg = DecodeConfig::default();
    assert!(matches!(fast_path::<Skipped, Malformed>(&cfg, 1, &samples()[1].1), Err(Some(_))));
    assert!(matches!(fast_path::<Skipped, Malformed>(&cfg, 101, &ipv4_tcp(80)), Err(None)));
    assert!(matches!(fast_path::<Skipped, Malformed>(&cfg, 1, &eth(0x0806, &[0; 28])), Err(None)));
    // Every sample decodes the same by the fast path and resume, or by the dispatcher alone.
    for (lt, f) in samples() {
        assert_eq!(format!("{:?}", decode_with(&cfg, lt, &f)), format!("{:?}", dispatch(&cfg, lt, &f)));
    }
}

#[test]
fn samples_decode_to_packets() {
    for (i, (lt, f)) in samples().iter().enumerate() {
        let o = decode_with(&DecodeConfig::default(), *lt, f);
        assert!(o.is_packet(), "sample {i}: {o:?}");
    }
}

/// Writes the samples as the seed corpus of the `decap` fuzz target (selector byte: the index
/// of the link type in the target's list, bit 3 for the overlay split):
/// `cargo test --lib decode::tests::write_fuzz_corpus -- --ignored`
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decap");
    std::fs::create_dir_all(&dir).unwrap();
    let lts = [1, 9, 50, 51, 101, 104, 113, 276];
    for (i, (lt, f)) in samples().iter().enumerate() {
        let Some(sel) = lts.iter().position(|l| l == lt) else { continue };
        let split = if i % 2 == 1 { 8 } else { 0 };
        std::fs::write(dir.join(format!("sample-{i:02}")), cat(&[&[sel as u8 | split], f])).unwrap();
    }
}

/// A small xorshift generator: the tests need no dependency for noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hostile_input_never_panics() {
    let samples = samples();
    for (lt, f) in &samples {
        all_truncations(*lt, f);
    }
    let split = DecodeConfig { split_by_overlay: true, ..DecodeConfig::default() };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let lts = [0, 1, 9, 50, 51, 101, 104, 108, 113, 276];
    // Random bytes.
    for _ in 0..20_000 {
        let len = (rng.next() % 200) as usize;
        let f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let lt = lts[(rng.next() % lts.len() as u64) as usize];
        assert!(decode_with(&split, lt, &f).tunnels().len() <= MAX_ENCAP_DEPTH);
    }
    // The samples with a few bytes changed: lengths and flags lie.
    for _ in 0..50_000 {
        let (lt, f) = &samples[(rng.next() % samples.len() as u64) as usize];
        let mut f = f.clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() % f.len() as u64) as usize;
            f[at] = rng.next() as u8;
        }
        let cut = f.len() - (rng.next() % 8) as usize;
        let o = decode_with(&split, *lt, &f[..cut]);
        assert!(o.tunnels().len() <= MAX_ENCAP_DEPTH);
        if let Outcome::Fragment(fr) = &o {
            let _ = decode_reassembled_with(&split, fr, fr.payload);
        }
    }
}

/// `cargo test --release --lib decode::tests::timing -- --ignored --nocapture`
#[test]
#[ignore]
fn timing() {
    use std::hint::black_box;
    use std::time::Instant;
    let mut tcp = Vec::new();
    etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 1000, 1024)
        .ack(1)
        .write(&mut tcp, &[0x16; 1460])
        .unwrap();
    let vx = eth(0x0800, &ipv4_udp_raw(4789, &cat(&[&[0x08, 0, 0, 0, 0, 0, 7, 0], &tcp])));
    let erspan = eth(
        0x0800,
        &ipv4_raw(47, &cat(&[&[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1], &[0x10, 0x05, 0x00, 0x07, 0, 0, 0, 0], &tcp])),
    );
    let cfg = DecodeConfig::default();
    const N: u32 = 5_000_000;
    let time = |name: &str, f: &dyn Fn() -> bool| {
        for _ in 0..N / 10 {
            assert!(f());
        }
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..N {
                    black_box(f());
                }
                t.elapsed().as_secs_f64() * 1e9 / N as f64
            })
            .fold(f64::MAX, f64::min);
        println!("{name:40} {best:6.1} ns/packet");
    };
    time("old decode ethernet/ipv4/tcp", &|| matches!(old::decode(black_box(&tcp)), old::Outcome::Packet(_)));
    time("decode() ethernet/ipv4/tcp", &|| decode(1, black_box(&tcp)).is_packet());
    time("decode_with() ethernet/ipv4/tcp", &|| decode_with(&cfg, 1, black_box(&tcp)).is_packet());
    time("decode_with() vxlan", &|| decode_with(&cfg, 1, black_box(&vx)).is_packet());
    time("decode_with() gre/erspan II", &|| decode_with(&cfg, 1, black_box(&erspan)).is_packet());
    time("old decode ethernet/ipv4/tcp (again)", &|| matches!(old::decode(black_box(&tcp)), old::Outcome::Packet(_)));
}

/// The decoder before the layer rewrite (Ethernet, VLAN, IP, TCP/UDP only), to time against
/// under the same load.
mod old {
    use std::net::IpAddr;

    use etherparse::LaxIpSlice;

    use super::super::{Transport, VlanTags};

    #[derive(Debug, Clone, Copy)]
    #[allow(dead_code)]
    pub struct Decoded<'a> {
        pub vlan: VlanTags,
        pub src_mac: Option<[u8; 6]>,
        pub src: IpAddr,
        pub dst: IpAddr,
        pub sport: u16,
        pub dport: u16,
        pub transport: Transport,
        pub payload: &'a [u8],
        pub payload_cut: bool,
    }

    #[allow(dead_code)]
    pub enum Outcome<'a> {
        Packet(Decoded<'a>),
        Other,
        Malformed(&'static str),
    }

    pub fn decode(frame: &[u8]) -> Outcome<'_> {
        let Some(h) = frame.get(..14) else { return Outcome::Malformed("short") };
        let src_mac: Option<[u8; 6]> = h[6..12].try_into().ok();
        let mut et = u16::from_be_bytes([h[12], h[13]]);
        let mut rest = &frame[14..];
        let mut vlan = VlanTags::default();
        loop {
            match et {
                0x0800 | 0x86dd => break,
                0x8100 | 0x88a8 | 0x9100 => {
                    let Some(tag) = rest.get(..4) else { return Outcome::Malformed("short") };
                    vlan.push(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
                    et = u16::from_be_bytes([tag[2], tag[3]]);
                    rest = &rest[4..];
                }
                _ => return Outcome::Other,
            }
        }
        let Ok((ip, _)) = LaxIpSlice::from_slice(rest) else { return Outcome::Malformed("bad IP header") };
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        let pl = ip.payload();
        if pl.fragmented {
            return Outcome::Other;
        }
        let (sport, dport, transport, payload) = match pl.ip_number.0 {
            6 => {
                let Ok(t) = etherparse::TcpSlice::from_slice(pl.payload) else { return Outcome::Malformed("tcp") };
                let flags = t.header_slice()[13];
                (t.source_port(), t.destination_port(), Transport::Tcp { seq: t.sequence_number(), flags }, t.payload())
            }
            17 => {
                let Ok(u) = etherparse::UdpSlice::from_slice_lax(pl.payload) else { return Outcome::Malformed("udp") };
                (u.source_port(), u.destination_port(), Transport::Udp, u.payload())
            }
            _ => return Outcome::Other,
        };
        Outcome::Packet(Decoded {
            vlan,
            src_mac,
            src,
            dst,
            sport,
            dport,
            transport,
            payload,
            payload_cut: pl.incomplete,
        })
    }
}
