// SPDX-License-Identifier: MIT OR Apache-2.0
//! The invariant checker: correct schedulers pass on random workloads, and
//! each kind of defect is caught.

mod common;

use enoki_sim::check::{Props, ViolationKind};
use enoki_sim::registry;
use enoki_sim::sim::{simulate, SimConfig};
use enoki_sim::spec::Spec;
use proptest::prelude::*;

use common::{mixed_spec, quiet, Lazy, Leaky};

const STRICT: Props = Props {
    correct: true,
    work_conserving: true,
};

fn kinds(v: &[enoki_sim::check::Violation]) -> Vec<ViolationKind> {
    v.iter().map(|v| v.kind).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every scheduler registered as correct keeps every invariant on random
    /// workloads. The workload and the run come from the seed alone, so the
    /// failure message is a command that replays it.
    #[test]
    fn correct_schedulers_keep_the_invariants(seed in any::<u64>()) {
        quiet();
        for entry in registry::correct() {
            let out = (entry.simulate)(SimConfig::new(Spec::random(seed), seed, entry.props)).unwrap();
            prop_assert!(
                out.report.violations.is_empty(),
                "{} broke an invariant: {:?}\nreproduce with: enoki-sim --sched {} --seed {}",
                entry.name, out.report.violations, entry.name, seed
            );
        }
    }
}

#[test]
fn random_runs_are_deterministic() {
    quiet();
    for seed in [1, 77] {
        let run = || {
            let out =
                simulate::<enoki_fifo::Fifo>(SimConfig::new(Spec::random(seed), seed, STRICT))
                    .unwrap();
            serde_json::to_string(&out.report).unwrap()
        };
        assert_eq!(run(), run());
    }
}

#[test]
fn mixed_workload_report() {
    quiet();
    let out = simulate::<enoki_fifo::Fifo>(SimConfig::new(mixed_spec(), 4, STRICT)).unwrap();
    let r = &out.report;
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.nr_cpus, 4);
    let spin: Vec<_> = r.tasks.iter().filter(|t| t.group == "spin").collect();
    assert_eq!(spin.len(), 3);
    for t in &spin {
        assert_eq!(t.alive_ns, 40_000_000);
        assert!(t.runtime_ns + t.wait_ns <= t.alive_ns);
    }
    let sleepers: Vec<_> = r.tasks.iter().filter(|t| t.group == "sleep").collect();
    assert!(sleepers
        .iter()
        .all(|t| t.wakeups > 5 && t.wakeup_p50_ns.is_some() && t.wakeup_p99_ns >= t.wakeup_p50_ns));
    assert_eq!(
        r.tasks.iter().find(|t| t.name == "sleep.1").unwrap().nice,
        -3,
        "renice applied"
    );
    let forks = r.groups.iter().find(|g| g.name == "fork").unwrap();
    assert!(forks.tasks >= 30 && r.tasks.iter().filter(|t| t.exited).count() > 20);
    let rpc = r.groups.iter().find(|g| g.name == "rpc").unwrap();
    assert!(rpc.requests_done.unwrap() > 100);
    assert!(rpc.request_p99_ns >= rpc.request_p50_ns && rpc.request_p50_ns >= Some(5_000));
    let busy: u64 = r.cpus.iter().map(|c| c.busy_ns).sum();
    let ran: u64 = r.tasks.iter().map(|t| t.runtime_ns).sum();
    assert_eq!(busy, ran, "every busy ns is some task's runtime");
    assert!(r.cpus.iter().all(|c| c.utilisation <= 1.0));
    assert!(r
        .fairness
        .iter()
        .all(|f| f.jain > 0.0 && f.jain <= 1.0 + 1e-9));
    let text = r.to_text();
    assert!(
        text.contains("invariants: ok") && text.contains("wake p99us"),
        "{text}"
    );
}

#[test]
fn equal_spinners_on_one_cpu_are_perfectly_fair() {
    quiet();
    let spec =
        Spec::from_toml("[machine]\ncores = 1\n[run]\nduration_ms = 300\n[[spinner]]\ncount = 3\n")
            .unwrap();
    let out = simulate::<enoki_fifo::Fifo>(SimConfig::new(spec, 0, STRICT)).unwrap();
    let f = &out.report.fairness[0];
    assert_eq!((f.weight, f.tasks), (1024, 3));
    assert!(f.jain > 0.999, "{}", f.jain);
}

#[test]
fn badpick_mistakes_are_caught_when_held_to_correctness() {
    quiet();
    let out = simulate::<enoki_badpick::BadPick>(SimConfig::new(mixed_spec(), 1, STRICT)).unwrap();
    assert!(out.report.counters.pick_errors > 0);
    assert!(
        kinds(&out.report.violations).contains(&ViolationKind::SchedulerError),
        "{:?}",
        out.report.violations
    );
    // Registered as not correct, it is not blamed for them.
    let entry = registry::find("badpick").unwrap();
    let out = (entry.simulate)(SimConfig::new(mixed_spec(), 1, entry.props)).unwrap();
    assert!(!kinds(&out.report.violations).contains(&ViolationKind::SchedulerError));
}

#[test]
fn idle_cpu_with_queued_work_is_caught() {
    quiet();
    let out = simulate::<Lazy>(SimConfig::new(mixed_spec(), 1, STRICT)).unwrap();
    let v = &out.report.violations;
    assert!(kinds(v).contains(&ViolationKind::IdleWithWork), "{v:?}");
    assert!(v.iter().any(|v| v.detail.contains("is idle while task")));
    let out = simulate::<Lazy>(SimConfig::new(
        mixed_spec(),
        1,
        Props {
            correct: true,
            work_conserving: false,
        },
    ))
    .unwrap();
    assert!(!kinds(&out.report.violations).contains(&ViolationKind::IdleWithWork));
}

#[test]
fn lost_task_is_a_stall() {
    quiet();
    let mut spec = mixed_spec();
    spec.run.duration_ms = 400;
    spec.run.stall_ms = 100;
    let out = simulate::<Leaky>(SimConfig::new(spec, 1, Props::default())).unwrap();
    let v = &out.report.violations;
    assert!(kinds(v).contains(&ViolationKind::Stall), "{v:?}");
    assert!(
        v[0].detail.contains("runnable for") && v[0].time_ns > 100_000_000,
        "{}",
        v[0]
    );
}

#[test]
fn no_check_means_no_violations() {
    quiet();
    let mut cfg = SimConfig::new(mixed_spec(), 1, STRICT);
    cfg.check = false;
    let out = simulate::<Lazy>(cfg).unwrap();
    assert!(out.report.violations.is_empty());
}

#[test]
fn messages_carry_exact_runtimes() {
    // Sub-tick bursts: a sleeper runs 300 µs at a time. Every message about
    // it must carry its whole CPU time, as Enoki-C's do.
    quiet();
    let spec =
        Spec::from_toml("[machine]\ncores = 2\n[run]\nduration_ms = 20\n[[sleeper]]\nrun_us = 300\nsleep_us = 900\n")
            .unwrap();
    let (_, bytes) = common::record::<enoki_fifo::Fifo>(&spec, 0, STRICT);
    let mut blocked = 0;
    for r in enoki_sim::trace::TraceReader::new(std::io::Cursor::new(&bytes)).unwrap() {
        if let enoki_sim::trace::Event::Msg(m) = r.unwrap().event {
            if m.kind == enoki::abi::kind::TASK_BLOCKED {
                blocked += 1;
                assert_eq!(
                    m.runtime,
                    blocked * 300_000,
                    "runtime at the {blocked}th sleep"
                );
            }
        }
    }
    assert!(blocked > 10);
}

#[test]
fn wfq_shares_a_cpu_fairly_between_hogs_and_pipes() {
    // Ping-pong tasks run in 5 µs bursts, between ticks. With exact runtimes
    // in the messages a vruntime scheduler gives each of the four tasks on
    // one CPU a quarter; without them the pipes' vruntime never grows and
    // the hogs starve.
    quiet();
    let entry = registry::find("wfq").unwrap();
    let spec = Spec::from_toml(
        "[machine]\ncores = 1\n[run]\nduration_ms = 200\n[[spinner]]\nname = \"hog\"\ncount = 2\n\
         [[pingpong]]\nwork_us = 5\n",
    )
    .unwrap();
    let out = (entry.simulate)(SimConfig::new(spec, 0, entry.props)).unwrap();
    assert!(
        out.report.violations.is_empty(),
        "{:?}",
        out.report.violations
    );
    for t in &out.report.tasks {
        assert!(
            (0.2..0.3).contains(&t.cpu_share),
            "{} got {:.3} of the CPU",
            t.name,
            t.cpu_share
        );
    }
}
