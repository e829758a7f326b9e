// SPDX-License-Identifier: MIT OR Apache-2.0
//! The deterministic simulator: simulated CPUs and time around libEnoki's
//! `Driver`, the host model of Enoki-C.
//!
//! Time advances through an event queue ordered by (time, insertion order);
//! every random choice comes from one ChaCha stream seeded by the run's
//! seed, so a seed and a spec give the same run, message for message.
//!
//! The model: every CPU takes a timer tick every `tick_us` while a task runs
//! on it (`Driver::tick`, which also ends slices). An idle CPU asks for work
//! only when kicked (`Services::kick_cpu`) or when a task is queued for it
//! (the kernel's resched IPI on enqueue), like sched_ext; it never polls. At
//! start every CPU asks once, as when a scheduler is enabled.
//!
//! Enoki-C puts a task's total CPU time (`sum_exec_runtime`, charged on
//! every dequeue, preemption and tick) into each message about it. The
//! `Driver` counts runtime only at ticks, so a task that runs 5 µs and
//! blocks would look as if it never ran (a vruntime scheduler then starves
//! everything else behind it). The simulator charges every running task at
//! the start of each event and is the driver's `RuntimeSource`, so every
//! message carries the task's exact runtime as of now.

mod cgroups;
mod hints;
mod record;
mod summary;
mod workload;

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use anyhow::{anyhow, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use enoki::{CpuId, EnokiScheduler, Pid};

use crate::check::{Checker, Errors, Props, Snapshot, ViolationKind};
use crate::perfetto::Slice;
use crate::report::Report;
use crate::spec::Spec;
use crate::tap::{self, Driver, HostEvent, RuntimeSource, TaskState};

use record::RecordingTap;
pub use record::{trace_header, RecordSink, Recorder};
use workload::{Group, Task};

/// A simulation to run.
pub struct SimConfig {
    pub spec: Spec,
    pub seed: u64,
    pub props: Props,
    /// Keep the per-CPU timeline (for `--perfetto`).
    pub timeline: bool,
    /// Check the invariants after every event.
    pub check: bool,
    /// Record every message into the scheduler, with its answer.
    pub record: Option<RecordSink>,
}

impl SimConfig {
    pub fn new(spec: Spec, seed: u64, props: Props) -> Self {
        SimConfig {
            spec,
            seed,
            props,
            timeline: false,
            check: true,
            record: None,
        }
    }
}

/// What a simulation produced.
pub struct Outcome {
    pub report: Report,
    pub timeline: Vec<Slice>,
    /// pid -> task name, for the timeline.
    pub names: BTreeMap<Pid, String>,
}

/// Rounds of kicks and picks after one event before it is a livelock.
const SETTLE_LIMIT: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    /// The task on `cpu` used up its CPU burst (if `gen` is still current).
    BurstEnd {
        cpu: CpuId,
        gen: u64,
    },
    /// A sleeping task's timer fires on `waker`.
    Wake {
        pid: Pid,
        waker: CpuId,
    },
    /// A scheduler timer (`Services::set_timer`).
    Timer {
        cpu: CpuId,
        gen: u64,
    },
    Fork {
        group: usize,
    },
    Arrival {
        group: usize,
    },
    Affinity {
        idx: usize,
    },
    Renice {
        idx: usize,
    },
    Upgrade {
        idx: usize,
    },
    CgroupWeight {
        idx: usize,
    },
    CgroupMove {
        idx: usize,
    },
    CgroupMax {
        idx: usize,
    },
    Hint {
        idx: usize,
    },
}

/// An event in the queue: ordered by time, then by insertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: u64,
    order: u64,
    ev: Ev,
}

#[derive(Default)]
struct Cpu {
    running: Option<Pid>,
    /// Start of the current run (timeline).
    since: u64,
    /// Runtime charged up to.
    acct: u64,
    /// Last tick (or start of the run): what the next tick reports.
    tick_from: u64,
    gen: u64,
    timer_gen: u64,
    busy: u64,
}

/// What the driver and the recorder read from the simulation: where and
/// when calls happen, and every task's exact runtime.
#[derive(Clone, Default)]
struct Clock {
    now: Rc<Cell<u64>>,
    cpu: Rc<Cell<u32>>,
    runtime: Rc<RefCell<BTreeMap<Pid, u64>>>,
}

impl RuntimeSource for Clock {
    fn runtime(&self, pid: Pid) -> Option<u64> {
        self.runtime.borrow().get(&pid).copied()
    }
}

struct Sim<S: EnokiScheduler> {
    d: Driver<S>,
    spec: Spec,
    seed: u64,
    tick: u64,
    end: u64,
    now: u64,
    clock: Clock,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pushed: u64,
    events: u64,
    cpus: Vec<Cpu>,
    tasks: BTreeMap<Pid, Task>,
    groups: Vec<Group>,
    next_pid: Pid,
    spawn_rr: usize,
    rng: ChaCha8Rng,
    resched: BTreeSet<CpuId>,
    checker: Option<Checker>,
    /// When the scheduler failed (libEnoki answers for it from then on).
    failed_at: Option<u64>,
    /// Live upgrades done, and why one was refused (which ends the run).
    upgrades: usize,
    refused: Option<String>,
    timeline: Option<Vec<Slice>>,
    /// CPU time of the tasks of each cgroup while in it, by id.
    cgroup_runtime: BTreeMap<enoki::CgroupId, u64>,
    /// The hint queues the spec's hints go through, by owning process,
    /// each opened at its first hint.
    hint_queues: BTreeMap<enoki::Pid, enoki::QueueId>,
    hints_taken: u64,
    hints_refused: u64,
}

/// Runs one simulation of scheduler `S`.
pub fn simulate<S: EnokiScheduler>(mut cfg: SimConfig) -> Result<Outcome> {
    cfg.spec.validate()?;
    let clock = Clock::default();
    let record = cfg.record.take();
    let mut sim = Sim::<S>::new(&cfg, clock.clone())?;
    // Installed once the scheduler is loaded: a recording starts with the
    // first message, as Enoki-C's does.
    let _tap = record.map(|sink| tap::install(Box::new(RecordingTap::new(clock, sink))));
    sim.run()?;
    let names = sim
        .tasks
        .iter()
        .map(|(p, t)| (*p, t.name.clone()))
        .collect();
    let report = sim.report(S::NAME);
    Ok(Outcome {
        report,
        timeline: sim.timeline.take().unwrap_or_default(),
        names,
    })
}

impl<S: EnokiScheduler> Sim<S> {
    /// Loads the scheduler on the spec's machine; `clock` gives the driver
    /// its runtimes.
    fn new(cfg: &SimConfig, clock: Clock) -> Result<Self> {
        let spec = cfg.spec.clone();
        let topology = spec.machine.topology()?;
        let slice_ns = spec.run.slice_us * 1000;
        let nr = topology.nr_cpus();
        let mut d = Driver::<S>::new(topology, spec.run.max_tasks, slice_ns, &spec.run.args)
            .map_err(|e| anyhow!("{} would not load: {e:?}", S::NAME))?;
        d.set_observer(Some(tap::observer()));
        d.set_runtime_source(Some(Box::new(clock.clone())));
        let stall = (spec.run.stall_ms > 0).then_some(spec.run.stall_ms * 1_000_000);
        Ok(Sim {
            d,
            tick: spec.run.tick_us * 1000,
            end: spec.run.duration_ms * 1_000_000,
            spec,
            seed: cfg.seed,
            now: 0,
            clock,
            queue: BinaryHeap::new(),
            pushed: 0,
            events: 0,
            cpus: (0..nr).map(|_| Cpu::default()).collect(),
            tasks: BTreeMap::new(),
            groups: Vec::new(),
            next_pid: workload::FIRST_PID,
            spawn_rr: 0,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            resched: BTreeSet::new(),
            failed_at: None,
            upgrades: 0,
            refused: None,
            checker: cfg
                .check
                .then(|| Checker::new(cfg.props, stall, slice_ns, 20)),
            timeline: cfg.timeline.then(Vec::new),
            cgroup_runtime: BTreeMap::new(),
            hint_queues: BTreeMap::new(),
            hints_taken: 0,
            hints_refused: 0,
        })
    }

    fn push(&mut self, at: u64, ev: Ev) {
        if at <= self.end {
            self.pushed += 1;
            self.queue.push(Reverse(Scheduled {
                at,
                order: self.pushed,
                ev,
            }));
        }
    }

    /// Calls into the driver from now on happen on `cpu` (for the record).
    fn on(&self, cpu: CpuId) {
        self.clock.cpu.set(cpu as u32);
    }

    fn nr_cpus(&self) -> usize {
        self.cpus.len()
    }

    fn setup(&mut self) -> Result<()> {
        self.add_groups()?;
        self.add_cgroups();
        // The scheduler is enabled: every CPU asks once.
        self.resched.extend(0..self.nr_cpus());
        self.settle();
        for gi in 0..self.groups.len() {
            self.start_group(gi);
        }
        self.schedule_changes();
        self.schedule_cgroup_changes();
        self.schedule_hints();
        self.push(self.tick, Ev::Tick);
        self.settle();
        self.check();
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        self.setup()?;
        while let Some(Reverse(Scheduled { at, ev, .. })) = self.queue.pop() {
            self.now = at;
            self.clock.now.set(at);
            self.d.set_now(at);
            self.events += 1;
            // Every message of this event carries runtimes as of now.
            for cpu in 0..self.nr_cpus() {
                self.account(cpu);
            }
            self.handle(ev);
            if let Some(refused) = self.refused.take() {
                return Err(anyhow!("{}: {refused}", S::NAME));
            }
            self.settle();
            self.check();
        }
        self.now = self.end;
        self.clock.now.set(self.end);
        for cpu in 0..self.nr_cpus() {
            if self.cpus[cpu].running.is_some() {
                self.account(cpu);
                self.close_slice(cpu);
            }
        }
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => self.tick_all(),
            Ev::BurstEnd { cpu, gen } => {
                if self.cpus[cpu].gen == gen {
                    self.on(cpu);
                    self.burst_end(cpu);
                }
            }
            Ev::Wake { pid, waker } => {
                self.on(waker);
                self.wake(pid, waker, false);
            }
            // Enoki-C's timer kicks its CPU: it preempts a running task
            // and wakes an idle CPU to pick.
            Ev::Timer { cpu, gen } if self.cpus[cpu].timer_gen == gen => {
                if self.d.running(cpu).is_some() {
                    self.on(cpu);
                    self.d.preempt(cpu, false);
                } else {
                    self.resched.insert(cpu);
                }
            }
            Ev::Timer { .. } => {}
            Ev::Fork { group } => self.fork(group),
            Ev::Arrival { group } => self.arrival(group),
            Ev::Affinity { idx } => self.change_affinity(idx),
            Ev::Renice { idx } => self.renice(idx),
            Ev::Upgrade { idx } => self.upgrade(idx),
            Ev::CgroupWeight { idx } => self.set_cgroup_weight(idx),
            Ev::CgroupMove { idx } => self.move_cgroup(idx),
            Ev::CgroupMax { idx } => self.set_cgroup_max(idx),
            Ev::Hint { idx } => self.send_hints(idx),
        }
    }

    /// Every CPU running a task takes a tick; the next one is queued.
    fn tick_all(&mut self) {
        for cpu in 0..self.nr_cpus() {
            if self.cpus[cpu].running.is_some() {
                let c = &mut self.cpus[cpu];
                let ns = self.now - std::mem::replace(&mut c.tick_from, self.now);
                self.on(cpu);
                self.d.tick(cpu, ns);
            }
        }
        self.push(self.now + self.tick, Ev::Tick);
    }

    /// Charges the task on `cpu` for the time since it was last charged:
    /// done for every CPU when an event begins, so all state (and every
    /// message) is current for the whole event.
    fn account(&mut self, cpu: CpuId) {
        let c = &mut self.cpus[cpu];
        let Some(pid) = c.running else { return };
        let ns = self.now - c.acct;
        c.acct = self.now;
        c.busy += ns;
        if let Some(t) = self.tasks.get_mut(&pid) {
            *self.cgroup_runtime.entry(t.cgroup).or_default() += ns;
            t.runtime += ns;
            *t.runtime_by_cpu.entry(cpu).or_default() += ns;
            t.remaining = t.remaining.saturating_sub(ns);
            self.clock.runtime.borrow_mut().insert(pid, t.runtime);
        }
    }

    /// (Re)arms the burst end of the task on `cpu`.
    fn restart_burst(&mut self, cpu: CpuId) {
        let Some(pid) = self.cpus[cpu].running else {
            return;
        };
        self.cpus[cpu].gen += 1;
        let at = self.now.saturating_add(self.tasks[&pid].remaining);
        let gen = self.cpus[cpu].gen;
        self.push(at, Ev::BurstEnd { cpu, gen });
    }

    fn start(&mut self, cpu: CpuId, pid: Pid) {
        let c = &mut self.cpus[cpu];
        c.running = Some(pid);
        c.since = self.now;
        c.acct = self.now;
        c.tick_from = self.now;
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.on_cpu = Some(cpu);
            if let Some(s) = t.runnable_since.take() {
                t.wait += self.now - s;
            }
            if let Some(w) = t.woken_at.take() {
                t.latencies.push(self.now - w);
            }
        }
        self.restart_burst(cpu);
    }

    fn close_slice(&mut self, cpu: CpuId) {
        let c = &self.cpus[cpu];
        if let (Some(tl), Some(pid)) = (self.timeline.as_mut(), c.running) {
            if self.now > c.since {
                tl.push(Slice {
                    cpu,
                    pid,
                    start_ns: c.since,
                    end_ns: self.now,
                });
            }
        }
    }

    /// The task on `cpu` stopped running (the driver already knows; its
    /// runtime was charged when the event began).
    fn stop(&mut self, cpu: CpuId) {
        self.close_slice(cpu);
        let c = &mut self.cpus[cpu];
        c.gen += 1;
        let Some(pid) = c.running.take() else { return };
        let state = self.d.state(pid);
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.on_cpu = None;
            if matches!(state, Some(TaskState::Queued { .. } | TaskState::Fallback)) {
                t.runnable_since = Some(self.now);
                t.preemptions += 1;
            }
        }
    }

    /// Brings the simulated CPUs in line with the driver, then delivers
    /// kicks and timers and lets CPUs that need work pick, until nothing
    /// changes.
    fn settle(&mut self) {
        for _ in 0..SETTLE_LIMIT {
            self.follow_driver();
            let requests = self.deliver_host_events();
            if requests == 0 && self.resched.is_empty() {
                return;
            }
            self.pick_where_idle();
        }
        if let Some(c) = self.checker.as_mut() {
            c.report(
                self.now,
                ViolationKind::Livelock,
                format!("kicks and picks did not settle in {SETTLE_LIMIT} rounds"),
            );
        }
        self.resched.clear();
    }

    /// Starts and stops simulated tasks where the driver changed what runs.
    fn follow_driver(&mut self) {
        if self.failed_at.is_none() && self.d.failed() {
            self.failed_at = Some(self.now);
        }
        for cpu in 0..self.nr_cpus() {
            let now_running = self.d.running(cpu);
            if self.cpus[cpu].running != now_running {
                self.stop(cpu);
                match now_running {
                    Some(pid) => self.start(cpu, pid),
                    None => {
                        self.resched.insert(cpu);
                    }
                }
            }
        }
    }

    /// Acts on the kicks and timers the scheduler asked for; returns how
    /// many there were.
    fn deliver_host_events(&mut self) -> usize {
        let host = self.d.host.take();
        for ev in &host {
            match *ev {
                HostEvent::Kick { cpu, preempt } if cpu < self.nr_cpus() => {
                    if self.d.running(cpu).is_none() {
                        self.resched.insert(cpu);
                    } else if preempt {
                        self.on(cpu);
                        self.d.preempt(cpu, false);
                    }
                }
                HostEvent::Timer { cpu, ns } if cpu < self.nr_cpus() => {
                    self.cpus[cpu].timer_gen += 1;
                    if let Some(ns) = ns {
                        let gen = self.cpus[cpu].timer_gen;
                        self.push(self.now + ns, Ev::Timer { cpu, gen });
                    }
                }
                _ => {}
            }
        }
        host.len()
    }

    /// Every CPU marked for a reschedule that is idle asks for work.
    fn pick_where_idle(&mut self) {
        for cpu in std::mem::take(&mut self.resched) {
            if self.d.running(cpu).is_none() {
                self.on(cpu);
                if let Some(pid) = self.d.schedule(cpu) {
                    self.start(cpu, pid);
                }
            }
        }
    }

    fn check(&mut self) {
        let Some(checker) = self.checker.as_mut() else {
            return;
        };
        let running: Vec<Option<Pid>> = (0..self.cpus.len()).map(|c| self.d.running(c)).collect();
        let mut queued = Vec::new();
        let mut runnable = Vec::new();
        for (pid, t) in &self.tasks {
            // A task under a cpu.max may wait while CPUs idle, for as long
            // as its cgroup's period: that is the limit at work.
            let limited = self
                .d
                .cgroup_of(*pid)
                .is_some_and(|cg| self.d.cgroup_limited(cg));
            if t.died.is_some() || limited {
                continue;
            }
            match self.d.state(*pid) {
                Some(TaskState::Queued { cpu }) => queued.push((*pid, cpu)),
                Some(TaskState::Fallback) => {}
                _ => continue,
            }
            if let Some(since) = t.runnable_since {
                runnable.push((*pid, since));
            }
        }
        let c = &self.d.counters;
        let errors = Errors {
            pick: c.pick_errors,
            select: c.select_errors,
            migrate: c.migrate_errors,
        };
        checker.check(&Snapshot {
            now: self.now,
            running: &running,
            queued: &queued,
            runnable: &runnable,
            errors,
        });
    }
}
