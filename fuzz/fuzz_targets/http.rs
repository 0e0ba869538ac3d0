#![no_main]
//! The start of a client's TCP stream as an HTTP/1.x request. The body is `kavwatch::fuzzing::http`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::http(data));
