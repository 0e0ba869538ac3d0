#![no_main]
//! QUIC client Initials. The bytes go in as a datagram (headers, coalescing, lengths, header
//! protection; random bytes never pass the AEAD check), then as a decrypted Initial payload
//! (frames), whose CRYPTO fragments go to the assembler and on to the ClientHello parser, so
//! that every stage meets hostile input.
use libfuzzer_sys::fuzz_target;

use kavwatch::proto::{quic, tls};

fuzz_target!(|data: &[u8]| {
    let _ = quic::is_quic_long_header_initial(data);
    if let Ok(d) = quic::parse_datagram(data) {
        // What is kept is the datagram's own bytes, never more.
        assert!(d.initials.iter().map(|p| p.payload().len()).sum::<usize>() <= data.len());
    }
    if let Ok(frames) = quic::parse_frames(data) {
        let mut asm = quic::CryptoAssembler::new();
        for (offset, range) in &frames.crypto {
            let _ = asm.add(*offset, data.get(range.clone()).expect("CRYPTO data inside the payload"));
        }
        assert!(asm.contiguous().len() <= quic::MAX_CRYPTO_BYTES);
        if let Ok(Some(msg)) = asm.client_hello() {
            let _ = tls::parse_client_hello(&quic::as_tls_record(msg).unwrap());
        }
    }
});
