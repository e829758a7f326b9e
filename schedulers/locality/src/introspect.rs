// SPDX-License-Identifier: GPL-2.0
//! What tests and tools may look at inside Locality: what became of hints
//! and placements, and the groups. Compiled for tests and the
//! `introspect` feature only, never into the kernel module.

use enoki::{CpuId, Pid, Result};

use super::Locality;

/// What became of hints and of grouped tasks' wakeups since init.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hints taken (group 0 included).
    pub hints_taken: u64,
    /// Hints refused: a group out of range, a task the scheduler does not
    /// know, or a queue it does not hold open.
    pub hints_refused: u64,
    /// Wakeups of a grouped task placed on its group's home.
    pub placed_home: u64,
    /// Wakeups of a grouped task placed elsewhere because its home had
    /// more than `overload` tasks waiting.
    pub ignored_overloaded: u64,
}

impl Locality {
    /// The counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            hints_taken: c.hints_taken.get(),
            hints_refused: c.hints_refused.get(),
            placed_home: c.placed_home.get(),
            ignored_overloaded: c.ignored_overloaded.get(),
        }
    }

    /// The CPU `group` lives on, if it has one.
    pub fn home_of(&self, group: u32) -> Result<Option<CpuId>> {
        Ok(self.groups.lock()?.home(group))
    }

    /// The group `pid` is in (0: none); `None` for a task the scheduler
    /// does not know.
    pub fn group_of(&self, pid: Pid) -> Result<Option<u32>> {
        Ok(self.groups.lock()?.group_of(pid))
    }
}
