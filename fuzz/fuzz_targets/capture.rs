#![no_main]
//! A whole capture file: reader, link layers, IP, fragments, TCP/UDP. The body is `kavwatch::fuzzing::capture`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::capture(data));
