//! The reader stage: counts, decodes and defragments packets and passes on what matters (UDP on
//! port 53, TCP segments with data or a SYN/RST) to the workers, in batches that carry packet
//! headers plus the payloads (in the mapped capture file, or copied into an arena).
//!
//! `live` runs one [`Reader`] per capture thread; `analyze` runs one per decoder thread over
//! chunks of records ([`super::parallel`]), with the decisions that need packet order (DNS
//! answers seen so far, fragments) deferred to the sequencer.

use std::net::IpAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use memmap2::Mmap;

use crate::capture::file::RawPacket;
use crate::decode::counters::DecapCounters;
use crate::decode::defrag::Defragmenter;
use crate::decode::intern::LocalCache;
use crate::decode::{self, DecodeConfig, Decoded, Fragment, Outcome, Skip, TCP_RST, TCP_SYN, Transport, link};
use crate::flow::FlowKey;
use crate::observation::Position;
use crate::rules::matcher::Rules;
use crate::worker::PacketMeta;
use crate::worker::contain::{self, Stage};

use super::Stats;

const BATCH_PACKETS: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;

/// Packets for one worker. Payloads stay in the mapped capture file when they can (no copy);
/// others (pipes, gzip, reassembled fragments) are copied into `bytes`.
pub(crate) struct Batch {
    pub(crate) metas: Vec<PacketMeta>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) map: Option<Arc<Mmap>>,
    /// The latest packet time read before this batch's chunk (`analyze`): a meta's
    /// `clock_ns` is at least this ([`Batch::raise_clocks`]).
    pub(crate) clock_floor: i64,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch { metas: Vec::new(), bytes: Vec::new(), map: None, clock_floor: i64::MIN }
    }
}

impl Batch {
    /// Adds a packet whose payload lies in `map` (no copy) or elsewhere (copied into the
    /// arena). False, and nothing added, when it lies in a mapping other than the batch's.
    pub(crate) fn add(&mut self, mut meta: PacketMeta, payload: &[u8], map: Option<&Arc<Mmap>>) -> bool {
        meta.payload_len = payload.len() as u32;
        let offset = map
            .and_then(|m| (payload.as_ptr() as usize).checked_sub(m.as_ptr() as usize))
            .filter(|o| o + payload.len() <= map.map_or(0, |m| m.len()));
        match (map, offset) {
            (Some(m), Some(o)) => {
                if self.map.as_ref().is_some_and(|bm| !Arc::ptr_eq(bm, m)) {
                    return false;
                }
                self.map.get_or_insert_with(|| m.clone());
                meta.payload_mapped = true;
                meta.payload_start = o;
            }
            _ => {
                meta.payload_mapped = false;
                meta.payload_start = self.bytes.len();
                self.bytes.extend_from_slice(payload);
            }
        }
        self.metas.push(meta);
        true
    }

    /// Empties the batch for reuse.
    pub(crate) fn clear(&mut self) {
        self.metas.clear();
        self.bytes.clear();
        self.map = None;
        self.clock_floor = i64::MIN;
    }

    /// Brings every packet's clock up to the batch's floor: a decoder thread knows only the
    /// packet times it read itself.
    pub(crate) fn raise_clocks(&mut self) {
        if self.clock_floor != i64::MIN {
            for m in &mut self.metas {
                m.clock_ns = m.clock_ns.max(self.clock_floor);
            }
        }
    }

    pub(crate) fn payload(&self, m: &PacketMeta) -> &[u8] {
        let src: &[u8] = match (&self.map, m.payload_mapped) {
            (Some(map), true) => map,
            _ => &self.bytes,
        };
        &src[m.payload_start..m.payload_start + m.payload_len as usize]
    }
}

/// Where the reader puts the packets that matter: worker queues (here), or a worker in the
/// same thread (live capture on AF_PACKET, where the kernel already spread flows over threads).
pub(crate) trait PacketSink {
    /// `map` is the mapped file `payload` lies in, if any.
    fn push(&mut self, meta: PacketMeta, payload: &[u8], map: Option<&Arc<Mmap>>, hash: u64);

    /// A DNS response at `seq` gave these addresses for a matched name (deferred answers only).
    fn learned(&mut self, _seq: u64, _addrs: Vec<IpAddr>) {}
}

pub(crate) struct Dispatcher {
    senders: Vec<Sender<Batch>>,
    free: Receiver<Batch>,
    batches: Vec<Batch>,
}

impl PacketSink for Dispatcher {
    /// Queues a packet for its worker.
    fn push(&mut self, meta: PacketMeta, payload: &[u8], map: Option<&Arc<Mmap>>, hash: u64) {
        let w = (hash % self.senders.len() as u64) as usize;
        if !self.batches[w].add(meta, payload, map) {
            self.flush(w);
            self.batches[w].add(meta, payload, map);
        }
        let b = &self.batches[w];
        if b.metas.len() >= BATCH_PACKETS || b.bytes.len() >= BATCH_BYTES {
            self.flush(w);
        }
    }
}

impl Dispatcher {
    /// One queue per worker; used batches come back on `free`.
    pub(crate) fn new(senders: Vec<Sender<Batch>>, free: Receiver<Batch>) -> Dispatcher {
        let n = senders.len();
        Dispatcher { senders, free, batches: (0..n).map(|_| Batch::default()).collect() }
    }

    pub(crate) fn workers(&self) -> usize {
        self.senders.len()
    }

    pub(crate) fn flush(&mut self, w: usize) {
        if self.batches[w].metas.is_empty() {
            return;
        }
        let fresh = self.free.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batches[w], fresh);
        // A worker only stops when its channel closes, so send cannot fail while we run.
        let _ = self.senders[w].send(full);
    }
}

/// Addresses that DNS answers for names a rule matched have given, learned in capture order. A
/// connection that names nothing is worth keeping for DNS-answer attribution only if it goes to
/// one of them; deciding it in packet order keeps `analyze`'s memory flat and its output the
/// same for any number of workers. (The sink then checks the client too.)
#[derive(Default)]
pub(crate) struct AnsweredAddrs {
    set: rustc_hash::FxHashSet<IpAddr>,
    /// A bit per hash of the addresses in `set`: most packets go elsewhere, and one bit tells
    /// without hashing the address into the set.
    seen: AddrBits,
}

/// A one-hash Bloom filter of addresses (64 Kibit).
struct AddrBits(Box<[u64; 1024]>);

impl Default for AddrBits {
    fn default() -> AddrBits {
        AddrBits(Box::new([0; 1024]))
    }
}

impl AddrBits {
    #[inline]
    fn bit(addr: &IpAddr) -> usize {
        let v = match addr {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let b = a.to_bits();
                (b as u64) ^ ((b >> 64) as u64)
            }
        };
        (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize
    }
    fn set(&mut self, addr: &IpAddr) {
        let b = Self::bit(addr);
        self.0[b / 64] |= 1 << (b % 64);
    }
    #[inline]
    fn get(&self, addr: &IpAddr) -> bool {
        let b = Self::bit(addr);
        self.0[b / 64] & (1 << (b % 64)) != 0
    }
    fn clear(&mut self) {
        self.0.fill(0);
    }
}

/// Addresses remembered; past this the set starts over (the sink's own map is the precise one).
const ANSWERED_MAX: usize = 262_144;

/// The addresses a DNS message from port 53 gives for a name `rules` match: a response with
/// answers, parsed only then.
pub(crate) fn matched_answers(rules: &Rules, msg: &[u8]) -> Option<Vec<IpAddr>> {
    // QR set and at least one answer, before any parsing.
    if msg.len() < 12 || msg[2] & 0x80 == 0 || (msg[6] == 0 && msg[7] == 0) {
        return None;
    }
    // The questions first: most responses name nothing watched, and their answers need no reading.
    let q = crate::proto::dns::parse_questions(msg).ok()?;
    if !q.questions.iter().any(|q| rules.find_index(&q.name).is_some()) {
        return None;
    }
    let m = crate::proto::dns::parse(msg).ok()?;
    let addrs = m.answers.iter().filter_map(|a| match a.data {
        crate::proto::dns::AnswerData::A(v4) => Some(IpAddr::from(v4)),
        crate::proto::dns::AnswerData::Aaaa(v6) => Some(IpAddr::from(v6)),
        _ => None,
    });
    Some(addrs.collect())
}

impl AnsweredAddrs {
    /// The answers of one matched response.
    pub(crate) fn insert(&mut self, addrs: &[IpAddr]) {
        if self.set.len() >= ANSWERED_MAX {
            self.set.clear();
            self.seen.clear();
        }
        self.set.extend(addrs.iter().copied());
        for a in addrs {
            self.seen.set(a);
        }
    }

    pub(crate) fn contains(&self, addr: &IpAddr) -> bool {
        !self.set.is_empty() && self.seen.get(addr) && self.set.contains(addr)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// How the reader marks packets `attributable` (see [`AnsweredAddrs`]).
pub(crate) enum AnswerFilter {
    /// From the answers this reader saw (one reader sees every packet, in order).
    Inline { rules: Arc<Rules>, addrs: AnsweredAddrs },
    /// Left to the sequencer: a decoder thread sees only its chunks. Matched answers go to the
    /// sink's `learned`; every packet is passed on unmarked.
    Deferred { rules: Arc<Rules> },
}

/// Counts, decodes and defragments packets, and passes on what matters.
pub(crate) struct Reader<S> {
    pub(crate) stats: Stats,
    pub(crate) defrag: Defragmenter,
    pub(crate) dispatch: S,
    /// Packets per link type; a short list (captures have one or two), cheaper per packet than a map.
    link_counts: Vec<(u32, u64)>,
    seq: u64,
    pub(crate) first_ts: Option<i64>,
    pub(crate) last_ts: Option<i64>,
    /// `analyze` only: see [`AnsweredAddrs`]. Without it every nameless connection is kept.
    pub(crate) answered: Option<AnswerFilter>,
    /// `analyze`'s decoder threads: fragments are left to the sequencer, which reassembles
    /// them in packet order (their sequence numbers in `deferred_fragments`).
    pub(crate) defer_fragments: bool,
    pub(crate) deferred_fragments: Vec<u64>,
    /// UDP ports passed on besides DNS and QUIC: DHCP, and the `port` rules' (KSC).
    udp_ports: PortSet,
    /// Tunnels and overlays to decode.
    pub(crate) decode_cfg: DecodeConfig,
    decap: DecapCounters,
    tunnel_ids: LocalCache,
}

/// A set of ports, one bit each: a look-up per UDP packet costs a shift and a mask.
struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    fn new() -> PortSet {
        PortSet(Box::new([0; 1024]))
    }
    fn insert(&mut self, p: u16) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
}

impl<S: PacketSink> Reader<S> {
    pub(crate) fn new(dispatch: S) -> Reader<S> {
        Reader {
            stats: Stats::default(),
            defrag: Defragmenter::default(),
            dispatch,
            link_counts: Vec::new(),
            seq: 0,
            first_ts: None,
            last_ts: None,
            answered: None,
            defer_fragments: false,
            deferred_fragments: Vec::new(),
            decode_cfg: DecodeConfig::default(),
            decap: DecapCounters::default(),
            tunnel_ids: LocalCache::default(),
            udp_ports: {
                let mut p = PortSet::new();
                for port in [67, 68, 546, 547] {
                    p.insert(port);
                }
                p
            },
        }
    }

    /// Passes on UDP to the ports of the `port` rules (a rules reload does not change them).
    pub(crate) fn watch_port_rules(&mut self, rules: &Rules) {
        for r in rules.set.rules.iter().filter(|r| r.kind == crate::rules::model::MatchKind::Port) {
            for (port, proto) in r.patterns.iter().filter_map(|p| crate::rules::matcher::parse_port(p)) {
                if proto == decode::IPPROTO_UDP {
                    self.udp_ports.insert(port);
                }
            }
        }
    }

    /// Adds another reader's counters to this one's (a decoder thread's, at the end).
    pub(crate) fn absorb<T>(&mut self, o: &Reader<T>) {
        self.stats.add_counts(&o.stats);
        self.stats.workers.parser_panics.add(&o.stats.workers.parser_panics);
        for &(lt, n) in &o.link_counts {
            match self.link_counts.iter_mut().find(|(l, _)| *l == lt) {
                Some((_, c)) => *c += n,
                None => self.link_counts.push((lt, n)),
            }
        }
        self.decap.add(&o.decap);
        self.first_ts = self.first_ts.into_iter().chain(o.first_ts).min();
        self.last_ts = self.last_ts.max(o.last_ts);
    }

    /// The counters so far (link types and fragments filled in).
    pub(crate) fn stats_now(&self) -> Stats {
        let mut s = self.stats.clone();
        s.fragments = self.defrag.stats.clone();
        s.link_types = self.link_counts.iter().map(|(lt, c)| (link::linktype_name(*lt), *c)).collect();
        s.tunnels = self.decap.tunnel_stats();
        s.skipped.causes = self.decap.skip_causes();
        s.undecoded = self.decap.undecoded();
        s
    }

    /// [`Reader::packet`], with a panic in decoding (or, with a worker in this thread, in the
    /// worker) contained to this packet and counted.
    pub(crate) fn packet_contained(&mut self, p: &RawPacket<'_>, map: Option<&Arc<Mmap>>, input: u32, packet: u64) {
        if let Err(msg) = contain::contained(|| self.packet(p, map, input, packet)) {
            self.stats.workers.parser_panics.count(Stage::Decode);
            contain::report(Stage::Decode, &msg, p.data);
        }
    }

    pub(crate) fn packet(&mut self, p: &RawPacket<'_>, map: Option<&Arc<Mmap>>, input: u32, packet: u64) {
        self.seq += 1;
        let pos = Position { seq: self.seq, input, packet };
        self.stats.packets += 1;
        self.stats.bytes += p.orig_len as u64;
        match self.link_counts.iter_mut().find(|(lt, _)| *lt == p.linktype) {
            Some((_, n)) => *n += 1,
            None => self.link_counts.push((p.linktype, 1)),
        }
        self.first_ts = Some(self.first_ts.map_or(p.ts_ns, |t| t.min(p.ts_ns)));
        self.last_ts = Some(self.last_ts.map_or(p.ts_ns, |t| t.max(p.ts_ns)));
        if (p.data.len() as u32) < p.orig_len {
            self.stats.truncated += 1;
        }
        let outcome = decode::decode_with(&self.decode_cfg, p.linktype, p.data);
        self.decap.count(&outcome);
        // By reference: a decoded packet is 192 bytes, and moving it out cost a copy per packet.
        match &outcome {
            Outcome::Packet(d) => self.decoded(d, map, p.ts_ns, pos),
            Outcome::Fragment(_) if self.defer_fragments => self.deferred_fragments.push(pos.seq),
            Outcome::Fragment(f) => self.fragment(f, p.ts_ns, pos),
            Outcome::Skipped(s) => self.count_skip(s.kind()),
            Outcome::Malformed(_) => self.stats.malformed += 1,
        }
    }

    /// A fragment, in packet order: once its datagram is whole, that is decoded and passed on.
    pub(crate) fn fragment(&mut self, f: &Fragment<'_>, ts_ns: i64, pos: Position) {
        let Some(datagram) = self.defrag.add(f, ts_ns) else {
            return;
        };
        // The reassembled datagram may be a tunnel's (GRE, IP-in-IP, VXLAN...): decoding goes on.
        let inner = decode::decode_reassembled_with(&self.decode_cfg, f, &datagram);
        self.decap.count_reassembled(&inner, f.tunnels.len());
        match inner {
            Outcome::Packet(d) => self.decoded(&d, None, ts_ns, pos),
            Outcome::Malformed(_) => self.stats.malformed += 1,
            Outcome::Skipped(s) => self.count_skip(s.kind()),
            // A fragment inside a reassembled tunnel datagram: not reassembled again.
            Outcome::Fragment(_) => self.stats.skipped.not_tcp_udp += 1,
        }
    }

    /// Numbers the next packet `seq + 1` (a decoder thread starting a chunk).
    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    fn count_skip(&mut self, s: Skip) {
        match s {
            Skip::NotIp => self.stats.skipped.not_ip += 1,
            Skip::NotTcpUdp => self.stats.skipped.not_tcp_udp += 1,
            Skip::UnsupportedLink => self.stats.skipped.unsupported_link += 1,
        }
    }

    fn decoded(&mut self, d: &Decoded<'_>, map: Option<&Arc<Mmap>>, ts_ns: i64, pos: Position) {
        self.stats.decoded += 1;
        let wanted = match d.transport {
            Transport::Udp => {
                ((d.sport == 53 || d.dport == 53) && !d.payload.is_empty())
                    || crate::proto::quic::is_quic_long_header_initial(d.payload)
                    || self.udp_ports.contains(d.dport)
            }
            Transport::Tcp { flags, .. } => !d.payload.is_empty() || flags & (TCP_SYN | TCP_RST) != 0,
        };
        if !wanted {
            self.stats.skipped.not_inspected += 1;
            return;
        }
        let proto = match d.transport {
            Transport::Tcp { .. } => decode::IPPROTO_TCP,
            Transport::Udp => decode::IPPROTO_UDP,
        };
        let dns_response = d.sport == 53 && matches!(d.transport, Transport::Udp);
        let attributable = match &mut self.answered {
            None => true,
            Some(AnswerFilter::Inline { rules, addrs }) => {
                if dns_response && let Some(learned) = matched_answers(rules, d.payload) {
                    addrs.insert(&learned);
                }
                addrs.contains(&d.dst)
            }
            Some(AnswerFilter::Deferred { rules }) => {
                if dns_response && let Some(learned) = matched_answers(rules, d.payload) {
                    self.dispatch.learned(pos.seq, learned);
                }
                false
            }
        };
        let (key, reverse) = FlowKey::new(d.vlan, (d.src, d.sport), (d.dst, d.dport), proto);
        let hash = key.hash64();
        let meta = PacketMeta {
            ts_ns,
            clock_ns: self.last_ts.unwrap_or(ts_ns),
            pos,
            key,
            hash,
            reverse,
            src_mac: d.src_mac,
            transport: d.transport,
            tunnel: self.tunnel_ids.id(&d.tunnels),
            attributable,
            payload_mapped: false,
            payload_start: 0,
            payload_len: 0,
        };
        self.dispatch.push(meta, d.payload, map, hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit filter in front of the set never hides an address the set holds.
    #[test]
    fn answered_addrs_filter_has_no_false_negatives() {
        let mut a = AnsweredAddrs::default();
        let v4: Vec<IpAddr> = (0..5000u32).map(|i| IpAddr::from((0x0a00_0000 + i * 7919).to_be_bytes())).collect();
        let v6: Vec<IpAddr> = (0..5000u128).map(|i| IpAddr::from(((i << 64) | (i * 104_729)).to_be_bytes())).collect();
        assert!(!a.contains(&v4[0]));
        a.insert(&v4);
        a.insert(&v6);
        assert!(v4.iter().chain(&v6).all(|x| a.contains(x)));
        let others = (0..5000u32).map(|i| IpAddr::from((0xc0a8_0000 + i).to_be_bytes()));
        assert!(others.filter(|x| a.contains(x)).count() == 0, "the set decides");
    }
}
