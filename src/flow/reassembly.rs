//! One direction of a TCP stream, put back in order by sequence number, for the first few
//! KiB only: enough for a ClientHello, HTTP request headers or DNS messages.
//!
//! Handles out-of-order segments, retransmissions, overlaps (first copy wins) and a missing
//! SYN (the stream then starts at the lowest sequence number seen before anything is read).

/// Out-of-order segments held per stream. Real streams need a handful; a crafted one of many
/// tiny segments would otherwise cost far more memory than its bytes, and time on every arrival.
pub const MAX_PENDING_SEGMENTS: usize = 64;

/// Outcome of adding a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// New bytes were stored (in order or held for later).
    Stored,
    /// Nothing new: a retransmission or data already consumed.
    Duplicate,
    /// The stream would exceed its cap; the caller should give up on it.
    Overflow,
}

#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of `data[0]`.
    base: u32,
    /// `base` is fixed: known from the SYN, or something was consumed.
    anchored: bool,
    started: bool,
    data: Vec<u8>,
    /// Segments beyond the end of `data`, by sequence number.
    pending: Vec<(u32, Vec<u8>)>,
    pending_bytes: usize,
}

/// `a - b` as a signed distance in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

impl Stream {
    /// The stream's first byte has sequence number `seq` (the SYN's plus one).
    pub fn anchor(&mut self, seq: u32) {
        if !self.started {
            self.base = seq;
            self.started = true;
            self.anchored = true;
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Bytes held, for memory accounting.
    pub fn held(&self) -> usize {
        self.data.capacity() + self.pending_bytes
    }

    /// Adds a segment; `cap` bounds the bytes held from `base` on.
    pub fn add(&mut self, seq: u32, payload: &[u8], cap: usize) -> Added {
        if payload.is_empty() {
            return Added::Duplicate;
        }
        if !self.started {
            self.base = seq;
            self.started = true;
        }
        let mut off = seq_diff(seq, self.base);
        if off < 0 && !self.anchored && -off <= cap as i64 {
            if self.pending.len() >= MAX_PENDING_SEGMENTS {
                return Added::Overflow;
            }
            // No SYN and an earlier segment turns up: move the start back to it.
            let old = std::mem::take(&mut self.data);
            if !old.is_empty() {
                self.pending_bytes += old.len();
                self.pending.push((self.base, old));
            }
            self.base = seq;
            off = 0;
        }
        let (mut off, mut payload) = (off, payload);
        if off < 0 {
            // Starts before what we hold (already consumed): keep the new tail only.
            let skip = (-off) as usize;
            if skip >= payload.len() {
                return Added::Duplicate;
            }
            payload = &payload[skip..];
            off = 0;
        }
        let off = off as usize;
        if off + payload.len() > cap {
            return Added::Overflow;
        }
        if off > self.data.len() {
            if self.pending.iter().any(|(s, p)| *s == seq && p.len() >= payload.len()) {
                return Added::Duplicate;
            }
            if self.pending.len() >= MAX_PENDING_SEGMENTS {
                return Added::Overflow;
            }
            self.pending_bytes += payload.len();
            self.pending.push((self.base.wrapping_add(off as u32), payload.to_vec()));
            return Added::Stored;
        }
        let new_from = self.data.len() - off;
        if new_from >= payload.len() {
            return Added::Duplicate;
        }
        self.data.extend_from_slice(&payload[new_from..]);
        self.drain_pending();
        Added::Stored
    }

    /// Moves pending segments that now touch the end of `data` into it.
    fn drain_pending(&mut self) {
        loop {
            let end = self.data.len() as i64;
            let mut progressed = false;
            let mut i = 0;
            while i < self.pending.len() {
                let off = seq_diff(self.pending[i].0, self.base);
                let len = self.pending[i].1.len() as i64;
                if off <= end {
                    let (_, seg) = self.pending.swap_remove(i);
                    self.pending_bytes -= seg.len();
                    let from = end - off;
                    if from < len {
                        self.data.extend_from_slice(&seg[from.max(0) as usize..]);
                        progressed = true;
                    }
                } else {
                    i += 1;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Drops the first `n` bytes; `n` may reach past what has arrived (an HTTP body being
    /// skipped), in which case those bytes are dropped as they come.
    pub fn consume(&mut self, n: u64) {
        self.anchored = true;
        let n = n.min(i32::MAX as u64) as usize;
        if n <= self.data.len() {
            self.data.drain(..n);
        } else {
            self.data.clear();
        }
        self.base = self.base.wrapping_add(n as u32);
        let base = self.base;
        let mut freed = 0;
        self.pending.retain_mut(|(s, p)| {
            let off = seq_diff(*s, base);
            if off + p.len() as i64 <= 0 {
                freed += p.len();
                return false;
            }
            if off < 0 {
                freed += (-off) as usize;
                p.drain(..(-off) as usize);
                *s = base;
            }
            true
        });
        self.pending_bytes -= freed;
        self.drain_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        let mut s = Stream::default();
        s.anchor(1000);
        assert_eq!(s.add(1004, b"efgh", 64), Added::Stored);
        assert_eq!(s.data(), b"");
        assert_eq!(s.add(1000, b"abcd", 64), Added::Stored);
        assert_eq!(s.data(), b"abcdefgh");
        assert_eq!(s.add(1002, b"cdef", 64), Added::Duplicate);
        assert_eq!(s.add(1006, b"ghij", 64), Added::Stored);
        assert_eq!(s.data(), b"abcdefghij");
        assert_eq!(s.add(1000, &[b'x'; 100], 64), Added::Overflow);
    }

    #[test]
    fn many_tiny_out_of_order_segments_are_refused() {
        let mut s = Stream::default();
        s.anchor(0);
        for i in 0..MAX_PENDING_SEGMENTS as u32 {
            assert_eq!(s.add(2 + 2 * i, b"x", 16 * 1024), Added::Stored);
        }
        assert_eq!(s.add(1000, b"x", 16 * 1024), Added::Overflow);
        // Filling the hole still drains what was held.
        assert_eq!(s.add(0, b"ab", 16 * 1024), Added::Stored);
        assert_eq!(&s.data()[..3], b"abx");
        // Without a SYN, segments ever further back cannot pile up either.
        let mut s = Stream::default();
        let refused =
            (0..200u32).map(|i| s.add(10_000 - 2 * i, b"y", 16 * 1024)).filter(|a| *a == Added::Overflow).count();
        assert!(refused > 0 && s.held() < 4096, "{refused} refused, {} held", s.held());
    }

    #[test]
    fn missing_syn_rebases_to_earliest_segment() {
        let mut s = Stream::default();
        s.add(5004, b"efgh", 64);
        s.add(5000, b"abcd", 64);
        assert_eq!(s.data(), b"abcdefgh");
    }

    #[test]
    fn sequence_wraparound() {
        let mut s = Stream::default();
        s.anchor(u32::MAX - 1);
        s.add(0, b"cd", 64);
        s.add(u32::MAX - 1, b"ab", 64);
        assert_eq!(s.data(), b"abcd");
    }

    #[test]
    fn consume_past_the_end_skips_future_bytes() {
        let mut s = Stream::default();
        s.anchor(0);
        s.add(0, b"head", 64);
        s.add(10, b"klmnNEXT", 64);
        s.consume(14);
        assert_eq!(s.data(), b"NEXT");
        assert!(s.held() >= 4);
    }
}
