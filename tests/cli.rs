//! The command line's contract: exit codes, one-line errors, what is reported after damage,
//! hostile names, and the `rules` commands.

mod common;

use common::*;

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

fn kasp_query(ts: i64, src: [u8; 4], name: &[u8]) -> (i64, Vec<u8>) {
    (ts, udp_frame(src, [10, 0, 0, 53], 40000, 53, &dns_query(7, name, 1)))
}

#[test]
fn bad_files_exit_2_with_one_line_naming_the_file() {
    let d = tmpdir("bad-files");
    let good = pcap(1, &[kasp_query(AFTER_US, [10, 0, 0, 5], b"s01.upd.kaspersky.com")]);
    let mut huge = good.clone();
    huge[24 + 8..24 + 12].copy_from_slice(&3_000_000_000u32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.pcap", vec![], "empty file"),
        ("garbage.pcap", b"this is not a capture file at all".to_vec(), "not a pcap or pcapng file"),
        ("cut.pcap", good[..good.len() - 10].to_vec(), "truncated at byte 24 (after packet 0)"),
        ("huge.pcap", huge, "3000000000"),
        ("header-only.pcap", good[..20].to_vec(), "truncated at byte 0"),
    ];
    for (name, bytes, expect) in cases {
        let path = write(&d, name, &bytes);
        let o = run(&["analyze", "-q", &path]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        assert!(err.contains(&path) && err.contains(expect), "{name}: {err}");
    }
    let o = run(&["analyze", "-q", "/nonexistent/x.pcap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/x.pcap"), "{}", stderr(&o));
}

#[test]
fn what_was_read_before_the_damage_is_still_reported() {
    let d = tmpdir("damage");
    let mut bytes = pcap(
        1,
        &[
            kasp_query(AFTER_US, [10, 0, 0, 5], b"s01.upd.kaspersky.com"),
            kasp_query(AFTER_US + 1, [10, 0, 0, 6], b"dnl-01.geo.kaspersky.com"),
        ],
    );
    bytes.truncate(bytes.len() - 5);
    let path = write(&d, "damaged.pcap", &bytes);
    let report = d.join("r.json");
    let o = run(&["analyze", "-q", &path, "--report", report.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let r = json(&report);
    assert_eq!(r["hosts"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["hosts"][0]["ip"], "10.0.0.5");
    assert_eq!(r["inputs"][0]["packets"], 1);
    assert!(r["inputs"][0]["error"].as_str().unwrap().contains("truncated"));
    assert!(r["errors"][0].as_str().unwrap().contains("damaged.pcap"));
}

#[test]
fn unknown_link_type_is_skipped_and_counted() {
    let d = tmpdir("linktype");
    let path = write(&d, "usb.pcap", &pcap(189, &[(AFTER_US, vec![1, 2, 3, 4]), (AFTER_US, vec![5; 40])]));
    let report = d.join("r.json");
    let o = run(&["analyze", "-q", &path, "--report", report.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json(&report);
    assert_eq!(r["stats"]["skipped"]["unsupported_link"], 2);
    assert_eq!(r["stats"]["link_types"]["LINKTYPE_189"], 2);
}

#[test]
fn bad_options_exit_2() {
    for args in [
        vec!["analyze"],
        vec!["analyze", "--workers", "0", "x.pcap"],
        vec!["analyze", "--no-such-option", "x.pcap"],
        vec!["frobnicate"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let d = tmpdir("badopt");
    let path = write(&d, "ok.pcap", &pcap(1, &[]));
    let o = run(&["analyze", &path, "--cutoff", "yesterday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--cutoff") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
    let o = run(&["analyze", &path, "--events", "/nonexistent-dir/e.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent-dir/e.json"), "{}", stderr(&o));
}

#[test]
fn fail_on_active_and_cutoff_override() {
    let d = tmpdir("fail-on-active");
    let path = write(&d, "a.pcap", &pcap(1, &[kasp_query(AFTER_US, [10, 0, 0, 5], b"s01.upd.kaspersky.com")]));
    assert_eq!(run(&["analyze", "-q", &path]).status.code(), Some(0));
    assert_eq!(run(&["analyze", "-q", "--fail-on-active", &path]).status.code(), Some(3));
    // Moving the cutoff after the traffic makes the same host active only before it.
    let o = run(&["analyze", "-q", "--fail-on-active", "--cutoff", "2030-01-01T00:00:00Z", &path]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn hostile_names_are_escaped_in_every_output() {
    let d = tmpdir("hostile");
    let evil: &[&[u8]] = &[
        b"a\nb.upd.kaspersky.com",
        b"<img src=x onerror=alert(1)>.upd.kaspersky.com",
        b"x\x1b[31m\",\"host\":\"1.2.3.4.upd.kaspersky.com",
        b"\xff\xfe=cmd|' /C calc'!A0.upd.kaspersky.com",
    ];
    let recs: Vec<_> =
        evil.iter().enumerate().map(|(i, n)| kasp_query(AFTER_US + i as i64, [10, 0, 0, 9], n)).collect();
    let path = write(&d, "evil.pcap", &pcap(1, &recs));
    let (events, report, csv) = (d.join("e.json"), d.join("r.json"), d.join("r.csv"));
    let o = run(&["analyze", &path, "--events", events.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(run(&["analyze", "-q", &path, "--report", csv.to_str().unwrap()]).status.success());
    let ev = json_lines(&events);
    assert_eq!(ev.len(), 4, "one event per name, none split");
    for e in &ev {
        let dom = e["domain"].as_str().unwrap();
        assert!(dom.bytes().all(|b| (0x21..0x7f).contains(&b)), "printable ASCII only: {dom:?}");
        assert_eq!(e["host"], "10.0.0.9");
    }
    assert_eq!(ev[0]["domain"], "a\\x0ab.upd.kaspersky.com");
    // The text table and CSV stay one line per host, whatever the names hold.
    assert!(!stdout(&o).contains('\x1b'));
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(json(&report)["hosts"][0]["domains"].as_array().unwrap().len() == 4);
}

#[test]
fn rules_check_and_match() {
    let o = run(&["rules", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ok: vendor kaspersky"));
    let o = run(&[
        "rules",
        "match",
        "DNL-02.GEO.Kaspersky.COM.",
        "kaspersky.com.evil.test",
        "notkaspersky.com",
        "mykaspersky-labs.com",
    ]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("dnl-02.geo.kaspersky.com\tupdate\t"), "{out}");
    for l in &lines[1..] {
        assert!(l.contains("(no rule)"), "{l}");
    }
    let d = tmpdir("rules-check");
    let bad = write(
        &d,
        "bad.toml",
        b"[vendor]\nid = \"x\"\nname = \"X\"\ncutoff = \"2024-09-29T04:00:00Z\"\n\n[[rule]]\nid = \"r1\"\ncategory = \"updatez\"\nmatch = \"exact\"\npattern = \"a.test\"\n",
    );
    let o = run(&["rules", "check", &bad]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{bad}:8:")) && err.contains("`category`"), "{err}");
}

#[test]
fn a_hosts_own_mac_but_not_a_routers() {
    let d = tmpdir("mac");
    // udp_frame sends every packet from 02:00:00:00:00:01.
    let one = write(&d, "one.pcap", &pcap(1, &[kasp_query(AFTER_US, [10, 0, 0, 5], b"s01.upd.kaspersky.com")]));
    let r = d.join("one.json");
    assert!(run(&["analyze", "-q", &one, "--report", r.to_str().unwrap()]).status.success());
    assert_eq!(json(&r)["hosts"][0]["mac"], "02:00:00:00:00:01");
    let routed = write(
        &d,
        "routed.pcap",
        &pcap(
            1,
            &[
                kasp_query(AFTER_US, [10, 0, 0, 5], b"s01.upd.kaspersky.com"),
                kasp_query(AFTER_US + 1, [10, 0, 0, 6], b"s01.upd.kaspersky.com"),
            ],
        ),
    );
    let r = d.join("routed.json");
    assert!(run(&["analyze", "-q", &routed, "--report", r.to_str().unwrap()]).status.success());
    for h in json(&r)["hosts"].as_array().unwrap() {
        assert!(h.get("mac").is_none(), "one MAC for two addresses is a router's: {h}");
    }
}

#[test]
fn progress_on_a_terminal_and_quiet_silences_it() {
    // `script` (util-linux) runs kavwatch on a pseudo-terminal, as a person would.
    let d = tmpdir("progress");
    let path = write(&d, "p.pcap", &pcap(1, &[kasp_query(AFTER_US, [10, 0, 0, 5], b"s01.upd.kaspersky.com")]));
    let on_tty = |extra: &str| {
        let cmd = format!("{} analyze {path} {extra} > /dev/null", env!("CARGO_BIN_EXE_kavwatch"));
        let o = tool("script", "util-linux").args(["-qec", &cmd, "/dev/null"]).output().expect("script (util-linux)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shown = on_tty("");
    assert!(shown.contains("100.0%") && shown.contains("1 packets"), "{shown:?}");
    assert!(!on_tty("-q").contains('%'), "--quiet: no progress");
    // Not a terminal: no progress line in a log file.
    let o = run(&["analyze", &path]);
    assert!(!stderr(&o).contains('%'));
}

#[test]
fn snaplen_cut_packets_are_counted_and_read_as_far_as_they_go() {
    let d = tmpdir("snaplen");
    let frame = udp_frame([10, 0, 0, 5], [10, 0, 0, 53], 40000, 53, &dns_query(7, b"s01.upd.kaspersky.com", 1));
    let mut bytes = pcap(1, &[(AFTER_US, frame[..60].to_vec()), (AFTER_US + 1, frame.clone())]);
    // The first record says the packet was longer than what was captured (snap length 60).
    bytes[24 + 12..24 + 16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    let path = write(&d, "cut.pcap", &bytes);
    let r = d.join("r.json");
    let o = run(&["analyze", "-q", &path, "--report", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json(&r);
    assert_eq!(r["stats"]["truncated"], 1);
    assert_eq!(r["stats"]["dns_malformed"], 1, "the cut query is not a whole DNS message");
    assert_eq!(r["hosts"][0]["categories"]["update"], 1, "the whole one is read");
}

#[test]
fn asking_a_public_resolver_for_kaspersky_names_is_flagged() {
    let d = tmpdir("public-dns");
    let q = |ts, src: [u8; 4], dst: [u8; 4], id| {
        (ts, udp_frame(src, dst, 40000 + id, 53, &dns_query(id, b"s01.upd.kaspersky.com", 1)))
    };
    // 10.0.0.5 asks the corporate resolver, then 8.8.8.8 and 185.228.168.168 (the fallback);
    // 10.0.0.6 asks only the corporate resolver; 10.0.0.7 asks 8.8.4.4, which is not on the list.
    let cap = write(
        &d,
        "fallback.pcap",
        &pcap(
            1,
            &[
                q(AFTER_US, [10, 0, 0, 5], [10, 0, 0, 1], 1),
                q(AFTER_US + 1, [10, 0, 0, 5], [8, 8, 8, 8], 2),
                q(AFTER_US + 2, [10, 0, 0, 5], [185, 228, 168, 168], 3),
                q(AFTER_US + 3, [10, 0, 0, 6], [10, 0, 0, 1], 4),
                q(AFTER_US + 4, [10, 0, 0, 7], [8, 8, 4, 4], 5),
            ],
        ),
    );
    let (ev, rep) = (d.join("ev.json"), d.join("r.json"));
    let o = run(&["analyze", "-q", &cap, "--events", ev.to_str().unwrap(), "--report", rep.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let public: Vec<bool> = json_lines(&ev).iter().map(|e| e["dns"]["public_resolver"].as_bool().unwrap()).collect();
    assert_eq!(public, [false, true, true, false, false]);
    let r = json(&rep);
    let flags: std::collections::BTreeMap<String, serde_json::Value> = r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["ip"].as_str().unwrap().to_string(), h["flags"].clone()))
        .collect();
    assert_eq!(flags["10.0.0.5"], serde_json::json!(["public-dns-fallback"]));
    assert!(flags["10.0.0.6"].is_null() && flags["10.0.0.7"].is_null(), "{flags:?}");
    let csv = d.join("r.csv");
    assert!(run(&["analyze", "-q", &cap, "--report", csv.to_str().unwrap()]).status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.lines().next().unwrap().ends_with(",flags,hostname,ksc_role"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("10.0.0.5,") && l.ends_with(",public-dns-fallback,,")), "{text}");
}
