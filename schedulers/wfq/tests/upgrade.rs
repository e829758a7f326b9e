// SPDX-License-Identifier: GPL-2.0
//! Live upgrade of WFQ under the userspace backend, as Enoki-C does it:
//! state handed over with every call held off, then every task introduced
//! again with a fresh token for each one that waited.

mod common;

use common::*;
use enoki::upgrade::Refusal;
use enoki::{InitError, Pid};

/// The tasks of `pids` not running on CPU 0 (so waiting there).
fn waiting_on_cpu0(m: &Machine, pids: &[Pid]) -> Vec<Pid> {
    pids.iter()
        .copied()
        .filter(|p| m.running(0) != Some(*p))
        .collect()
}

/// How far each task waiting on CPU 0 is ahead of the first of them
/// (tasks waiting on one queue keep these gaps while they wait).
fn gaps(m: &Machine, waiting: &[Pid]) -> Vec<(Pid, i64)> {
    let v = |p: Pid| m.sched().vruntime(p).unwrap().expect("known") as i64;
    let first = v(waiting[0]);
    waiting.iter().map(|&p| (p, v(p) - first)).collect()
}

/// Six spinners on CPU 0 that ran for different times (each joins later
/// than the one before), so their fair order is not their pid order.
fn uneven_cpu0() -> (Machine, Vec<Pid>) {
    let mut m = Machine::new("");
    let pids: Vec<Pid> = (1..=6).collect();
    for &pid in pids.iter().rev() {
        m.spawn(pid, only(0), 0, 0);
        m.run(7);
    }
    (m, pids)
}

#[test]
fn an_upgrade_mid_workload_keeps_every_task_in_its_fair_order() {
    let (mut m, pids) = uneven_cpu0();
    for pid in 10..14 {
        m.spawn(pid, all(), 0, 1);
    }
    m.run(20);
    let waiting = waiting_on_cpu0(&m, &pids);
    let before = gaps(&m, &waiting);
    assert!(
        before.iter().any(|(_, gap)| *gap != 0),
        "the test needs gaps a fresh start would lose: {before:?}"
    );

    m.act(|d| d.upgrade("", false, 0)).expect("upgraded");
    assert_eq!(
        m.sched().upgrades(),
        1,
        "the state came from the old version"
    );
    m.check_consistent().unwrap();
    assert_eq!(gaps(&m, &waiting), before, "the fair order goes on");

    let ran = m.runtimes(&pids);
    m.run_conserving(300);
    for (pid, (after, before)) in pids.iter().zip(m.runtimes(&pids).iter().zip(&ran)) {
        assert!(after > before, "task {pid} runs after the upgrade");
    }
    m.act(|d| d.upgrade("", false, 3)).expect("upgraded again");
    assert_eq!(m.sched().upgrades(), 2);
    m.check_consistent().unwrap();
}

#[test]
fn a_fresh_upgrade_drops_the_state_but_keeps_every_task() {
    let (mut m, pids) = uneven_cpu0();
    m.act(|d| d.upgrade("period_us=12000", true, 0))
        .expect("upgraded");
    assert_eq!(m.sched().upgrades(), 0, "no state came over");
    m.check_consistent().unwrap();
    let ran = m.runtimes(&pids);
    m.run_conserving(100);
    for (pid, (after, before)) in pids.iter().zip(m.runtimes(&pids).iter().zip(&ran)) {
        assert!(after > before, "task {pid} runs after the upgrade");
    }
}

#[test]
fn a_refused_upgrade_leaves_the_running_version_untouched() {
    let (mut m, pids) = uneven_cpu0();
    let waiting = waiting_on_cpu0(&m, &pids);
    let before = gaps(&m, &waiting);
    let refused = m.act(|d| d.upgrade("period_us=0", false, 0));
    assert_eq!(
        refused,
        Err(Refusal::Init(InitError::InvalidArgument("period_us")))
    );
    assert_eq!(gaps(&m, &waiting), before);
    m.check_consistent().unwrap();
    m.run_conserving(50);
}
