//! `live --metrics ADDR:PORT`: a real Prometheus server (the Debian `prometheus` package) scrapes
//! `kavwatch live` in a network namespace during a replay of the project's captures; the scraped
//! counters must equal the final report's. Also: `promtool check metrics` accepts the text,
//! hostile clients (idle connections, oversized and garbage heads) stop neither the endpoint nor
//! the capture, and a port in use ends the command before capture starts. Needs root (CI runs as
//! root), iproute2, tcpreplay and prometheus.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::netns::*;
use common::*;

const METRICS_PORT: u16 = 9464;
const PROMETHEUS_PORT: u16 = 9090;

const REPLAYED: [&str; 12] = [
    "demo.pcapng",
    "dns-udp.pcap",
    "dns-tcp.pcap",
    "http.pcap",
    "tls12.pcap",
    "tls13.pcap",
    "quic-h3.pcap",
    "vlan.pcap",
    "attribution.pcap",
    "resolver.pcap",
    "ksc.pcap",
    "dhcp.pcap",
];

/// Runs `f` on a thread inside the namespace: sockets it makes live there.
fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: moves only this thread into the namespace, with an open namespace descriptor.
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends `request` as it is and reads the whole answer (the server closes after it).
fn raw(port: u16, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&local(port), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// `GET path` over HTTP/1.0 (no chunked answers): the status and the body.
fn get(ns: &Netns, port: u16, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let answer = in_ns(ns, || raw(port, req.as_bytes())).unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"));
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The samples of a text exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// A Prometheus server in the namespace, scraping kavwatch every second.
struct Prometheus {
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    fn start(ns: &Netns, dir: &Path) -> Prometheus {
        tool("prometheus", "prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: kavwatch\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{METRICS_PORT}']\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = ns
            .exec("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { child, log };
        let t = Instant::now();
        loop {
            let ready = in_ns(ns, || raw(PROMETHEUS_PORT, b"GET /-/ready HTTP/1.0\r\n\r\n"));
            if ready.is_ok_and(|a| a.starts_with(b"HTTP/1.0 200") || a.starts_with(b"HTTP/1.1 200")) {
                return p;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "prometheus not ready: {}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query: per series, its labels and value.
    fn query(&self, ns: &Netns, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (status, body) = get(ns, PROMETHEUS_PORT, &format!("/api/v1/query?query={q}"));
        assert_eq!(status, 200, "query {q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, r["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// One series per value of `label` (or "" without it): the values Prometheus holds now.
    fn by(&self, ns: &Netns, metric: &str, label: &str) -> BTreeMap<String, u64> {
        self.query(ns, metric).into_iter().map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), v as u64)).collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Idle connections, oversized and garbage heads, a wrong path: each answered or closed, never
/// a hang. Returns when done (about 2.5 s: the idle ones are timed out by the server).
fn hostile(ns: &Netns) {
    in_ns(ns, || {
        // 20 idle connections: 4 are served (and time out after 2 s), the others closed at once.
        let idle: Vec<TcpStream> = (0..20)
            .map(|i| {
                TcpStream::connect_timeout(&local(METRICS_PORT), Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
            })
            .collect();
        let t = Instant::now();
        let mut closed_early = 0;
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            if let Err(e) = s.read_to_end(&mut buf) {
                assert!(buf.is_empty(), "idle connection: {e} after {}", String::from_utf8_lossy(&buf));
            }
            if buf.is_empty() {
                closed_early += 1;
            } else {
                assert!(buf.starts_with(b"HTTP/1.1 400"), "idle connection: {}", String::from_utf8_lossy(&buf));
            }
        }
        assert!(closed_early >= 16, "{closed_early} idle connections closed at once");
        assert!(t.elapsed() < Duration::from_secs(8), "idle connections held {:?}", t.elapsed());
        // A head longer than 8 KiB, and bytes that are no HTTP.
        let big = raw(METRICS_PORT, &[b'A'; 9000]).expect("a 9000-byte head");
        assert!(big.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&big));
        let garbage = raw(METRICS_PORT, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n").expect("garbage");
        assert!(garbage.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&garbage));
        let nope = raw(METRICS_PORT, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").expect("GET /nope");
        assert!(nope.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&nope));
    });
}

#[test]
fn prometheus_scrapes_live_and_the_counters_equal_the_report() {
    need_root!();
    tool("prometheus", "prometheus");
    tool("promtool", "prometheus");
    let d = tmpdir("metrics-prometheus");
    let ns = Netns::new("prom");
    let (ev, rep) = (d.join("events.json"), d.join("report.json"));
    let alerts = format!("file:{}", d.join("alerts.json").display());
    let metrics = format!("127.0.0.1:{METRICS_PORT}");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/kaspersky.toml");
    let live = Live::start(
        &ns,
        &d,
        &[
            "--metrics",
            &metrics,
            "--rules",
            rules.to_str().unwrap(),
            "--alert",
            &alerts,
            "--workers",
            "2",
            "--cutoff",
            "2000-01-01T00:00:00Z",
            "--events",
            ev.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--report-interval",
            "1s",
            "--sensor-name",
            "lab \"7\"\\",
        ],
    );
    assert!(live.stderr().contains(&format!("kavwatch: metrics on http://{metrics}/metrics")), "{}", live.stderr());
    let prom = Prometheus::start(&ns, &d);

    // The replay, with hostile clients at the same time.
    let files: Vec<PathBuf> = REPLAYED.iter().map(|f| captures().join(f)).collect();
    std::thread::scope(|s| {
        let h = s.spawn(|| hostile(&ns));
        ns.replay(&files, &["--topspeed"]);
        h.join().unwrap();
    });
    ns.replay(&files, &["--pps", "400"]);
    // A rules reload shows in the generation.
    live.signal(libc::SIGHUP);
    live.wait_stderr("rules reloaded", Duration::from_secs(5));

    // The endpoint answers, its text passes promtool, and it settles once the last packets are in.
    let watched =
        ["kavwatch_packets_total{interface=\"c0\"}", "kavwatch_observations_total", "kavwatch_hosts_evicted_total"];
    let (mut last, mut since) = (BTreeMap::new(), Instant::now());
    let t = Instant::now();
    let body = loop {
        let (status, body) = get(&ns, METRICS_PORT, "/metrics");
        assert_eq!(status, 200, "{body}");
        let now: BTreeMap<String, f64> = samples(&body)
            .into_iter()
            .filter(|(k, _)| watched.contains(&k.as_str()) || k.starts_with("kavwatch_hosts{"))
            .collect();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(2) {
            break body;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the counters never settled: {body}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = d.join("metrics.txt");
    std::fs::write(&text, &body).unwrap();
    let o = tool("promtool", "prometheus")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&text).unwrap())
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        body.contains("kavwatch_build_info{version=\"0.1.0\",sensor=\"lab \\\"7\\\"\\\\\",engine=\"afpacket\"} 1"),
        "{body}"
    );
    let s = samples(&body);
    assert_eq!(s["kavwatch_rules_generation"], 1.0, "{body}");
    assert!(s["kavwatch_rules"] > 10.0, "{body}");
    assert!(s["kavwatch_rules_loaded_timestamp_seconds"] > s["kavwatch_start_time_seconds"], "{body}");
    assert!(s["kavwatch_metrics_connections_rejected_total"] >= 16.0, "{body}");
    assert!(s["kavwatch_metrics_requests_total{code=\"400\"}"] >= 6.0, "{body}");
    assert!(s["kavwatch_metrics_requests_total{code=\"404\"}"] >= 1.0, "{body}");

    // Prometheus has scraped after that.
    let settled = now_s();
    let t = Instant::now();
    loop {
        let at = prom.query(&ns, "timestamp(kavwatch_observations_total)");
        if at.first().is_some_and(|(_, ts)| *ts > settled + 0.5) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "prometheus did not scrape: {at:?}\n{}", prom.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(prom.by(&ns, "up", "job"), BTreeMap::from([("kavwatch".to_string(), 1)]));
    let scraped = |m: &str, label: &str| prom.by(&ns, m, label);
    let packets = scraped("kavwatch_packets_total", "interface");
    let decoded = scraped("kavwatch_packets_decoded_total", "");
    let malformed = scraped("kavwatch_packets_malformed_total", "");
    let observations = scraped("kavwatch_observations_total", "");
    let flows = scraped("kavwatch_tcp_flows_total", "");
    let events = scraped("kavwatch_events_total", "category");
    let hosts = scraped("kavwatch_hosts", "verdict");
    let sent = scraped("kavwatch_alerts_sent_total", "destination");
    let drops = scraped("kavwatch_kernel_drops_total", "socket");

    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let report = json(&rep);
    let st = &report["stats"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    let c0 = &st["capture"]["interfaces"]["c0"];
    assert!(n(&c0["packets"]) > 1500, "{c0}");
    assert_eq!(packets, BTreeMap::from([("c0".to_string(), n(&c0["packets"]))]));
    assert_eq!(drops.values().sum::<u64>(), n(&c0["drops"]));
    assert_eq!(drops.len(), 2, "one AF_PACKET socket per worker: {drops:?}");
    assert_eq!(decoded[""], n(&st["decoded"]));
    assert_eq!(malformed[""], n(&st["malformed"]));
    assert_eq!(observations[""], n(&st["observations"]));
    assert_eq!(flows[""], n(&st["tcp_flows"]));
    let mut per_category: BTreeMap<String, u64> =
        ["update", "telemetry", "activation", "management", "excluded", "other"].map(|c| (c.to_string(), 0)).into();
    for e in json_lines(&ev) {
        *per_category.get_mut(e["category"].as_str().unwrap()).unwrap() += 1;
    }
    assert_eq!(events, per_category);
    assert_eq!(events.values().sum::<u64>(), n(&st["observations"]));
    let verdicts: BTreeMap<String, u64> = report["summary"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "hosts")
        .map(|(k, v)| (k.clone(), n(v)))
        .collect();
    assert_eq!(hosts, verdicts);
    assert!(verdicts["active-after-cutoff"] > 0, "{verdicts:?}");
    assert_eq!(sent, BTreeMap::from([(alerts.clone(), n(&st["alerts"]["destinations"][&alerts]["sent"]))]));
    assert!(sent[&alerts] > 0);
}

#[test]
fn a_metrics_port_in_use_ends_the_command_before_capture() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = tmpdir("metrics-port-in-use");
    let o = run(&["live", "-i", "kw-no-such-if0", "--metrics", &addr, "--state-dir", d.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("--metrics {addr}: cannot listen")) && err.contains("in use"), "{err}");
    let o = run(&["live", "-i", "c0", "--metrics", "localhost"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--metrics"), "{}", stderr(&o));
}
