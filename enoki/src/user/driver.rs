// SPDX-License-Identifier: GPL-2.0
//! A model of Enoki-C for host tests: it keeps the kernel's view of every
//! task and sends the same messages, in the same order, that
//! `kernel/src/kernel/sched/enoki.c` sends, through the same
//! [`Loaded::handle`](super::super::dispatch::Loaded::handle).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::super::abi::{err, flag, kind, ret_err, Msg, HINT_MAX, SLICE_MAX_NS, SLICE_MIN_NS};
use super::super::dispatch::Loaded;
use super::super::scheduler::{Args, EnokiScheduler, InitContext, InitError, QueueId};
use super::super::topology::Topology;
use super::super::types::{
    nice_to_weight, Bandwidth, CgroupId, CgroupInfo, CpuId, CpuSet, Pid, ROOT_CGROUP,
};
use super::super::upgrade::{fingerprint, plan, Carry, PlainData, Refusal};
use super::HostOps;

mod queues;
pub use queues::OpenQueue;

/// A service request a scheduler made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    Kick {
        cpu: CpuId,
        preempt: bool,
    },
    Timer {
        cpu: CpuId,
        ns: Option<u64>,
    },
    /// A reverse hint: its first `size` bytes of `hint`.
    RevHint {
        queue: QueueId,
        pid: Pid,
        hint: [u8; HINT_MAX],
        size: usize,
    },
}

/// Keeps every service request, in order.
#[derive(Default)]
pub struct RecordingHost {
    events: Mutex<std::vec::Vec<HostEvent>>,
}

impl RecordingHost {
    /// Returns and forgets the requests made so far.
    pub fn take(&self) -> std::vec::Vec<HostEvent> {
        std::mem::take(&mut self.events.lock().unwrap())
    }
}

impl HostOps for RecordingHost {
    fn kick_cpu(&self, cpu: CpuId, preempt: bool) {
        self.events
            .lock()
            .unwrap()
            .push(HostEvent::Kick { cpu, preempt });
    }

    fn set_timer(&self, cpu: CpuId, ns: Option<u64>) {
        self.events
            .lock()
            .unwrap()
            .push(HostEvent::Timer { cpu, ns });
    }

    fn rev_hint(&self, queue: QueueId, pid: Pid, hint: &[u8]) {
        let mut bytes = [0u8; HINT_MAX];
        let n = hint.len().min(HINT_MAX);
        bytes[..n].copy_from_slice(&hint[..n]);
        self.events.lock().unwrap().push(HostEvent::RevHint {
            queue,
            pid,
            hint: bytes,
            size: n,
        });
    }
}

/// Sees every message the driver sends (record, taps, checks).
pub trait MsgObserver {
    /// `m` is about to be handled.
    fn call_begins(&mut self, m: &Msg);
    /// The scheduler answered `m`.
    fn call_ends(&mut self, m: &Msg);
    /// A live upgrade starts handing over: until [`upgrade_ends`]
    /// (`Self::upgrade_ends`), calls are held off and what the versions do
    /// is the hand-over, not calls.
    fn upgrade_begins(&mut self) {}
    /// The hand-over is over: `Some(state)` if the new version took over
    /// (with the state of that fingerprint; 0: it started fresh), before
    /// any call reaches it; `None` if the upgrade was refused.
    fn upgrade_ends(&mut self, _done: Option<u64>) {}
}

/// A task's total CPU time (the kernel's `sum_exec_runtime`), from a clock
/// finer than the model's own count, which advances only in [`Driver::tick`]
/// and [`Driver::run`]: a task that runs a few µs between ticks and blocks
/// would otherwise look as if it never ran.
pub trait RuntimeSource {
    /// `pid`'s runtime in ns, or `None` to use the model's count.
    fn runtime(&self, pid: Pid) -> Option<u64>;
}

/// What the model counted, like `/sys/kernel/enoki/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverCounters {
    pub msgs: [u64; kind::NR as usize],
    pub pick_errors: u64,
    pub balance_errors: u64,
    pub select_errors: u64,
    pub migrate_errors: u64,
    /// Tasks the scheduler would not take; they ran outside it.
    pub rejected: u64,
}

/// Where the kernel has a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting in the scheduler on `cpu`'s run queue: its token is for
    /// `cpu`, unless a thief's migration moved it (the task moves when the
    /// thief picks it, as in the kernel).
    Queued {
        cpu: CpuId,
    },
    /// Waiting outside the scheduler (it refused the task).
    Fallback,
    Running {
        cpu: CpuId,
    },
    Blocked,
}

struct Task {
    /// Enoki-C's `p->scx.enoki_gen`: unique to this task.
    generation: u64,
    /// Its process (thread group).
    tgid: Pid,
    allowed: CpuSet,
    nice: i32,
    runtime: u64,
    state: TaskState,
    /// CPU it last ran on (its parent's until it runs): `task_cpu(p)`.
    last_cpu: CpuId,
    cgroup: CgroupId,
}

/// CGROUP_NEW for `c`, on `cpu`.
fn cgroup_new_msg(c: &CgroupInfo, cpu: CpuId) -> Msg {
    let mut m = Msg::new(kind::CGROUP_NEW, cpu as i32);
    m.cgroup = c.id;
    m.cgroup_parent = c.parent.unwrap_or(0);
    m.weight = c.weight;
    m.set_bandwidth(&c.bandwidth);
    m
}

/// Drives a scheduler the way Enoki-C does.
pub struct Driver<S: EnokiScheduler> {
    loaded: Loaded<S>,
    topology: Topology,
    pub host: Arc<RecordingHost>,
    tasks: BTreeMap<Pid, Task>,
    running: std::vec::Vec<Option<Pid>>,
    /// Slice left for the task running on each CPU, ns (sched_ext's
    /// `p->scx.slice`).
    slice_left: std::vec::Vec<u64>,
    slice_ns: u64,
    max_tasks: usize,
    observer: Option<std::boxed::Box<dyn MsgObserver>>,
    runtime_source: Option<std::boxed::Box<dyn RuntimeSource>>,
    pub counters: DriverCounters,
    /// Last generation handed out.
    gen_seq: u64,
    /// Dispatches per CPU, for the refused queue's turn.
    dispatches: std::vec::Vec<u64>,
    /// Live cgroups, parents first: an upgrade introduces them.
    cgroups: std::vec::Vec<CgroupInfo>,
    /// The time messages are stamped with, ns.
    now: u64,
    /// Open hint queues the scheduler accepted.
    queues: std::vec::Vec<OpenQueue>,
    /// Last queue id handed out.
    queue_seq: u32,
}

/// Every this many dispatches a CPU runs a refused task first, as Enoki-C's
/// `ENOKI_REFUSED_EVERY`.
const REFUSED_EVERY: u64 = 8;

impl<S: EnokiScheduler> Driver<S> {
    /// Creates the scheduler as a module load would.
    pub fn new(
        topology: Topology,
        max_tasks: usize,
        slice_ns: u64,
        args: &str,
    ) -> Result<Self, InitError> {
        let host = Arc::new(RecordingHost::default());
        let ctx = InitContext {
            topology: &topology,
            max_tasks,
            slice_ns,
            args: Args(args),
            services: super::services(Some(host.clone())),
        };
        let sched = S::init(&ctx)?;
        let nr = topology.nr_cpus();
        Ok(Driver {
            loaded: Loaded::new(sched, nr, max_tasks)?,
            topology,
            host,
            tasks: BTreeMap::new(),
            running: vec![None; nr],
            slice_left: vec![0; nr],
            slice_ns,
            max_tasks,
            observer: None,
            runtime_source: None,
            counters: DriverCounters::default(),
            gen_seq: 0,
            dispatches: vec![0; nr],
            cgroups: std::vec::Vec::new(),
            now: 0,
            queues: std::vec::Vec::new(),
            queue_seq: 0,
        })
    }

    pub fn scheduler(&self) -> &S {
        self.loaded.scheduler()
    }

    /// Why the scheduler failed, once it has (every later message is then
    /// answered without it, as Enoki-C's would be until the ejection).
    pub fn fault(&self) -> Option<super::super::fault::Fault> {
        self.loaded.fault()
    }

    /// Whether the scheduler failed.
    pub fn failed(&self) -> bool {
        self.loaded.failed()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Shows every message from now on to `observer` (`None` removes it).
    pub fn set_observer(&mut self, observer: Option<std::boxed::Box<dyn MsgObserver>>) {
        self.observer = observer;
    }

    /// Takes every task's runtime from `source` from now on (`None`: the
    /// model's own count).
    pub fn set_runtime_source(&mut self, source: Option<std::boxed::Box<dyn RuntimeSource>>) {
        self.runtime_source = source;
    }

    /// Sends one message, counting it and the mistakes libEnoki caught.
    /// An optional message the scheduler does without is not sent (as
    /// Enoki-C does): its answer stays "nothing" (`ret` and `ret_cpu` -1).
    pub fn send(&mut self, m: &mut Msg) {
        if !S::MESSAGES.takes(m.kind) {
            return;
        }
        m.now = self.now;
        if let Some(c) = self.counters.msgs.get_mut(m.kind as usize) {
            *c += 1;
        }
        if let Some(o) = self.observer.as_mut() {
            o.call_begins(m);
        }
        self.loaded.handle(m);
        if let Some(o) = self.observer.as_mut() {
            o.call_ends(m);
        }
        if m.ret_err & ret_err::WRONG_CPU != 0 {
            self.counters.pick_errors += 1;
        }
        if m.ret_err & ret_err::BAD_SELECT != 0 {
            self.counters.select_errors += 1;
        }
        if m.ret_err & ret_err::BAD_MIGRATE != 0 {
            self.counters.migrate_errors += 1;
        }
    }

    fn msg(&self, kind: u32, cpu: CpuId, pid: Pid) -> Msg {
        let mut m = Msg::new(kind, cpu as i32);
        m.pid = pid;
        m.now = self.now;
        if let Some(t) = self.tasks.get(&pid) {
            m.generation = t.generation;
            m.runtime = self.runtime(pid);
            m.allowed = t.allowed.words();
            m.cgroup = t.cgroup;
        }
        m
    }

    pub fn state(&self, pid: Pid) -> Option<TaskState> {
        self.tasks.get(&pid).map(|t| t.state)
    }

    pub fn running(&self, cpu: CpuId) -> Option<Pid> {
        self.running.get(cpu).copied().flatten()
    }

    /// Takes the service requests made so far and returns the CPUs among
    /// them kicked without preemption while running a task. Such a kick is
    /// wasted: the kernel keeps a running task that has slice left without
    /// asking the scheduler, so the CPU takes an interrupt and a pass
    /// through the kernel's scheduler for nothing.
    pub fn take_busy_kicks(&self) -> std::vec::Vec<CpuId> {
        self.host
            .take()
            .into_iter()
            .filter_map(|e| match e {
                HostEvent::Kick {
                    cpu,
                    preempt: false,
                } if self.running(cpu).is_some() => Some(cpu),
                _ => None,
            })
            .collect()
    }

    /// The case that shows whether a scheduler takes a CPU that keeps its
    /// task for idle: every CPU, idle, runs a task of its own (`first_pid`
    /// on, allowed anywhere) and keeps it when its slice (`slice_ns`) ends
    /// with nothing else queued; then task `first_pid + nr_cpus`, allowed
    /// only on CPU 0, arrives and runs there next, and CPU 0's task waits
    /// behind it. Returns the CPUs kicked meanwhile while busy (see
    /// [`Self::take_busy_kicks`]), or what went otherwise.
    pub fn busy_kicks_once_every_cpu_keeps_its_task(
        &mut self,
        first_pid: Pid,
        slice_ns: u64,
    ) -> Result<std::vec::Vec<CpuId>, std::string::String> {
        let nr = self.topology.nr_cpus();
        let pid_of = |cpu: CpuId| first_pid.saturating_add(Pid::try_from(cpu).unwrap_or(Pid::MAX));
        let only = |cpu: CpuId| {
            let mut set = CpuSet::empty();
            set.insert(cpu);
            set
        };
        for cpu in 0..nr {
            if self.schedule(cpu).is_some() {
                return Err(format!("CPU {cpu} was not idle"));
            }
        }
        for cpu in 0..nr {
            self.spawn(pid_of(cpu), only(cpu), 0, cpu);
            if self.schedule(cpu) != Some(pid_of(cpu)) {
                return Err(format!("CPU {cpu} did not run task {}", pid_of(cpu)));
            }
            self.set_affinity(pid_of(cpu), CpuSet::first_n(nr));
        }
        for cpu in 0..nr {
            self.tick(cpu, slice_ns);
            if self.running(cpu) != Some(pid_of(cpu)) {
                return Err(format!("CPU {cpu} did not keep task {}", pid_of(cpu)));
            }
        }
        self.host.take();
        let newcomer = pid_of(nr);
        self.spawn(newcomer, only(0), 0, 0);
        self.tick(0, slice_ns);
        if self.running(0) != Some(newcomer) {
            return Err(format!("CPU 0 did not switch to task {newcomer}"));
        }
        Ok(self.take_busy_kicks())
    }

    /// `pid`'s total CPU time, as the messages about it carry it.
    pub fn runtime(&self, pid: Pid) -> u64 {
        self.runtime_source
            .as_ref()
            .and_then(|s| s.runtime(pid))
            .unwrap_or_else(|| self.tasks.get(&pid).map_or(0, |t| t.runtime))
    }

    /// A new task enters Enoki and becomes runnable (fork + wake_up_new_task).
    pub fn spawn(&mut self, pid: Pid, allowed: CpuSet, nice: i32, parent_cpu: CpuId) {
        self.spawn_in(pid, allowed, nice, parent_cpu, ROOT_CGROUP);
    }

    /// [`Driver::spawn`] into `cgroup` (its parent's, as a fork inherits it).
    pub fn spawn_in(
        &mut self,
        pid: Pid,
        allowed: CpuSet,
        nice: i32,
        parent_cpu: CpuId,
        cgroup: CgroupId,
    ) {
        self.spawn_thread_in(pid, pid, allowed, nice, parent_cpu, cgroup);
    }

    /// [`Driver::spawn_in`] of a thread of process `tgid` (`pid` itself
    /// for a new process).
    pub fn spawn_thread_in(
        &mut self,
        pid: Pid,
        tgid: Pid,
        allowed: CpuSet,
        nice: i32,
        parent_cpu: CpuId,
        cgroup: CgroupId,
    ) {
        self.gen_seq += 1;
        self.tasks.insert(
            pid,
            Task {
                generation: self.gen_seq,
                tgid,
                allowed,
                nice,
                runtime: 0,
                state: TaskState::Blocked,
                last_cpu: parent_cpu,
                cgroup,
            },
        );
        let mut m = self.msg(kind::TASK_NEW, parent_cpu, pid);
        m.tgid = tgid;
        m.weight = nice_to_weight(nice);
        m.nice = nice;
        self.send(&mut m);
        if m.ret < 0 {
            // Like Enoki-C: counted, and every later enqueue is refused too.
            self.counters.rejected += 1;
        }
        self.wake(pid, parent_cpu);
    }

    /// `pid` wakes up, woken from `waker_cpu`.
    pub fn wake(&mut self, pid: Pid, waker_cpu: CpuId) {
        self.wake_with(pid, waker_cpu, 0);
    }

    /// `pid` wakes up, woken from `waker_cpu` by a task about to sleep (a
    /// sync wakeup, like a pipe write before the read of the reply).
    pub fn wake_sync(&mut self, pid: Pid, waker_cpu: CpuId) {
        self.wake_with(pid, waker_cpu, flag::WAKE_SYNC);
    }

    fn wake_with(&mut self, pid: Pid, waker_cpu: CpuId, flags: u32) {
        let Some(task) = self.tasks.get(&pid) else {
            return;
        };
        let allowed = task.allowed;
        let prev = match task.state {
            TaskState::Blocked => task.last_cpu,
            _ => return,
        };
        let prev = if allowed.contains(prev) {
            prev
        } else {
            allowed.iter().next().unwrap_or(0)
        };
        let mut cpu = prev;
        if allowed.len() > 1 {
            let mut m = self.msg(kind::SELECT_TASK_RQ, waker_cpu, pid);
            m.task_cpu = prev as i32;
            m.flags = flags;
            self.send(&mut m);
            cpu = CpuId::try_from(m.ret_cpu).unwrap_or(prev);
        }
        self.enqueue(pid, cpu, kind::TASK_WAKEUP, 0);
    }

    fn enqueue(&mut self, pid: Pid, cpu: CpuId, kind: u32, flags: u32) {
        let mut m = self.msg(kind, cpu, pid);
        m.task_cpu = cpu as i32;
        m.flags = flags;
        self.send(&mut m);
        if m.ret < 0 {
            self.counters.rejected += 1;
            self.set_state(pid, TaskState::Fallback);
        } else {
            self.set_state(pid, TaskState::Queued { cpu });
        }
    }

    fn set_state(&mut self, pid: Pid, state: TaskState) {
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.state = state;
        }
    }

    /// Checks a pick the way Enoki-C does before running it. An error
    /// comes with where a token for the task is still good: nowhere (-1)
    /// unless it is only on the wrong CPU.
    fn check_pick(&self, pid: Pid, cpu: CpuId) -> Result<(), (u32, i32)> {
        let t = self.tasks.get(&pid).ok_or((err::NO_TASK, -1))?;
        let TaskState::Queued { cpu: queued } = t.state else {
            return Err((err::NOT_QUEUED, -1));
        };
        if !t.allowed.contains(cpu) {
            return Err((err::AFFINITY, queued as i32));
        }
        Ok(())
    }

    /// A task refused by the scheduler that may run on `cpu` (Enoki-C's
    /// refused queue).
    fn fallback_task(&self, cpu: CpuId) -> Option<(Pid, u64)> {
        self.tasks
            .iter()
            .find(|(_, t)| t.state == TaskState::Fallback && t.allowed.contains(cpu))
            .map(|(p, _)| (*p, self.slice_ns))
    }

    /// Enoki-C's dispatch: every [`REFUSED_EVERY`]th time a refused task
    /// first, then the scheduler's picks (handing failed ones back),
    /// balance once when it has nothing, then refused tasks. `prev` is the
    /// task still running on `cpu`; `prev` itself comes back when the
    /// scheduler keeps it running. Returns the task to run and its slice.
    fn dispatch(&mut self, cpu: CpuId, prev: Option<Pid>) -> Option<(Pid, u64)> {
        let turn = self.dispatches.get_mut(cpu).map(|n| {
            *n += 1;
            *n % REFUSED_EVERY == 0
        });
        if turn == Some(true) {
            if let Some(refused) = self.fallback_task(cpu) {
                return Some(refused);
            }
        }
        self.dispatch_module(cpu, prev)
            .or_else(|| self.fallback_task(cpu))
    }

    /// Enoki-C's balance of idle `cpu`: asks the scheduler for a task to
    /// pull, checks it, then migrates its token. Enoki-C checks without the
    /// victim CPU's run-queue lock, so that CPU may change the task between
    /// the check and the migration: `meanwhile` is that change, given the
    /// task. Returns the task migrated, if any.
    pub fn balance_raced_by(
        &mut self,
        cpu: CpuId,
        meanwhile: impl FnOnce(&mut Self, Pid),
    ) -> Option<Pid> {
        let mut b = Msg::new(kind::BALANCE, cpu as i32);
        self.send(&mut b);
        if b.ret < 0 {
            return None;
        }
        let pid = b.ret as Pid;
        if let Err((code, _)) = self.check_pick(pid, cpu) {
            self.counters.balance_errors += 1;
            let mut e = Msg::new(kind::BALANCE_ERR, cpu as i32);
            e.pid = pid;
            e.flags = code;
            self.send(&mut e);
            return None;
        }
        meanwhile(self, pid);
        let mut mig = self.msg(kind::MIGRATE_TASK_RQ, cpu, pid);
        mig.task_cpu = cpu as i32;
        self.send(&mut mig);
        Some(pid)
    }

    fn dispatch_module(&mut self, cpu: CpuId, prev: Option<Pid>) -> Option<(Pid, u64)> {
        // A CPU whose task is still runnable has work: it never steals.
        let mut balanced = prev.is_some();
        for attempt in 0..4 {
            let mut m = Msg::new(kind::PICK_NEXT_TASK, cpu as i32);
            if let (0, Some(p)) = (attempt, prev) {
                m.pid = p;
                m.runtime = self.runtime(p);
                m.flags = flag::HAS_PREV | flag::PREV_RUNNABLE;
            }
            self.send(&mut m);
            if m.ret >= 0 && m.flags & flag::KEEP_PREV != 0 {
                return prev
                    .filter(|p| *p as i64 == m.ret)
                    .map(|p| (p, self.slice(m.ret_slice)));
            }
            if m.ret >= 0 {
                let pid = m.ret as Pid;
                match self.check_pick(pid, cpu) {
                    Ok(()) => return Some((pid, self.slice(m.ret_slice))),
                    Err((code, token_cpu)) => {
                        self.counters.pick_errors += 1;
                        let mut e = Msg::new(kind::PNT_ERR, cpu as i32);
                        e.pid = pid;
                        e.task_cpu = token_cpu;
                        e.flags = code;
                        self.send(&mut e);
                        self.kick_token_cpu(token_cpu, cpu);
                    }
                }
                continue;
            }
            // libEnoki refused a token for another CPU: ask again.
            if m.ret_err != 0 {
                self.kick_token_cpu(m.ret_cpu, cpu);
                continue;
            }
            if balanced {
                break;
            }
            balanced = true;
            if self.balance_raced_by(cpu, |_, _| {}).is_none() {
                break;
            }
        }
        None
    }

    /// A token handed back goes to its CPU's queue; like Enoki-C, wake that
    /// CPU (an idle kick), which may have found its queue empty.
    fn kick_token_cpu(&self, token_cpu: i32, cpu: CpuId) {
        if let Ok(token_cpu) = CpuId::try_from(token_cpu) {
            if token_cpu != cpu && token_cpu < self.topology.nr_cpus() {
                self.host.kick_cpu(token_cpu, false);
            }
        }
    }

    /// Enoki-C's slice for a pick's answer: the default, or the answer
    /// clamped to what Enoki-C allows.
    fn slice(&self, answer: u64) -> u64 {
        if answer == 0 {
            self.slice_ns
        } else {
            answer.clamp(SLICE_MIN_NS, SLICE_MAX_NS)
        }
    }

    /// `cpu` needs a task: [`Self::dispatch`]. Returns what runs there now
    /// (the running task, if any).
    pub fn schedule(&mut self, cpu: CpuId) -> Option<Pid> {
        if let Some(pid) = self.running(cpu) {
            return Some(pid);
        }
        let (pid, slice) = self.dispatch(cpu, None)?;
        Some(self.start(pid, cpu, slice))
    }

    fn start(&mut self, pid: Pid, cpu: CpuId, slice: u64) -> Pid {
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.state = TaskState::Running { cpu };
            t.last_cpu = cpu;
        }
        self.running[cpu] = Some(pid);
        self.slice_left[cpu] = slice;
        pid
    }

    /// The task on `cpu` runs `ns` more without a tick (a burst shorter
    /// than a tick): its runtime and slice advance, no message is sent.
    pub fn run(&mut self, cpu: CpuId, ns: u64) {
        let Some(pid) = self.running(cpu) else { return };
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.runtime += ns;
        }
        self.slice_left[cpu] = self.slice_left[cpu].saturating_sub(ns);
    }

    /// The task on `cpu` runs `ns` more and takes a tick. Its slice ends
    /// when used up or when the scheduler asks; then the CPU picks again
    /// (the scheduler may keep it running). Returns whether the slice ended.
    pub fn tick(&mut self, cpu: CpuId, ns: u64) -> bool {
        let Some(pid) = self.running(cpu) else {
            return false;
        };
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.runtime += ns;
        }
        self.slice_left[cpu] = self.slice_left[cpu].saturating_sub(ns);
        let mut m = self.msg(kind::TASK_TICK, cpu, pid);
        self.send(&mut m);
        let preempt = self.slice_left[cpu] == 0 || m.ret > 0;
        if preempt {
            self.preempt(cpu, false);
        }
        preempt
    }

    /// The task on `cpu` stops running but stays runnable (slice over,
    /// kicked, or `yielded`), in the kernel's order: the CPU picks its next
    /// task first (the scheduler is told which task ran before), then the
    /// old one is handed back with TASK_PREEMPT; if nothing else was there,
    /// the CPU asks again (sched_ext's SCX_ENQ_LAST path). Returns what runs
    /// on `cpu` now.
    pub fn preempt(&mut self, cpu: CpuId, yielded: bool) -> Option<Pid> {
        let pid = self.running(cpu)?;
        let next = self.dispatch(cpu, Some(pid));
        if let Some((kept, slice)) = next.filter(|(n, _)| *n == pid) {
            // Kept running: a new slice, no switch, no TASK_PREEMPT.
            if let Some(left) = self.slice_left.get_mut(cpu) {
                *left = slice;
            }
            return Some(kept);
        }
        self.running[cpu] = None;
        self.enqueue(
            pid,
            cpu,
            kind::TASK_PREEMPT,
            if yielded { flag::YIELD } else { 0 },
        );
        match next {
            Some((next, slice)) => Some(self.start(next, cpu, slice)),
            None => self.schedule(cpu),
        }
    }

    /// The task on `cpu` goes to sleep.
    pub fn block(&mut self, cpu: CpuId) {
        let Some(pid) = self.running.get_mut(cpu).and_then(Option::take) else {
            return;
        };
        self.set_state(pid, TaskState::Blocked);
        let mut m = self.msg(kind::TASK_BLOCKED, cpu, pid);
        m.task_cpu = cpu as i32;
        m.flags = flag::SLEEP;
        self.send(&mut m);
    }

    /// `pid` exits (wherever it is).
    pub fn exit(&mut self, pid: Pid) {
        let Some(state) = self.state(pid) else { return };
        match state {
            TaskState::Running { cpu } => self.block(cpu),
            TaskState::Queued { cpu } => self.dequeue(pid, cpu),
            _ => {}
        }
        let mut m = self.msg(kind::TASK_DEAD, 0, pid);
        self.send(&mut m);
        self.tasks.remove(&pid);
    }

    /// Takes a queued task off the queue for a change (not a sleep).
    fn dequeue(&mut self, pid: Pid, cpu: CpuId) {
        self.set_state(pid, TaskState::Blocked);
        let mut m = self.msg(kind::TASK_BLOCKED, cpu, pid);
        m.task_cpu = cpu as i32;
        self.send(&mut m);
    }

    /// A queued task moves to `to` (the kernel's migration: dequeue, then
    /// enqueue on the new runqueue).
    fn move_queued(&mut self, pid: Pid, from: CpuId, to: CpuId) {
        self.dequeue(pid, from);
        self.enqueue(pid, to, kind::TASK_WAKEUP, 0);
    }

    /// `sched_setaffinity()`, in the kernel's order. A queued task leaves the
    /// queue, learns its new CPUs and comes back on the same CPU, then moves
    /// if that CPU is no longer allowed. A running task on a CPU no longer
    /// allowed is moved by the stopper: it just wakes on an allowed CPU, and
    /// its old CPU must `schedule` again.
    pub fn set_affinity(&mut self, pid: Pid, allowed: CpuSet) {
        let Some(state) = self.state(pid) else { return };
        if let TaskState::Queued { cpu } = state {
            self.dequeue(pid, cpu);
        }
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.allowed = allowed;
        }
        let mut m = self.msg(kind::TASK_AFFINITY_CHANGED, 0, pid);
        self.send(&mut m);
        let first = allowed.iter().next().unwrap_or(0);
        match state {
            TaskState::Queued { cpu } => {
                self.enqueue(pid, cpu, kind::TASK_WAKEUP, 0);
                if !allowed.contains(cpu)
                    && matches!(self.state(pid), Some(TaskState::Queued { .. }))
                {
                    self.move_queued(pid, cpu, first);
                }
            }
            TaskState::Running { cpu } if !allowed.contains(cpu) => {
                self.running[cpu] = None;
                self.enqueue(pid, first, kind::TASK_WAKEUP, 0);
            }
            _ => {}
        }
    }

    /// `setpriority()`: a queued task leaves the queue around the change, as
    /// in the kernel's dequeue/reweight/enqueue.
    pub fn set_nice(&mut self, pid: Pid, nice: i32) {
        let Some(state) = self.state(pid) else { return };
        if let TaskState::Queued { cpu } = state {
            self.dequeue(pid, cpu);
        }
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.nice = nice;
        }
        let mut m = self.msg(kind::TASK_PRIO_CHANGED, 0, pid);
        m.weight = nice_to_weight(nice);
        m.nice = nice;
        self.send(&mut m);
        if let TaskState::Queued { cpu } = state {
            self.enqueue(pid, cpu, kind::TASK_WAKEUP, 0);
        }
    }

    /// CPU hotplug: `cpu` goes offline (`online` false) or comes back, as
    /// sched_ext's `cpu_offline`/`cpu_online` tell Enoki-C.
    pub fn set_cpu_online(&mut self, cpu: CpuId, online: bool) {
        let kind = if online {
            kind::CPU_ONLINE
        } else {
            kind::CPU_OFFLINE
        };
        self.send(&mut Msg::new(kind, cpu as i32));
    }

    /// The time messages are stamped with from now on (ns; 0 at first):
    /// the clock of the machine being modelled.
    pub fn set_now(&mut self, ns: u64) {
        self.now = ns;
    }

    /// The time messages are stamped with.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// A cgroup is created under `parent` (`None`: the root itself) with
    /// cpu.weight `weight` and no cpu.max, as sched_ext's `cgroup_init`
    /// tells Enoki-C.
    pub fn cgroup_new(&mut self, id: CgroupId, parent: Option<CgroupId>, weight: u32) {
        let info = CgroupInfo {
            id,
            parent,
            weight,
            bandwidth: Bandwidth::UNLIMITED,
        };
        self.cgroups.push(info);
        self.send(&mut cgroup_new_msg(&info, 0));
    }

    /// A cgroup is removed (`cgroup_exit`); its tasks have left it.
    pub fn cgroup_gone(&mut self, id: CgroupId) {
        self.cgroups.retain(|c| c.id != id);
        let mut m = Msg::new(kind::CGROUP_GONE, 0);
        m.cgroup = id;
        self.send(&mut m);
    }

    /// A cgroup's cpu.weight is set (`cgroup_set_weight`).
    pub fn set_cgroup_weight(&mut self, id: CgroupId, weight: u32) {
        for c in self.cgroups.iter_mut().filter(|c| c.id == id) {
            c.weight = weight;
        }
        let mut m = Msg::new(kind::CGROUP_WEIGHT, 0);
        m.cgroup = id;
        m.weight = weight;
        self.send(&mut m);
    }

    /// The cgroup `pid` is in.
    pub fn cgroup_of(&self, pid: Pid) -> Option<CgroupId> {
        self.tasks.get(&pid).map(|t| t.cgroup)
    }

    /// Whether `cgroup` or an ancestor has a cpu.max: its tasks may wait
    /// while CPUs idle.
    pub fn cgroup_limited(&self, cgroup: CgroupId) -> bool {
        let mut at = Some(cgroup);
        for _ in 0..=self.cgroups.len() {
            let Some(c) = at.and_then(|id| self.cgroups.iter().find(|c| c.id == id)) else {
                return false;
            };
            if c.bandwidth.quota_ns.is_some() {
                return true;
            }
            at = c.parent;
        }
        false
    }

    /// A cgroup's cpu.max is set (`cgroup_set_bandwidth`).
    pub fn set_cgroup_bandwidth(&mut self, id: CgroupId, bandwidth: Bandwidth) {
        for c in self.cgroups.iter_mut().filter(|c| c.id == id) {
            c.bandwidth = bandwidth;
        }
        let mut m = Msg::new(kind::CGROUP_BANDWIDTH, 0);
        m.cgroup = id;
        m.set_bandwidth(&bandwidth);
        self.send(&mut m);
    }

    /// `pid` moves to `cgroup` (`cgroup_move`, on its CPU under its rq
    /// lock), whatever it is doing.
    pub fn move_to_cgroup(&mut self, pid: Pid, cgroup: CgroupId) {
        let Some(task) = self.tasks.get_mut(&pid) else {
            return;
        };
        task.cgroup = cgroup;
        let cpu = task.last_cpu;
        let mut m = self.msg(kind::TASK_CGROUP_MOVED, cpu, pid);
        m.task_cpu = cpu as i32;
        self.send(&mut m);
    }

    /// Live upgrade to a new version of the same scheduler, created with
    /// `args`, as `enoki upgrade` does it from CPU `on` (see
    /// [`upgrade`](super::super::upgrade)). Refused, the running version
    /// goes on untouched.
    pub fn upgrade(&mut self, args: &str, fresh: bool, on: CpuId) -> Result<(), Refusal> {
        let new = self.create::<S>(args)?;
        self.observed_hand_over(&new, fresh, on)?;
        self.loaded = new;
        self.preempt_all();
        Ok(())
    }

    /// After an upgrade, as Enoki-C's preempting kick of every CPU: each
    /// running task comes back to the new version through `task_preempt`
    /// (which does not know it runs, so does not keep it running).
    fn preempt_all(&mut self) {
        for cpu in 0..self.running.len() {
            if self.running(cpu).is_some() {
                self.preempt(cpu, false);
            }
        }
    }

    /// Live upgrade to scheduler `T` (the same or another), created with
    /// `args`; refused, the driver comes back with the running version.
    pub fn upgrade_to<T: EnokiScheduler>(
        mut self,
        args: &str,
        fresh: bool,
        on: CpuId,
    ) -> Result<Driver<T>, (std::boxed::Box<Self>, Refusal)> {
        let new = match self.create::<T>(args) {
            Ok(new) => new,
            Err(e) => return Err((std::boxed::Box::new(self), e)),
        };
        if let Err(e) = self.observed_hand_over(&new, fresh, on) {
            return Err((std::boxed::Box::new(self), e));
        }
        let mut upgraded = Driver {
            loaded: new,
            topology: self.topology,
            host: self.host,
            tasks: self.tasks,
            running: self.running,
            slice_left: self.slice_left,
            slice_ns: self.slice_ns,
            max_tasks: self.max_tasks,
            observer: self.observer,
            runtime_source: self.runtime_source,
            counters: self.counters,
            gen_seq: self.gen_seq,
            dispatches: self.dispatches,
            cgroups: self.cgroups,
            now: self.now,
            queues: queues::carried::<S, T>(self.queues),
            queue_seq: self.queue_seq,
        };
        upgraded.preempt_all();
        Ok(upgraded)
    }

    /// Creates version `T` as its module load would, before the upgrade
    /// holds calls off.
    fn create<T: EnokiScheduler>(&self, args: &str) -> Result<Loaded<T>, Refusal> {
        let ctx = InitContext {
            topology: &self.topology,
            max_tasks: self.max_tasks,
            slice_ns: self.slice_ns,
            args: Args(args),
            services: super::services(Some(self.host.clone())),
        };
        let sched = T::init(&ctx).map_err(Refusal::Init)?;
        Loaded::new(sched, self.topology.nr_cpus(), self.max_tasks)
            .map_err(|e| Refusal::Init(e.into()))
    }

    /// What Enoki-C does while every call is held off: the running
    /// version's state to `new`, then every task introduced to `new`
    /// again, with a fresh token for each one the running version held.
    /// `new` is thrown away on a refusal, so it may be left half-built.
    /// [`Self::hand_over`], shown to the observer.
    fn observed_hand_over<T: EnokiScheduler>(
        &mut self,
        new: &Loaded<T>,
        fresh: bool,
        on: CpuId,
    ) -> Result<(), Refusal> {
        if let Some(o) = self.observer.as_mut() {
            o.upgrade_begins();
        }
        let done = self.hand_over(new, fresh, on);
        let state = match plan(fingerprint::<S>(), fingerprint::<T>(), fresh) {
            Ok(Carry::State) => fingerprint::<T>(),
            _ => 0,
        };
        if let Some(o) = self.observer.as_mut() {
            o.upgrade_ends(done.is_ok().then_some(state));
        }
        done
    }

    fn hand_over<T: EnokiScheduler>(
        &mut self,
        new: &Loaded<T>,
        fresh: bool,
        on: CpuId,
    ) -> Result<(), Refusal> {
        let carry = plan(fingerprint::<S>(), fingerprint::<T>(), fresh)?;
        // As Enoki-C: the hint queues and every task meet the new version,
        // which adopts a pre-copy of the state; then (calls held off) the
        // state goes over again, then the waiting tasks' tokens.
        self.introduce_queues(new, on)?;
        self.introduce_tasks(new, on);
        if carry == Carry::State {
            self.carry_state(new, on)?;
            self.carry_state(new, on)?;
        }
        self.offer_tokens(new, on)?;
        if new.failed() {
            return Err(Refusal::InitFailed);
        }
        Ok(())
    }

    /// CGROUP_NEW for every cgroup, parents first, then TASK_NEW for
    /// every task, to `new`.
    fn introduce_tasks<T: EnokiScheduler>(&self, new: &Loaded<T>, on: CpuId) {
        if T::MESSAGES.takes(kind::CGROUP_NEW) {
            for c in &self.cgroups {
                let mut m = cgroup_new_msg(c, on);
                m.now = self.now;
                new.handle(&mut m);
            }
        }
        for (&pid, t) in &self.tasks {
            let mut m = self.msg(kind::TASK_NEW, on, pid);
            m.tgid = t.tgid;
            m.weight = nice_to_weight(t.nice);
            m.nice = t.nice;
            m.task_cpu = t.last_cpu as i32;
            new.handle(&mut m);
        }
    }

    /// The running version's state, to `new` (their fingerprints match).
    fn carry_state<T: EnokiScheduler>(&self, new: &Loaded<T>, on: CpuId) -> Result<(), Refusal> {
        let mut state = std::boxed::Box::new(<S::UpgradeState as PlainData>::ZERO);
        self.loaded.export_state(on, &mut state)?;
        // Equal fingerprints: the same definition, so the same type here.
        let state: &dyn core::any::Any = &*state;
        let state = state
            .downcast_ref::<T::UpgradeState>()
            .ok_or(Refusal::Mismatch {
                old: fingerprint::<S>(),
                new: fingerprint::<T>(),
            })?;
        new.adopt_state(on, state)
    }

    /// A fresh token (TASK_WAKEUP) to `new` for every waiting task.
    fn offer_tokens<T: EnokiScheduler>(&self, new: &Loaded<T>, on: CpuId) -> Result<(), Refusal> {
        for (&pid, t) in &self.tasks {
            if let TaskState::Queued { cpu } = t.state {
                let mut m = self.msg(kind::TASK_WAKEUP, on, pid);
                m.task_cpu = cpu as i32;
                new.handle(&mut m);
                if m.ret < 0 {
                    return Err(Refusal::TaskRefused { pid });
                }
            }
        }
        Ok(())
    }
}
