// SPDX-License-Identifier: MIT OR Apache-2.0
//! Child processes (QEMU, virtiofsd): finding the program, dying with the
//! launcher, and being killed and reaped when their guard is dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::VmError;

/// The QEMU binary: `ENOKI_QEMU` (a name on PATH or a path), else
/// `qemu-system-x86_64` on PATH.
pub(crate) fn find_qemu() -> Result<PathBuf> {
    let name = std::env::var_os("ENOKI_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    which(Path::new(&name))
        .ok_or_else(|| VmError::QemuMissing(name.to_string_lossy().into_owned()).into())
}

/// A program on PATH (or a path that exists).
pub(crate) fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Children get SIGKILL when the thread that spawned them dies, so nothing
/// outlives a launcher killed with SIGKILL.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// Kills and reaps a child when dropped, after letting it end by itself for
/// `grace` (a program that exits on its own when its peer goes away).
pub(crate) struct KillOnDrop {
    pub(crate) child: Child,
    grace: Duration,
}

impl KillOnDrop {
    pub(crate) fn new(child: Child) -> Self {
        Self {
            child,
            grace: Duration::ZERO,
        }
    }

    /// How long a drop waits before killing a child that is still running.
    pub(crate) fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub(crate) fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.grace.is_zero() && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(self.grace);
        }
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn kill_on_drop_reaps() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        drop(KillOnDrop::new(child));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn grace_lets_a_child_end_by_itself() {
        let child = Command::new("sh")
            .args(["-c", "trap '' TERM; exit 3"])
            .spawn()
            .unwrap();
        let mut guard = KillOnDrop::new(child).with_grace(Duration::from_secs(5));
        // Already exited children cost no grace period.
        let _ = guard.child.wait();
        let start = Instant::now();
        drop(guard);
        assert!(start.elapsed() < Duration::from_secs(1));

        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = Instant::now();
        drop(KillOnDrop::new(child).with_grace(Duration::from_millis(100)));
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn which_finds_paths_and_names() {
        assert!(which(Path::new("sh")).is_some());
        assert!(which(Path::new("/bin/sh")).is_some());
        assert!(which(Path::new("./no-such-program-here")).is_none());
        assert!(which(Path::new("no-such-program-here")).is_none());
    }
}
