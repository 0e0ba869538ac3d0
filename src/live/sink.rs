//! The sink: the one thread that folds every worker's observations into the host table,
//! writes events, raises alerts, keeps every thread's counters and builds the report.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use super::{InterfaceStats, LiveOptions, LiveOutputs, Msg};
use crate::alert::{AlertStats, engine::EngineStats};
use crate::attribution::{Attributor, LIVE_HOLD_NS};
use crate::capture::afpacket::SocketStats;
use crate::host::HostTable;
use crate::metrics::{AlertDestMetrics, Exporter, InterfaceMetrics, LiveSnapshot, SocketMetrics, unix_seconds};
use crate::observation::Observation;
use crate::output::events::{Inputs, write_events};
use crate::output::files::EventsOut;
use crate::output::merge::add_values;
use crate::output::report::{Report, RunInfo};
use crate::pipeline::Stats;
use crate::rules::matcher::Rules;
use crate::rules::model::Category;
use crate::state::{self, CheckpointStats};
use crate::worker::WorkerStats;

/// The sink's state: hosts, counters of every thread, alerts.
pub(super) struct Sink {
    pub(super) table: HostTable,
    pub(super) attributor: Attributor,
    pub(super) cutoff_override: Option<i64>,
    pub(super) interfaces: Vec<String>,
    pub(super) engine: &'static str,
    pub(super) readers: BTreeMap<usize, (Stats, Option<i64>, Option<i64>)>,
    pub(super) workers: BTreeMap<usize, WorkerStats>,
    pub(super) sockets: BTreeMap<usize, (usize, SocketStats, u64)>,
    pub(super) events: u64,
    /// Events by the category of their rule (in `Category::ALL` order), for the metrics.
    pub(super) events_by_category: [u64; Category::ALL.len()],
    pub(super) observations: u64,
    /// Counters at the last stats line, for rates and new drops.
    pub(super) last_packets: u64,
    pub(super) last_drops: u64,
    pub(super) last_undecoded: u64,
    /// Checkpoints: counters, and what the runs before this one saw (see `crate::state`).
    pub checkpoint: CheckpointStats,
    pub(super) since: Restored,
}

/// What the runs before a restart contribute to the report besides their hosts.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Restored {
    pub(super) first_start_ns: Option<i64>,
    pub(super) first_ts: Option<i64>,
    pub(super) last_ts: Option<i64>,
}

impl Sink {
    pub(super) fn new(opts: &LiveOptions) -> Sink {
        Sink {
            table: HostTable::new(opts.max_hosts),
            attributor: {
                let mut a = Attributor::default();
                a.set_configured(opts.resolvers.clone());
                a
            },
            cutoff_override: opts.cutoff_override,
            interfaces: opts.interfaces.clone(),
            engine: opts.engine.as_str(),
            readers: BTreeMap::new(),
            workers: BTreeMap::new(),
            sockets: BTreeMap::new(),
            events: 0,
            events_by_category: [0; Category::ALL.len()],
            observations: 0,
            last_packets: 0,
            last_drops: 0,
            last_undecoded: 0,
            checkpoint: CheckpointStats::default(),
            since: Restored::default(),
        }
    }

    /// At start: the checkpoint in the state directory, if any, into the table, the alert
    /// windows and the counters (or, with `--fresh`, set aside). Problems are one warning line:
    /// live then starts fresh.
    pub(super) fn restore_state(&mut self, opts: &LiveOptions, rules: &Rules, out: &mut LiveOutputs<'_>) {
        let Some(cfg) = &opts.state else {
            return;
        };
        if let Err(e) = state::ensure_dir(&cfg.dir) {
            eprintln!("kavwatch: warning: state: {e}");
        }
        if cfg.fresh {
            match state::set_aside(&cfg.dir) {
                Ok(Some(old)) => {
                    eprintln!("kavwatch: state: --fresh: the checkpoint was set aside as {}", old.display())
                }
                Ok(None) => {}
                Err(e) => eprintln!("kavwatch: warning: state: --fresh: {e}"),
            }
            return;
        }
        let mut cp = match state::load(&cfg.dir, opts.max_hosts) {
            Ok(Some(cp)) => cp,
            Ok(None) => return,
            Err(e) => {
                eprintln!("kavwatch: warning: state: {e}");
                return;
            }
        };
        let dropped = cp.renumber(rules);
        self.table = HostTable::restore(cp.table, opts.max_hosts);
        self.attributor.restore_resolvers(cp.resolvers);
        if let (Some((engine, _)), Some(w)) = (out.alerts.as_mut(), cp.alert_windows) {
            engine.restore_windows(w);
        }
        self.observations = cp.observations;
        self.events = cp.events;
        self.since = Restored { first_start_ns: Some(cp.first_start_ns), first_ts: cp.first_ts, last_ts: cp.last_ts };
        self.checkpoint.restored_hosts = self.table.len() as u64;
        let mut notes = String::new();
        if dropped > 0 {
            notes.push_str(&format!("; {dropped} kept observations dropped: their rules are gone"));
        }
        if cp.cutoff_override != self.cutoff_override {
            notes.push_str("; saved with another --cutoff: restored verdicts keep the old one");
        }
        if cp.sensor != opts.sensor {
            notes.push_str(&format!("; saved by sensor {:?}", cp.sensor));
        }
        eprintln!(
            "kavwatch: state: restored {} hosts from {} (saved {}){notes}",
            self.table.len(),
            cfg.dir.join(state::FILE_NAME).display(),
            ns_text(cp.saved_at_ns)
        );
    }

    /// Writes the checkpoint (every report interval, and at exit). A failure is one warning
    /// line and counted; live goes on. Says nothing on success, but at exit.
    pub(super) fn save_state(&mut self, opts: &LiveOptions, rules: &Rules, out: &LiveOutputs<'_>, at_exit: bool) {
        let Some(cfg) = &opts.state else {
            return;
        };
        let started = std::time::Instant::now();
        let now = super::now_ns();
        let (first_ts, last_ts) = self.first_last();
        let mut cp = state::Checkpoint {
            kavwatch_version: env!("CARGO_PKG_VERSION").to_string(),
            sensor: opts.sensor.clone(),
            saved_at_ns: now,
            first_start_ns: *self.since.first_start_ns.get_or_insert(now),
            first_ts,
            last_ts,
            observations: self.observations,
            events: self.events,
            cutoff_override: self.cutoff_override,
            resolvers: self.attributor.learned_resolvers(),
            rule_ids: Vec::new(),
            tunnels: Vec::new(),
            table: self.table.snapshot(),
            alert_windows: out.alerts.as_ref().map(|(e, _)| e.windows_state()),
        };
        cp.name_numbers(rules);
        match state::save(&cfg.dir, &cp) {
            Ok(info) => {
                self.checkpoint.writes += 1;
                self.checkpoint.last_bytes = info.bytes;
                // The whole pause of the sink: snapshot, encoding, writing.
                self.checkpoint.last_elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
                self.checkpoint.last_saved_ns = Some(now);
                if at_exit {
                    eprintln!(
                        "kavwatch: state: {} hosts saved to {} ({} bytes, {:.1} ms)",
                        self.table.len(),
                        info.path.display(),
                        info.bytes,
                        self.checkpoint.last_elapsed_ms
                    );
                }
            }
            Err(e) => {
                self.checkpoint.failures += 1;
                eprintln!("kavwatch: warning: state: checkpoint not written: {e}");
            }
        }
    }

    /// First and last packet time, over the runs before a restart too.
    fn first_last(&self) -> (Option<i64>, Option<i64>) {
        let first = self.readers.values().filter_map(|r| r.1).chain(self.since.first_ts).min();
        let last = self.readers.values().filter_map(|r| r.2).chain(self.since.last_ts).max();
        (first, last)
    }

    pub(super) fn take(&mut self, m: Msg, out: &mut LiveOutputs<'_>) -> Result<(), String> {
        match m {
            Msg::Observations(rules, mut obs) => {
                obs.sort_by_key(|o| o.sort_key());
                let obs = self.attributor.process(obs, &rules, LIVE_HOLD_NS);
                self.fold(obs, &rules, out)?;
            }
            Msg::Reader { id, stats, first_ts, last_ts } => {
                self.readers.insert(id, (*stats, first_ts, last_ts));
            }
            Msg::Worker { id, stats } => {
                self.workers.insert(id, *stats);
            }
            Msg::Socket { id, iface, stats, reopened } => {
                self.sockets.insert(id, (iface, stats, reopened));
            }
            Msg::Log(line) => eprintln!("{line}"),
        }
        Ok(())
    }

    /// Observations into the host table, alerts and events.
    pub(super) fn fold(
        &mut self,
        obs: Vec<Observation>,
        rules: &Rules,
        out: &mut LiveOutputs<'_>,
    ) -> Result<(), String> {
        for o in &obs {
            self.table.add(o, rules, self.cutoff_override);
            self.events_by_category[rules.rule(o.rule).category as usize] += 1;
            if let Some((engine, delivery)) = out.alerts.as_mut()
                && let Some(mut a) = engine.observe(o, rules)
            {
                a.evidence.input = self.interfaces.get(o.pos.input as usize).cloned();
                delivery.send(&a);
            }
        }
        if let Some(p) = &out.publish {
            for o in &obs {
                p.observation(o, rules, Inputs::Interfaces(&self.interfaces), self.cutoff_override);
            }
        }
        if let Some(e) = out.events.as_mut() {
            write_events(e, &obs, rules, Inputs::Interfaces(&self.interfaces), self.cutoff_override)
                .map_err(|e| format!("writing events: {e}"))?;
            e.flush().map_err(|e| format!("writing events: {e}"))?;
        }
        self.observations += obs.len() as u64;
        self.events += obs.len() as u64;
        Ok(())
    }

    pub(super) fn per_interface(&self) -> BTreeMap<String, InterfaceStats> {
        let mut m: BTreeMap<String, InterfaceStats> = BTreeMap::new();
        for name in &self.interfaces {
            m.entry(name.clone()).or_default();
        }
        for (iface, s, reopened) in self.sockets.values() {
            let e = m.entry(self.interfaces[*iface].clone()).or_default();
            e.packets += s.packets;
            e.drops += s.drops;
            e.freeze_q += s.freeze_q;
            e.reopened += reopened;
        }
        m
    }

    pub(super) fn totals(&self) -> serde_json::Value {
        let mut v = serde_json::Value::Null;
        for (s, _, _) in self.readers.values() {
            add_values(&mut v, &serde_json::to_value(s).expect("stats serialise"));
        }
        let mut w = WorkerStats::default();
        for s in self.workers.values() {
            w.add(s);
        }
        add_values(&mut v, &serde_json::to_value(w).expect("stats serialise"));
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("observations".into(), self.observations.into());
        }
        v
    }

    pub(super) fn stats_line(&mut self, since: Duration, alerts: Option<String>) -> String {
        let packets: u64 = self.readers.values().map(|(s, _, _)| s.packets).sum();
        let bytes: u64 = self.readers.values().map(|(s, _, _)| s.bytes).sum();
        let ifs = self.per_interface();
        let drops: u64 = ifs.values().map(|s| s.drops).sum();
        let freeze: u64 = ifs.values().map(|s| s.freeze_q).sum();
        let rate = (packets - self.last_packets.min(packets)) as f64 / since.as_secs_f64().max(1e-3);
        // Per socket (AF_PACKET: one per worker), so a hot worker shows.
        let per_socket: Vec<String> =
            self.sockets.values().map(|(i, s, _)| format!("{}:{}", self.interfaces[*i], s.drops)).collect();
        let mut line = format!(
            "kavwatch: live: {packets} packets, {:.1} MB, {rate:.0} pkt/s, drops kernel {drops} ({} {freeze}; per socket {}), events {}, hosts {}",
            bytes as f64 / 1e6,
            if self.engine == "afpacket" { "ring frozen" } else { "interface" },
            per_socket.join(" "),
            self.events,
            self.table.len()
        );
        if let Some(a) = alerts {
            line.push_str(", ");
            line.push_str(&a);
        }
        let undecoded: u64 = self.readers.values().map(|(s, _, _)| s.undecoded.packets).sum();
        let new_packets = packets - self.last_packets.min(packets);
        let new_undecoded = undecoded - self.last_undecoded.min(undecoded);
        if new_undecoded as f64 > new_packets as f64 * crate::decode::counters::UNDECODED_WARN_SHARE {
            let mut causes: BTreeMap<&str, u64> = BTreeMap::new();
            for (s, _, _) in self.readers.values() {
                for (c, n) in &s.undecoded.causes {
                    *causes.entry(c).or_default() += n;
                }
            }
            let top = causes.iter().max_by_key(|(_, n)| **n).map(|(c, _)| *c).unwrap_or("-");
            line.push_str(&format!(
                "\nkavwatch: warning: {:.1} % of the packets since the last report could not be decoded to TCP/UDP over IP (top cause: {top}): hosts in them are not seen",
                new_undecoded as f64 * 100.0 / new_packets.max(1) as f64
            ));
        }
        self.last_undecoded = undecoded;
        if drops > self.last_drops {
            line.push_str(&format!(
                "\nkavwatch: warning: {} packets dropped since the last report: add workers (--workers), a bigger ring, or a --bpf filter",
                drops - self.last_drops
            ));
        }
        self.last_packets = packets;
        self.last_drops = drops;
        line
    }

    /// The status `--publish` sends every stats interval.
    pub(super) fn status(
        &self,
        opts: &LiveOptions,
        rules: &Rules,
        out: &LiveOutputs<'_>,
        interval: Duration,
        last: bool,
    ) -> crate::fleet::message::SensorStatus {
        // Without its hosts: a status goes every stats interval, and the table may be large.
        let report = self.report_of(opts, rules, out, false);
        let publish = out.publish.as_ref().map(|p| p.stats()).unwrap_or_default();
        let mut s = crate::fleet::message::SensorStatus::of(
            &report,
            "live",
            opts.interfaces.clone(),
            interval.as_secs().max(1),
            last,
            publish,
        );
        s.hosts = self.table.len() as u64;
        s
    }

    pub(super) fn report(&self, opts: &LiveOptions, rules: &Rules, out: &LiveOutputs<'_>) -> Report {
        self.report_of(opts, rules, out, true)
    }

    fn report_of(&self, opts: &LiveOptions, rules: &Rules, out: &LiveOutputs<'_>, with_hosts: bool) -> Report {
        let mut stats = self.totals();
        let (first, last) = self.first_last();
        if let serde_json::Value::Object(m) = &mut stats {
            m.insert(
                "capture".into(),
                serde_json::json!({
                    "engine": self.engine,
                    "interfaces": self.per_interface(),
                    "sockets": self.sockets.values().map(|(i, s, reopened)| serde_json::json!({
                        "interface": self.interfaces[*i],
                        "packets": s.packets,
                        "drops": s.drops,
                        "freeze_q": s.freeze_q,
                        "bad_blocks": s.bad_blocks,
                        "reopened": reopened,
                    })).collect::<Vec<_>>(),
                }),
            );
            m.insert("hosts_evicted".into(), self.table.hosts_evicted.into());
            if let Some((rotations, bytes)) = out.events.as_ref().and_then(EventsOut::file_stats) {
                m.insert("events_file".into(), serde_json::json!({"rotations": rotations, "bytes": bytes}));
            }
            if opts.state.is_some() {
                m.insert("checkpoint".into(), serde_json::to_value(&self.checkpoint).expect("stats serialise"));
            }
            m.insert("attribution".into(), serde_json::to_value(&self.attributor.stats).expect("stats serialise"));
            m.insert("ksc".into(), serde_json::to_value(&self.attributor.ksc.stats).expect("stats serialise"));
            m.insert("dhcp".into(), serde_json::to_value(&self.attributor.leases.stats).expect("stats serialise"));
            if let Some((engine, delivery)) = &out.alerts {
                let a = AlertStats {
                    engine: EngineStats::clone(&engine.stats),
                    destinations: delivery.stats().into_iter().map(|d| (d.destination.clone(), d)).collect(),
                };
                m.insert("alerts".into(), serde_json::to_value(a).expect("alert stats serialise"));
            }
            if let Some(p) = &out.publish {
                m.insert("publish".into(), serde_json::to_value(p.stats()).expect("stats serialise"));
            }
        }
        let inputs: Vec<crate::pipeline::InputSummary> = self
            .per_interface()
            .into_iter()
            .map(|(name, s)| crate::pipeline::InputSummary { path: name, packets: s.packets, bytes: 0, error: None })
            .collect();
        let run = RunInfo { stats, inputs: &inputs, first_ts: first, last_ts: last, errors: &[] };
        let mut hosts = if with_hosts { self.table.hosts() } else { Vec::new() };
        crate::attribution::mark_resolvers(&mut hosts, &self.attributor);
        Report::build(&run, &hosts, &self.table.timeline, rules, opts.cutoff_ns, &opts.sensor)
    }
}

impl Sink {
    /// The metrics, from the same counters as [`Sink::report`].
    pub(super) fn metrics(
        &self,
        opts: &LiveOptions,
        m: &Exporter,
        shared: &super::SharedRules,
        out: &LiveOutputs<'_>,
    ) -> LiveSnapshot {
        let mut interfaces: Vec<InterfaceMetrics> = self
            .per_interface()
            .into_iter()
            .map(|(name, s)| InterfaceMetrics { name, packets: s.packets, reopens: s.reopened, ..Default::default() })
            .collect();
        for (id, (iface, s, _)) in &self.sockets {
            let name = &self.interfaces[*iface];
            if let Some(i) = interfaces.iter_mut().find(|i| &i.name == name) {
                i.bytes += self.readers.get(id).map_or(0, |r| r.0.bytes);
                i.sockets.push(SocketMetrics {
                    socket: id.to_string(),
                    kernel_drops: s.drops,
                    ring_freezes: s.freeze_q,
                });
            }
        }
        let mut r = Stats::default();
        for (s, _, _) in self.readers.values() {
            r.add_counts(s);
            r.undecoded.packets += s.undecoded.packets;
        }
        let mut w = WorkerStats::default();
        for s in self.workers.values() {
            w.add(s);
        }
        let rules = shared.get();
        let mut snap = LiveSnapshot {
            sensor: opts.sensor.clone(),
            engine: self.engine.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            start_time_seconds: unix_seconds(m.start_time),
            interfaces,
            decoded: r.decoded,
            skipped: vec![
                ("not_ip".into(), r.skipped.not_ip),
                ("not_tcp_udp".into(), r.skipped.not_tcp_udp),
                ("unsupported_link".into(), r.skipped.unsupported_link),
                ("not_inspected".into(), r.skipped.not_inspected),
            ],
            malformed: r.malformed,
            undecoded: r.undecoded.packets,
            tcp_flows: w.tcp_flows,
            flows_evicted: w.flows_evicted,
            flows_expired: w.flows_expired,
            observations: self.observations,
            events: Category::ALL.iter().map(|c| (c.as_str().into(), self.events_by_category[*c as usize])).collect(),
            hosts: self.table.verdict_counts().into_iter().map(|(v, n)| (v.into(), n)).collect(),
            hosts_evicted: self.table.hosts_evicted,
            rules_generation: shared.generation.load(std::sync::atomic::Ordering::Relaxed),
            rules: rules.set.rules.len() as u64,
            rules_load_seconds: m.rules_load.as_secs_f64(),
            rules_loaded_time_seconds: unix_seconds(m.rules_loaded_at),
            server: m.published.counters(),
            ..LiveSnapshot::default()
        };
        if let Some((engine, delivery)) = &out.alerts {
            snap.set_alerts(engine.stats.raised, &delivery.stats());
        }
        snap.publish = out.publish.as_ref().map(|p| p.stats());
        if opts.state.is_some() {
            (snap.checkpoint_writes, snap.checkpoint_failures) = (self.checkpoint.writes, self.checkpoint.failures);
            snap.checkpoint_age_seconds =
                self.checkpoint.last_saved_ns.map(|t| (super::now_ns() - t).max(0) as f64 / 1e9);
        }
        snap
    }
}

impl LiveSnapshot {
    /// The alert counters: raised, and per destination.
    pub(super) fn set_alerts(&mut self, raised: u64, dests: &[crate::alert::deliver::DestStats]) {
        self.alerts_raised = Some(raised);
        self.alerts = dests
            .iter()
            .map(|d| AlertDestMetrics {
                destination: d.destination.clone(),
                sent: d.sent,
                spooled: d.spooled,
                dropped: d.dropped,
                errors: d.errors,
                waiting: d.waiting,
            })
            .collect();
    }
}

/// `2026-01-02T03:04:05Z`
fn ns_text(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
