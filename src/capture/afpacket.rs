//! Live capture from a Linux AF_PACKET socket through a TPACKET_V3 memory-mapped RX ring.
//! The kernel fills fixed-size blocks with variable-length packets and hands a block over when it is
//! full or ~10 ms old; `poll` walks every ready block (checking every offset, since the ring is memory
//! shared with the kernel), puts back the VLAN tag the kernel stripped, and returns the block.
//! The socket is created with protocol 0, so nothing is queued until the BPF filter and the ring are in
//! place and `bind` starts delivery; an optional PACKET_FANOUT group spreads flows over several sockets.

use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Errors of live capture. `InterfaceGone` and `InterfaceDown` (see [`LiveError::is_interface_lost`])
/// mean "close the socket and try `open` again later".
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error(
        "permission denied opening a packet socket on {0}: kavwatch needs CAP_NET_RAW (run as root, or grant it: \
         setcap cap_net_raw,cap_net_admin+ep)"
    )]
    PermissionDenied(String),
    #[error("interface {0} is down (bring it up: ip link set {0} up)")]
    InterfaceDown(String),
    #[error("bad BPF filter {expr:?}: {msg}")]
    Bpf { expr: String, msg: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The interface was deleted (or replaced by another one of the same name) while capturing: this
    /// socket can never receive again. Sticky: every later `poll` returns it too.
    #[error("interface {0} went away while capturing")]
    InterfaceGone(String),
    #[error("interface {iface} has hardware type ARPHRD {arphrd}, which is not supported (Ethernet, loopback, raw IP)")]
    UnsupportedLinkType { iface: String, arphrd: u16 },
    #[error("invalid capture configuration: {0}")]
    InvalidConfig(String),
}

impl LiveError {
    /// True when the interface went away or down: the caller should drop the socket and retry `open` later.
    pub fn is_interface_lost(&self) -> bool {
        matches!(self, LiveError::InterfaceGone(_) | LiveError::InterfaceDown(_))
    }
}

fn io_err(context: impl Into<String>, source: io::Error) -> LiveError {
    LiveError::Io { context: context.into(), source }
}

/// pcap LINKTYPE_ETHERNET (= DLT_EN10MB).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// pcap LINKTYPE_RAW: bare IPv4/IPv6, what tun/WireGuard devices (ARPHRD_NONE) deliver.
pub const LINKTYPE_RAW: u32 = 101;
/// What a snaplen of 0 means, as for tcpdump `-s 0` (libpcap's MAXIMUM_SNAPLEN).
pub const MAX_SNAPLEN: u32 = 262_144;

/// Kernel limit on classic BPF program length (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// Frame size handed to the kernel: TPACKET_V3 packs packets back to back, so this only sets how many
/// "frames" the ring claims to have (the kernel checks the geometry), not a per-packet limit.
const FRAME_SIZE: u32 = 2048;
/// Block retire timeout: a block holding at least one packet is handed over after this long, so a
/// quiet link still delivers promptly.
const RETIRE_BLK_TOV_MS: u32 = 10;
const ETH_ALEN2: usize = 12; // destination + source MAC: the VLAN tag goes right after them
const VLAN_TPID_8021Q: u16 = 0x8100;
const ARPHRD_NONE: u16 = 0xfffe;

// Layout of the shared ring, from the libc definitions of <linux/if_packet.h>.
const BLOCK_DESC_LEN: usize = size_of::<libc::tpacket_block_desc>();
const BH1_OFF: usize = offset_of!(libc::tpacket_block_desc, hdr);
const BLOCK_STATUS_OFF: usize = BH1_OFF + offset_of!(libc::tpacket_hdr_v1, block_status);
const NUM_PKTS_OFF: usize = BH1_OFF + offset_of!(libc::tpacket_hdr_v1, num_pkts);
const FIRST_PKT_OFF: usize = BH1_OFF + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);
const HDR_LEN: usize = size_of::<libc::tpacket3_hdr>();
const H_NEXT: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
const H_SEC: usize = offset_of!(libc::tpacket3_hdr, tp_sec);
const H_NSEC: usize = offset_of!(libc::tpacket3_hdr, tp_nsec);
const H_SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
const H_LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
const H_STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
const H_MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
const H_VLAN_TCI: usize = offset_of!(libc::tpacket3_hdr, hv1) + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci);
const H_VLAN_TPID: usize = offset_of!(libc::tpacket3_hdr, hv1) + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid);
/// The kernel writes a sockaddr_ll right after the (16-byte aligned) packet header.
const H_SLL_PKTTYPE: usize = HDR_LEN.next_multiple_of(16) + offset_of!(libc::sockaddr_ll, sll_pkttype);

/// Settings of one capture socket.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Bytes per ring block; a multiple of the page size. Default 4 MiB.
    pub block_size: u32,
    /// Blocks in the ring. Default 16 (64 MiB of ring in all).
    pub block_count: u32,
    /// Bytes kept of each packet; 0 means [`MAX_SNAPLEN`]. Default 65535.
    pub snaplen: u32,
    /// Put the interface in promiscuous mode while the socket is open. Default true.
    pub promisc: bool,
    /// Join this PACKET_FANOUT group (flow hash): sockets of one group on one interface share its traffic.
    pub fanout_group: Option<u16>,
    /// Kernel-side filter, from [`compile_bpf`].
    pub bpf: Option<CompiledBpf>,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 4 << 20,
            block_count: 16,
            snaplen: 65535,
            promisc: true,
            fanout_group: None,
            bpf: None,
        }
    }
}

/// A BPF program compiled by libpcap (tcpdump syntax) for linktype Ethernet, as the kernel's sock_filter array.
#[derive(Debug, Clone)]
pub struct CompiledBpf(pub Vec<libc::sock_filter>);

fn effective_snaplen(snaplen: u32) -> u32 {
    if snaplen == 0 { MAX_SNAPLEN } else { snaplen }
}

/// Compiles a tcpdump filter expression for Ethernet frames. Accepting returns become `snaplen` (0 means
/// [`MAX_SNAPLEN`]) so the kernel copies no more than is kept.
///
/// Caveat: the kernel strips the outer VLAN tag before the filter runs, so the program sees untagged
/// frames: `udp port 53` also matches VLAN-tagged DNS, and the `vlan` primitive never matches.
pub fn compile_bpf(expr: &str, snaplen: u32) -> Result<CompiledBpf, LiveError> {
    let bad = |msg: String| LiveError::Bpf { expr: expr.to_string(), msg };
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| bad(e.to_string()))?;
    let program = dead.compile(expr, true).map_err(|e| bad(e.to_string()))?;
    let snaplen = effective_snaplen(snaplen);
    let mut insns = Vec::with_capacity(program.get_instructions().len());
    for insn in program.get_instructions() {
        // The pcap crate exposes an instruction's fields only through Display ("code jt jf k"), which
        // avoids relying on its private struct's layout.
        let text = insn.to_string();
        let mut fields = text.split_ascii_whitespace();
        let mut next = || fields.next().and_then(|f| f.parse::<u32>().ok());
        let (Some(code), Some(jt), Some(jf), Some(k)) = (next(), next(), next(), next()) else {
            return Err(bad(format!("unexpected instruction text from libpcap: {text:?}")));
        };
        let (Ok(code), Ok(jt), Ok(jf)) = (u16::try_from(code), u8::try_from(jt), u8::try_from(jf)) else {
            return Err(bad(format!("instruction out of range: {text:?}")));
        };
        // A dead pcap handle always accepts with its own snaplen (65535): use ours.
        let k = if code == BPF_RET_K && k != 0 { snaplen } else { k };
        insns.push(libc::sock_filter { code, jt, jf, k });
    }
    if insns.is_empty() || insns.len() > BPF_MAXINSNS {
        return Err(bad(format!("{} instructions (the kernel takes 1..={BPF_MAXINSNS})", insns.len())));
    }
    Ok(CompiledBpf(insns))
}

/// One captured packet, borrowed from the ring (or from the VLAN scratch buffer) for the callback only.
#[derive(Debug, Clone, Copy)]
pub struct LivePacket<'a> {
    /// Kernel receive time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Captured bytes (at most snaplen), with the VLAN tag put back where the kernel had stripped it.
    pub data: &'a [u8],
    /// Length of the packet on the wire (including a reinserted VLAN tag).
    pub orig_len: u32,
}

/// Cumulative socket counters (the kernel's PACKET_STATISTICS reset on every read, so they are summed here).
#[derive(Default, Clone, Copy, Debug)]
pub struct SocketStats {
    /// Packets that passed the filter, as the kernel counts them: this already includes `drops`.
    pub packets: u64,
    /// Packets the kernel dropped because the ring was full.
    pub drops: u64,
    /// Times the kernel found the ring full and froze the queue until a block was returned.
    pub freeze_q: u64,
    /// Ring blocks whose descriptors did not add up; the rest of each such block was skipped.
    pub bad_blocks: u64,
}

/// An AF_PACKET socket with its mapped TPACKET_V3 RX ring, bound to one interface.
pub struct AfPacketSocket {
    fd: OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    block_size: usize,
    block_count: usize,
    next_block: usize,
    iface: String,
    ifindex: u32,
    linktype: u32,
    /// On loopback every packet is seen leaving and arriving: keep only the arrival, as libpcap does.
    skip_outgoing: bool,
    snaplen: usize,
    /// Reused buffer for frames whose VLAN tag is put back.
    scratch: Vec<u8>,
    stats: SocketStats,
    /// An error seen by `poll` after it had already delivered packets: returned by the next call.
    deferred: Option<LiveError>,
    gone: bool,
}

// SAFETY: the ring mapping is owned by this value alone and only touched through `&mut self`; the kernel
// side of the ring is synchronised through the block status words, not through thread affinity.
unsafe impl Send for AfPacketSocket {}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() < libc::IFNAMSIZ && !name.bytes().any(|b| b == 0 || b == b'/')
}

fn ifindex_of(name: &str) -> u32 {
    if !valid_ifname(name) {
        return 0;
    }
    let Ok(c) = CString::new(name) else { return 0 };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// True if an interface of that name exists (in this network namespace).
pub fn interface_exists(name: &str) -> bool {
    ifindex_of(name) != 0
}

/// Runs an ifreq ioctl (SIOCGIFFLAGS, SIOCGIFHWADDR) for `name` on any socket.
fn if_ioctl(fd: &OwnedFd, request: libc::c_ulong, name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // valid_ifname() guarantees the name leaves room for the NUL.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: the request reads the name and writes only inside the ifreq.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut ifr) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(ifr) }
}

fn if_is_up(fd: &OwnedFd, name: &str) -> io::Result<bool> {
    let ifr = if_ioctl(fd, libc::SIOCGIFFLAGS, name)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as u16 as libc::c_int;
    Ok(flags & libc::IFF_UP != 0)
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size given.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Reads and clears the socket's pending error (SO_ERROR); 0 means none.
fn take_so_error(fd: &OwnedFd) -> io::Result<i32> {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err/len are valid for the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(err) }
}

impl AfPacketSocket {
    /// Opens a capture socket on `iface`. Errors: NoSuchInterface, InterfaceDown, PermissionDenied,
    /// UnsupportedLinkType, InvalidConfig, Io (e.g. ENOMEM for the ring, EINVAL for a fanout group that
    /// exists with other settings or on another interface).
    pub fn open(iface: &str, cfg: &RingConfig) -> Result<Self, LiveError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let block_size = cfg.block_size as usize;
        let block_count = cfg.block_count as usize;
        if block_size == 0 || !block_size.is_multiple_of(page) || block_size < FRAME_SIZE as usize {
            return Err(LiveError::InvalidConfig(format!(
                "block_size {block_size} must be a non-zero multiple of the page size ({page})"
            )));
        }
        if block_count == 0 {
            return Err(LiveError::InvalidConfig("block_count must be at least 1".into()));
        }
        let frames_per_block = cfg.block_size / FRAME_SIZE;
        let (Some(ring_len), Some(frame_nr)) =
            (block_size.checked_mul(block_count), frames_per_block.checked_mul(cfg.block_count))
        else {
            return Err(LiveError::InvalidConfig("ring too large".into()));
        };
        if let Some(bpf) = &cfg.bpf
            && (bpf.0.is_empty() || bpf.0.len() > BPF_MAXINSNS)
        {
            return Err(LiveError::InvalidConfig(format!("BPF program of {} instructions", bpf.0.len())));
        }

        let ifindex = ifindex_of(iface);
        if ifindex == 0 {
            return Err(LiveError::NoSuchInterface(iface.to_string()));
        }

        // Protocol 0: the socket receives nothing until bind() names ETH_P_ALL, after the filter and
        // ring are set, so no unfiltered packet can slip in first.
        // SAFETY: plain syscall.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => LiveError::PermissionDenied(iface.to_string()),
                _ => io_err("socket(AF_PACKET, SOCK_RAW)", e),
            });
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let no_dev = |e: io::Error, what: &str| match e.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => LiveError::NoSuchInterface(iface.to_string()),
            _ => io_err(format!("{what} on {iface}"), e),
        };
        if !if_is_up(&fd, iface).map_err(|e| no_dev(e, "SIOCGIFFLAGS"))? {
            return Err(LiveError::InterfaceDown(iface.to_string()));
        }
        let hw = if_ioctl(&fd, libc::SIOCGIFHWADDR, iface).map_err(|e| no_dev(e, "SIOCGIFHWADDR"))?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let arphrd = unsafe { hw.ifr_ifru.ifru_hwaddr.sa_family };
        let linktype = match arphrd {
            libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => LINKTYPE_ETHERNET,
            ARPHRD_NONE => LINKTYPE_RAW,
            _ => return Err(LiveError::UnsupportedLinkType { iface: iface.to_string(), arphrd }),
        };

        if let Some(bpf) = &cfg.bpf {
            if linktype != LINKTYPE_ETHERNET {
                return Err(LiveError::InvalidConfig(format!(
                    "{iface} delivers raw IP, but BPF filters are compiled for Ethernet frames"
                )));
            }
            let prog = libc::sock_fprog { len: bpf.0.len() as libc::c_ushort, filter: bpf.0.as_ptr().cast_mut() };
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).map_err(|e| {
                io_err(format!("attaching the BPF filter ({} instructions) on {iface}", bpf.0.len()), e)
            })?;
        }

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(|e| io_err("setting PACKET_VERSION to TPACKET_V3", e))?;
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: frame_nr,
            tp_retire_blk_tov: RETIRE_BLK_TOV_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req).map_err(|e| {
            io_err(format!("PACKET_RX_RING ({} blocks of {} KiB) on {iface}", cfg.block_count, cfg.block_size >> 10), e)
        })?;
        // SAFETY: maps the ring the kernel just allocated for this socket; checked for MAP_FAILED.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io_err(format!("mmap of the {} MiB capture ring", ring_len >> 20), io::Error::last_os_error()));
        }

        // From here on, Drop unmaps and closes whatever fails below.
        let sock = AfPacketSocket {
            fd,
            ring: ring.cast(),
            ring_len,
            block_size,
            block_count,
            next_block: 0,
            iface: iface.to_string(),
            ifindex,
            linktype,
            skip_outgoing: arphrd == libc::ARPHRD_LOOPBACK,
            snaplen: effective_snaplen(cfg.snaplen) as usize,
            scratch: Vec::new(),
            stats: SocketStats::default(),
            deferred: None,
            gone: false,
        };

        if sock.skip_outgoing {
            // Saves ring space on kernels >= 4.20; older ones are covered by the check in the block walk.
            let _ = setsockopt(&sock.fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &(1 as libc::c_int));
        }

        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV | libc::ENXIO) => LiveError::NoSuchInterface(iface.to_string()),
                Some(libc::ENETDOWN) => LiveError::InterfaceDown(iface.to_string()),
                _ => io_err(format!("bind to {iface}"), e),
            });
        }
        // Binding to an interface that went down since the check succeeds but leaves ENETDOWN pending.
        match take_so_error(&sock.fd) {
            Ok(0) => {}
            Ok(libc::ENETDOWN) => return Err(LiveError::InterfaceDown(iface.to_string())),
            Ok(e) => return Err(io_err(format!("bind to {iface}"), io::Error::from_raw_os_error(e))),
            Err(e) => return Err(io_err("getsockopt(SO_ERROR)", e)),
        }

        if cfg.promisc {
            // A membership, not an interface flag: the kernel drops it when the socket closes.
            // SAFETY: packet_mreq is plain data; all zeroes is a valid value.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = ifindex as libc::c_int;
            mreq.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort;
            setsockopt(&sock.fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(|e| io_err(format!("enabling promiscuous mode on {iface}"), e))?;
        }

        if let Some(group) = cfg.fanout_group {
            // The kernel only accepts fanout on a bound, running socket. DEFRAG: reassemble IP fragments
            // first so all fragments of a datagram hash like its flow.
            let arg = u32::from(group) | ((libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) << 16);
            setsockopt(&sock.fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                .map_err(|e| io_err(format!("joining PACKET_FANOUT group {group} on {iface}"), e))?;
        }
        Ok(sock)
    }

    /// Waits up to `timeout` for the kernel to retire a block, then calls `f` for every packet of every ready
    /// block and returns them to the kernel. Returns the number of packets (0 on timeout or EINTR).
    ///
    /// Returns `InterfaceGone` once the interface was deleted (sticky) and `InterfaceDown` when it went down
    /// (the kernel resumes delivery on this socket if it comes back up); packets already in the ring are
    /// delivered first.
    pub fn poll(&mut self, timeout: Duration, mut f: impl FnMut(LivePacket<'_>)) -> Result<usize, LiveError> {
        if self.gone {
            return Err(LiveError::InterfaceGone(self.iface.clone()));
        }
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let mut pending = None;
        if !self.block_ready(self.next_block) {
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN | libc::POLLERR, revents: 0 };
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(0);
                }
                return Err(io_err(format!("poll on the capture socket of {}", self.iface), e));
            }
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(io_err("poll", io::Error::from_raw_os_error(libc::EBADF)));
            }
            if pfd.revents & libc::POLLERR != 0 {
                pending = self.socket_error()?;
            }
        }

        let mut count = 0;
        // At most one lap, so a busy link cannot keep this call from returning.
        for _ in 0..self.block_count {
            if !self.block_ready(self.next_block) {
                break;
            }
            count += self.consume_block(self.next_block, &mut f);
            self.next_block = (self.next_block + 1) % self.block_count;
        }

        match pending {
            Some(e) if count == 0 => Err(e),
            Some(e) => {
                self.deferred = Some(e);
                Ok(count)
            }
            None => Ok(count),
        }
    }

    /// Turns a pending socket error into a LiveError; None for a down/up flap that is already over.
    fn socket_error(&mut self) -> Result<Option<LiveError>, LiveError> {
        let err = take_so_error(&self.fd).map_err(|e| io_err("getsockopt(SO_ERROR)", e))?;
        match err {
            0 => Ok(None),
            libc::ENETDOWN | libc::ENODEV | libc::ENXIO => {
                // The kernel reports deletion and link-down alike (ENETDOWN): tell them apart by looking.
                if ifindex_of(&self.iface) != self.ifindex {
                    self.gone = true;
                    Ok(Some(LiveError::InterfaceGone(self.iface.clone())))
                } else {
                    match if_is_up(&self.fd, &self.iface) {
                        Ok(true) => Ok(None),
                        Ok(false) => Ok(Some(LiveError::InterfaceDown(self.iface.clone()))),
                        Err(_) => {
                            self.gone = true;
                            Ok(Some(LiveError::InterfaceGone(self.iface.clone())))
                        }
                    }
                }
            }
            e => Ok(Some(io_err(format!("capture socket on {}", self.iface), io::Error::from_raw_os_error(e)))),
        }
    }

    fn block_status(&self, block: usize) -> &AtomicU32 {
        debug_assert!(block < self.block_count);
        // SAFETY: block < block_count, so the word lies inside the mapping; blocks start page-aligned, so
        // it is 4-byte aligned; the kernel accesses it concurrently, hence atomic.
        unsafe { AtomicU32::from_ptr(self.ring.add(block * self.block_size + BLOCK_STATUS_OFF).cast()) }
    }

    fn block_ready(&self, block: usize) -> bool {
        // Acquire: the block's contents written by the kernel are visible once we see TP_STATUS_USER.
        self.block_status(block).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    fn consume_block(&mut self, block: usize, f: &mut impl FnMut(LivePacket<'_>)) -> usize {
        let opts = WalkOpts { linktype: self.linktype, skip_outgoing: self.skip_outgoing, snaplen: self.snaplen };
        let walked = {
            // SAFETY: the block lies inside the mapping, and while its status says TP_STATUS_USER the
            // kernel does not write to it; the slice is gone before the block is handed back below.
            let bytes = unsafe { std::slice::from_raw_parts(self.ring.add(block * self.block_size), self.block_size) };
            walk_block(bytes, opts, &mut self.scratch, f)
        };
        // Release: we are done reading before the kernel may refill the block.
        self.block_status(block).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        match walked {
            Ok(n) => n,
            Err(n) => {
                self.stats.bad_blocks += 1;
                n
            }
        }
    }

    /// Cumulative counters since `open`.
    pub fn stats(&mut self) -> Result<SocketStats, LiveError> {
        // SAFETY: plain data; all zeroes is a valid value.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: st/len are valid for the size given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io_err(format!("PACKET_STATISTICS on {}", self.iface), io::Error::last_os_error()));
        }
        self.stats.packets += u64::from(st.tp_packets);
        self.stats.drops += u64::from(st.tp_drops);
        self.stats.freeze_q += u64::from(st.tp_freeze_q_cnt);
        Ok(self.stats)
    }

    /// pcap link type of the captured data: [`LINKTYPE_ETHERNET`] (Ethernet and loopback) or [`LINKTYPE_RAW`].
    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    pub fn interface(&self) -> &str {
        &self.iface
    }
}

impl Drop for AfPacketSocket {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `open`; no slice of it outlives a method call. The fd
        // (and with it the promiscuous membership and fanout membership) closes after this.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
        }
    }
}

#[derive(Clone, Copy)]
struct WalkOpts {
    linktype: u32,
    skip_outgoing: bool,
    snaplen: usize,
}

fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

/// Delivers the packets of one retired block. Err(n): the descriptors did not add up after n packets and
/// the rest of the block was skipped. Every offset read from the block is checked against its length.
fn walk_block(
    block: &[u8],
    opts: WalkOpts,
    scratch: &mut Vec<u8>,
    f: &mut impl FnMut(LivePacket<'_>),
) -> Result<usize, usize> {
    let mut delivered = 0;
    let (Some(num_pkts), Some(first)) = (rd_u32(block, NUM_PKTS_OFF), rd_u32(block, FIRST_PKT_OFF)) else {
        return Err(0);
    };
    let mut off = first as usize;
    if num_pkts > 0 && off < BLOCK_DESC_LEN {
        return Err(0);
    }
    for i in 0..num_pkts {
        let Some(hdr) = off.checked_add(HDR_LEN).and_then(|end| block.get(off..end)) else {
            return Err(delivered);
        };
        let (Some(next), Some(sec), Some(nsec), Some(snap), Some(len), Some(status), Some(mac)) = (
            rd_u32(hdr, H_NEXT),
            rd_u32(hdr, H_SEC),
            rd_u32(hdr, H_NSEC),
            rd_u32(hdr, H_SNAPLEN),
            rd_u32(hdr, H_LEN),
            rd_u32(hdr, H_STATUS),
            rd_u16(hdr, H_MAC),
        ) else {
            return Err(delivered);
        };
        let start = off + mac as usize;
        let Some(data) = start.checked_add(snap as usize).and_then(|end| block.get(start..end)) else {
            return Err(delivered);
        };
        let outgoing =
            opts.skip_outgoing && block.get(off + H_SLL_PKTTYPE).is_some_and(|&t| t == libc::PACKET_OUTGOING);
        if !outgoing {
            let ts_ns = i64::from(sec) * 1_000_000_000 + i64::from(nsec);
            if opts.linktype == LINKTYPE_ETHERNET && status & libc::TP_STATUS_VLAN_VALID != 0 && data.len() >= ETH_ALEN2
            {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    rd_u16(hdr, H_VLAN_TPID).unwrap_or(VLAN_TPID_8021Q)
                } else {
                    VLAN_TPID_8021Q
                };
                let tci = rd_u32(hdr, H_VLAN_TCI).unwrap_or(0) as u16;
                let keep = (data.len() + 4).min(opts.snaplen);
                scratch.clear();
                scratch.extend_from_slice(&data[..ETH_ALEN2]);
                scratch.extend_from_slice(&tpid.to_be_bytes());
                scratch.extend_from_slice(&tci.to_be_bytes());
                scratch.extend_from_slice(&data[ETH_ALEN2..]);
                scratch.truncate(keep);
                f(LivePacket { ts_ns, data: scratch, orig_len: len.saturating_add(4) });
            } else {
                let keep = data.len().min(opts.snaplen);
                f(LivePacket { ts_ns, data: &data[..keep], orig_len: len });
            }
            delivered += 1;
        }
        if i + 1 < num_pkts {
            // Each step must move past the header, so a bad offset cannot make this loop spin.
            if (next as usize) < HDR_LEN {
                return Err(delivered);
            }
            off += next as usize;
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 4096;

    fn put_u32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_ne_bytes());
    }

    struct Pkt<'a> {
        data: &'a [u8],
        vlan: Option<(u16, Option<u16>)>,
        len: u32,
        outgoing: bool,
    }

    /// Lays packets out the way the kernel does (header, sockaddr_ll, data at tp_mac).
    fn build(pkts: &[Pkt]) -> Vec<u8> {
        let mut b = vec![0u8; BS];
        let first = BLOCK_DESC_LEN.next_multiple_of(16);
        put_u32(&mut b, NUM_PKTS_OFF, pkts.len() as u32);
        put_u32(&mut b, FIRST_PKT_OFF, first as u32);
        let mut off = first;
        for (i, p) in pkts.iter().enumerate() {
            let mac = 80usize;
            let total = (mac + p.data.len()).next_multiple_of(16);
            put_u32(&mut b, off + H_NEXT, if i + 1 < pkts.len() { total as u32 } else { 0 });
            put_u32(&mut b, off + H_SEC, 1_700_000_000);
            put_u32(&mut b, off + H_NSEC, 123);
            put_u32(&mut b, off + H_SNAPLEN, p.data.len() as u32);
            put_u32(&mut b, off + H_LEN, p.len);
            let mut status = libc::TP_STATUS_USER;
            if let Some((tci, tpid)) = p.vlan {
                status |= libc::TP_STATUS_VLAN_VALID;
                put_u32(&mut b, off + H_VLAN_TCI, u32::from(tci));
                if let Some(tpid) = tpid {
                    status |= libc::TP_STATUS_VLAN_TPID_VALID;
                    put_u16(&mut b, off + H_VLAN_TPID, tpid);
                }
            }
            put_u32(&mut b, off + H_STATUS, status);
            put_u16(&mut b, off + H_MAC, mac as u16);
            if p.outgoing {
                b[off + H_SLL_PKTTYPE] = libc::PACKET_OUTGOING;
            }
            b[off + mac..off + mac + p.data.len()].copy_from_slice(p.data);
            off += total;
        }
        b
    }

    type Got = Vec<(i64, Vec<u8>, u32)>;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;

    fn collect(block: &[u8], opts: WalkOpts) -> (Result<usize, usize>, Got) {
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let r = walk_block(block, opts, &mut scratch, &mut |p: LivePacket<'_>| {
            got.push((p.ts_ns, p.data.to_vec(), p.orig_len))
        });
        (r, got)
    }

    const ETH: WalkOpts = WalkOpts { linktype: LINKTYPE_ETHERNET, skip_outgoing: false, snaplen: 65535 };

    #[test]
    fn layout_matches_kernel_headers() {
        assert_eq!(BLOCK_DESC_LEN, 48);
        assert_eq!(HDR_LEN, 48);
        assert_eq!((BLOCK_STATUS_OFF, NUM_PKTS_OFF, FIRST_PKT_OFF), (8, 12, 16));
        assert_eq!((H_MAC, H_VLAN_TCI, H_VLAN_TPID, H_SLL_PKTTYPE), (24, 32, 36, 58));
    }

    #[test]
    fn walks_packets_and_reinserts_vlan() {
        let plain: Vec<u8> = (0..60).collect();
        let tagged: Vec<u8> = (100..160).collect();
        let b = build(&[
            Pkt { data: &plain, vlan: None, len: 60, outgoing: false },
            Pkt { data: &tagged, vlan: Some((0x2064, None)), len: 60, outgoing: false },
            Pkt { data: &tagged, vlan: Some((5, Some(0x88a8))), len: 60, outgoing: false },
        ]);
        let (r, got) = collect(&b, ETH);
        assert_eq!(r, Ok(3));
        assert_eq!(got[0], (1_700_000_000_000_000_123, plain.clone(), 60));
        let mut want = tagged[..12].to_vec();
        want.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]);
        want.extend_from_slice(&tagged[12..]);
        assert_eq!((got[1].1.clone(), got[1].2), (want.clone(), 64));
        want[12..16].copy_from_slice(&[0x88, 0xa8, 0x00, 0x05]);
        assert_eq!(got[2].1, want);
    }

    #[test]
    fn snaplen_and_loopback_outgoing() {
        let data: Vec<u8> = (0..200).map(|i| i as u8).collect();
        let b = build(&[
            Pkt { data: &data, vlan: None, len: 1500, outgoing: true },
            Pkt { data: &data, vlan: Some((7, None)), len: 1500, outgoing: false },
        ]);
        let (r, got) = collect(&b, WalkOpts { linktype: LINKTYPE_ETHERNET, skip_outgoing: true, snaplen: 64 });
        assert_eq!(r, Ok(1));
        assert_eq!((got[0].1.len(), got[0].2), (64, 1504));
        let (r, got) = collect(&b, WalkOpts { linktype: LINKTYPE_RAW, skip_outgoing: false, snaplen: 100 });
        assert_eq!(r, Ok(2));
        assert!(got.iter().all(|g| g.1 == data[..100] && g.2 == 1500), "no VLAN reinsertion on raw IP");
    }

    #[test]
    fn inconsistent_blocks_are_cut_short() {
        let data = [0xaau8; 100];
        let good = build(&[
            Pkt { data: &data, vlan: None, len: 100, outgoing: false },
            Pkt { data: &data, vlan: None, len: 100, outgoing: false },
        ]);
        let second = BLOCK_DESC_LEN.next_multiple_of(16) + (80 + 100usize).next_multiple_of(16);
        let cases: Vec<(Damage, Result<usize, usize>)> = vec![
            (Box::new(|b| put_u32(b, FIRST_PKT_OFF, 8)), Err(0)),
            (Box::new(|b| put_u32(b, FIRST_PKT_OFF, u32::MAX)), Err(0)),
            (Box::new(|b| put_u32(b, NUM_PKTS_OFF, u32::MAX)), Err(2)),
            (Box::new(|b| put_u32(b, 48 + H_NEXT, 0)), Err(1)),
            (Box::new(|b| put_u32(b, 48 + H_NEXT, u32::MAX)), Err(1)),
            (Box::new(move |b| put_u32(b, second + H_SNAPLEN, u32::MAX)), Err(1)),
            (Box::new(move |b| put_u32(b, second + H_SNAPLEN, (BS - second - 80 + 1) as u32)), Err(1)),
            (Box::new(move |b| put_u32(b, second + H_SNAPLEN, (BS - second - 80) as u32)), Ok(2)),
            (Box::new(|b| put_u16(b, 48 + H_MAC, u16::MAX)), Err(0)),
            (Box::new(|b| b.truncate(20)), Err(0)),
        ];
        for (i, (damage, want)) in cases.into_iter().enumerate() {
            let mut b = good.clone();
            damage(&mut b);
            assert_eq!(collect(&b, ETH).0, want, "case {i}");
        }
    }

    #[test]
    fn garbage_never_panics_or_reads_out_of_bounds() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let data = [1u8; 300];
        let base = build(&[
            Pkt { data: &data, vlan: Some((1, None)), len: 300, outgoing: false },
            Pkt { data: &data, vlan: None, len: 300, outgoing: false },
            Pkt { data: &data, vlan: None, len: 300, outgoing: false },
        ]);
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..(rnd() % 8 + 1) {
                let pos = (rnd() % 512) as usize;
                b[pos] = rnd() as u8;
            }
            let opts = WalkOpts { linktype: LINKTYPE_ETHERNET, skip_outgoing: rnd() % 2 == 0, snaplen: 65535 };
            let (_, got) = collect(&b, opts);
            assert!(got.iter().all(|g| g.1.len() <= BS + 4));
        }
    }

    #[test]
    fn compiles_filters() {
        let bpf = compile_bpf("udp port 53", 96).unwrap();
        assert!(bpf.0.len() > 5);
        let rets: Vec<u32> = bpf.0.iter().filter(|i| i.code == BPF_RET_K).map(|i| i.k).collect();
        assert!(rets.contains(&96) && rets.contains(&0), "{rets:?}");
        assert!(compile_bpf("", 0).unwrap().0.iter().any(|i| i.code == BPF_RET_K && i.k == MAX_SNAPLEN));
        match compile_bpf("udp port", 65535) {
            Err(LiveError::Bpf { expr, msg }) => assert!(expr == "udp port" && !msg.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(compile_bpf("tcp\0", 65535), Err(LiveError::Bpf { .. })));
    }

    #[test]
    fn types_are_send() {
        fn send<T: Send>() {}
        send::<AfPacketSocket>();
        send::<CompiledBpf>();
        send::<RingConfig>();
        send::<LiveError>();
    }

    #[test]
    fn interface_lookup() {
        assert!(!interface_exists(""));
        assert!(!interface_exists("a/b"));
        assert!(!interface_exists("waytoolonginterfacename"));
        assert!(!interface_exists("kw-does-not-ex"));
        assert!(interface_exists("lo"));
        assert!(matches!(
            AfPacketSocket::open("kw-does-not-ex", &RingConfig::default()),
            Err(LiveError::NoSuchInterface(_))
        ));
        let bad = RingConfig { block_size: 1000, ..RingConfig::default() };
        assert!(matches!(AfPacketSocket::open("lo", &bad), Err(LiveError::InvalidConfig(_))));
    }
}
