// SPDX-License-Identifier: GPL-2.0
//! Which group each task is in, and which CPU each group lives on.

use enoki::{AllocError, CpuId, CpuSet, FixedVec, Pid, TaskMap, Topology};

/// Tasks are hinted into groups `1..=MAX_GROUPS`; group 0 is none.
pub const MAX_GROUPS: u32 = 64;

/// A task as the scheduler knows it.
#[derive(Clone, Copy)]
struct Member {
    allowed: CpuSet,
    /// 0: in no group.
    group: u32,
}

#[derive(Clone, Copy, Default)]
struct Group {
    /// The CPU its tasks run on: chosen when it gets a task, given up when
    /// it has none left (or the CPU goes offline).
    home: Option<CpuId>,
    members: u32,
}

/// What a waking or queued task is placed by: where it may run, and the
/// CPU its group lives on.
pub(crate) type Placement = (CpuSet, Option<CpuId>);

/// Every task's group and every group's home, under one lock so that a
/// placement reads both at once.
pub(crate) struct Groups {
    tasks: TaskMap<Member>,
    /// Group `g` at index `g - 1`.
    groups: FixedVec<Group>,
}

/// The index of `group` in [`Groups::groups`]; `None` for group 0.
fn index(group: u32) -> Option<usize> {
    usize::try_from(group.checked_sub(1)?).ok()
}

impl Groups {
    pub(crate) fn new(max_tasks: usize) -> Result<Self, AllocError> {
        Ok(Groups {
            tasks: TaskMap::with_capacity(max_tasks)?,
            groups: FixedVec::new_with(MAX_GROUPS as usize, |_| Group::default())?,
        })
    }

    /// Takes on a task, in no group; false when there is no room.
    pub(crate) fn add(&mut self, pid: Pid, allowed: CpuSet) -> bool {
        match self.tasks.insert(pid, Member { allowed, group: 0 }) {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    self.leave(old.group);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Forgets a task; it leaves its group.
    pub(crate) fn remove(&mut self, pid: Pid) {
        if let Some(member) = self.tasks.remove(pid) {
            self.leave(member.group);
        }
    }

    pub(crate) fn set_allowed(&mut self, pid: Pid, allowed: &CpuSet) {
        if let Some(member) = self.tasks.get_mut(pid) {
            member.allowed = *allowed;
        }
    }

    /// Where `pid` may run and its group's home; `None` for a task the
    /// scheduler does not know.
    pub(crate) fn placement(&self, pid: Pid) -> Option<Placement> {
        let member = self.tasks.get(pid)?;
        Some((member.allowed, self.home(member.group)))
    }

    /// [`Self::placement`], first giving `pid`'s group a home from
    /// `choose` if the group lost its own.
    pub(crate) fn placement_rehomed(
        &mut self,
        pid: Pid,
        choose: impl FnOnce(&Self, &CpuSet) -> Option<CpuId>,
    ) -> Option<Placement> {
        let member = *self.tasks.get(pid)?;
        self.give_home(member.group, &member.allowed, choose);
        self.placement(pid)
    }

    /// Moves `pid` into `group` (0: out of every group), giving the group
    /// a home from `choose` if it has none. False, and nothing changes,
    /// when the task is unknown or the group does not exist.
    pub(crate) fn regroup(
        &mut self,
        pid: Pid,
        group: u32,
        choose: impl FnOnce(&Self, &CpuSet) -> Option<CpuId>,
    ) -> bool {
        let Some(member) = self.tasks.get(pid).copied() else {
            return false;
        };
        if group > MAX_GROUPS {
            return false;
        }
        // Leaving and joining the same group would free and re-choose
        // its home: the group would move.
        if member.group == group {
            return true;
        }
        self.leave(member.group);
        if let Some(g) = index(group).and_then(|i| self.groups.get_mut(i)) {
            g.members = g.members.saturating_add(1);
        }
        self.give_home(group, &member.allowed, choose);
        if let Some(m) = self.tasks.get_mut(pid) {
            m.group = group;
        }
        true
    }

    /// `cpu` went offline: the groups living there get new homes when
    /// their tasks next wake.
    pub(crate) fn evict(&mut self, cpu: CpuId) {
        for g in self.groups.iter_mut().filter(|g| g.home == Some(cpu)) {
            g.home = None;
        }
    }

    /// The CPU of `candidates` whose core is home to the fewest groups,
    /// then that is itself home to the fewest, then the lowest: groups
    /// spread over physical cores before SMT siblings.
    pub(crate) fn least_crowded(&self, topology: &Topology, candidates: CpuSet) -> Option<CpuId> {
        let nr_cpus = topology.nr_cpus();
        candidates
            .iter()
            .filter(|cpu| *cpu < nr_cpus)
            .min_by_key(|cpu| {
                let core = topology.core_of(*cpu);
                let on_core = self.homes_where(|home| topology.core_of(home) == core);
                (on_core, self.homes_where(|home| home == *cpu))
            })
    }

    /// Groups whose home satisfies `on`.
    fn homes_where(&self, on: impl Fn(CpuId) -> bool) -> usize {
        self.groups
            .iter()
            .filter_map(|g| g.home)
            .filter(|home| on(*home))
            .count()
    }

    /// The home of `group`; `None` for group 0 or a group without one.
    pub(crate) fn home(&self, group: u32) -> Option<CpuId> {
        index(group)
            .and_then(|i| self.groups.get(i))
            .and_then(|g| g.home)
    }

    /// The group `pid` is in (0: none).
    #[cfg(any(test, feature = "introspect"))]
    pub(crate) fn group_of(&self, pid: Pid) -> Option<u32> {
        self.tasks.get(pid).map(|m| m.group)
    }

    fn leave(&mut self, group: u32) {
        if let Some(g) = index(group).and_then(|i| self.groups.get_mut(i)) {
            g.members = g.members.saturating_sub(1);
            if g.members == 0 {
                g.home = None;
            }
        }
    }

    /// Gives `group` a home from `choose` (told the joining task's allowed
    /// CPUs) when it has members and no home.
    fn give_home(
        &mut self,
        group: u32,
        allowed: &CpuSet,
        choose: impl FnOnce(&Self, &CpuSet) -> Option<CpuId>,
    ) {
        let Some(i) = index(group) else { return };
        let homeless = self
            .groups
            .get(i)
            .is_some_and(|g| g.members > 0 && g.home.is_none());
        if !homeless {
            return;
        }
        let home = choose(self, allowed);
        if let Some(g) = self.groups.get_mut(i) {
            g.home = home;
        }
    }
}
