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
    cpu_goes_idle, CpuFlags, CpuId, CpuSet, EnokiScheduler, InitContext, InitError, Messages,
    NoHint, NotTaken, PickError, Pid, PrevTask, Result, Ring, RunQueues, Schedulable, Services,
    Shared, SpinLock, TaskError, TaskInfo, TaskMap, Topology, Wake,
};

/// A waiting task: its token, where it may run (kept with the token so
/// stealing needs no second lock) and its place in the global order.
struct Waiting {
    token: Schedulable,
    allowed: CpuSet,
    arrival: u64,
}

/// The Shinjuku scheduler.
pub struct Shinjuku {
    topology: Topology,
    services: Services,
    /// How long a task runs while nothing waits behind it.
    slice_ns: u64,
    /// How long a task runs while others wait behind it.
    preempt_ns: u64,
    queues: RunQueues<Ring<Waiting>>,
    /// Allowed CPUs of every task the scheduler knows.
    tasks: SpinLock<TaskMap<CpuSet>>,
    /// Arrivals so far: the order of the approximated global queue.
    arrivals: Shared<u64>,
    /// CPUs whose last pick found nothing.
    idle: CpuFlags,
    /// CPUs taken offline: never chosen, never idle.
    offline: CpuFlags,
    /// CPUs whose preemption timer is armed for the task they run.
    timed: CpuFlags,
}

impl Shinjuku {
    fn is_online(&self, cpu: CpuId) -> bool {
        cpu < self.topology.nr_cpus() && !self.offline.get(cpu)
    }

    fn is_idle(&self, cpu: CpuId) -> bool {
        self.is_online(cpu) && self.idle.get(cpu)
    }

    /// Tasks waiting on `cpu` (running ones not counted).
    fn waiting(&self, cpu: CpuId) -> Result<usize> {
        Ok(self.queues.lock(cpu)?.len())
    }

    /// Queues `token` at the back of its CPU's queue. A busy CPU gets its
    /// preemption timer, so the newcomer waits one slice at most; an idle
    /// CPU that may run the task is kicked to come and steal it.
    fn enqueue(&self, token: Schedulable) -> Result<(), NotTaken> {
        let pid = token.pid();
        let cpu = token.cpu();
        let Some(allowed) = self.tasks.lock()?.get(pid).copied() else {
            return Err(token.into());
        };
        let arrival = self.arrivals.fetch_add(1);
        let queued = self.queues.lock(cpu)?.push_back(Waiting {
            token,
            allowed,
            arrival,
        });
        queued.map_err(|w| w.token)?;
        if self.is_idle(cpu) {
            return Ok(());
        }
        if !self.timed.replace(cpu, true) {
            self.services.set_timer(cpu, self.preempt_ns);
        }
        if let Some(idle) = self
            .topology
            .nearest(cpu)
            .find(|c| allowed.contains(*c) && self.is_idle(*c))
        {
            self.services.kick_cpu(idle);
        }
        Ok(())
    }

    /// Removes `pid`'s entry from whichever queue holds it.
    fn take(&self, pid: Pid) -> Result<Option<Waiting>> {
        self.queues
            .find_map(|_, q| q.remove_first(|w| w.token.pid() == pid))
    }

    /// Removes `pid`'s token from whichever queue holds it.
    fn dequeue(&self, pid: Pid) -> Result<Option<Schedulable>> {
        Ok(self.take(pid)?.map(|w| w.token))
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
        let candidates = core::iter::once(cpu).chain(self.topology.nearest(cpu));
        for c in candidates.filter(|c| allowed.contains(*c) && self.is_online(*c)) {
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
            queues: RunQueues::try_new_with(nr, |_| Ring::with_capacity(ctx.max_tasks))?,
            tasks: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
            arrivals: Shared::new(0),
            idle: CpuFlags::new(nr)?,
            offline: CpuFlags::new(nr)?,
            timed: CpuFlags::new(nr)?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let (next, others_wait) = {
            let mut queue = self.queues.lock(cpu)?;
            let next = queue.pop_front();
            (next, !queue.is_empty())
        };
        // A CPU that keeps `prev` is busy, so a newcomer here arms the timer.
        self.idle.set(cpu, cpu_goes_idle(next.is_some(), prev));
        // The task picked now, or the one kept running, gets a short slice
        // only if somebody waits behind it.
        self.time_slice(cpu, others_wait);
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
            self.dequeue(pid)?;
        }
        Ok(())
    }

    fn task_dead(&self, pid: Pid) -> Result {
        self.dequeue(pid)?;
        self.tasks.lock()?.remove(pid);
        Ok(())
    }

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, _wake: Wake) -> Result<CpuId> {
        let Some(allowed) = self.tasks.lock()?.get(pid).copied() else {
            return Ok(prev_cpu);
        };
        let idle = core::iter::once(prev_cpu)
            .chain(self.topology.nearest(prev_cpu))
            .find(|c| allowed.contains(*c) && self.is_idle(*c));
        if let Some(cpu) = idle {
            return Ok(cpu);
        }
        Ok(self.shortest_queue(prev_cpu, &allowed)?.unwrap_or(prev_cpu))
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        // The longest-waiting task allowed here, from any queue head.
        let mut oldest: Option<(u64, Pid)> = None;
        for other in self.topology.nearest(cpu) {
            let q = self.queues.lock(other)?;
            let head = q.iter().find(|w| w.allowed.contains(cpu));
            if let Some(w) = head.filter(|w| oldest.is_none_or(|(a, _)| w.arrival < a)) {
                oldest = Some((w.arrival, w.token.pid()));
            }
        }
        Ok(oldest.map(|(_, pid)| pid))
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        let Some(old) = self.take(pid)? else {
            return Ok(None);
        };
        // The thief asked for it: first in its new queue, keeping its age.
        let queued = self.queues.lock(sched.cpu())?.push_front(Waiting {
            token: sched,
            allowed: old.allowed,
            arrival: old.arrival,
        });
        if queued.is_err() {
            self.enqueue(old.token).or_else(NotTaken::drop_token)?;
            return Ok(None);
        }
        Ok(Some(old.token))
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
        self.time_slice(cpu, false);
        Ok(())
    }
}

enoki::export_scheduler!(Shinjuku);
