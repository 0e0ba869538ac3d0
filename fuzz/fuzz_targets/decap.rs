#![no_main]
//! The decoder's layer chain: link types, tags, tunnels and overlays, on hostile frames
//! (the body is `kavwatch::fuzzing::decap`, replayed by `tests/fuzz_corpus.rs`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::decap(data));
