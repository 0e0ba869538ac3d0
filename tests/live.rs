//! `kavwatch live` on real interfaces: a veth pair in a network namespace made by the test,
//! the project's captures replayed onto one end with tcpreplay, kavwatch on the other end.
//! Needs root (CI runs as root), iproute2 and tcpreplay.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

/// Ethernet captures that tcpreplay can put on a veth as they are.
const REPLAYED: [&str; 22] = [
    "demo.pcapng",
    "dns-udp.pcap",
    "dns-tcp.pcap",
    "fragments.pcap",
    "http.pcap",
    "ipv6.pcap",
    "tcp-reorder.pcap",
    "tls-split.pcap",
    "tls12.pcap",
    "tls13.pcap",
    "vlan.pcap",
    "quic-h3.pcap",
    "attribution.pcap",
    "resolver.pcap",
    "ksc.pcap",
    "dhcp.pcap",
    "public-dns.pcap",
    "vlans.pcap",
    // Tunnels: a real VXLAN recording, and real traffic in ERSPAN (inner VLAN tags), GRE with a key, MPLS over PPPoE.
    "encap/vxlan-real.pcap",
    "encap/erspan2-vlan.pcap",
    "encap/gre-key.pcap",
    "encap/mpls-pppoe.pcap",
];

/// What must be equal between live and analyze: everything but time, input and packet number.
fn event_key(e: &serde_json::Value) -> String {
    let mut e = e.clone();
    let m = e.as_object_mut().unwrap();
    for k in ["timestamp", "input", "packet", "interface"] {
        m.remove(k);
    }
    serde_json::to_string(&e).unwrap()
}

fn multiset(events: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(event_key(e)).or_default() += 1;
    }
    m
}

/// Host rows without times and evidence.
fn verdicts(report: &serde_json::Value) -> BTreeMap<String, (String, serde_json::Value)> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                format!("{}/{}", h["ip"], h["vlan"]),
                (h["verdict"].as_str().unwrap().to_string(), h["categories"].clone()),
            )
        })
        .collect()
}

fn replay_matches_analyze(engine: &str, workers: &str) {
    let d = tmpdir(&format!("live-{engine}-{workers}"));
    let ns = Netns::new(&format!("{engine}{workers}"));
    let files: Vec<PathBuf> = REPLAYED.iter().map(|f| captures().join(f)).collect();
    // Replayed packets carry today's time: one cutoff far in the past for both runs.
    let cutoff = "2000-01-01T00:00:00Z";
    let (ev, rep) = (d.join("events.json"), d.join("report.json"));
    let alerts = format!("file:{}", d.join("alerts.json").display());
    let live = Live::start(
        &ns,
        &d,
        &[
            "--alert",
            &alerts,
            "--engine",
            engine,
            "--workers",
            workers,
            "--cutoff",
            cutoff,
            "--events",
            ev.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--report-interval",
            "1s",
            "--stats-interval",
            "1s",
        ],
    );
    ns.replay(&files, &["--topspeed"]);
    // While more traffic comes, the report is rewritten every second: it must parse every time.
    let reader = {
        let rep = rep.clone();
        std::thread::spawn(move || {
            let (mut reads, mut versions) = (0, std::collections::BTreeSet::new());
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(3500) {
                if let Ok(text) = std::fs::read_to_string(&rep) {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("report not valid JSON while running: {e}\n{text}"));
                    versions.insert(v["stats"]["packets"].as_u64().unwrap());
                    reads += 1;
                }
            }
            (reads, versions.len())
        })
    };
    // A second, slower stream of packets kavwatch does not inspect (UDP to port 9999), for 3 s.
    let filler = d.join("filler.pcap");
    let frames: Vec<(i64, Vec<u8>)> =
        (0..120).map(|i| (i * 1000, udp_frame([10, 9, 0, 1], [10, 9, 0, 2], 40000, 9999, b"filler"))).collect();
    std::fs::write(&filler, pcap(1, &frames)).unwrap();
    ns.replay(&[filler], &["--pps", "40"]);
    let (reads, versions) = reader.join().unwrap();
    assert!(reads > 50 && versions >= 2, "{reads} reads of {versions} report versions");
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let live_events = json_lines(&ev);
    let live_report = json(&rep);

    let (off_ev, off_rep) = (d.join("off-events.json"), d.join("off-report.json"));
    let mut args = vec!["analyze", "-q", "--cutoff", cutoff, "--events", off_ev.to_str().unwrap()];
    args.extend(["--report", off_rep.to_str().unwrap()]);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(|s| s.as_str()));
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let off_events = json_lines(&off_ev);
    assert!(off_events.len() > 50, "the captures give {} events", off_events.len());
    let (live_set, off_set) = (multiset(&live_events), multiset(&off_events));
    let only = |a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>| -> Vec<String> {
        a.iter().filter(|(k, n)| b.get(*k) != Some(n)).map(|(k, n)| format!("{n}x {k}")).collect()
    };
    assert!(
        live_set == off_set,
        "live ({engine}, {workers} workers) and analyze differ:\nlive only: {:#?}\nanalyze only: {:#?}",
        only(&live_set, &off_set),
        only(&off_set, &live_set)
    );
    assert!(live_events.iter().all(|e| e["input"] == "c0" && e["interface"] == "c0"));
    // Tunnels are decoded live as in analyze, every tunnelled packet went to its inner flow's
    // worker (none processed in place for a full queue), and the layers were counted alike.
    assert!(live_events.iter().any(|e| e["tunnel"][0]["type"] == "vxlan"));
    assert_eq!(live_report["stats"]["tunnel_forward_full"], 0);
    assert_eq!(live_report["stats"]["tunnels"], json(&off_rep)["stats"]["tunnels"]);
    // Live too: Security Center found by its port pattern, hosts named by their DHCP leases.
    assert_eq!(live_events.iter().filter(|e| e["event_type"] == "ksc").count(), 11);
    assert!(live_events.iter().any(|e| e["hostname"] == "bravo-desktop" && e["host"] == "10.95.0.50"));
    assert_eq!(verdicts(&live_report), verdicts(&json(&off_rep)));
    // Capture counters: none dropped, and the packets seen are the ones replayed (AF_PACKET
    // fanout hands over IPv4 fragments reassembled, as one packet: a few less).
    let c0 = &live_report["stats"]["capture"]["interfaces"]["c0"];
    assert_eq!(live_report["stats"]["capture"]["engine"], engine);
    assert_eq!(c0["drops"], 0, "{c0}");
    let sockets = live_report["stats"]["capture"]["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), if engine == "afpacket" { 2 } else { 1 }, "one AF_PACKET socket per worker");
    let replayed: u64 = json(&off_rep)["stats"]["packets"].as_u64().unwrap() + 120;
    let seen = c0["packets"].as_u64().unwrap();
    assert!(seen <= replayed + 10 && seen + 10 >= replayed, "{c0}: {seen} packets, {replayed} replayed");
    assert_eq!(live_report["stats"]["packets"].as_u64().unwrap(), seen, "every packet the kernel gave was counted");
    assert!(err.contains("kavwatch: live: "), "no stats line: {err}");
    // Alerts in live mode: the replay takes seconds, so one per host and banned category (a
    // resolver's relays are its clients' and alert on them; an address that passed to another
    // machine by DHCP is another host).
    let banned = ["update", "telemetry", "activation", "management"];
    let pairs: std::collections::BTreeSet<(String, String)> = live_events
        .iter()
        .filter(|e| banned.contains(&e["category"].as_str().unwrap()) && e["relayed"] != true)
        .map(|e| (format!("{}{}{}", e["host"], e["vlan"], e["hostname"]), e["category"].to_string()))
        .collect();
    let alerts = json_lines(&d.join("alerts.json"));
    let alerted: std::collections::BTreeSet<(String, String)> = alerts
        .iter()
        .map(|a| (format!("{}{}{}", a["host"], a["vlan"], a["hostname"]), a["category"].to_string()))
        .collect();
    assert_eq!(alerts.len(), pairs.len());
    assert_eq!(alerted, pairs);
    assert!(alerts.iter().all(|a| a["evidence"]["input"] == "c0"));
}

#[test]
fn afpacket_replay_equals_analyze() {
    need_root!();
    replay_matches_analyze("afpacket", "2");
}

#[test]
fn pcap_replay_equals_analyze() {
    need_root!();
    replay_matches_analyze("pcap", "2");
}

fn rules_file(d: &Path, name: &str, patterns: &[&str], valid: bool) -> PathBuf {
    let mut s =
        String::from("[vendor]\nid = \"kaspersky\"\nname = \"Kaspersky Lab\"\ncutoff = \"2000-01-01T00:00:00Z\"\n");
    for (i, p) in patterns.iter().enumerate() {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"t{i}\"\ncategory = \"{}\"\nmatch = \"exact\"\npattern = \"{p}\"\n",
            if valid { "update" } else { "nonsense" }
        ));
    }
    let p = d.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

fn domains(events: &Path) -> std::collections::BTreeSet<String> {
    json_lines(events).iter().map(|e| e["domain"].as_str().unwrap().to_string()).collect()
}

#[test]
fn sighup_reloads_valid_rules_and_keeps_old_ones_on_error() {
    need_root!();
    let d = tmpdir("live-hup");
    let ns = Netns::new("hup");
    let rules = rules_file(&d, "rules.toml", &["ds.kaspersky.com"], true);
    let ev = d.join("events.json");
    let live =
        Live::start(&ns, &d, &["--rules", rules.to_str().unwrap(), "--events", ev.to_str().unwrap(), "--workers", "2"]);
    let dns = [captures().join("dns-udp.pcap")];
    ns.replay(&dns, &[]);
    events_at_least(&ev, 1);
    assert_eq!(domains(&ev), ["ds.kaspersky.com".to_string()].into());

    // A valid new file: the names it adds match from now on.
    rules_file(&d, "rules.toml", &["ds.kaspersky.com", "opentip.kaspersky.com"], true);
    live.signal(libc::SIGHUP);
    live.wait_stderr("rules reloaded: 2 rules", Duration::from_secs(5));
    ns.replay(&dns, &[]);
    events_at_least(&ev, 3);
    assert_eq!(domains(&ev), ["ds.kaspersky.com".to_string(), "opentip.kaspersky.com".to_string()].into());

    // An invalid file: rejected with a clear message, the old rules keep matching.
    rules_file(&d, "rules.toml", &["ds.kaspersky.com", "dnl-01.geo.kaspersky.com"], false);
    let before = json_lines(&ev).len();
    live.signal(libc::SIGHUP);
    live.wait_stderr("rules NOT reloaded", Duration::from_secs(5));
    assert!(live.stderr().contains("rules.toml:"), "the error names the file: {}", live.stderr());
    ns.replay(&dns, &[]);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&ev).len(), before + 2, "the old rules still match both names");
    assert!(!domains(&ev).contains("dnl-01.geo.kaspersky.com"));
}

#[test]
fn clear_errors_for_missing_interface_and_missing_privilege() {
    need_root!();
    let o = run(&["live", "-i", "does-not-exist0", "--duration", "1s"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no such interface: does-not-exist0"), "{err}");
    for engine in ["afpacket", "pcap"] {
        // As nobody, without any capability.
        let o = tool("setpriv", "util-linux")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
            .arg(env!("CARGO_BIN_EXE_kavwatch"))
            .args(["live", "-i", "lo", "--engine", engine, "--duration", "1s"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{engine}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("CAP_NET_RAW") && err.lines().count() == 1, "{engine}: {err}");
    }
    let o = run(&["live", "-i", "lo", "--bpf", "port nonsense", "--duration", "1s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad BPF filter"), "{}", stderr(&o));
}

#[test]
fn interface_down_then_gone_then_back() {
    need_root!();
    let d = tmpdir("live-gone");
    let ns = Netns::new("gone");
    ns.ip(&["link", "set", "c0", "down"]);
    let o = ns.exec(env!("CARGO_BIN_EXE_kavwatch")).args(["live", "-i", "c0", "--duration", "1s"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("interface c0 is down"), "{}", stderr(&o));
    ns.ip(&["link", "set", "c0", "up"]);

    // nobody must be able to rewrite the report there.
    sh(Command::new("chmod").arg("777").arg(&d));
    let (ev, rep) = (d.join("events.json"), d.join("report.json"));
    let live = Live::start(
        &ns,
        &d,
        &[
            "--events",
            ev.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--user",
            "nobody",
            "--cutoff",
            "2000-01-01T00:00:00Z",
        ],
    );
    // Dropped to nobody after opening the socket.
    let status = std::fs::read_to_string(format!("/proc/{}/status", live.child.id())).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:\t65534")), "{status}");
    replay_dns_udp(&ns, &ev);
    // The interface goes away: kavwatch says so, keeps its state and keeps running.
    ns.ip(&["link", "del", "r0"]);
    live.wait_stderr("trying to open it again", Duration::from_secs(5));
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    // Its state was kept: the final report still has the hosts seen before.
    assert!(!json(&rep)["hosts"].as_array().unwrap().is_empty());
}

/// Replays dns-udp.pcap, which gives 7 events with the shipped rules, and waits for them.
fn replay_dns_udp(ns: &Netns, ev: &Path) {
    ns.replay(&[captures().join("dns-udp.pcap")], &[]);
    assert_eq!(events_at_least(ev, 7).len(), 7);
}

#[test]
fn a_vanished_interface_is_reopened_and_capture_goes_on() {
    need_root!();
    let d = tmpdir("live-reopen");
    let ns = Netns::new("reopen");
    let ev = d.join("events.json");
    let live = Live::start(&ns, &d, &["--events", ev.to_str().unwrap(), "--cutoff", "2000-01-01T00:00:00Z"]);
    replay_dns_udp(&ns, &ev);
    ns.ip(&["link", "del", "r0"]);
    live.wait_stderr("trying to open it again", Duration::from_secs(5));
    ns.ip(&["link", "add", "r0", "type", "veth", "peer", "name", "c0"]);
    ns.ip(&["link", "set", "r0", "up"]);
    ns.ip(&["link", "set", "c0", "up"]);
    live.wait_stderr("capturing again", Duration::from_secs(10));
    ns.replay(&[captures().join("dns-udp.pcap")], &[]);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&ev).len(), 2 * 7, "{err}");
}

/// Runs `f` on a thread that has entered the namespace: processes it starts (rsyslogd, kavwatch,
/// tcpreplay) and its own sockets are then inside.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on an open namespace file, for this thread only.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) }, 0);
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn live_alerts_survive_a_collector_restart_mid_stream() {
    need_root!();
    let d = tmpdir("live-alerts");
    let ns = Netns::new("alerts");
    let name = ns.name.clone();
    let (ids_file, tcp_ids, tls_ids, report, err) = in_netns(&ns, move || {
        let ns = Netns { name };
        let mut syslog = common::rsyslog::Rsyslog::start(&d.join("rsyslog"));
        let (alerts, rep) = (d.join("alerts.json"), d.join("report.json"));
        let tcp = format!("syslog+tcp://127.0.0.1:{}", syslog.tcp_port());
        let tls = format!("syslog+tls://127.0.0.1:{}", syslog.tls_port());
        let file = format!("file:{}", alerts.display());
        let (ca, spool) = (syslog.ca_path().display().to_string(), d.join("spool").display().to_string());
        let args = [
            "--alert",
            &tcp,
            "--alert",
            &tls,
            "--alert",
            &file,
            "--alert-ca",
            &ca,
            "--spool-dir",
            &spool,
            "--alert-all",
            "--alert-interval",
            "0",
            "--report",
            rep.to_str().unwrap(),
            "--stats-interval",
            "1s",
        ];
        let live = Live::start(&ns, &d, &args);
        // 418 packets at 60 per second: a stream of 38 alerts over 7 s; the collector is down for 2 s of it.
        let replay = {
            let name = ns.name.clone();
            std::thread::spawn(move || {
                let ns = Netns { name };
                ns.replay(&[captures().join("demo.pcapng")], &["--pps", "60"]);
                std::mem::forget(ns);
            })
        };
        std::thread::sleep(Duration::from_secs(2));
        syslog.stop();
        std::thread::sleep(Duration::from_secs(2));
        syslog.restart();
        replay.join().unwrap();
        let (code, err) = live.stop();
        assert_eq!(code, 0, "{err}");
        let ids = |l: &str, m: &[common::rsyslog::Received]| -> Vec<String> {
            m.iter()
                .filter(|r| r.listener == l)
                .map(|r| r.structured_data.split("id=\"").nth(1).unwrap().split('"').next().unwrap().to_string())
                .collect()
        };
        let want: Vec<String> = json_lines(&alerts).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        let m = syslog.wait_for(Duration::from_secs(10), |m| {
            let (t, s) = (ids("tcp", m), ids("tls", m));
            want.iter().all(|w| t.contains(w) && s.contains(w))
        });
        std::mem::forget(ns);
        (want, ids("tcp", &m), ids("tls", &m), json(&rep), err)
    });
    // One alert per observation (38), but for one that came in behind a later one from the other worker and
    // was folded into the next alert, or was still pending at the stop.
    assert!(ids_file.len() >= 34, "{} alerts: {err}", ids_file.len());
    for (l, got) in [("tcp", &tcp_ids), ("tls", &tls_ids)] {
        let missing: Vec<&String> = ids_file.iter().filter(|w| !got.contains(w)).collect();
        assert!(missing.is_empty(), "{l}: {} alerts never arrived: {missing:?}\n{err}", missing.len());
        // Duplicates only as the same alert again.
        assert!(got.iter().all(|g| ids_file.contains(g)), "{l}: an id that was never raised");
    }
    let dests = &report["stats"]["alerts"]["destinations"];
    for (url, d) in dests.as_object().unwrap() {
        if url.starts_with("syslog") {
            assert!(d["reconnects"].as_u64().unwrap() >= 1, "{url}: {d}");
            assert!(d["spooled"].as_u64().unwrap() + d["resent"].as_u64().unwrap() > 0, "{url}: {d}");
            assert_eq!(d["waiting"], 0, "{url}: {d}");
        }
    }
    assert!(err.contains(&format!("alerts {} raised", ids_file.len())), "the stats line counts alerts: {err}");
}

#[test]
fn bpf_filters_in_the_kernel_with_both_engines() {
    need_root!();
    let d = tmpdir("live-bpf");
    let ns = Netns::new("bpf");
    for engine in ["afpacket", "pcap"] {
        let (ev, rep) = (d.join(format!("{engine}.json")), d.join(format!("{engine}-report.json")));
        let live = Live::start(
            &ns,
            &d,
            &[
                "--engine",
                engine,
                "--bpf",
                "udp port 53",
                "--events",
                ev.to_str().unwrap(),
                "--report",
                rep.to_str().unwrap(),
            ],
        );
        // HTTP and TLS name Kaspersky servers too, but the filter lets only DNS over UDP through.
        ns.replay(&[captures().join("dns-udp.pcap"), captures().join("http.pcap"), captures().join("tls13.pcap")], &[]);
        let (code, err) = live.stop();
        assert_eq!(code, 0, "{err}");
        let events = json_lines(&ev);
        assert!(!events.is_empty(), "{engine}");
        assert!(events.iter().all(|e| e["event_type"] == "dns" && e["proto"] == "UDP"), "{engine}: {events:?}");
        let packets = json(&rep)["stats"]["packets"].as_u64().unwrap();
        // tcpdump -r captures/dns-udp.pcap "udp port 53" counts 22 (the other 8 are ICMPv6).
        assert_eq!(packets, 22, "{engine}: only the DNS packets of dns-udp.pcap pass the filter");
    }
}

/// The packet of death between ordinary Kaspersky traffic, and a planted parser panic: the sensor
/// keeps running on both engines, reports the traffic after them, and counts the panic once.
fn survives_the_packet_of_death(engine: &str) {
    let d = tmpdir(&format!("live-death-{engine}"));
    let ns = Netns::new(&format!("death-{engine}"));
    let (ev, rep) = (d.join("events.json"), d.join("report.json"));
    // A DNS query carrying the planted marker, after the two crash packets.
    let mut death = packet_of_death([10, 0, 0, 5], AFTER_US);
    let planted = dns_query(7, b"planted-marker.example", 1);
    death.push((AFTER_US + 4000, udp_frame([10, 0, 0, 5], [192, 0, 2, 53], 40002, 53, &planted)));
    // And one that makes its worker panic outside the per-packet work: the worker is restarted.
    let restart = dns_query(8, b"restart-marker.example", 1);
    death.push((AFTER_US + 5000, udp_frame([10, 0, 0, 5], [192, 0, 2, 53], 40003, 53, &restart)));
    let death_pcap = d.join("death.pcap");
    std::fs::write(&death_pcap, pcap(1, &death)).unwrap();
    let live = Live::start_env(
        &ns,
        &d,
        &["--engine", engine, "--workers", "2", "--events", ev.to_str().unwrap(), "--report", rep.to_str().unwrap()],
        &[
            ("KAVWATCH_TEST_PANIC", "planted-marker"),
            ("KAVWATCH_TEST_PANIC_WORKER", "restart-marker"),
            ("STATE_DIRECTORY", d.join("state").to_str().unwrap()),
        ],
    );
    replay_dns_udp(&ns, &ev);
    ns.replay(std::slice::from_ref(&death_pcap), &[]);
    assert_eq!(events_at_least(&ev, 9).len(), 9, "the crash ClientHello over TCP and QUIC gives its two events");
    ns.replay(&[captures().join("dns-udp.pcap")], &[]);
    assert_eq!(events_at_least(&ev, 16).len(), 16, "the traffic after it is still seen: {}", live.stderr());
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("kavwatch: bug: a panic in the dns parser").count(), 1, "one line per kind: {err}");
    assert_eq!(err.matches("kavwatch: bug: a panic in a worker outside").count(), 1, "{err}");
    let r = json(&rep);
    assert_eq!(r["stats"]["parser_panics"], serde_json::json!({"total": 1, "dns": 1}), "{}", r["stats"]);
    assert_eq!(r["stats"]["worker_restarts"], 1, "{}", r["stats"]);
    let dead: Vec<_> = json_lines(&ev).into_iter().filter(|e| e["host"] == "10.0.0.5").collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
}

#[test]
fn afpacket_survives_the_packet_of_death() {
    need_root!();
    survives_the_packet_of_death("afpacket");
}

#[test]
fn pcap_survives_the_packet_of_death() {
    need_root!();
    survives_the_packet_of_death("pcap");
}

/// A capture filter applies to the outer packet, as in tcpdump: on a VXLAN feed, `udp dst port
/// 4789` keeps everything inside the tunnel, and a filter on the inner traffic keeps nothing.
#[test]
fn bpf_filters_see_the_outer_packet_of_a_tunnel() {
    need_root!();
    let d = tmpdir("live-bpf-tunnel");
    let ns = Netns::new("bpftun");
    let vxlan = captures().join("encap/vxlan-real.pcap");
    let o = run(&["analyze", "-q", "--cutoff", "2000-01-01T00:00:00Z", "--events", "-", vxlan.to_str().unwrap()]);
    let want = stdout(&o).lines().count();
    assert!(want >= 5, "vxlan-real.pcap gives {want} events");
    for engine in ["afpacket", "pcap"] {
        for (filter, n) in [("udp dst port 4789", want), ("tcp port 80 or udp port 53", 0)] {
            let ev = d.join(format!("{engine}-{n}.json"));
            let args = [
                "--engine",
                engine,
                "--bpf",
                filter,
                "--cutoff",
                "2000-01-01T00:00:00Z",
                "--events",
                ev.to_str().unwrap(),
            ];
            let live = Live::start(&ns, &d, &args);
            ns.replay(std::slice::from_ref(&vxlan), &[]);
            if n > 0 {
                events_at_least(&ev, n);
            }
            let (code, err) = live.stop();
            assert_eq!(code, 0, "{err}");
            let got = json_lines(&ev);
            assert_eq!(got.len(), n, "{engine}, --bpf {filter:?}: {got:?}");
            assert!(got.iter().all(|e| e["tunnel"][0]["type"] == "vxlan"), "{engine}: {got:?}");
        }
    }
}
