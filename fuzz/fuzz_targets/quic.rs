#![no_main]
//! QUIC client Initials: datagrams, then decrypted payloads, on to the ClientHello parser. The body is `kavwatch::fuzzing::quic`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::quic(data));
