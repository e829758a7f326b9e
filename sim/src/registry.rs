// SPDX-License-Identifier: MIT OR Apache-2.0
//! The schedulers the simulator knows, by `EnokiScheduler::NAME`, with what
//! each promises (what the invariant checker holds it to).

use anyhow::{bail, Result};

use enoki::EnokiScheduler;

use crate::check::Props;
use crate::replay::{replay, replay_by_locks, ReplayOptions, ReplayReport};
use crate::sim::{simulate, Outcome, SimConfig};
use crate::trace::{Record, TraceError, TraceHeader};

/// Recorded events, as a [`crate::trace::TraceReader`] yields them.
pub type Records<'a> = &'a mut dyn Iterator<Item = Result<Record, TraceError>>;

/// One scheduler, type-erased.
pub struct SchedEntry {
    pub name: &'static str,
    pub props: Props,
    pub simulate: fn(SimConfig) -> Result<Outcome>,
    pub replay: fn(&TraceHeader, Records<'_>, &ReplayOptions) -> Result<ReplayReport>,
    /// Lock-ordered replay (one thread per recorded CPU), for kernel traces.
    pub replay_by_locks: fn(&TraceHeader, Records<'_>, &ReplayOptions) -> Result<ReplayReport>,
}

const fn entry<S: EnokiScheduler>(props: Props) -> SchedEntry {
    SchedEntry {
        name: S::NAME,
        props,
        simulate: simulate::<S>,
        replay: replay::<S>,
        replay_by_locks: replay_by_locks::<S>,
    }
}

const CORRECT: Props = Props {
    correct: true,
    work_conserving: true,
};

/// Every scheduler in schedulers/. Add one line per new scheduler (and its
/// crate to sim/Cargo.toml).
pub static SCHEDULERS: &[SchedEntry] = &[
    entry::<enoki_fifo::EnokiSched>(CORRECT),
    entry::<enoki_wfq::EnokiSched>(CORRECT),
    // Deliberately wrong: picks tokens for other CPUs.
    entry::<enoki_badpick::EnokiSched>(Props {
        correct: false,
        work_conserving: false,
    }),
];

/// The scheduler called `name`.
pub fn find(name: &str) -> Result<&'static SchedEntry> {
    match SCHEDULERS.iter().find(|e| e.name == name) {
        Some(e) => Ok(e),
        None => {
            let names: Vec<&str> = SCHEDULERS.iter().map(|e| e.name).collect();
            bail!("no scheduler {name:?}; known: {}", names.join(", "))
        }
    }
}

/// The schedulers registered as correct: what the property tests run.
pub fn correct() -> impl Iterator<Item = &'static SchedEntry> {
    SCHEDULERS.iter().filter(|e| e.props.correct)
}
