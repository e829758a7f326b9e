// SPDX-License-Identifier: MIT OR Apache-2.0
//! Test-only schedulers with known defects, and helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use enoki::{
    CpuId, EnokiScheduler, InitContext, InitError, NoHint, NotTaken, PickError, Pid, PrevTask,
    Result, Schedulable, TaskError, TaskInfo, Wake,
};
use enoki_sim::check::Props;
use enoki_sim::sim::{simulate, trace_header, Outcome, Recorder, SimConfig};
use enoki_sim::spec::Spec;
use enoki_sim::trace::{Event, Record, TraceHeader, TraceWriter};

pub fn quiet() {
    std::env::set_var("ENOKI_QUIET", "1");
}

/// Per-CPU FIFO queues; `pick` decides which end to take from.
pub struct Queues(Mutex<Vec<VecDeque<Schedulable>>>);

impl Queues {
    fn new(ctx: &InitContext<'_>) -> Self {
        Queues(Mutex::new(
            (0..ctx.topology.nr_cpus())
                .map(|_| VecDeque::new())
                .collect(),
        ))
    }

    fn push(&self, t: Schedulable) -> Result<(), NotTaken> {
        let mut q = self.0.lock().unwrap();
        match q.get_mut(t.cpu()) {
            Some(q) => {
                q.push_back(t);
                Ok(())
            }
            None => Err(t.into()),
        }
    }

    fn remove(&self, pid: Pid) {
        for q in self.0.lock().unwrap().iter_mut() {
            q.retain(|t| t.pid() != pid);
        }
    }
}

/// Declares a test scheduler `$t(Queues, AtomicU64)` over per-CPU queues
/// with its own pick and wakeup.
macro_rules! queue_scheduler {
    ($t:ident, $name:literal, pick: |$s:ident, $q:ident| $pick:expr, wakeup: |$ws:ident, $tok:ident| $wake:expr) => {
        pub struct $t(Queues, AtomicU64);

        impl EnokiScheduler for $t {
            const NAME: &'static str = $name;
            type Hint = NoHint;
            type RevHint = NoHint;
            type UpgradeState = ();

            fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
                Ok($t(Queues::new(ctx), AtomicU64::new(0)))
            }

            fn pick_next_task(
                &self,
                cpu: CpuId,
                _prev: Option<PrevTask>,
            ) -> Result<Option<Schedulable>> {
                let $s = self;
                let mut all = self.0 .0.lock().unwrap();
                let Some($q) = all.get_mut(cpu) else {
                    return Ok(None);
                };
                Ok($pick)
            }

            fn pnt_err(
                &self,
                _cpu: CpuId,
                _pid: Pid,
                _err: PickError,
                sched: Option<Schedulable>,
            ) -> Result {
                enoki::requeue(sched, |t| self.0.push(t))
            }

            fn task_new(&self, _task: &TaskInfo) -> Result<(), TaskError> {
                Ok(())
            }

            fn task_wakeup(
                &self,
                _pid: Pid,
                _runtime: u64,
                $tok: Schedulable,
            ) -> Result<(), NotTaken> {
                let $ws = self;
                $wake
            }

            fn task_preempt(
                &self,
                _pid: Pid,
                _runtime: u64,
                _y: bool,
                sched: Schedulable,
            ) -> Result<(), NotTaken> {
                self.0.push(sched)
            }

            fn task_blocked(&self, pid: Pid, _runtime: u64, _cpu: CpuId, sleeping: bool) -> Result {
                if !sleeping {
                    self.0.remove(pid);
                }
                Ok(())
            }

            fn task_dead(&self, pid: Pid) -> Result {
                self.0.remove(pid);
                Ok(())
            }
        }
    };
}

/// Shared by every instance, so a replay in the same process starts from
/// another value than the recording did: the nondeterminism replay finds.
static FLAKY_PICKS: AtomicU64 = AtomicU64::new(0);

// Takes from the back of its queue on every third pick process-wide.
queue_scheduler!(Flaky, "flaky",
    pick: |_s, q| if FLAKY_PICKS.fetch_add(1, Ordering::Relaxed).is_multiple_of(3) { q.pop_back() } else { q.pop_front() },
    wakeup: |s, t| s.0.push(t));

// Every other pick finds nothing, however full the queue: the CPU idles with
// work queued (nothing kicks it again).
queue_scheduler!(Lazy, "lazy",
    pick: |s, q| if s.1.fetch_add(1, Ordering::Relaxed) % 2 == 1 { None } else { q.pop_front() },
    wakeup: |s, t| s.0.push(t));

// Accepts every fourth wakeup and throws the token away: that task is lost.
queue_scheduler!(Leaky, "leaky",
    pick: |_s, q| q.pop_front(),
    wakeup: |s, t| if s.1.fetch_add(1, Ordering::Relaxed) % 4 == 3 { let _lost = t; Ok(()) } else { s.0.push(t) });

/// A mixed workload: every task kind and an affinity change.
pub fn mixed_spec() -> Spec {
    Spec::from_toml(
        r#"
        [machine]
        sockets = 2
        cores = 2
        [run]
        duration_ms = 40
        slice_us = 2000
        [[spinner]]
        count = 3
        [[spinner]]
        name = "low"
        count = 1
        nice = 5
        [[sleeper]]
        count = 2
        run_us = 300
        sleep_us = 900
        [[pingpong]]
        pairs = 1
        work_us = 20
        [[forkstorm]]
        every_us = 2000
        burst = 2
        run_us = 400
        [[requests]]
        workers = 2
        rate_per_s = 4000
        mix = [{ weight = 99.5, service_us = 5 }, { weight = 0.5, service_us = 500 }]
        [[affinity]]
        at_ms = 15
        target = "spin"
        cpus = "0-1"
        [[renice]]
        at_ms = 20
        target = "sleep.1"
        nice = -3
        "#,
    )
    .unwrap()
}

/// A trace of `records` (in sequence order).
pub fn write(header: &TraceHeader, records: &[Record]) -> Vec<u8> {
    let mut w = TraceWriter::new(Cursor::new(Vec::new()), header.clone()).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Records of `events` (each with its CPU), numbered from 1 in this order,
/// a microsecond apart.
pub fn numbered(events: impl IntoIterator<Item = (u32, Event)>) -> Vec<Record> {
    events
        .into_iter()
        .zip(1..)
        .map(|((cpu, event), seq)| Record {
            seq,
            cpu,
            time_ns: seq * 1000,
            event,
        })
        .collect()
}

/// Runs `S` on `spec` and records the run into an in-memory trace.
pub fn record<S: EnokiScheduler>(spec: &Spec, seed: u64, props: Props) -> (Outcome, Vec<u8>) {
    let rec = Recorder::new(
        Cursor::new(Vec::new()),
        trace_header(S::NAME, spec).unwrap(),
    )
    .unwrap();
    let mut cfg = SimConfig::new(spec.clone(), seed, props);
    cfg.record = Some(rec.sink());
    let out = simulate::<S>(cfg).unwrap();
    (out, rec.finish().unwrap().into_inner())
}

static LOCK_FLAKY_INSTANCES: AtomicU64 = AtomicU64::new(0);

/// FIFO that takes one more lock on every fifth pick, each instance one
/// pick later than the one made before it: the same answers as FIFO,
/// another lock order on replay (which makes a new instance).
pub struct LockFlaky {
    fifo: enoki_fifo::Fifo,
    extra: enoki::SpinLock<()>,
    picks: AtomicU64,
}

impl EnokiScheduler for LockFlaky {
    const NAME: &'static str = "lockflaky";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        Ok(LockFlaky {
            fifo: enoki_fifo::Fifo::init(ctx)?,
            extra: enoki::SpinLock::new(()),
            picks: AtomicU64::new(LOCK_FLAKY_INSTANCES.fetch_add(1, Ordering::Relaxed)),
        })
    }
    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        if self.picks.fetch_add(1, Ordering::Relaxed) % 5 == 4 {
            drop(self.extra.lock()?);
        }
        self.fifo.pick_next_task(cpu, prev)
    }
    fn pnt_err(&self, cpu: CpuId, pid: Pid, err: PickError, sched: Option<Schedulable>) -> Result {
        self.fifo.pnt_err(cpu, pid, err, sched)
    }
    fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError> {
        self.fifo.task_new(task)
    }
    fn task_wakeup(&self, pid: Pid, runtime: u64, sched: Schedulable) -> Result<(), NotTaken> {
        self.fifo.task_wakeup(pid, runtime, sched)
    }
    fn task_preempt(
        &self,
        pid: Pid,
        runtime: u64,
        y: bool,
        sched: Schedulable,
    ) -> Result<(), NotTaken> {
        self.fifo.task_preempt(pid, runtime, y, sched)
    }
    fn task_blocked(&self, pid: Pid, runtime: u64, cpu: CpuId, sleeping: bool) -> Result {
        self.fifo.task_blocked(pid, runtime, cpu, sleeping)
    }
    fn task_dead(&self, pid: Pid) -> Result {
        self.fifo.task_dead(pid)
    }
    fn select_task_rq(&self, pid: Pid, prev_cpu: CpuId, wake: Wake) -> Result<CpuId> {
        self.fifo.select_task_rq(pid, prev_cpu, wake)
    }
    fn migrate_task_rq(&self, pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        self.fifo.migrate_task_rq(pid, sched)
    }
    fn balance(&self, cpu: CpuId) -> Result<Option<Pid>> {
        self.fifo.balance(cpu)
    }
    fn task_affinity_changed(&self, pid: Pid, allowed: &enoki::CpuSet) -> Result {
        self.fifo.task_affinity_changed(pid, allowed)
    }
}
