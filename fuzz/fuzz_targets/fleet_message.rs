#![no_main]
//! What a fleet collector reads from NATS: observations, statuses, spool lines, checkpoints. The body is `kavwatch::fuzzing::fleet_message`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::fleet_message(data));
