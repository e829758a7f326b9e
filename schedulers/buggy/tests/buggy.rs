// SPDX-License-Identifier: GPL-2.0
//! Each lock bug of `buggy` fails the scheduler with the right report in
//! the host backend, and no message reaches it afterwards.
#![allow(clippy::disallowed_types)] // host threads start together

use std::sync::{Arc, Barrier};
use std::time::Duration;

use enoki::abi::{kind, ret_err, Msg};
use enoki::dispatch::Loaded;
use enoki::user::{within_timeout, Driver};
use enoki::{CpuSet, EnokiScheduler, FaultKind, InitContext, Topology};
use enoki_buggy::Buggy;

fn topology() -> Topology {
    Topology::symmetric(1, 4, 1, 21).unwrap()
}

fn driver(args: &str) -> Driver<Buggy> {
    std::env::set_var("ENOKI_QUIET", "1");
    Driver::new(topology(), 16, 1_000_000, args).unwrap()
}

/// Four tasks on each CPU, then picks on CPU 0 until the bug fires.
fn run_until_failed(args: &str) -> Driver<Buggy> {
    let mut d = driver(args);
    for pid in 1..=16 {
        let mut cpu = CpuSet::empty();
        cpu.insert((pid % 4) as usize);
        d.spawn(pid, cpu, 0, 0);
    }
    for _ in 0..8 {
        d.schedule(0);
        d.block(0);
    }
    d
}

#[test]
fn a_correct_run_does_not_fail() {
    let d = run_until_failed("bug=none,after=0");
    assert_eq!(d.fault(), None);
}

#[test]
fn aa_names_both_acquisitions() {
    let d = run_until_failed("bug=aa,after=2");
    let f = d.fault().expect("failed");
    assert_eq!(f.kind, FaultKind::SelfDeadlock);
    assert_eq!(f.call, "pick_next_task");
    let p = f.parties().next().unwrap();
    assert!(p.at.unwrap().file().ends_with("buggy/src/lib.rs"), "{f}");
    assert_eq!(
        p.held_since.unwrap().line() + 1,
        p.at.unwrap().line(),
        "{f}"
    );
}

#[test]
fn a_leaked_guard_is_found_when_the_call_returns() {
    let d = run_until_failed("bug=leak,after=2");
    assert_eq!(d.fault().expect("failed").kind, FaultKind::Leaked);
}

#[test]
fn an_endless_loop_of_locks_runs_out_of_budget() {
    let fault = within_timeout(Duration::from_secs(60), || {
        run_until_failed("bug=loop,after=2").fault()
    });
    assert_eq!(fault.expect("failed").kind, FaultKind::OverBudget);
}

#[test]
fn a_failed_scheduler_is_never_called_again() {
    let mut d = run_until_failed("bug=aa,after=0");
    let first = d.fault().expect("failed");
    let picks = d.counters.msgs[kind::PICK_NEXT_TASK as usize];
    d.spawn(99, CpuSet::empty(), 0, 1);
    let mut m = Msg::new(kind::PICK_NEXT_TASK, 1);
    d.send(&mut m);
    assert_ne!(m.ret_err & ret_err::FAILED, 0);
    assert_eq!(m.ret, -1);
    assert!(d.counters.msgs[kind::PICK_NEXT_TASK as usize] > picks);
    assert_eq!(
        d.fault(),
        Some(first),
        "the first fault is the one reported"
    );
}

/// `cpus` threads, one per CPU, each picking on its CPU until the
/// scheduler failed: the cycle bug makes them deadlock.
fn cycle(cpus: usize) -> enoki::Fault {
    within_timeout(Duration::from_secs(60), move || {
        std::env::set_var("ENOKI_QUIET", "1");
        let t = topology();
        let ctx = InitContext {
            topology: &t,
            max_tasks: 16,
            slice_ns: 1_000_000,
            args: enoki::Args(if cpus == 2 {
                "bug=cycle,after=0"
            } else {
                "bug=cycle,cpus=3,after=0"
            }),
            services: enoki::user::services(None),
        };
        let loaded = Arc::new(Loaded::new(Buggy::init(&ctx).unwrap(), 4, 16).unwrap());
        let start = Arc::new(Barrier::new(cpus));
        let threads: Vec<_> = (0..cpus)
            .map(|cpu| {
                let (loaded, start) = (loaded.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    while !loaded.failed() {
                        loaded.handle(&mut Msg::new(kind::PICK_NEXT_TASK, cpu as i32));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        loaded.fault().unwrap()
    })
}

#[test]
fn abba_between_two_cpus_is_reported_with_both() {
    let f = cycle(2);
    assert_eq!(f.kind, FaultKind::Cycle, "{f}");
    assert_eq!(f.parties().count(), 2, "{f}");
    assert!(
        f.to_string().starts_with("ABBA deadlock in pick_next_task"),
        "{f}"
    );
}

#[test]
fn a_three_cpu_cycle_is_reported_with_all_three() {
    let f = cycle(3);
    assert_eq!(f.kind, FaultKind::Cycle, "{f}");
    let mut cpus: Vec<u32> = f.parties().map(|p| p.cpu).collect();
    cpus.sort_unstable();
    assert_eq!(cpus, [0, 1, 2], "{f}");
}
