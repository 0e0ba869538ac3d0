#![no_main]
//! Crafted TCP segments of one flow through a worker: reassembly and its state machine. The body is `kavwatch::fuzzing::tcp_stream`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::tcp_stream(data));
