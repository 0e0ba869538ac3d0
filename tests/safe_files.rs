//! Files a root sensor writes in a directory others can write to: a symbolic link planted at an
//! output's name or at any temporary name the writer could use is never followed (the file it
//! points to stays as it was), outputs are regular files of mode 0640; the live events file
//! rotates by size between whole lines and is reopened on SIGHUP (logrotate).
//! The live tests need root, iproute2 and tcpreplay (a veth pair in a network namespace).

mod common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

const VICTIM_TEXT: &str = "the victim: root's file that no output may touch\n";

/// A file outside the output directory, which the planted links point to.
fn victim(d: &Path) -> PathBuf {
    let v = d.join("victim");
    std::fs::write(&v, VICTIM_TEXT).unwrap();
    v
}

fn assert_victim_untouched(v: &Path) {
    assert_eq!(
        std::fs::read_to_string(v).unwrap(),
        VICTIM_TEXT,
        "a planted link was followed: {} changed",
        v.display()
    );
}

/// kavwatch with umask 022, so new files must come out exactly 0640.
fn kavwatch() -> Command {
    let mut c = bin();
    // SAFETY: umask is async-signal-safe and touches only the child's mask.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    c
}

/// A regular file (not a link), mode 0640.
fn assert_safe_output(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.file_type().is_file(), "{} is not a regular file: {:?}", p.display(), m.file_type());
    assert_eq!(m.mode() & 0o7777, 0o640, "{}: mode {:o}", p.display(), m.mode() & 0o7777);
    assert!(m.len() > 0, "{} is empty", p.display());
}

/// The pids the next processes will get, in order (the kernel hands them out upwards and wraps
/// past pid_max to 300).
fn next_pids(n: usize) -> Vec<u32> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().parse::<u32>().unwrap();
    let (last, max) = (read("/proc/sys/kernel/ns_last_pid"), read("/proc/sys/kernel/pid_max"));
    (1..=n as u32).map(|i| if last + i < max { last + i } else { 300 + (last + i - max) }).collect()
}

/// Plants, for every output, a link to the victim at the output's own name and at every name
/// the old writer could take for its temporary file (`PATH.tmp.<pid>` for the next pids), runs
/// kavwatch, and checks its pid was among those planted (so the links were really in the way).
fn run_with_planted_links(outputs: &[&Path], victim: &Path, args: &[&str]) -> Output {
    let pids = next_pids(3000);
    for o in outputs {
        let _ = std::fs::remove_file(o);
        symlink(victim, o).unwrap();
        for pid in &pids {
            let mut t = o.as_os_str().to_owned();
            t.push(format!(".tmp.{pid}"));
            let _ = std::fs::remove_file(&t);
            symlink(victim, &t).unwrap();
        }
    }
    let child = kavwatch().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(pids.contains(&pid), "kavwatch got pid {pid}, outside the {} planted; run the test again", pids.len());
    out
}

#[test]
fn links_planted_at_outputs_and_temporary_names_are_not_followed() {
    let root = tmpdir("safe-planted");
    let v = victim(&root);
    let d = root.join("shared");
    std::fs::create_dir(&d).unwrap();
    let (rep, ev) = (d.join("r.json"), d.join("e.json"));
    // The report's name is a link (replaced, not followed); the events file is created fresh
    // (links at the events path are refused: see the next test), links at its temporary names.
    let demo = captures().join("demo.pcapng");
    let o = run_with_planted_links(
        &[&rep],
        &v,
        &["analyze", "-q", demo.to_str().unwrap(), "--report", rep.to_str().unwrap(), "--events", ev.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_victim_untouched(&v);
    assert_safe_output(&rep);
    assert_safe_output(&ev);
    assert!(json(&rep)["hosts"].as_array().is_some_and(|h| !h.is_empty()));
    assert!(!json_lines(&ev).is_empty());

    // report merge to HTML and JSON, links at the outputs and at their old temporary names.
    for name in ["m.html", "m.json", "m.csv"] {
        let out = d.join(name);
        let o = run_with_planted_links(
            &[&out],
            &v,
            &["report", "merge", rep.to_str().unwrap(), rep.to_str().unwrap(), "-o", out.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_victim_untouched(&v);
        assert_safe_output(&out);
    }
    assert!(std::fs::read_to_string(d.join("m.html")).unwrap().contains("<html"));
    // No temporary file is left behind: only the outputs and the planted links.
    for e in std::fs::read_dir(&d).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        let t = e.file_type().unwrap();
        assert!(t.is_symlink() || ["r.json", "e.json", "m.html", "m.json", "m.csv"].contains(&n.as_str()), "left: {n}");
    }
}

#[test]
fn a_link_at_the_events_or_alert_file_path_is_refused() {
    let root = tmpdir("safe-refused");
    let v = victim(&root);
    let link = root.join("link.json");
    symlink(&v, &link).unwrap();
    let demo = captures().join("demo.pcapng");
    let alert = format!("file:{}", link.display());
    let state = root.join("state");
    let cases: [Vec<&str>; 4] = [
        vec!["analyze", "-q", demo.to_str().unwrap(), "--events", link.to_str().unwrap()],
        vec!["analyze", "-q", demo.to_str().unwrap(), "--alert", &alert, "--state-dir", state.to_str().unwrap()],
        // live checks its outputs before it opens an interface: no root, no interface needed.
        vec!["live", "-i", "kw-no-such0", "--events", link.to_str().unwrap()],
        vec!["live", "-i", "kw-no-such0", "--alert", &alert, "--state-dir", state.to_str().unwrap()],
    ];
    for args in cases {
        let o = kavwatch().args(&args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one clear line, got: {err}");
        assert!(err.contains("link.json") && err.contains("symbolic link"), "{args:?}: {err}");
        assert_victim_untouched(&v);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
}

#[test]
fn the_alert_spool_is_private_and_its_planted_links_are_not_read() {
    // The spool directory is made 0750 and a link planted in it as a segment is neither read
    // (its lines would go to the collector) nor repaired in place (a segment not ending in a
    // newline is cut back to its last whole line): a TCP destination nobody listens on spools.
    let root = tmpdir("safe-spool");
    let v = root.join("victim");
    let secret = "root's secret, no newline at its end";
    std::fs::write(&v, secret).unwrap();
    let state = root.join("state");
    let spool = state.join("spool").join("syslog_tcp___127.0.0.1_9");
    let rep = root.join("r.json");
    let demo = captures().join("demo.pcapng");
    let args = [
        "analyze",
        "-q",
        demo.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--alert",
        "syslog+tcp://127.0.0.1:9",
        "--alert-all",
        "--alert-drain-timeout",
        "1s",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let o = kavwatch().args(args).output().unwrap();
    assert!(o.status.code().is_some_and(|c| c != 2), "{}", stderr(&o));
    for dir in [state.join("spool"), spool.clone()] {
        let mode = std::fs::metadata(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).mode() & 0o7777;
        assert_eq!(mode, 0o750, "{}: mode {mode:o}", dir.display());
    }
    let regular_lines = || -> u64 {
        let mut n = 0;
        for p in std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().path()) {
            if p.extension().is_some_and(|e| e == "spool") && std::fs::symlink_metadata(&p).unwrap().is_file() {
                assert_safe_output(&p);
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(!text.contains(secret), "{} holds the victim", p.display());
                n += text.lines().count() as u64;
            }
        }
        n
    };
    let waiting =
        |r: &serde_json::Value| r["stats"]["alerts"]["destinations"]["syslog+tcp://127.0.0.1:9"]["waiting"].as_u64();
    let first = regular_lines();
    assert!(first > 0, "nothing spooled");
    assert_eq!(waiting(&json(&rep)), Some(first));
    // A link planted as the oldest segment: skipped, not counted, not touched.
    symlink(&v, spool.join("00000000000000000000.spool")).unwrap();
    let o = kavwatch().args(args).output().unwrap();
    assert!(o.status.code().is_some_and(|c| c != 2), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), secret, "the spool followed a planted link");
    assert_eq!(waiting(&json(&rep)), Some(regular_lines()), "the planted segment was read");
}

// --- live: rotation and SIGHUP, on a veth pair in a namespace (root) ---

const DNS_EVENTS: usize = 7;

/// dns-udp.pcap (7 events with the shipped rules) `times` times.
fn replay_dns(ns: &Netns, times: usize) {
    ns.replay(&[captures().join("dns-udp.pcap")], &["--loop", &times.to_string()]);
}

/// `live` on c0 with every observation after the cutoff, files created under umask 022.
fn start_live(ns: &Netns, dir: &Path, args: &[&str]) -> Live {
    // SAFETY: umask has no preconditions; the modes asserted below assume 022 (root's default).
    unsafe { libc::umask(0o022) };
    let mut all = vec!["--cutoff", "2000-01-01T00:00:00Z"];
    all.extend_from_slice(args);
    Live::start(ns, dir, &all)
}

fn with_suffix(p: &Path, n: u32) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(".{n}"));
    s.into()
}

/// Every line of a file is whole JSON, and the file ends with a newline; the lines.
fn whole_json_lines(p: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(text.is_empty() || text.ends_with('\n'), "{} ends mid-line", p.display());
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: a cut line {l:?}: {e}", p.display())))
        .collect()
}

/// The events over PATH and PATH.1 ... PATH.max, and how many rotated files exist.
fn all_events(ev: &Path, max: u32) -> (Vec<serde_json::Value>, u32) {
    let mut all = whole_json_lines(ev);
    let mut files = 0;
    for n in 1..=max {
        let p = with_suffix(ev, n);
        if p.exists() {
            files += 1;
            all.extend(whole_json_lines(&p));
        }
    }
    (all, files)
}

/// Waits (at most 15 s) until `f` is true.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(15), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn live_events_rotate_between_whole_lines_and_keep_n() {
    need_root!();
    let d = tmpdir("safe-rotate");
    let v = victim(&d);
    let ns = Netns::new("rot");
    let (ev, rep) = (d.join("events.json"), d.join("report.json"));
    // Keep enough rotated files that none is lost: every event must be found, in whole lines.
    let live = start_live(
        &ns,
        &d,
        &[
            "--events",
            ev.to_str().unwrap(),
            "--events-max-bytes",
            "1500",
            "--events-keep",
            "200",
            "--report",
            rep.to_str().unwrap(),
        ],
    );
    // The live report is written under a temporary name: the old writer's name is a link now.
    let old_tmp = PathBuf::from(format!("{}.tmp.{}", rep.display(), live.child.id()));
    symlink(&v, &old_tmp).unwrap();
    let rounds = 6;
    for _ in 0..rounds {
        replay_dns(&ns, 1);
    }
    wait_for("all events", || all_events(&ev, 200).0.len() >= rounds * DNS_EVENTS);
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let (events, files) = all_events(&ev, 200);
    assert_eq!(events.len(), rounds * DNS_EVENTS, "{err}");
    assert!(files >= 3, "only {files} rotated files for {} events of 1500-byte files", events.len());
    for n in 0..=files {
        let p = if n == 0 { ev.clone() } else { with_suffix(&ev, n) };
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= 1500, "{}: {size} bytes past --events-max-bytes", p.display());
        assert_safe_output(&p);
    }
    let stats = &json(&rep)["stats"]["events_file"];
    assert_eq!(stats["rotations"], files as u64, "{stats}");
    let bytes: u64 = (0..=files)
        .map(|n| std::fs::metadata(if n == 0 { ev.clone() } else { with_suffix(&ev, n) }).unwrap().len())
        .sum();
    assert_eq!(stats["bytes"], bytes, "{stats}");
    assert_victim_untouched(&v);
    assert_safe_output(&rep);
    assert!(std::fs::symlink_metadata(&old_tmp).unwrap().file_type().is_symlink());

    // --events-keep 2: PATH, PATH.1, PATH.2 and nothing more, still whole lines.
    let ev2 = d.join("events2.json");
    let live =
        start_live(&ns, &d, &["--events", ev2.to_str().unwrap(), "--events-max-bytes", "1500", "--events-keep", "2"]);
    for _ in 0..rounds {
        replay_dns(&ns, 1);
    }
    wait_for("rotations", || with_suffix(&ev2, 2).exists());
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    let (events, files) = all_events(&ev2, 50);
    assert_eq!(files, 2, "--events-keep 2 kept {files}");
    assert!(events.len() < rounds * DNS_EVENTS && !events.is_empty(), "{} events", events.len());
}

#[test]
fn sighup_reopens_the_events_and_alert_files_after_logrotate_moved_them() {
    need_root!();
    let d = tmpdir("safe-hup");
    let ns = Netns::new("hup");
    let (ev, alerts) = (d.join("events.json"), d.join("alerts.json"));
    let alert = format!("file:{}", alerts.display());
    let live = start_live(
        &ns,
        &d,
        &[
            "--events",
            ev.to_str().unwrap(),
            "--alert",
            &alert,
            "--alert-all",
            "--alert-interval",
            "1s",
            "--state-dir",
            d.join("state").to_str().unwrap(),
        ],
    );
    replay_dns(&ns, 1);
    wait_for("the first events", || std::fs::read_to_string(&ev).unwrap_or_default().lines().count() >= DNS_EVENTS);
    wait_for("the first alerts", || std::fs::metadata(&alerts).is_ok_and(|m| m.len() > 0));
    std::thread::sleep(Duration::from_millis(1500));
    // What logrotate does without copytruncate: rename, then tell the daemon.
    let (ev_old, alerts_old) = (d.join("events.json.1"), d.join("alerts.json.1"));
    std::fs::rename(&ev, &ev_old).unwrap();
    std::fs::rename(&alerts, &alerts_old).unwrap();
    let (ev_before, alerts_before) = (std::fs::read(&ev_old).unwrap(), std::fs::read_to_string(&alerts_old).unwrap());
    live.signal(libc::SIGHUP);
    wait_for("new files at the paths", || ev.exists() && alerts.exists());
    assert!(!live.stderr().contains("NOT reopened"), "{}", live.stderr());
    replay_dns(&ns, 1);
    wait_for("the new events", || std::fs::read_to_string(&ev).unwrap_or_default().lines().count() >= DNS_EVENTS);
    wait_for("the new alerts", || std::fs::metadata(&alerts).is_ok_and(|m| m.len() > 0));
    let (code, err) = live.stop();
    assert_eq!(code, 0, "{err}");
    // The moved files are intact and got nothing more; the new ones have the new lines.
    assert_eq!(std::fs::read(&ev_old).unwrap(), ev_before, "the renamed events file changed after SIGHUP");
    assert_eq!(std::fs::read_to_string(&alerts_old).unwrap(), alerts_before);
    assert_eq!(whole_json_lines(&ev_old).len(), DNS_EVENTS);
    assert_eq!(whole_json_lines(&ev).len(), DNS_EVENTS, "{err}");
    assert!(!whole_json_lines(&alerts_old).is_empty());
    assert!(!whole_json_lines(&alerts).is_empty());
    assert_safe_output(&ev);
    assert_safe_output(&alerts);
}
