//! Differential target: kavwatch's DNS name reader (`read_name` in src/proto/dns.rs, through
//! `kavwatch::proto::dns::parse`: labels, compression pointers, loops, length limit) against
//! the `simple-dns` crate's (`Packet::parse`), a separate implementation.
//!
//! Pass 1 compares every question name. The message is copied with its flags cleared (simple-dns
//! rejects the reserved Z bit) and with the answer, authority and additional counts set to 0 and
//! the question count capped at 16 (kavwatch reads 16 at most), so that both read the same
//! questions and nothing else. Agreement rule:
//! - both accept: the same questions, names equal and the same qtype. simple-dns's labels are
//!   rendered as kavwatch renders them: labels joined by '.', each byte through kavwatch's
//!   `push_normalized` (ASCII lowercase, bytes outside 0x21..=0x7e as `\xHH`), a '.' inside a label
//!   as `\x2e`. The lowercasing and escaping are kavwatch's on both sides: what is compared is
//!   which labels were read.
//! - one accepts, the other rejects: a bug, except for these policy differences:
//!   - simple-dns rejects a qtype or qclass it does not know (kavwatch reads any);
//!   - kavwatch follows at most 64 compression pointers per name (`MAX_POINTER_JUMPS`),
//!     simple-dns any number (each must point backwards, as in kavwatch, so it ends): a name
//!     reached through more than 64 pointers is refused by kavwatch only.
//!
//! Both cap a name at 255 octets on the wire, the root label's length byte included (RFC 1035
//! 3.1), and a label at 63 (0x40 and 0x80 label types are refused by both).
//!
//! Pass 2 parses the message as sent; when both accept it, the question names and the answers'
//! owner names must be equal (kavwatch reads 64 answers at most, so the first 64 are compared).

use kavwatch::proto::dns;
use kavwatch::proto::name::push_normalized;
use simple_dns::{Name, Packet, SimpleDnsError};

const MAX_QUESTIONS: u16 = 16;
const MAX_POINTER_JUMPS: usize = 64;

fn render(name: &Name<'_>) -> String {
    let mut s = String::new();
    for (i, label) in name.as_bytes().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in label {
            if b == b'.' {
                s.push_str("\\x2e");
            } else {
                push_normalized(&mut s, b);
            }
        }
    }
    s
}

/// The most compression pointers followed to read any of the first `qd` question names, or
/// `None` when the walk fails (truncated, forward pointer, reserved label type, a loop).
fn pointer_jumps(m: &[u8], qd: usize) -> Option<usize> {
    let mut pos = 12;
    let mut most = 0;
    for _ in 0..qd {
        let (mut at, mut jumps, mut end) = (pos, 0, None);
        loop {
            let len = *m.get(at)?;
            match len {
                0 => break,
                1..=63 => at += 1 + usize::from(len),
                0xc0..=0xff => {
                    let target = usize::from(u16::from_be_bytes([len & 0x3f, *m.get(at + 1)?]));
                    if target >= at || jumps > 10_000 {
                        return None;
                    }
                    end.get_or_insert(at + 2);
                    jumps += 1;
                    at = target;
                }
                _ => return None,
            }
        }
        most = most.max(jumps);
        pos = end.unwrap_or(at + 1) + 4;
    }
    Some(most)
}

pub fn dns_name_diff(data: &[u8]) {
    questions_only(data);
    as_sent(data);
}

fn questions_only(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let mut m = data.to_vec();
    let qd = u16::from_be_bytes([m[4], m[5]]).min(MAX_QUESTIONS);
    m[2..4].fill(0);
    m[4..6].copy_from_slice(&qd.to_be_bytes());
    m[6..12].fill(0);
    match (dns::parse(&m), Packet::parse(&m)) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours.questions.len(), theirs.questions.len(), "question count");
            for (i, (a, b)) in ours.questions.iter().zip(&theirs.questions).enumerate() {
                assert_eq!(a.name, render(&b.qname), "question {i} name");
                assert_eq!(a.qtype, u16::from(b.qtype), "question {i} qtype");
            }
        }
        (
            Ok(_),
            Err(SimpleDnsError::InvalidQType(_) | SimpleDnsError::InvalidQClass(_) | SimpleDnsError::InvalidClass(_)),
        ) => {}
        (Err(dns::DnsError::PointerLoop), Ok(_))
            if pointer_jumps(&m, usize::from(qd)).is_some_and(|j| j > MAX_POINTER_JUMPS) => {}
        (Ok(ours), Err(e)) => panic!("kavwatch accepts {:?}, simple-dns rejects: {e:?}", ours.questions),
        (Err(e), Ok(theirs)) => {
            let names: Vec<String> = theirs.questions.iter().map(|q| render(&q.qname)).collect();
            panic!("kavwatch rejects ({e:?}), simple-dns accepts {names:?}")
        }
        (Err(_), Err(_)) => {}
    }
}

fn as_sent(data: &[u8]) {
    let (Ok(ours), Ok(theirs)) = (dns::parse(data), Packet::parse(data)) else {
        return;
    };
    for (i, (a, b)) in ours.questions.iter().zip(&theirs.questions).enumerate() {
        assert_eq!(a.name, render(&b.qname), "as sent: question {i} name");
    }
    for (i, (a, b)) in ours.answers.iter().zip(&theirs.answers).enumerate() {
        assert_eq!(a.name, render(&b.name), "as sent: answer {i} owner name");
    }
}
