//! Alerts delivered to a real rsyslog (TCP with octet counting, UDP, TLS with a test CA) and to
//! files, in every format; a collector outage in the middle; hostile names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::rsyslog::{Received, Rsyslog};
use common::*;

const BANNED: [&str; 4] = ["update", "telemetry", "activation", "management"];

/// `analyze` with alerts to the three rsyslog listeners and a file.
fn analyze_to(syslog: &Rsyslog, dir: &Path, inputs: &[&str], extra: &[&str]) -> Output {
    let tcp = format!("syslog+tcp://127.0.0.1:{}", syslog.tcp_port());
    let udp = format!("syslog+udp://127.0.0.1:{}", syslog.udp_port());
    let tls = format!("syslog+tls://127.0.0.1:{}", syslog.tls_port());
    let ca = syslog.ca_path();
    let spool = dir.join("spool");
    let mut args = vec!["analyze", "-q", "--alert", &tcp, "--alert", &udp, "--alert", &tls];
    args.extend(["--alert-ca", ca.to_str().unwrap(), "--spool-dir", spool.to_str().unwrap()]);
    args.extend(extra);
    args.extend(inputs);
    run(&args)
}

/// Parses one RFC 5424 SD-ELEMENT `[id k="v" ...]` (the whole structured-data part); panics if there is more.
fn sd_params(sd: &str) -> (String, BTreeMap<String, String>) {
    let b = sd.as_bytes();
    assert!(b.first() == Some(&b'[') && b.last() == Some(&b']'), "not one SD element: {sd}");
    let inner = &sd[1..sd.len() - 1];
    let (id, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
    let mut params = BTreeMap::new();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad SD param in {sd}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().expect("escape at end").1),
                Some((i, '"')) => break i,
                Some((_, ']')) => panic!("unescaped ] inside a value: {sd}"),
                Some((_, c)) => value.push(c),
                None => panic!("unterminated value in {sd}"),
            }
        };
        assert!(params.insert(name.to_string(), value).is_none(), "duplicate param {name} in {sd}");
        rest = after[end + 1..].strip_prefix(' ').unwrap_or(&after[end + 1..]);
    }
    (id.to_string(), params)
}

/// Parses a CEF record: 7 header fields (unescaped) and the extension's key=value pairs (unescaped).
fn cef(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    while header.len() < 7 {
        match chars.next().unwrap_or_else(|| panic!("short CEF header: {line}")) {
            '\\' => cur.push(chars.next().unwrap()),
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: String = chars.collect();
    // Keys start after a space (or at the start) and are followed by an unescaped '='.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut token = String::new();
    let mut it = ext.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                let e = it.next().unwrap();
                token.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    o => o,
                });
            }
            '=' => {
                // token = "<value of previous> <key>" : split the key off the end.
                let (prev, key) = match token.rfind(' ') {
                    Some(i) => (token[..i].to_string(), token[i + 1..].to_string()),
                    None => (String::new(), token.clone()),
                };
                if let Some(last) = pairs.last_mut() {
                    last.1 = prev;
                }
                pairs.push((key, String::new()));
                token.clear();
            }
            c => token.push(c),
        }
    }
    if let Some(last) = pairs.last_mut() {
        last.1 = token;
    }
    let mut ext = BTreeMap::new();
    for (k, v) in pairs {
        assert!(ext.insert(k.clone(), v).is_none(), "duplicate CEF key {k}: {line}");
    }
    (header, ext)
}

/// What one record says, whatever its format: (id, host, category, domains).
fn decode_body(format: &str, body: &str) -> (String, String, String, Vec<String>) {
    match format {
        "json" => {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
            let domains = v["domains"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
            (s(&v["id"]), s(&v["host"]), s(&v["category"]), domains)
        }
        "ecs" => {
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
            assert_eq!(v["event"]["kind"], "alert");
            assert!(v["observer"]["name"].is_string() && v["source"]["ip"].is_string());
            let domains =
                v["kavwatch"]["domains"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
            (s(&v["event"]["id"]), s(&v["host"]["ip"][0]), s(&v["rule"]["category"]), domains)
        }
        "cef" => {
            let (h, ext) = cef(body);
            assert_eq!(&h[..3], ["CEF:0", "kavwatch", "kavwatch"], "{body}");
            assert!(["8", "5", "3"].contains(&h[6].as_str()), "{body}");
            for k in ["rt", "src", "spt", "dst", "dpt", "dhost", "externalId", "cat", "cs1", "cs1Label", "dvchost"] {
                assert!(ext.contains_key(k), "CEF without {k}: {body}");
            }
            assert_eq!(ext["cs1Label"], "domains");
            let domains = ext["cs1"].split(',').map(|d| d.replace("\\x2c", ",")).collect();
            (ext["externalId"].clone(), ext["cs5"].clone(), ext["cat"].clone(), domains)
        }
        f => panic!("format {f}"),
    }
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

/// One alert per host and banned category after the cutoff, then one per hour: worked out from the events.
fn expected_alerts(events: &[serde_json::Value]) -> BTreeMap<(String, String), usize> {
    let mut last: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut n = BTreeMap::new();
    for e in events {
        let cat = s(&e["category"]);
        if !(e["after_cutoff"] == true && BANNED.contains(&cat.as_str())) {
            continue;
        }
        let key = (format!("{}{}", s(&e["host"]), e["vlan"]), cat);
        let t = chrono::DateTime::parse_from_rfc3339(&s(&e["timestamp"])).unwrap().timestamp();
        if last.get(&key).is_none_or(|l| t - l >= 3600) {
            last.insert(key.clone(), t);
            *n.entry(key).or_default() += 1;
        }
    }
    n
}

#[test]
fn every_alert_arrives_once_in_every_format_and_transport() {
    let d = tmpdir("alerts-formats");
    let syslog = Rsyslog::start(&d.join("rsyslog"));
    let inputs = ["captures/demo.pcapng", "captures/vlan.pcap", "captures/http.pcap"];
    let inputs: Vec<String> =
        inputs.iter().map(|i| Path::new(env!("CARGO_MANIFEST_DIR")).join(i).display().to_string()).collect();
    let inputs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
    let ev = d.join("events.json");
    let mut args = vec!["analyze", "-q", "--events", ev.to_str().unwrap()];
    args.extend(&inputs);
    assert!(run(&args).status.success());
    let expected = expected_alerts(&json_lines(&ev));
    let total: usize = expected.values().sum();
    assert!(total >= 5 && expected.len() >= 4, "{expected:?}");

    let mut ids_by_format = BTreeMap::new();
    for format in ["json", "cef", "ecs"] {
        let file = d.join(format!("alerts.{format}"));
        let sensor = format!("sensor-{format}");
        let report = d.join(format!("report-{format}.json"));
        let file_url = format!("file:{}", file.display());
        let o = analyze_to(
            &syslog,
            &d,
            &inputs,
            &[
                "--alert-format",
                format,
                "--sensor-name",
                &sensor,
                "--alert",
                &file_url,
                "--report",
                report.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        let got = syslog.wait_for(Duration::from_secs(15), |m| {
            ["tcp", "udp", "tls"]
                .iter()
                .all(|l| m.iter().filter(|r| r.hostname == sensor && r.listener == *l).count() >= total)
        });
        let mine: Vec<&Received> = got.iter().filter(|r| r.hostname == sensor).collect();
        let mut per_listener: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
        for r in &mine {
            per_listener.entry(r.listener.as_str()).or_default().push(r);
        }
        let file_lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
        assert_eq!(file_lines.len(), total, "{format}: file");
        let mut ids = BTreeSet::new();
        for listener in ["tcp", "udp", "tls"] {
            let recs = per_listener.get(listener).cloned().unwrap_or_default();
            assert_eq!(recs.len(), total, "{format} over {listener}: {} of {total} alerts", recs.len());
            let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
            let mut listener_ids = BTreeSet::new();
            for (r, line) in recs.iter().zip(&file_lines) {
                assert_eq!(r.app_name, "kavwatch");
                let (sd_id, p) = sd_params(&r.structured_data);
                assert_eq!(sd_id, "kavwatch@32473");
                assert_eq!(r.msgid, p["category"].to_uppercase());
                let (id, host, category, domains) = decode_body(format, &r.msg);
                assert_eq!(id, p["id"], "SD and body agree");
                assert_eq!((host.as_str(), category.as_str()), (p["host"].as_str(), p["category"].as_str()));
                assert!(!domains.is_empty() && domains.iter().all(|x| x.contains("kaspersky")), "{domains:?}");
                assert_eq!(r.severity(), if ["update", "telemetry"].contains(&category.as_str()) { 4 } else { 5 });
                assert_eq!(r.facility(), 4);
                // The file holds the same records, in the same order.
                assert_eq!(&r.msg, line, "{format}: file and syslog differ");
                let vlan = p.get("vlan").map(|v| format!("[{v}]")).unwrap_or_else(|| "null".into());
                *seen.entry((format!("{host}{vlan}"), category)).or_default() += 1;
                assert!(listener_ids.insert(id.clone()), "{format}/{listener}: duplicate id {id}");
            }
            assert_eq!(seen, expected, "{format} over {listener}: alerts per host and category");
            ids = listener_ids;
        }
        let rep = json(&report);
        let dests = &rep["stats"]["alerts"]["destinations"];
        for url in dests.as_object().unwrap().keys() {
            assert_eq!(dests[url]["sent"], total as u64, "{url}");
            assert_eq!(dests[url]["dropped"], 0, "{url}");
            assert_eq!(dests[url]["waiting"], 0, "{url}");
        }
        assert_eq!(rep["stats"]["alerts"]["raised"], total as u64);
        ids_by_format.insert(format, ids);
    }
    // Ids are stable: the same capture gives the same ids whatever the format (sensor names differ, so
    // compare a rerun instead).
    let file = d.join("again.json");
    let url = format!("file:{}", file.display());
    let mut args = vec!["analyze", "-q", "--sensor-name", "sensor-json", "--alert", &url];
    args.extend(&inputs);
    assert!(run(&args).status.success());
    let again: BTreeSet<String> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| decode_body("json", l).0).collect();
    assert_eq!(&again, &ids_by_format["json"]);
}

#[test]
fn a_collector_outage_loses_nothing() {
    let d = tmpdir("alerts-outage");
    let mut syslog = Rsyslog::start(&d.join("rsyslog"));
    let demo = captures().join("demo.pcapng").display().to_string();
    // --alert-all --alert-interval 0: one alert per observation, 38 per run.
    let stream = ["--alert-all", "--alert-interval", "0", "--alert-drain-timeout", "1s"];
    let (tcp_port, tls_port, ca) = (syslog.tcp_port(), syslog.tls_port(), syslog.ca_path());
    let tcp_tls = |sensor: &str, report: &Path| {
        let tcp = format!("syslog+tcp://127.0.0.1:{tcp_port}");
        let tls = format!("syslog+tls://127.0.0.1:{tls_port}");
        let mut args = vec!["analyze", "-q", "--alert", &tcp, "--alert", &tls, "--alert-ca"];
        let ca = ca.display().to_string();
        let spool = d.join("spool").display().to_string();
        let (sensor, report) = (sensor.to_string(), report.display().to_string());
        args.extend([ca.as_str(), "--spool-dir", &spool, "--sensor-name", &sensor, "--report", &report]);
        args.extend(stream);
        args.push(&demo);
        run(&args)
    };
    let count =
        |m: &[Received], sensor: &str, l: &str| m.iter().filter(|r| r.hostname == sensor && r.listener == l).count();

    // Run 1, collector up: everything arrives.
    let o = tcp_tls("run-1", &d.join("r1.json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let m =
        syslog.wait_for(Duration::from_secs(10), |m| count(m, "run-1", "tcp") == 38 && count(m, "run-1", "tls") == 38);
    assert_eq!((count(&m, "run-1", "tcp"), count(&m, "run-1", "tls")), (38, 38));

    // Run 2, collector down: everything is spooled, counted, and the exit status says so.
    syslog.stop();
    let o = tcp_tls("run-2", &d.join("r2.json"));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("38 waiting in the spool"), "{}", stderr(&o));
    let r2 = json(&d.join("r2.json"));
    for (url, dst) in r2["stats"]["alerts"]["destinations"].as_object().unwrap() {
        assert_eq!(
            (dst["spooled"].as_u64(), dst["waiting"].as_u64(), dst["sent"].as_u64()),
            (Some(38), Some(38), Some(0)),
            "{url}"
        );
    }

    // Run 3 starts while the collector is still down and keeps producing; the collector comes back
    // 2 s later; run 3 delivers run 2's spool first, then its own alerts.
    let d3 = d.clone();
    let ca = ca.clone();
    let run3 = std::thread::spawn(move || {
        let tcp = format!("syslog+tcp://127.0.0.1:{tcp_port}");
        let tls = format!("syslog+tls://127.0.0.1:{tls_port}");
        let (spool, report) = (d3.join("spool"), d3.join("r3.json"));
        let mut args = vec!["analyze", "-q", "--alert", &tcp, "--alert", &tls, "--alert-ca", ca.to_str().unwrap()];
        args.extend([
            "--spool-dir",
            spool.to_str().unwrap(),
            "--sensor-name",
            "run-3",
            "--report",
            report.to_str().unwrap(),
        ]);
        args.extend(["--alert-all", "--alert-interval", "0", "--alert-drain-timeout", "30s"]);
        let demo = captures().join("demo.pcapng");
        args.push(demo.to_str().unwrap());
        run(&args)
    });
    std::thread::sleep(Duration::from_secs(2));
    syslog.restart();
    let o = run3.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Each connection is written by its own rsyslog thread: wait for all four.
    let ids_of = |m: &[Received], sensor: &str, l: &str| -> BTreeSet<String> {
        m.iter()
            .filter(|r| r.hostname == sensor && r.listener == l)
            .map(|r| sd_params(&r.structured_data).1["id"].clone())
            .collect()
    };
    let m = syslog.wait_for(Duration::from_secs(15), |m| {
        ["run-2", "run-3"].iter().all(|s| ["tcp", "tls"].iter().all(|l| ids_of(m, s, l).len() == 38))
    });
    for sensor in ["run-2", "run-3"] {
        for l in ["tcp", "tls"] {
            let recs: Vec<&Received> = m.iter().filter(|r| r.hostname == sensor && r.listener == l).collect();
            let ids: BTreeSet<String> = recs.iter().map(|r| sd_params(&r.structured_data).1["id"].clone()).collect();
            // Duplicates are allowed only as the same alert again (same id).
            assert_eq!(ids.len(), 38, "{sensor} over {l}: {} records, {} ids", recs.len(), ids.len());
        }
    }
    // Run 2's alerts came before run 3's, in their original order.
    let tcp: Vec<&Received> = m.iter().filter(|r| r.listener == "tcp" && r.hostname != "run-1").collect();
    assert_eq!(tcp[0].hostname, "run-2");
    let r3 = json(&d.join("r3.json"));
    for (url, dst) in r3["stats"]["alerts"]["destinations"].as_object().unwrap() {
        assert!(dst["spooled"].as_u64().unwrap() > 0, "{url}: {dst}");
        assert!(dst["errors"].as_u64().unwrap() > 0, "{url}: {dst}");
        assert_eq!(dst["waiting"], 0, "{url}: {dst}");
        assert!(dst["sent"].as_u64().unwrap() >= 76, "{url}: {dst}");
    }
}

#[test]
fn hostile_names_stay_one_well_formed_record_in_every_format() {
    let d = tmpdir("alerts-hostile");
    let syslog = Rsyslog::start(&d.join("rsyslog"));
    let names = HOSTILE_NAMES;
    let cap = d.join("hostile.pcap");
    hostile_capture(&cap, AFTER_US, 7_200_000_000);
    let ev = d.join("events.json");
    assert!(run(&["analyze", "-q", "--events", ev.to_str().unwrap(), cap.to_str().unwrap()]).status.success());
    let domains: Vec<String> = json_lines(&ev).iter().map(|e| s(&e["domain"])).collect();
    assert_eq!(domains.len(), names.len(), "every hostile name matched the kaspersky.com catch-all: {domains:?}");
    for format in ["json", "cef", "ecs"] {
        let sensor = format!("hostile-{format}");
        let o = analyze_to(
            &syslog,
            &d,
            &[cap.to_str().unwrap()],
            &["--alert-format", format, "--alert-all", "--sensor-name", &sensor],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let m = syslog.wait_for(Duration::from_secs(15), |m| {
            ["tcp", "udp", "tls"]
                .iter()
                .all(|l| m.iter().filter(|r| r.hostname == sensor && r.listener == *l).count() >= names.len())
        });
        for listener in ["tcp", "udp", "tls"] {
            let recs: Vec<&Received> = m.iter().filter(|r| r.hostname == sensor && r.listener == listener).collect();
            assert_eq!(recs.len(), names.len(), "{format}/{listener}: one record per alert");
            for (r, want) in recs.iter().zip(&domains) {
                assert!(r.raw.bytes().all(|b| (0x20..0x7f).contains(&b)), "{format}/{listener}: raw bytes: {}", r.raw);
                let (_, p) = sd_params(&r.structured_data);
                assert_eq!(&p["domains"].replace("\\x2c", ","), want, "{format}/{listener}");
                let (_, host, category, got) = decode_body(format, &r.msg);
                assert_eq!((host.as_str(), category.as_str()), ("10.0.0.5", "other"));
                assert_eq!(&got, std::slice::from_ref(want), "{format}/{listener}");
            }
        }
    }
}

#[test]
fn bad_alert_options_fail_at_once() {
    let demo = captures().join("demo.pcapng").display().to_string();
    for (args, msg) in [
        (vec!["--alert", "syslog://x:1"], "expected syslog+udp://HOST:PORT"),
        (vec!["--alert", "syslog+tcp://127.0.0.1:9", "--alert-format", "xml"], "invalid value 'xml'"),
        (vec!["--alert", "syslog+tls://127.0.0.1:9", "--alert-ca", "/nonexistent.pem"], "/nonexistent.pem"),
        (vec!["--alert-interval", "5 minutes"], "unknown unit"),
    ] {
        let t = Instant::now();
        let mut a = vec!["analyze", "-q", demo.as_str()];
        a.extend(args);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        assert!(stderr(&o).contains(msg), "{a:?}: {}", stderr(&o));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
