// SPDX-License-Identifier: GPL-2.0
//! Random spawn/tick/block/wake/exit/affinity/nice/cgroup sequences against WFQ:
//! after every step the scheduler holds exactly the runnable tasks, each
//! once, only on allowed CPUs; afterwards every runnable task gets to run.

mod common;

use common::*;
use enoki::user::TaskState;
use enoki::{CpuSet, ROOT_CGROUP};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Spawn {
        pid: i32,
        mask: u8,
        nice: i32,
        cpu: usize,
    },
    /// `cpu` picks (balancing if it finds nothing), whatever its state.
    Schedule(usize),
    Tick(usize),
    Preempt {
        cpu: usize,
        yielded: bool,
    },
    Block(usize),
    Wake {
        pid: i32,
        waker: usize,
    },
    Exit(i32),
    Affinity {
        pid: i32,
        mask: u8,
    },
    Nice {
        pid: i32,
        nice: i32,
    },
    /// `pid` moves to cgroup `CGROUPS[cgroup]`.
    Cgroup {
        pid: i32,
        cgroup: usize,
    },
    /// `CGROUPS[cgroup]` gets cpu.weight `weight`.
    CgroupWeight {
        cgroup: usize,
        weight: u32,
    },
    /// Kernel-like: kicked and idle CPUs with work pick.
    Settle,
    /// Every busy CPU runs a tick, then CPUs reschedule.
    Round,
}

fn mask() -> impl Strategy<Value = u8> {
    prop_oneof![
        (0..8u32).prop_map(|c| 1u8 << c),
        Just(0xff),
        Just(0x0f),
        Just(0xf0),
        1..=255u8
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let pid = 1..=12i32;
    let cpu = 0..NR_CPUS;
    prop_oneof![
        3 => (pid.clone(), mask(), -5..=5i32, cpu.clone()).prop_map(|(pid, mask, nice, cpu)| Op::Spawn { pid, mask, nice, cpu }),
        3 => cpu.clone().prop_map(Op::Schedule),
        4 => cpu.clone().prop_map(Op::Tick),
        1 => (cpu.clone(), any::<bool>()).prop_map(|(cpu, yielded)| Op::Preempt { cpu, yielded }),
        2 => cpu.clone().prop_map(Op::Block),
        2 => (pid.clone(), cpu).prop_map(|(pid, waker)| Op::Wake { pid, waker }),
        1 => pid.clone().prop_map(Op::Exit),
        2 => (pid.clone(), mask()).prop_map(|(pid, mask)| Op::Affinity { pid, mask }),
        1 => (pid.clone(), -5..=5i32).prop_map(|(pid, nice)| Op::Nice { pid, nice }),
        2 => (pid, 0..CGROUPS.len()).prop_map(|(pid, cgroup)| Op::Cgroup { pid, cgroup }),
        // Weights that keep every share within the nice range's (the
        // liveness check below waits a few periods, not 100 of them).
        1 => (0..CGROUPS.len(), 50..=300u32).prop_map(|(cgroup, weight)| Op::CgroupWeight { cgroup, weight }),
        1 => Just(Op::Settle),
        2 => Just(Op::Round),
    ]
}

/// The cgroups tasks move between: (id, parent); the root first.
const CGROUPS: [(u64, u64); 4] = [
    (ROOT_CGROUP, 0),
    (10, ROOT_CGROUP),
    (11, 10),
    (12, ROOT_CGROUP),
];

fn cpus(mask: u8) -> CpuSet {
    set(&(0..NR_CPUS)
        .filter(|c| mask & (1 << c) != 0)
        .collect::<Vec<_>>())
}

fn apply(m: &mut Machine, op: &Op) {
    match *op {
        Op::Spawn {
            pid,
            mask,
            nice,
            cpu,
        } => {
            if let std::collections::btree_map::Entry::Vacant(e) = m.allowed.entry(pid) {
                e.insert(cpus(mask));
                m.d.spawn(pid, cpus(mask), nice, cpu);
            }
        }
        Op::Schedule(cpu) => {
            m.d.schedule(cpu);
        }
        Op::Tick(cpu) => {
            m.d.tick(cpu, TICK);
        }
        Op::Preempt { cpu, yielded } => {
            m.d.preempt(cpu, yielded);
        }
        Op::Block(cpu) => m.d.block(cpu),
        Op::Wake { pid, waker } => m.d.wake(pid, waker),
        Op::Exit(pid) => {
            m.allowed.remove(&pid);
            m.d.exit(pid);
        }
        Op::Affinity { pid, mask } => {
            if let Some(allowed) = m.allowed.get_mut(&pid) {
                *allowed = cpus(mask);
                m.d.set_affinity(pid, cpus(mask));
            }
        }
        Op::Nice { pid, nice } => m.d.set_nice(pid, nice),
        Op::Cgroup { pid, cgroup } => m.d.move_to_cgroup(pid, CGROUPS[cgroup].0),
        Op::CgroupWeight { cgroup, weight } => m.d.set_cgroup_weight(CGROUPS[cgroup].0, weight),
        Op::Settle => m.settle(&mut [true; NR_CPUS]),
        Op::Round => m.round(),
    }
}

proptest! {
    // 64 cases keep the suite fast; PROPTEST_CASES=5000 for a long search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_task_lost_duplicated_or_misplaced(ops in proptest::collection::vec(op(), 1..120)) {
        let mut m = Machine::with(two_nodes(), 64, "");
        for (id, parent) in &CGROUPS[1..] {
            m.d.cgroup_new(*id, Some(*parent), 100);
        }
        for (i, op) in ops.iter().enumerate() {
            apply(&mut m, op);
            if let Err(e) = m.check_consistent() {
                prop_assert!(false, "after step {} ({:?}): {}", i, op, e);
            }
        }
        // Every runnable task runs again within a few periods.
        m.settle(&mut [true; NR_CPUS]);
        let runnable: Vec<_> = m
            .allowed
            .keys()
            .copied()
            .filter(|p| matches!(m.d.state(*p), Some(TaskState::Queued { .. } | TaskState::Running { .. })))
            .collect();
        let before = m.runtimes(&runnable);
        m.run(200);
        for (pid, b) in runnable.iter().zip(before) {
            prop_assert!(m.runtime(*pid) > b, "task {} never ran ({:?})", pid, m.d.state(*pid));
        }
        if let Err(e) = m.check_consistent() {
            prop_assert!(false, "after running: {}", e);
        }
    }
}

/// Two threads send messages for their own tasks on their own CPUs at once
/// (balance and select look at the other CPU's queue). Neither deadlocks nor
/// panics, and the bookkeeping is consistent afterwards.
#[test]
fn concurrent_callers_keep_the_bookkeeping_consistent() {
    // A deadlock fails the test (after a generous bound) instead of hanging it.
    enoki::user::within_timeout(std::time::Duration::from_secs(120), || {
        use enoki::abi::{flag, kind, Msg};
        use enoki::dispatch::Loaded;
        use enoki::{Args, EnokiScheduler, InitContext};
        use enoki_wfq::Wfq;
        use std::sync::Arc;

        let topology = two_nodes();
        let ctx = InitContext {
            topology: &topology,
            max_tasks: 64,
            slice_ns: SLICE,
            args: Args(""),
            services: enoki::user::services(None),
        };
        let loaded =
            Arc::new(Loaded::new(Wfq::init(&ctx).unwrap(), NR_CPUS, ctx.max_tasks).unwrap());
        let threads: Vec<_> = (0..2)
            .map(|t: usize| {
                let l = loaded.clone();
                std::thread::spawn(move || {
                    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                    let mut next = move |n: u64| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed % n
                    };
                    let mut runtime = 0;
                    for _ in 0..20_000 {
                        let pid = 100 * t as i32 + next(8) as i32;
                        let cpu = (t + 4 * next(2) as usize) as i32; // this thread's CPUs: t, t + 4
                        runtime += next(1_000_000);
                        let k = [
                            kind::TASK_NEW,
                            kind::TASK_WAKEUP,
                            kind::TASK_PREEMPT,
                            kind::TASK_BLOCKED,
                            kind::TASK_TICK,
                            kind::SELECT_TASK_RQ,
                            kind::PICK_NEXT_TASK,
                            kind::BALANCE,
                            kind::MIGRATE_TASK_RQ,
                            kind::TASK_PRIO_CHANGED,
                            kind::TASK_DEAD,
                        ][next(11) as usize];
                        let mut m = Msg::new(k, cpu);
                        m.pid = pid;
                        m.task_cpu = cpu;
                        m.runtime = runtime;
                        m.weight = 1024 >> next(4);
                        m.allowed = all().words();
                        m.flags = if next(2) == 0 { flag::SLEEP } else { 0 };
                        l.handle(&mut m);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        loaded.scheduler().check().unwrap();
    });
}
