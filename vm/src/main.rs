// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-vm [OPTIONS] [-- CMD ARGS...]`: boot the Enoki kernel, run CMD (or an
//! interactive shell) and exit with its status.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use enoki_vm::{log_tail, parse_mem_mib, Accel, Purpose, StopHandle, VmConfig};
use nix::sys::signal::Signal;
use signal_hook::iterator::Signals;

/// Exit status when the guest timed out (as timeout(1)).
const EXIT_TIMEOUT: u8 = 124;
/// Exit status when the guest kernel panicked.
const EXIT_PANIC: u8 = 125;
/// Exit status for launcher errors (as ssh).
const EXIT_ERROR: u8 = 255;

#[derive(Parser, Debug)]
#[command(
    name = "enoki-vm",
    about = "Boot the Enoki kernel in QEMU and run a command (or a shell) in it",
    after_help = "The command runs under `sh -c` in the guest (arguments joined with spaces), with the \
                  workspace mounted at the same path and the same cwd. Exit status: the command's; \
                  124 on timeout, 125 on a guest kernel panic, 255 on launcher errors."
)]
struct Cli {
    /// Kernel image [default: <root>/target/kernel/arch/x86/boot/bzImage]
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs [default: <root>/target/rootfs/initrd.cpio]
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    cpus: u32,
    #[arg(long, default_value_t = 2)]
    sockets: u32,
    /// Guest memory (e.g. 4G, 512M), split evenly between NUMA nodes
    #[arg(long, default_value = "4G")]
    mem: String,
    /// NUMA nodes (distance 10 local, 21 remote)
    #[arg(long, default_value_t = 2)]
    numa: u32,
    /// Extra kernel command-line arguments
    #[arg(long, allow_hyphen_values = true)]
    append: Vec<String>,
    /// Seconds before the VM is killed [default: 300 under TCG, 120 under KVM; none for a shell]
    #[arg(long)]
    timeout: Option<u64>,
    /// Accelerator; auto = KVM if a probe boot works, else multi-threaded TCG for
    /// a kernel without runtime text patching (single-threaded for --purpose latency)
    #[arg(long, value_enum, env = "ENOKI_ACCEL", default_value_t = Accel::Auto)]
    accel: Accel,
    /// What the VM is for, when --accel is auto
    #[arg(long, value_enum, default_value_t = Purpose::Test)]
    purpose: Purpose,
    /// Do not share the workspace into the guest
    #[arg(long)]
    no_share: bool,
    /// Echo the kernel log (serial console) to stderr
    #[arg(long, short)]
    verbose: bool,
    /// Print the QEMU command line and exit
    #[arg(long)]
    dry_run: bool,
    /// Take commands from the host on this unix socket (`cargo make reload`)
    /// [default for a shell: <root>/target/vm/control.sock]
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    /// Load a QEMU TCG plugin: QEMU's `-plugin` value, e.g.
    /// `target/release/libenoki_tcg_profile.so,dir=target/profile/x`
    /// (see `cargo make tcg-profile`); ignored under KVM
    #[arg(long, value_name = "SPEC")]
    plugin: Option<std::ffi::OsString>,
    /// Command to run in the guest; none: interactive root shell
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    cmd: Vec<String>,
}

/// SIGINT, SIGTERM and SIGHUP stop the VM: a thread turns the first one into
/// a stop of the launch (which kills QEMU, restores the terminal and removes
/// the run directory); the launcher then dies of that signal.
struct SignalStop {
    handle: StopHandle,
    caught: Arc<AtomicI32>,
}

impl SignalStop {
    fn install() -> anyhow::Result<Self> {
        let handle = StopHandle::new()?;
        let caught = Arc::new(AtomicI32::new(0));
        let mut signals =
            Signals::new([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP].map(|s| s as i32))?;
        let (h, c) = (handle.clone(), caught.clone());
        thread::spawn(move || {
            for sig in signals.forever() {
                let _ = c.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                h.stop();
            }
        });
        Ok(Self { handle, caught })
    }

    /// If a signal came, says so and dies of it (exit 128+signal if that fails).
    fn die_if_caught(&self) {
        let Ok(sig) = Signal::try_from(self.caught.load(Ordering::SeqCst)) else {
            return;
        };
        eprintln!("enoki-vm: {sig}: stopped the VM");
        let _ = signal_hook::low_level::emulate_default_handler(sig as i32);
        std::process::exit(128 + sig as i32);
    }
}

fn config(cli: &Cli) -> anyhow::Result<VmConfig> {
    let mut cfg = VmConfig::new()?
        .cpus(cli.cpus)
        .sockets(cli.sockets)
        .numa(cli.numa)
        .mem_mib(parse_mem_mib(&cli.mem)?)
        .accel(cli.accel)
        .purpose(cli.purpose)
        .share(!cli.no_share)
        .verbose(cli.verbose);
    if let Some(k) = &cli.kernel {
        cfg = cfg.kernel(k);
    }
    if let Some(i) = &cli.initrd {
        cfg = cfg.initrd(i);
    }
    for a in &cli.append {
        cfg = cfg.append(a);
    }
    if let Some(t) = cli.timeout {
        cfg = cfg.timeout(Duration::from_secs(t));
    }
    if let Some(spec) = &cli.plugin {
        cfg = cfg.plugin(spec.clone());
    }
    if let Some(socket) = &cli.control {
        cfg = cfg.control(socket);
    }
    Ok(cfg)
}

/// Makes way for QEMU to listen on `socket`: a socket nobody listens on
/// (left by a VM that died) goes; a live one is another dev VM's.
fn claim_socket(socket: &std::path::Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "another dev VM takes commands on {} (stop it, or pass --control)",
            socket.display()
        );
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", socket.display()))
        }
        _ => {
            if let Some(dir) = socket.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = SignalStop::install().and_then(|signals| {
        let r = run(&cli, &signals);
        signals.die_if_caught();
        r
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enoki-vm: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The QEMU command line, arguments with spaces in single quotes; paths go
/// out as their bytes.
fn command_line(args: &[std::ffi::OsString]) -> Vec<u8> {
    let mut line = b"qemu-system-x86_64".to_vec();
    for a in args {
        let a = a.as_bytes();
        line.push(b' ');
        if a.contains(&b' ') {
            line.extend([b"'", a, b"'"].concat());
        } else {
            line.extend_from_slice(a);
        }
    }
    line.push(b'\n');
    line
}

fn run(cli: &Cli, signals: &SignalStop) -> anyhow::Result<ExitCode> {
    let mut cfg = config(cli)?;
    let cmd = (!cli.cmd.is_empty()).then(|| cli.cmd.join(" "));
    if !cli.dry_run {
        // A shell is a dev VM: `cargo make reload` upgrades schedulers in it.
        if cmd.is_none() && cfg.control.is_none() {
            let socket = enoki_vm::control::default_socket(&cfg.root);
            cfg = cfg.control(socket);
        }
        if let Some(socket) = &cfg.control {
            claim_socket(socket)?;
        }
    }
    let vm = cfg.stop_on(signals.handle.clone()).build()?;
    if cli.dry_run {
        let args = vm.qemu_args(cmd.as_deref())?;
        std::io::stdout().write_all(&command_line(&args))?;
        return Ok(ExitCode::SUCCESS);
    }
    let out = vm.run_inherit(cmd.as_deref());
    signals.die_if_caught();
    let out = out?;
    if let Some(code) = out.exit_code {
        return Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)));
    }
    let why = out.failure().unwrap_or_default();
    eprintln!("enoki-vm: {why}");
    if !cli.verbose {
        eprintln!(
            "--- last lines of the serial log ---\n{}",
            log_tail(&out.serial_log, 25)
        );
    }
    Ok(ExitCode::from(if out.timed_out {
        EXIT_TIMEOUT
    } else if out.panicked {
        EXIT_PANIC
    } else {
        EXIT_ERROR
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_command_after_double_dash_and_without() {
        let c =
            Cli::try_parse_from(["enoki-vm", "--cpus", "4", "--", "cat", "/proc/cpuinfo"]).unwrap();
        assert_eq!(c.cpus, 4);
        assert_eq!(c.cmd, ["cat", "/proc/cpuinfo"]);
        let c = Cli::try_parse_from(["enoki-vm", "ls", "-la", "--cpus", "2"]).unwrap();
        assert_eq!(c.cmd, ["ls", "-la", "--cpus", "2"]);
        assert_eq!(c.cpus, 8);
        let c = Cli::try_parse_from(["enoki-vm"]).unwrap();
        assert!(c.cmd.is_empty());
    }

    #[test]
    fn options() {
        let c = Cli::try_parse_from([
            "enoki-vm",
            "--accel",
            "mttcg",
            "--mem",
            "2G",
            "--numa",
            "1",
            "--append",
            "quiet foo=1",
            "--timeout",
            "9",
            "--no-share",
            "-v",
            "--purpose",
            "latency",
        ])
        .unwrap();
        assert_eq!(c.accel, Accel::Mttcg);
        let cfg = config(&c).unwrap();
        assert_eq!(cfg.mem_mib, 2048);
        assert_eq!(cfg.numa, 1);
        assert_eq!(cfg.append, ["quiet", "foo=1"]);
        assert_eq!(cfg.timeout, Some(Duration::from_secs(9)));
        assert!(!cfg.share && cfg.verbose);
        assert_eq!(cfg.purpose, Purpose::Latency);
        assert!(Cli::try_parse_from(["enoki-vm", "--accel", "hvf"]).is_err());
    }

    #[test]
    fn dry_run_line_quotes_spaces_and_keeps_bytes() {
        use std::ffi::OsStr;
        let args = [
            OsStr::new("-append").to_owned(),
            OsStr::new("a b").to_owned(),
            OsStr::from_bytes(b"/w/\xff").to_owned(),
        ];
        assert_eq!(
            command_line(&args),
            b"qemu-system-x86_64 -append 'a b' /w/\xff\n"
        );
    }
}
