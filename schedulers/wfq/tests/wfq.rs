// SPDX-License-Identifier: GPL-2.0
//! WFQ under the userspace backend, driven the way Enoki-C drives it, with
//! the paper's functional-equivalence experiments (appendix A.1) in
//! simulated time.

mod common;

use std::collections::BTreeSet;

use common::*;
use enoki::user::{Driver, HostEvent, TaskState};
use enoki::{nice_to_weight, InitError, ROOT_CGROUP};
use enoki_wfq::Wfq;

const MS: u64 = 1_000_000;

/// Ticks the running task of `cpu` until it is preempted; returns how many.
fn ticks_until_preempted(m: &mut Machine, cpu: usize) -> u64 {
    (1..=100).find(|_| m.tick(cpu)).expect("never preempted")
}

#[test]
fn five_spinners_get_a_cpu_each_then_a_fifth_of_one() {
    let mut m = Machine::new("");
    let pids = [1, 2, 3, 4, 5];
    for pid in pids {
        m.spawn(pid, all(), 0, 0);
    }
    let cpus: BTreeSet<_> = pids.iter().filter_map(|p| m.cpu_of(*p)).collect();
    assert_eq!(cpus.len(), 5, "each spinner on its own CPU");
    m.run(1000);
    for r in m.runtimes(&pids) {
        assert!(
            r.abs_diff(1000 * MS) <= 10 * MS,
            "alone on a CPU: ~T, got {r}"
        );
    }
    m.check_consistent().unwrap();

    // The same five forced onto CPU 2.
    for pid in pids {
        m.set_affinity(pid, only(2));
    }
    let before = m.runtimes(&pids);
    m.run(2000);
    let got: Vec<u64> = m
        .runtimes(&pids)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(got.iter().sum::<u64>(), 2000 * MS, "CPU 2 never idles");
    assert!(equal_within(&got, 0.05), "equal shares of CPU 2: {got:?}");
    for g in &got {
        assert!(g.abs_diff(400 * MS) <= 20 * MS, "~T/5 each: {got:?}");
    }
    m.check_consistent().unwrap();
}

#[test]
fn a_nice_19_task_gets_its_weight_share_and_the_others_share_equally() {
    let mut m = Machine::new("");
    for pid in 1..=4 {
        m.spawn(pid, only(0), 0, 0);
    }
    m.spawn(5, only(0), 19, 0);
    m.run(20_000);
    let normal = m.runtimes(&[1, 2, 3, 4]);
    assert!(
        equal_within(&normal, 0.05),
        "nice-0 tasks share equally: {normal:?}"
    );
    let mean = normal.iter().sum::<u64>() / 4;
    let want = nice_to_weight(19) as f64 / nice_to_weight(0) as f64;
    let got = ratio(m.runtime(5), mean);
    assert!(
        (got / want - 1.0).abs() <= 0.10,
        "nice 19 / nice 0 share {got:.5}, weights say {want:.5}"
    );
    assert_eq!(
        m.runtimes(&[1, 2, 3, 4, 5]).iter().sum::<u64>(),
        20_000 * MS
    );
}

#[test]
fn work_conserving_with_a_spinner_per_cpu_and_one_forced_extra() {
    let mut m = Machine::new("");
    let spinners: Vec<i32> = (1..=8).collect();
    for pid in &spinners {
        m.spawn(*pid, all(), 0, 0);
    }
    let cpus: BTreeSet<_> = spinners.iter().filter_map(|p| m.cpu_of(*p)).collect();
    assert_eq!(cpus.len(), 8, "one spinner per CPU");
    m.run_conserving(100);

    // An extra spinner forced onto CPU 0.
    m.spawn(9, only(0), 0, 0);
    let before = m.runtimes(&(1..=9).collect::<Vec<_>>());
    m.run_conserving(600);
    let after = m.runtimes(&(1..=9).collect::<Vec<_>>());
    for (pid, (a, b)) in (1..=9).zip(after.iter().zip(&before)) {
        assert!(
            a - b >= 100 * MS,
            "task {pid} progresses: {} ms",
            (a - b) / MS
        );
    }

    // One spinner forced onto another's CPU while nothing waits that its own
    // CPU could take: that CPU must be fetched when spinner 1 (CPU 0, free
    // to move) next waits.
    while m.running(0) != Some(1) {
        m.round();
    }
    let moved = m.running(5).unwrap();
    m.set_affinity(moved, only(1));
    let before = m.runtimes(&(1..=9).collect::<Vec<_>>());
    m.run_conserving(600);
    let after = m.runtimes(&(1..=9).collect::<Vec<_>>());
    for (pid, (a, b)) in (1..=9).zip(after.iter().zip(&before)) {
        assert!(
            a - b >= 100 * MS,
            "task {pid} progresses: {} ms",
            (a - b) / MS
        );
    }
    let busy: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    // CPU 5 idles only until spinner 1's slice on CPU 0 ends.
    assert!(
        busy >= 8 * 600 * MS - 10 * MS,
        "all eight CPUs busy: {} ms of {}",
        busy / MS,
        8 * 600
    );
    m.check_consistent().unwrap();
}

/// Three tasks queued on `cpu` (one running), all allowed everywhere.
fn three_on(m: &mut Machine, first_pid: i32, cpu: usize) {
    for pid in first_pid..first_pid + 3 {
        m.spawn(pid, only(cpu), 0, cpu);
    }
    for pid in first_pid..first_pid + 3 {
        m.d.set_affinity(pid, all()); // no rescheduling: keep them queued
        m.allowed.insert(pid, all());
    }
    m.d.host.take();
}

#[test]
fn an_idle_cpu_steals_from_its_own_node_first() {
    let mut m = Machine::new("");
    three_on(&mut m, 10, 0); // node 0: 3 on CPU 0
    three_on(&mut m, 20, 4); // node 1: 3 on CPU 4, and one more waiting
    m.spawn(23, only(4), 0, 4);
    m.d.set_affinity(23, all());
    m.allowed.insert(23, all());
    m.d.host.take();

    // CPU 1 (node 0) takes from CPU 0 although CPU 4 is busier.
    let stolen = m.d.schedule(1).unwrap();
    assert!(
        (10..13).contains(&stolen),
        "stole {stolen} from the remote node"
    );
    assert_eq!(m.d.schedule(2).map(|p| (10..13).contains(&p)), Some(true));
    // Node 0 has nothing waiting now: CPU 3 goes to node 1, which is busier.
    let remote = m.d.schedule(3).unwrap();
    assert!((20..24).contains(&remote));
    assert_eq!(m.d.counters.balance_errors, 0);
    m.check_consistent().unwrap();
}

#[test]
fn stealing_across_nodes_needs_the_imbalance_threshold() {
    // 4 tasks on node 1 vs 3 on node 0 (4 CPUs each): 33 % busier.
    for (pct, steals) in [(125, true), (150, false)] {
        let mut m = Machine::new(&format!("imbalance_pct={pct}"));
        three_on(&mut m, 10, 4);
        m.spawn(13, only(4), 0, 4);
        m.d.set_affinity(13, all());
        m.allowed.insert(13, all());
        for (pid, cpu) in [(1, 0), (2, 1), (3, 2)] {
            m.spawn(pid, only(cpu), 0, cpu);
        }
        assert_eq!(m.d.schedule(3).is_some(), steals, "imbalance_pct={pct}");
        m.check_consistent().unwrap();
    }
}

#[test]
fn an_idle_cpu_steals_from_its_llc_before_its_node() {
    let mut m = Machine::with(two_nodes_four_llcs(), 64, "");
    three_on(&mut m, 10, 0); // LLC {0,1}
    three_on(&mut m, 20, 2); // LLC {2,3}, same node
    m.spawn(23, only(2), 0, 2);
    m.d.set_affinity(23, all());
    m.allowed.insert(23, all());
    m.d.host.take();
    let stolen = m.d.schedule(1).unwrap();
    assert!(
        (10..13).contains(&stolen),
        "CPU 1 shares CPU 0's LLC, stole {stolen}"
    );
    m.check_consistent().unwrap();
}

#[test]
fn wakeup_placement_prefers_prev_then_llc_then_node_then_least_loaded() {
    let mut m = Machine::with(two_nodes_four_llcs(), 64, "");
    m.spawn(1, all(), 0, 2);
    assert_eq!(m.cpu_of(1), Some(2), "previous CPU when idle");
    m.spawn(2, all(), 0, 2);
    assert_eq!(m.cpu_of(2), Some(3), "then its LLC");
    m.spawn(3, all(), 0, 2);
    m.spawn(4, all(), 0, 2);
    let node: BTreeSet<_> = [3, 4].iter().filter_map(|p| m.cpu_of(*p)).collect();
    assert_eq!(node, BTreeSet::from([0, 1]), "then its node");
    m.spawn(5, all(), 0, 2);
    assert_eq!(m.cpu_of(5), Some(4), "then the least loaded, nearest first");
    m.spawn(6, only(5), 0, 5);
    m.spawn(7, only(6), 10, 6);
    m.spawn(8, only(7), 0, 7);
    m.spawn(9, all(), 0, 2);
    assert_eq!(
        m.d.state(9),
        Some(TaskState::Queued { cpu: 6 }),
        "least loaded: CPU 6 runs a nice-10 task"
    );
    m.check_consistent().unwrap();
}

/// With no CPU idle, a task that ran before wakes on its previous CPU,
/// however loaded (balancing evens that out), and does not read every
/// CPU's load to find a lighter one.
#[test]
fn a_wakeup_with_no_idle_cpu_stays_on_the_previous_cpu() {
    let mut m = Machine::new("");
    m.spawn(1, all(), 0, 2);
    assert_eq!(m.running(2), Some(1));
    m.block(2);
    for (pid, cpu) in (10..18).zip(0..8) {
        m.spawn(pid, only(cpu), 0, cpu);
    }
    m.spawn(20, only(2), 0, 2);
    m.spawn(21, only(2), 0, 2);
    m.wake(1, 0);
    assert_eq!(
        m.d.state(1),
        Some(TaskState::Queued { cpu: 2 }),
        "CPU 2 runs one task and queues two, every other CPU runs one"
    );
    m.check_consistent().unwrap();
}

#[test]
fn work_queued_behind_a_running_task_kicks_an_idle_cpu() {
    let mut m = Machine::new("");
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    assert_eq!(m.running(0), Some(1));
    // Task 2 may now also run on CPU 1, which idles.
    m.d.set_affinity(2, set(&[0, 1]));
    assert!(m.d.host.take().contains(&HostEvent::Kick {
        cpu: 1,
        preempt: false
    }));
    m.allowed.insert(2, set(&[0, 1]));
    m.settle(&mut [true, true, false, false, false, false, false, false]);
    assert_eq!(m.running(1), Some(2), "the kicked CPU took it");
    m.check_consistent().unwrap();
}

/// Task 1 runs on CPU 0; task 2 last ran on CPU 5 and sleeps; the other
/// CPUs idle.
fn waker_and_sleeper() -> Machine {
    let mut m = Machine::new("");
    m.spawn(2, all(), 0, 5);
    assert_eq!(m.running(5), Some(2));
    m.block(5);
    m.spawn(1, all(), 0, 0);
    assert_eq!(m.running(0), Some(1));
    m.d.host.take();
    m
}

#[test]
fn a_sync_wakeup_runs_next_on_the_wakers_cpu_and_wakes_no_other() {
    let mut m = waker_and_sleeper();
    m.d.wake_sync(2, 0);
    assert_eq!(m.d.state(2), Some(TaskState::Queued { cpu: 0 }));
    assert!(
        !m.d.host
            .take()
            .iter()
            .any(|e| matches!(e, HostEvent::Kick { .. })),
        "no idle CPU is woken to steal it"
    );
    m.block(0);
    assert_eq!(m.running(0), Some(2), "the waker's CPU switches to it");
    m.check_consistent().unwrap();
}

#[test]
fn a_sync_wakeup_goes_elsewhere_when_others_run_on_the_wakers_cpu() {
    let mut m = waker_and_sleeper();
    m.spawn(3, only(0), 0, 0);
    m.d.wake_sync(2, 0);
    assert_eq!(m.d.state(2), Some(TaskState::Queued { cpu: 5 }));
    m.check_consistent().unwrap();
}

/// Task 1 runs alone on CPU 0 for 50 ms while task 2 sleeps, then task 2 wakes.
fn sleeper_wakes(args: &str) -> Machine {
    let mut m = Machine::new(args);
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    while m.running(0) != Some(2) {
        m.round();
    }
    assert_eq!(m.block(0), Some(2));
    m.run(50);
    m.wake(2, 0);
    m
}

#[test]
fn by_default_a_woken_task_with_smaller_vruntime_preempts_at_the_next_tick() {
    let mut m = sleeper_wakes("");
    assert_eq!(m.running(0), Some(1), "no preemption at the wakeup");
    assert!(m.tick(0), "3 ms behind is past 1 ms: preempted at the tick");
    assert_eq!(m.running(0), Some(2));
}

#[test]
fn a_woken_task_with_smaller_vruntime_preempts_at_once() {
    let m = sleeper_wakes("wakeup_preemption=1");
    let (v1, v2) = (
        m.sched().vruntime(1).unwrap().unwrap(),
        m.sched().vruntime(2).unwrap().unwrap(),
    );
    assert_eq!(
        v2,
        v1 - 3 * MS,
        "a sleeper gets at most half a period of credit"
    );
    assert_eq!(m.running(0), Some(2), "3 ms behind is past 1 ms: preempted");
    assert_eq!(m.d.state(1), Some(TaskState::Queued { cpu: 0 }));
    m.check_consistent().unwrap();
}

#[test]
fn a_task_just_picked_is_not_preempted_by_a_wakeup_before_it_ran_min_granularity() {
    let mut m = Machine::new("wakeup_preemption=1");
    for pid in 1..=3 {
        m.spawn(pid, only(0), 0, 0);
    }
    while m.running(0) != Some(3) {
        m.round();
    }
    assert_eq!(m.block(0), Some(3));
    m.run(50);
    // The running task sleeps and the other is picked; task 3 wakes at once,
    // 3 ms behind it (a sleeper's credit), past the wakeup granularity.
    let blocked = m.block(0).unwrap();
    let picked = m.running(0).unwrap();
    assert_ne!(picked, blocked);
    m.wake(3, 0);
    assert_eq!(m.running(0), Some(picked), "preempted before it ran at all");
    assert!(m.tick(0), "once it has run a tick, the tick preempts it");
    assert_eq!(m.running(0), Some(3));
}

#[test]
fn a_preemption_the_wakeup_cannot_see_comes_at_the_next_tick() {
    // 3 ms behind the running task's vruntime as of its last charge is not
    // past 3 ms; by the tick it has run 1 ms more.
    let mut m = sleeper_wakes("wakeup_preemption=1,wakeup_granularity_us=3000");
    assert_eq!(m.running(0), Some(1));
    assert!(m.tick(0), "preempted at the next tick");
    assert_eq!(m.running(0), Some(2));
}

#[test]
fn a_woken_task_within_the_wakeup_granularity_waits_for_the_slice() {
    let mut m = sleeper_wakes("wakeup_granularity_us=10000");
    assert_eq!(m.running(0), Some(1));
    assert!(!m.tick(0), "3 ms behind is within 10 ms: no preemption");
}

#[test]
fn a_nice_change_applies_from_the_running_tasks_next_slice() {
    let mut m = Machine::new("");
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    while m.running(0) != Some(2) {
        m.round();
    }
    // Task 2 runs with a 3 ms slice (half of 6 ms) when it turns nice -10.
    m.set_nice(2, -10);
    let slices: Vec<_> = (0..8)
        .map(|_| (m.running(0).unwrap(), ticks_until_preempted(&mut m, 0)))
        .collect();
    assert_eq!(slices[0], (2, 3), "the current slice is kept: {slices:?}");
    for (pid, ticks) in &slices[1..] {
        // Shares of 6 ms: 5.4 ms for task 2, 0.6 ms (raised to the 0.75 ms
        // minimum granularity) for task 1.
        assert_eq!(*ticks, if *pid == 2 { 6 } else { 1 }, "{slices:?}");
    }
    assert!(slices.contains(&(1, 1)), "task 1 still runs: {slices:?}");
}

/// The kernel asks for the next task while the one whose slice ended still
/// runs: it keeps the CPU while its vruntime is the smallest.
#[test]
fn a_slice_ends_in_favour_of_the_smallest_vruntime_even_the_previous_task() {
    let mut m = Machine::new("");
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 19, 0);
    while m.running(0) != Some(2) {
        m.round();
    }
    // One 1 ms slice (the 0.75 ms minimum) puts the nice-19 task 68 ms of
    // virtual time ahead; task 1 gains ~6 ms per slice.
    assert_eq!(ticks_until_preempted(&mut m, 0), 1);
    let next: Vec<_> = (0..10)
        .map(|_| {
            let pid = m.running(0).unwrap();
            ticks_until_preempted(&mut m, 0);
            pid
        })
        .collect();
    assert_eq!(next, [1; 10], "task 1 keeps the CPU slice after slice");
    m.check_consistent().unwrap();
}

#[test]
fn nice_changes_move_the_shares() {
    let mut m = Machine::new("");
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    let window = |m: &mut Machine, rounds| {
        let before = m.runtimes(&[1, 2]);
        m.run(rounds);
        let after = m.runtimes(&[1, 2]);
        (after[0] - before[0], after[1] - before[1])
    };
    let (a, b) = window(&mut m, 2000);
    assert!(equal_within(&[a, b], 0.05), "{a} vs {b}");
    m.set_nice(2, 19);
    window(&mut m, 200); // let the lag settle
    let (a, b) = window(&mut m, 20_000);
    let want = nice_to_weight(19) as f64 / nice_to_weight(0) as f64;
    assert!(
        (ratio(b, a) / want - 1.0).abs() <= 0.10,
        "after nice 19: {b} vs {a}"
    );
    m.set_nice(2, 0);
    window(&mut m, 200);
    let (a, b) = window(&mut m, 2000);
    assert!(equal_within(&[a, b], 0.05), "back at nice 0: {a} vs {b}");
    m.check_consistent().unwrap();
}

#[test]
fn bad_args_are_refused_and_good_ones_apply() {
    for args in [
        "period_us=0",
        "period_us=six",
        "min_granularity_us=7000",
        "min_granularity_us=5",
        "wakeup_granularity_us=2000000",
        "imbalance_pct=99",
        "imbalance_pct=5000",
        "latency_us=6000",
        "period_us=6000,bogus",
    ] {
        let r = Driver::<Wfq>::new(two_nodes(), 64, SLICE, args);
        assert!(
            matches!(r, Err(InitError::InvalidArgument(_))),
            "{args} accepted"
        );
    }
    let mut m = Machine::new("period_us=12000, min_granularity_us=1000");
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    assert_eq!(
        ticks_until_preempted(&mut m, 0),
        12,
        "alone when it was picked: the whole period"
    );
    assert_eq!(m.running(0), Some(2));
    assert_eq!(
        ticks_until_preempted(&mut m, 0),
        6,
        "half of a 12 ms period"
    );
}

#[test]
fn the_period_stretches_with_many_tasks() {
    let mut m = Machine::new("");
    for pid in 1..=12 {
        m.spawn(pid, only(0), 0, 0);
    }
    // 12 tasks > 6 ms / 0.75 ms: the period is 9 ms, a 0.75 ms slice each.
    m.run(1200);
    let r = m.runtimes(&(1..=12).collect::<Vec<_>>());
    assert!(equal_within(&r, 0.05), "{r:?}");
}

#[test]
fn exit_and_sleep_release_everything() {
    let mut m = Machine::with(two_nodes(), 16, "");
    for round in 0..5 {
        for pid in 0..16 {
            m.spawn(100 * round + pid, all(), 0, (pid % 8) as usize);
        }
        m.run(20);
        for cpu in 0..4 {
            m.block(cpu);
        }
        m.check_consistent().unwrap();
        for pid in 0..16 {
            m.exit(100 * round + pid);
        }
        m.check_consistent().unwrap();
    }
    assert_eq!(
        m.d.counters.rejected, 0,
        "the room is free again after exits"
    );
}

/// Raw messages in Enoki-C's order, which the Driver does not model: under
/// sched_ext the CPU picks (naming the still-runnable previous task) before
/// the previous task is re-queued, and a sleeper blocks before the pick.
#[test]
fn kernel_order_pick_before_preempt_and_refused_picks() {
    use enoki::abi::{err, flag, kind, Msg};
    use enoki::dispatch::Loaded;
    use enoki::{Args, EnokiScheduler, InitContext};

    let topology = two_nodes();
    let ctx = InitContext {
        topology: &topology,
        max_tasks: 16,
        slice_ns: SLICE,
        args: Args(""),
        services: enoki::user::services(None),
    };
    let l = Loaded::new(Wfq::init(&ctx).unwrap(), NR_CPUS, ctx.max_tasks).unwrap();
    let send = |kind: u32, pid: i32, runtime: u64, flags: u32| {
        let mut m = Msg::new(kind, 0);
        m.pid = pid;
        m.task_cpu = 0;
        m.runtime = runtime;
        m.flags = flags;
        m.weight = 1024;
        m.allowed = only(0).words();
        l.handle(&mut m);
        m.ret
    };
    let held = || {
        let mut v = Vec::new();
        l.scheduler()
            .for_each_held(|h| v.push((h.pid, h.token_cpu)))
            .unwrap();
        v.sort();
        v
    };
    for pid in [1, 2] {
        assert_eq!(send(kind::TASK_NEW, pid, 0, 0), 0);
        assert_eq!(send(kind::TASK_WAKEUP, pid, 0, 0), 0);
    }
    let first = send(kind::PICK_NEXT_TASK, -1, 0, 0) as i32;
    let second = 3 - first;
    assert_eq!(send(kind::TASK_TICK, first, 3 * MS, 0), 0);
    // Slice over: dispatch names the runnable prev, then prev is re-queued.
    let picked = send(
        kind::PICK_NEXT_TASK,
        first,
        3 * MS,
        flag::HAS_PREV | flag::PREV_RUNNABLE,
    );
    assert_eq!(picked, second as i64);
    assert_eq!(send(kind::TASK_PREEMPT, first, 3 * MS, 0), 0);
    assert_eq!(
        held(),
        [
            (1, if first == 1 { Some(0) } else { None }),
            (2, if first == 2 { Some(0) } else { None })
        ]
    );
    l.scheduler().check().unwrap();
    // The running task sleeps: blocked first, then the pick names it.
    assert_eq!(send(kind::TASK_BLOCKED, second, MS, flag::SLEEP), 0);
    assert_eq!(
        send(kind::PICK_NEXT_TASK, second, MS, flag::HAS_PREV),
        first as i64
    );
    assert_eq!(held(), [(first, None)]);
    // Enoki-C refuses a pick and hands the token back: it waits again.
    assert_eq!(send(kind::TASK_WAKEUP, second, MS, 0), 0);
    assert_eq!(send(kind::TASK_PREEMPT, first, 6 * MS, 0), 0);
    let refused = send(kind::PICK_NEXT_TASK, -1, 0, 0) as i32;
    assert_eq!(send(kind::PNT_ERR, refused, 0, err::NOT_QUEUED), 0);
    assert_eq!(held(), [(1, Some(0)), (2, Some(0))]);
    l.scheduler().check().unwrap();
    // ...unless the task is gone.
    let picked = send(kind::PICK_NEXT_TASK, -1, 0, 0) as i32;
    assert_eq!(send(kind::PNT_ERR, picked, 0, err::NO_TASK), 0);
    assert_eq!(send(kind::TASK_DEAD, picked, 0, 0), 0);
    assert_eq!(held(), [(3 - picked, Some(0))]);
    l.scheduler().check().unwrap();
}

#[test]
fn a_nice_change_moves_a_waiting_task_the_same_way_in_either_message_order() {
    use enoki::abi::{kind, Msg};
    let setup = || {
        let mut m = Machine::new("");
        for pid in 1..=3 {
            m.spawn(pid, only(0), 0, 0);
        }
        m.run(10);
        m
    };
    let (mut a, mut b) = (setup(), setup());
    let waiting = (1..=3)
        .find(|p| a.d.state(*p) == Some(TaskState::Queued { cpu: 0 }))
        .unwrap();
    let before = a.sched().vruntime(waiting).unwrap().unwrap();
    // The Driver sends the change alone...
    a.set_nice(waiting, 10);
    // ...Enoki-C (sched_ext) dequeues the waiting task around it.
    for (kind, flags) in [
        (kind::TASK_BLOCKED, 0),
        (kind::TASK_PRIO_CHANGED, 0),
        (kind::TASK_WAKEUP, 0),
    ] {
        let mut msg = Msg::new(kind, 0);
        msg.pid = waiting;
        msg.task_cpu = 0;
        msg.flags = flags;
        msg.runtime = b.runtime(waiting);
        msg.weight = nice_to_weight(10);
        msg.nice = 10;
        msg.allowed = only(0).words();
        b.d.send(&mut msg);
    }
    let (va, vb) = (
        a.sched().vruntime(waiting).unwrap().unwrap(),
        b.sched().vruntime(waiting).unwrap().unwrap(),
    );
    assert_eq!(va, vb);
    assert!(
        va > before,
        "ahead of min_vruntime, it moves back: {before} -> {va}"
    );
    a.check_consistent().unwrap();
    b.check_consistent().unwrap();
}

/// Ticks, picks, preemptions, sleeps and wakeups of tasks already placed
/// take the lock of their CPU's run queue and no other run-queue lock,
/// select_task_rq that of the CPU the task last ran on. (The summaries WFQ
/// shares outside those locks are `enoki::Shared` values, each a lock of
/// its own that never nests another: left out here.)
#[test]
#[allow(clippy::disallowed_types)] // host-only test code
fn common_paths_take_only_their_cpus_run_queue_lock() {
    use std::cell::RefCell;
    use std::ops::Range;
    thread_local!(static TAKEN: RefCell<BTreeSet<usize>> = const { RefCell::new(BTreeSet::new()) });
    thread_local!(static SHARED: RefCell<Vec<Range<usize>>> = const { RefCell::new(Vec::new()) });
    fn observe(addr: usize, op: enoki::LockOp) {
        let shared = SHARED.with(|s| s.borrow().iter().any(|r| r.contains(&addr)));
        if op.is_acquire() && !shared {
            TAKEN.with(|t| t.borrow_mut().insert(addr));
        }
    }
    fn locks<R>(f: impl FnOnce() -> R) -> (R, BTreeSet<usize>) {
        TAKEN.with(|t| t.borrow_mut().clear());
        enoki::user::set_lock_observer(Some(observe));
        let r = f();
        enoki::user::set_lock_observer(None);
        (r, TAKEN.with(|t| t.take()))
    }

    let mut m = Machine::new("");
    SHARED.with(|s| m.sched().for_each_shared(|r| s.borrow_mut().push(r)));
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    m.spawn(3, set(&[2, 3]), 0, 2);
    m.spawn(4, set(&[2, 3]), 0, 2);
    assert_eq!((m.cpu_of(3), m.cpu_of(4)), (Some(2), Some(3)));
    let (_, rq0) = locks(|| m.d.tick(0, TICK));
    let (_, rq2) = locks(|| m.d.tick(2, TICK));
    assert_eq!((rq0.len(), rq2.len()), (1, 1), "a tick takes one lock");
    assert_ne!(rq0, rq2);

    // Ticks up to the end of the slice: pick (naming the previous task),
    // task_preempt, and the pick that follows.
    for _ in 0..10 {
        let (_, taken) = locks(|| m.d.tick(0, TICK));
        assert_eq!(taken, rq0);
    }
    let sleeper = m.running(0).unwrap();
    assert_eq!(locks(|| m.d.block(0)).1, rq0, "task_blocked");
    assert_eq!(locks(|| m.d.schedule(0)).1, rq0, "pick_next_task");
    assert_eq!(
        locks(|| m.d.wake(sleeper, 5)).1,
        rq0,
        "task_wakeup (one allowed CPU: no select)"
    );
    assert_eq!(locks(|| m.d.preempt(0, true)).1, rq0, "yield");

    // With a choice of CPUs: select_task_rq looks where the task slept.
    m.d.block(2);
    assert_eq!(
        locks(|| m.d.wake(3, 5)).1,
        rq2,
        "select_task_rq and task_wakeup on its idle CPU"
    );
    assert_eq!(m.d.schedule(2), Some(3));
    m.check_consistent().unwrap();

    // Its CPU is busy: select_task_rq sends its record ahead to the idle
    // CPU it chose, so the wakeup there takes that CPU's lock only.
    let (_, rq3) = locks(|| m.d.tick(3, TICK));
    m.spawn(6, only(2), 0, 2); // waits behind task 3
    m.d.block(2);
    assert_eq!(m.d.schedule(2), Some(6));
    m.d.block(3);
    let runtime = m.runtime(3);
    let wake = |kind, cpu: usize| {
        let mut msg = enoki::abi::Msg::new(kind, 5);
        msg.pid = 3;
        msg.task_cpu = cpu as i32;
        msg.runtime = runtime;
        msg.allowed = set(&[2, 3]).words();
        msg
    };
    let mut select = wake(enoki::abi::kind::SELECT_TASK_RQ, 2);
    let (_, taken) = locks(|| m.d.send(&mut select));
    assert_eq!(select.ret_cpu, 3, "the idle CPU of its LLC");
    assert_eq!(taken, &rq2 | &rq3);
    let mut wakeup = wake(enoki::abi::kind::TASK_WAKEUP, 3);
    assert_eq!(
        locks(|| m.d.send(&mut wakeup)).1,
        rq3,
        "task_wakeup where select_task_rq sent it"
    );
    assert_eq!(wakeup.ret, 0);
    m.sched().check().unwrap();
    let mut held = Vec::new();
    m.sched().for_each_held(|h| held.push(h)).unwrap();
    assert!(
        held.contains(&enoki_wfq::Held {
            queue: 3,
            pid: 3,
            token_cpu: Some(3)
        }),
        "{held:?}"
    );
}

/// What WFQ reads of other CPUs without their run-queue locks (idle mask,
/// loads) is a lock event, which record and replay order: a wakeup that
/// chooses among CPUs by their idle state and load touches the shared
/// summaries through libEnoki, never through atomics replay cannot see.
#[test]
#[allow(clippy::disallowed_types)] // host-only test code
fn placement_reads_shared_state_through_lock_events() {
    use std::cell::RefCell;
    thread_local!(static TAKEN: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) });
    fn observe(addr: usize, op: enoki::LockOp) {
        if op.is_acquire() {
            TAKEN.with(|t| t.borrow_mut().push(addr));
        }
    }
    let mut m = Machine::new("");
    m.spawn(3, set(&[2, 3]), 0, 2);
    m.d.block(2);
    enoki::user::set_lock_observer(Some(observe));
    m.d.wake(3, 5);
    enoki::user::set_lock_observer(None);
    let taken = TAKEN.with(|t| t.take());
    let mut shared = Vec::new();
    m.sched().for_each_shared(|r| shared.push(r));
    let reads = taken
        .iter()
        .filter(|a| shared.iter().any(|r| r.contains(a)))
        .count();
    assert!(
        reads >= 2,
        "select_task_rq read the idle mask and loads without lock events: {taken:x?}"
    );
    // Each read is a record when recording: a wakeup onto an idle CPU
    // reads the idle mask once, then publishes that CPU's load and idle
    // bit, and clears its handoff mark; offline CPUs are in the summaries,
    // not read apart.
    assert!(
        reads <= 4,
        "{reads} shared reads for one wakeup: {taken:x?}"
    );
    m.check_consistent().unwrap();
}

#[test]
fn a_waking_task_never_goes_to_an_offline_cpu() {
    let mut m = Machine::new("");
    m.run(1); // every CPU looks once and finds nothing: all idle
    m.act(|d| d.set_cpu_online(1, false));
    m.spawn(1, set(&[0, 1]), 0, 1);
    assert_eq!(m.cpu_of(1), Some(0), "CPU 1 is offline");
    assert_eq!(m.d.counters.select_errors, 0);
    m.act(|d| d.set_cpu_online(1, true));
    m.spawn(2, set(&[1]), 0, 1);
    assert_eq!(m.cpu_of(2), Some(1), "back online");
    m.check_consistent().unwrap();
}

#[test]
fn a_waking_task_goes_to_a_busy_cpu_rather_than_an_empty_offline_one() {
    let mut m = Machine::new("");
    m.run(1);
    m.spawn(1, only(0), 0, 0);
    m.act(|d| d.set_cpu_online(1, false));
    // CPU 0 is busy, CPU 1 empty but offline: the least loaded of the two
    // that may be chosen is CPU 0.
    m.spawn(2, set(&[0, 1]), 0, 0);
    assert_eq!(m.d.state(2), Some(TaskState::Queued { cpu: 0 }));
    assert_eq!(m.d.counters.select_errors, 0);
    m.check_consistent().unwrap();
}

/// A lock that cannot be taken fails the message, through every helper
/// between it and the message: here each call is made with CPU 0's run
/// queue already held by the same thread (from inside `for_each_held`),
/// a self-deadlock libEnoki reports instead of spinning. Nothing changes.
#[test]
fn a_lock_failure_fails_the_message() {
    use enoki::sync::detect::take_fault;
    use enoki::{EnokiScheduler, FaultKind};

    let mut m = Machine::new("");
    m.spawn(1, only(0), 0, 0);
    m.spawn(2, only(0), 0, 0);
    assert_eq!(m.running(0), Some(1));
    let s = m.sched();
    let mut failed = Vec::new();
    let mut called = false;
    s.for_each_held(|h| {
        if std::mem::replace(&mut called, true) {
            return;
        }
        let mut fails = |name: &'static str, err: bool| {
            let fault = take_fault().map(|f| f.kind);
            failed.push((name, err, fault));
        };
        fails("task_tick", s.task_tick(h.queue, h.pid, TICK).is_err());
        fails(
            "select_task_rq",
            s.select_task_rq(
                h.pid,
                h.queue,
                enoki::Wake {
                    waker_cpu: h.queue,
                    sync: false,
                },
            )
            .is_err(),
        );
        fails("task_prio_changed", s.task_prio_changed(2, 0, 5).is_err());
        fails("balance", s.balance(1).is_err());
        fails("vruntime", s.vruntime(2).is_err());
    })
    .unwrap();
    let want = |name| (name, true, Some(FaultKind::SelfDeadlock));
    assert_eq!(
        failed,
        [
            want("task_tick"),
            want("select_task_rq"),
            want("task_prio_changed"),
            want("balance"),
            want("vruntime"),
        ]
    );
    m.sched().check().unwrap();
    assert_eq!(m.running(0), Some(1));
}

/// CPU time of each of `pids` over the next `ms` of simulated time.
fn shares_over(m: &mut Machine, pids: &[i32], ms: usize) -> Vec<u64> {
    let before = m.runtimes(pids);
    m.run(ms);
    m.runtimes(pids)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect()
}

/// Whether `got[i] / got[0]` is within 10 % of `want[i] / want[0]`.
fn in_ratio(got: &[u64], want: &[u64]) -> bool {
    got.iter().zip(want).all(|(g, w)| {
        let r = ratio(*g, got[0]) / (*w as f64 / want[0] as f64);
        (r - 1.0).abs() <= 0.10
    })
}

#[test]
fn cgroup_weights_divide_a_cpu_between_sibling_cgroups() {
    let mut m = Machine::new("");
    let weights = [100, 300, 600];
    for (i, w) in weights.iter().enumerate() {
        let cg = 10 + i as u64;
        m.act(|d| d.cgroup_new(cg, Some(ROOT_CGROUP), *w));
        m.spawn_in(i as i32 + 1, only(0), 0, cg);
    }
    let got = shares_over(&mut m, &[1, 2, 3], 20_000);
    assert!(
        in_ratio(&got, &[100, 300, 600]),
        "1:3:6 by cpu.weight: {got:?}"
    );

    // Weight changes apply: now 1:1:1.
    m.act(|d| {
        d.set_cgroup_weight(11, 100);
        d.set_cgroup_weight(12, 100);
    });
    let got = shares_over(&mut m, &[1, 2, 3], 20_000);
    assert!(in_ratio(&got, &[1, 1, 1]), "equal weights: {got:?}");
    m.check_consistent().unwrap();
}

#[test]
fn a_nested_cgroup_passes_its_share_down_and_an_idle_one_leaves_it() {
    let mut m = Machine::new("");
    // root ─┬─ 10 (100) ─┬─ 11 (100): two tasks
    //       │            └─ 12 (300): one task
    //       └─ 20 (200): one task; and one task in the root itself
    m.act(|d| {
        d.cgroup_new(10, Some(ROOT_CGROUP), 100);
        d.cgroup_new(11, Some(10), 100);
        d.cgroup_new(12, Some(10), 300);
        d.cgroup_new(20, Some(ROOT_CGROUP), 200);
    });
    m.spawn_in(1, only(0), 0, 11);
    m.spawn_in(2, only(0), 0, 11);
    m.spawn_in(3, only(0), 0, 12);
    m.spawn_in(4, only(0), 0, 20);
    m.spawn(5, only(0), 0, 0);
    // Entities at the root: 10, 20 and task 5 weigh 1:2:1; 10's quarter
    // goes 1:3 to 11 and 12, and 11's eighth of it to each of its tasks.
    let got = shares_over(&mut m, &[1, 2, 3, 4, 5], 40_000);
    assert!(in_ratio(&got, &[1, 1, 6, 16, 8]), "1:1:6:16:8: {got:?}");

    // 12's task moves to 11: 11 has all of 10, split three ways.
    m.act(|d| d.move_to_cgroup(3, 11));
    let got = shares_over(&mut m, &[1, 2, 3, 4, 5], 40_000);
    assert!(in_ratio(&got, &[1, 1, 1, 6, 3]), "1:1:1:6:3: {got:?}");
    m.act(|d| d.cgroup_gone(12));
    m.check_consistent().unwrap();
}

#[test]
fn cgroups_past_the_table_count_as_the_roots_and_a_freed_slot_is_used_again() {
    let mut m = Machine::new("max_cgroups=1");
    m.act(|d| {
        d.cgroup_new(10, Some(ROOT_CGROUP), 100);
        d.cgroup_new(20, Some(ROOT_CGROUP), 900); // no room: the root's
    });
    m.spawn_in(1, only(0), 0, 10);
    m.spawn_in(2, only(0), 0, 20);
    let got = shares_over(&mut m, &[1, 2], 20_000);
    assert!(
        in_ratio(&got, &[1, 1]),
        "cgroup 20 weighs as a root task: {got:?}"
    );

    m.act(|d| {
        d.move_to_cgroup(1, ROOT_CGROUP);
        d.cgroup_gone(10);
        d.cgroup_new(30, Some(ROOT_CGROUP), 900);
        d.move_to_cgroup(2, 30);
    });
    let got = shares_over(&mut m, &[1, 2], 20_000);
    assert!(
        in_ratio(&got, &[1, 9]),
        "cgroup 30 took the freed slot: {got:?}"
    );
    m.check_consistent().unwrap();
}

/// Enoki-C checks a steal without the victim CPU's lock, so an affinity
/// change can land between the check and the migration. The thief must not
/// take a token for a CPU the task no longer allows.
#[test]
fn a_steal_raced_by_an_affinity_change_leaves_the_task_where_it_may_run() {
    let mut m = Machine::new("");
    three_on(&mut m, 10, 0);
    let stolen =
        m.d.balance_raced_by(1, |d, pid| d.set_affinity(pid, only(0)));
    let stolen = stolen.expect("checked before the affinity changed");
    m.allowed.insert(stolen, only(0));
    assert_ne!(m.d.schedule(1), Some(stolen), "CPU 1 may not run it");
    assert_eq!(m.d.counters.pick_errors, 0);
    m.check_consistent().unwrap();
}
