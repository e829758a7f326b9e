// SPDX-License-Identifier: GPL-2.0
//! One CPU's run queue: the records of the tasks homed on it, its waiting
//! tokens by vruntime, the tokens of tasks its cgroups' `cpu.max` holds
//! back, and its load and `min_vruntime`.

use enoki::{CgroupId, CpuSet, Pid, Schedulable, TaskHeap, TaskMap};

use super::cgroups::Counted;

use super::fair::{rebase, to_virtual};

/// Where a task is, relative to the run queue whose map holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// In no run queue: asleep, or between two messages.
    Off,
    /// Waiting in the queue with a token for its CPU.
    Waiting,
    /// Picked there and not stopped yet.
    Running,
    /// Held back with its token until its cgroup's budget is refilled;
    /// not runnable as far as the queue's load goes.
    Throttled,
}

/// What the scheduler knows about a task. It lives in the map of one run
/// queue (its *home*: where it runs, waits, or last did), under that
/// queue's lock, and moves with the task.
#[derive(Clone, Copy, Debug)]
pub(super) struct Task {
    /// The weight it runs at: its nice weight, scaled by its cgroups'
    /// shares (see `cgroups`); changed only while it is off the queues.
    pub(super) weight: u64,
    /// Its nice value's weight.
    pub(super) nice_weight: u64,
    pub(super) cgroup: CgroupId,
    /// What it adds to its cgroup's runnable weight while runnable.
    pub(super) counted: Option<Counted>,
    pub(super) allowed: CpuSet,
    /// Weighted virtual runtime, on the clock of its home queue.
    pub(super) vruntime: u64,
    /// CPU time charged so far (Enoki-C's `sum_exec_runtime`), ns.
    pub(super) charged: u64,
    /// CPU time charged and not yet taken off its cgroups' budgets.
    pub(super) unbilled: u64,
    /// Its cgroup or an ancestor has a `cpu.max` (as of its last enqueue).
    pub(super) limited: bool,
    pub(super) state: State,
    /// Never queued yet: starts after the tasks of the current period.
    pub(super) new: bool,
}

impl Task {
    /// Charges the CPU time used since the last charge.
    pub(super) fn charge(&mut self, runtime: u64) {
        let delta = runtime.saturating_sub(self.charged);
        self.charged = self.charged.max(runtime);
        self.unbilled = self.unbilled.saturating_add(delta);
        self.vruntime = self.vruntime.saturating_add(to_virtual(delta, self.weight));
    }
}

/// What other CPUs read of a run queue without its lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Load {
    /// Tasks running or waiting.
    pub(super) nr_running: usize,
    /// Their total weight.
    pub(super) load: u64,
    /// The CPU is offline: never chosen, never idle.
    pub(super) offline: bool,
}

impl Load {
    /// Whether the CPU is online with nothing to run.
    pub(super) fn idle(&self) -> bool {
        self.nr_running == 0 && !self.offline
    }

    /// Whether a task waits behind another: one a thief may take.
    pub(super) fn stealable(&self) -> bool {
        self.nr_running >= 2
    }
}

/// One CPU's run queue, and the tasks homed on it.
pub(super) struct RunQueue {
    /// Every task homed here, whatever its state.
    pub(super) tasks: TaskMap<Task>,
    /// Waiting tasks' tokens, by (vruntime, pid).
    pub(super) waiting: TaskHeap<u64, Schedulable>,
    /// Throttled tasks' tokens, by (vruntime, pid).
    pub(super) throttled: TaskHeap<u64, Schedulable>,
    /// When the earliest throttled task here may run again (the CPU's
    /// timer is set for it).
    pub(super) unthrottle_at: Option<u64>,
    /// The task running here.
    pub(super) curr: Option<Pid>,
    /// Its CPU time charged, and the time, when it was picked: wakeups
    /// preempt it only once it has run `min_granularity` since.
    pub(super) curr_picked: (u64, u64),
    /// Total weight of the running and waiting tasks.
    pub(super) load: u64,
    /// Follows the smallest vruntime here and never goes back; wakeups and
    /// migrations are placed relative to it.
    pub(super) min_vruntime: u64,
    /// A task woke here since the last tick: the tick checks whether it
    /// preempts.
    pub(super) woken: bool,
    /// The summary other CPUs see (its load, and its bit in the idle mask).
    pub(super) published: Load,
    /// Its CPU is offline.
    pub(super) offline: bool,
}

impl RunQueue {
    pub(super) fn nr_running(&self) -> usize {
        self.waiting
            .len()
            .saturating_add(usize::from(self.curr.is_some()))
    }

    /// What other CPUs are to see of this queue.
    pub(super) fn summary(&self) -> Load {
        Load {
            nr_running: self.nr_running(),
            load: self.load,
            offline: self.offline,
        }
    }

    pub(super) fn is_running(&self, pid: Pid) -> bool {
        self.curr == Some(pid)
    }

    /// Moves `min_vruntime` up to the smallest vruntime here; `curr` is the
    /// running task's.
    pub(super) fn update_min_vruntime(&mut self, curr: Option<u64>) {
        let leftmost = self.waiting.peek().map(|(_, v, _)| *v);
        let smallest = match (curr, leftmost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(v) = smallest {
            self.min_vruntime = self.min_vruntime.max(v);
        }
    }

    /// Takes `pid` out of this queue: stops it if running (charging
    /// `runtime`), else drops its waiting token. Its record stays.
    pub(super) fn detach(&mut self, pid: Pid, runtime: Option<u64>) {
        let Some(task) = self.tasks.get_mut(pid) else {
            return;
        };
        let (state, weight) = (task.state, task.weight);
        task.state = State::Off;
        match state {
            State::Running => {
                if let Some(runtime) = runtime {
                    task.charge(runtime);
                }
                let vruntime = task.vruntime;
                self.update_min_vruntime(Some(vruntime));
                if self.curr == Some(pid) {
                    self.curr = None;
                    self.load = self.load.saturating_sub(weight);
                }
            }
            State::Waiting => {
                if self.waiting.remove(pid).is_some() {
                    self.load = self.load.saturating_sub(weight);
                }
            }
            State::Throttled => {
                self.throttled.remove(pid);
            }
            State::Off => {}
        }
    }

    /// Holds `token` of `pid` (detached, homed here) back at `vruntime`
    /// until `until`; returns the earliest time a throttled task here may
    /// run again if that moved earlier (the CPU's timer must follow).
    pub(super) fn throttle(
        &mut self,
        pid: Pid,
        vruntime: u64,
        token: Schedulable,
        until: u64,
    ) -> Result<Option<u64>, Schedulable> {
        self.file_token(pid, vruntime, token, State::Throttled)?;
        if self.unthrottle_at.is_some_and(|at| at <= until) {
            return Ok(None);
        }
        self.unthrottle_at = Some(until);
        Ok(Some(until))
    }

    /// At `now`, if throttled tasks are due, queues every one of them
    /// again (those still over budget are held back when picked).
    pub(super) fn unthrottle_due(&mut self, now: u64) {
        if self.unthrottle_at.is_some_and(|at| now >= at) {
            self.unthrottle_all();
        }
    }

    /// Queues every throttled task here again (those still over budget
    /// are held back when picked); whether there was one.
    pub(super) fn unthrottle_all(&mut self) -> bool {
        self.unthrottle_at = None;
        let mut any = false;
        while let Some((pid, vruntime, token)) = self.throttled.pop() {
            let _ = self.requeue(pid, vruntime, token);
            any = true;
        }
        any
    }

    /// Queues `pid`'s throttled token again (held back again when picked
    /// if still over budget); false if it was not throttled here.
    pub(super) fn unthrottle(&mut self, pid: Pid) -> bool {
        let Some((vruntime, token)) = self.throttled.remove(pid) else {
            return false;
        };
        match self.requeue(pid, vruntime, token) {
            Ok(()) => true,
            Err(token) => {
                // No room to wait: it stays held back, in the slot it just
                // left (free, so filing it there cannot fail).
                let _ = self.file_token(pid, vruntime, token, State::Throttled);
                false
            }
        }
    }

    /// Queues a token just taken off the throttled heap.
    fn requeue(&mut self, pid: Pid, vruntime: u64, token: Schedulable) -> Result<(), Schedulable> {
        if let Some(task) = self.tasks.get_mut(pid) {
            task.state = State::Off;
        }
        self.queue_token(pid, vruntime, token)
    }

    /// Queues `token` for `pid` (detached, homed here) at `vruntime`.
    pub(super) fn queue_token(
        &mut self,
        pid: Pid,
        vruntime: u64,
        token: Schedulable,
    ) -> Result<(), Schedulable> {
        let weight = self.file_token(pid, vruntime, token, State::Waiting)?;
        self.load = self.load.saturating_add(weight);
        Ok(())
    }

    /// Files `token` for `pid` (detached, homed here) at `vruntime` in the
    /// heap of `state` (`Waiting` or `Throttled`), marking the task so;
    /// returns its weight.
    fn file_token(
        &mut self,
        pid: Pid,
        vruntime: u64,
        token: Schedulable,
        state: State,
    ) -> Result<u64, Schedulable> {
        let Some(task) = self.tasks.get_mut(pid) else {
            return Err(token);
        };
        let heap = match state {
            State::Throttled => &mut self.throttled,
            State::Waiting | State::Running | State::Off => &mut self.waiting,
        };
        heap.push(pid, vruntime, token)
            .map_err(|(_, token)| token)?;
        task.vruntime = vruntime;
        task.state = state;
        task.new = false;
        Ok(task.weight)
    }

    /// Moves `pid`'s record from `self` to `to` (detached first), keeping
    /// its lag behind `min_vruntime`; false if it is not here or `to` is
    /// full.
    pub(super) fn move_task(&mut self, to: &mut RunQueue, pid: Pid) -> bool {
        self.detach(pid, None);
        let Some(task) = self.tasks.remove(pid) else {
            return false;
        };
        let moved = Task {
            vruntime: rebase(task.vruntime, self.min_vruntime, to.min_vruntime),
            ..task
        };
        if to.tasks.insert(pid, moved).is_ok() {
            return true;
        }
        let _ = self.tasks.insert(pid, task); // no room there: it stays
        false
    }
}
