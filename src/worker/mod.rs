//! One worker: owns the flows hashed to it (TCP reassembly, DNS query/response pairing),
//! runs the protocol parsers and the rules, and collects observations. A panic in that work is
//! contained to the packet that caused it ([`contain`]).

pub mod contain;

use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::decode::intern::TunnelId;
use crate::decode::{IPPROTO_TCP, IPPROTO_UDP};
use crate::decode::{TCP_ACK, TCP_RST, TCP_SYN, Transport};
use crate::flow::FlowKey;
use crate::flow::reassembly::{Added, Stream};
use crate::flow::table::FlowTable;
use crate::observation::{
    Attribution, Detail, DhcpDetail, DnsAnswer, DnsDetail, HttpDetail, KscContact, KscDetail, Observation, Position,
    TlsDetail,
};
use crate::proto::{dhcp, dns, http, quic, tls};
use crate::rules::matcher::Rules;
use contain::{PanicStats, PlantedPanics, Stage};

/// Client bytes kept per TCP stream until the ClientHello or HTTP request headers are whole.
pub const STREAM_CAP: usize = 16 * 1024;
/// DNS over TCP: one whole message plus its length prefix.
const DNS_STREAM_CAP: usize = 65_537;
/// A DNS response counts as the answer to a query seen at most this long before it.
const DNS_ANSWER_WINDOW_NS: i64 = 10_000_000_000;
const DNS_PENDING_MAX: usize = 16_384;
/// Connections waiting for DNS-answer attribution that one worker keeps (about 1 KB each).
const CANDIDATES_MAX: usize = 131_072;
/// Security Center contacts and DHCP messages one worker keeps for the sink (about 450 bytes
/// each), each on its own: a flood of one must not crowd out the other.
const KSC_HELD_MAX: usize = 65_536;
const DHCP_HELD_MAX: usize = 65_536;
/// QUIC connections whose ClientHello is being put together from Initial packets.
const QUIC_PENDING_MAX: usize = 4096;
/// A QUIC ClientHello not whole within this time is given up.
const QUIC_WINDOW_NS: i64 = 10_000_000_000;
/// KSC datagrams: one observation per flow (addresses and ports: a flow always goes to the same
/// worker, so the count does not depend on the number of workers) and this time; a flood of
/// datagrams to a KSC port then costs a look-up each, not an observation each.
const KSC_DATAGRAM_EVERY_NS: i64 = 60_000_000_000;
const KSC_DATAGRAMS_MAX: usize = 65_536;
/// Kaspersky Security Center's wake-up port: the Administration Server sends, the agent listens.
const KSC_WAKE_UP_PORT: u16 = 15000;

/// A QUIC client's Initial packets so far: the keys of its first Initial (later ones may go to
/// a new connection id but keep them, RFC 9001 5.2) and the CRYPTO stream.
struct QuicPending {
    first_ns: i64,
    client: (IpAddr, u16),
    keys: quic::InitialKeys,
    crypto: quic::CryptoAssembler,
}

/// Limits of one worker's state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_flows: usize,
    pub flow_idle_ns: i64,
    /// Bytes all reassembly buffers of this worker may hold together.
    pub reassembly_bytes: usize,
}

impl Limits {
    /// One worker's share when `n` workers split these limits.
    pub fn per_worker(&self, n: usize) -> Limits {
        let n = n.max(1);
        Limits { max_flows: (self.max_flows / n).max(1024), reassembly_bytes: self.reassembly_bytes / n, ..*self }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_flows: 65_536, flow_idle_ns: 60_000_000_000, reassembly_bytes: 16 * 1024 * 1024 }
    }
}

/// A packet as the reader hands it over: decoded headers, payload in the batch's arena.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    pub ts_ns: i64,
    /// The latest packet time read so far (never goes back, even when the inputs are not in
    /// time order). Idle expiry runs on it, so that whether a flow expires depends only on
    /// its own packets, not on which other packets share its worker.
    pub clock_ns: i64,
    pub pos: Position,
    pub key: FlowKey,
    /// `key.hash64()`, computed once by the reader.
    pub hash: u64,
    /// The packet goes from `key.b` to `key.a`.
    pub reverse: bool,
    /// The sender's MAC address, when the link layer has one.
    pub src_mac: Option<[u8; 6]>,
    pub transport: Transport,
    /// The tunnels the packet came through ([`crate::decode::intern`]).
    pub tunnel: TunnelId,
    /// Goes to an address a matched DNS answer gave (or the reader does not know): a nameless
    /// connection is kept for attribution only then.
    pub attributable: bool,
    /// Where the payload is: in the batch's mapped capture file, or in its byte arena.
    pub payload_mapped: bool,
    pub payload_start: usize,
    pub payload_len: u32,
}

impl PacketMeta {
    /// A packet as tests, fuzz targets and benchmarks make it: at time `ts_ns` on its own clock,
    /// not tunnelled, attributable, its payload handed over directly (not through a batch).
    pub fn synthetic(
        ts_ns: i64,
        key: FlowKey,
        reverse: bool,
        src_mac: Option<[u8; 6]>,
        transport: Transport,
        payload_len: usize,
    ) -> PacketMeta {
        PacketMeta {
            ts_ns,
            clock_ns: ts_ns,
            pos: Position::default(),
            key,
            hash: key.hash64(),
            reverse,
            src_mac,
            transport,
            tunnel: TunnelId::NONE,
            attributable: true,
            payload_mapped: false,
            payload_start: 0,
            payload_len: payload_len as u32,
        }
    }

    pub fn src(&self) -> (IpAddr, u16) {
        if self.reverse { self.key.b } else { self.key.a }
    }
    pub fn dst(&self) -> (IpAddr, u16) {
        if self.reverse { self.key.a } else { self.key.b }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct WorkerStats {
    pub dns_messages: u64,
    pub dns_malformed: u64,
    pub tls_client_hellos: u64,
    pub tls_malformed: u64,
    pub http_requests: u64,
    pub http_malformed: u64,
    /// Names looked up in the rules.
    pub names_checked: u64,
    pub names_matched: u64,
    pub tcp_flows: u64,
    pub flows_evicted: u64,
    pub flows_expired: u64,
    /// Streams abandoned before their ClientHello or request was whole: too long (cap), worker's
    /// reassembly memory full, or flow evicted/expired/ended while incomplete.
    pub reassembly_gave_up: u64,
    pub dns_unanswered_evicted: u64,
    /// QUIC client Initial packets decrypted, and datagrams that looked like one but did not open.
    pub quic_initials: u64,
    pub quic_failed: u64,
    pub quic_client_hellos: u64,
    /// QUIC connections dropped before their ClientHello was whole (time out or table full).
    pub quic_gave_up: u64,
    /// ClientHellos without SNI or with ECH, HTTP requests to a bare address: left for DNS-answer attribution.
    pub attribution_candidates: u64,
    /// Such connections not kept because the worker held [`CANDIDATES_MAX`] already.
    pub attribution_candidates_dropped: u64,
    /// Such connections to an address no matched DNS answer had given (`analyze`): not kept.
    pub attribution_unmapped: u64,
    /// HTTP requests naming nothing whose path or User-Agent a rule matched.
    pub http_path_matched: u64,
    /// TCP connections and datagrams on Kaspersky Security Center ports that could be KSC
    /// (TLS on 13000, non-HTTP data on 14000...), handed to the sink's pattern check.
    pub ksc_contacts: u64,
    /// Contacts not kept because the worker held [`KSC_HELD_MAX`] already.
    pub ksc_contacts_dropped: u64,
    pub dhcp_messages: u64,
    pub dhcp_malformed: u64,
    /// DHCP messages with something to learn not kept: the worker held [`DHCP_HELD_MAX`] already.
    pub dhcp_dropped: u64,
    /// Packets whose parsing panicked (a bug): skipped, counted by protocol ([`contain`]).
    pub parser_panics: PanicStats,
    /// Times this worker's state was thrown away after a panic outside one packet's work, and
    /// the flows it was following then.
    pub worker_restarts: u64,
    pub flows_lost_to_restarts: u64,
    /// Live on AF_PACKET: tunnelled packets handed to the worker of their inner flow, and those
    /// processed in place because its queue was full (see `live::tunnel_forward`).
    pub tunnel_forwarded: u64,
    pub tunnel_forward_full: u64,
}

impl WorkerStats {
    pub fn add(&mut self, o: &WorkerStats) {
        self.dns_messages += o.dns_messages;
        self.dns_malformed += o.dns_malformed;
        self.tls_client_hellos += o.tls_client_hellos;
        self.tls_malformed += o.tls_malformed;
        self.http_requests += o.http_requests;
        self.http_malformed += o.http_malformed;
        self.names_checked += o.names_checked;
        self.names_matched += o.names_matched;
        self.tcp_flows += o.tcp_flows;
        self.flows_evicted += o.flows_evicted;
        self.flows_expired += o.flows_expired;
        self.reassembly_gave_up += o.reassembly_gave_up;
        self.dns_unanswered_evicted += o.dns_unanswered_evicted;
        self.quic_initials += o.quic_initials;
        self.quic_failed += o.quic_failed;
        self.quic_client_hellos += o.quic_client_hellos;
        self.quic_gave_up += o.quic_gave_up;
        self.attribution_candidates += o.attribution_candidates;
        self.attribution_candidates_dropped += o.attribution_candidates_dropped;
        self.attribution_unmapped += o.attribution_unmapped;
        self.http_path_matched += o.http_path_matched;
        self.ksc_contacts += o.ksc_contacts;
        self.ksc_contacts_dropped += o.ksc_contacts_dropped;
        self.dhcp_messages += o.dhcp_messages;
        self.dhcp_malformed += o.dhcp_malformed;
        self.dhcp_dropped += o.dhcp_dropped;
        self.parser_panics.add(&o.parser_panics);
        self.worker_restarts += o.worker_restarts;
        self.flows_lost_to_restarts += o.flows_lost_to_restarts;
        self.tunnel_forwarded += o.tunnel_forwarded;
        self.tunnel_forward_full += o.tunnel_forward_full;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    Unknown,
    Tls,
    Http,
    Dns,
    /// Nothing more to learn from this flow.
    Done,
}

#[derive(Debug)]
struct TcpFlow {
    /// Value of `PacketMeta::reverse` on the client's packets.
    client: Option<bool>,
    app: App,
    /// First payload sequence number per direction (index: `reverse as usize`), from SYN / SYN-ACK.
    isn: [Option<u32>; 2],
    streams: [Option<Box<Stream>>; 2],
    /// Segments seen per direction before we knew what the flow is.
    unknown_segments: [u8; 2],
}

impl TcpFlow {
    fn new() -> TcpFlow {
        TcpFlow { client: None, app: App::Unknown, isn: [None; 2], streams: [None, None], unknown_segments: [0; 2] }
    }

    fn held(&self) -> usize {
        self.streams.iter().flatten().map(|s| s.held()).sum()
    }

    fn incomplete(&self) -> bool {
        self.app != App::Done && self.streams.iter().flatten().any(|s| !s.data().is_empty())
    }
}

pub struct Worker {
    rules: Arc<Rules>,
    limits: Limits,
    flows: FlowTable<TcpFlow>,
    reassembly_held: usize,
    /// Matched DNS queries waiting for their response: (flow, id) -> observations.
    dns_pending: FxHashMap<(FlowKey, u16), Vec<Observation>>,
    dns_swept_at: i64,
    quic_pending: FxHashMap<FlowKey, QuicPending>,
    /// KSC datagrams: when each flow last gave an observation.
    ksc_datagrams: FxHashMap<FlowKey, i64>,
    /// Pending-attribution observations in `observations` (see [`Worker::take_observations`]),
    /// and KSC contacts and DHCP messages.
    candidates_held: usize,
    ksc_held: usize,
    dhcp_held: usize,
    pub observations: Vec<Observation>,
    pub stats: WorkerStats,
    /// What the current packet's work is parsing: names a contained panic.
    stage: Stage,
    planted: PlantedPanics,
    /// A packet carried the test marker of a worker panic ([`Worker::planted_worker_panic`]).
    planted_worker: bool,
}

fn has_port(key: &FlowKey, port: u16) -> bool {
    key.a.1 == port || key.b.1 == port
}

/// DHCPv4 (67, 68) or DHCPv6 (546, 547) by both ports, as clients, servers and relays use them.
fn dhcp_ports(m: &PacketMeta) -> bool {
    let (a, b) = (m.key.a.1.min(m.key.b.1), m.key.a.1.max(m.key.b.1));
    matches!((a, b), (67, 68) | (67, 67) | (546, 547) | (547, 547))
}

fn dhcpv4_detail(d: &dhcp::Dhcpv4) -> DhcpDetail {
    use dhcp::Dhcpv4Type as T;
    let ack = d.msg_type == Some(T::Ack);
    let release = matches!(d.msg_type, Some(T::Release | T::Decline));
    let address = match d.msg_type {
        Some(T::Ack) => d.yiaddr,
        Some(T::Release) => d.ciaddr,
        Some(T::Decline) => d.requested_address,
        _ => None,
    };
    DhcpDetail {
        ack,
        release,
        mac: d.chaddr.or_else(|| d.client_id_mac()),
        address: address.map(IpAddr::V4),
        hostname: d.host_name.clone().or_else(|| d.fqdn.as_ref().map(|f| f.name.clone())).filter(|n| !n.is_empty()),
        lease_secs: d.lease_time,
    }
}

fn dhcpv6_detail(d: &dhcp::Dhcpv6, m: &PacketMeta) -> DhcpDetail {
    use dhcp::Dhcpv6Type as T;
    let first = d.addresses().next();
    let ack = d.msg_type == T::Reply && first.is_some();
    let release = matches!(d.msg_type, T::Release | T::Decline);
    // A client's own message, sent directly, comes from its MAC.
    let from_client =
        matches!(d.msg_type, T::Solicit | T::Request | T::Renew | T::Rebind | T::Release) && d.relay.is_none();
    DhcpDetail {
        ack,
        release,
        mac: d.client_mac.or(if from_client { m.src_mac } else { None }),
        address: if ack || release { first.map(|a| IpAddr::V6(a.address)) } else { None },
        hostname: d.fqdn.as_ref().map(|f| f.name.clone()).filter(|n| !n.is_empty()),
        lease_secs: first.map(|a| a.valid_lifetime),
    }
}

impl Worker {
    pub fn new(rules: Arc<Rules>, limits: Limits) -> Worker {
        Worker {
            rules,
            limits,
            flows: FlowTable::new(limits.max_flows, limits.flow_idle_ns),
            reassembly_held: 0,
            dns_pending: FxHashMap::default(),
            dns_swept_at: i64::MIN,
            quic_pending: FxHashMap::default(),
            ksc_datagrams: FxHashMap::default(),
            candidates_held: 0,
            ksc_held: 0,
            dhcp_held: 0,
            observations: Vec::new(),
            stats: WorkerStats::default(),
            stage: Stage::Tcp,
            planted: PlantedPanics::from_env(),
            planted_worker: false,
        }
    }

    /// [`Worker::process`], with a panic contained: the packet is skipped and counted in
    /// `parser_panics`, its flow forgotten (its state may be half-updated), and the worker goes on.
    pub fn process_contained(&mut self, m: &PacketMeta, payload: &[u8]) {
        self.process_batch_contained(std::slice::from_ref(m), |_| payload);
    }

    /// [`Worker::process_contained`] for a batch, behind one panic boundary rather than one per
    /// packet (the boundary is cheap, not free): a panic costs the packet it happened in, and the
    /// batch goes on with the next one.
    pub fn process_batch_contained<'b>(&mut self, metas: &[PacketMeta], payload: impl Fn(&PacketMeta) -> &'b [u8]) {
        let mut next = 0;
        while next < metas.len() {
            let mut at = next;
            let r = contain::contained(|| {
                for (i, m) in metas[next..].iter().enumerate() {
                    at = next + i;
                    let data = payload(m);
                    self.stage = if matches!(m.transport, Transport::Udp) { Stage::Dns } else { Stage::Tcp };
                    self.process(m, data);
                    if self.planted.worker(data) {
                        self.planted_worker = true;
                    }
                }
            });
            let Err(msg) = r else { return };
            let m = &metas[at];
            self.stats.parser_panics.count(self.stage);
            contain::report(self.stage, &msg, payload(m));
            self.forget_after_panic(&m.key);
            next = at + 1;
        }
    }

    /// Forgets a flow whose state a panic may have left half-updated; reassembly memory is
    /// counted again from what the flows hold (a stream may have been out of its flow).
    fn forget_after_panic(&mut self, key: &FlowKey) {
        self.flows.remove(key);
        self.quic_pending.remove(key);
        self.dns_pending.retain(|(k, _), _| k != key);
        self.reassembly_held = self.flows.iter_mut_oldest_first().map(|(_, f)| f.held()).sum();
    }

    /// Test hook: panics, outside the per-packet containment, once a packet carried the marker
    /// of `KAVWATCH_TEST_PANIC_WORKER` (see [`contain::PlantedPanics`]).
    pub fn planted_worker_panic(&mut self) {
        if std::mem::take(&mut self.planted_worker) {
            panic!("planted worker panic (KAVWATCH_TEST_PANIC_WORKER)");
        }
    }

    /// After a panic outside one packet's work: the state is thrown away and the worker starts
    /// over with the same rules and limits; observations already made and counters are kept,
    /// and the flows it was following are counted as lost.
    pub fn restart_after_panic(&mut self, message: &str) {
        let lost = self.flows.len() as u64;
        let (evicted, expired) = (self.flows.evicted, self.flows.expired);
        let mut stats = std::mem::take(&mut self.stats);
        let mut observations = std::mem::take(&mut self.observations);
        for (_, mut obs) in self.dns_pending.drain() {
            observations.append(&mut obs);
        }
        stats.worker_restarts += 1;
        stats.flows_lost_to_restarts += lost;
        contain::report(Stage::Worker, message, &[]);
        *self = Worker::new(self.rules.clone(), self.limits);
        (self.flows.evicted, self.flows.expired) = (evicted, expired);
        self.stats = stats;
        self.observations = observations;
    }

    pub fn process(&mut self, m: &PacketMeta, payload: &[u8]) {
        // Expire first: a flow's fate then depends only on its own packets' clocks.
        self.maintain(m.clock_ns);
        match m.transport {
            Transport::Udp => {
                if has_port(&m.key, 53) && !payload.is_empty() {
                    self.dns_message(m, payload, m.ts_ns);
                } else if quic::is_quic_long_header_initial(payload) || self.quic_pending.contains_key(&m.key) {
                    self.quic_datagram(m, payload);
                } else if dhcp_ports(m) {
                    self.dhcp_message(m, payload);
                } else if !payload.is_empty() && self.rules.find_port(m.dst().1, IPPROTO_UDP).is_some() {
                    self.ksc_datagram(m);
                }
            }
            Transport::Tcp { seq, flags } => self.tcp(m, seq, flags, payload),
        }
    }

    /// Replaces the rules (live reload). Matched DNS queries still waiting for their answer are
    /// handed out first: their rule numbers belong to the old rules.
    pub fn set_rules(&mut self, rules: Arc<Rules>) {
        for (_, mut obs) in self.dns_pending.drain() {
            self.observations.append(&mut obs);
        }
        self.rules = rules;
    }

    /// Hands over what was found so far (live capture ships it every 200 ms).
    pub fn take_observations(&mut self) -> Vec<Observation> {
        (self.candidates_held, self.ksc_held, self.dhcp_held) = (0, 0, 0);
        std::mem::take(&mut self.observations)
    }

    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// The counters so far, flow table counters included.
    pub fn stats_now(&self) -> WorkerStats {
        let mut s = self.stats.clone();
        s.flows_evicted = self.flows.evicted;
        s.flows_expired = self.flows.expired;
        s
    }

    /// Expires idle flows and unanswered DNS queries as of `now` (packet time). Packets call it;
    /// live capture also calls it when the link is quiet.
    pub fn maintain(&mut self, now: i64) {
        let (stats, held) = (&mut self.stats, &mut self.reassembly_held);
        self.flows.maintain(now, &mut |_, f: TcpFlow| {
            if f.incomplete() {
                stats.reassembly_gave_up += 1;
            }
            *held -= f.held().min(*held);
        });
        if now.saturating_sub(self.dns_swept_at) > 1_000_000_000 {
            self.dns_swept_at = now;
            let mut expired = Vec::new();
            self.dns_pending.retain(|_, obs| {
                let keep = obs.first().is_some_and(|o| now.saturating_sub(o.ts_ns) <= DNS_ANSWER_WINDOW_NS);
                if !keep {
                    expired.append(obs);
                }
                keep
            });
            self.observations.append(&mut expired);
            let before = self.quic_pending.len();
            self.quic_pending.retain(|_, q| now.saturating_sub(q.first_ns) <= QUIC_WINDOW_NS);
            self.stats.quic_gave_up += (before - self.quic_pending.len()) as u64;
        }
    }

    /// A UDP datagram that may carry a QUIC client's Initial packets: decrypt them, put the
    /// CRYPTO stream together, and read the ClientHello once it is whole.
    fn quic_datagram(&mut self, m: &PacketMeta, payload: &[u8]) {
        self.stage = Stage::Quic;
        let pending = self.quic_pending.get(&m.key);
        // Only the client's packets: the server's Initials use other keys.
        if pending.is_some_and(|q| q.client != m.src()) {
            return;
        }
        let parsed = match pending {
            Some(q) => quic::parse_datagram_with_keys(payload, &q.keys),
            None => quic::parse_datagram(payload),
        };
        let dg = match parsed {
            Ok(dg) => dg,
            Err(_) => {
                self.stats.quic_failed += 1;
                return;
            }
        };
        if !self.quic_pending.contains_key(&m.key) {
            if self.quic_pending.len() >= QUIC_PENDING_MAX {
                // Under a flood of Initials, start over rather than scan: counted.
                self.stats.quic_gave_up += self.quic_pending.len() as u64;
                self.quic_pending.clear();
            }
            let first = &dg.initials[0];
            let Ok(keys) = quic::InitialKeys::client(first.version, first.dcid.as_bytes()) else {
                self.stats.quic_failed += 1;
                return;
            };
            let q = QuicPending { first_ns: m.ts_ns, client: m.src(), keys, crypto: quic::CryptoAssembler::new() };
            self.quic_pending.insert(m.key, q);
        }
        let q = self.quic_pending.get_mut(&m.key).expect("inserted above");
        self.stats.quic_initials += dg.initials.len() as u64;
        for p in &dg.initials {
            if q.crypto.add_packet(p).is_err() {
                self.stats.quic_failed += 1;
                self.quic_pending.remove(&m.key);
                self.stats.quic_gave_up += 1;
                return;
            }
        }
        let hello = match q.crypto.client_hello() {
            Ok(Some(msg)) => quic::as_tls_record(msg).ok().and_then(|r| tls::parse_client_hello(&r).ok()),
            Ok(None) => return,
            Err(_) => None,
        };
        let version = q.keys.version();
        self.quic_pending.remove(&m.key);
        let Some(ch) = hello else {
            self.stats.quic_failed += 1;
            return;
        };
        self.stats.quic_client_hellos += 1;
        self.client_hello(m, &ch, Some(version));
    }

    /// A ClientHello (over TCP, or QUIC when `quic_version` is set): an observation if a rule matches its SNI.
    fn client_hello(&mut self, m: &PacketMeta, ch: &tls::ClientHello, quic_version: Option<u32>) {
        if let Some(rule) = self.client_hello_kept(m, ch, quic_version) {
            self.client_hello_observed(m, ch, rule, quic_version);
        }
    }

    /// Whether a ClientHello becomes an observation (`Some`, with the rule its name matched, or
    /// `None` for an attribution candidate); a port rule's Security Center contact is recorded
    /// here. Needs only the name and ECH flag ([`tls::parse_client_hello_name`]).
    fn client_hello_kept(
        &mut self,
        m: &PacketMeta,
        ch: &tls::ClientHello,
        quic_version: Option<u32>,
    ) -> Option<Option<u32>> {
        let rule = ch.sni.as_deref().and_then(|sni| self.match_name(sni));
        if rule.is_none() && quic_version.is_none() && self.rules.find_port(m.dst().1, IPPROTO_TCP).is_some() {
            self.ksc_contact(m, KscContact::Tls);
            return None;
        }
        // No name, or only an ECH provider's public one: the address may still say who it is.
        let candidate = rule.is_none() && (ch.sni.is_none() || ch.ech);
        if rule.is_none() && !candidate {
            return None;
        }
        if candidate && !m.attributable {
            // What `candidate` would count, before building a detail it would throw away
            // (Chrome's GREASE ECH makes most of its ClientHellos candidates).
            self.stats.attribution_unmapped += 1;
            return None;
        }
        Some(rule)
    }

    /// The observation of a kept ClientHello (fully parsed).
    fn client_hello_observed(
        &mut self,
        m: &PacketMeta,
        ch: &tls::ClientHello,
        rule: Option<u32>,
        quic_version: Option<u32>,
    ) {
        let mut versions = ch.supported_versions.clone();
        if versions.is_empty() {
            versions.push(ch.legacy_version);
        }
        let mut detail = TlsDetail {
            versions,
            alpn: ch.alpn.clone(),
            ech: ch.ech,
            ja4: String::new(),
            ja3: String::new(),
            ja3_full: String::new(),
            records: if quic_version.is_some() { 0 } else { ch.records },
            quic_version,
            unfingerprinted: None,
        };
        match (rule, &ch.sni) {
            (Some(rule), Some(sni)) => {
                // Fingerprints cost SHA-256, MD5 and formatting: only for what is kept.
                detail.fingerprint(ch);
                let o = Self::observation(m, m.ts_ns, m.src().0, sni, rule, Detail::Tls(detail));
                self.observations.push(o);
            }
            _ => {
                detail.unfingerprinted = Some(Box::new(ch.clone()));
                self.candidate(m, ch.sni.as_deref(), Detail::Tls(detail))
            }
        }
    }

    /// Flushes what is still waiting at the end of the input.
    pub fn finish(&mut self) {
        let (stats, held) = (&mut self.stats, &mut self.reassembly_held);
        for (_, f) in self.flows.drain() {
            if f.incomplete() {
                stats.reassembly_gave_up += 1;
            }
            *held -= f.held().min(*held);
        }
        self.stats.flows_evicted = self.flows.evicted;
        self.stats.flows_expired = self.flows.expired;
        for (_, mut obs) in self.dns_pending.drain() {
            self.observations.append(&mut obs);
        }
    }

    fn observe(&mut self, m: &PacketMeta, ts_ns: i64, host: IpAddr, name: &str, detail: Detail) -> Option<Observation> {
        let rule = self.match_name(name)?;
        Some(Self::observation(m, ts_ns, host, name, rule, detail))
    }

    /// The rule a name matches, counted.
    fn match_name(&mut self, name: &str) -> Option<u32> {
        self.stats.names_checked += 1;
        let rule = self.rules.find_index(name)?;
        self.stats.names_matched += 1;
        Some(rule)
    }

    /// A connection whose packet names nothing a rule matched: kept for attribution by a DNS answer
    /// (the client is the packet's source; `wire` is the name it carried, if any).
    fn candidate(&mut self, m: &PacketMeta, wire: Option<&str>, detail: Detail) {
        if !m.attributable {
            self.stats.attribution_unmapped += 1;
            return;
        }
        // Held until the sink has read the DNS answers: bounded, since `analyze` keeps them to the end.
        if self.candidates_held >= CANDIDATES_MAX {
            self.stats.attribution_candidates_dropped += 1;
            return;
        }
        self.candidates_held += 1;
        let mut o = Self::observation(m, m.ts_ns, m.src().0, wire.unwrap_or(""), 0, detail);
        o.attribution = Attribution::Pending;
        o.wire_name = wire.map(str::to_string);
        self.stats.attribution_candidates += 1;
        self.observations.push(o);
    }

    fn observation(m: &PacketMeta, ts_ns: i64, host: IpAddr, name: &str, rule: u32, detail: Detail) -> Observation {
        let (src, dst) = (m.src(), m.dst());
        Observation {
            ts_ns,
            pos: m.pos,
            vlan: m.key.vlan,
            tunnel: m.tunnel,
            src: src.0,
            sport: src.1,
            dst: dst.0,
            dport: dst.1,
            proto: m.key.proto,
            host,
            // The observed packet came from the client unless the client is its destination.
            host_mac: if host == src.0 { m.src_mac } else { None },
            domain: name.to_string(),
            rule,
            detail,
            attribution: Attribution::Name,
            wire_name: None,
            relayed: false,
            fallback_rule: None,
            hostname: None,
            lease_mac: None,
        }
    }

    /// A TCP connection or datagram on a KSC port: for the sink's pattern check (`ksc`), which
    /// alone can tell an agent from software that happens to use the port.
    fn ksc_contact(&mut self, m: &PacketMeta, contact: KscContact) {
        let ((src, _), (dst, dport)) = (m.src(), m.dst());
        // A wake-up goes from the server to the agent; every other contact from the agent.
        let (server, agent) = if contact == KscContact::WakeUp { (src, dst) } else { (dst, src) };
        if self.ksc_held >= KSC_HELD_MAX {
            self.stats.ksc_contacts_dropped += 1;
            return;
        }
        self.ksc_held += 1;
        self.stats.ksc_contacts += 1;
        let detail = Detail::Ksc(KscDetail { contact, server, agent, port: dport });
        let mut o = Self::observation(m, m.ts_ns, agent, "", 0, detail);
        o.attribution = Attribution::Pending;
        self.observations.push(o);
    }

    /// A datagram to a KSC UDP port: a wake-up (to 15000) or an agent's report; at most one
    /// observation per flow a minute.
    fn ksc_datagram(&mut self, m: &PacketMeta) {
        let dport = m.dst().1;
        if self.ksc_datagrams.get(&m.key).is_some_and(|t| (0..KSC_DATAGRAM_EVERY_NS).contains(&(m.ts_ns - t))) {
            return;
        }
        if self.ksc_datagrams.len() >= KSC_DATAGRAMS_MAX {
            self.ksc_datagrams.clear();
        }
        self.ksc_datagrams.insert(m.key, m.ts_ns);
        let contact = if dport == KSC_WAKE_UP_PORT { KscContact::WakeUp } else { KscContact::Datagram };
        self.ksc_contact(m, contact);
    }

    /// DHCPv4 (67/68) or DHCPv6 (546/547): who the client says it is and which address it holds,
    /// for the sink's lease book. Bounded like the other observations held for the sink.
    fn dhcp_message(&mut self, m: &PacketMeta, payload: &[u8]) {
        self.stage = Stage::Dhcp;
        self.stats.dhcp_messages += 1;
        let detail = match m.key.a.0 {
            IpAddr::V4(_) => dhcp::parse_dhcpv4(payload).map(|d| dhcpv4_detail(&d)),
            IpAddr::V6(_) => dhcp::parse_dhcpv6(payload).map(|d| dhcpv6_detail(&d, m)),
        };
        let Ok(detail) = detail else {
            self.stats.dhcp_malformed += 1;
            return;
        };
        if detail.address.is_none() && detail.hostname.is_none() {
            return; // nothing to learn (a DISCOVER without a name, an OFFER)
        }
        if self.dhcp_held >= DHCP_HELD_MAX {
            self.stats.dhcp_dropped += 1;
            return;
        }
        self.dhcp_held += 1;
        let host = detail.address.unwrap_or(m.src().0);
        let mut o = Self::observation(m, m.ts_ns, host, "", 0, Detail::Dhcp(detail));
        o.attribution = Attribution::Pending;
        self.observations.push(o);
    }

    fn dns_message(&mut self, m: &PacketMeta, msg: &[u8], ts_ns: i64) {
        self.stage = Stage::Dns;
        self.planted.parser(msg);
        self.stats.dns_messages += 1;
        let Ok(d) = dns::parse(msg) else {
            self.stats.dns_malformed += 1;
            return;
        };
        let key = (m.key, d.id);
        if !d.is_response {
            let mut found = Vec::new();
            for q in &d.questions {
                let detail =
                    DnsDetail { id: d.id, qtype: q.qtype, rcode: None, answers: Vec::new(), response_only: false };
                if let Some(o) = self.observe(m, ts_ns, m.src().0, &q.name, Detail::Dns(detail)) {
                    found.push(o);
                }
            }
            if found.is_empty() {
                return;
            }
            if self.dns_pending.len() >= DNS_PENDING_MAX && !self.dns_pending.contains_key(&key) {
                self.evict_older_pending();
            }
            // A retransmitted query with the same id: the earlier one goes out unanswered.
            if let Some(mut old) = self.dns_pending.insert(key, found) {
                self.observations.append(&mut old);
            }
            return;
        }
        let answers: Vec<DnsAnswer> = d
            .answers
            .iter()
            .filter_map(|a| {
                let data = match &a.data {
                    dns::AnswerData::A(ip) => ip.to_string(),
                    dns::AnswerData::Aaaa(ip) => ip.to_string(),
                    dns::AnswerData::Cname(n) => n.clone(),
                    dns::AnswerData::Other => return None,
                };
                Some(DnsAnswer { name: a.name.clone(), rtype: a.rtype, data, ttl: a.ttl })
            })
            .collect();
        if let Some(mut pending) = self.dns_pending.remove(&key) {
            let in_window = pending
                .first()
                .is_some_and(|o| ts_ns.saturating_sub(o.ts_ns) <= DNS_ANSWER_WINDOW_NS && ts_ns >= o.ts_ns);
            if in_window {
                for o in &mut pending {
                    if let Detail::Dns(dd) = &mut o.detail {
                        dd.rcode = Some(d.rcode);
                        dd.answers = answers.clone();
                    }
                }
                self.observations.append(&mut pending);
                return;
            }
            self.observations.append(&mut pending);
        }
        // A response without its query: the client is the response's destination.
        for q in &d.questions {
            let detail = DnsDetail {
                id: d.id,
                qtype: q.qtype,
                rcode: Some(d.rcode),
                answers: answers.clone(),
                response_only: true,
            };
            if let Some(o) = self.observe(m, ts_ns, m.dst().0, &q.name, Detail::Dns(detail)) {
                self.observations.push(o);
            }
        }
    }

    /// Full: the older half of the waiting queries go out unanswered, in one sort (a flood of
    /// unanswered queries must not cost a scan per packet).
    fn evict_older_pending(&mut self) {
        let mut by_age: Vec<_> =
            self.dns_pending.iter().map(|(k, v)| (v.first().map(|o| o.sort_key()).unwrap_or_default(), *k)).collect();
        by_age.sort_unstable_by_key(|(age, _)| *age);
        for (_, k) in by_age.iter().take(by_age.len().div_ceil(2)) {
            if let Some(mut old) = self.dns_pending.remove(k) {
                self.observations.append(&mut old);
                self.stats.dns_unanswered_evicted += 1;
            }
        }
    }

    fn tcp(&mut self, m: &PacketMeta, seq: u32, flags: u8, payload: &[u8]) {
        let dir = m.reverse as usize;
        let syn = flags & TCP_SYN != 0;
        if payload.is_empty() && !syn {
            if flags & TCP_RST != 0 {
                self.drop_flow(&m.key);
            }
            return;
        }
        let new_connection = syn && flags & TCP_ACK == 0;
        if new_connection && self.flows.get_mut(&m.key).is_some() {
            // The addresses and ports are reused by a new connection: start over.
            self.drop_flow(&m.key);
        }
        let (flow, created) = self.flows.get_or_insert_with(&m.key, TcpFlow::new);
        if created {
            self.stats.tcp_flows += 1;
        }
        if syn {
            flow.isn[dir] = Some(seq.wrapping_add(1));
            if flags & TCP_ACK == 0 {
                flow.client = Some(m.reverse);
            } else if flow.client.is_none() {
                flow.client = Some(!m.reverse);
            }
            // The SYN's own sequence number is not data.
            if payload.is_empty() {
                return;
            }
        }
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        if flow.app == App::Done {
            return;
        }
        if flow.app == App::Unknown && has_port(&m.key, 53) {
            flow.app = App::Dns;
        }
        if flow.app == App::Dns {
            self.feed(m, dir, seq, payload, DNS_STREAM_CAP);
            self.dns_over_tcp(m, dir);
            return;
        }
        if flow.client.is_some_and(|c| c != m.reverse) {
            return; // the server's side: nothing we read
        }
        // The usual TLS connection: a ClientHello whole in the first segment of a fresh stream,
        // read where it lies instead of copied into a stream first. Only where feeding it would
        // put it at the stream's start within every limit, so the outcome is the same.
        if flow.app == App::Unknown
            && flow.streams[dir].is_none()
            && flow.isn[dir].is_none_or(|isn| isn == seq)
            && payload.len() <= STREAM_CAP
            && self.reassembly_held + payload.len() <= self.limits.reassembly_bytes
            && tls::looks_like_tls(payload)
        {
            // What the stream's first segment would decide below.
            flow.app = App::Tls;
            flow.client = Some(m.reverse);
            self.stage = Stage::Tls;
            self.planted.parser(payload);
            let named = tls::parse_client_hello_name(payload);
            if !matches!(named, Err(tls::TlsError::Incomplete)) {
                self.tls_hello(m, named, |_| tls::parse_client_hello(payload).ok());
                return;
            }
        }
        if !self.feed(m, dir, seq, payload, STREAM_CAP) {
            return;
        }
        let Some(flow) = self.flows.get_mut(&m.key) else {
            return;
        };
        if flow.app == App::Unknown {
            let start = flow.streams[dir].as_ref().map_or(&[][..], |s| s.data());
            if start.is_empty() {
                return; // only out-of-order data so far
            }
            if tls::looks_like_tls(start) {
                flow.app = App::Tls;
            } else if http::looks_like_request(start) {
                flow.app = App::Http;
            } else if self.rules.find_port(m.dst().1, IPPROTO_TCP).is_some() {
                // Neither TLS nor HTTP on a KSC port (legacy 14000, KSN proxy 13111).
                self.done(m);
                self.ksc_contact(m, KscContact::Tcp);
                return;
            } else {
                flow.unknown_segments[dir] = flow.unknown_segments[dir].saturating_add(1);
                // Without a SYN the first segment may still be on its way; give it a little time.
                if flow.isn[dir].is_some() || flow.unknown_segments[dir] >= 4 {
                    self.done(m);
                }
                return;
            }
            flow.client = Some(m.reverse);
        }
        match flow.app {
            App::Tls => self.tls(m, dir),
            App::Http => self.http(m, dir),
            _ => {}
        }
    }

    /// Adds a segment to a direction's stream, within the per-stream cap and the worker's
    /// memory budget; false if the flow was given up.
    fn feed(&mut self, m: &PacketMeta, dir: usize, seq: u32, payload: &[u8], cap: usize) -> bool {
        if self.reassembly_held + payload.len() > self.limits.reassembly_bytes {
            self.reclaim(&m.key);
        }
        let budget_full = self.reassembly_held + payload.len() > self.limits.reassembly_bytes;
        let Some(flow) = self.flows.get_mut(&m.key) else {
            return false;
        };
        let isn = flow.isn[dir];
        let stream = flow.streams[dir].get_or_insert_with(|| {
            let mut s = Box::<Stream>::default();
            if let Some(isn) = isn {
                s.anchor(isn);
            }
            s
        });
        let before = stream.held();
        let added = if budget_full { Added::Overflow } else { stream.add(seq, payload, cap) };
        let after = stream.held();
        self.reassembly_held = self.reassembly_held + after - before.min(after);
        if added == Added::Overflow {
            self.stats.reassembly_gave_up += 1;
            self.done(m);
            return false;
        }
        true
    }

    /// Reassembly memory is full: give up the streams of the least recently used flows
    /// (down to three quarters of the budget, so this runs rarely), never `keep`'s. A flood of
    /// half-sent ClientHellos then costs old flows, not the new ones.
    fn reclaim(&mut self, keep: &FlowKey) {
        let target = self.limits.reassembly_bytes / 4 * 3;
        let mut held = self.reassembly_held;
        let mut gave_up = 0;
        for (k, f) in self.flows.iter_mut_oldest_first() {
            if held <= target {
                break;
            }
            if k == keep || f.held() == 0 {
                continue;
            }
            held -= f.held().min(held);
            if f.incomplete() {
                gave_up += 1;
            }
            f.app = App::Done;
            f.streams = [None, None];
        }
        self.reassembly_held = held;
        self.stats.reassembly_gave_up += gave_up;
    }

    /// Marks a flow finished and frees its buffers; later packets of it cost one look-up.
    fn done(&mut self, m: &PacketMeta) {
        if let Some(flow) = self.flows.get_mut(&m.key) {
            let held = flow.held();
            flow.app = App::Done;
            flow.streams = [None, None];
            self.reassembly_held -= held.min(self.reassembly_held);
        }
    }

    fn drop_flow(&mut self, key: &FlowKey) {
        if let Some(f) = self.flows.remove(key) {
            if f.incomplete() {
                self.stats.reassembly_gave_up += 1;
            }
            self.reassembly_held -= f.held().min(self.reassembly_held);
        }
    }

    fn take_stream(&mut self, key: &FlowKey, dir: usize) -> Option<Box<Stream>> {
        self.flows.get_mut(key)?.streams[dir].take()
    }

    fn put_stream(&mut self, key: &FlowKey, dir: usize, s: Box<Stream>, before: usize) {
        let after = s.held();
        self.reassembly_held = (self.reassembly_held + after).saturating_sub(before);
        if let Some(f) = self.flows.get_mut(key)
            && f.app != App::Done
        {
            f.streams[dir] = Some(s);
            return;
        }
        self.reassembly_held -= after.min(self.reassembly_held);
    }

    fn tls(&mut self, m: &PacketMeta, dir: usize) {
        let Some(data) = self.flows.get_mut(&m.key).and_then(|f| f.streams[dir].as_ref()).map(|s| s.data()) else {
            return;
        };
        self.stage = Stage::Tls;
        self.planted.parser(data);
        let named = tls::parse_client_hello_name(data);
        self.tls_hello(m, named, |w| {
            let data = w.flows.get_mut(&m.key).and_then(|f| f.streams[dir].as_ref()).map(|s| s.data())?;
            tls::parse_client_hello(data).ok()
        });
    }

    /// What the start of a client's TLS stream comes to, parsed by name; `full` parses it again
    /// in full (versions, ALPN, fingerprints) when it is kept, which succeeds wherever the
    /// name-only parse did.
    fn tls_hello(
        &mut self,
        m: &PacketMeta,
        named: Result<tls::ClientHello, tls::TlsError>,
        full: impl FnOnce(&mut Self) -> Option<tls::ClientHello>,
    ) {
        match named {
            Err(tls::TlsError::Incomplete) => {}
            Err(_) => {
                self.stats.tls_malformed += 1;
                self.done(m);
            }
            Ok(named) => {
                self.stats.tls_client_hellos += 1;
                let Some(rule) = self.client_hello_kept(m, &named, None) else {
                    self.done(m);
                    return;
                };
                let ch = full(self).unwrap_or(named);
                self.done(m);
                self.client_hello_observed(m, &ch, rule, None);
            }
        }
    }

    fn http(&mut self, m: &PacketMeta, dir: usize) {
        let Some(mut stream) = self.take_stream(&m.key, dir) else {
            return;
        };
        let before = stream.held();
        self.stage = Stage::Http;
        loop {
            if stream.data().is_empty() {
                break;
            }
            self.planted.parser(stream.data());
            match http::parse_request(stream.data()) {
                Err(http::HttpError::Incomplete) => break,
                Err(_) => {
                    self.stats.http_malformed += 1;
                    self.put_stream(&m.key, dir, stream, before);
                    self.done(m);
                    return;
                }
                Ok(req) => {
                    self.stats.http_requests += 1;
                    let detail = HttpDetail {
                        method: req.method.clone(),
                        path: req.path.clone(),
                        version: req.version.clone(),
                        user_agent: req.user_agent.clone(),
                    };
                    let named = match &req.host {
                        Some(host) if host.parse::<IpAddr>().is_err() => self.match_name(host),
                        _ => None,
                    };
                    match named {
                        Some(rule) => {
                            let host = req.host.as_deref().unwrap_or("");
                            let o = Self::observation(m, m.ts_ns, m.src().0, host, rule, Detail::Http(detail));
                            self.observations.push(o);
                        }
                        None => self.http_unnamed(m, req.host.as_deref(), detail),
                    }
                    if req.chunked {
                        // Finding the next request would mean decoding chunks; one is enough.
                        self.put_stream(&m.key, dir, stream, before);
                        self.done(m);
                        return;
                    }
                    stream.consume((req.header_len as u64).saturating_add(req.content_length));
                }
            }
        }
        self.put_stream(&m.key, dir, stream, before);
    }

    /// An HTTP request whose Host names nothing a rule matched (a bare address, no Host, another
    /// name). A bare address or no Host: a DNS answer to this client may name the server; failing
    /// that (or with another name), the update path or User-Agent rules may still recognise it.
    fn http_unnamed(&mut self, m: &PacketMeta, host: Option<&str>, detail: HttpDetail) {
        let by_path = self.rules.find_http(&detail.path, detail.user_agent.as_deref());
        if by_path.is_some() {
            self.stats.http_path_matched += 1;
        }
        let bare = host.is_none_or(|h| h.parse::<IpAddr>().is_ok());
        if bare && m.attributable {
            self.candidate(m, host, Detail::Http(detail));
            if let Some(o) = self.observations.last_mut().filter(|o| o.attribution == Attribution::Pending) {
                o.fallback_rule = by_path;
            }
            return;
        }
        if bare {
            self.stats.attribution_unmapped += 1;
        }
        if let Some(rule) = by_path {
            let server = m.dst().0.to_string();
            let mut o = Self::observation(m, m.ts_ns, m.src().0, host.unwrap_or(&server), rule, Detail::Http(detail));
            o.attribution = Attribution::HttpPath;
            o.wire_name = host.map(str::to_string);
            self.observations.push(o);
        }
    }

    fn dns_over_tcp(&mut self, m: &PacketMeta, dir: usize) {
        let Some(mut stream) = self.take_stream(&m.key, dir) else {
            return;
        };
        let before = stream.held();
        loop {
            let data = stream.data();
            let Some(len) = data.get(..2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
                break;
            };
            let Some(msg) = data.get(2..2 + len) else {
                break;
            };
            let msg = msg.to_vec();
            self.dns_message(m, &msg, m.ts_ns);
            stream.consume(2 + len as u64);
        }
        self.put_stream(&m.key, dir, stream, before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{IPPROTO_TCP, IPPROTO_UDP, VlanTags};
    use crate::rules::load::load;

    fn worker() -> Worker {
        Worker::new(Arc::new(Rules::new(load(None).unwrap())), Limits::default())
    }

    fn meta(proto: u8, reverse: bool, transport: Transport) -> PacketMeta {
        let (key, _) = FlowKey::new(
            VlanTags::default(),
            ("10.0.0.5".parse().unwrap(), 40000),
            ("10.0.0.53".parse().unwrap(), 53),
            proto,
        );
        PacketMeta::synthetic(1, key, reverse, None, transport, 0)
    }

    fn query(id: u16, name: &str, response: bool) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[if response { 0x81 } else { 0x01 }, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn dns_over_tcp_split_and_batched_messages() {
        let mut w = worker();
        let (a, b) = (query(1, "s01.upd.kaspersky.com", false), query(2, "s02.upd.kaspersky.com", false));
        let mut stream = Vec::new();
        for m in [&a, &b] {
            stream.extend_from_slice(&(m.len() as u16).to_be_bytes());
            stream.extend_from_slice(m);
        }
        // First message cut across two segments; the second segment also carries all of the second.
        let cut = 10;
        w.process(&meta(IPPROTO_TCP, false, Transport::Tcp { seq: 99, flags: TCP_SYN }), &[]);
        w.process(&meta(IPPROTO_TCP, false, Transport::Tcp { seq: 100, flags: TCP_ACK }), &stream[..cut]);
        assert_eq!(w.stats.dns_messages, 0, "half a message waits");
        w.process(&meta(IPPROTO_TCP, false, Transport::Tcp { seq: 100 + cut as u32, flags: TCP_ACK }), &stream[cut..]);
        w.finish();
        assert_eq!(w.stats.dns_messages, 2);
        let names: Vec<_> = w.observations.iter().map(|o| o.domain.as_str()).collect();
        assert_eq!(names, ["s01.upd.kaspersky.com", "s02.upd.kaspersky.com"]);
        assert!(w.observations.iter().all(|o| o.host.to_string() == "10.0.0.5"));
    }

    #[test]
    fn a_response_without_its_query_names_its_destination() {
        let mut w = worker();
        // The response travels server -> client: the packet's destination is the client.
        w.process(&meta(IPPROTO_UDP, true, Transport::Udp), &query(9, "dnl-01.geo.kaspersky.com", true));
        w.finish();
        let o = &w.observations[0];
        assert_eq!(o.host.to_string(), "10.0.0.5");
        assert!(matches!(&o.detail, Detail::Dns(d) if d.response_only && d.rcode == Some(0)));
    }

    #[test]
    fn a_flood_of_unanswered_queries_stays_bounded_and_loses_nothing() {
        let mut w = worker();
        let n = DNS_PENDING_MAX + 1000;
        for i in 0..n {
            let mut m = meta(IPPROTO_UDP, false, Transport::Udp);
            m.key.a.1 = (i % 60000) as u16; // many client ports
            w.process(&m, &query(i as u16, "s01.upd.kaspersky.com", false));
            assert!(w.dns_pending.len() <= DNS_PENDING_MAX);
        }
        w.finish();
        assert_eq!(w.observations.len(), n, "every query is still an event");
        assert!(w.stats.dns_unanswered_evicted > 0);
    }

    #[test]
    fn query_and_response_make_one_event() {
        let mut w = worker();
        w.process(&meta(IPPROTO_UDP, false, Transport::Udp), &query(7, "s05.upd.kaspersky.com", false));
        w.process(&meta(IPPROTO_UDP, true, Transport::Udp), &query(7, "s05.upd.kaspersky.com", true));
        w.finish();
        assert_eq!(w.observations.len(), 1);
        assert!(matches!(&w.observations[0].detail, Detail::Dns(d) if !d.response_only && d.rcode == Some(0)));
    }
}
