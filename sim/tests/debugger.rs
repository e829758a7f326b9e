// SPDX-License-Identifier: MIT OR Apache-2.0
//! A replay stopped in a debugger: `--stop-at-divergence` under gdb, a
//! breakpoint on `stopped_before`, then one in the scheduler's own code,
//! lands in the call that went wrong with the scheduler's state in reach
//! (the walk-through in the README, run in batch mode).

use std::path::Path;
use std::process::Command;

fn sim(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_enoki-sim"))
        .args(args)
        .env("ENOKI_QUIET", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {o:?}");
}

/// The line of `fn name` in `file` (relative to the workspace).
fn line_of(file: &str, name: &str) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text
        .lines()
        .position(|l| l.trim_start().starts_with(&format!("fn {name}(")))
        .unwrap_or_else(|| panic!("no fn {name} in {file}"));
    at + 1
}

#[test]
fn gdb_stops_in_the_scheduler_at_the_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("fifo.enk");
    let t = trace.to_str().unwrap();
    sim(&["--sched", "fifo", "--seed", "3", "--record", t]);
    let file = "schedulers/badpick/src/lib.rs";
    let at = format!("{file}:{}", line_of(file, "pick_next_task"));
    let o = Command::new("timeout")
        .args(["120", "gdb", "-batch", "-nx"])
        .args(["-ex", "break enoki_sim::replay::stop::stopped_before"])
        .args(["-ex", "run"])
        .args(["-ex", &format!("break {at}")])
        .args(["-ex", "continue"])
        .args(["-ex", "bt 3"])
        .args(["-ex", "print self.picks"])
        .args(["-ex", "kill"])
        .arg("--args")
        .arg(env!("CARGO_BIN_EXE_enoki-sim"))
        .args(["replay", t, "--sched", "badpick", "--stop-at-divergence"])
        .env("ENOKI_QUIET", "1")
        .output()
        .expect("gdb (ci/deps.sh installs it)");
    let out = String::from_utf8_lossy(&o.stdout);
    let stopped = out
        .split("\nBreakpoint 2, ")
        .nth(1)
        .unwrap_or_else(|| panic!("never reached {at}:\n{out}"));
    assert!(
        stopped.starts_with("enoki_sim::registry::badpick::") && stopped.contains("pick_next_task"),
        "{stopped}"
    );
    assert!(
        stopped.contains("#0  enoki_sim::registry::badpick::"),
        "the backtrace starts in the scheduler: {stopped}"
    );
    assert!(
        stopped.contains("value: "),
        "the scheduler's state can be printed: {stopped}"
    );
    assert!(
        out.contains("Breakpoint 1, enoki_sim::replay::stop::stopped_before"),
        "{out}"
    );
}
