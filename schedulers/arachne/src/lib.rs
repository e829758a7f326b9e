// SPDX-License-Identifier: GPL-2.0
//! Arachne (paper 4.2.4): a core arbiter. Applications ask for a number
//! of CPUs through a hint queue; the scheduler grants CPUs exclusively to
//! each application's threads and tells it which ones it holds, through
//! the queue's reverse ring. Everything else runs, as under FIFO, on the
//! CPUs nobody holds.
//!
//! # Hints, for application writers
//!
//! Open a hint queue on `/dev/enoki`
//! (`enoki_hints::HintQueue::<CoreRequest, CoreGrant>`, with this crate's
//! [`CoreRequest`] and [`CoreGrant`]). The queue belongs to your process
//! (its thread group): requests through it are for the whole process.
//!
//! - `CoreRequest::cores(n, priority)`, sent about any thread of your
//!   process (pid 0: the sender), asks for `n` CPUs for your process at
//!   `priority` (0, the most urgent, to [`LOWEST_PRIORITY`]); `n = 0`
//!   gives them all back. A request replaces the one before. Refused
//!   (EINVAL): `n` above the machine's CPU count, a priority past the
//!   lowest, an unknown `kind`, a thread of another process, a task the
//!   scheduler does not schedule.
//! - Each request taken is answered with a [`CoreGrant`] of kind
//!   [`GRANT_HELD`] on the queue it came through: `mask` (bit `i % 64` of
//!   word `i / 64` is CPU `i`; [`CoreGrant::count`] counts them) and
//!   `generation`. Every later change of what your process holds (another
//!   process asking or giving back CPUs, a CPU going offline or coming
//!   back) is sent to each of your process's queues, at once: act on the
//!   newest `generation` (the counter counts every change of anyone's
//!   grants).
//! - When a more urgent process, or a fair split, needs CPUs you still
//!   want, you are asked to give them back: a [`CoreGrant`] of kind
//!   [`GRANT_RECLAIM`] names them. You hold them until you give each
//!   back, by `CoreRequest::release(cpu)` (refused for a CPU not asked
//!   back) or by leaving nothing of yours to run there (Arachne's runtime
//!   parks the thread it ran there), or until the grace period
//!   (`reclaim_ms`, below) ends: then the CPU is taken, and a thread
//!   still running there moves to your other CPUs. The process waiting
//!   for the CPUs gets them as they come back. CPUs you give up yourself
//!   by asking for fewer, and everything when `reclaim_ms=0`, go at once.
//! - You may get fewer CPUs than asked: at least `reserve` CPUs (see
//!   below) are never granted, CPUs from [`GRANT_CPUS`] on never are, and
//!   when the processes asking want more than the rest, it is split max-min
//!   fairly: each gets what it asked up to a common level, the level as
//!   high as fits. An unmet request stays: more CPUs come (and a new
//!   `CoreGrant` with them) when others give some back.
//! - While your process holds CPUs, all of its threads run there only, and
//!   nothing else runs there (a thread whose affinity excludes all of them
//!   runs where its affinity lets it; a task pinned to one of your CPUs
//!   alone runs there too). With nothing held, your threads run with
//!   everyone else's.
//! - Your process holds its CPUs until it asks for 0 or closes its last
//!   queue (on exit, the kernel closes it). At most [`MAX_QUEUES`] queues
//!   and [`MAX_PROCESSES`] processes are open at once; another open fails
//!   (ENOSPC) until one closes.
//! - A live upgrade drops every grant (the state carried over is `()`):
//!   the queues stay open, but no `CoreGrant` says so, so ask again after
//!   an upgrade (the answer says what you hold).
//!
//! # Policy
//!
//! - Arbitration: of the online CPUs below [`GRANT_CPUS`], all but
//!   `reserve` (the argument, `enoki load arachne --args reserve=N`,
//!   1..=the CPU count, default 1) can be granted. Priorities are served
//!   in order, each sharing what the more urgent left: what is asked is
//!   given when it fits, else split max-min fairly; the CPUs left over at the
//!   level go one each to processes already holding more than it, then to
//!   the earliest askers. On every new split each process keeps as many of
//!   its CPUs as it may (few moves); a process giving some up keeps whole
//!   cores and one cache first, a growing one takes CPUs on its cores, then
//!   in its cache, then, starting out, in the cache with most room, on
//!   cores nobody else uses, highest CPUs first (low ones, where the
//!   kernel's housekeeping runs, stay with everyone).
//! - Placement: a waking task goes to a CPU where it may run (see the
//!   hints above): the sync waker's CPU when nothing waits there, else its
//!   previous CPU if idle, else the nearest idle one, else its previous
//!   CPU, else the nearest; it runs one slice (the module's `slice_us`),
//!   then goes to the back of its CPU's queue. An idle CPU steals the
//!   oldest task it may run from the longest queue, nearest first.
//! - Reclaim: a CPU asked back has a grace period of `reclaim_ms`
//!   (0..=10000, default 20), timed by the CPU's preemption timer; the
//!   count of CPUs given back in time and taken at its end is kept.
//! - A change of grants takes effect at once: every CPU that changed
//!   hands, or runs a task of a process whose grant changed, is preempted.
//!   A CPU never picks a task that may no longer run there, and hands back
//!   a running one; a task left waiting on such a CPU asks a CPU where it
//!   may run (an idle one first, else the nearest) to come and take it:
//!   that CPU declines its own queue at its next pick (so a busy CPU
//!   takes it within a slice) and steals it.
#![forbid(unsafe_code)]

pub mod grants;
mod hints;
#[cfg(any(test, feature = "introspect"))]
mod introspect;

pub use grants::{MAX_PROCESSES, MAX_QUEUES};
pub use hints::{
    CoreGrant, CoreRequest, GRANT_CPUS, GRANT_HELD, GRANT_RECLAIM, LOWEST_PRIORITY, RELEASE_CORE,
    REQUEST_CORES,
};
#[cfg(any(test, feature = "introspect"))]
pub use introspect::Stats;

use enoki::{
    cpu_goes_idle, AllowedCpus, CpuFlags, CpuId, CpuSet, EnokiScheduler, FifoQueues, FixedVec,
    HintError, InitContext, InitError, Messages, NotTaken, PickError, Pid, PrevTask, QueueId,
    Result, Ring, RwLock, Schedulable, Services, Shared, SpinLock, TaskError, TaskInfo, TaskMap,
    Topology, Waiting, Wake,
};
use grants::{Change, Grants, Reclaim};
use hints::Counters;

/// CPUs never granted unless `reserve=` says otherwise.
const DEFAULT_RESERVE: u64 = 1;
/// The grace period of a CPU asked back unless `reclaim_ms=` says
/// otherwise: a few of a runtime's scheduling rounds, short next to the
/// time a process asking for CPUs waits for anything else.
const DEFAULT_RECLAIM_MS: u64 = 20;
/// The longest grace period `reclaim_ms=` may set.
const MAX_RECLAIM_MS: u64 = 10_000;

/// A task as the scheduler knows it, and what is kept with its token while
/// it waits (so that picking and stealing need no task lookup; where it
/// may run follows from it and the grants of the moment).
#[derive(Clone, Copy)]
struct Member {
    tgid: Pid,
    allowed: CpuSet,
}

impl AllowedCpus for Member {
    fn allows(&self, cpu: CpuId) -> bool {
        self.allowed.contains(cpu)
    }
}

/// A task an idle CPU could steal from another CPU's queue.
#[derive(Clone, Copy)]
struct Steal {
    /// The task may no longer run where it waits; then the longest queue.
    rank: (bool, usize),
    pid: Pid,
    from: CpuId,
    /// Tasks waiting on `from` where they may no longer run, that the
    /// thief may run (the one it would steal included).
    stranded: usize,
}

/// The core arbiter.
pub struct Arachne {
    topology: Topology,
    services: Services,
    slice_ns: u64,
    /// Waiting tasks, and which CPUs are idle or offline (never chosen).
    queues: FifoQueues<Member>,
    /// Every task's process and allowed CPUs.
    tasks: SpinLock<TaskMap<Member>>,
    /// Queues, requests and who holds which CPU. Taken after a run queue,
    /// never before one: picking and stealing read it with their queue
    /// locked.
    grants: RwLock<Grants>,
    /// The process of the task each CPU last picked or kept (0: none), so
    /// that a change of its grant preempts it.
    running: FixedVec<Shared<Pid>>,
    /// The grace period of a CPU asked back, ns (0: taken at once).
    reclaim_ns: u64,
    /// Per CPU asked back, when its grace period ends ([`Services::now`]
    /// time; 0: not asked back). Mirrors the grants, so that picking
    /// needs no lock to know.
    deadlines: FixedVec<Shared<u64>>,
    counters: Counters,
    /// CPUs asked to come and take a task waiting where it may no longer
    /// run: their next pick declines, so that they steal.
    pull: CpuFlags,
    /// CPUs whose pick declined for a pull and that have not stolen yet:
    /// the pick after a running task is handed back declines too.
    pulling: CpuFlags,
}

impl Arachne {
    fn set_running(&self, cpu: CpuId, tgid: Pid) {
        if let Some(r) = self.running.get(cpu) {
            r.set(tgid);
        }
    }

    /// `pid`'s process and allowed CPUs, and where it may run now; `None`
    /// for a task the scheduler does not know.
    fn placement(&self, pid: Pid) -> Result<Option<(Member, CpuSet)>> {
        let Some(member) = self.tasks.lock()?.get(pid).copied() else {
            return Ok(None);
        };
        let may_run = self.grants.read()?.may_run(member.tgid, &member.allowed);
        Ok(Some((member, may_run)))
    }

    /// Queues `token` at the back of its CPU's queue. If the task may no
    /// longer run there, asks a CPU where it may to come and take it;
    /// otherwise, unless that CPU is idle or about to be handed over by a
    /// sync waker, kicks an idle CPU that may run it.
    fn enqueue(&self, token: Schedulable) -> Result<(), NotTaken> {
        let cpu = token.cpu();
        let Some((member, may_run)) = self.placement(token.pid())? else {
            return Err(token.into());
        };
        self.queues.push_back(token, member)?;
        let handed_over = self.queues.take_handoff(cpu);
        if !may_run.contains(cpu) {
            self.pull_towards(cpu, &may_run);
        } else if !handed_over {
            if let Some(idle) = self.queues.idle_thief(&self.topology, cpu, &may_run) {
                self.services.kick_cpu(idle);
            }
        }
        Ok(())
    }

    /// A task waits on `from`, where it may no longer run: asks a CPU of
    /// `may_run` to come and take it, an idle one first, else the nearest
    /// (which comes when its running task's slice ends).
    fn pull_towards(&self, from: CpuId, may_run: &CpuSet) {
        let (online, idle) = self.queues.online_and_idle();
        let online = online & *may_run;
        let near = || self.topology.nearest_of(from, &online);
        let Some(to) = near().find(|c| idle.contains(*c)).or_else(|| near().next()) else {
            return;
        };
        self.pull.set(to, true);
        self.counters.pulls.fetch_add(1);
        self.services.kick_cpu(to);
    }

    /// The task `thief` would take from `from`'s queue: one that may no
    /// longer run on `from` first, else the oldest it may run.
    fn stealable(
        &self,
        queue: &Ring<Waiting<Member>>,
        grants: &Grants,
        from: CpuId,
        thief: CpuId,
    ) -> Option<Steal> {
        let mut stranded = 0usize;
        let mut found: Option<(bool, Pid)> = None;
        for w in queue.iter() {
            let may_run = grants.may_run(w.info.tgid, &w.info.allowed);
            if !may_run.contains(thief) {
                continue;
            }
            let is_stranded = !may_run.contains(from);
            if is_stranded {
                stranded = stranded.saturating_add(1);
            }
            if found.is_none_or(|(s, _)| is_stranded && !s) {
                found = Some((is_stranded, w.token.pid()));
            }
        }
        let (is_stranded, pid) = found?;
        Some(Steal {
            rank: (is_stranded, queue.len()),
            pid,
            from,
            stranded,
        })
    }

    /// Tells every queue whose process's grant `change` changed what it
    /// holds now (and `asker`, which made a request, in any case), and
    /// preempts every CPU that changed hands or runs a task of a process
    /// whose grant changed, so that the change takes effect at once.
    fn publish(&self, grants: &Grants, change: &Change, asker: Option<QueueId>) {
        let mut answered = false;
        for (queue, tgid, grant) in grants.notices(change) {
            answered |= Some(queue) == asker;
            self.services.send_rev_hint(queue, tgid, &grant);
        }
        if let Some((queue, (tgid, grant))) = asker.and_then(|q| grants.answer(q).map(|a| (q, a))) {
            if !answered {
                self.services.send_rev_hint(queue, tgid, &grant);
            }
        }
        let reclaiming = grants.reclaiming();
        for cpu in self.topology.cpus() {
            let runs = self.running.get(cpu).map_or(0, Shared::get);
            let affected =
                change.moved.contains(cpu) || (runs != 0 && grants.changed(runs, change));
            if affected && self.queues.is_online(cpu) {
                self.services.preempt_cpu(cpu);
            }
            self.set_deadline(cpu, reclaiming.contains(cpu));
        }
    }

    /// Starts `cpu`'s grace period when it is newly asked back (its timer
    /// preempts it when the period ends, so that it is taken), or ends it
    /// when it is no longer asked back.
    fn set_deadline(&self, cpu: CpuId, asked_back: bool) {
        let Some(deadline) = self.deadlines.get(cpu) else {
            return;
        };
        match (asked_back, deadline.get()) {
            (true, 0) => {
                deadline.set(self.services.now().saturating_add(self.reclaim_ns).max(1));
                self.services.set_timer(cpu, self.reclaim_ns);
                if self.queues.is_idle(cpu) {
                    // Nothing runs there: its pick gives it back now.
                    self.services.kick_cpu(cpu);
                }
            }
            (false, d) if d != 0 => {
                deadline.set(0);
                self.services.cancel_timer(cpu);
            }
            _ => {}
        }
    }

    fn deadline(&self, cpu: CpuId) -> u64 {
        self.deadlines.get(cpu).map_or(0, Shared::get)
    }

    /// Takes `cpu` from the process asked to give it back, if its grace
    /// period is over. Before then it leaves the timer alone: armed by
    /// [`Self::set_deadline`], it fires no earlier than the deadline (the
    /// deadline counts from a message stamp, on the timer's clock, taken
    /// before the arming), and a CPU going offline loses its grant, so no
    /// pick of the grace period finds it disarmed.
    fn take_if_due(&self, cpu: CpuId) -> Result {
        let deadline = self.deadline(cpu);
        if deadline == 0 || self.services.now() < deadline {
            return Ok(());
        }
        if self.give_back(cpu)? {
            self.counters.taken.fetch_add(1);
        }
        Ok(())
    }

    /// `cpu`, asked back, goes from its process to the next split. False
    /// when it was not asked back.
    fn give_back(&self, cpu: CpuId) -> Result<bool> {
        let mut grants = self.grants.write()?;
        Ok(self.release(&mut grants, cpu, None))
    }

    /// `cpu`, asked back of `holder` (of any process, with `None`), goes
    /// to the next split. False when it was not.
    fn release(&self, grants: &mut Grants, cpu: CpuId, holder: Option<Pid>) -> bool {
        let Some(change) = grants.release_cpu(cpu, holder, &self.topology) else {
            return false;
        };
        self.publish(grants, &change, None);
        true
    }

    /// Process `tgid`'s request, made through `queue`: whether it was
    /// taken.
    fn request(&self, queue: QueueId, tgid: Pid, hint: &CoreRequest) -> Result<bool> {
        let in_range = usize::try_from(hint.cores).is_ok_and(|n| n <= self.topology.nr_cpus());
        let mut grants = self.grants.write()?;
        if grants.queue_owner(queue) != Some(tgid) {
            return Ok(false);
        }
        match hint.kind {
            REQUEST_CORES if in_range && hint.priority <= LOWEST_PRIORITY => {
                let change = grants.request(tgid, hint.cores, hint.priority, &self.topology);
                self.publish(&grants, &change, Some(queue));
                Ok(true)
            }
            RELEASE_CORE => {
                let cpu = usize::try_from(hint.cpu).unwrap_or(usize::MAX);
                let released = self.release(&mut grants, cpu, Some(tgid));
                if released {
                    self.counters.released.fetch_add(1);
                }
                Ok(released)
            }
            _ => Ok(false),
        }
    }

    fn hotplug(&self, cpu: CpuId, online: bool) -> Result {
        self.queues.set_online(cpu, online);
        let mut grants = self.grants.write()?;
        let change = grants.set_online(cpu, online, &self.topology);
        self.publish(&grants, &change, None);
        Ok(())
    }
}

impl EnokiScheduler for Arachne {
    const NAME: &'static str = "arachne";
    type Hint = CoreRequest;
    type RevHint = CoreGrant;
    /// Grants do not survive a live upgrade: the next version starts from
    /// the task list and the open queues, with nothing granted (processes
    /// ask again).
    type UpgradeState = ();
    const MESSAGES: Messages = Messages::SELECT
        .and(Messages::BALANCE)
        .and(Messages::AFFINITY)
        .and(Messages::HOTPLUG)
        .and(Messages::HINTS);

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&["reserve", "reclaim_ms"])?;
        let nr = ctx.topology.nr_cpus();
        let most = u64::try_from(nr).unwrap_or(u64::MAX);
        let reserve = ctx.args.u64_in("reserve", DEFAULT_RESERVE, 1, most)?;
        let reserve = usize::try_from(reserve).unwrap_or(usize::MAX);
        let reclaim_ms = ctx
            .args
            .u64_in("reclaim_ms", DEFAULT_RECLAIM_MS, 0, MAX_RECLAIM_MS)?;
        let reclaim = if reclaim_ms == 0 {
            Reclaim::AtOnce
        } else {
            Reclaim::Asked
        };
        Ok(Arachne {
            topology: ctx.topology.try_clone()?,
            services: ctx.services.clone(),
            slice_ns: ctx.slice_ns,
            queues: FifoQueues::try_new(nr, ctx.max_tasks)?,
            tasks: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
            grants: RwLock::new(Grants::new(ctx.topology, reserve, reclaim)?),
            running: FixedVec::new_with(nr, |_| Shared::new(0))?,
            reclaim_ns: reclaim_ms.saturating_mul(1_000_000),
            deadlines: FixedVec::new_with(nr, |_| Shared::new(0))?,
            counters: Counters::default(),
            pull: CpuFlags::new(nr)?,
            pulling: CpuFlags::new(nr)?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        // Asked to take a task waiting elsewhere: decline the own queue, so
        // that the kernel balances (twice, since when a task is running
        // the kernel asks again only once it has handed that task back).
        if self.pull.replace(cpu, false) {
            self.pulling.set(cpu, true);
            self.queues.set_idle(cpu, false);
            return Ok(None);
        }
        if self.pulling.replace(cpu, false) {
            self.queues.set_idle(cpu, false);
            return Ok(None);
        }
        self.take_if_due(cpu)?;
        let next = {
            let mut queue = self.queues.lock(cpu)?;
            let grants = self.grants.read()?;
            queue.remove_first(|w| {
                let may_run = grants.may_run(w.info.tgid, &w.info.allowed);
                let here = may_run.contains(cpu);
                if !here {
                    self.pull_towards(cpu, &may_run);
                }
                here
            })
        };
        let idle = cpu_goes_idle(next.is_some(), prev);
        if idle && self.deadline(cpu) != 0 && self.give_back(cpu)? {
            // Asked back, and nothing of its process left to run here.
            self.counters.released.fetch_add(1);
        }
        self.queues.set_idle(cpu, idle);
        self.set_running(cpu, next.as_ref().map_or(0, |w| w.info.tgid));
        Ok(next.map(|w| w.into_token(self.slice_ns)))
    }

    fn keep_running(&self, cpu: CpuId, prev: &PrevTask) -> Result<Option<u64>> {
        if self.pulling.get(cpu) || self.pull.get(cpu) {
            return Ok(None);
        }
        self.take_if_due(cpu)?;
        // A task that may no longer run here goes back (and elsewhere).
        match self.placement(prev.pid)? {
            Some((member, may_run)) if may_run.contains(cpu) => {
                self.set_running(cpu, member.tgid);
                Ok(Some(0))
            }
            Some(_) => Ok(None),
            None => Ok(Some(0)),
        }
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
        let member = Member {
            tgid: task.tgid,
            allowed: task.allowed,
        };
        self.tasks
            .lock()?
            .insert(task.pid, member)
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
        let Some((_, may_run)) = self.placement(pid)? else {
            return Ok(prev_cpu);
        };
        self.queues
            .place_waking(&self.topology, prev_cpu, &may_run, wake)
    }

    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        let asked = self.pull.replace(cpu, false);
        let declined = self.pulling.replace(cpu, false);
        let mut best: Option<Steal> = None;
        // CPUs holding tasks that may no longer run there and may run here.
        let mut holders = CpuSet::empty();
        // Queues that held nothing when last unlocked are not locked.
        let holding = self.queues.holding_tasks();
        for other in self.topology.nearest_of(cpu, &holding) {
            let queue = self.queues.lock(other)?;
            if queue.is_empty() {
                continue;
            }
            let grants = self.grants.read()?;
            let Some(steal) = self.stealable(&queue, &grants, other, cpu) else {
                continue;
            };
            if steal.stranded > 0 {
                holders.insert(other);
            }
            if best.is_none_or(|b| steal.rank > b.rank) {
                best = Some(steal);
            }
        }
        if let Some(steal) = best {
            // A pull asked of this CPU may have been for a task it leaves:
            // the CPUs holding such tasks look again at their next pick,
            // which asks for them to be taken.
            if steal.stranded < 2 {
                holders.remove(steal.from);
            }
            for holder in holders.iter() {
                self.services.kick_cpu(holder);
            }
            return Ok(Some(steal.pid));
        }
        if asked || declined {
            // Nothing to take after all: run the own queue, which the pick
            // declined, by naming its first task (a move to where it is).
            let queue = self.queues.lock(cpu)?;
            let grants = self.grants.read()?;
            let own = queue
                .iter()
                .find(|w| grants.may_run(w.info.tgid, &w.info.allowed).contains(cpu))
                .map(|w| w.token.pid());
            if own.is_some() {
                return Ok(own);
            }
        }
        self.queues.set_idle(cpu, true);
        Ok(None)
    }

    fn balance_err(&self, cpu: CpuId, _pid: Pid, _err: PickError) -> Result {
        // The pick may have declined a queue with work for this balance:
        // look again.
        self.services.kick_cpu(cpu);
        Ok(())
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        self.queues.migrate(pid, sched, |old| self.enqueue(old))
    }

    fn task_affinity_changed(&self, pid: Pid, allowed: &CpuSet) -> Result {
        if let Some(member) = self.tasks.lock()?.get_mut(pid) {
            member.allowed = *allowed;
        }
        Ok(())
    }

    fn cpu_online(&self, cpu: CpuId) -> Result {
        self.hotplug(cpu, true)
    }

    fn cpu_offline(&self, cpu: CpuId) -> Result {
        self.hotplug(cpu, false)
    }

    fn register_queue(&self, queue: QueueId, owner: Pid, _thread: Pid) -> Result<(), TaskError> {
        if self.grants.write()?.open(queue, owner) {
            Ok(())
        } else {
            Err(TaskError::Full)
        }
    }

    fn parse_hint(&self, queue: QueueId, pid: Pid, hint: CoreRequest) -> Result<(), HintError> {
        let tgid = self.tasks.lock()?.get(pid).map(|m| m.tgid);
        let taken = match tgid {
            Some(tgid) => self.request(queue, tgid, &hint)?,
            None => false,
        };
        self.counters.request(taken);
        if taken {
            Ok(())
        } else {
            Err(HintError::Refused)
        }
    }

    fn unregister_queue(&self, queue: QueueId) -> Result {
        let mut grants = self.grants.write()?;
        let change = grants.close(queue, &self.topology);
        self.publish(&grants, &change, None);
        Ok(())
    }
}

enoki::export_scheduler!(Arachne);
