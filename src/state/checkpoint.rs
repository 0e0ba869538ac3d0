//! The checkpoint file: what it holds, its bytes, writing it atomically and reading it back.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Read;
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
    /// What serde cannot check: VLAN tags that hold no more ids than they have room for.
    fn check(&mut self) -> Result<(), String> {
        let vlans_ok = self.table.hosts.iter().all(|h| h.vlan.is_valid())
            && self.alert_windows.iter().flatten().all(|w| w.vlan.is_valid())
            && observations_mut(self).all(|o| o.vlan.is_valid());
        if !vlans_ok {
            return Err("VLAN tags out of range".into());
        }
        // Hours (seconds at the hour's start) that are times in nanoseconds, as the table makes them.
        const MAX_HOUR_S: i64 = i64::MAX / 1_000_000_000;
        if self.table.timeline.iter().any(|(h, _)| h.rem_euclid(3600) != 0 || !(-MAX_HOUR_S..=MAX_HOUR_S).contains(h)) {
            return Err("timeline hour out of range".into());
        }
        Ok(())
    }

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
        Ok((mut cp, [])) => {
            cp.check()?;
            Ok(cp)
        }
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
    crate::output::files::write_atomic_mode(&path, &bytes, true, 0o600)
        .map_err(|error| StateError::Io { path: path.clone(), error })?;
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;
    use crate::alert::engine::{AlertEngine, EngineConfig};
    use crate::host::HostTable;
    use crate::observation::{Attribution, Detail, DnsDetail};
    use crate::rules::load::load as load_rules;

    fn rules() -> Arc<Rules> {
        Arc::new(Rules::new(load_rules(None).expect("built-in rules")))
    }

    /// A DNS observation of `domain` (matched by the first rule whose pattern it is) by host `n`.
    fn dns(rules: &Rules, n: u32, ts_ns: i64, rule: u32) -> Observation {
        let host = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        let resolver = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 53));
        let detail = Detail::Dns(DnsDetail { id: 1, qtype: 1, rcode: Some(0), answers: vec![], response_only: false });
        let mut o = Observation::test_pending(ts_ns, (host, 40000), (resolver, 53), host, detail);
        o.attribution = Attribution::Name;
        o.rule = rule;
        o.domain = format!("h{n}.{}", rules.rule(rule).id);
        o.host_mac = Some([2, 0, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        o
    }

    /// A checkpoint of `hosts` hosts, each with a few observations, and their alert windows.
    fn sample(hosts: u32) -> (Checkpoint, Arc<Rules>) {
        let rules = rules();
        let nrules = rules.set.rules.len() as u32;
        let mut table = HostTable::new(usize::MAX);
        let mut engine = AlertEngine::new(EngineConfig {
            interval_ns: 60_000_000_000,
            alert_all: true,
            sensor: "test".into(),
            cutoff_override: Some(0),
        });
        for n in 0..hosts {
            for k in 0..3 {
                let o = dns(&rules, n, 1_700_000_000_000_000_000 + i64::from(n) * 1000 + k, (n + k as u32) % nrules);
                table.add(&o, &rules, Some(0));
                engine.observe(&o, &rules);
            }
        }
        let mut cp = Checkpoint {
            kavwatch_version: "0.1.0".into(),
            sensor: "test".into(),
            saved_at_ns: 1,
            first_start_ns: 2,
            first_ts: Some(3),
            last_ts: Some(4),
            observations: u64::from(hosts) * 3,
            events: u64::from(hosts) * 3,
            cutoff_override: Some(0),
            resolvers: vec![IpAddr::V4(Ipv4Addr::new(10, 255, 0, 53))],
            rule_ids: vec![],
            tunnels: vec![],
            table: table.snapshot(),
            alert_windows: Some(engine.windows_state()),
        };
        cp.name_numbers(&rules);
        (cp, rules)
    }

    fn dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("kavwatch-state-{tag}-")).tempdir().unwrap()
    }

    #[test]
    fn round_trip_through_the_file_gives_the_same_table_and_windows() {
        let (cp, rules) = sample(50);
        let d = dir("rt");
        let info = save(d.path(), &cp).unwrap();
        assert_eq!(info.path, d.path().join(FILE_NAME));
        assert_eq!(std::fs::metadata(&info.path).unwrap().len(), info.bytes);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&info.path).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "the checkpoint is the owner's only: {mode:o}");
        let mut back = load(d.path(), 1000).unwrap().expect("a checkpoint");
        assert_eq!(back, cp);
        assert_eq!(back.renumber(&rules), 0);
        // The table restored gives the same hosts, and snapshots to the same state again.
        let t = HostTable::restore(back.table.clone(), usize::MAX);
        assert_eq!(t.len(), 50);
        assert_eq!(t.snapshot(), cp.table);
        let mut e = AlertEngine::new(EngineConfig {
            interval_ns: 60_000_000_000,
            alert_all: true,
            sensor: "test".into(),
            cutoff_override: Some(0),
        });
        e.restore_windows(back.alert_windows.clone().unwrap());
        assert_eq!(Some(e.windows_state()), cp.alert_windows);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn missing_is_none_and_fresh_sets_aside() {
        let d = dir("none");
        assert!(load(d.path(), 10).unwrap().is_none());
        assert_eq!(set_aside(d.path()).unwrap(), None);
        save(d.path(), &sample(2).0).unwrap();
        let old = set_aside(d.path()).unwrap().unwrap();
        assert_eq!(old, d.path().join("live.checkpoint.old"));
        assert!(load(d.path(), 10).unwrap().is_none());
    }

    /// Saves a good checkpoint, spoils its bytes with `spoil`, loads: damaged, set aside.
    fn damaged(tag: &str, spoil: impl Fn(&mut Vec<u8>), max_hosts: usize, reason: &str) {
        let d = dir(tag);
        let info = save(d.path(), &sample(20).0).unwrap();
        let mut bytes = std::fs::read(&info.path).unwrap();
        spoil(&mut bytes);
        std::fs::write(&info.path, &bytes).unwrap();
        match load(d.path(), max_hosts) {
            Err(e @ StateError::Damaged { .. }) => {
                let StateError::Damaged { reason: r, set_aside, .. } = &e else { unreachable!() };
                assert!(r.contains(reason), "{tag}: {e}");
                assert!(e.to_string().contains("damaged") && e.to_string().contains(FILE_NAME), "{e}");
                assert!(set_aside.file_name().unwrap().to_str().unwrap().starts_with("live.checkpoint.damaged-"));
                assert_eq!(std::fs::read(set_aside).unwrap(), bytes, "set aside as it was");
            }
            other => panic!("{tag}: {other:?}"),
        }
        assert!(!info.path.exists());
        assert!(load(d.path(), max_hosts).unwrap().is_none(), "next start: fresh");
    }

    #[test]
    fn bad_magic() {
        damaged("magic", |b| b[0] ^= 1, 1000, "bad magic");
    }

    #[test]
    fn bad_version() {
        damaged("version", |b| b[8] = 9, 1000, "format version 9");
    }

    #[test]
    fn bad_hash() {
        damaged("hash", |b| *b.last_mut().unwrap() ^= 0x40, 1000, "SHA-256");
    }

    #[test]
    fn truncated() {
        damaged("trunc", |b| b.truncate(b.len() / 2), 1000, "truncated");
        damaged("trunc-header", |b| b.truncate(10), 1000, "shorter than its header");
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        damaged("huge", |b| b[12..20].copy_from_slice(&u64::MAX.to_le_bytes()), 1000, "more than the");
        // The real length, but past the bound for a small table.
        let (cp, _) = sample(20);
        let len = encode(&cp).unwrap().len() - HEADER_LEN;
        assert!(decode(&encode(&cp).unwrap(), len as u64 - 1).unwrap_err().contains("more than the"));
    }

    #[test]
    fn a_good_hash_over_a_bad_payload_is_damaged_not_a_panic() {
        let mut bytes = MAGIC.to_vec();
        let payload = vec![0xff; 64];
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(&payload));
        bytes.extend_from_slice(&payload);
        assert!(decode(&bytes, 1 << 20).unwrap_err().contains("does not decode"));
    }

    #[test]
    fn a_timeline_hour_past_the_time_range_is_damaged() {
        // Found by the fuzz target: the report turns hours into nanoseconds.
        let (mut cp, _) = sample(1);
        cp.table.timeline = vec![(i64::MAX / 3600 * 3600, vec![])];
        let bytes = encode(&cp).unwrap();
        assert_eq!(decode(&bytes, u64::MAX).unwrap_err(), "timeline hour out of range");
        cp.table.timeline = vec![(1_700_000_000 / 3600 * 3600, vec![])];
        assert!(decode(&encode(&cp).unwrap(), u64::MAX).is_ok());
    }

    #[test]
    fn rules_are_numbered_again_by_id() {
        let (mut cp, rules) = sample(4);
        // Saved by a process whose rules were in another order (rotated by one), and whose
        // rule 0 has since been removed.
        cp.rule_ids.rotate_left(1);
        cp.rule_ids[0] = "gone".into();
        let saved: Vec<(u32, String)> =
            cp.table.hosts.iter().flat_map(|h| &h.recent).map(|o| (o.rule, o.domain.clone())).collect();
        let expect: Vec<(String, String)> =
            saved.iter().filter(|(r, _)| *r != 0).map(|(r, d)| (cp.rule_ids[*r as usize].clone(), d.clone())).collect();
        let dropped = cp.renumber(&rules);
        let got: Vec<(String, String)> = cp
            .table
            .hosts
            .iter()
            .flat_map(|h| &h.recent)
            .map(|o| (rules.rule(o.rule).id.clone(), o.domain.clone()))
            .collect();
        assert_eq!(got, expect);
        let gone_in_windows = cp.alert_windows.as_ref().unwrap().iter().filter(|w| w.last.is_none()).count();
        assert_eq!(dropped, saved.len() - expect.len() + gone_in_windows);
        assert!(dropped > 0);
    }

    #[test]
    fn tunnels_are_numbered_again_by_layers() {
        use crate::decode::TunnelKind;
        let (mut cp, rules) = sample(2);
        let mut t = Tunnels::default();
        t.push(TunnelLayer::new(TunnelKind::Vxlan, Some(4242)));
        let id = intern::intern(&t);
        cp.table.hosts[0].tunnel = id;
        cp.name_numbers(&rules);
        assert_eq!(cp.tunnels, vec![(id, t.as_slice().to_vec())]);
        // Another process numbered it 77.
        let other: TunnelId = postcard::from_bytes(&postcard::to_stdvec(&77u32).unwrap()).unwrap();
        assert_ne!(other, id);
        cp.table.hosts[0].tunnel = other;
        cp.tunnels[0].0 = other;
        cp.renumber(&rules);
        assert_eq!(cp.table.hosts[0].tunnel, id);
        assert_eq!(intern::layers(cp.table.hosts[0].tunnel).as_slice(), t.as_slice());
        assert_eq!(cp.table.hosts[1].tunnel, TunnelId::NONE);
    }

    /// Writes the seeds of the `checkpoint` fuzz target (fuzz/corpus/checkpoint/): a whole small
    /// file, the same truncated, and its payload alone (what the fuzzer mutates past the hash).
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/checkpoint");
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = encode(&sample(2).0).unwrap();
        std::fs::write(dir.join("valid-2-hosts"), &bytes).unwrap();
        std::fs::write(dir.join("truncated-2-hosts"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(dir.join("payload-2-hosts"), &bytes[HEADER_LEN..]).unwrap();
    }

    /// Size and time at 100 000 hosts: `cargo test --release --lib state -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_100k_hosts() {
        let (cp, _) = sample(100_000);
        let d = dir("100k");
        let info = save(d.path(), &cp).unwrap();
        let t = Instant::now();
        let back = load(d.path(), 1_000_000).unwrap().unwrap();
        let load_time = t.elapsed();
        let t = Instant::now();
        let table = HostTable::restore(back.table, 1_000_000);
        let restore_time = t.elapsed();
        let t = Instant::now();
        let _ = table.snapshot();
        let snapshot_time = t.elapsed();
        eprintln!(
            "100k hosts: {} bytes ({:.1} MB); snapshot {:?} + save (encode, write, fsync, rename) {:?}; load (read, hash, decode) {:?} + restore {:?}",
            info.bytes,
            info.bytes as f64 / 1e6,
            snapshot_time,
            info.elapsed,
            load_time,
            restore_time
        );
        assert_eq!(table.len(), 100_000);
    }
}
