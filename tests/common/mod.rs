//! Helpers shared by the integration tests: run the binary, build small captures; a real rsyslog (`rsyslog`).
#![allow(dead_code)]

pub mod nats;
pub mod netns;
pub mod rsyslog;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command for an outside tool the tests use, after checking that it is installed: a missing tool fails the
/// test with what to install, not with "No such file or directory".
pub fn tool(program: &str, debian_package: &str) -> Command {
    let found = Path::new(program).is_absolute() && Path::new(program).exists()
        || std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    assert!(
        found,
        "this test needs `{program}`, which is not installed: apt-get install -y {debian_package} \
         (the README's Quick start installs everything the tests use)"
    );
    Command::new(program)
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kavwatch"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("running kavwatch")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// A fresh scratch directory for one test.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kavwatch-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A DNS query message for `name` (as given, no normalisation).
pub fn dns_query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split(|&b| b == b'.').filter(|l| !l.is_empty()) {
        m.push(label.len() as u8);
        m.extend_from_slice(label);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

/// A classic little-endian microsecond pcap.
pub fn pcap(linktype: u32, records: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (ts_us, data) in records {
        f.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
    }
    f
}

/// 2024-10-15T12:00:00Z, after the cutoff, in microseconds.
pub const AFTER_US: i64 = 1_728_993_600_000_000;
/// 2024-09-20T12:00:00Z, before the cutoff.
pub const BEFORE_US: i64 = 1_726_833_600_000_000;

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// An Ethernet/IPv4/TCP frame (flags: etherparse's builder: SYN, ACK or PSH+ACK by `flags`).
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'P' => b.psh(),
            'F' => b.fin(),
            _ => panic!("flag {f}"),
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// The packet of death of issue 13 (a ClientHello whose supported_groups extension is empty,
/// SNI dnl-01.geo.kaspersky.com), from the committed fuzz corpus: over TCP from `client` to
/// port 443 (handshake first), then inside a QUIC Initial to UDP 443 from the same client.
pub fn packet_of_death(client: [u8; 4], ts_us: i64) -> Vec<(i64, Vec<u8>)> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let hello = std::fs::read(corpus.join("tls/crash-empty-groups")).unwrap();
    let initial = std::fs::read(corpus.join("quic/crash-empty-groups-initial")).unwrap();
    let server = [192, 0, 2, 80];
    vec![
        (ts_us, tcp_frame(client, server, 40000, 443, 1000, "S", b"")),
        (ts_us + 1000, tcp_frame(server, client, 443, 40000, 5000, "SA", b"")),
        (ts_us + 2000, tcp_frame(client, server, 40000, 443, 1001, "PA", &hello)),
        (ts_us + 3000, udp_frame(client, server, 40001, 443, &initial)),
    ]
}

/// `analyze -q ARGS` with the events on stdout, one JSON value each; the exit status must be 0.
pub fn events(args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["analyze", "-q", "--events", "-"];
    a.extend_from_slice(args);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `analyze -q ARGS` with a JSON report, read back; the exit status must be 0.
pub fn report(args: &[&str]) -> serde_json::Value {
    let d = tmpdir(&format!("report-{}", args.join("-").replace(['/', '.'], "_")));
    let r = d.join("r.json");
    let mut a = vec!["analyze", "-q", "--report", r.to_str().unwrap()];
    a.extend_from_slice(args);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    json(&r)
}

/// Headless Chromium as the project's machines run it: no sandbox (root), nothing in the
/// background that would reach for the network, a fresh profile.
pub fn chromium(profile: &str) -> Command {
    let dir = tmpdir(profile);
    let mut c = tool("chromium", "chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &format!("--user-data-dir={}", dir.display()),
    ]);
    c
}

/// The page's DOM after its scripts ran.
pub fn dom(html: &Path) -> String {
    let out = chromium(&format!("chromium-{}", html.file_name().unwrap().to_string_lossy()))
        .args(["--virtual-time-budget=5000", "--dump-dom", &format!("file://{}", html.display())])
        .output()
        .expect("chromium (Debian package chromium) must be installed: .ci/run installs it");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Names built to break records (syslog framing, CEF, terminals, UTF-8, CSV, line ends), each
/// under kaspersky.com so the catch-all rule matches it.
pub const HOSTILE_NAMES: [&[u8]; 6] = [
    b"evil\n<13>1 2024-10-01T00:00:00Z forged.- - - [x@1 a=\"b\"] CEF:0|a|b|c.d|e|10|src=1.2.3.4.kaspersky.com",
    b"a|b=c]d\"e\\f.kaspersky.com",
    b"\x1b[31mred\x1b[0m.kaspersky.com",
    b"\xff\xfe\xc3\x28.kaspersky.com",
    b"comma,list.kaspersky.com",
    b"sp ace\r\ncr.kaspersky.com",
];

/// A capture of one DNS query per hostile name from 10.0.0.5, from `first_us`, `step_us` apart.
pub fn hostile_capture(path: &Path, first_us: i64, step_us: i64) {
    let frames: Vec<(i64, Vec<u8>)> = HOSTILE_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                first_us + i as i64 * step_us,
                udp_frame([10, 0, 0, 5], [10, 0, 0, 1], 40000 + i as u16, 53, &dns_query(i as u16, n, 1)),
            )
        })
        .collect();
    std::fs::write(path, pcap(1, &frames)).unwrap();
}
