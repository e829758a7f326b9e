// SPDX-License-Identifier: GPL-2.0
//! Live upgrades that must be refused leave the running version running,
//! untouched; Buggy's `prep` and `adopt` bugs force the refusals.

use enoki::upgrade::Refusal;
use enoki::user::{Driver, TaskState};
use enoki::{CpuSet, Topology};
use enoki_buggy::Buggy;
use enoki_wfq::Wfq;

fn topology() -> Topology {
    Topology::symmetric(1, 4, 1, 21).unwrap()
}

/// Eight tasks on two CPUs, one running on each, the rest waiting.
fn busy(args: &str) -> Driver<Buggy> {
    std::env::set_var("ENOKI_QUIET", "1");
    let mut d = Driver::new(topology(), 16, 1_000_000, args).unwrap();
    for pid in 1..=8 {
        d.spawn(pid, CpuSet::first_n(2), 0, (pid % 2) as usize);
    }
    d
}

fn waiting(d: &Driver<Buggy>) -> usize {
    (1..=8)
        .filter(|p| matches!(d.state(*p), Some(TaskState::Queued { .. })))
        .count()
}

/// Runs every task to its end of slice a few times: nothing is lost.
fn everyone_runs<S: enoki::EnokiScheduler>(d: &mut Driver<S>) {
    let mut ran = std::collections::BTreeSet::new();
    for _ in 0..40 {
        for cpu in 0..2 {
            if let Some(pid) = d.running(cpu) {
                ran.insert(pid);
                d.run(cpu, 3_000_000);
                d.preempt(cpu, false);
            } else {
                d.schedule(cpu);
            }
        }
    }
    assert_eq!(ran.len(), 8, "every task ran: {ran:?}");
}

#[test]
fn an_upgrade_carries_state_and_every_task() {
    let mut d = busy("bug=none");
    let before = waiting(&d);
    assert!(before > 0);
    d.upgrade("", false, 3).expect("upgraded");
    assert_eq!(d.scheduler().upgrades(), 1);
    assert!(!d.failed());
    everyone_runs(&mut d);
}

#[test]
fn a_version_that_cannot_hand_over_its_state_keeps_running() {
    let mut d = busy("bug=prep");
    assert_eq!(d.upgrade("", false, 0), Err(Refusal::PrepFailed));
    assert!(
        !d.failed(),
        "a refused upgrade is not a fault of the running version"
    );
    assert_eq!(d.scheduler().upgrades(), 0);
    everyone_runs(&mut d);
    // Without its state, it can go.
    d.upgrade("", true, 0)
        .expect("a fresh upgrade needs no state");
    everyone_runs(&mut d);
}

#[test]
fn a_version_that_cannot_take_the_state_is_refused() {
    let mut d = busy("bug=none");
    assert_eq!(d.upgrade("bug=adopt", false, 0), Err(Refusal::InitFailed));
    assert!(!d.failed());
    everyone_runs(&mut d);
}

#[test]
fn different_states_are_refused_unless_fresh() {
    let d = busy("bug=none");
    let Err((d, refusal)) = d.upgrade_to::<Wfq>("", false, 0) else {
        panic!("Buggy's state went to WFQ");
    };
    assert!(matches!(refusal, Refusal::Mismatch { .. }), "{refusal}");
    let mut d = d
        .upgrade_to::<Wfq>("", true, 0)
        .unwrap_or_else(|(_, r)| panic!("{r}"));
    everyone_runs(&mut d);
    let mut d = d
        .upgrade_to::<Buggy>("", true, 1)
        .unwrap_or_else(|(_, r)| panic!("{r}"));
    everyone_runs(&mut d);
}
