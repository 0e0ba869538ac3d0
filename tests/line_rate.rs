//! Bounded memory under floods, and exact, worker-independent results on the reference
//! workload (benches/workload). Nothing here is timed: speed is measured by benches/line_rate.py.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::*;

/// Runs the command and returns (exit code, peak RSS in MB) from wait4's rusage.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's Child cannot do with rusage
fn run_measured(cmd: &mut Command) -> (i32, f64) {
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Safety: wait4 on our own child, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), ru.ru_maxrss as f64 / 1024.0)
}

/// `analyze` with 2 workers on a flood capture: its report (next to it) and peak RSS in MB.
fn analyze_flood(path: &Path) -> (std::path::PathBuf, f64) {
    let report = path.with_file_name("r.json");
    let args = ["analyze", "-q", "--workers", "2", path.to_str().unwrap(), "--report", report.to_str().unwrap()];
    let (code, rss) = run_measured(bin().args(args));
    assert_eq!(code, 0);
    (report, rss)
}

struct Pcap(std::io::BufWriter<std::fs::File>);

impl Pcap {
    fn create(path: &Path) -> Pcap {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
        w.write_all(&pcap(1, &[])).unwrap();
        Pcap(w)
    }
    fn tcp(&mut self, ts_us: i64, src: [u8; 4], sport: u16, seq: u32, syn: bool, payload: &[u8]) {
        let b =
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, [10, 0, 0, 1], 64);
        let b = if syn { b.tcp(sport, 443, seq, 64240).syn() } else { b.tcp(sport, 443, seq, 64240).ack(1) };
        let mut f = Vec::with_capacity(64 + payload.len());
        b.write(&mut f, payload).unwrap();
        let rec = pcap(1, &[(ts_us, f)]);
        self.0.write_all(&rec[24..]).unwrap();
    }
}

#[test]
fn floods_stay_bounded_and_are_counted() {
    let d = tmpdir("flood");
    let path = d.join("flood.pcap");
    let ch = include_bytes!("../benches/data/clienthello-chrome-pq.bin");
    let mut p = Pcap::create(&path);
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut ts = AFTER_US;
    // 1 M SYN-only flows from random sources.
    for _ in 0..1_000_000 {
        let r = next();
        p.tcp(ts, [10, (r >> 24) as u8, (r >> 16) as u8, r as u8], (r >> 8) as u16 | 1024, r, true, &[]);
        ts += 1;
    }
    // 100 k flows that send the first half of a ClientHello and nothing more.
    for i in 0..100_000u32 {
        let src = [172, 16, (i >> 8) as u8, i as u8];
        p.tcp(ts, src, 40000 + (i % 20000) as u16, 1000, true, &[]);
        p.tcp(ts + 1, src, 40000 + (i % 20000) as u16, 1001, false, &ch[..900]);
        ts += 2;
    }
    // After all that, a whole ClientHello must still be read.
    p.tcp(ts, [192, 168, 1, 1], 50000, 7000, true, &[]);
    p.tcp(ts + 1, [192, 168, 1, 1], 50000, 7001, false, &ch[..1460]);
    p.tcp(ts + 2, [192, 168, 1, 1], 50000, 7001 + 1460, false, &ch[1460..]);
    drop(p);
    let (report, rss) = analyze_flood(&path);
    let r = json(&report);
    // What the flood adds to the process's own footprint (the binary, its libraries and the
    // rules: measured on a one-packet capture with the same options).
    let small = path.with_file_name("one.pcap");
    let mut one = Pcap::create(&small);
    one.tcp(AFTER_US, [192, 168, 1, 1], 50000, 7000, true, &[]);
    drop(one);
    let (_, base) = analyze_flood(&small);
    assert!(rss - base < 56.0, "peak RSS {rss:.1} MB, {base:.1} MB of it without the flood");
    let st = &r["stats"];
    assert_eq!(st["packets"], 1_200_003);
    assert_eq!(st["tcp_flows"], 1_100_001);
    assert!(st["flows_evicted"].as_u64().unwrap() > 900_000, "{st}");
    assert_eq!(st["reassembly_gave_up"], 100_000, "every half-sent ClientHello is counted once: {st}");
    assert_eq!(st["tls_client_hellos"], 1, "the last, whole ClientHello is still read: {st}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Datagrams to Security Center's wake-up port from 300,000 different flows, then DHCP ACKs for
/// 100,000 addresses: what is held for the sink stays within its bounds, and every one is counted.
#[test]
fn security_center_and_dhcp_floods_stay_bounded_and_are_counted() {
    let d = tmpdir("flood-ksc-dhcp");
    let path = d.join("flood.pcap");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    w.write_all(&pcap(1, &[])).unwrap();
    let mut ts = AFTER_US;
    for i in 0..300_000u32 {
        let src = [10, 1, (i >> 16) as u8, (i >> 8) as u8];
        let f = udp_frame(src, [10, 2, 0, 1], 1024 + (i & 0xff) as u16, 15000, b"wake up");
        w.write_all(&pcap(1, &[(ts, f)])[24..]).unwrap();
        ts += 1;
    }
    for i in 0..100_000u32 {
        // BOOTP reply, DHCPACK for 10.3.x.y to a MAC of its own, with a host name.
        let mut m = vec![2, 1, 6, 0];
        m.extend_from_slice(&i.to_be_bytes()); // xid
        m.extend_from_slice(&[0; 8]); // secs, flags, ciaddr
        m.extend_from_slice(&[10, 3, (i >> 8) as u8, i as u8]); // yiaddr
        m.extend_from_slice(&[0; 8]); // siaddr, giaddr
        m.extend_from_slice(&[2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        m.resize(236, 0);
        m.extend_from_slice(&[99, 130, 83, 99, 53, 1, 5, 51, 4, 0, 0, 14, 16, 12, 4, b'h', b'o', b's', b't', 255]);
        let f = udp_frame([10, 3, 0, 1], [10, 3, (i >> 8) as u8, i as u8], 67, 68, &m);
        w.write_all(&pcap(1, &[(ts, f)])[24..]).unwrap();
        ts += 1;
    }
    drop(w);
    let (report, rss) = analyze_flood(&path);
    let st = &json(&report)["stats"];
    assert!(rss < 100.0, "peak RSS {rss:.1} MB");
    assert_eq!(st["packets"], 400_000);
    assert_eq!(st["dhcp_messages"], 100_000);
    let u = |v: &serde_json::Value| v.as_u64().unwrap();
    // Workers hand over after every batch in `analyze`, and what waits for time order spills:
    // every datagram reaches the sink.
    let (contacts, dropped) = (u(&st["ksc_contacts"]), u(&st["ksc_contacts_dropped"]));
    assert_eq!((contacts, dropped), (300_000, 0), "{st}");
    // The wake-up flood does not crowd out DHCP: every ACK is a lease.
    assert_eq!((u(&st["dhcp"]["leases"]), u(&st["dhcp_dropped"])), (100_000, 0), "{st}");
    let k = &st["ksc"];
    assert_eq!(u(&k["contacts"]), contacts);
    assert_eq!(k["pairs_confirmed"], 0, "wake-ups alone never make a Security Center: {k}");
    assert_eq!(u(&k["unconfirmed"]) + u(&k["held_dropped"]), contacts, "{k}");
    // The sink's own bound (8 held per unconfirmed pair) is said where people read it.
    let html = d.join("r.html");
    let o = bin().args(["report", "merge"]).arg(&report).arg("-o").arg(&html).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    let said = format!("{} Security Center contacts of a pair not yet confirmed", u(&k["held_dropped"]));
    assert!(u(&k["held_dropped"]) > 0 && page.contains(&said), "the page says what was let go");
    assert_eq!(json(&report)["hosts"].as_array().unwrap().len(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn reference_workload_exact_for_one_and_two_workers() {
    let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workload/gen_bench_pcap.py");
    assert!(generator.exists(), "the reference workload generator at {}", generator.display());
    let d = tmpdir("workload");
    let path = d.join("bench.pcap");
    let ok = tool("python3", "python3")
        .args([generator.to_str().unwrap(), "--packets", "300000", "--seed", "1", "--out", path.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "generating the workload");
    let truth: serde_json::Value = json(&d.join("bench.pcap.truth.json"));
    let mut want: Vec<(String, String, String, u64)> = truth["kaspersky"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["client_ip"].as_str().unwrap().into(),
                r["domain"].as_str().unwrap().into(),
                r["via"].as_str().unwrap().into(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    let mut outputs = Vec::new();
    for w in ["1", "2"] {
        let ev = d.join(format!("e{w}.json"));
        let (code, _) = run_measured(bin().args([
            "analyze",
            "-q",
            "--workers",
            w,
            path.to_str().unwrap(),
            "--events",
            ev.to_str().unwrap(),
        ]));
        assert_eq!(code, 0);
        let mut got = std::collections::BTreeMap::new();
        for e in json_lines(&ev) {
            *got.entry((
                e["host"].as_str().unwrap().to_string(),
                e["domain"].as_str().unwrap().to_string(),
                e["event_type"].as_str().unwrap().to_string(),
            ))
            .or_insert(0u64) += 1;
        }
        let got: Vec<_> = got.into_iter().map(|((a, b, c), n)| (a, b, c, n)).collect();
        assert_eq!(
            got, want,
            "--workers {w}: every (client, domain, via) of the truth file, with its count, and nothing else"
        );
        outputs.push(std::fs::read(&ev).unwrap());
    }
    assert_eq!(outputs[0], outputs[1], "byte-identical events");
    std::fs::remove_dir_all(&d).unwrap();
}
