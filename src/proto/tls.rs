//! TLS ClientHello from the start of a client's TCP stream: SNI, offered versions, ALPN,
//! Encrypted Client Hello, JA4.
//!
//! The handshake message may span several TLS records, and the records several segments
//! (the caller reassembles TCP). tls-parser reads the ClientHello body and the contents of
//! single extensions; the extension list is walked here, because tls-parser's list parser
//! stops at the first extension whose contents it rejects and drops every extension after
//! it, the SNI included (see `tls_parser_list_parser_loses_sni_after_a_bad_extension`).

use sha2::{Digest, Sha256};
use thiserror::Error;
use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

use super::name::{escape_bytes, normalize_name};

const RECORD_MAX: usize = 18_432;
const HANDSHAKE_MAX: usize = 65_536;

const EXT_SNI: u16 = 0x0000;
const EXT_SIGALGS: u16 = 0x000d;
const EXT_GROUPS: u16 = 0x000a;
const EXT_POINT_FORMATS: u16 = 0x000b;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ECH: u16 = 0xfe0d;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub legacy_version: u16,
    /// From supported_versions, GREASE removed.
    pub supported_versions: Vec<u16>,
    pub alpn: Vec<String>,
    /// The Encrypted Client Hello extension (0xfe0d) is present: the SNI is then the outer,
    /// public name.
    pub ech: bool,
    /// TLS records the handshake message spanned.
    pub records: u16,
    /// What JA4 is computed from (on demand: most ClientHellos match no rule).
    ja4_parts: Ja4Parts,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
struct Ja4Parts {
    ciphers: Vec<u16>,
    extensions: Vec<u16>,
    sigalgs: Vec<u16>,
    /// supported_groups and ec_point_formats, for JA3.
    groups: Vec<u16>,
    point_formats: Vec<u8>,
    sni: bool,
    first_alpn: Option<Vec<u8>>,
}

impl ClientHello {
    /// Bytes it holds in memory (an estimate, for the spill budget).
    pub fn mem_bytes(&self) -> usize {
        let p = &self.ja4_parts;
        std::mem::size_of::<ClientHello>()
            + self.sni.as_ref().map_or(0, |s| s.len() + 16)
            + self.supported_versions.len() * 2
            + self.alpn.iter().map(|a| a.len() + 40).sum::<usize>()
            + (p.ciphers.len() + p.extensions.len() + p.sigalgs.len() + p.groups.len()) * 2
            + p.point_formats.len()
            + p.first_alpn.as_ref().map_or(0, |a| a.len() + 16)
            + 7 * 16
    }

    /// JA4 (FoxIO) for TLS over TCP: `t13d1516h2_<ciphers>_<extensions>`.
    pub fn ja4(&self) -> String {
        let p = &self.ja4_parts;
        ja4(self, &p.ciphers, &p.extensions, &p.sigalgs, p.sni, p.first_alpn.as_deref())
    }

    /// The cipher suites offered, in wire order, GREASE removed.
    pub fn ciphers(&self) -> &[u16] {
        &self.ja4_parts.ciphers
    }

    /// The extension types, in wire order, GREASE removed.
    pub fn extension_types(&self) -> &[u16] {
        &self.ja4_parts.extensions
    }

    /// JA3 as Wireshark computes it: (the string, its MD5 in hex).
    pub fn ja3(&self) -> (String, String) {
        let p = &self.ja4_parts;
        super::ja3::ja3(self.legacy_version, &p.ciphers, &p.extensions, &p.groups, &p.point_formats)
    }
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TlsError {
    #[error("incomplete: more bytes needed")]
    Incomplete,
    #[error("not TLS")]
    NotTls,
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// Cheap test of a stream's first bytes: a handshake record of TLS 1.x (or what there is of one).
pub fn looks_like_tls(start: &[u8]) -> bool {
    start.first() == Some(&0x16) && start.get(1).is_none_or(|&v| v == 3) && start.get(2).is_none_or(|&v| v <= 4)
}

pub fn version_name(v: u16) -> &'static str {
    match v {
        0x0300 => "SSL 3.0",
        0x0301 => "TLS 1.0",
        0x0302 => "TLS 1.1",
        0x0303 => "TLS 1.2",
        0x0304 => "TLS 1.3",
        _ => "unknown",
    }
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// The first handshake message, borrowed when one record holds it all (the usual case),
/// else concatenated from the payloads of as many records as it spans.
fn handshake_message(stream: &[u8]) -> Result<(std::borrow::Cow<'_, [u8]>, u16), TlsError> {
    if let (Some(h), Some(msg)) = (stream.get(..5), stream.get(5..9)) {
        let rec_len = u16::from_be_bytes([h[3], h[4]]) as usize;
        let msg_len = u32::from_be_bytes([0, msg[1], msg[2], msg[3]]) as usize;
        if h[0] == 0x16
            && h[1] == 3
            && msg[0] == 1
            && rec_len <= RECORD_MAX
            && 4 + msg_len <= rec_len
            && let Some(m) = stream.get(5..9 + msg_len)
        {
            return Ok((std::borrow::Cow::Borrowed(m), 1));
        }
    }
    let (hs, records) = concat_handshake(stream)?;
    Ok((std::borrow::Cow::Owned(hs), records))
}

fn concat_handshake(stream: &[u8]) -> Result<(Vec<u8>, u16), TlsError> {
    let mut hs: Vec<u8> = Vec::new();
    let mut rest = stream;
    let mut records = 0u16;
    loop {
        if let Some(h) = hs.get(..4) {
            let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            if h[0] != 1 {
                return Err(TlsError::NotClientHello);
            }
            if len > HANDSHAKE_MAX {
                return Err(TlsError::Malformed("handshake message too long"));
            }
            if hs.len() >= 4 + len {
                hs.truncate(4 + len);
                return Ok((hs, records));
            }
        }
        let Some(header) = rest.get(..5) else {
            return if rest.is_empty() || looks_like_tls(rest) {
                Err(TlsError::Incomplete)
            } else {
                Err(TlsError::NotTls)
            };
        };
        if header[0] != 0x16 || header[1] != 3 {
            return Err(if records == 0 {
                TlsError::NotTls
            } else {
                TlsError::Malformed("non-handshake record inside the ClientHello")
            });
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len > RECORD_MAX {
            return Err(TlsError::Malformed("record too long"));
        }
        if len == 0 {
            return Err(TlsError::Malformed("empty handshake record"));
        }
        let Some(body) = rest.get(5..5 + len) else {
            return Err(TlsError::Incomplete);
        };
        hs.extend_from_slice(body);
        records = records.saturating_add(1);
        rest = &rest[5 + len..];
    }
}

/// Parses the ClientHello at the start of a client's stream.
pub fn parse_client_hello(stream: &[u8]) -> Result<ClientHello, TlsError> {
    client_hello(stream, true)
}

/// [`parse_client_hello`] without what only a kept observation needs: the same outcome (the
/// same errors, server name, ECH flag, legacy version and record count), but no ALPN, supported
/// versions or fingerprint parts. Most ClientHellos name no watched server; collecting their
/// lists cost about a dozen allocations each. Parse again with [`parse_client_hello`] when
/// the ClientHello is kept.
pub fn parse_client_hello_name(stream: &[u8]) -> Result<ClientHello, TlsError> {
    client_hello(stream, false)
}

fn client_hello(stream: &[u8], full: bool) -> Result<ClientHello, TlsError> {
    let (hs, records) = handshake_message(stream)?;
    let ch = match tls_parser::parse_tls_message_handshake(&hs) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) => ch,
        Ok(_) => return Err(TlsError::NotClientHello),
        Err(_) => return Err(TlsError::Malformed("ClientHello body")),
    };
    let ciphers: Vec<u16> =
        if full { ch.ciphers.iter().map(|c| c.0).filter(|c| !is_grease(*c)).collect() } else { Vec::new() };
    let mut out = ClientHello {
        sni: None,
        legacy_version: ch.version.0,
        supported_versions: Vec::new(),
        alpn: Vec::new(),
        ech: false,
        records,
        ja4_parts: Ja4Parts::default(),
    };
    let mut ext_types: Vec<u16> = Vec::new();
    let mut sigalgs: Vec<u16> = Vec::new();
    let (mut groups, mut point_formats): (Vec<u16>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut sni_present = false;
    let mut first_alpn: Option<Vec<u8>> = None;
    let mut exts = ch.ext.unwrap_or(&[]);
    while exts.len() >= 4 {
        let t = u16::from_be_bytes([exts[0], exts[1]]);
        let len = u16::from_be_bytes([exts[2], exts[3]]) as usize;
        let Some(one) = exts.get(..4 + len) else {
            return Err(TlsError::Malformed("extension length"));
        };
        exts = &exts[4 + len..];
        if is_grease(t) {
            continue;
        }
        if !full {
            // Only what decides whether the ClientHello is kept; every other extension's
            // errors are ignored by the full parse too, so the outcome is the same.
            match t {
                EXT_SNI => {
                    if let Ok((_, TlsExtension::SNI(names))) = tls_parser::parse_tls_extension(one)
                        && let Some((_, name)) = names.iter().find(|(ty, _)| ty.0 == 0)
                    {
                        out.sni = Some(normalize_name(name));
                    }
                }
                EXT_ECH => out.ech = true,
                _ => {}
            }
            continue;
        }
        ext_types.push(t);
        let parsed = match t {
            EXT_SNI | EXT_ALPN | EXT_SUPPORTED_VERSIONS | EXT_SIGALGS => {
                tls_parser::parse_tls_extension(one).ok().map(|(_, e)| e)
            }
            _ => None,
        };
        match (t, parsed) {
            (EXT_SNI, Some(TlsExtension::SNI(names))) => {
                sni_present = true;
                // host_name (type 0) entries only; the first one is the server name.
                if let Some((_, name)) = names.iter().find(|(ty, _)| ty.0 == 0) {
                    out.sni = Some(normalize_name(name));
                }
            }
            (EXT_SNI, _) => sni_present = true,
            (EXT_ALPN, Some(TlsExtension::ALPN(protos))) => {
                first_alpn = protos.first().map(|p| p.to_vec());
                out.alpn = protos.iter().take(16).map(|p| escape_bytes(p)).collect();
            }
            (EXT_SUPPORTED_VERSIONS, Some(TlsExtension::SupportedVersions(vs))) => {
                out.supported_versions = vs.iter().map(|v| v.0).filter(|v| !is_grease(*v)).collect();
            }
            (EXT_SIGALGS, Some(TlsExtension::SignatureAlgorithms(algs))) => {
                sigalgs = algs.into_iter().filter(|a| !is_grease(*a)).collect()
            }
            (EXT_ECH, _) => out.ech = true,
            // Read by hand: two length-prefixed lists (GREASE groups are dropped, as JA3 does).
            (EXT_GROUPS, _) => {
                // Both length bytes may be missing: an empty extension body is legal framing.
                let body = one.get(4..).unwrap_or_default();
                if let Some(list) =
                    body.first_chunk::<2>().and_then(|&n| body.get(2..2 + usize::from(u16::from_be_bytes(n))))
                {
                    groups = list
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .filter(|g| !is_grease(*g))
                        .collect();
                }
            }
            (EXT_POINT_FORMATS, _) => {
                let body = one.get(4..).unwrap_or_default();
                if let Some(list) = body.first().and_then(|&n| body.get(1..1 + n as usize)) {
                    point_formats = list.to_vec();
                }
            }
            _ => {}
        }
    }
    out.ja4_parts =
        Ja4Parts { ciphers, extensions: ext_types, sigalgs, groups, point_formats, sni: sni_present, first_alpn };
    Ok(out)
}

fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn hex_list(v: &[u16]) -> String {
    v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",")
}

fn ja4(ch: &ClientHello, ciphers: &[u16], exts: &[u16], sigalgs: &[u16], sni: bool, alpn: Option<&[u8]>) -> String {
    let version = ch.supported_versions.iter().copied().max().unwrap_or(ch.legacy_version);
    let v = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        _ => "00",
    };
    let alpn = match alpn {
        Some(a) if !a.is_empty() => {
            let (f, l) = (a[0], a[a.len() - 1]);
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                format!("{}{}", f as char, l as char)
            } else {
                let (fh, lh) = (format!("{f:02x}"), format!("{l:02x}"));
                format!("{}{}", &fh[..1], &lh[1..])
            }
        }
        _ => "00".into(),
    };
    let a = format!("t{v}{}{:02}{:02}{alpn}", if sni { 'd' } else { 'i' }, ciphers.len().min(99), exts.len().min(99));
    let mut sorted_ciphers = ciphers.to_vec();
    sorted_ciphers.sort_unstable();
    let mut sorted_exts: Vec<u16> = exts.iter().copied().filter(|e| *e != EXT_SNI && *e != EXT_ALPN).collect();
    sorted_exts.sort_unstable();
    let mut c = hex_list(&sorted_exts);
    if !sigalgs.is_empty() {
        c = format!("{c}_{}", hex_list(sigalgs));
    }
    format!("{a}_{}_{}", hash12(&hex_list(&sorted_ciphers)), hash12(&c))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Client bytes captured on loopback (see testdata/README.md), and a Chrome ClientHello
    // with an X25519MLKEM768 key share from the reference workload.
    const TLS13_ALPN: &[u8] = include_bytes!("testdata/openssl-tls13-alpn.bin");
    const TLS12: &[u8] = include_bytes!("testdata/openssl-tls12.bin");
    const CURL: &[u8] = include_bytes!("testdata/curl-tls.bin");
    const CHROME_PQ: &[u8] = include_bytes!("../../benches/data/clienthello-chrome-pq.bin");

    #[test]
    fn real_client_hellos() {
        let ch = parse_client_hello(TLS13_ALPN).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("dnl-01.geo.kaspersky.com"));
        assert_eq!(ch.alpn, vec!["h2", "http/1.1"]);
        assert!(ch.supported_versions.contains(&0x0304));
        assert!(ch.ja4().starts_with("t13d") && ch.ja4().contains("h2_"), "{}", ch.ja4());
        assert_eq!(ch.records, 1);
        let ch = parse_client_hello(TLS12).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("s05.upd.kaspersky.com"));
        assert!(ch.ja4().starts_with("t12d"), "{}", ch.ja4());
        assert_eq!(parse_client_hello(CURL).unwrap().sni.as_deref(), Some("ds.kaspersky.com"));
        let ch = parse_client_hello(CHROME_PQ).unwrap();
        assert!(ch.sni.is_some() && ch.supported_versions.contains(&0x0304));
        assert!(ch.ech, "Chrome sends an ECH (GREASE) extension");
        assert!(!parse_client_hello(TLS12).unwrap().ech);
        assert_eq!(ch.ja4().len(), 36, "{}", ch.ja4());
    }

    /// The name-only parse the worker decides on agrees with the full one, cut anywhere.
    #[test]
    fn name_only_parse_agrees() {
        for hello in [TLS13_ALPN, TLS12, CURL, CHROME_PQ] {
            for n in 0..=hello.len() {
                let (a, b) = (parse_client_hello_name(&hello[..n]), parse_client_hello(&hello[..n]));
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(
                            (a.sni, a.ech, a.legacy_version, a.records),
                            (b.sni, b.ech, b.legacy_version, b.records)
                        );
                        assert!(a.alpn.is_empty() && a.supported_versions.is_empty());
                    }
                    (a, b) => assert_eq!(a.map(|_| ()), b.map(|_| ()), "prefix {n}"),
                }
            }
        }
    }

    /// The same handshake message cut into 100-byte records, as `-max_send_frag` or a
    /// middlebox may send it.
    #[test]
    fn handshake_spanning_many_records() {
        let body = &CHROME_PQ[5..];
        let mut stream = Vec::new();
        for chunk in body.chunks(100) {
            stream.extend_from_slice(&[0x16, 0x03, 0x01]);
            stream.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            stream.extend_from_slice(chunk);
        }
        let ch = parse_client_hello(&stream).unwrap();
        assert_eq!(ch.sni, parse_client_hello(CHROME_PQ).unwrap().sni);
        assert_eq!(ch.records as usize, body.len().div_ceil(100));
        for n in 0..stream.len() {
            assert_eq!(parse_client_hello(&stream[..n]).unwrap_err(), TlsError::Incomplete, "prefix {n}");
        }
    }

    #[test]
    fn every_prefix_is_incomplete_and_damage_never_panics() {
        for n in 0..CHROME_PQ.len() {
            assert_eq!(parse_client_hello(&CHROME_PQ[..n]), Err(TlsError::Incomplete), "prefix {n}");
        }
        let mut m = CHROME_PQ.to_vec();
        for i in 0..m.len() {
            m[i] ^= 0xff;
            let _ = parse_client_hello(&m);
            m[i] ^= 0xff;
        }
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(&[0x16, 3, 1, 0xff, 0xff]), Err(TlsError::Malformed("record too long")));
        assert_eq!(parse_client_hello(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]), Err(TlsError::NotClientHello));
    }

    /// A TLS 1.2-style ClientHello record (one cipher, null compression) with these extensions.
    pub(crate) fn record_with_extensions(exts: &[u8]) -> Vec<u8> {
        let mut rec = vec![0x16, 3, 1];
        let hs = handshake_with_extensions(exts);
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    /// The bare ClientHello handshake message (as QUIC carries it) with these extensions.
    pub(crate) fn handshake_with_extensions(exts: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(exts);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        hs
    }

    /// server_name extension for one host_name.
    pub(crate) fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut e = vec![0x00, 0x00];
        e.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
        e.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        e.push(0);
        e.extend_from_slice(&(name.len() as u16).to_be_bytes());
        e.extend_from_slice(name);
        e
    }

    /// The fuzzer's packet of death: a supported_groups extension with an empty body made the
    /// hand-written reader index `body[0]` and panic, killing the worker. The same file is in
    /// fuzz/corpus/tls/crash-empty-groups.
    #[test]
    fn empty_supported_groups_extension_is_not_a_panic() {
        let mut exts = vec![0x00, 0x0a, 0x00, 0x00];
        exts.extend(sni_extension(b"dnl-01.geo.kaspersky.com"));
        let rec = record_with_extensions(&exts);
        assert_eq!(rec, include_bytes!("../../fuzz/corpus/tls/crash-empty-groups"));
        let ch = parse_client_hello(&rec).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("dnl-01.geo.kaspersky.com"), "the extensions after it are read");
        assert_eq!(ch.extension_types(), [0x000a, 0x0000]);
        assert_eq!(ch.ja3().0, "771,4865,10-0,,");
    }

    /// Every short or overlong body of the two extensions read by hand, supported_groups and
    /// ec_point_formats: never a panic, and a list is kept only when its length fits the body.
    #[test]
    fn hand_read_extension_bodies_of_every_short_length() {
        let cases: [(u16, &[u8], &str); 12] = [
            (EXT_GROUPS, &[], "771,4865,10,,"),
            (EXT_GROUPS, &[0], "771,4865,10,,"),
            (EXT_GROUPS, &[0, 0], "771,4865,10,,"),
            (EXT_GROUPS, &[0, 2, 0], "771,4865,10,,"),
            (EXT_GROUPS, &[0, 2, 0, 0x1d], "771,4865,10,29,"),
            (EXT_GROUPS, &[0xff, 0xff, 0], "771,4865,10,,"),
            (EXT_POINT_FORMATS, &[], "771,4865,11,,"),
            (EXT_POINT_FORMATS, &[0], "771,4865,11,,"),
            (EXT_POINT_FORMATS, &[1], "771,4865,11,,"),
            (EXT_POINT_FORMATS, &[1, 0], "771,4865,11,,0"),
            (EXT_POINT_FORMATS, &[2, 0, 1, 2], "771,4865,11,,0-1"),
            (EXT_POINT_FORMATS, &[0xff, 0], "771,4865,11,,"),
        ];
        for (ty, body, ja3) in cases {
            let mut exts = ty.to_be_bytes().to_vec();
            exts.extend_from_slice(&(body.len() as u16).to_be_bytes());
            exts.extend_from_slice(body);
            let ch = parse_client_hello(&record_with_extensions(&exts)).unwrap();
            assert_eq!(ch.ja3().0, ja3, "type {ty:#06x} body {body:02x?}");
        }
    }

    /// Why the extension list is walked here: one extension tls-parser rejects (here an
    /// empty supported_versions) hides every extension after it, SNI included.
    #[test]
    fn tls_parser_list_parser_loses_sni_after_a_bad_extension() {
        let mut exts = vec![0x00, 0x2b, 0x00, 0x00]; // supported_versions, empty
        let sni = b"s05.upd.kaspersky.com";
        exts.extend_from_slice(&[0x00, 0x00]);
        exts.extend_from_slice(&((sni.len() + 5) as u16).to_be_bytes());
        exts.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
        exts.push(0);
        exts.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        exts.extend_from_slice(sni);
        let (_, list) = tls_parser::parse_tls_client_hello_extensions(&exts).unwrap();
        assert!(!list.iter().any(|e| matches!(e, TlsExtension::SNI(_))), "tls-parser fixed? then use its list parser");
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        assert_eq!(parse_client_hello(&rec).unwrap().sni.as_deref(), Some("s05.upd.kaspersky.com"));
    }
}
