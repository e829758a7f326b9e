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
use crate::{default_timeout, probe, Accel, Outcome, VmConfig, VmError};

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
    ///
    /// If QEMU itself crashes under multi-threaded TCG, or the guest's log
    /// shows the emulator failing it (see [`crate::emufault`]), the run is
    /// repeated once on single-threaded TCG: an emulator failure says
    /// nothing about the guest, and a test should not fail for it. Said on
    /// stderr.
    pub fn run(&self, cmd: &str) -> Result<Outcome> {
        let first = self.launch(Some(cmd), Io::Capture, Some(self.timeout()));
        let Some(why) = self.emulator_failure(&first) else {
            return first;
        };
        eprintln!("enoki-vm: {why}; running the command again on single-threaded TCG");
        let tcg = Self {
            accel: Accel::Tcg,
            ..self.clone()
        };
        tcg.launch(Some(cmd), Io::Capture, Some(tcg.timeout()))
    }

    /// This VM for a session that cannot be run again: single-threaded TCG
    /// where `--accel auto` chose MTTCG.
    pub(crate) fn unrepeatable(&self) -> Self {
        if self.cfg.accel == Accel::Auto && self.accel == Accel::Mttcg {
            eprintln!("enoki-vm: accelerator tcg: a session cannot be run again if QEMU crashes under MTTCG");
            return Self {
                accel: Accel::Tcg,
                ..self.clone()
            };
        }
        self.clone()
    }

    /// Why `result` is QEMU failing under MTTCG, if it is.
    fn emulator_failure(&self, result: &Result<Outcome>) -> Option<String> {
        if self.accel != Accel::Mttcg {
            return None;
        }
        let err = result.as_ref().err()?.downcast_ref::<VmError>()?;
        match err {
            VmError::QemuFailed {
                status,
                signal: Some(_),
                log,
                ..
            } => Some(format!(
                "QEMU crashed under MTTCG ({status}; serial log {})",
                log.display()
            )),
            VmError::EmulatorFault { line, log } => Some(format!(
                "QEMU failed the guest under MTTCG ({line}; serial log {})",
                log.display()
            )),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(asked: Accel, chosen: Accel) -> Vm {
        Vm {
            cfg: VmConfig::with_root("/w/enoki").accel(asked),
            accel: chosen,
            qemu: PathBuf::from("qemu-system-x86_64"),
        }
    }

    #[test]
    fn an_unrepeatable_session_leaves_mttcg_only_when_the_launcher_chose_it() {
        assert_eq!(
            vm(Accel::Auto, Accel::Mttcg).unrepeatable().accel,
            Accel::Tcg
        );
        assert_eq!(
            vm(Accel::Mttcg, Accel::Mttcg).unrepeatable().accel,
            Accel::Mttcg
        );
        assert_eq!(vm(Accel::Auto, Accel::Kvm).unrepeatable().accel, Accel::Kvm);
    }
}
