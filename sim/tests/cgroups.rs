// SPDX-License-Identifier: MIT OR Apache-2.0
//! cgroups in workload specs: the simulator tells the scheduler of them as
//! Enoki-C does, WFQ shares time by their weights, and the cgroup messages
//! record and replay.

mod common;

use std::io::Cursor;

use enoki_sim::check::Props;
use enoki_sim::registry::wfq::Wfq;
use enoki_sim::replay::{replay, replay_by_locks, ReplayOptions};
use enoki_sim::report::Report;
use enoki_sim::spec::{CgroupMove, Spec};
use enoki_sim::trace::TraceReader;

use common::{quiet, record};

const WFQ: Props = Props {
    correct: true,
    work_conserving: true,
};

fn example() -> Spec {
    Spec::from_toml(include_str!("../examples/cgroups.toml")).unwrap()
}

fn cpu_max_example() -> Spec {
    Spec::from_toml(include_str!("../examples/cpu-max.toml")).unwrap()
}

/// The CPU time the report gives cgroup `name` (descendants included), ms.
fn cgroup_ms(r: &Report, name: &str) -> f64 {
    r.cgroups
        .iter()
        .find(|c| c.name == name)
        .unwrap()
        .runtime_ns as f64
        / 1e6
}

/// Replays the WFQ trace `bytes` in sequence and by locks, asserting no
/// divergence either way; returns how many messages the sequential replay
/// ran.
fn replays_exactly(bytes: &[u8]) -> u64 {
    let reader = || TraceReader::new(Cursor::new(bytes)).unwrap();
    let header = reader().header().clone();
    let opts = ReplayOptions::default();
    let seq = replay::<Wfq>(&header, &mut reader(), &opts).unwrap();
    assert!(seq.divergence.is_none(), "{}", seq.divergence.unwrap());
    let by_locks = replay_by_locks::<Wfq>(&header, &mut reader(), &opts).unwrap();
    assert!(
        by_locks.divergence.is_none(),
        "{}",
        by_locks.divergence.unwrap()
    );
    seq.messages
}

#[test]
fn wfq_shares_a_cpu_by_cgroup_weight_through_a_weight_change() {
    quiet();
    let (out, _) = record::<Wfq>(&example(), 0, WFQ);
    let r = &out.report;
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let ms = |group: &str| {
        let g = r.groups.iter().find(|g| g.name == group).unwrap();
        g.runtime_ns as f64 / 1e6
    };
    // 2 s at web : batch : system = 2 : 1 : 1, then 2 s at 3 : 3 : 2.
    for (group, want) in [("web", 1750.0), ("batch", 1250.0), ("system", 1000.0)] {
        let got = ms(group);
        assert!(
            (got / want - 1.0).abs() <= 0.02,
            "{group}: {got} ms of CPU 1, the weights give {want}"
        );
    }
    // The report's cgroups: `tenants` holds web and batch.
    let cg = |name: &str| r.cgroups.iter().find(|c| c.name == name).unwrap();
    assert_eq!(
        cg("tenants").runtime_ns,
        cg("web").runtime_ns + cg("batch").runtime_ns
    );
    assert_eq!((cg("tenants").weight, cg("batch").weight), (300, 200));
    assert_eq!(cg("system").runtime_ns as f64 / 1e6, ms("system"));
    for k in ["cgroup_new", "cgroup_weight"] {
        assert!(
            r.counters.messages.get(k).copied().unwrap_or(0) > 0,
            "no {k}"
        );
    }
}

#[test]
fn cgroup_messages_and_moves_replay_without_divergence() {
    quiet();
    let mut spec = example();
    spec.run.duration_ms = 200;
    spec.cgroup_weights[0].at_ms = 50;
    let to = |at_ms, target: &str, cgroup: &str| CgroupMove {
        at_ms,
        target: target.into(),
        cgroup: cgroup.into(),
    };
    // A group into another cgroup, then one task back to the root.
    spec.cgroup_moves = vec![to(100, "system", "web"), to(150, "web.0", "/")];
    spec.validate().unwrap();
    let (out, bytes) = record::<Wfq>(&spec, 1, WFQ);
    assert!(out.report.violations.is_empty());
    assert!(out.report.counters.messages["task_cgroup_moved"] >= 2);
    let sent: u64 = out.report.counters.messages.values().sum();
    assert_eq!(replays_exactly(&bytes), sent);
}

#[test]
fn cgroup_messages_are_described_with_their_cgroups() {
    use enoki::abi::{kind, Msg};
    let mut m = Msg::new(kind::CGROUP_NEW, 0);
    (m.cgroup, m.cgroup_parent, m.weight) = (5, 1, 300);
    let line = enoki_sim::replay::describe(&m);
    assert!(
        line.contains("cgroup_new") && line.contains("cgroup=5 parent=1 weight=300"),
        "{line}"
    );
    m.kind = kind::TASK_CGROUP_MOVED;
    assert!(enoki_sim::replay::describe(&m).contains("cgroup=5"));
    m.kind = kind::CGROUP_BANDWIDTH;
    (m.cgroup_period, m.cgroup_quota, m.cgroup_burst) = (100_000_000, 20_000_000, 0);
    let line = enoki_sim::replay::describe(&m);
    assert!(
        line.contains("cgroup=5 max=20000/100000us burst=0us"),
        "{line}"
    );
    m.cgroup_quota = u64::MAX;
    assert!(enoki_sim::replay::describe(&m).contains("max=none"));
}

#[test]
fn wfq_holds_a_cgroup_to_its_cpu_max_and_the_rest_goes_to_others() {
    quiet();
    let (out, bytes) = record::<Wfq>(&cpu_max_example(), 0, WFQ);
    let r = &out.report;
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let cg = |name: &str| cgroup_ms(r, name);
    // 20 ms per 100 ms for `capped` (its child `nested` included) over
    // 2 s: 400 ms, give or take the one tick a budget may be overdrawn by
    // per period; `free` takes the rest of CPU 1.
    let capped = cg("capped");
    assert!(
        (capped / 400.0 - 1.0).abs() <= 0.1,
        "capped ran {capped} ms, cpu.max gives 400"
    );
    assert!(cg("nested") > 0.0, "the nested cgroup never ran");
    let free = cg("free");
    assert!(free >= 1500.0, "free ran {free} ms of the 1600 left");
    assert!(r.counters.messages["cgroup_bandwidth"] >= 2);
    // Throttling follows the messages' time, so it replays exactly.
    replays_exactly(&bytes);
}

#[test]
fn a_childs_own_cpu_max_binds_inside_its_parents() {
    quiet();
    let mut spec = cpu_max_example();
    let nested = spec
        .cgroups
        .iter_mut()
        .find(|c| c.name == "nested")
        .unwrap();
    nested.quota_us = Some(5_000);
    spec.validate().unwrap();
    let (out, _) = record::<Wfq>(&spec, 2, WFQ);
    let r = &out.report;
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let cg = |name: &str| cgroup_ms(r, name);
    // `nested` 5 ms per 100 ms: 100 ms of the 2 s; `capped` still 400 in all.
    let (nested, capped) = (cg("nested"), cg("capped"));
    assert!(
        (nested / 100.0 - 1.0).abs() <= 0.15,
        "nested ran {nested} ms, its cpu.max gives 100"
    );
    assert!(
        (capped / 400.0 - 1.0).abs() <= 0.1,
        "capped ran {capped} ms, cpu.max gives 400"
    );
}

#[test]
fn a_cpu_max_outside_the_kernels_bounds_is_refused() {
    let mut spec = cpu_max_example();
    spec.cgroups[0].quota_us = Some(500);
    let e = spec.validate().unwrap_err().to_string();
    assert!(e.contains("quota_us"), "{e}");
    spec.cgroups[0].quota_us = Some(20_000);
    spec.cgroups[0].period_us = 2_000_000;
    assert!(spec.validate().is_err());
}

/// Two spinners on two CPUs for 100 ms in cgroup `capped`, limited to
/// 20 ms per 100 ms, and `more` of the spec.
fn capped_spinners(more: &str) -> Spec {
    let spec = r#"
        [machine]
        cores = 2

        [run]
        duration_ms = 100

        [[spinner]]
        name = "batch"
        count = 2

        [[cgroup]]
        name = "capped"
        quota_us = 20000
        period_us = 100000
        members = ["batch"]
    "#;
    Spec::from_toml(&format!("{spec}{more}")).unwrap()
}

#[test]
fn a_throttled_task_moved_out_of_its_cpu_max_runs_at_once() {
    quiet();
    // Two spinners use up `capped`'s 20 ms by about 10 ms and are held
    // back until the refill at 100 ms; moved to `free` at 50 ms, their
    // old budget no longer binds them, and both CPUs are theirs again.
    let spec = capped_spinners(
        r#"
        [[cgroup]]
        name = "free"

        [[cgroup_move]]
        at_ms = 50
        target = "batch"
        cgroup = "free"
        "#,
    );
    let (out, bytes) = record::<Wfq>(&spec, 0, WFQ);
    let r = &out.report;
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let free = cgroup_ms(r, "free");
    assert!(free >= 95.0, "free ran {free} ms of the 100 after the move");
    replays_exactly(&bytes);
}

#[test]
fn tasks_held_back_by_a_cpu_max_run_at_once_when_it_is_lifted() {
    quiet();
    // Two spinners use up `capped`'s 20 ms by about 10 ms and are held
    // back until the refill at 100 ms; at 50 ms the limit goes (`max`),
    // and both CPUs are theirs again, not from the old refill on.
    let spec = capped_spinners(
        r#"
        [[cgroup_max]]
        at_ms = 50
        cgroup = "capped"
        "#,
    );
    let (out, bytes) = record::<Wfq>(&spec, 0, WFQ);
    let r = &out.report;
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let capped = cgroup_ms(r, "capped");
    assert!(
        capped >= 115.0,
        "capped ran {capped} ms: 20 before the limit went, then two CPUs for 50"
    );
    replays_exactly(&bytes);
}

#[test]
fn a_cpu_max_change_names_a_cgroup_and_keeps_cpu_max_bounds() {
    let spec = |max: &str| {
        Spec::from_toml(&format!(
            "[[spinner]]\nname = \"a\"\n[[cgroup]]\nname = \"cg\"\n[[cgroup_max]]\nat_ms = 1\n{max}"
        ))
    };
    assert!(spec("cgroup = \"cg\"\nquota_us = 5000").is_ok());
    for bad in [
        "cgroup = \"/\"",
        "cgroup = \"nope\"",
        "cgroup = \"cg\"\nquota_us = 10",
        "cgroup = \"cg\"\nperiod_us = 10",
    ] {
        assert!(spec(bad).is_err(), "{bad}");
    }
}
