// SPDX-License-Identifier: GPL-2.0
//! Shinjuku under the userspace backend, driven the way Enoki-C drives it:
//! a preemption-timer kick is `Driver::preempt`.

use enoki::user::{Driver, HostEvent};
use enoki::{CpuSet, InitError, Topology};
use enoki_shinjuku::Shinjuku;

const SLICE: u64 = 3_000_000;
const PREEMPT: u64 = 25_000;

fn driver() -> Driver<Shinjuku> {
    std::env::set_var("ENOKI_QUIET", "1");
    Driver::new(
        Topology::symmetric(1, 4, 1, 21).unwrap(),
        64,
        SLICE,
        "preempt_us=25",
    )
    .unwrap()
}

fn cpus(list: &[usize]) -> CpuSet {
    let mut s = CpuSet::empty();
    for cpu in list {
        s.insert(*cpu);
    }
    s
}

/// Every CPU asks once and finds nothing: all idle.
fn all_idle(d: &mut Driver<Shinjuku>) {
    for cpu in 0..4 {
        assert_eq!(d.schedule(cpu), None);
    }
}

/// The timer requests made since the last call, as (cpu, ns).
fn timers(d: &Driver<Shinjuku>) -> Vec<(usize, Option<u64>)> {
    d.host
        .take()
        .into_iter()
        .filter_map(|e| match e {
            HostEvent::Timer { cpu, ns } => Some((cpu, ns)),
            HostEvent::Kick { .. } | HostEvent::RevHint { .. } => None,
        })
        .collect()
}

#[test]
fn a_lone_task_runs_without_a_timer_and_a_newcomer_arms_one() {
    let mut d = driver();
    all_idle(&mut d);
    d.spawn(1, cpus(&[0]), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    assert_eq!(timers(&d), [], "nothing waits: no timer");
    d.spawn(2, cpus(&[0]), 0, 0);
    assert_eq!(timers(&d), [(0, Some(PREEMPT))]);
    assert_eq!(d.running(0), Some(1), "the timer, not the wakeup, preempts");
}

#[test]
fn the_timer_sends_the_running_task_to_the_back_of_the_queue() {
    let mut d = driver();
    all_idle(&mut d);
    for pid in [1, 2, 3] {
        d.spawn(pid, cpus(&[0]), 0, 0);
    }
    assert_eq!(d.schedule(0), Some(1));
    timers(&d);
    // The timer fires: round robin in arrival order, re-armed while others wait.
    for want in [2, 3, 1, 2] {
        assert_eq!(d.preempt(0, false), Some(want));
        assert_eq!(timers(&d), [(0, Some(PREEMPT))]);
    }
}

#[test]
fn the_timer_is_disarmed_once_nobody_waits() {
    let mut d = driver();
    all_idle(&mut d);
    d.spawn(1, cpus(&[0]), 0, 0);
    d.schedule(0);
    d.spawn(2, cpus(&[0]), 0, 0);
    timers(&d);
    d.block(0);
    assert_eq!(d.schedule(0), Some(2));
    assert_eq!(timers(&d), [(0, None)], "alone again: timer cancelled");
    assert_eq!(d.preempt(0, false), Some(2), "a lone task keeps its CPU");
    assert_eq!(timers(&d), []);
}

#[test]
fn a_waking_task_joins_the_shortest_queue_when_no_cpu_idles() {
    let mut d = driver();
    all_idle(&mut d);
    let both = cpus(&[0, 1]);
    // CPU 0 runs 1 with 2 and 3 waiting; CPU 1 runs 4 with nobody waiting.
    for pid in [1, 2, 3] {
        d.spawn(pid, cpus(&[0]), 0, 0);
    }
    d.schedule(0);
    d.spawn(4, cpus(&[1]), 0, 1);
    d.schedule(1);
    d.spawn(5, both, 0, 0);
    d.preempt(1, false);
    assert_eq!(d.running(1), Some(5), "placed on CPU 1, behind nobody");
}

#[test]
fn an_idle_cpu_steals_the_task_that_waited_longest() {
    let mut d = driver();
    all_idle(&mut d);
    let any = cpus(&[0, 1, 2, 3]);
    d.spawn(1, cpus(&[0]), 0, 0);
    d.spawn(2, cpus(&[1]), 0, 1);
    d.schedule(0);
    d.schedule(1);
    // 10 waits on CPU 1, then 11 on CPU 0: both CPUs busy.
    d.spawn(10, any, 0, 1);
    d.spawn(11, any, 0, 0);
    assert_eq!(d.running(2), None);
    assert_eq!(d.schedule(2), Some(10), "oldest arrival first");
    assert_eq!(d.schedule(3), Some(11));
}

#[test]
fn preempt_us_is_checked() {
    std::env::set_var("ENOKI_QUIET", "1");
    let topo = || Topology::symmetric(1, 2, 1, 21).unwrap();
    let err = Driver::<Shinjuku>::new(topo(), 8, SLICE, "preempt_us=0").err();
    assert_eq!(err, Some(InitError::InvalidArgument("preempt_us")));
    let err = Driver::<Shinjuku>::new(topo(), 8, SLICE, "slice=3").err();
    assert_eq!(err, Some(InitError::InvalidArgument("args: unknown key")));
}

/// A CPU that kept its task is busy: work queued elsewhere does not kick it.
#[test]
fn a_cpu_that_keeps_its_task_running_is_not_kicked_as_idle() {
    let mut d = driver();
    let kicked = d.busy_kicks_once_every_cpu_keeps_its_task(1, SLICE);
    assert_eq!(kicked, Ok(Vec::new()));
}
