// SPDX-License-Identifier: MIT OR Apache-2.0
//! Shared helpers for tests that boot the Enoki kernel: boot, run one
//! command, assert a clean kernel log, and print the tail of the serial log
//! when a test fails. Tests run VMs one at a time (`#[serial]`).
//!
//! ```no_run
//! # use enoki_itests as it;
//! let r = it::run_ok("insmod /lib/modules/enoki/enoki_fifo.ko && dmesg | tail -1");
//! assert!(r.output.contains("enoki"));
//! ```

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

pub use enoki_vm::{
    kernel_log_problems, log_tail, Accel, Interactive, Outcome, Purpose, Vm, VmConfig,
};

/// Lines of serial log printed when a test fails.
pub const TAIL_LINES: usize = 60;

/// The default test VM (8 CPUs, 2 sockets, 2 NUMA nodes, 4 GiB, the
/// workspace shared); the command's output is echoed so a failing test shows it.
pub fn config() -> VmConfig {
    VmConfig::new()
        .expect("finding the workspace root")
        .echo_output(true)
}

/// The test VM for tests that compare wall-clock timing between schedulers
/// (fair shares, wakeup placement, time to steal): without KVM it runs on
/// single-threaded TCG, where every vCPU progresses at the same rate. Under
/// multi-threaded TCG the host schedules the 8 vCPU threads on its 2 cores
/// as it likes, and a vCPU the host leaves waiting still sees guest time pass.
pub fn timing_config() -> VmConfig {
    config().purpose(Purpose::Latency)
}

/// Builds the VM, failing the test with the fix when kernel/initrd/QEMU are missing.
pub fn vm(cfg: VmConfig) -> Vm {
    match cfg.build() {
        Ok(vm) => vm,
        Err(e) => panic!("cannot boot the test VM: {e:#}"),
    }
}

/// A finished boot. Derefs to [`Outcome`]; if the test panics while this is
/// alive, the tail of the serial log and the problem lines are printed.
pub struct Run {
    pub out: Outcome,
}

impl Deref for Run {
    type Target = Outcome;
    fn deref(&self) -> &Outcome {
        &self.out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_failure_context(&self.out.serial_log);
        }
    }
}

impl Run {
    /// Fails unless the kernel log is free of bugs, warnings, oopses, panics,
    /// stalls and lockups.
    pub fn assert_clean(&self) {
        let problems = self.problems();
        assert!(
            problems.is_empty(),
            "kernel log has problems:\n  {}",
            problems.join("\n  ")
        );
    }

    /// Fails on any kernel-log problem but sched_ext's own report of an
    /// ejection (for tests whose scheduler is meant to be ejected).
    pub fn assert_clean_but_ejections(&self) {
        let unexpected: Vec<String> = self
            .problems()
            .into_iter()
            .filter(|l| !l.contains("sched_ext:"))
            .collect();
        assert!(
            unexpected.is_empty(),
            "kernel log problems besides the ejections:\n  {}",
            unexpected.join("\n  ")
        );
    }

    /// Fails unless the guest command exited with `code`.
    pub fn assert_exit(&self, code: i32) {
        if let Some(why) = self.failure() {
            panic!("no exit status from the guest: {why}");
        }
        assert_eq!(
            self.exit_code,
            Some(code),
            "guest command exit status; output:\n{}",
            self.output
        );
    }

    /// Serial log location, for messages.
    pub fn log(&self) -> PathBuf {
        self.serial_log.clone()
    }
}

impl AsRef<str> for Run {
    /// The guest command's output, for [`field`] and [`number`].
    fn as_ref(&self) -> &str {
        &self.out.output
    }
}

/// The value of a `key value` (or `key: value`, `key=value`) line of guest
/// output: the first line that starts with `key` and a separator.
pub fn field<'a, T: AsRef<str> + ?Sized>(out: &'a T, key: &str) -> &'a str {
    let out = out.as_ref();
    out.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix([' ', ':', '=']))
        })
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{key}' in guest output:\n{out}"))
}

/// [`field`] as a number.
pub fn number<T: AsRef<str> + ?Sized>(out: &T, key: &str) -> u64 {
    let v = field(out, key);
    v.parse()
        .unwrap_or_else(|_| panic!("'{key}' is not a number: {v:?}"))
}

/// [`field`] as a decimal number.
pub fn float<T: AsRef<str> + ?Sized>(out: &T, key: &str) -> f64 {
    let v = field(out, key);
    v.parse()
        .unwrap_or_else(|_| panic!("'{key}' is not a number: {v:?}"))
}

/// A guest shell function `irqs KIND` that prints the interrupts of one
/// row of `/proc/interrupts` (e.g. `IWI`, IRQ work; `RES`, rescheduling
/// interrupts) summed over every CPU.
pub const IRQS: &str = r#"irqs() { awk -v k="$1:" '$1 == k { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' /proc/interrupts; }"#;

/// A guest shell function `dump PREFIX` that prints Enoki's status files,
/// its message counters and sched_ext's state as `PREFIXname value` lines
/// (`scx` is sched_ext's state), for [`field`] and [`number`].
pub const DUMP: &str = r#"dump() { for f in scheduler state nr_tasks pick_errors select_errors balance_errors rejected; do echo "$1$f $(cat /sys/kernel/enoki/$f)"; done; sed "s/^/$1/" /sys/kernel/enoki/counters; echo "${1}scx $(cat /sys/kernel/sched_ext/state)"; echo "${1}last_exit $(cat /sys/kernel/enoki/last_exit)"; }"#;

/// Fails unless the dump with `prefix` (see [`DUMP`]) shows the scheduler
/// still running: Enoki's `state` is `enabled` and sched_ext still enabled.
pub fn assert_enabled(r: &Run, prefix: &str) {
    let exit = field(r, &format!("{prefix}last_exit"));
    assert_eq!(
        field(r, &format!("{prefix}scx")),
        "enabled",
        "{prefix}: sched_ext is no longer running the scheduler (last_exit: {exit})"
    );
    assert_eq!(
        field(r, &format!("{prefix}state")),
        "enabled",
        "{prefix}: Enoki state (last_exit: {exit})"
    );
    assert_eq!(exit, "", "{prefix}: the scheduler exited");
}

/// Prints the tail of a serial log and its problem lines (to stdout, so the
/// test harness shows it with the failure).
pub fn print_failure_context(serial_log: &std::path::Path) {
    println!(
        "---- last {TAIL_LINES} lines of {} ----",
        serial_log.display()
    );
    println!("{}", log_tail(serial_log, TAIL_LINES));
    if let Ok(text) = std::fs::read_to_string(serial_log) {
        let p = kernel_log_problems(&text);
        if !p.is_empty() {
            println!("---- problem lines ----\n{}", p.join("\n"));
        }
    }
}

/// Boots `cfg` and runs `cmd` (a shell command line) in the guest.
pub fn boot(cfg: VmConfig, cmd: &str) -> Run {
    let vm = vm(cfg);
    match vm.run(cmd) {
        Ok(out) => Run { out },
        Err(e) => panic!("running {cmd:?} in the VM failed: {e:#}"),
    }
}

/// Runs `cmd` in the default test VM.
pub fn run(cmd: &str) -> Run {
    boot(config(), cmd)
}

/// Runs `cmd` in the default test VM and asserts exit status 0 and a clean log.
pub fn run_ok(cmd: &str) -> Run {
    run_ok_in(config(), cmd)
}

/// Boots `cfg`, runs `cmd` and asserts exit status 0 and a clean log.
pub fn run_ok_in(cfg: VmConfig, cmd: &str) -> Run {
    let r = boot(cfg, cmd);
    r.assert_exit(0);
    r.assert_clean();
    r
}

/// The default test VM with a timeout for workloads that take minutes
/// without KVM on a busy host (boot alone can take two there).
pub fn heavy_config() -> VmConfig {
    config().timeout(Duration::from_secs(900))
}

/// A directory under `<root>/target/itests` (inside the share, so the guest
/// sees it at the same path), removed when dropped unless `ENOKI_KEEP_TEMP`
/// is set (to look at what a failed test recorded).
pub fn shared_tempdir() -> tempfile::TempDir {
    let root = enoki_vm::find_root().expect("workspace root");
    let base = root.join("target/itests");
    std::fs::create_dir_all(&base).expect("creating target/itests");
    tempfile::Builder::new()
        .prefix("tmp.")
        .disable_cleanup(std::env::var_os("ENOKI_KEEP_TEMP").is_some())
        .tempdir_in(base)
        .expect("tempdir in target/itests")
}

/// Timeout for rexpect steps of an interactive session under this VM.
pub fn expect_timeout(vm: &Vm) -> Duration {
    match vm.accel() {
        Accel::Kvm => Duration::from_secs(60),
        _ => Duration::from_secs(180),
    }
}
