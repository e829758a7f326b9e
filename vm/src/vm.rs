// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Vm`]: a validated configuration with its QEMU and accelerator, and the
//! ways to boot it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::child::find_qemu;
use crate::launch::Io;
use crate::qemu::{self, GuestParams, Plan, Share};
use crate::{default_timeout, probe, Accel, Outcome, VmConfig};

/// A validated VM configuration with its accelerator chosen.
#[derive(Clone, Debug)]
pub struct Vm {
    pub(crate) cfg: VmConfig,
    pub(crate) accel: Accel,
    pub(crate) qemu: PathBuf,
}

impl Vm {
    pub(crate) fn new(cfg: VmConfig) -> Result<Self> {
        cfg.validate()?;
        let qemu = find_qemu()?;
        let accel = probe::resolve_accel(&cfg, &qemu)?;
        Ok(Self { cfg, accel, qemu })
    }

    /// A VM with an already-chosen accelerator (used by the KVM probe).
    pub(crate) fn with_accel(cfg: VmConfig, accel: Accel) -> Result<Self> {
        cfg.validate()?;
        let qemu = find_qemu()?;
        Ok(Self { cfg, accel, qemu })
    }

    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    /// The accelerator in use (never `Auto`).
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Timeout for commands: `--timeout`, else 300 s (TCG) / 120 s (KVM).
    pub fn timeout(&self) -> Duration {
        self.cfg
            .timeout
            .unwrap_or_else(|| default_timeout(self.accel))
    }

    /// The QEMU argument list this VM would use for `cmd` (for debugging).
    pub fn qemu_args(&self, cmd: Option<&str>) -> Result<Vec<OsString>> {
        let share = self.cfg.share.then(|| Share::Virtiofs {
            socket: PathBuf::from("/tmp/virtiofsd.sock"),
        });
        let guest = self.guest_params(cmd, false);
        qemu::qemu_args(&Plan {
            cfg: &self.cfg,
            accel: self.accel,
            share,
            serial_log: Path::new("serial.log"),
            exit_file: Path::new("exit"),
            guest,
        })
    }

    /// Boots, runs `cmd` with `sh -c` in the guest (stdin /dev/null), captures
    /// its output and returns once the guest powered off, panicked or timed out.
    pub fn run(&self, cmd: &str) -> Result<Outcome> {
        self.launch(Some(cmd), Io::Capture, Some(self.timeout()))
    }

    /// Like [`Vm::run`] but the guest console is the launcher's own stdio;
    /// `None` starts an interactive shell (no timeout unless configured).
    pub fn run_inherit(&self, cmd: Option<&str>) -> Result<Outcome> {
        let timeout = match cmd {
            Some(_) => Some(self.timeout()),
            None => self.cfg.timeout,
        };
        self.launch(cmd, Io::Inherit, timeout)
    }

    pub(crate) fn guest_params(&self, cmd: Option<&str>, console_stdin: bool) -> GuestParams {
        let host_cwd = std::env::current_dir().ok();
        GuestParams {
            cmd: cmd.map(str::to_owned),
            cwd: self.cfg.guest_cwd(host_cwd.as_deref()),
            console_stdin,
            term: std::env::var("TERM").ok(),
            cols_rows: None,
        }
    }
}
