//! Configuration files: every option of `live` round-trips from a file to the effective
//! configuration, the command line overrides the file, errors name file, line and key,
//! hostile values are refused, `analyze --config` uses the shared keys, and SIGHUP re-reads the
//! file in a running `live`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::netns::*;
use common::*;

/// A valid value, different from the default, for every option of `live` (a new option
/// without one here fails `every_option_round_trips`, so the list stays complete).
fn non_default_values(d: &Path) -> Vec<(&'static str, Vec<String>)> {
    let p = |n: &str| d.join(n).display().to_string();
    let one = |v: &str| vec![v.to_string()];
    vec![
        ("interface", vec!["eth7".into(), "eth8".into()]),
        ("bpf", one("udp port 53 or tcp port 443")),
        ("workers", one("3")),
        ("engine", one("pcap")),
        ("snaplen", one("9000")),
        ("no-promisc", one("true")),
        ("ring-block-size", one("8388608")),
        ("ring-blocks", one("32")),
        ("rules", one(&p("rules.toml"))),
        ("cutoff", one("2024-09-29T04:00:00Z")),
        ("events", one(&p("events.json"))),
        ("events-max-bytes", one("5000000")),
        ("events-keep", one("9")),
        ("report", one(&p("report.html"))),
        ("report-interval", one("5m")),
        ("stats-interval", one("2h")),
        ("duration", one("7d")),
        ("user", one("nobody")),
        ("sensor-name", one("sensor \"east\" #1")),
        ("state-dir", one(&p("state"))),
        ("max-flows", one("200000")),
        ("max-hosts", one("5000")),
        ("resolver", vec!["10.0.0.53".into(), "192.168.0.0/24".into()]),
        ("alert", vec!["syslog+udp://127.0.0.1:5514".into(), format!("file:{}", p("alerts.json"))]),
        ("alert-format", one("cef")),
        ("alert-interval", one("10m")),
        ("alert-all", one("true")),
        ("alert-ca", one(&p("ca.pem"))),
        ("syslog-facility", one("16")),
        ("spool-dir", one(&p("spool"))),
        ("spool-max-bytes", one("1000000")),
        ("alert-file-max-bytes", one("2000000")),
        ("alert-drain-timeout", one("30s")),
        ("vxlan-port", vec!["4790".into()]),
        ("geneve-port", vec!["6082".into(), "6083".into()]),
        ("split-by-overlay", one("true")),
        ("metrics", one("127.0.0.1:9464")),
        ("fresh", one("true")),
        ("publish", one("nats://10.0.0.7:4222,nats://10.0.0.8:4222")),
        ("nats-creds", one(&p("sensor.creds"))),
        ("nats-ca", one(&p("nats-ca.pem"))),
        ("publish-drain-timeout", one("45s")),
    ]
}

/// `key = value   # source` lines of `config show`, as key -> (values text, source).
fn shown(out: &str) -> BTreeMap<String, (String, String)> {
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (kv, source) = l.rsplit_once("   # ")?;
            let (k, v) = kv.split_once(" = ")?;
            Some((k.to_string(), (v.to_string(), source.to_string())))
        })
        .collect()
}

fn keys_of_generated_config() -> BTreeSet<String> {
    let o = run(&["generate", "config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter_map(|l| l.strip_prefix("# ")?.split_once(" = ").map(|(k, _)| k.to_string()))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect()
}

#[test]
fn every_option_round_trips_from_file_to_effective_configuration() {
    let d = tmpdir("config-roundtrip");
    let values = non_default_values(&d);
    let keys: BTreeSet<String> = values.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, keys_of_generated_config(), "every option of live needs a test value here");
    // The options on the command line, then `config show` of them written as a file...
    let mut args: Vec<String> = vec!["config".into(), "show".into(), "--".into()];
    for (k, vs) in &values {
        for v in vs {
            args.push(if v == "true" && !k.contains("interval") { format!("--{k}") } else { format!("--{k}={v}") });
        }
    }
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let from_cli = shown(&stdout(&o));
    for (k, (v, source)) in &from_cli {
        assert_eq!(source, "command line", "{k} = {v}");
    }
    let file = d.join("kavwatch.toml");
    std::fs::write(&file, stdout(&o)).unwrap();
    // ...read back gives the same values, each from its line of the file.
    let o = run(&["config", "show", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let from_file = shown(&stdout(&o));
    assert_eq!(from_file.keys().collect::<Vec<_>>(), from_cli.keys().collect::<Vec<_>>());
    let text = std::fs::read_to_string(&file).unwrap();
    for (k, (v, source)) in &from_file {
        assert_eq!(v, &from_cli[k].0, "{k}");
        let line: usize = source.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(text.lines().nth(line - 1).unwrap().starts_with(&format!("{k} = ")), "{k}: {source}");
    }
    // The values are those given: a few checked against the test's own list.
    assert_eq!(from_file["interface"].0, r#"["eth7", "eth8"]"#);
    assert_eq!(from_file["sensor-name"].0, r#"'sensor "east" #1'"#);
    assert_eq!(from_file["workers"].0, "3");
    assert_eq!(from_file["no-promisc"].0, "true");
    assert_eq!(o.status.code(), Some(0));
    let o = run(&["config", "check", file.to_str().unwrap()]);
    assert!(stdout(&o).contains(&format!("ok: {} settings for live", keys.len())), "{}", stdout(&o));
}

#[test]
fn the_command_line_overrides_the_file() {
    let d = tmpdir("config-override");
    let file = d.join("k.toml");
    std::fs::write(&file, "workers = 3\nresolver = [\"10.0.0.53\"]\nreport-interval = \"5m\"\n").unwrap();
    let o = run(&["config", "show", file.to_str().unwrap(), "--", "--workers", "7", "--resolver", "10.9.9.9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = shown(&stdout(&o));
    assert_eq!(s["workers"], ("7".into(), "command line".into()));
    // A repeatable option given on the command line replaces the file's list.
    assert_eq!(s["resolver"], (r#"["10.9.9.9"]"#.into(), "command line".into()));
    assert_eq!(s["report-interval"], (r#""5m""#.into(), format!("{}:3", file.display())));
    assert_eq!(s["engine"], (r#""afpacket""#.into(), "default".into()));
}

#[test]
fn errors_name_the_file_the_line_and_the_key() {
    let d = tmpdir("config-errors");
    let file = d.join("bad.toml");
    std::fs::write(
        &file,
        "# a comment\nworkers = 0\nengine = \"dpdk\"\nintrface = [\"eth1\"]\nreport-interval = \"5 years\"\n\
         alert-all = \"yes\"\nsnaplen = [1, 2]\n[live]\nbpf = \"x\"\n",
    )
    .unwrap();
    let f = file.display().to_string();
    let o = run(&["config", "check", &f]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    for want in [
        format!("{f}:2: workers: invalid value '0'"),
        format!("{f}:3: engine: invalid value 'dpdk'"),
        format!("{f}:4: intrface: unknown key, did you mean `interface`?"),
        format!("{f}:5: report-interval: invalid value '5 years'"),
        format!("{f}:6: alert-all: a flag: true or false"),
        format!("{f}:7: snaplen: takes one value, not an array"),
        format!("{f}:8: live: a table"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    // The same errors stop `live` and `analyze` before they start.
    for args in [vec!["live", "--config", &f], vec!["analyze", "--config", &f, "captures/demo.pcapng"]] {
        let o = run(&args);
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains(&format!("{f}:2: workers:")), "{}", stderr(&o));
    }
    // A syntax error names its line.
    std::fs::write(&file, "workers = 2\nengine = pcap\n").unwrap();
    let o = run(&["config", "check", &f]);
    assert!(stderr(&o).contains(&format!("{f}:2:")), "{}", stderr(&o));
    let o = run(&["config", "check", d.join("missing.toml").to_str().unwrap()]);
    assert!(stderr(&o).contains("missing.toml: No such file"), "{}", stderr(&o));
}

#[test]
fn hostile_values_are_refused() {
    let d = tmpdir("config-hostile");
    let file = d.join("h.toml");
    let cases: Vec<(String, &str)> = vec![
        ("max-hosts = 99999999999999999999999999999999999999999".into(), "out of range"),
        ("max-hosts = -1".into(), "max-hosts"),
        ("syslog-facility = 24".into(), "syslog-facility"),
        ("sensor-name = \"a\\u0000b\"".into(), "control character"),
        ("bpf = \"udp\\nport 53\"".into(), "control character"),
        (format!("sensor-name = \"{}\"", "x".repeat(5000)), "at most 4096"),
        (format!("resolver = [{}]", vec!["\"10.0.0.1\""; 300].join(",")), "at most 256"),
        ("config = \"/etc/passwd\"".into(), "not an option a configuration file can set"),
        ("help = true".into(), "not an option"),
        ("interface = [[\"eth1\"]]".into(), "array of arrays"),
        ("workers = 2\nworkers = 3".into(), "duplicate"),
        ("resolver = [\"10.0.0.1/99\"]".into(), "resolver"),
        ("alert-drain-timeout = \"99999999999999999999d\"".into(), "alert-drain-timeout"),
    ];
    for (text, needle) in cases {
        std::fs::write(&file, &text).unwrap();
        let o = run(&["config", "check", file.to_str().unwrap()]);
        assert_ne!(o.status.code(), Some(0), "{text:.80}: accepted");
        assert!(stderr(&o).contains(needle), "{text:.80}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // Too big to be a configuration: refused before it is parsed.
    std::fs::write(&file, "#".repeat(2 << 20)).unwrap();
    let o = run(&["config", "check", file.to_str().unwrap()]);
    assert!(stderr(&o).contains("not a configuration"), "{}", stderr(&o));
    let o = run(&["config", "check", d.to_str().unwrap()]);
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
}

#[test]
fn analyze_reads_the_shared_keys_and_ignores_those_of_live() {
    let d = tmpdir("config-analyze");
    let file = d.join("k.toml");
    let events = d.join("events.json");
    std::fs::write(
        &file,
        format!(
            "interface = [\"eth1\"]\nevents = {:?}\nsensor-name = \"from-the-file\"\n",
            events.display().to_string()
        ),
    )
    .unwrap();
    let demo = captures().join("demo.pcapng");
    let o = run(&["analyze", "--config", file.to_str().unwrap(), "--report", "-", demo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["sensors"], serde_json::json!(["from-the-file"]), "{}", &stdout(&o)[..200]);
    // As many events in the file as without the configuration on stdout.
    let plain = events_of(&["analyze", "--events", "-", demo.to_str().unwrap()]);
    assert!(plain > 0);
    assert_eq!(json_lines(&events).len(), plain);
}

fn events_of(args: &[&str]) -> usize {
    let o = run(args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().count()
}

#[test]
fn live_takes_its_interface_from_the_file_and_sighup_reloads_it() {
    need_root!();
    let d = tmpdir("config-live");
    let ns = Netns::new("cfg");
    let file = d.join("k.toml");
    let report = d.join("report.json");
    let write = |interval: &str, bpf: &str| {
        std::fs::write(
            &file,
            format!(
                "interface = [\"c0\"]\nreport = {:?}\nreport-interval = {interval:?}\nbpf = {bpf:?}\n",
                report.display().to_string()
            ),
        )
        .unwrap()
    };
    write("1h", "udp or tcp");
    // Live::start adds `-i c0`; the file names c0 too: the command line's list wins, the same.
    let live = Live::start(&ns, &d, &["--config", file.to_str().unwrap()]);
    ns.replay(&[captures().join("dns-udp.pcap")], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!report.exists(), "the report is written only every hour so far");
    write("1s", "udp");
    live.signal(libc::SIGHUP);
    live.wait_stderr("report-interval changed in", Duration::from_secs(5));
    let err = live.stderr();
    assert!(err.contains("report-interval changed in") && err.contains(": applied"), "{err}");
    assert!(err.contains("bpf changed in") && err.contains("NOT applied, it needs a restart"), "{err}");
    // The new interval is in force: the report appears within a few seconds.
    let t = std::time::Instant::now();
    while !report.exists() {
        assert!(t.elapsed() < Duration::from_secs(5), "no report after the interval became 1s: {}", live.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file leaves the configuration in force and says so.
    std::fs::write(&file, "report-interval = \"soon\"\n").unwrap();
    live.signal(libc::SIGHUP);
    live.wait_stderr("configuration NOT reloaded", Duration::from_secs(5));
    assert!(live.stderr().contains("report-interval: invalid value 'soon'"), "{}", live.stderr());
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let r = json(&report);
    assert!(r["hosts"].as_array().is_some_and(|h| !h.is_empty()), "{r}");
}

#[test]
fn live_reads_its_interfaces_from_the_file() {
    // No -i on the command line: the file's interface is the one opened (and missing here).
    let d = tmpdir("config-live-iface");
    let file = d.join("k.toml");
    std::fs::write(&file, "interface = [\"kw-no-such0\"]\n").unwrap();
    let o = run(&["live", "--config", file.to_str().unwrap(), "--state-dir", d.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("kw-no-such0"), "{}", stderr(&o));
    // Without the file, -i is required as before.
    let o = run(&["live", "--state-dir", d.to_str().unwrap()]);
    assert!(stderr(&o).contains("--interface"), "{}", stderr(&o));
}
