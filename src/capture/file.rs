//! Capture files: classic pcap (µs and ns, both byte orders) and pcapng (any number of
//! interfaces, each with its own link type and timestamp resolution), optionally gzip'd,
//! from a file or standard input.
//!
//! Own reader rather than libpcap: libpcap refuses pcapng files whose interfaces have
//! different link types, cannot read gzip, and copies every packet. This one maps regular
//! files into memory (no copy at all; pages behind the reader are released so RSS stays
//! flat) and reads pipes and gzip with large buffered reads; packets are slices of either.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use super::pager::{self, Pager};

use thiserror::Error;

/// The largest packet we accept; libpcap's own limit for most link types.
pub const MAX_CAPLEN: u32 = 262_144;
/// The largest pcapng block (an option-heavy block is still far below this).
const MAX_BLOCK: u32 = 16 * 1024 * 1024;
const READ_CHUNK: usize = 4 * 1024 * 1024;
/// How far ahead of the reader cache lines are prefetched.
const PREFETCH_DISTANCE: usize = 4096;
#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("{name}: {source}")]
    Io { name: String, source: io::Error },
    #[error("{name}: not a pcap or pcapng file (first bytes {magic:02x?})")]
    NotCapture { name: String, magic: Vec<u8> },
    #[error("{name}: empty file")]
    Empty { name: String },
    #[error("{name}: truncated at byte {offset} (after packet {packet}): {what}")]
    Truncated { name: String, offset: u64, packet: u64, what: &'static str },
    #[error("{name}: invalid data at byte {offset} (after packet {packet}): {what}")]
    Invalid { name: String, offset: u64, packet: u64, what: String },
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawPacket<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub linktype: u32,
    /// Interface index inside the file (pcapng), 0 for classic pcap.
    pub iface: u32,
    pub data: &'a [u8],
    pub orig_len: u32,
    /// 1-based packet number in this input.
    pub number: u64,
}

#[derive(Debug, Clone, Copy)]
enum TsUnit {
    /// 10^-n seconds
    Dec(u8),
    /// 2^-n seconds
    Bin(u8),
}

impl TsUnit {
    fn to_ns(self, ticks: u64) -> i64 {
        let ns: u128 = match self {
            TsUnit::Dec(n) if n <= 9 => ticks as u128 * 10u128.pow(9 - n as u32),
            TsUnit::Dec(n) => ticks as u128 / 10u128.pow((n as u32 - 9).min(30)),
            TsUnit::Bin(n) => (ticks as u128 * 1_000_000_000) >> n.min(100),
        };
        i64::try_from(ns).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    unit: TsUnit,
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Pcap { big: bool, unit: TsUnit, linktype: u32 },
    PcapNg { big: bool, ifaces: Vec<Interface>, last_ts: i64 },
}

pub struct CaptureReader {
    name: String,
    src: Box<dyn Read + Send>,
    /// Bytes read from the source (compressed bytes for gzip), for progress.
    source_read: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// Regular files are read through a mapping instead of `src`/`buf`.
    map: Option<Arc<Mmap>>,
    /// Mapped files larger than a few MB: maps pages ahead of the reader and releases them behind.
    pager: Option<Pager>,
    /// Mapped files: the pager is told where the reader is when it passes this offset.
    tell_pager_at: usize,
    /// Mapped files: pages below this were given back to the kernel.
    released: usize,
    /// Mapped files: bytes below this were prefetched.
    prefetched: usize,
    start: usize,
    end: usize,
    /// File offset of `buf[0]` (of the decompressed stream for gzip input).
    base: u64,
    eof: bool,
    format: Format,
    packets: u64,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader").field("name", &self.name).finish()
    }
}

fn u16_at(b: &[u8], big: bool) -> u16 {
    let a = [b[0], b[1]];
    if big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
}

fn u32_at(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
}

/// Counts what is read through it.
struct Counting {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decompresses on a thread of its own, a few blocks ahead of the reader: gzip costs more per
/// byte than decoding, and the reader's thread has its own work.
struct Inflating {
    blocks: crossbeam_channel::Receiver<io::Result<Vec<u8>>>,
    block: Vec<u8>,
    at: usize,
}

/// Decompressed bytes per block, and blocks queued ahead.
const INFLATE_BLOCK: usize = 1 << 20;
const INFLATE_AHEAD: usize = 4;

impl Inflating {
    fn spawn(name: &str, mut src: Box<dyn Read + Send>) -> Inflating {
        let (tx, rx) = crossbeam_channel::bounded(INFLATE_AHEAD);
        let spawned = std::thread::Builder::new().name(format!("kavwatch-gunzip-{name}")).spawn(move || {
            loop {
                let mut block = vec![0u8; INFLATE_BLOCK];
                let mut len = 0;
                let result = loop {
                    match src.read(&mut block[len..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            len += n;
                            if len == block.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                block.truncate(len);
                let end = len < INFLATE_BLOCK;
                // The reader gone (it stopped early): nothing more to do.
                if len > 0 && tx.send(Ok(block)).is_err() {
                    return;
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                    return;
                }
                if end {
                    return;
                }
            }
        });
        let blocks = match spawned {
            Ok(_) => rx,
            Err(e) => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let _ = tx.send(Err(e));
                rx
            }
        };
        Inflating { blocks, block: Vec::new(), at: 0 }
    }
}

impl Read for Inflating {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            match self.blocks.recv() {
                Ok(Ok(b)) => (self.block, self.at) = (b, 0),
                Ok(Err(e)) => return Err(e),
                // The end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;

impl CaptureReader {
    /// Opens a file (or standard input for `-`), transparently gunzipping it.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let name = path.display().to_string();
        if name == "-" {
            return Self::from_reader(name, Box::new(io::stdin()));
        }
        let io_err = |source| CaptureError::Io { name: name.clone(), source };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_file() && meta.len() >= 4 {
            // Safety: the mapping is read-only; a file truncated under us would fault, as it
            // would for any reader of a mapped file. Captures being analysed are not modified.
            let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
            if map[..2] != [0x1f, 0x8b] {
                return Self::from_map(name, Arc::new(map));
            }
        }
        Self::from_reader(name, Box::new(file))
    }

    fn from_map(name: String, map: Arc<Mmap>) -> Result<CaptureReader, CaptureError> {
        let end = map.len();
        // A small file is mapped in a few faults: not worth a thread.
        let pager = if end > 4 * pager::STEP { Pager::start(map.clone()) } else { None };
        let mut r = CaptureReader {
            name,
            src: Box::new(io::empty()),
            source_read: Arc::default(),
            buf: Vec::new(),
            map: Some(map),
            pager,
            tell_pager_at: 0,
            released: 0,
            prefetched: 0,
            start: 0,
            end,
            base: 0,
            eof: true,
            format: Format::Pcap { big: false, unit: TsUnit::Dec(6), linktype: 0 },
            packets: 0,
        };
        r.read_file_header()?;
        Ok(r)
    }

    /// The mapping packets are sliced from, when the input is a mapped file.
    pub fn mapping(&self) -> Option<&Arc<Mmap>> {
        self.map.as_ref()
    }

    /// The bytes read so far (the whole file when mapped).
    fn window(&self) -> &[u8] {
        match &self.map {
            Some(m) => m,
            None => &self.buf,
        }
    }

    /// Asks the CPU for the cache lines a few KB ahead. Record headers form a chain (each one's
    /// place depends on the previous length), which defeats the hardware prefetcher: without
    /// this every packet waits a full memory latency (measured: 40 % of the reader's time).
    #[inline]
    fn prefetch_ahead(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(map) = &self.map {
            let to = (self.start + PREFETCH_DISTANCE).min(map.len());
            let mut line = self.prefetched.max(self.start + PREFETCH_DISTANCE / 2) & !63;
            while line < to {
                // Safety: a prefetch is a hint that never faults, and `line` lies inside the mapping.
                unsafe {
                    std::arch::x86_64::_mm_prefetch(map.as_ptr().add(line) as *const i8, std::arch::x86_64::_MM_HINT_T0)
                };
                line += 64;
            }
            self.prefetched = to;
        }
    }

    /// Tells the pager where the reader is, and releases the pages behind it, every
    /// [`pager::STEP`] bytes.
    #[inline]
    fn tell_pager(&mut self) {
        if self.start >= self.tell_pager_at {
            if let Some(p) = &self.pager {
                p.advance(self.start);
            }
            if let Some(map) = &self.map {
                pager::release_behind(map, self.start, &mut self.released);
            }
            self.tell_pager_at = self.start + pager::STEP;
        }
    }

    pub fn from_reader(name: String, src: Box<dyn Read + Send>) -> Result<CaptureReader, CaptureError> {
        let source_read = Arc::new(AtomicU64::new(0));
        let src = Box::new(Counting { inner: src, read: source_read.clone() });
        let mut r = CaptureReader {
            name,
            src,
            source_read,
            buf: vec![0; READ_CHUNK],
            map: None,
            pager: None,
            tell_pager_at: 0,
            released: 0,
            prefetched: 0,
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            format: Format::Pcap { big: false, unit: TsUnit::Dec(6), linktype: 0 },
            packets: 0,
        };
        if !r.fill(2)? {
            return Err(if r.end == 0 { CaptureError::Empty { name: r.name } } else { r.truncated("file header") });
        }
        if r.buf[0] == 0x1f && r.buf[1] == 0x8b {
            // gzip: restart on a decoder fed with what we already read.
            let head = r.buf[..r.end].to_vec();
            let src = std::mem::replace(&mut r.src, Box::new(io::empty()));
            let gz = flate2::read::MultiGzDecoder::new(io::Cursor::new(head).chain(src));
            r.src = Box::new(Inflating::spawn(&r.name, Box::new(gz)));
            r.start = 0;
            r.end = 0;
            r.eof = false;
            if !r.fill(1)? {
                return Err(CaptureError::Empty { name: r.name });
            }
        }
        r.read_file_header()?;
        Ok(r)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Packets returned so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes of the input file consumed so far: the offset for a mapped file, the bytes read
    /// from the file (compressed ones for gzip) otherwise.
    pub fn source_offset(&self) -> u64 {
        match self.map {
            Some(_) => self.offset(),
            None => self.source_read.load(Ordering::Relaxed),
        }
    }

    /// Byte offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn truncated(&self, what: &'static str) -> CaptureError {
        CaptureError::Truncated { name: self.name.clone(), offset: self.offset(), packet: self.packets, what }
    }

    fn invalid(&self, what: String) -> CaptureError {
        CaptureError::Invalid { name: self.name.clone(), offset: self.offset(), packet: self.packets, what }
    }

    /// Makes at least `need` unread bytes available; false at end of input before that.
    #[inline(always)]
    fn fill(&mut self, need: usize) -> Result<bool, CaptureError> {
        // The usual case (always, for a mapped file but at its end) without a call.
        if self.end - self.start >= need {
            return Ok(true);
        }
        self.fill_more(need)
    }

    #[inline(never)]
    fn fill_more(&mut self, need: usize) -> Result<bool, CaptureError> {
        while self.end - self.start < need {
            if self.eof {
                return Ok(false);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.start = 0;
            }
            if need > self.buf.len() {
                self.buf.resize(need.next_power_of_two(), 0);
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io { name: self.name.clone(), source });
                }
            }
        }
        Ok(true)
    }

    fn read_file_header(&mut self) -> Result<(), CaptureError> {
        if !self.fill(4)? {
            return Err(self.not_capture());
        }
        let magic = &self.window()[self.start..self.start + 4];
        let (big, unit) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, TsUnit::Dec(6)),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, TsUnit::Dec(6)),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, TsUnit::Dec(9)),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, TsUnit::Dec(9)),
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                self.format = Format::PcapNg { big: false, ifaces: Vec::new(), last_ts: 0 };
                return self.read_shb();
            }
            _ => return Err(self.not_capture()),
        };
        if !self.fill(24)? {
            return Err(self.truncated("pcap file header"));
        }
        let h = &self.window()[self.start..self.start + 24];
        // The FCS-length bits live in the top of the link-type field.
        let linktype = u32_at(&h[20..], big) & 0x0fff_ffff;
        self.format = Format::Pcap { big, unit, linktype };
        self.start += 24;
        Ok(())
    }

    fn not_capture(&self) -> CaptureError {
        let magic = self.window()[self.start..self.end.min(self.start + 4)].to_vec();
        CaptureError::NotCapture { name: self.name.clone(), magic }
    }

    /// Section header block: sets the byte order for the section and forgets its interfaces.
    fn read_shb(&mut self) -> Result<(), CaptureError> {
        if !self.fill(12)? {
            return Err(self.truncated("pcapng section header"));
        }
        let bom = &self.window()[self.start + 8..self.start + 12];
        let big = match bom {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => return Err(self.invalid(format!("bad pcapng byte-order magic {bom:02x?}"))),
        };
        let len = u32_at(&self.window()[self.start + 4..], big);
        self.check_block_len(len, 28)?;
        if !self.fill(len as usize)? {
            return Err(self.truncated("pcapng section header"));
        }
        self.format = Format::PcapNg { big, ifaces: Vec::new(), last_ts: 0 };
        self.start += len as usize;
        Ok(())
    }

    fn check_block_len(&self, len: u32, min: u32) -> Result<(), CaptureError> {
        if len < min || !len.is_multiple_of(4) || len > MAX_BLOCK {
            return Err(self.invalid(format!("pcapng block length {len}")));
        }
        Ok(())
    }

    /// The next packet, `None` at the clean end of the input.
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        match self.format {
            Format::Pcap { big, unit, linktype } => self.next_pcap(big, unit, linktype),
            Format::PcapNg { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self, big: bool, unit: TsUnit, linktype: u32) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if !self.fill(16)? {
            return if self.end == self.start { Ok(None) } else { Err(self.truncated("packet record header")) };
        }
        let h = &self.window()[self.start..self.start + 16];
        let secs = u32_at(h, big) as u64;
        let frac = u32_at(&h[4..], big) as u64;
        let caplen = u32_at(&h[8..], big);
        let orig_len = u32_at(&h[12..], big);
        if caplen > MAX_CAPLEN {
            return Err(self.invalid(format!("packet record declares {caplen} captured bytes (limit {MAX_CAPLEN})")));
        }
        if !self.fill(16 + caplen as usize)? {
            return Err(self.truncated("packet data"));
        }
        let ticks_per_s = match unit {
            TsUnit::Dec(9) => 1_000_000_000,
            _ => 1_000_000,
        };
        let frac = frac.min(ticks_per_s - 1);
        // The two units classic pcap has, without `to_ns`'s general (u128) arithmetic.
        let frac_ns = match unit {
            TsUnit::Dec(6) => (frac * 1_000) as i64,
            TsUnit::Dec(9) => frac as i64,
            _ => unit.to_ns(frac),
        };
        let ts_ns = (secs as i64) * 1_000_000_000 + frac_ns;
        let at = self.start + 16;
        self.start = at + caplen as usize;
        self.packets += 1;
        self.tell_pager();
        self.prefetch_ahead();
        Ok(Some(RawPacket {
            ts_ns,
            linktype,
            iface: 0,
            data: &self.window()[at..at + caplen as usize],
            orig_len: orig_len.max(caplen),
            number: self.packets,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        loop {
            if !self.fill(8)? {
                return if self.end == self.start { Ok(None) } else { Err(self.truncated("pcapng block header")) };
            }
            let big = match &self.format {
                Format::PcapNg { big, .. } => *big,
                Format::Pcap { .. } => unreachable!("pcapng reader on a pcap file"),
            };
            let btype = u32_at(&self.window()[self.start..], big);
            if btype == PCAPNG_SHB {
                self.read_shb()?;
                continue;
            }
            let len = u32_at(&self.window()[self.start + 4..], big);
            self.check_block_len(len, 12)?;
            if !self.fill(len as usize)? {
                return Err(self.truncated("pcapng block"));
            }
            let block_start = self.start;
            let body = block_start + 8..block_start + len as usize - 4;
            self.start += len as usize;
            self.tell_pager();
            self.prefetch_ahead();
            match btype {
                1 => self.read_idb(body, big)?,
                6 | 2 => {
                    // Enhanced packet block (6); obsolete packet block (2) has a 16-bit interface id.
                    let b = &self.window()[body.clone()];
                    if b.len() < 20 {
                        return Err(self.invalid("packet block too short".into()));
                    }
                    let iface = if btype == 6 { u32_at(b, big) } else { u16_at(b, big) as u32 };
                    let ticks = ((u32_at(&b[4..], big) as u64) << 32) | u32_at(&b[8..], big) as u64;
                    let caplen = u32_at(&b[12..], big);
                    let orig_len = u32_at(&b[16..], big);
                    if caplen as usize > b.len() - 20 || caplen > MAX_CAPLEN {
                        return Err(self.invalid(format!("packet block declares {caplen} captured bytes")));
                    }
                    let Some(i) = self.iface(iface) else {
                        return Err(self.invalid(format!("packet on undeclared interface {iface}")));
                    };
                    let ts_ns = i.unit.to_ns(ticks).saturating_add(i.offset_s.saturating_mul(1_000_000_000));
                    let linktype = i.linktype;
                    if let Format::PcapNg { last_ts, .. } = &mut self.format {
                        *last_ts = ts_ns;
                    }
                    self.packets += 1;
                    let at = body.start + 20;
                    return Ok(Some(RawPacket {
                        ts_ns,
                        linktype,
                        iface,
                        data: &self.window()[at..at + caplen as usize],
                        orig_len: orig_len.max(caplen),
                        number: self.packets,
                    }));
                }
                3 => {
                    // Simple packet block: interface 0, no timestamp (we reuse the previous one).
                    let b = &self.window()[body.clone()];
                    if b.len() < 4 {
                        return Err(self.invalid("simple packet block too short".into()));
                    }
                    let orig_len = u32_at(b, big);
                    let Some(i) = self.iface(0) else {
                        return Err(self.invalid("simple packet block before any interface".into()));
                    };
                    let snap = if i.snaplen == 0 { u32::MAX } else { i.snaplen };
                    let caplen = orig_len.min(snap).min((b.len() - 4) as u32);
                    let linktype = i.linktype;
                    let ts_ns = match &self.format {
                        Format::PcapNg { last_ts, .. } => *last_ts,
                        Format::Pcap { .. } => 0,
                    };
                    self.packets += 1;
                    let at = body.start + 4;
                    return Ok(Some(RawPacket {
                        ts_ns,
                        linktype,
                        iface: 0,
                        data: &self.window()[at..at + caplen as usize],
                        orig_len: orig_len.max(caplen),
                        number: self.packets,
                    }));
                }
                // Name resolution, statistics, custom and unknown blocks carry no packets.
                _ => {}
            }
        }
    }

    fn iface(&self, id: u32) -> Option<&Interface> {
        match &self.format {
            Format::PcapNg { ifaces, .. } => ifaces.get(id as usize),
            Format::Pcap { .. } => None,
        }
    }

    fn read_idb(&mut self, body: std::ops::Range<usize>, big: bool) -> Result<(), CaptureError> {
        let b = &self.window()[body];
        if b.len() < 8 {
            return Err(self.invalid("interface description block too short".into()));
        }
        let mut iface = Interface {
            linktype: u16_at(b, big) as u32,
            snaplen: u32_at(&b[4..], big),
            unit: TsUnit::Dec(6),
            offset_s: 0,
        };
        // Options: code, length, value padded to 4 bytes.
        let mut opts = &b[8..];
        while opts.len() >= 4 {
            let code = u16_at(opts, big);
            let olen = u16_at(&opts[2..], big) as usize;
            let padded = (olen + 3) & !3;
            let Some(val) = opts.get(4..4 + olen) else {
                break;
            };
            match (code, olen) {
                (0, _) => break,
                (9, 1) => {
                    let r = val[0];
                    iface.unit = if r & 0x80 != 0 { TsUnit::Bin(r & 0x7f) } else { TsUnit::Dec(r) };
                }
                (14, 8) => {
                    let v = if big {
                        i64::from_be_bytes(val.try_into().unwrap_or([0; 8]))
                    } else {
                        i64::from_le_bytes(val.try_into().unwrap_or([0; 8]))
                    };
                    iface.offset_s = v;
                }
                _ => {}
            }
            opts = opts.get(4 + padded..).unwrap_or(&[]);
        }
        if let Format::PcapNg { ifaces, .. } = &mut self.format {
            if ifaces.len() >= 65_536 {
                return Err(self.invalid("more than 65536 interfaces".into()));
            }
            ifaces.push(iface);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big: bool, nano: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big { v.to_be_bytes() } else { v.to_le_bytes() }
        };
        let w16 = |v: u16| {
            if big { v.to_be_bytes() } else { v.to_le_bytes() }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(if nano { 0xa1b23c4d } else { 0xa1b2c3d4 }));
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(1));
        for (s, frac, data) in records {
            f.extend_from_slice(&w32(*s));
            f.extend_from_slice(&w32(*frac));
            f.extend_from_slice(&w32(data.len() as u32));
            f.extend_from_slice(&w32(data.len() as u32));
            f.extend_from_slice(data);
        }
        f
    }

    fn reader(bytes: Vec<u8>) -> Result<CaptureReader, CaptureError> {
        CaptureReader::from_reader("t".into(), Box::new(io::Cursor::new(bytes)))
    }

    #[test]
    fn classic_pcap_all_variants() {
        for big in [false, true] {
            for nano in [false, true] {
                let mut r = reader(pcap(big, nano, &[(10, 5, b"abc"), (11, 7, b"")])).unwrap();
                let p = r.next_packet().unwrap().unwrap();
                let frac = if nano { 5 } else { 5_000 };
                assert_eq!((p.ts_ns, p.linktype, p.data), (10_000_000_000 + frac, 1, &b"abc"[..]));
                assert_eq!(r.next_packet().unwrap().unwrap().data, b"");
                assert!(r.next_packet().unwrap().is_none());
            }
        }
    }

    #[test]
    fn gzip_is_transparent() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&pcap(false, false, &[(1, 0, b"x")])).unwrap();
        let mut r = reader(gz.finish().unwrap()).unwrap();
        assert_eq!(r.next_packet().unwrap().unwrap().data, b"x");
        assert!(r.next_packet().unwrap().is_none());
    }

    #[test]
    fn bad_inputs_give_errors_not_panics() {
        assert!(matches!(reader(vec![]), Err(CaptureError::Empty { .. })));
        assert!(matches!(reader(b"hello world, not a capture".to_vec()), Err(CaptureError::NotCapture { .. })));
        let full = pcap(false, false, &[(1, 0, b"abcdef")]);
        // Every truncation of a valid file is an error or a clean end, never a panic.
        for n in 1..full.len() {
            if let Ok(mut r) = reader(full[..n].to_vec()) {
                let res = r.next_packet();
                assert!(res.is_err() || res.as_ref().unwrap().is_none(), "prefix {n}");
            }
        }
        let mut huge = pcap(false, false, &[(1, 0, b"abcd")]);
        huge[24 + 8..24 + 12].copy_from_slice(&4_000_000_000u32.to_le_bytes());
        let err = reader(huge).unwrap().next_packet().unwrap_err().to_string();
        assert!(err.contains("byte 24") && err.contains("4000000000"), "{err}");
    }
}
