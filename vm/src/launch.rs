// SPDX-License-Identifier: MIT OR Apache-2.0
//! One boot, in steps: prepare the run's files, spawn QEMU (and virtiofsd),
//! pump its output, wait for it to end, classify the result.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::child::{die_with_parent, KillOnDrop};
use crate::emufault::FaultWatch;
use crate::logs::{self, SerialTail};
use crate::outcome::{classify, Ending, Finished};
use crate::qemu::{self, GuestParams, Plan, Share};
use crate::term::TermGuard;
use crate::wait::{Waiter, Wake};
use crate::{pump, virtiofsd, Accel, Outcome, StopHandle, Vm, VmError};

/// How QEMU's stdio (= the guest's hvc0) is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Io {
    /// Captured into `Outcome::output`.
    Capture,
    /// Connected to the launcher's own stdio (the CLI).
    Inherit,
}

/// A boot's files: the run directory (removed when dropped) holding the
/// exit port's file and virtiofsd's socket, and the serial log kept after it.
pub(crate) struct RunFiles {
    pub(crate) rundir: tempfile::TempDir,
    pub(crate) serial_log: PathBuf,
    pub(crate) exit_file: PathBuf,
}

impl RunFiles {
    pub(crate) fn new(vm: &Vm) -> Result<Self> {
        let rundir = logs::run_dir()?;
        let serial_log = logs::new_log_path(&vm.cfg.logs())?;
        let exit_file = rundir.path().join("exit");
        Ok(Self {
            rundir,
            serial_log,
            exit_file,
        })
    }

    /// QEMU's arguments for this boot.
    pub(crate) fn qemu_args(
        &self,
        vm: &Vm,
        share: Option<Share>,
        guest: GuestParams,
    ) -> Result<Vec<OsString>> {
        qemu::qemu_args(&self.plan(vm, share, guest))
    }

    fn plan<'a>(&'a self, vm: &'a Vm, share: Option<Share>, guest: GuestParams) -> Plan<'a> {
        Plan {
            cfg: &vm.cfg,
            accel: vm.accel,
            share,
            serial_log: &self.serial_log,
            exit_file: &self.exit_file,
            guest,
        }
    }
}

/// A QEMU process just started, with what must outlive it.
struct Spawned {
    qemu: KillOnDrop,
    virtiofsd: Option<KillOnDrop>,
    term: TermGuard,
    start: Instant,
}

/// A running QEMU whose output is being collected. Dropping it kills QEMU and
/// virtiofsd, then restores the terminal (fields drop in this order).
struct Running {
    qemu: KillOnDrop,
    virtiofsd: Option<KillOnDrop>,
    /// Held open: EOF on the stdio chardev would close the guest console.
    _stdin: Option<ChildStdin>,
    stderr: pump::Stderr,
    stdout: Option<JoinHandle<Vec<u8>>>,
    tail: Option<SerialTail>,
    /// Under MTTCG: ends the run when the emulator fails.
    fault_watch: Option<FaultWatch>,
    _term: TermGuard,
    start: Instant,
}

impl Vm {
    pub(crate) fn launch(
        &self,
        cmd: Option<&str>,
        io: Io,
        timeout: Option<Duration>,
    ) -> Result<Outcome> {
        let files = RunFiles::new(self)?;
        let tty = io == Io::Inherit && std::io::stdin().is_terminal();
        let mut guest = self.guest_params(cmd, tty);
        if tty {
            guest.cols_rows = terminal_size::terminal_size().map(|(w, h)| (w.0, h.0));
        }
        let _script = self.spill_long_command(&files, &mut guest)?;
        // Check the command line before starting virtiofsd: it may fail.
        qemu::kernel_cmdline(&files.plan(self, None, guest.clone()))?;
        self.check_stop()?;

        let spawned = self.spawn(&files, guest, io, tty)?;
        let feed_shell = io == Io::Inherit && cmd.is_none() && !tty;
        let mut running = self.pump(spawned, io, feed_shell, &files.serial_log)?;
        let deadline = timeout.map(|t| running.start + t);
        let ending = running.wait(deadline, self.cfg.stop.as_ref())?;
        let finished = running.finish(ending, &files, timeout, self);
        logs::prune_logs(&self.cfg.logs());
        Ok(classify(finished)?)
    }

    /// A command too long for the kernel command line runs from a script
    /// on the share instead, which the guest sees at the same path; the
    /// script is removed when the returned file drops.
    fn spill_long_command(
        &self,
        files: &RunFiles,
        guest: &mut GuestParams,
    ) -> Result<Option<tempfile::NamedTempFile>> {
        // The longest share parameters the boot may get.
        let share = Share::Virtiofs {
            socket: PathBuf::new(),
        };
        let plan = files.plan(self, Some(share), guest.clone());
        let Some(cmd) = guest.cmd.as_deref() else {
            return Ok(None);
        };
        if !self.cfg.share || qemu::kernel_cmdline(&plan).is_ok() {
            return Ok(None);
        }
        let dir = self.cfg.root.join("target/vm/cmd");
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let mut script = tempfile::Builder::new()
            .prefix("cmd-")
            .suffix(".sh")
            .tempfile_in(&dir)
            .with_context(|| dir.display().to_string())?;
        script.write_all(cmd.as_bytes())?;
        let path = script
            .path()
            .to_str()
            .context("the command's script has a path that is not UTF-8")?;
        guest.cmd = Some(format!("exec /bin/sh '{}'", path.replace('\'', r"'\''")));
        Ok(Some(script))
    }

    /// Fails with [`VmError::Stopped`] once the stop handle fired.
    pub(crate) fn check_stop(&self) -> Result<()> {
        match &self.cfg.stop {
            Some(s) if s.is_stopped() => Err(VmError::Stopped.into()),
            _ => Ok(()),
        }
    }

    /// virtiofsd if it starts, else 9p (said once on stderr), else nothing.
    pub(crate) fn start_share(&self, rundir: &Path) -> (Option<Share>, Option<KillOnDrop>) {
        if !self.cfg.share {
            return (None, None);
        }
        match virtiofsd::start(&self.cfg.root, rundir) {
            Ok((guard, socket)) => (Some(Share::Virtiofs { socket }), Some(guard)),
            Err(e) => {
                eprintln!(
                    "enoki-vm: virtiofsd unavailable ({e:#}); sharing {} over 9p instead",
                    self.cfg.root.display()
                );
                (Some(Share::NineP), None)
            }
        }
    }

    /// Starts the share and QEMU, saving the terminal first if QEMU gets it.
    fn spawn(&self, files: &RunFiles, guest: GuestParams, io: Io, tty: bool) -> Result<Spawned> {
        let (share, virtiofsd) = self.start_share(files.rundir.path());
        let args = files.qemu_args(self, share, guest)?;
        let mut command = Command::new(&self.qemu);
        command.args(&args).stderr(Stdio::piped());
        // Otherwise a held-open pipe, not /dev/null: EOF on the stdio chardev
        // would "close" the guest console.
        command.stdin(if tty {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
        command.stdout(match io {
            Io::Capture => Stdio::piped(),
            Io::Inherit => Stdio::inherit(),
        });
        die_with_parent(&mut command);

        let term = TermGuard::save(tty);
        let start = Instant::now();
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::Error::new(VmError::QemuMissing(self.qemu.display().to_string()))
            }
            _ => anyhow::Error::new(e).context(format!("starting {}", self.qemu.display())),
        })?;
        Ok(Spawned {
            qemu: KillOnDrop::new(child),
            virtiofsd,
            term,
            start,
        })
    }

    /// Starts the threads that collect QEMU's output (and feed a piped shell).
    fn pump(&self, s: Spawned, io: Io, feed_shell: bool, serial_log: &Path) -> Result<Running> {
        let Spawned {
            mut qemu,
            virtiofsd,
            term,
            start,
        } = s;
        let mut stdin = qemu.child.stdin.take();
        if feed_shell {
            feed_stdin(stdin.take());
        }
        let pipe = qemu.child.stderr.take().context("QEMU's stderr")?;
        let stderr = pump::Stderr::start(pipe, io == Io::Inherit).context("stderr pump")?;
        let stdout = (qemu.child.stdout.take()).map(|p| pump::stdout(p, self.cfg.echo_output));
        let tail = (self.cfg.verbose).then(|| SerialTail::start(serial_log.to_path_buf()));
        let fault_watch = (self.accel == Accel::Mttcg)
            .then(|| FaultWatch::start(serial_log.to_path_buf()))
            .transpose()
            .context("serial log watch")?;
        Ok(Running {
            qemu,
            virtiofsd,
            _stdin: stdin,
            stderr,
            stdout,
            tail,
            fault_watch,
            _term: term,
            start,
        })
    }
}

/// A shell fed from a pipe or file: copies our stdin to it, then `exit` so
/// the VM powers off (a ^D can turn into NUL in the guest's tty). The pipe
/// stays open until the launcher exits.
fn feed_stdin(pipe: Option<ChildStdin>) {
    let Some(mut pipe) = pipe else { return };
    thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut pipe);
        let _ = pipe.write_all(b"\nexit\n");
        let _ = pipe.flush();
        loop {
            thread::park();
        }
    });
}

impl Running {
    /// Sleeps until QEMU exits, reports a KVM failure, the stop handle fires
    /// or the deadline passes; QEMU is reaped (killed first unless it exited).
    fn wait(&mut self, deadline: Option<Instant>, stop: Option<&StopHandle>) -> Result<Ending> {
        let mut sources: Vec<(&dyn AsRawFd, Wake)> = vec![
            (self.stderr.eof(), Wake::QemuGone),
            (self.stderr.kvm_error(), Wake::KvmError),
        ];
        if let Some(s) = stop {
            sources.push((s, Wake::Stop));
        }
        if let Some(w) = &self.fault_watch {
            sources.push((w.raised(), Wake::EmulatorFault));
        }
        let wake = Waiter::new(&sources)
            .and_then(|w| w.wait(deadline))
            .context("waiting for QEMU")?;
        let ending = match wake {
            Wake::QemuGone => Ending::Exited(Some(self.qemu.child.wait()?)),
            Wake::KvmError => Ending::KvmError,
            Wake::Stop => Ending::Stopped,
            Wake::Deadline => Ending::TimedOut,
            Wake::EmulatorFault => Ending::EmulatorFault,
        };
        self.qemu.kill();
        // A stop that raced QEMU's own exit is still a stop.
        Ok(match stop {
            Some(s) if s.is_stopped() => Ending::Stopped,
            _ => ending,
        })
    }

    /// Ends the helpers and gathers what the run left behind.
    fn finish(
        mut self,
        ending: Ending,
        files: &RunFiles,
        timeout: Option<Duration>,
        vm: &Vm,
    ) -> Finished {
        let duration = self.start.elapsed();
        self.virtiofsd.take();
        self.tail.take();
        self.fault_watch.take();
        let output = (self.stdout.take())
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let Running { stderr, .. } = self;
        Finished {
            ending,
            exit_port: logs::read_lossy(&files.exit_file),
            serial: logs::read_lossy(&files.serial_log),
            serial_log: files.serial_log.clone(),
            output: String::from_utf8_lossy(&output).into_owned(),
            qemu_stderr: stderr.finish(),
            timeout,
            duration,
            accel: vm.accel,
        }
    }
}
