#![no_main]
//! A whole capture file: reader, link layers, IP, fragments, TCP/UDP.
use libfuzzer_sys::fuzz_target;

use kavwatch::capture::file::CaptureReader;
use kavwatch::decode::{self, Outcome, defrag::Defragmenter};

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::from_reader("fuzz".into(), Box::new(std::io::Cursor::new(data.to_vec()))) else {
        return;
    };
    let mut defrag = Defragmenter::default();
    while let Ok(Some(p)) = r.next_packet() {
        if let Outcome::Fragment(f) = decode::decode(p.linktype, p.data) {
            if let Some(d) = defrag.add(&f, p.ts_ns) {
                let _ = decode::decode_reassembled(&f, &d);
            }
        }
    }
});
