// SPDX-License-Identifier: GPL-2.0
//! A scheduler that returns other CPUs' tokens gets them back through
//! `pnt_err`; nothing runs on the wrong CPU.

use enoki::user::{Driver, HostEvent, TaskState};
use enoki::{CpuSet, Topology};
use enoki_badpick::BadPick;

fn only(cpu: usize) -> CpuSet {
    let mut s = CpuSet::empty();
    s.insert(cpu);
    s
}

fn driver(every: u64) -> Driver<BadPick> {
    driver_with(&format!("every={every}"))
}

fn driver_with(args: &str) -> Driver<BadPick> {
    std::env::set_var("ENOKI_QUIET", "1");
    Driver::new(
        Topology::symmetric(1, 2, 1, 21).unwrap(),
        16,
        1_000_000,
        args,
    )
    .unwrap()
}

#[test]
fn wrong_token_is_handed_back_and_nothing_runs() {
    let mut d = driver(1);
    d.spawn(7, only(1), 0, 1);
    assert_eq!(d.schedule(0), None, "CPU 0 must not run CPU 1's task");
    assert!(d.counters.pick_errors >= 1);
    assert_eq!(d.scheduler().handed_back.get(), d.counters.pick_errors);
    assert_eq!(d.state(7), Some(TaskState::Queued { cpu: 1 }));
}

#[test]
fn progress_despite_wrong_picks() {
    let mut d = driver(2);
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(1), 0, 1);
    assert_eq!(d.schedule(0), Some(1), "the retry picks CPU 0's own task");
    assert_eq!(d.counters.pick_errors, 1);
    assert_eq!(d.schedule(1), Some(2));
}

#[test]
fn a_handed_back_token_wakes_its_cpu() {
    let mut d = driver_with("victim=1");
    d.spawn(7, only(1), 0, 1);
    d.host.take();
    assert_eq!(d.schedule(1), None, "CPU 1's token was misfiled on CPU 0");
    assert_eq!(d.schedule(0), None, "CPU 0 must not run CPU 1's task");
    assert_eq!(d.scheduler().handed_back.get(), 1);
    assert!(
        d.host.take().contains(&HostEvent::Kick {
            cpu: 1,
            preempt: false
        }),
        "CPU 1 went idle with an empty queue: the hand-back must wake it"
    );
    assert_eq!(d.schedule(1), Some(7));
}

#[test]
fn bad_args_are_rejected() {
    std::env::set_var("ENOKI_QUIET", "1");
    let topo = Topology::symmetric(1, 2, 1, 21).unwrap();
    assert!(Driver::<BadPick>::new(topo, 16, 1_000_000, "every=0").is_err());
    let topo = Topology::symmetric(1, 2, 1, 21).unwrap();
    assert!(Driver::<BadPick>::new(topo, 16, 1_000_000, "evry=2").is_err());
    let topo = Topology::symmetric(1, 2, 1, 21).unwrap();
    assert!(Driver::<BadPick>::new(topo, 16, 1_000_000, "victim=2").is_err());
}
