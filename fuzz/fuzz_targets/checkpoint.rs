#![no_main]
//! The checkpoint file of `live` (`state`): header, hash, payload, and the restore of what decodes. The body is `kavwatch::fuzzing::checkpoint`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::checkpoint(data));
