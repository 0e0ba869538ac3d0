//! Archive scale: spilling to disk, decoder threads and several inputs at once give the same
//! events and report as one thread in memory; spill files never outlive the run; a spill
//! directory that cannot be used is one clear error (exit 2) with the report of what was read.
//!
//! The read-only and full directories are tmpfs mounts in a private mount namespace
//! (`unshare -m`), which needs root: CI runs as root.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `analyze` on `inputs` with `extra` options; returns (events, report) bytes and stderr.
fn analyze(
    dir: &Path,
    tag: &str,
    inputs: &[&Path],
    extra: &[&str],
    chunk: Option<usize>,
) -> (Vec<u8>, Vec<u8>, String) {
    let (e, r) = (dir.join(format!("{tag}.events")), dir.join(format!("{tag}.json")));
    let mut cmd = bin();
    cmd.arg("analyze").args(inputs).args(["--events", e.to_str().unwrap(), "--report", r.to_str().unwrap()]);
    cmd.args(extra);
    if let Some(n) = chunk {
        cmd.env("KAVWATCH_TEST_CHUNK_PACKETS", n.to_string());
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{tag}: {}", stderr(&o));
    (std::fs::read(&e).unwrap(), std::fs::read(&r).unwrap(), stderr(&o))
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Every way of reading: 1, 2 and 5 workers; the reader decoding, or 3 decoder threads with
/// chunks of 3 records (so that DNS answers, fragments and flows cross chunks and decoders);
/// in memory, or spilling after every few observations. All the same, byte for byte.
#[test]
fn spill_decoders_and_workers_give_the_same_output() {
    let d = tmpdir("archive-same");
    let spill = d.join("spill");
    std::fs::create_dir(&spill).unwrap();
    let caps = captures();
    let base = analyze(&d, "base", &[&caps], &["-q", "--workers", "1", "--decoders", "1"], None);
    assert!(base.0.len() > 10_000 && base.1.len() > 1000);
    for w in ["1", "2", "5"] {
        for (decoders, chunk) in [("1", None), ("3", Some(3))] {
            for budget in ["32M", "1K"] {
                let tag = format!("w{w}-d{decoders}-{budget}");
                let opts = ["--workers", w, "--decoders", decoders, "--memory-budget", budget, "--spill-dir"];
                let mut args: Vec<&str> = opts.to_vec();
                args.push(spill.to_str().unwrap());
                let (e, r, err) = analyze(&d, &tag, &[&caps], &args, chunk);
                assert!(e == base.0, "{tag}: events differ from one thread in memory");
                assert!(r == base.1, "{tag}: report differs from one thread in memory");
                // The small budget did spill, and nothing is left behind.
                assert_eq!(err.contains("observations waited on disk in"), budget == "1K", "{tag}: {err}");
                assert!(empty(&spill), "{tag}: spill files left behind");
            }
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Several inputs read at once (gzip among them, decompressed on its own thread) in the order
/// given, the same as one after another.
#[test]
fn several_inputs_at_once_in_their_order() {
    let d = tmpdir("archive-inputs");
    let c = captures();
    let inputs = [c.join("demo.pcapng"), c.join("mixed.pcap.gz"), c.join("fragments.pcap"), c.join("attribution.pcap")];
    let inputs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    let one = analyze(&d, "one", &inputs, &["-q", "--workers", "1", "--decoders", "1"], None);
    for (w, decoders) in [("2", "2"), ("4", "4")] {
        let many = analyze(&d, &format!("w{w}"), &inputs, &["-q", "--workers", w, "--decoders", decoders], Some(5));
        assert!(many.0 == one.0 && many.1 == one.1, "{w} workers, {decoders} decoders");
    }
    let report = json(&d.join("w4.json"));
    let packets: Vec<u64> =
        report["inputs"].as_array().unwrap().iter().map(|i| i["packets"].as_u64().unwrap()).collect();
    assert_eq!(packets.len(), 4);
    assert!(packets.iter().all(|&p| p > 0), "{packets:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Spill files are gone after an error in an input, and after SIGTERM in the middle of a run
/// (which still writes the report of what was read, and exits 128 + 15).
#[test]
fn spill_files_are_gone_after_an_error_and_after_sigterm() {
    let d = tmpdir("archive-cleanup");
    let spill = d.join("spill");
    std::fs::create_dir(&spill).unwrap();
    let spill_arg = spill.to_str().unwrap();

    // An error: a capture cut in the middle of a record, after one that spilled.
    let cut = d.join("cut.pcap");
    let whole = std::fs::read(captures().join("dns-udp.pcap")).unwrap();
    std::fs::write(&cut, &whole[..whole.len() - 10]).unwrap();
    let report = d.join("error.json");
    let o = run(&[
        "analyze",
        captures().to_str().unwrap(),
        cut.to_str().unwrap(),
        "--memory-budget",
        "1K",
        "--spill-dir",
        spill_arg,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("observations waited on disk"), "{}", stderr(&o));
    assert!(json(&report)["stats"]["observations"].as_u64().unwrap() > 300);
    assert!(empty(&spill));

    // SIGTERM: the capture comes through a pipe that the test holds open, so the run is in the
    // middle when the signal comes, whatever this machine's speed.
    let report = d.join("term.json");
    let mut child = bin()
        .args(["analyze", "-", "--memory-budget", "1K", "--spill-dir", spill_arg, "--report"])
        .arg(&report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&pcap(1, &[])).unwrap();
    let names: Vec<String> = (0..64).map(|i| format!("dnl-{i:02}.geo.kaspersky.com")).collect();
    let mut records = Vec::new();
    for i in 0..20_000u32 {
        let q = dns_query(i as u16, names[i as usize % 64].as_bytes(), 1);
        let src = [10, 1, (i >> 8) as u8, i as u8];
        records
            .push((AFTER_US + i64::from(i) * 1000, udp_frame(src, [10, 0, 0, 53], 30000 + (i % 1000) as u16, 53, &q)));
    }
    stdin.write_all(&pcap(1, &records)[24..]).unwrap();
    stdin.flush().unwrap();
    // Wait until runs are open in the spill directory (unnamed files show as "DIR/#n (deleted)").
    let fds = format!("/proc/{}/fd", child.id());
    let started = Instant::now();
    let spilling = || {
        std::fs::read_dir(&fds).into_iter().flatten().flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with(spill.to_str().unwrap()))
        })
    };
    while !spilling() {
        assert!(started.elapsed() < Duration::from_secs(60), "no spill file was ever opened");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(empty(&spill), "runs are unnamed files, never visible in the directory");
    // SAFETY: kill with a valid pid and signal has no other preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // What comes after the signal is not read to its end.
    let _ = stdin.write_all(&pcap(1, &records)[24..]);
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by signal 15"), "{err}");
    let r = json(&report);
    let input = &r["inputs"][0];
    assert!(input["error"].as_str().unwrap().starts_with("interrupted after packet"), "{input}");
    let packets = r["stats"]["packets"].as_u64().unwrap();
    assert!((1024..40_000).contains(&packets), "{packets}");
    assert_eq!(input["packets"].as_u64().unwrap(), packets);
    assert!(empty(&spill));
    std::fs::remove_dir_all(&d).unwrap();
}

/// `unshare -m sh -c 'mount -t tmpfs -o OPTS none DIR && exec kavwatch ARGS'`.
fn in_private_mount(dir: &Path, opts: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = tool("unshare", "util-linux");
    cmd.args(["-m", "sh", "-c", "mount -t tmpfs -o \"$1\" none \"$2\" && shift 2 && exec \"$@\"", "sh", opts])
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_kavwatch"))
        .args(args);
    cmd.output().unwrap()
}

#[test]
fn a_read_only_or_full_spill_directory_is_one_clear_error() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs this as root)");
        return;
    }
    let d = tmpdir("archive-spill-dirs");
    let spill = d.join("spill");
    std::fs::create_dir(&spill).unwrap();
    let (caps, report) = (captures(), d.join("report.json"));
    let args = |budget: &'static str| -> Vec<String> {
        ["analyze", caps.to_str().unwrap(), "--spill-dir", spill.to_str().unwrap(), "--memory-budget", budget]
            .iter()
            .map(|s| s.to_string())
            .chain(["--report".to_string(), report.to_str().unwrap().to_string()])
            .collect()
    };

    // Read-only: refused before reading anything.
    let a = args("1K");
    let o = in_private_mount(&spill, "ro,size=1m", &a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("spill directory {}: Read-only file system", spill.display())), "{err}");
    assert!(!report.exists());

    // Full: 16 KB fill up at the first runs; reading stops, the report covers what was read.
    let o = in_private_mount(&spill, "size=16k", &a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("spill directory {}: No space left on device", spill.display())), "{err}");
    let r = json(&report);
    assert!(r["stats"]["packets"].as_u64().unwrap() > 0);
    assert!(r["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("No space left on device")));
    std::fs::remove_dir_all(&d).unwrap();
}
