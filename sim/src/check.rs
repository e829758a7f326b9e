// SPDX-License-Identifier: MIT OR Apache-2.0
//! Invariants checked after every simulated event.
//!
//! - no task lost: a runnable task not run for longer than a bound is a stall
//!   (the bound is the spec's `stall_ms`, or max(250 ms, 2 × runnable tasks ×
//!   slice): a FIFO-fair scheduler serves every runnable task within that);
//! - no task on two CPUs;
//! - no scheduler mistake caught by libEnoki (a token for the wrong CPU, a
//!   refused pick, a bad select or migrate) for schedulers registered as
//!   correct;
//! - no CPU idle while a task is queued for it, for schedulers registered as
//!   work conserving.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use enoki::{CpuId, Pid};

/// What a scheduler promises, from the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Props {
    /// Makes no mistake libEnoki has to catch (pick, select and migrate
    /// errors stay 0) and loses no task.
    pub correct: bool,
    /// Never leaves a CPU idle while a task waits in that CPU's queue.
    pub work_conserving: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A runnable task waited longer than the bound.
    Stall,
    /// One task running on two CPUs.
    DoubleRun,
    /// libEnoki caught a scheduler mistake.
    SchedulerError,
    /// A CPU idles while its own queue has work.
    IdleWithWork,
    /// Kicks and picks did not settle.
    Livelock,
    /// The scheduler failed (a deadlock, a leaked lock, a call over
    /// budget): libEnoki's report. Enoki-C would eject it.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub time_ns: u64,
    pub kind: ViolationKind,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {:.3} ms: {:?}: {}",
            self.time_ns as f64 / 1e6,
            self.kind,
            self.detail
        )
    }
}

/// libEnoki's error counters (`DriverCounters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    pub pick: u64,
    pub select: u64,
    pub migrate: u64,
}

/// The simulator's state after an event, as the checker needs it.
pub struct Snapshot<'a> {
    pub now: u64,
    /// What runs on each CPU.
    pub running: &'a [Option<Pid>],
    /// Tasks waiting in the scheduler, with the CPU of their token.
    pub queued: &'a [(Pid, CpuId)],
    /// Every runnable task not running, with when it became runnable.
    pub runnable: &'a [(Pid, u64)],
    pub errors: Errors,
}

/// Keeps what it found, up to `max` violations.
pub struct Checker {
    props: Props,
    stall_ns: Option<u64>,
    slice_ns: u64,
    errors: Errors,
    /// (pid, runnable since) already reported as stalled.
    stalled: BTreeSet<(Pid, u64)>,
    max: usize,
    pub found: Vec<Violation>,
    pub dropped: u64,
}

impl Checker {
    /// `stall_ns`: fixed bound, or `None` for the default.
    pub fn new(props: Props, stall_ns: Option<u64>, slice_ns: u64, max: usize) -> Self {
        Checker {
            props,
            stall_ns,
            slice_ns,
            errors: Errors::default(),
            stalled: BTreeSet::new(),
            max,
            found: Vec::new(),
            dropped: 0,
        }
    }

    pub fn report(&mut self, time_ns: u64, kind: ViolationKind, detail: String) {
        if self.found.len() < self.max {
            self.found.push(Violation {
                time_ns,
                kind,
                detail,
            });
        } else {
            self.dropped += 1;
        }
    }

    /// The stall bound with `runnable` tasks waiting.
    pub fn stall_bound(&self, runnable: usize) -> u64 {
        self.stall_ns
            .unwrap_or_else(|| (250_000_000u64).max(2 * runnable as u64 * self.slice_ns))
    }

    pub fn check(&mut self, s: &Snapshot<'_>) {
        let mut seen: Vec<(Pid, CpuId)> = s
            .running
            .iter()
            .enumerate()
            .filter_map(|(c, p)| p.map(|p| (p, c)))
            .collect();
        seen.sort_unstable();
        for w in seen.windows(2) {
            if w[0].0 == w[1].0 {
                self.report(
                    s.now,
                    ViolationKind::DoubleRun,
                    format!("task {} runs on CPUs {} and {}", w[0].0, w[0].1, w[1].1),
                );
            }
        }
        if self.props.correct && s.errors != self.errors {
            let (was, now) = (self.errors, s.errors);
            self.report(
                s.now,
                ViolationKind::SchedulerError,
                format!(
                    "libEnoki caught a scheduler mistake: pick errors {} -> {}, select errors {} -> {}, migrate errors {} -> {}",
                    was.pick, now.pick, was.select, now.select, was.migrate, now.migrate
                ),
            );
        }
        self.errors = s.errors;
        if self.props.work_conserving {
            for &(pid, cpu) in s.queued {
                if s.running.get(cpu).is_some_and(Option::is_none) {
                    self.report(
                        s.now,
                        ViolationKind::IdleWithWork,
                        format!("CPU {cpu} is idle while task {pid} waits in its queue"),
                    );
                }
            }
        }
        let bound = self.stall_bound(s.runnable.len());
        for &(pid, since) in s.runnable {
            let waited = s.now.saturating_sub(since);
            if waited > bound && self.stalled.insert((pid, since)) {
                self.report(
                    s.now,
                    ViolationKind::Stall,
                    format!(
                        "task {pid} runnable for {:.1} ms without running (bound {:.1} ms)",
                        waited as f64 / 1e6,
                        bound as f64 / 1e6
                    ),
                );
            }
        }
    }
}
