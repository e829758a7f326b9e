// SPDX-License-Identifier: GPL-2.0
//! Locality under the userspace backend, driven the way Enoki-C drives it:
//! hint queues are opened, sent through and closed as `/dev/enoki` does.

use std::collections::BTreeMap;

use enoki::abi::{kind, Msg};
use enoki::user::{Driver, HostEvent, TaskState};
use enoki::{CpuSet, HintData, InitError, Pid, QueueId, Topology};
use enoki_locality::{GroupHint, Locality, Stats, MAX_GROUPS, MAX_QUEUES};

const SLICE: u64 = 3_000_000;
const EINVAL: i64 = -22;
const ENOSPC: i64 = -28;
const NR_CPUS: usize = 8;

/// One socket of 4 cores of 2 SMT threads: CPUs 0 and 1 share core 0,
/// 2 and 3 core 2, and so on.
fn topology() -> Topology {
    Topology::symmetric(1, 4, 2, 21).unwrap()
}

fn driver_with(args: &str, max_tasks: usize) -> Driver<Locality> {
    std::env::set_var("ENOKI_QUIET", "1");
    Driver::new(topology(), max_tasks, SLICE, args).unwrap()
}

fn driver(args: &str) -> Driver<Locality> {
    driver_with(args, 64)
}

fn group(group: u32) -> GroupHint {
    GroupHint { group }
}

fn only(cpu: usize) -> CpuSet {
    let mut s = CpuSet::empty();
    s.insert(cpu);
    s
}

fn anywhere() -> CpuSet {
    CpuSet::first_n(NR_CPUS)
}

/// Every CPU asks once and finds nothing: all idle.
fn all_idle(d: &mut Driver<Locality>) {
    for cpu in 0..NR_CPUS {
        assert_eq!(d.schedule(cpu), None);
    }
}

/// `pid`, allowed everywhere, runs on `cpu` (idle), is hinted into `g`
/// through `queue`, then sleeps; `cpu` is idle again.
fn run_hint_sleep(d: &mut Driver<Locality>, queue: QueueId, pid: Pid, cpu: usize, g: u32) {
    d.spawn(pid, anywhere(), 0, cpu);
    assert_eq!(d.schedule(cpu), Some(pid));
    assert_eq!(d.send_hint(queue, pid, &group(g), cpu), 0);
    d.block(cpu);
    assert_eq!(d.schedule(cpu), None);
}

fn queued_on(d: &Driver<Locality>, pid: Pid) -> Option<usize> {
    match d.state(pid) {
        Some(TaskState::Queued { cpu }) => Some(cpu),
        _ => None,
    }
}

fn home(d: &Driver<Locality>, g: u32) -> Option<usize> {
    d.scheduler().home_of(g).unwrap()
}

fn stats(d: &Driver<Locality>) -> Stats {
    d.scheduler().stats()
}

fn kicked(d: &Driver<Locality>) -> bool {
    d.host
        .take()
        .iter()
        .any(|e| matches!(e, HostEvent::Kick { .. }))
}

#[test]
fn tasks_hinted_into_one_group_wake_on_one_cpu() {
    let mut d = driver("");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    // Each last ran on its own CPU, idle now: unhinted, each would wake
    // there.
    for (pid, cpu) in [(1, 0), (2, 3), (3, 6)] {
        run_hint_sleep(&mut d, q, pid, cpu, 5);
    }
    assert_eq!(home(&d, 5), Some(0));
    for pid in [1, 2, 3] {
        d.wake(pid, 7);
        assert_eq!(queued_on(&d, pid), Some(0), "task {pid}");
    }
    assert_eq!(stats(&d).placed_home, 3);
    assert_eq!(d.schedule(3), None, "the group is not stolen from its CPU");
    for want in [1, 2, 3] {
        assert_eq!(d.schedule(0), Some(want));
        d.block(0);
    }
}

#[test]
fn two_groups_live_on_different_cores() {
    let mut d = driver("");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    for (pid, cpu, g) in [(1, 4, 1), (2, 5, 1), (3, 6, 2), (4, 7, 2)] {
        run_hint_sleep(&mut d, q, pid, cpu, g);
    }
    let (one, two) = (home(&d, 1).unwrap(), home(&d, 2).unwrap());
    assert_eq!(one, 0, "the lowest CPU of a core without groups");
    assert_ne!(
        d.topology().core_of(one),
        d.topology().core_of(two),
        "group 2 on CPU {two}, an SMT sibling of group 1's CPU {one}"
    );
    for pid in 1..=4 {
        d.wake(pid, 3);
    }
    assert_eq!(queued_on(&d, 1), Some(one));
    assert_eq!(queued_on(&d, 2), Some(one));
    assert_eq!(queued_on(&d, 3), Some(two));
    assert_eq!(queued_on(&d, 4), Some(two));
}

#[test]
fn a_group_without_tasks_gives_up_its_cpu() {
    let mut d = driver("");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    run_hint_sleep(&mut d, q, 1, 0, 1);
    run_hint_sleep(&mut d, q, 2, 1, 2);
    assert_eq!((home(&d, 1), home(&d, 2)), (Some(0), Some(2)));
    // Its only task leaves group 1, and group 2's exits.
    assert_eq!(d.send_hint(q, 1, &group(0), 0), 0);
    d.exit(2);
    assert_eq!((home(&d, 1), home(&d, 2)), (None, None));
    assert_eq!(d.scheduler().group_of(1).unwrap(), Some(0));
    // Core 0 is free again: the next new group lives there.
    run_hint_sleep(&mut d, q, 3, 5, 3);
    assert_eq!(home(&d, 3), Some(0));
}

#[test]
fn out_of_range_groups_and_unknown_tasks_are_refused() {
    let mut d = driver_with("", 16);
    for pid in 0..17 {
        d.spawn(100 + pid, only(0), 0, 0);
    }
    assert_eq!(d.counters.rejected, 2, "task 116 is not the scheduler's");
    let q = d.open_queue(100, 100, 0).unwrap();
    for bad in [MAX_GROUPS + 1, u32::MAX] {
        assert_eq!(d.send_hint(q, 100, &group(bad), 0), EINVAL, "group {bad}");
    }
    assert_eq!(d.send_hint(q, 116, &group(1), 0), EINVAL, "unknown task");
    assert_eq!(d.scheduler().group_of(100).unwrap(), Some(0));
    assert_eq!(d.send_hint(q, 100, &group(MAX_GROUPS), 0), 0);
    assert_eq!(d.send_hint(q, 100, &group(0), 0), 0);
    let s = stats(&d);
    assert_eq!((s.hints_taken, s.hints_refused), (2, 3));
}

#[test]
fn an_overloaded_home_cpu_makes_placement_ignore_the_hint() {
    let mut d = driver("overload=1");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    // Task 1 runs on group 1's CPU, 0; 2, 3 and 4 sleep elsewhere.
    d.spawn(1, anywhere(), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    assert_eq!(d.send_hint(q, 1, &group(1), 0), 0);
    for (pid, cpu) in [(2, 2), (3, 4), (4, 6)] {
        run_hint_sleep(&mut d, q, pid, cpu, 1);
    }
    // Up to `overload` waiting on CPU 0 it takes one more; then no more.
    d.wake(2, 7);
    d.wake(3, 7);
    d.wake(4, 7);
    assert_eq!(queued_on(&d, 2), Some(0));
    assert_eq!(queued_on(&d, 3), Some(0));
    assert_eq!(queued_on(&d, 4), Some(6), "its own idle CPU, as unhinted");
    let s = stats(&d);
    assert_eq!((s.placed_home, s.ignored_overloaded), (2, 1));
}

#[test]
fn an_idle_cpu_leaves_a_group_at_home_until_home_is_overloaded() {
    let mut d = driver("overload=2");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    d.spawn(1, anywhere(), 0, 0);
    assert_eq!(d.schedule(0), Some(1));
    assert_eq!(d.send_hint(q, 1, &group(1), 0), 0);
    for (pid, cpu) in [(2, 2), (3, 4), (4, 6)] {
        run_hint_sleep(&mut d, q, pid, cpu, 1);
    }
    d.host.take();
    d.wake(2, 7);
    assert_eq!(queued_on(&d, 2), Some(0));
    assert!(!kicked(&d), "no idle CPU is woken for a task held at home");
    // An ungrouped task queued behind it on CPU 0 is taken; task 2 is not.
    d.spawn(9, only(0), 0, 0);
    d.set_affinity(9, anywhere());
    assert_eq!(queued_on(&d, 9), Some(0));
    assert_eq!(d.schedule(5), Some(9));
    assert_eq!(d.schedule(3), None);
    // Three waiting on CPU 0, more than `overload`: now a thief may help.
    d.wake(3, 7);
    d.wake(4, 7);
    assert_eq!(queued_on(&d, 4), Some(0));
    assert_eq!(d.schedule(3), Some(2), "the oldest of the group");
}

#[test]
fn queues_past_the_limit_are_refused_until_one_closes() {
    let mut d = driver("");
    d.spawn(1, anywhere(), 0, 0);
    let open: Vec<QueueId> = (0..MAX_QUEUES as i32)
        .map(|i| d.open_queue(200 + i, 200, 0).unwrap())
        .collect();
    assert_eq!(d.open_queue(999, 999, 0), Err(ENOSPC));
    d.close_queue(open[3], 0);
    let again = d.open_queue(999, 999, 0).unwrap();
    assert_eq!(d.open_queue(1000, 1000, 0), Err(ENOSPC));
    assert_eq!(d.send_hint(again, 1, &group(1), 0), 0);
    assert_eq!(d.send_hint(open[0], 1, &group(2), 0), 0);
}

#[test]
fn a_hint_through_a_closed_queue_is_refused() {
    let mut d = driver("");
    d.spawn(1, anywhere(), 0, 0);
    let q = d.open_queue(100, 100, 0).unwrap();
    assert_eq!(d.send_hint(q, 1, &group(1), 0), 0);
    d.close_queue(q, 0);
    // Sent as a raw message: the driver itself refuses a closed queue
    // before the scheduler sees the hint.
    for queue in [q, 77] {
        let mut m = Msg::new(kind::HINT, 0);
        (m.queue, m.pid) = (queue, 1);
        let mut bytes = [0u8; 4];
        group(2).write(&mut bytes);
        m.set_hint_bytes(&bytes);
        d.send(&mut m);
        assert_eq!(m.ret, EINVAL, "queue {queue}");
    }
    assert_eq!(d.scheduler().group_of(1).unwrap(), Some(1));
    assert_eq!(stats(&d).hints_refused, 2);
}

/// Tasks in two groups and ungrouped ones wake, run, sleep and exit on
/// every CPU: each runs twice through the scheduler, none is lost or
/// refused.
#[test]
fn every_task_runs_grouped_or_not() {
    let mut d = driver("");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    let pids: Vec<Pid> = (1..=24).collect();
    for &pid in &pids {
        d.spawn(pid, anywhere(), 0, pid as usize % NR_CPUS);
        let g = pid as u32 % 3;
        assert_eq!(d.send_hint(q, pid, &group(g), 0), 0);
    }
    let mut runs: BTreeMap<Pid, u32> = BTreeMap::new();
    for _round in 0..200 {
        for cpu in 0..NR_CPUS {
            let Some(pid) = d.schedule(cpu) else { continue };
            let n = runs.entry(pid).or_default();
            *n += 1;
            if *n == 1 {
                d.block(cpu);
                d.wake(pid, cpu);
            } else {
                d.exit(pid);
            }
        }
    }
    for pid in pids {
        assert_eq!(runs.get(&pid), Some(&2), "task {pid}");
        assert_eq!(d.state(pid), None);
    }
    assert_eq!(d.counters.rejected, 0, "a task ran outside the scheduler");
    assert_eq!(d.counters.pick_errors, 0);
    assert!(stats(&d).placed_home > 0);
    assert!(!d.failed());
}

#[test]
fn a_group_whose_cpu_goes_offline_gets_another() {
    let mut d = driver("");
    all_idle(&mut d);
    let q = d.open_queue(100, 100, 0).unwrap();
    run_hint_sleep(&mut d, q, 1, 4, 1);
    assert_eq!(home(&d, 1), Some(0));
    d.set_cpu_online(0, false);
    d.wake(1, 4);
    let new_home = home(&d, 1);
    assert!(new_home.is_some_and(|cpu| cpu != 0), "{new_home:?}");
    assert_eq!(queued_on(&d, 1), new_home);
}

#[test]
fn an_upgrade_keeps_the_queues_and_forgets_the_groups() {
    let mut d = driver("");
    d.spawn(1, anywhere(), 0, 0);
    let q = d.open_queue(100, 100, 0).unwrap();
    assert_eq!(d.send_hint(q, 1, &group(1), 0), 0);
    d.upgrade("", false, 0).unwrap();
    assert_eq!(d.scheduler().group_of(1).unwrap(), Some(0));
    assert_eq!(home(&d, 1), None);
    assert_eq!(d.send_hint(q, 1, &group(1), 0), 0, "the queue is open");
    assert_eq!(home(&d, 1), Some(0));
}

#[test]
fn overload_is_checked() {
    std::env::set_var("ENOKI_QUIET", "1");
    for bad in ["overload=x", "overload=2000000", "overload=-1"] {
        let err = Driver::<Locality>::new(topology(), 8, SLICE, bad).err();
        assert_eq!(err, Some(InitError::InvalidArgument("overload")), "{bad}");
    }
    let err = Driver::<Locality>::new(topology(), 8, SLICE, "groups=3").err();
    assert_eq!(err, Some(InitError::InvalidArgument("args: unknown key")));
    assert!(Driver::<Locality>::new(topology(), 8, SLICE, "overload=0").is_ok());
}

/// A CPU that found nothing else to run and kept its task is busy, not
/// idle: work queued elsewhere must not kick it, since the kernel keeps its
/// task without asking (under emulation, a stream of such kicks kept every
/// newly switched-in task from running and starved sched_ext's watchdog).
#[test]
fn a_cpu_that_keeps_its_task_running_is_not_kicked_as_idle() {
    let mut d = driver("");
    let kicked = d.busy_kicks_once_every_cpu_keeps_its_task(1, SLICE);
    assert_eq!(kicked, Ok(Vec::new()));
}
