// SPDX-License-Identifier: GPL-2.0
//! WFQ: weighted fair queuing with the fairness rules of Linux CFS (paper
//! §4.2.1 and appendix A.1).
//!
//! - Time: a task's *vruntime* grows by `runtime * 1024 / weight` while it
//!   runs (runtime comes from Enoki-C's messages, weights from the kernel's
//!   nice table). Each CPU has a run queue ordered by vruntime and runs the
//!   smallest.
//! - Slice: `period * weight / (weight of the queue)`, at least
//!   `min_granularity`; the period is `period_us`, stretched to
//!   `nr_running * min_granularity` when that is longer.
//! - Slice end: the smallest vruntime runs next. Enoki-C asks for the next
//!   task while the previous one still runs (it is handed back by
//!   `task_preempt` afterwards), so the previous task still competes, and
//!   still counts in the period of a task picked instead; when it is still
//!   the smallest, nothing is picked and it is picked again once handed back.
//! - Wakeup: a sleeper comes back at `max(its vruntime, min_vruntime -
//!   period / 2)`; a new task after everyone of the current period. After a
//!   wakeup, the next tick preempts the running task if it is ahead of the
//!   smallest waiting vruntime by more than `wakeup_granularity` (counted
//!   in the waiting task's virtual time); otherwise its slice ends it.
//!   With `wakeup_preemption=1` the woken task preempts at once (its CPU
//!   is made to pick again) by the same rule, as CFS's
//!   check_preempt_wakeup does, once the running task has run
//!   `min_granularity` since it was picked, unless a sync wakeup hands it
//!   to its waker's CPU (the waker is about to sleep).
//! - Placement: a sync wakeup (the waker is about to sleep) goes to the
//!   waker's CPU when only the waker runs there, which then switches to it
//!   without waking an idle CPU (CFS's wake-affine, in its simplest form);
//!   any other to the previous CPU if idle, else an idle CPU of its LLC,
//!   else of its node, else the previous CPU anyway (balancing evens the
//!   load out); a new task, or one that may not run there, goes to the
//!   least loaded allowed CPU.
//!   A vruntime moves between queues relative to their `min_vruntime`.
//! - Balance: an idle CPU takes the next waiting task of the busiest queue,
//!   nearest first (LLC, then node); from another node only when that node
//!   has `imbalance_pct` % more tasks per CPU than ours. A queue where work
//!   waits kicks an idle CPU that may take it.
//! - Nice: the running task's next slice uses the new weight; a task keeps
//!   its lag behind or ahead of `min_vruntime` in CPU time, so a waiting
//!   one may move in its queue.
//!
//! Locks: no lock is shared by every message. A task's record (weight,
//! allowed CPUs, vruntime, state) lives in the map of one run queue, its
//! *home*: where it runs, waits, or last ran or waited, and that queue's lock
//! guards it. So a tick, a pick, a preemption, a sleep and a wakeup take the
//! lock of the one CPU the message is about, and `select_task_rq` that of
//! the CPU the task slept on: it sends the record ahead to the CPU it
//! chooses, where the wakeup finds it. A record moves (there, on a wakeup
//! or preemption elsewhere, on migration) with both queues locked, the
//! lower CPU first. The registry (one lock) lists the live tasks and holds a
//! new task's record until it is first placed: it is taken on `task_new`,
//! `task_dead`, a task's first wakeup, and when a message finds a task
//! away from the CPU it names. Messages naming no CPU (`task_dead`, nice
//! and affinity changes) look through the queues one at a time. Order: run
//! queues by CPU number, then the registry; the cgroup table is taken
//! last, with nothing else taken under it.
//!
//! - cgroups: `cpu.weight` divides time among cgroups as CFS's group
//!   scheduling does, flattened into each task's weight (see `cgroups`).
//!   `cpu.max` holds a cgroup's tasks back once their budget for the period
//!   is used (see `bandwidth`): a task found over budget when queued or
//!   picked waits in its queue's throttled heap, off the load, and the
//!   CPU's timer is set for the refill, when the queue takes them back.
//!   The tick preempts a task whose budget ran out.
//!
//! Module `args`: `period_us`, `min_granularity_us`,
//! `wakeup_granularity_us`, `wakeup_preemption` (0 or 1, default 0),
//! `imbalance_pct`, `max_cgroups`.
#![forbid(unsafe_code)]

mod bandwidth;
mod cgroups;
mod fair;
#[cfg(any(test, feature = "introspect"))]
mod introspect;
mod placement;
mod queue;

use enoki::runqueue::LOCK_RETRIES;
use enoki::{
    nice_to_weight, CpuFlags, CpuId, CpuSet, EnokiScheduler, FixedVec, Holder, InitContext,
    InitError, NoHint, NotTaken, PickError, Pid, PrevTask, QueueGuard, Result, RunQueues,
    Schedulable, Services, Shared, SharedCpuSet, SpinLock, TaskError, TaskHeap, TaskInfo, TaskMap,
    Topology, Wake, ROOT_CGROUP,
};
use enoki::{Bandwidth, CgroupId, CgroupInfo};

use cgroups::Cgroups;
use fair::{rescale_lag, to_virtual, Params, NICE_0_WEIGHT};
#[cfg(any(test, feature = "introspect"))]
pub use introspect::Held;
use placement::Near;
use queue::{Load, RunQueue, State, Task};

/// Waiting tasks a tick looks at for one an idle CPU could take.
const KICK_SCAN: usize = 4;

/// What other CPUs read of a CPU's run queue without its lock (each a
/// libEnoki `Shared`, so record and replay see every access).
struct Summary {
    load: Shared<Load>,
    /// The task `balance` last named for this CPU and the queue it waits
    /// in (`pid << 32 | cpu`), for the `migrate_task_rq` that follows.
    claimed: Shared<u64>,
}

/// Why a token goes into a run queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enqueue {
    /// The task became runnable; `runtime` it used so far is not ours to charge.
    Wakeup { runtime: u64 },
    /// It ran until now and is still runnable.
    Preempt { runtime: u64, yielded: bool },
    /// Enoki-C refused to run it; it waits again as it was.
    Refused,
}

/// Tasks whose place in the fair order an upgrade carries over; any more
/// start as new tasks in the next version.
pub const CARRIED_TASKS: usize = 256;

enoki::plain_data! {
    /// One task's place in the fair order: how far its vruntime is ahead
    /// of its queue's `min_vruntime`.
    pub struct Lag {
        /// The task.
        pub pid: i32,
        /// Its vruntime minus its queue's `min_vruntime` (0 if behind).
        pub ahead: u64,
    }
}

enoki::plain_data! {
    /// What WFQ hands to its next version in a live upgrade.
    pub struct Carry {
        /// Upgrades this state went through.
        pub upgrades: u32,
        /// Entries of `lags` in use.
        pub len: u32,
        /// Each task's place, for the first `len`.
        pub lags: [Lag; CARRIED_TASKS],
    }
}

/// The WFQ scheduler.
pub struct Wfq {
    topology: Topology,
    services: Services,
    params: Params,
    rqs: RunQueues<RunQueue>,
    summaries: FixedVec<Summary>,
    near: FixedVec<Near>,
    /// Online CPUs with nothing to run, one bit each; written only when a
    /// CPU becomes idle or busy, or goes offline or online.
    idle: SharedCpuSet,
    /// CPUs where a task waits behind another (one a thief may take), one
    /// bit each, written only when that changes: an idle CPU balances
    /// reading this once when nothing waits anywhere, which is most of
    /// the time on a machine that is not overloaded.
    stealable: SharedCpuSet,
    /// Every live task; a new one's record until it is first placed on a
    /// run queue (`None` once it has a home).
    registry: SpinLock<TaskMap<Option<Task>>>,
    /// Upgrades the state went through.
    upgrades: Shared<u32>,
    /// CPUs a sync wakeup was just placed on: their running task is about
    /// to sleep, so the wakeup queued there next must not wake an idle CPU
    /// to steal it. Cleared by that enqueue.
    handoff: CpuFlags,
    /// The cgroup hierarchy and each cgroup's runnable weight.
    cgroups: SpinLock<Cgroups>,
}

/// A run queue, locked.
type LockedRq<'a> = QueueGuard<'a, RunQueue>;

impl Wfq {
    fn summary(&self, cpu: CpuId) -> Option<&Summary> {
        self.summaries.get(cpu)
    }

    fn nr_running(&self, cpu: CpuId) -> usize {
        self.summary(cpu).map_or(0, |c| c.load.get().nr_running)
    }

    /// The idle CPUs; an offline CPU is never idle.
    fn idle_cpus(&self) -> CpuSet {
        self.idle.get()
    }

    /// Publishes what changed of `cpu`'s summary and idle bit; called with
    /// its run queue locked.
    fn update_summary(&self, cpu: CpuId, rq: &mut RunQueue) {
        let now = rq.summary();
        let was = core::mem::replace(&mut rq.published, now);
        if was == now {
            return;
        }
        if let Some(c) = self.summary(cpu) {
            c.load.set(now);
        }
        if was.idle() != now.idle() {
            self.idle.set(cpu, now.idle());
        }
        if was.stealable() != now.stealable() {
            self.stealable.set(cpu, now.stealable());
        }
    }

    /// Marks `cpu` offline or online, in its summary too.
    fn set_offline(&self, cpu: CpuId, offline: bool) -> Result {
        let mut rq = self.rqs.lock(cpu)?;
        rq.offline = offline;
        self.update_summary(cpu, &mut rq);
        Ok(())
    }

    /// `cpu`'s run queue, locked, if `pid` is homed there.
    fn lock_if_home(&self, cpu: CpuId, pid: Pid) -> Result<Option<(CpuId, LockedRq<'_>)>> {
        let rq = self.rqs.lock_if(cpu, |rq| rq.tasks.contains(pid))?;
        Ok(rq.map(|rq| (cpu, rq)))
    }

    /// Gives a new task a home: `hint`, else its first allowed CPU. Returns
    /// that run queue, locked, or `None` if `pid` is not a new task.
    fn home_newborn(&self, pid: Pid, hint: Option<CpuId>) -> Result<Option<(CpuId, LockedRq<'_>)>> {
        let Some(newborn) = self.registry.lock()?.get(pid).copied().flatten() else {
            return Ok(None);
        };
        let cpu = hint.or_else(|| newborn.allowed.iter().next()).unwrap_or(0);
        let mut rq = self.rqs.lock(cpu)?;
        let mut registry = self.registry.lock()?;
        let Some(entry) = registry.get_mut(pid) else {
            return Ok(None); // died meanwhile
        };
        let Some(mut task) = entry.take() else {
            return Ok(None); // placed meanwhile
        };
        // Until placed, a record's vruntime is its lag (0, or carried over
        // by an upgrade): placed on this queue's clock.
        task.vruntime = rq.min_vruntime.saturating_add(task.vruntime);
        if let Err(task) = rq.tasks.insert(pid, task) {
            *entry = Some(task);
            return Ok(None);
        }
        drop(registry);
        Ok(Some((cpu, rq)))
    }

    /// The run queue whose map holds `pid`, locked: `hint` first (the CPU
    /// the message names), then a new task's placement, then every queue.
    /// `None` if the task is unknown.
    fn locate(&self, pid: Pid, hint: Option<CpuId>) -> Result<Option<(CpuId, LockedRq<'_>)>> {
        if let Some(cpu) = hint {
            if let Some(found) = self.lock_if_home(cpu, pid)? {
                return Ok(Some(found));
            }
        }
        for _ in 0..LOCK_RETRIES {
            if let Some(found) = self.home_newborn(pid, hint)? {
                return Ok(Some(found));
            }
            if let Some(found) = self.rqs.lock_holder(None, |rq| rq.tasks.contains(pid))? {
                return Ok(Some(found));
            }
            // Not found: unknown, or it moved behind our back; look again.
            if !self.registry.lock()?.contains(pid) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Makes `to`'s run queue `pid`'s home and returns it locked: if the
    /// task lives elsewhere, it is detached there and its record moved,
    /// with both queues locked.
    fn rehome(&self, pid: Pid, to: CpuId) -> Result<Option<LockedRq<'_>>> {
        if let Some((_, rq)) = self.lock_if_home(to, pid)? {
            return Ok(Some(rq));
        }
        if let Some((_, rq)) = self.home_newborn(pid, Some(to))? {
            return Ok(Some(rq));
        }
        let is_home = |rq: &RunQueue| rq.tasks.contains(pid);
        let Some(holder) = self
            .rqs
            .lock_holder_and(to, is_home, || self.locate(pid, None))?
        else {
            return Ok(None);
        };
        match holder {
            Holder::Same(rq) => Ok(Some(rq)),
            Holder::Apart {
                from,
                mut src,
                mut dst,
            } => {
                let moved = src.move_task(&mut dst, pid);
                self.update_summary(from, &mut src);
                drop(src);
                Ok(moved.then_some(dst))
            }
        }
    }

    /// Counts `task`, detached and about to be queued, in its cgroup's
    /// runnable weight, gives it the weight its cgroups leave it, and
    /// bills its CPU time to their budgets: when it may run again if they
    /// are used up.
    fn weigh_runnable(&self, task: &mut Task) -> Result<Option<u64>> {
        if task.cgroup == ROOT_CGROUP && task.counted.is_none() {
            task.weight = task.nice_weight;
            task.limited = false;
            task.unbilled = 0;
            return Ok(None);
        }
        let now = self.services.now();
        let mut cgroups = self.cgroups.lock()?;
        if task.counted.is_none() {
            task.counted = cgroups.count(task.cgroup, task.nice_weight);
        }
        task.weight = cgroups.effective(task.cgroup, task.nice_weight);
        task.limited = cgroups.limited(task.cgroup);
        Ok(bill(&mut cgroups, task, now))
    }

    /// Bills `task`'s CPU time to its cgroups' budgets, if any: when it
    /// may run again if they are used up.
    fn throttled(&self, task: &mut Task) -> Result<Option<u64>> {
        if !task.limited {
            task.unbilled = 0;
            return Ok(None);
        }
        let now = self.services.now();
        Ok(bill(&mut *self.cgroups.lock()?, task, now))
    }

    /// Holds `token` back on `rq` (CPU `cpu`) until `until`, setting the
    /// CPU's timer for it.
    fn throttle(
        &self,
        cpu: CpuId,
        rq: &mut RunQueue,
        pid: Pid,
        vruntime: u64,
        token: Schedulable,
        until: u64,
    ) -> Result<(), Schedulable> {
        if let Some(at) = rq.throttle(pid, vruntime, token, until)? {
            let wait = at.saturating_sub(self.services.now()).max(1);
            self.services.set_timer(cpu, wait);
        }
        Ok(())
    }

    /// Counts `task` again after its cgroup or nice weight changed, if it
    /// is runnable; returns the weight it runs at when runnable.
    fn recount(&self, task: &mut Task) -> Result<u64> {
        if task.cgroup == ROOT_CGROUP && task.counted.is_none() {
            return Ok(task.nice_weight);
        }
        let mut cgroups = self.cgroups.lock()?;
        let was = task.counted.take();
        if let Some(counted) = was {
            cgroups.uncount(counted);
        }
        let counted = cgroups.count(task.cgroup, task.nice_weight);
        let weight = cgroups.effective(task.cgroup, task.nice_weight);
        if was.is_some() || task.state != State::Off {
            task.counted = counted;
        } else if let Some(counted) = counted {
            // Asleep: weighed as if runnable, not counted.
            cgroups.uncount(counted);
        }
        Ok(weight)
    }

    /// `task` left the runnable tasks: its cgroup's runnable weight too.
    fn uncount(&self, task: &mut Task) -> Result {
        if let Some(counted) = task.counted.take() {
            self.cgroups.lock()?.uncount(counted);
        }
        Ok(())
    }

    /// Takes `pid` out of the run queue that holds it: stops it if running
    /// (charging `runtime`), else drops its waiting token.
    fn detach(&self, pid: Pid, runtime: Option<u64>, hint: Option<CpuId>) -> Result {
        if let Some((cpu, mut rq)) = self.locate(pid, hint)? {
            rq.detach(pid, runtime);
            if let Some(task) = rq.tasks.get_mut(pid) {
                self.uncount(task)?;
                self.throttled(task)?; // bills its last run to its cgroups' budgets
            }
            self.update_summary(cpu, &mut rq);
        }
        Ok(())
    }

    /// Removes `pid`'s record from every run queue.
    fn remove_record(&self, pid: Pid) -> Result {
        for cpu in self.topology.cpus() {
            if let Some((_, mut rq)) = self.lock_if_home(cpu, pid)? {
                rq.detach(pid, None);
                if let Some(mut task) = rq.tasks.remove(pid) {
                    self.uncount(&mut task)?;
                }
                self.update_summary(cpu, &mut rq);
            }
        }
        Ok(())
    }

    /// Queues `token` on its CPU, moving the task's record there if needed
    /// (a queue holds a task once: whatever it held for it is dropped).
    /// Wakeups are placed relative to the queue; if the task waits behind
    /// another, an idle CPU is kicked to take it. The token is refused when
    /// the task is unknown or there is no room for it.
    fn enqueue(&self, token: Schedulable, why: Enqueue) -> Result<(), NotTaken> {
        let (pid, cpu) = (token.pid(), token.cpu());
        let Some(mut rq) = self.rehome(pid, cpu)? else {
            return Err(token.into());
        };
        let runtime = match why {
            Enqueue::Preempt { runtime, .. } => Some(runtime),
            Enqueue::Wakeup { .. } | Enqueue::Refused => None,
        };
        rq.detach(pid, runtime);
        let Some(task) = rq.tasks.get_mut(pid) else {
            self.update_summary(cpu, &mut rq);
            return Err(token.into());
        };
        match why {
            Enqueue::Wakeup { runtime } => task.charged = runtime,
            Enqueue::Preempt { runtime, .. } => task.charge(runtime),
            Enqueue::Refused => {}
        }
        let throttled = self.weigh_runnable(task)?;
        let task = *task;
        let vruntime = match why {
            Enqueue::Wakeup { .. } => self.wakeup_vruntime(&rq, &task),
            // Yielding: behind the next waiting task.
            Enqueue::Preempt { yielded: true, .. } => match rq.waiting.peek() {
                Some((_, next, _)) => task.vruntime.max(next.saturating_add(1)),
                None => task.vruntime,
            },
            Enqueue::Preempt { .. } | Enqueue::Refused => task.vruntime,
        };
        if let Some(until) = throttled {
            let held = self.throttle(cpu, &mut rq, pid, vruntime, token, until);
            self.update_summary(cpu, &mut rq);
            return held.map_err(NotTaken::from);
        }
        let pushed = rq.queue_token(pid, vruntime, token);
        let woken = pushed.is_ok() && matches!(why, Enqueue::Wakeup { .. });
        rq.woken |= woken && rq.curr.is_some();
        let preempt = woken && self.wakeup_preempts(&rq, vruntime, task.weight);
        // Someone waits here if a task runs, or if more than one waits.
        let work_waits = rq.waiting.len() > usize::from(rq.curr.is_none());
        self.update_summary(cpu, &mut rq);
        drop(rq);
        pushed?;
        self.kick_after_enqueue(cpu, why, &task.allowed, work_waits, preempt);
        Ok(())
    }

    /// Whether a task just woken on `rq` at `vruntime`, of `weight`,
    /// preempts the running task at once (CFS's check_preempt_wakeup).
    /// The running task's vruntime is as of its last charge (a tick, or a
    /// pick that let it run on): it has run since, so its true vruntime is
    /// only further ahead. A stale one can miss a preemption,
    /// which the next tick catches (`woken`), never make a wrong one.
    /// A task is not preempted before it has run `min_granularity` since
    /// it was picked (EEVDF's run to parity does the same): otherwise a
    /// task that wakes others one after another (a hackbench sender) is
    /// preempted by each of them and sends one message per switch. How
    /// long it has run is the more of its CPU time charged and the time
    /// passed since (charges come only with ticks and switches).
    /// Off unless `wakeup_preemption=1`: a sleeper's credit (half a period)
    /// puts nearly every woken task past the granularity, so even gated it
    /// costs throughput (hackbench; see the README's benchmarks).
    fn wakeup_preempts(&self, rq: &RunQueue, vruntime: u64, weight: u64) -> bool {
        let curr = rq.curr.filter(|_| self.params.wakeup_preemption);
        curr.and_then(|curr| rq.tasks.get(curr))
            .is_some_and(|curr| {
                let (charged, at) = rq.curr_picked;
                let ran = curr
                    .charged
                    .saturating_sub(charged)
                    .max(self.services.now().saturating_sub(at));
                ran >= self.params.min_granularity_ns
                    && self.params.preempts(curr.vruntime, vruntime, weight)
            })
    }

    /// After `why` queued a task allowed on `allowed` on `cpu` (its lock
    /// released): a sync wakeup handed over to the waker's CPU needs
    /// nothing (the waker is about to sleep, and its CPU then picks the
    /// woken task; preempting it would only send the waker to wait, and
    /// wake an idle CPU to run it for the moment it has left). Else `cpu`
    /// is preempted if the woken task runs at once (the task it preempts
    /// kicks an idle CPU when handed back), or an idle CPU is kicked that
    /// may take the work waiting there.
    fn kick_after_enqueue(
        &self,
        cpu: CpuId,
        why: Enqueue,
        allowed: &CpuSet,
        work_waits: bool,
        preempt: bool,
    ) {
        let handed_over = matches!(why, Enqueue::Wakeup { .. }) && self.handoff.replace(cpu, false);
        if handed_over || why == Enqueue::Refused {
            return;
        }
        if preempt {
            self.services.preempt_cpu(cpu);
        } else if work_waits {
            if let Some(idle) = self.idle_thief(cpu, allowed, self.idle_cpus()) {
                self.services.kick_cpu(idle);
            }
        }
    }

    /// Kicks a CPU to run a task that waits again on `cpu` (`busy`: a task
    /// runs there): `cpu` itself if idle, else an idle one that may take it.
    fn kick_for_released(&self, cpu: CpuId, busy: bool, allowed: &CpuSet) {
        let target = if busy {
            self.idle_thief(cpu, allowed, self.idle_cpus())
        } else {
            Some(cpu)
        };
        if let Some(target) = target {
            self.services.kick_cpu(target);
        }
    }

    /// Where a waking task starts on `rq`: a new task after the tasks of
    /// the current period, a sleeper at most half a period before
    /// `min_vruntime` (so sleeping earns little credit).
    fn wakeup_vruntime(&self, rq: &RunQueue, task: &Task) -> u64 {
        if task.new {
            let nr = (rq.nr_running() as u64).saturating_add(1);
            let slice = self
                .params
                .slice(nr, rq.load.saturating_add(task.weight), task.weight);
            rq.min_vruntime
                .saturating_add(to_virtual(slice, task.weight))
        } else {
            task.vruntime
                .max(rq.min_vruntime.saturating_sub(self.params.period_ns >> 1))
        }
    }
}

/// Bills `task`'s CPU time since the last bill to its cgroups' budgets at
/// `now` (if they have any): when it may run again if they are used up.
fn bill(cgroups: &mut Cgroups, task: &mut Task, now: u64) -> Option<u64> {
    let ns = core::mem::take(&mut task.unbilled);
    if !task.limited {
        return None;
    }
    cgroups.charge(task.cgroup, ns, now);
    cgroups.throttled_until(task.cgroup, now)
}

impl EnokiScheduler for Wfq {
    const NAME: &'static str = "wfq";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = Carry;

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        let params = Params::from_args(&ctx.args)?;
        let t = ctx.topology;
        // Every CPU starts idle, and is published so: empty summaries, and
        // the idle mask below.
        let rqs = RunQueues::try_new_with(t.nr_cpus(), |_| -> Result<RunQueue, InitError> {
            Ok(RunQueue {
                tasks: TaskMap::with_capacity(ctx.max_tasks)?,
                waiting: TaskHeap::with_capacity(ctx.max_tasks)?,
                throttled: TaskHeap::with_capacity(ctx.max_tasks)?,
                unthrottle_at: None,
                curr: None,
                load: 0,
                min_vruntime: 0,
                woken: false,
                curr_picked: (0, 0),
                published: Load::default(),
                offline: false,
            })
        })?;
        let summaries = FixedVec::new_with(t.nr_cpus(), |_| Summary {
            load: Shared::new(Load::default()),
            claimed: Shared::new(u64::MAX),
        })?;
        Ok(Wfq {
            topology: t.try_clone()?,
            services: ctx.services.clone(),
            params,
            rqs,
            summaries,
            near: FixedVec::new_with(t.nr_cpus(), |cpu| Near::new(t, cpu))?,
            idle: SharedCpuSet::new(t.nr_cpus(), CpuSet::first_n(t.nr_cpus())),
            stealable: SharedCpuSet::new(t.nr_cpus(), CpuSet::empty()),
            registry: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
            upgrades: Shared::new(0),
            handoff: CpuFlags::new(ctx.topology.nr_cpus())?,
            cgroups: SpinLock::new(Cgroups::with_capacity(params.max_cgroups)?),
        })
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let mut rq = self.rqs.lock(cpu)?;
        let rq = &mut *rq;
        rq.unthrottle_due(self.services.now());
        // The kernel asks before it hands a still-runnable previous task
        // back (task_preempt comes next): it still competes, and still
        // counts in the period of whatever is picked instead.
        let still_runnable = prev.filter(|p| p.runnable && rq.is_running(p.pid));
        let mut prev_weight = 0;
        if let Some(p) = still_runnable {
            if let Some(task) = rq.tasks.get_mut(p.pid) {
                task.charge(p.runtime);
                let over_budget = self.throttled(task)?.is_some();
                let (vruntime, weight) = (task.vruntime, task.weight);
                rq.update_min_vruntime(Some(vruntime));
                // CFS's rule: the smallest vruntime runs, a waiting task
                // first on a tie. When that is the previous task, pick
                // nothing: it is handed back and picked again (unless its
                // budget ran out: then it is held back when handed back).
                if !over_budget && rq.waiting.peek().is_none_or(|(_, v, _)| *v > vruntime) {
                    rq.woken = false;
                    self.update_summary(cpu, rq);
                    return Ok(None);
                }
                prev_weight = weight;
            }
        }
        // Whatever ran here has stopped (a runnable one comes back through
        // task_preempt): charge it.
        if let Some(pid) = rq.curr {
            rq.detach(pid, prev.filter(|p| p.pid == pid).map(|p| p.runtime));
            rq.curr = None; // (even without a record)
        }
        // The smallest vruntime runs, for its share of the period.
        rq.woken = false;
        let mut picked = None;
        while let Some((pid, vruntime, mut token)) = rq.waiting.pop() {
            let Some(task) = rq.tasks.get_mut(pid) else {
                continue;
            }; // no record: drop its token
            task.state = State::Off;
            if let Some(until) = self.throttled(task)? {
                let weight = task.weight;
                match self.throttle(cpu, rq, pid, vruntime, token, until) {
                    Ok(()) => {
                        rq.load = rq.load.saturating_sub(weight);
                        continue;
                    }
                    Err(back) => token = back, // no room to hold it back: it runs
                }
            }
            let Some(task) = rq.tasks.get_mut(pid) else {
                continue;
            };
            task.state = State::Running;
            let weight = task.weight;
            rq.curr_picked = (task.charged, self.services.now());
            rq.curr = Some(pid);
            rq.update_min_vruntime(Some(vruntime));
            let nr = (rq.nr_running() as u64).saturating_add(u64::from(prev_weight > 0));
            token.set_slice_ns(
                self.params
                    .slice(nr, rq.load.saturating_add(prev_weight), weight),
            );
            picked = Some(token);
            break;
        }
        self.update_summary(cpu, rq);
        Ok(picked)
    }

    /// `pick_next_task` found `prev` still first in line: it keeps the CPU
    /// for its share of the period, as if handed back and picked again.
    fn keep_running(&self, cpu: CpuId, prev: &PrevTask) -> Result<Option<u64>> {
        let rq = self.rqs.lock(cpu)?;
        let Some(task) = rq.tasks.get(prev.pid).filter(|_| rq.is_running(prev.pid)) else {
            return Ok(None);
        };
        Ok(Some(self.params.slice(
            rq.nr_running() as u64,
            rq.load,
            task.weight,
        )))
    }

    fn pnt_err(&self, cpu: CpuId, pid: Pid, _err: PickError, sched: Option<Schedulable>) -> Result {
        // Not running after all. A token handed back waits again as it was
        // (if refused, the task is the kernel's to run).
        match sched {
            Some(token) => self
                .enqueue(token, Enqueue::Refused)
                .or_else(NotTaken::drop_token),
            None => self.detach(pid, None, Some(cpu)),
        }
    }

    fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError> {
        if self.registry.lock()?.contains(task.pid) {
            self.remove_record(task.pid)?; // a stale entry of a reused pid
        }
        let weight = u64::from(task.weight).max(1);
        let new = Task {
            weight,
            nice_weight: weight,
            cgroup: task.cgroup,
            counted: None,
            allowed: task.allowed,
            vruntime: 0,
            charged: task.runtime,
            unbilled: 0,
            limited: false,
            state: State::Off,
            new: true,
        };
        // Placed on a run queue when it is first woken (or looked for).
        self.registry
            .lock()?
            .insert(task.pid, Some(new))
            .map(|_| ())
            .map_err(|_| TaskError::Full)
    }

    fn task_wakeup(&self, _pid: Pid, runtime: u64, sched: Schedulable) -> Result<(), NotTaken> {
        self.enqueue(sched, Enqueue::Wakeup { runtime })
    }

    fn task_preempt(
        &self,
        _pid: Pid,
        runtime: u64,
        yielded: bool,
        sched: Schedulable,
    ) -> Result<(), NotTaken> {
        self.enqueue(sched, Enqueue::Preempt { runtime, yielded })
    }

    fn task_blocked(&self, pid: Pid, runtime: u64, cpu: CpuId, _sleeping: bool) -> Result {
        self.detach(pid, Some(runtime), Some(cpu))
    }

    fn task_dead(&self, pid: Pid) -> Result {
        if self.registry.lock()?.remove(pid).is_some() {
            self.remove_record(pid)?;
        }
        Ok(())
    }

    fn task_tick(&self, cpu: CpuId, pid: Pid, runtime: u64) -> Result<bool> {
        let mut rq = self.rqs.lock(cpu)?;
        let rq = &mut *rq;
        if !rq.is_running(pid) {
            return Ok(false);
        }
        let Some(task) = rq.tasks.get_mut(pid) else {
            return Ok(false);
        };
        task.charge(runtime);
        if self.throttled(task)?.is_some() {
            return Ok(true); // its cgroup's budget ran out
        }
        let vruntime = task.vruntime;
        rq.update_min_vruntime(Some(vruntime));
        // Wakeup preemption at the tick: a task woke, and the next waiting
        // task is behind the running one by more than the wakeup
        // granularity. (With `wakeup_preemption=1` the wakeup itself
        // checked too, against this task's vruntime as of its last charge
        // and the woken task only.) Otherwise the slice ends it.
        let weight_of = |pid: Pid| rq.tasks.get(pid).map_or(NICE_0_WEIGHT, |t| t.weight);
        let preempt = core::mem::take(&mut rq.woken)
            && rq
                .waiting
                .peek()
                .is_some_and(|(p, v, _)| self.params.preempts(vruntime, *v, weight_of(p)));
        // Idle balance: a CPU idles while work waits here that it could take.
        let idle = if rq.waiting.is_empty() {
            CpuSet::empty()
        } else {
            self.idle_cpus()
        };
        let thief = rq
            .waiting
            .iter()
            .take(KICK_SCAN)
            .filter_map(|(pid, _, _)| rq.tasks.get(pid))
            .find_map(|t| self.idle_thief(cpu, &t.allowed, idle));
        self.update_summary(cpu, rq);
        if let Some(idle) = thief {
            self.services.kick_cpu(idle);
        }
        Ok(preempt)
    }

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, wake: Wake) -> Result<CpuId> {
        let Some((home, rq)) = self.locate(pid, Some(prev_cpu))? else {
            return Ok(prev_cpu);
        };
        let Some(task) = rq.tasks.get(pid).copied() else {
            return Ok(prev_cpu);
        };
        drop(rq);
        let allowed = task.allowed;
        let cpu = match self.sync_target(allowed, wake) {
            Some(waker) => waker,
            None => self.choose_cpu(allowed, prev_cpu, task.new),
        };
        // Its record goes ahead, so that the wakeup finds it there.
        if cpu != home && task.state == State::Off {
            if let Some((mut src, mut dst)) = self.rqs.lock_pair(home, cpu)? {
                if src.tasks.get(pid).is_some_and(|t| t.state == State::Off) {
                    src.move_task(&mut dst, pid);
                }
            }
        }
        Ok(cpu)
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        let to = sched.cpu();
        // Where `balance` found it, normally.
        let claim = self
            .summary(to)
            .map_or(u64::MAX, |c| c.claimed.replace(u64::MAX));
        let claimed_from =
            (claim >> 32 == u64::from(pid as u32)).then_some((claim & 0xffff_ffff) as CpuId);
        let from = match claimed_from {
            Some(from) => Some(from),
            None => self.locate(pid, None)?.map(|(cpu, _)| cpu),
        };
        let Some(from) = from else {
            return Ok(Some(sched));
        };
        // Refused (the new token comes back) unless it still waits there
        // and may run on the thief: Enoki-C checked the thief's answer
        // without the task's CPU's lock, and its affinity may have changed.
        let Some((mut src_rq, mut dst_rq)) = self.rqs.lock_pair(from, to)? else {
            return Ok(Some(sched));
        };
        let (src, dst) = (&mut *src_rq, &mut *dst_rq);
        if src
            .tasks
            .get(pid)
            .is_none_or(|t| t.state != State::Waiting || !t.allowed.contains(to))
        {
            return Ok(Some(sched));
        }
        // Out of the queue it waits in, into the thief's, keeping its lag.
        let Some(old) = src.waiting.remove(pid).map(|(_, token)| token) else {
            return Ok(Some(sched));
        };
        if let Some(task) = src.tasks.get_mut(pid) {
            task.state = State::Off;
            src.load = src.load.saturating_sub(task.weight);
        }
        let handed_back = if !src.move_task(dst, pid) {
            Err(sched)
        } else {
            let vruntime = dst.tasks.get(pid).map_or(dst.min_vruntime, |t| t.vruntime);
            dst.queue_token(pid, vruntime, sched).inspect_err(|_| {
                // No room: it goes back where it was.
                let _ = dst.move_task(src, pid);
            })
        };
        let result = match handed_back {
            Ok(()) => Some(old),
            Err(sched) => {
                let vruntime = src.tasks.get(pid).map_or(src.min_vruntime, |t| t.vruntime);
                let _ = src.queue_token(pid, vruntime, old);
                Some(sched)
            }
        };
        self.update_summary(from, src);
        self.update_summary(to, dst);
        Ok(result)
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        let Some(near) = self.near.get(cpu) else {
            return Ok(None);
        };
        let mut stealable = self.stealable.get();
        stealable.remove(cpu);
        if stealable.is_empty() {
            return Ok(None);
        }
        // Nearest first: its LLC, the rest of its node, then the other
        // nodes busy enough to take work from.
        let remote = near
            .remote
            .iter()
            .filter(|node| {
                node.iter()
                    .next()
                    .is_some_and(|victim| self.may_steal(cpu, victim))
            })
            .copied();
        for victims in [near.llc, near.node.without(near.llc)]
            .into_iter()
            .chain(remote)
        {
            if let Some((pid, victim)) = self.task_to_steal(cpu, (victims & stealable).iter())? {
                if let Some(c) = self.summary(cpu) {
                    c.claimed.set(u64::from(pid as u32) << 32 | victim as u64);
                }
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }

    fn task_prio_changed(&self, pid: Pid, weight: u32, nice: i32) -> Result {
        let weight = u64::from(if weight > 0 {
            weight
        } else {
            nice_to_weight(nice)
        });
        let Some((cpu, mut rq)) = self.locate(pid, None)? else {
            return Ok(());
        };
        let rq = &mut *rq;
        let min = rq.min_vruntime;
        let Some(task) = rq.tasks.get_mut(pid) else {
            return Ok(());
        };
        // The task keeps its lag (its distance to min_vruntime) in CPU time;
        // Enoki-C takes a waiting task out of its queue for this. A running
        // task's next slice follows the new weight.
        task.nice_weight = weight;
        let weight = self.recount(task)?;
        let old = core::mem::replace(&mut task.weight, weight);
        task.vruntime = rescale_lag(task.vruntime, min, old, weight);
        let (state, vruntime) = (task.state, task.vruntime);
        match state {
            State::Waiting => {
                rq.waiting.set_key(pid, vruntime);
            }
            State::Throttled => {
                rq.throttled.set_key(pid, vruntime);
            }
            State::Running | State::Off => {}
        }
        if matches!(state, State::Waiting | State::Running) {
            rq.load = rq.load.saturating_sub(old).saturating_add(weight);
        }
        self.update_summary(cpu, rq);
        Ok(())
    }

    fn task_affinity_changed(&self, pid: Pid, allowed: &CpuSet) -> Result {
        // Enoki-C re-queues the task with a token for an allowed CPU.
        if let Some((_, mut rq)) = self.locate(pid, None)? {
            if let Some(task) = rq.tasks.get_mut(pid) {
                task.allowed = *allowed;
            }
        }
        Ok(())
    }

    fn cgroup_new(&self, cgroup: &CgroupInfo) -> Result {
        let now = self.services.now();
        self.cgroups.lock()?.add(cgroup, now);
        Ok(())
    }

    /// Tasks held back by the old limit wait again at once: under the
    /// new one they may be within budget (checked when they are picked),
    /// and nothing else would run them before their old refill time.
    fn cgroup_bandwidth(&self, cgroup: CgroupId, bandwidth: Bandwidth) -> Result {
        let now = self.services.now();
        self.cgroups.lock()?.set_bandwidth(cgroup, &bandwidth, now);
        for cpu in self.rqs.cpus() {
            let mut rq = self.rqs.lock(cpu)?;
            if !rq.unthrottle_all() {
                continue;
            }
            let busy = rq.curr.is_some();
            self.update_summary(cpu, &mut rq);
            drop(rq);
            if !busy {
                self.services.kick_cpu(cpu);
            }
        }
        Ok(())
    }

    fn cgroup_gone(&self, cgroup: CgroupId) -> Result {
        self.cgroups.lock()?.remove(cgroup);
        Ok(())
    }

    fn cgroup_weight(&self, cgroup: CgroupId, weight: u32) -> Result {
        self.cgroups.lock()?.set_weight(cgroup, weight);
        Ok(())
    }

    /// A runnable task's count moves with it; its weight follows from its
    /// next enqueue. A throttled one was held back by budgets that are no
    /// longer its own: it waits again (its new cgroups' budget is checked
    /// when it is picked), or nothing would run it before the old
    /// cgroup's refill.
    fn task_cgroup_moved(&self, pid: Pid, cgroup: CgroupId) -> Result {
        let Some((cpu, mut rq)) = self.locate(pid, None)? else {
            return Ok(());
        };
        let Some(task) = rq.tasks.get_mut(pid) else {
            return Ok(());
        };
        task.cgroup = cgroup;
        self.recount(task)?;
        let allowed = task.allowed;
        if !rq.unthrottle(pid) {
            return Ok(());
        }
        let busy = rq.curr.is_some();
        self.update_summary(cpu, &mut rq);
        drop(rq);
        self.kick_for_released(cpu, busy, &allowed);
        Ok(())
    }

    /// An offline CPU publishes itself so (never idle, never the least
    /// loaded), so placement needs no other look.
    fn cpu_online(&self, cpu: CpuId) -> Result {
        self.set_offline(cpu, false)
    }

    fn cpu_offline(&self, cpu: CpuId) -> Result {
        self.set_offline(cpu, true)
    }

    /// Each task's lag behind its queue, so the next version keeps the
    /// fair order (tasks not yet placed have none: they start as new).
    fn reregister_prep(&self, carry: &mut Carry) -> Result {
        carry.upgrades = self.upgrades.get().saturating_add(1);
        let mut slots = carry.lags.iter_mut();
        let mut len: u32 = 0;
        for cpu in self.rqs.cpus() {
            let rq = self.rqs.lock(cpu)?;
            for (pid, task) in rq.tasks.iter() {
                let Some(slot) = slots.next() else {
                    break;
                };
                let ahead = task.vruntime.saturating_sub(rq.min_vruntime);
                *slot = Lag { pid, ahead };
                len = len.saturating_add(1);
            }
        }
        carry.len = len;
        Ok(())
    }

    /// Each task met already keeps its lag: its record, not yet placed,
    /// holds the lag until its first wakeup places it (see home_newborn).
    fn reregister_init(&self, carry: &Carry) -> Result {
        self.upgrades.set(carry.upgrades);
        let mut registry = self.registry.lock()?;
        let len = usize::try_from(carry.len).unwrap_or(usize::MAX);
        for lag in carry.lags.iter().take(len) {
            if let Some(Some(task)) = registry.get_mut(lag.pid) {
                task.vruntime = lag.ahead;
                task.new = false;
            }
        }
        Ok(())
    }
}

enoki::export_scheduler!(Wfq);
