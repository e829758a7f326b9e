// SPDX-License-Identifier: MIT OR Apache-2.0
//! A replay stopped in a debugger: `--stop-at-divergence` under gdb, a
//! breakpoint on `stopped_before`, then one in the scheduler's own code,
//! lands in the call that went wrong with the scheduler's state in reach
//! (the walk-through in the README, run in batch mode).

use std::path::Path;
use std::process::Command;

use enoki::abi::{flag, kind};
use enoki_sim::trace::{Event, Record, TraceReader, TraceWriter};

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
    let stopped = gdb_replay(
        &[t, "--sched", "badpick", "--stop-at-divergence"],
        "schedulers/badpick/src/lib.rs",
        "print self.picks",
    );
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
}

/// Under lock-ordered replay the scheduler's calls run on their CPU's
/// fiber stack; gdb still lands in the scheduler's own code at the call
/// that diverged (a FIFO trace with one pick's answer changed).
#[test]
fn gdb_stops_in_the_scheduler_of_a_replay_by_locks() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("fifo.enk");
    let r = recorded.to_str().unwrap();
    sim(&["--sched", "fifo", "--seed", "3", "--record", r]);
    let mut reader = TraceReader::open(&recorded).unwrap();
    let header = reader.header().clone();
    let mut records: Vec<Record> = reader.by_ref().map(Result::unwrap).collect();
    let changed = records
        .iter_mut()
        .find_map(|r| match &mut r.event {
            Event::Msg(m) if m.kind == kind::PICK_NEXT_TASK && m.flags & flag::KEEP_PREV != 0 => {
                Some(m)
            }
            _ => None,
        })
        .expect("FIFO keeps a task running when nothing else waits");
    changed.flags &= !flag::KEEP_PREV;
    let trace = dir.path().join("changed.enk");
    let mut w = TraceWriter::new(std::fs::File::create(&trace).unwrap(), header).unwrap();
    for rec in &records {
        w.write(rec).unwrap();
    }
    w.finish().unwrap();
    let t = trace.to_str().unwrap();
    let stopped = gdb_replay(
        &[t, "--by-locks", "--stop-at-divergence"],
        "schedulers/fifo/src/lib.rs",
        "print cpu",
    );
    assert!(
        stopped.starts_with("enoki_sim::registry::fifo::") && stopped.contains("pick_next_task"),
        "{stopped}"
    );
    assert!(
        stopped.contains("#0  enoki_sim::registry::fifo::"),
        "the backtrace starts in the scheduler: {stopped}"
    );
    assert!(
        stopped.contains("$1 = "),
        "its arguments can be printed: {stopped}"
    );
}

/// Runs `enoki-sim replay ARGS` under gdb: a breakpoint on
/// `stopped_before`, then on `fn pick_next_task` of `file`, `print`
/// there. Returns gdb's output from the second breakpoint on.
fn gdb_replay(args: &[&str], file: &str, print: &str) -> String {
    let at = format!("{file}:{}", line_of(file, "pick_next_task"));
    let o = Command::new("timeout")
        .args(["120", "gdb", "-batch", "-nx"])
        .args(["-ex", "break enoki_sim::replay::stop::stopped_before"])
        .args(["-ex", "run"])
        .args(["-ex", &format!("break {at}")])
        .args(["-ex", "continue"])
        .args(["-ex", "bt 3"])
        .args(["-ex", print])
        .args(["-ex", "kill"])
        .arg("--args")
        .arg(env!("CARGO_BIN_EXE_enoki-sim"))
        .arg("replay")
        .args(args)
        .env("ENOKI_QUIET", "1")
        .output()
        .expect("gdb (ci/deps.sh installs it)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Breakpoint 1, enoki_sim::replay::stop::stopped_before"),
        "{out}"
    );
    out.split("\nBreakpoint 2, ")
        .nth(1)
        .unwrap_or_else(|| panic!("never reached {at}:\n{out}"))
        .to_owned()
}
