// SPDX-License-Identifier: MIT OR Apache-2.0
//! Per-run files: the run directory, serial logs (named, pruned, tailed).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Logs kept in the log directory; older ones are deleted.
const KEEP_LOGS: usize = 200;

/// How often `--verbose` copies new serial output to stderr.
const TAIL_PERIOD: Duration = Duration::from_millis(100);

pub(crate) fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Short-pathed per-run directory (unix socket paths are limited to 108 bytes).
pub(crate) fn run_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("enoki-vm.")
        .tempdir_in("/tmp")
        .context("creating run directory in /tmp")
}

/// `<log_dir>/<timestamp>-<pid>.serial.log`, with a suffix if taken.
pub(crate) fn new_log_path(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ts = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let base = format!("{}-{}", ts.trim_end_matches('Z'), std::process::id());
    for n in 0.. {
        let name = if n == 0 {
            format!("{base}.serial.log")
        } else {
            format!("{base}-{n}.serial.log")
        };
        let p = dir.join(name);
        if fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .is_ok()
        {
            return Ok(p);
        }
    }
    unreachable!()
}

pub(crate) fn prune_logs(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut logs: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".serial.log"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if logs.len() > KEEP_LOGS {
        logs.sort();
        for (_, p) in &logs[..logs.len() - KEEP_LOGS] {
            let _ = fs::remove_file(p);
        }
    }
}

/// Echoes the serial log to stderr while the VM runs (--verbose).
/// Dropping it copies what is left of the log and ends the thread.
pub(crate) struct SerialTail {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SerialTail {
    pub(crate) fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            let mut pos = 0u64;
            loop {
                let last = s.load(Ordering::Relaxed);
                pos += copy_from(&path, pos);
                if last {
                    break;
                }
                thread::sleep(TAIL_PERIOD);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SerialTail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `path` from offset `pos` to stderr; returns the bytes copied.
fn copy_from(path: &Path, pos: u64) -> u64 {
    let buf = read_from(path, pos).unwrap_or_default();
    let _ = std::io::stderr().write_all(&buf);
    buf.len() as u64
}

/// What a file holds from offset `pos` on (a log the VM is still writing).
pub(crate) fn read_from(path: &Path, pos: u64) -> Option<Vec<u8>> {
    let mut f = fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(pos)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_are_unique() {
        let d = tempfile::tempdir().unwrap();
        let a = new_log_path(d.path()).unwrap();
        let b = new_log_path(d.path()).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(&format!("-{}.serial.log", std::process::id())),
            "{name}"
        );
        assert!(!name.contains(':'));
    }
}
