//! `fleet collect`: reads the `KAVWATCH` stream in order with an ordered consumer of its own
//! (two collectors never share one, so both see everything), folds each message into the
//! [`FleetTable`], raises the fleet's alerts (one per host and category, as `live` does), and
//! every report interval rewrites the reports and checkpoints the table, the alert windows and
//! the last stream sequence applied (`STATE_DIR/fleet.checkpoint`, atomically). A restart
//! resumes after that sequence: a message is applied once, whatever the server redelivers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::message::SensorStatus;
use super::nats::{ConnState, NatsConfig, connect, runtime};
use super::table::{EventIn, FleetTable};
use super::{FleetError, STREAM};
use crate::alert::deliver::Delivery;
use crate::alert::engine::{AlertEngine, EngineStats, WindowState};
use crate::decode::VlanTags;
use crate::decode::intern::TunnelId;
use crate::observation::{
    Attribution, Detail, DnsDetail, HttpDetail, KscContact, KscDetail, Observation, Position, TlsDetail,
};
use crate::output::report::{Report, SensorRow, rfc3339_s};
use crate::output::rfc3339;
use crate::rules::matcher::Rules;

pub const CHECKPOINT: &str = "fleet.checkpoint";
const MAGIC: &str = "kavwatch-fleet-checkpoint 1";
/// Largest checkpoint read back (a table of a million hosts with their evidence fits).
const MAX_CHECKPOINT: u64 = 4 << 30;
/// `Nats-Msg-Id`s remembered (and checkpointed): a copy of a message JetStream stored twice
/// (seen with nats-server 2.9 when a stream leader dies between storing a message and
/// acknowledging it) comes within the few hundred messages a sensor had in flight.
pub const RECENT_IDS: usize = 65_536;

pub struct CollectConfig {
    pub nats: NatsConfig,
    /// The collector's name: alert ids and syslog HOSTNAME.
    pub name: String,
    pub state_dir: PathBuf,
    pub fresh: bool,
    pub report_interval: Duration,
    pub max_hosts: usize,
    pub rules: Arc<Rules>,
    pub cutoff_ns: i64,
    pub cutoff_override: Option<i64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Writes the reports (the caller picks formats and writes atomically).
pub type ReportWriter<'a> = &'a dyn Fn(&Report) -> Result<(), String>;

/// What a checkpoint holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    last_seq: u64,
    table: FleetTable,
    windows: Vec<WindowState>,
    #[serde(default)]
    alerts_raised: u64,
    #[serde(default)]
    recent_ids: Vec<String>,
}

/// The collector's own counters (the report's `stats.collector` with the table's).
#[derive(Debug, Default, Clone, Serialize)]
pub struct CollectStats {
    pub last_sequence: u64,
    /// Messages at or below the checkpoint's sequence the server delivered again: not applied.
    pub redelivered_skipped: u64,
    pub checkpoints: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_ms: u64,
    /// Sequence the run resumed after (0: from the start of the stream).
    pub resumed_after: u64,
    pub resume_ms: u64,
    pub consumer_restarts: u64,
    /// Messages whose `Nats-Msg-Id` was applied already (a second copy in the stream): not applied.
    pub duplicates_skipped: u64,
}

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT)
}

fn encode(s: &Saved) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(s).map_err(|e| e.to_string())?;
    let hash: String = Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("{MAGIC}\n{hash}\n").into_bytes();
    out.extend_from_slice(&json);
    Ok(out)
}

/// Reads a checkpoint's bytes (the fuzz target `fleet_message` calls this too).
pub fn decode_checkpoint(bytes: &[u8]) -> Result<(), String> {
    decode(bytes).map(|_| ())
}

fn decode(bytes: &[u8]) -> Result<Saved, String> {
    let mut parts = bytes.splitn(3, |b| *b == b'\n');
    let (magic, hash, json) = (parts.next(), parts.next(), parts.next());
    if magic != Some(MAGIC.as_bytes()) {
        return Err("not a fleet checkpoint of this version".into());
    }
    let json = json.ok_or("truncated")?;
    let want: String = Sha256::digest(json).iter().map(|b| format!("{b:02x}")).collect();
    if hash != Some(want.as_bytes()) {
        return Err("checksum mismatch (damaged or cut short)".into());
    }
    serde_json::from_slice(json).map_err(|e| format!("unreadable: {e}"))
}

/// Reads the checkpoint; a damaged one is set aside (`.damaged-<secs>`) with one warning.
fn load(dir: &Path, fresh: bool) -> Result<Option<Saved>, FleetError> {
    let path = checkpoint_path(dir);
    let file = |err| FleetError::File { what: "checkpoint", path: path.display().to_string(), err };
    if fresh {
        if path.exists() {
            std::fs::rename(&path, path.with_extension("checkpoint.old")).map_err(file)?;
        }
        return Ok(None);
    }
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file(e)),
    };
    let result = if meta.len() > MAX_CHECKPOINT {
        Err("larger than any checkpoint".into())
    } else {
        std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| decode(&b))
    };
    match result {
        Ok(s) => Ok(Some(s)),
        Err(why) => {
            let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let aside = PathBuf::from(format!("{}.damaged-{secs}", path.display()));
            std::fs::rename(&path, &aside).map_err(file)?;
            eprintln!(
                "kavwatch: fleet checkpoint {}: {why}; set aside as {}, starting from the start of the stream",
                path.display(),
                aside.display()
            );
            Ok(None)
        }
    }
}

/// The observation an event stands for, for the alert engine (rules matched by id).
fn observation(e: &EventIn, rule: u32) -> Observation {
    let mut vlan = VlanTags::default();
    for v in e.vlan.iter().flatten() {
        vlan.push(*v);
    }
    vlan.set_overlay(e.overlay);
    let detail = match e.event_type.as_str() {
        "dns" => Detail::Dns(DnsDetail { id: 0, qtype: 0, rcode: None, answers: Vec::new(), response_only: false }),
        "tls" | "quic" => Detail::Tls(TlsDetail {
            versions: Vec::new(),
            alpn: Vec::new(),
            ech: false,
            ja4: e.tls.as_ref().map(|t| t.ja4.clone()).unwrap_or_default(),
            ja3: String::new(),
            ja3_full: String::new(),
            records: 0,
            quic_version: (e.event_type == "quic").then_some(1),
            unfingerprinted: None,
        }),
        "http" => Detail::Http(HttpDetail {
            method: String::new(),
            path: e.http.as_ref().map(|h| h.path.clone()).unwrap_or_default(),
            version: String::new(),
            user_agent: None,
        }),
        _ => Detail::Ksc(KscDetail {
            contact: KscContact::Tcp,
            server: e.ksc.as_ref().map_or(e.dest_ip, |k| k.server),
            agent: e.host,
            port: e.dest_port,
        }),
    };
    Observation {
        ts_ns: e.ts_ns,
        pos: Position::default(),
        vlan,
        tunnel: TunnelId::NONE,
        src: e.src_ip,
        sport: e.src_port,
        dst: e.dest_ip,
        dport: e.dest_port,
        proto: if e.proto == "TCP" { crate::decode::IPPROTO_TCP } else { crate::decode::IPPROTO_UDP },
        host: e.host,
        host_mac: None,
        domain: e.domain.clone(),
        rule,
        detail,
        attribution: Attribution::Name,
        wire_name: None,
        relayed: e.relayed,
        fallback_rule: None,
        hostname: e.hostname.clone(),
        lease_mac: None,
    }
}

/// The collector's state between messages.
pub struct Collector {
    cfg: CollectConfig,
    pub table: FleetTable,
    pub last_seq: u64,
    pub stats: CollectStats,
    alerts: Option<(AlertEngine, Delivery)>,
    rule_ids: HashMap<String, u32>,
    recent_ids: std::collections::HashSet<String>,
    recent_order: std::collections::VecDeque<String>,
    /// Observations whose rule id the collector's rules do not have (no alert for them).
    pub unknown_rules: u64,
    latest_ns: i64,
}

impl Collector {
    pub fn new(cfg: CollectConfig, alerts: Option<(AlertEngine, Delivery)>) -> Result<Collector, FleetError> {
        crate::state::ensure_dir(&cfg.state_dir).map_err(|e| FleetError::Setup(e.to_string()))?;
        let started = Instant::now();
        let saved = load(&cfg.state_dir, cfg.fresh)?;
        let rule_ids = cfg.rules.set.rules.iter().enumerate().map(|(i, r)| (r.id.clone(), i as u32)).collect();
        let mut c = Collector {
            table: FleetTable::new(cfg.max_hosts),
            last_seq: 0,
            stats: CollectStats::default(),
            alerts,
            rule_ids,
            recent_ids: Default::default(),
            recent_order: Default::default(),
            unknown_rules: 0,
            latest_ns: 0,
            cfg,
        };
        if let Some(s) = saved {
            c.table = s.table;
            c.table.max_hosts = c.cfg.max_hosts.max(1);
            c.table.reindex();
            c.last_seq = s.last_seq;
            for id in s.recent_ids.into_iter().take(RECENT_IDS) {
                c.remember(id);
            }
            if let Some((engine, _)) = c.alerts.as_mut() {
                let n = c.cfg.rules.set.rules.len() as u32;
                engine.restore_windows(
                    s.windows.into_iter().filter(|w| w.last.as_ref().is_none_or(|o| o.rule < n)).collect(),
                );
                engine.stats.raised = s.alerts_raised;
            }
        }
        c.stats.resumed_after = c.last_seq;
        c.stats.last_sequence = c.last_seq;
        c.stats.resume_ms = started.elapsed().as_millis() as u64;
        Ok(c)
    }

    /// Remembers an id; false when it was known.
    fn remember(&mut self, id: String) -> bool {
        if self.recent_ids.contains(&id) {
            return false;
        }
        if self.recent_order.len() >= RECENT_IDS
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent_ids.remove(&old);
        }
        self.recent_ids.insert(id.clone());
        self.recent_order.push_back(id);
        true
    }

    /// Applies the message stored at `seq` with its `Nats-Msg-Id`; one already applied (a
    /// sequence at or below the last, or an id seen lately) is skipped.
    pub fn apply(&mut self, seq: u64, msg_id: Option<&str>, subject: &str, body: &[u8], stored_ns: i64) {
        if seq <= self.last_seq {
            self.stats.redelivered_skipped += 1;
            return;
        }
        self.last_seq = seq;
        self.stats.last_sequence = seq;
        if let Some(id) = msg_id.filter(|id| !id.is_empty() && id.len() <= 256)
            && !self.remember(id.to_string())
        {
            self.stats.duplicates_skipped += 1;
            return;
        }
        if body.len() > super::stream::MAX_MESSAGE as usize {
            self.table.counts.malformed += 1;
        } else if subject.starts_with("kavwatch.obs.") {
            match EventIn::parse(body) {
                Ok(e) => {
                    self.table.observe(&e, stored_ns);
                    self.latest_ns = self.latest_ns.max(e.ts_ns);
                    self.alert(&e);
                }
                Err(_) => self.table.counts.malformed += 1,
            }
        } else if subject.starts_with("kavwatch.status.") {
            match serde_json::from_slice::<SensorStatus>(body) {
                Ok(s) if s.sensor.len() <= 256 => self.table.status(s, stored_ns),
                _ => self.table.counts.malformed += 1,
            }
        } else {
            self.table.counts.malformed += 1;
        }
    }

    fn alert(&mut self, e: &EventIn) {
        let Some((engine, delivery)) = self.alerts.as_mut() else { return };
        let Some(&rule) = self.rule_ids.get(&e.rule_id) else {
            self.unknown_rules += 1;
            return;
        };
        if let Some(mut a) = engine.observe(&observation(e, rule), &self.cfg.rules) {
            a.evidence.input = Some(e.sensor.clone());
            delivery.send(&a);
        }
    }

    /// Alerts whose interval has passed, by the latest observation's time.
    pub fn tick(&mut self) {
        if let Some((engine, delivery)) = self.alerts.as_mut() {
            for a in engine.tick(self.latest_ns) {
                delivery.send(&a);
            }
        }
    }

    /// The fleet's report now (`now_ns`: the collector's clock, for stale sensors).
    pub fn report(&self, now_ns: i64) -> Report {
        let cutoff = rfc3339_s(self.cfg.cutoff_ns);
        let mut base = Report::empty(&cutoff);
        base.sensors = Vec::new();
        let mut r = self.table.report(&cutoff, base);
        r.fleet_sensors = self.sensor_rows(now_ns);
        // Every sensor heard from, with a status or not yet.
        r.sensors = self.table.sensors.keys().cloned().collect();
        if let Some(o) = r.stats.as_object_mut() {
            if let Some(c) = o.get_mut("collector").and_then(|c| c.as_object_mut()) {
                if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&self.stats) {
                    c.extend(m);
                }
                c.insert("unknown_rules".into(), self.unknown_rules.into());
            }
            if let Some((engine, delivery)) = &self.alerts {
                let a = crate::alert::AlertStats {
                    engine: engine.stats.clone(),
                    destinations: delivery.stats().into_iter().map(|d| (d.destination.clone(), d)).collect(),
                };
                o.insert("fleet_alerts".into(), serde_json::to_value(a).unwrap_or_default());
            }
        }
        r
    }

    fn sensor_rows(&self, now_ns: i64) -> Vec<SensorRow> {
        self.table
            .sensors
            .values()
            .map(|s| {
                let st = s.status.as_ref();
                let interval_ns = st.map_or(0, |x| x.interval_s as i64 * 1_000_000_000);
                let silent = now_ns.saturating_sub(s.last_heard_ns);
                let state = match st {
                    None => "no-status",
                    Some(x) if x.mode == "analyze" && x.last => "finished",
                    Some(x) if x.interval_s > 0 && silent > 3 * interval_ns => "stale",
                    Some(_) => "reporting",
                };
                SensorRow {
                    sensor: s.name.clone(),
                    mode: st.map(|x| x.mode.clone()).unwrap_or_default(),
                    state: state.into(),
                    last_heard: rfc3339(s.last_heard_ns),
                    last_status: st.map(|x| x.time.clone()),
                    interval_s: st.map_or(0, |x| x.interval_s),
                    version: st.map(|x| x.version.clone()).unwrap_or_default(),
                    inputs: st.map(|x| x.inputs.clone()).unwrap_or_default(),
                    packets: st.map_or(0, |x| x.packets),
                    kernel_drops: st.map_or(0, |x| x.kernel_drops),
                    undecoded_share: st.map_or(0.0, |x| x.undecoded_share),
                    hosts: st.map_or(0, |x| x.hosts),
                    observations: s.observations,
                    alerts_raised: st.map_or(0, |x| x.alerts_raised),
                    published_acked: st.map_or(0, |x| x.publish.acked),
                    publish_spooled: st.map_or(0, |x| x.publish.spooled),
                    publish_dropped: st.map_or(0, |x| x.publish.dropped),
                    publish_waiting: st.map_or(0, |x| x.publish.waiting),
                }
            })
            .collect()
    }

    /// Writes the checkpoint atomically (mode 0600).
    pub fn save(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let (windows, raised) = match &self.alerts {
            Some((e, _)) => (e.windows_state(), e.stats.raised),
            None => (Vec::new(), 0),
        };
        let saved = Saved {
            last_seq: self.last_seq,
            table: self.table.clone(),
            windows,
            alerts_raised: raised,
            recent_ids: self.recent_order.iter().cloned().collect(),
        };
        let bytes = encode(&saved)?;
        crate::output::files::write_atomic_mode(&checkpoint_path(&self.cfg.state_dir), &bytes, true, 0o600)
            .map_err(|e| format!("fleet checkpoint: {e}"))?;
        self.stats.checkpoints += 1;
        self.stats.checkpoint_bytes = bytes.len() as u64;
        self.stats.checkpoint_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Ends the run: alerts drained or spooled.
    pub fn finish_alerts(&mut self) -> Option<(EngineStats, Vec<crate::alert::deliver::DestStats>)> {
        let (mut engine, delivery) = self.alerts.take()?;
        engine.finish();
        Some((engine.stats, delivery.finish()))
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Runs the collector until `stop` (or the duration); returns the last report.
pub fn run(mut c: Collector, write: ReportWriter<'_>, stop: &AtomicBool) -> Result<Report, FleetError> {
    let rt = runtime()?;
    let state = Arc::new(ConnState::default());
    let client = rt.block_on(connect(&c.cfg.nats, state.clone(), false))?;
    let js = {
        let _rt = rt.enter();
        jetstream::new(client.clone())
    };
    let started = Instant::now();
    let mut last_write = Instant::now();
    let mut messages: Option<jetstream::consumer::pull::Ordered> = None;
    let mut next_try = Instant::now();
    let mut warned = false;
    // The first catch-up with the stream (all history, or since the checkpoint): said once, timed.
    let mut catching_up = Some((Instant::now(), 0u64));
    let duration = c.cfg.duration;
    let c_duration_over = move |s: Instant| duration.is_some_and(|d| s.elapsed() >= d);
    loop {
        if stop.load(Ordering::Relaxed) || c_duration_over(started) {
            break;
        }
        if messages.is_none() && Instant::now() >= next_try {
            let start = c.last_seq + 1;
            let made = rt.block_on(async {
                let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
                let consumer = stream
                    .create_consumer(OrderedConfig {
                        deliver_policy: if start <= 1 {
                            DeliverPolicy::All
                        } else {
                            DeliverPolicy::ByStartSequence { start_sequence: start }
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                consumer.messages().await.map_err(|e| e.to_string())
            });
            match made {
                Ok(m) => {
                    messages = Some(m);
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        eprintln!("kavwatch: fleet collect: cannot read stream {STREAM} yet ({e}); retrying");
                        warned = true;
                    }
                    state.set_error(e);
                    next_try = Instant::now() + Duration::from_secs(1);
                    c.stats.consumer_restarts += 1;
                }
            }
        }
        if let Some(m) = messages.as_mut() {
            // Up to a batch, or 200 ms of quiet.
            let mut lost = false;
            for _ in 0..1024 {
                let next = rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), m.next()).await });
                match next {
                    Err(_) => {
                        if let Some((t, n)) = catching_up.take() {
                            let secs = t.elapsed().as_secs_f64() - 0.2;
                            eprintln!(
                                "kavwatch: fleet collect: caught up at stream sequence {}: {n} messages in {secs:.2} s ({:.0} messages/s)",
                                c.last_seq,
                                n as f64 / secs.max(1e-3)
                            );
                        }
                        break;
                    }
                    Ok(None) => {
                        lost = true;
                        break;
                    }
                    Ok(Some(Err(e))) => {
                        state.set_error(e.to_string());
                        lost = true;
                        break;
                    }
                    Ok(Some(Ok(msg))) => {
                        let (seq, stored) = match msg.info() {
                            Ok(i) => (i.stream_sequence, (i.published.unix_timestamp_nanos()) as i64),
                            Err(_) => continue,
                        };
                        let id = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.to_string());
                        c.apply(seq, id.as_deref(), msg.subject.as_str(), &msg.payload, stored);
                        if let Some((_, n)) = catching_up.as_mut() {
                            *n += 1;
                        }
                    }
                }
            }
            if lost {
                messages = None;
                next_try = Instant::now() + Duration::from_millis(500);
            }
            c.tick();
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        if last_write.elapsed() >= c.cfg.report_interval {
            last_write = Instant::now();
            write(&c.report(now_ns())).map_err(FleetError::Setup)?;
            if let Err(e) = c.save() {
                eprintln!("kavwatch: {e}");
            }
        }
    }
    drop(messages);
    if let Err(e) = c.save() {
        eprintln!("kavwatch: {e}");
    }
    let mut report = c.report(now_ns());
    if let Some((engine, dests)) = c.finish_alerts() {
        eprintln!("kavwatch: {}", crate::alert::summary_line(&engine, &dests));
        let a = crate::alert::AlertStats {
            engine,
            destinations: dests.into_iter().map(|d| (d.destination.clone(), d)).collect(),
        };
        report.stats["fleet_alerts"] = serde_json::to_value(a).unwrap_or_default();
    }
    write(&report).map_err(FleetError::Setup)?;
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), client.drain()).await });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_and_damage() {
        let s = Saved {
            last_seq: 42,
            table: FleetTable::new(10),
            windows: Vec::new(),
            alerts_raised: 3,
            recent_ids: vec!["a-1".into()],
        };
        let b = encode(&s).unwrap();
        let back = decode(&b).unwrap();
        assert_eq!((back.last_seq, back.alerts_raised), (42, 3));
        let mut bad = b.clone();
        let n = bad.len() - 2;
        bad[n] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        assert!(decode(b"junk").is_err());
        assert!(decode(&b[..b.len() / 2]).is_err());
    }
}
