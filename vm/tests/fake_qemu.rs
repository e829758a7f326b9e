// SPDX-License-Identifier: MIT OR Apache-2.0
//! Launches with a stand-in for QEMU (`ENOKI_QEMU`): a shell script that runs
//! the guest command from the kernel command line on the host, in its own
//! process, and writes its status to the exit port. Exercises the launch
//! steps (spawn, output, wait, classify, stop) without booting a kernel.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use enoki_vm::{Accel, StopHandle, VmConfig, VmError};

const FAKE_QEMU: &str = r#"#!/bin/sh
prev=
for a in "$@"; do
    case "$a" in
    file,id=exit0,path=*) EXIT_FILE=${a#file,id=exit0,path=} ;;
    file,id=serial0,path=*) SERIAL=${a#file,id=serial0,path=} ;;
    esac
    if [ "$prev" = -append ]; then
        for w in $a; do
            case "$w" in enoki.cmd=*) cmd=$(printf %s "${w#enoki.cmd=}" | base64 -d) ;; esac
        done
    fi
    prev=$a
done
QEMU_ARGS="$*"
export EXIT_FILE SERIAL QEMU_ARGS
trap 'echo $? > "$EXIT_FILE"' EXIT
eval "$cmd"
"#;

/// A directory with the fake QEMU, a dummy kernel and initrd; ENOKI_QEMU
/// points at the script for the whole test process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let qemu = d.path().join("fake-qemu");
        fs::write(&qemu, FAKE_QEMU).unwrap();
        fs::set_permissions(&qemu, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.path().join("bzImage"), b"").unwrap();
        std::env::set_var("ENOKI_QEMU", &qemu);
        d
    })
    .path()
}

fn config() -> VmConfig {
    let d = fixture();
    VmConfig::with_root(d)
        .kernel(d.join("bzImage"))
        .initrd(d.join("bzImage"))
        .accel(Accel::Tcg)
        .share(false)
        .log_dir(d.join("logs"))
        .timeout(Duration::from_secs(20))
}

fn vm_error(e: &anyhow::Error) -> &VmError {
    e.downcast_ref::<VmError>()
        .unwrap_or_else(|| panic!("not a VmError: {e:#}"))
}

#[test]
fn exit_status_and_output_come_back() {
    let out = config()
        .build()
        .unwrap()
        .run("echo before; exit 7")
        .unwrap();
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(out.output, "before\n");
    assert!(!out.timed_out && !out.panicked);
}

#[test]
fn panic_in_the_serial_log_is_reported() {
    let cmd = "echo 'Kernel panic - not syncing: test' > \"$SERIAL\"; trap - EXIT; exit 0";
    let out = config().build().unwrap().run(cmd).unwrap();
    assert!(out.panicked, "{out:?}");
    assert_eq!(out.exit_code, None);
}

#[test]
fn timeout_kills_the_vm() {
    let vm = config()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let out = vm.run("exec sleep 30").unwrap();
    assert!(out.timed_out, "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn qemu_failure_and_kvm_error_are_errors() {
    let vm = config().build().unwrap();
    let e = vm
        .run("trap - EXIT; echo 'qemu: boom' >&2; exit 1")
        .unwrap_err();
    match vm_error(&e) {
        VmError::QemuFailed { stderr, .. } => assert!(stderr.contains("qemu: boom")),
        other => panic!("{other:?}"),
    }
    let start = Instant::now();
    let e = vm
        .run("echo 'KVM internal error. Suberror: 1' >&2; exec sleep 30")
        .unwrap_err();
    assert!(
        matches!(vm_error(&e), VmError::KvmInternalError { .. }),
        "{e:#}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn qemu_crash_under_mttcg_reruns_on_single_threaded_tcg() {
    let crash = "case \"$QEMU_ARGS\" in *thread=multi*) trap - EXIT; kill -SEGV $$ ;; esac; \
                 echo \"$QEMU_ARGS\" | grep -o 'thread=[a-z]*'";
    let out = config()
        .accel(Accel::Mttcg)
        .build()
        .unwrap()
        .run(crash)
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.output, "thread=single\n");
    // Single-threaded TCG crashing is the caller's error, not run again.
    let e = config()
        .build()
        .unwrap()
        .run("trap - EXIT; kill -SEGV $$")
        .unwrap_err();
    match vm_error(&e) {
        VmError::QemuFailed { signal, .. } => assert_eq!(*signal, Some(11)),
        other => panic!("{other:?}"),
    }
}

/// A guest hung by the emulator under MTTCG (RCU says a CPU's timer never
/// fired) is not waited on until the timeout: the run ends at that line and
/// is repeated on single-threaded TCG. Forced MTTCG says why it failed.
#[test]
fn a_timer_lost_under_mttcg_reruns_on_single_threaded_tcg_at_once() {
    let hang = "case \"$QEMU_ARGS\" in *thread=multi*) \
                printf '[ 32.1] rcu: \\tPossible timer handling issue on cpu=5 timer-softirq=0\\n' \
                >> \"$SERIAL\"; exec sleep 60 ;; esac; \
                echo \"$QEMU_ARGS\" | grep -o 'thread=[a-z]*'";
    let start = Instant::now();
    let out = config()
        .accel(Accel::Mttcg)
        .timeout(Duration::from_secs(50))
        .build()
        .unwrap()
        .run(hang)
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.output, "thread=single\n");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    // On single-threaded TCG the same line is the guest's problem, left to
    // the caller (here: a timeout).
    let out = config()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .run("printf 'rcu: \\tPossible timer handling issue on cpu=1\\n' >> \"$SERIAL\"; exec sleep 60")
        .unwrap();
    assert!(out.timed_out, "{out:?}");
}

#[test]
fn stop_handle_stops_a_running_vm_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("started");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let stop = StopHandle::new().unwrap();
    let vm = config().stop_on(stop.clone()).build().unwrap();
    // The fake QEMU says its pid and exit file once running, then sleeps.
    let stopper = {
        let fifo = fifo.clone();
        thread::spawn(move || {
            let mut line = String::new();
            BufReader::new(fs::File::open(&fifo).unwrap())
                .read_line(&mut line)
                .unwrap();
            stop.stop();
            (Instant::now(), line)
        })
    };
    let cmd = format!(
        "echo \"$$ $EXIT_FILE\" > '{}'; exec sleep 30",
        fifo.display()
    );
    let e = vm.run(&cmd).unwrap_err();
    let returned = Instant::now();
    assert!(matches!(vm_error(&e), VmError::Stopped), "{e:#}");
    let (stopped, line) = stopper.join().unwrap();
    assert!(
        returned - stopped < Duration::from_secs(1),
        "took {:?}",
        returned - stopped
    );
    let (pid, exit_file) = line.trim().split_once(' ').unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU left running"
    );
    let rundir = PathBuf::from(exit_file).parent().unwrap().to_path_buf();
    assert!(
        rundir.starts_with("/tmp") && !rundir.exists(),
        "{rundir:?} left behind"
    );
    // Stopping is final: the next launch stops before starting anything.
    let e = vm.run("exit 0").unwrap_err();
    assert!(matches!(vm_error(&e), VmError::Stopped), "{e:#}");
}
