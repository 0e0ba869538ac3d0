//! Live capture through libpcap (the `pcap` crate): the portable engine. One capture thread per
//! interface; the pipeline then spreads flows over the workers itself.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::afpacket::{LiveError, LivePacket, SocketStats, interface_exists};

/// IFF_UP of the interface, from sysfs.
fn interface_is_up(iface: &str) -> Result<bool, LiveError> {
    if iface.contains('/') || iface.starts_with('.') {
        return Err(LiveError::NoSuchInterface(iface.to_string()));
    }
    let flags = std::fs::read_to_string(format!("/sys/class/net/{iface}/flags"))
        .map_err(|_| LiveError::NoSuchInterface(iface.to_string()))?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    Ok(flags & 1 != 0)
}

pub struct PcapSource {
    cap: pcap::Capture<pcap::Active>,
    iface: String,
    linktype: u32,
    /// libpcap's counters are 32-bit and wrap: kept as 64-bit totals here.
    last: pcap::Stat,
    total: SocketStats,
}

fn classify(iface: &str, e: pcap::Error) -> LiveError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("permission") || lower.contains("not permitted") {
        LiveError::PermissionDenied(iface.to_string())
    } else if lower.contains("no such device") {
        LiveError::NoSuchInterface(iface.to_string())
    } else if lower.contains("not up") || lower.contains("network is down") {
        LiveError::InterfaceDown(iface.to_string())
    } else {
        LiveError::Io { context: format!("libpcap on {iface}"), source: std::io::Error::other(text) }
    }
}

impl PcapSource {
    pub fn open(iface: &str, snaplen: u32, promisc: bool, bpf: Option<&str>) -> Result<PcapSource, LiveError> {
        if !interface_exists(iface) {
            return Err(LiveError::NoSuchInterface(iface.to_string()));
        }
        if !interface_is_up(iface)? {
            return Err(LiveError::InterfaceDown(iface.to_string()));
        }
        let mut cap = pcap::Capture::from_device(iface)
            .map_err(|e| classify(iface, e))?
            .snaplen(snaplen.min(i32::MAX as u32) as i32)
            .promisc(promisc)
            .timeout(100)
            .immediate_mode(true)
            .buffer_size(64 << 20)
            .open()
            .map_err(|e| classify(iface, e))?
            // libpcap's own read timeout does not return on a quiet TPACKET_V3 link: poll(2) here instead.
            .setnonblock()
            .map_err(|e| classify(iface, e))?;
        if let Some(expr) = bpf {
            cap.filter(expr, true).map_err(|e| LiveError::Bpf { expr: expr.to_string(), msg: e.to_string() })?;
        }
        let linktype = cap.get_datalink().0 as u32;
        let last = pcap::Stat { received: 0, dropped: 0, if_dropped: 0 };
        Ok(PcapSource { cap, iface: iface.to_string(), linktype, last, total: SocketStats::default() })
    }

    pub fn interface(&self) -> &str {
        &self.iface
    }

    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// Reads packets for up to about `budget`, calling `f` for each; returns how many.
    pub fn poll(&mut self, budget: Duration, mut f: impl FnMut(LivePacket<'_>)) -> Result<usize, LiveError> {
        let start = std::time::Instant::now();
        let mut n = 0;
        loop {
            match self.cap.next_packet() {
                Ok(p) => {
                    let ts_ns = p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec * 1000;
                    f(LivePacket { ts_ns, data: p.data, orig_len: p.header.len });
                    n += 1;
                    if n % 256 == 0 && start.elapsed() >= budget {
                        return Ok(n);
                    }
                }
                Err(pcap::Error::TimeoutExpired) if n == 0 && start.elapsed() < budget => {
                    let mut pfd = libc::pollfd { fd: self.cap.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    let ms = budget.saturating_sub(start.elapsed()).as_millis().max(1) as i32;
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(&mut pfd, 1, ms) };
                    if pfd.revents == 0 {
                        return Ok(0);
                    }
                }
                Err(pcap::Error::TimeoutExpired) => return Ok(n),
                Err(e) => {
                    if !interface_exists(&self.iface) || !interface_is_up(&self.iface).unwrap_or(false) {
                        return Err(LiveError::InterfaceGone(self.iface.clone()));
                    }
                    return Err(classify(&self.iface, e));
                }
            }
        }
    }

    /// Cumulative: packets received and dropped (by the kernel buffer, and by the interface).
    pub fn stats(&mut self) -> SocketStats {
        if let Ok(s) = self.cap.stats() {
            self.total.packets += s.received.wrapping_sub(self.last.received) as u64;
            self.total.drops += s.dropped.wrapping_sub(self.last.dropped) as u64;
            self.total.freeze_q += s.if_dropped.wrapping_sub(self.last.if_dropped) as u64;
            self.last = s;
        }
        self.total
    }
}
