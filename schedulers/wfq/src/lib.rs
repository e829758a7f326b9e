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
//!   smallest waiting vruntime by more than `wakeup_granularity` (counted in
//!   the waiting task's virtual time); otherwise its slice ends it.
//! - Placement: the previous CPU if idle, else an idle CPU of its LLC, else
//!   of its node, else the least loaded allowed CPU. A vruntime moves between
//!   queues relative to their `min_vruntime`.
//! - Balance: an idle CPU takes the next waiting task of the busiest queue,
//!   nearest first (LLC, then node); from another node only when that node
//!   has `imbalance_pct` % more tasks per CPU than ours. A queue where work
//!   waits kicks an idle CPU that may take it.
//! - Nice: the running task's next slice uses the new weight; a task keeps
//!   its lag behind or ahead of `min_vruntime` in CPU time, so a waiting
//!   one may move in its queue.
//!
//! Locks: each run queue has one, the task table has one; take a run queue
//! first, then the table, and never two run queues at once.
//!
//! Module `args`: `period_us`, `min_granularity_us`,
//! `wakeup_granularity_us`, `imbalance_pct`.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use enoki::abi::{CPUMASK_WORDS, MAX_NODES};
use enoki::sync::SpinLockGuard;
use enoki::{
    nice_to_weight, Args, CpuId, CpuSet, EnokiScheduler, FixedVec, InitContext, InitError, NoHint, Pid, PickError,
    PrevTask, Schedulable, Services, SpinLock, TaskError, TaskHeap, TaskInfo, TaskMap, Topology,
};

/// Weight of a nice-0 task: its vruntime runs at wall-clock speed.
const NICE_0_WEIGHT: u64 = 1024;
/// Attempts at locking a task's run queue while the task keeps moving.
const LOCK_RETRIES: usize = 8;
/// Waiting tasks a tick looks at for one an idle CPU could take.
const KICK_SCAN: usize = 4;

/// The CPUs of `set` in increasing order, word by word.
fn cpus_in(set: CpuSet) -> impl Iterator<Item = CpuId> {
    set.words().into_iter().enumerate().flat_map(|(i, mut word)| {
        core::iter::from_fn(move || {
            let bit = word.trailing_zeros() as usize;
            word &= word.checked_sub(1)?;
            Some(i * 64 + bit)
        })
    })
}

/// The CPUs in both `a` and `b`.
fn both(a: CpuSet, b: CpuSet) -> CpuSet {
    let mut words = a.words();
    words.iter_mut().zip(b.words()).for_each(|(w, other)| *w &= other);
    CpuSet::from_words(words)
}

/// The CPUs in `a` but not in `b`.
fn except(a: CpuSet, b: CpuSet) -> CpuSet {
    let mut words = a.words();
    words.iter_mut().zip(b.words()).for_each(|(w, other)| *w &= !other);
    CpuSet::from_words(words)
}

/// `ns` of CPU time in the virtual time of a task of `weight`.
fn to_virtual(ns: u64, weight: u64) -> u64 {
    ns.saturating_mul(NICE_0_WEIGHT) / weight.max(1)
}

/// `v`, measured against a queue whose min_vruntime is `from`, measured
/// against one whose min_vruntime is `to` (its lag is kept).
fn rebase(v: u64, from: u64, to: u64) -> u64 {
    if v >= from {
        to.saturating_add(v - from)
    } else {
        to.saturating_sub(from - v)
    }
}

/// `v`'s distance to `min`, worth the same CPU time at weight `new` as it
/// was at weight `old`.
fn rescale_lag(v: u64, min: u64, old: u64, new: u64) -> u64 {
    let scale = |lag: u64| lag.saturating_mul(old) / new.max(1);
    if v >= min {
        min.saturating_add(scale(v - min))
    } else {
        min.saturating_sub(scale(min - v))
    }
}

/// Tunables, like CFS's sysctls.
#[derive(Clone, Copy, Debug)]
struct Params {
    /// Time in which every runnable task should run once (sched_latency).
    period_ns: u64,
    /// Shortest slice; the period stretches to `nr_running` of these.
    min_granularity_ns: u64,
    /// How far ahead in vruntime the running task may get before a waiting
    /// one preempts it.
    wakeup_granularity_ns: u64,
    /// How much busier (%, tasks per CPU) another node must be before an
    /// idle CPU takes work from it.
    imbalance_pct: u64,
}

impl Params {
    const KNOWN: [&'static str; 4] = ["period_us", "min_granularity_us", "wakeup_granularity_us", "imbalance_pct"];

    fn from_args(args: &Args<'_>) -> Result<Self, InitError> {
        args.check_known(&Self::KNOWN)?;
        let period_us = args.u64_in("period_us", 6_000, 100, 1_000_000)?;
        let min_granularity_us = args.u64_in("min_granularity_us", 750, 10, 1_000_000)?;
        if min_granularity_us > period_us {
            return Err(InitError::InvalidArgument("min_granularity_us (at most period_us)"));
        }
        Ok(Params {
            period_ns: period_us * 1000,
            min_granularity_ns: min_granularity_us * 1000,
            wakeup_granularity_ns: args.u64_in("wakeup_granularity_us", 1_000, 0, 1_000_000)? * 1000,
            imbalance_pct: args.u64_in("imbalance_pct", 125, 100, 1_000)?,
        })
    }

    /// The time in which each of `nr_running` tasks runs once.
    fn period(&self, nr_running: u64) -> u64 {
        // (checked: the kernel build's objtool misreads a division panic)
        let nr_latency = self.period_ns.checked_div(self.min_granularity_ns).unwrap_or(1);
        if nr_running > nr_latency {
            nr_running.saturating_mul(self.min_granularity_ns)
        } else {
            self.period_ns
        }
    }

    /// A task's slice: its weight's share of the period.
    fn slice(&self, nr_running: u64, queue_weight: u64, weight: u64) -> u64 {
        let share = self.period(nr_running).saturating_mul(weight) / queue_weight.max(1);
        share.max(self.min_granularity_ns)
    }
}

/// Where a task is, as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In no run queue: asleep, or between two messages.
    Off,
    /// Waiting in `cpu`'s run queue with a token for `cpu`.
    Waiting(CpuId),
    /// Picked on `cpu` and not stopped yet.
    Running(CpuId),
    /// Taken out of its queue by `migrate_task_rq`, on its way to `cpu`.
    Moving(CpuId),
}

impl State {
    /// The CPU whose run queue holds the task.
    fn queue(self) -> Option<CpuId> {
        match self {
            State::Waiting(cpu) | State::Running(cpu) => Some(cpu),
            State::Off | State::Moving(_) => None,
        }
    }
}

/// What the scheduler knows about a task.
struct Task {
    weight: u64,
    allowed: CpuSet,
    /// Weighted virtual runtime, on the clock of run queue `home`.
    vruntime: u64,
    /// The run queue it is or was last on.
    home: CpuId,
    /// CPU time charged so far (Enoki-C's `sum_exec_runtime`), ns.
    charged: u64,
    state: State,
    /// Never queued yet: starts after the tasks of the current period.
    new: bool,
}

impl Task {
    /// Charges the CPU time used since the last charge.
    fn charge(&mut self, runtime: u64) {
        let delta = runtime.saturating_sub(self.charged);
        self.charged = self.charged.max(runtime);
        self.vruntime = self.vruntime.saturating_add(to_virtual(delta, self.weight));
    }
}

/// A waiting task's entry: its token for this CPU and its weight.
struct Waiting {
    token: Schedulable,
    weight: u64,
}

/// One CPU's run queue.
struct RunQueue {
    /// Waiting tasks, by (vruntime, pid).
    waiting: TaskHeap<u64, Waiting>,
    /// The task running here and its weight.
    curr: Option<(Pid, u64)>,
    /// Total weight of the running and waiting tasks.
    load: u64,
    /// Follows the smallest vruntime here and never goes back; wakeups and
    /// migrations are placed relative to it.
    min_vruntime: u64,
    /// A task woke here since the last tick: the tick checks whether it
    /// preempts.
    woken: bool,
}

impl RunQueue {
    fn nr_running(&self) -> usize {
        self.waiting.len() + usize::from(self.curr.is_some())
    }

    fn is_running(&self, pid: Pid) -> bool {
        self.curr.is_some_and(|(p, _)| p == pid)
    }

    fn push(&mut self, token: Schedulable, vruntime: u64, weight: u64) -> Result<(), Schedulable> {
        self.waiting.push(token.pid(), vruntime, Waiting { token, weight }).map_err(|(_, w)| w.token)?;
        self.load = self.load.saturating_add(weight);
        Ok(())
    }

    /// Takes `pid` off the waiting tasks and returns its token.
    fn remove(&mut self, pid: Pid) -> Option<Schedulable> {
        let (_, w) = self.waiting.remove(pid)?;
        self.load = self.load.saturating_sub(w.weight);
        Some(w.token)
    }

    fn stop_curr(&mut self) {
        if let Some((_, weight)) = self.curr.take() {
            self.load = self.load.saturating_sub(weight);
        }
    }

    /// Moves `min_vruntime` up to the smallest vruntime here; `curr` is the
    /// running task's.
    fn update_min_vruntime(&mut self, curr: Option<u64>) {
        let leftmost = self.waiting.peek().map(|(_, v, _)| *v);
        let smallest = match (curr, leftmost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(v) = smallest {
            self.min_vruntime = self.min_vruntime.max(v);
        }
    }
}

/// A CPU: its run queue and a summary other CPUs read without the lock.
struct Cpu {
    rq: SpinLock<RunQueue>,
    nr_running: AtomicUsize,
    load: AtomicU64,
    min_vruntime: AtomicU64,
}

/// The CPUs around one CPU, nearest first (computed at init).
struct Near {
    /// CPUs sharing its last-level cache, itself included.
    llc: CpuSet,
    /// CPUs of its NUMA node.
    node: CpuSet,
    /// The CPUs of each other node, nearest node first.
    remote: [CpuSet; MAX_NODES],
}

impl Near {
    fn new(t: &Topology, cpu: CpuId) -> Self {
        let local = t.node_of(cpu);
        // Other nodes with CPUs, by (distance, node).
        let mut others = [(u8::MAX, 0usize); MAX_NODES];
        let mut n = 0;
        for node in (0..t.nr_nodes()).filter(|node| *node != local) {
            let Some(first) = cpus_in(t.node_cpus(node)).next() else { continue };
            if let Some(slot) = others.get_mut(n) {
                *slot = (t.distance(cpu, first), node);
                n += 1;
            }
        }
        others.sort_unstable();
        let mut remote = [CpuSet::empty(); MAX_NODES];
        for (set, (_, node)) in remote.iter_mut().zip(&others).take(n) {
            *set = t.node_cpus(*node);
        }
        Near { llc: t.llc_cpus(cpu), node: t.node_cpus(local), remote }
    }
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
    /// An idle CPU took it over (`migrate_task_rq`).
    Migrate,
}

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

/// The WFQ scheduler.
pub struct Wfq {
    topology: Topology,
    services: Services,
    params: Params,
    cpus: FixedVec<Cpu>,
    near: FixedVec<Near>,
    /// CPUs with nothing to run, one bit each.
    idle: [AtomicU64; CPUMASK_WORDS],
    tasks: SpinLock<TaskMap<Task>>,
}

type Rq<'a> = SpinLockGuard<'a, RunQueue>;
type Tasks<'a> = SpinLockGuard<'a, TaskMap<Task>>;

impl Wfq {
    fn cpu(&self, cpu: CpuId) -> Option<&Cpu> {
        self.cpus.get(cpu)
    }

    fn nr_running(&self, cpu: CpuId) -> usize {
        self.cpu(cpu).map_or(0, |c| c.nr_running.load(Relaxed))
    }

    fn idle_cpus(&self) -> CpuSet {
        CpuSet::from_words(core::array::from_fn(|i| self.idle.get(i).map_or(0, |w| w.load(Relaxed))))
    }

    /// Locks `cpu`'s run queue, then the task table.
    fn lock(&self, cpu: CpuId) -> Option<(Rq<'_>, Tasks<'_>)> {
        let rq = self.cpu(cpu)?.rq.lock();
        Some((rq, self.tasks.lock()))
    }

    /// Updates `cpu`'s summary; called with its run queue locked.
    fn publish(&self, cpu: CpuId, rq: &RunQueue) {
        if let Some(c) = self.cpu(cpu) {
            c.nr_running.store(rq.nr_running(), Relaxed);
            c.load.store(rq.load, Relaxed);
            c.min_vruntime.store(rq.min_vruntime, Relaxed);
        }
        if let Some(word) = self.idle.get(cpu / 64) {
            let bit = 1 << (cpu % 64);
            if rq.nr_running() == 0 {
                word.fetch_or(bit, Relaxed);
            } else {
                word.fetch_and(!bit, Relaxed);
            }
        }
    }

    /// Calls `f` with the run queue holding `pid` (if any) and its task,
    /// both locked; `None` if the task is unknown.
    fn with_task<R>(&self, pid: Pid, f: impl FnOnce(Option<(CpuId, &mut RunQueue)>, &mut Task) -> R) -> Option<R> {
        let mut f = Some(f);
        for _ in 0..LOCK_RETRIES {
            let queue = self.tasks.lock().get(pid)?.state.queue();
            let mut rq = match queue {
                Some(cpu) => Some(self.cpu(cpu)?.rq.lock()),
                None => None,
            };
            let mut tasks = self.tasks.lock();
            let task = tasks.get_mut(pid)?;
            if task.state.queue() != queue {
                continue; // it moved before we had the lock
            }
            let result = f.take().map(|f| f(queue.zip(rq.as_deref_mut()), task));
            drop(tasks);
            if let (Some(cpu), Some(rq)) = (queue, rq.as_deref()) {
                self.publish(cpu, rq);
            }
            return result;
        }
        None
    }

    /// Takes `pid` out of the run queue that holds it: stops it if running
    /// (charging `runtime`), else drops its waiting token.
    fn detach(&self, pid: Pid, runtime: Option<u64>) {
        self.with_task(pid, |rq, task| match rq {
            Some((cpu, rq)) => Self::detach_locked(cpu, rq, task, pid, runtime),
            None => task.state = State::Off, // also cancels a move
        });
    }

    fn detach_locked(cpu: CpuId, rq: &mut RunQueue, task: &mut Task, pid: Pid, runtime: Option<u64>) {
        if rq.is_running(pid) {
            if let Some(runtime) = runtime {
                task.charge(runtime);
            }
            rq.update_min_vruntime(Some(task.vruntime));
            rq.stop_curr();
        } else {
            rq.remove(pid);
        }
        task.state = State::Off;
        task.home = cpu;
    }

    /// Queues `token` on its CPU. Wakeups are placed relative to the queue;
    /// if the task waits behind another, an idle CPU is kicked to take it.
    fn enqueue(&self, token: Schedulable, why: Enqueue) -> Result<(), Schedulable> {
        let (pid, cpu) = (token.pid(), token.cpu());
        let Some((mut rq, mut tasks)) = self.lock(cpu) else { return Err(token) };
        let Some(task) = tasks.get_mut(pid) else { return Err(token) };
        let expected = if why == Enqueue::Migrate { State::Moving(cpu) } else { State::Off };
        if task.state != expected {
            return Err(token);
        }
        match why {
            Enqueue::Wakeup { runtime } => task.charged = runtime,
            Enqueue::Preempt { runtime, .. } => task.charge(runtime),
            Enqueue::Refused | Enqueue::Migrate => {}
        }
        let from = if task.home == cpu { rq.min_vruntime } else { self.min_vruntime(task.home) };
        let mut vruntime = rebase(task.vruntime, from, rq.min_vruntime);
        match why {
            Enqueue::Wakeup { .. } => vruntime = self.place(&rq, task, vruntime),
            Enqueue::Preempt { yielded: true, .. } => {
                // Yielding: behind the next waiting task.
                if let Some((_, next, _)) = rq.waiting.peek() {
                    vruntime = vruntime.max(next.saturating_add(1));
                }
            }
            _ => {}
        }
        rq.push(token, vruntime, task.weight)?;
        rq.woken |= matches!(why, Enqueue::Wakeup { .. }) && rq.curr.is_some();
        task.vruntime = vruntime;
        task.home = cpu;
        task.state = State::Waiting(cpu);
        task.new = false;
        let allowed = task.allowed;
        drop(tasks);
        // Someone waits here if a task runs, or if more than one waits.
        let work_waits = rq.waiting.len() > usize::from(rq.curr.is_none());
        self.publish(cpu, &rq);
        drop(rq);
        if work_waits && matches!(why, Enqueue::Wakeup { .. } | Enqueue::Preempt { .. }) {
            if let Some(idle) = self.idle_thief(cpu, &allowed) {
                self.services.kick_cpu(idle);
            }
        }
        Ok(())
    }

    /// Where a waking task starts on `rq`: a new task after the tasks of
    /// the current period, a sleeper at most half a period before
    /// `min_vruntime` (so sleeping earns little credit).
    fn place(&self, rq: &RunQueue, task: &Task, vruntime: u64) -> u64 {
        if task.new {
            let nr = rq.nr_running() as u64 + 1;
            let slice = self.params.slice(nr, rq.load.saturating_add(task.weight), task.weight);
            rq.min_vruntime.saturating_add(to_virtual(slice, task.weight))
        } else {
            vruntime.max(rq.min_vruntime.saturating_sub(self.params.period_ns / 2))
        }
    }

    fn min_vruntime(&self, cpu: CpuId) -> u64 {
        self.cpu(cpu).map_or(0, |c| c.min_vruntime.load(Relaxed))
    }

    /// The other CPUs, nearest to `cpu` first: its LLC, its node, then the
    /// other nodes by distance.
    fn nearest(&self, cpu: CpuId) -> impl Iterator<Item = CpuId> + '_ {
        self.near.get(cpu).into_iter().flat_map(move |near| {
            let llc = cpus_in(near.llc).filter(move |c| *c != cpu);
            let node = cpus_in(except(near.node, near.llc));
            llc.chain(node).chain(near.remote.iter().flat_map(|n| cpus_in(*n)))
        })
    }

    /// Tasks on `cpu`'s node (queued or running) and CPUs there.
    fn node_load(&self, cpu: CpuId) -> (u64, u64) {
        let Some(near) = self.near.get(cpu) else { return (0, 1) };
        (cpus_in(near.node).map(|c| self.nr_running(c) as u64).sum(), near.node.len() as u64)
    }

    /// Whether `thief` may take work from `victim`: always within a node;
    /// across nodes when the victim's has `imbalance_pct` % more tasks per CPU.
    fn may_steal(&self, thief: CpuId, victim: CpuId) -> bool {
        let t = &self.topology;
        if t.node_of(thief) == t.node_of(victim) {
            return true;
        }
        let (here_tasks, here_cpus) = self.node_load(thief);
        let (there_tasks, there_cpus) = self.node_load(victim);
        there_tasks * here_cpus * 100 > here_tasks * there_cpus * self.params.imbalance_pct
    }

    /// The idle CPU nearest to `cpu` that `allowed` permits and that may
    /// take work from `cpu`.
    fn idle_thief(&self, cpu: CpuId, allowed: &CpuSet) -> Option<CpuId> {
        let candidates = both(*allowed, self.idle_cpus());
        if candidates.is_empty() {
            return None;
        }
        self.nearest(cpu).find(|c| candidates.contains(*c) && self.may_steal(*c, cpu))
    }

    /// The task `cpu` should take from the busiest of `victims`: of the
    /// waiting tasks allowed on `cpu`, the next in line.
    fn steal(&self, cpu: CpuId, victims: impl Iterator<Item = CpuId>) -> Option<Pid> {
        let mut best: Option<(usize, Pid)> = None;
        for victim in victims.filter(|v| *v != cpu) {
            // Only a queue where a task waits behind another; the summary
            // spares locking the rest.
            let nr = self.nr_running(victim);
            if nr < 2 || best.is_some_and(|(most, _)| nr <= most) {
                continue;
            }
            let Some((rq, tasks)) = self.lock(victim) else { continue };
            let allowed_here = |pid: Pid| tasks.get(pid).is_some_and(|t| t.allowed.contains(cpu));
            let next = rq.waiting.iter().filter(|(pid, _, _)| allowed_here(*pid)).min_by_key(|(pid, v, _)| (**v, *pid));
            if let Some((pid, _, _)) = next.filter(|_| rq.nr_running() >= 2) {
                best = Some((rq.nr_running(), pid));
            }
        }
        best.map(|(_, pid)| pid)
    }

    /// A task's vruntime (on the clock of the queue it is or was last on),
    /// for tests and tools.
    pub fn vruntime(&self, pid: Pid) -> Option<u64> {
        self.tasks.lock().get(pid).map(|t| t.vruntime)
    }

    /// Calls `f` for every task a run queue holds, running or waiting; for
    /// tests and tools (takes every lock in turn).
    pub fn for_each_held(&self, mut f: impl FnMut(Held)) {
        for queue in self.topology.cpus() {
            let Some(cpu) = self.cpu(queue) else { continue };
            let rq = cpu.rq.lock();
            if let Some((pid, _)) = rq.curr {
                f(Held { queue, pid, token_cpu: None });
            }
            for (pid, _, w) in rq.waiting.iter() {
                f(Held { queue, pid, token_cpu: Some(w.token.cpu()) });
            }
        }
    }

    /// Checks the scheduler's bookkeeping (queue loads and keys against the
    /// task table); for tests and tools.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut held = 0;
        for cpu in self.topology.cpus() {
            let (rq, tasks) = self.lock(cpu).ok_or("no run queue")?;
            let mut load = 0;
            for (pid, vruntime, w) in rq.waiting.iter() {
                let t = tasks.get(pid).ok_or("an unknown task waits")?;
                if t.state != State::Waiting(cpu) || w.token.cpu() != cpu {
                    return Err("a waiting task is not marked waiting there");
                }
                if *vruntime != t.vruntime || w.weight != t.weight {
                    return Err("a queue entry is out of date");
                }
                load += w.weight;
            }
            if let Some((pid, weight)) = rq.curr {
                let t = tasks.get(pid).ok_or("an unknown task runs")?;
                if t.state != State::Running(cpu) || t.weight != weight {
                    return Err("the running task is not marked running there");
                }
                load += weight;
            }
            if load != rq.load || self.nr_running(cpu) != rq.nr_running() {
                return Err("a queue's load or summary is out of date");
            }
            held += rq.nr_running();
        }
        let queued = self.tasks.lock().iter().filter(|(_, t)| t.state.queue().is_some()).count();
        if queued != held {
            return Err("a task is marked queued or running where it is not");
        }
        Ok(())
    }
}

impl EnokiScheduler for Wfq {
    const NAME: &'static str = "wfq";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        let params = Params::from_args(&ctx.args)?;
        let cpus = FixedVec::try_new_with(ctx.topology.nr_cpus(), |_| -> Result<Cpu, InitError> {
            let waiting = TaskHeap::with_capacity(ctx.max_tasks)?;
            let rq = RunQueue { waiting, curr: None, load: 0, min_vruntime: 0, woken: false };
            Ok(Cpu {
                rq: SpinLock::new(rq),
                nr_running: AtomicUsize::new(0),
                load: AtomicU64::new(0),
                min_vruntime: AtomicU64::new(0),
            })
        })?;
        let t = ctx.topology;
        let wfq = Wfq {
            topology: t.try_clone()?,
            services: ctx.services.clone(),
            params,
            cpus,
            near: FixedVec::new_with(t.nr_cpus(), |cpu| Near::new(t, cpu))?,
            idle: core::array::from_fn(|_| AtomicU64::new(0)),
            tasks: SpinLock::new(TaskMap::with_capacity(ctx.max_tasks)?),
        };
        for cpu in t.cpus() {
            wfq.publish(cpu, &wfq.cpus.get(cpu).ok_or(InitError::OutOfMemory)?.rq.lock());
        }
        Ok(wfq)
    }

    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Option<Schedulable> {
        let (mut rq, mut tasks) = self.lock(cpu)?;
        // The kernel asks before it hands a still-runnable previous task
        // back (task_preempt comes next): it still competes, and still
        // counts in the period of whatever is picked instead.
        let still_runnable = match (rq.curr, prev) {
            (Some((pid, weight)), Some(p)) if p.pid == pid && p.runnable => Some((pid, weight, p.runtime)),
            _ => None,
        };
        if let Some((pid, _, runtime)) = still_runnable {
            if let Some(task) = tasks.get_mut(pid) {
                task.charge(runtime);
                let vruntime = task.vruntime;
                rq.update_min_vruntime(Some(vruntime));
                // CFS's rule: the smallest vruntime runs, a waiting task
                // first on a tie. When that is the previous task, pick
                // nothing: it is handed back and picked again.
                let overtaken = rq.waiting.peek().is_some_and(|(_, v, _)| *v <= vruntime);
                if !overtaken {
                    rq.woken = false;
                    drop(tasks);
                    self.publish(cpu, &rq);
                    return None;
                }
            }
        }
        let prev_weight = still_runnable.map_or(0, |(_, weight, _)| weight);
        // Whatever ran here has stopped (a runnable one comes back through
        // task_preempt): charge it.
        if let Some((pid, _)) = rq.curr {
            let runtime = prev.filter(|p| p.pid == pid).map(|p| p.runtime);
            match tasks.get_mut(pid) {
                Some(task) => Self::detach_locked(cpu, &mut rq, task, pid, runtime),
                None => rq.stop_curr(),
            }
        }
        // The smallest vruntime runs, for its share of the period.
        rq.woken = false;
        let mut picked = None;
        while let Some((pid, vruntime, Waiting { mut token, weight })) = rq.waiting.pop() {
            let Some(task) = tasks.get_mut(pid) else { continue }; // gone: drop its token
            task.state = State::Running(cpu);
            rq.curr = Some((pid, weight));
            rq.update_min_vruntime(Some(vruntime));
            let nr = rq.nr_running() as u64 + u64::from(prev_weight > 0);
            token.set_slice_ns(self.params.slice(nr, rq.load.saturating_add(prev_weight), weight));
            picked = Some(token);
            break;
        }
        drop(tasks);
        self.publish(cpu, &rq);
        picked
    }

    fn pnt_err(&self, _cpu: CpuId, pid: Pid, _err: PickError, sched: Option<Schedulable>) {
        // Not running after all. A token handed back waits again as it was.
        self.detach(pid, None);
        if let Some(token) = sched {
            let _ = self.enqueue(token, Enqueue::Refused);
        }
    }

    fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError> {
        self.detach(task.pid, None); // a stale entry of a reused pid, if any
        let new = Task {
            weight: u64::from(task.weight).max(1),
            allowed: task.allowed,
            vruntime: 0,
            home: cpus_in(task.allowed).next().unwrap_or(0),
            charged: task.runtime,
            state: State::Off,
            new: true,
        };
        self.tasks.lock().insert(task.pid, new).map(|_| ()).map_err(|_| TaskError::Full)
    }

    fn task_wakeup(&self, pid: Pid, runtime: u64, sched: Schedulable) -> Result<(), Schedulable> {
        self.detach(pid, None); // normally a no-op: it is in no queue
        self.enqueue(sched, Enqueue::Wakeup { runtime })
    }

    fn task_preempt(&self, pid: Pid, runtime: u64, yielded: bool, sched: Schedulable) -> Result<(), Schedulable> {
        self.detach(pid, Some(runtime));
        self.enqueue(sched, Enqueue::Preempt { runtime, yielded })
    }

    fn task_blocked(&self, pid: Pid, runtime: u64, _cpu: CpuId, _sleeping: bool) {
        self.detach(pid, Some(runtime));
    }

    fn task_dead(&self, pid: Pid) {
        self.detach(pid, None);
        self.tasks.lock().remove(pid);
    }

    fn task_tick(&self, cpu: CpuId, pid: Pid, runtime: u64) -> bool {
        let Some((mut rq, mut tasks)) = self.lock(cpu) else { return false };
        let Some(task) = tasks.get_mut(pid).filter(|_| rq.is_running(pid)) else { return false };
        task.charge(runtime);
        let vruntime = task.vruntime;
        rq.update_min_vruntime(Some(vruntime));
        // Wakeup preemption: a task woke, and the next waiting task is behind
        // the running one by more than the wakeup granularity (in its own
        // virtual time). Otherwise the slice ends it.
        let gran = self.params.wakeup_granularity_ns;
        let preempt = core::mem::take(&mut rq.woken)
            && rq.waiting.peek().is_some_and(|(_, v, w)| v.saturating_add(to_virtual(gran, w.weight)) < vruntime);
        // Idle balance: a CPU idles while work waits here that it could take.
        let thief = rq
            .waiting
            .iter()
            .take(KICK_SCAN)
            .filter_map(|(pid, _, _)| tasks.get(pid))
            .find_map(|t| self.idle_thief(cpu, &t.allowed));
        drop(tasks);
        self.publish(cpu, &rq);
        drop(rq);
        if let Some(idle) = thief {
            self.services.kick_cpu(idle);
        }
        preempt
    }

    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, _waker_cpu: CpuId) -> CpuId {
        let Some(allowed) = self.tasks.lock().get(pid).map(|t| t.allowed) else { return prev_cpu };
        let Some(near) = self.near.get(prev_cpu) else { return prev_cpu };
        let idle = both(allowed, self.idle_cpus());
        if idle.contains(prev_cpu) {
            return prev_cpu;
        }
        if let Some(cpu) = cpus_in(both(idle, near.llc)).chain(cpus_in(both(idle, near.node))).next() {
            return cpu;
        }
        // The least loaded allowed CPU; the nearest one on ties.
        let load = |cpu: &CpuId| self.cpu(*cpu).map_or(u64::MAX, |c| c.load.load(Relaxed));
        core::iter::once(prev_cpu)
            .chain(self.nearest(prev_cpu))
            .filter(|cpu| allowed.contains(*cpu))
            .min_by_key(load)
            .unwrap_or(prev_cpu)
    }

    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Option<Schedulable> {
        let to = sched.cpu();
        // Out of the queue it waits in...
        let old = self
            .with_task(pid, |rq, task| {
                let (cpu, rq) = rq?;
                if task.state != State::Waiting(cpu) {
                    return None;
                }
                let token = rq.remove(pid)?;
                task.state = State::Moving(to);
                Some(token)
            })
            .flatten()?;
        // ...into the thief's, keeping its lag.
        if self.enqueue(sched, Enqueue::Migrate).is_ok() {
            return Some(old);
        }
        // No room (or it left meanwhile): it stays where it was.
        let still_moving = self.with_task(pid, |_, task| {
            let moving = task.state == State::Moving(to);
            if moving {
                task.state = State::Off;
            }
            moving
        });
        if still_moving == Some(true) {
            return self.enqueue(old, Enqueue::Refused).err();
        }
        Some(old)
    }

    fn balance(&self, cpu: CpuId) -> Option<Pid> {
        let near = self.near.get(cpu)?;
        if let Some(pid) = self.steal(cpu, cpus_in(near.llc)) {
            return Some(pid);
        }
        if let Some(pid) = self.steal(cpu, cpus_in(except(near.node, near.llc))) {
            return Some(pid);
        }
        near.remote
            .iter()
            .filter(|node| cpus_in(**node).next().is_some_and(|victim| self.may_steal(cpu, victim)))
            .find_map(|node| self.steal(cpu, cpus_in(*node)))
    }

    fn task_prio_changed(&self, pid: Pid, weight: u32, nice: i32) {
        let weight = u64::from(if weight > 0 { weight } else { nice_to_weight(nice) });
        self.with_task(pid, |rq, task| {
            // The task keeps its lag (its distance to min_vruntime) in CPU
            // time; Enoki-C takes a waiting task out of its queue for this.
            let old = core::mem::replace(&mut task.weight, weight);
            let min = rq.as_ref().map_or_else(|| self.min_vruntime(task.home), |(_, rq)| rq.min_vruntime);
            task.vruntime = rescale_lag(task.vruntime, min, old, weight);
            let Some((_, rq)) = rq else { return };
            if let Some(entry) = rq.waiting.get_mut(pid) {
                entry.weight = weight;
                rq.waiting.set_key(pid, task.vruntime);
            } else if let Some((_, w)) = rq.curr.as_mut().filter(|(p, _)| *p == pid) {
                *w = weight; // its next slice follows the new weight
            } else {
                return;
            }
            rq.load = rq.load.saturating_sub(old).saturating_add(weight);
        });
    }

    fn task_affinity_changed(&self, pid: Pid, allowed: &CpuSet) {
        // Enoki-C re-queues the task with a token for an allowed CPU.
        self.with_task(pid, |_, task| task.allowed = *allowed);
    }
}

enoki::export_scheduler!(Wfq);
