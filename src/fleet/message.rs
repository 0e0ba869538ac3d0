//! What crosses the bus. An observation is the sensor's event JSON line (the `--events`
//! contract) with `"sensor"` put first; a status is [`SensorStatus`], whose `report` is the
//! sensor's own report without its hosts, so that the collector's counters are `report merge`'s.
//! Both wait in the spool as one line: `ID \t SUBJECT \t JSON` (JSON has no raw tabs or newlines).

use serde::{Deserialize, Serialize};

use crate::output::report::Report;

/// Inputs (and errors) named in a status; a status must stay well under the stream's 1 MiB.
pub const MAX_INPUTS: usize = 500;

/// The last status of a sensor, every `--stats-interval` and at exit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SensorStatus {
    pub sensor: String,
    /// `live` or `analyze`.
    pub mode: String,
    pub version: String,
    /// The sensor's clock when it sent this (RFC 3339).
    pub time: String,
    /// Its `--stats-interval` in seconds (0: `analyze`, which sends one status at its end).
    pub interval_s: u64,
    /// The status sent at exit.
    #[serde(default)]
    pub last: bool,
    /// Interfaces (live) or capture files (analyze).
    pub inputs: Vec<String>,
    pub packets: u64,
    pub kernel_drops: u64,
    pub hosts: u64,
    pub alerts_raised: u64,
    pub undecoded_share: f64,
    /// Its publisher's counters when the status was made.
    pub publish: super::publish::PublishStats,
    /// The sensor's report without hosts: rules and cutoff, inputs, period, stats, errors.
    pub report: Report,
}

impl SensorStatus {
    /// The status of a sensor whose report is `report` (`mode`: `live` or `analyze`).
    pub fn of(
        report: &Report,
        mode: &str,
        inputs: Vec<String>,
        interval_s: u64,
        last: bool,
        publish: super::publish::PublishStats,
    ) -> SensorStatus {
        let kernel_drops = report.stats["capture"]["interfaces"]
            .as_object()
            .map_or(0, |m| m.values().map(|i| i["drops"].as_u64().unwrap_or(0)).sum());
        let mut r = report.clone();
        r.hosts.clear();
        r.timeline.clear();
        // An archive of many files: the first ones are named, all are counted (`stats`).
        r.inputs.truncate(MAX_INPUTS);
        r.errors.truncate(MAX_INPUTS);
        let mut inputs = inputs;
        inputs.truncate(MAX_INPUTS);
        SensorStatus {
            sensor: report.sensors.first().cloned().unwrap_or_default(),
            mode: mode.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            time: crate::output::rfc3339(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64),
            ),
            interval_s,
            last,
            inputs,
            packets: report.stat(&["packets"]),
            kernel_drops,
            hosts: report.hosts.len() as u64,
            alerts_raised: report.stat(&["alerts", "raised"]),
            undecoded_share: report.undecoded_share(),
            publish,
            report: r,
        }
    }
}

/// One message waiting to go: its `Nats-Msg-Id`, subject and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub subject: String,
    pub body: String,
}

impl Record {
    pub fn to_line(&self) -> String {
        format!("{}\t{}\t{}", self.id, self.subject, self.body)
    }

    pub fn from_line(line: &str) -> Option<Record> {
        let mut it = line.splitn(3, '\t');
        let (id, subject, body) = (it.next()?, it.next()?, it.next()?);
        if id.is_empty() || !subject.starts_with("kavwatch.") {
            return None;
        }
        Some(Record { id: id.into(), subject: subject.into(), body: body.into() })
    }
}

/// An event line (`{...}\n`) with the sensor's name put first.
pub fn observation_body(sensor: &str, event_line: &str) -> Option<String> {
    let rest = event_line.trim_end().strip_prefix('{')?;
    let name = serde_json::to_string(sensor).ok()?;
    Some(if rest == "}" { format!("{{\"sensor\":{name}}}") } else { format!("{{\"sensor\":{name},{rest}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record { id: "s-1-2".into(), subject: "kavwatch.obs.s".into(), body: "{\"a\":\"x\\ty\"}".into() };
        assert_eq!(Record::from_line(&r.to_line()), Some(r));
        assert_eq!(Record::from_line("junk"), None);
        assert_eq!(Record::from_line("id\tother.subject\t{}"), None);
    }

    #[test]
    fn sensor_goes_first() {
        let b = observation_body("a \"b\"", "{\"x\":1}\n").unwrap();
        assert_eq!(b, "{\"sensor\":\"a \\\"b\\\"\",\"x\":1}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["sensor"], "a \"b\"");
        assert_eq!(observation_body("s", "{}").unwrap(), "{\"sensor\":\"s\"}");
        assert_eq!(observation_body("s", "x"), None);
    }
}
