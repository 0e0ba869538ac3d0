//! Live capture on real interfaces: a network namespace holding a veth pair made by the test,
//! `kavwatch live` started in it, and the helpers to replay captures and wait for its output.
//! Needs root (CI runs as root), iproute2 and tcpreplay.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tool;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (loudly) where the test cannot run; CI runs as root, where it never skips.
#[allow(unused_macros)]
macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: live capture tests need root (CI runs them as root)");
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use need_root;

pub fn sh(cmd: &mut Command) {
    let o = cmd.output().expect("running a system command");
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A network namespace holding a veth pair `r0` (replay side) <-> `c0` (capture side).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("kwl-{}-{tag}", std::process::id());
        let _ = tool("ip", "iproute2").args(["netns", "del", &name]).output();
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "add", "r0", "type", "veth", "peer", "name", "c0"]);
        // No IPv6 autoconfiguration chatter: the link carries only what the test replays.
        sh(Command::new("ip").args(["netns", "exec", &ns.name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]));
        for l in ["lo", "r0", "c0"] {
            ns.ip(&["link", "set", l, "up"]);
        }
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        sh(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    pub fn exec(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    pub fn replay(&self, files: &[PathBuf], extra: &[&str]) {
        tool("tcpreplay", "tcpreplay");
        let mut c = self.exec("tcpreplay");
        c.args(["-q", "-i", "r0"]).args(extra);
        c.args(files);
        sh(&mut c);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

pub struct Live {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Live {
    /// Starts `kavwatch live -i c0 ARGS` in the namespace and waits until it captures.
    pub fn start(ns: &Netns, dir: &Path, args: &[&str]) -> Live {
        Live::start_env(ns, dir, args, &[])
    }

    /// [`Live::start`] with these environment variables set.
    pub fn start_env(ns: &Netns, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Live {
        let stderr =
            dir.join(format!("live-{}.err", args.join("_").replace('/', "_").chars().take(60).collect::<String>()));
        // Each run keeps its checkpoints in the test's directory, never in the machine's.
        let state = dir.join("state");
        let own_state = (!args.contains(&"--state-dir")).then_some(["--state-dir", state.to_str().unwrap()]);
        let child = ns
            .exec(env!("CARGO_BIN_EXE_kavwatch"))
            .args(["live", "-i", "c0"])
            .args(args)
            .args(own_state.iter().flatten())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting kavwatch live");
        let live = Live { child, stderr };
        live.wait_stderr("kavwatch: live on", Duration::from_secs(10));
        live
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let t = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(t.elapsed() < timeout, "no {needle:?} from kavwatch live: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> (i32, String) {
        // Let the workers ship what the last packets gave (they do every 200 ms).
        std::thread::sleep(Duration::from_millis(600));
        self.signal(libc::SIGTERM);
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), self.stderr());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "kavwatch live did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 10 s) until the events file holds at least `n` lines; returns them.
pub fn events_at_least(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let t = Instant::now();
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n || t.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
