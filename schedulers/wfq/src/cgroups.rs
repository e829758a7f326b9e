// SPDX-License-Identifier: GPL-2.0
//! cgroup `cpu.weight`, flattened into each task's weight the way CFS's
//! group scheduling divides time.
//!
//! A cgroup counts as one entity of weight `cpu.weight * 1024 / 100` (a
//! nice-0 task at the default 100) among its parent's runnable members:
//! tasks directly in the parent, and child cgroups with a runnable task
//! below them. A task's effective weight is its nice weight times, at each
//! cgroup from its own up to (not including) the root, that cgroup's weight
//! over the total weight of its runnable members:
//!
//! `effective = nice_weight * Π shares(g) / runnable(g)`
//!
//! Tasks in the root cgroup keep their nice weight, so the run queues
//! compare everything in one unit. The totals are global, as CFS's
//! per-CPU group weights add up to the group's share: a cgroup with tasks
//! on eight CPUs gets its weight once, split over them.
//!
//! A task is counted in its cgroup from the enqueue that makes it runnable
//! to the message that takes it out of the run queues; its effective weight
//! is recomputed at every enqueue, so a change elsewhere in the hierarchy
//! reaches it within a slice. Cgroups beyond the table's capacity, and
//! those whose parent it could not hold, count as children of the root.
//!
//! Each cgroup with a `cpu.max` also holds its budget (see `bandwidth`).

use enoki::{Bandwidth, CgroupId, FixedVec, InitError, ROOT_CGROUP};

use super::bandwidth::Budget;
use super::fair::div;

/// The weight of one cgroup entity at `cpu.weight` `weight` (100: 1024).
fn shares(weight: u32) -> u64 {
    div(u64::from(weight.clamp(1, 10_000)).saturating_mul(1024), 100)
}

/// One cgroup's place in the hierarchy (`id` 0: a free slot).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    id: CgroupId,
    /// The parent's slot; `None` under the root.
    parent: Option<usize>,
    /// Its weight among its parent's members.
    shares: u64,
    /// The weight of its runnable members: tasks counted in it, and
    /// child cgroups with one below them.
    runnable: u64,
    /// Its `cpu.max` budget, if it has a limit.
    budget: Option<Budget>,
}

/// What a task added to its cgroup's runnable weight, to take back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counted {
    pub(super) cgroup: CgroupId,
    pub(super) weight: u64,
}

/// Every cgroup the scheduler holds.
pub(super) struct Cgroups {
    slots: FixedVec<Slot>,
}

impl Cgroups {
    pub(super) fn with_capacity(n: usize) -> Result<Self, InitError> {
        Ok(Cgroups {
            slots: FixedVec::new_with(n, |_| Slot::default())?,
        })
    }

    fn find(&self, id: CgroupId) -> Option<usize> {
        if id == ROOT_CGROUP || id == 0 {
            return None;
        }
        self.slots.iter().position(|s| s.id == id)
    }

    /// A new cgroup under `parent`, at `now`; a repeated one (an
    /// upgrade's introduction and its log of changes) only takes the new
    /// weight and limit.
    pub(super) fn add(&mut self, info: &enoki::CgroupInfo, now: u64) {
        let id = info.id;
        if id == ROOT_CGROUP || id == 0 {
            return;
        }
        if self.find(id).is_some() {
            self.set_weight(id, info.weight);
            self.set_bandwidth(id, &info.bandwidth, now);
            return;
        }
        let parent = info.parent.and_then(|p| self.find(p));
        if let Some(slot) = self.slots.iter_mut().find(|s| s.id == 0) {
            *slot = Slot {
                id,
                parent,
                shares: shares(info.weight),
                runnable: 0,
                budget: Budget::new(&info.bandwidth, now),
            };
        }
    }

    /// `id`'s `cpu.max` is now `bandwidth`, from `now`.
    pub(super) fn set_bandwidth(&mut self, id: CgroupId, bandwidth: &Bandwidth, now: u64) {
        let Some(slot) = self.find(id).and_then(|at| self.slots.get_mut(at)) else {
            return;
        };
        slot.budget = match slot.budget {
            Some(budget) => budget.change(bandwidth, now),
            None => Budget::new(bandwidth, now),
        };
    }

    /// Calls `f` with the budget of `cgroup` and of each ancestor that has
    /// one.
    fn for_each_budget(&mut self, cgroup: CgroupId, mut f: impl FnMut(&mut Budget)) {
        let mut at = self.find(cgroup);
        for _ in 0..self.slots.len() {
            let Some(slot) = at.and_then(|i| self.slots.get_mut(i)) else {
                return;
            };
            if let Some(budget) = slot.budget.as_mut() {
                f(budget);
            }
            at = slot.parent;
        }
    }

    /// Whether `cgroup` or an ancestor has a `cpu.max`.
    pub(super) fn limited(&mut self, cgroup: CgroupId) -> bool {
        let mut limited = false;
        self.for_each_budget(cgroup, |_| limited = true);
        limited
    }

    /// A task of `cgroup` used `ns` of CPU time by `now`.
    pub(super) fn charge(&mut self, cgroup: CgroupId, ns: u64, now: u64) {
        self.for_each_budget(cgroup, |b| b.charge(ns, now));
    }

    /// When `cgroup`'s tasks may run again, if a budget on the way to the
    /// root is used up at `now`.
    pub(super) fn throttled_until(&mut self, cgroup: CgroupId, now: u64) -> Option<u64> {
        let mut until = None;
        self.for_each_budget(cgroup, |b| {
            if let Some(end) = b.throttled_until(now) {
                until = until.max(Some(end));
            }
        });
        until
    }

    /// Frees `id`'s slot (its tasks and children left it before).
    pub(super) fn remove(&mut self, id: CgroupId) {
        let Some(at) = self.find(id) else {
            return;
        };
        let left = self.slots.get(at).map_or(0, |s| s.runnable);
        self.sub(Some(at), left);
        for child in self.slots.iter_mut().filter(|s| s.parent == Some(at)) {
            child.parent = None;
        }
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Slot::default();
        }
    }

    /// `id`'s `cpu.weight` is now `weight`.
    pub(super) fn set_weight(&mut self, id: CgroupId, weight: u32) {
        let Some(at) = self.find(id) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(at) else {
            return;
        };
        let (old, new) = (slot.shares, shares(weight));
        slot.shares = new;
        let (active, parent) = (slot.runnable > 0, slot.parent);
        if active {
            // Its parent's members weigh differently now; it stays active.
            if let Some(p) = parent.and_then(|p| self.slots.get_mut(p)) {
                p.runnable = p.runnable.saturating_sub(old).saturating_add(new);
            }
        }
    }

    /// A task of nice weight `weight` in `cgroup` became runnable.
    pub(super) fn count(&mut self, cgroup: CgroupId, weight: u64) -> Option<Counted> {
        let at = self.find(cgroup)?;
        self.add_runnable(at, weight);
        Some(Counted { cgroup, weight })
    }

    /// Takes back what `count` added.
    pub(super) fn uncount(&mut self, counted: Counted) {
        self.sub(self.find(counted.cgroup), counted.weight);
    }

    /// Adds `weight` to `at`, and the cgroups it activates to their parents.
    fn add_runnable(&mut self, at: usize, weight: u64) {
        let (mut at, mut weight) = (Some(at), weight);
        for _ in 0..self.slots.len() {
            let Some(slot) = at.and_then(|i| self.slots.get_mut(i)) else {
                return;
            };
            let was = slot.runnable;
            slot.runnable = was.saturating_add(weight);
            if was > 0 {
                return;
            }
            (at, weight) = (slot.parent, slot.shares);
        }
    }

    /// Takes `weight` from `at`, and the cgroups it leaves idle from their
    /// parents.
    fn sub(&mut self, at: Option<usize>, weight: u64) {
        let (mut at, mut weight) = (at, weight);
        for _ in 0..self.slots.len() {
            let Some(slot) = at.and_then(|i| self.slots.get_mut(i)) else {
                return;
            };
            let was = slot.runnable;
            slot.runnable = was.saturating_sub(weight);
            if was == 0 || slot.runnable > 0 {
                return;
            }
            (at, weight) = (slot.parent, slot.shares);
        }
    }

    /// Whether every cgroup's runnable weight is that of the tasks
    /// counted in it (`counted(id)`) and of its children that have any.
    #[cfg(any(test, feature = "introspect"))]
    pub(super) fn adds_up(&self, counted: impl Fn(CgroupId) -> u64) -> bool {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.id != 0)
            .all(|(at, s)| {
                let children = self
                    .slots
                    .iter()
                    .filter(|c| c.id != 0 && c.parent == Some(at) && c.runnable > 0)
                    .fold(0u64, |sum, c| sum.saturating_add(c.shares));
                s.runnable == counted(s.id).saturating_add(children)
            })
    }

    /// The weight a task of nice weight `weight` in `cgroup` runs at.
    pub(super) fn effective(&self, cgroup: CgroupId, weight: u64) -> u64 {
        let mut at = self.find(cgroup);
        let mut effective = weight;
        for _ in 0..self.slots.len() {
            let Some(slot) = at.and_then(|i| self.slots.get(i)) else {
                break;
            };
            let members = slot.runnable.max(1);
            effective = div(effective.saturating_mul(slot.shares), members);
            at = slot.parent;
        }
        effective.max(1)
    }
}
