//! Getting alerts to collectors. One thread per destination, fed by a channel, so a collector
//! that is slow or down never holds up packet processing.
//!
//! - `syslog+udp://HOST:PORT`: RFC 5424 datagrams, best effort (send errors counted).
//! - `syslog+tcp://HOST:PORT`, `syslog+tls://HOST:PORT`: RFC 5424 framed by octet counting
//!   (RFC 6587), TLS per RFC 5425. While the collector is unreachable records go to the
//!   destination's [`Spool`] and are sent in order once it is back (reconnecting with
//!   exponential backoff and jitter); the spool outlives the process.
//! - `file:PATH`: one record per line, rotated by size ([`RotatingFile`]), reopened on SIGHUP
//!   ([`Delivery::reopen_files`], for logrotate).
//!
//! TCP does not say what the peer has read. Before each write the socket is checked for a
//! close from the collector, records sent in the last seconds before a lost connection are sent
//! again (same alert id: collectors drop duplicates), and at the end the connection is
//! half-closed and kavwatch waits for the collector to close its side, which it does only after
//! reading everything.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;

use super::Alert;
use super::format::{self, Format};
use super::spool::Spool;
use crate::output::files::RotatingFile;

/// Records sent this long before a connection was found lost are sent again.
const RESEND_WINDOW: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Records queued in memory per destination before they go straight to its spool.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(
        "--alert {0:?}: expected syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT or file:PATH"
    )]
    BadUrl(String),
    #[error("--alert {url}: {msg}")]
    Setup { url: String, msg: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Udp(String),
    Tcp(String),
    Tls(String),
    File(PathBuf),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, DeliverError> {
        let bad = || DeliverError::BadUrl(url.to_string());
        let hostport = |rest: &str| -> Result<String, DeliverError> {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad());
            }
            Ok(rest.to_string())
        };
        if let Some(r) = url.strip_prefix("syslog+udp://") {
            Ok(Target::Udp(hostport(r)?))
        } else if let Some(r) = url.strip_prefix("syslog+tcp://") {
            Ok(Target::Tcp(hostport(r)?))
        } else if let Some(r) = url.strip_prefix("syslog+tls://") {
            Ok(Target::Tls(hostport(r)?))
        } else if let Some(p) = url.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(Target::File(PathBuf::from(p.strip_prefix("//").unwrap_or(p))))
        } else {
            Err(bad())
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub format: Format,
    /// Syslog facility (the CLI's default is 4, security/authorization).
    pub facility: u8,
    /// HOSTNAME of syslog messages: the sensor name.
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// PEM file of the CA(s) that sign the TLS collector's certificate [default: the system's].
    pub ca_file: Option<PathBuf>,
    pub file_max_bytes: u64,
    /// Rotated files kept (PATH.1 ... PATH.N).
    pub file_keep: u32,
    /// How long the end of a run waits for an unreachable collector before leaving the rest in the spool.
    pub drain_timeout: Duration,
}

/// Counters of one destination (the report's `stats.alerts.destinations`).
#[derive(Debug, Default, Clone, Serialize)]
pub struct DestStats {
    pub destination: String,
    /// Records written to the collector (or file).
    pub sent: u64,
    /// Records put in the on-disk spool because the collector was unreachable.
    pub spooled: u64,
    /// Records lost: spool full (oldest dropped) or an unrecoverable write error.
    pub dropped: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Failed connection attempts and write errors (UDP: send errors).
    pub errors: u64,
    /// Records sent again after a lost connection (the collector may see them twice, same id).
    pub resent: u64,
    /// Records still in the spool (sent on the next start).
    pub waiting: u64,
    /// The last error, for the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The queue of a destination's thread.
enum DestTx {
    Stream(Sender<String>),
    File(Sender<FileMsg>),
}

struct Dest {
    tx: Option<DestTx>,
    stats: Arc<Mutex<DestStats>>,
    handle: Option<JoinHandle<()>>,
    target: Target,
}

/// All destinations of a run.
pub struct Delivery {
    dests: Vec<Dest>,
    cfg: DeliveryConfig,
}

impl Dest {
    fn target_name(&self) -> String {
        match &self.target {
            Target::File(p) => p.display().to_string(),
            Target::Udp(a) | Target::Tcp(a) | Target::Tls(a) => a.clone(),
        }
    }
}

fn lock(s: &Mutex<DestStats>) -> std::sync::MutexGuard<'_, DestStats> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn spool_name(url: &str) -> String {
    url.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

impl Delivery {
    /// Checks every destination (URL, spool, CA file, output file) before anything is read.
    pub fn start(urls: &[String], cfg: &DeliveryConfig) -> Result<Delivery, DeliverError> {
        let mut dests = Vec::new();
        for url in urls {
            let target = Target::parse(url)?;
            let setup = |msg: String| DeliverError::Setup { url: url.clone(), msg };
            let stats = Arc::new(Mutex::new(DestStats { destination: url.clone(), ..DestStats::default() }));
            let (stx, rx) = bounded::<String>(QUEUE);
            let mut tx = DestTx::Stream(stx);
            let st = stats.clone();
            let handle = match &target {
                Target::Udp(addr) => {
                    let sock = UdpSocket::bind(if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" })
                        .map_err(|e| setup(format!("UDP socket: {e}")))?;
                    let addr = addr.clone();
                    std::thread::spawn(move || udp_loop(rx, sock, &addr, st))
                }
                Target::Tcp(addr) | Target::Tls(addr) => {
                    let tls = match &target {
                        Target::Tls(_) => Some(tls_config(cfg.ca_file.as_deref()).map_err(setup)?),
                        _ => None,
                    };
                    let spool = Spool::open(&cfg.spool_dir.join(spool_name(url)), cfg.spool_max_bytes)
                        .map_err(|e| setup(format!("spool: {e}")))?;
                    lock(&stats).waiting = spool.len();
                    let c = Connector { addr: addr.clone(), tls };
                    let drain = cfg.drain_timeout;
                    std::thread::spawn(move || StreamSender::new(c, spool, st).run(rx, drain))
                }
                Target::File(path) => {
                    let f = RotatingFile::open(path, cfg.file_max_bytes, cfg.file_keep)
                        .map_err(|e| setup(format!("{}: {e}", path.display())))?;
                    let (ftx, frx) = bounded::<FileMsg>(QUEUE);
                    tx = DestTx::File(ftx);
                    std::thread::spawn(move || file_loop(frx, f, st))
                }
            };
            dests.push(Dest { tx: Some(tx), stats, handle: Some(handle), target });
        }
        Ok(Delivery { dests, cfg: cfg.clone() })
    }

    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// Queues an alert for every destination; never blocks on a collector.
    pub fn send(&self, a: &Alert) {
        let body = format::render(a, self.cfg.format, env!("CARGO_PKG_VERSION"));
        let syslog = format::to_syslog(a, &body, self.cfg.facility, &self.cfg.hostname, std::process::id());
        for d in &self.dests {
            let queued = match &d.tx {
                Some(DestTx::File(tx)) => {
                    tx.send_timeout(FileMsg::Record(body.clone()), Duration::from_secs(1)).is_ok()
                }
                Some(DestTx::Stream(tx)) => tx.send_timeout(syslog.clone(), Duration::from_secs(1)).is_ok(),
                None => true,
            };
            if !queued {
                // Only when the destination's thread is stuck on its disk for a second.
                let mut s = lock(&d.stats);
                s.dropped += 1;
                s.last_error = Some("queue full".into());
            }
        }
    }

    /// Makes every file destination close and reopen its file (SIGHUP, after logrotate moved
    /// it), after the records already queued, and waits for them (a few seconds at most).
    /// Returns one message per destination that failed.
    pub fn reopen_files(&self) -> Vec<String> {
        let mut waiting = Vec::new();
        let mut failed = Vec::new();
        for d in &self.dests {
            if let Some(DestTx::File(tx)) = &d.tx {
                let (rtx, rrx) = bounded(1);
                match tx.send_timeout(FileMsg::Reopen(rtx), Duration::from_secs(2)) {
                    Ok(()) => waiting.push((d.target_name(), rrx)),
                    Err(_) => failed.push(format!("{}: its queue is stuck", d.target_name())),
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, rrx) in waiting {
            match rrx.recv_deadline(deadline) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(format!("{name}: {e}")),
                Err(_) => failed.push(format!("{name}: no answer in time")),
            }
        }
        failed
    }

    pub fn stats(&self) -> Vec<DestStats> {
        self.dests.iter().map(|d| lock(&d.stats).clone()).collect()
    }

    /// Closes the queues and waits for every destination to deliver or spool what it holds.
    pub fn finish(mut self) -> Vec<DestStats> {
        for d in &mut self.dests {
            d.tx = None;
        }
        for d in &mut self.dests {
            if let Some(h) = d.handle.take() {
                let _ = h.join();
            }
        }
        self.stats()
    }
}

fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = ca.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("CA file {}: {e}", path.display()))?;
        roots.add(c).map_err(|e| format!("CA file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {}: no certificate in it", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn udp_loop(rx: Receiver<String>, sock: UdpSocket, addr: &str, stats: Arc<Mutex<DestStats>>) {
    for rec in rx {
        let r = addr
            .to_socket_addrs()
            .and_then(|mut a| a.next().ok_or_else(|| io::Error::other("no address")))
            .and_then(|a| sock.send_to(rec.as_bytes(), a));
        let mut s = lock(&stats);
        match r {
            Ok(_) => s.sent += 1,
            Err(e) => {
                s.errors += 1;
                s.dropped += 1;
                s.last_error = Some(e.to_string());
            }
        }
    }
}

/// What the thread of a file destination is given.
enum FileMsg {
    Record(String),
    /// Reopen PATH (SIGHUP, after logrotate moved it); the result goes back.
    Reopen(Sender<io::Result<()>>),
}

fn file_loop(rx: Receiver<FileMsg>, mut f: RotatingFile, stats: Arc<Mutex<DestStats>>) {
    let fail = |e: io::Error, lost: u64| {
        let mut s = lock(&stats);
        s.errors += 1;
        s.dropped += lost;
        s.last_error = Some(e.to_string());
    };
    let mut held = 0;
    for m in rx.iter() {
        match m {
            FileMsg::Record(rec) => match f.write_line(rec.as_bytes()) {
                Ok(()) => held += 1,
                Err(e) => fail(e, 1),
            },
            FileMsg::Reopen(reply) => {
                let r = f.reopen();
                if let Err(e) = &r {
                    fail(io::Error::new(e.kind(), format!("reopening {}: {e}", f.path().display())), 0);
                }
                let _ = reply.send(r);
            }
        }
        // Out to the file once the queue is empty (records batch up only while it is busy).
        if rx.is_empty() && held > 0 {
            match f.flush() {
                Ok(()) => lock(&stats).sent += held,
                Err(e) => fail(e, held),
            }
            held = 0;
        }
    }
    match f.sync() {
        Ok(()) => lock(&stats).sent += held,
        Err(e) => fail(e, held),
    }
}

/// A plain or TLS stream to a collector.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b),
            Conn::Tls(s) => s.write_all(b).and_then(|_| s.flush()),
        }
    }

    /// False when the collector has closed or reset the connection (a syslog collector never
    /// sends anything, so anything readable is an end).
    fn alive(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        let r = match self {
            Conn::Tcp(s) => s.read(&mut buf),
            Conn::Tls(s) => s.read(&mut buf),
        };
        let alive = match r {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(0) => false,
            Ok(_) => true,
        };
        alive && self.tcp().set_nonblocking(false).is_ok()
    }

    /// Half-closes and waits for the collector to close: it has then read everything.
    fn close_confirmed(mut self, wait: Duration) -> bool {
        if let Conn::Tls(s) = &mut self {
            s.conn.send_close_notify();
            if s.flush().is_err() {
                return false;
            }
        }
        let tcp = self.tcp();
        if tcp.shutdown(Shutdown::Write).is_err() || tcp.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let r = match &mut self {
                Conn::Tcp(s) => s.read(&mut buf),
                Conn::Tls(s) => s.read(&mut buf),
            };
            match r {
                Ok(0) => return true,
                Ok(_) => {}
                // A TLS peer closing without close_notify after our EOF has still read everything.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

struct Connector {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connector {
    fn connect(&self) -> Result<Conn, String> {
        let addrs: Vec<_> = self.addr.to_socket_addrs().map_err(|e| format!("{}: {e}", self.addr))?.collect();
        let mut last = format!("{}: no address", self.addr);
        for a in addrs {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                    return self.wrap(s);
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(last)
    }

    fn wrap(&self, s: TcpStream) -> Result<Conn, String> {
        let Some(cfg) = &self.tls else {
            return Ok(Conn::Tcp(s));
        };
        let host = self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, s);
        let _ = tls.sock.set_read_timeout(Some(IO_TIMEOUT));
        // Finish the handshake now, so a bad certificate shows as a connection error.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(|e| format!("TLS with {}: {e}", self.addr))?;
        }
        Ok(Conn::Tls(Box::new(tls)))
    }
}

struct StreamSender {
    connector: Connector,
    spool: Spool,
    stats: Arc<Mutex<DestStats>>,
    conn: Option<Conn>,
    connected_once: bool,
    backoff: Duration,
    next_try: Instant,
    /// Records written lately, for sending again if the connection turns out lost.
    recent: VecDeque<(Instant, String)>,
    jitter: u64,
}

impl StreamSender {
    fn new(connector: Connector, spool: Spool, stats: Arc<Mutex<DestStats>>) -> StreamSender {
        let jitter = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        StreamSender {
            connector,
            spool,
            stats,
            conn: None,
            connected_once: false,
            backoff: BACKOFF_MIN,
            next_try: Instant::now(),
            recent: VecDeque::new(),
            jitter,
        }
    }

    fn run(mut self, rx: Receiver<String>, drain: Duration) {
        let mut closing: Option<Instant> = None;
        loop {
            let wait = if closing.is_some() { Duration::from_millis(50) } else { Duration::from_millis(200) };
            match rx.recv_timeout(wait) {
                Ok(rec) => {
                    self.take(rec);
                    while let Ok(rec) = rx.try_recv() {
                        self.take(rec);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closing.get_or_insert_with(|| Instant::now() + drain);
                }
            }
            self.drain_spool();
            if let Some(deadline) = closing {
                if self.spool.is_empty() {
                    if let Some(c) = self.conn.take()
                        && !c.close_confirmed(Duration::from_secs(3))
                    {
                        // Not confirmed: what went out lately may be lost; keep it for the next run.
                        self.respool_recent("the collector did not confirm the end of the stream");
                        if Instant::now() < deadline {
                            continue;
                        }
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        let _ = self.spool.sync();
        lock(&self.stats).waiting = self.spool.len();
    }

    /// A new record: straight out when connected with nothing waiting, else to the spool.
    fn take(&mut self, rec: String) {
        if self.spool.is_empty() {
            self.connect();
        }
        if self.spool.is_empty() && self.conn.as_mut().is_some_and(|c| c.alive()) {
            if self.write(&rec) {
                return;
            }
        } else if self.conn.is_some() && self.spool.is_empty() {
            self.lost("connection closed by the collector".into());
        }
        self.spool_push(&rec);
        lock(&self.stats).spooled += 1;
    }

    fn spool_push(&mut self, rec: &str) {
        match self.spool.push(rec) {
            Ok(dropped) => lock(&self.stats).dropped += dropped,
            Err(e) => {
                let mut s = lock(&self.stats);
                s.dropped += 1;
                s.last_error = Some(format!("spool: {e}"));
            }
        }
    }

    /// Writes one record with its octet count; false (and the connection dropped) on failure.
    fn write(&mut self, rec: &str) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        let framed = format!("{} {rec}", rec.len());
        match c.write_all(framed.as_bytes()) {
            Ok(()) => {
                let now = Instant::now();
                while self.recent.front().is_some_and(|(t, _)| now.duration_since(*t) > RESEND_WINDOW) {
                    self.recent.pop_front();
                }
                self.recent.push_back((now, rec.to_string()));
                let mut s = lock(&self.stats);
                s.sent += 1;
                s.waiting = self.spool.len();
                true
            }
            Err(e) => {
                self.lost(e.to_string());
                false
            }
        }
    }

    fn lost(&mut self, why: String) {
        self.conn = None;
        self.respool_recent(&why);
        self.next_try = Instant::now();
    }

    fn respool_recent(&mut self, why: &str) {
        let recent: Vec<String> = self.recent.drain(..).map(|(_, r)| r).collect();
        {
            let mut s = lock(&self.stats);
            s.errors += 1;
            s.resent += recent.len() as u64;
            s.last_error = Some(why.to_string());
        }
        for r in recent {
            self.spool_push(&r);
        }
    }

    fn connect(&mut self) {
        if self.conn.is_some() || Instant::now() < self.next_try {
            return;
        }
        match self.connector.connect() {
            Ok(c) => {
                self.conn = Some(c);
                self.backoff = BACKOFF_MIN;
                if self.connected_once {
                    lock(&self.stats).reconnects += 1;
                }
                self.connected_once = true;
            }
            Err(e) => {
                {
                    let mut s = lock(&self.stats);
                    s.errors += 1;
                    s.last_error = Some(e);
                }
                // Exponential backoff with +-25% jitter (xorshift), so many sensors do not reconnect in step.
                self.jitter ^= self.jitter << 13;
                self.jitter ^= self.jitter >> 7;
                self.jitter ^= self.jitter << 17;
                let ms = self.backoff.as_millis() as u64;
                let jittered = ms * 3 / 4 + self.jitter % (ms / 2 + 1);
                self.next_try = Instant::now() + Duration::from_millis(jittered);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Sends what waits in the spool, oldest first, while the connection holds.
    fn drain_spool(&mut self) {
        if self.spool.is_empty() {
            return;
        }
        self.connect();
        while self.conn.is_some() && !self.spool.is_empty() {
            if !self.conn.as_mut().is_some_and(|c| c.alive()) {
                self.lost("connection closed by the collector".into());
                return;
            }
            let batch = match self.spool.peek(64) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => return,
                Err(e) => {
                    lock(&self.stats).last_error = Some(format!("spool: {e}"));
                    return;
                }
            };
            let mut done = 0;
            for rec in &batch {
                if !self.write(rec) {
                    break;
                }
                done += 1;
            }
            if let Err(e) = self.spool.consume(done) {
                lock(&self.stats).last_error = Some(format!("spool: {e}"));
                return;
            }
            lock(&self.stats).waiting = self.spool.len();
            if done < batch.len() as u64 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert_eq!(Target::parse("syslog+udp://127.0.0.1:514").unwrap(), Target::Udp("127.0.0.1:514".into()));
        assert_eq!(Target::parse("syslog+tcp://[::1]:6514").unwrap(), Target::Tcp("[::1]:6514".into()));
        assert_eq!(Target::parse("syslog+tls://siem.example:6514/").unwrap(), Target::Tls("siem.example:6514".into()));
        assert_eq!(Target::parse("file:/var/log/a.json").unwrap(), Target::File("/var/log/a.json".into()));
        for bad in
            ["syslog://h:1", "syslog+tcp://h", "syslog+tcp://:1", "syslog+udp://h:0", "syslog+udp://h:99999", "file:"]
        {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
