//! Names from the wire are hostile: normalise them once, into printable ASCII, so that no
//! output format can be injected with control characters whatever it does next.

use std::fmt::Write as _;

fn push_escaped(out: &mut String, b: u8) {
    let _ = write!(out, "\\x{b:02x}");
}

fn is_plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'\\'
}

/// Lowercases ASCII, drops one trailing '.', and writes every byte outside 0x21..=0x7e (and
/// the backslash) as `\xHH`.
pub fn normalize_name(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.iter().all(|&b| is_plain(b) && !b.is_ascii_uppercase()) {
        // Checked: printable ASCII is valid UTF-8.
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for &b in raw {
        push_normalized(&mut out, b);
    }
    out
}

/// One byte of a name: lowercased if plain, else `\xHH`.
pub fn push_normalized(out: &mut String, b: u8) {
    if is_plain(b) {
        out.push(b.to_ascii_lowercase() as char);
    } else {
        push_escaped(out, b);
    }
}

/// Longest text kept by [`escape_bytes`] (paths, user agents).
pub const MAX_ESCAPED_INPUT: usize = 512;

/// The same escaping without lowercasing, for HTTP paths and user agents; cut at 512 input
/// bytes with `...` appended. Spaces are kept readable as `\x20` too: one token per field.
pub fn escape_bytes(raw: &[u8]) -> String {
    let cut = raw.len() > MAX_ESCAPED_INPUT;
    let raw = &raw[..raw.len().min(MAX_ESCAPED_INPUT)];
    let mut out = String::with_capacity(raw.len() + 3);
    for &b in raw {
        if is_plain(b) {
            out.push(b as char);
        } else {
            push_escaped(&mut out, b);
        }
    }
    if cut {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_escapes() {
        assert_eq!(normalize_name(b"DNL-02.GEO.Kaspersky.COM."), "dnl-02.geo.kaspersky.com");
        assert_eq!(normalize_name(b"a\nb\\c d\xff"), "a\\x0ab\\x5cc\\x20d\\xff");
        assert_eq!(normalize_name(b""), "");
        assert_eq!(normalize_name(b"."), "");
        assert_eq!(escape_bytes(b"/A B"), "/A\\x20B");
        assert!(escape_bytes(&[b'a'; 600]).ends_with("..."));
    }
}
