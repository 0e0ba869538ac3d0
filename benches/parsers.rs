//! Micro-benchmarks of the per-packet work: decode, DNS parse, ClientHello through the
//! worker in one and in two segments, and rule matching with the shipped rules and with
//! 100,000 extra names. Run with `cargo bench --bench parsers`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use kavwatch::decode::{self, TCP_ACK, TCP_SYN, Transport, VlanTags};
use kavwatch::flow::FlowKey;
use kavwatch::proto::{dns, tls};
use kavwatch::rules::load::{SHIPPED, load, parse_into};
use kavwatch::rules::matcher::Rules;
use kavwatch::rules::model::RuleSet;
use kavwatch::worker::{Limits, PacketMeta, Worker};

/// A Chrome ClientHello with an X25519MLKEM768 key share (1849 bytes, 1460 + 389 on the wire),
/// taken from the reference workload of benches/workload.
const CH_PQ: &[u8] = include_bytes!("data/clienthello-chrome-pq.bin");
const CH_SMALL: &[u8] = include_bytes!("data/clienthello-small.bin");

fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 1, 2, 3], [93, 184, 216, 34], 64)
        .tcp(51515, 443, 1000, 64240);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

/// `inner` in VXLAN (VNI 42) over UDP 4789 over IPv4 over Ethernet, as a cloud mirror sends it.
fn vxlan_frame(inner: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4([172, 16, 0, 1], [172, 16, 0, 2], 64)
        .udp(49152, 4789);
    let mut f = Vec::new();
    b.write(&mut f, &[&[0x08, 0, 0, 0, 0, 0, 42, 0][..], inner].concat()).unwrap();
    f
}

/// `inner` in ERSPAN type III (session 7, no platform sub-header) over GRE over IPv4, as a
/// switch's remote SPAN sends it.
fn erspan3_frame(inner: &[u8]) -> Vec<u8> {
    let gre = [0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1]; // S flag, ERSPAN III, sequence 1
    let erspan = [0x20, 0x00, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0]; // ver 2, VLAN 0, session 7
    let payload = [&gre[..], &erspan, inner].concat();
    let ip = etherparse::Ipv4Header::new(
        payload.len() as u16,
        64,
        etherparse::IpNumber::GRE,
        [172, 16, 0, 1],
        [172, 16, 0, 2],
    )
    .expect("a small payload");
    let mut f = vec![2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, 0x08, 0x00];
    ip.write(&mut f).unwrap();
    f.extend_from_slice(&payload);
    f
}

fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 65, 0, 1]);
    m
}

/// The shipped rules plus `extra` exact names.
fn rules_with(extra: usize) -> Rules {
    let mut set = RuleSet::default();
    parse_into(&mut set, "shipped", SHIPPED).unwrap();
    let mut text = String::from("[vendor]\nid = \"bulk\"\nname = \"Bulk\"\ncutoff = \"2024-09-29T04:00:00Z\"\n");
    for i in 0..extra {
        text.push_str(&format!(
            "[[rule]]\nid = \"b{i}\"\ncategory = \"other\"\nmatch = \"{}\"\npattern = \"host{i}.example{}.test\"\n",
            if i % 2 == 0 { "exact" } else { "suffix" },
            i % 97
        ));
    }
    if extra > 0 {
        parse_into(&mut set, "bulk", &text).unwrap();
    }
    Rules::new(set)
}

fn worker_flow(c: &mut Criterion, name: &str, segments: &[&[u8]]) {
    let rules = Arc::new(load(None).map(Rules::new).unwrap());
    c.bench_function(name, |b| {
        let mut w = Worker::new(rules.clone(), Limits::default());
        let mut port = 0u16;
        b.iter(|| {
            port = port.wrapping_add(1);
            let (key, _) = FlowKey::new(
                VlanTags::default(),
                ("10.1.2.3".parse().unwrap(), port),
                ("93.184.216.34".parse().unwrap(), 443),
                6,
            );
            let mut meta = PacketMeta::synthetic(1, key, false, None, Transport::Tcp { seq: 999, flags: TCP_SYN }, 0);
            w.process(&meta, &[]);
            let mut seq = 1000u32;
            for s in segments {
                meta.transport = Transport::Tcp { seq, flags: TCP_ACK };
                w.process(&meta, black_box(s));
                seq += s.len() as u32;
            }
        });
    });
}

fn benches(c: &mut Criterion) {
    let frame = tcp_frame(&CH_PQ[..1460]);
    c.bench_function("decode ethernet/ipv4/tcp frame", |b| {
        b.iter(|| black_box(decode::decode(1, black_box(&frame))).is_packet())
    });
    let cfg = decode::DecodeConfig::default();
    for (label, f) in [("VXLAN", vxlan_frame(&frame)), ("ERSPAN III", erspan3_frame(&frame))] {
        assert!(decode::decode_with(&cfg, 1, &f).is_packet(), "{label} frame decodes");
        c.bench_function(&format!("decode {label}/ethernet/ipv4/tcp frame"), |b| {
            b.iter(|| black_box(decode::decode_with(&cfg, 1, black_box(&f))).is_packet())
        });
    }
    let q = dns_query("dnl-03.geo.kaspersky.com");
    c.bench_function("dns parse HTTPS query", |b| b.iter(|| dns::parse(black_box(&q)).is_ok()));
    c.bench_function("tls parse ClientHello 1849 B (PQ)", |b| {
        b.iter(|| tls::parse_client_hello(black_box(CH_PQ)).is_ok())
    });
    worker_flow(c, "worker: SYN + ClientHello in 1 segment", &[CH_SMALL]);
    worker_flow(c, "worker: SYN + ClientHello in 2 segments", &[&CH_PQ[..1460], &CH_PQ[1460..]]);
    for (label, extra) in [("shipped rules", 0), ("shipped + 100k names", 100_000)] {
        let rules = rules_with(extra);
        let names = [
            "dnl-03.geo.kaspersky.com",
            "www.google.com",
            "safebrowsing.googleapis.com",
            "kaspersky.com.mirror-cdn.net",
        ];
        c.bench_function(&format!("rule match x4 names, {label}"), |b| {
            b.iter(|| names.iter().filter(|n| rules.find_index(black_box(n)).is_some()).count())
        });
    }
}

criterion_group!(parsers, benches);
criterion_main!(parsers);
