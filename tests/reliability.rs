//! Reliability: the packet of death that crashed the sensor is reported normally, and a parser
//! panic (planted with the test-only hooks of `src/worker/contain.rs`) costs one counted packet,
//! not the run. The live engines are covered in `tests/live.rs`.

mod common;

use std::path::Path;

use common::*;

fn write(d: &Path, name: &str, bytes: &[u8]) -> String {
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn domains_by_via(report: &serde_json::Value, ip: &str) -> Vec<String> {
    let h = report["hosts"].as_array().unwrap().iter().find(|h| h["ip"] == ip).unwrap_or_else(|| panic!("{report}"));
    let mut v: Vec<String> = h["domains"].as_array().unwrap().iter().map(|d| d["domain"].to_string()).collect();
    v.sort();
    v
}

#[test]
fn the_packet_of_death_over_tcp_and_quic_is_reported_normally() {
    let d = tmpdir("death");
    let cap = write(&d, "death.pcap", &pcap(1, &packet_of_death([10, 0, 0, 5], AFTER_US)));
    let (rep, ev) = (d.join("r.json"), d.join("e.json"));
    let o = run(&["analyze", &cap, "--report", rep.to_str().unwrap(), "--events", ev.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json(&rep);
    assert_eq!(r["stats"]["parser_panics"]["total"], 0, "{}", r["stats"]);
    let events = json_lines(&ev);
    let vias: Vec<(&str, &str)> =
        events.iter().map(|e| (e["domain"].as_str().unwrap(), e["event_type"].as_str().unwrap())).collect();
    assert_eq!(vias, [("dnl-01.geo.kaspersky.com", "tls"), ("dnl-01.geo.kaspersky.com", "quic")], "{events:?}");
    assert_eq!(r["hosts"][0]["ip"], "10.0.0.5");
    assert_eq!(r["hosts"][0]["verdict"], "active-after-cutoff");
}

#[test]
fn a_planted_parser_panic_costs_one_counted_packet() {
    let d = tmpdir("planted");
    let state = d.join("state");
    let demo = captures().join("demo.pcapng");
    let (clean, hurt) = (d.join("clean.json"), d.join("hurt.json"));
    let o = run(&["analyze", demo.to_str().unwrap(), "--report", clean.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The marker is in the Host header of 10.99.0.11's two plain-HTTP update requests only.
    let o = bin()
        .args(["analyze", demo.to_str().unwrap(), "--report", hurt.to_str().unwrap(), "-q", "--workers", "2"])
        .arg("--state-dir")
        .arg(&state)
        .env("KAVWATCH_TEST_PANIC", "dnl-01")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(5), "an incomplete run has its own status: {err}");
    assert_eq!(
        err.matches("kavwatch: bug: a panic in the http parser was contained").count(),
        1,
        "one line per kind: {err}"
    );
    assert!(err.contains("the run is incomplete: 2 packet(s)"), "{err}");
    let (c, h) = (json(&clean), json(&hurt));
    assert_eq!(h["stats"]["parser_panics"], serde_json::json!({"total": 2, "http": 2}));
    assert_eq!(c["stats"]["parser_panics"], serde_json::json!({"total": 0}));
    // Everything else is as without the panic: the same hosts and verdicts; 10.99.0.11 lost only
    // the two requests that met the planted panic.
    let rows = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["hosts"].as_array().unwrap().iter().map(|h| (h["ip"].to_string(), h["verdict"].to_string())).collect()
    };
    assert_eq!(rows(&c), rows(&h));
    assert_eq!(c["stats"]["observations"].as_u64().unwrap() - 2, h["stats"]["observations"].as_u64().unwrap());
    assert!(domains_by_via(&c, "10.99.0.11").contains(&"\"dnl-01.geo.kaspersky.com\"".to_string()));
    assert!(!domains_by_via(&h, "10.99.0.11").contains(&"\"dnl-01.geo.kaspersky.com\"".to_string()));
    // The first packet of the kind is kept for a bug report, and only that one.
    let saved: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let bytes = std::fs::read(&saved[0]).unwrap();
    assert!(bytes.starts_with(b"GET ") && bytes.windows(6).any(|w| w == b"dnl-01"), "{bytes:?}");
    // The report and the page say the answer is incomplete.
    let html = d.join("hurt.html");
    let o = bin()
        .args(["analyze", demo.to_str().unwrap(), "--report", html.to_str().unwrap()])
        .arg("--state-dir")
        .arg(&state)
        .env("KAVWATCH_TEST_PANIC", "dnl-01")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert!(
        stdout(&o).contains("Incomplete: 2 packet(s) skipped after a contained parser panic (http: 2)"),
        "{}",
        stdout(&o)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("data-incomplete=\"parser-panics\""));
}

#[test]
fn a_worker_that_dies_anyway_is_restarted_and_the_report_still_written() {
    let d = tmpdir("restart");
    let demo = captures().join("demo.pcapng");
    let rep = d.join("r.json");
    let o = bin()
        .args(["analyze", demo.to_str().unwrap(), "--report", rep.to_str().unwrap(), "-q", "--workers", "1"])
        .arg("--state-dir")
        .arg(d.join("state"))
        .env("KAVWATCH_TEST_PANIC_WORKER", "dnl-01")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert_eq!(err.matches("the worker was restarted").count(), 1, "{err}");
    let r = json(&rep);
    assert_eq!(r["stats"]["worker_restarts"], 1, "{}", r["stats"]);
    // What the worker had found before it died is kept, and it went on after: every host is there.
    assert_eq!(r["hosts"].as_array().unwrap().len(), 6, "{r}");
}
