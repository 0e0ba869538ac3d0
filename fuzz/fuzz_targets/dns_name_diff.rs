#![no_main]
//! Differential target: see diff/dns_name_diff.rs, which tests/fuzz_corpus.rs replays the corpus through too.
use libfuzzer_sys::fuzz_target;

#[path = "../diff/dns_name_diff.rs"]
mod dns_name_diff;

fuzz_target!(|data: &[u8]| dns_name_diff::dns_name_diff(data));
