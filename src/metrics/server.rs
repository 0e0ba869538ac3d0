//! The metrics HTTP server: HTTP/1.0 and 1.1, one request per connection, `GET /metrics` (or
//! `HEAD`) answered with the latest published text, any other path 404, anything that is not a
//! request head 400. A thread accepts on the bound listener; each connection (at most
//! [`MAX_CONNECTIONS`] at a time) has its own thread and at most [`READ_TIMEOUT`] to send a head of
//! at most [`MAX_HEAD`] bytes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 << 10;
/// Time a client has to send its whole request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at a time; more are closed at once (and counted).
pub const MAX_CONNECTIONS: usize = 4;
/// How long a scrape waits for the sink to publish a fresh rendering before serving the last one.
pub const FRESH_WAIT: Duration = Duration::from_secs(1);

/// The server's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    pub ok: u64,
    pub not_found: u64,
    pub bad_request: u64,
    pub rejected: u64,
}

/// The text the server serves, published by the sink: the sink only swaps a pointer under the
/// lock, and never waits for a scrape.
pub struct Published {
    text: Mutex<(Arc<String>, u64)>,
    fresh: Condvar,
    wanted: AtomicBool,
    ok: AtomicU64,
    not_found: AtomicU64,
    bad_request: AtomicU64,
    rejected: AtomicU64,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            text: Mutex::new((Arc::new(String::new()), 0)),
            fresh: Condvar::new(),
            wanted: AtomicBool::new(false),
            ok: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            bad_request: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

impl Published {
    fn lock(&self) -> MutexGuard<'_, (Arc<String>, u64)> {
        self.text.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A scrape is waiting for a fresh rendering.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// A new rendering: served from now on, and to the scrapes waiting for one.
    pub fn publish(&self, text: String) {
        let text = Arc::new(text);
        {
            let mut g = self.lock();
            g.0 = text;
            g.1 += 1;
        }
        self.wanted.store(false, Ordering::Relaxed);
        self.fresh.notify_all();
    }

    /// The text published after this call, or the last one if none comes within `wait`.
    pub fn fresh(&self, wait: Duration) -> Arc<String> {
        let g = self.lock();
        let seen = g.1;
        self.wanted.store(true, Ordering::Relaxed);
        let (g, _) = self.fresh.wait_timeout_while(g, wait, |t| t.1 == seen).unwrap_or_else(|e| e.into_inner());
        g.0.clone()
    }

    /// The last text published (no wait).
    pub fn last(&self) -> Arc<String> {
        self.lock().0.clone()
    }

    pub fn counters(&self) -> ServerCounters {
        ServerCounters {
            ok: self.ok.load(Ordering::Relaxed),
            not_found: self.not_found.load(Ordering::Relaxed),
            bad_request: self.bad_request.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (`head_only` for `HEAD`).
    Metrics {
        head_only: bool,
    },
    NotFound,
    BadRequest,
}

/// Where the head ends (the index after its blank line, `\r\n\r\n` or `\n\n`), if it does.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Routes a whole request head (request line, headers, blank line, nothing after it).
pub fn route(head: &[u8]) -> Route {
    if head_end(head) != Some(head.len()) {
        return Route::BadRequest;
    }
    let lines = head.strip_suffix(b"\n\r\n").or_else(|| head.strip_suffix(b"\n\n")).unwrap_or(head);
    let mut lines = lines.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else { return Route::BadRequest };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !is_token(method)
        || !matches!(version, b"HTTP/1.0" | b"HTTP/1.1")
        || target.is_empty()
        || !target.iter().all(|b| b.is_ascii_graphic())
    {
        return Route::BadRequest;
    }
    // Header lines: NAME ":" VALUE, no control characters but tab.
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return Route::BadRequest };
        if !is_token(&line[..colon]) || line[colon + 1..].iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            return Route::BadRequest;
        }
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => Route::Metrics { head_only: false },
        (b"HEAD", b"/metrics") => Route::Metrics { head_only: true },
        _ => Route::NotFound,
    }
}

/// Reads a request head: `Some(head)` once its blank line came, `None` when it is longer than
/// [`MAX_HEAD`], the client closed first, or (a stream with timeouts) the time ran out.
/// `before_read` is told the time left before each read (a socket sets its read timeout).
pub fn read_head<R: Read>(
    r: &mut R,
    deadline: Instant,
    mut before_read: impl FnMut(&mut R, Duration) -> io::Result<()>,
) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || before_read(r, left).is_err() {
            return None;
        }
        let want = chunk.len().min(MAX_HEAD + 1 - buf.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => return None,
            Ok(n) => {
                // Only the new bytes (and the 3 before them) can complete the blank line.
                let from = buf.len().saturating_sub(3);
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = head_end(&buf[from..]) {
                    buf.truncate(from + end);
                    return (buf.len() <= MAX_HEAD).then_some(buf);
                }
                if buf.len() > MAX_HEAD {
                    return None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The whole response to a route (the body only for `GET /metrics`).
pub fn response(route: Route, body: &str) -> Vec<u8> {
    let (status, ctype, body, head_only) = match route {
        Route::Metrics { head_only } => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body, head_only),
        Route::NotFound => {
            ("404 Not Found", "text/plain; charset=utf-8", "not found: the metrics are at /metrics\n", false)
        }
        Route::BadRequest => ("400 Bad Request", "text/plain; charset=utf-8", "bad request\n", false),
    };
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// Serves one connection: reads its head, answers, closes.
fn handle(mut s: TcpStream, published: &Published) {
    let _ = s.set_write_timeout(Some(READ_TIMEOUT));
    let deadline = Instant::now() + READ_TIMEOUT;
    let route = match read_head(&mut s, deadline, |s, left| s.set_read_timeout(Some(left))) {
        Some(head) => self::route(&head),
        None => Route::BadRequest,
    };
    let counter = match route {
        Route::Metrics { .. } => &published.ok,
        Route::NotFound => &published.not_found,
        Route::BadRequest => &published.bad_request,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let body = match route {
        Route::Metrics { .. } => published.fresh(FRESH_WAIT),
        _ => Arc::new(String::new()),
    };
    let _ = s.write_all(&response(route, &body));
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Read what the client still sends (briefly), so that closing does not reset the connection
    // before it has read the answer.
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 512];
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end && matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

/// Frees a connection slot when its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds `addr` and serves `published` from a thread; returns the address bound (port 0 gets
/// one). A bind error is returned before anything runs.
pub fn serve(addr: SocketAddr, published: Arc<Published>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("kavwatch-metrics".into()).spawn(move || {
        loop {
            let s = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    // Out of file descriptors and the like: try again shortly.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                published.rejected.fetch_add(1, Ordering::Relaxed);
                drop(s);
                continue;
            }
            let slot = Slot(active.clone());
            let published = published.clone();
            let spawned = std::thread::Builder::new().name("kavwatch-metrics-conn".into()).spawn(move || {
                let _slot = slot;
                handle(s, &published);
            });
            if spawned.is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { head_only: false });
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\n\n"), Route::Metrics { head_only: false });
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { head_only: true });
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics HTTP/2.0\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n"), Route::BadRequest);
        assert_eq!(route(b"\x00\x01"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\nX: y\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\n\n"), Route::BadRequest);
    }

    #[test]
    fn heads_end_at_the_blank_line_and_are_bounded() {
        let mut r: &[u8] = b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\nbody";
        let h = read_head(&mut r, Instant::now() + READ_TIMEOUT, |_, _| Ok(())).unwrap();
        assert_eq!(h, b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\n");
        let big = [b'a'; MAX_HEAD + 10];
        assert!(read_head(&mut &big[..], Instant::now() + READ_TIMEOUT, |_, _| Ok(())).is_none());
        assert!(read_head(&mut &b"GET / HTTP/1.1\r\n"[..], Instant::now() + READ_TIMEOUT, |_, _| Ok(())).is_none());
    }

    #[test]
    fn a_scrape_gets_a_fresh_rendering_or_the_last() {
        let p = Arc::new(Published::default());
        p.publish("old".into());
        let q = p.clone();
        let t = std::thread::spawn(move || q.fresh(Duration::from_secs(5)));
        while !p.wanted() {
            std::thread::sleep(Duration::from_millis(1));
        }
        p.publish("new".into());
        assert_eq!(*t.join().unwrap(), "new");
        assert!(!p.wanted());
        let t0 = Instant::now();
        assert_eq!(*p.fresh(Duration::from_millis(50)), "new");
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }
}
