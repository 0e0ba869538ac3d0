//! Connecting to NATS as its users expect: servers as `nats://HOST:PORT` (or `tls://`),
//! comma-separated for a cluster; `--nats-creds FILE` (NKey/JWT); user and password or a token
//! from the environment (`NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`), never from the command
//! line; `--nats-ca FILE` for TLS. The client reconnects by itself; [`ConnState`] keeps what
//! its events said for the counters and for one clear line on a permissions error.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerError};

use super::FleetError;

#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, one per server.
    pub servers: Vec<String>,
    pub creds: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// The connection's name, as `nats server report connections` shows it.
    pub name: String,
}

impl NatsConfig {
    /// Checks the URLs and that the credential and CA files can be read.
    pub fn new(urls: &str, creds: Option<PathBuf>, ca: Option<PathBuf>, name: &str) -> Result<NatsConfig, FleetError> {
        let mut servers = Vec::new();
        for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let rest = u.strip_prefix("nats://").or_else(|| u.strip_prefix("tls://"));
            let Some(rest) = rest else {
                return Err(FleetError::BadUrl(u.into()));
            };
            if rest.contains('@') {
                return Err(FleetError::SecretInUrl(u.into()));
            }
            let rest = rest.trim_end_matches('/');
            let ok =
                rest.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok || u.parse::<async_nats::ServerAddr>().is_err() {
                return Err(FleetError::BadUrl(u.into()));
            }
            servers.push(u.to_string());
        }
        if servers.is_empty() || servers.len() > 64 {
            return Err(FleetError::BadUrl(urls.into()));
        }
        for (what, p) in [("--nats-creds", &creds), ("--nats-ca", &ca)] {
            if let Some(p) = p {
                std::fs::metadata(p).map_err(|err| FleetError::File { what, path: p.display().to_string(), err })?;
            }
        }
        Ok(NatsConfig { servers, creds, ca, name: name.to_string() })
    }

    fn tls(&self) -> bool {
        self.ca.is_some() || self.servers.iter().any(|s| s.starts_with("tls://"))
    }
}

/// What the client's events said, shared with the thread that publishes or collects.
#[derive(Debug, Default)]
pub struct ConnState {
    pub connected: AtomicBool,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    connects: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// The server refused a subject (`Permissions Violation ...`): said once on stderr.
    pub denied: Mutex<Option<String>>,
}

impl ConnState {
    fn on_event(&self, e: Event) {
        if std::env::var_os("KAVWATCH_DEBUG_NATS").is_some() {
            eprintln!("kavwatch: NATS event: {e}");
        }
        match e {
            Event::Connected => {
                self.connected.store(true, Ordering::Relaxed);
                if self.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Disconnected | Event::Closed => {
                self.connected.store(false, Ordering::Relaxed);
                self.set_error(format!("{e}"));
            }
            Event::ServerError(ServerError::Other(msg))
                if msg.to_ascii_lowercase().contains("permissions violation") =>
            {
                self.set_error(msg.clone());
                let mut d = self.denied.lock().unwrap_or_else(|p| p.into_inner());
                if d.is_none() {
                    eprintln!("kavwatch: NATS refused a subject: {msg} (the user's permissions must allow it)");
                    *d = Some(msg);
                }
            }
            other => self.set_error(format!("{other}")),
        }
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// The runtime the NATS client lives on: one worker thread, beside the capture threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, FleetError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kavwatch-nats")
        .enable_all()
        .build()
        .map_err(|e| FleetError::Setup(format!("NATS runtime: {e}")))
}

/// Connects. With `wait`, the first server must answer now (commands that do one thing);
/// without, the client keeps trying in the background (a sensor started before its servers).
pub async fn connect(cfg: &NatsConfig, state: Arc<ConnState>, wait: bool) -> Result<Client, FleetError> {
    let st = state.clone();
    let mut o = ConnectOptions::new()
        .name(&cfg.name)
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None)
        .retain_servers_order()
        .reconnect_delay_callback(|attempts| Duration::from_millis((100u64 << attempts.min(6)).min(2_000)))
        .event_callback(move |e| {
            let st = st.clone();
            async move { st.on_event(e) }
        });
    if !wait {
        o = o.retry_on_initial_connect();
    }
    if let Some(p) = &cfg.creds {
        o = o.credentials_file(p).await.map_err(|err| FleetError::File {
            what: "--nats-creds",
            path: p.display().to_string(),
            err,
        })?;
    } else if let (Ok(u), Ok(p)) = (std::env::var("NATS_USER"), std::env::var("NATS_PASSWORD")) {
        o = o.user_and_password(u, p);
    } else if let Ok(t) = std::env::var("NATS_TOKEN") {
        o = o.token(t);
    }
    if cfg.tls() {
        o = o.require_tls(true);
    }
    if let Some(ca) = &cfg.ca {
        o = o.add_root_certificates(ca.clone());
    }
    let client = o
        .connect(cfg.servers.clone())
        .await
        .map_err(|e| FleetError::Nats(format!("{}: {e}", cfg.servers.join(","))))?;
    if wait {
        state.connected.store(true, Ordering::Relaxed);
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let c = NatsConfig::new("nats://127.0.0.1:4222, nats://h2:4223", None, None, "x").unwrap();
        assert_eq!(c.servers, ["nats://127.0.0.1:4222", "nats://h2:4223"]);
        assert!(matches!(NatsConfig::new("http://h:1", None, None, "x"), Err(FleetError::BadUrl(_))));
        assert!(matches!(NatsConfig::new("nats://h", None, None, "x"), Err(FleetError::BadUrl(_))));
        assert!(matches!(NatsConfig::new("nats://u:p@h:4222", None, None, "x"), Err(FleetError::SecretInUrl(_))));
        assert!(matches!(NatsConfig::new("", None, None, "x"), Err(FleetError::BadUrl(_))));
        assert!(matches!(
            NatsConfig::new("nats://h:4222", Some("/nonexistent/creds".into()), None, "x"),
            Err(FleetError::File { .. })
        ));
    }
}
