//! The checkpoint file: what it holds, its bytes, writing it atomically and reading it back.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StateError;
use crate::alert::engine::WindowState;
use crate::decode::intern::{self, TunnelId};
use crate::decode::{TunnelLayer, Tunnels};
use crate::host::HostTableState;
use crate::observation::Observation;
use crate::rules::matcher::Rules;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "live.checkpoint";
pub const MAGIC: &[u8; 8] = b"KAVWCKPT";
/// Bumped whenever [`Checkpoint`] changes shape: an older file is then set aside, not misread.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, version, payload length, SHA-256.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// The alert windows of a checkpoint.
pub type AlertWindowsState = Vec<WindowState>;

/// Everything a checkpoint holds (see the module comment of [`crate::state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub kavwatch_version: String,
    pub sensor: String,
    /// Wall-clock time of the save (ns since the epoch).
    pub saved_at_ns: i64,
    /// Wall-clock time of the first start whose hosts this holds.
    pub first_start_ns: i64,
    /// First and last packet time over every run since the first start.
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub observations: u64,
    pub events: u64,
    /// `--cutoff` of the run that saved it (verdict facts were judged with it).
    pub cutoff_override: Option<i64>,
    /// Resolvers learned from the traffic.
    pub resolvers: Vec<IpAddr>,
    /// The id of each rule, by the number observations carry.
    pub rule_ids: Vec<String>,
    /// The layers of each tunnel stack, by the number hosts and observations carry.
    pub tunnels: Vec<(TunnelId, Vec<TunnelLayer>)>,
    pub table: HostTableState,
    /// `None` when alerts were off.
    pub alert_windows: Option<AlertWindowsState>,
}

/// What a save wrote.
#[derive(Debug, Clone)]
pub struct SaveInfo {
    pub path: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// The longest payload read for a table of `max_hosts`: 4 KiB per host and 64 MiB. Checked
/// against the header before anything is allocated.
pub fn payload_limit(max_hosts: usize) -> u64 {
    (max_hosts as u64).saturating_mul(4096).saturating_add(64 << 20)
}

fn observations_mut(cp: &mut Checkpoint) -> impl Iterator<Item = &mut Observation> {
    let hosts = cp.table.hosts.iter_mut().flat_map(|h| h.recent.iter_mut());
    let windows = cp.alert_windows.iter_mut().flatten().filter_map(|w| w.last.as_mut());
    hosts.chain(windows)
}

impl Checkpoint {
    /// Writes down what this process's rule and tunnel numbers stand for (before a save).
    pub fn name_numbers(&mut self, rules: &Rules) {
        self.rule_ids = rules.set.rules.iter().map(|r| r.id.clone()).collect();
        let mut ids: Vec<TunnelId> = self.table.hosts.iter().map(|h| h.tunnel).collect();
        ids.extend(observations_mut(self).map(|o| o.tunnel));
        ids.sort();
        ids.dedup();
        self.tunnels = ids
            .into_iter()
            .filter(|t| !t.is_none() && *t != TunnelId::UNKNOWN)
            .map(|t| (t, intern::layers(t).as_slice().to_vec()))
            .collect();
    }

    /// Numbers rules and tunnels as this process does (after a load). An observation whose rule
    /// is gone from `rules` is dropped (a window's last one: the window goes at restore if it
    /// had pending ones); returns how many were.
    pub fn renumber(&mut self, rules: &Rules) -> usize {
        let by_id: HashMap<&str, u32> =
            rules.set.rules.iter().enumerate().map(|(i, r)| (r.id.as_str(), i as u32)).collect();
        let rule_map: Vec<Option<u32>> = self.rule_ids.iter().map(|id| by_id.get(id.as_str()).copied()).collect();
        let tunnel_map: BTreeMap<TunnelId, TunnelId> = self
            .tunnels
            .iter()
            .map(|(old, layers)| {
                let mut t = Tunnels::default();
                let mut ok = true;
                for l in layers {
                    ok &= t.push(*l);
                }
                (*old, if ok { intern::intern(&t) } else { TunnelId::UNKNOWN })
            })
            .collect();
        let tunnel = |t: TunnelId| -> TunnelId {
            if t.is_none() || t == TunnelId::UNKNOWN {
                t
            } else {
                tunnel_map.get(&t).copied().unwrap_or(TunnelId::UNKNOWN)
            }
        };
        let rule = |r: u32| -> Option<u32> { rule_map.get(r as usize).copied().flatten() };
        let fix = |o: &mut Observation| -> bool {
            o.tunnel = tunnel(o.tunnel);
            o.fallback_rule = o.fallback_rule.and_then(rule);
            match rule(o.rule) {
                Some(r) => {
                    o.rule = r;
                    true
                }
                None => false,
            }
        };
        let mut dropped = 0;
        for h in &mut self.table.hosts {
            h.tunnel = tunnel(h.tunnel);
            let before = h.recent.len();
            h.recent.retain_mut(|o| fix(o));
            dropped += before - h.recent.len();
        }
        for w in self.alert_windows.iter_mut().flatten() {
            if let Some(o) = w.last.as_mut()
                && !fix(o)
            {
                w.last = None;
                dropped += 1;
            }
        }
        self.rule_ids = rules.set.rules.iter().map(|r| r.id.clone()).collect();
        dropped
    }
}

/// The file's bytes: header and payload.
pub fn encode(cp: &Checkpoint) -> Result<Vec<u8>, StateError> {
    let payload = postcard::to_stdvec(cp).map_err(|e| StateError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks a header; returns the payload length it announces.
fn check_header(h: &[u8], limit: u64) -> Result<u64, String> {
    if h.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than its header", h.len()));
    }
    if &h[..8] != MAGIC {
        return Err("not a kavwatch checkpoint (bad magic)".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, this kavwatch reads {FORMAT_VERSION}"));
    }
    let len = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
    if len > limit {
        return Err(format!("payload of {len} bytes announced, more than the {limit} allowed for --max-hosts"));
    }
    Ok(len)
}

fn check_payload(h: &[u8], payload: &[u8]) -> Result<Checkpoint, String> {
    if Sha256::digest(payload).as_slice() != &h[20..HEADER_LEN] {
        return Err("SHA-256 mismatch".into());
    }
    decode_payload(payload)
}

/// The payload alone (no header, no hash), as [`decode`] reads it after its checks.
pub fn decode_payload(payload: &[u8]) -> Result<Checkpoint, String> {
    match postcard::take_from_bytes::<Checkpoint>(payload) {
        Ok((cp, [])) => Ok(cp),
        Ok((_, rest)) => Err(format!("{} bytes after the payload", rest.len())),
        Err(e) => Err(format!("payload does not decode: {e}")),
    }
}

/// A whole file's bytes; `Err` says what is wrong with them.
pub fn decode(bytes: &[u8], limit: u64) -> Result<Checkpoint, String> {
    let len = check_header(bytes, limit)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!("payload of {} bytes, the header says {len} (truncated?)", payload.len()));
    }
    check_payload(bytes, payload)
}

/// Creates the state directory (mode 0750) if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|error| StateError::Io { path: dir.to_path_buf(), error })
}

/// Writes `DIR/live.checkpoint` atomically: a new file with an unpredictable name (created
/// exclusively, mode 0600), fsynced, renamed over the old one, then the directory fsynced.
pub fn save(dir: &Path, cp: &Checkpoint) -> Result<SaveInfo, StateError> {
    let t = Instant::now();
    let bytes = encode(cp)?;
    ensure_dir(dir)?;
    let path = dir.join(FILE_NAME);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| StateError::Io { path, error }
    };
    let mut tmp =
        tempfile::Builder::new().prefix(".live.checkpoint.").suffix(".tmp").tempfile_in(dir).map_err(io(dir))?;
    tmp.write_all(&bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist(&path).map_err(|e| StateError::Io { path: path.clone(), error: e.error })?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(SaveInfo { path, bytes: bytes.len() as u64, elapsed: t.elapsed() })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Renames the checkpoint to `live.checkpoint.SUFFIX` (never over an existing file: a number
/// is added); returns the new path.
fn set_aside_as(path: &Path, suffix: &str) -> std::io::Result<PathBuf> {
    let mut n = 0;
    loop {
        let name = if n == 0 { format!("{FILE_NAME}.{suffix}") } else { format!("{FILE_NAME}.{suffix}.{n}") };
        let to = path.with_file_name(name);
        if std::fs::symlink_metadata(&to).is_err() {
            std::fs::rename(path, &to)?;
            return Ok(to);
        }
        n += 1;
    }
}

/// Reads `DIR/live.checkpoint`: `Ok(None)` when there is none; a damaged one is set aside as
/// `live.checkpoint.damaged-<unix time>` and reported as [`StateError::Damaged`].
pub fn load(dir: &Path, max_hosts: usize) -> Result<Option<Checkpoint>, StateError> {
    let path = dir.join(FILE_NAME);
    let mut f = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::Io { path, error }),
    };
    let limit = payload_limit(max_hosts);
    let io = |error| StateError::Io { path: path.clone(), error };
    let file_len = f.metadata().map_err(io)?.len();
    let mut header = Vec::with_capacity(HEADER_LEN);
    (&mut f).take(HEADER_LEN as u64).read_to_end(&mut header).map_err(io)?;
    let checked = check_header(&header, limit).and_then(|len| {
        if file_len != HEADER_LEN as u64 + len {
            return Err(format!("{file_len} bytes, the header says {} (truncated?)", HEADER_LEN as u64 + len));
        }
        let mut payload = Vec::with_capacity(len as usize);
        (&mut f).take(len).read_to_end(&mut payload).map_err(|e| e.to_string())?;
        if payload.len() as u64 != len {
            return Err(format!("{} bytes of payload read, the header says {len}", payload.len()));
        }
        check_payload(&header, &payload)
    });
    match checked {
        Ok(cp) => Ok(Some(cp)),
        Err(reason) => match set_aside_as(&path, &format!("damaged-{}", now_secs())) {
            Ok(set_aside) => Err(StateError::Damaged { path, reason, set_aside }),
            Err(error) => Err(StateError::DamagedStays { path, reason, error }),
        },
    }
}

/// `--fresh`: sets any checkpoint aside as `live.checkpoint.old`; returns where it went.
pub fn set_aside(dir: &Path) -> Result<Option<PathBuf>, StateError> {
    let path = dir.join(FILE_NAME);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let old = path.with_file_name(format!("{FILE_NAME}.old"));
    std::fs::rename(&path, &old).map_err(|error| StateError::Io { path, error })?;
    Ok(Some(old))
}
