// SPDX-License-Identifier: GPL-2.0
//! What tests and tools may look at inside WFQ: run-queue contents, a
//! task's vruntime, and a check of the bookkeeping. Compiled for tests and
//! the `introspect` feature only, never into the kernel module.

use core::ops::Range;

use enoki::{CpuId, FixedVec, Pid, Result};

use super::{State, Wfq};

/// What [`Wfq::check`] says when it could not take a lock.
const LOCK_FAILED: &str = "a lock could not be taken";

/// A task as a run queue holds it (see [`Wfq::for_each_held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The CPU of the run queue.
    pub queue: CpuId,
    /// The task.
    pub pid: Pid,
    /// `None` when running there; else the CPU of the token it waits with.
    pub token_cpu: Option<CpuId>,
}

impl Wfq {
    /// Live upgrades this scheduler's state went through.
    pub fn upgrades(&self) -> u32 {
        self.upgrades.get()
    }

    /// A task's vruntime (on the clock of its home queue), for tests and
    /// tools.
    pub fn vruntime(&self, pid: Pid) -> Result<Option<u64>> {
        if let Some(Some(task)) = self.registry.lock()?.get(pid) {
            return Ok(Some(task.vruntime));
        }
        self.rqs
            .find_map(|_, rq| rq.tasks.get(pid).map(|t| t.vruntime))
    }

    /// Calls `f` with the address range of every value WFQ shares outside
    /// its run-queue locks (per-CPU summaries, the idle and stealable
    /// sets); each is an `enoki::Shared`, whose lock events fall in its
    /// range. For tests that tell run-queue locks from these.
    pub fn for_each_shared(&self, mut f: impl FnMut(Range<usize>)) {
        fn range<T>(value: &T) -> Range<usize> {
            let start = value as *const T as usize;
            start..start.saturating_add(core::mem::size_of::<T>())
        }
        for s in self.summaries.iter() {
            f(range(&s.load));
            f(range(&s.claimed));
        }
        self.idle.shared().for_each(|w| f(range(w)));
        self.stealable.shared().for_each(|w| f(range(w)));
        self.handoff.shared().for_each(|s| f(range(s)));
    }

    /// Calls `f` for every task a run queue holds, running or waiting; for
    /// tests and tools (takes every lock in turn).
    pub fn for_each_held(&self, mut f: impl FnMut(Held)) -> Result {
        for queue in self.topology.cpus() {
            let rq = self.rqs.lock(queue)?;
            if let Some(pid) = rq.curr {
                f(Held {
                    queue,
                    pid,
                    token_cpu: None,
                });
            }
            for (pid, _, token) in rq.waiting.iter().chain(rq.throttled.iter()) {
                f(Held {
                    queue,
                    pid,
                    token_cpu: Some(token.cpu()),
                });
            }
        }
        Ok(())
    }

    /// Checks the scheduler's bookkeeping (queue loads, keys and states
    /// against the tasks' records, each task homed once); for tests and
    /// tools. A lock that fails fails the check (libEnoki keeps the fault).
    pub fn check(&self) -> Result<(), &'static str> {
        let mut homed = 0;
        for cpu in self.topology.cpus() {
            let rq = self.rqs.lock(cpu).map_err(|_| LOCK_FAILED)?;
            let mut load = 0;
            for (pid, vruntime, token) in rq.waiting.iter() {
                let t = rq
                    .tasks
                    .get(pid)
                    .ok_or("a task waits in a queue that is not its home")?;
                if t.state != State::Waiting || token.cpu() != cpu {
                    return Err("a waiting task is not marked waiting there");
                }
                if *vruntime != t.vruntime {
                    return Err("a queue entry is out of date");
                }
                load = t.weight.saturating_add(load);
            }
            for (pid, vruntime, token) in rq.throttled.iter() {
                let t = rq
                    .tasks
                    .get(pid)
                    .ok_or("a throttled task is held back where it is not homed")?;
                if t.state != State::Throttled || token.cpu() != cpu || *vruntime != t.vruntime {
                    return Err("a throttled task is not marked throttled there");
                }
            }
            if !rq.throttled.is_empty() && rq.unthrottle_at.is_none() {
                return Err("tasks are held back with no time to take them back");
            }
            if let Some(pid) = rq.curr {
                let t = rq
                    .tasks
                    .get(pid)
                    .ok_or("a task runs on a queue that is not its home")?;
                if t.state != State::Running {
                    return Err("the running task is not marked running there");
                }
                load = t.weight.saturating_add(load);
            }
            if load != rq.load || self.nr_running(cpu) != rq.nr_running() {
                return Err("a queue's load or summary is out of date");
            }
            let marked = rq
                .tasks
                .iter()
                .filter(|(_, t)| matches!(t.state, State::Waiting | State::Running))
                .count();
            if marked != rq.nr_running() {
                return Err("a task is marked queued or running where it is not");
            }
            let registry = self.registry.lock().map_err(|_| LOCK_FAILED)?;
            if rq
                .tasks
                .iter()
                .any(|(pid, _)| !matches!(registry.get(pid), Some(None)))
            {
                return Err("a queue holds a task that is dead or not placed");
            }
            homed = rq.tasks.len().saturating_add(homed);
        }
        let registry = self.registry.lock().map_err(|_| LOCK_FAILED)?;
        let placed = registry.iter().filter(|(_, t)| t.is_none()).count();
        if homed != placed {
            return Err("a task is homed on two queues, or on none");
        }
        drop(registry);
        self.check_cgroups()
    }

    /// Each cgroup's runnable weight against the tasks counted in it.
    fn check_cgroups(&self) -> Result<(), &'static str> {
        let slots = self.params.max_cgroups.saturating_add(1);
        let mut counted =
            FixedVec::new_with(slots, |_| (0u64, 0u64)).map_err(|_| "no memory for the check")?;
        for cpu in self.topology.cpus() {
            let rq = self.rqs.lock(cpu).map_err(|_| LOCK_FAILED)?;
            for c in rq.tasks.iter().filter_map(|(_, t)| t.counted) {
                let slot = counted
                    .iter_mut()
                    .find(|(id, _)| *id == c.cgroup || *id == 0)
                    .ok_or("tasks are counted in more cgroups than there are")?;
                *slot = (c.cgroup, slot.1.saturating_add(c.weight));
            }
        }
        let sum = |id| {
            counted
                .iter()
                .find(|(c, _)| *c == id)
                .map_or(0, |(_, w)| *w)
        };
        if !self.cgroups.lock().map_err(|_| LOCK_FAILED)?.adds_up(sum) {
            return Err("a cgroup's runnable weight is not its tasks'");
        }
        Ok(())
    }
}
