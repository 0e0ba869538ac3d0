//! The Prometheus text exposition format (0.0.4): what `live` counts, as metric families.

use std::fmt::Write;

use super::ServerCounters;

/// One capture socket (AF_PACKET: one per worker; libpcap: one per interface).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SocketMetrics {
    /// The capture thread's number, as the report's `stats.capture.sockets` order has them.
    pub socket: String,
    pub kernel_drops: u64,
    pub ring_freezes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceMetrics {
    pub name: String,
    /// Packets the kernel (or libpcap) delivered (`stats.capture.interfaces.NAME.packets`).
    pub packets: u64,
    /// Bytes of the packets read.
    pub bytes: u64,
    pub reopens: u64,
    pub sockets: Vec<SocketMetrics>,
}

/// One `--alert` destination (`stats.alerts.destinations.URL`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertDestMetrics {
    pub destination: String,
    pub sent: u64,
    pub spooled: u64,
    pub dropped: u64,
    pub errors: u64,
    /// Records in the spool now (a gauge).
    pub waiting: u64,
}

/// Everything `live` exports, filled by the sink from the counters of its report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSnapshot {
    pub sensor: String,
    pub engine: String,
    pub version: String,
    pub start_time_seconds: f64,
    pub interfaces: Vec<InterfaceMetrics>,
    pub decoded: u64,
    /// Skipped packets by reason (`not_ip`, `not_tcp_udp`, `unsupported_link`, `not_inspected`).
    pub skipped: Vec<(String, u64)>,
    pub malformed: u64,
    pub undecoded: u64,
    /// TCP flows followed, and those evicted (table full) or expired (idle).
    pub tcp_flows: u64,
    pub flows_evicted: u64,
    pub flows_expired: u64,
    pub observations: u64,
    /// Events (observations) by the category of the rule they matched.
    pub events: Vec<(String, u64)>,
    /// Hosts in the table by verdict.
    pub hosts: Vec<(String, u64)>,
    pub hosts_evicted: u64,
    /// Alerts raised by the engine (`None` without `--alert`).
    pub alerts_raised: Option<u64>,
    pub alerts: Vec<AlertDestMetrics>,
    /// The `--publish` publisher's counters (`None` without it).
    pub publish: Option<crate::fleet::publish::PublishStats>,
    pub rules_generation: u64,
    pub rules: u64,
    pub rules_load_seconds: f64,
    pub rules_loaded_time_seconds: f64,
    /// Age of the last checkpoint of the host table (`None`: none written yet, or checkpoints
    /// are not kept), and the checkpoints written and failed.
    pub checkpoint_age_seconds: Option<f64>,
    pub checkpoint_writes: u64,
    pub checkpoint_failures: u64,
    /// The metrics server's own counters.
    pub server: ServerCounters,
}

/// A label value in the exposition format: backslash, double quote and line feed escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A sample value: integers as they are, `+Inf`, `-Inf` and `NaN` spelled as Prometheus does.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text: backslash and line feed escaped.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        self.0.push(' ');
        self.0.push_str(value);
        self.0.push('\n');
    }

    /// A family of one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: &str) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A per-destination alert family: name, type, help, and its value.
type DestFamily = (&'static str, &'static str, &'static str, fn(&AlertDestMetrics) -> u64);

/// The snapshot in the text exposition format 0.0.4.
pub fn render_live(s: &LiveSnapshot) -> String {
    let mut o = Out(String::with_capacity(4096));
    let (c, g) = ("counter", "gauge");
    o.family("kavwatch_build_info", g, "Always 1: the kavwatch version, sensor name and capture engine.");
    o.sample("kavwatch_build_info", &[("version", &s.version), ("sensor", &s.sensor), ("engine", &s.engine)], "1");
    o.one(
        "kavwatch_start_time_seconds",
        g,
        "When this kavwatch process started, in seconds since the Unix epoch.",
        &float(s.start_time_seconds),
    );

    o.family(
        "kavwatch_packets_total",
        c,
        "Packets the kernel (or libpcap) delivered on the interface, drops included.",
    );
    for i in &s.interfaces {
        o.sample("kavwatch_packets_total", &[("interface", &i.name)], &i.packets.to_string());
    }
    o.family("kavwatch_bytes_total", c, "Bytes of the packets read from the interface.");
    for i in &s.interfaces {
        o.sample("kavwatch_bytes_total", &[("interface", &i.name)], &i.bytes.to_string());
    }
    o.family(
        "kavwatch_kernel_drops_total",
        c,
        "Packets the kernel dropped because the socket's ring or buffer was full.",
    );
    for i in &s.interfaces {
        for k in &i.sockets {
            o.sample(
                "kavwatch_kernel_drops_total",
                &[("interface", &i.name), ("socket", &k.socket)],
                &k.kernel_drops.to_string(),
            );
        }
    }
    o.family(
        "kavwatch_ring_freezes_total",
        c,
        "AF_PACKET: times the kernel froze the full ring; libpcap: packets dropped by the interface or driver.",
    );
    for i in &s.interfaces {
        for k in &i.sockets {
            o.sample(
                "kavwatch_ring_freezes_total",
                &[("interface", &i.name), ("socket", &k.socket)],
                &k.ring_freezes.to_string(),
            );
        }
    }
    o.family("kavwatch_interface_reopens_total", c, "Times the interface vanished and was opened again.");
    for i in &s.interfaces {
        o.sample("kavwatch_interface_reopens_total", &[("interface", &i.name)], &i.reopens.to_string());
    }

    o.one("kavwatch_packets_decoded_total", c, "Packets decoded to TCP or UDP over IP.", &s.decoded.to_string());
    o.family("kavwatch_packets_skipped_total", c, "Packets not inspected, by reason.");
    for (reason, n) in &s.skipped {
        o.sample("kavwatch_packets_skipped_total", &[("reason", reason)], &n.to_string());
    }
    o.one("kavwatch_packets_malformed_total", c, "Packets whose headers did not parse.", &s.malformed.to_string());
    o.one(
        "kavwatch_packets_undecoded_total",
        c,
        "Packets not decoded to TCP/UDP over IP for a reason that may hide hosts (unknown tunnels...).",
        &s.undecoded.to_string(),
    );
    o.one("kavwatch_tcp_flows_total", c, "TCP flows followed.", &s.tcp_flows.to_string());
    o.one(
        "kavwatch_flows_evicted_total",
        c,
        "TCP flows dropped because the flow table was full.",
        &s.flows_evicted.to_string(),
    );
    o.one("kavwatch_flows_expired_total", c, "TCP flows forgotten after being idle.", &s.flows_expired.to_string());
    o.one(
        "kavwatch_observations_total",
        c,
        "Observations (a name matched in DNS, TLS, QUIC, HTTP, KSC or DHCP traffic).",
        &s.observations.to_string(),
    );
    o.family("kavwatch_events_total", c, "Events written, by the category of the rule they matched.");
    for (cat, n) in &s.events {
        o.sample("kavwatch_events_total", &[("category", cat)], &n.to_string());
    }
    o.family("kavwatch_hosts", g, "Hosts in the host table, by verdict.");
    for (verdict, n) in &s.hosts {
        o.sample("kavwatch_hosts", &[("verdict", verdict)], &n.to_string());
    }
    o.one(
        "kavwatch_hosts_evicted_total",
        c,
        "Hosts forgotten because the host table was full (--max-hosts).",
        &s.hosts_evicted.to_string(),
    );

    if let Some(raised) = s.alerts_raised {
        o.one("kavwatch_alerts_raised_total", c, "Alerts raised.", &raised.to_string());
    }
    let dests: [DestFamily; 5] = [
        ("kavwatch_alerts_sent_total", c, "Alert records written to the destination.", |d| d.sent),
        (
            "kavwatch_alerts_spooled_total",
            c,
            "Alert records put in the on-disk spool because the destination was unreachable.",
            |d| d.spooled,
        ),
        (
            "kavwatch_alerts_dropped_total",
            c,
            "Alert records lost: spool full (oldest dropped) or an unrecoverable write error.",
            |d| d.dropped,
        ),
        ("kavwatch_alert_errors_total", c, "Failed connection attempts and write errors per destination.", |d| {
            d.errors
        }),
        ("kavwatch_alerts_waiting", g, "Alert records in the spool now, waiting for the destination.", |d| d.waiting),
    ];
    if !s.alerts.is_empty() {
        for (name, kind, help, get) in dests {
            o.family(name, kind, help);
            for d in &s.alerts {
                o.sample(name, &[("destination", &d.destination)], &get(d).to_string());
            }
        }
    }

    if let Some(p) = &s.publish {
        let families: [(&str, &str, &str, u64); 8] = [
            (
                "kavwatch_publish_messages_total",
                c,
                "Messages handed to a NATS server (--publish); a message sent again counts again.",
                p.published,
            ),
            ("kavwatch_publish_acked_total", c, "Messages JetStream acknowledged (stored).", p.acked),
            (
                "kavwatch_publish_duplicates_total",
                c,
                "Acknowledgements saying JetStream already had the message (a retry).",
                p.duplicates,
            ),
            (
                "kavwatch_publish_spooled_total",
                c,
                "Messages put in the on-disk spool because no server acknowledged them in time.",
                p.spooled,
            ),
            (
                "kavwatch_publish_dropped_total",
                c,
                "Messages lost: spool full (oldest dropped), queue full, or too large for the stream.",
                p.dropped,
            ),
            (
                "kavwatch_publish_errors_total",
                c,
                "Publishes without an acknowledgement (timeouts, refusals).",
                p.errors,
            ),
            ("kavwatch_publish_reconnects_total", c, "Connections to a NATS server after the first.", p.reconnects),
            ("kavwatch_publish_waiting", g, "Messages in the spool now, waiting for a server.", p.waiting),
        ];
        for (name, kind, help, v) in families {
            o.one(name, kind, help, &v.to_string());
        }
    }

    o.one(
        "kavwatch_rules_generation",
        g,
        "Rules generation: 0 for the rules loaded at start, one more for each reload (SIGHUP).",
        &s.rules_generation.to_string(),
    );
    o.one("kavwatch_rules", g, "Rules in use.", &s.rules.to_string());
    o.one(
        "kavwatch_rules_load_duration_seconds",
        g,
        "How long the rules in use took to load.",
        &float(s.rules_load_seconds),
    );
    o.one(
        "kavwatch_rules_loaded_timestamp_seconds",
        g,
        "When the rules in use were loaded, in seconds since the Unix epoch.",
        &float(s.rules_loaded_time_seconds),
    );
    if let Some(age) = s.checkpoint_age_seconds {
        o.one("kavwatch_checkpoint_age_seconds", g, "Seconds since the last checkpoint was written.", &float(age));
    }
    o.one("kavwatch_checkpoint_writes_total", c, "Checkpoints written.", &s.checkpoint_writes.to_string());
    o.one(
        "kavwatch_checkpoint_failures_total",
        c,
        "Checkpoints that failed to write.",
        &s.checkpoint_failures.to_string(),
    );

    o.family("kavwatch_metrics_requests_total", c, "Requests to the metrics server, by response status code.");
    for (code, n) in [("200", s.server.ok), ("400", s.server.bad_request), ("404", s.server.not_found)] {
        o.sample("kavwatch_metrics_requests_total", &[("code", code)], &n.to_string());
    }
    o.one(
        "kavwatch_metrics_connections_rejected_total",
        c,
        "Connections to the metrics server closed at once because 4 were open already.",
        &s.server.rejected.to_string(),
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let s = LiveSnapshot { sensor: "x\"y".into(), ..LiveSnapshot::default() };
        assert!(render_live(&s).contains("sensor=\"x\\\"y\""));
    }

    #[test]
    fn every_family_has_help_and_type_and_samples_follow_their_family() {
        let s = LiveSnapshot {
            interfaces: vec![InterfaceMetrics {
                name: "eth1".into(),
                packets: 7,
                sockets: vec![SocketMetrics { socket: "0".into(), ..SocketMetrics::default() }],
                ..InterfaceMetrics::default()
            }],
            alerts: vec![AlertDestMetrics { destination: "file:/x".into(), sent: 3, ..AlertDestMetrics::default() }],
            checkpoint_age_seconds: Some(1.5),
            publish: Some(crate::fleet::publish::PublishStats { acked: 4, waiting: 2, ..Default::default() }),
            rules_load_seconds: f64::INFINITY,
            ..LiveSnapshot::default()
        };
        let text = render_live(&s);
        assert!(text.contains("kavwatch_packets_total{interface=\"eth1\"} 7\n"));
        assert!(text.contains("kavwatch_alerts_sent_total{destination=\"file:/x\"} 3\n"));
        assert!(text.contains("kavwatch_checkpoint_age_seconds 1.5\n"));
        assert!(text.contains("kavwatch_publish_acked_total 4\n") && text.contains("kavwatch_publish_waiting 2\n"));
        assert!(text.contains("kavwatch_rules_load_duration_seconds +Inf\n"));
        let mut family = String::new();
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap().to_string();
                assert!(typed.insert(family.clone()), "{family} twice");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split(' ');
                assert_eq!(w.next(), Some(family.as_str()));
                let kind = w.next().unwrap();
                assert_eq!(kind == "counter", family.ends_with("_total"), "{family} is a {kind}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, family, "{line}");
            }
        }
    }
}
