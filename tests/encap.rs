//! Tunnels, overlays and WAN links: real recordings wrapped in every encapsulation by
//! `captures/encap.py` (and a real VXLAN recording made by `captures/make-vxlan.sh`), checked
//! against tshark's reading of the same files (`captures/encap/truth.json`, made by
//! `captures/make-encap.sh`) and against kavwatch's reading of the unwrapped originals.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

use kavwatch::rules::{load::load, matcher::Rules};

fn truth() -> BTreeMap<String, Value> {
    let p = captures().join("encap/truth.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The layer types each kind of wrapping must show in `tunnel`, outer first.
fn layers_of(kind: &str) -> Vec<&'static str> {
    match kind {
        "gre-ip" | "gre-key" | "gre-teb" | "gre-ip6" => vec!["gre"],
        "erspan1" | "erspan2" | "erspan3" => vec!["gre", "erspan"],
        "vxlan" | "vxlan8472" | "vxlan-custom" | "vxlan-ip6" => vec!["vxlan"],
        "geneve" => vec!["geneve"],
        "ipip" | "ip6ip6" | "4in6" => vec!["ipip"],
        "teredo" => vec!["teredo"],
        "mpls" | "mpls-pw" | "mpls-pw-cw" => vec!["mpls"],
        "pppoe" | "ppp-ether" => vec!["pppoe"],
        "vntag" => vec!["vntag"],
        "etag" => vec!["etag"],
        "pbb" => vec!["pbb"],
        "nsh" | "nsh-ip" => vec!["nsh"],
        // WAN link types: a link layer, not a tunnel.
        "ppp" | "ppp-hdlc" | "chdlc" => vec![],
        "erspan3-vlan-vxlan" => vec!["gre", "erspan", "vxlan"],
        "mpls-pppoe" => vec!["pppoe", "mpls"],
        "deep8" => vec!["gre"; 8],
        other => panic!("no expected layers for kind {other}"),
    }
}

/// What must be equal to the unwrapped original's events: all but the tunnel and the packet's place.
fn inner_key(e: &Value) -> String {
    let mut e = e.clone();
    let m = e.as_object_mut().unwrap();
    for k in ["timestamp", "input", "packet", "tunnel"] {
        m.remove(k);
    }
    serde_json::to_string(&e).unwrap()
}

fn counts<T: Ord>(it: impl Iterator<Item = T>) -> BTreeMap<T, u64> {
    let mut m = BTreeMap::new();
    for k in it {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Every wrapped capture gives the names tshark finds in it (client, name, protocol, side of the
/// cutoff, as often), the same events as the unwrapped original, hosts and verdicts included,
/// and each event names the layers it came through.
#[test]
fn every_encapsulation_finds_what_the_unwrapped_traffic_finds() {
    let rules = Rules::new(load(None).unwrap());
    let truth = truth();
    assert!(truth.len() >= 45, "every wrapping has a truth entry: {}", truth.len());
    let mut checked = 0;
    for (file, entry) in &truth {
        let (kind, source) = (entry["kind"].as_str().unwrap(), entry["source"].as_str().unwrap());
        if !entry["expect"].as_str().unwrap().starts_with("decodes") {
            continue;
        }
        let path = captures().join("encap").join(file);
        let path = path.to_str().unwrap();
        let mut args = vec![path];
        if kind == "vxlan-custom" {
            args.extend(["--vxlan-port", "9999"]);
        }
        let got_events = events(&args);
        // tshark's reading: the names the rules match.
        let want = counts(
            entry["truth"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| rules.find(r["domain"].as_str().unwrap()).is_some())
                .flat_map(|r| {
                    let k = (
                        r["client_ip"].as_str().unwrap().to_string(),
                        r["domain"].as_str().unwrap().to_string(),
                        r["via"].as_str().unwrap().to_string(),
                        r["after_cutoff"].as_bool().unwrap(),
                    );
                    std::iter::repeat_n(k, r["count"].as_u64().unwrap() as usize)
                }),
        );
        assert!(!want.is_empty(), "{file}: tshark finds Kaspersky names in it");
        let got = counts(got_events.iter().filter(|e| e["attribution"] == "name").map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["domain"].as_str().unwrap().to_string(),
                e["event_type"].as_str().unwrap().to_string(),
                e["after_cutoff"].as_bool().unwrap(),
            )
        }));
        assert_eq!(got, want, "{file}: kavwatch's names against tshark's");
        // The tunnel each event came through.
        let layers = layers_of(kind);
        for e in &got_events {
            let types: Vec<&str> = e["tunnel"]
                .as_array()
                .map(|a| a.iter().map(|l| l["type"].as_str().unwrap()).collect())
                .unwrap_or_default();
            assert_eq!(types, layers, "{file}: {e}");
        }
        if source.ends_with(".pcap") {
            let original = captures().join(source);
            let original = original.to_str().unwrap();
            assert_eq!(
                counts(got_events.iter().map(inner_key)),
                counts(events(&[original]).iter().map(inner_key)),
                "{file}: the same events as {source} unwrapped"
            );
            let hosts = |r: &Value| -> Vec<(String, String, String)> {
                r["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| (h["ip"].to_string(), h["vlan"].to_string(), h["verdict"].to_string()))
                    .collect()
            };
            assert_eq!(hosts(&report(&args)), hosts(&report(&[original])), "{file}: hosts and verdicts");
        }
        checked += 1;
    }
    assert!(checked >= 40, "{checked} wrapped captures checked");
}

#[test]
fn tunnel_fields_carry_keys_sessions_vnis_and_labels() {
    let first = |f: &str| events(&[captures().join("encap").join(f).to_str().unwrap()])[0]["tunnel"].clone();
    assert_eq!(first("gre-key.pcap"), serde_json::json!([{"type": "gre", "key": 1234}]));
    assert_eq!(first("erspan2.pcap"), serde_json::json!([{"type": "gre"}, {"type": "erspan", "session": 5}]));
    assert_eq!(first("vxlan.pcap"), serde_json::json!([{"type": "vxlan", "vni": 42}]));
    assert_eq!(first("geneve.pcap"), serde_json::json!([{"type": "geneve", "vni": 77}]));
    assert_eq!(first("pppoe.pcap"), serde_json::json!([{"type": "pppoe", "session": 0x1234}]));
    assert_eq!(first("mpls.pcap"), serde_json::json!([{"type": "mpls", "labels": [100, 200]}]));
    // Report rows: the tunnel of the host's latest observation.
    let r = report(&[captures().join("encap/erspan3-vlan-vxlan.pcap").to_str().unwrap()]);
    let types: Vec<&str> =
        r["hosts"][0]["tunnel"].as_array().unwrap().iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["gre", "erspan", "vxlan"]);
    assert_eq!(r["hosts"][0]["tunnel"][1]["session"], 7);
    assert_eq!(r["hosts"][0]["tunnel"][2]["vni"], 9);
    let t = &r["stats"]["tunnels"];
    assert_eq!((t["packets"]["gre"].as_u64(), t["packets"]["erspan"].as_u64()), (Some(50), Some(50)), "{t}");
}

#[test]
fn the_page_says_which_tunnel_a_host_was_seen_through() {
    let d = tmpdir("encap-html");
    let html = d.join("r.html");
    let nested = captures().join("encap/erspan3-vlan-vxlan.pcap");
    let o = run(&["analyze", "-q", nested.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<small data-tunnel>via gre &gt; erspan 7 &gt; vxlan 9</small>"), "{page}");
}

#[test]
fn vxlan_on_another_port_needs_the_option() {
    let path = captures().join("encap/vxlan-custom.pcap");
    let path = path.to_str().unwrap();
    assert!(events(&[path]).is_empty(), "UDP 9999 is not VXLAN unless told");
    assert!(!events(&[path, "--vxlan-port", "9999"]).is_empty());
    let o = run(&["analyze", path, "--vxlan-port", "0"]);
    assert_eq!(o.status.code(), Some(2));
    // Two ports besides 4789 and 8472 fit; a third is refused in one line.
    let o = run(&["analyze", path, "--vxlan-port", "9999", "--vxlan-port", "9998", "--vxlan-port", "9997"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--vxlan-port: too many ports"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(!events(&[path, "--vxlan-port", "9999", "--vxlan-port", "9998"]).is_empty());
}

#[test]
fn split_by_overlay_keeps_tenants_with_the_same_addresses_apart() {
    // The same inner traffic (10.99.0.16) in VXLAN VNI 42 and in Geneve VNI 77.
    let (a, b) = (captures().join("encap/vxlan.pcap"), captures().join("encap/geneve.pcap"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let merged = report(&[a, b]);
    let hosts = merged["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{merged}");
    assert_eq!(hosts[0]["overlay"], Value::Null);
    let split = report(&[a, b, "--split-by-overlay"]);
    let mut overlays: Vec<(String, u64)> = split["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["ip"].as_str().unwrap().to_string(), h["overlay"].as_u64().unwrap()))
        .collect();
    overlays.sort();
    assert_eq!(overlays, [("10.99.0.16".to_string(), 42), ("10.99.0.16".to_string(), 77)]);
    let ev = events(&[a, "--split-by-overlay"]);
    assert!(ev.iter().all(|e| e["overlay"] == 42), "{ev:?}");
}

#[test]
fn too_deep_unknown_and_damaged_encapsulations_are_counted_never_guessed() {
    let enc = |f: &str| captures().join("encap").join(f).to_str().unwrap().to_string();
    // 8 encapsulations decode; 9 do not, and say why.
    assert_eq!(events(&[&enc("deep8.pcap")]).len(), events(&[captures().join("dns-udp.pcap").to_str().unwrap()]).len());
    let r = report(&[&enc("deep9.pcap")]);
    assert!(r["hosts"].as_array().unwrap().is_empty());
    let packets = r["stats"]["packets"].as_u64().unwrap();
    assert_eq!(r["stats"]["tunnels"]["too_deep"].as_u64(), Some(packets), "{}", r["stats"]);
    assert_eq!(r["stats"]["undecoded"]["causes"]["more than 8 encapsulations"].as_u64(), Some(packets));
    // Damaged headers: malformed at their layer, nothing reported, no panic.
    for (file, layer) in [("gre-lying.pcap", "gre"), ("vxlan-short.pcap", "vxlan"), ("mpls-nobos.pcap", "mpls")] {
        let r = report(&[&enc(file)]);
        assert!(r["hosts"].as_array().unwrap().is_empty(), "{file}");
        let st = &r["stats"];
        assert_eq!(st["parser_panics"]["total"], 0, "{file}");
        assert!(st["tunnels"]["malformed"][layer].as_u64().unwrap_or(0) > 0, "{file}: {}", st["tunnels"]);
        assert!(st["malformed"].as_u64().unwrap() > 0, "{file}: {st}");
    }
}

#[test]
fn an_undecodable_encapsulation_is_said_in_the_table_report_page_and_stderr() {
    let d = tmpdir("undecoded");
    let unknown = captures().join("encap/gre-unknown.pcap");
    let html = d.join("r.html");
    let o = run(&["analyze", unknown.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    let want = "Nothing could be decoded: none of the 50 packets reached TCP or UDP over IP (100.0 % of packets: GRE protocol 0x9999, not decoded)";
    assert!(out.contains(want), "{out}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("kavwatch: warning: Nothing could be decoded")).count(),
        1,
        "{err}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("data-undecoded=\"1.0000\"") && page.contains("GRE protocol 0x9999"), "the page says it");
    // Mixed with decodable traffic: the share, in the JSON report too; --quiet silences stderr.
    let json_report = d.join("r.json");
    let http = captures().join("http.pcap");
    let o = run(&[
        "analyze",
        "-q",
        unknown.to_str().unwrap(),
        http.to_str().unwrap(),
        "--report",
        json_report.to_str().unwrap(),
    ]);
    assert_eq!((o.status.code(), stderr(&o)), (Some(0), String::new()));
    let u = &json(&json_report)["stats"]["undecoded"];
    assert_eq!((u["packets"].as_u64(), u["share"].as_f64()), (Some(50), Some(0.5)), "{u}");
    assert_eq!(u["causes"]["GRE protocol 0x9999"].as_u64(), Some(50));
    // A clean capture says nothing of the kind.
    let o = run(&["analyze", http.to_str().unwrap()]);
    assert!(!stdout(&o).contains("could not be decoded") && !stderr(&o).contains("warning"));
}

#[test]
fn wan_link_types_are_supported_and_named() {
    // WAN link types are supported link types now, named in the report.
    let r = report(&[captures().join("encap/chdlc.pcap").to_str().unwrap()]);
    assert_eq!(r["stats"]["skipped"]["unsupported_link"], 0);
    assert!(
        r["stats"]["link_types"].as_object().unwrap().keys().any(|k| k.contains("C_HDLC")),
        "{}",
        r["stats"]["link_types"]
    );
}
