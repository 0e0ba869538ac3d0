//! Packaging: the files `kavwatch generate` writes (default configuration, man pages,
//! completions), and the Debian package built by packaging/build-deb.sh, installed with
//! `dpkg -i`, checked and purged.
//!
//! The package test changes the machine: it runs only as root with dpkg present (it prints
//! SKIPPED otherwise). It needs cargo-deb (`cargo install cargo-deb --locked`) and the Debian
//! packages man-db, bash-completion and systemd (for systemd-analyze); a missing tool is a
//! failure, not a skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kavwatch");

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

fn ok(prog: &str, args: &[&str]) -> String {
    let o = run(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kavwatch-package-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The long options of `kavwatch live`, from its --help.
fn live_long_options() -> BTreeSet<String> {
    let help = ok(BIN, &["live", "--help"]);
    let mut longs = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=') {
        if let Some(name) = word.strip_prefix("--") {
            let name: String = name.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            if !name.is_empty() {
                longs.insert(name);
            }
        }
    }
    longs
}

/// The key lines of the default configuration, uncommented: `key = value`.
fn config_key_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ')))
        .collect()
}

#[test]
fn default_config_is_all_comments_and_its_keys_are_live_options() {
    let text = ok(BIN, &["generate", "config"]);
    for line in text.lines() {
        assert!(line.is_empty() || line.starts_with('#'), "not a comment: {line:?}");
    }
    assert!(text.contains("kavwatch config check") && text.contains("kavwatch config show"), "header");
    let longs = live_long_options();
    assert!(longs.contains("interface") && longs.contains("report-interval"), "{longs:?}");
    let lines = config_key_lines(&text);
    let mut keys = BTreeSet::new();
    for line in &lines {
        let doc: toml::Table = toml::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not TOML: {e}"));
        assert_eq!(doc.len(), 1, "{line:?}");
        let key = doc.keys().next().unwrap().clone();
        assert!(longs.contains(&key), "{key} is not a long option of live ({longs:?})");
        assert!(keys.insert(key.clone()), "{key} twice");
    }
    // Every option of live is there but help, version and config (the file itself).
    let missing: Vec<_> =
        longs.iter().filter(|l| !keys.contains(*l) && !["help", "version", "config"].contains(&l.as_str())).collect();
    assert!(missing.is_empty(), "options missing from the file: {missing:?}");
    // All of it uncommented is one valid document with the defaults of --help.
    let all: toml::Table = toml::from_str(&lines.join("\n")).expect("the uncommented file parses");
    assert_eq!(all["interface"].as_array().map(Vec::len), Some(0));
    assert_eq!(all["engine"].as_str(), Some("afpacket"));
    assert_eq!(all["snaplen"].as_integer(), Some(65535));
    assert_eq!(all["no-promisc"].as_bool(), Some(false));
    assert_eq!(all["report-interval"].as_str(), Some("60s"));
    assert_eq!(all["alert"].as_array().map(Vec::len), Some(0));
    assert_eq!(all["alert-format"].as_str(), Some("json"));
    assert_eq!(all["syslog-facility"].as_integer(), Some(4));
    assert_eq!(all["bpf"].as_str(), Some("EXPR"), "options without a default: the value name");
    assert!(text.contains("(no default)\n# bpf = \"EXPR\""), "no default is said");
}

const PAGES: &[&str] = &[
    "kavwatch",
    "kavwatch-analyze",
    "kavwatch-live",
    "kavwatch-rules",
    "kavwatch-rules-check",
    "kavwatch-rules-match",
    "kavwatch-report",
    "kavwatch-report-merge",
    "kavwatch-config",
    "kavwatch-config-check",
    "kavwatch-config-show",
    "kavwatch-fleet",
    "kavwatch-fleet-init",
    "kavwatch-fleet-collect",
    "kavwatch-generate",
    "kavwatch-generate-man",
    "kavwatch-generate-completions",
    "kavwatch-generate-config",
];

#[test]
fn man_pages_and_completions_are_generated() {
    let d = tmpdir("generate");
    ok(BIN, &["generate", "man", d.join("man").to_str().unwrap()]);
    let got: BTreeSet<String> =
        std::fs::read_dir(d.join("man")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let want: BTreeSet<String> = PAGES.iter().map(|p| format!("{p}.1")).collect();
    assert_eq!(got, want);
    let live = std::fs::read_to_string(d.join("man/kavwatch-live.1")).unwrap();
    assert!(live.contains("kavwatch\\-live") && live.contains("report\\-interval"), "{live}");

    ok(BIN, &["generate", "completions", d.join("completions").to_str().unwrap()]);
    for f in ["kavwatch.bash", "_kavwatch", "kavwatch.fish"] {
        let text = std::fs::read_to_string(d.join("completions").join(f)).unwrap();
        assert!(text.contains("report-interval"), "{f}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(prog: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {prog}")]).output().is_ok_and(|o| o.status.success())
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "kavwatch"]).output();
    }
}

/// Completes the words (the last one is being typed) with the installed bash completion.
fn bash_complete(words: &str) -> String {
    let script = format!(
        "source /usr/share/bash-completion/bash_completion
         source /usr/share/bash-completion/completions/kavwatch
         COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}
         _kavwatch kavwatch \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
         echo \"${{COMPREPLY[*]}}\""
    );
    ok("bash", &["-c", &script]).trim().to_string()
}

const UNITS: &[&str] =
    &["kavwatch@.service", "kavwatch-report.service", "kavwatch-report.timer", "kavwatch-collect.service"];

#[test]
fn debian_package_installs_checks_and_purges() {
    if !is_root() || !have("dpkg") {
        println!("SKIPPED: the package test installs a .deb: it needs root and dpkg");
        return;
    }
    for (tool, package) in [
        ("cargo-deb", "cargo install cargo-deb --locked"),
        ("man", "apt-get install man-db"),
        ("systemd-analyze", "apt-get install systemd"),
    ] {
        assert!(have(tool), "{tool} is missing: {package}");
    }
    assert!(Path::new("/usr/share/bash-completion/bash_completion").exists(), "apt-get install bash-completion");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-deb.sh");
    let deb = PathBuf::from(ok(script.to_str().unwrap(), &[]).trim());
    let size = std::fs::metadata(&deb).unwrap_or_else(|e| panic!("{}: {e}", deb.display())).len();
    println!("package: {} ({size} bytes, {:.1} MiB)", deb.display(), size as f64 / (1 << 20) as f64);

    let _purge = Installed;
    ok("dpkg", &["-i", deb.to_str().unwrap()]);

    let version = ok("/usr/bin/kavwatch", &["--version"]);
    assert!(version.starts_with(&format!("kavwatch {}", env!("CARGO_PKG_VERSION"))), "{version}");
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "kavwatch"]);
    assert!(conffiles.contains("/etc/kavwatch/kavwatch.toml"), "conffiles: {conffiles:?}");
    assert!(conffiles.contains("/etc/kavwatch/nats.env"), "conffiles: {conffiles:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/etc/kavwatch/nats.env").unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "nats.env may hold a password");
    let shipped = std::fs::read_to_string("/etc/kavwatch/kavwatch.toml").unwrap();
    assert!(shipped.lines().all(|l| l.is_empty() || l.starts_with('#')), "the shipped config is all comments");
    assert!(shipped.contains("# interface = []"), "{shipped}");
    ok("getent", &["passwd", "kavwatch"]);
    for f in [
        "/usr/share/bash-completion/completions/kavwatch",
        "/usr/share/zsh/vendor-completions/_kavwatch",
        "/usr/share/fish/vendor_completions.d/kavwatch.fish",
        "/usr/share/kavwatch/rules/kaspersky.toml",
        "/usr/share/doc/kavwatch/README.md",
    ] {
        assert!(Path::new(f).is_file(), "{f} missing");
    }

    // Man pages: each renders without a warning, and man finds them by name.
    for page in PAGES {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        assert!(Path::new(&path).is_file(), "{path} missing");
        let o = Command::new("man").args(["--warnings", "-l", "-Tutf8", &path]).env("MANWIDTH", "80").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty() && !o.stdout.is_empty(), "man -l {path}: {err}");
        let found = ok("man", &["-w", page]);
        assert_eq!(found.trim(), path, "man -w {page}");
    }

    // Units: systemd-analyze verify (systemd does not run here, so nothing is started).
    for unit in UNITS {
        let path = format!("/lib/systemd/system/{unit}");
        assert!(Path::new(&path).is_file(), "{path} missing");
    }
    for unit in
        ["kavwatch@eth1.service", "kavwatch-report.service", "kavwatch-report.timer", "kavwatch-collect.service"]
    {
        let o = Command::new("systemd-analyze").args(["verify", unit]).current_dir("/").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty(), "systemd-analyze verify {unit}: {}: {err}", o.status);
    }
    if have("deb-systemd-helper") {
        let link = "/etc/systemd/system/timers.target.wants/kavwatch-report.timer";
        assert!(std::fs::symlink_metadata(link).is_ok(), "{link}: the report timer is enabled");
    }
    for unit in ["kavwatch@eth1.service", "kavwatch-report.service", "kavwatch-collect.service"] {
        // Informational: the exposure score (systemd-analyze security works on unit files offline).
        if let Ok(o) = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", &format!("/lib/systemd/system/{}", unit.replace("eth1", ""))])
            .output()
        {
            let text = String::from_utf8_lossy(&o.stdout);
            if let Some(line) = text.lines().find(|l| l.contains("Overall exposure")) {
                println!("{unit}: {}", line.trim_start_matches(|c: char| !c.is_ascii_alphabetic()));
            }
        }
    }

    // Bash completion: a subcommand, then an option of live.
    assert_eq!(bash_complete("kavwatch li"), "live");
    let opts = bash_complete("kavwatch live --rep");
    assert!(opts.split(' ').any(|o| o == "--report"), "{opts:?}");
    assert_eq!(bash_complete("kavwatch rules ch"), "check");

    ok("dpkg", &["--purge", "kavwatch"]);
    let status = run("dpkg-query", &["-W", "-f=${Status}", "kavwatch"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(!status.ends_with(" installed"), "still installed: {status}");
    let mut left: Vec<String> = [
        "/usr/bin/kavwatch",
        "/etc/kavwatch",
        "/usr/share/kavwatch",
        "/usr/share/doc/kavwatch",
        "/usr/share/bash-completion/completions/kavwatch",
        "/usr/share/zsh/vendor-completions/_kavwatch",
        "/usr/share/fish/vendor_completions.d/kavwatch.fish",
        "/etc/systemd/system/timers.target.wants/kavwatch-report.timer",
        "/etc/systemd/system/kavwatch-report.timer",
        "/var/lib/kavwatch",
        "/var/log/kavwatch",
    ]
    .iter()
    .filter(|p| std::fs::symlink_metadata(p).is_ok())
    .map(|p| p.to_string())
    .collect();
    for dir in ["/lib/systemd/system", "/usr/share/man/man1"] {
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.starts_with("kavwatch") {
                left.push(format!("{dir}/{name}"));
            }
        }
    }
    assert!(left.is_empty(), "left after purge: {left:?}");
}
