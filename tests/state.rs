//! `kavwatch live` keeps its hosts across restarts (`state`): killed with SIGKILL in the middle
//! of a replay and started again on the same state directory, its report holds what one
//! uninterrupted run over the same traffic holds; `--fresh` starts over; a damaged checkpoint is
//! set aside with one warning. Needs root (CI runs as root), iproute2 and tcpreplay.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

/// Replayed before the kill: a host in `demo.pcapng` comes back after it, the resolver is
/// learned, a tunnel is kept. Each capture stands on its own (no DNS answer, DHCP lease or
/// Security Center pattern across captures: those are not kept).
const FIRST: [&str; 5] = ["demo.pcapng", "dns-udp.pcap", "tls13.pcap", "resolver.pcap", "encap/vxlan-real.pcap"];
/// Replayed after the restart.
const SECOND: [&str; 5] = ["demo.pcapng", "http.pcap", "quic-h3.pcap", "ksc.pcap", "ipv6.pcap"];
/// Replayed packets carry today's time: a cutoff far in the past.
const CUTOFF: &str = "2000-01-01T00:00:00Z";

fn files(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|f| captures().join(f)).collect()
}

fn args<'a>(report: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--cutoff", CUTOFF, "--report", report.to_str().unwrap(), "--report-interval", "1s"];
    a.extend(["--workers", "2"]);
    a.extend_from_slice(extra);
    a
}

/// Times said the way the report says them (RFC 3339) to nanoseconds, for comparisons.
fn ns(t: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap().timestamp_nanos_opt().unwrap()
}

/// Everything of a host but packet times (replays carry the time they are replayed at).
fn timeless(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !["first_seen", "last_seen", "last_seen_after_cutoff", "timestamp"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), timeless(v)))
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(timeless).collect(),
        v => v.clone(),
    }
}

/// Hosts by address and VLAN: verdict, counts per category, domains with their counts, MAC,
/// role, tunnel, evidence..., without times.
fn hosts(report: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    report["hosts"].as_array().unwrap().iter().map(|h| (format!("{}/{}", h["ip"], h["vlan"]), timeless(h))).collect()
}

/// Per host: first and last seen.
fn seen(report: &serde_json::Value) -> BTreeMap<String, (i64, i64)> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (format!("{}/{}", h["ip"], h["vlan"]), (ns(&h["first_seen"]), ns(&h["last_seen"]))))
        .collect()
}

/// Observations per category over the whole timeline (the runs may straddle an hour).
fn timeline_totals(report: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut t = BTreeMap::new();
    for cats in report["timeline"].as_object().unwrap().values() {
        for (c, n) in cats.as_object().unwrap() {
            *t.entry(c.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    t
}

/// Waits until the report (rewritten every second) stops changing its hosts and observation
/// count, and then more than one report interval: the checkpoint written with it holds them.
fn settled(report: &Path) -> serde_json::Value {
    let t = Instant::now();
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(1300));
        let r = std::fs::read_to_string(report).ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
        let key = r.as_ref().map(|r| (hosts(r), r["stats"]["observations"].clone()));
        if key.is_some() && key == last {
            std::thread::sleep(Duration::from_millis(1500));
            return r.unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the report did not settle");
        last = key;
    }
}

fn wait_exit(live: &mut Live) {
    let t = Instant::now();
    while live.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "kavwatch live did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hosts `analyze` finds in `names`.
fn analyzed_hosts(d: &Path, names: &[&str]) -> BTreeSet<String> {
    let rep = d.join("analyze.json");
    let paths: Vec<String> = files(names).iter().map(|p| p.display().to_string()).collect();
    let mut a = vec!["analyze", "-q", "--cutoff", CUTOFF, "--report", rep.to_str().unwrap()];
    a.extend(paths.iter().map(|s| s.as_str()));
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    hosts(&json(&rep)).into_keys().collect()
}

#[test]
fn a_restart_after_sigkill_reports_what_one_run_does() {
    need_root!();
    // (a) One run over all the traffic.
    let d = tmpdir("state-one-run");
    let ns_a = Netns::new("st1");
    let rep_a = d.join("report.json");
    let live = Live::start(&ns_a, &d, &args(&rep_a, &[]));
    ns_a.replay(&files(&FIRST), &["--topspeed"]);
    settled(&rep_a);
    ns_a.replay(&files(&SECOND), &["--topspeed"]);
    settled(&rep_a);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let one = json(&rep_a);
    assert!(one["hosts"].as_array().unwrap().len() >= 10, "{}", one["hosts"]);

    // (b) The same traffic, killed in between.
    let d = tmpdir("state-killed");
    let ns_b = Netns::new("st2");
    let rep_b = d.join("report.json");
    let mut live = Live::start(&ns_b, &d, &args(&rep_b, &[]));
    ns_b.replay(&files(&FIRST), &["--topspeed"]);
    let before = settled(&rep_b);
    live.signal(libc::SIGKILL);
    wait_exit(&mut live);
    let err = live.stderr();
    assert!(!err.contains("warning: state"), "{err}");
    let checkpoint = d.join("state/live.checkpoint");
    assert!(checkpoint.is_file(), "no checkpoint after more than one report interval");
    let restarted_at = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let live = Live::start(&ns_b, &d, &args(&rep_b, &["--stats-interval", "1s"]));
    let n = before["hosts"].as_array().unwrap().len();
    live.wait_stderr(
        &format!("kavwatch: state: restored {n} hosts from {}", checkpoint.display()),
        Duration::from_secs(5),
    );
    ns_b.replay(&files(&SECOND), &["--topspeed"]);
    settled(&rep_b);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("kavwatch: state: ") && err.contains("hosts saved to"), "{err}");
    let two = json(&rep_b);

    // Every host, with its verdict, counts, domains, MAC, role and tunnel, as in one run.
    let (h1, h2) = (hosts(&one), hosts(&two));
    let differ: Vec<_> = h1.keys().chain(h2.keys()).filter(|k| h1.get(*k) != h2.get(*k)).collect();
    assert!(differ.is_empty(), "hosts differ from one run: {differ:?}\none: {h1:#?}\nrestarted: {h2:#?}");
    assert_eq!(one["summary"], two["summary"]);
    assert_eq!(timeline_totals(&one), timeline_totals(&two));
    assert_eq!(one["stats"]["observations"], two["stats"]["observations"]);
    assert!(h2.values().any(|h| h["role"] == "resolver"), "the learned resolver was kept");
    assert!(h2.values().any(|h| h["tunnel"][0]["type"] == "vxlan"), "the tunnel was kept");
    // Times: a host seen before the kill keeps its first sighting (and its last, unless seen
    // again); one seen only after it is first seen after the restart. The run's first packet
    // is the first run's.
    let (s1, s2) = (seen(&before), seen(&two));
    for (k, (first, last)) in &s2 {
        match s1.get(k) {
            Some((f1, l1)) => {
                assert_eq!(first, f1, "{k}: first seen");
                assert!(last >= l1, "{k}: last seen");
            }
            None => assert!(*first >= restarted_at, "{k}: first seen before the restart but not restored"),
        }
    }
    assert!(s1.keys().all(|k| s2.contains_key(k)));
    assert_eq!(two["period"]["first"], before["period"]["first"]);
    let c = &two["stats"]["checkpoint"];
    assert_eq!(c["restored_hosts"], n as u64, "{c}");
    assert!(c["writes"].as_u64().unwrap() >= 2 && c["failures"] == 0, "{c}");
    assert!(c["last_bytes"].as_u64().unwrap() > 1000, "{c}");

    // --fresh: the checkpoint is set aside, the report holds the second half only.
    let rep_f = d.join("report-fresh.json");
    let live = Live::start(&ns_b, &d, &args(&rep_f, &["--fresh"]));
    live.wait_stderr("--fresh: the checkpoint was set aside as", Duration::from_secs(5));
    assert!(d.join("state/live.checkpoint.old").is_file());
    ns_b.replay(&files(&SECOND), &["--topspeed"]);
    settled(&rep_f);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("restored"), "{err}");
    let fresh = json(&rep_f);
    let got: BTreeSet<String> = hosts(&fresh).into_keys().collect();
    assert_eq!(got, analyzed_hosts(&d, &SECOND));
    assert!(got.len() < h1.len());
    assert_eq!(fresh["stats"]["checkpoint"]["restored_hosts"], 0);
}

#[test]
fn a_truncated_checkpoint_gives_one_warning_and_a_fresh_start() {
    need_root!();
    let d = tmpdir("state-truncated");
    let ns = Netns::new("st3");
    let rep = d.join("report.json");
    let live = Live::start(&ns, &d, &args(&rep, &[]));
    ns.replay(&files(&["demo.pcapng"]), &["--topspeed"]);
    settled(&rep);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let checkpoint = d.join("state/live.checkpoint");
    let bytes = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();

    let live = Live::start(&ns, &d, &args(&rep, &[]));
    ns.replay(&files(&["dns-udp.pcap"]), &["--topspeed"]);
    settled(&rep);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> =
        err.lines().filter(|l| l.contains("warning: state") || l.contains("is damaged")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&checkpoint.display().to_string()) && warnings[0].contains("damaged"),
        "{}",
        warnings[0]
    );
    assert!(!err.contains("restored"), "{err}");
    // Set aside as it was, and a good checkpoint written since.
    let aside: Vec<PathBuf> = std::fs::read_dir(d.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("live.checkpoint.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), &bytes[..bytes.len() / 2]);
    assert!(std::fs::metadata(&checkpoint).unwrap().len() > 100);
    // A fresh start: the second capture's hosts only.
    let got: BTreeSet<String> = hosts(&json(&rep)).into_keys().collect();
    assert_eq!(got, analyzed_hosts(&d, &["dns-udp.pcap"]));
}
