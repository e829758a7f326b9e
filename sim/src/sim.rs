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
//! every dequeue, preemption and tick) into each message about it. libEnoki's
//! `Driver` charges runtime only at ticks, so a task that runs 5 µs and
//! blocks would look like it never ran (a vruntime scheduler then starves
//! everything else behind it). Until `Driver` can charge runtime without a
//! tick, the simulator's tap writes each task's exact runtime into every
//! message about it before the scheduler sees it (and the recorder records
//! it so).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::io::{Seek, Write};
use std::rc::Rc;

use anyhow::{anyhow, Result};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Exp;

use enoki::abi::{kind, Msg};
use enoki::{CpuId, CpuSet, EnokiScheduler, Pid};

use crate::check::{Checker, Errors, Props, Snapshot, ViolationKind};
use crate::perfetto::Slice;
use crate::report::{self, Counters, CpuReport, Fairness, GroupReport, Report, TaskReport};
use crate::spec::{parse_cpus, Spec};
use crate::tap::{self, Driver, TaskState};
use crate::trace::{Event, Record, TraceError, TraceHeader, TraceWriter, HEADER_LOCKS};

/// Receives every recorded event, in sequence order.
pub type RecordSink = Box<dyn FnMut(&Record)>;

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

/// The header of a recording of `spec` run under `scheduler`.
pub fn trace_header(scheduler: &str, spec: &Spec) -> Result<TraceHeader> {
    let topology = spec.machine.topology()?;
    let r = &spec.run;
    let mut h = TraceHeader::new(
        scheduler,
        &crate::build_id(),
        &topology,
        r.max_tasks as u64,
        r.slice_us * 1000,
        &r.args,
    );
    h.flags |= HEADER_LOCKS;
    Ok(h)
}

/// Completes messages with exact runtimes (see the module documentation)
/// and, when recording, numbers and stamps events as Enoki-C's recorder
/// does: sequence numbers start at 1, and a message takes its number before
/// the call, so the lock events of a call follow its message.
struct SimTap {
    clock: Clock,
    seq: u64,
    /// Sequence number of the call in progress.
    call: Option<u64>,
    /// Lock events of the call in progress.
    locks: Vec<Record>,
    record: Option<RecordSink>,
}

impl SimTap {
    fn stamp(&self, seq: u64, event: Event) -> Record {
        Record {
            seq,
            cpu: self.clock.cpu.get(),
            time_ns: self.clock.now.get(),
            event,
        }
    }
}

impl tap::Tap for SimTap {
    fn call_begins(&mut self, m: &mut Msg) {
        if let Some(ns) = self.clock.runtime.borrow().get(&m.pid) {
            m.runtime = *ns;
        }
        if self.record.is_some() {
            self.seq += 1;
            self.call = Some(self.seq);
        }
    }

    fn call_ends(&mut self, m: &Msg) {
        let Some(seq) = self.call.take() else { return };
        let r = self.stamp(seq, Event::Msg(*m));
        let locks = std::mem::take(&mut self.locks);
        if let Some(sink) = self.record.as_mut() {
            sink(&r);
            for l in &locks {
                sink(l);
            }
        }
    }

    fn lock(&mut self, addr: usize, acquire: bool) {
        let Some(sink) = self.record.as_mut() else {
            return;
        };
        self.seq += 1;
        let addr = addr as u64;
        let event = if acquire {
            Event::LockAcquire { addr }
        } else {
            Event::LockRelease { addr }
        };
        let r = Record {
            seq: self.seq,
            cpu: self.clock.cpu.get(),
            time_ns: self.clock.now.get(),
            event,
        };
        if self.call.is_some() {
            self.locks.push(r);
        } else {
            sink(&r);
        }
    }
}

/// The writer, and the first error it returned.
type RecorderState<W> = (Option<TraceWriter<W>>, Option<TraceError>);

/// Writes what a simulation records into a `.enk` trace.
pub struct Recorder<W: Write + Seek> {
    state: Rc<RefCell<RecorderState<W>>>,
}

impl<W: Write + Seek + 'static> Recorder<W> {
    pub fn new(out: W, header: TraceHeader) -> Result<Self, TraceError> {
        Ok(Recorder {
            state: Rc::new(RefCell::new((Some(TraceWriter::new(out, header)?), None))),
        })
    }

    /// The sink to put in [`SimConfig::record`].
    pub fn sink(&self) -> RecordSink {
        let state = self.state.clone();
        Box::new(move |r| {
            let (writer, error) = &mut *state.borrow_mut();
            if let (Some(w), None) = (writer.as_mut(), error.as_ref()) {
                if let Err(e) = w.write(r) {
                    *error = Some(e);
                }
            }
        })
    }

    /// Ends the trace; the first write error, if any, comes out here.
    pub fn finish(self) -> Result<W, TraceError> {
        let (writer, error) = std::mem::take(&mut *self.state.borrow_mut());
        match (writer, error) {
            (_, Some(e)) => Err(e),
            (Some(w), None) => w.finish(),
            (None, None) => Err(TraceError::Invalid("recorder already finished".into())),
        }
    }
}

/// "Never ends": the burst of a spinner.
const FOREVER: u64 = u64::MAX / 4;
/// Rounds of kicks and picks after one event before it is a livelock.
const SETTLE_LIMIT: usize = 10_000;
/// First pid handed out.
const FIRST_PID: Pid = 1000;

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
}

#[derive(Clone, Debug)]
enum Kind {
    Spinner,
    Sleeper {
        run: u64,
        sleep: u64,
    },
    PingPong {
        work: u64,
    },
    Fork {
        every: u64,
        burst: usize,
        run: u64,
        limit: usize,
        spawned: usize,
    },
    Requests {
        /// Waiting requests: (arrival, service ns).
        queue: VecDeque<(u64, u64)>,
        mix: WeightedIndex<f64>,
        service: Vec<u64>,
        rate: f64,
        latencies: Vec<u64>,
        done: u64,
    },
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Spinner => "spinner",
            Kind::Sleeper { .. } => "sleeper",
            Kind::PingPong { .. } => "pingpong",
            Kind::Fork { .. } => "forkstorm",
            Kind::Requests { .. } => "requests",
        }
    }
}

struct Group {
    name: String,
    kind: Kind,
    nice: i32,
    allowed: CpuSet,
    /// Tasks (ping-pong: pairs) created at start.
    count: usize,
    pids: Vec<Pid>,
}

struct Task {
    name: String,
    group: usize,
    nice: i32,
    /// CPU time left in the current burst.
    remaining: u64,
    on_cpu: Option<CpuId>,
    runnable_since: Option<u64>,
    /// Set by a wakeup: the latency clock.
    woken_at: Option<u64>,
    born: u64,
    died: Option<u64>,
    /// Ping-pong: holds the token; partner.
    token: bool,
    partner: Option<Pid>,
    /// Requests: arrival time of the request being served.
    request: Option<u64>,
    runtime: u64,
    wait: u64,
    latencies: Vec<u64>,
    preemptions: u64,
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

/// What the tap needs from the simulation: where and when calls happen,
/// and every task's exact runtime.
#[derive(Clone, Default)]
struct Clock {
    now: Rc<Cell<u64>>,
    cpu: Rc<Cell<u32>>,
    runtime: Rc<RefCell<BTreeMap<Pid, u64>>>,
}

struct Sim<S: EnokiScheduler> {
    d: Driver<S>,
    spec: Spec,
    seed: u64,
    tick: u64,
    end: u64,
    now: u64,
    clock: Clock,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
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
    timeline: Option<Vec<Slice>>,
}

/// Runs one simulation of scheduler `S`.
pub fn simulate<S: EnokiScheduler>(mut cfg: SimConfig) -> Result<Outcome> {
    cfg.spec.validate()?;
    let spec = cfg.spec.clone();
    let topology = spec.machine.topology()?;
    let slice_ns = spec.run.slice_us * 1000;
    let nr = topology.nr_cpus();
    let mut d = Driver::<S>::new(topology, spec.run.max_tasks, slice_ns, &spec.run.args)
        .map_err(|e| anyhow!("{} would not load: {e:?}", S::NAME))?;
    let clock = Clock::default();
    let record = cfg.record.take();
    d.set_observer(Some(tap::observer()));
    let _tap = tap::install(Box::new(SimTap {
        clock: clock.clone(),
        seq: 0,
        call: None,
        locks: Vec::new(),
        record,
    }));
    let stall = (spec.run.stall_ms > 0).then_some(spec.run.stall_ms * 1_000_000);
    let mut sim = Sim {
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
        next_pid: FIRST_PID,
        spawn_rr: 0,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        resched: BTreeSet::new(),
        checker: cfg
            .check
            .then(|| Checker::new(cfg.props, stall, slice_ns, 20)),
        timeline: cfg.timeline.then(Vec::new),
    };
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
    fn push(&mut self, at: u64, ev: Ev) {
        if at <= self.end {
            self.pushed += 1;
            self.queue.push(Reverse((at, self.pushed, ev)));
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
        let n = self.nr_cpus();
        let spec = self.spec.clone();
        let cpus = |s: &Option<String>| {
            s.as_deref()
                .map_or(Ok(CpuSet::first_n(n)), |s| parse_cpus(s, n))
        };
        for g in &spec.spinners {
            self.add_group(&g.name, Kind::Spinner, g.nice, cpus(&g.cpus)?, g.count);
        }
        for g in &spec.sleepers {
            let kind = Kind::Sleeper {
                run: g.run_us * 1000,
                sleep: g.sleep_us * 1000,
            };
            self.add_group(&g.name, kind, g.nice, cpus(&g.cpus)?, g.count);
        }
        for g in &spec.pingpongs {
            self.add_group(
                &g.name,
                Kind::PingPong {
                    work: g.work_us * 1000,
                },
                g.nice,
                cpus(&g.cpus)?,
                g.pairs,
            );
        }
        for g in &spec.forkstorms {
            let kind = Kind::Fork {
                every: g.every_us * 1000,
                burst: g.burst,
                run: g.run_us * 1000,
                limit: g.limit,
                spawned: 0,
            };
            self.add_group(&g.name, kind, g.nice, CpuSet::first_n(n), 0);
        }
        for g in &spec.requests {
            let mix = WeightedIndex::new(g.mix.iter().map(|c| c.weight))?;
            let service = g
                .mix
                .iter()
                .map(|c| (c.service_us * 1000.0).round() as u64)
                .collect();
            let kind = Kind::Requests {
                queue: VecDeque::new(),
                mix,
                service,
                rate: g.rate_per_s,
                latencies: Vec::new(),
                done: 0,
            };
            self.add_group(&g.name, kind, g.nice, cpus(&g.cpus)?, g.workers);
        }
        // The scheduler is enabled: every CPU asks once.
        for cpu in 0..n {
            self.resched.insert(cpu);
        }
        self.settle();
        for gi in 0..self.groups.len() {
            let count = self.groups[gi].count;
            match self.groups[gi].kind.clone() {
                Kind::Spinner => {
                    for i in 0..count {
                        self.spawn(gi, i, FOREVER);
                    }
                }
                Kind::Sleeper { run, .. } => {
                    for i in 0..count {
                        self.spawn(gi, i, run);
                    }
                }
                Kind::PingPong { work } => {
                    for i in 0..count {
                        let a = self.spawn(gi, 2 * i, work);
                        let b = self.spawn(gi, 2 * i + 1, 0);
                        for (x, y) in [(a, b), (b, a)] {
                            if let Some(t) = self.tasks.get_mut(&x) {
                                t.partner = Some(y);
                            }
                        }
                        if let Some(t) = self.tasks.get_mut(&a) {
                            t.token = true;
                        }
                    }
                }
                Kind::Fork { .. } => self.push(0, Ev::Fork { group: gi }),
                Kind::Requests { rate, .. } => {
                    for i in 0..count {
                        self.spawn(gi, i, 0);
                    }
                    let first = self.interarrival(rate);
                    self.push(first, Ev::Arrival { group: gi });
                }
            }
        }
        for (idx, a) in spec.affinity.iter().enumerate() {
            self.push(a.at_ms * 1_000_000, Ev::Affinity { idx });
        }
        for (idx, r) in spec.renice.iter().enumerate() {
            self.push(r.at_ms * 1_000_000, Ev::Renice { idx });
        }
        self.push(self.tick, Ev::Tick);
        self.settle();
        self.check();
        Ok(())
    }

    fn add_group(&mut self, name: &str, kind: Kind, nice: i32, allowed: CpuSet, count: usize) {
        self.groups.push(Group {
            name: name.to_owned(),
            kind,
            nice,
            allowed,
            count,
            pids: Vec::new(),
        });
    }

    fn interarrival(&mut self, rate: f64) -> u64 {
        let exp = Exp::new(rate / 1e9).unwrap_or_else(|_| Exp::new(1e-9).expect("positive rate"));
        (exp.sample(&mut self.rng).ceil() as u64).max(1)
    }

    /// Forks task `index` of group `gi` with a first burst of `burst` ns.
    fn spawn(&mut self, gi: usize, index: usize, burst: u64) -> Pid {
        let pid = self.next_pid;
        self.next_pid += 1;
        let g = &mut self.groups[gi];
        g.pids.push(pid);
        let (allowed, nice) = (g.allowed, g.nice);
        let task = Task {
            name: format!("{}.{index}", g.name),
            group: gi,
            nice,
            remaining: burst,
            on_cpu: None,
            runnable_since: Some(self.now),
            woken_at: Some(self.now),
            born: self.now,
            died: None,
            token: false,
            partner: None,
            request: None,
            runtime: 0,
            wait: 0,
            latencies: Vec::new(),
            preemptions: 0,
        };
        self.tasks.insert(pid, task);
        let parent = self.spawn_rr % self.nr_cpus();
        self.spawn_rr += 1;
        self.on(parent);
        self.d.spawn(pid, allowed, nice, parent);
        self.note_queued(pid);
        pid
    }

    /// After `pid` was enqueued: the CPU it waits for must pick if idle.
    fn note_queued(&mut self, pid: Pid) {
        match self.d.state(pid) {
            Some(TaskState::Queued { cpu }) if self.d.running(cpu).is_none() => {
                self.resched.insert(cpu);
            }
            Some(TaskState::Fallback) => {
                let allowed = self.groups[self.tasks[&pid].group].allowed;
                let idle = (0..self.nr_cpus())
                    .find(|c| self.d.running(*c).is_none() && allowed.contains(*c));
                if let Some(cpu) = idle {
                    self.resched.insert(cpu);
                }
            }
            _ => {}
        }
    }

    fn run(&mut self) -> Result<()> {
        self.setup()?;
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            self.now = at;
            self.clock.now.set(at);
            self.events += 1;
            // Every message of this event carries runtimes as of now.
            for cpu in 0..self.nr_cpus() {
                self.account(cpu);
            }
            self.handle(ev);
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
            Ev::Tick => {
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
            Ev::BurstEnd { cpu, gen } => {
                if self.cpus[cpu].gen == gen {
                    self.on(cpu);
                    self.burst_end(cpu);
                }
            }
            Ev::Wake { pid, waker } => {
                self.on(waker);
                self.wake(pid, waker);
            }
            Ev::Timer { cpu, gen } => {
                if self.cpus[cpu].timer_gen == gen && self.d.running(cpu).is_some() {
                    self.on(cpu);
                    self.d.preempt(cpu, false);
                }
            }
            Ev::Fork { group } => {
                let Kind::Fork {
                    every,
                    burst,
                    run,
                    limit,
                    spawned,
                } = self.groups[group].kind
                else {
                    return;
                };
                let n = if limit > 0 {
                    burst.min(limit - spawned)
                } else {
                    burst
                };
                for i in 0..n {
                    self.spawn(group, spawned + i, run);
                }
                if let Kind::Fork { spawned, .. } = &mut self.groups[group].kind {
                    *spawned += n;
                }
                if limit == 0 || spawned + n < limit {
                    self.push(self.now + every, Ev::Fork { group });
                }
            }
            Ev::Arrival { group } => self.arrival(group),
            Ev::Affinity { idx } => {
                let a = self.spec.affinity[idx].clone();
                let allowed = parse_cpus(&a.cpus, self.nr_cpus())
                    .unwrap_or_else(|_| CpuSet::first_n(self.nr_cpus()));
                self.on(0);
                for pid in self.targets(&a.target) {
                    self.d.set_affinity(pid, allowed);
                    self.note_queued(pid);
                }
                // New tasks of a targeted group get the new set too.
                if let Some(g) = self.groups.iter_mut().find(|g| g.name == a.target) {
                    g.allowed = allowed;
                }
            }
            Ev::Renice { idx } => {
                let r = self.spec.renice[idx].clone();
                self.on(0);
                for pid in self.targets(&r.target) {
                    self.d.set_nice(pid, r.nice);
                    if let Some(t) = self.tasks.get_mut(&pid) {
                        t.nice = r.nice;
                    }
                }
                if let Some(g) = self.groups.iter_mut().find(|g| g.name == r.target) {
                    g.nice = r.nice;
                }
            }
        }
    }

    /// Live tasks named by `target`: a group, or one task (`group.index`).
    fn targets(&self, target: &str) -> Vec<Pid> {
        self.tasks
            .iter()
            .filter(|(_, t)| {
                t.died.is_none() && (t.name == target || self.groups[t.group].name == target)
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// The task on `cpu` finished its burst: what it does next.
    fn burst_end(&mut self, cpu: CpuId) {
        let Some(pid) = self.cpus[cpu].running else {
            return;
        };
        let gi = self.tasks[&pid].group;
        match &mut self.groups[gi].kind {
            Kind::Spinner => {
                self.tasks.get_mut(&pid).expect("running task").remaining = FOREVER;
                self.restart_burst(cpu);
            }
            Kind::Sleeper { run, sleep } => {
                let (run, sleep) = (*run, *sleep);
                self.tasks.get_mut(&pid).expect("running task").remaining = run;
                self.d.block(cpu);
                self.push(self.now + sleep, Ev::Wake { pid, waker: cpu });
            }
            Kind::PingPong { work } => {
                let work = *work;
                let t = self.tasks.get_mut(&pid).expect("running task");
                if std::mem::take(&mut t.token) {
                    if let Some(partner) = t.partner {
                        self.give(partner, work, cpu);
                    }
                }
                if self.tasks[&pid].token {
                    // Passed back already: the pipe is readable, no sleep.
                    self.restart_burst(cpu);
                } else {
                    self.d.block(cpu);
                }
            }
            Kind::Fork { .. } => {
                self.d.exit(pid);
                self.tasks.get_mut(&pid).expect("running task").died = Some(self.now);
            }
            Kind::Requests {
                queue,
                latencies,
                done,
                ..
            } => {
                let t = self.tasks.get_mut(&pid).expect("running task");
                if let Some(arrived) = t.request.take() {
                    latencies.push(self.now - arrived);
                    *done += 1;
                }
                if let Some((arrived, service)) = queue.pop_front() {
                    t.request = Some(arrived);
                    t.remaining = service;
                    self.restart_burst(cpu);
                } else {
                    self.d.block(cpu);
                }
            }
        }
    }

    /// Hands `pid` more work (`ns`), waking it if it sleeps.
    fn give(&mut self, pid: Pid, ns: u64, waker: CpuId) {
        let Some(t) = self.tasks.get_mut(&pid) else {
            return;
        };
        t.token = true;
        t.remaining += ns;
        match (t.on_cpu, self.d.state(pid)) {
            (Some(cpu), _) => self.restart_burst(cpu),
            (None, Some(TaskState::Blocked)) => self.wake(pid, waker),
            _ => {}
        }
    }

    fn arrival(&mut self, gi: usize) {
        let irq = self.rng.random_range(0..self.nr_cpus());
        let Kind::Requests {
            mix, service, rate, ..
        } = &self.groups[gi].kind
        else {
            return;
        };
        let ns = service[mix.sample(&mut self.rng)];
        let rate = *rate;
        let idle = self.groups[gi]
            .pids
            .iter()
            .copied()
            .find(|p| self.tasks[p].request.is_none());
        self.on(irq);
        match idle {
            Some(pid) => {
                self.tasks.get_mut(&pid).expect("worker").request = Some(self.now);
                self.give(pid, ns, irq);
            }
            None => {
                if let Kind::Requests { queue, .. } = &mut self.groups[gi].kind {
                    queue.push_back((self.now, ns));
                }
            }
        }
        let next = self.now + self.interarrival(rate);
        self.push(next, Ev::Arrival { group: gi });
    }

    /// Wakes a sleeping task from `waker`.
    fn wake(&mut self, pid: Pid, waker: CpuId) {
        if self.d.state(pid) != Some(TaskState::Blocked) {
            return;
        }
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.runnable_since = Some(self.now);
            t.woken_at = Some(self.now);
        }
        self.d.wake(pid, waker);
        self.note_queued(pid);
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
            t.runtime += ns;
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
            let host = self.d.host.take();
            for ev in &host {
                match *ev {
                    tap::HostEvent::Kick { cpu, preempt } if cpu < self.nr_cpus() => {
                        if self.d.running(cpu).is_none() {
                            self.resched.insert(cpu);
                        } else if preempt {
                            self.on(cpu);
                            self.d.preempt(cpu, false);
                        }
                    }
                    tap::HostEvent::Timer { cpu, ns } if cpu < self.nr_cpus() => {
                        self.cpus[cpu].timer_gen += 1;
                        if let Some(ns) = ns {
                            let gen = self.cpus[cpu].timer_gen;
                            self.push(self.now + ns, Ev::Timer { cpu, gen });
                        }
                    }
                    _ => {}
                }
            }
            if host.is_empty() && self.resched.is_empty() {
                return;
            }
            for cpu in std::mem::take(&mut self.resched) {
                if self.d.running(cpu).is_none() {
                    self.on(cpu);
                    if let Some(pid) = self.d.schedule(cpu) {
                        self.start(cpu, pid);
                    }
                }
            }
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

    fn check(&mut self) {
        let Some(checker) = self.checker.as_mut() else {
            return;
        };
        let running: Vec<Option<Pid>> = (0..self.cpus.len()).map(|c| self.d.running(c)).collect();
        let mut queued = Vec::new();
        let mut runnable = Vec::new();
        for (pid, t) in &self.tasks {
            if t.died.is_some() {
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

    fn report(&mut self, scheduler: &str) -> Report {
        let end = self.end;
        let mut tasks = Vec::new();
        for (pid, t) in self.tasks.iter_mut() {
            let alive = t.died.unwrap_or(end) - t.born;
            let wait = t.wait + t.runnable_since.map_or(0, |s| end - s);
            let wakeups = t.latencies.len() as u64;
            tasks.push(TaskReport {
                pid: *pid,
                name: t.name.clone(),
                group: self.groups[t.group].name.clone(),
                nice: t.nice,
                weight: enoki::nice_to_weight(t.nice),
                runtime_ns: t.runtime,
                wait_ns: wait,
                alive_ns: alive,
                cpu_share: if alive > 0 {
                    t.runtime as f64 / alive as f64
                } else {
                    0.0
                },
                wakeups,
                preemptions: t.preemptions,
                wakeup_p50_ns: report::percentile(&mut t.latencies, 50.0),
                wakeup_p99_ns: report::percentile(&mut t.latencies, 99.0),
                wakeup_max_ns: t.latencies.last().copied(),
                exited: t.died.is_some(),
            });
        }
        let whole_run = |t: &TaskReport| t.alive_ns == end && !t.exited;
        let mut groups = Vec::new();
        for g in self.groups.iter_mut() {
            let members: Vec<&TaskReport> = tasks.iter().filter(|t| t.group == g.name).collect();
            let mut by_weight: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
            for t in members.iter().filter(|t| whole_run(t)) {
                by_weight.entry(t.weight).or_default().push(t.cpu_share);
            }
            let common = by_weight.values().max_by_key(|v| v.len());
            let (done, p50, p99) = match &mut g.kind {
                Kind::Requests {
                    latencies, done, ..
                } => (
                    Some(*done),
                    report::percentile(latencies, 50.0),
                    report::percentile(latencies, 99.0),
                ),
                _ => (None, None, None),
            };
            groups.push(GroupReport {
                name: g.name.clone(),
                kind: g.kind.name(),
                tasks: members.len(),
                runtime_ns: members.iter().map(|t| t.runtime_ns).sum(),
                jain: common.and_then(|v| report::jain(v)),
                requests_done: done,
                request_p50_ns: p50,
                request_p99_ns: p99,
            });
        }
        let mut spin: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for t in tasks.iter().filter(|t| {
            whole_run(t) && matches!(self.groups[self.tasks[&t.pid].group].kind, Kind::Spinner)
        }) {
            spin.entry(t.weight).or_default().push(t.cpu_share);
        }
        let fairness = spin
            .into_iter()
            .filter_map(|(weight, v)| {
                report::jain(&v).map(|jain| Fairness {
                    weight,
                    tasks: v.len(),
                    jain,
                })
            })
            .collect();
        let c = &self.d.counters;
        let counters = Counters {
            messages: (1..kind::NR as usize)
                .map(|k| (kind::NAMES[k], c.msgs[k]))
                .collect(),
            pick_errors: c.pick_errors,
            balance_errors: c.balance_errors,
            select_errors: c.select_errors,
            migrate_errors: c.migrate_errors,
            rejected: c.rejected,
        };
        let (violations, dropped) = self.checker.as_mut().map_or((Vec::new(), 0), |c| {
            (std::mem::take(&mut c.found), c.dropped)
        });
        Report {
            scheduler: scheduler.to_owned(),
            seed: self.seed,
            duration_ns: end,
            nr_cpus: self.nr_cpus(),
            events: self.events,
            cpus: self
                .cpus
                .iter()
                .enumerate()
                .map(|(cpu, c)| CpuReport {
                    cpu,
                    busy_ns: c.busy,
                    utilisation: c.busy as f64 / end as f64,
                })
                .collect(),
            groups,
            fairness,
            tasks,
            counters,
            violations,
            violations_dropped: dropped,
        }
    }
}
