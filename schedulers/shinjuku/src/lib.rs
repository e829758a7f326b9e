// SPDX-License-Identifier: GPL-2.0
//! Shinjuku (paper 4.2.2, after Kaffes et al., NSDI '19): microsecond-scale
//! preemption for request loads with dispersive service times, so a short
//! request waits behind a long one for at most a preemption slice.
//!
//! - One first-come-first-served queue across CPUs, approximated by per-CPU
//!   queues: a waking task goes to an idle CPU (its previous one first),
//!   else to the CPU with the fewest waiting tasks; an idle CPU steals the
//!   task that has waited longest anywhere (the lowest arrival number at the
//!   head of a queue it may take from).
//! - While others wait on its CPU, a task runs for one preemption slice
//!   (`preempt_us`, 10 by default as in the paper) and then goes to the back
//!   of the queue. The preemption is the timer service's, armed only when
//!   something waits: a lone task runs on, timer-free, for the module's
//!   slice at a time.
//! - It serves the tasks that opt in (SCHED_EXT, policy 7; `enoki load`
//!   without `--mode all`). The rest stay on CFS, which gets every CPU
//!   Shinjuku leaves idle.
#![forbid(unsafe_code)]

use enoki::{
    AllowedCpus, CpuFlags, CpuId, CpuSet, EnokiScheduler, FifoQueues, InitContext, InitError,
    Messages, NoHint, NotTaken, PickError, Pid, PrevTask, Result, Schedulable, Services, Shared,
    SpinLock, TaskError, TaskInfo, TaskMap, Topology, Wake,
};

/// What is kept with a waiting task's token: where it may run (so stealing
/// needs no second lock) and its place in the global order.
#[derive(Clone, Copy)]
struct Ticket {
    allowed: CpuSet,
    arrival: u64,
}

impl AllowedCpus for Ticket {
    fn allows(&self, cpu: CpuId) -> bool {
        self.allowed.contains(cpu)
    }
}

/// The Shinjuku scheduler.
pub struct Shinjuku {
    topology: Topology,
    services: Services,
    /// How long a task runs while nothing waits behind it.
    slice_ns: u64,
    /// How long a task runs while others wait behind it.
    preempt_ns: u64,
    /// Waiting tasks with their tickets, and which CPUs are idle or
    /// offline (never chosen).
    queues: FifoQueues<Ticket>,
    /// Allowed CPUs of every task the scheduler knows.
    tasks: SpinLock<TaskMap<CpuSet>>,
    /// Arrivals so far: the order of the approximated global queue.
    arrivals: Shared<u64>,
    /// CPUs whose preemption timer is armed for the task they run.
    timed: CpuFlags,
}

impl Shinjuku {
    /// Tasks waiting on `cpu` (running ones not counted).
    fn waiting(&self, cpu: CpuId) -> Result<usize> {
        Ok(self.queues.lock(cpu)?.len())
    }

    /// Queues `token` at the back of its CPU's queue. A busy CPU gets its
    /// preemption timer, so the newcomer waits one slice at most; an idle
    /// CPU that may run the task is kicked to come and steal it.
    fn enqueue(&self, token: Schedulable) -> Result<(), NotTaken> {
        let cpu = token.cpu();
        let Some(allowed) = self.tasks.lock()?.get(token.pid()).copied() else {
            return Err(token.into());
        };
        let arrival = self.arrivals.fetch_add(1);
        self.queues.push_back(token, Ticket { allowed, arrival })?;
        let idle = self.queues.idle_cpus();
        if idle.contains(cpu) {
            return Ok(());
        }
        if !self.timed.replace(cpu, true) {
            self.services.set_timer(cpu, self.preempt_ns);
        }
        if let Some(idle) = self.topology.nearest_in(cpu, &(idle & allowed)) {
            self.services.kick_cpu(idle);
        }
        Ok(())
    }

    /// Arms `cpu`'s timer when tasks wait there, disarms it otherwise.
    fn time_slice(&self, cpu: CpuId, others_wait: bool) {
        let was = self.timed.replace(cpu, others_wait);
        if others_wait {
            self.services.set_timer(cpu, self.preempt_ns);
        } else if was {
            self.services.cancel_timer(cpu);
        }
    }

    /// The allowed online CPU with the fewest waiting tasks, nearest to
    /// `cpu` on ties (`cpu` itself first).
    fn shortest_queue(&self, cpu: CpuId, allowed: &CpuSet) -> Result<Option<CpuId>> {
        let mut best: Option<(usize, CpuId)> = None;
        let usable = self.queues.online_cpus() & *allowed;
        for c in self.topology.cpu_then_nearest_of(cpu, &usable) {
            let len = self.waiting(c)?;
            if best.is_none_or(|(shortest, _)| len < shortest) {
                best = Some((len, c));
            }
        }
        Ok(best.map(|(_, c)| c))
    }
}

impl EnokiScheduler for Shinjuku {
    const NAME: &'static str = "shinjuku";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();
    const MESSAGES: Messages = Messages::SELECT
        .and(Messages::BALANCE)
        .and(Messages::AFFINITY)
        .and(Messages::HOTPLUG);

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&["preempt_us"])?;
        let preempt_us = ctx.args.u64_in("preempt_us", 10, 1, 100_000)?;
        let nr = ctx.topology.nr_cpus();
        Ok(Shinjuku {
            topology: ctx.topology.try_clone()?,
            services: ctx.services.clone(),
            slice_ns: ctx.slice_ns,
            preempt_ns: preempt_us.saturating_mul(1000),
            queues: FifoQueues::try_new(nr, ctx.max_tasks)?,
            tasks: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
            arrivals: Shared::new(0),
            timed: CpuFlags::new(nr)?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        // A CPU that keeps `prev` is busy, so a newcomer here arms the timer.
        let (next, waiting) = self.queues.pick(cpu, prev, self.slice_ns)?;
        // The task picked now, or the one kept running, gets a short slice
        // only if somebody waits behind it.
        self.time_slice(cpu, waiting > 0);
        Ok(next)
    }

    fn pnt_err(
        &self,
        _cpu: CpuId,
        _pid: Pid,
        _err: PickError,
        sched: Option<Schedulable>,
    ) -> Result {
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

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, _wake: Wake) -> Result<CpuId> {
        let Some(allowed) = self.tasks.lock()?.get(pid).copied() else {
            return Ok(prev_cpu);
        };
        let usable = self.queues.idle_cpus() & allowed;
        if let Some(cpu) = self.topology.cpu_then_nearest_of(prev_cpu, &usable).next() {
            return Ok(cpu);
        }
        Ok(self.shortest_queue(prev_cpu, &allowed)?.unwrap_or(prev_cpu))
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        // The longest-waiting task allowed here, from any queue head (a
        // queue that held nothing when last unlocked is not locked).
        let mut oldest: Option<(u64, Pid)> = None;
        let holding = self.queues.holding_tasks();
        for other in self.topology.nearest_of(cpu, &holding) {
            let q = self.queues.lock(other)?;
            let head = q.iter().find(|w| w.info.allowed.contains(cpu));
            if let Some(w) = head.filter(|w| oldest.is_none_or(|(a, _)| w.info.arrival < a)) {
                oldest = Some((w.info.arrival, w.token.pid()));
            }
        }
        Ok(oldest.map(|(_, pid)| pid))
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        // First in the thief's queue, keeping its age.
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
        self.time_slice(cpu, false);
        Ok(())
    }
}

enoki::export_scheduler!(Shinjuku);
