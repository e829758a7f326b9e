// SPDX-License-Identifier: GPL-2.0
//! Fairness arithmetic: virtual time, the period and slices, and moving a
//! vruntime between queues or weights while keeping its lag.

use enoki::{Args, InitError};

/// Weight of a nice-0 task: its vruntime runs at wall-clock speed.
pub(super) const NICE_0_WEIGHT: u64 = 1024;

/// `a / b` for a divisor that is never 0 (a weight, a count): were it 0,
/// a bug, the kernel must not panic, so `a` comes back as if it were 1.
pub(super) fn div(a: u64, b: u64) -> u64 {
    a.checked_div(b).unwrap_or(a)
}

/// `a * b / c`, saturating.
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    div(a.saturating_mul(b), c)
}

/// `ns` of CPU time in the virtual time of a task of `weight`.
pub(super) fn to_virtual(ns: u64, weight: u64) -> u64 {
    mul_div(ns, NICE_0_WEIGHT, weight)
}

/// `v`, measured against a queue whose min_vruntime is `from`, measured
/// against one whose min_vruntime is `to` (its lag is kept).
pub(super) fn rebase(v: u64, from: u64, to: u64) -> u64 {
    if v >= from {
        to.saturating_add(v.abs_diff(from))
    } else {
        to.saturating_sub(v.abs_diff(from))
    }
}

/// `v`'s distance to `min`, worth the same CPU time at weight `new` as it
/// was at weight `old`.
pub(super) fn rescale_lag(v: u64, min: u64, old: u64, new: u64) -> u64 {
    let lag = mul_div(v.abs_diff(min), old, new);
    if v >= min {
        min.saturating_add(lag)
    } else {
        min.saturating_sub(lag)
    }
}

/// Tunables, like CFS's sysctls.
#[derive(Clone, Copy, Debug)]
pub(super) struct Params {
    /// Time in which every runnable task should run once (sched_latency).
    pub(super) period_ns: u64,
    /// Shortest slice; the period stretches to `nr_running` of these.
    pub(super) min_granularity_ns: u64,
    /// How far ahead in vruntime the running task may get before a waiting
    /// one preempts it.
    pub(super) wakeup_granularity_ns: u64,
    /// A wakeup may preempt the running task at once (`wakeup_preemption=1`);
    /// off, only the tick does. Off by default: see `Wfq::wakeup_preempts`.
    pub(super) wakeup_preemption: bool,
    /// How much busier (%, tasks per CPU) another node must be before an
    /// idle CPU takes work from it.
    pub(super) imbalance_pct: u64,
    /// cgroups the scheduler tells apart; more count as the root's children.
    pub(super) max_cgroups: usize,
}

impl Params {
    const KNOWN: [&'static str; 6] = [
        "period_us",
        "min_granularity_us",
        "wakeup_granularity_us",
        "wakeup_preemption",
        "imbalance_pct",
        "max_cgroups",
    ];

    pub(super) fn from_args(args: &Args<'_>) -> Result<Self, InitError> {
        args.check_known(&Self::KNOWN)?;
        let period_us = args.u64_in("period_us", 6_000, 100, 1_000_000)?;
        let min_granularity_us = args.u64_in("min_granularity_us", 750, 10, 1_000_000)?;
        if min_granularity_us > period_us {
            return Err(InitError::InvalidArgument(
                "min_granularity_us (at most period_us)",
            ));
        }
        Ok(Params {
            period_ns: period_us.saturating_mul(1000),
            min_granularity_ns: min_granularity_us.saturating_mul(1000),
            wakeup_granularity_ns: args
                .u64_in("wakeup_granularity_us", 1_000, 0, 1_000_000)?
                .saturating_mul(1000),
            wakeup_preemption: args.u64_in("wakeup_preemption", 0, 0, 1)? == 1,
            imbalance_pct: args.u64_in("imbalance_pct", 125, 100, 1_000)?,
            max_cgroups: usize::try_from(args.u64_in("max_cgroups", 256, 1, 4096)?)
                .map_err(|_| InitError::InvalidArgument("max_cgroups"))?,
        })
    }

    /// The time in which each of `nr_running` tasks runs once.
    fn period(&self, nr_running: u64) -> u64 {
        // (checked: the kernel build's objtool misreads a division panic)
        let nr_latency = self
            .period_ns
            .checked_div(self.min_granularity_ns)
            .unwrap_or(1);
        if nr_running > nr_latency {
            nr_running.saturating_mul(self.min_granularity_ns)
        } else {
            self.period_ns
        }
    }

    /// CFS's wakeup preemption rule: whether a running task at vruntime
    /// `curr` gives way to a waiting one at `next` of `weight`: when it is
    /// ahead by more than the wakeup granularity, counted in the waiting
    /// task's virtual time (so a light task needs a larger lead).
    pub(super) fn preempts(&self, curr: u64, next: u64, weight: u64) -> bool {
        next.saturating_add(to_virtual(self.wakeup_granularity_ns, weight)) < curr
    }

    /// A task's slice: its weight's share of the period.
    pub(super) fn slice(&self, nr_running: u64, queue_weight: u64, weight: u64) -> u64 {
        mul_div(self.period(nr_running), weight, queue_weight).max(self.min_granularity_ns)
    }
}
