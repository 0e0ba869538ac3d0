//! The bodies of the fuzz targets. They live in the library, not in `fuzz/fuzz_targets/`, so that
//! the fuzz targets (`fuzz_target!(|data: &[u8]| kavwatch::fuzzing::NAME(data))`) and the
//! corpus replay in `tests/fuzz_corpus.rs`, which runs every committed input of `fuzz/corpus/`
//! under `cargo test` on the stable toolchain, run the very same code: a packet of death found
//! once stays a test case, without nightly, libFuzzer or cargo-fuzz. Each function takes any
//! bytes, and panics only on a bug (a panic in a parser, or a broken invariant asserted here).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use crate::attribution::Attributor;
use crate::capture::file::CaptureReader;
use crate::decode::{self, Outcome, Transport, VlanTags, defrag::Defragmenter};
use crate::flow::FlowKey;
use crate::host::HostTable;
use crate::output::events::{Inputs, write_events};
use crate::proto::{dhcp as dhcp_proto, dns as dns_proto, http as http_proto, quic as quic_proto, tls as tls_proto};
use crate::rules::{load::load, matcher::Rules};
use crate::worker::{Limits, PacketMeta, Worker};

/// Names that come out of a parser are printable ASCII, whatever went in.
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// The built-in rules, loaded once per process.
fn rules() -> Arc<Rules> {
    static R: OnceLock<Arc<Rules>> = OnceLock::new();
    R.get_or_init(|| Arc::new(Rules::new(load(None).expect("built-in rules load")))).clone()
}

/// A DNS message (`proto::dns::parse`).
pub fn dns(data: &[u8]) {
    // The reader reads the questions first and the whole message only when one matches: the
    // questions must be the same either way, and a message whole must have readable questions.
    let questions = dns_proto::parse_questions(data);
    let whole = dns_proto::parse(data);
    if let Ok(m) = &whole {
        assert_eq!(questions.as_ref().map(|q| &q.questions), Ok(&m.questions));
    }
    if let Ok(m) = whole {
        for q in &m.questions {
            assert!(printable(&q.name), "question name {:?}", q.name);
        }
        for a in &m.answers {
            assert!(printable(&a.name), "answer name {:?}", a.name);
        }
    }
}

/// The start of a client's TCP stream as a TLS ClientHello, and its fingerprints.
pub fn tls(data: &[u8]) {
    // The worker decides on the name-only parse and parses again in full what it keeps: the
    // two must agree on the outcome and on what the decision reads.
    let named = tls_proto::parse_client_hello_name(data);
    let full = tls_proto::parse_client_hello(data);
    match (&named, &full) {
        (Ok(n), Ok(f)) => assert!(
            n.sni == f.sni && n.ech == f.ech && n.legacy_version == f.legacy_version && n.records == f.records,
            "name-only parse differs: {n:?} / {f:?}"
        ),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("name-only parse {named:?}, full parse {full:?}"),
    }
    if let Ok(ch) = full {
        if let Some(sni) = &ch.sni {
            assert!(printable(sni), "SNI {sni:?}");
        }
        let _ = ch.ja3();
        let _ = ch.ja4();
    }
}

/// The start of a client's TCP stream as an HTTP/1.x request.
pub fn http(data: &[u8]) {
    if let Ok(r) = http_proto::parse_request(data) {
        assert!(r.header_len <= data.len());
        assert!(r.host.as_deref().is_none_or(printable));
    }
}

/// A whole capture file: reader, link layers, IP, fragments, TCP/UDP.
pub fn capture(data: &[u8]) {
    let Ok(mut r) = CaptureReader::from_reader("fuzz".into(), Box::new(std::io::Cursor::new(data.to_vec()))) else {
        return;
    };
    let mut defrag = Defragmenter::default();
    while let Ok(Some(p)) = r.next_packet() {
        if let Outcome::Fragment(f) = decode::decode(p.linktype, p.data)
            && let Some(d) = defrag.add(&f, p.ts_ns)
        {
            let _ = decode::decode_reassembled(&f, &d);
        }
    }
}

/// TCP reassembly and the worker's state machine, fed crafted segments of one flow: the first
/// byte picks the server port (0: 53, else 443), then each record is
/// [flags, direction, seq (4 bytes), len, payload...].
pub fn tcp_stream(data: &[u8]) {
    let limits = Limits { max_flows: 16, flow_idle_ns: 1_000, reassembly_bytes: 64 * 1024 };
    let mut w = Worker::new(rules(), limits);
    let client = (IpAddr::from([10, 0, 0, 1]), 40000);
    let server = (IpAddr::from([10, 0, 0, 2]), if data.first() == Some(&0) { 53 } else { 443 });
    let (key, _) = FlowKey::new(VlanTags::default(), client, server, 6);
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut ts = 0;
    while let Some((head, tail)) = rest.split_first_chunk::<7>() {
        let (flags, dir, seq, len) =
            (head[0], head[1] & 1 == 1, u32::from_be_bytes([head[2], head[3], head[4], head[5]]), usize::from(head[6]));
        let (payload, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        ts += 1;
        let meta = PacketMeta::synthetic(ts, key, dir, None, Transport::Tcp { seq, flags }, payload.len());
        w.process(&meta, payload);
    }
    w.finish();
}

/// A UDP payload as DHCPv4 and as DHCPv6: the sensor picks the parser by port, which the
/// sender chooses.
pub fn dhcp(data: &[u8]) {
    if let Ok(m) = dhcp_proto::parse_dhcpv4(data) {
        assert!(m.host_name.as_deref().is_none_or(printable));
        assert!(m.fqdn.as_ref().is_none_or(|f| printable(&f.name)));
        assert!(m.client_id.as_ref().is_none_or(|c| c.len() <= 255));
    }
    if let Ok(m) = dhcp_proto::parse_dhcpv6(data) {
        assert!(m.fqdn.as_ref().is_none_or(|f| printable(&f.name)));
        assert!(m.ia_na.len() <= 8 && m.ia_na.iter().all(|ia| ia.addresses.len() <= 8));
        assert!(m.client_duid.as_ref().is_none_or(|d| d.len() <= 130));
        assert!(m.relay.is_none_or(|r| (1..=9).contains(&r.depth)));
    }
}

/// Puts the CRYPTO stream together and parses the ClientHello, as the worker does.
fn quic_client_hello(asm: &quic_proto::CryptoAssembler) {
    assert!(asm.contiguous().len() <= quic_proto::MAX_CRYPTO_BYTES);
    if let Ok(Some(msg)) = asm.client_hello() {
        let record = quic_proto::as_tls_record(msg).expect("a ClientHello within MAX_CRYPTO_BYTES fits a record");
        tls(&record);
    }
}

/// QUIC client Initials. The bytes go in as a datagram (headers, coalescing, lengths, header
/// protection; random bytes never pass the AEAD check, so the corpus holds sealed Initials),
/// whose CRYPTO fragments go to the assembler and on to the ClientHello parser; then as a
/// decrypted Initial payload (frames), the same way, so that every stage meets hostile input.
pub fn quic(data: &[u8]) {
    let _ = quic_proto::is_quic_long_header_initial(data);
    if let Ok(d) = quic_proto::parse_datagram(data) {
        // What is kept is the datagram's own bytes, never more.
        assert!(d.initials.iter().map(|p| p.payload().len()).sum::<usize>() <= data.len());
        let mut asm = quic_proto::CryptoAssembler::new();
        for p in &d.initials {
            let _ = asm.add_packet(p);
        }
        quic_client_hello(&asm);
    }
    if let Ok(frames) = quic_proto::parse_frames(data) {
        let mut asm = quic_proto::CryptoAssembler::new();
        for (offset, range) in &frames.crypto {
            let _ = asm.add(*offset, data.get(range.clone()).expect("CRYPTO data inside the payload"));
        }
        quic_client_hello(&asm);
    }
}

/// Port pairs of the `sink` target: DNS, DHCPv4, DHCPv6, Security Center, QUIC, DHCPv4 reply.
const SINK_PORTS: [(u16, u16); 8] =
    [(40000, 53), (68, 67), (546, 547), (40001, 13000), (40002, 15000), (40003, 15111), (40004, 443), (67, 68)];
const SINK_V4: [[u8; 4]; 3] = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]];
const SINK_V6: [[u16; 8]; 3] =
    [[0xfe80, 0, 0, 0, 0, 0, 0, 1], [0xfd00, 0, 0, 0, 0, 0, 0, 2], [0xfd00, 0, 0, 0, 0, 0, 0, 3]];

/// UDP datagrams between a few hosts (DNS, DHCPv4/v6, Security Center ports, QUIC) through a
/// worker and then the sink's time-ordered pass (DNS-answer map, resolvers, Security Center
/// pairs, DHCP lease book), the host table and the events writer. Each record is
/// [port pair, addresses and direction, len / 4, payload...].
pub fn sink(data: &[u8]) {
    let rules = rules();
    let mut w =
        Worker::new(rules.clone(), Limits { max_flows: 16, flow_idle_ns: 1_000_000, reassembly_bytes: 64 * 1024 });
    let mut rest = data;
    let mut ts = 0;
    while let Some((head, tail)) = rest.split_first_chunk::<3>() {
        let (ports, who, len) = (SINK_PORTS[usize::from(head[0] & 7)], head[1], usize::from(head[2]) * 4);
        let (payload, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let addr = |i: u8| -> IpAddr {
            let i = usize::from(i & 3) % 3;
            if who & 0x80 != 0 { IpAddr::from(SINK_V6[i]) } else { IpAddr::from(SINK_V4[i]) }
        };
        let (a, b) = (addr(who), addr(who >> 2));
        let (key, reverse) = FlowKey::new(VlanTags::default(), (a, ports.0), (b, ports.1), 17);
        let reverse = reverse ^ (who & 0x40 != 0);
        ts += 1_000_000;
        let meta = PacketMeta::synthetic(ts, key, reverse, Some([2, 0, 0, 0, 0, who]), Transport::Udp, payload.len());
        w.process(&meta, payload);
    }
    w.finish();
    let mut obs = w.take_observations();
    obs.sort_by_key(|o| o.sort_key());
    let mut attributor = Attributor::default();
    let mut obs = attributor.process(obs, &rules, 0);
    obs.extend(attributor.finish(&rules));
    let mut table = HostTable::new(4);
    for o in &obs {
        table.add(o, &rules, None);
    }
    let _ = table.hosts();
    write_events(&mut std::io::sink(), &obs, &rules, Inputs::Files(&["fuzz".to_string()]), None)
        .expect("writing events to io::sink cannot fail");
}

/// The decoder's layer chain (link types, tags, tunnels and overlays) on hostile frames. The first
/// byte picks the link type (low 3 bits) and the overlay split (bit 3).
pub fn decap(data: &[u8]) {
    const LINK_TYPES: [u32; 8] = [1, 9, 50, 51, 101, 104, 113, 276];
    let Some((&sel, frame)) = data.split_first() else { return };
    let linktype = LINK_TYPES[usize::from(sel & 7)];
    let cfg = decode::DecodeConfig { split_by_overlay: sel & 8 != 0, ..decode::DecodeConfig::default() };
    let out = decode::decode_with(&cfg, linktype, frame);
    assert!(out.tunnels().len() <= decode::MAX_ENCAP_DEPTH);
    // The fast paths (plain Ethernet, and one tunnel around it) give what the layers give.
    let layered = decode::decode_layered(&cfg, linktype, frame);
    assert_eq!(format!("{out:?}"), format!("{layered:?}"), "fast path and layers differ");
    if let Outcome::Packet(d) = &out {
        assert!(cfg.split_by_overlay || d.vlan.overlay().is_none());
    }
    // The short form agrees on what the frame is.
    match (&out, &decode::decode(linktype, frame)) {
        (Outcome::Packet(_), Outcome::Packet(_))
        | (Outcome::Fragment(_), Outcome::Fragment(_))
        | (Outcome::Skipped(_), Outcome::Skipped(_))
        | (Outcome::Malformed(_), Outcome::Malformed(_)) => {}
        (a, b) => panic!("decode_with {a:?} but decode {b:?}"),
    }
}

/// The metrics server's request reading and routing (`live --metrics`): any bytes, arriving in
/// pieces whose size the first byte picks, as a socket may hand them over. The head read ends
/// at the first blank line, is never longer than `MAX_HEAD`, and routes as it would whole; a
/// label value made of the bytes escapes to one line that reads back as it was.
pub fn metrics_request(data: &[u8]) {
    use crate::metrics::escape_label;
    use crate::metrics::server::{MAX_HEAD, Route, head_end, read_head, response, route};
    struct Pieces<'a>(&'a [u8], usize);
    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let step = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let first_end = head_end(data);
    match read_head(&mut Pieces(data, step), far, |_, _| Ok(())) {
        Some(head) => {
            assert!(head.len() <= MAX_HEAD && data.starts_with(&head));
            assert_eq!(first_end, Some(head.len()), "the head ends at the first blank line");
            let r = route(&head);
            if let Route::Metrics { head_only } = r {
                assert!(head.starts_with(if head_only { b"HEAD /metrics" } else { b"GET /metrics" }));
            }
            let answer = response(r, "kavwatch_up 1\n");
            assert!(answer.starts_with(b"HTTP/1.1 ") && head_end(&answer).is_some());
        }
        None => assert!(first_end.is_none_or(|e| e > MAX_HEAD), "a whole head of {first_end:?} bytes refused"),
    }
    let value = String::from_utf8_lossy(data);
    let escaped = escape_label(&value);
    assert!(!escaped.contains('\n'));
    let mut back = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        back.push(match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => '\n',
                Some(c @ ('\\' | '"')) => c,
                other => panic!("bad escape {other:?} in {escaped:?}"),
            },
            ('"', false) => panic!("an unescaped quote in {escaped:?}"),
            (c, false) => c,
        });
    }
    assert_eq!(back, value);
}

/// The checkpoint reader of `live` (`state`) on hostile bytes: as a whole file (header, SHA-256)
/// and, since a fuzzer seldom gets a SHA-256 right, as a payload alone. Whatever decodes encodes
/// back to bytes that decode the same, and is restored into a host table, alert windows and a
/// report, as `live` does at start.
pub fn checkpoint(data: &[u8]) {
    use crate::alert::engine::{AlertEngine, EngineConfig};
    use crate::state;
    let rules = rules();
    let whole = state::decode(data, 1 << 20).ok();
    let payload = state::decode_payload(data).ok();
    for mut cp in [whole, payload].into_iter().flatten() {
        let bytes = state::encode(&cp).expect("a decoded checkpoint encodes");
        assert_eq!(state::decode(&bytes, u64::MAX).as_ref(), Ok(&cp), "encoding and decoding again changed it");
        cp.renumber(&rules);
        let table = HostTable::restore(cp.table, 8);
        assert!(table.len() <= 8);
        let hosts = table.hosts();
        let run = crate::output::report::RunInfo {
            stats: serde_json::Value::Null,
            inputs: &[],
            first_ts: cp.first_ts,
            last_ts: cp.last_ts,
            errors: &[],
        };
        let report = crate::output::report::Report::build(&run, &hosts, &table.timeline, &rules, 0, "fuzz");
        let _ = report.to_json();
        let mut engine = AlertEngine::new(EngineConfig {
            interval_ns: 1,
            alert_all: true,
            sensor: "fuzz".into(),
            cutoff_override: None,
        });
        engine.restore_windows(cp.alert_windows.unwrap_or_default());
        let _ = engine.tick(i64::MAX);
    }
}

/// What a fleet collector reads from the bus (`fleet::table`, `fleet::message`), one message per
/// line: the first byte picks an observation, a status or a spool line. Every message is folded
/// into a small table (4 hosts), whose report must be whole; then the collector's checkpoint
/// reader gets the same bytes.
pub fn fleet_message(data: &[u8]) {
    use crate::fleet::message::{Record, SensorStatus};
    use crate::fleet::table::{EventIn, FleetTable};
    let mut table = FleetTable::new(4);
    for (i, line) in data.split(|b| *b == b'\n').take(64).enumerate() {
        let Some((&kind, body)) = line.split_first() else { continue };
        match kind % 3 {
            0 => {
                if let Ok(e) = EventIn::parse(body) {
                    table.observe(&e, i as i64);
                }
            }
            1 => {
                if let Ok(s) = serde_json::from_slice::<SensorStatus>(body) {
                    table.status(s, i as i64);
                }
            }
            _ => {
                if let Some(r) = Record::from_line(&String::from_utf8_lossy(body)) {
                    assert_eq!(Record::from_line(&r.to_line()), Some(r), "a spool line reads back the same");
                }
            }
        }
    }
    assert!(table.len() <= 4);
    let base = crate::output::report::Report::empty("2024-09-29T04:00:00Z");
    let report = table.report("2024-09-29T04:00:00Z", base);
    assert_eq!(report.summary.get("hosts").copied(), Some(report.hosts.len()));
    let _ = report.to_json();
    let _ = crate::output::html::to_html(&report);
    let _ = crate::fleet::collect::decode_checkpoint(data);
}
