// SPDX-License-Identifier: MIT OR Apache-2.0
//! Live upgrades in the simulator: many in a row under a mixed workload
//! keep every invariant (no task lost or starved), for each correct
//! scheduler; a refused upgrade ends the run with the reason; a recording
//! across upgrades replays up to the first.

mod common;

use std::io::Cursor;

use enoki_sim::registry;
use enoki_sim::replay::ReplayOptions;
use enoki_sim::sim::{trace_header, Recorder, SimConfig};
use enoki_sim::spec::{Spec, Upgrade};
use enoki_sim::trace::{read_all, Event, Record, TraceHeader, TraceReader};

use common::{mixed_spec, quiet};

/// The mixed workload (40 ms) with an upgrade every millisecond from 1 to
/// 39, alternating the scheduler's default settings and `args`.
fn upgraded_every_ms(args: &str) -> Spec {
    let mut spec = mixed_spec();
    spec.upgrades = (1..=39u64)
        .map(|at_ms| Upgrade {
            at_ms,
            args: (at_ms % 2 == 0).then(|| args.to_string()),
            fresh: false,
        })
        .collect();
    spec
}

#[test]
fn upgrades_every_millisecond_under_a_mixed_load_keep_every_invariant() {
    quiet();
    for entry in registry::correct() {
        let out = (entry.simulate)(SimConfig::new(upgraded_every_ms(""), 5, entry.props)).unwrap();
        assert_eq!(out.report.upgrades, 39, "{}", entry.name);
        assert!(
            out.report.violations.is_empty(),
            "{}: {:?}",
            entry.name,
            out.report.violations
        );
    }
}

#[test]
fn a_refused_upgrade_ends_the_run_with_its_reason() {
    quiet();
    let mut spec = mixed_spec();
    spec.upgrades = vec![Upgrade {
        at_ms: 5,
        args: Some("period_us=0".into()),
        fresh: false,
    }];
    let wfq = registry::find("wfq").unwrap();
    let err = (wfq.simulate)(SimConfig::new(spec, 1, wfq.props))
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("the upgrade at 5 ms was refused"), "{err}");
    assert!(err.contains("period_us"), "{err}");
}

/// WFQ's mixed run recorded with an upgrade at 10 ms (`fresh` or carrying
/// its state) and another at 20 ms: the trace, and its records.
fn recorded_across_upgrades(fresh: bool) -> (TraceHeader, Vec<u8>, Vec<Record>) {
    let mut spec = mixed_spec();
    spec.upgrades = [10, 20]
        .map(|at_ms| Upgrade {
            at_ms,
            args: None,
            fresh,
        })
        .to_vec();
    let wfq = registry::find("wfq").unwrap();
    let header = trace_header("wfq", &spec).unwrap();
    let rec = Recorder::new(Cursor::new(Vec::new()), header.clone()).unwrap();
    let mut cfg = SimConfig::new(spec, 3, wfq.props);
    cfg.record = Some(rec.sink());
    let out = (wfq.simulate)(cfg).unwrap();
    assert_eq!(out.report.upgrades, 2);
    let bytes = rec.finish().unwrap().into_inner();
    let (_, records, _) = read_all(Cursor::new(&bytes)).unwrap();
    (header, bytes, records)
}

#[test]
fn replay_of_a_recording_across_upgrades_stops_cleanly_at_the_first() {
    quiet();
    let wfq = registry::find("wfq").unwrap();
    for fresh in [false, true] {
        let (header, bytes, records) = recorded_across_upgrades(fresh);
        let upgrades: Vec<&Record> = records
            .iter()
            .filter(|r| matches!(r.event, Event::Upgrade { .. }))
            .collect();
        assert_eq!(upgrades.len(), 2, "both upgrades are in the trace");
        let first = upgrades[0];
        let Event::Upgrade { state } = first.event else {
            unreachable!()
        };
        // WFQ carries its tasks' lag unless told to start fresh.
        assert_eq!(state == 0, fresh, "state fingerprint {state:#x}");
        let before = records
            .iter()
            .filter(|r| r.seq < first.seq && matches!(r.event, Event::Msg(_)))
            .count() as u64;
        assert!(before > 100, "{before} messages before the upgrade");
        for run in [wfq.replay, wfq.replay_by_locks] {
            let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
            let rep = run(&header, &mut reader, &ReplayOptions::default()).unwrap();
            assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
            assert!(rep.gap.is_none() && rep.read_error.is_none());
            let up = rep.upgrade.expect("replay stopped at the upgrade");
            assert_eq!((up.seq, up.state), (first.seq, state));
            assert_eq!(rep.messages, before);
        }
    }
}
