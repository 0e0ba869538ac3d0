#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = kavwatch::proto::dns::parse(data) {
        // Names that come out are printable ASCII, whatever went in.
        for q in &m.questions {
            assert!(q.name.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
    }
});
