// SPDX-License-Identifier: GPL-2.0
//! The processing function: turns one [`Msg`] into one scheduler call and
//! writes the answer back. Both backends go through here, so the kernel, the
//! tests, the simulator and replay run exactly the same path.

use super::abi::{flag, kind, ret_err, Msg};
use super::collections::{AllocError, TaskMap};
use super::scheduler::EnokiScheduler;
use super::sync::SpinLock;
use super::types::{CpuId, CpuSet, PickError, Pid, PrevTask, Schedulable, TaskInfo};

/// A scheduler as libEnoki holds it, with what is needed to check messages.
pub struct Loaded<S> {
    sched: S,
    nr_cpus: usize,
    /// The generation of each task the scheduler knows, by pid: a pid can
    /// name a new task before the last message about its previous owner
    /// (TASK_DEAD comes at the final put). Messages that change which task
    /// a pid names (TASK_NEW, TASK_DEAD) are handled under this lock.
    gens: SpinLock<TaskMap<u64>>,
}

impl<S: EnokiScheduler> Loaded<S> {
    /// Wraps a created scheduler for a machine of `nr_cpus` CPUs, tracking
    /// up to `max_tasks` tasks.
    pub fn new(sched: S, nr_cpus: usize, max_tasks: usize) -> Result<Self, AllocError> {
        Ok(Loaded {
            sched,
            nr_cpus,
            gens: SpinLock::new(TaskMap::with_capacity(max_tasks)?),
        })
    }

    /// The scheduler itself.
    pub fn scheduler(&self) -> &S {
        &self.sched
    }

    fn cpu(&self, raw: i32) -> Option<CpuId> {
        usize::try_from(raw).ok().filter(|c| *c < self.nr_cpus)
    }

    /// Handles `m` in place. A message naming a CPU outside the topology is
    /// answered with -1 and never reaches the scheduler.
    pub fn handle(&self, m: &mut Msg) {
        let s = &self.sched;
        m.ret = -1;
        m.ret_cpu = -1;
        let Some(cpu) = self.cpu(m.cpu) else { return };
        match m.kind {
            kind::TASK_NEW => m.ret = if self.task_new(m) { 0 } else { -1 },
            kind::TASK_WAKEUP | kind::TASK_PREEMPT => {
                let Some(task_cpu) = self.cpu(m.task_cpu) else {
                    return;
                };
                let token = Schedulable::new(m.pid, task_cpu);
                let taken = if m.kind == kind::TASK_WAKEUP {
                    s.task_wakeup(m.pid, m.runtime, token)
                } else {
                    s.task_preempt(m.pid, m.runtime, m.flags & flag::YIELD != 0, token)
                };
                // A token handed back means Enoki-C runs the task itself.
                m.ret = if taken.is_ok() { 0 } else { -1 };
            }
            kind::TASK_BLOCKED => {
                let task_cpu = self.cpu(m.task_cpu).unwrap_or(cpu);
                s.task_blocked(m.pid, m.runtime, task_cpu, m.flags & flag::SLEEP != 0);
                m.ret = 0;
            }
            kind::TASK_DEAD => {
                self.task_dead(m.pid, m.generation);
                m.ret = 0;
            }
            kind::TASK_TICK => m.ret = s.task_tick(cpu, m.pid, m.runtime) as i64,
            kind::SELECT_TASK_RQ => {
                let prev = self.cpu(m.task_cpu).unwrap_or(cpu);
                let chosen = s.select_task_rq(m.pid, prev, cpu);
                if chosen < self.nr_cpus && CpuSet::from_words(m.allowed).contains(chosen) {
                    m.ret_cpu = chosen as i32;
                } else {
                    m.ret_err |= ret_err::BAD_SELECT;
                    m.ret_cpu = prev as i32;
                }
                m.ret = m.ret_cpu as i64;
            }
            kind::PICK_NEXT_TASK => {
                let prev = (m.flags & flag::HAS_PREV != 0).then_some(PrevTask {
                    pid: m.pid,
                    runtime: m.runtime,
                    runnable: m.flags & flag::PREV_RUNNABLE != 0,
                });
                let picked = s.pick_next_task(cpu, prev);
                if let (None, Some(prev)) = (&picked, prev.filter(|p| p.runnable)) {
                    if let Some(slice) = s.keep_running(cpu, &prev) {
                        m.flags |= flag::KEEP_PREV;
                        m.ret = prev.pid as i64;
                        m.ret_cpu = cpu as i32;
                        m.ret_slice = slice;
                    }
                }
                if let Some(token) = picked {
                    if token.cpu() != cpu {
                        // Never let a token for another CPU reach the kernel.
                        m.ret_err |= ret_err::WRONG_CPU;
                        let pid = token.pid();
                        s.pnt_err(cpu, pid, PickError::WrongCpu, Some(token));
                    } else {
                        let (pid, token_cpu, slice) = token.into_parts();
                        m.ret = pid as i64;
                        m.ret_cpu = token_cpu as i32;
                        m.ret_slice = slice;
                    }
                }
            }
            kind::PNT_ERR | kind::BALANCE_ERR => {
                let err = PickError::from_code(m.flags);
                if m.kind == kind::BALANCE_ERR {
                    s.balance_err(cpu, m.pid, err);
                } else {
                    // Enoki-C refused the task: the token is still the
                    // scheduler's, unless the task is gone.
                    let token = self.cpu(m.task_cpu).filter(|_| err != PickError::NoTask);
                    s.pnt_err(cpu, m.pid, err, token.map(|c| Schedulable::new(m.pid, c)));
                }
                m.ret = 0;
            }
            kind::BALANCE => {
                if let Some(pid) = s.balance(cpu) {
                    m.ret = pid as i64;
                }
            }
            kind::MIGRATE_TASK_RQ => {
                let Some(to) = self.cpu(m.task_cpu) else {
                    return;
                };
                match s.migrate_task_rq(m.pid, Schedulable::new(m.pid, to)) {
                    Some(old) if old.pid() == m.pid => m.ret = 0,
                    // Another task's token was handed in: that task can no
                    // longer be picked. Count it; the watchdog has the rest.
                    _ => m.ret_err |= ret_err::BAD_MIGRATE,
                }
            }
            kind::TASK_PRIO_CHANGED => {
                s.task_prio_changed(m.pid, m.weight, m.nice);
                m.ret = 0;
            }
            kind::TASK_AFFINITY_CHANGED => {
                s.task_affinity_changed(m.pid, &CpuSet::from_words(m.allowed));
                m.ret = 0;
            }
            kind::CPU_ONLINE => {
                s.cpu_online(cpu);
                m.ret = 0;
            }
            kind::CPU_OFFLINE => {
                s.cpu_offline(cpu);
                m.ret = 0;
            }
            _ => {}
        }
    }

    /// TASK_NEW: a pid still held by an older task (its TASK_DEAD not yet
    /// here) now names a new one, so the old one is dead to the scheduler.
    fn task_new(&self, m: &Msg) -> bool {
        let task = TaskInfo {
            pid: m.pid,
            tgid: m.tgid,
            weight: m.weight,
            nice: m.nice,
            runtime: m.runtime,
            allowed: CpuSet::from_words(m.allowed),
        };
        let mut gens = self.gens.lock();
        if gens.get(m.pid).is_some_and(|g| *g != m.generation) {
            self.sched.task_dead(m.pid);
            gens.remove(m.pid);
        }
        if gens.insert(m.pid, m.generation).is_err() {
            return false;
        }
        let taken = self.sched.task_new(&task).is_ok();
        if !taken {
            gens.remove(m.pid);
        }
        taken
    }

    /// TASK_DEAD: only for the task the pid names now; a stale one (its pid
    /// already reused) is dropped.
    fn task_dead(&self, pid: Pid, generation: u64) {
        let mut gens = self.gens.lock();
        match gens.get(pid) {
            Some(g) if *g == generation => {
                gens.remove(pid);
                self.sched.task_dead(pid);
            }
            // Stale, or refused at TASK_NEW: not the scheduler's.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::vec::Vec;

    use super::*;
    use crate::scheduler::{InitContext, InitError, NoHint, TaskError};

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
        fn pick_next_task(&self, _: CpuId, _: Option<PrevTask>) -> Option<Schedulable> {
            None
        }
        fn pnt_err(&self, _: CpuId, _: Pid, _: PickError, _: Option<Schedulable>) {}
        fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError> {
            self.note("new", task.pid);
            Ok(())
        }
        fn task_wakeup(&self, _: Pid, _: u64, _: Schedulable) -> Result<(), Schedulable> {
            Ok(())
        }
        fn task_preempt(&self, _: Pid, _: u64, _: bool, _: Schedulable) -> Result<(), Schedulable> {
            Ok(())
        }
        fn task_blocked(&self, _: Pid, _: u64, _: CpuId, _: bool) {}
        fn task_dead(&self, pid: Pid) {
            self.note("dead", pid);
        }
        fn cpu_online(&self, cpu: CpuId) {
            self.note("online", cpu as Pid);
        }
        fn cpu_offline(&self, cpu: CpuId) {
            self.note("offline", cpu as Pid);
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
