//! A real `rsyslogd` as a syslog collector for integration tests.
//!
//! [`Rsyslog::start`] runs `rsyslogd -n` as a child process with a config of its own, listening on 127.0.0.1 only:
//! plain TCP (imtcp: RFC 6587 octet counting and LF-terminated framing, detected per frame), UDP (imudp) and
//! TLS (imtcp, RFC 5425, TLS required; TLS 1.2 and 1.3). Each listener has its own ruleset writing one JSON object
//! per received message to its own file, which [`Rsyslog::messages`] reads back.
//!
//! Needs `rsyslogd` with the OpenSSL driver (Debian: `rsyslog`, `rsyslog-openssl`) and the `openssl` CLI, which
//! makes a throw-away CA and a server certificate for `127.0.0.1` / `localhost` on every start. (The GnuTLS driver
//! is not used: in 8.2302 it makes DH parameters at every start, 0.1-1.1 s, and offers only TLS 1.2 by default.)
//! Linux only: the SIGTERM of [`Rsyslog::stop`] is sent with `kill(1)`. Set `RSYSLOGD` to use another binary.
//!
//! What rsyslog does to messages (rsyslogd 8.2302): `raw` is the message as sent, without the octet-count prefix
//! or the LF of LF framing; control characters are kept as they are (escaping on receive is off); one trailing LF
//! inside a frame or datagram is dropped (`parser.dropTrailingLFOnReception`, default on); messages longer than
//! 64 KiB are truncated. Fields that are NILVALUE (`-`) in an RFC 5424 message read back as `"-"`, except
//! `msg`, which is then `""`.
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
        rsyslog.launch();
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
        self.launch();
    }

    /// Every message received so far, probes excluded: tcp's in arrival order, then udp's, then tls's.
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
  streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon"
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

    /// Spawns rsyslogd and waits until each listener has delivered a probe to its file.
    fn launch(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let _ = fs::remove_file(self.path(PID)); // stale after a SIGKILL; rsyslogd refuses to start over it
        let log = OpenOptions::new().create(true).append(true).open(self.path(LOG)).expect("opening rsyslogd.log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(rsyslogd())
            .args(["-n", "-f", &self.p(CONF), "-i", &self.p(PID)])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", rsyslogd().display()));
        self.child = Some(child);

        let nonce = format!("{}-{}-{}", std::process::id(), PROBE_SEQ.fetch_add(1, Ordering::Relaxed), nanos());
        let probe = |listener: &str| format!("<15>1 - - {PROBE_APP_NAME} - - - {listener} {nonce}");
        let (mut tcp_sent, mut tls_sent, mut udp_last) = (false, false, None::<Instant>);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().expect("child").try_wait() {
                self.fail(&format!("rsyslogd exited with {status} while starting"), log_start);
            }
            let seen = LISTENERS.map(|l| {
                let want = format!("{l} {nonce}");
                self.read_listener(l).iter().any(|m| m.app_name == PROBE_APP_NAME && m.msg == want)
            });
            if seen == [true; 3] {
                return;
            }
            if Instant::now() >= deadline {
                let missing: Vec<_> = LISTENERS.iter().zip(seen).filter(|(_, s)| !s).map(|(l, _)| *l).collect();
                self.fail(&format!("no probe received on {missing:?} within {START_TIMEOUT:?}"), log_start);
            }
            if !tcp_sent {
                tcp_sent = send_tcp(self.tcp_port, &octet_frame(&probe("tcp")));
            }
            if !tls_sent {
                tls_sent = send_tls_openssl(self.tls_port, &self.ca_path(), &octet_frame(&probe("tls")));
            }
            if !seen[1] && udp_last.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
                udp_last = Some(Instant::now());
                send_udp(self.udp_port, &probe("udp"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills rsyslogd and panics with what it said since `log_start`.
    fn fail(&mut self, why: &str, log_start: u64) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = fs::read(self.path(LOG)).unwrap_or_default();
        let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
        panic!(
            "rsyslogd ({}) did not come up: {why}\nconfig: {}\n--- rsyslogd stdout/stderr ---\n{log}\n\
             --- {INTERNAL} ---\n{}",
            rsyslogd().display(),
            self.path(CONF).display(),
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

fn send_udp(port: u16, data: &str) {
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
        let _ = s.send_to(data.as_bytes(), (Ipv4Addr::LOCALHOST, port));
    }
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
    let out = Command::new("openssl")
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
