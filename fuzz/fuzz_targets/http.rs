#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = kavwatch::proto::http::parse_request(data) {
        assert!(r.header_len <= data.len());
    }
});
