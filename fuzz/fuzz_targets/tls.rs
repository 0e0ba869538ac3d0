#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ch) = kavwatch::proto::tls::parse_client_hello(data) {
        if let Some(sni) = ch.sni {
            assert!(sni.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
    }
});
