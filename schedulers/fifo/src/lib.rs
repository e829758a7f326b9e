// SPDX-License-Identifier: GPL-2.0
//! FIFO: per-CPU first-in first-out run queues with a time slice.
//!
//! - A task woken by a sync waker (one about to sleep, like a pipe writer
//!   waiting for the reply) goes to the waker's CPU when nothing waits
//!   there: that CPU runs it next, as a switch from waker to woken, with no
//!   idle CPU woken and no migration.
//! - Any other waking task goes to its previous CPU if idle, else to an
//!   idle allowed CPU (same LLC first), else back to its previous CPU.
//! - A picked task runs for one slice (the module's `slice_us`), then goes
//!   to the back of its CPU's queue.
//! - An idle CPU steals the oldest allowed task from the longest queue,
//!   nearest first; a CPU that queues work while another allowed CPU idles
//!   kicks that CPU so it comes to steal.
#![forbid(unsafe_code)]

use enoki::{
    cpu_goes_idle, CpuFlags, CpuId, CpuSet, EnokiScheduler, InitContext, InitError, Messages,
    NoHint, NotTaken, PickError, Pid, PrevTask, Result, Ring, RunQueues, Schedulable, Services,
    SpinLock, TaskError, TaskInfo, TaskMap, Topology, Wake,
};

/// A waiting task: its token and where it may run (kept with the token so
/// stealing needs no second lock).
struct Waiting {
    token: Schedulable,
    allowed: CpuSet,
}

/// The FIFO scheduler.
pub struct Fifo {
    topology: Topology,
    services: Services,
    slice_ns: u64,
    queues: RunQueues<Ring<Waiting>>,
    /// Allowed CPUs of every task the scheduler knows.
    tasks: SpinLock<TaskMap<CpuSet>>,
    /// CPUs whose last pick found nothing. libEnoki flags, not atomics:
    /// every read and write is then a lock event, so lock-ordered replay of
    /// a kernel trace sees the values the kernel run saw.
    idle: CpuFlags,
    /// CPUs taken offline: never chosen, never idle.
    offline: CpuFlags,
    /// CPUs a sync wakeup was just placed on: their running task is about
    /// to sleep, so the task queued there next must not wake an idle CPU
    /// to steal it. Cleared by that enqueue.
    handoff: CpuFlags,
}

impl Fifo {
    fn is_idle(&self, cpu: CpuId) -> bool {
        self.is_online(cpu) && self.idle.get(cpu)
    }

    fn is_online(&self, cpu: CpuId) -> bool {
        cpu < self.topology.nr_cpus() && !self.offline.get(cpu)
    }

    /// Queues `token` at the back of its CPU's queue; if that CPU is busy
    /// (and not about to be handed over by a sync waker), kicks an idle CPU
    /// that may run the task.
    fn enqueue(&self, token: Schedulable) -> Result<(), NotTaken> {
        let pid = token.pid();
        let cpu = token.cpu();
        let Some(allowed) = self.tasks.lock()?.get(pid).copied() else {
            return Err(token.into());
        };
        let mut queue = self.queues.lock(cpu)?;
        let queued = queue.push_back(Waiting { token, allowed });
        drop(queue);
        queued.map_err(|w| w.token)?;
        let handed_over = self.handoff.replace(cpu, false);
        if !handed_over && !self.is_idle(cpu) {
            if let Some(idle) = self
                .topology
                .nearest(cpu)
                .find(|c| allowed.contains(*c) && self.is_idle(*c))
            {
                self.services.kick_cpu(idle);
            }
        }
        Ok(())
    }

    /// Removes `pid`'s token from whichever queue holds it.
    fn dequeue(&self, pid: Pid) -> Result<Option<Schedulable>> {
        let found = self
            .queues
            .find_map(|_, q| q.remove_first(|w| w.token.pid() == pid))?;
        Ok(found.map(|w| w.token))
    }
}

impl EnokiScheduler for Fifo {
    const NAME: &'static str = "fifo";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();
    const MESSAGES: Messages = Messages::SELECT
        .and(Messages::BALANCE)
        .and(Messages::AFFINITY)
        .and(Messages::HOTPLUG);

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&[])?;
        let nr = ctx.topology.nr_cpus();
        Ok(Fifo {
            topology: ctx.topology.try_clone()?,
            services: ctx.services.clone(),
            slice_ns: ctx.slice_ns,
            queues: RunQueues::try_new_with(nr, |_| Ring::with_capacity(ctx.max_tasks))?,
            tasks: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
            idle: CpuFlags::new(nr)?,
            offline: CpuFlags::new(nr)?,
            handoff: CpuFlags::new(nr)?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let next = self.queues.lock(cpu)?.pop_front();
        self.idle.set(cpu, cpu_goes_idle(next.is_some(), prev));
        Ok(next.map(|w| {
            let mut token = w.token;
            token.set_slice_ns(self.slice_ns);
            token
        }))
    }

    fn pnt_err(
        &self,
        _cpu: CpuId,
        _pid: Pid,
        _err: PickError,
        sched: Option<Schedulable>,
    ) -> Result {
        // Still the task's token: back to the queue it belongs to. If the
        // task left meanwhile, task_blocked/task_dead will drop it.
        enoki::requeue(sched, |token| self.enqueue(token))
    }

    fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError> {
        self.tasks
            .lock()?
            .insert(task.pid, task.allowed)
            .map(|_| ())
            .map_err(|_| TaskError::Full)
    }

    fn task_wakeup(&self, _pid: Pid, _runtime: u64, sched: Schedulable) -> Result<(), NotTaken> {
        self.enqueue(sched)
    }

    fn task_preempt(
        &self,
        _pid: Pid,
        _runtime: u64,
        _yielded: bool,
        sched: Schedulable,
    ) -> Result<(), NotTaken> {
        self.enqueue(sched)
    }

    fn task_blocked(&self, pid: Pid, _runtime: u64, _cpu: CpuId, sleeping: bool) -> Result {
        // Only a running task sleeps, and a running task has no token queued.
        if !sleeping {
            self.dequeue(pid)?;
        }
        Ok(())
    }

    fn task_dead(&self, pid: Pid) -> Result {
        self.dequeue(pid)?;
        self.tasks.lock()?.remove(pid);
        Ok(())
    }

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, wake: Wake) -> Result<CpuId> {
        let Some(allowed) = self.tasks.lock()?.get(pid).copied() else {
            return Ok(prev_cpu);
        };
        // A sync waker is about to sleep: its CPU runs the task next, with
        // no idle CPU woken and no migration, unless others wait there.
        let waker = wake.waker_cpu;
        if wake.sync
            && allowed.contains(waker)
            && self.is_online(waker)
            && self.queues.lock(waker)?.is_empty()
        {
            self.handoff.set(waker, true);
            return Ok(waker);
        }
        if allowed.contains(prev_cpu) && self.is_idle(prev_cpu) {
            return Ok(prev_cpu);
        }
        let near = || {
            self.topology
                .nearest(prev_cpu)
                .filter(|c| allowed.contains(*c))
        };
        // An idle CPU, else prev if it is still online, else any online one.
        Ok(near()
            .find(|c| self.is_idle(*c))
            .or_else(|| Some(prev_cpu).filter(|c| allowed.contains(*c) && self.is_online(*c)))
            .or_else(|| near().find(|c| self.is_online(*c)))
            .unwrap_or(prev_cpu))
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        // The longest queue with a task allowed here; nearest wins ties.
        let mut best: Option<(usize, Pid)> = None;
        for other in self.topology.nearest(cpu) {
            let q = self.queues.lock(other)?;
            if best.is_some_and(|(len, _)| q.len() <= len) {
                continue;
            }
            let allowed_here = q
                .iter()
                .find(|w| w.allowed.contains(cpu))
                .map(|w| w.token.pid());
            if let Some(pid) = allowed_here {
                best = Some((q.len(), pid));
            }
        }
        Ok(best.map(|(_, pid)| pid))
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        let Some(old) = self.dequeue(pid)? else {
            return Ok(None);
        };
        let allowed = self.tasks.lock()?.get(pid).copied().unwrap_or_default();
        // The thief asked for it: put it first so it runs next there.
        let queued = self.queues.lock(sched.cpu())?.push_front(Waiting {
            token: sched,
            allowed,
        });
        if queued.is_err() {
            // Full: the new token is dropped, the old one goes back instead.
            self.enqueue(old).or_else(NotTaken::drop_token)?;
            return Ok(None);
        }
        Ok(Some(old))
    }

    fn task_affinity_changed(&self, pid: Pid, allowed: &CpuSet) -> Result {
        if let Some(a) = self.tasks.lock()?.get_mut(pid) {
            *a = *allowed;
        }
        Ok(())
    }

    fn cpu_online(&self, cpu: CpuId) -> Result {
        self.offline.set(cpu, false);
        Ok(())
    }

    fn cpu_offline(&self, cpu: CpuId) -> Result {
        self.offline.set(cpu, true);
        Ok(())
    }
}

enoki::export_scheduler!(Fifo);
