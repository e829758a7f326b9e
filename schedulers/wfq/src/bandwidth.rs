// SPDX-License-Identifier: GPL-2.0
//! cgroup `cpu.max`: a cgroup's tasks together run at most `quota` in each
//! `period`, as CFS's bandwidth control has it.
//!
//! A cgroup with a limit has a budget: the CPU time left in its current
//! period. Every runtime its tasks (or its descendants' tasks) are charged
//! comes off it; at the end of each period the quota is added back, up to
//! `quota + burst` (the burst is what an idle period may carry over). A
//! task may run while the budget of its cgroup and of every ancestor is
//! positive; a budget overdrawn by a tick's worth of runtime is paid back
//! from the next period, so the long-run share is the quota's.
//!
//! Time is the messages' time (`Services::now`), so a replay throttles
//! exactly as the recorded run did.

use enoki::Bandwidth;

/// One limited cgroup's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Budget {
    period: u64,
    quota: u64,
    burst: u64,
    /// CPU time left in the current period; negative when overdrawn.
    left: i64,
    /// When the current period ends.
    period_end: u64,
}

/// `n` as a budget amount.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Budget {
    /// A full budget from `now` on, or `None` for no limit.
    pub(super) fn new(b: &Bandwidth, now: u64) -> Option<Self> {
        let quota = b.quota_ns?;
        let period = b.period_ns.max(1);
        Some(Budget {
            period,
            quota,
            burst: b.burst_ns,
            left: signed(quota),
            period_end: now.saturating_add(period),
        })
    }

    /// The same budget under a new limit: the period restarts, and what
    /// was used in it counts against the new quota.
    pub(super) fn change(self, b: &Bandwidth, now: u64) -> Option<Self> {
        let used = signed(self.quota).saturating_sub(self.left).max(0);
        Budget::new(b, now).map(|fresh| Budget {
            left: fresh.left.saturating_sub(used),
            ..fresh
        })
    }

    /// Adds the quota of every period that ended by `now`.
    pub(super) fn refill(&mut self, now: u64) {
        if now < self.period_end {
            return;
        }
        let ended = now
            .saturating_sub(self.period_end)
            .checked_div(self.period)
            .unwrap_or(0)
            .saturating_add(1);
        let cap = signed(self.quota.saturating_add(self.burst));
        let added = signed(self.quota.saturating_mul(ended));
        self.left = self.left.saturating_add(added).min(cap);
        self.period_end = self
            .period_end
            .saturating_add(self.period.saturating_mul(ended));
    }

    /// Takes `ns` of CPU time used by `now`.
    pub(super) fn charge(&mut self, ns: u64, now: u64) {
        self.refill(now);
        self.left = self.left.saturating_sub(signed(ns));
    }

    /// When its tasks may run again if the budget is used up at `now`.
    pub(super) fn throttled_until(&mut self, now: u64) -> Option<u64> {
        self.refill(now);
        (self.left <= 0).then_some(self.period_end)
    }
}
