//! QUIC client Initial packets (RFC 9000; RFC 9001 section 5; RFC 9369 for QUIC version 2):
//! the TLS ClientHello a client sends in its first datagrams.
//!
//! Initial packets are encrypted, but with keys derived from the packet's own Destination
//! Connection ID and a salt published in the RFC, so anyone on the path can open them. A
//! datagram may hold several coalesced long-header packets: Initials are opened and their frames
//! read, other long-header packets (0-RTT, Handshake, Retry) are stepped over, and a
//! short-header packet or padding ends the walk. A ClientHello may span several Initials, in
//! several datagrams, in any order: [`CryptoAssembler`] puts the CRYPTO fragments back together.
//!
//! The ClientHello itself is left to [`super::tls::parse_client_hello`], which reads TLS
//! records: QUIC carries bare handshake messages, so [`as_tls_record`] wraps one.
//!
//! Every byte may be crafted: lengths are checked before use, nothing panics, and what is kept
//! is bounded by the datagram (packets) or by [`MAX_CRYPTO_BYTES`] (the assembler).

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};
use thiserror::Error;

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;

/// Handshake bytes a [`CryptoAssembler`] holds: a ClientHello is 0.3 to 2 KB (a post-quantum
/// key share makes it 1.8 KB); this leaves room for big ones and bounds what a flow costs.
pub const MAX_CRYPTO_BYTES: usize = 16 * 1024;
/// Disjoint pieces a [`CryptoAssembler`] tracks, and CRYPTO frames read from one packet. Some
/// clients (Chromium) cut their ClientHello into several CRYPTO frames sent out of order; none
/// comes near 64.
pub const MAX_CRYPTO_FRAGMENTS: usize = 64;
/// Long-header packets walked in one datagram. Real ones coalesce at most Initial, 0-RTT and
/// Handshake; the bound caps the work a crafted datagram of tiny packets can cause.
pub const MAX_PACKETS_PER_DATAGRAM: usize = 8;

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f,
    0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e,
    0xd9,
];
const MAX_CID_LEN: usize = 20;
const SAMPLE_LEN: usize = 16;
const VARINT_MAX: u64 = (1 << 62) - 1;

const FRAME_PADDING: u8 = 0x00;
const FRAME_PING: u8 = 0x01;
const FRAME_ACK: u8 = 0x02;
const FRAME_ACK_ECN: u8 = 0x03;
const FRAME_CRYPTO: u8 = 0x06;
const FRAME_CONNECTION_CLOSE: u8 = 0x1c;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum QuicError {
    #[error("truncated: shorter than its header says")]
    Truncated,
    #[error("not a long-header packet")]
    NotLongHeader,
    #[error("no Initial packet in the datagram")]
    NotInitial,
    #[error("unsupported QUIC version {0:#010x}")]
    UnsupportedVersion(u32),
    #[error("bad length: connection ID over 20 bytes, or packet too short for its header protection sample")]
    BadLength,
    #[error("coalesced packet with another Destination Connection ID")]
    DcidMismatch,
    #[error("more long-header packets in one datagram than walked")]
    TooManyPackets,
    #[error("Initial packet does not decrypt")]
    DecryptFailed,
    #[error("reserved header bits set")]
    ReservedBits,
    #[error("Initial packet without frames")]
    NoFrames,
    #[error("frame type {0:#04x} malformed or not allowed in an Initial packet")]
    BadFrame(u8),
    #[error("handshake data beyond the bound")]
    TooLarge,
    #[error("too many CRYPTO fragments")]
    TooManyFragments,
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
}

/// A connection ID (at most 20 bytes in versions 1 and 2), kept inline: no allocation per packet.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    len: u8,
    bytes: [u8; MAX_CID_LEN],
}

impl ConnectionId {
    /// None when longer than 20 bytes.
    pub fn new(id: &[u8]) -> Option<Self> {
        let mut bytes = [0; MAX_CID_LEN];
        bytes.get_mut(..id.len())?.copy_from_slice(id);
        Some(Self { len: id.len() as u8, bytes })
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_bytes().iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The client's Initial keys for one version and Destination Connection ID (RFC 9001 5.2).
pub struct InitialKeys {
    version: u32,
    key: [u8; 16],
    iv: [u8; 12],
    hp: [u8; 16],
    aead: LessSafeKey,
    hp_key: HeaderProtectionKey,
}

impl fmt::Debug for InitialKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitialKeys").field("version", &format_args!("{:#010x}", self.version)).finish_non_exhaustive()
    }
}

/// An HKDF output length for ring, which types its outputs.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label of TLS 1.3 (RFC 8446 7.1) with an empty context.
fn expand_label<const N: usize>(prk: &Prk, label: &[u8]) -> Result<[u8; N], QuicError> {
    let mut out = [0; N];
    let out_len = (N as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&out_len, &label_len, b"tls13 ", label, &[0]];
    // Fails only for outputs over 255 hash lengths, which these never are.
    prk.expand(&info, Len(N)).and_then(|okm| okm.fill(&mut out)).map_err(|_| QuicError::DecryptFailed)?;
    Ok(out)
}

impl InitialKeys {
    /// Derives the keys a client protects its Initial packets with.
    pub fn client(version: u32, dcid: &[u8]) -> Result<Self, QuicError> {
        // The salts' HMAC keys are set up once: two SHA-256 blocks saved per derivation.
        static SALTS: OnceLock<[Salt; 2]> = OnceLock::new();
        let salts = SALTS.get_or_init(|| [Salt::new(HKDF_SHA256, &SALT_V1), Salt::new(HKDF_SHA256, &SALT_V2)]);
        let (salt, labels): (&Salt, [&[u8]; 3]) = match version {
            VERSION_1 => (&salts[0], [b"quic key", b"quic iv", b"quic hp"]),
            VERSION_2 => (&salts[1], [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"]),
            v => return Err(QuicError::UnsupportedVersion(v)),
        };
        if dcid.len() > MAX_CID_LEN {
            return Err(QuicError::BadLength);
        }
        let initial = salt.extract(dcid);
        let client: [u8; 32] = expand_label(&initial, b"client in")?;
        let client = Prk::new_less_safe(HKDF_SHA256, &client);
        let key: [u8; 16] = expand_label(&client, labels[0])?;
        let iv: [u8; 12] = expand_label(&client, labels[1])?;
        let hp: [u8; 16] = expand_label(&client, labels[2])?;
        // Both fail only on a key of the wrong length, which these are not.
        let aead = UnboundKey::new(&AES_128_GCM, &key).map_err(|_| QuicError::DecryptFailed)?;
        let hp_key = HeaderProtectionKey::new(&AES_128, &hp).map_err(|_| QuicError::DecryptFailed)?;
        Ok(Self { version, key, iv, hp, aead: LessSafeKey::new(aead), hp_key })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn key(&self) -> &[u8; 16] {
        &self.key
    }

    pub fn iv(&self) -> &[u8; 12] {
        &self.iv
    }

    pub fn hp(&self) -> &[u8; 16] {
        &self.hp
    }
}

/// What the frames of one decrypted Initial payload hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frames {
    /// CRYPTO frames in packet order: offset in the handshake stream, and where the data lies in
    /// the payload. Empty frames are left out.
    pub crypto: Vec<(u64, Range<usize>)>,
    pub ack: bool,
    pub ping: bool,
    /// CONNECTION_CLOSE's error code.
    pub close: Option<u64>,
}

/// One opened client Initial packet.
#[derive(Debug, Clone)]
pub struct InitialPacket {
    pub version: u32,
    pub dcid: ConnectionId,
    pub scid: ConnectionId,
    /// A token is sent after a Retry or with one from NEW_TOKEN (a resumed client).
    pub token_len: usize,
    /// As sent, which is the full number for a client's first Initials: no acknowledgement
    /// has shortened its encoding yet.
    pub packet_number: u32,
    pub frames: Frames,
    payload: Vec<u8>,
}

impl InitialPacket {
    /// The decrypted frames.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The CRYPTO fragments: (offset in the handshake stream, data).
    pub fn crypto(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.frames.crypto.iter().map(|(off, r)| (*off, self.payload.get(r.clone()).unwrap_or_default()))
    }
}

/// What one datagram held.
#[derive(Debug, Default)]
pub struct Datagram {
    /// The Initial packets opened, in datagram order; never empty.
    pub initials: Vec<InitialPacket>,
    /// Other long-header packets stepped over (0-RTT, Handshake, Retry).
    pub skipped: usize,
    /// Bytes after the last long-header packet: a short-header packet, or padding (aioquic
    /// pads its Initial datagrams to 1200 bytes with zeros after the packet).
    pub trailing: usize,
    /// The first packet that could not be read, though another one could.
    pub first_error: Option<QuicError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PacketType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// The long-header type bits mean different types in versions 1 and 2 (RFC 9369 3.2).
fn packet_type(version: u32, first: u8) -> Option<PacketType> {
    use PacketType::*;
    Some(match (version, (first >> 4) & 0x03) {
        (VERSION_1, 0) | (VERSION_2, 1) => Initial,
        (VERSION_1, 1) | (VERSION_2, 2) => ZeroRtt,
        (VERSION_1, 2) | (VERSION_2, 3) => Handshake,
        (VERSION_1, 3) | (VERSION_2, 0) => Retry,
        _ => return None,
    })
}

/// Cheap test for the hot path: the datagram starts with a version 1 or 2 long-header Initial.
///
/// The fixed bit (0x40) is not required: RFC 9287 lets a client clear it, in Initials too, for a
/// server that advertised grease_quic_bit, and a sensor must not be blinded by that. An Initial
/// coalesced behind another long-header packet is missed here; [`parse_datagram`] finds it.
pub fn is_quic_long_header_initial(datagram: &[u8]) -> bool {
    match datagram.get(..5) {
        Some(&[first, a, b, c, d]) if first & 0x80 != 0 => {
            packet_type(u32::from_be_bytes([a, b, c, d]), first) == Some(PacketType::Initial)
        }
        _ => false,
    }
}

/// A cursor that reads nothing past its slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// RFC 9000 16: the two top bits give the length, 1, 2, 4 or 8 bytes.
    fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        let b = self.bytes(1 << (first >> 6))?;
        Some(b.iter().skip(1).fold(u64::from(first & 0x3f), |v, &x| (v << 8) | u64::from(x)))
    }

    fn varint_len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    fn skip_zeros(&mut self) {
        self.pos += self.buf.get(self.pos..).unwrap_or_default().iter().take_while(|&&b| b == 0).count();
    }
}

/// A long header, read up to the packet number (still protected).
struct Header<'a> {
    version: u32,
    kind: PacketType,
    dcid: &'a [u8],
    scid: &'a [u8],
    token_len: usize,
    pn_offset: usize,
    /// The packet's length: the next coalesced packet starts here.
    end: usize,
}

fn header(d: &[u8]) -> Result<Header<'_>, QuicError> {
    let mut r = Reader::new(d);
    let first = r.u8().ok_or(QuicError::Truncated)?;
    if first & 0x80 == 0 {
        return Err(QuicError::NotLongHeader);
    }
    let version = r.u32().ok_or(QuicError::Truncated)?;
    let kind = packet_type(version, first).ok_or(QuicError::UnsupportedVersion(version))?;
    let (dcid, scid) = (connection_id(&mut r)?, connection_id(&mut r)?);
    let mut h = Header { version, kind, dcid, scid, token_len: 0, pn_offset: r.pos, end: d.len() };
    if kind == PacketType::Retry {
        // No Length field: a Retry takes the rest of the datagram.
        return Ok(h);
    }
    if kind == PacketType::Initial {
        h.token_len = r.varint_len().ok_or(QuicError::Truncated)?;
        r.bytes(h.token_len).ok_or(QuicError::Truncated)?;
    }
    let len = r.varint_len().ok_or(QuicError::Truncated)?;
    h.pn_offset = r.pos;
    h.end = r.pos.checked_add(len).filter(|&end| end <= d.len()).ok_or(QuicError::Truncated)?;
    Ok(h)
}

fn connection_id<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], QuicError> {
    let len = usize::from(r.u8().ok_or(QuicError::Truncated)?);
    if len > MAX_CID_LEN {
        return Err(QuicError::BadLength);
    }
    r.bytes(len).ok_or(QuicError::Truncated)
}

/// Removes header protection and decrypts one Initial (`packet` ends where its Length says).
fn open(packet: &[u8], h: &Header<'_>, keys: &InitialKeys) -> Result<InitialPacket, QuicError> {
    // The sample starts 4 bytes into the packet number field whatever its length (RFC 9001
    // 5.4.2), so this also leaves room for the longest packet number and the AEAD tag.
    let sample_at = h.pn_offset + 4;
    let sample = packet.get(sample_at..sample_at + SAMPLE_LEN).ok_or(QuicError::BadLength)?;
    let mask = keys.hp_key.new_mask(sample).map_err(|_| QuicError::DecryptFailed)?;
    let mut buf = packet.to_vec();
    let first = buf[0] ^ (mask[0] & 0x0f);
    buf[0] = first;
    let pn_len = usize::from(first & 0x03) + 1;
    let pn_bytes = &mut buf[h.pn_offset..h.pn_offset + pn_len];
    let mut pn = 0u32;
    for (b, m) in pn_bytes.iter_mut().zip(&mask[1..]) {
        *b ^= m;
        pn = (pn << 8) | u32::from(*b);
    }
    let mut nonce = keys.iv;
    for (n, p) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
        *n ^= p;
    }
    let payload_at = h.pn_offset + pn_len;
    let (aad, body) = buf.split_at_mut(payload_at);
    let plain_len = keys
        .aead
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*aad), body)
        .map_err(|_| QuicError::DecryptFailed)?
        .len();
    // Checked only now: before decryption they are as good as random (RFC 9000 17.2).
    if first & 0x0c != 0 {
        return Err(QuicError::ReservedBits);
    }
    // Keep the payload alone: one copy of at most a datagram, no second allocation.
    buf.copy_within(payload_at..payload_at + plain_len, 0);
    buf.truncate(plain_len);
    let frames = parse_frames(&buf)?;
    Ok(InitialPacket {
        version: h.version,
        dcid: ConnectionId::new(h.dcid).unwrap_or_default(),
        scid: ConnectionId::new(h.scid).unwrap_or_default(),
        token_len: h.token_len,
        packet_number: pn,
        frames,
        payload: buf,
    })
}

/// The frames of a decrypted Initial payload. Only PADDING, PING, ACK, CRYPTO and
/// CONNECTION_CLOSE (transport) may appear in an Initial (RFC 9000 12.4); anything else is an
/// error, as it is for the server, which closes the connection.
pub fn parse_frames(payload: &[u8]) -> Result<Frames, QuicError> {
    if payload.is_empty() {
        return Err(QuicError::NoFrames);
    }
    let mut f = Frames::default();
    let mut r = Reader::new(payload);
    // A frame type is a varint in its shortest form: all these fit in one byte, and a first byte
    // of 0x40 or more is some other frame type (or a padded encoding, which a peer may reject).
    while let Some(t) = r.u8() {
        let bad = QuicError::BadFrame(t);
        match t {
            FRAME_PADDING => r.skip_zeros(),
            FRAME_PING => f.ping = true,
            FRAME_ACK | FRAME_ACK_ECN => {
                skip_ack(&mut r, t == FRAME_ACK_ECN).ok_or(bad)?;
                f.ack = true;
            }
            FRAME_CRYPTO => {
                let offset = r.varint().ok_or(bad)?;
                let len = r.varint_len().ok_or(bad)?;
                let start = r.pos;
                r.bytes(len).ok_or(bad)?;
                if offset + len as u64 > VARINT_MAX {
                    return Err(bad);
                }
                if len > 0 {
                    if f.crypto.len() == MAX_CRYPTO_FRAGMENTS {
                        return Err(QuicError::TooManyFragments);
                    }
                    f.crypto.push((offset, start..start + len));
                }
            }
            FRAME_CONNECTION_CLOSE => {
                let code = r.varint().ok_or(bad)?;
                r.varint().ok_or(bad)?; // the frame type that caused it
                let reason = r.varint_len().ok_or(bad)?;
                r.bytes(reason).ok_or(bad)?;
                f.close = Some(code);
            }
            _ => return Err(bad),
        }
    }
    Ok(f)
}

/// Largest acknowledged, delay, range count, first range, then count (gap, length) pairs, and
/// three ECN counts for type 0x03. A huge range count costs nothing: each range reads 2 bytes
/// at least, so the loop ends at the end of the payload.
fn skip_ack(r: &mut Reader<'_>, ecn: bool) -> Option<()> {
    r.varint()?;
    r.varint()?;
    let ranges = r.varint()?;
    r.varint()?;
    for _ in 0..ranges {
        r.varint()?;
        r.varint()?;
    }
    if ecn {
        for _ in 0..3 {
            r.varint()?;
        }
    }
    Some(())
}

/// Opens the client Initials of one UDP datagram, with keys derived from their Destination
/// Connection ID.
///
/// `Ok` holds one Initial at least. `Err` says why there is none: `NotLongHeader` (a
/// short-header packet), `UnsupportedVersion` (including 0, Version Negotiation), `NotInitial`
/// (only 0-RTT or Handshake packets), or why the first Initial could not be read. A packet that
/// fails to decrypt is skipped and the walk goes on, as a server does, so a junk packet in front
/// cannot hide a good one.
pub fn parse_datagram(datagram: &[u8]) -> Result<Datagram, QuicError> {
    walk(datagram, None)
}

/// [`parse_datagram`] with the connection's keys, derived once from the Destination Connection
/// ID of the client's first Initial: later Initials keep those keys though the client changes
/// its DCID once the server answers (RFC 9001 5.2), and a flow saves the derivation. Packets of
/// another version than the keys' get keys of their own.
pub fn parse_datagram_with_keys(datagram: &[u8], keys: &InitialKeys) -> Result<Datagram, QuicError> {
    walk(datagram, Some(keys))
}

fn walk(datagram: &[u8], given: Option<&InitialKeys>) -> Result<Datagram, QuicError> {
    if datagram.is_empty() {
        return Err(QuicError::Truncated);
    }
    let mut out = Datagram::default();
    let mut derived: Option<InitialKeys> = None;
    let mut first_dcid: Option<&[u8]> = None;
    let mut rest = datagram;
    let mut packets = 0;
    while let Some(&first) = rest.first() {
        if first & 0x80 == 0 {
            // A short-header packet runs to the end of the datagram, and padding does too.
            if packets == 0 {
                return Err(QuicError::NotLongHeader);
            }
            out.trailing = rest.len();
            break;
        }
        if packets == MAX_PACKETS_PER_DATAGRAM {
            out.first_error.get_or_insert(QuicError::TooManyPackets);
            break;
        }
        packets += 1;
        let h = match header(rest) {
            Ok(h) => h,
            Err(e) => {
                // The packet's length is unknown, so nothing after it can be found.
                out.first_error.get_or_insert(e);
                break;
            }
        };
        // Coalesced packets share the DCID (RFC 9000 12.2): this also means one key derivation
        // per datagram, however many Initials a crafted one holds.
        if *first_dcid.get_or_insert(h.dcid) != h.dcid {
            out.first_error.get_or_insert(QuicError::DcidMismatch);
            break;
        }
        if h.kind == PacketType::Initial {
            let keys = match given {
                Some(k) if k.version == h.version => Ok(k),
                _ => match &mut derived {
                    Some(k) if k.version == h.version => Ok(&*k),
                    slot => InitialKeys::client(h.version, h.dcid).map(|k| &*slot.insert(k)),
                },
            };
            match keys.and_then(|k| open(rest.get(..h.end).unwrap_or_default(), &h, k)) {
                Ok(p) => out.initials.push(p),
                Err(e) => {
                    out.first_error.get_or_insert(e);
                }
            }
        } else {
            out.skipped += 1;
        }
        rest = rest.get(h.end..).unwrap_or_default();
    }
    if out.initials.is_empty() {
        return Err(out.first_error.unwrap_or(QuicError::NotInitial));
    }
    Ok(out)
}

/// The client's CRYPTO stream at the Initial level, rebuilt from fragments that may come in any
/// order, repeated or overlapping, across packets and datagrams.
///
/// Bounded: [`MAX_CRYPTO_BYTES`] of stream (the buffer grows to the highest offset seen) and
/// [`MAX_CRYPTO_FRAGMENTS`] disjoint pieces. Where fragments overlap, the first bytes received
/// are kept, and differing ones are flagged (see [`Self::conflicting`]): a client that sends
/// two versions of its ClientHello is up to something.
#[derive(Debug, Clone, Default)]
pub struct CryptoAssembler {
    buf: Vec<u8>,
    /// Received ranges of `buf`: sorted, disjoint, not touching.
    have: Vec<(usize, usize)>,
    conflict: bool,
}

impl CryptoAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one fragment. `TooLarge` (it ends past [`MAX_CRYPTO_BYTES`]) and `TooManyFragments`
    /// leave the assembler as it was.
    pub fn add(&mut self, offset: u64, data: &[u8]) -> Result<(), QuicError> {
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| QuicError::TooLarge)?;
        let end = start.checked_add(data.len()).filter(|&e| e <= MAX_CRYPTO_BYTES).ok_or(QuicError::TooLarge)?;
        let mut merged = Vec::with_capacity(self.have.len() + 1);
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(a, b) in &self.have {
            if b < s {
                merged.push((a, b));
            } else if a > e {
                if !placed {
                    merged.push((s, e));
                    placed = true;
                }
                merged.push((a, b));
            } else {
                (s, e) = (s.min(a), e.max(b));
            }
        }
        if !placed {
            merged.push((s, e));
        }
        if merged.len() > MAX_CRYPTO_FRAGMENTS {
            return Err(QuicError::TooManyFragments);
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        // Copy the gaps between what is already held; compare the rest.
        let mut pos = start;
        for &(a, b) in &self.have {
            if b <= pos {
                continue;
            }
            if a >= end {
                break;
            }
            if a > pos {
                self.buf[pos..a].copy_from_slice(&data[pos - start..a - start]);
            }
            let (os, oe) = (a.max(pos), b.min(end));
            self.conflict |= self.buf[os..oe] != data[os - start..oe - start];
            pos = oe;
        }
        if pos < end {
            self.buf[pos..end].copy_from_slice(&data[pos - start..]);
        }
        self.have = merged;
        Ok(())
    }

    /// Adds every CRYPTO fragment of a packet; returns the first error, having added the others.
    pub fn add_packet(&mut self, packet: &InitialPacket) -> Result<(), QuicError> {
        let mut result = Ok(());
        for (offset, data) in packet.crypto() {
            let r = self.add(offset, data);
            result = result.and(r);
        }
        result
    }

    /// The stream from offset 0 up to the first missing byte.
    pub fn contiguous(&self) -> &[u8] {
        match self.have.first() {
            Some(&(0, end)) => self.buf.get(..end).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The ClientHello once it is complete: see [`client_hello_message`].
    pub fn client_hello(&self) -> Result<Option<&[u8]>, QuicError> {
        client_hello_message(self.contiguous())
    }

    /// Overlapping fragments disagreed.
    pub fn conflicting(&self) -> bool {
        self.conflict
    }
}

/// The handshake message at the start of a CRYPTO stream, header included (type 1, 24-bit
/// length), once all its bytes are there: `Ok(None)` while some are missing, an error when it
/// is not a ClientHello or could never fit in [`MAX_CRYPTO_BYTES`].
pub fn client_hello_message(stream: &[u8]) -> Result<Option<&[u8]>, QuicError> {
    match stream.first() {
        None => return Ok(None),
        Some(1) => {}
        Some(_) => return Err(QuicError::NotClientHello),
    }
    let Some(&[_, a, b, c]) = stream.get(..4) else {
        return Ok(None);
    };
    let len = 4 + ((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c));
    if len > MAX_CRYPTO_BYTES {
        return Err(QuicError::TooLarge);
    }
    Ok(stream.get(..len))
}

/// Wraps a handshake message in one TLS handshake record, which is what
/// [`super::tls::parse_client_hello`] reads: `tls::parse_client_hello(&as_tls_record(msg)?)`.
/// One record always does: the message is at most [`MAX_CRYPTO_BYTES`] (2^14, TLS's own record
/// limit; tls.rs accepts 18,432). The ClientHello's `records` then reads 1, and its `ja4()`
/// starts with `t` where JA4 for QUIC starts with `q`.
pub fn as_tls_record(handshake: &[u8]) -> Result<Vec<u8>, QuicError> {
    if handshake.len() > MAX_CRYPTO_BYTES {
        return Err(QuicError::TooLarge);
    }
    let mut rec = Vec::with_capacity(5 + handshake.len());
    rec.extend_from_slice(&[0x16, 0x03, 0x01]);
    rec.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    rec.extend_from_slice(handshake);
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tls::{ClientHello, parse_client_hello};

    // Client datagrams captured on loopback from aioquic's HTTP/3 example client (see
    // testdata/README.md): one Initial in version 1, one in version 2, and a ClientHello grown
    // past one packet by extra ALPN entries, which aioquic sends as two Initials in two datagrams.
    const AIOQUIC_V1: &[u8] = include_bytes!("testdata/quic-aioquic-initial.bin");
    const AIOQUIC_V2: &[u8] = include_bytes!("testdata/quic-aioquic-v2-initial.bin");
    const AIOQUIC_SPLIT_1: &[u8] = include_bytes!("testdata/quic-aioquic-split-1.bin");
    const AIOQUIC_SPLIT_2: &[u8] = include_bytes!("testdata/quic-aioquic-split-2.bin");
    // The whole connections these were cut from.
    const PCAP_V1: &[u8] = include_bytes!("testdata/quic-aioquic.pcap");
    const PCAP_V2: &[u8] = include_bytes!("testdata/quic-aioquic-v2.pcap");
    const PCAP_SPLIT: &[u8] = include_bytes!("testdata/quic-aioquic-split.pcap");

    const RFC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    /// RFC 9001 A.2 (and RFC 9369 A.2, the same frames): the client's CRYPTO frame, offset 0,
    /// length 241, the ClientHello for example.com. 917 bytes of PADDING follow it.
    const A2_CRYPTO_FRAME: &str = concat!(
        "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e86804fe3a47f06a2b69484c000004130113",
        "02010000c000000010000e00000b6578616d706c652e636f6dff01000100000a00080006001d00170018001000070005",
        "04616c706e000500050100000000003300260024001d00209370b2c9caa47fbabaf4559fedba753de171fa71f50f1ce1",
        "5d43e994ec74d748002b0003020304000d0010000e0403050306030203080408050806002d00020101001c0002400100",
        "3900320408ffffffffffffffff05048000ffff07048000ffff0801100104800075300901100f088394c8f03e51570806",
        "048000ffff",
    );

    /// RFC 9001 A.2: the protected client Initial, 1200 bytes.
    const V1_PROTECTED: &str = concat!(
        "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9bd8bab936b47d92ec356c",
        "0bab7df5976d27cd449f63300099f3991c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c",
        "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df621230c83711b39343fa028cea7f7fb5ff89",
        "eac2308249a02252155e2347b63d58c5457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208",
        "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec4e15daf8500a6ef69ec4e3feb6b1d98e",
        "610ac8b7ec3faf6ad760b7bad1db4ba3485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db",
        "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c7b4378e846d29f37ed7b4ea9ec5d82e7",
        "961b7f25a9323851f681d582363aa5f89937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556",
        "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c7468449a13d8e3b95811a198f3491de3e7",
        "fe942b330407abf82a4ed7c1b311663ac69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00",
        "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632291d6a418211cc2962e20fe47feb3edf",
        "330f2c603a9d48c0fcb5699dbfe5896425c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd",
        "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ffef132eef2fa09346aee33c28eb130ff2",
        "8f5b766953334113211996d20011a198e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd",
        "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73203a4a13e96f5432ec0fd4a1ee65accd",
        "d5e3904df54c1da510b0ff20dcc0c77fcb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e",
        "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03adea2e1fbc5aa463d08ca19896d2bf59a07",
        "1b851e6c239052172f296bfb5e72404790a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2",
        "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f440591f355e12d439ff150aab7613499d",
        "bd49adabc8676eef023b15b65bfc5ca06948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e",
        "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0be79e2fb8f5d5fbbe2e30ecadd220723",
        "c8c0aea8078cdfcb3868263ff8f0940054da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab",
        "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9f96f3ca9ec1dde434da7d2d392b905dd",
        "f3d1f9af93d1af5950bd493f5aa731b4056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064",
        "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241e221af44860018ab0856972e194cd934",
    );

    /// RFC 9369 A.2: the same Initial in version 2.
    const V2_PROTECTED: &str = concat!(
        "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485dd04de806071bf03dceebfa162e75d6c",
        "96058bdbfb127cdfcbf903388e99ad049f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d",
        "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a12834e3f249a78d395e0d18f4d766004",
        "f1a2674802a747eaa901c3f10cda5500cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68",
        "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff3312ae50b187c1433c0f028edcc4c2838b",
        "6a9bfc226ca4b4530e7a4ccee1bfa2a3d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd",
        "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520bcfb7966fc49b393f0061d974a2706df",
        "8c4a9449f11d7f3d2dcbb90c6b877045636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f",
        "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c1216ccce2d0193f958bb3850a833f7ae43",
        "2b65bc5a53975c155aa4bcb4f7b2c4e54df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4",
        "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b8017c25ca9052ca1079d8b78aebd4787",
        "6d330a30f6a8c6d61dd1ab5589329de714d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9",
        "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91abfe43960977c87471cf9ad4074d30e1",
        "0d6a7f03c63bd5d4317f68ff325ba3bd80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db",
        "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18d703dd84045a274ae8bfa73379661388",
        "d6991fe39b0d93debb41700b41f90a15c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc",
        "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61f6b5b984d4d3dfa033c1bb7e4f0037fe",
        "bf406d91c0dccf32acf423cfa1e7071010d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b",
        "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e06ebfde206bfb0fcbc0edc4ebec30966",
        "1bdd908d532eb0c6adc38b7ca7331dce8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1",
        "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1e86215c2d54e6670e07383a27bbffb5a",
        "ddf47d66aa85a0c6f9f32e59d85a44dd5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3",
        "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89d5974ee12e5cf7d5da4d6a31123041f3",
        "3e61407e76cffcdcfd7e19ba58cf4b536f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19",
        "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96ba18b2faa745b6fe189cf772a9f84cbfc",
    );

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn a2_payload() -> Vec<u8> {
        let mut p = hex(A2_CRYPTO_FRAME);
        p.resize(p.len() + 917, 0);
        p
    }

    fn varint(v: u64) -> Vec<u8> {
        match v {
            0..0x40 => vec![v as u8],
            0x40..0x4000 => (v as u16 | 0x4000).to_be_bytes().to_vec(),
            0x4000..0x4000_0000 => (v as u32 | 0x8000_0000).to_be_bytes().to_vec(),
            _ => (v | 0xc000_0000_0000_0000).to_be_bytes().to_vec(),
        }
    }

    /// How a test Initial is built: the client's side of the protection, written from RFC 9001
    /// 5.3-5.4 and checked against the RFC's packets (`seal_reproduces_the_rfc_packets`).
    #[derive(Clone)]
    struct Spec {
        version: u32,
        dcid: Vec<u8>,
        scid: Vec<u8>,
        token: Vec<u8>,
        pn: u32,
        pn_len: usize,
        /// Set in the first byte before protection: the reserved bits (0x0c), say.
        extra_bits: u8,
    }

    impl Spec {
        fn rfc(version: u32) -> Self {
            Spec { version, dcid: RFC_DCID.to_vec(), scid: vec![], token: vec![], pn: 2, pn_len: 4, extra_bits: 0 }
        }

        fn seal(&self, payload: &[u8]) -> Vec<u8> {
            let keys = InitialKeys::client(self.version, &self.dcid).unwrap();
            let type_bits = if self.version == VERSION_2 { 0x10 } else { 0x00 };
            let mut p = vec![0xc0 | type_bits | self.extra_bits | (self.pn_len as u8 - 1)];
            p.extend_from_slice(&self.version.to_be_bytes());
            p.push(self.dcid.len() as u8);
            p.extend_from_slice(&self.dcid);
            p.push(self.scid.len() as u8);
            p.extend_from_slice(&self.scid);
            p.extend(varint(self.token.len() as u64));
            p.extend_from_slice(&self.token);
            // Length always on 2 bytes, as the RFC's packets have it.
            p.extend_from_slice(&((self.pn_len + payload.len() + 16) as u16 | 0x4000).to_be_bytes());
            seal(&keys, p, self.pn, self.pn_len, payload)
        }
    }

    /// A non-Initial long-header packet of `body_len` opaque bytes.
    fn long_packet(first: u8, version: u32, dcid: &[u8], body_len: usize) -> Vec<u8> {
        let mut p = vec![first];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(dcid.len() as u8);
        p.extend_from_slice(dcid);
        p.push(0);
        p.extend(varint(body_len as u64));
        p.resize(p.len() + body_len, 0x5a);
        p
    }

    fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut f = vec![FRAME_CRYPTO];
        f.extend(varint(offset));
        f.extend(varint(data.len() as u64));
        f.extend_from_slice(data);
        f
    }

    fn only_initial(datagram: &[u8]) -> InitialPacket {
        let mut d = parse_datagram(datagram).unwrap();
        assert_eq!(d.initials.len(), 1);
        d.initials.remove(0)
    }

    /// The ClientHello through kavwatch's own TLS parser, as the caller will do it.
    fn tls_client_hello(asm: &CryptoAssembler) -> ClientHello {
        let msg = asm.client_hello().unwrap().expect("complete ClientHello");
        parse_client_hello(&as_tls_record(msg).unwrap()).unwrap()
    }

    #[test]
    fn rfc9001_a1_client_keys() {
        let k = InitialKeys::client(VERSION_1, &RFC_DCID).unwrap();
        assert_eq!(k.key().as_slice(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(k.iv().as_slice(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(k.hp().as_slice(), hex("9f50449e04a0e810283a1e9933adedd2"));
        assert_eq!(k.version(), VERSION_1);
    }

    #[test]
    fn rfc9369_a1_client_keys() {
        let k = InitialKeys::client(VERSION_2, &RFC_DCID).unwrap();
        assert_eq!(k.key().as_slice(), hex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(k.iv().as_slice(), hex("91f73e2351d8fa91660e909f"));
        assert_eq!(k.hp().as_slice(), hex("45b95e15235d6f45a6b19cbcb0294ba9"));
        assert_eq!(
            InitialKeys::client(0xff00_001d, &RFC_DCID).unwrap_err(),
            QuicError::UnsupportedVersion(0xff00_001d)
        );
        assert_eq!(InitialKeys::client(VERSION_1, &[0; 21]).unwrap_err(), QuicError::BadLength);
    }

    /// RFC 9001 A.2 and RFC 9369 A.2: the whole plaintext comes out, and the ClientHello
    /// (01 00 00 ed 03 03 eb f8 fa 56 ...) with it.
    #[test]
    fn rfc_client_initials_v1_and_v2() {
        for (version, protected) in [(VERSION_1, V1_PROTECTED), (VERSION_2, V2_PROTECTED)] {
            let datagram = hex(protected);
            assert_eq!(datagram.len(), 1200);
            assert!(is_quic_long_header_initial(&datagram));
            let d = parse_datagram(&datagram).unwrap();
            assert_eq!((d.initials.len(), d.skipped, d.trailing, d.first_error), (1, 0, 0, None));
            let p = &d.initials[0];
            assert_eq!((p.version, p.packet_number, p.token_len), (version, 2, 0));
            assert_eq!(p.dcid.as_bytes(), RFC_DCID);
            assert!(p.scid.as_bytes().is_empty());
            assert_eq!(p.payload(), a2_payload());
            let frags: Vec<_> = p.crypto().collect();
            assert_eq!(frags.len(), 1);
            assert_eq!(frags[0].0, 0);
            assert!(frags[0].1.starts_with(&hex("010000ed0303ebf8fa56")));
            assert_eq!(frags[0].1.len(), 241);
            assert_eq!((p.frames.ack, p.frames.ping, p.frames.close), (false, false, None));
            let mut asm = CryptoAssembler::new();
            asm.add_packet(p).unwrap();
            let ch = tls_client_hello(&asm);
            assert_eq!(ch.sni.as_deref(), Some("example.com"));
            assert_eq!(ch.alpn, ["alpn"]);
        }
    }

    /// The test's sealing reproduces the RFC packets byte for byte, so the packets other tests
    /// build are what a client would send.
    #[test]
    fn seal_reproduces_the_rfc_packets() {
        assert_eq!(Spec::rfc(VERSION_1).seal(&a2_payload()), hex(V1_PROTECTED));
        assert_eq!(Spec::rfc(VERSION_2).seal(&a2_payload()), hex(V2_PROTECTED));
    }

    #[test]
    fn aioquic_client_hello_v1_and_v2() {
        for (datagram, version) in [(AIOQUIC_V1, VERSION_1), (AIOQUIC_V2, VERSION_2)] {
            assert!(is_quic_long_header_initial(datagram));
            let d = parse_datagram(datagram).unwrap();
            assert_eq!(d.initials.len(), 1);
            assert_eq!(d.initials[0].version, version);
            // aioquic pads the datagram to 1200 bytes with zeros after the packet.
            assert!(d.trailing > 0 && datagram[datagram.len() - d.trailing..].iter().all(|&b| b == 0));
            let mut asm = CryptoAssembler::new();
            asm.add_packet(&d.initials[0]).unwrap();
            let ch = tls_client_hello(&asm);
            assert_eq!(ch.sni.as_deref(), Some("dnl-01.geo.kaspersky.com"));
            assert_eq!(ch.alpn.first().map(String::as_str), Some("h3"));
            assert!(ch.supported_versions.contains(&0x0304));
        }
    }

    #[test]
    fn aioquic_client_hello_in_two_initials_either_order() {
        let (one, two) = (only_initial(AIOQUIC_SPLIT_1), only_initial(AIOQUIC_SPLIT_2));
        assert_eq!((one.packet_number, two.packet_number), (0, 1));
        assert_eq!(one.dcid, two.dcid);
        for order in [[&one, &two], [&two, &one]] {
            let mut asm = CryptoAssembler::new();
            asm.add_packet(order[0]).unwrap();
            assert_eq!(asm.client_hello(), Ok(None), "half a ClientHello");
            asm.add_packet(order[1]).unwrap();
            let msg = asm.client_hello().unwrap().unwrap();
            assert!(msg.len() > 1200, "{} bytes: it needed two packets", msg.len());
            let ch = tls_client_hello(&asm);
            assert_eq!(ch.sni.as_deref(), Some("dnl-01.geo.kaspersky.com"));
            assert_eq!(ch.alpn.len(), 16, "h3 and 48 padding entries, of which tls.rs keeps the first 16");
            assert_eq!(ch.alpn[0], "h3");
            assert!(!asm.conflicting());
        }
    }

    /// Every datagram of the captured connections, as a sensor sees them, with the keys a flow
    /// keeps: the ClientHello comes out once, the client's later Initials (ACKs coalesced with a
    /// Handshake packet, sent to the server's CID) open with the first keys only, and nothing
    /// the server sends opens as a client Initial.
    #[test]
    fn whole_captured_connections() {
        for (pcap, version, hello_packets) in
            [(PCAP_V1, VERSION_1, 1), (PCAP_V2, VERSION_2, 1), (PCAP_SPLIT, VERSION_1, 2)]
        {
            let mut keys: Option<InitialKeys> = None;
            let mut asm = CryptoAssembler::new();
            let (mut with_crypto, mut ack_only) = (0, 0);
            for (dport, datagram) in crate::proto::udp_datagrams(pcap) {
                if dport != 4433 {
                    assert!(parse_datagram(datagram).is_err());
                    continue;
                }
                if !is_quic_long_header_initial(datagram) {
                    assert_eq!(parse_datagram(datagram).unwrap_err(), QuicError::NotLongHeader);
                    continue;
                }
                let d = match &keys {
                    None => {
                        let d = parse_datagram(datagram).unwrap();
                        keys = Some(InitialKeys::client(version, d.initials[0].dcid.as_bytes()).unwrap());
                        d
                    }
                    Some(k) => parse_datagram_with_keys(datagram, k).unwrap(),
                };
                for p in &d.initials {
                    assert_eq!(p.version, version);
                    if p.frames.crypto.is_empty() {
                        assert!(p.frames.ack);
                        assert_eq!(d.skipped, 1, "a Handshake packet coalesced");
                        assert_eq!(parse_datagram(datagram).unwrap_err(), QuicError::DecryptFailed, "new DCID");
                        ack_only += 1;
                    } else {
                        with_crypto += 1;
                    }
                    asm.add_packet(p).unwrap();
                }
            }
            assert_eq!((with_crypto, ack_only), (hello_packets, 1));
            let ch = tls_client_hello(&asm);
            assert_eq!(ch.sni.as_deref(), Some("dnl-01.geo.kaspersky.com"));
            assert_eq!(ch.alpn[0], "h3");
        }
    }

    #[test]
    fn precheck() {
        let rfc = hex(V1_PROTECTED);
        assert!(is_quic_long_header_initial(&rfc[..5]));
        assert!(!is_quic_long_header_initial(&rfc[..4]));
        assert!(!is_quic_long_header_initial(&[]));
        let with = |first: u8, version: u32| {
            let mut d = vec![first];
            d.extend_from_slice(&version.to_be_bytes());
            d.extend_from_slice(&[8; 30]);
            is_quic_long_header_initial(&d)
        };
        assert!(with(0xc0, VERSION_1) && with(0xd0, VERSION_2));
        assert!(with(0x80, VERSION_1), "fixed bit cleared (RFC 9287) is still an Initial");
        assert!(!with(0xe0, VERSION_1) && !with(0xd0, VERSION_1) && !with(0xf0, VERSION_1), "0-RTT, Handshake, Retry");
        assert!(!with(0xc0, VERSION_2) && !with(0xe0, VERSION_2), "Retry and 0-RTT in version 2");
        assert!(!with(0x40, VERSION_1), "short header");
        assert!(!with(0xc0, 0) && !with(0xc0, 0xff00_001d) && !with(0xc0, 0x1a2a_3a4a));
    }

    #[test]
    fn coalesced_packets_and_what_ends_a_walk() {
        let initial = Spec::rfc(VERSION_1).seal(&a2_payload());
        let handshake = long_packet(0xe0, VERSION_1, &RFC_DCID, 40);
        let short = [0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9];

        let d = parse_datagram(&[initial.as_slice(), &handshake, &short].concat()).unwrap();
        assert_eq!((d.initials.len(), d.skipped, d.trailing, d.first_error), (1, 1, short.len(), None));

        // Behind another long-header packet: found, though the pre-check says no.
        let behind = [handshake.as_slice(), &initial].concat();
        assert!(!is_quic_long_header_initial(&behind));
        let d = parse_datagram(&behind).unwrap();
        assert_eq!((d.initials.len(), d.skipped), (1, 1));

        // A junk Initial in front does not hide a good one (a server skips it too).
        let mut junk = initial.clone();
        junk[100] ^= 1;
        let d = parse_datagram(&[junk.as_slice(), &initial].concat()).unwrap();
        assert_eq!((d.initials.len(), d.first_error), (1, Some(QuicError::DecryptFailed)));
        assert_eq!(parse_datagram(&junk).unwrap_err(), QuicError::DecryptFailed);

        // Another connection's packet ends the walk.
        let other = Spec { dcid: vec![7; 8], ..Spec::rfc(VERSION_1) }.seal(&a2_payload());
        let d = parse_datagram(&[initial.as_slice(), &other].concat()).unwrap();
        assert_eq!((d.initials.len(), d.first_error), (1, Some(QuicError::DcidMismatch)));

        // At most MAX_PACKETS_PER_DATAGRAM packets are opened.
        let tiny = Spec::rfc(VERSION_1).seal(&[FRAME_PING, 0, 0, 0]);
        let d = parse_datagram(&tiny.repeat(MAX_PACKETS_PER_DATAGRAM + 3)).unwrap();
        assert_eq!((d.initials.len(), d.first_error), (MAX_PACKETS_PER_DATAGRAM, Some(QuicError::TooManyPackets)));
        assert!(d.initials[0].frames.ping);

        // Nothing to open.
        assert_eq!(parse_datagram(&handshake).unwrap_err(), QuicError::NotInitial);
        assert_eq!(parse_datagram(&long_packet(0xf0, VERSION_1, &RFC_DCID, 40)).unwrap_err(), QuicError::NotInitial);
        assert_eq!(parse_datagram(&short).unwrap_err(), QuicError::NotLongHeader);
        assert_eq!(parse_datagram(&[]).unwrap_err(), QuicError::Truncated);
        let vn = long_packet(0x80, 0, &RFC_DCID, 8);
        assert_eq!(parse_datagram(&vn).unwrap_err(), QuicError::UnsupportedVersion(0));
        let unknown = long_packet(0xc0, 0x1a2a_3a4a, &RFC_DCID, 8);
        assert_eq!(parse_datagram(&unknown).unwrap_err(), QuicError::UnsupportedVersion(0x1a2a_3a4a));
        let d = parse_datagram(&[initial.as_slice(), &unknown].concat()).unwrap();
        assert_eq!(d.first_error, Some(QuicError::UnsupportedVersion(0x1a2a_3a4a)));

        // Broken headers.
        assert_eq!(parse_datagram(&initial[..600]).unwrap_err(), QuicError::Truncated);
        assert_eq!(parse_datagram(&initial[..3]).unwrap_err(), QuicError::Truncated);
        let mut long_cid = initial.clone();
        long_cid[5] = 21;
        assert_eq!(parse_datagram(&long_cid).unwrap_err(), QuicError::BadLength);
        let mut no_sample = vec![0xc0, 0, 0, 0, 1, 8];
        no_sample.extend_from_slice(&RFC_DCID);
        no_sample.extend_from_slice(&[0, 0, 19]); // 19 bytes: a 20-byte minimum for the sample
        no_sample.resize(no_sample.len() + 19, 0x11);
        assert_eq!(parse_datagram(&no_sample).unwrap_err(), QuicError::BadLength);
        let reserved = Spec { extra_bits: 0x08, ..Spec::rfc(VERSION_1) }.seal(&a2_payload());
        assert_eq!(parse_datagram(&reserved).unwrap_err(), QuicError::ReservedBits);
        let empty = Spec::rfc(VERSION_1).seal(&[]);
        assert_eq!(parse_datagram(&empty).unwrap_err(), QuicError::NoFrames);
    }

    #[test]
    fn token_scid_packet_number_and_v2_coalesced_with_v1() {
        let spec =
            Spec { token: vec![0xaa; 70], scid: vec![1, 2, 3], pn: 0x01_0203, pn_len: 3, ..Spec::rfc(VERSION_2) };
        let p = only_initial(&spec.seal(&a2_payload()));
        assert_eq!((p.version, p.token_len, p.packet_number), (VERSION_2, 70, 0x01_0203));
        assert_eq!(p.scid.as_bytes(), [1, 2, 3]);
        assert_eq!(format!("{:?}", p.scid), "010203");
        let both = [Spec::rfc(VERSION_1).seal(&a2_payload()), spec.seal(&a2_payload())].concat();
        let versions: Vec<u32> = parse_datagram(&both).unwrap().initials.iter().map(|p| p.version).collect();
        assert_eq!(versions, [VERSION_1, VERSION_2]);
    }

    #[test]
    fn keys_given_by_the_flow() {
        let d = parse_datagram(AIOQUIC_V1).unwrap();
        let keys = InitialKeys::client(VERSION_1, d.initials[0].dcid.as_bytes()).unwrap();
        let again = parse_datagram_with_keys(AIOQUIC_V1, &keys).unwrap();
        assert_eq!(again.initials[0].payload(), d.initials[0].payload());
        // Keys of another DCID do not open it; keys of another version are not used.
        let wrong = InitialKeys::client(VERSION_1, &RFC_DCID).unwrap();
        assert_eq!(parse_datagram_with_keys(AIOQUIC_V1, &wrong).unwrap_err(), QuicError::DecryptFailed);
        let v2 = InitialKeys::client(VERSION_2, &RFC_DCID).unwrap();
        assert!(parse_datagram_with_keys(AIOQUIC_V1, &v2).is_ok());
        // The client's later Initials carry the server's CID but keep the first keys.
        let later = Spec { dcid: vec![9; 8], ..Spec::rfc(VERSION_1) };
        let mut sealed = later.seal(&a2_payload());
        let keys_rfc = InitialKeys::client(VERSION_1, &RFC_DCID).unwrap();
        assert!(parse_datagram_with_keys(&sealed, &keys_rfc).is_err());
        // Re-protect with the RFC keys under the new DCID: only the given keys open it.
        sealed = reprotect_with(&keys_rfc, &later, &a2_payload());
        assert_eq!(parse_datagram(&sealed).unwrap_err(), QuicError::DecryptFailed);
        assert_eq!(parse_datagram_with_keys(&sealed, &keys_rfc).unwrap().initials.len(), 1);
    }

    /// Like `Spec::seal`, with keys not derived from the packet's DCID.
    /// Appends the packet number to `header`, encrypts `payload` after it and applies header
    /// protection, as a QUIC client does (RFC 9001 5.3, 5.4).
    fn seal(keys: &InitialKeys, mut p: Vec<u8>, pn: u32, pn_len: usize, payload: &[u8]) -> Vec<u8> {
        let pn_offset = p.len();
        p.extend_from_slice(&pn.to_be_bytes()[4 - pn_len..]);
        let mut nonce = keys.iv;
        for (n, b) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
            *n ^= b;
        }
        let mut body = payload.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce);
        let tag = keys.aead.seal_in_place_separate_tag(nonce, Aad::from(&p), &mut body).unwrap();
        p.extend(body);
        p.extend_from_slice(tag.as_ref());
        let mask = keys.hp_key.new_mask(&p[pn_offset + 4..pn_offset + 20]).unwrap();
        p[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            p[pn_offset + i] ^= mask[1 + i];
        }
        p
    }

    fn reprotect_with(keys: &InitialKeys, spec: &Spec, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0xc0 | (spec.pn_len as u8 - 1), 0, 0, 0, 1, spec.dcid.len() as u8];
        p.extend_from_slice(&spec.dcid);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&((spec.pn_len + payload.len() + 16) as u16 | 0x4000).to_be_bytes());
        seal(keys, p, spec.pn, spec.pn_len, payload)
    }

    /// The TLS packet of death (a supported_groups extension with an empty body, see
    /// tls.rs `empty_supported_groups_extension_is_not_a_panic`) inside a client Initial: opened,
    /// reassembled and parsed without a panic. The plaintext frames and the sealed datagram are
    /// fuzz/corpus/quic/crash-empty-groups and crash-empty-groups-initial.
    #[test]
    fn empty_supported_groups_inside_an_initial() {
        use crate::proto::tls::tests::{handshake_with_extensions, sni_extension};
        let mut exts = vec![0x00, 0x0a, 0x00, 0x00];
        exts.extend(sni_extension(b"dnl-01.geo.kaspersky.com"));
        let hello = handshake_with_extensions(&exts);
        let mut frames = vec![FRAME_CRYPTO, 0];
        frames.extend_from_slice(&(hello.len() as u16 | 0x4000).to_be_bytes());
        frames.extend_from_slice(&hello);
        frames.resize(frames.len() + 20, 0);
        assert_eq!(frames, include_bytes!("../../fuzz/corpus/quic/crash-empty-groups"));
        let mut padded = frames.clone();
        padded.resize(1162, 0);
        let datagram = Spec::rfc(VERSION_1).seal(&padded);
        assert_eq!(datagram, include_bytes!("../../fuzz/corpus/quic/crash-empty-groups-initial"));
        let mut asm = CryptoAssembler::new();
        asm.add_packet(&only_initial(&datagram)).unwrap();
        let ch = tls_client_hello(&asm);
        assert_eq!(ch.sni.as_deref(), Some("dnl-01.geo.kaspersky.com"));
        assert_eq!(ch.extension_types(), [0x000a, 0x0000]);
    }

    #[test]
    fn frames_allowed_in_an_initial() {
        let mut payload = vec![FRAME_PING, 0, 0, 0];
        // ACK: largest 5, delay 0, 2 more ranges, first range 1, then (gap, length) twice.
        payload.extend_from_slice(&[FRAME_ACK, 5, 0, 2, 1, 0, 0, 0, 0]);
        // ACK_ECN with 8-byte varints, and three ECN counts.
        payload.push(FRAME_ACK_ECN);
        payload.extend(varint(1 << 40));
        payload.extend_from_slice(&[0, 0, 0]);
        payload.extend(varint(1 << 33));
        payload.extend(varint(7));
        payload.extend(varint(1 << 20));
        payload.extend(crypto_frame(5, b"world"));
        payload.extend(crypto_frame(0, b"hello"));
        payload.extend(crypto_frame(3, b""));
        payload.extend_from_slice(&[FRAME_CONNECTION_CLOSE, 0x0a, 0x06, 3]);
        payload.extend_from_slice(b"bye");
        payload.extend_from_slice(&[0; 10]);
        let p = only_initial(&Spec::rfc(VERSION_1).seal(&payload));
        assert!(p.frames.ping && p.frames.ack);
        assert_eq!(p.frames.close, Some(0x0a));
        let frags: Vec<(u64, &[u8])> = p.crypto().collect();
        assert_eq!(frags, [(5, &b"world"[..]), (0, &b"hello"[..])], "in packet order, the empty one left out");
        let mut asm = CryptoAssembler::new();
        asm.add_packet(&p).unwrap();
        assert_eq!(asm.contiguous(), b"helloworld");
        assert_eq!(parse_frames(&payload).unwrap(), p.frames);
    }

    #[test]
    fn forbidden_and_malformed_frames() {
        let bad = |payload: &[u8]| parse_frames(payload).unwrap_err();
        assert_eq!(bad(&[]), QuicError::NoFrames);
        assert_eq!(bad(&[0x08, 0, 0]), QuicError::BadFrame(0x08), "STREAM");
        assert_eq!(bad(&[0x1d, 0, 0]), QuicError::BadFrame(0x1d), "application CONNECTION_CLOSE");
        assert_eq!(bad(&[0x1e]), QuicError::BadFrame(0x1e), "HANDSHAKE_DONE");
        assert_eq!(bad(&[0x40, 0x06, 0, 0]), QuicError::BadFrame(0x40), "padded frame type");
        assert_eq!(bad(&[0, 0, 0x18]), QuicError::BadFrame(0x18), "NEW_CONNECTION_ID after padding");
        assert_eq!(bad(&[FRAME_CRYPTO, 0, 5, 1, 2]), QuicError::BadFrame(FRAME_CRYPTO), "data cut short");
        assert_eq!(
            bad(&[FRAME_CRYPTO, 0, 0xbf, 0xff, 0xff, 0xff, 1]),
            QuicError::BadFrame(FRAME_CRYPTO),
            "huge length"
        );
        assert_eq!(bad(&[FRAME_CRYPTO, 0xc0]), QuicError::BadFrame(FRAME_CRYPTO), "cut varint");
        let mut past_max = vec![FRAME_CRYPTO];
        past_max.extend(varint(VARINT_MAX));
        past_max.extend_from_slice(&[1, 0]);
        assert_eq!(bad(&past_max), QuicError::BadFrame(FRAME_CRYPTO), "offset + length over 2^62 - 1");
        let mut huge_ack = vec![FRAME_ACK, 1, 0];
        huge_ack.extend(varint(VARINT_MAX));
        huge_ack.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(bad(&huge_ack), QuicError::BadFrame(FRAME_ACK), "2^62 ranges announced, 2 given");
        assert_eq!(bad(&[FRAME_ACK_ECN, 1, 0, 0, 0, 1, 1]), QuicError::BadFrame(FRAME_ACK_ECN), "ECN counts missing");
        assert_eq!(bad(&[FRAME_CONNECTION_CLOSE, 1, 0, 9, b'x']), QuicError::BadFrame(FRAME_CONNECTION_CLOSE));
        let many: Vec<u8> = (0..=MAX_CRYPTO_FRAGMENTS as u64).flat_map(|i| crypto_frame(i, b"x")).collect();
        assert_eq!(bad(&many), QuicError::TooManyFragments);
        let last = crypto_frame(MAX_CRYPTO_FRAGMENTS as u64, b"x").len();
        assert_eq!(parse_frames(&many[..many.len() - last]).unwrap().crypto.len(), MAX_CRYPTO_FRAGMENTS);
        // The same inside a real packet.
        let stream = Spec::rfc(VERSION_1).seal(&[0x08, 0, 4, b'a', b'b', b'c', b'd']);
        assert_eq!(parse_datagram(&stream).unwrap_err(), QuicError::BadFrame(0x08));
    }

    #[test]
    fn assembler_overlaps_duplicates_order_and_bounds() {
        let mut msg = vec![1, 0, 0, 96];
        msg.extend((0..96).map(|i| i as u8 ^ 0x5c));
        let mut asm = CryptoAssembler::new();
        asm.add(50, &msg[50..80]).unwrap();
        assert_eq!((asm.contiguous(), asm.client_hello()), (&[][..], Ok(None)));
        asm.add(0, &msg[..10]).unwrap();
        assert_eq!(asm.contiguous(), &msg[..10]);
        asm.add(5, &msg[5..60]).unwrap(); // overlaps both
        assert_eq!(asm.contiguous(), &msg[..80]);
        asm.add(0, &msg[..80]).unwrap(); // duplicate
        asm.add(90, &msg[90..]).unwrap();
        assert_eq!(asm.client_hello(), Ok(None));
        asm.add(70, &msg[70..95]).unwrap();
        assert_eq!(asm.client_hello(), Ok(Some(&msg[..])));
        assert!(!asm.conflicting());
        asm.add(10, b"XX").unwrap();
        assert!(asm.conflicting(), "differing retransmission");
        assert_eq!(asm.contiguous(), &msg[..], "the first bytes stay");
        asm.add(3, &[]).unwrap();

        // Past the bound: refused whole, nothing changed.
        let before = asm.clone();
        assert_eq!(asm.add((MAX_CRYPTO_BYTES - 1) as u64, b"ab"), Err(QuicError::TooLarge));
        assert_eq!(asm.add(u64::MAX, b"a"), Err(QuicError::TooLarge));
        assert_eq!(asm.add(u64::MAX - 1, &[0; 4]), Err(QuicError::TooLarge));
        assert_eq!((asm.buf.len(), &asm.have), (before.buf.len(), &before.have));
        asm.add((MAX_CRYPTO_BYTES - 1) as u64, b"a").unwrap();
        assert_eq!(asm.buf.len(), MAX_CRYPTO_BYTES);

        // At most MAX_CRYPTO_FRAGMENTS disjoint pieces; filling a gap merges two.
        let mut asm = CryptoAssembler::new();
        for i in 0..MAX_CRYPTO_FRAGMENTS as u64 {
            asm.add(i * 2, b"a").unwrap();
        }
        assert_eq!(asm.add(1000, b"b"), Err(QuicError::TooManyFragments));
        assert_eq!(asm.have.len(), MAX_CRYPTO_FRAGMENTS);
        asm.add(1, b"c").unwrap();
        assert_eq!(asm.contiguous(), b"aca");
        asm.add(1000, b"b").unwrap();
    }

    /// Random cuts, with duplicates and overlaps, in random order: always the same stream.
    #[test]
    fn assembler_random_fragments() {
        let msg: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut frags = Vec::new();
            let mut at = 0;
            while at < msg.len() {
                let len = 1 + rng.below(400);
                let end = (at + len).min(msg.len());
                frags.push((at, end));
                if rng.below(3) == 0 {
                    let s = at.saturating_sub(rng.below(50));
                    frags.push((s, (end + rng.below(50)).min(msg.len())));
                }
                at = end;
            }
            for i in (1..frags.len()).rev() {
                frags.swap(i, rng.below(i + 1));
            }
            let mut asm = CryptoAssembler::new();
            for (k, &(s, e)) in frags.iter().enumerate() {
                asm.add(s as u64, &msg[s..e]).unwrap();
                assert!(msg.starts_with(asm.contiguous()));
                assert!(k + 1 < frags.len() || asm.contiguous() == msg);
            }
            assert!(!asm.conflicting());
        }
    }

    #[test]
    fn client_hello_message_boundaries() {
        assert_eq!(client_hello_message(&[]), Ok(None));
        assert_eq!(client_hello_message(&[1, 0, 0]), Ok(None));
        assert_eq!(client_hello_message(&[2]), Err(QuicError::NotClientHello));
        assert_eq!(client_hello_message(&[1, 0, 0x40, 0x01]), Err(QuicError::TooLarge));
        assert_eq!(client_hello_message(&[1, 0, 0x3f, 0xfc]), Ok(None), "exactly MAX_CRYPTO_BYTES, incomplete");
        assert_eq!(client_hello_message(&[1, 0, 0, 2, 9]), Ok(None));
        assert_eq!(client_hello_message(&[1, 0, 0, 2, 9, 8, 7]), Ok(Some(&[1, 0, 0, 2, 9, 8][..])));
        assert_eq!(as_tls_record(&[1, 0, 0, 0]).unwrap(), [0x16, 3, 1, 0, 4, 1, 0, 0, 0]);
        assert_eq!(as_tls_record(&vec![0; MAX_CRYPTO_BYTES + 1]), Err(QuicError::TooLarge));
    }

    /// xorshift64*: reproducible, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// One random damage: bit flips, a cut, a byte set to an extreme (a length field made
    /// huge, or its varint made 8 bytes long), a run of random bytes, or a copy of a piece.
    fn mutate(m: &mut Vec<u8>, rng: &mut Rng, length_fields: &[usize]) {
        if m.is_empty() {
            m.push(rng.next() as u8);
            return;
        }
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
            }
            1 => m.truncate(rng.below(m.len())),
            2 => {
                let i = match length_fields {
                    [] => rng.below(m.len()),
                    f => f[rng.below(f.len())].min(m.len() - 1),
                };
                m[i] = [0xff, 0x3f, 0x7f, 0xbf, 0xc0, 0x00, 21][rng.below(7)];
            }
            3 => {
                let i = rng.below(m.len());
                let n = (1 + rng.below(16)).min(m.len() - i);
                m[i..i + n].iter_mut().for_each(|b| *b = rng.next() as u8);
            }
            4 => {
                let (i, n) = (rng.below(m.len()), rng.below(64));
                let piece = m[i..(i + n).min(m.len())].to_vec();
                let at = rng.below(m.len());
                m.splice(at..at, piece);
            }
            _ => {
                let i = rng.below(m.len());
                m.insert(i, rng.next() as u8);
            }
        }
    }

    /// 100,000 damaged copies of the real Initial: three in four damaged on the wire (header
    /// fields, ciphertext, lengths), one in four damaged in the plaintext and sealed again, so
    /// that the frame parser and the assembler meet hostile frames too. Nothing panics, what is
    /// kept never exceeds the datagram, and CRYPTO ranges stay inside their payload.
    #[test]
    fn hostile_mutations_never_panic_and_stay_bounded() {
        let real = only_initial(AIOQUIC_V1);
        let plain = real.payload().to_vec();
        let spec = Spec {
            dcid: real.dcid.as_bytes().to_vec(),
            scid: real.scid.as_bytes().to_vec(),
            pn: 0,
            pn_len: 2,
            ..Spec::rfc(VERSION_1)
        };
        // Where the header's lengths are: DCID length, SCID length, token length, Length.
        let dcid_len_at = 5;
        let scid_len_at = dcid_len_at + 1 + real.dcid.as_bytes().len();
        let token_at = scid_len_at + 1 + real.scid.as_bytes().len();
        let wire_fields = [dcid_len_at, scid_len_at, token_at, token_at + 1, token_at + 2];
        // In the plaintext: the CRYPTO frame's offset and length, and the ClientHello's.
        let plain_fields = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut opened, mut errors) = (0, 0);
        for i in 0..100_000 {
            let m = if i % 4 == 3 {
                let mut p = plain.clone();
                for _ in 0..1 + rng.below(3) {
                    mutate(&mut p, &mut rng, &plain_fields);
                }
                // Room for the header protection sample.
                p.resize(p.len().max(2), 0);
                let mut sealed = spec.seal(&p);
                if rng.below(8) == 0 {
                    sealed.extend_from_slice(&sealed.clone());
                }
                sealed
            } else {
                let mut m = AIOQUIC_V1.to_vec();
                for _ in 0..1 + rng.below(3) {
                    mutate(&mut m, &mut rng, &wire_fields);
                }
                m
            };
            let _ = is_quic_long_header_initial(&m);
            match parse_datagram(&m) {
                Ok(d) => {
                    opened += 1;
                    assert!(!d.initials.is_empty() && d.initials.len() <= MAX_PACKETS_PER_DATAGRAM);
                    assert!(d.initials.iter().map(|p| p.payload().len()).sum::<usize>() <= m.len());
                    let mut asm = CryptoAssembler::new();
                    for p in &d.initials {
                        assert!(p.frames.crypto.iter().all(|(_, r)| r.end <= p.payload().len()));
                        let _ = asm.add_packet(p);
                    }
                    assert!(asm.buf.len() <= MAX_CRYPTO_BYTES && asm.have.len() <= MAX_CRYPTO_FRAGMENTS);
                    if let Ok(Some(msg)) = asm.client_hello() {
                        let _ = parse_client_hello(&as_tls_record(msg).unwrap());
                    }
                }
                Err(_) => errors += 1,
            }
        }
        // Both paths were taken often: the test reached the frames, not only the AEAD check.
        assert!(opened > 10_000 && errors > 10_000, "opened {opened}, errors {errors}");
    }
}
