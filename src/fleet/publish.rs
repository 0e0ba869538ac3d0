//! A sensor's publisher: one thread that owns the NATS client (on its own one-thread runtime)
//! and the on-disk spool, fed by a bounded channel, so capture never waits on the network.
//! Each message is published with its stable `Nats-Msg-Id` and counts as delivered only when
//! JetStream acknowledges it; up to [`WINDOW`] are in flight at once. What is not acknowledged
//! (servers down, a timeout, a refused subject) goes to the spool, in order, and is sent again
//! from the first unacknowledged message: JetStream drops the copies it already stored by their
//! id. New messages queue behind the spool, so the stream receives them in order.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use serde::{Deserialize, Serialize};

use super::FleetError;
use super::message::{Record, SensorStatus, observation_body};
use super::nats::{ConnState, NatsConfig, connect, runtime};
use crate::alert::spool::Spool;

/// Messages awaiting their acknowledgement at once.
pub const WINDOW: usize = 256;
/// Messages queued in memory before the publisher's thread takes them (past this, while the
/// thread waits on acknowledgements, new ones are dropped and counted: capture never waits).
const QUEUE: usize = 65_536;
/// How long a new publisher waits for its first connection before spooling.
const FIRST_CONNECT: Duration = Duration::from_secs(3);
/// How long an acknowledgement may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(4);
/// After a failed publish, the wait before the spool is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// The publisher's counters (the stats line, the report's `stats.publish`, the metrics).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishStats {
    pub servers: String,
    /// Messages handed to a server (a message sent again counts again).
    pub published: u64,
    /// Acknowledged by JetStream: stored.
    pub acked: u64,
    /// Of those, acknowledgements saying JetStream already had the message (a retry).
    pub duplicates: u64,
    /// Messages put in the spool because no server acknowledged them in time.
    pub spooled: u64,
    /// Lost: spool full (oldest dropped), or the in-memory queue stuck.
    pub dropped: u64,
    /// Connections to a server after the first.
    pub reconnects: u64,
    /// Failed publishes (no acknowledgement, refused).
    pub errors: u64,
    /// In the spool now (sent when a server answers, or by the next run).
    pub waiting: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub nats: NatsConfig,
    pub sensor: String,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// At the end of a run, how long to keep trying before leaving the rest in the spool.
    pub drain_timeout: Duration,
}

pub struct Publisher {
    tx: Option<Sender<Record>>,
    stats: Arc<Mutex<PublishStats>>,
    handle: Option<JoinHandle<()>>,
    sensor: String,
    /// Makes the ids of this run unique: start time and process id.
    run_id: String,
    seq: AtomicU64,
}

fn lock(s: &Mutex<PublishStats>) -> std::sync::MutexGuard<'_, PublishStats> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Publisher {
    /// Opens the spool and starts the thread; servers need not be up.
    pub fn start(cfg: PublishConfig) -> Result<Publisher, FleetError> {
        let dir = cfg.spool_dir.join("nats");
        let spool = Spool::open(&dir, cfg.spool_max_bytes).map_err(|err| FleetError::File {
            what: "publish spool",
            path: dir.display().to_string(),
            err,
        })?;
        let rt = runtime()?;
        let stats = Arc::new(Mutex::new(PublishStats {
            servers: cfg.nats.servers.join(","),
            waiting: spool.len(),
            ..PublishStats::default()
        }));
        let (tx, rx) = bounded::<Record>(QUEUE);
        let st = stats.clone();
        let c = cfg.clone();
        let handle = std::thread::Builder::new()
            .name("kavwatch-publish".into())
            .spawn(move || PublishThread::new(rt, c, spool, st).run(rx))
            .map_err(|e| FleetError::Setup(format!("publisher thread: {e}")))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(Publisher {
            tx: Some(tx),
            stats,
            handle: Some(handle),
            sensor: cfg.sensor.clone(),
            run_id: format!("{:x}{:x}", now.as_micros(), std::process::id()),
            seq: AtomicU64::new(0),
        })
    }

    fn next_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{}-{n}", super::subject_token(&self.sensor), self.run_id)
    }

    fn queue(&self, r: Record) {
        let Some(tx) = &self.tx else { return };
        if r.body.len() + r.subject.len() + r.id.len() > super::stream::MAX_MESSAGE as usize - 1024 {
            // The stream would refuse it for ever, and it would hold up every message behind it.
            let mut s = lock(&self.stats);
            s.dropped += 1;
            s.last_error = Some(format!("a message of {} bytes is larger than the stream takes", r.body.len()));
            return;
        }
        if tx.try_send(r).is_err() {
            let mut s = lock(&self.stats);
            s.dropped += 1;
            s.last_error = Some("publish queue full: the servers acknowledge too slowly".into());
        }
    }

    /// Publishes an observation as its event line (`output::events::write_event`, the
    /// `--events` contract); DHCP observations make none.
    pub fn observation(
        &self,
        o: &crate::observation::Observation,
        rules: &crate::rules::matcher::Rules,
        inputs: crate::output::events::Inputs<'_>,
        cutoff_override: Option<i64>,
    ) {
        let mut line = Vec::with_capacity(1024);
        if crate::output::events::write_event(&mut line, o, rules, inputs, cutoff_override).is_err() {
            return;
        }
        // serde_json writes UTF-8.
        if let Some(body) = std::str::from_utf8(&line).ok().and_then(|l| observation_body(&self.sensor, l)) {
            self.queue(Record { id: self.next_id(), subject: super::obs_subject(&self.sensor), body });
        }
    }

    pub fn status(&self, s: &SensorStatus) {
        if let Ok(body) = serde_json::to_string(s) {
            self.queue(Record { id: self.next_id(), subject: super::status_subject(&self.sensor), body });
        }
    }

    pub fn stats(&self) -> PublishStats {
        lock(&self.stats).clone()
    }

    /// Closes the queue and waits until everything is acknowledged or spooled (at most the
    /// drain timeout, plus one acknowledgement timeout).
    pub fn finish(mut self) -> PublishStats {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.stats()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The publisher's thread.
struct PublishThread {
    rt: tokio::runtime::Runtime,
    cfg: PublishConfig,
    spool: Spool,
    stats: Arc<Mutex<PublishStats>>,
    state: Arc<ConnState>,
    js: Option<jetstream::Context>,
    /// New messages not yet sent or spooled, oldest first.
    pending: VecDeque<Record>,
    next_try: Instant,
}

/// What one batch came to.
struct Sent {
    /// Acknowledged, from the first message on (the rest are sent again).
    acked: usize,
    duplicates: u64,
    published: u64,
    error: Option<String>,
}

impl PublishThread {
    fn new(rt: tokio::runtime::Runtime, cfg: PublishConfig, spool: Spool, stats: Arc<Mutex<PublishStats>>) -> Self {
        PublishThread {
            rt,
            cfg,
            spool,
            stats,
            state: Arc::new(ConnState::default()),
            js: None,
            pending: VecDeque::new(),
            next_try: Instant::now(),
        }
    }

    fn run(mut self, rx: Receiver<Record>) {
        let state = self.state.clone();
        match self.rt.block_on(connect(&self.cfg.nats, state, false)) {
            Ok(client) => {
                // The context starts a task of its own: inside the runtime.
                let _rt = self.rt.enter();
                self.js = Some(jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).build(client));
            }
            Err(e) => lock(&self.stats).last_error = Some(e.to_string()),
        }
        // Servers that answer at once take the first messages straight, not through the spool.
        let t = Instant::now();
        while self.js.is_some() && !self.state.is_connected() && t.elapsed() < FIRST_CONNECT {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut closing: Option<Instant> = None;
        loop {
            let wait = if closing.is_some() { Duration::from_millis(20) } else { Duration::from_millis(100) };
            match rx.recv_timeout(wait) {
                Ok(r) => {
                    self.pending.push_back(r);
                    while self.pending.len() < QUEUE
                        && let Ok(r) = rx.try_recv()
                    {
                        self.pending.push_back(r);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closing.get_or_insert_with(|| Instant::now() + self.cfg.drain_timeout);
                }
            }
            self.step();
            self.update_stats();
            if let Some(deadline) = closing {
                if self.pending.is_empty() && self.spool.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    self.spool_pending();
                    break;
                }
            }
        }
        let _ = self.spool.sync();
        self.update_stats();
        if let Some(js) = self.js.take() {
            let client = js.client();
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), client.drain()).await });
        }
    }

    fn ready(&self) -> bool {
        self.js.is_some() && self.state.is_connected() && Instant::now() >= self.next_try
    }

    /// Sends what the spool holds, then what is new; spools what cannot go.
    fn step(&mut self) {
        if !self.ready() {
            self.spool_pending();
            return;
        }
        while !self.spool.is_empty() && self.ready() {
            let batch = match self.spool.peek(WINDOW) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    lock(&self.stats).last_error = Some(format!("spool: {e}"));
                    break;
                }
            };
            // Lines that are not records (a damaged segment) are passed over and counted.
            let (at, recs): (Vec<usize>, Vec<Record>) =
                batch.iter().enumerate().filter_map(|(i, l)| Some((i, Record::from_line(l)?))).unzip();
            let sent = self.send(&recs);
            // Consumed: everything before the first record not acknowledged.
            let done = at.get(sent.acked).copied().unwrap_or(batch.len());
            // Of those, the acknowledged records are `sent.acked`; the rest were damaged lines.
            lock(&self.stats).dropped += (done - sent.acked) as u64;
            if let Err(e) = self.spool.consume(done as u64) {
                lock(&self.stats).last_error = Some(format!("spool: {e}"));
                break;
            }
            if sent.error.is_some() {
                break;
            }
        }
        if !self.spool.is_empty() || !self.ready() {
            self.spool_pending();
            return;
        }
        while !self.pending.is_empty() {
            let n = self.pending.len().min(WINDOW);
            let recs: Vec<Record> = self.pending.drain(..n).collect();
            let sent = self.send(&recs);
            if sent.error.is_some() {
                for r in recs.into_iter().skip(sent.acked).rev() {
                    self.pending.push_front(r);
                }
                self.spool_pending();
                return;
            }
        }
    }

    /// Publishes `recs` (up to [`WINDOW`] in flight) and waits for their acknowledgements.
    fn send(&mut self, recs: &[Record]) -> Sent {
        let Some(js) = self.js.clone() else {
            return Sent { acked: 0, duplicates: 0, published: 0, error: Some("not connected".into()) };
        };
        let sent = self.rt.block_on(async move {
            let mut s = Sent { acked: 0, duplicates: 0, published: 0, error: None };
            let mut acks = Vec::with_capacity(recs.len());
            for r in recs {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", r.id.as_str());
                match js.publish_with_headers(r.subject.clone(), h, r.body.clone().into()).await {
                    Ok(f) => acks.push(f),
                    Err(e) => {
                        s.error = Some(e.to_string());
                        break;
                    }
                }
                s.published += 1;
            }
            for f in acks {
                match f.await {
                    Ok(a) => {
                        s.acked += 1;
                        s.duplicates += a.duplicate as u64;
                    }
                    Err(e) => {
                        s.error = Some(e.to_string());
                        break;
                    }
                }
            }
            s
        });
        let mut st = lock(&self.stats);
        st.published += sent.published;
        st.acked += sent.acked as u64;
        st.duplicates += sent.duplicates;
        if let Some(e) = &sent.error {
            st.errors += 1;
            st.last_error = Some(e.clone());
            self.next_try = Instant::now() + RETRY;
        }
        sent
    }

    fn spool_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut dropped = 0;
        let mut spooled = 0;
        let mut err = None;
        for r in self.pending.drain(..) {
            match self.spool.push(&r.to_line()) {
                Ok(d) => {
                    dropped += d;
                    spooled += 1;
                }
                Err(e) => {
                    dropped += 1;
                    err = Some(format!("spool: {e}"));
                }
            }
        }
        let _ = self.spool.sync();
        let mut st = lock(&self.stats);
        st.spooled += spooled;
        st.dropped += dropped;
        if err.is_some() {
            st.last_error = err;
        }
    }

    fn update_stats(&mut self) {
        let mut st = lock(&self.stats);
        st.waiting = self.spool.len();
        st.reconnects = self.state.reconnects.load(Ordering::Relaxed);
        if st.last_error.is_none() {
            st.last_error = self.state.last_error();
        }
    }
}

/// `publish nats://h:4222 published 10, acked 10, spooled 0, dropped 0, reconnects 0, waiting 0`
pub fn summary_line(s: &PublishStats) -> String {
    format!(
        "publish {} published {}, acked {}, spooled {}, dropped {}, reconnects {}, waiting {}{}",
        s.servers,
        s.published,
        s.acked,
        s.spooled,
        s.dropped,
        s.reconnects,
        s.waiting,
        s.last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default()
    )
}
