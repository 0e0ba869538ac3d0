//! Every file kavwatch writes (reports, events, alert files, spool segments) is opened here, so
//! that a sensor running as root in a directory others can write to cannot be turned against
//! the system: a name planted there as a symbolic link is never followed (`O_NOFOLLOW`), a whole
//! file is first written under an unpredictable temporary name created exclusively (`O_EXCL`,
//! so neither a link nor an existing file can be reused) and then renamed over the target, so
//! readers never see half of it, and new files are mode 0640 (less under a stricter umask), not
//! world-readable. Long-running outputs (the live events file, alert files) go through
//! [`RotatingFile`], which rotates by size and reopens on request (SIGHUP, for logrotate) only
//! between whole lines.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Stdout, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files kavwatch creates (before the umask).
pub const DEFAULT_MODE: u32 = 0o640;
/// Mode of the directories kavwatch creates (the alert spool).
pub const DIR_MODE: u32 = 0o750;
/// Bytes a [`RotatingFile`] holds before writing out its whole lines.
const BUFFER: usize = 64 << 10;

/// ELOOP from `O_NOFOLLOW` says "too many levels of symbolic links": say what happened.
fn explain(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            e.kind(),
            format!("{} is a symbolic link; refusing to follow it (remove it or give the real path)", path.display()),
        )
    } else {
        e
    }
}

fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(DEFAULT_MODE).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    o
}

/// True when `path` names a device, FIFO or socket (e.g. /dev/null): written in place, since a
/// rename would replace it.
fn is_special(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_char_device() || t.is_block_device() || t.is_fifo() || t.is_socket()
    })
}

/// Writes `bytes` to `path` whole or not at all: to an unpredictable temporary name in the same
/// directory (created `O_CREAT | O_EXCL | O_NOFOLLOW`, mode [`DEFAULT_MODE`]), then renamed over
/// `path`. With `sync`, the file and then the directory are forced to disk. A link at `path` is
/// replaced, never followed; a device or FIFO at `path` (e.g. /dev/null) is written in place.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    write_atomic_mode(path, bytes, sync, DEFAULT_MODE)
}

/// [`write_atomic`] with another mode for a new file (checkpoints are 0600: they hold every host).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], sync: bool, mode: u32) -> io::Result<()> {
    if is_special(path) {
        let mut f = options().write(true).open(path).map_err(|e| explain(path, e))?;
        return f.write_all(bytes);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it mode [`DEFAULT_MODE`]; a symbolic link there is an error.
pub fn open_append(path: &Path) -> io::Result<File> {
    options().append(true).create(true).open(path).map_err(|e| explain(path, e))
}

/// Creates (or truncates) `path`, mode [`DEFAULT_MODE`]; a symbolic link there is an error.
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path).map_err(|e| explain(path, e))
}

/// Opens `path` for reading; a symbolic link there is an error (a planted link must not make
/// kavwatch read, and send on, a file it points to).
pub fn open_read(path: &Path) -> io::Result<File> {
    options().read(true).open(path).map_err(|e| explain(path, e))
}

/// Creates directory `dir` (and its parents) mode [`DIR_MODE`].
pub fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// A file of lines, renamed to PATH.1 (PATH.1 to PATH.2, ... keeping `keep`) before it would
/// pass `max_bytes` (0: never), and reopened at PATH on request (after logrotate moved it).
/// Writes are buffered (up to 64 KiB) and go out as whole lines: a line is never cut across two
/// files. `flush` writes the whole lines held; a line longer than the buffer is written as it
/// comes, and neither a rotation nor a reopen happens until its end.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_bytes: u64,
    keep: u32,
    buf: Vec<u8>,
    /// The last byte written to the file was not the end of a line.
    mid_line: bool,
    reopen_pending: bool,
    rotations: u64,
    written: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
            buf: Vec::new(),
            mid_line: false,
            reopen_pending: false,
            rotations: 0,
            written: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// PATH.n
    pub fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    /// Rotations done since open.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Bytes written out since open (over all files).
    pub fn bytes(&self) -> u64 {
        self.written
    }

    /// One record: `line` and a newline (unless it ends with one).
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(line);
        if line.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
        if self.buf.len() >= BUFFER { self.emit(false) } else { Ok(()) }
    }

    /// Writes out the whole lines held, then closes PATH and opens it again (creating it): after
    /// logrotate renamed it, new lines go to a new file. Mid-way through a long line, the reopen
    /// waits for the line's end.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.reopen_pending = true;
        self.emit(false)?;
        if self.reopen_pending && !self.mid_line { self.do_reopen() } else { Ok(()) }
    }

    /// Writes out everything held (a last, unfinished line too) and forces it to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.emit(true)?;
        self.file.sync_data()
    }

    fn do_reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        self.reopen_pending = false;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let gone = |r: io::Result<()>| match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
        if self.keep == 0 {
            gone(fs::remove_file(&self.path))?;
        } else {
            for n in (1..self.keep).rev() {
                gone(fs::rename(self.rotated(n), self.rotated(n + 1)))?;
            }
            gone(fs::rename(&self.path, self.rotated(1)))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        self.reopen_pending = false;
        self.rotations += 1;
        Ok(())
    }

    /// Writes the held whole lines (with `all`, everything held; without, also a partial line
    /// once it alone fills the buffer), rotating or reopening only at line starts.
    fn emit(&mut self, all: bool) -> io::Result<()> {
        let mut end =
            if all { self.buf.len() } else { self.buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        if self.buf.len() - end >= BUFFER {
            end = self.buf.len();
        }
        let mut start = 0;
        let r = self.emit_range(&mut start, end);
        self.buf.drain(..start);
        r
    }

    fn emit_range(&mut self, start: &mut usize, end: usize) -> io::Result<()> {
        while *start < end {
            if !self.mid_line {
                if self.reopen_pending {
                    self.do_reopen()?;
                }
                let first = self.buf[*start..end].iter().position(|&b| b == b'\n').map_or(end, |i| *start + i + 1);
                if self.max_bytes > 0 && self.size > 0 && self.size + (first - *start) as u64 > self.max_bytes {
                    self.rotate()?;
                }
            }
            // As many whole lines as fit in this file (at least one, or the unfinished rest).
            let mut run = *start;
            loop {
                let next = self.buf[run..end].iter().position(|&b| b == b'\n').map_or(end, |i| run + i + 1);
                let fits = self.max_bytes == 0 || self.size + (next - *start) as u64 <= self.max_bytes;
                if run > *start && !fits {
                    break;
                }
                run = next;
                if run == end || self.reopen_pending {
                    break;
                }
            }
            self.file.write_all(&self.buf[*start..run])?;
            let n = (run - *start) as u64;
            self.size += n;
            self.written += n;
            self.mid_line = self.buf[run - 1] != b'\n';
            *start = run;
        }
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BUFFER {
            self.emit(false)?;
        }
        Ok(data.len())
    }

    /// Writes out the whole lines held (an unfinished last line waits for its end).
    fn flush(&mut self) -> io::Result<()> {
        self.emit(false)?;
        if self.reopen_pending && !self.mid_line {
            self.do_reopen()?;
        }
        Ok(())
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        let _ = self.emit(true);
    }
}

/// Where the live events go: stdout, or a file that rotates and reopens.
pub enum EventsOut {
    Stdout(BufWriter<Stdout>),
    File(RotatingFile),
}

impl EventsOut {
    /// "-": stdout; else PATH through [`RotatingFile`].
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<EventsOut> {
        if path.as_os_str() == "-" {
            Ok(EventsOut::Stdout(BufWriter::new(io::stdout())))
        } else {
            RotatingFile::open(path, max_bytes, keep).map(EventsOut::File)
        }
    }

    /// Reopens the file (SIGHUP after logrotate); nothing for stdout.
    pub fn reopen(&mut self) -> io::Result<()> {
        match self {
            EventsOut::Stdout(w) => w.flush(),
            EventsOut::File(f) => f.reopen(),
        }
    }

    /// The file's rotations and bytes written (`None` for stdout).
    pub fn file_stats(&self) -> Option<(u64, u64)> {
        match self {
            EventsOut::Stdout(_) => None,
            EventsOut::File(f) => Some((f.rotations(), f.bytes())),
        }
    }
}

impl Write for EventsOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            EventsOut::Stdout(w) => w.write(data),
            EventsOut::File(f) => f.write(data),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            EventsOut::Stdout(w) => w.write_all(data),
            EventsOut::File(f) => f.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            EventsOut::Stdout(w) => w.flush(),
            EventsOut::File(f) => f.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kavwatch-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let d = dir("rotate");
        let p = d.join("alerts.json");
        let mut f = RotatingFile::open(&p, 100, 2).unwrap();
        for i in 0..10 {
            f.write_line(format!("{i:039}").as_bytes()).unwrap();
            f.flush().unwrap();
        }
        // 40 bytes per line, 2 per file: 10 lines -> current + .1 + .2 hold the last 6.
        assert_eq!(read(&p).lines().count(), 2);
        assert!(read(&p).ends_with(&format!("{:039}\n", 9)));
        assert!(read(&f.rotated(2)).starts_with(&format!("{:039}\n", 4)));
        assert!(!f.rotated(3).exists());
        assert_eq!(f.rotations(), 4);
        assert_eq!(f.bytes(), 400);
        for n in [0, 1, 2] {
            let p = if n == 0 { p.clone() } else { f.rotated(n) };
            assert!(fs::metadata(&p).unwrap().len() <= 100);
        }
    }

    #[test]
    fn never_splits_a_line_whatever_the_writes() {
        let d = dir("split");
        let p = d.join("events.json");
        let mut f = RotatingFile::open(&p, 1000, 50).unwrap();
        let mut want = Vec::new();
        // Lines of varied lengths written in odd pieces, flushed at odd moments (mid-line too).
        for i in 0..3000usize {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i * 7 % 130));
            want.push(line.trim_end().to_string());
            let b = line.as_bytes();
            let cut = i % b.len();
            f.write_all(&b[..cut]).unwrap();
            if i % 3 == 0 {
                f.flush().unwrap();
            }
            f.write_all(&b[cut..]).unwrap();
            if i % 5 == 0 {
                f.flush().unwrap();
            }
        }
        f.flush().unwrap();
        assert!(f.rotations() > 40, "{}", f.rotations());
        let mut got = Vec::new();
        for n in (1..=50).rev() {
            let text = read(&f.rotated(n));
            assert!(text.is_empty() || text.ends_with('\n'), "PATH.{n} ends mid-line");
            assert!(text.len() <= 1000, "PATH.{n}: {} bytes", text.len());
            got.extend(text.lines().map(String::from));
        }
        let text = read(&p);
        assert!(text.ends_with('\n'));
        got.extend(text.lines().map(String::from));
        for l in &got {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        }
        // Keep 50 of ~1000-byte files: the newest lines, in order, none cut.
        assert_eq!(&want[want.len() - got.len()..], &got[..]);
    }

    #[test]
    fn max_bytes_zero_never_rotates_and_keep_zero_deletes() {
        let d = dir("zero");
        let p = d.join("e");
        let mut f = RotatingFile::open(&p, 0, 3).unwrap();
        for _ in 0..5000 {
            f.write_line(b"0123456789").unwrap();
        }
        f.sync().unwrap();
        assert_eq!(f.rotations(), 0);
        assert_eq!(read(&p).lines().count(), 5000);
        assert!(!f.rotated(1).exists());
        let q = d.join("k");
        let mut f = RotatingFile::open(&q, 25, 0).unwrap();
        for i in 0..5 {
            f.write_line(format!("{i:09}").as_bytes()).unwrap();
            f.flush().unwrap();
        }
        assert_eq!(read(&q), "000000004\n");
        assert!(!f.rotated(1).exists());
    }

    #[test]
    fn reopen_after_rename_and_refuses_links() {
        let d = dir("reopen");
        let p = d.join("events.json");
        let mut f = RotatingFile::open(&p, 0, 1).unwrap();
        f.write_line(b"one").unwrap();
        f.write_all(b"tw").unwrap();
        f.flush().unwrap();
        fs::rename(&p, d.join("events.json.old")).unwrap();
        f.reopen().unwrap();
        f.write_all(b"o\n").unwrap();
        f.write_line(b"three").unwrap();
        f.flush().unwrap();
        // "two" was held (unfinished) at the reopen: it goes whole to the new file.
        assert_eq!(read(&d.join("events.json.old")), "one\n");
        assert_eq!(read(&p), "two\nthree\n");
        let victim = d.join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = d.join("link");
        symlink(&victim, &link).unwrap();
        let e = RotatingFile::open(&link, 0, 1).err().expect("a link must be refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(create(&link).is_err());
        // write_atomic replaces the link itself.
        write_atomic(&link, b"new", true).unwrap();
        assert_eq!(read(&victim), "precious");
        assert_eq!(read(&link), "new");
        let m = fs::symlink_metadata(&link).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o7777, DEFAULT_MODE & !umask());
        // A device is written in place, not replaced.
        write_atomic(Path::new("/dev/null"), b"x", false).unwrap();
        assert!(fs::symlink_metadata("/dev/null").unwrap().file_type().is_char_device());
    }

    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }
}
