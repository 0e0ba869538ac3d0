//! The fleet: sensors publish what they find to NATS JetStream, and a collector keeps the one
//! answer for every site. A sensor (`live` or `analyze` with `--publish`) sends each
//! observation, as its event JSON with the sensor's name, to `kavwatch.obs.<sensor>`, and a
//! status (counters, drops, undecoded share) to `kavwatch.status.<sensor>`; every publish waits
//! for JetStream's acknowledgement and carries a stable `Nats-Msg-Id`, and what cannot be sent
//! waits in the sensor's on-disk spool ([`publish`]). `fleet init` makes the `KAVWATCH` stream
//! ([`stream`]). `fleet collect` reads that stream in order and folds it into the host table of
//! the whole fleet with the rules of `report merge` ([`table`]), checkpointing the table with
//! the last stream sequence it applied, so that a restart resumes where it stopped and counts
//! nothing twice ([`collect`]).

pub mod collect;
pub mod message;
pub mod nats;
pub mod publish;
pub mod stream;
pub mod table;

/// The stream every kavwatch subject goes to.
pub const STREAM: &str = "KAVWATCH";
/// Its subjects.
pub const SUBJECTS: &str = "kavwatch.>";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("--nats/--publish {0:?}: expected nats://HOST:PORT or tls://HOST:PORT (comma-separated for a cluster)")]
    BadUrl(String),
    #[error(
        "--nats/--publish {0:?}: credentials in the URL would show in the process list; use --nats-creds FILE or NATS_USER/NATS_PASSWORD or NATS_TOKEN in the environment"
    )]
    SecretInUrl(String),
    #[error("{what} {path}: {err}")]
    File { what: &'static str, path: String, err: std::io::Error },
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Setup(String),
}

/// A sensor name as one subject token: NATS subjects cannot hold `.`, `*`, `>` or white space,
/// so anything but ASCII letters, digits, `-` and `_` becomes `_` (the name itself travels
/// intact in the message).
pub fn subject_token(sensor: &str) -> String {
    let t: String = sensor
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

pub fn obs_subject(sensor: &str) -> String {
    format!("kavwatch.obs.{}", subject_token(sensor))
}

pub fn status_subject(sensor: &str) -> String {
    format!("kavwatch.status.{}", subject_token(sensor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_single_tokens() {
        assert_eq!(obs_subject("site-1"), "kavwatch.obs.site-1");
        assert_eq!(status_subject("a.b *>c"), "kavwatch.status.a_b___c");
        assert_eq!(obs_subject(""), "kavwatch.obs._");
    }
}
