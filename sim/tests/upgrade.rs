// SPDX-License-Identifier: MIT OR Apache-2.0
//! Live upgrades in the simulator: many in a row under a mixed workload
//! keep every invariant (no task lost or starved), for each correct
//! scheduler; a refused upgrade ends the run with the reason.

mod common;

use enoki_sim::registry;
use enoki_sim::sim::SimConfig;
use enoki_sim::spec::{Spec, Upgrade};

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
