// SPDX-License-Identifier: MIT OR Apache-2.0
//! Running QEMU (and virtiofsd): stdio wiring, timeouts, signals, cleanup.

use std::fs;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::sys::termios::{self, Termios};

use crate::qemu::{self, GuestParams, Plan, Share};
use crate::{default_timeout, kernel_log_problems, probe, Accel, VmConfig, VmError};

/// Logs kept in the log directory; older ones are deleted.
const KEEP_LOGS: usize = 200;

/// A validated VM configuration with its accelerator chosen.
#[derive(Clone, Debug)]
pub struct Vm {
    cfg: VmConfig,
    accel: Accel,
    qemu: PathBuf,
}

/// What happened to one boot.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The guest command's (or shell's) exit status; None if it never
    /// reported one (panic, timeout, crash).
    pub exit_code: Option<i32>,
    /// The command's stdout+stderr (captured by [`Vm::run`] only).
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

/// An interactive shell in a pty, for driving with rexpect. Derefs to the
/// [`rexpect::session::PtySession`]. QEMU, virtiofsd and the run directory go
/// away when it is dropped (or with the thread that created it).
pub struct Interactive {
    pub session: rexpect::session::PtySession,
    serial_log: PathBuf,
    exit_file: PathBuf,
    accel: Accel,
    start: Instant,
    _virtiofsd: Option<KillOnDrop>,
    _rundir: tempfile::TempDir,
}

impl Interactive {
    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Waits for QEMU to exit (the shell exited and the guest powered off).
    pub fn wait(mut self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut output = String::new();
        let mut timed_out = false;
        loop {
            while let Some(c) = self.session.try_read() {
                output.push(c);
            }
            match self.session.process().status() {
                Some(nix::sys::wait::WaitStatus::StillAlive) | None => {}
                Some(_) => break,
            }
            if Instant::now() > deadline {
                timed_out = true;
                let _ = self.session.process_mut().signal(Signal::SIGKILL);
                let _ = self.session.process().wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let serial = read_lossy(&self.serial_log);
        let exit_code = read_exit_code(&self.exit_file);
        Ok(Outcome {
            exit_code,
            output,
            panicked: exit_code.is_none() && is_panic(&serial),
            timed_out,
            timeout: Some(timeout),
            duration: self.start.elapsed(),
            accel: self.accel,
            qemu_stderr: String::new(),
            serial_log: self.serial_log.clone(),
        })
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

/// How QEMU's stdio (= the guest's hvc0) is wired.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Io {
    /// Captured into `Outcome::output`.
    Capture,
    /// Connected to the launcher's own stdio (the CLI).
    Inherit,
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
    pub fn qemu_args(&self, cmd: Option<&str>) -> Result<Vec<String>> {
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

    /// Boots to an interactive root shell in a pty driven by rexpect; every
    /// `exp_*` call times out after `expect_timeout`.
    pub fn spawn_interactive(&self, expect_timeout: Duration) -> Result<Interactive> {
        let rundir = run_dir()?;
        let serial_log = new_log_path(&self.cfg.logs())?;
        let exit_file = rundir.path().join("exit");
        let (share, virtiofsd) = self.start_share(rundir.path());
        let mut guest = self.guest_params(None, true);
        guest.term = Some("dumb".into());
        guest.cols_rows = Some((200, 50));
        let args = qemu::qemu_args(&Plan {
            cfg: &self.cfg,
            accel: self.accel,
            share,
            serial_log: &serial_log,
            exit_file: &exit_file,
            guest,
        })?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(&args);
        die_with_parent(&mut cmd);
        let ms = u64::try_from(expect_timeout.as_millis()).unwrap_or(u64::MAX);
        let session =
            rexpect::session::spawn_command(cmd, Some(ms)).context("spawning QEMU in a pty")?;
        Ok(Interactive {
            session,
            serial_log,
            exit_file,
            accel: self.accel,
            start: Instant::now(),
            _virtiofsd: virtiofsd,
            _rundir: rundir,
        })
    }

    fn guest_params(&self, cmd: Option<&str>, console_stdin: bool) -> GuestParams {
        let host_cwd = std::env::current_dir().ok();
        GuestParams {
            cmd: cmd.map(str::to_owned),
            cwd: self.cfg.guest_cwd(host_cwd.as_deref()),
            console_stdin,
            term: std::env::var("TERM").ok(),
            cols_rows: None,
        }
    }

    /// virtiofsd if it starts, else 9p (said once on stderr), else nothing.
    fn start_share(&self, rundir: &Path) -> (Option<Share>, Option<KillOnDrop>) {
        if !self.cfg.share {
            return (None, None);
        }
        match start_virtiofsd(&self.cfg.root, rundir) {
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

    fn launch(&self, cmd: Option<&str>, io: Io, timeout: Option<Duration>) -> Result<Outcome> {
        let rundir = run_dir()?;
        let serial_log = new_log_path(&self.cfg.logs())?;
        let exit_file = rundir.path().join("exit");
        let stdin_tty = std::io::stdin().is_terminal();
        let interactive_tty = io == Io::Inherit && stdin_tty;

        let mut guest = self.guest_params(cmd, interactive_tty);
        if interactive_tty {
            guest.cols_rows = terminal_size::terminal_size().map(|(w, h)| (w.0, h.0));
        }
        // Build the command line before starting virtiofsd: it may fail.
        let probe_plan = Plan {
            cfg: &self.cfg,
            accel: self.accel,
            share: None,
            serial_log: &serial_log,
            exit_file: &exit_file,
            guest: guest.clone(),
        };
        qemu::kernel_cmdline(&probe_plan)?;

        let _active = ActiveVm::enter();
        let (share, mut virtiofsd) = self.start_share(rundir.path());
        let args = qemu::qemu_args(&Plan {
            share,
            ..probe_plan
        })?;

        let mut command = Command::new(&self.qemu);
        command.args(&args).stderr(Stdio::piped());
        // Otherwise a held-open pipe, not /dev/null: EOF on the stdio chardev
        // would "close" the guest console.
        command.stdin(if interactive_tty {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
        command.stdout(if io == Io::Capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        die_with_parent(&mut command);

        let _term = TermGuard::save(interactive_tty);
        let start = Instant::now();
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::Error::new(VmError::QemuMissing(self.qemu.display().to_string()))
            }
            _ => anyhow::Error::new(e).context(format!("starting {}", self.qemu.display())),
        })?;
        let mut qemu = KillOnDrop::new(child, "qemu");
        let mut held_stdin: Option<ChildStdin> = qemu.child.stdin.take();
        if io == Io::Inherit && cmd.is_none() && !stdin_tty {
            // A shell fed from a pipe or file: copy it, then `exit` so the VM
            // powers off (a ^D can turn into NUL in the guest's tty).
            if let Some(mut pipe) = held_stdin.take() {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut pipe);
                    let _ = pipe.write_all(b"\nexit\n");
                    let _ = pipe.flush();
                    thread::sleep(Duration::from_secs(u64::MAX / 4));
                    drop(pipe);
                });
            }
        }

        let kvm_error = Arc::new(AtomicBool::new(false));
        let stderr_thread = {
            let pipe = qemu.child.stderr.take().expect("piped stderr");
            let flag = kvm_error.clone();
            let forward = io == Io::Inherit;
            thread::spawn(move || collect_stderr(pipe, flag, forward))
        };
        let stdout_thread: Option<JoinHandle<Vec<u8>>> =
            qemu.child.stdout.take().map(|mut pipe| {
                let echo = self.cfg.echo_output;
                thread::spawn(move || {
                    let mut all = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        all.extend_from_slice(&buf[..n]);
                        if echo {
                            // print! so the test harness captures it.
                            print!("{}", String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                    all
                })
            });
        let tail = self
            .cfg
            .verbose
            .then(|| SerialTail::start(serial_log.clone()));

        let deadline = timeout.map(|t| start + t);
        let mut timed_out = false;
        let mut kvm_failed = false;
        let status: Option<ExitStatus> = loop {
            if let Some(st) = qemu.child.try_wait()? {
                break Some(st);
            }
            if kvm_error.load(Ordering::Relaxed) {
                // QEMU pauses the VM on a KVM internal error instead of exiting.
                kvm_failed = true;
                qemu.kill();
                break None;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                timed_out = true;
                qemu.kill();
                break None;
            }
            if let Some(sig) = pending_signal() {
                qemu.kill();
                if let Some(v) = virtiofsd.as_mut() {
                    v.kill();
                }
                drop(_term);
                let _ = fs::remove_dir_all(rundir.path());
                eprintln!("enoki-vm: {sig}: stopped the VM");
                let _ = signal_hook::low_level::emulate_default_handler(sig as i32);
                std::process::exit(128 + sig as i32);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let duration = start.elapsed();
        drop(virtiofsd);
        if let Some(t) = tail {
            t.stop();
        }
        let output = stdout_thread
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let qemu_stderr = stderr_thread.join().unwrap_or_default();
        prune_logs(&self.cfg.logs());

        let serial = read_lossy(&serial_log);
        let exit_code = read_exit_code(&exit_file);
        if kvm_failed {
            let detail = qemu_stderr.lines().take(3).collect::<Vec<_>>().join("\n");
            return Err(VmError::KvmInternalError {
                log: serial_log,
                detail,
            }
            .into());
        }
        let panicked = exit_code.is_none() && is_panic(&serial);
        if let Some(st) = status {
            if !st.success() && exit_code.is_none() && !panicked {
                return Err(VmError::QemuFailed {
                    status: st.to_string(),
                    log: serial_log,
                    stderr: qemu_stderr,
                }
                .into());
            }
        }
        Ok(Outcome {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
            serial_log,
            panicked,
            timed_out,
            timeout,
            duration,
            accel: self.accel,
            qemu_stderr,
        })
    }
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn is_panic(serial: &str) -> bool {
    serial.contains("Kernel panic - not syncing")
}

/// The last integer the guest wrote to the exit port.
fn read_exit_code(p: &Path) -> Option<i32> {
    read_lossy(p)
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
}

fn find_qemu() -> Result<PathBuf> {
    let name = std::env::var("ENOKI_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    which(&name).ok_or_else(|| VmError::QemuMissing(name).into())
}

/// A program on PATH (or a path that exists).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Short-pathed per-run directory (unix socket paths are limited to 108 bytes).
fn run_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("enoki-vm.")
        .tempdir_in("/tmp")
        .context("creating run directory in /tmp")
}

/// `<log_dir>/<timestamp>-<pid>.serial.log`, with a suffix if taken.
fn new_log_path(dir: &Path) -> Result<PathBuf> {
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

fn prune_logs(dir: &Path) {
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

fn collect_stderr(mut pipe: impl Read, kvm_error: Arc<AtomicBool>, forward: bool) -> String {
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        let s = String::from_utf8_lossy(&buf[..n]);
        if forward {
            let _ = std::io::stderr().write_all(s.as_bytes());
        }
        all.push_str(&s);
        if all.contains("KVM internal error") {
            kvm_error.store(true, Ordering::Relaxed);
        }
    }
    all
}

/// Children get SIGKILL when the thread that spawned them dies, so nothing
/// outlives a launcher killed with SIGKILL.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// Kills and reaps a child when dropped.
pub(crate) struct KillOnDrop {
    pub(crate) child: Child,
    name: &'static str,
}

impl KillOnDrop {
    pub(crate) fn new(child: Child, name: &'static str) -> Self {
        Self { child, name }
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
        if let Ok(None) = self.child.try_wait() {
            // virtiofsd ends by itself when QEMU disconnects; give it a moment.
            thread::sleep(Duration::from_millis(if self.name == "virtiofsd" {
                50
            } else {
                0
            }));
        }
        self.kill();
    }
}

fn virtiofsd_path() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    cargo_home
        .map(|h| h.join("bin/virtiofsd"))
        .filter(|p| p.is_file())
        .or_else(|| which("virtiofsd"))
}

fn start_virtiofsd(root: &Path, rundir: &Path) -> Result<(KillOnDrop, PathBuf)> {
    let bin = virtiofsd_path().context("not installed (cargo make deps)")?;
    let socket = rundir.join("virtiofsd.sock");
    if socket.exists() {
        bail!("socket path {} is busy", socket.display());
    }
    let log = rundir.join("virtiofsd.log");
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", root.display()))
        .args(["--sandbox=none", "--cache=auto", "--log-level=error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?);
    die_with_parent(&mut cmd);
    let mut guard = KillOnDrop::new(
        cmd.spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
        "virtiofsd",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        if let Some(st) = guard.child.try_wait()? {
            let msg = read_lossy(&log);
            bail!("{} exited ({st}): {}", bin.display(), msg.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not create {} within 5 s",
                bin.display(),
                socket.display()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok((guard, socket))
}

/// Restores the terminal QEMU put in raw mode, even if QEMU was killed.
struct TermGuard(Option<Termios>);

impl TermGuard {
    fn save(tty: bool) -> Self {
        Self(if tty {
            termios::tcgetattr(std::io::stdin()).ok()
        } else {
            None
        })
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, t);
        }
    }
}

/// Echoes the serial log to stderr while the VM runs (--verbose).
struct SerialTail {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl SerialTail {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            let mut pos = 0u64;
            let mut buf = Vec::new();
            loop {
                let last = s.load(Ordering::Relaxed);
                if let Ok(mut f) = fs::File::open(&path) {
                    if f.seek(SeekFrom::Start(pos)).is_ok() {
                        buf.clear();
                        if let Ok(n) = f.read_to_end(&mut buf) {
                            pos += n as u64;
                            let _ = std::io::stderr().write_all(&buf);
                        }
                    }
                }
                if last {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// SIGINT/SIGTERM/SIGHUP while a VM runs: stop it, restore the terminal, then
/// die of the signal. With no VM running the default action happens at once.
struct SignalState {
    pending: Arc<AtomicUsize>,
    idle: Arc<AtomicBool>,
    active: Mutex<usize>,
}

fn signal_state() -> &'static SignalState {
    static S: OnceLock<SignalState> = OnceLock::new();
    S.get_or_init(|| {
        let st = SignalState {
            pending: Arc::new(AtomicUsize::new(0)),
            idle: Arc::new(AtomicBool::new(true)),
            active: Mutex::new(0),
        };
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            let s = sig as i32;
            let _ = signal_hook::flag::register_conditional_default(s, st.idle.clone());
            let _ = signal_hook::flag::register_usize(s, st.pending.clone(), s as usize);
        }
        st
    })
}

fn pending_signal() -> Option<Signal> {
    let s = signal_state().pending.swap(0, Ordering::SeqCst);
    (s != 0).then(|| Signal::try_from(s as i32).ok()).flatten()
}

struct ActiveVm;

impl ActiveVm {
    fn enter() -> Self {
        let st = signal_state();
        let mut n = st.active.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        st.idle.store(false, Ordering::SeqCst);
        Self
    }
}

impl Drop for ActiveVm {
    fn drop(&mut self) {
        let st = signal_state();
        let mut n = st.active.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        st.idle.store(*n == 0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_parsing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("exit");
        assert_eq!(read_exit_code(&p), None);
        fs::write(&p, "7\n").unwrap();
        assert_eq!(read_exit_code(&p), Some(7));
        fs::write(&p, "\n0\n").unwrap();
        assert_eq!(read_exit_code(&p), Some(0));
        fs::write(&p, "garbage").unwrap();
        assert_eq!(read_exit_code(&p), None);
    }

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

    #[test]
    fn kill_on_drop_reaps() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        drop(KillOnDrop::new(child, "sleep"));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
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
}
