#![no_main]
//! Differential target: see diff/tls_diff.rs, which tests/fuzz_corpus.rs replays the corpus through too.
use libfuzzer_sys::fuzz_target;

#[path = "../diff/tls_diff.rs"]
mod tls_diff;

fuzz_target!(|data: &[u8]| tls_diff::tls_diff(data));
