//! `kavwatch analyze` on the captures real programs made (captures/make-captures.sh),
//! checked against tshark's reading of the same files (tests/expected/captures.json) and
//! against the story each capture tells.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

use kavwatch::rules::{load::load, matcher::Rules};

type Key = (String, String, String, bool, Option<Vec<u64>>);

fn truth() -> BTreeMap<String, Vec<Value>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected/captures.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn key_of_event(e: &Value) -> Key {
    let vlan = e.get("vlan").map(|v| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect());
    (
        e["host"].as_str().unwrap().to_string(),
        e["domain"].as_str().unwrap().to_string(),
        e["event_type"].as_str().unwrap().to_string(),
        e["after_cutoff"].as_bool().unwrap(),
        vlan,
    )
}

/// Every DNS query, ClientHello and HTTP request tshark sees whose name a rule matches is an
/// event, as often as tshark counts it, with the same client, VLAN tags and side of the cutoff.
#[test]
fn events_equal_tsharks_reading_of_every_capture() {
    let rules = Rules::new(load(None).unwrap());
    let truth = truth();
    assert!(truth.len() >= 19, "all captures have a truth entry");
    for (file, rows) in &truth {
        let mut want: BTreeMap<Key, u64> = BTreeMap::new();
        for r in rows {
            let domain = r["domain"].as_str().unwrap();
            if rules.find(domain).is_none() {
                continue;
            }
            let vlan = r["vlan"].as_array().map(|v| v.iter().map(|x| x.as_u64().unwrap()).collect());
            let k = (
                r["client_ip"].as_str().unwrap().to_string(),
                domain.to_string(),
                r["via"].as_str().unwrap().to_string(),
                r["after_cutoff"].as_bool().unwrap(),
                vlan,
            );
            *want.entry(k).or_default() += r["count"].as_u64().unwrap();
        }
        if file == "tcp-reorder.pcap" {
            // tshark cannot put back together the reordered flow whose SYN was removed; the
            // ClientHello is there (openssl sent it), and kavwatch must read it.
            let k = ("10.99.0.15".into(), "ksn-url-geo.kaspersky-labs.com".into(), "tls".into(), true, None);
            assert!(!want.contains_key(&k));
            want.insert(k, 1);
        }
        let mut got: BTreeMap<Key, u64> = BTreeMap::new();
        // Names in the packets only: tshark knows nothing of DNS-answer attribution (tested below).
        for e in events(&[captures().join(file).to_str().unwrap()]).iter().filter(|e| e["attribution"] == "name") {
            *got.entry(key_of_event(e)).or_default() += 1;
        }
        // Security Center traffic names nothing (tested below, by its ports).
        assert!(!want.is_empty() || file == "ksc.pcap", "{file}: has Kaspersky names");
        assert_eq!(got, want, "{file}");
    }
}

fn verdicts(r: &Value) -> BTreeMap<String, String> {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let vlan = h.get("vlan").map(|v| format!("@{v}")).unwrap_or_default();
            (format!("{}{vlan}", h["ip"].as_str().unwrap()), h["verdict"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn demo_tells_each_host_apart() {
    let r = report(&[captures().join("demo.pcapng").to_str().unwrap()]);
    let v = verdicts(&r);
    let expect = [
        ("10.99.0.11", "active-after-cutoff"),  // still pulls updates (DNS, TLS, HTTP)
        ("10.99.0.12", "active-before-cutoff"), // stopped before the cutoff
        ("10.99.0.13", "active-after-cutoff"),  // KSN telemetry
        ("10.99.0.15", "excluded-only"),        // OpenTIP only
        ("10.99.0.16", "other-only"),           // the web site only
        ("10.99.0.17@[10]", "active-after-cutoff"),
    ];
    let expect: BTreeMap<String, String> = expect.iter().map(|(h, v)| (h.to_string(), v.to_string())).collect();
    assert_eq!(v, expect, "10.99.0.14 (clean, and a decoy name) has no row");
    // Active hosts first; the one still updating has its last contact after the cutoff.
    assert_eq!(r["hosts"][0]["verdict"], "active-after-cutoff");
    let h11 = r["hosts"].as_array().unwrap().iter().find(|h| h["ip"] == "10.99.0.11").unwrap();
    assert!(h11["last_seen_after_cutoff"].as_str().unwrap().starts_with("2024-10-02T09:00"));
    assert!(
        h11["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["domain"] == "dnl-01.geo.kaspersky.com" && d["via"][0] == "http")
    );
    assert_eq!(r["cutoff"], "2024-09-29T04:00:00Z");
    assert_eq!(r["summary"]["active-after-cutoff"], 3);
    assert_eq!(r["stats"]["link_types"]["EN10MB"], r["stats"]["packets"]);
    assert_eq!(r["stats"]["malformed"], 0);
}

#[test]
fn mixed_gzip_covers_the_other_verdicts() {
    let r = report(&[captures().join("mixed.pcap.gz").to_str().unwrap()]);
    let v = verdicts(&r);
    assert_eq!(v.get("10.99.0.16").map(String::as_str), Some("active-before-cutoff"));
    assert_eq!(v.get("10.99.0.11").map(String::as_str), Some("excluded-only"));
    assert_eq!(v.get("10.99.0.12").map(String::as_str), Some("other-only"));
    assert!(!v.contains_key("10.99.0.14"), "decoys only: no row");
}

#[test]
fn link_types_fragments_and_vlans_are_decoded() {
    let r = report(&[captures().join("multi-if.pcapng").to_str().unwrap()]);
    let lt = &r["stats"]["link_types"];
    assert!(lt["EN10MB"].as_u64().unwrap() > 0 && lt["LINUX_SLL2"].as_u64().unwrap() > 0, "{lt}");
    let r = report(&[captures().join("fragments.pcap").to_str().unwrap()]);
    assert_eq!(r["stats"]["fragments"]["reassembled"], 2, "{}", r["stats"]);
    assert_eq!(r["hosts"][0]["categories"]["activation"], 1);
    let r = report(&[captures().join("ipv6.pcap").to_str().unwrap()]);
    assert_eq!(r["stats"]["fragments"]["reassembled"], 1, "the IPv6 fragment header");
    let ev = events(&[captures().join("vlan.pcap").to_str().unwrap()]);
    assert!(ev.iter().any(|e| e["vlan"] == serde_json::json!([100, 20])), "QinQ, outer first");
    assert!(ev.iter().any(|e| e["vlan"] == serde_json::json!([10])));
    for f in ["null-loop.pcap", "raw-ip.pcap", "bigendian.pcap", "sll.pcap", "sll2.pcap", "nanosecond.pcap"] {
        let r = report(&[captures().join(f).to_str().unwrap()]);
        assert_eq!(r["stats"]["malformed"], 0, "{f}");
        assert!(!r["hosts"].as_array().unwrap().is_empty(), "{f}");
    }
    let ev = events(&[captures().join("nanosecond.pcap").to_str().unwrap()]);
    assert_eq!(ev[0]["timestamp"], "2024-10-24T10:00:00.123456Z", "nanoseconds kept to the microsecond");
}

#[test]
fn protocol_details_are_in_the_events() {
    let ev = events(&[captures().join("dns-udp.pcap").to_str().unwrap()]);
    let https = ev.iter().find(|e| e["dns"]["query_type"] == "HTTPS").expect("the type 65 query");
    assert_eq!(https["domain"], "dnl-01.geo.kaspersky.com");
    let a = ev.iter().find(|e| e["domain"] == "s05.upd.kaspersky.com" && e["dns"]["query_type"] == "A").unwrap();
    assert_eq!(a["dns"]["rcode"], "NOERROR");
    assert_eq!(a["dns"]["answers"][0]["rdata"], "10.99.0.1");
    assert!(ev.iter().any(|e| e["domain"] == "dnl-02.geo.kaspersky.com"), "DNL-02.GEO.Kaspersky.COM. normalised");
    let ev = events(&[captures().join("dns-tcp.pcap").to_str().unwrap()]);
    assert!(ev.iter().all(|e| e["proto"] == "TCP") && ev.len() == 3, "two queries on one connection, one alone");
    let ev = events(&[captures().join("tls-split.pcap").to_str().unwrap()]);
    assert!(ev.iter().any(|e| e["tls"]["records"] == 2), "a ClientHello over two TLS records");
    let t = ev.iter().find(|e| e["domain"] == "s07.upd.kaspersky.com").unwrap();
    assert_eq!(t["tls"]["alpn"][0], "h2");
    assert!(t["tls"]["versions"].as_array().unwrap().contains(&serde_json::json!("TLS 1.3")));
    assert!(t["tls"]["ja4"].as_str().unwrap().starts_with("t13d"));
    let ev = events(&[captures().join("http.pcap").to_str().unwrap()]);
    let upd: Vec<_> = ev.iter().filter(|e| e["domain"] == "dnl-01.geo.kaspersky.com").collect();
    assert_eq!(upd.len(), 2, "two requests on one keep-alive connection");
    assert_eq!(upd[0]["http"]["user_agent"], "@hEKzPRNa0lItsGIjysY");
    assert_eq!(upd[0]["http"]["path"], "/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif");
    assert_eq!(upd[0]["category"], "update");
}

#[test]
fn same_output_for_any_number_of_workers() {
    let d = tmpdir("determinism");
    let mut outs = Vec::new();
    for w in ["1", "2", "5"] {
        let (e, r) = (d.join(format!("e{w}.json")), d.join(format!("r{w}.json")));
        let o = run(&[
            "analyze",
            "-q",
            captures().to_str().unwrap(),
            "--workers",
            w,
            "--events",
            e.to_str().unwrap(),
            "--report",
            r.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push((std::fs::read(&e).unwrap(), std::fs::read(&r).unwrap()));
    }
    assert!(outs[0].0.len() > 1000);
    assert!(outs.iter().all(|o| o == &outs[0]), "byte-identical events and report");
}

#[test]
fn stdin_directories_and_csv() {
    use std::io::Write;
    use std::process::Stdio;
    let file = captures().join("dns-udp.pcap");
    let mut child = bin()
        .args(["analyze", "-q", "--events", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(&file).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let from_stdin: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let from_file = events(&[file.to_str().unwrap()]);
    assert_eq!(from_stdin.len(), from_file.len());
    assert_eq!(from_stdin[0]["domain"], from_file[0]["domain"]);
    // A directory is read in name order; the table names every host.
    let o = run(&["analyze", captures().to_str().unwrap()]);
    assert!(o.status.success());
    let table = stdout(&o);
    // Every capture file below captures/ (the tunnel captures of captures/encap/ included).
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                if p.is_dir() {
                    count(&p)
                } else {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    usize::from(n.ends_with(".pcap") || n.ends_with(".pcapng") || n.ends_with(".pcap.gz"))
                }
            })
            .sum()
    }
    let n = count(&captures());
    assert!(n >= 28 + 45, "{n} capture files");
    assert!(table.contains("10.99.0.17") && table.contains(&format!("Totals: {n} input(s)")), "{table}");
    let d = tmpdir("csv");
    let csv = d.join("r.csv");
    assert!(
        run(&["analyze", "-q", captures().join("demo.pcapng").to_str().unwrap(), "--report", csv.to_str().unwrap()])
            .status
            .success()
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("ip,vlan,verdict,"));
    assert_eq!(text.lines().count(), 7, "{text}");
}

#[test]
fn ja3_of_every_client_hello_equals_tsharks() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected/ja3.json")).unwrap(),
    )
    .unwrap();
    let mut compared = 0;
    for entry in std::fs::read_dir(captures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.contains(".pcap") {
            continue;
        }
        for e in events(&[path.to_str().unwrap()]) {
            if e["event_type"] != "tls" {
                continue;
            }
            let want = &expected["by_frame"][format!("{name}#{}", e["packet"])];
            // tshark cannot reassemble the reordered flow without its SYN (see the test above).
            if want.is_null() && name == "tcp-reorder.pcap" {
                continue;
            }
            assert_eq!(e["tls"]["ja3"], want["ja3"], "{name} packet {}", e["packet"]);
            assert_eq!(e["tls"]["ja3_full"], want["ja3_full"], "{name} packet {}", e["packet"]);
            compared += 1;
        }
    }
    assert!(compared >= 50, "{compared} ClientHellos compared");
}

/// `captures/attribution.pcap` (captures/make-attribution.sh): 10.98.0.11 asks for
/// dnl-01.geo.kaspersky.com (answer 10.98.0.1), then connects to 10.98.0.1 with a ClientHello
/// without SNI (openssl s_client -noservername) and plain HTTP with the address as Host (curl),
/// and the same to 10.98.0.2, which no answer gave; 10.98.0.12, which asked nothing, connects
/// to 10.98.0.1 the same way. The HTTP requests fetch an update file with the updater's
/// User-Agent: where no answer names the server, the path still does (`http-path`).
#[test]
fn dns_answers_attribute_connections_that_name_nothing() {
    let file = captures().join("attribution.pcap");
    let got: Vec<(String, String, String, String, String)> = events(&[file.to_str().unwrap()])
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            (s(&e["event_type"]), s(&e["host"]), s(&e["dest_ip"]), s(&e["domain"]), s(&e["attribution"]))
        })
        .collect();
    let want = |t: &str, host: &str, dest: &str, domain: &str, attribution: &str| {
        (t.to_string(), host.to_string(), dest.to_string(), domain.to_string(), attribution.to_string())
    };
    let name = "dnl-01.geo.kaspersky.com";
    assert_eq!(
        got,
        [
            want("dns", "10.98.0.11", "10.98.0.1", name, "name"),
            want("tls", "10.98.0.11", "10.98.0.1", name, "dns-answer"),
            want("http", "10.98.0.11", "10.98.0.1", name, "dns-answer"),
            // No answer gave these addresses: never a name, but the request is an update fetch.
            want("http", "10.98.0.11", "10.98.0.2", "10.98.0.2", "http-path"),
            want("http", "10.98.0.12", "10.98.0.1", "10.98.0.1", "http-path"),
        ]
    );
    let ev = events(&[file.to_str().unwrap()]);
    assert!(ev[1]["tls"]["sni"].is_null(), "the packet had no SNI: {}", ev[1]);
    assert_eq!(ev[2]["http"]["hostname"], "10.98.0.1", "the Host the request carried");
    assert_eq!(ev[2]["category"], "update");
    assert_eq!((&ev[3]["category"], &ev[3]["rule_id"]), (&"update".into(), &"kl-update-http-path".into()));
    assert_eq!(ev[4]["http"]["hostname"], "10.98.0.1");
    let r = report(&[file.to_str().unwrap()]);
    assert_eq!(r["stats"]["attribution"]["attributed"], 2);
    // 10.98.0.12 to 10.98.0.1 is looked up and not attributed (the answer went to 10.98.0.11):
    // its TLS is dropped, its HTTP falls back to the path. 10.98.0.11 to 10.98.0.2 is not even
    // kept for look-up (no answer gave that address); its HTTP is recognised by path directly.
    assert_eq!(r["stats"]["attribution"]["unattributed"], 1);
    assert_eq!(r["stats"]["attribution"]["http_path"], 1);
    assert_eq!(r["stats"]["attribution_candidates"], 4);
    assert_eq!(r["stats"]["attribution_unmapped"], 2);
    assert_eq!(r["stats"]["http_path_matched"], 3);
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[1]["ip"], "10.98.0.11");
    assert_eq!(hosts[1]["domains"][0]["via"], serde_json::json!(["dns", "http", "tls"]));
    assert_eq!(hosts[0]["ip"], "10.98.0.12", "only its update fetch, by path");
    assert_eq!(hosts[0]["domains"][0]["rule_id"], "kl-update-http-path");
}

/// `captures/ksc.pcap` (captures/make-ksc.sh): Kaspersky Security Center-like traffic on the
/// real ports from openssl and socat, and decoys on the same ports. 10.96.0.1 is the
/// Administration Server: 10.96.0.21 makes 3 TLS connections to 13000, 2 binary ones to 14000
/// and sends a datagram to 13000/udp; 10.96.0.22 makes one TLS connection and is woken twice on
/// 15000/udp; 10.96.0.23 makes 2 connections to the KSN proxy (13111). Decoys against
/// 10.96.0.2: a single TLS connection to 13000 (.31), HTTP to 13000 (.32) and 14000 (.34),
/// wake-ups to .33, which never connects.
#[test]
fn security_center_is_found_by_its_port_pattern_and_decoys_are_not() {
    let file = captures().join("ksc.pcap");
    let ev = events(&[file.to_str().unwrap()]);
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &ev {
        assert_eq!((&e["event_type"], &e["attribution"]), (&"ksc".into(), &"port".into()), "{e}");
        assert_eq!((&e["category"], &e["rule_id"]), (&"management".into(), &"kl-management-ksc-ports".into()));
        assert_eq!(e["domain"], e["ksc"]["server"]);
        assert_eq!(e["host"], e["ksc"]["agent"]);
        let what = format!("{}:{}", e["ksc"]["contact"].as_str().unwrap(), e["ksc"]["port"]);
        *got.entry((e["host"].as_str().unwrap().to_string(), what)).or_default() += 1;
    }
    let want: BTreeMap<(String, String), usize> = [
        (("10.96.0.21", "tls:13000"), 3),
        (("10.96.0.21", "tcp:14000"), 2),
        (("10.96.0.21", "datagram:13000"), 1),
        (("10.96.0.22", "tls:13000"), 1),
        (("10.96.0.22", "wake-up:15000"), 2),
        (("10.96.0.23", "tcp:13111"), 2),
    ]
    .into_iter()
    .map(|((h, w), n)| ((h.to_string(), w.to_string()), n))
    .collect();
    assert_eq!(got, want);
    assert!(ev.iter().all(|e| e["ksc"]["server"] == "10.96.0.1"), "nothing of the decoy server");
    let r = report(&[file.to_str().unwrap()]);
    let rows: BTreeMap<&str, &Value> =
        r["hosts"].as_array().unwrap().iter().map(|h| (h["ip"].as_str().unwrap(), h)).collect();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), ["10.96.0.1", "10.96.0.21", "10.96.0.22", "10.96.0.23"]);
    assert_eq!(rows["10.96.0.1"]["ksc_role"], "admin-server");
    assert_eq!(rows["10.96.0.1"]["categories"]["management"], 11, "it served every contact");
    for agent in ["10.96.0.21", "10.96.0.22", "10.96.0.23"] {
        assert_eq!(rows[agent]["ksc_role"], "agent");
        assert_eq!(rows[agent]["verdict"], "active-after-cutoff", "an agent still talking to its server");
    }
    assert_eq!(rows["10.96.0.1"]["verdict"], "active-after-cutoff");
    let k = &r["stats"]["ksc"];
    assert_eq!((k["pairs_confirmed"].as_u64(), k["events"].as_u64()), (Some(3), Some(11)));
    // .31's one ClientHello, .33's three wake-ups (each from its own port: one flow each).
    assert_eq!(k["unconfirmed"], 4, "{k}");
}

/// `captures/dhcp.pcap` (captures/make-dhcp.sh): ISC dhclient against dnsmasq. alpha-laptop
/// (02:95:00:00:00:11) leases 10.95.0.50, fetches an update, releases it; bravo-desktop
/// (…:12) gets the same address and does the same; charlie-ws (…:13) leases fd95::50 by DHCPv6
/// with a client FQDN and fetches over IPv6. Option 12 is only in the clients' messages.
#[test]
fn dhcp_leases_name_the_host_that_held_the_address_then() {
    let file = captures().join("dhcp.pcap");
    let ev = events(&[file.to_str().unwrap()]);
    let names: Vec<(&str, &str, &str)> = ev
        .iter()
        .map(|e| {
            (e["host"].as_str().unwrap(), e["event_type"].as_str().unwrap(), e["hostname"].as_str().unwrap_or("-"))
        })
        .collect();
    assert_eq!(
        names,
        [
            ("10.95.0.50", "dns", "alpha-laptop"),
            ("10.95.0.50", "http", "alpha-laptop"),
            ("10.95.0.50", "dns", "bravo-desktop"),
            ("10.95.0.50", "http", "bravo-desktop"),
            ("fd95::50", "dns", "charlie-ws"),
            ("fd95::50", "http", "charlie-ws"),
        ]
    );
    let r = report(&[file.to_str().unwrap()]);
    let rows: BTreeMap<&str, &Value> =
        r["hosts"].as_array().unwrap().iter().map(|h| (h["ip"].as_str().unwrap(), h)).collect();
    let v4 = rows["10.95.0.50"];
    assert_eq!(
        (&v4["hostname"], &v4["mac"]),
        (&"bravo-desktop".into(), &"02:95:00:00:00:12".into()),
        "the latest holder"
    );
    assert_eq!(v4["hostnames"], serde_json::json!(["alpha-laptop", "bravo-desktop"]));
    let v6 = rows["fd95::50"];
    assert_eq!((&v6["hostname"], &v6["mac"]), (&"charlie-ws".into(), &"02:95:00:00:00:13".into()), "MAC from the DUID");
    let d = &r["stats"]["dhcp"];
    assert_eq!(
        (d["leases"].as_u64(), d["releases"].as_u64(), d["with_hostname"].as_u64()),
        (Some(3), Some(1), Some(3))
    );
    assert_eq!(r["stats"]["dhcp_messages"], 13, "9 DHCPv4 (two DORA, a RELEASE), 4 DHCPv6: {}", r["stats"]);
    // Alerts: the address passed to another machine, which is alerted on in its own right.
    let d = tmpdir("dhcp-alerts");
    let alerts = d.join("alerts.json");
    let o = run(&["analyze", "-q", file.to_str().unwrap(), "--alert", &format!("file:{}", alerts.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<(String, String, String)> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|a| (a["host"].to_string(), a["hostname"].to_string(), a["mac"].to_string()))
        .collect();
    let want = [
        ("\"10.95.0.50\"", "\"alpha-laptop\"", "\"02:95:00:00:00:11\""),
        ("\"10.95.0.50\"", "\"bravo-desktop\"", "\"02:95:00:00:00:12\""),
        ("\"fd95::50\"", "\"charlie-ws\"", "\"02:95:00:00:00:13\""),
    ];
    assert_eq!(got, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
}

/// `captures/public-dns.pcap` (captures/make-public-dns.sh): the corporate resolver (dnsmasq,
/// 10.94.0.53) answers NXDOMAIN for Kaspersky names; 10.94.0.11 then asks stand-in resolvers
/// rewritten to 8.8.8.8 and 1.1.1.1 with tcprewrite. 10.94.0.12 asks 8.8.8.8 for another name.
#[test]
fn falling_back_to_public_resolvers_is_flagged() {
    let file = captures().join("public-dns.pcap");
    let ev = events(&[file.to_str().unwrap()]);
    let got: Vec<(&str, &str, &str, bool)> = ev
        .iter()
        .map(|e| {
            (
                e["dest_ip"].as_str().unwrap(),
                e["domain"].as_str().unwrap(),
                e["dns"]["rcode"].as_str().unwrap(),
                e["dns"]["public_resolver"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10.94.0.53", "ds.kaspersky.com", "NXDOMAIN", false),
            ("8.8.8.8", "ds.kaspersky.com", "NOERROR", true),
            ("1.1.1.1", "dnl-01.geo.kaspersky.com", "NOERROR", true),
        ]
    );
    let r = report(&[file.to_str().unwrap()]);
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "10.94.0.12 asked a public resolver, but for no Kaspersky name");
    assert_eq!(
        (&hosts[0]["ip"], &hosts[0]["flags"]),
        (&"10.94.0.11".into(), &serde_json::json!(["public-dns-fallback"]))
    );
}

/// `captures/vlans.pcap` (captures/make-vlans.sh): the same address, 10.93.0.10, on VLAN 10
/// before the cutoff and on VLAN 20 after it (tags added with tcprewrite, as the kernel here
/// has no 802.1Q): two hosts, two verdicts.
#[test]
fn the_same_address_on_two_vlans_is_two_hosts() {
    let file = captures().join("vlans.pcap");
    let r = report(&[file.to_str().unwrap()]);
    let rows: Vec<(&Value, &Value, &Value, &Value)> =
        r["hosts"].as_array().unwrap().iter().map(|h| (&h["ip"], &h["vlan"], &h["verdict"], &h["mac"])).collect();
    assert_eq!(
        rows,
        [
            (
                &"10.93.0.10".into(),
                &serde_json::json!([20]),
                &"active-after-cutoff".into(),
                &"02:93:00:00:00:0b".into()
            ),
            (
                &"10.93.0.10".into(),
                &serde_json::json!([10]),
                &"active-before-cutoff".into(),
                &"02:93:00:00:00:0a".into()
            ),
        ]
    );
}

/// `captures/resolver.pcap` (captures/make-resolver.sh): two clients ask a corporate dnsmasq
/// (10.97.0.53), which forwards each query upstream (10.97.0.1); then the resolver host looks
/// up a Kaspersky name of its own.
#[test]
fn a_resolvers_relays_are_not_its_own_traffic() {
    let file = captures().join("resolver.pcap");
    let ev = events(&[file.to_str().unwrap()]);
    let relayed: Vec<(&str, &str)> = ev
        .iter()
        .filter(|e| e["relayed"] == true)
        .map(|e| (e["host"].as_str().unwrap(), e["domain"].as_str().unwrap()))
        .collect();
    assert_eq!(
        relayed,
        [("10.97.0.53", "dnl-01.geo.kaspersky.com"), ("10.97.0.53", "ksn-info-geo.kaspersky-labs.com")]
    );
    assert_eq!(ev.len(), 5, "two client queries, two relays, the resolver's own");
    let r = report(&[file.to_str().unwrap()]);
    let rows: BTreeMap<String, &Value> =
        r["hosts"].as_array().unwrap().iter().map(|h| (h["ip"].as_str().unwrap().to_string(), h)).collect();
    let res = rows["10.97.0.53"];
    assert_eq!(res["role"], "resolver");
    assert_eq!(res["relayed_queries"], 2);
    // Only its own lookup counts: one update name, not the clients' telemetry.
    assert_eq!(res["categories"], serde_json::json!({"update": 1}));
    assert_eq!(res["domains"].as_array().unwrap().len(), 1);
    assert_eq!(rows["10.97.0.12"]["categories"], serde_json::json!({"telemetry": 1}));
    assert!(rows["10.97.0.11"].get("role").is_none());
    assert_eq!(r["stats"]["attribution"]["relayed"], 2);
    // Told it is a resolver, kavwatch says so even for one that answered nobody in the capture.
    let d = tmpdir("resolver-flag");
    let out = d.join("r.json");
    let o = run(&[
        "analyze",
        "-q",
        file.to_str().unwrap(),
        "--resolver",
        "10.97.0.0/24",
        "--report",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let roles: Vec<Value> = json(&out)["hosts"].as_array().unwrap().iter().map(|h| h["role"].clone()).collect();
    assert!(roles.iter().all(|r| r == "resolver"), "{roles:?}");
    let o = run(&["analyze", "-q", file.to_str().unwrap(), "--resolver", "10.97.0.0/33"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("address/prefix"), "{}", stderr(&o));
}
