// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-vm`: boots an Enoki guest kernel in QEMU with a fixed 2-socket NUMA
//! topology, the workspace shared at the same path, the kernel log on the
//! serial console (saved to a file) and the command's stdio on a virtio
//! console. The command's exit status comes back on a virtio-serial port.
//!
//! ```no_run
//! use enoki_vm::VmConfig;
//! let vm = VmConfig::new()?.cpus(8).build()?;
//! let out = vm.run("nproc")?;
//! assert_eq!(out.exit_code, Some(0));
//! assert!(enoki_vm::kernel_log_problems(&out.serial()?).is_empty());
//! # anyhow::Ok(())
//! ```

pub mod accel;
mod child;
mod config;
pub mod control;
mod emufault;
mod interactive;
mod launch;
mod logs;
mod logscan;
mod outcome;
mod probe;
mod pump;
pub mod qemu;
mod stop;
mod term;
mod virtiofsd;
mod vm;
mod wait;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub use accel::Purpose;
pub use config::{default_timeout, parse_mem_mib, Accel, VmConfig};
pub use interactive::Interactive;
pub use logscan::kernel_log_problems;
pub use outcome::Outcome;
pub use stop::StopHandle;
pub use vm::Vm;

/// Failures with a known fix, so callers can match on them.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0} not found on PATH: run `cargo make deps` (or set ENOKI_QEMU)")]
    QemuMissing(String),
    #[error("kernel image {0} does not exist: run `cargo make kernel`")]
    KernelMissing(PathBuf),
    #[error("initrd {0} does not exist: run `cargo make rootfs`")]
    InitrdMissing(PathBuf),
    #[error("kernel command line would be {len} bytes (max {max}): put the command in a script on the share")]
    CommandTooLong { len: usize, max: usize },
    #[error("KVM internal error (KVM does not work on this host; use --accel tcg). Serial log: {log}\n{detail}")]
    KvmInternalError { log: PathBuf, detail: String },
    #[error("QEMU failed ({status}). Serial log: {log}\n{stderr}")]
    QemuFailed {
        status: String,
        /// The signal QEMU died of, if it crashed rather than exited.
        signal: Option<i32>,
        log: PathBuf,
        stderr: String,
    },
    #[error("the emulator failed, not the guest: {line}. Serial log: {log}")]
    EmulatorFault { line: String, log: PathBuf },
    #[error("the VM was stopped (its stop handle fired)")]
    Stopped,
    #[error("cannot find the Enoki workspace root (a directory with Makefile.toml and vm/Cargo.toml) above {0}; set ENOKI_ROOT")]
    NoRoot(PathBuf),
}

/// The workspace root: `ENOKI_ROOT`, else the nearest ancestor of the current
/// directory holding `Makefile.toml` and `vm/Cargo.toml`, else the checkout
/// this crate was built from.
pub fn find_root() -> Result<PathBuf> {
    if let Some(r) = std::env::var_os("ENOKI_ROOT") {
        return Path::new(&r)
            .canonicalize()
            .with_context(|| format!("ENOKI_ROOT={r:?}"));
    }
    let is_root = |d: &Path| d.join("Makefile.toml").is_file() && d.join("vm/Cargo.toml").is_file();
    let cwd = std::env::current_dir().context("current directory")?;
    if let Some(d) = cwd.ancestors().find(|d| is_root(d)) {
        return Ok(d.to_path_buf());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    match built {
        Some(d) if is_root(&d) => Ok(d.canonicalize().unwrap_or(d)),
        _ => Err(VmError::NoRoot(cwd).into()),
    }
}

/// Last `n` lines of a serial log, for failure messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Guest uptime when the init started the command or shell (from the
/// `enoki-init: start` line it logs to the serial console).
pub fn guest_boot_time(serial: &str) -> Option<Duration> {
    serial
        .lines()
        .find(|l| l.contains("enoki-init: start"))
        .and_then(|l| {
            let t = l.trim_start().strip_prefix('[')?.split(']').next()?.trim();
            t.parse::<f64>().ok().map(Duration::from_secs_f64)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_from_init_marker() {
        let log = "[    0.1] x\n[    4.250000] enoki-init: start command\n";
        assert_eq!(guest_boot_time(log), Some(Duration::from_millis(4250)));
        assert_eq!(guest_boot_time("nothing"), None);
    }

    #[test]
    fn tail_of_log() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        std::fs::write(&p, "1\r\n2\r\n3\r\n4\r\n").unwrap();
        assert_eq!(log_tail(&p, 2), "3\n4");
        assert_eq!(log_tail(&d.path().join("missing"), 2), "");
    }

    #[test]
    fn root_from_env() {
        // ENOKI_ROOT wins over the cwd walk; only this test sets it.
        let d = tempfile::tempdir().unwrap();
        std::env::set_var("ENOKI_ROOT", d.path());
        let r = find_root();
        std::env::remove_var("ENOKI_ROOT");
        assert_eq!(r.unwrap(), d.path().canonicalize().unwrap());
    }
}
