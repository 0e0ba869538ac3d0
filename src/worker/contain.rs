//! Containment: a bug in a protocol parser costs the packet that found it, not the sensor.
//!
//! Every byte on the wire may be crafted, and a panic in a worker would otherwise end the
//! thread (and with it part of a live sensor, or the whole report of `analyze`). The per-packet
//! work runs inside [`contained`]: a panic there is caught, its message kept instead of printed,
//! counted in [`PanicStats`] by protocol, and the first packet of each kind is saved to the
//! state directory (bounded) with one line on stderr, so that a bug report has its input.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};

use serde::ser::{Serialize, SerializeMap, Serializer};

/// What was being parsed when a panic was caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Link, tunnel, IP and transport headers (the reader).
    Decode,
    Dns,
    Tls,
    Http,
    Quic,
    Dhcp,
    /// TCP reassembly and flow bookkeeping, before a protocol is known.
    Tcp,
    /// Outside one packet's work (timers, hand-over): the worker was restarted. Reported, but
    /// counted in `worker_restarts`, not as a packet.
    Worker,
}

impl Stage {
    const ALL: [Stage; 8] =
        [Stage::Decode, Stage::Dns, Stage::Tls, Stage::Http, Stage::Quic, Stage::Dhcp, Stage::Tcp, Stage::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Dns => "dns",
            Stage::Tls => "tls",
            Stage::Http => "http",
            Stage::Quic => "quic",
            Stage::Dhcp => "dhcp",
            Stage::Tcp => "tcp",
            Stage::Worker => "worker",
        }
    }
}

/// Panics caught, per stage. Serialised as `{"total": N, "tls": N, ...}` (stages with none left out).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PanicStats {
    counts: [u64; Stage::ALL.len()],
}

impl PanicStats {
    pub fn count(&mut self, stage: Stage) {
        self.counts[stage as usize] += 1;
    }
    pub fn get(&self, stage: Stage) -> u64 {
        self.counts[stage as usize]
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    pub fn add(&mut self, o: &PanicStats) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
    }
}

impl Serialize for PanicStats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("total", &self.total())?;
        for st in Stage::ALL {
            if self.get(st) > 0 {
                m.serialize_entry(st.as_str(), &self.get(st))?;
            }
        }
        m.end()
    }
}

thread_local! {
    /// Set while this thread runs contained work: the panic hook then keeps quiet.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

static HOOK: Once = Once::new();
static SAMPLE_DIR: OnceLock<PathBuf> = OnceLock::new();
/// Stages already reported on stderr (one bit each): one line per kind per process.
static REPORTED: AtomicU32 = AtomicU32::new(0);
static SAMPLE_LOCK: Mutex<()> = Mutex::new(());
/// At most this many bytes of a packet are saved.
pub const SAMPLE_MAX_BYTES: usize = 64 * 1024;
/// At most this many samples are kept in the state directory, over all runs (a sensor restarted
/// again and again must not fill its disk with them).
pub const SAMPLES_MAX: usize = 32;
const SAMPLE_PREFIX: &str = "parser-panic-";

/// Where the first packet of each kind of caught panic is saved. Set once, at start.
pub fn set_sample_dir(dir: PathBuf) {
    let _ = SAMPLE_DIR.set(dir);
}

/// The state directory's default: systemd's `$STATE_DIRECTORY`, else `/var/lib/kavwatch` when it
/// exists, else `kavwatch` in the system's temporary directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, separated by colons: the first is ours.
        let first = d.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return PathBuf::from(first);
    }
    let var = PathBuf::from("/var/lib/kavwatch");
    if var.is_dir() { var } else { std::env::temp_dir().join("kavwatch") }
}

fn install_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.with(|c| c.get()) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                let at = info.location().map(|l| format!("{}:{}: ", l.file(), l.line())).unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{at}{msg}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it comes back as `Err(message)` instead of unwinding further.
pub fn contained<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    let was = CONTAINED.with(|c| c.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    r.map_err(|_| LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic".into()))
}

/// Says once per stage (per process) on stderr what was caught, and saves that first packet's
/// bytes (at most [`SAMPLE_MAX_BYTES`]) to the state directory for a bug report.
pub fn report(stage: Stage, message: &str, bytes: &[u8]) {
    let bit = 1u32 << (stage as u32);
    if REPORTED.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    let message = message.replace('\n', " ");
    if stage == Stage::Worker {
        eprintln!(
            "kavwatch: bug: a panic in a worker outside one packet's work was contained ({message}); the worker was restarted and the flows it followed were lost (stats.worker_restarts, stats.flows_lost_to_restarts)"
        );
        return;
    }
    let _guard = SAMPLE_LOCK.lock();
    let saved = SAMPLE_DIR.get().cloned().unwrap_or_else(default_state_dir);
    let path = saved.join(format!("{SAMPLE_PREFIX}{}-{}.bin", stage.as_str(), std::process::id()));
    let kept = &bytes[..bytes.len().min(SAMPLE_MAX_BYTES)];
    let where_ = match save(&path, kept) {
        Ok(()) => format!("its {} bytes are in {}", kept.len(), path.display()),
        Err(e) => format!("its bytes could not be saved to {} ({e})", path.display()),
    };
    eprintln!(
        "kavwatch: bug: a panic in the {} parser was contained ({message}); the packet was skipped and {where_}; further ones are counted in stats.parser_panics",
        stage.as_str()
    );
}

/// Writes a new file without following a link planted at its name, unless the directory holds
/// [`SAMPLES_MAX`] samples already.
fn save(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        let held = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(SAMPLE_PREFIX))
            .count();
        if held >= SAMPLES_MAX {
            return Err(std::io::Error::other(format!("{held} samples are there already, the most kept")));
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)
}

/// Test-only hooks, read once from the environment: `KAVWATCH_TEST_PANIC=MARKER` makes the DNS,
/// TLS and HTTP parsers panic on a message containing MARKER; `KAVWATCH_TEST_PANIC_WORKER=MARKER`
/// makes the worker panic outside the per-packet containment after such a packet. They exist to
/// show the containment end to end; unset (always, in use) they cost one branch per message.
#[derive(Debug, Default, Clone)]
pub struct PlantedPanics {
    parser: Option<Box<[u8]>>,
    worker: Option<Box<[u8]>>,
}

impl PlantedPanics {
    pub fn from_env() -> PlantedPanics {
        let get = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(|v| v.into_encoded_bytes().into_boxed_slice());
        PlantedPanics { parser: get("KAVWATCH_TEST_PANIC"), worker: get("KAVWATCH_TEST_PANIC_WORKER") }
    }

    fn contains(marker: &Option<Box<[u8]>>, data: &[u8]) -> bool {
        marker.as_deref().is_some_and(|m| data.windows(m.len()).any(|w| w == m))
    }

    /// Panics if the parser marker is in `data`.
    #[inline]
    pub fn parser(&self, data: &[u8]) {
        if Self::contains(&self.parser, data) {
            panic!("planted parser panic (KAVWATCH_TEST_PANIC)");
        }
    }

    /// Whether the worker marker is in `data`.
    #[inline]
    pub fn worker(&self, data: &[u8]) -> bool {
        Self::contains(&self.worker, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_returned_with_its_place() {
        let r: Result<(), String> = contained(|| {
            let v: Vec<u8> = Vec::new();
            let _ = std::hint::black_box(&v)[0];
        });
        let e = r.unwrap_err();
        assert!(e.contains("index out of bounds") && e.contains("contain.rs"), "{e}");
        assert_eq!(contained(|| 7), Ok(7));
    }

    #[test]
    fn samples_are_bounded_and_never_follow_a_link() {
        let dir = std::env::temp_dir().join(format!("kavwatch-contain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A link planted at the sample's name: the write fails, the target is untouched.
        let target = dir.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let planted = dir.join(format!("{SAMPLE_PREFIX}tls-1.bin"));
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(save(&planted, b"packet").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        for i in 0..SAMPLES_MAX - 1 {
            save(&dir.join(format!("{SAMPLE_PREFIX}dns-{i}.bin")), b"packet").unwrap();
        }
        let err = save(&dir.join(format!("{SAMPLE_PREFIX}http-0.bin")), b"packet").unwrap_err();
        assert!(err.to_string().contains("the most kept"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stats_serialise_with_total_and_nonzero_stages() {
        let mut s = PanicStats::default();
        s.count(Stage::Tls);
        s.count(Stage::Tls);
        s.count(Stage::Decode);
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!({"total": 3, "tls": 2, "decode": 1}));
    }
}
