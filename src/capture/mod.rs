//! Packet sources. Offline: capture files (`file`, with `pager` mapping a large file's pages
//! ahead of its reader). Live: AF_PACKET rings (`afpacket`) and libpcap (`libpcap`).

pub mod afpacket;
pub mod file;
pub mod libpcap;
mod pager;

use std::path::{Path, PathBuf};

/// File names read from a directory: captures, plain or gzip'd.
fn is_capture_name(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    [".pcap", ".pcapng", ".cap", ".ntar"].iter().any(|ext| name.ends_with(ext))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_capture_name(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands the command line's inputs: files as given (any name), directories recursed in
/// name order (files named *.pcap, *.pcapng, *.cap, *.ntar, optionally .gz), `-` for stdin.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
        } else if p.is_dir() {
            let before = out.len();
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
            if out.len() == before {
                return Err(format!(
                    "{}: no capture files (*.pcap, *.pcapng, *.cap, optionally .gz) in this directory",
                    p.display()
                ));
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}
