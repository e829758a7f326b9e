// SPDX-License-Identifier: GPL-2.0
//! Locality (paper 4.2.3): per-CPU FIFO run queues where the tasks an
//! application hints into the same group share one CPU, and so its caches
//! (a message thread and the workers it wakes with a futex, which the
//! kernel cannot see as a sync wakeup), and different groups get
//! different cores.
//!
//! # Hints, for application writers
//!
//! Open a hint queue on `/dev/enoki` (`enoki_hints::HintQueue::<GroupHint>`,
//! with this crate's [`GroupHint`]) and send a hint about each of your
//! threads to co-locate:
//!
//! - `GroupHint { group: g }`, `g` in 1..=[`MAX_GROUPS`], puts the thread
//!   in group `g`. Groups are the machine's, not the queue's: threads of
//!   any application hinted into the same group share a CPU.
//! - `group: 0` takes the thread out of its group; any other value is
//!   refused (EINVAL), as are a hint about a task the scheduler does not
//!   schedule and a hint through a queue it does not hold open.
//! - Each hint taken is answered on the queue's reverse ring with a
//!   [`GroupHome`]: the group and the CPU it lives on.
//! - A group's CPU, its home, is chosen when its first thread joins: an
//!   online CPU the thread may run on, on the physical core home to the
//!   fewest groups (the lowest CPU on ties). The group keeps it until its
//!   last thread leaves or exits, or the CPU goes offline.
//! - A hint is advice. It takes effect when the thread next wakes, and is
//!   ignored for that wakeup when more than `overload` tasks already wait
//!   on the home CPU, or the thread may not run there: the thread is then
//!   placed as an ungrouped one.
//! - At most [`MAX_QUEUES`] queues are open at once; another open fails
//!   (ENOSPC) until one closes.
//! - A live upgrade keeps the queues open but forgets every group: send
//!   the hints again after one.
//!
//! # Policy
//!
//! - A grouped task waking goes to its group's home when it may run there
//!   and at most `overload` tasks wait there (the scheduler's argument,
//!   `enoki load locality --args overload=N`, 0..=1048576, default 4).
//! - Any other waking task is placed as FIFO places it: on the waker's CPU
//!   for a sync wakeup when nothing waits there (the waker is about to
//!   sleep), else on its previous CPU if idle, else on an idle allowed CPU
//!   (same LLC first), else back on its previous CPU.
//! - A picked task runs for one slice (the module's `slice_us`), then goes
//!   to the back of its CPU's queue.
//! - An idle CPU steals a task whose group lives on it first, else the
//!   oldest task it may take from the longest queue, nearest first. A
//!   grouped task waiting on its home is not taken while at most
//!   `overload` tasks wait there, so groups stay together under load; a
//!   CPU may then idle while such a task waits (not work-conserving).
//! - A CPU that queues a task it does not hold kicks an idle CPU that may
//!   take it (the task's home first).
#![forbid(unsafe_code)]

mod groups;
mod hints;
#[cfg(any(test, feature = "introspect"))]
mod introspect;

pub use groups::MAX_GROUPS;
pub use hints::{GroupHint, GroupHome, MAX_QUEUES};
#[cfg(any(test, feature = "introspect"))]
pub use introspect::Stats;

use enoki::{
    AllowedCpus, CpuId, CpuSet, EnokiScheduler, FifoQueues, HintError, InitContext, InitError,
    Messages, NotTaken, PickError, Pid, PrevTask, QueueId, Result, Ring, Schedulable, Services,
    SpinLock, TaskError, TaskInfo, Topology, Waiting, Wake,
};
use groups::{Groups, Placement};
use hints::{Counters, OpenQueues};

/// Tasks that may wait on a group's home before the group's hints are
/// ignored, unless `overload=` says otherwise.
const DEFAULT_OVERLOAD: u64 = 4;
/// The largest `overload=`: the most tasks a module may hold.
const MAX_OVERLOAD: u64 = 1 << 20;

/// What is kept with a waiting task's token: where it may run and its
/// group's home when it was queued (so stealing needs no second lock).
#[derive(Clone, Copy)]
struct Place {
    allowed: CpuSet,
    home: Option<CpuId>,
}

impl AllowedCpus for Place {
    fn allows(&self, cpu: CpuId) -> bool {
        self.allowed.contains(cpu)
    }
}

/// The locality-aware scheduler.
pub struct Locality {
    topology: Topology,
    services: Services,
    slice_ns: u64,
    /// Most tasks waiting on a group's home for it to take more of the
    /// group (and to keep the group's waiting tasks from thieves).
    overload: usize,
    /// Waiting tasks with their places, and which CPUs are idle or
    /// offline (never chosen).
    queues: FifoQueues<Place>,
    /// Every task's allowed CPUs and group, and every group's home.
    groups: SpinLock<Groups>,
    open_queues: SpinLock<OpenQueues>,
    counters: Counters,
}

impl Locality {
    /// Whether `cpu`, with `waiting` tasks queued, keeps a task waiting
    /// there from thieves: it is the task's home and not overloaded.
    fn holds(&self, home: Option<CpuId>, cpu: CpuId, waiting: usize) -> bool {
        home == Some(cpu) && waiting <= self.overload
    }

    /// Queues `token` at the back of its CPU's queue; unless that CPU holds
    /// the task for its group, or is idle, or is about to be handed over by
    /// a sync waker, kicks an idle CPU that may take it.
    fn enqueue(&self, token: Schedulable) -> Result<(), NotTaken> {
        let cpu = token.cpu();
        let Some((allowed, home)) = self.groups.lock()?.placement(token.pid()) else {
            return Err(token.into());
        };
        let waiting = self.queues.push_back(token, Place { allowed, home })?;
        let handed_over = self.queues.take_handoff(cpu);
        if !handed_over && !self.holds(home, cpu, waiting) {
            self.kick_thief(cpu, &allowed, home);
        }
        Ok(())
    }

    /// Kicks an idle CPU that may run a task waiting on `cpu`, unless `cpu`
    /// is idle itself: the task's home first, else the nearest.
    fn kick_thief(&self, cpu: CpuId, allowed: &CpuSet, home: Option<CpuId>) {
        let idle = self.queues.idle_cpus();
        if idle.contains(cpu) {
            return;
        }
        let may_take = idle & *allowed;
        let thief = home
            .filter(|c| may_take.contains(*c))
            .or_else(|| self.topology.nearest_in(cpu, &may_take));
        if let Some(idle) = thief {
            self.services.kick_cpu(idle);
        }
    }

    /// Where a new group whose first task may run on `allowed` lives: the
    /// least crowded online CPU of `allowed`, or of all if none is online.
    fn choose_home(&self, groups: &Groups, allowed: &CpuSet) -> Option<CpuId> {
        let online = self.queues.online_cpus();
        let usable = online & *allowed;
        let candidates = if usable.is_empty() { online } else { usable };
        groups.least_crowded(&self.topology, candidates)
    }

    /// Where a waking `pid` may run and its group's home (a new one if the
    /// group lost its CPU to hotplug).
    fn wakeup_placement(&self, pid: Pid) -> Result<Option<Placement>> {
        Ok(self
            .groups
            .lock()?
            .placement_rehomed(pid, |groups, allowed| self.choose_home(groups, allowed)))
    }

    /// Whether a grouped task allowed on `allowed` wakes on its group's
    /// `home`: the home is online and not overloaded (counted when it is).
    fn home_takes(&self, home: CpuId, allowed: &CpuSet) -> Result<bool> {
        if !allowed.contains(home) || !self.queues.is_online(home) {
            return Ok(false);
        }
        let overloaded = self.queues.lock(home)?.len() > self.overload;
        self.counters.wakeup(overloaded);
        Ok(!overloaded)
    }

    /// The task `thief` would take from `from`'s queue: one whose group
    /// lives on the thief, else the oldest the thief may run that `from`
    /// does not hold for its group.
    fn stealable<'q>(
        &self,
        queue: &'q Ring<Waiting<Place>>,
        from: CpuId,
        thief: CpuId,
    ) -> Option<&'q Waiting<Place>> {
        let allowed = |w: &&Waiting<Place>| w.info.allowed.contains(thief);
        let waiting = queue.len();
        queue
            .iter()
            .filter(allowed)
            .find(|w| w.info.home == Some(thief))
            .or_else(|| {
                queue
                    .iter()
                    .filter(allowed)
                    .find(|w| !self.holds(w.info.home, from, waiting))
            })
    }

    /// Moves `pid` into `group` if it is a group and the task is known.
    fn regroup(&self, pid: Pid, group: u32) -> Result<bool> {
        Ok(self.groups.lock()?.regroup(pid, group, |groups, allowed| {
            self.choose_home(groups, allowed)
        }))
    }
}

impl EnokiScheduler for Locality {
    const NAME: &'static str = "locality";
    type Hint = GroupHint;
    type RevHint = GroupHome;
    /// Groups do not survive a live upgrade: the next version starts from
    /// the task list with every task ungrouped (the queues stay open).
    type UpgradeState = ();
    const MESSAGES: Messages = Messages::SELECT
        .and(Messages::BALANCE)
        .and(Messages::AFFINITY)
        .and(Messages::HOTPLUG)
        .and(Messages::HINTS);

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&["overload"])?;
        let overload = ctx
            .args
            .u64_in("overload", DEFAULT_OVERLOAD, 0, MAX_OVERLOAD)?;
        let nr = ctx.topology.nr_cpus();
        Ok(Locality {
            topology: ctx.topology.try_clone()?,
            services: ctx.services.clone(),
            slice_ns: ctx.slice_ns,
            overload: usize::try_from(overload).unwrap_or(usize::MAX),
            queues: FifoQueues::try_new(nr, ctx.max_tasks)?,
            groups: SpinLock::new(Groups::new(ctx.max_tasks)?),
            open_queues: SpinLock::new(OpenQueues::new()?),
            counters: Counters::default(),
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
        if self.groups.lock()?.add(task.pid, task.allowed) {
            Ok(())
        } else {
            Err(TaskError::Full)
        }
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
        self.groups.lock()?.remove(pid);
        Ok(())
    }

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, wake: Wake) -> Result<CpuId> {
        let Some((allowed, home)) = self.wakeup_placement(pid)? else {
            return Ok(prev_cpu);
        };
        if let Some(home) = home {
            if self.home_takes(home, &allowed)? {
                return Ok(home);
            }
        }
        self.queues
            .place_waking(&self.topology, prev_cpu, &allowed, wake)
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        // A task of a group living here first, then the longest queue;
        // the nearest wins ties.
        let mut best: Option<((bool, usize), Pid)> = None;
        // Queues that held nothing when last unlocked are not locked.
        let holding = self.queues.holding_tasks();
        for other in self.topology.nearest_of(cpu, &holding) {
            let queue = self.queues.lock(other)?;
            let Some(w) = self.stealable(&queue, other, cpu) else {
                continue;
            };
            let rank = (w.info.home == Some(cpu), queue.len());
            if best.is_none_or(|(best_rank, _)| rank > best_rank) {
                best = Some((rank, w.token.pid()));
            }
        }
        Ok(best.map(|(_, pid)| pid))
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        self.queues.migrate(pid, sched, |old| self.enqueue(old))
    }

    fn task_affinity_changed(&self, pid: Pid, allowed: &CpuSet) -> Result {
        self.groups.lock()?.set_allowed(pid, allowed);
        Ok(())
    }

    fn cpu_online(&self, cpu: CpuId) -> Result {
        self.queues.set_online(cpu, true);
        Ok(())
    }

    fn cpu_offline(&self, cpu: CpuId) -> Result {
        self.queues.set_online(cpu, false);
        self.groups.lock()?.evict(cpu);
        Ok(())
    }

    fn register_queue(&self, queue: QueueId, _owner: Pid, _thread: Pid) -> Result<(), TaskError> {
        if self.open_queues.lock()?.open(queue) {
            Ok(())
        } else {
            Err(TaskError::Full)
        }
    }

    fn parse_hint(&self, queue: QueueId, pid: Pid, hint: GroupHint) -> Result<(), HintError> {
        let open = self.open_queues.lock()?.is_open(queue);
        let taken = open && self.regroup(pid, hint.group)?;
        self.counters.hint(taken);
        if !taken {
            return Err(HintError::Refused);
        }
        let home = self.groups.lock()?.home(hint.group);
        if let Some(cpu) = home {
            let home = GroupHome {
                group: hint.group,
                cpu: u32::try_from(cpu).unwrap_or(u32::MAX),
            };
            self.services.send_rev_hint(queue, pid, &home);
        }
        Ok(())
    }

    fn unregister_queue(&self, queue: QueueId) -> Result {
        self.open_queues.lock()?.close(queue);
        Ok(())
    }
}

enoki::export_scheduler!(Locality);
