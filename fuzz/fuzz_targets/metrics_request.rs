#![no_main]
//! A client's request to the `live --metrics` server: head reading, routing, label escaping. The body is `kavwatch::fuzzing::metrics_request`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::metrics_request(data));
