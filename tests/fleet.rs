//! The fleet on real nats-server processes the tests start: sensors (`live` in a network
//! namespace, `analyze --publish`) publish to JetStream, `fleet collect` answers for all of
//! them. The truth is `report merge` of the sensors' own reports, the sensors' own events files,
//! and the stream as the server holds it (read with the NATS client, not the collector).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::nats::{NatsServer, StoredMessage, cluster, free_port, read_stream, wait_stream_messages};
use common::netns::{Live, Netns, is_root, need_root};
use common::*;
use serde_json::Value;

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

fn init(url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["fleet", "init", "--nats", url];
    args.extend(extra);
    run(&args)
}

/// `analyze -q --publish URL` of `inputs` as `sensor`, its report and events in `dir`.
fn publish_analyze(dir: &Path, sensor: &str, url: &str, inputs: &[PathBuf], extra: &[&str]) -> Output {
    bin().args(analyze_args(dir, sensor, url, inputs, extra)).output().unwrap()
}

fn analyze_args(dir: &Path, sensor: &str, url: &str, inputs: &[PathBuf], extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["analyze", "-q", "--sensor-name", sensor, "--publish", url].map(String::from).to_vec();
    for (k, v) in [
        ("--report", dir.join(format!("{sensor}.json"))),
        ("--events", dir.join(format!("{sensor}.events"))),
        ("--state-dir", dir.join(format!("state-{sensor}"))),
    ] {
        a.push(k.into());
        a.push(v.display().to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(inputs.iter().map(|i| i.display().to_string()));
    a
}

/// A collector in the background.
struct Collector {
    child: Child,
    pub report: PathBuf,
    pub stderr: PathBuf,
}

impl Collector {
    fn start(cmd: Command, dir: &Path, tag: &str, url: &str, extra: &[&str]) -> Collector {
        let report = dir.join(format!("fleet-{tag}.json"));
        let stderr = dir.join(format!("collect-{tag}.err"));
        let mut cmd = cmd;
        cmd.args(["fleet", "collect", "--nats", url, "--report", p(&report), "--name", "fleet"])
            .args(["--state-dir", p(&dir.join(format!("collector-{tag}")))])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&stderr).unwrap());
        Collector { child: cmd.spawn().expect("starting fleet collect"), report, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until its report says it applied stream sequence `seq` (or more).
    fn wait_sequence(&self, seq: u64, timeout: Duration) -> Value {
        let t = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.report)
                && let Ok(r) = serde_json::from_str::<Value>(&text)
                && r["stats"]["collector"]["last_sequence"].as_u64().unwrap_or(0) >= seq
            {
                return r;
            }
            assert!(t.elapsed() < timeout, "the collector did not reach sequence {seq}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; its last report.
    fn stop(mut self) -> Value {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        assert!(st.success(), "fleet collect: {st:?}: {}", self.stderr());
        json(&self.report)
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hosts by (VLAN, overlay, IP), each without what only a sensor can know: its MAC (from
/// frames) and its resolver role (from the DNS it answered), neither in the events.
fn hosts(r: &Value) -> BTreeMap<String, Value> {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let mut h = h.clone();
            let o = h.as_object_mut().unwrap();
            o.remove("mac");
            o.remove("role");
            (format!("{} {} {}", h["vlan"], h["overlay"], h["ip"]), h)
        })
        .collect()
}

/// One text field of each row of the Sensors section, by sensor.
fn per_sensor<'a>(r: &'a Value, field: &str) -> BTreeMap<&'a str, &'a str> {
    r["fleet_sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["sensor"].as_str().unwrap(), s[field].as_str().unwrap()))
        .collect()
}

fn merge_of(dir: &Path, reports: &[PathBuf]) -> Value {
    let out = dir.join("merged.json");
    let mut args = vec!["report", "merge"];
    args.extend(reports.iter().map(|r| p(r)));
    args.extend(["-o", p(&out)]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    json(&out)
}

fn assert_same_hosts(fleet: &Value, merged: &Value) {
    let (a, b) = (hosts(fleet), hosts(merged));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the same hosts");
    for (k, h) in &b {
        assert_eq!(&a[k], h, "host {k}: the collector's row, then report merge's");
    }
    assert_eq!(fleet["summary"], merged["summary"]);
    assert!(!b.is_empty());
}

fn events_file(dir: &Path, sensor: &str) -> Vec<Value> {
    json_lines(&dir.join(format!("{sensor}.events")))
}

/// The observation messages, without the sensor field: what the events files hold.
fn observations(stream: &[StoredMessage]) -> Vec<&StoredMessage> {
    stream.iter().filter(|m| m.subject.starts_with("kavwatch.obs.")).collect()
}

fn without_sensor(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("sensor");
    v
}

/// Every event of `sensor` is in the stream exactly once, in the order the sensor wrote them.
fn assert_exactly_once_in_order(stream: &[StoredMessage], dir: &Path, sensor: &str) {
    let want = events_file(dir, sensor);
    let got: Vec<&StoredMessage> =
        observations(stream).into_iter().filter(|m| m.body["sensor"].as_str() == Some(sensor)).collect();
    let ids: BTreeSet<&str> = got.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "{sensor}: every Nats-Msg-Id once");
    assert_eq!(got.len(), want.len(), "{sensor}: as many observations in the stream as events written");
    for (i, (m, e)) in got.iter().zip(&want).enumerate() {
        assert_eq!(&without_sensor(&m.body), e, "{sensor}: observation {i} (stream sequence {})", m.sequence);
    }
}

fn demo() -> PathBuf {
    captures().join("demo.pcapng")
}

#[test]
fn one_server_two_analyze_sensors_give_the_merge_of_their_reports() {
    let d = tmpdir("fleet-one");
    let server = NatsServer::single(&d, "");
    let url = server.url();
    let o = init(&url, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("stream KAVWATCH created"), "{}", stdout(&o));
    // Asked again: the same; asked otherwise: what differs, and nothing changed.
    assert!(stdout(&init(&url, &[])).contains("exists, as asked"));
    let o = init(&url, &["--max-age", "1d", "--replicas", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("max-age: 34560000s in the stream, 86400s asked"), "{}", stderr(&o));
    assert!(stderr(&o).contains("replicas: 1 in the stream, 3 asked"), "{}", stderr(&o));

    let a = publish_analyze(&d, "site-a", &url, &[demo()], &[]);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = publish_analyze(&d, "site-b", &url, &[captures().join("mixed.pcap.gz"), captures().join("ksc.pcap")], &[]);
    assert!(b.status.success(), "{}", stderr(&b));
    let stream = read_stream(&url, &[]);
    assert_exactly_once_in_order(&stream, &d, "site-a");
    assert_exactly_once_in_order(&stream, &d, "site-b");
    // Each sensor's status is its last message.
    for s in ["site-a", "site-b"] {
        let last = stream.iter().rfind(|m| m.body["sensor"].as_str() == Some(s)).unwrap();
        assert_eq!(last.subject, format!("kavwatch.status.{s}"));
        assert_eq!(last.body["mode"], "analyze");
        assert_eq!(last.body["last"], true);
    }
    let own = json(&d.join("site-a.json"));
    assert_eq!(own["stats"]["publish"]["acked"].as_u64(), Some(events_file(&d, "site-a").len() as u64 + 1));
    assert_eq!(own["stats"]["publish"]["dropped"], 0);

    let c = Collector::start(bin(), &d, "one", &url, &["--report-interval", "1s"]);
    let fleet = c.wait_sequence(stream.last().unwrap().sequence, Duration::from_secs(20));
    let fleet_html = d.join("fleet-one.html");
    let fleet = {
        let _ = fleet;
        let r = c.stop();
        // The HTML of the same report, rendered by the collector at its exit.
        let o = run(&["report", "merge", p(&d.join("fleet-one.json")), "-o", p(&fleet_html)]);
        assert!(o.status.success());
        r
    };
    let merged = merge_of(&d, &[d.join("site-a.json"), d.join("site-b.json")]);
    assert_same_hosts(&fleet, &merged);
    assert_eq!(fleet["period"], merged["period"]);
    assert_eq!(fleet["stats"]["packets"], merged["stats"]["packets"]);
    assert_eq!(fleet["timeline"], merged["timeline"]);
    assert_eq!(per_sensor(&fleet, "state"), BTreeMap::from([("site-a", "finished"), ("site-b", "finished")]));
    let c = &fleet["stats"]["collector"];
    assert_eq!(c["observations"].as_u64().unwrap() as usize, observations(&stream).len());
    assert_eq!((c["statuses"].as_u64(), c["malformed"].as_u64()), (Some(2), Some(0)));
}

/// `fleet collect` writing JSON and HTML; the HTML read back by Chromium.
#[test]
fn a_sensor_gone_silent_is_stale_at_the_top_of_the_page() {
    let d = tmpdir("fleet-stale");
    let server = NatsServer::single(&d, "");
    let url = server.url();
    assert!(init(&url, &[]).status.success());
    // A live-like status by hand: interval 1 s, then silence.
    let a = publish_analyze(&d, "quiet", &url, &[demo()], &[]);
    assert!(a.status.success(), "{}", stderr(&a));
    let html = d.join("fleet.html");
    let json_out = d.join("fleet.json");
    // A sensor whose status says "live, every 1 s" and that then said nothing: the test's own
    // status message, published with the NATS client.
    let status = read_stream(&url, &[]).into_iter().rfind(|m| m.subject.starts_with("kavwatch.status.")).unwrap();
    let mut live = status.body.clone();
    live["sensor"] = "site-gone".into();
    live["mode"] = "live".into();
    live["last"] = false.into();
    live["interval_s"] = 1.into();
    publish_raw(&url, "kavwatch.status.site-gone", &live);
    std::thread::sleep(Duration::from_millis(3500));
    let o = run(&[
        "fleet",
        "collect",
        "--nats",
        &url,
        "--report",
        p(&json_out),
        "--report",
        p(&html),
        "--state-dir",
        p(&d.join("c")),
        "--duration",
        "2s",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&json_out);
    assert_eq!(per_sensor(&r, "state"), BTreeMap::from([("quiet", "finished"), ("site-gone", "stale")]));
    let dom = dom(&html);
    let warn = dom.find("data-stale-sensors").expect("the stale warning");
    assert!(warn < dom.find("id=\"hosts\"").unwrap(), "the warning comes before the hosts");
    assert!(dom[warn..].starts_with("data-stale-sensors=\"\">1 sensor(s) stale"), "{}", &dom[warn..warn + 200]);
    assert!(dom.contains("data-sensor=\"site-gone\" data-state=\"stale\""));
    assert!(dom.contains("data-sensor=\"quiet\" data-state=\"finished\""));
}

/// One message published with the NATS client (as a sensor would, or a stranger).
fn publish_raw(url: &str, subject: &str, body: &Value) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.publish(subject.to_string(), serde_json::to_vec(body).unwrap().into()).await.unwrap().await.unwrap();
    });
}

#[test]
fn live_and_analyze_sensors_in_a_namespace_give_the_merge_of_their_reports() {
    need_root!();
    let d = tmpdir("fleet-live");
    let ns = Netns::new("fleet");
    let mut server = NatsServer::new(&d, "n1", 4222, "").in_netns(&ns);
    server.start();
    let url = server.url();
    let in_ns = || ns.exec(env!("CARGO_BIN_EXE_kavwatch"));
    let o = in_ns().args(["fleet", "init", "--nats", &url]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let live_report = d.join("site-live.json");
    let live = Live::start(
        &ns,
        &d,
        &["--sensor-name", "site-live", "--publish", &url, "--report", p(&live_report), "--stats-interval", "1s"],
    );
    ns.replay(&[captures().join("dns-udp.pcap"), captures().join("http.pcap")], &["--pps", "200"]);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("publish nats://127.0.0.1:4222 published"), "{err}");
    let o = in_ns().args(analyze_args(&d, "site-archive", &url, &[demo()], &[])).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let own = json(&live_report);
    assert_eq!(own["stats"]["publish"]["dropped"], 0);
    assert_eq!(own["stats"]["publish"]["waiting"], 0);
    assert!(own["stats"]["publish"]["acked"].as_u64().unwrap() > own["stats"]["observations"].as_u64().unwrap());
    let c = Collector::start(in_ns(), &d, "live", &url, &["--report-interval", "1s", "--duration", "4s"]);
    let mut child = c;
    let st = child.child.wait().unwrap();
    assert!(st.success(), "{}", child.stderr());
    let fleet = json(&child.report);
    let merged = merge_of(&d, &[live_report, d.join("site-archive.json")]);
    assert_same_hosts(&fleet, &merged);
    assert_eq!(per_sensor(&fleet, "mode"), BTreeMap::from([("site-archive", "analyze"), ("site-live", "live")]));
    let live_row = fleet["fleet_sensors"].as_array().unwrap().iter().find(|s| s["sensor"] == "site-live").unwrap();
    assert_eq!(live_row["packets"], own["stats"]["packets"]);
    assert_eq!(live_row["inputs"], serde_json::json!(["c0"]));
}

#[test]
fn r3_cluster_one_server_killed_mid_stream_every_observation_once() {
    let d = tmpdir("fleet-r3");
    let mut servers = cluster(&d);
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let all = urls.join(",");
    // The cluster elects its JetStream leader first.
    let t = Instant::now();
    loop {
        let o = init(&all, &["--replicas", "3"]);
        if o.status.success() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no R3 stream: {}", stderr(&o));
        std::thread::sleep(Duration::from_millis(500));
    }
    // A long publish stream: the demo capture 400 times over.
    let inputs: Vec<PathBuf> = (0..400).map(|_| demo()).collect();
    let mut sensor = bin()
        .args(analyze_args(&d, "big", &all, &inputs, &["--publish-drain-timeout", "60s"]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first server (the sensor's) dies once the stream holds the first hundred messages.
    let at_kill = wait_stream_messages(&urls[1], 100, Duration::from_secs(60));
    servers[0].kill();
    std::thread::sleep(Duration::from_secs(1));
    servers[0].start();
    let o = sensor.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(sensor.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(o.success(), "{err}");
    let own = json(&d.join("big.json"));
    let publish = &own["stats"]["publish"];
    eprintln!("publisher across the kill (the stream held {at_kill} messages when it came): {publish}");
    assert!(
        publish["errors"].as_u64().unwrap() + publish["reconnects"].as_u64().unwrap() > 0,
        "the kill landed after the last publish: {publish}"
    );
    assert_eq!(publish["waiting"], 0);
    assert_eq!(publish["dropped"], 0);
    // Read from a server that stayed up.
    let stream = read_stream(&urls[1], &[]);
    let copies = assert_each_event_once_by_id(&stream, &d, "big");
    eprintln!("second copies in the stream: {copies}");
    let c = Collector::start(bin(), &d, "r3", &all, &["--report-interval", "1s"]);
    c.wait_sequence(stream.last().unwrap().sequence, Duration::from_secs(60));
    let fleet = c.stop();
    assert_eq!(fleet["stats"]["collector"]["observations"].as_u64().unwrap() as usize, events_file(&d, "big").len());
    assert_eq!(fleet["stats"]["collector"]["duplicates_skipped"].as_u64().unwrap() as usize, copies);
    assert_same_hosts(&fleet, &merge_of(&d, &[d.join("big.json")]));
}

/// After a server failure, a message sent again lands after the ones that followed it: each
/// event once in the stream by its id, not always in the sensor's order. Returns the second
/// copies the stream holds (nats-server 2.9 may store a message twice when its stream leader
/// dies between storing and acknowledging it; the collector drops them by id).
fn assert_each_event_once_by_id(stream: &[StoredMessage], dir: &Path, sensor: &str) -> usize {
    let want = events_file(dir, sensor);
    let got: Vec<&StoredMessage> = observations(stream);
    let mut seen = BTreeSet::new();
    let unique: Vec<&&StoredMessage> = got.iter().filter(|m| seen.insert(m.msg_id.as_str())).collect();
    assert_eq!(unique.len(), want.len(), "as many ids in the stream as events written");
    let mut a: Vec<String> = unique.iter().map(|m| without_sensor(&m.body).to_string()).collect();
    let mut b: Vec<String> = want.iter().map(|e| e.to_string()).collect();
    a.sort();
    b.sort();
    assert!(a == b, "the stream holds exactly the events of {sensor}");
    got.len() - unique.len()
}

#[test]
fn a_collector_killed_mid_stream_resumes_and_counts_nothing_twice() {
    let d = tmpdir("fleet-kill");
    let server = NatsServer::single(&d, "");
    let url = server.url();
    assert!(init(&url, &[]).status.success());
    for (s, inputs) in [("s1", vec![demo()]), ("s2", vec![captures().join("mixed.pcap.gz")])] {
        assert!(publish_analyze(&d, s, &url, &inputs, &[]).status.success());
    }
    let first = read_stream(&url, &[]).last().unwrap().sequence;
    // Checkpoints every 3 s: the first holds the first two sensors.
    let c = Collector::start(bin(), &d, "killed", &url, &["--report-interval", "3s"]);
    c.wait_sequence(first, Duration::from_secs(20));
    // More while it runs, then SIGKILL before its next checkpoint.
    let more: Vec<PathBuf> = (0..30).map(|_| demo()).collect();
    assert!(publish_analyze(&d, "s3", &url, &more, &[]).status.success());
    assert!(publish_analyze(&d, "s4", &url, &[captures().join("ksc.pcap")], &[]).status.success());
    let total = read_stream(&url, &[]).last().unwrap().sequence;
    std::thread::sleep(Duration::from_millis(300));
    c.kill9();
    // The restart, and beside it a collector that reads the same stream from its start.
    // Both also write one shared report (each atomically).
    let shared = d.join("shared.json");
    let both = ["--report-interval", "1s", "--report", p(&shared)];
    let whole = Collector::start(bin(), &d, "whole", &url, &both);
    let c = Collector::start(bin(), &d, "killed", &url, &both);
    c.wait_sequence(total, Duration::from_secs(30));
    whole.wait_sequence(total, Duration::from_secs(30));
    let killed = c.stop();
    let whole = whole.stop();
    let err = std::fs::read_to_string(d.join("collect-killed.err")).unwrap();
    let resumed_after: u64 = err
        .split("resuming after stream sequence ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the restart resumed from its checkpoint: {err}"));
    assert!(resumed_after >= first && resumed_after < total, "resumed after {resumed_after} ({first}..{total})");
    assert_eq!(hosts(&killed), hosts(&whole));
    assert_eq!(hosts(&json(&shared)), hosts(&whole), "the shared report is whole and the same");
    for k in ["observations", "statuses", "malformed"] {
        assert_eq!(killed["stats"]["collector"][k], whole["stats"]["collector"][k], "{k}");
    }
    let events: usize = ["s1", "s2", "s3", "s4"].iter().map(|s| events_file(&d, s).len()).sum();
    assert_eq!(killed["stats"]["collector"]["observations"].as_u64().unwrap() as usize, events);
    let merged = merge_of(&d, &["s1", "s2", "s3", "s4"].map(|s| d.join(format!("{s}.json"))));
    assert_same_hosts(&killed, &merged);
    assert_eq!(killed["timeline"], merged["timeline"]);
}

#[test]
fn a_sensor_started_with_every_server_down_spools_and_delivers_in_order() {
    let d = tmpdir("fleet-down");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut sensor = bin()
        .args(analyze_args(
            &d,
            "early",
            &url,
            &[demo(), captures().join("ksc.pcap")],
            &["--publish-drain-timeout", "60s"],
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Everything waits in the spool until a server starts.
    let spool = d.join("state-early/spool/nats");
    let t = Instant::now();
    while std::fs::read_dir(&spool)
        .map_or(0, |r| r.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "spool")).count())
        == 0
    {
        assert!(t.elapsed() < Duration::from_secs(30), "nothing spooled");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut server = NatsServer::new(&d, "n1", port, "");
    server.start();
    assert!(init(&url, &[]).status.success());
    let o = sensor.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(sensor.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(o.success(), "{err}");
    let publish = json(&d.join("early.json"))["stats"]["publish"].clone();
    let n = events_file(&d, "early").len() as u64;
    assert_eq!(publish["spooled"].as_u64(), Some(n + 1), "{publish}");
    assert_eq!(
        (publish["acked"].as_u64(), publish["waiting"].as_u64(), publish["dropped"].as_u64()),
        (Some(n + 1), Some(0), Some(0))
    );
    let stream = read_stream(&url, &[]);
    assert_exactly_once_in_order(&stream, &d, "early");
    let numbers: Vec<u64> = stream.iter().map(|m| m.msg_id.rsplit('-').next().unwrap().parse().unwrap()).collect();
    assert_eq!(numbers, (1..=n + 1).collect::<Vec<_>>(), "sent in the order they were made");

    // A small spool with no server: the oldest are dropped and counted, the bound holds, and
    // the rest goes out with the next run once a server answers.
    server.kill();
    let o = publish_analyze(
        &d,
        "bounded",
        &url,
        &(0..20).map(|_| demo()).collect::<Vec<_>>(),
        &["--spool-max-bytes", "65536", "--publish-drain-timeout", "1s"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("waiting in the spool"), "{}", stderr(&o));
    let p1 = json(&d.join("bounded.json"))["stats"]["publish"].clone();
    let made = events_file(&d, "bounded").len() as u64 + 1;
    let (waiting, dropped) = (p1["waiting"].as_u64().unwrap(), p1["dropped"].as_u64().unwrap());
    assert!(dropped > 0 && waiting > 0, "{p1}");
    assert_eq!(waiting + dropped, made, "every message waits or is counted as dropped: {p1}");
    let spool = d.join("state-bounded/spool/nats");
    let bytes: u64 = std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(bytes <= 65536 + 4096, "spool {bytes} bytes for a 64 KiB bound (plus its lock file)");
    server.start();
    let o = publish_analyze(&d, "bounded", &url, &[captures().join("ksc.pcap")], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stream = read_stream(&url, &[]);
    let late: Vec<&StoredMessage> = stream.iter().filter(|m| m.body["sensor"].as_str() == Some("bounded")).collect();
    assert_eq!(late.len() as u64, waiting + events_file(&d, "bounded").len() as u64 + 1);
    // The first run's survivors come first, the newest of them last; then the second run.
    let runs: Vec<&str> = late.iter().map(|m| m.msg_id.split('-').nth(1).unwrap()).collect();
    let first_run = runs[0];
    let switch = runs.iter().position(|r| *r != first_run).unwrap();
    assert_eq!(switch as u64, waiting);
    assert!(runs[switch..].iter().all(|r| *r != first_run));
    let nums: Vec<u64> = late[..switch].iter().map(|m| m.msg_id.rsplit('-').next().unwrap().parse().unwrap()).collect();
    assert_eq!(nums, (made - waiting + 1..=made).collect::<Vec<_>>(), "the oldest were the ones dropped");
}

#[test]
fn tls_user_password_a_denied_subject_and_hostile_names() {
    let d = tmpdir("fleet-tls");
    tool("openssl", "openssl");
    // A CA and a server certificate for 127.0.0.1, made here.
    let sh = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(&d).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kavwatch test CA",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    // Sensor "site-1" may publish its own subjects only; the admin may do anything.
    let extra = format!(
        r#"tls {{
  cert_file: "{d}/server.pem"
  key_file: "{d}/server.key"
}}
authorization {{
  users: [
    {{ user: admin, password: adminpw }}
    {{ user: site1, password: "s3cret pw", permissions: {{
        publish: {{ allow: ["kavwatch.obs.site-1", "kavwatch.status.site-1", "$JS.API.INFO"] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
    }} }}
  ]
}}"#,
        d = d.display()
    );
    let server = NatsServer::single(&d, &extra);
    let url = server.url();
    let ca = d.join("ca.pem");
    let admin = [("NATS_USER", "admin"), ("NATS_PASSWORD", "adminpw")];
    let o = bin().args(["fleet", "init", "--nats", &url, "--nats-ca", p(&ca)]).envs(admin).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Without the CA, TLS fails with one line.
    let o = bin().args(["fleet", "init", "--nats", &url]).envs(admin).output().unwrap();
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // Credentials never on the command line.
    let o = run(&["fleet", "init", "--nats", "nats://admin:adminpw@127.0.0.1:4222"]);
    assert!(!o.status.success() && stderr(&o).contains("credentials in the URL"), "{}", stderr(&o));

    // The alert tests' hostile names, as DNS queries after the cutoff.
    let names = HOSTILE_NAMES;
    let cap = d.join("hostile.pcap");
    hostile_capture(&cap, 1_730_000_000_000_000, 1_000_000);
    let site1 = [("NATS_USER", "site1"), ("NATS_PASSWORD", "s3cret pw")];
    let ca_arg = ["--nats-ca", p(&ca)];
    let o =
        bin().args(analyze_args(&d, "site-1", &url, std::slice::from_ref(&cap), &ca_arg)).envs(site1).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let stream = read_stream_tls(&url, &ca);
    assert_exactly_once_in_order(&stream, &d, "site-1");
    let domains: Vec<&str> = observations(&stream).iter().map(|m| m.body["domain"].as_str().unwrap()).collect();
    let written: Vec<String> =
        events_file(&d, "site-1").iter().map(|e| e["domain"].as_str().unwrap().to_string()).collect();
    assert_eq!(domains.len(), names.len());
    assert_eq!(domains, written, "hostile names cross the bus byte for byte");

    // The same user as another sensor: refused, said once, and nothing lost (spooled).
    let o = bin()
        .args(analyze_args(
            &d,
            "site-2",
            &url,
            std::slice::from_ref(&cap),
            &["--nats-ca", p(&ca), "--publish-drain-timeout", "3s"],
        ))
        .envs(site1)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("NATS refused a subject").count(), 1, "{err}");
    assert!(err.to_ascii_lowercase().contains("permissions violation for publish to \"kavwatch.obs.site-2\""), "{err}");
    let p2 = json(&d.join("site-2.json"))["stats"]["publish"].clone();
    assert_eq!(
        (p2["acked"].as_u64(), p2["dropped"].as_u64(), p2["waiting"].as_u64()),
        (Some(0), Some(0), Some(names.len() as u64 + 1)),
        "{p2}"
    );
}

fn read_stream_tls(url: &str, ca: &Path) -> Vec<StoredMessage> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let client = rt.block_on(async {
        async_nats::ConnectOptions::new()
            .user_and_password("admin".into(), "adminpw".into())
            .add_root_certificates(ca.to_path_buf())
            .require_tls(true)
            .connect(url)
            .await
            .unwrap()
    });
    common::nats::read_stream_with(&rt, client)
}
