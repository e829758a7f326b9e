// SPDX-License-Identifier: MIT OR Apache-2.0
//! Hints in workload specs (`[[hint]]`): the simulator sends them through a
//! hint queue as an application would, so hint-driven schedulers are tested
//! on the host, and the hints record and replay like any message.

mod common;

use std::io::Cursor;

use enoki::{EnokiScheduler, Topology};
use enoki_sim::check::Props;
use enoki_sim::registry;
use enoki_sim::registry::arachne::Arachne;
use enoki_sim::registry::locality::Locality;
use enoki_sim::replay::{replay, replay_by_locks, ReplayOptions};
use enoki_sim::report::Report;
use enoki_sim::sim::{simulate, SimConfig};
use enoki_sim::spec::Spec;
use enoki_sim::trace::TraceReader;

use common::{quiet, record};

/// What `S` promises, from its Cargo.toml.
fn props<S: EnokiScheduler>() -> Props {
    registry::find(S::NAME).unwrap().props
}

fn config<S: EnokiScheduler>(spec: Spec) -> SimConfig {
    SimConfig::new(spec, 1, props::<S>())
}

fn example() -> Spec {
    Spec::from_toml(include_str!("../examples/locality.toml")).unwrap()
}

fn arachne_example() -> Spec {
    Spec::from_toml(include_str!("../examples/arachne.toml")).unwrap()
}

fn run<S: EnokiScheduler>(spec: Spec) -> Report {
    quiet();
    simulate::<S>(config::<S>(spec)).unwrap().report
}

/// The CPUs the tasks of group `group` ran on most.
fn main_cpus(r: &Report, group: &str) -> Vec<usize> {
    let mut cpus: Vec<usize> = r
        .tasks
        .iter()
        .filter(|t| t.group == group)
        .filter_map(|t| t.main_cpu)
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

#[test]
fn hinted_groups_each_run_on_one_cpu_of_their_own_core() {
    let r = run::<Locality>(example());
    assert_eq!((r.counters.hints_taken, r.counters.hints_refused), (6, 0));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let (a, b) = (main_cpus(&r, "a"), main_cpus(&r, "b"));
    assert_eq!((a.len(), b.len()), (1, 1), "a on {a:?}, b on {b:?}");
    let topo = Topology::symmetric(1, 4, 2, 21).unwrap();
    assert_ne!(
        topo.core_of(a[0]),
        topo.core_of(b[0]),
        "a and b share a core"
    );
    for t in &r.tasks {
        assert!(
            t.main_cpu_share > 0.9,
            "{} ran {:.2} on its CPU",
            t.name,
            t.main_cpu_share
        );
    }
}

#[test]
fn unhinted_the_same_threads_spread_out() {
    let mut spec = example();
    spec.hints.clear();
    let r = run::<Locality>(spec);
    assert_eq!(r.counters.hints_taken, 0);
    assert!(main_cpus(&r, "a").len() > 1, "{:?}", main_cpus(&r, "a"));
}

#[test]
fn a_hint_the_scheduler_cannot_read_ends_the_run() {
    quiet();
    let mut spec = example();
    spec.hints[0].hex = "0100".into();
    let err = simulate::<Locality>(config::<Locality>(spec))
        .err()
        .expect("a 2-byte hint to a 4-byte reader ran");
    assert!(err.to_string().contains("reads 4-byte hints"), "{err:#}");
}

/// Records `spec` under `S` and replays it both ways: no divergence.
fn records_and_replays<S: EnokiScheduler>(spec: &Spec) -> Report {
    quiet();
    let (out, bytes) = record::<S>(spec, 1, props::<S>());
    let reader = || TraceReader::new(Cursor::new(&bytes[..])).unwrap();
    let header = reader().header().clone();
    let opts = ReplayOptions::default();
    let seq = replay::<S>(&header, &mut reader(), &opts).unwrap();
    assert!(seq.divergence.is_none(), "{}", seq.divergence.unwrap());
    let by_locks = replay_by_locks::<S>(&header, &mut reader(), &opts).unwrap();
    assert!(
        by_locks.divergence.is_none(),
        "{}",
        by_locks.divergence.unwrap()
    );
    out.report
}

#[test]
fn hints_record_and_replay() {
    let r = records_and_replays::<Locality>(&example());
    assert_eq!(r.counters.hints_taken, 6);
}

#[test]
fn a_process_asking_arachne_for_two_cpus_runs_there_alone() {
    let r = records_and_replays::<Arachne>(&arachne_example());
    assert_eq!((r.counters.hints_taken, r.counters.hints_refused), (4, 0));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let app = main_cpus(&r, "app");
    assert_eq!(app.len(), 2, "the app's threads ran mostly on {app:?}");
    let other = main_cpus(&r, "other");
    assert!(
        other.iter().all(|c| !app.contains(c)),
        "others ran on the app's CPUs {app:?}: {other:?}"
    );
}

#[test]
fn arachne_refuses_a_request_about_another_process() {
    let mut spec = arachne_example();
    spec.hints[0].own_queue = false;
    let r = run::<Arachne>(spec);
    assert_eq!((r.counters.hints_taken, r.counters.hints_refused), (0, 4));
}

#[test]
fn a_process_is_one_thread_group() {
    let mut spec = arachne_example();
    spec.processes.clear();
    let r = run::<Arachne>(spec);
    assert_eq!(r.counters.hints_taken, 4, "each thread asked for itself");
    assert!(
        main_cpus(&r, "app").len() > 2,
        "four one-thread processes asking for two CPUs each shared two"
    );
}

#[test]
fn cpus_an_urgent_process_asks_for_are_reclaimed_and_it_runs_there_alone() {
    let mut spec = Spec::from_toml(include_str!("../examples/arachne-reclaim.toml")).unwrap();
    // Asked early, so that the CPU each thread ran on most is where it ran
    // after the reclaim (a batch thread may run 100 ms on a CPU before).
    spec.hints[1].at_ms = 20;
    let r = records_and_replays::<Arachne>(&spec);
    assert_eq!((r.counters.hints_taken, r.counters.hints_refused), (9, 0));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let urgent = main_cpus(&r, "urgent");
    assert_eq!(
        urgent.len(),
        3,
        "the urgent threads ran mostly on {urgent:?}"
    );
    let batch = main_cpus(&r, "batch");
    assert!(
        batch.iter().all(|c| !urgent.contains(c)),
        "batch threads ran mostly on the urgent CPUs {urgent:?}: {batch:?}"
    );
}

/// CPU time of group `group`, ms.
fn group_runtime_ms(r: &Report, group: &str) -> f64 {
    let ns: u64 = r
        .tasks
        .iter()
        .filter(|t| t.group == group)
        .map(|t| t.runtime_ns)
        .sum();
    ns as f64 / 1e6
}

#[test]
fn cpus_asked_back_stay_with_their_process_for_the_grace_period() {
    let spec = || Spec::from_toml(include_str!("../examples/arachne-reclaim.toml")).unwrap();
    let mut at_once = spec();
    at_once.run.args = "reclaim_ms=0".into();
    let (asked, taken) = (run::<Arachne>(spec()), run::<Arachne>(at_once));
    // Two CPUs asked back stay busy with batch threads for 20 ms each
    // instead of going to the urgent process at once.
    let kept = group_runtime_ms(&asked, "batch") - group_runtime_ms(&taken, "batch");
    let waited = group_runtime_ms(&taken, "urgent") - group_runtime_ms(&asked, "urgent");
    println!("batch kept {kept:.1} ms, urgent waited {waited:.1} ms");
    for (what, ms) in [("batch kept", kept), ("urgent waited", waited)] {
        assert!(
            (30.0..=50.0).contains(&ms),
            "{what} {ms:.1} ms, not about 2 x 20"
        );
    }
}
