#![no_main]
//! A UDP payload as DHCPv4 and as DHCPv6. The body is `kavwatch::fuzzing::dhcp`, which tests/fuzz_corpus.rs replays the corpus through.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kavwatch::fuzzing::dhcp(data));
