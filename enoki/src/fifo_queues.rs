// SPDX-License-Identifier: GPL-2.0
//! Per-CPU first-in first-out queues of waiting tasks, with the sets of
//! idle and offline CPUs that go with them: the core that FIFO, Shinjuku,
//! Locality and Arachne share, so that each writes only its policy (where
//! a waking task goes, whom to kick, what to steal).
//!
//! - Each waiting task is a [`Waiting`]: its token and what the scheduler
//!   keeps with it (its allowed CPUs, say), so that stealing needs no
//!   second lock.
//! - A picked task leaves from the front of its CPU's queue, a preempted or
//!   woken one joins at the back, and a stolen one goes first in its new
//!   queue, so that it runs next where the thief asked for it.
//! - A CPU is idle when its last pick found nothing and kept no task
//!   ([`crate::cpu_goes_idle`]); an offline CPU is never idle.
//! - [`FifoQueues::place_waking`] is FIFO's placement of a waking task,
//!   sync wakeups handed over to the waker's CPU included.
//!
//! Everything is behind libEnoki locks and shared values, so record and
//! replay see every access; lock sites are the caller's. A search over the
//! CPUs reads each set once, not a value per CPU. Nothing here allocates
//! after [`FifoQueues::try_new`] or panics.

use core::ops::{Deref, DerefMut};

use crate::collections::{AllocError, Ring};
use crate::runqueue::{QueueGuard, RunQueues};
use crate::scheduler::{NotTaken, Result, Wake};
use crate::sync::{CpuFlags, SharedCpuSet};
use crate::topology::Topology;
use crate::types::{cpu_goes_idle, CpuId, CpuSet, Pid, PrevTask, Schedulable};

/// What a scheduler keeps with a waiting task says where the task may
/// run: its allowed CPUs as of its last enqueue (an affinity change
/// dequeues and enqueues a waiting task, so they are current).
pub trait AllowedCpus {
    /// Whether the task may run on `cpu`.
    fn allows(&self, cpu: CpuId) -> bool;
}

impl AllowedCpus for CpuSet {
    fn allows(&self, cpu: CpuId) -> bool {
        self.contains(cpu)
    }
}

/// A waiting task: its token and what its scheduler keeps with it.
pub struct Waiting<T> {
    /// The task's token for the CPU whose queue holds it.
    pub token: Schedulable,
    /// What the scheduler keeps with the task (its allowed CPUs, say).
    pub info: T,
}

impl<T> Waiting<T> {
    /// The token, picked to run for `slice_ns`.
    pub fn into_token(self, slice_ns: u64) -> Schedulable {
        let mut token = self.token;
        token.set_slice_ns(slice_ns);
        token
    }
}

/// A locked queue. Unlocking it publishes whether it holds a task, for
/// thieves that skip empty queues without locking them
/// ([`FifoQueues::holding_tasks`]).
pub struct FifoGuard<'a, T> {
    queue: QueueGuard<'a, Ring<Waiting<T>>>,
    cpu: CpuId,
    /// Whether it held a task when locked: what `holding` says of it.
    held: bool,
    holding: &'a SharedCpuSet,
}

impl<T> Deref for FifoGuard<'_, T> {
    type Target = Ring<Waiting<T>>;

    fn deref(&self) -> &Self::Target {
        &self.queue
    }
}

impl<T> DerefMut for FifoGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.queue
    }
}

impl<T> Drop for FifoGuard<'_, T> {
    /// Still locked here: the flag changes with the queue.
    fn drop(&mut self) {
        let holds = !self.queue.is_empty();
        if holds != self.held {
            self.holding.set(self.cpu, holds);
        }
    }
}

/// One FIFO queue per CPU, and which CPUs are idle or offline.
pub struct FifoQueues<T> {
    queues: RunQueues<Ring<Waiting<T>>>,
    /// The CPUs there are queues for.
    cpus: CpuSet,
    /// CPUs whose last pick found nothing. libEnoki sets, not atomics:
    /// every read and write is then a lock event, so lock-ordered replay of
    /// a kernel trace sees the values the kernel run saw; and a search for
    /// an idle CPU reads each set once, not a flag per CPU.
    idle: SharedCpuSet,
    /// CPUs taken offline: never idle.
    offline: SharedCpuSet,
    /// CPUs a sync wakeup was just placed on: their running task is about
    /// to sleep, so the task queued there next must not wake an idle CPU
    /// to steal it. Cleared by that enqueue ([`FifoQueues::take_handoff`]).
    handoff: CpuFlags,
    /// CPUs whose queue held a task when last unlocked (every change to a
    /// queue goes through a [`FifoGuard`], which keeps this up to date):
    /// one set, so that a thief reads it once for all queues.
    holding: SharedCpuSet,
}

impl<T: Copy> FifoQueues<T> {
    /// Queues for `nr_cpus` CPUs, each with room for `max_tasks` (allocates:
    /// init only). Every CPU starts online and busy.
    pub fn try_new(nr_cpus: usize, max_tasks: usize) -> Result<Self, AllocError> {
        Ok(FifoQueues {
            queues: RunQueues::try_new_with(nr_cpus, |_| Ring::with_capacity(max_tasks))?,
            cpus: CpuSet::first_n(nr_cpus),
            idle: SharedCpuSet::new(nr_cpus, CpuSet::empty()),
            offline: SharedCpuSet::new(nr_cpus, CpuSet::empty()),
            handoff: CpuFlags::new(nr_cpus)?,
            holding: SharedCpuSet::new(nr_cpus, CpuSet::empty()),
        })
    }

    /// Locks `cpu`'s queue, for what a policy reads or changes there.
    #[track_caller]
    pub fn lock(&self, cpu: CpuId) -> Result<FifoGuard<'_, T>> {
        let queue = self.queues.lock(cpu)?;
        Ok(FifoGuard {
            held: !queue.is_empty(),
            queue,
            cpu,
            holding: &self.holding,
        })
    }

    /// The CPUs whose queue held a task when it was last unlocked: a
    /// thief or a search need not lock a queue that did not (most queues
    /// of a machine that is not overloaded), and one that did may be
    /// empty by the time it is locked.
    pub fn holding_tasks(&self) -> CpuSet {
        self.holding.get()
    }

    /// Whether `cpu`'s queue held a task when it was last unlocked (as
    /// [`FifoQueues::holding_tasks`], for one queue).
    pub fn holds_tasks(&self, cpu: CpuId) -> bool {
        self.holding.contains(cpu)
    }

    /// Whether `cpu` exists and is online.
    pub fn is_online(&self, cpu: CpuId) -> bool {
        self.cpus.contains(cpu) && !self.offline.contains(cpu)
    }

    /// Whether `cpu` is online and its last pick left it with nothing.
    pub fn is_idle(&self, cpu: CpuId) -> bool {
        self.is_online(cpu) && self.idle.contains(cpu)
    }

    /// The online CPUs.
    pub fn online_cpus(&self) -> CpuSet {
        self.cpus - self.offline.get()
    }

    /// The online CPUs whose last pick left them with nothing.
    pub fn idle_cpus(&self) -> CpuSet {
        self.online_and_idle().1
    }

    /// The online CPUs and, of them, the idle ones (each set read once),
    /// for a search that needs both.
    pub fn online_and_idle(&self) -> (CpuSet, CpuSet) {
        let online = self.online_cpus();
        (online, self.idle.get() & online)
    }

    /// Marks `cpu` online or offline (the hotplug messages).
    pub fn set_online(&self, cpu: CpuId, online: bool) {
        self.offline.set(cpu, !online);
    }

    /// Marks `cpu` idle or busy, for a policy whose pick does not go
    /// through [`FifoQueues::pick`].
    pub fn set_idle(&self, cpu: CpuId, idle: bool) {
        self.idle.set(cpu, idle);
    }

    /// An idle CPU to kick for a task just queued on `cpu`: none if `cpu`
    /// is idle itself (its next pick takes the task), else the idle CPU of
    /// `allowed` nearest to it. Reads each set once.
    pub fn idle_thief(&self, topology: &Topology, cpu: CpuId, allowed: &CpuSet) -> Option<CpuId> {
        let idle = self.idle_cpus();
        if idle.contains(cpu) {
            return None;
        }
        topology.nearest_in(cpu, &(idle & *allowed))
    }

    /// FIFO's placement of a waking task that may run on `allowed`:
    /// - woken by a sync waker (one about to sleep), on the waker's CPU when
    ///   nothing waits there: that CPU runs it next, with no idle CPU woken
    ///   and no migration (and its next enqueue kicks nobody);
    /// - else on `prev_cpu` if idle, else on the nearest idle CPU, else on
    ///   `prev_cpu` if online, else on the nearest online CPU.
    #[track_caller]
    pub fn place_waking(
        &self,
        topology: &Topology,
        prev_cpu: CpuId,
        allowed: &CpuSet,
        wake: Wake,
    ) -> Result<CpuId> {
        let waker = wake.waker_cpu;
        if wake.sync
            && allowed.contains(waker)
            && self.is_online(waker)
            && self.lock(waker)?.is_empty()
        {
            self.handoff.set(waker, true);
            return Ok(waker);
        }
        let (online, idle) = self.online_and_idle();
        let (online, idle) = (online & *allowed, idle & *allowed);
        let best = |set: CpuSet| topology.cpu_then_nearest_of(prev_cpu, &set).next();
        Ok(best(idle).or_else(|| best(online)).unwrap_or(prev_cpu))
    }

    /// Whether a sync wakeup was placed on `cpu` since its last enqueue
    /// asked: its running task is about to sleep, so a task queued there
    /// now needs no idle CPU kicked to steal it.
    pub fn take_handoff(&self, cpu: CpuId) -> bool {
        self.handoff.replace(cpu, false)
    }

    /// Queues `token` at the back of its CPU's queue, with `info`. Returns
    /// how many tasks wait there now, or the token when the queue is full.
    #[track_caller]
    pub fn push_back(&self, token: Schedulable, info: T) -> Result<usize, NotTaken> {
        let mut queue = self.lock(token.cpu())?;
        let queued = queue.push_back(Waiting { token, info });
        let waiting = queue.len();
        drop(queue);
        queued.map_err(|w| w.token)?;
        Ok(waiting)
    }

    /// The first task of `cpu`'s queue, to run for `slice_ns`, and how many
    /// still wait behind it. Flags the CPU idle when nothing was picked and
    /// `prev` does not keep running, busy otherwise.
    #[track_caller]
    pub fn pick(
        &self,
        cpu: CpuId,
        prev: Option<PrevTask>,
        slice_ns: u64,
    ) -> Result<(Option<Schedulable>, usize)> {
        let (next, waiting) = {
            let mut queue = self.lock(cpu)?;
            let next = queue.pop_front();
            (next, queue.len())
        };
        self.idle.set(cpu, cpu_goes_idle(next.is_some(), prev));
        Ok((next.map(|w| w.into_token(slice_ns)), waiting))
    }

    /// Removes `pid`'s entry from whichever queue holds it.
    #[track_caller]
    pub fn take(&self, pid: Pid) -> Result<Option<Waiting<T>>> {
        self.take_if(pid, |_| true)
    }

    /// Removes `pid`'s entry from whichever queue holds it if `may_take`
    /// says yes to it; otherwise leaves it where it is.
    #[track_caller]
    fn take_if(
        &self,
        pid: Pid,
        may_take: impl Fn(&Waiting<T>) -> bool,
    ) -> Result<Option<Waiting<T>>> {
        for cpu in self.holding_tasks().iter() {
            let mut found = false;
            let taken = self.lock(cpu)?.remove_first(|w| {
                let it = w.token.pid() == pid;
                found |= it;
                it && may_take(w)
            });
            if found {
                return Ok(taken);
            }
        }
        Ok(None)
    }

    /// Drops `pid`'s token if a queue holds one (the task blocked or died).
    #[track_caller]
    pub fn remove(&self, pid: Pid) -> Result {
        self.take(pid).map(drop)
    }

    /// A thief asked for `pid`, which now has the token `sched` for the
    /// thief's CPU: the task goes first in that queue, so that it runs next
    /// there, with what was kept with it. Returns the token to drop: the
    /// old one, or the new one when no queue holds the task or the task no
    /// longer allows the thief's CPU (Enoki-C checked the thief's answer
    /// without the task's CPU's lock: an affinity change may have come
    /// between). When the thief's queue is full, the new one is dropped
    /// too, and the old one is handed to `requeue`.
    #[track_caller]
    pub fn migrate(
        &self,
        pid: Pid,
        sched: Schedulable,
        requeue: impl FnOnce(Schedulable) -> Result<(), NotTaken>,
    ) -> Result<Option<Schedulable>>
    where
        T: AllowedCpus,
    {
        let thief = sched.cpu();
        let Some(old) = self.take_if(pid, |w| w.info.allows(thief))? else {
            return Ok(Some(sched));
        };
        let queued = self.lock(sched.cpu())?.push_front(Waiting {
            token: sched,
            info: old.info,
        });
        if let Err(refused) = queued {
            requeue(old.token).or_else(NotTaken::drop_token)?;
            return Ok(Some(refused.token));
        }
        Ok(Some(old.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const SLICE: u64 = 3_000_000;

    /// In these tests, what is kept with a task is the mask of its allowed
    /// CPUs.
    impl AllowedCpus for u32 {
        fn allows(&self, cpu: CpuId) -> bool {
            u32::try_from(cpu)
                .ok()
                .and_then(|cpu| self.checked_shr(cpu))
                .is_some_and(|rest| rest & 1 == 1)
        }
    }

    /// Four CPUs (one socket), each queue with room for `room` tasks, all
    /// CPUs busy.
    fn queues(room: usize) -> (FifoQueues<u32>, Topology) {
        let topology = Topology::symmetric(1, 4, 1, 21).unwrap();
        (FifoQueues::try_new(4, room).unwrap(), topology)
    }

    fn token(pid: Pid, cpu: CpuId) -> Schedulable {
        Schedulable::new(pid, cpu)
    }

    fn pids(q: &FifoQueues<u32>, cpu: CpuId) -> Vec<(Pid, u32)> {
        let queue = q.lock(cpu).unwrap();
        queue.iter().map(|w| (w.token.pid(), w.info)).collect()
    }

    #[test]
    fn picks_in_arrival_order_and_flags_a_cpu_idle_only_when_nothing_runs() {
        let (q, _) = queues(4);
        assert_eq!(q.push_back(token(1, 2), 10), Ok(1));
        assert_eq!(q.push_back(token(2, 2), 20), Ok(2));
        let (next, waiting) = q.pick(2, None, SLICE).unwrap();
        let next = next.unwrap();
        assert_eq!((next.pid(), next.slice_ns(), waiting), (1, SLICE, 1));
        assert!(!q.is_idle(2));
        assert_eq!(q.pick(2, None, SLICE).unwrap().0.map(|t| t.pid()), Some(2));
        let runnable = PrevTask {
            pid: 2,
            runtime: 0,
            runnable: true,
        };
        assert_eq!(q.pick(2, Some(runnable), SLICE).unwrap(), (None, 0));
        assert!(!q.is_idle(2), "a CPU that keeps its task is busy");
        assert_eq!(q.pick(2, None, SLICE).unwrap(), (None, 0));
        assert!(q.is_idle(2));
        q.set_online(2, false);
        assert!(
            !q.is_idle(2) && !q.is_online(2),
            "an offline CPU is never idle"
        );
        assert!(!q.is_online(4), "a CPU the machine does not have");
    }

    #[test]
    fn a_queue_is_flagged_holding_tasks_however_it_changes() {
        let (q, _) = queues(4);
        assert!(!(0..4).any(|c| q.holds_tasks(c)), "all empty at start");
        let pushed = q.lock(1).unwrap().push_back(Waiting {
            token: token(1, 1),
            info: 0,
        });
        assert!(pushed.is_ok());
        assert!(q.holds_tasks(1), "changed through a guard");
        assert!(q.lock(1).unwrap().pop_front().is_some());
        assert!(!q.holds_tasks(1));
        q.push_back(token(2, 2), 0).unwrap();
        q.push_back(token(3, 2), 0b0101).unwrap();
        assert!(q.holds_tasks(2));
        assert_eq!(q.pick(2, None, SLICE).unwrap().1, 1);
        assert!(q.holds_tasks(2), "one still waits");
        let no_requeue = |t: Schedulable| -> Result<(), NotTaken> { panic!("requeued {t:?}") };
        assert!(q.migrate(3, token(3, 0), no_requeue).unwrap().is_some());
        assert!(!q.holds_tasks(2) && q.holds_tasks(0), "stolen");
        let mut holding = CpuSet::empty();
        holding.insert(0);
        assert_eq!(q.holding_tasks(), holding);
        assert_eq!(q.take(3).unwrap().map(|w| w.token), Some(token(3, 0)));
        assert!(!(0..4).any(|c| q.holds_tasks(c)), "all empty again");
    }

    #[test]
    fn a_full_queue_hands_the_token_back() {
        let (q, _) = queues(1);
        assert_eq!(q.push_back(token(1, 0), 0), Ok(1));
        assert_eq!(
            q.push_back(token(2, 0), 0),
            Err(NotTaken::Refused(token(2, 0)))
        );
    }

    #[test]
    fn a_stolen_task_goes_first_with_what_was_kept_and_a_full_thief_requeues_it() {
        let (q, _) = queues(2);
        q.push_back(token(1, 0), 10).unwrap();
        q.push_back(token(2, 1), 20).unwrap();
        let no_requeue = |t: Schedulable| -> Result<(), NotTaken> { panic!("requeued {t:?}") };
        let old = q.migrate(1, token(1, 1), no_requeue).unwrap();
        assert_eq!(old, Some(token(1, 0)));
        assert_eq!(pids(&q, 1), [(1, 10), (2, 20)]);
        assert_eq!(
            q.migrate(9, token(9, 1), no_requeue).unwrap(),
            Some(token(9, 1)),
            "no queue holds it: the new token is dropped"
        );

        q.push_back(token(3, 0), 30).unwrap();
        let mut requeued = None;
        let old = q.migrate(3, token(3, 1), |t| {
            requeued = Some(t);
            Ok(())
        });
        assert_eq!(
            old.unwrap(),
            Some(token(3, 1)),
            "the thief's queue is full: the new token is dropped"
        );
        assert_eq!(requeued, Some(token(3, 0)), "the old token goes back");
        assert_eq!(pids(&q, 1), [(1, 10), (2, 20)]);
        q.remove(1).unwrap();
        assert_eq!(pids(&q, 1), [(2, 20)]);
    }

    #[test]
    fn a_thief_the_task_no_longer_allows_leaves_it_where_it_waits() {
        let (q, _) = queues(4);
        q.push_back(token(1, 0), 0b0001).unwrap();
        q.push_back(token(2, 0), 0b0011).unwrap();
        let no_requeue = |t: Schedulable| -> Result<(), NotTaken> { panic!("requeued {t:?}") };
        let dropped = q.migrate(1, token(1, 1), no_requeue).unwrap();
        assert_eq!(dropped, Some(token(1, 1)), "the new token is dropped");
        assert_eq!(pids(&q, 0), [(1, 0b0001), (2, 0b0011)], "in its place");
        assert_eq!(pids(&q, 1), []);
        let dropped = q.migrate(2, token(2, 1), no_requeue).unwrap();
        assert_eq!(dropped, Some(token(2, 0)), "an allowed thief takes it");
        assert_eq!(pids(&q, 1), [(2, 0b0011)]);
    }

    #[test]
    fn a_sync_wakeup_goes_to_the_wakers_empty_cpu_once_handed_over() {
        let (q, topology) = queues(4);
        let all = CpuSet::first_n(4);
        let sync = Wake {
            waker_cpu: 3,
            sync: true,
        };
        assert_eq!(q.place_waking(&topology, 0, &all, sync), Ok(3));
        assert!(q.take_handoff(3), "the waker's CPU is handed over");
        assert!(!q.take_handoff(3), "once");
        q.push_back(token(1, 3), 0).unwrap();
        // Others wait on the waker's CPU, and every CPU is busy: prev.
        assert_eq!(q.place_waking(&topology, 0, &all, sync), Ok(0));
        assert!(!q.take_handoff(3));
        q.set_idle(2, true);
        assert_eq!(
            q.place_waking(&topology, 0, &all, sync),
            Ok(2),
            "an idle CPU"
        );
        q.set_online(0, false);
        q.set_idle(2, false);
        assert_eq!(
            q.place_waking(&topology, 0, &all, sync),
            Ok(1),
            "prev offline: the nearest online CPU"
        );
        assert_eq!(q.idle_thief(&topology, 1, &all), None);
        q.set_idle(3, true);
        assert_eq!(q.idle_thief(&topology, 1, &all), Some(3));
        q.set_idle(1, true);
        assert_eq!(q.idle_thief(&topology, 1, &all), None, "1 is idle itself");
    }
}
