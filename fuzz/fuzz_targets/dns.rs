#![no_main]
//! A DNS message. The body is `kavwatch::fuzzing::dns`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::dns(data));
