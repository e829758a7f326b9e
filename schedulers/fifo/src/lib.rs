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
    CpuId, CpuSet, EnokiScheduler, FifoQueues, InitContext, InitError, Messages, NoHint, NotTaken,
    PickError, Pid, PrevTask, Result, Schedulable, Services, SpinLock, TaskError, TaskInfo,
    TaskMap, Topology, Wake,
};

/// The FIFO scheduler.
pub struct Fifo {
    topology: Topology,
    services: Services,
    slice_ns: u64,
    /// Waiting tasks, each with where it may run (so stealing needs no
    /// second lock), and which CPUs are idle or offline (never chosen).
    queues: FifoQueues<CpuSet>,
    /// Allowed CPUs of every task the scheduler knows.
    tasks: SpinLock<TaskMap<CpuSet>>,
}

impl Fifo {
    /// Queues `token` at the back of its CPU's queue; if that CPU is busy
    /// (and not about to be handed over by a sync waker), kicks an idle CPU
    /// that may run the task.
    fn enqueue(&self, token: Schedulable) -> Result<(), NotTaken> {
        let cpu = token.cpu();
        let Some(allowed) = self.tasks.lock()?.get(token.pid()).copied() else {
            return Err(token.into());
        };
        self.queues.push_back(token, allowed)?;
        let handed_over = self.queues.take_handoff(cpu);
        if !handed_over {
            if let Some(idle) = self.queues.idle_thief(&self.topology, cpu, &allowed) {
                self.services.kick_cpu(idle);
            }
        }
        Ok(())
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
            queues: FifoQueues::try_new(nr, ctx.max_tasks)?,
            tasks: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
        })
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let (next, _) = self.queues.pick(cpu, prev, self.slice_ns)?;
        Ok(next)
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
            self.queues.remove(pid)?;
        }
        Ok(())
    }

    fn task_dead(&self, pid: Pid) -> Result {
        self.queues.remove(pid)?;
        self.tasks.lock()?.remove(pid);
        Ok(())
    }

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, wake: Wake) -> Result<CpuId> {
        let Some(allowed) = self.tasks.lock()?.get(pid).copied() else {
            return Ok(prev_cpu);
        };
        self.queues
            .place_waking(&self.topology, prev_cpu, &allowed, wake)
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        // The longest queue with a task allowed here; nearest wins ties.
        let mut best: Option<(usize, Pid)> = None;
        // A queue that held nothing when last unlocked is not locked:
        // every idle CPU balances, and most queues are empty then.
        let holding = self.queues.holding_tasks();
        for other in self.topology.nearest_of(cpu, &holding) {
            let q = self.queues.lock(other)?;
            if best.is_some_and(|(len, _)| q.len() <= len) {
                continue;
            }
            let allowed_here = q
                .iter()
                .find(|w| w.info.contains(cpu))
                .map(|w| w.token.pid());
            if let Some(pid) = allowed_here {
                best = Some((q.len(), pid));
            }
        }
        Ok(best.map(|(_, pid)| pid))
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        self.queues.migrate(pid, sched, |old| self.enqueue(old))
    }

    fn task_affinity_changed(&self, pid: Pid, allowed: &CpuSet) -> Result {
        if let Some(a) = self.tasks.lock()?.get_mut(pid) {
            *a = *allowed;
        }
        Ok(())
    }

    fn cpu_online(&self, cpu: CpuId) -> Result {
        self.queues.set_online(cpu, true);
        Ok(())
    }

    fn cpu_offline(&self, cpu: CpuId) -> Result {
        self.queues.set_online(cpu, false);
        Ok(())
    }
}

enoki::export_scheduler!(Fifo);
