// SPDX-License-Identifier: MIT OR Apache-2.0
//! The VM pipeline itself: topology, exit status, panic detection, host share,
//! interactive shell, cleanup after a timeout.

use std::time::{Duration, Instant};

use enoki_itests::{self as it, Run};
use serial_test::serial;

#[test]
#[serial]
fn guest_sees_8_cpus_2_sockets_2_numa_nodes() {
    let r = it::run_ok(concat!(
        "echo cpus=$(nproc); ",
        "echo packages=$(cat /sys/devices/system/cpu/cpu*/topology/physical_package_id | sort -u | tr '\\n' ' '); ",
        "for n in /sys/devices/system/node/node[0-9]*; do echo \"${n##*/}=$(cat $n/distance)\"; done",
    ));
    let line = |key: &str| -> String {
        r.output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in output:\n{}", r.output))
            .trim()
            .to_owned()
    };
    assert_eq!(line("cpus"), "8");
    assert_eq!(line("packages"), "0 1");
    assert_eq!(line("node0"), "10 21");
    assert_eq!(line("node1"), "21 10");
    assert!(!r.output.contains("node2="), "{}", r.output);
}

#[test]
#[serial]
fn failing_command_returns_its_exit_status() {
    let r = it::run("echo before; exit 7");
    r.assert_exit(7);
    assert_eq!(r.output, "before\n");
    r.assert_clean();
}

#[test]
#[serial]
fn guest_panic_is_reported_at_once() {
    let timeout = Duration::from_secs(240);
    let start = Instant::now();
    let r = it::boot(
        it::config().timeout(timeout),
        "echo c > /proc/sysrq-trigger; sleep 1000",
    );
    assert!(r.panicked, "panic not detected: {:?}", r.failure());
    assert!(!r.timed_out);
    assert_eq!(r.exit_code, None);
    assert!(r.failure().unwrap().contains("guest kernel panicked"));
    assert!(
        r.problems().iter().any(|p| p.contains("Kernel panic")),
        "{:?}",
        r.problems()
    );
    // Boot + panic take seconds; waiting for the timeout would take minutes.
    assert!(start.elapsed() < timeout / 4, "took {:?}", start.elapsed());
}

#[test]
#[serial]
fn host_share_is_mounted_at_the_same_path() {
    let dir = it::shared_tempdir();
    let file = dir.path().join("from-guest.txt");
    let host_cwd = std::env::current_dir().unwrap();
    let r = it::run_ok(&format!(
        "pwd; readlink /host; echo written-in-guest > '{}'; cat /proc/mounts | grep -c ' {} '",
        file.display(),
        enoki_vm::find_root().unwrap().display()
    ));
    let lines: Vec<&str> = r.output.lines().collect();
    assert_eq!(lines[0], host_cwd.to_str().unwrap(), "guest cwd");
    assert_eq!(
        lines[1],
        enoki_vm::find_root().unwrap().to_str().unwrap(),
        "/host symlink"
    );
    assert_eq!(lines[2], "1", "share mounted once at the host path");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "written-in-guest\n"
    );
}

#[test]
#[serial]
fn interactive_shell_runs_commands_and_powers_off() {
    let vm = it::vm(it::config());
    let mut sh = vm
        .spawn_interactive(it::expect_timeout(&vm))
        .expect("spawning the VM in a pty");
    let log = sh.serial_log().to_path_buf();
    let guard = LogOnPanic(log);
    let prompt = r"\[enoki-vm [^\]]*\]# ";
    sh.exp_regex(prompt).expect("first prompt");
    sh.send_line("echo hi").unwrap();
    // The guest tty and the host pty each add a \r.
    sh.exp_regex(r"\nhi\r").expect("echo output");
    sh.exp_regex(prompt).expect("second prompt");
    sh.send_line("exit").unwrap();
    let out = sh.wait(Duration::from_secs(60)).expect("waiting for QEMU");
    assert!(!out.timed_out, "VM did not power off after exit");
    assert_eq!(out.exit_code, Some(0));
    Run { out }.assert_clean();
    drop(guard);
}

#[test]
#[serial]
fn timeout_kills_everything() {
    let timeout = Duration::from_secs(if it::vm(it::config()).accel() == it::Accel::Kvm {
        10
    } else {
        15
    });
    let r = it::boot(it::config().timeout(timeout), "sleep 1000");
    assert!(r.timed_out, "{:?}", r.failure());
    assert!(r
        .failure()
        .unwrap()
        .contains(&format!("timed out after {} s", timeout.as_secs())));
    // No QEMU or virtiofsd left behind: this process has no children.
    let me = std::process::id();
    let children: Vec<String> = std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(
        children.is_empty(),
        "leftover child processes: {children:?}"
    );
}

/// Prints the serial log tail if the interactive test fails before it has an Outcome.
struct LogOnPanic(std::path::PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            it::print_failure_context(&self.0);
        }
    }
}

/// An emulated guest keeps time with its TSC, not the HPET: every HPET read
/// is an MMIO exit that takes QEMU's global lock and stalls the other vCPUs,
/// and scheduling paths read the clock on every call. Trusting the TSC must
/// not let time run backwards from one CPU to the next.
#[test]
#[serial]
fn guest_clock_is_a_cpu_clock_that_never_goes_back_across_cpus() {
    let r = it::run_ok(concat!(
        "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; ",
        "enoki-util clock-check --seconds 3",
    ));
    let source = r.output.lines().next().unwrap_or_default().trim();
    assert!(
        matches!(source, "tsc" | "kvm-clock"),
        "clocksource {source:?}\n{}",
        r.output
    );
    let field = |key: &str| -> u64 {
        r.output
            .split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in output:\n{}", r.output))
    };
    assert_eq!(field("backwards"), 0, "{}", r.output);
    assert!(field("reads") > 10_000, "{}", r.output);
}

/// A command longer than the kernel command line allows runs from a script
/// on the share, with its output and exit status, and the script is gone
/// afterwards.
#[test]
#[serial]
fn a_command_too_long_for_the_kernel_command_line_still_runs() {
    // Other VMs (`vm-suite`'s other lane) may have scripts of their own there.
    let filler = format!("too-long-{}-{}", std::process::id(), "x".repeat(3000));
    let r = it::run(&format!(
        "echo start; : {filler}; echo \"it's $((6 * 7))\"; exit 3"
    ));
    r.assert_exit(3);
    assert_eq!(r.output, "start\nit's 42\n");
    r.assert_clean();
    let dir = it::config().root.join("target/vm/cmd");
    let left = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|f| std::fs::read_to_string(f.path()).is_ok_and(|s| s.contains(&filler)))
        .count();
    assert_eq!(left, 0, "this command's script left in {}", dir.display());
}

/// `cargo make tcg-profile`: the QEMU plugin counts the guest's
/// instructions between the guest's marks, and the report names the
/// scheduler module's functions under FIFO and none under the default.
#[test]
#[serial]
fn the_tcg_profile_names_the_scheduler_modules_functions() {
    let root = enoki_vm::find_root().expect("workspace root");
    let build = std::process::Command::new("cargo")
        .args(["build", "--release", "-q", "-p", "enoki-tcg-profile"])
        .current_dir(&root)
        .status()
        .expect("cargo");
    assert!(build.success(), "building enoki-tcg-profile failed");
    let out = std::process::Command::new(root.join("target/release/enoki-tcg-profile"))
        .args(["--sched", "default,fifo", "--top", "40", "--timeout", "300"])
        .args(["--", "enoki-pipe", "-l", "500", "--cpus", "0,1"])
        .current_dir(&root)
        .output()
        .expect("enoki-tcg-profile");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let split = |sched: &str| -> Vec<f64> {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {sched} |")))
            .unwrap_or_else(|| panic!("no row for {sched}:\n{report}"));
        row.split('|')
            .filter_map(|c| c.trim().parse().ok())
            .collect()
    };
    // user, kernel, Enoki-C, scheduler module, sched_ext, rest
    let (default, fifo) = (split("default"), split("fifo"));
    assert!(default[1] > 0.0 && fifo[1] > 0.0, "{report}");
    assert_eq!((default[2], default[3]), (0.0, 0.0), "{report}");
    assert!(fifo[2] > 0.0 && fifo[3] > 0.0, "{report}");
    assert!(
        report.contains("| enoki_fifo |") && report.contains("kmod::process"),
        "{report}"
    );
}
