//! A real `rsyslogd` as a syslog collector for integration tests.
//!
//! [`Rsyslog::start`] runs `rsyslogd -n` as a child process with a config of its own, listening on 127.0.0.1 only:
//! plain TCP (imtcp: RFC 6587 octet counting and LF-terminated framing, detected per frame), UDP (imudp) and
//! TLS (imtcp, RFC 5425, TLS required; TLS 1.2 and 1.3). Each listener has its own ruleset writing one JSON object
//! per received message to its own file, which [`Rsyslog::messages`] reads back.
//!
//! Needs `rsyslogd` with the GnuTLS driver (Debian: `rsyslog`, `rsyslog-gnutls`) and the `openssl` CLI, which
//! makes a throw-away CA and a server certificate for `127.0.0.1` / `localhost` on every start. Linux only: the
//! SIGTERM of [`Rsyslog::stop`] is sent with `kill(1)`. Set `RSYSLOGD` to use another binary.
//!
//! Why GnuTLS and not rsyslog's OpenSSL driver: in rsyslogd 8.2302 the `ossl` driver closes a TLS session's socket
//! twice, so whatever file or socket another thread opened in between under the same number is closed: messages
//! then go to the wrong file or nowhere, listeners die (seen in about 5% of starts). GnuTLS costs 0.1-1 s of start
//! time (DH parameters); `gnutlsPriorityString="NORMAL"` makes it offer TLS 1.3 besides 1.2.
//!
//! What rsyslog does to messages (rsyslogd 8.2302): `raw` is the message as sent, without the octet-count prefix
//! or the LF of LF framing; control characters are kept as they are (escaping on receive is off); one trailing LF
//! inside a frame or datagram is dropped (`parser.dropTrailingLFOnReception`, default on). Over TCP a message
//! longer than 64 KiB is cut after 65536 bytes and the rest (less a byte) arrives as a message of its own (and a
//! warning in the internal log). Fields that are NILVALUE (`-`) in an RFC 5424 message read back as `"-"`,
//! except `msg`, which is then `""`. Messages of one connection keep their order; those of separate connections,
//! even ones made one after the other, may be written in another order (imtcp serves sessions from worker
//! threads).
//!
//! Files in `dir`: `rsyslog.conf`, `rsyslogd.pid`, `rsyslogd.log` (rsyslogd's stdout and stderr, all runs),
//! `rsyslog-internal.log` (rsyslogd's own messages: start/stop banners, TLS errors), `rsyslog-{tcp,udp,tls}.jsonl`
//! (received messages, including the readiness probes), `rsyslog-ca.pem` / `rsyslog-ca.key` (test CA),
//! `rsyslog-server.{pem,key,csr,ext}` and the work directory `rsyslog-work/`. One `Rsyslog` per directory.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// APP-NAME of the readiness probes that `start`/`restart` send; `messages()` leaves them out.
pub const PROBE_APP_NAME: &str = "kavwatch-rsyslog-probe";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STUCK_AFTER: Duration = Duration::from_secs(5);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
const LISTENERS: [&str; 3] = ["tcp", "udp", "tls"];
const CONF: &str = "rsyslog.conf";
const PID: &str = "rsyslogd.pid";
const LOG: &str = "rsyslogd.log";
const INTERNAL: &str = "rsyslog-internal.log";
const WORK: &str = "rsyslog-work";
const CA_CERT: &str = "rsyslog-ca.pem";
const CA_KEY: &str = "rsyslog-ca.key";
const SERVER_CERT: &str = "rsyslog-server.pem";
const SERVER_KEY: &str = "rsyslog-server.key";
const SERVER_CSR: &str = "rsyslog-server.csr";
const SERVER_EXT: &str = "rsyslog-server.ext";

static PROBE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A running (or stopped) rsyslogd with its directory, ports and child process.
pub struct Rsyslog {
    dir: PathBuf,
    tcp_port: u16,
    udp_port: u16,
    tls_port: u16,
    child: Option<Child>,
}

/// One message as rsyslog received and parsed it (RFC 5424 fields; rsyslog's property names in comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// "tcp", "udp" or "tls": the listener it came in on.
    pub listener: String,
    /// `%rawmsg%`: the message exactly as sent, without framing.
    pub raw: String,
    /// `%pri%`: facility * 8 + severity.
    pub pri: u8,
    /// `%hostname%`.
    pub hostname: String,
    /// `%app-name%`.
    pub app_name: String,
    /// `%procid%`.
    pub procid: String,
    /// `%msgid%`.
    pub msgid: String,
    /// `%structured-data%`: the SD elements as sent (escapes kept), or "-".
    pub structured_data: String,
    /// `%msg%`: the free-form message after the structured data.
    pub msg: String,
}

impl Received {
    pub fn facility(&self) -> u8 {
        self.pri >> 3
    }

    pub fn severity(&self) -> u8 {
        self.pri & 7
    }
}

impl Rsyslog {
    /// Writes a config into `dir` (created if missing) with a fresh test CA and server certificate, picks free
    /// ports and starts rsyslogd; returns once every listener has delivered a probe message to its file.
    /// Panics with rsyslogd's output if it is not up within 20 s.
    pub fn start(dir: &Path) -> Rsyslog {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let dir = dir.canonicalize().unwrap_or_else(|e| panic!("canonicalizing {}: {e}", dir.display()));
        let text = dir.to_str().unwrap_or_else(|| panic!("rsyslog dir is not UTF-8: {}", dir.display()));
        assert!(!text.contains(['"', '\\', '\n', '\'']), "rsyslog dir must not need quoting: {text}");
        let (tcp_port, udp_port, tls_port) = free_ports();
        let mut rsyslog = Rsyslog { dir, tcp_port, udp_port, tls_port, child: None };
        rsyslog.make_certs();
        fs::create_dir_all(rsyslog.path(WORK)).expect("creating rsyslog work dir");
        fs::write(rsyslog.path(CONF), rsyslog.config()).expect("writing rsyslog.conf");
        rsyslog.launch(true);
        rsyslog
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The test CA's certificate (PEM) that signed the TLS listener's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.path(CA_CERT)
    }

    /// The directory holding the config, certificates and output files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// rsyslogd's own messages so far (`rsyslog-internal.log`), e.g. TLS handshake errors.
    pub fn internal_log(&self) -> String {
        fs::read_to_string(self.path(INTERNAL)).unwrap_or_default()
    }

    /// Whether the child rsyslogd is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops rsyslogd with SIGTERM and waits for it to exit (SIGKILL after 10 s); its listeners then refuse
    /// connections. Does nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            let _ = child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
    }

    /// Starts rsyslogd again (stopping it first if it runs) on the same ports with the same config and
    /// certificates; output files are appended to, so earlier messages stay.
    pub fn restart(&mut self) {
        self.stop();
        self.launch(false);
    }

    /// Every message received so far, probes excluded: tcp's, then udp's, then tls's, each in the order rsyslogd
    /// wrote them (the order sent within one connection; across connections not necessarily).
    pub fn messages(&self) -> Vec<Received> {
        LISTENERS.iter().flat_map(|l| self.read_listener(l)).filter(|m| m.app_name != PROBE_APP_NAME).collect()
    }

    /// Polls `messages()` until `pred` holds or `timeout` has passed; returns the last `messages()`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if pred(&messages) || Instant::now() >= deadline {
                return messages;
            }
            std::thread::sleep(POLL);
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().expect("UTF-8 path").to_string()
    }

    fn config(&self) -> String {
        let ruleset = |name: &str| {
            format!(
                "ruleset(name=\"kw_{name}\") {{\n  action(type=\"omfile\" file=\"{}\" template=\"kw_json\" \
                 flushOnTXEnd=\"on\" asyncWriting=\"off\")\n}}\n",
                self.p(&format!("rsyslog-{name}.jsonl"))
            )
        };
        format!(
            r#"# Test collector for kavwatch's integration tests (tests/common/rsyslog.rs). Loopback only.
global(
  maxMessageSize="64k"
  workDirectory="{work}"
  net.enableDNS="off"
  processInternalMessages="on"
  parser.escapeControlCharactersOnReceive="off"
  parser.escapeControlCharacterTab="off"
)

module(load="imtcp")
module(load="imudp")

template(name="kw_json" type="list" option.jsonf="on") {{
  property(outname="rawmsg" name="rawmsg" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}

{tcp_rules}{udp_rules}{tls_rules}
input(type="imtcp" name="kw_tcp" address="127.0.0.1" port="{tcp}" ruleset="kw_tcp")
input(type="imudp" name="kw_udp" address="127.0.0.1" port="{udp}" ruleset="kw_udp")
input(type="imtcp" name="kw_tls" address="127.0.0.1" port="{tls}" ruleset="kw_tls"
  streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon" gnutlsPriorityString="NORMAL"
  streamDriver.CAFile="{ca}" streamDriver.certFile="{cert}" streamDriver.keyFile="{key}")

# The default ruleset gets only rsyslogd's own messages (no input is bound to it).
*.* action(type="omfile" file="{internal}")
"#,
            work = self.p(WORK),
            tcp_rules = ruleset("tcp"),
            udp_rules = ruleset("udp"),
            tls_rules = ruleset("tls"),
            tcp = self.tcp_port,
            udp = self.udp_port,
            tls = self.tls_port,
            ca = self.p(CA_CERT),
            cert = self.p(SERVER_CERT),
            key = self.p(SERVER_KEY),
            internal = self.p(INTERNAL),
        )
    }

    fn make_certs(&self) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[&["req", "-x509", "-new"][..], &ec, &["-keyout", &self.p(CA_KEY), "-out", &self.p(CA_CERT)]].concat(),
            &[
                "-days",
                "3650",
                "-subj",
                "/CN=kavwatch test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            &[&["req", "-new"][..], &ec, &["-keyout", &self.p(SERVER_KEY), "-out", &self.p(SERVER_CSR)]].concat(),
            &["-subj", "/CN=localhost"],
        );
        fs::write(
            self.path(SERVER_EXT),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .expect("writing server.ext");
        let serial = format!("0x{:x}", nanos() | 1);
        openssl(
            &["x509", "-req", "-in", &self.p(SERVER_CSR), "-CA", &self.p(CA_CERT), "-CAkey", &self.p(CA_KEY)],
            &["-set_serial", &serial, "-days", "3650", "-extfile", &self.p(SERVER_EXT), "-out", &self.p(SERVER_CERT)],
        );
    }

    /// Spawns rsyslogd and waits until each listener has delivered a probe to its file. Should the listeners take
    /// probes but not deliver them (see `await_probes`), or rsyslogd report an epoll error (a dead listener: seen
    /// with the ossl driver) or a taken port, that instance is killed and started again, within the same 20 s; on
    /// a taken port the first start (`may_pick_ports`) moves to new free ports, a restart keeps its ports.
    fn launch(&mut self, may_pick_ports: bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut earlier = String::new();
        loop {
            let log_start = self.spawn();
            let why = match self.await_probes(deadline, log_start) {
                Ok(()) => {
                    if !earlier.is_empty() {
                        eprintln!("rsyslog: started again after a failed start:\n{earlier}");
                    }
                    return;
                }
                Err(Failure::PortBusy(why)) if may_pick_ports && Instant::now() < deadline => {
                    (self.tcp_port, self.udp_port, self.tls_port) = free_ports();
                    fs::write(self.path(CONF), self.config()).expect("writing rsyslog.conf");
                    why
                }
                Err(Failure::Stuck(why) | Failure::PortBusy(why)) if Instant::now() < deadline => why,
                Err(Failure::Exited(why) | Failure::Stuck(why) | Failure::PortBusy(why)) => {
                    self.fail(&why, log_start, &earlier)
                }
            };
            self.kill();
            earlier.push_str(&format!("{why}\n{}", self.log_since(log_start)));
        }
    }

    /// Starts the child; returns where its output starts in rsyslogd.log.
    fn spawn(&mut self) -> u64 {
        let _ = fs::remove_file(self.path(PID)); // stale after a SIGKILL; rsyslogd refuses to start over it
        let log = OpenOptions::new().create(true).append(true).open(self.path(LOG)).expect("opening rsyslogd.log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = super::tool(rsyslogd().to_str().unwrap(), "rsyslog rsyslog-gnutls")
            .args(["-n", "-f", &self.p(CONF), "-i", &self.p(PID)])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", rsyslogd().display()));
        self.child = Some(child);
        log_start
    }

    /// Sends probes until each listener has written its own, in the order rsyslogd opens them: TCP, then TLS
    /// (after GnuTLS has made its DH parameters), then UDP; again while unseen, TCP and TLS every 500 ms on a new
    /// connection, UDP every 20 ms. Stuck: nothing delivered 5 s after the TLS handshake first worked, or 10 s after
    /// TCP first connected.
    fn await_probes(&mut self, deadline: Instant, log_start: u64) -> Result<(), Failure> {
        let nonce = format!("{}-{}-{}", std::process::id(), PROBE_SEQ.fetch_add(1, Ordering::Relaxed), nanos());
        let probe = |listener: &str| format!("<15>1 - - {PROBE_APP_NAME} - - - {listener} {nonce}");
        let mut last: [Option<Instant>; 3] = [None; 3];
        let (mut tcp_up, mut tls_up) = (None::<Instant>, None::<Instant>);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().expect("child").try_wait() {
                return Err(Failure::Exited(format!("rsyslogd exited with {status} while starting")));
            }
            let seen = LISTENERS.map(|l| {
                let want = format!("{l} {nonce}");
                self.read_listener(l).iter().any(|m| m.app_name == PROBE_APP_NAME && m.msg == want)
            });
            if seen == [true; 3] {
                return Ok(());
            }
            let missing: Vec<_> = LISTENERS.iter().zip(seen).filter(|(_, s)| !s).map(|(l, _)| *l).collect();
            let log = self.log_since(log_start);
            if log.contains("Address already in use") {
                return Err(Failure::PortBusy(format!("a port is taken; no probe yet on {missing:?}")));
            }
            if log.contains("epoll_ctl failed") {
                return Err(Failure::Stuck(format!("rsyslogd reported an epoll error; no probe yet on {missing:?}")));
            }
            let stuck = tls_up.is_some_and(|t| t.elapsed() >= STUCK_AFTER)
                || tcp_up.is_some_and(|t| t.elapsed() >= 2 * STUCK_AFTER);
            if stuck {
                return Err(Failure::Stuck(format!("listening, but no probe delivered on {missing:?}")));
            }
            if Instant::now() >= deadline {
                return Err(Failure::Stuck(format!("no probe received on {missing:?} within {START_TIMEOUT:?}")));
            }
            // LISTENERS is tcp, udp, tls; probe tcp, tls, udp in turn.
            for i in [0, 2, 1] {
                let listener = LISTENERS[i];
                let every = Duration::from_millis(if listener == "udp" { 20 } else { 500 });
                let turn = match listener {
                    "tcp" => true,
                    "tls" => tcp_up.is_some(),
                    _ => tls_up.is_some(),
                };
                if seen[i] || !turn || last[i].is_some_and(|t| t.elapsed() < every) {
                    continue;
                }
                let frame = probe(listener);
                let sent = match listener {
                    "tcp" => send_tcp(self.tcp_port, &octet_frame(&frame)),
                    "tls" => send_tls_openssl(self.tls_port, &self.ca_path(), &octet_frame(&frame)),
                    _ => send_udp(self.udp_port, &frame),
                };
                if sent {
                    last[i] = Some(Instant::now());
                    match listener {
                        "tcp" => tcp_up = tcp_up.or(last[i]),
                        "tls" => tls_up = tls_up.or(last[i]),
                        _ => {}
                    }
                }
            }
            std::thread::sleep(POLL);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_since(&self, log_start: u64) -> String {
        let log = fs::read(self.path(LOG)).unwrap_or_default();
        String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default()).into_owned()
    }

    /// Kills rsyslogd and panics with what it said since `log_start` (and in earlier attempts).
    fn fail(&mut self, why: &str, log_start: u64, earlier: &str) -> ! {
        self.kill();
        panic!(
            "rsyslogd ({}) did not come up: {why}\nconfig: {}\n--- earlier attempts ---\n{earlier}\n\
             --- rsyslogd stdout/stderr ---\n{}\n--- {INTERNAL} ---\n{}",
            rsyslogd().display(),
            self.path(CONF).display(),
            self.log_since(log_start),
            self.internal_log()
        );
    }

    /// All complete lines of one listener's file, probes included.
    fn read_listener(&self, listener: &str) -> Vec<Received> {
        let path = self.path(&format!("rsyslog-{listener}.jsonl"));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("reading {}: {e}", path.display()),
        };
        let text = String::from_utf8_lossy(&bytes);
        // A line still being written has no '\n' yet; leave it for the next read.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().filter(|l| !l.trim().is_empty()).map(|line| parse_line(listener, line, &path)).collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Failure {
    /// rsyslogd exited: starting it again would not help.
    Exited(String),
    /// rsyslogd runs but a listener does not deliver.
    Stuck(String),
    /// rsyslogd could not bind a port: `start` picks new ones, `restart` tries again.
    PortBusy(String),
}

/// `msg` framed by octet counting (RFC 6587 3.4.1 / RFC 5425): `"<len> <msg>"`, len in bytes.
pub fn octet_frame(msg: &str) -> String {
    format!("{} {msg}", msg.len())
}

fn parse_line(listener: &str, line: &str, path: &Path) -> Received {
    let bad = |why: &str| -> ! { panic!("{}: {why}: {line}", path.display()) };
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| bad(&e.to_string()));
    let field = |key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => bad(&format!("no string field {key:?}")),
    };
    Received {
        listener: listener.to_string(),
        raw: field("rawmsg"),
        pri: field("pri").parse().unwrap_or_else(|_| bad("pri is not a number")),
        hostname: field("hostname"),
        app_name: field("app_name"),
        procid: field("procid"),
        msgid: field("msgid"),
        structured_data: field("structured_data"),
        msg: field("msg"),
    }
}

/// Three distinct free loopback ports (TCP, UDP, TCP), found by binding port 0 and releasing it.
fn free_ports() -> (u16, u16, u16) {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let tcp = TcpListener::bind(any).expect("binding a TCP port");
    let tls = TcpListener::bind(any).expect("binding a TCP port");
    let udp = UdpSocket::bind(any).expect("binding a UDP port");
    let port = |a: std::io::Result<SocketAddr>| a.expect("local addr").port();
    (port(tcp.local_addr()), port(udp.local_addr()), port(tls.local_addr()))
}

fn send_tcp(port: u16, data: &str) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(mut s) => s.write_all(data.as_bytes()).and_then(|_| s.flush()).is_ok(),
        Err(_) => false,
    }
}

fn send_udp(port: u16, data: &str) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.send_to(data.as_bytes(), (Ipv4Addr::LOCALHOST, port)))
        .is_ok()
}

/// Sends `data` over TLS with `openssl s_client` (verifying the certificate for 127.0.0.1); true if it exited 0.
fn send_tls_openssl(port: u16, ca: &Path, data: &str) -> bool {
    let ca = ca.to_str().expect("UTF-8 path");
    let Ok(mut child) = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile", ca, "-verify_return_error"])
        .args(["-verify_ip", "127.0.0.1", "-quiet", "-no_ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let written = child.stdin.take().is_some_and(|mut stdin| stdin.write_all(data.as_bytes()).is_ok());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return written && status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

fn openssl(args: &[&str], more: &[&str]) {
    let out = super::tool("openssl", "openssl")
        .args(args)
        .args(more)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {} {} failed: {}\n{}",
        args.join(" "),
        more.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rsyslogd() -> PathBuf {
    match std::env::var_os("RSYSLOGD") {
        Some(p) => PathBuf::from(p),
        None if Path::new("/usr/sbin/rsyslogd").exists() => PathBuf::from("/usr/sbin/rsyslogd"),
        None => PathBuf::from("rsyslogd"),
    }
}

fn nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
