// SPDX-License-Identifier: MIT OR Apache-2.0
//! The spec's cgroups: created before any task (cgroup `i` of the spec has
//! id `i + 2`, the root 1), and its weight changes and moves, as sched_ext
//! tells Enoki-C of them.

use enoki::{Bandwidth, CgroupId, EnokiScheduler, ROOT_CGROUP};

use crate::report::CgroupReport;
use crate::spec::Cgroup;

use super::{Ev, Sim};

impl<S: EnokiScheduler> Sim<S> {
    /// The id of the cgroup the spec calls `name` (`/`: the root).
    fn cgroup_id(&self, name: &str) -> CgroupId {
        self.spec
            .cgroups
            .iter()
            .position(|c| c.name == name)
            .map_or(ROOT_CGROUP, |i| i as CgroupId + 2)
    }

    /// Every cgroup, parents first, and the groups whose tasks start in it.
    pub(super) fn add_cgroups(&mut self) {
        self.on(0);
        for c in self.spec.cgroups.clone() {
            let id = self.cgroup_id(&c.name);
            let parent = c
                .parent
                .as_deref()
                .map_or(ROOT_CGROUP, |p| self.cgroup_id(p));
            self.d.cgroup_new(id, Some(parent), c.weight);
            if c.quota_us.is_some() {
                self.d
                    .set_cgroup_bandwidth(id, cpu_max(c.quota_us, c.period_us));
            }
            for g in self
                .groups
                .iter_mut()
                .filter(|g| c.members.contains(&g.name))
            {
                g.cgroup = id;
            }
        }
    }

    /// Queues the spec's cgroup weight changes, moves and cpu.max changes.
    pub(super) fn schedule_cgroup_changes(&mut self) {
        let weights: Vec<u64> = self.spec.cgroup_weights.iter().map(|w| w.at_ms).collect();
        let moves: Vec<u64> = self.spec.cgroup_moves.iter().map(|m| m.at_ms).collect();
        let maxes: Vec<u64> = self.spec.cgroup_maxes.iter().map(|m| m.at_ms).collect();
        for (idx, at_ms) in weights.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::CgroupWeight { idx });
        }
        for (idx, at_ms) in moves.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::CgroupMove { idx });
        }
        for (idx, at_ms) in maxes.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::CgroupMax { idx });
        }
    }

    /// Each spec cgroup's CPU time, its descendants' included, and its
    /// last weight.
    pub(super) fn cgroup_reports(&self) -> Vec<CgroupReport> {
        let cgroups = &self.spec.cgroups;
        // Whether spec cgroup `i` is `a` or below it.
        let under = |mut i: usize, a: usize| {
            for _ in 0..=cgroups.len() {
                if i == a {
                    return true;
                }
                let Some(p) = cgroups[i].parent.as_deref() else {
                    return false;
                };
                let Some(parent) = cgroups.iter().position(|c| c.name == p) else {
                    return false;
                };
                i = parent;
            }
            false
        };
        let weight = |c: &Cgroup| {
            self.spec
                .cgroup_weights
                .iter()
                .filter(|w| w.cgroup == c.name && w.at_ms * 1_000_000 <= self.end)
                .max_by_key(|w| w.at_ms)
                .map_or(c.weight, |w| w.weight)
        };
        (0..cgroups.len())
            .map(|a| CgroupReport {
                name: cgroups[a].name.clone(),
                weight: weight(&cgroups[a]),
                runtime_ns: (0..cgroups.len())
                    .filter(|i| under(*i, a))
                    .filter_map(|i| self.cgroup_runtime.get(&(i as CgroupId + 2)))
                    .sum(),
            })
            .collect()
    }

    /// The spec's weight change `idx`.
    pub(super) fn set_cgroup_weight(&mut self, idx: usize) {
        let w = self.spec.cgroup_weights[idx].clone();
        self.on(0);
        let id = self.cgroup_id(&w.cgroup);
        self.d.set_cgroup_weight(id, w.weight);
    }

    /// The spec's cpu.max change `idx`.
    pub(super) fn set_cgroup_max(&mut self, idx: usize) {
        let m = self.spec.cgroup_maxes[idx].clone();
        self.on(0);
        let id = self.cgroup_id(&m.cgroup);
        self.d
            .set_cgroup_bandwidth(id, cpu_max(m.quota_us, m.period_us));
    }

    /// The spec's move `idx`: a group's later forks follow its tasks.
    pub(super) fn move_cgroup(&mut self, idx: usize) {
        let m = self.spec.cgroup_moves[idx].clone();
        let id = self.cgroup_id(&m.cgroup);
        for pid in self.targets(&m.target) {
            self.d.move_to_cgroup(pid, id);
            if let Some(t) = self.tasks.get_mut(&pid) {
                t.cgroup = id;
            }
        }
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == m.target) {
            g.cgroup = id;
        }
    }
}

/// A `cpu.max` of `quota_us` (none: `max`) per `period_us`.
fn cpu_max(quota_us: Option<u64>, period_us: u64) -> Bandwidth {
    Bandwidth {
        period_ns: period_us.saturating_mul(1_000),
        quota_ns: quota_us.map(|q| q.saturating_mul(1_000)),
        burst_ns: 0,
    }
}
