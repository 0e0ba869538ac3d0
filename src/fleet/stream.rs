//! `fleet init`: the `KAVWATCH` stream. Created with the given replicas, age and size limits
//! (file storage, oldest messages discarded past a limit, a duplicate window long enough for a
//! sensor's retries), or, when it exists, compared with what was asked: what differs is said,
//! and nothing is changed.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::{FleetError, STREAM, SUBJECTS};

#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    pub replicas: usize,
    /// Zero: kept until `max_bytes` is reached.
    pub max_age: Duration,
    /// -1: no size limit.
    pub max_bytes: i64,
    /// JetStream drops a message whose `Nats-Msg-Id` it stored this recently.
    pub duplicate_window: Duration,
}

/// Largest message the stream takes (an event is a few kilobytes; a status tens).
pub const MAX_MESSAGE: i32 = 1 << 20;

impl StreamSpec {
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: STREAM.into(),
            description: Some("kavwatch observations and sensor statuses".into()),
            subjects: vec![SUBJECTS.into()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: -1,
            max_message_size: MAX_MESSAGE,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }
}

/// What `fleet init` found.
#[derive(Debug, PartialEq)]
pub enum InitOutcome {
    Created,
    Same,
    /// One line per setting: `replicas: 1 in the stream, 3 asked`.
    Differs(Vec<String>),
}

fn secs(d: Duration) -> String {
    if d.is_zero() { "unlimited".into() } else { format!("{}s", d.as_secs()) }
}

/// The differences between an existing stream and what is asked.
pub fn differences(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |what: &str, h: String, w: String| {
        if h != w {
            d.push(format!("{what}: {h} in the stream, {w} asked"));
        }
    };
    cmp("subjects", have.subjects.join(","), want.subjects.join(","));
    cmp("replicas", have.num_replicas.to_string(), want.num_replicas.to_string());
    cmp("max-age", secs(have.max_age), secs(want.max_age));
    cmp("max-bytes", have.max_bytes.to_string(), want.max_bytes.to_string());
    cmp("duplicate-window", secs(have.duplicate_window), secs(want.duplicate_window));
    cmp("storage", format!("{:?}", have.storage), format!("{:?}", want.storage));
    cmp("retention", format!("{:?}", have.retention), format!("{:?}", want.retention));
    cmp("discard", format!("{:?}", have.discard), format!("{:?}", want.discard));
    cmp("max-message-size", have.max_message_size.to_string(), want.max_message_size.to_string());
    d
}

pub async fn init(js: &jetstream::Context, spec: &StreamSpec) -> Result<InitOutcome, FleetError> {
    let want = spec.config();
    match js.get_stream(STREAM).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| FleetError::Nats(format!("stream {STREAM}: {e}")))?;
            let d = differences(&info.config, &want);
            Ok(if d.is_empty() { InitOutcome::Same } else { InitOutcome::Differs(d) })
        }
        Err(e)
            if matches!(&e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(want).await.map_err(|e| FleetError::Nats(format!("creating stream {STREAM}: {e}")))?;
            Ok(InitOutcome::Created)
        }
        Err(e) => Err(FleetError::Nats(format!("stream {STREAM}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let a = StreamSpec {
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(600),
        };
        let b = StreamSpec { replicas: 3, max_age: Duration::from_secs(86_400), ..a.clone() };
        assert!(differences(&a.config(), &a.config()).is_empty());
        assert_eq!(
            differences(&a.config(), &b.config()),
            ["replicas: 1 in the stream, 3 asked", "max-age: unlimited in the stream, 86400s asked"]
        );
    }
}
