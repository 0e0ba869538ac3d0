//! JA3 TLS client fingerprint (Salesforce), computed as Wireshark does (`tls.handshake.ja3_full`
//! and `tls.handshake.ja3`): `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`,
//! decimal values joined by '-', GREASE (RFC 8701) values removed from the ciphers, the extensions
//! and the curves, and the MD5 of that string in lowercase hex.

use std::fmt::Write as _;

use md5::{Digest, Md5};

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Appends the values joined by '-'. Writing to a String cannot fail.
fn push_list<T: Copy + std::fmt::Display>(out: &mut String, values: impl IntoIterator<Item = T>) {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        let _ = write!(out, "{v}");
    }
}

/// The JA3 string and its MD5 in lowercase hex, from the ClientHello's legacy_version (not
/// supported_versions), its cipher suites, its extension types in wire order, its
/// supported_groups (0x000a) and its ec_point_formats (0x000b). GREASE values may be passed in:
/// they are removed here.
pub fn ja3(
    legacy_version: u16,
    ciphers: &[u16],
    extensions: &[u16],
    groups: &[u16],
    point_formats: &[u8],
) -> (String, String) {
    // Each value is at most 5 digits and a '-': bounded by the inputs, which the caller bounds.
    let mut s =
        String::with_capacity(8 + 6 * (ciphers.len() + extensions.len() + groups.len()) + 4 * point_formats.len());
    let _ = write!(s, "{legacy_version},");
    push_list(&mut s, ciphers.iter().copied().filter(|v| !is_grease(*v)));
    s.push(',');
    push_list(&mut s, extensions.iter().copied().filter(|v| !is_grease(*v)));
    s.push(',');
    push_list(&mut s, groups.iter().copied().filter(|v| !is_grease(*v)));
    s.push(',');
    push_list(&mut s, point_formats.iter().copied());
    let mut hex = String::with_capacity(32);
    for b in Md5::digest(s.as_bytes()) {
        let _ = write!(hex, "{b:02x}");
    }
    (s, hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ClientHello of captures/tls12.pcap, tls13.pcap, tls-split.pcap and demo.pcapng, of
    /// four headless Chromium 148 connections (testdata/make-chromium-hello.sh: the only ones with
    /// GREASE) and of the client streams in src/proto/testdata and benches/data, with the JA3 that
    /// tshark 4.0 computed for it (testdata/extract-clienthellos.py): source, ja3_full, ja3, hex of
    /// the TLS records that carry it.
    const TSHARK: &str = include_str!("testdata/ja3-clienthellos.tsv");

    /// What JA3 needs from a ClientHello. Test-only: the parser the sensor uses is tls.rs.
    struct Fields {
        version: u16,
        ciphers: Vec<u16>,
        extensions: Vec<u16>,
        groups: Vec<u16>,
        point_formats: Vec<u8>,
    }

    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
    }

    fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (head, rest) = b.split_at(n);
        *b = rest;
        head
    }

    fn len16(b: &mut &[u8]) -> usize {
        let h = take(b, 2);
        u16::from_be_bytes([h[0], h[1]]) as usize
    }

    /// Concatenates the handshake records, then reads the ClientHello (RFC 8446 §4.1.2).
    fn client_hello_fields(mut records: &[u8]) -> Fields {
        let mut hs = Vec::new();
        while !records.is_empty() {
            let header = take(&mut records, 5);
            assert_eq!(header[0], 0x16, "handshake record");
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            hs.extend_from_slice(take(&mut records, len));
        }
        assert_eq!(hs[0], 1, "ClientHello");
        let mut b = &hs[4..4 + u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize];
        let version = len16(&mut b) as u16;
        take(&mut b, 32); // random
        let n = take(&mut b, 1)[0] as usize;
        take(&mut b, n); // session id
        let n = len16(&mut b);
        let ciphers = u16s(take(&mut b, n));
        let n = take(&mut b, 1)[0] as usize;
        take(&mut b, n); // compression methods
        let mut f = Fields { version, ciphers, extensions: vec![], groups: vec![], point_formats: vec![] };
        let n = len16(&mut b);
        let mut exts = take(&mut b, n);
        while !exts.is_empty() {
            let t = len16(&mut exts) as u16;
            let n = len16(&mut exts);
            let mut body = take(&mut exts, n);
            f.extensions.push(t);
            match t {
                0x000a => {
                    let n = len16(&mut body);
                    f.groups = u16s(take(&mut body, n));
                }
                0x000b => {
                    let n = take(&mut body, 1)[0] as usize;
                    f.point_formats = take(&mut body, n).to_vec();
                }
                _ => {}
            }
        }
        f
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn equals_tshark_for_every_real_client_hello() {
        let mut n = 0;
        for line in TSHARK.lines() {
            let [source, full, md5, records] = line.split('\t').collect::<Vec<_>>()[..] else {
                panic!("bad line {line}");
            };
            let f = client_hello_fields(&unhex(records));
            let got = ja3(f.version, &f.ciphers, &f.extensions, &f.groups, &f.point_formats);
            assert_eq!((got.0.as_str(), got.1.as_str()), (full, md5), "{source}");
            n += 1;
        }
        // 31 in the four captures, 4 from Chromium, 6 standalone client streams.
        assert_eq!(n, 41);
    }

    /// Chromium's ClientHello carries GREASE in the ciphers, extensions and groups: all removed,
    /// and nothing else (X25519MLKEM768 = 4588 stays).
    #[test]
    fn grease_is_removed_from_a_real_chromium_hello() {
        let line = TSHARK.lines().find(|l| l.starts_with("chromium-grease.pcap#stream0")).unwrap();
        let f = client_hello_fields(&unhex(line.rsplit('\t').next().unwrap()));
        assert!(is_grease(f.ciphers[0]) && f.extensions.iter().any(|e| is_grease(*e)));
        assert!(f.groups.iter().any(|g| is_grease(*g)));
        let (s, _) = ja3(f.version, &f.ciphers, &f.extensions, &f.groups, &f.point_formats);
        assert!(s.starts_with("771,4865-") && s.contains(",4588-29-23-24,"), "{s}");
    }

    #[test]
    fn known_vector_and_empty_lists() {
        // The example of Salesforce's JA3 README; both MD5s from coreutils' md5sum.
        let (s, h) =
            ja3(769, &[47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4], &[0, 10, 11], &[23, 24, 25], &[0]);
        assert_eq!(s, "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0");
        assert_eq!(h, "ada70206e40642a3e4461f35503241d5");
        // No extensions at all; a list of nothing but GREASE is empty too.
        let (s, h) = ja3(0x0301, &[0x0a0a, 47], &[], &[0xfafa], &[]);
        assert_eq!(s, "769,47,,,");
        assert_eq!(h, "b02be259814e870a469a20ce9b2a7900");
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a) && !is_grease(0x1a0a));
    }
}
