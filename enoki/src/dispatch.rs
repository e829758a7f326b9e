// SPDX-License-Identifier: GPL-2.0
//! The processing function: turns one [`Msg`] into one scheduler call and
//! writes the answer back. Both backends go through here, so the kernel, the
//! tests, the simulator and replay run exactly the same path.

use core::sync::atomic::{AtomicBool, Ordering};

use super::abi::errno::{EINVAL, ENOSPC, EOPNOTSUPP};
use super::abi::{flag, kind, ret_err, Msg, HINT_MAX};
use super::collections::{AllocError, TaskMap};
use super::fault::{Failed, Fault, FaultKind, Party};
use super::hint::HintData;
use super::scheduler::{EnokiScheduler, HintError, NotTaken, Result, TaskError, Wake};
use super::services;
use super::sync::{detect, First, SpinLock};
use super::types::{
    CgroupId, CgroupInfo, CpuId, CpuSet, PickError, Pid, PrevTask, Schedulable, TaskInfo,
    ROOT_CGROUP,
};
use super::upgrade::Refusal;

/// The cgroup of the task `m` is about: the root when the trace predates
/// cgroups.
fn task_cgroup(m: &Msg) -> CgroupId {
    if m.cgroup == 0 {
        ROOT_CGROUP
    } else {
        m.cgroup
    }
}

/// QUEUE_NEW's answer: 0 (accepted) or why not, as a negative errno.
fn queue_answer(r: Result<(), TaskError>) -> Result<i64> {
    match r {
        Ok(()) => Ok(0),
        Err(TaskError::Full) => Ok(-ENOSPC),
        Err(TaskError::Unsupported) => Ok(-EOPNOTSUPP),
        Err(TaskError::Failed) => Err(Failed::new()),
    }
}

/// A scheduler as libEnoki holds it, with what is needed to check messages.
pub struct Loaded<S> {
    sched: S,
    nr_cpus: usize,
    /// The generation of each task the scheduler knows, by pid: a pid can
    /// name a new task before the last message about its previous owner
    /// (TASK_DEAD comes at the final put). Messages that change which task
    /// a pid names (TASK_NEW, TASK_DEAD) are handled under this lock.
    gens: SpinLock<TaskMap<u64>>,
    /// Set once a call failed: every later message is answered without
    /// the scheduler.
    failed: AtomicBool,
    /// What went wrong first.
    fault: First<Fault>,
}

impl<S: EnokiScheduler> Loaded<S> {
    /// Wraps a created scheduler for a machine of `nr_cpus` CPUs, tracking
    /// up to `max_tasks` tasks.
    pub fn new(
        sched: S,
        nr_cpus: usize,
        max_tasks: usize,
    ) -> core::result::Result<Self, AllocError> {
        const {
            assert!(
                <S::Hint as HintData>::SIZE <= HINT_MAX,
                "the scheduler's hint is larger than a message carries (abi::HINT_MAX)"
            )
        };
        Ok(Loaded {
            sched,
            nr_cpus,
            gens: SpinLock::new(TaskMap::with_capacity(max_tasks)?),
            failed: AtomicBool::new(false),
            fault: First::new(),
        })
    }

    /// The scheduler itself.
    pub fn scheduler(&self) -> &S {
        &self.sched
    }

    /// Why the scheduler failed, once it has.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.get()
    }

    /// Whether the scheduler failed (cheaper than [`Loaded::fault`]).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Live upgrade, on CPU `cpu`, first while other CPUs' calls go on (a
    /// pre-copy), then with every call held off: the scheduler writes the
    /// state the next version starts from. A failure refuses the upgrade;
    /// this version keeps running, so it is not reported.
    pub fn export_state(&self, cpu: CpuId, state: &mut S::UpgradeState) -> Result<(), Refusal> {
        if self.failed() {
            return Err(Refusal::PrepFailed);
        }
        let call = detect::enter_call(cpu as u32);
        let done = self.sched.reregister_prep(state);
        match (done, call.finish()) {
            (Ok(()), None) => Ok(()),
            _ => Err(Refusal::PrepFailed),
        }
    }

    /// Live upgrade, on CPU `cpu`, with each pass of the previous
    /// version's [`Self::export_state`]: this freshly created scheduler
    /// takes over from its `state` (the last pass counts).
    pub fn adopt_state(&self, cpu: CpuId, state: &S::UpgradeState) -> Result<(), Refusal> {
        let call = detect::enter_call(cpu as u32);
        let done = self.sched.reregister_init(state);
        match (done, call.finish()) {
            (Ok(()), None) => Ok(()),
            _ => Err(Refusal::InitFailed),
        }
    }

    fn cpu(&self, raw: i32) -> Option<CpuId> {
        usize::try_from(raw).ok().filter(|c| *c < self.nr_cpus)
    }

    /// Handles `m` in place. A message naming a CPU outside the topology is
    /// answered with -1 and never reaches the scheduler; nor does any
    /// message once the scheduler failed (answered with
    /// [`ret_err::FAILED`]).
    pub fn handle(&self, m: &mut Msg) {
        m.ret = -1;
        m.ret_cpu = -1;
        if self.failed.load(Ordering::Acquire) {
            m.ret_err |= ret_err::FAILED;
            return;
        }
        let Some(cpu) = self.cpu(m.cpu) else { return };
        let call = detect::enter_call(cpu as u32);
        services::set_message_time(call.context(), m.now);
        let outcome = self.call(m, cpu);
        let fault = call.finish();
        if outcome.is_err() || fault.is_some() {
            self.fail(m, cpu, fault);
        }
    }

    /// The call failed: its answer is "nothing", and the first failure is
    /// reported (Enoki-C then ejects the scheduler). `fault` is not a
    /// recorded value, so a replayed failing call never waits for a lock
    /// the recording does not show; when CPUs fail at once, a replay reports
    /// the first failure it replays, a failure of the run though maybe not
    /// the one the kernel reported.
    fn fail(&self, m: &mut Msg, cpu: CpuId, fault: Option<Fault>) {
        m.ret = -1;
        m.ret_cpu = -1;
        m.flags &= !flag::KEEP_PREV;
        m.ret_err |= ret_err::FAILED;
        let mut fault = fault.unwrap_or_else(|| {
            Fault::new(
                FaultKind::Unexplained,
                Party {
                    cpu: cpu as u32,
                    lock: 0,
                    at: None,
                    holder: None,
                    held_since: None,
                },
            )
        });
        fault.call = kind::NAMES.get(m.kind as usize).copied().unwrap_or("?");
        let first = self.fault.set(fault);
        self.failed.store(true, Ordering::Release);
        if first {
            super::backend::report_failure(S::NAME, &fault);
        }
    }

    /// One message, one scheduler call.
    fn call(&self, m: &mut Msg, cpu: CpuId) -> Result {
        let s = &self.sched;
        match m.kind {
            kind::TASK_NEW => m.ret = if self.task_new(m)? { 0 } else { -1 },
            kind::TASK_WAKEUP | kind::TASK_PREEMPT => {
                let Some(task_cpu) = self.cpu(m.task_cpu) else {
                    return Ok(());
                };
                let token = Schedulable::new(m.pid, task_cpu);
                let taken = if m.kind == kind::TASK_WAKEUP {
                    s.task_wakeup(m.pid, m.runtime, token)
                } else {
                    s.task_preempt(m.pid, m.runtime, m.flags & flag::YIELD != 0, token)
                };
                match taken {
                    Ok(()) => m.ret = 0,
                    // A token handed back means Enoki-C runs the task itself.
                    Err(NotTaken::Refused(_)) => {}
                    Err(NotTaken::Failed(failed)) => return Err(failed),
                }
            }
            kind::TASK_BLOCKED => {
                let task_cpu = self.cpu(m.task_cpu).unwrap_or(cpu);
                s.task_blocked(m.pid, m.runtime, task_cpu, m.flags & flag::SLEEP != 0)?;
                m.ret = 0;
            }
            kind::TASK_DEAD => {
                self.task_dead(m.pid, m.generation)?;
                m.ret = 0;
            }
            kind::TASK_TICK => m.ret = s.task_tick(cpu, m.pid, m.runtime)? as i64,
            kind::SELECT_TASK_RQ => {
                let prev = self.cpu(m.task_cpu).unwrap_or(cpu);
                let wake = Wake {
                    waker_cpu: cpu,
                    sync: m.flags & flag::WAKE_SYNC != 0,
                };
                let chosen = s.select_task_rq(m.pid, prev, wake)?;
                if chosen < self.nr_cpus && CpuSet::from_words(m.allowed).contains(chosen) {
                    m.ret_cpu = chosen as i32;
                } else {
                    m.ret_err |= ret_err::BAD_SELECT;
                    m.ret_cpu = prev as i32;
                }
                m.ret = m.ret_cpu as i64;
            }
            kind::PICK_NEXT_TASK => self.pick(m, cpu)?,
            kind::PNT_ERR | kind::BALANCE_ERR => {
                let err = PickError::from_code(m.flags);
                if m.kind == kind::BALANCE_ERR {
                    s.balance_err(cpu, m.pid, err)?;
                } else {
                    // Enoki-C refused the task: the token is still the
                    // scheduler's, unless the task is gone.
                    let token = self.cpu(m.task_cpu).filter(|_| err != PickError::NoTask);
                    s.pnt_err(cpu, m.pid, err, token.map(|c| Schedulable::new(m.pid, c)))?;
                }
                m.ret = 0;
            }
            kind::BALANCE => {
                if let Some(pid) = s.balance(cpu)? {
                    m.ret = pid as i64;
                }
            }
            kind::MIGRATE_TASK_RQ => {
                let Some(to) = self.cpu(m.task_cpu) else {
                    return Ok(());
                };
                match s.migrate_task_rq(m.pid, Schedulable::new(m.pid, to))? {
                    Some(old) if old.pid() == m.pid => m.ret = 0,
                    // Another task's token was handed in: that task can no
                    // longer be picked. Count it; the watchdog has the rest.
                    _ => m.ret_err |= ret_err::BAD_MIGRATE,
                }
            }
            kind::TASK_PRIO_CHANGED => {
                s.task_prio_changed(m.pid, m.weight, m.nice)?;
                m.ret = 0;
            }
            kind::TASK_AFFINITY_CHANGED => {
                s.task_affinity_changed(m.pid, &CpuSet::from_words(m.allowed))?;
                m.ret = 0;
            }
            kind::CPU_ONLINE => {
                s.cpu_online(cpu)?;
                m.ret = 0;
            }
            kind::CPU_OFFLINE => {
                s.cpu_offline(cpu)?;
                m.ret = 0;
            }
            kind::CGROUP_NEW => {
                let info = CgroupInfo {
                    id: m.cgroup,
                    parent: (m.cgroup_parent != 0).then_some(m.cgroup_parent),
                    weight: m.weight,
                    bandwidth: m.bandwidth(),
                };
                s.cgroup_new(&info)?;
                m.ret = 0;
            }
            kind::CGROUP_GONE => {
                s.cgroup_gone(m.cgroup)?;
                m.ret = 0;
            }
            kind::CGROUP_WEIGHT => {
                s.cgroup_weight(m.cgroup, m.weight)?;
                m.ret = 0;
            }
            kind::CGROUP_BANDWIDTH => {
                s.cgroup_bandwidth(m.cgroup, m.bandwidth())?;
                m.ret = 0;
            }
            kind::TASK_CGROUP_MOVED => {
                s.task_cgroup_moved(m.pid, task_cgroup(m))?;
                m.ret = 0;
            }
            kind::QUEUE_NEW => m.ret = queue_answer(s.register_queue(m.queue, m.tgid, m.pid))?,
            kind::HINT => m.ret = self.hint(m)?,
            kind::QUEUE_GONE => {
                s.unregister_queue(m.queue)?;
                m.ret = 0;
            }
            _ => {}
        }
        Ok(())
    }

    /// HINT: 0 if the scheduler took it, or -EINVAL. A hint of another
    /// size than the scheduler's is refused before it sees it.
    fn hint(&self, m: &Msg) -> Result<i64> {
        if m.hint_size as usize != S::Hint::SIZE {
            return Ok(-EINVAL);
        }
        let hint = S::Hint::read(&m.hint_bytes());
        match self.sched.parse_hint(m.queue, m.pid, hint) {
            Ok(()) => Ok(0),
            Err(HintError::Refused) => Ok(-EINVAL),
            Err(HintError::Failed) => Err(Failed::new()),
        }
    }

    /// PICK_NEXT_TASK: the scheduler's pick, or `prev` kept running when it
    /// has none, checked to be a token for this CPU.
    fn pick(&self, m: &mut Msg, cpu: CpuId) -> Result {
        let s = &self.sched;
        let prev = (m.flags & flag::HAS_PREV != 0).then_some(PrevTask {
            pid: m.pid,
            runtime: m.runtime,
            runnable: m.flags & flag::PREV_RUNNABLE != 0,
        });
        let picked = s.pick_next_task(cpu, prev)?;
        if let (None, Some(prev)) = (&picked, prev.filter(|p| p.runnable)) {
            if let Some(slice) = s.keep_running(cpu, &prev)? {
                m.flags |= flag::KEEP_PREV;
                m.ret = prev.pid as i64;
                m.ret_cpu = cpu as i32;
                m.ret_slice = slice;
            }
        }
        let Some(token) = picked else {
            return Ok(());
        };
        if token.cpu() != cpu {
            // Never let a token for another CPU reach the kernel. It goes
            // back to its CPU's queue, and Enoki-C wakes that CPU
            // (`ret_cpu`), which may have gone idle meanwhile.
            m.ret_err |= ret_err::WRONG_CPU;
            m.ret_cpu = i32::try_from(token.cpu()).unwrap_or(-1);
            let pid = token.pid();
            return s.pnt_err(cpu, pid, PickError::WrongCpu, Some(token));
        }
        let (pid, token_cpu, slice) = token.into_parts();
        m.ret = pid as i64;
        m.ret_cpu = token_cpu as i32;
        m.ret_slice = slice;
        Ok(())
    }

    /// TASK_NEW: a pid still held by an older task (its TASK_DEAD not yet
    /// here) now names a new one, so the old one is dead to the scheduler.
    /// `Ok(false)`: the scheduler would not take the task.
    fn task_new(&self, m: &Msg) -> Result<bool> {
        let task = TaskInfo {
            pid: m.pid,
            tgid: m.tgid,
            weight: m.weight,
            nice: m.nice,
            runtime: m.runtime,
            allowed: CpuSet::from_words(m.allowed),
            cgroup: task_cgroup(m),
        };
        let mut gens = self.gens.lock()?;
        if gens.get(m.pid) == Some(&m.generation) {
            // Met already: an upgrade introduces every task, then tells of
            // the changes since, which may include this same task_new.
            return Ok(true);
        }
        if gens.get(m.pid).is_some_and(|g| *g != m.generation) {
            self.sched.task_dead(m.pid)?;
            gens.remove(m.pid);
        }
        if gens.insert(m.pid, m.generation).is_err() {
            return Ok(false);
        }
        match self.sched.task_new(&task) {
            Ok(()) => Ok(true),
            Err(TaskError::Failed) => Err(Failed::new()),
            Err(_) => {
                gens.remove(m.pid);
                Ok(false)
            }
        }
    }

    /// TASK_DEAD: only for the task the pid names now; a stale one (its pid
    /// already reused) is dropped.
    fn task_dead(&self, pid: Pid, generation: u64) -> Result {
        let mut gens = self.gens.lock()?;
        match gens.get(pid) {
            Some(g) if *g == generation => {
                gens.remove(pid);
                self.sched.task_dead(pid)
            }
            // Stale, or refused at TASK_NEW: not the scheduler's.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::vec::Vec;

    use super::*;
    use crate::scheduler::{InitContext, InitError, NoHint, TaskError};
    use crate::Bandwidth;
    use crate::Result;

    /// Remembers every call that changes which tasks it knows, and picks
    /// nothing.
    #[derive(Default)]
    struct Calls(Mutex<Vec<(&'static str, Pid)>>);

    impl Calls {
        fn note(&self, what: &'static str, pid: Pid) {
            self.0.lock().unwrap().push((what, pid));
        }
        fn take(&self) -> Vec<(&'static str, Pid)> {
            core::mem::take(&mut self.0.lock().unwrap())
        }
    }

    impl EnokiScheduler for Calls {
        const NAME: &'static str = "calls";
        type Hint = NoHint;
        type RevHint = NoHint;
        type UpgradeState = ();
        fn init(_: &InitContext<'_>) -> Result<Self, InitError> {
            Ok(Calls::default())
        }
        fn pick_next_task(&self, _: CpuId, _: Option<PrevTask>) -> Result<Option<Schedulable>> {
            Ok(None)
        }
        fn pnt_err(&self, _: CpuId, _: Pid, _: PickError, _: Option<Schedulable>) -> Result {
            Ok(())
        }
        fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError> {
            self.note("new", task.pid);
            Ok(())
        }
        fn task_wakeup(&self, _: Pid, _: u64, _: Schedulable) -> Result<(), NotTaken> {
            Ok(())
        }
        fn task_preempt(&self, _: Pid, _: u64, _: bool, _: Schedulable) -> Result<(), NotTaken> {
            Ok(())
        }
        fn task_blocked(&self, _: Pid, _: u64, _: CpuId, _: bool) -> Result {
            Ok(())
        }
        fn task_dead(&self, pid: Pid) -> Result {
            self.note("dead", pid);
            Ok(())
        }
        fn cpu_online(&self, cpu: CpuId) -> Result {
            self.note("online", cpu as Pid);
            Ok(())
        }
        fn cpu_offline(&self, cpu: CpuId) -> Result {
            self.note("offline", cpu as Pid);
            Ok(())
        }
        /// Notes the quota in ms (-1: none) and the message's time in ms.
        fn cgroup_bandwidth(&self, _: CgroupId, b: Bandwidth) -> Result {
            let quota_ms = b.quota_ns.map_or(-1, |q| (q / 1_000_000) as Pid);
            self.note("quota", quota_ms);
            let now = crate::user::services(None).now();
            self.note("at", (now / 1_000_000) as Pid);
            Ok(())
        }
    }

    fn loaded() -> Loaded<Calls> {
        Loaded::new(Calls::default(), 4, 16).unwrap()
    }

    fn task_msg(kind: u32, pid: Pid, generation: u64) -> Msg {
        let mut m = Msg::new(kind, 0);
        m.pid = pid;
        m.generation = generation;
        m
    }

    #[test]
    fn a_cpu_max_reaches_the_scheduler_with_the_time_of_its_message() {
        let l = loaded();
        let mut m = Msg::new(kind::CGROUP_BANDWIDTH, 1);
        (m.cgroup, m.now) = (5, 7_000_000);
        (m.cgroup_period, m.cgroup_quota, m.cgroup_burst) = (100_000_000, 20_000_000, 0);
        l.handle(&mut m);
        (m.cgroup_quota, m.now) = (u64::MAX, 9_000_000);
        l.handle(&mut m);
        assert_eq!(
            l.scheduler().take(),
            [("quota", 20), ("at", 7), ("quota", -1), ("at", 9)]
        );
    }

    #[test]
    fn a_stale_task_dead_after_pid_reuse_is_dropped() {
        let l = loaded();
        l.handle(&mut task_msg(kind::TASK_NEW, 7, 1));
        // pid 7 is reused before the first task's final put
        l.handle(&mut task_msg(kind::TASK_NEW, 7, 2));
        l.handle(&mut task_msg(kind::TASK_DEAD, 7, 1));
        assert_eq!(
            l.scheduler().take(),
            [("new", 7), ("dead", 7), ("new", 7)],
            "the old task is dead to the scheduler once its pid names a new one; its own \
             TASK_DEAD then must not kill the new one"
        );
        l.handle(&mut task_msg(kind::TASK_DEAD, 7, 2));
        assert_eq!(l.scheduler().take(), [("dead", 7)]);
    }

    #[test]
    fn a_task_met_twice_is_introduced_once() {
        let l = loaded();
        let mut first = task_msg(kind::TASK_NEW, 7, 3);
        l.handle(&mut first);
        // An upgrade's log of changes may repeat the task_new it met.
        let mut again = task_msg(kind::TASK_NEW, 7, 3);
        l.handle(&mut again);
        assert_eq!(l.scheduler().take(), [("new", 7)]);
        assert_eq!(again.ret, first.ret);
    }

    #[test]
    fn a_pick_with_nothing_else_keeps_a_runnable_prev_running() {
        let l = loaded();
        let mut m = Msg::new(kind::PICK_NEXT_TASK, 1);
        m.pid = 9;
        m.flags = flag::HAS_PREV | flag::PREV_RUNNABLE;
        l.handle(&mut m);
        assert_ne!(m.flags & flag::KEEP_PREV, 0);
        assert_eq!((m.ret, m.ret_cpu), (9, 1));

        let mut sleeping = Msg::new(kind::PICK_NEXT_TASK, 1);
        sleeping.pid = 9;
        sleeping.flags = flag::HAS_PREV;
        l.handle(&mut sleeping);
        assert_eq!(sleeping.flags & flag::KEEP_PREV, 0);
        assert_eq!(sleeping.ret, -1, "a sleeping prev cannot be kept");
    }

    #[test]
    fn cpu_hotplug_reaches_the_scheduler() {
        let l = loaded();
        l.handle(&mut Msg::new(kind::CPU_OFFLINE, 3));
        l.handle(&mut Msg::new(kind::CPU_ONLINE, 3));
        l.handle(&mut Msg::new(kind::CPU_ONLINE, 4));
        assert_eq!(
            l.scheduler().take(),
            [("offline", 3), ("online", 3)],
            "CPU 4 is outside the topology"
        );
    }
}
