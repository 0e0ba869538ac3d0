//! The committed fuzz corpus, replayed under `cargo test`: every file of `fuzz/corpus/NAME/`
//! through the same function the fuzz target NAME runs (`kavwatch::fuzzing::NAME`, or the
//! differential checks in `fuzz/diff/`). A panic fails the test and names the file. Each corpus
//! directory must hold files, and each directory must be replayed here: a corpus that is never
//! run, or a replay of nothing, would pass whatever the parsers do.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

#[path = "../fuzz/diff/dns_name_diff.rs"]
mod dns_name_diff;
#[path = "../fuzz/diff/tls_diff.rs"]
mod tls_diff;

/// Every fuzz target whose corpus is replayed below.
const REPLAYED: [&str; 14] = [
    "dns",
    "tls",
    "http",
    "capture",
    "tcp_stream",
    "dhcp",
    "quic",
    "sink",
    "tls_diff",
    "dns_name_diff",
    "decap",
    "metrics_request",
    "checkpoint",
    "fleet_message",
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn replay(name: &str, target: fn(&[u8])) {
    let dir = corpus_root().join(name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs: the replay would test nothing", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if panic::catch_unwind(|| target(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {name} panicked on {} of {} inputs: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn every_corpus_directory_is_replayed() {
    let mut dirs: Vec<String> = fs::read_dir(corpus_root())
        .expect("fuzz/corpus")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .filter(|d| !REPLAYED.contains(&d.as_str()))
        .collect();
    dirs.sort();
    assert!(dirs.is_empty(), "corpus directories without a replay test here: {dirs:?}");
}

#[test]
fn fleet_message() {
    replay("fleet_message", kavwatch::fuzzing::fleet_message);
}

#[test]
fn decap() {
    replay("decap", kavwatch::fuzzing::decap);
}

#[test]
fn dns() {
    replay("dns", kavwatch::fuzzing::dns);
}

#[test]
fn tls() {
    replay("tls", kavwatch::fuzzing::tls);
}

#[test]
fn http() {
    replay("http", kavwatch::fuzzing::http);
}

#[test]
fn capture() {
    replay("capture", kavwatch::fuzzing::capture);
}

#[test]
fn tcp_stream() {
    replay("tcp_stream", kavwatch::fuzzing::tcp_stream);
}

#[test]
fn dhcp() {
    replay("dhcp", kavwatch::fuzzing::dhcp);
}

#[test]
fn quic() {
    replay("quic", kavwatch::fuzzing::quic);
}

#[test]
fn sink() {
    replay("sink", kavwatch::fuzzing::sink);
}

#[test]
fn tls_diff() {
    replay("tls_diff", tls_diff::tls_diff);
}

#[test]
fn dns_name_diff() {
    replay("dns_name_diff", dns_name_diff::dns_name_diff);
}

#[test]
fn metrics_request() {
    replay("metrics_request", kavwatch::fuzzing::metrics_request);
}

#[test]
fn checkpoint() {
    replay("checkpoint", kavwatch::fuzzing::checkpoint);
}
