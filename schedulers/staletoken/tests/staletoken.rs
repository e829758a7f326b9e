// SPDX-License-Identifier: GPL-2.0
//! Stale tokens (of tasks that slept, moved or died) reach Enoki-C's checks,
//! which drop the ones that can never work: the queue drains.

use enoki::user::{Driver, TaskState};
use enoki::{CpuSet, Topology};
use enoki_staletoken::StaleToken;

fn only(cpu: usize) -> CpuSet {
    let mut s = CpuSet::empty();
    s.insert(cpu);
    s
}

fn driver() -> Driver<StaleToken> {
    std::env::set_var("ENOKI_QUIET", "1");
    Driver::new(Topology::symmetric(1, 2, 1, 21).unwrap(), 16, 1_000_000, "").unwrap()
}

#[test]
fn a_task_that_blocks_while_queued_leaves_a_token_that_fails_once() {
    let mut d = driver();
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(0), 0, 0);
    // A nice change takes 2 off the queue and back: the scheduler keeps
    // the token it had and gets a second one.
    d.set_nice(2, 5);
    assert_eq!(d.schedule(0), Some(1));
    d.block(0);
    assert_eq!(
        d.schedule(0),
        Some(2),
        "the old token still names a queued task"
    );
    d.block(0);
    assert_eq!(d.schedule(0), None, "the second token fails: 2 sleeps");
    assert_eq!(d.counters.pick_errors, 1);
    assert_eq!(d.schedule(0), None);
    assert_eq!(d.counters.pick_errors, 1, "and is not handed back");
}

#[test]
fn a_dead_tasks_token_is_refused_and_never_comes_back() {
    let mut d = driver();
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(0), 0, 0);
    // 2 dies while queued: the scheduler keeps its token.
    d.exit(2);
    assert_eq!(d.schedule(0), Some(1));
    d.block(0);
    assert_eq!(d.schedule(0), None, "2's token fails: no such task");
    assert_eq!(d.counters.pick_errors, 1);
    assert_eq!(d.schedule(0), None);
    assert_eq!(
        d.counters.pick_errors, 1,
        "the dead token was not handed back"
    );
}

#[test]
fn a_queued_token_for_a_cpu_no_longer_allowed_is_rehomed() {
    let mut d = driver();
    d.spawn(1, only(0), 0, 0);
    // The affinity change dequeues 1 (the scheduler keeps that token) and
    // queues it on CPU 1 with a new one.
    d.set_affinity(1, only(1));
    assert_eq!(d.state(1), Some(TaskState::Queued { cpu: 1 }));
    assert_eq!(
        d.schedule(0),
        None,
        "the stale CPU 0 tokens cannot run there"
    );
    let rehomed = d.counters.pick_errors;
    assert!(rehomed >= 1);
    assert_eq!(d.schedule(1), Some(1));
    d.block(1);
    assert_eq!(
        d.schedule(1),
        None,
        "the re-homed stale tokens name a sleeping task"
    );
    let dropped = d.counters.pick_errors;
    assert_eq!(d.schedule(1), None);
    assert_eq!(d.schedule(0), None);
    assert_eq!(d.counters.pick_errors, dropped, "no stale token came back");
    assert!(dropped > rehomed);
}
