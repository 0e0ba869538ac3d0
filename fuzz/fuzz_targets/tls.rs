#![no_main]
//! The start of a client's TCP stream as a TLS ClientHello. The body is `kavwatch::fuzzing::tls`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::tls(data));
