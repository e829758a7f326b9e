// SPDX-License-Identifier: GPL-2.0
//! The hint applications send, the hint queues the scheduler accepted, and
//! what became of hints and placements.

use enoki::{AllocError, FixedVec, QueueId, Shared};

enoki::hint_struct! {
    /// Puts a task in a group: `group` 1..=[`MAX_GROUPS`](super::MAX_GROUPS)
    /// co-locates it with the group's other tasks, 0 takes it out of any
    /// group. Applications send this very type (`enoki_locality::GroupHint`
    /// through `enoki_hints::HintQueue`), so the fingerprints match.
    pub struct GroupHint {
        /// The group, or 0 for none.
        pub group: u32,
    }
}

enoki::hint_struct! {
    /// The scheduler's answer to a taken [`GroupHint`], through the
    /// queue's reverse ring: where the task's group lives now.
    pub struct GroupHome {
        /// The group the hint named.
        pub group: u32,
        /// Its home CPU.
        pub cpu: u32,
    }
}

/// Hint queues open at once, at most; another open fails (ENOSPC) until
/// one is closed.
pub const MAX_QUEUES: usize = 64;

/// The hint queues the scheduler accepted.
pub(crate) struct OpenQueues {
    slots: FixedVec<Option<QueueId>>,
}

impl OpenQueues {
    pub(crate) fn new() -> Result<Self, AllocError> {
        Ok(OpenQueues {
            slots: FixedVec::new_with(MAX_QUEUES, |_| None)?,
        })
    }

    /// Takes `queue` on; false when every slot is taken.
    pub(crate) fn open(&mut self, queue: QueueId) -> bool {
        if self.is_open(queue) {
            return true;
        }
        let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) else {
            return false;
        };
        *free = Some(queue);
        true
    }

    pub(crate) fn close(&mut self, queue: QueueId) {
        for slot in self.slots.iter_mut().filter(|s| **s == Some(queue)) {
            *slot = None;
        }
    }

    pub(crate) fn is_open(&self, queue: QueueId) -> bool {
        self.slots.contains(&Some(queue))
    }
}

/// Counts of what became of hints and of grouped tasks' wakeups. Shared
/// values, not atomics, so that record and replay see every update.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hints_taken: Shared<u64>,
    pub(crate) hints_refused: Shared<u64>,
    pub(crate) placed_home: Shared<u64>,
    pub(crate) ignored_overloaded: Shared<u64>,
}

impl Counters {
    pub(crate) fn hint(&self, taken: bool) {
        let counter = if taken {
            &self.hints_taken
        } else {
            &self.hints_refused
        };
        counter.fetch_add(1);
    }

    /// A grouped task woke: placed on its group's CPU, or not because that
    /// CPU was overloaded.
    pub(crate) fn wakeup(&self, overloaded: bool) {
        let counter = if overloaded {
            &self.ignored_overloaded
        } else {
            &self.placed_home
        };
        counter.fetch_add(1);
    }
}
