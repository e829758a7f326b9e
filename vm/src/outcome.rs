// SPDX-License-Identifier: MIT OR Apache-2.0
//! What one boot came to, and how the raw facts of a finished QEMU run are
//! classified into an [`Outcome`] or a [`VmError`].

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::logscan::emulator_fault;
use crate::{kernel_log_problems, Accel, VmError};

/// What happened to one boot.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The guest command's (or shell's) exit status; None if it never
    /// reported one (panic, timeout, crash).
    pub exit_code: Option<i32>,
    /// The command's stdout+stderr (captured by [`crate::Vm::run`] only).
    pub output: String,
    /// The full serial console log (kernel log + init messages).
    pub serial_log: PathBuf,
    pub panicked: bool,
    pub timed_out: bool,
    /// The timeout that applied, if any.
    pub timeout: Option<Duration>,
    /// Host wall time from QEMU start to exit.
    pub duration: Duration,
    pub accel: Accel,
    /// What QEMU printed on stderr.
    pub qemu_stderr: String,
}

impl Outcome {
    /// The command ran and exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The serial log's text.
    pub fn serial(&self) -> Result<String> {
        let b = fs::read(&self.serial_log)
            .with_context(|| format!("reading {}", self.serial_log.display()))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Problem lines in the kernel log (see [`crate::kernel_log_problems`]).
    pub fn problems(&self) -> Vec<String> {
        self.serial()
            .map(|s| kernel_log_problems(&s))
            .unwrap_or_default()
    }

    /// Guest uptime when the init started the command.
    pub fn guest_boot_time(&self) -> Option<Duration> {
        self.serial().ok().and_then(|s| crate::guest_boot_time(&s))
    }

    /// One line explaining why there is no exit status, or None if there is one.
    pub fn failure(&self) -> Option<String> {
        let log = self.serial_log.display();
        if self.timed_out {
            let secs = self.timeout.map(|t| t.as_secs()).unwrap_or(0);
            Some(format!("timed out after {secs} s; serial log: {log}"))
        } else if self.panicked {
            Some(format!("guest kernel panicked; serial log: {log}"))
        } else if self.exit_code.is_none() {
            Some(format!(
                "guest stopped without reporting an exit status; serial log: {log}"
            ))
        } else {
            None
        }
    }
}

/// How the wait for QEMU ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// QEMU exited by itself with this status (None: not known).
    Exited(Option<ExitStatus>),
    /// Killed at the deadline.
    TimedOut,
    /// Killed after it reported a KVM internal error.
    KvmError,
    /// Killed because the stop handle fired.
    Stopped,
    /// Killed when the serial log showed the emulator failing.
    EmulatorFault,
}

/// Everything known about a QEMU run once it is over.
#[derive(Clone, Debug)]
pub(crate) struct Finished {
    pub(crate) ending: Ending,
    /// The exit port's contents (the guest init writes the status there).
    pub(crate) exit_port: String,
    pub(crate) serial: String,
    pub(crate) serial_log: PathBuf,
    pub(crate) output: String,
    pub(crate) qemu_stderr: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) duration: Duration,
    pub(crate) accel: Accel,
}

/// The [`Outcome`] of a finished run, or the error it amounts to: stopped,
/// KVM failure, or QEMU failing with neither an exit status nor a panic.
pub(crate) fn classify(f: Finished) -> Result<Outcome, VmError> {
    let exit_code = parse_exit_code(&f.exit_port);
    let panicked = exit_code.is_none() && is_panic(&f.serial);
    match f.ending {
        Ending::Stopped => return Err(VmError::Stopped),
        Ending::EmulatorFault => {
            return Err(VmError::EmulatorFault {
                line: emulator_fault(&f.serial).unwrap_or_default(),
                log: f.serial_log,
            })
        }
        Ending::KvmError => {
            let detail = f.qemu_stderr.lines().take(3).collect::<Vec<_>>().join("\n");
            return Err(VmError::KvmInternalError {
                log: f.serial_log,
                detail,
            });
        }
        Ending::Exited(Some(st)) if !st.success() && exit_code.is_none() && !panicked => {
            return Err(VmError::QemuFailed {
                status: st.to_string(),
                signal: st.signal(),
                log: f.serial_log,
                stderr: f.qemu_stderr,
            });
        }
        Ending::Exited(_) | Ending::TimedOut => {}
    }
    Ok(Outcome {
        exit_code,
        output: f.output,
        serial_log: f.serial_log,
        panicked,
        timed_out: f.ending == Ending::TimedOut,
        timeout: f.timeout,
        duration: f.duration,
        accel: f.accel,
        qemu_stderr: f.qemu_stderr,
    })
}

pub(crate) fn is_panic(serial: &str) -> bool {
    serial.contains("Kernel panic - not syncing")
}

/// The last integer the guest wrote to the exit port.
pub(crate) fn parse_exit_code(exit_port: &str) -> Option<i32> {
    exit_port.lines().rev().find_map(|l| l.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_parsing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("exit");
        let read = |p: &std::path::Path| parse_exit_code(&crate::logs::read_lossy(p));
        assert_eq!(read(&p), None);
        fs::write(&p, "7\n").unwrap();
        assert_eq!(read(&p), Some(7));
        fs::write(&p, "\n0\n").unwrap();
        assert_eq!(read(&p), Some(0));
        fs::write(&p, "garbage").unwrap();
        assert_eq!(read(&p), None);
    }

    #[test]
    fn outcome_failure_messages() {
        let mut o = Outcome {
            exit_code: None,
            output: String::new(),
            serial_log: PathBuf::from("/l/x.serial.log"),
            panicked: true,
            timed_out: false,
            timeout: Some(Duration::from_secs(300)),
            duration: Duration::ZERO,
            accel: Accel::Tcg,
            qemu_stderr: String::new(),
        };
        assert_eq!(
            o.failure().unwrap(),
            "guest kernel panicked; serial log: /l/x.serial.log"
        );
        o.panicked = false;
        o.timed_out = true;
        assert_eq!(
            o.failure().unwrap(),
            "timed out after 300 s; serial log: /l/x.serial.log"
        );
        o.timed_out = false;
        o.exit_code = Some(3);
        assert!(o.failure().is_none());
        assert!(!o.success());
    }

    fn finished(ending: Ending, exit_port: &str, serial: &str) -> Finished {
        Finished {
            ending,
            exit_port: exit_port.into(),
            serial: serial.into(),
            serial_log: PathBuf::from("/l/x.serial.log"),
            output: "out\n".into(),
            qemu_stderr: "qemu: oops\nline 2\nline 3\nline 4\n".into(),
            timeout: Some(Duration::from_secs(9)),
            duration: Duration::from_secs(2),
            accel: Accel::Tcg,
        }
    }

    const PANIC: &str = "[ 1.0] Kernel panic - not syncing: sysrq\n";

    fn status(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }

    #[test]
    fn clean_exit_reports_the_guest_status() {
        let o = classify(finished(Ending::Exited(status(0)), "7\n", "")).unwrap();
        assert_eq!(o.exit_code, Some(7));
        assert!(!o.panicked && !o.timed_out);
        assert_eq!(o.output, "out\n");
        assert_eq!(o.duration, Duration::from_secs(2));
        assert_eq!(o.timeout, Some(Duration::from_secs(9)));
        // The guest's status wins over QEMU's and over a panic in the log.
        let o = classify(finished(Ending::Exited(status(1)), "0\n", PANIC)).unwrap();
        assert_eq!(o.exit_code, Some(0));
        assert!(!o.panicked);
    }

    #[test]
    fn an_emulator_fault_is_an_error_naming_its_line() {
        let sign = "[ 32.1] rcu: \tPossible timer handling issue on cpu=5 timer-softirq=0";
        let serial = format!("[ 1.0] booting\n{sign}\n");
        match classify(finished(Ending::EmulatorFault, "", &serial)) {
            Err(VmError::EmulatorFault { line, log }) => {
                assert_eq!(line, sign.trim());
                assert_eq!(log, PathBuf::from("/l/x.serial.log"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn panic_without_status_is_an_outcome() {
        let o = classify(finished(Ending::Exited(status(0)), "", PANIC)).unwrap();
        assert!(o.panicked && o.exit_code.is_none() && !o.timed_out);
        // QEMU's own status does not matter once the guest panicked.
        let o = classify(finished(Ending::Exited(status(1)), "", PANIC)).unwrap();
        assert!(o.panicked);
    }

    #[test]
    fn timeout_is_an_outcome() {
        let o = classify(finished(Ending::TimedOut, "", "booting\n")).unwrap();
        assert!(o.timed_out && !o.panicked && o.exit_code.is_none());
        let o = classify(finished(Ending::TimedOut, "", PANIC)).unwrap();
        assert!(o.timed_out && o.panicked);
    }

    #[test]
    fn qemu_failure_without_status_or_panic_is_an_error() {
        let e = classify(finished(Ending::Exited(status(1)), "", "")).unwrap_err();
        match e {
            VmError::QemuFailed {
                status,
                signal,
                log,
                stderr,
            } => {
                assert_eq!(status, "exit status: 1");
                assert_eq!(signal, None);
                assert_eq!(log, PathBuf::from("/l/x.serial.log"));
                assert!(stderr.contains("qemu: oops"));
            }
            other => panic!("{other:?}"),
        }
        // QEMU exiting 0 without a guest status is an outcome without one.
        let o = classify(finished(Ending::Exited(status(0)), "", "")).unwrap();
        assert!(o.exit_code.is_none() && o.failure().is_some());
        let o = classify(finished(Ending::Exited(None), "", "")).unwrap();
        assert!(o.exit_code.is_none());
    }

    #[test]
    fn kvm_error_and_stop_are_errors() {
        let e = classify(finished(Ending::KvmError, "", "")).unwrap_err();
        match e {
            VmError::KvmInternalError { detail, .. } => {
                assert_eq!(detail, "qemu: oops\nline 2\nline 3")
            }
            other => panic!("{other:?}"),
        }
        let e = classify(finished(Ending::Stopped, "0\n", "")).unwrap_err();
        assert!(matches!(e, VmError::Stopped), "{e:?}");
    }
}
