// SPDX-License-Identifier: MIT OR Apache-2.0
//! An interactive shell in a pty, driven with rexpect (tests of the shell).

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use crate::child::{die_with_parent, KillOnDrop};
use crate::launch::RunFiles;
use crate::logs::read_lossy;
use crate::outcome::{classify, Ending, Finished};
use crate::{Accel, Outcome, StopHandle, Vm};

/// How often [`Interactive::wait`] drains the pty and checks on QEMU
/// (rexpect offers no file descriptor to sleep on).
const POLL: Duration = Duration::from_millis(20);

/// An interactive shell in a pty, for driving with rexpect. Derefs to the
/// [`rexpect::session::PtySession`]. QEMU, virtiofsd and the run directory go
/// away when it is dropped (or with the thread that created it).
pub struct Interactive {
    pub session: rexpect::session::PtySession,
    serial_log: PathBuf,
    exit_file: PathBuf,
    accel: Accel,
    start: Instant,
    stop: Option<StopHandle>,
    _virtiofsd: Option<KillOnDrop>,
    _files: RunFiles,
}

impl Vm {
    /// Boots to an interactive root shell in a pty driven by rexpect; every
    /// `exp_*` call times out after `expect_timeout`.
    ///
    /// A session cannot be run again if QEMU crashes, so an MTTCG the
    /// launcher picked by itself becomes single-threaded TCG here (see
    /// [`crate::accel`]).
    pub fn spawn_interactive(&self, expect_timeout: Duration) -> Result<Interactive> {
        self.unrepeatable().spawn_session(expect_timeout)
    }

    fn spawn_session(&self, expect_timeout: Duration) -> Result<Interactive> {
        self.check_stop()?;
        let files = RunFiles::new(self)?;
        let (share, virtiofsd) = self.start_share(files.rundir.path());
        let mut guest = self.guest_params(None, true);
        guest.term = Some("dumb".into());
        guest.cols_rows = Some((200, 50));
        let args = files.qemu_args(self, share, guest)?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(&args);
        die_with_parent(&mut cmd);
        let ms = u64::try_from(expect_timeout.as_millis()).unwrap_or(u64::MAX);
        let session =
            rexpect::session::spawn_command(cmd, Some(ms)).context("spawning QEMU in a pty")?;
        Ok(Interactive {
            session,
            serial_log: files.serial_log.clone(),
            exit_file: files.exit_file.clone(),
            accel: self.accel,
            start: Instant::now(),
            stop: self.cfg.stop.clone(),
            _virtiofsd: virtiofsd,
            _files: files,
        })
    }
}

impl Interactive {
    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Waits for QEMU to exit (the shell exited and the guest powered off).
    pub fn wait(mut self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut output = String::new();
        let ending = loop {
            while let Some(c) = self.session.try_read() {
                output.push(c);
            }
            if let Some(end) = self.ended(deadline) {
                break end;
            }
            thread::sleep(POLL);
        };
        if ending != Ending::Exited(None) {
            let _ = self.session.process_mut().signal(Signal::SIGKILL);
            let _ = self.session.process().wait();
        }
        Ok(classify(Finished {
            ending,
            exit_port: read_lossy(&self.exit_file),
            serial: read_lossy(&self.serial_log),
            serial_log: self.serial_log.clone(),
            output,
            qemu_stderr: String::new(),
            timeout: Some(timeout),
            duration: self.start.elapsed(),
            accel: self.accel,
        })?)
    }

    /// How the session ended, if it did. QEMU's status is not kept: the pty
    /// carries its stderr too, and the guest's status decides.
    fn ended(&self, deadline: Instant) -> Option<Ending> {
        match self.session.process().status() {
            Some(WaitStatus::StillAlive) | None => {}
            Some(_) => return Some(Ending::Exited(None)),
        }
        if self.stop.as_ref().is_some_and(StopHandle::is_stopped) {
            return Some(Ending::Stopped);
        }
        (Instant::now() > deadline).then_some(Ending::TimedOut)
    }
}

impl Deref for Interactive {
    type Target = rexpect::session::PtySession;
    fn deref(&self) -> &Self::Target {
        &self.session
    }
}
impl DerefMut for Interactive {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.session
    }
}
