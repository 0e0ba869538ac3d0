//! The HTML report, read by a real browser (headless Chromium: the DOM after scripts ran),
//! and `report merge`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn screenshot(html: &Path, png: &Path) {
    let o = chromium("chromium-shot")
        .args([
            "--window-size=1400,1100",
            &format!("--screenshot={}", png.display()),
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success() && png.exists(),
        "no screenshot of {}: {}",
        html.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn analyze_to(dir: &Path, input: &Path, stem: &str, sensor: &str) -> (PathBuf, PathBuf) {
    let (json, html) = (dir.join(format!("{stem}.json")), dir.join(format!("{stem}.html")));
    for out in [&json, &html] {
        let o = run(&[
            "analyze",
            "-q",
            input.to_str().unwrap(),
            "--sensor-name",
            sensor,
            "--report",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    (json, html)
}

/// `data-host`, `data-verdict` (and `data-vlan`) of every host row, in page order.
fn rows(dom: &str) -> Vec<(String, String, Option<String>)> {
    let attr = |tag: &str, name: &str| {
        tag.split(&format!(" {name}=\"")).nth(1).map(|rest| rest.split('"').next().unwrap().to_string())
    };
    dom.split("<tr class=\"host\"")
        .skip(1)
        .map(|t| {
            let tag = format!(" {}", t.split('>').next().unwrap());
            (attr(&tag, "data-host").unwrap(), attr(&tag, "data-verdict").unwrap(), attr(&tag, "data-vlan"))
        })
        .collect()
}

#[test]
fn html_report_in_a_real_browser_matches_the_json_report() {
    let d = tmpdir("html");
    let (json_path, html_path) = analyze_to(&d, &captures().join("demo.pcapng"), "demo", "office-span");
    let report = json(&json_path);
    let page = std::fs::read_to_string(&html_path).unwrap();
    // Self-contained: no attribute that could fetch anything, and a CSP that forbids it anyway.
    for needle in [" src=", " href=", "http://", "https://", "@import", "url("] {
        assert!(!page.contains(needle), "the page must fetch nothing: found {needle:?}");
    }
    assert!(page.contains("content=\"default-src &#39;none&#39;; style-src &#39;sha256-"), "CSP by hash");
    let dom = dom(&html_path);
    assert!(dom.contains("data-js=\"ready\""), "the page's script ran under its CSP");
    let want: Vec<(String, String, Option<String>)> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let vlan = h
                .get("vlan")
                .map(|v| v.as_array().unwrap().iter().map(|x| x.to_string()).collect::<Vec<_>>().join("."));
            (h["ip"].as_str().unwrap().to_string(), h["verdict"].as_str().unwrap().to_string(), vlan)
        })
        .collect();
    let got = rows(&dom);
    assert_eq!(got, want, "host rows equal the JSON report's hosts, in its order");
    assert_eq!(got[0].1, "active-after-cutoff");
    assert!(got.iter().any(|r| r.2.as_deref() == Some("10")), "VLAN 10 host carries data-vlan");
    assert!(dom.contains("data-cutoff=\"2024-09-29T04:00:00Z\""), "the cutoff is drawn and labelled");
    assert!(dom.contains("<b>3</b> host(s) still contacted"), "the answer in one sentence");
    assert!(dom.contains("office-span"), "the sensor is named");
    // Next to the build's other test output (a clone built into another target directory has no target/).
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    screenshot(&html_path, &png);
}

#[test]
fn hostile_names_are_text_in_the_page() {
    let d = tmpdir("html-hostile");
    let evil = b"<img src=x onerror=alert(1)>.upd.kaspersky.com";
    let script = b"<script>document.title='pwned'</script>.upd.kaspersky.com";
    let recs = vec![
        (AFTER_US, udp_frame([10, 0, 0, 66], [10, 0, 0, 53], 40000, 53, &dns_query(1, evil, 1))),
        (AFTER_US + 1, udp_frame([10, 0, 0, 66], [10, 0, 0, 53], 40001, 53, &dns_query(2, script, 1))),
    ];
    let cap = d.join("evil.pcap");
    std::fs::write(&cap, pcap(1, &recs)).unwrap();
    let (_, html) = analyze_to(&d, &cap, "evil", "<b>sensor</b>");
    let dom = dom(&html);
    assert!(!dom.contains("<img") && !dom.contains("<script>document"), "no markup from the wire");
    assert!(dom.contains("&lt;img\\x20src=x\\x20onerror=alert(1)&gt;.upd.kaspersky.com"), "shown as text");
    assert!(!dom.contains("<title>pwned"), "nothing ran");
    assert!(dom.contains("&lt;b&gt;sensor&lt;/b&gt;"), "option values are escaped too");
}

fn host_facts(r: &Value) -> Vec<Value> {
    // Everything that must survive a merge, leaving out sensors and evidence samples.
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            serde_json::json!({
                "ip": h["ip"], "vlan": h.get("vlan"), "verdict": h["verdict"], "first_seen": h["first_seen"],
                "last_seen": h["last_seen"], "last_seen_after_cutoff": h.get("last_seen_after_cutoff"),
                "categories": h["categories"], "domains": h["domains"],
            })
        })
        .collect()
}

#[test]
fn merging_two_halves_gives_the_whole() {
    let d = tmpdir("merge");
    let (whole, _) = analyze_to(&d, &captures().join("demo.pcapng"), "whole", "s");
    let (before, _) = analyze_to(&d, &captures().join("demo-before-cutoff.pcapng"), "before", "sensor-a");
    let (after, _) = analyze_to(&d, &captures().join("demo-after-cutoff.pcapng"), "after", "sensor-b");
    let merged = d.join("merged.json");
    let o =
        run(&["report", "merge", before.to_str().unwrap(), after.to_str().unwrap(), "-o", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (w, m) = (json(&whole), json(&merged));
    assert_eq!(host_facts(&m), host_facts(&w), "same hosts, verdicts, counts and times");
    assert_eq!(m["summary"], w["summary"]);
    assert_eq!(m["stats"]["packets"], w["stats"]["packets"]);
    assert_eq!(m["period"], w["period"]);
    assert_eq!(m["sensors"], serde_json::json!(["sensor-a", "sensor-b"]));
    let h = m["hosts"].as_array().unwrap().iter().find(|h| h["ip"] == "10.99.0.11").unwrap();
    assert_eq!(h["sensors"], serde_json::json!(["sensor-a", "sensor-b"]), "each host names the sensors that saw it");
    // The halves alone disagree with the whole: the merge is doing the work.
    assert_ne!(host_facts(&json(&before)), host_facts(&w));
    // HTML straight from a merge; a bad input is a clear error.
    let html = d.join("merged.html");
    assert!(
        run(&["report", "merge", before.to_str().unwrap(), after.to_str().unwrap(), "-o", html.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(rows(&dom(&html)).len(), w["hosts"].as_array().unwrap().len());
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let o = run(&["report", "merge", before.to_str().unwrap(), bad.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.json: not a kavwatch JSON report"), "{}", stderr(&o));
}

#[test]
fn ten_thousand_hosts_stay_small_and_open() {
    let d = tmpdir("html-10k");
    let recs: Vec<_> = (0..10_000u32)
        .map(|i| {
            let src = [10, 50, (i >> 8) as u8, i as u8];
            (
                AFTER_US + i as i64,
                udp_frame(
                    src,
                    [10, 0, 0, 53],
                    40000,
                    53,
                    &dns_query(i as u16, format!("s{:02}.upd.kaspersky.com", i % 20).as_bytes(), 1),
                ),
            )
        })
        .collect();
    let cap = d.join("many.pcap");
    std::fs::write(&cap, pcap(1, &recs)).unwrap();
    let (_, html) = analyze_to(&d, &cap, "many", "s");
    let size = std::fs::metadata(&html).unwrap().len();
    assert!(size < 12 * 1024 * 1024, "{size} bytes");
    assert_eq!(rows(&dom(&html)).len(), 10_000);
}
