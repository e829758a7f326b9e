// SPDX-License-Identifier: GPL-2.0
//! A simulated machine around the Driver: CPUs reschedule when the kernel
//! would make them (their task stopped, they were kicked, or a task was
//! queued for them while idle), and time advances in rounds in which every
//! busy CPU runs 1 ms and takes a tick.
#![allow(dead_code)]

use std::collections::BTreeMap;

use enoki::abi::{RawTopology, MAX_NODES};
use enoki::user::{Driver, HostEvent, TaskState};
use enoki::{CgroupId, CpuId, CpuSet, Pid, Topology};
use enoki_wfq::{Held, Wfq};

pub const TICK: u64 = 1_000_000;
pub const SLICE: u64 = 3_000_000;
pub const NR_CPUS: usize = 8;

/// Two nodes of four CPUs, 21 apart; one LLC per node.
pub fn two_nodes() -> Topology {
    Topology::symmetric(2, 4, 1, 21).unwrap()
}

/// Two nodes of four CPUs, each node with two LLCs of two CPUs.
pub fn two_nodes_four_llcs() -> Topology {
    let mut raw = RawTopology::default();
    two_nodes().fill_raw(&mut raw);
    for cpu in 0..NR_CPUS {
        raw.cpus[cpu].llc = (cpu - cpu % 2) as i32;
    }
    assert!(raw.nr_nodes as usize <= MAX_NODES);
    Topology::from_raw(&raw).unwrap()
}

pub fn set(cpus: &[CpuId]) -> CpuSet {
    let mut s = CpuSet::empty();
    for c in cpus {
        s.insert(*c);
    }
    s
}

pub fn only(cpu: CpuId) -> CpuSet {
    set(&[cpu])
}

pub fn all() -> CpuSet {
    CpuSet::first_n(NR_CPUS)
}

pub struct Machine {
    pub d: Driver<Wfq>,
    /// Allowed CPUs of every live task, as the test set them.
    pub allowed: BTreeMap<Pid, CpuSet>,
}

impl Machine {
    pub fn new(args: &str) -> Self {
        Self::with(two_nodes(), 256, args)
    }

    pub fn with(topology: Topology, max_tasks: usize, args: &str) -> Self {
        std::env::set_var("ENOKI_QUIET", "1");
        let d =
            Driver::new(topology, max_tasks, SLICE, args).unwrap_or_else(|e| panic!("init: {e:?}"));
        Machine {
            d,
            allowed: BTreeMap::new(),
        }
    }

    pub fn sched(&self) -> &Wfq {
        self.d.scheduler()
    }

    pub fn running(&self, cpu: CpuId) -> Option<Pid> {
        self.d.running(cpu)
    }

    /// The CPU `pid` runs on.
    pub fn cpu_of(&self, pid: Pid) -> Option<CpuId> {
        match self.d.state(pid) {
            Some(TaskState::Running { cpu }) => Some(cpu),
            _ => None,
        }
    }

    /// Runs `f` on the driver, then lets the CPUs reschedule as the kernel
    /// would.
    pub fn act<R>(&mut self, f: impl FnOnce(&mut Driver<Wfq>) -> R) -> R {
        let before: Vec<_> = (0..NR_CPUS).map(|c| self.d.running(c)).collect();
        let r = f(&mut self.d);
        let mut resched: Vec<bool> = (0..NR_CPUS)
            .map(|c| before[c].is_some() && self.d.running(c) != before[c])
            .collect();
        self.settle(&mut resched);
        r
    }

    /// Processes kicks and lets every idle CPU that has a reason pick, until
    /// nothing changes.
    pub fn settle(&mut self, resched: &mut [bool]) {
        for _ in 0..1000 {
            for ev in self.d.host.take() {
                if let HostEvent::Kick { cpu, preempt } = ev {
                    if preempt {
                        self.d.preempt(cpu, false);
                    }
                    resched[cpu] = true;
                }
            }
            let queued_for = |m: &Self, cpu| {
                m.allowed
                    .keys()
                    .any(|p| m.d.state(*p) == Some(TaskState::Queued { cpu }))
            };
            let next = (0..NR_CPUS)
                .find(|&c| self.d.running(c).is_none() && (resched[c] || queued_for(self, c)));
            let Some(cpu) = next else { return };
            resched[cpu] = false;
            self.d.schedule(cpu);
        }
        panic!("the machine does not settle: a CPU idles with a task queued for it");
    }

    pub fn spawn(&mut self, pid: Pid, allowed: CpuSet, nice: i32, parent: CpuId) {
        self.allowed.insert(pid, allowed);
        self.act(|d| d.spawn(pid, allowed, nice, parent));
    }

    /// Spawns `pid` into `cgroup`.
    pub fn spawn_in(&mut self, pid: Pid, allowed: CpuSet, parent: CpuId, cgroup: CgroupId) {
        self.allowed.insert(pid, allowed);
        self.act(|d| d.spawn_in(pid, allowed, 0, parent, cgroup));
    }

    pub fn set_affinity(&mut self, pid: Pid, allowed: CpuSet) {
        self.allowed.insert(pid, allowed);
        self.act(|d| d.set_affinity(pid, allowed));
    }

    pub fn set_nice(&mut self, pid: Pid, nice: i32) {
        self.act(|d| d.set_nice(pid, nice));
    }

    /// The task on `cpu` goes to sleep; returns it.
    pub fn block(&mut self, cpu: CpuId) -> Option<Pid> {
        let pid = self.d.running(cpu);
        self.act(|d| d.block(cpu));
        pid
    }

    pub fn wake(&mut self, pid: Pid, waker: CpuId) {
        self.act(|d| d.wake(pid, waker));
    }

    pub fn exit(&mut self, pid: Pid) {
        self.allowed.remove(&pid);
        self.act(|d| d.exit(pid));
    }

    /// The task on `cpu` runs a tick; returns whether it was preempted.
    pub fn tick(&mut self, cpu: CpuId) -> bool {
        self.act(|d| d.tick(cpu, TICK))
    }

    /// Every busy CPU runs one tick, one CPU after another.
    pub fn round(&mut self) {
        for cpu in 0..NR_CPUS {
            if self.d.running(cpu).is_some() {
                self.tick(cpu);
            }
        }
    }

    pub fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.round();
        }
    }

    /// Runs rounds, checking work conservation after each.
    pub fn run_conserving(&mut self, rounds: usize) {
        for i in 0..rounds {
            self.round();
            let idle = self.idle_with_work();
            assert!(
                idle.is_empty(),
                "round {i}: idle CPUs with a waiting task they could run: {idle:?}"
            );
        }
    }

    pub fn runtime(&self, pid: Pid) -> u64 {
        self.d.runtime(pid)
    }

    pub fn runtimes(&self, pids: &[Pid]) -> Vec<u64> {
        pids.iter().map(|p| self.runtime(*p)).collect()
    }

    /// (idle CPU, waiting task allowed on it): work conservation failures.
    pub fn idle_with_work(&self) -> Vec<(CpuId, Pid)> {
        let mut out = Vec::new();
        for cpu in (0..NR_CPUS).filter(|c| self.d.running(*c).is_none()) {
            for (pid, allowed) in &self.allowed {
                if matches!(self.d.state(*pid), Some(TaskState::Queued { .. }))
                    && allowed.contains(cpu)
                {
                    out.push((cpu, *pid));
                }
            }
        }
        out
    }

    /// Checks that the scheduler holds exactly what the kernel model says:
    /// every runnable task once (waiting with a token for its CPU, or
    /// running there), nothing else, only on allowed CPUs, and that no
    /// decision was refused.
    pub fn check_consistent(&self) -> Result<(), String> {
        self.sched().check().map_err(|e| e.to_string())?;
        let mut held: BTreeMap<Pid, Vec<Held>> = BTreeMap::new();
        self.sched()
            .for_each_held(|h| held.entry(h.pid).or_default().push(h))
            .map_err(|e| format!("for_each_held: {e:?}"))?;
        for (pid, hs) in &held {
            if !self.allowed.contains_key(pid) {
                return Err(format!("scheduler holds unknown task {pid}: {hs:?}"));
            }
        }
        for (pid, allowed) in &self.allowed {
            let hs = held.get(pid).map(Vec::as_slice).unwrap_or(&[]);
            let want = match self.d.state(*pid) {
                Some(TaskState::Queued { cpu }) => vec![Held {
                    queue: cpu,
                    pid: *pid,
                    token_cpu: Some(cpu),
                }],
                Some(TaskState::Running { cpu }) => vec![Held {
                    queue: cpu,
                    pid: *pid,
                    token_cpu: None,
                }],
                _ => vec![],
            };
            if hs != want.as_slice() {
                return Err(format!(
                    "task {pid} ({:?}): scheduler holds {hs:?}",
                    self.d.state(*pid)
                ));
            }
            if let Some(Held { queue, .. }) = want.first() {
                if !allowed.contains(*queue) {
                    return Err(format!(
                        "task {pid} is on CPU {queue}, outside its allowed set"
                    ));
                }
            }
        }
        let c = &self.d.counters;
        if c.pick_errors + c.balance_errors + c.select_errors + c.migrate_errors + c.rejected != 0 {
            return Err(format!("refused decisions: {c:?}"));
        }
        Ok(())
    }
}

/// `a / b` as a float.
pub fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

/// Whether all values are within `tol` (relative) of their mean.
pub fn equal_within(values: &[u64], tol: f64) -> bool {
    let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
    values
        .iter()
        .all(|v| ((*v as f64) - mean).abs() <= tol * mean)
}
