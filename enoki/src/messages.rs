// SPDX-License-Identifier: GPL-2.0
//! Which optional messages a scheduler takes ([`EnokiScheduler::MESSAGES`]).
//!
//! Every message is a call on a CPU's scheduling path, and some come often:
//! a tick is 1000 calls a second on every busy CPU. A scheduler that keeps a
//! trait method's default gains nothing from its calls, so Enoki-C does not
//! make them: it does what it does with no scheduler instead (the previous
//! CPU for a wakeup, no preemption at a tick, no pull), which is what the
//! defaults answer. The user backend's driver skips the same messages.
//!
//! [`EnokiScheduler::MESSAGES`]: super::EnokiScheduler::MESSAGES

use super::abi::kind;

/// A set of optional message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Messages(u32);

impl Messages {
    /// None: the scheduler keeps every optional method's default.
    pub const NONE: Self = Self(0);
    /// `task_tick`.
    pub const TICK: Self = Self(1 << kind::TASK_TICK);
    /// `select_task_rq`.
    pub const SELECT: Self = Self(1 << kind::SELECT_TASK_RQ);
    /// `balance`, with `balance_err` and `migrate_task_rq`, which only
    /// follow it.
    pub const BALANCE: Self =
        Self(1 << kind::BALANCE | 1 << kind::BALANCE_ERR | 1 << kind::MIGRATE_TASK_RQ);
    /// `task_prio_changed`.
    pub const PRIO: Self = Self(1 << kind::TASK_PRIO_CHANGED);
    /// `task_affinity_changed`.
    pub const AFFINITY: Self = Self(1 << kind::TASK_AFFINITY_CHANGED);
    /// `cpu_online` and `cpu_offline`.
    pub const HOTPLUG: Self = Self(1 << kind::CPU_ONLINE | 1 << kind::CPU_OFFLINE);
    /// `cgroup_new`, `cgroup_gone`, `cgroup_weight`, `cgroup_bandwidth`
    /// and `task_cgroup_moved`, which go together.
    pub const CGROUPS: Self = Self(
        1 << kind::CGROUP_NEW
            | 1 << kind::CGROUP_GONE
            | 1 << kind::CGROUP_WEIGHT
            | 1 << kind::TASK_CGROUP_MOVED
            | 1 << kind::CGROUP_BANDWIDTH,
    );
    /// `register_queue`, `parse_hint` and `unregister_queue`: hint
    /// queues from userspace, which go together.
    pub const HINTS: Self = Self(1 << kind::QUEUE_NEW | 1 << kind::HINT | 1 << kind::QUEUE_GONE);
    /// Every optional message.
    pub const ALL: Self = Self(kind::OPTIONAL);

    /// Both sets.
    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The [`kind::OPTIONAL`] bits, for Enoki-C.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether a scheduler taking this set is sent messages of `kind`
    /// (every kind that is not optional is sent).
    pub const fn takes(self, kind: u32) -> bool {
        let bit = match 1u32.checked_shl(kind) {
            Some(bit) => bit,
            None => return true,
        };
        kind::OPTIONAL & bit == 0 || self.0 & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_kinds_are_always_taken_and_optional_ones_only_when_named() {
        let fifo = Messages::SELECT.and(Messages::BALANCE);
        for k in [
            kind::TASK_NEW,
            kind::TASK_WAKEUP,
            kind::PICK_NEXT_TASK,
            kind::PNT_ERR,
        ] {
            assert!(Messages::NONE.takes(k), "{}", kind::NAMES[k as usize]);
        }
        assert!(fifo.takes(kind::SELECT_TASK_RQ));
        assert!(fifo.takes(kind::MIGRATE_TASK_RQ));
        assert!(!fifo.takes(kind::TASK_TICK));
        assert!(!fifo.takes(kind::CPU_OFFLINE));
        assert!(!Messages::NONE.takes(kind::BALANCE));
        assert!(!fifo.takes(kind::TASK_CGROUP_MOVED));
        assert!(Messages::CGROUPS.takes(kind::CGROUP_NEW));
        assert!((1..kind::NR).all(|k| Messages::ALL.takes(k)));
    }
}
