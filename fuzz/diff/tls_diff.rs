//! Differential target: kavwatch's ClientHello reader (`kavwatch::proto::tls::parse_client_hello`:
//! its own record framing, its own walk of the extension list, supported_groups and
//! ec_point_formats read by hand) against tls-parser's own path (`parse_tls_plaintext`, the
//! ClientHello contents, `parse_tls_extensions` over the whole extension block).
//!
//! Agreement rule: when both accept the input as a ClientHello, and tls-parser's list parser read
//! the whole extension block, these fields must be equal:
//! - legacy_version, the cipher list and the extension type list, in wire order, both with the
//!   GREASE values of RFC 8701 (0x?a?a with equal bytes) removed. tls-parser calls every type
//!   with `t & 0x0f0f == 0x0a0a` GREASE (0x1a2a too) and does not parse its contents: its wire
//!   type is put back before the RFC 8701 filter, so both sides filter by the same definition.
//! - the SNI: the first host_name (type 0) entry, both sides through kavwatch's
//!   `normalize_name` (ASCII lowercase, one trailing dot dropped, bytes outside 0x21..=0x7e
//!   escaped): what is compared is which bytes were read, not how they are escaped.
//! - the ALPN list: the first 16 protocols (what kavwatch keeps), both through `escape_bytes`.
//! - supported_versions (GREASE removed), the ECH flag (extension 0xfe0d present), and the JA3
//!   string, the reference's built from tls-parser's supported_groups and ec_point_formats.
//!
//! Not compared: a field whose extension type appears more than once (RFC 8446 4.2 forbids it;
//! which copy wins is arbitrary: kavwatch keeps the last), and inputs where either side
//! rejects: tls-parser stops at the first extension whose contents it rejects, kavwatch reads
//! on (see tls.rs), and a handshake message spanning several records is read by kavwatch only.

use kavwatch::proto::ja3::ja3;
use kavwatch::proto::name::{escape_bytes, normalize_name};
use kavwatch::proto::tls::parse_client_hello;
use tls_parser::{
    TlsExtension, TlsExtensionType, TlsMessage, TlsMessageHandshake, parse_tls_extensions, parse_tls_plaintext,
};

const EXT_SNI: u16 = 0x0000;
const EXT_GROUPS: u16 = 0x000a;
const EXT_POINT_FORMATS: u16 = 0x000b;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ECH: u16 = 0xfe0d;

/// RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn wire_type(e: &TlsExtension<'_>) -> u16 {
    match e {
        TlsExtension::Grease(t, _) => *t,
        other => TlsExtensionType::from(other).0,
    }
}

pub fn tls_diff(data: &[u8]) {
    let Ok(ours) = parse_client_hello(data) else {
        return;
    };
    let Ok((_, plain)) = parse_tls_plaintext(data) else {
        return;
    };
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch))) = plain.msg.first() else {
        return;
    };
    assert_eq!(ours.legacy_version, ch.version.0, "field legacy_version");
    let ciphers: Vec<u16> = ch.ciphers.iter().map(|c| c.0).filter(|c| !is_grease(*c)).collect();
    assert_eq!(ours.ciphers(), ciphers, "field ciphers");
    let Ok((rest, exts)) = parse_tls_extensions(ch.ext.unwrap_or_default()) else {
        return;
    };
    if !rest.is_empty() {
        return; // tls-parser gave up on an extension: its list is partial
    }
    let types: Vec<u16> = exts.iter().map(wire_type).filter(|t| !is_grease(*t)).collect();
    assert_eq!(ours.extension_types(), types, "field extension types");
    assert_eq!(ours.ech, types.contains(&EXT_ECH), "field ech");
    let once = |t: u16| types.iter().filter(|&&x| x == t).count() == 1;
    let none = |t: u16| !types.contains(&t);
    let mut sni = None;
    let mut alpn = Vec::new();
    let mut versions = Vec::new();
    let (mut groups, mut formats): (Vec<u16>, Vec<u8>) = (Vec::new(), Vec::new());
    for e in &exts {
        match e {
            TlsExtension::SNI(names) => {
                sni = names.iter().find(|(t, _)| t.0 == 0).map(|(_, n)| normalize_name(n));
            }
            TlsExtension::ALPN(protos) => alpn = protos.iter().take(16).map(|p| escape_bytes(p)).collect(),
            TlsExtension::SupportedVersions(vs) => {
                versions = vs.iter().map(|v| v.0).filter(|v| !is_grease(*v)).collect()
            }
            TlsExtension::EllipticCurves(gs) => groups = gs.iter().map(|g| g.0).collect(),
            TlsExtension::EcPointFormats(f) => formats = f.to_vec(),
            _ => {}
        }
    }
    if once(EXT_SNI) || none(EXT_SNI) {
        assert_eq!(ours.sni, sni, "field sni");
    }
    if once(EXT_ALPN) || none(EXT_ALPN) {
        assert_eq!(ours.alpn, alpn, "field alpn");
    }
    if once(EXT_SUPPORTED_VERSIONS) || none(EXT_SUPPORTED_VERSIONS) {
        assert_eq!(ours.supported_versions, versions, "field supported_versions");
    }
    if (once(EXT_GROUPS) || none(EXT_GROUPS)) && (once(EXT_POINT_FORMATS) || none(EXT_POINT_FORMATS)) {
        let reference = ja3(ch.version.0, &ciphers, &types, &groups, &formats);
        assert_eq!(ours.ja3(), reference, "field ja3 (supported_groups, ec_point_formats)");
    }
}
