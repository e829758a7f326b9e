// SPDX-License-Identifier: GPL-2.0
//! FIFO under the userspace backend, driven the way Enoki-C drives it.

use enoki::abi::kind;
use enoki::user::{Driver, HostEvent, TaskState};
use enoki::{CpuSet, Topology};
use enoki_fifo::Fifo;

const SLICE: u64 = 3_000_000;
const TICK: u64 = 1_000_000;

fn driver(max_tasks: usize) -> Driver<Fifo> {
    std::env::set_var("ENOKI_QUIET", "1");
    Driver::new(
        Topology::symmetric(2, 4, 1, 21).unwrap(),
        max_tasks,
        SLICE,
        "",
    )
    .unwrap()
}

fn only(cpu: usize) -> CpuSet {
    let mut s = CpuSet::empty();
    s.insert(cpu);
    s
}

/// Every CPU asks once and finds nothing: all idle.
fn all_idle(d: &mut Driver<Fifo>) {
    for cpu in 0..8 {
        assert_eq!(d.schedule(cpu), None);
    }
}

#[test]
fn runs_tasks_in_arrival_order() {
    let mut d = driver(64);
    for pid in [11, 12, 13] {
        d.spawn(pid, only(0), 0, 0);
    }
    for want in [11, 12, 13] {
        assert_eq!(d.schedule(0), Some(want));
        d.block(0);
    }
    assert_eq!(d.schedule(0), None);
}

#[test]
fn slice_expiry_sends_the_task_to_the_back() {
    let mut d = driver(64);
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(0), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    assert!(!d.tick(0, TICK));
    assert!(!d.tick(0, TICK));
    assert!(
        d.tick(0, TICK),
        "slice of 3 ms must end after 3 ticks of 1 ms"
    );
    assert_eq!(d.state(1), Some(TaskState::Queued { cpu: 0 }));
    assert_eq!(d.schedule(0), Some(2));
    assert_eq!(d.runtime(1), 3 * TICK);
    assert_eq!(d.counters.msgs[kind::TASK_PREEMPT as usize], 1);
}

/// FIFO keeps the default tick and priority methods: it is not called for
/// them, and a slice still ends on time without them.
#[test]
fn ticks_and_priority_changes_cost_no_call() {
    let mut d = driver(64);
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(0), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    d.set_nice(2, 5);
    assert!(!d.tick(0, TICK));
    assert!(!d.tick(0, TICK));
    assert!(d.tick(0, TICK), "the slice ends after 3 ticks of 1 ms");
    assert_eq!(d.running(0), Some(2));
    for k in [kind::TASK_TICK, kind::TASK_PRIO_CHANGED] {
        assert_eq!(
            d.counters.msgs[k as usize],
            0,
            "{}",
            kind::NAMES[k as usize]
        );
    }
    assert!(d.counters.msgs[kind::PICK_NEXT_TASK as usize] > 0);
}

#[test]
fn wakeup_goes_to_an_idle_allowed_cpu_nearest_first() {
    let mut d = driver(64);
    all_idle(&mut d);
    d.spawn(1, only(0), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    // CPU 0 is busy now: a task that may run anywhere lands on an idle CPU
    // of the same LLC.
    d.spawn(2, CpuSet::first_n(8), 0, 0);
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 1 }));
    // One allowed only on the other node goes there.
    let mut far = CpuSet::empty();
    far.insert(6);
    far.insert(7);
    d.spawn(3, far, 0, 0);
    assert!(matches!(d.state(3), Some(TaskState::Queued { cpu: 6 | 7 })));
}

#[test]
fn busy_cpu_kicks_an_idle_one_to_steal() {
    let mut d = driver(64);
    all_idle(&mut d);
    d.spawn(1, only(0), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    d.spawn(2, only(0), 0, 0);
    d.host.take();
    // Queued behind a running task on CPU 0, and now allowed on CPU 1 too.
    let mut two = only(0);
    two.insert(1);
    d.set_affinity(2, two);
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 0 }));
    assert!(d.host.take().contains(&HostEvent::Kick {
        cpu: 1,
        preempt: false
    }));
    assert_eq!(d.schedule(1), Some(2), "the kicked CPU steals it");
}

#[test]
fn idle_cpu_steals_from_the_longest_queue_nearest_first() {
    let mut d = driver(64);
    // Two tasks queued on CPU 0 (node 0) and two on CPU 4 (node 1), then
    // allowed everywhere.
    for (pid, cpu) in [(1, 0), (2, 0), (3, 4), (4, 4)] {
        d.spawn(pid, only(cpu), 0, cpu);
    }
    for pid in 1..=4 {
        d.set_affinity(pid, CpuSet::first_n(8));
    }
    assert_eq!(d.schedule(1), Some(1), "CPU 1 shares CPU 0's LLC");
    assert_eq!(d.counters.msgs[kind::MIGRATE_TASK_RQ as usize], 1);
    assert_eq!(d.schedule(5), Some(3), "CPU 5 shares CPU 4's LLC");
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 0 }));
    assert_eq!(d.counters.balance_errors, 0);
}

#[test]
fn stealing_respects_affinity() {
    let mut d = driver(64);
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(0), 0, 0);
    assert_eq!(d.schedule(3), None, "no task may run on CPU 3");
    assert_eq!(d.state(1), Some(TaskState::Queued { cpu: 0 }));
    assert_eq!(d.schedule(0), Some(1));
}

#[test]
fn affinity_change_moves_a_queued_task() {
    let mut d = driver(64);
    d.spawn(1, only(0), 0, 0);
    d.set_affinity(1, only(2));
    assert_eq!(d.state(1), Some(TaskState::Queued { cpu: 2 }));
    assert_eq!(d.schedule(0), None);
    assert_eq!(d.schedule(2), Some(1));
}

#[test]
fn a_full_scheduler_rejects_and_the_task_still_runs() {
    let mut d = driver(16);
    for pid in 0..17 {
        d.spawn(100 + pid, only(0), 0, 0);
    }
    assert_eq!(d.counters.rejected, 2, "refused at task_new and at wakeup");
    assert_eq!(d.state(116), Some(TaskState::Fallback));
    assert_eq!(
        d.schedule(0),
        Some(100),
        "the scheduler's own tasks run before refused ones"
    );
    // A refused task gets every 8th dispatch of its CPU: it cannot starve.
    let next: Vec<_> = (0..8)
        .map(|_| {
            d.block(0);
            d.schedule(0)
        })
        .collect();
    assert_eq!(
        next.iter().filter(|p| **p == Some(116)).count(),
        1,
        "{next:?}"
    );
}

#[test]
fn exit_drops_every_trace_of_the_task() {
    let mut d = driver(16);
    d.spawn(1, only(0), 0, 0);
    d.spawn(2, only(0), 0, 0);
    d.exit(1);
    assert_eq!(d.schedule(0), Some(2));
    d.exit(2);
    assert_eq!(d.schedule(0), None);
    // The room is free again.
    for pid in 10..26 {
        d.spawn(pid, only(1), 0, 1);
    }
    assert_eq!(d.counters.rejected, 0);
}

#[test]
fn an_offline_cpu_is_never_chosen() {
    let mut d = driver(64);
    all_idle(&mut d);
    d.set_cpu_online(1, false);
    let mut near = CpuSet::empty();
    near.insert(0);
    near.insert(1);
    // Task 1 last ran on CPU 1, which is gone: it wakes on CPU 0.
    d.spawn(1, near, 0, 1);
    assert_eq!(d.state(1), Some(TaskState::Queued { cpu: 0 }));
    assert_eq!(d.counters.select_errors, 0);
    d.set_cpu_online(1, true);
    assert_eq!(d.schedule(0), Some(1));
    assert_eq!(d.schedule(1), None);
    // CPU 0 is busy; CPU 1 is back online and idle.
    d.spawn(2, near, 0, 0);
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 1 }));
}

/// A task running on `cpu` (every CPU idle before), and a task `sleeper`
/// that last ran on CPU 5 and sleeps there.
fn waker_and_sleeper(d: &mut Driver<Fifo>, cpu: usize, sleeper: i32) {
    all_idle(d);
    d.spawn(sleeper, CpuSet::first_n(8), 0, 5);
    assert_eq!(d.schedule(5), Some(sleeper));
    d.block(5);
    assert_eq!(d.schedule(5), None);
    d.spawn(1, CpuSet::first_n(8), 0, cpu);
    assert_eq!(d.schedule(cpu), Some(1));
    d.host.take();
}

#[test]
fn a_sync_wakeup_runs_next_on_the_wakers_cpu_and_wakes_no_other() {
    let mut d = driver(64);
    waker_and_sleeper(&mut d, 0, 2);
    d.wake_sync(2, 0);
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 0 }));
    assert!(
        !d.host
            .take()
            .iter()
            .any(|e| matches!(e, HostEvent::Kick { .. })),
        "no idle CPU is woken to steal it"
    );
    d.block(0);
    assert_eq!(d.schedule(0), Some(2), "the waker's CPU switches to it");
    assert_eq!(d.counters.msgs[kind::MIGRATE_TASK_RQ as usize], 0);
}

#[test]
fn a_sync_wakeup_does_not_queue_behind_waiting_tasks() {
    let mut d = driver(64);
    waker_and_sleeper(&mut d, 0, 2);
    d.spawn(3, only(0), 0, 0);
    d.wake_sync(2, 0);
    assert_eq!(
        d.state(2),
        Some(TaskState::Queued { cpu: 5 }),
        "its own idle CPU, as for any wakeup"
    );
}

#[test]
fn a_plain_wakeup_still_goes_to_its_idle_cpu() {
    let mut d = driver(64);
    waker_and_sleeper(&mut d, 0, 2);
    d.wake(2, 0);
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 5 }));
}

/// A CPU that found nothing else to run and kept its task is busy, not
/// idle: work queued elsewhere must not kick it, since the kernel keeps its
/// task without asking (under emulation, a stream of such kicks kept every
/// newly switched-in task from running and starved sched_ext's watchdog).
#[test]
fn a_cpu_that_keeps_its_task_running_is_not_kicked_as_idle() {
    let mut d = driver(64);
    let kicked = d.busy_kicks_once_every_cpu_keeps_its_task(1, SLICE);
    assert_eq!(kicked, Ok(Vec::new()));
}

/// Enoki-C checks a steal without the victim CPU's lock, so an affinity
/// change can land between the check and the migration. The thief must not
/// take a token for a CPU the task no longer allows: picking it there would
/// fail, and the task would lose its turn.
#[test]
fn a_steal_raced_by_an_affinity_change_leaves_the_task_where_it_may_run() {
    let mut d = driver(64);
    all_idle(&mut d);
    d.spawn(1, only(0), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    d.spawn(2, only(0), 0, 0);
    let mut two = only(0);
    two.insert(1);
    d.set_affinity(2, two);
    assert_eq!(d.state(2), Some(TaskState::Queued { cpu: 0 }));
    let stolen = d.balance_raced_by(1, |d, pid| d.set_affinity(pid, only(0)));
    assert_eq!(stolen, Some(2), "checked before the affinity changed");
    assert_eq!(d.schedule(1), None, "the task no longer runs on CPU 1");
    assert_eq!(d.counters.pick_errors, 0);
    d.block(0);
    assert_eq!(d.schedule(0), Some(2), "still queued on CPU 0");
}
