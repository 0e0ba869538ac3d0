//! Decoding: link layer, VLAN tags, tunnels and overlays, IPv4/IPv6 (with extension headers),
//! TCP and UDP, as borrowed slices of the frame. Fragments go to [`defrag`].
//!
//! Built like Zeek's packet analysis or Suricata's `decode-*.c`: one small module per protocol
//! family parses its header and names the next protocol ([`Step::Next`]); none knows the
//! others. [`run`] is the dispatcher: a loop that hands the rest of the frame to the layer
//! named, with a [`Ctx`] threaded through that holds what the outcome needs (VLAN tags and
//! source MAC of the innermost Ethernet, the tunnel stack, the IP addresses). Nothing is
//! allocated; an encapsulation beyond [`MAX_ENCAP_DEPTH`] stops with [`SkipCause::TooDeep`].
//!
//! - `link`: capture link types (Ethernet, SLL, NULL, raw IP, PPP, Cisco HDLC, PPPoE).
//! - `ether`: Ethernet II, 802.3/LLC/SNAP, VLAN, VN-Tag, E-Tag, PBB, NSH.
//! - `ip`: IPv4/IPv6 (etherparse), TCP, IP-in-IP, and the hand-off to GRE and UDP.
//! - `gre`: GRE (RFC 2784/2890, 1701 routing) and ERSPAN I/II/III.
//! - `udp_tunnel`: UDP, then VXLAN, Geneve and Teredo by port.
//! - `mpls`: label stacks and Ethernet pseudowires.
//! - `ppp`: PPP framing, PPPoE.

pub mod counters;
pub mod defrag;
mod ether;
mod gre;
pub mod intern;
mod ip;
pub mod link;
mod mpls;
mod ppp;
mod udp_tunnel;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Up to three VLAN ids, outer first (802.1Q / 802.1ad QinQ), plus the overlay id (VXLAN or
/// Geneve VNI, GRE key) when [`DecodeConfig::split_by_overlay`] asks for one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct VlanTags {
    ids: [u16; 3],
    len: u8,
    overlay: Option<u32>,
}

impl VlanTags {
    pub fn push(&mut self, id: u16) {
        if (self.len as usize) < self.ids.len() {
            self.ids[self.len as usize] = id;
            self.len += 1;
        }
    }
    /// The VLAN ids only (not the overlay).
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }
    /// Holds no more ids than it has room for (false only for one read from outside, such as a
    /// damaged checkpoint).
    pub fn is_valid(&self) -> bool {
        usize::from(self.len) <= self.ids.len()
    }
    /// No VLAN id (an overlay id may still be set).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The innermost VXLAN/Geneve VNI or GRE key, when the decoder was told to split by it.
    pub fn overlay(&self) -> Option<u32> {
        self.overlay
    }
    pub fn set_overlay(&mut self, id: Option<u32>) {
        self.overlay = id;
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Encapsulations (tunnel layers) followed at most; one more is [`SkipCause::TooDeep`].
pub const MAX_ENCAP_DEPTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub enum TunnelKind {
    #[default]
    Gre,
    Erspan,
    Vxlan,
    Geneve,
    /// IPv4 or IPv6 in IPv4 or IPv6 (IP protocols 4 and 41).
    Ipip,
    Teredo,
    Mpls,
    Pppoe,
    /// Cisco VN-Tag (0x8926): a tag in the frame, not a new frame.
    Vntag,
    /// 802.1BR E-Tag (0x893F): a tag in the frame, not a new frame.
    Etag,
    /// 802.1ah provider backbone bridging (0x88E7).
    Pbb,
    /// Network service header (RFC 8300, 0x894F).
    Nsh,
}

impl TunnelKind {
    pub const ALL: [TunnelKind; 12] = [
        TunnelKind::Gre,
        TunnelKind::Erspan,
        TunnelKind::Vxlan,
        TunnelKind::Geneve,
        TunnelKind::Ipip,
        TunnelKind::Teredo,
        TunnelKind::Mpls,
        TunnelKind::Pppoe,
        TunnelKind::Vntag,
        TunnelKind::Etag,
        TunnelKind::Pbb,
        TunnelKind::Nsh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Gre => "gre",
            TunnelKind::Erspan => "erspan",
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Teredo => "teredo",
            TunnelKind::Mpls => "mpls",
            TunnelKind::Pppoe => "pppoe",
            TunnelKind::Vntag => "vntag",
            TunnelKind::Etag => "etag",
            TunnelKind::Pbb => "pbb",
            TunnelKind::Nsh => "nsh",
        }
    }
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One encapsulation a packet came through. Twelve bytes: every decoded packet carries a stack
/// of eight of these, so its size is paid on every packet (a 32-byte layer made plain packets
/// 11 % slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct TunnelLayer {
    pub kind: TunnelKind,
    /// Bit 7: `words[0]` holds the id; bits 0-1: MPLS labels kept in `words`.
    flags: u8,
    /// ERSPAN II/III: the VLAN of the mirrored frame (0: none).
    vlan: u16,
    /// The id, or for MPLS the first two labels, outer first.
    words: [u32; 2],
}

impl TunnelLayer {
    const HAS_ID: u8 = 0x80;
    const EMPTY: TunnelLayer = TunnelLayer { kind: TunnelKind::Gre, flags: 0, vlan: 0, words: [0; 2] };
    /// MPLS labels kept (the rest of a deeper stack is read, not kept).
    pub const LABELS_KEPT: usize = 2;

    pub fn new(kind: TunnelKind, id: Option<u32>) -> TunnelLayer {
        let (flags, word) = match id {
            Some(id) => (TunnelLayer::HAS_ID, id),
            None => (0, 0),
        };
        TunnelLayer { kind, flags, vlan: 0, words: [word, 0] }
    }
    /// GRE key, ERSPAN session id, VXLAN/Geneve VNI, PPPoE session id, PBB I-SID, NSH service
    /// path id, VN-Tag destination VIF, E-Tag E-CID.
    pub fn id(&self) -> Option<u32> {
        (self.flags & TunnelLayer::HAS_ID != 0).then_some(self.words[0])
    }
    /// ERSPAN II/III: the VLAN of the mirrored frame (None when 0).
    pub fn vlan(&self) -> Option<u16> {
        (self.vlan != 0).then_some(self.vlan)
    }
    pub fn with_vlan(mut self, vlan: u16) -> TunnelLayer {
        self.vlan = vlan;
        self
    }
    /// Keeps an MPLS label if fewer than [`TunnelLayer::LABELS_KEPT`] are.
    pub fn push_label(&mut self, label: u32) {
        let n = usize::from(self.flags & 3);
        if let Some(w) = self.words.get_mut(n) {
            *w = label;
            self.flags += 1;
        }
    }
    /// The MPLS labels kept, outer first.
    pub fn labels(&self) -> &[u32] {
        if self.flags & TunnelLayer::HAS_ID != 0 {
            return &[];
        }
        &self.words[..usize::from(self.flags & 3).min(TunnelLayer::LABELS_KEPT)]
    }
}

/// The encapsulations of a packet, outer first. Equality and hashing look at the layers in use
/// only (the readers compare and hash a tunnelled packet's stack once each).
#[derive(Clone, Copy)]
pub struct Tunnels {
    layers: [TunnelLayer; MAX_ENCAP_DEPTH],
    len: u8,
}

impl Default for Tunnels {
    #[inline]
    fn default() -> Self {
        Tunnels::EMPTY
    }
}

impl Tunnels {
    pub const EMPTY: Tunnels = Tunnels { layers: [TunnelLayer::EMPTY; MAX_ENCAP_DEPTH], len: 0 };

    /// Adds an inner layer; false (and nothing added) when [`MAX_ENCAP_DEPTH`] are there.
    pub fn push(&mut self, layer: TunnelLayer) -> bool {
        match self.layers.get_mut(self.len as usize) {
            Some(slot) => {
                *slot = layer;
                self.len += 1;
                true
            }
            None => false,
        }
    }
    pub fn as_slice(&self) -> &[TunnelLayer] {
        &self.layers[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// The innermost layer.
    pub fn last(&self) -> Option<&TunnelLayer> {
        self.as_slice().last()
    }
}

impl PartialEq for Tunnels {
    #[inline]
    fn eq(&self, o: &Tunnels) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Eq for Tunnels {}

impl std::hash::Hash for Tunnels {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h);
    }
}

impl fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// What the decoder looks for. Cheap to copy; build once per reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeConfig {
    /// UDP destination ports of VXLAN (0 = unused slot).
    pub vxlan_ports: [u16; 4],
    /// UDP destination ports of Geneve (0 = unused slot).
    pub geneve_ports: [u16; 4],
    /// Teredo on UDP port 3544 (either side).
    pub teredo: bool,
    /// Put the innermost VXLAN/Geneve VNI or GRE key into [`VlanTags`], so that overlapping
    /// address spaces of different overlays are different hosts and flows.
    pub split_by_overlay: bool,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            vxlan_ports: [4789, 8472, 0, 0],
            geneve_ports: [6081, 0, 0, 0],
            teredo: true,
            split_by_overlay: false,
        }
    }
}

impl DecodeConfig {
    const DEFAULT: DecodeConfig = DecodeConfig {
        vxlan_ports: [4789, 8472, 0, 0],
        geneve_ports: [6081, 0, 0, 0],
        teredo: true,
        split_by_overlay: false,
    };

    pub fn is_vxlan_port(&self, port: u16) -> bool {
        port != 0 && self.vxlan_ports.contains(&port)
    }
    pub fn is_geneve_port(&self, port: u16) -> bool {
        port != 0 && self.geneve_ports.contains(&port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp { seq: u32, flags: u8 },
    Udp,
}

/// A decoded TCP or UDP packet.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    /// VLAN tags of the innermost Ethernet (and the overlay id when asked for).
    pub vlan: VlanTags,
    /// Source MAC of the innermost Ethernet.
    pub src_mac: Option<[u8; 6]>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub payload: &'a [u8],
    /// The capture cut the payload short (snap length).
    pub payload_cut: bool,
    /// Encapsulations the packet came through, outer first.
    pub tunnels: Tunnels,
}

/// One IP fragment, to be reassembled.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    pub vlan: VlanTags,
    pub src_mac: Option<[u8; 6]>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
    pub payload: &'a [u8],
    /// Encapsulations outside the fragmented IP packet, outer first.
    pub tunnels: Tunnels,
}

/// The coarse reason of a skipped packet ([`decode`]); [`SkipCause`] has the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// ARP, LLDP, ... : no IP layer.
    NotIp,
    /// ICMP, ESP, ... : IP but neither TCP nor UDP.
    NotTcpUdp,
    UnsupportedLink,
}

/// The identifier that stopped decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipCause {
    LinkType(u32),
    /// The address family of a NULL or LOOP link header.
    AddressFamily(u32),
    EtherType(u16),
    /// An 802.3 frame with a length instead of an ether type, and no SNAP header (STP, CDP...).
    Llc,
    IpProto(u8),
    GreProto(u16),
    /// GRE version 1: PPTP's enhanced GRE.
    GreVersion(u8),
    PppProto(u16),
    /// NSH next protocol.
    NshProto(u8),
    /// MPLS generic associated channel (first nibble 1 after the labels: OAM, BFD...).
    MplsAch,
    /// More than [`MAX_ENCAP_DEPTH`] encapsulations.
    TooDeep,
}

impl SkipCause {
    /// True for protocols that carry no host's application traffic, so skipping them is no
    /// blindness: ARP, LLDP, STP, ICMP, routing protocols, PPP control... Encrypted or
    /// unknown payloads (ESP, AH, MACsec, unknown ether types) are not benign.
    pub fn benign(&self) -> bool {
        match *self {
            SkipCause::EtherType(et) | SkipCause::GreProto(et) => benign_ether_type(et),
            SkipCause::Llc | SkipCause::MplsAch => true,
            // ICMP, IGMP, ICMPv6, OSPF, PIM, VRRP; IPv6 "no next header" (Teredo bubbles).
            SkipCause::IpProto(p) => matches!(p, 1 | 2 | 58 | 59 | 89 | 103 | 112),
            // LCP, PAP, CHAP, IPCP, IPV6CP, MPLSCP.
            SkipCause::PppProto(p) => matches!(p, 0xc021 | 0xc023 | 0xc223 | 0x8021 | 0x8057 | 0x8281),
            SkipCause::LinkType(_)
            | SkipCause::AddressFamily(_)
            | SkipCause::GreVersion(_)
            | SkipCause::NshProto(_)
            | SkipCause::TooDeep => false,
        }
    }

    /// The coarse [`Skip`] of the old interface.
    pub fn skip(&self) -> Skip {
        match self {
            SkipCause::LinkType(_) => Skip::UnsupportedLink,
            SkipCause::IpProto(_) => Skip::NotTcpUdp,
            _ => Skip::NotIp,
        }
    }
}

/// ARP, RARP (and Cisco SLARP), LLDP, slow protocols (LACP), EAPOL, PPPoE discovery, CDP,
/// PAUSE, PTP, Ethernet loopback (keepalives).
fn benign_ether_type(et: u16) -> bool {
    et < 0x0600 || matches!(et, 0x0806 | 0x8035 | 0x88cc | 0x8809 | 0x888e | 0x8863 | 0x2000 | 0x8808 | 0x88f7 | 0x9000)
}

impl fmt::Display for SkipCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipCause::LinkType(lt) => write!(f, "link type {lt}"),
            SkipCause::AddressFamily(af) => write!(f, "address family {af}"),
            SkipCause::EtherType(et) => write!(f, "EtherType 0x{et:04x}"),
            SkipCause::Llc => f.write_str("802.3 LLC frame"),
            SkipCause::IpProto(p) => write!(f, "IP protocol {p}"),
            SkipCause::GreProto(p) => write!(f, "GRE protocol 0x{p:04x}"),
            SkipCause::GreVersion(v) => write!(f, "GRE version {v}"),
            SkipCause::PppProto(p) => write!(f, "PPP protocol 0x{p:04x}"),
            SkipCause::NshProto(p) => write!(f, "NSH next protocol {p}"),
            SkipCause::MplsAch => f.write_str("MPLS associated channel"),
            SkipCause::TooDeep => write!(f, "more than {MAX_ENCAP_DEPTH} encapsulations"),
        }
    }
}

/// A skipped packet of [`decode_with`]: why, and the encapsulations passed on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub cause: SkipCause,
    pub tunnels: Tunnels,
}

impl Skipped {
    pub fn kind(&self) -> Skip {
        self.cause.skip()
    }
}

/// A malformed packet of [`decode_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// The tunnel header that was malformed; None for a link, Ethernet, IP, TCP or UDP header
    /// (which may be inside tunnels: see `tunnels`).
    pub layer: Option<TunnelKind>,
    pub what: &'static str,
    /// Encapsulations passed before the malformed header (not including `layer`).
    pub tunnels: Tunnels,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(k) => write!(f, "{k}: {}", self.what),
            None => f.write_str(self.what),
        }
    }
}

/// What a frame decodes to. [`decode`] gives the short form (`Outcome<'a>`: a coarse [`Skip`]
/// and a message); [`decode_with`] gives [`Decap`], whose skipped and malformed outcomes say
/// which identifier or layer stopped decoding, and through which tunnels.
#[derive(Debug)]
pub enum Outcome<'a, S = Skip, M = &'static str> {
    Packet(Decoded<'a>),
    Fragment(Fragment<'a>),
    Skipped(S),
    Malformed(M),
}

/// The detailed outcome of [`decode_with`].
pub type Decap<'a> = Outcome<'a, Skipped, Malformed>;

impl<S, M> Outcome<'_, S, M> {
    pub fn is_packet(&self) -> bool {
        matches!(self, Outcome::Packet(_))
    }
}

impl Outcome<'_> {
    /// The encapsulations (empty for skipped and malformed: use [`decode_with`] for those).
    #[inline]
    pub fn tunnels(&self) -> &[TunnelLayer] {
        match self {
            Outcome::Packet(d) => d.tunnels.as_slice(),
            Outcome::Fragment(f) => f.tunnels.as_slice(),
            Outcome::Skipped(_) | Outcome::Malformed(_) => &[],
        }
    }
}

impl Decap<'_> {
    /// The encapsulations passed, outer first, whatever the outcome.
    #[inline]
    pub fn tunnels(&self) -> &[TunnelLayer] {
        match self {
            Outcome::Packet(d) => d.tunnels.as_slice(),
            Outcome::Fragment(f) => f.tunnels.as_slice(),
            Outcome::Skipped(s) => s.tunnels.as_slice(),
            Outcome::Malformed(m) => m.tunnels.as_slice(),
        }
    }
}

impl<'a> From<Decap<'a>> for Outcome<'a> {
    #[inline]
    fn from(d: Decap<'a>) -> Outcome<'a> {
        match d {
            Outcome::Packet(p) => Outcome::Packet(p),
            Outcome::Fragment(f) => Outcome::Fragment(f),
            Outcome::Skipped(s) => Outcome::Skipped(s.kind()),
            Outcome::Malformed(m) => Outcome::Malformed(m.what),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dispatcher.

/// The protocol of the bytes a layer hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// A whole frame of a capture link type.
    Link(u32),
    /// An Ethernet II / 802.3 header.
    Ether,
    /// What follows an ether type.
    EtherType(u16),
    /// IPv4 or IPv6, by the version nibble.
    Ip,
    /// A UDP header (then maybe a UDP tunnel).
    Udp,
    Gre,
    Mpls,
    /// A PPP frame: optional FF 03, then a 1- or 2-byte protocol.
    Ppp,
    /// A PPPoE header.
    Pppoe,
}

type TransportParts<'a> = (u16, u16, Transport, &'a [u8]);

/// What a layer found.
enum Step<'a> {
    /// The rest is of this protocol.
    Next(Proto, &'a [u8]),
    /// TCP or UDP: the packet (addresses in the context).
    Packet(TransportParts<'a>),
    Fragment {
        id: u32,
        proto: u8,
        offset: u16,
        more: bool,
        payload: &'a [u8],
    },
    Skip(SkipCause),
    Malformed(Option<TunnelKind>, &'static str),
}

/// State threaded through the layers.
struct Ctx<'c> {
    cfg: &'c DecodeConfig,
    vlan: VlanTags,
    src_mac: Option<[u8; 6]>,
    tunnels: Tunnels,
    overlay: Option<u32>,
    src: IpAddr,
    dst: IpAddr,
    /// Some IP header said there was more than the capture holds.
    cut: bool,
}

impl<'c> Ctx<'c> {
    fn new(cfg: &'c DecodeConfig) -> Ctx<'c> {
        Ctx {
            cfg,
            vlan: VlanTags::default(),
            src_mac: None,
            tunnels: Tunnels::EMPTY,
            overlay: None,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            cut: false,
        }
    }

    /// Enters an encapsulation: the inner packet is keyed as it would be unwrapped, so the
    /// VLAN tags and source MAC found so far are forgotten. False when too deep.
    #[must_use]
    fn enter(&mut self, layer: TunnelLayer) -> bool {
        self.vlan = VlanTags::default();
        self.src_mac = None;
        self.tunnels.push(layer)
    }

    /// A tag inside the same frame (VN-Tag, E-Tag): recorded, but the frame's MAC and VLAN
    /// tags stay those of the host. False when too deep.
    #[must_use]
    fn tag(&mut self, layer: TunnelLayer) -> bool {
        self.tunnels.push(layer)
    }

    fn vlan_out(&self) -> VlanTags {
        let mut v = self.vlan;
        v.overlay = if self.cfg.split_by_overlay { self.overlay } else { None };
        v
    }
}

/// Layer steps at most per frame: every step but a few hand-offs consumes bytes, encapsulations
/// are bounded by [`MAX_ENCAP_DEPTH`]; this is a backstop.
const MAX_STEPS: usize = 64;

fn run<'a>(cx: &mut Ctx<'_>, mut proto: Proto, mut data: &'a [u8]) -> Decap<'a> {
    for _ in 0..MAX_STEPS {
        let step = match proto {
            Proto::Link(lt) => link::layer(lt, data, cx),
            Proto::Ether => ether_step(data, cx),
            Proto::EtherType(et) => ether::by_ether_type(et, data, cx),
            Proto::Ip => ip::ip(data, cx),
            Proto::Udp => udp_tunnel::udp(data, cx),
            Proto::Gre => gre::gre(data, cx),
            Proto::Mpls => mpls::mpls(data, cx),
            Proto::Ppp => ppp::ppp(data, cx),
            Proto::Pppoe => ppp::pppoe(data, cx),
        };
        match step {
            Step::Next(p, d) => {
                proto = p;
                data = d;
            }
            step => return finish(cx, step),
        }
    }
    Outcome::Malformed(Malformed { layer: None, what: "too many stacked headers", tunnels: cx.tunnels })
}

/// The outcome of a last step.
#[inline]
fn finish<'a>(cx: &mut Ctx<'_>, step: Step<'a>) -> Decap<'a> {
    match step {
        Step::Packet((sport, dport, transport, payload)) => Outcome::Packet(Decoded {
            vlan: cx.vlan_out(),
            src_mac: cx.src_mac,
            src: cx.src,
            dst: cx.dst,
            sport,
            dport,
            transport,
            payload,
            payload_cut: cx.cut,
            tunnels: cx.tunnels,
        }),
        Step::Fragment { id, proto, offset, more, payload } => Outcome::Fragment(Fragment {
            vlan: cx.vlan_out(),
            src_mac: cx.src_mac,
            src: cx.src,
            dst: cx.dst,
            id,
            proto,
            offset,
            more,
            payload,
            tunnels: cx.tunnels,
        }),
        Step::Skip(cause) => Outcome::Skipped(Skipped { cause, tunnels: cx.tunnels }),
        Step::Malformed(layer, what) => Outcome::Malformed(Malformed { layer, what, tunnels: cx.tunnels }),
        Step::Next(..) => Outcome::Malformed(Malformed { layer: None, what: "unfinished", tunnels: cx.tunnels }),
    }
}

/// Where [`fast_path`] stopped: after an unfragmented IP header, at an IP protocol it leaves
/// to the layers (IP-in-IP, GRE, a UDP tunnel port, ICMP...).
struct Resume<'a> {
    vlan: VlanTags,
    src_mac: Option<[u8; 6]>,
    src: IpAddr,
    dst: IpAddr,
    cut: bool,
    proto: u8,
    data: &'a [u8],
}

/// The common case without the dispatcher: Ethernet, VLAN tags, IPv4/IPv6, TCP or UDP that is
/// not on a tunnel port, unfragmented. The same as the chain link -> ether -> ip -> TCP/UDP
/// gives (a test checks), built straight into the outcome: the context, the steps and the
/// copies of the tunnel stack cost about twice the time of a plain packet.
///
/// `Err(Some(_))`: another IP protocol, to go on with from there ([`resume`]); `Err(None)`:
/// anything else, malformed included, to decode from the start ([`dispatch`]).
#[inline(always)]
fn fast_path<'a, S, M>(
    cfg: &DecodeConfig,
    linktype: u32,
    frame: &'a [u8],
) -> Result<Outcome<'a, S, M>, Option<Resume<'a>>> {
    if linktype != link::LINKTYPE_ETHERNET {
        return Err(None);
    }
    Ok(Outcome::Packet(ether_fast(cfg, frame)?.decoded(Tunnels::EMPTY, None, false)))
}

/// What [`ether_fast`] read: a whole TCP or UDP packet.
struct FastPacket<'a> {
    vlan: VlanTags,
    src_mac: Option<[u8; 6]>,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    transport: Transport,
    payload: &'a [u8],
    cut: bool,
}

impl<'a> FastPacket<'a> {
    /// The decoded packet, inside `tunnels` (with the overlay id to key it by, and whether an
    /// outer IP header was cut short).
    #[inline(always)]
    fn decoded(self, tunnels: Tunnels, overlay: Option<u32>, outer_cut: bool) -> Decoded<'a> {
        let mut vlan = self.vlan;
        vlan.overlay = overlay;
        Decoded {
            vlan,
            src_mac: self.src_mac,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            transport: self.transport,
            payload: self.payload,
            payload_cut: outer_cut | self.cut,
            tunnels,
        }
    }
}

/// An Ethernet frame through VLAN tags and IP to TCP or UDP in one go: the fast path of plain
/// frames, and of the Ethernet frames inside VXLAN, Geneve, ERSPAN and GRE bridging (the
/// dispatcher's [`Proto::Ether`] step), where it halves the cost of the inner packet.
#[inline(always)]
fn ether_fast<'a>(cfg: &DecodeConfig, frame: &'a [u8]) -> Result<FastPacket<'a>, Option<Resume<'a>>> {
    let h = frame.get(..14).ok_or(None)?;
    let mut et = u16::from_be_bytes([h[12], h[13]]);
    let mut rest = &frame[14..];
    let mut vlan = VlanTags::default();
    loop {
        match et {
            ether::ETH_IPV4 | ether::ETH_IPV6 => break,
            ether::ETH_VLAN | ether::ETH_QINQ | ether::ETH_QINQ_OLD => {
                let tag = rest.get(..4).ok_or(None)?;
                vlan.push(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
                et = u16::from_be_bytes([tag[2], tag[3]]);
                rest = &rest[4..];
            }
            _ => return Err(None),
        }
    }
    let (ip, _ext_err) = etherparse::LaxIpSlice::from_slice(rest).map_err(|_| None)?;
    let pl = ip.payload();
    if pl.fragmented {
        return Err(None);
    }
    let (src, dst) = ip::addrs(&ip);
    let resume = |proto| Resume { vlan, src_mac: mac(&h[6..]), src, dst, cut: pl.incomplete, proto, data: pl.payload };
    let (sport, dport, transport, payload) = match pl.ip_number.0 {
        IPPROTO_TCP => ip::tcp(pl.payload).ok_or(None)?,
        IPPROTO_UDP => {
            let u = etherparse::UdpSlice::from_slice_lax(pl.payload).map_err(|_| None)?;
            let (sport, dport) = (u.source_port(), u.destination_port());
            if udp_tunnel::maybe_tunnel(cfg, sport, dport) {
                return Err(Some(resume(IPPROTO_UDP)));
            }
            (sport, dport, Transport::Udp, u.payload())
        }
        p => return Err(Some(resume(p))),
    };
    Ok(FastPacket { vlan, src_mac: mac(&h[6..]), src, dst, sport, dport, transport, payload, cut: pl.incomplete })
}

/// The dispatcher's Ethernet step: [`ether_fast`] where it applies, the layers otherwise. Only
/// for a frame that starts with no VLAN tags in the context (an encapsulated frame: entering a
/// tunnel forgets the outer tags), so that both ways give the same context.
#[inline]
fn ether_step<'a>(data: &'a [u8], cx: &mut Ctx<'_>) -> Step<'a> {
    if !cx.vlan.is_empty() {
        return ether::ethernet(data, cx);
    }
    match ether_fast(cx.cfg, data) {
        Ok(f) => {
            (cx.vlan.ids, cx.vlan.len) = (f.vlan.ids, f.vlan.len);
            cx.src_mac = f.src_mac;
            (cx.src, cx.dst) = (f.src, f.dst);
            cx.cut |= f.cut;
            Step::Packet((f.sport, f.dport, f.transport, f.payload))
        }
        Err(Some(r)) => {
            (cx.vlan.ids, cx.vlan.len) = (r.vlan.ids, r.vlan.len);
            cx.src_mac = r.src_mac;
            (cx.src, cx.dst) = (r.src, r.dst);
            cx.cut |= r.cut;
            ip::by_proto(r.proto, r.data, cx)
        }
        Err(None) => ether::ethernet(data, cx),
    }
}

/// The usual mirror feeds without the dispatcher: one VXLAN or Geneve layer, or GRE bridging
/// or ERSPAN (I, II, III), around an Ethernet frame [`ether_fast`] takes whole. The layers'
/// own header readers decide ([`udp_tunnel::ether_in_udp`], [`gre::ether_in_gre`]); None for
/// anything else (deeper chains, malformed headers, other inner packets), which the layers
/// then decode from [`fast_path`]'s stop. The same outcome as the layers give (a test and the
/// `decap` fuzz target check), at about half the cost. Inlined into [`slow`], so that the
/// outcome is built in place rather than copied out of an `Option`.
#[inline(always)]
fn tunnel_fast<'a>(cfg: &DecodeConfig, r: &Resume<'a>) -> Option<Decap<'a>> {
    let mut tunnels = Tunnels::EMPTY;
    let (overlay, inner) = match r.proto {
        IPPROTO_UDP => udp_tunnel::ether_in_udp(cfg, r.data, &mut tunnels).map(|(vni, f)| (Some(vni), f))?,
        ip::IPPROTO_GRE => gre::ether_in_gre(r.data, &mut tunnels)?,
        _ => return None,
    };
    let overlay = if cfg.split_by_overlay { overlay } else { None };
    Some(Outcome::Packet(ether_fast(cfg, inner).ok()?.decoded(tunnels, overlay, r.cut)))
}

/// Goes on where [`fast_path`] stopped, with the layers.
#[inline(never)]
fn resume<'a>(cfg: &DecodeConfig, r: Resume<'a>) -> Decap<'a> {
    let mut cx = Ctx::new(cfg);
    cx.vlan = r.vlan;
    cx.src_mac = r.src_mac;
    cx.src = r.src;
    cx.dst = r.dst;
    cx.cut = r.cut;
    match ip::by_proto(r.proto, r.data, &mut cx) {
        Step::Next(p, d) => run(&mut cx, p, d),
        step => finish(&mut cx, step),
    }
}

/// Decodes one frame with the default configuration.
#[inline]
pub fn decode(linktype: u32, frame: &[u8]) -> Outcome<'_> {
    let cfg = &DecodeConfig::DEFAULT;
    match fast_path(cfg, linktype, frame) {
        Ok(o) => o,
        Err(r) => legacy(cfg, linktype, frame, r),
    }
}

#[inline(never)]
fn legacy<'a>(cfg: &DecodeConfig, linktype: u32, frame: &'a [u8], r: Option<Resume<'a>>) -> Outcome<'a> {
    slow(cfg, linktype, frame, r).into()
}

/// Decodes one frame, through its tunnels.
#[inline]
pub fn decode_with<'a>(cfg: &DecodeConfig, linktype: u32, frame: &'a [u8]) -> Decap<'a> {
    match fast_path(cfg, linktype, frame) {
        Ok(o) => o,
        Err(r) => slow(cfg, linktype, frame, r),
    }
}

#[inline(never)]
fn slow<'a>(cfg: &DecodeConfig, linktype: u32, frame: &'a [u8], r: Option<Resume<'a>>) -> Decap<'a> {
    match r {
        Some(r) => match tunnel_fast(cfg, &r) {
            Some(d) => d,
            None => resume(cfg, r),
        },
        None => dispatch(cfg, linktype, frame),
    }
}

/// Decodes one frame layer by layer, without the fast paths: what they must agree with (the
/// `decap` fuzz target compares).
pub(crate) fn decode_layered<'a>(cfg: &DecodeConfig, linktype: u32, frame: &'a [u8]) -> Decap<'a> {
    dispatch(cfg, linktype, frame)
}

/// Decodes one frame layer by layer.
#[inline(never)]
fn dispatch<'a>(cfg: &DecodeConfig, linktype: u32, frame: &'a [u8]) -> Decap<'a> {
    let mut cx = Ctx::new(cfg);
    run(&mut cx, Proto::Link(linktype), frame)
}

/// Decodes the transport header of a reassembled datagram (default configuration).
pub fn decode_reassembled<'a>(frag: &Fragment<'_>, datagram: &'a [u8]) -> Outcome<'a> {
    decode_reassembled_with(&DecodeConfig::DEFAULT, frag, datagram).into()
}

/// Goes on from a reassembled datagram: the fragment's IP protocol, and the tunnels it may
/// carry (GRE, IP-in-IP, UDP tunnels in a fragmented outer packet). Pass the configuration
/// the fragment was decoded with.
pub fn decode_reassembled_with<'a>(cfg: &DecodeConfig, frag: &Fragment<'_>, datagram: &'a [u8]) -> Decap<'a> {
    let mut cx = Ctx::new(cfg);
    cx.vlan = frag.vlan;
    cx.vlan.overlay = None;
    cx.overlay = frag.vlan.overlay;
    cx.src_mac = frag.src_mac;
    cx.tunnels = frag.tunnels;
    cx.src = frag.src;
    cx.dst = frag.dst;
    match ip::by_proto(frag.proto, datagram, &mut cx) {
        Step::Next(p, d) => run(&mut cx, p, d),
        Step::Fragment { .. } => {
            Outcome::Malformed(Malformed { layer: None, what: "fragment inside a fragment", tunnels: cx.tunnels })
        }
        step => finish(&mut cx, step),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading helpers for the layers: never index without a bound.

#[inline]
fn be16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

#[inline]
fn be32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[inline]
fn mac(b: &[u8]) -> Option<[u8; 6]> {
    b.get(..6).and_then(|m| m.try_into().ok())
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
