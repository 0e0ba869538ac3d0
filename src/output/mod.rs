//! Outputs: events (JSON lines), reports (JSON, CSV, text). Every name in them is already
//! printable ASCII (see `proto::name`); each format adds only its own quoting.

pub mod events;
pub mod files;
pub mod html;
pub mod merge;
pub mod report;

use crate::decode::VlanTags;

/// RFC 3339 in UTC with microseconds: `2024-09-29T04:00:00.000000Z`.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => "invalid-time".to_string(),
    }
}

pub(crate) fn vlan_opt(v: &VlanTags) -> Option<&[u16]> {
    (!v.is_empty()).then(|| v.as_slice())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_micros() {
        assert_eq!(super::rfc3339(1_727_582_400_000_001_999), "2024-09-29T04:00:00.000001Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }
}
