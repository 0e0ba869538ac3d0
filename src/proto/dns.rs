//! DNS messages (RFC 1035): header, questions and answer records, any record type.
//!
//! Our own parser: the `dns-parser` crate (unmaintained since 2018) rejects whole messages
//! with record types it does not know, such as type 65 (HTTPS), which browsers send with
//! nearly every lookup (see README, "Why these crates").

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::name::push_normalized;

const MAX_QUESTIONS: usize = 16;
const MAX_ANSWERS: usize = 64;
const MAX_POINTER_JUMPS: usize = 64;
const MAX_NAME_WIRE: usize = 255;

#[derive(Debug, Clone, PartialEq)]
pub struct DnsMessage {
    pub id: u16,
    pub is_response: bool,
    pub opcode: u8,
    pub rcode: u8,
    pub truncated: bool,
    pub questions: Vec<Question>,
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    pub data: AnswerData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnswerData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Other,
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    #[error("message truncated")]
    Truncated,
    #[error("reserved label type")]
    BadLabel,
    #[error("compression pointer loop or forward pointer")]
    PointerLoop,
    #[error("name longer than 255 bytes")]
    NameTooLong,
}

pub fn qtype_name(t: u16) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        41 => "OPT",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return Cow::Owned(format!("TYPE{t}")),
    })
}

fn u16_at(m: &[u8], at: usize) -> Result<u16, DnsError> {
    m.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(DnsError::Truncated)
}

/// Reads the name at `at`; returns it and the offset just past it (past the first pointer
/// when compressed). Pointers must point backwards, so every jump makes progress.
fn read_name(m: &[u8], at: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::with_capacity(64);
    let mut pos = at;
    let mut end = None;
    let mut jumps = 0;
    let mut wire = 0;
    loop {
        let len = *m.get(pos).ok_or(DnsError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let end = end.unwrap_or(pos + 1);
                return Ok((name, end));
            }
            0x00 => {
                let label = m.get(pos + 1..pos + 1 + len).ok_or(DnsError::Truncated)?;
                wire += len + 1;
                // RFC 1035 3.1: 255 octets with the root label's length byte, which is not
                // counted in `wire`: labels may take 254.
                if wire >= MAX_NAME_WIRE {
                    return Err(DnsError::NameTooLong);
                }
                if wire > len + 1 {
                    name.push('.');
                }
                for &b in label {
                    // A dot inside a label is not a label boundary: escape it so the name can
                    // never pass for more labels than it has.
                    if b == b'.' {
                        name.push_str("\\x2e");
                    } else {
                        push_normalized(&mut name, b);
                    }
                }
                pos += 1 + len;
            }
            0xc0 => {
                let target = (u16_at(m, pos)? & 0x3fff) as usize;
                if target >= pos || jumps >= MAX_POINTER_JUMPS {
                    return Err(DnsError::PointerLoop);
                }
                jumps += 1;
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

/// Parses a DNS message. Only the header, the questions and the answer section are read.
pub fn parse(m: &[u8]) -> Result<DnsMessage, DnsError> {
    parse_sections(m, true)
}

/// [`parse`] of the header and questions only (`answers` left empty): what the reader needs to
/// tell whether a response names anything watched, before it reads the answers.
pub fn parse_questions(m: &[u8]) -> Result<DnsMessage, DnsError> {
    parse_sections(m, false)
}

fn parse_sections(m: &[u8], answers: bool) -> Result<DnsMessage, DnsError> {
    if m.len() < 12 {
        return Err(DnsError::Truncated);
    }
    let flags = u16_at(m, 2)?;
    let qd = u16_at(m, 4)? as usize;
    let an = u16_at(m, 6)? as usize;
    let mut msg = DnsMessage {
        id: u16_at(m, 0)?,
        is_response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        truncated: flags & 0x0200 != 0,
        questions: Vec::with_capacity(qd.min(MAX_QUESTIONS)),
        answers: Vec::new(),
    };
    let mut pos = 12;
    for _ in 0..qd.min(MAX_QUESTIONS) {
        let (name, next) = read_name(m, pos)?;
        let qtype = u16_at(m, next)?;
        u16_at(m, next + 2)?; // class
        msg.questions.push(Question { name, qtype });
        pos = next + 4;
    }
    if qd > MAX_QUESTIONS || !answers {
        // Questions only: asked for, or so many that no sane message has them.
        return Ok(msg);
    }
    for _ in 0..an.min(MAX_ANSWERS) {
        let (name, next) = read_name(m, pos)?;
        let rtype = u16_at(m, next)?;
        let ttl = m
            .get(next + 4..next + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(DnsError::Truncated)?;
        let rdlen = u16_at(m, next + 8)? as usize;
        let rd_at = next + 10;
        let rdata = m.get(rd_at..rd_at + rdlen).ok_or(DnsError::Truncated)?;
        let data = match (rtype, rdlen) {
            (1, 4) => AnswerData::A(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            (28, 16) => AnswerData::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).map_err(|_| DnsError::Truncated)?)),
            (5, _) => match read_name(m, rd_at) {
                Ok((target, _)) => AnswerData::Cname(target),
                Err(_) => AnswerData::Other,
            },
            _ => AnswerData::Other,
        };
        msg.answers.push(Answer { name, rtype, ttl, data });
        pos = rd_at + rdlen;
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from dig against dnsmasq on loopback (see src/proto/testdata/README.md).
    const A_QUERY: &[u8] = include_bytes!("testdata/dig-a-query.bin");
    const A_RESPONSE: &[u8] = include_bytes!("testdata/dig-a-response.bin");
    const HTTPS_QUERY: &[u8] = include_bytes!("testdata/dig-https-query.bin");
    const HTTPS_RESPONSE: &[u8] = include_bytes!("testdata/dig-https-response.bin");
    const CNAME_RESPONSE: &[u8] = include_bytes!("testdata/dig-cname-response.bin");

    #[test]
    fn real_queries_and_answers() {
        let q = parse(A_QUERY).unwrap();
        assert!(!q.is_response);
        assert_eq!(q.questions, vec![Question { name: "s05.upd.kaspersky.com".into(), qtype: 1 }]);
        let r = parse(A_RESPONSE).unwrap();
        assert!(r.is_response && r.rcode == 0 && r.id == q.id);
        assert_eq!(r.answers[0].data, AnswerData::A(Ipv4Addr::new(127, 0, 0, 9)));
        let c = parse(CNAME_RESPONSE).unwrap();
        assert_eq!(c.answers[0].data, AnswerData::Cname("s05.upd.kaspersky.com".into()));
    }

    #[test]
    fn type_65_https_is_read_like_any_other() {
        let q = parse(HTTPS_QUERY).unwrap();
        assert_eq!((q.questions[0].name.as_str(), q.questions[0].qtype), ("dnl-01.geo.kaspersky.com", 65));
        assert_eq!(qtype_name(65), "HTTPS");
        assert!(parse(HTTPS_RESPONSE).unwrap().is_response);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        for msg in [A_QUERY, A_RESPONSE, CNAME_RESPONSE, HTTPS_QUERY] {
            // Header + question (+ answers): cut anywhere in those, the message is an error.
            // (The EDNS record after them is not read, so cutting it goes unnoticed.)
            let m = parse(msg).unwrap();
            let q_end = 12 + m.questions[0].name.len() + 2 + 4;
            for n in 0..msg.len() {
                let r = parse(&msg[..n]);
                if n < q_end {
                    assert!(r.is_err(), "prefix {n} of {}", msg.len());
                }
            }
        }
    }

    /// A query for a name of `labels` (lengths), the root label after them.
    fn query_for(labels: &[usize]) -> Vec<u8> {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for &n in labels {
            m.push(n as u8);
            m.extend(std::iter::repeat_n(b'a', n));
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    /// RFC 1035 3.1: at most 255 octets, the root label's length byte included. A name of 256
    /// (labels of 255) was accepted; simple-dns, the reference of the dns_name_diff fuzz target,
    /// refuses it (fuzz/corpus/dns_name_diff/name-256-octets).
    #[test]
    fn name_length_counts_the_root_label() {
        let longest = query_for(&[63, 63, 63, 61]); // 64 * 3 + 62 + 1 = 255
        assert_eq!(parse(&longest).unwrap().questions[0].name.len(), 63 * 3 + 61 + 3);
        let over = query_for(&[63, 63, 63, 62]); // 256
        assert_eq!(over, include_bytes!("../../fuzz/corpus/dns_name_diff/name-256-octets"));
        assert_eq!(parse(&over), Err(DnsError::NameTooLong));
        // The same length reached through a compression pointer.
        let mut m = query_for(&[63, 63, 63]);
        let at = m.len() - 5;
        m.truncate(at);
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m[5] = 2; // a second question: 62 bytes, then a pointer to the first name
        m.push(62);
        m.extend(std::iter::repeat_n(b'b', 62));
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m), Err(DnsError::NameTooLong));
        m[at + 5] = 61;
        m.remove(at + 6);
        assert_eq!(parse(&m).unwrap().questions[1].name.len(), 61 + 63 * 3 + 3);
    }

    #[test]
    fn hostile_names() {
        let mut head = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        // A pointer to itself, and a forward pointer.
        let mut m = head.clone();
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m), Err(DnsError::PointerLoop));
        let mut m = head.clone();
        m.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(parse(&m), Err(DnsError::PointerLoop));
        // 300 bytes of labels.
        let mut m = head.clone();
        for _ in 0..5 {
            m.push(60);
            m.extend_from_slice(&[b'a'; 60]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&m), Err(DnsError::NameTooLong));
        // A dot and a control character inside one label stay inside it, escaped.
        head.extend_from_slice(b"\x11upd.kaspersky\ncom\x03com\x00\x00\x01\x00\x01");
        assert_eq!(parse(&head).unwrap().questions[0].name, "upd\\x2ekaspersky\\x0acom.com");
        assert_eq!(parse(&[0x40; 40]).unwrap_err(), DnsError::BadLabel);
    }
}
