#![no_main]
//! UDP datagrams between a few hosts through a worker, the sink's pass, hosts and events. The body is `kavwatch::fuzzing::sink`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::sink(data));
