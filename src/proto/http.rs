//! HTTP/1.x requests: request line, Host (or the authority of an absolute-form target),
//! User-Agent, and the body length so the next request on the connection can be found.

use thiserror::Error;

use super::name::{escape_bytes, normalize_name};

/// Request line plus headers larger than this are not a request we read.
pub const MAX_HEADER_BYTES: usize = 8192;

/// The largest Content-Length read (RFC 9110 8.6 asks a recipient to guard against overflow):
/// `header_len + content_length`, where the next request starts, then fits a u64.
pub const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

const METHODS: [&[u8]; 13] = [
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"CONNECT",
    b"PATCH",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"REPORT",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub version: String,
    /// Normalised; port and IPv6 brackets removed.
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// Bytes up to and including the blank line.
    pub header_len: usize,
    pub content_length: u64,
    pub chunked: bool,
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    #[error("incomplete: more bytes needed")]
    Incomplete,
    #[error("not an HTTP request")]
    NotHttp,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// A known method and a space, or a prefix of one when that is all there is.
pub fn looks_like_request(start: &[u8]) -> bool {
    METHODS.iter().any(|m| {
        let mut token = m.to_vec();
        token.push(b' ');
        if start.len() >= token.len() {
            start.starts_with(&token)
        } else {
            token.starts_with(start) && !start.is_empty()
        }
    })
}

/// `host[:port]`, `[v6]:port`, or a bare IPv6 literal: the host part.
fn strip_port(h: &[u8]) -> &[u8] {
    let h = h.trim_ascii();
    if let Some(rest) = h.strip_prefix(b"[") {
        return rest.split(|&b| b == b']').next().unwrap_or(rest);
    }
    if h.iter().filter(|&&b| b == b':').count() == 1 {
        return h.split(|&b| b == b':').next().unwrap_or(h);
    }
    h
}

fn authority_of(target: &[u8]) -> Option<&[u8]> {
    let lower = target.to_ascii_lowercase();
    let rest_at = if lower.starts_with(b"http://") {
        7
    } else if lower.starts_with(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[rest_at..];
    let end = rest.iter().position(|&b| b == b'/' || b == b'?' || b == b'#').unwrap_or(rest.len());
    let auth = &rest[..end];
    // Drop userinfo.
    Some(auth.rsplit(|&b| b == b'@').next().unwrap_or(auth))
}

/// Parses the request at the start of `stream`.
pub fn parse_request(stream: &[u8]) -> Result<HttpRequest, HttpError> {
    if !looks_like_request(stream) {
        return Err(HttpError::NotHttp);
    }
    let window = &stream[..stream.len().min(MAX_HEADER_BYTES)];
    // End of headers: the first empty line, accepting bare LF line ends.
    let mut header_len = None;
    let mut i = 0;
    while let Some(nl) = window[i..].iter().position(|&b| b == b'\n') {
        let line_start = i;
        i += nl + 1;
        let line = &window[line_start..i - 1];
        if line_start > 0 && (line.is_empty() || line == b"\r") {
            header_len = Some(i);
            break;
        }
    }
    let Some(header_len) = header_len else {
        return if stream.len() >= MAX_HEADER_BYTES {
            Err(HttpError::Malformed("headers too long"))
        } else {
            Err(HttpError::Incomplete)
        };
    };
    let mut lines = window[..header_len].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or(&[]);
    let mut parts = request_line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("request line"));
    };
    if !version.starts_with(b"HTTP/1.") {
        return Err(HttpError::Malformed("version"));
    }
    let mut req = HttpRequest {
        method: escape_bytes(method),
        path: escape_bytes(target),
        version: escape_bytes(version),
        host: None,
        user_agent: None,
        header_len,
        content_length: 0,
        chunked: false,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"host") {
            if req.host.is_none() {
                req.host = Some(normalize_name(strip_port(value)));
            }
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            req.user_agent.get_or_insert_with(|| escape_bytes(value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            req.content_length = std::str::from_utf8(value)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .filter(|&n| n <= MAX_CONTENT_LENGTH)
                .ok_or(HttpError::Malformed("content-length"))?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            && value.to_ascii_lowercase().windows(7).any(|w| w == b"chunked")
        {
            req.chunked = true;
        }
    }
    // The absolute form's authority wins over Host (RFC 9112, 3.2.2); CONNECT names host:port.
    if let Some(auth) = authority_of(target) {
        req.host = Some(normalize_name(strip_port(auth)));
    } else if method == b"CONNECT" {
        req.host = Some(normalize_name(strip_port(target)));
    }
    if req.host.as_deref() == Some("") {
        req.host = None;
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// curl with an updater-like User-Agent, captured on loopback.
    const CURL: &[u8] = include_bytes!("testdata/curl-http.bin");

    #[test]
    fn real_request() {
        let r = parse_request(CURL).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/diffs/x.dif"));
        assert_eq!(r.host.as_deref(), Some("dnl-01.geo.kaspersky.com"));
        assert_eq!(r.user_agent.as_deref(), Some("@hEKzPRNa0lItsGIjysY"));
        assert_eq!(r.header_len, CURL.len());
        for n in 1..CURL.len() {
            assert_eq!(parse_request(&CURL[..n]), Err(HttpError::Incomplete), "prefix {n}");
        }
    }

    #[test]
    fn hosts_ports_and_forms() {
        let p = |s: &[u8]| parse_request(s).unwrap().host;
        assert_eq!(p(b"GET / HTTP/1.1\r\nHOST: DS.Kaspersky.com:80\r\n\r\n").as_deref(), Some("ds.kaspersky.com"));
        assert_eq!(p(b"GET / HTTP/1.1\nHost: [fd00::1]:8080\n\n").as_deref(), Some("fd00::1"));
        assert_eq!(
            p(b"GET http://u@s01.upd.kaspersky.com:80/x HTTP/1.1\r\nHost: other\r\n\r\n").as_deref(),
            Some("s01.upd.kaspersky.com")
        );
        assert_eq!(
            p(b"CONNECT dc1.ksn.kaspersky-labs.com:443 HTTP/1.1\r\n\r\n").as_deref(),
            Some("dc1.ksn.kaspersky-labs.com")
        );
        assert_eq!(p(b"GET / HTTP/1.0\r\n\r\n"), None);
        let r = parse_request(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.content_length, r.header_len), (5, 48));
    }

    /// A Content-Length of u64::MAX made the worker's `header_len + content_length` (where the
    /// next request starts) overflow: a panic where overflow is checked (the tcp_stream fuzz
    /// target, fuzz/corpus/tcp_stream/crash-content-length-overflow), a wrong offset elsewhere.
    #[test]
    fn content_length_leaves_room_for_the_header() {
        let with = |n: &str| parse_request(format!("POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").as_bytes());
        assert_eq!(with("9223372036854775807").unwrap().content_length, MAX_CONTENT_LENGTH);
        for n in ["9223372036854775808", "18446744073709551615", "18446744073709551616"] {
            assert_eq!(with(n), Err(HttpError::Malformed("content-length")), "{n}");
        }
        let r = with("9223372036854775807").unwrap();
        assert!((r.header_len as u64).checked_add(r.content_length).is_some());
    }

    #[test]
    fn hostile_requests() {
        // A header value cannot smuggle a second line into the name.
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: evil\x1b[2J\x00.upd.kaspersky.com\r\nUser-Agent: a\tb\r\n\r\n")
            .unwrap();
        assert_eq!(r.host.as_deref(), Some("evil\\x1b[2j\\x00.upd.kaspersky.com"));
        assert_eq!(r.user_agent.as_deref(), Some("a\\x09b"));
        assert_eq!(parse_request(b"SSH-2.0-OpenSSH\r\n"), Err(HttpError::NotHttp));
        assert_eq!(parse_request(b"GET / FTP/1.0\r\n\r\n"), Err(HttpError::Malformed("version")));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend_from_slice(&[b'a'; 9000]);
        assert_eq!(parse_request(&long), Err(HttpError::Malformed("headers too long")));
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n").is_err(), "1*DIGIT only");
        assert!(looks_like_request(b"GE") && !looks_like_request(b"GETX") && !looks_like_request(b""));
    }
}
