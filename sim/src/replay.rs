// SPDX-License-Identifier: MIT OR Apache-2.0
//! Replay: re-create the recorded scheduler from the trace header, feed it
//! every recorded message through libEnoki's `Loaded::handle` (the function
//! Enoki-C's calls go through) and compare each answer with the recorded one.
//!
//! The loop is split so a concurrent replay can slot in later:
//! [`apply`] is the only place a message reaches the scheduler; it takes
//! `&Loaded` and touches nothing else, so per-CPU replay threads can call it
//! at once. [`Replayer::step`] does the bookkeeping around it (order, context,
//! comparison) for one record. [`replay`] is the sequential executor: records
//! in sequence order, one at a time. When the trace has lock events
//! (`HEADER_LOCKS`), the locks each replayed call takes are checked against
//! the lock records that follow its message on its CPU (calls on other CPUs
//! may interleave their records, as in a kernel trace): same order, and the same lock
//! every time a recorded address comes back (addresses differ between
//! instances; the first use pairs them up, as the paper's replay assumes
//! locks are created in the same order).
//!
//! Kernel traces need [`replay_by_locks`]: calls on different CPUs overlap
//! there, so seq order is not the order they saw each other's state in. It
//! starts one thread per recorded CPU and holds every blocking acquisition
//! (`sync::hooks::acquiring`) until it is that CPU's turn in the lock's
//! recorded acquisition order. State read outside libEnoki locks (atomics)
//! is not ordered: a scheduler replays exactly only if its shared state is
//! behind libEnoki locks.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Result};
use serde::Serialize;

use enoki::abi::{flag, kind, Msg, ABI_VERSION};
use enoki::dispatch::Loaded;
use enoki::scheduler::{Args, InitContext};
use enoki::user::HostOps;
use enoki::{CpuId, CpuSet, EnokiScheduler, Topology};

use crate::perfetto::{Slice, TimelineBuilder};
use crate::trace::{Event, Record, TraceError, TraceHeader, HEADER_LOCKS};

/// The answer fields of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub ret: i64,
    pub ret_cpu: i32,
    pub ret_err: u32,
    pub ret_slice: u64,
}

impl Answer {
    pub fn of(m: &Msg) -> Self {
        Answer {
            ret: m.ret,
            ret_cpu: m.ret_cpu,
            ret_err: m.ret_err,
            ret_slice: m.ret_slice,
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ret={} ret_cpu={} ret_err={:#x} ret_slice={}",
            self.ret, self.ret_cpu, self.ret_err, self.ret_slice
        )
    }
}

/// `m` with its answer fields as Enoki-C sends them (empty).
pub fn question(m: &Msg) -> Msg {
    let blank = Msg::new(m.kind, m.cpu);
    Msg {
        ret: blank.ret,
        ret_cpu: blank.ret_cpu,
        ret_err: blank.ret_err,
        ret_slice: blank.ret_slice,
        ..*m
    }
}

/// Feeds one recorded message (answer cleared) to the scheduler; returns
/// the scheduler's answer.
pub fn apply<S: EnokiScheduler>(loaded: &Loaded<S>, recorded: &Msg) -> Answer {
    let mut m = question(recorded);
    loaded.handle(&mut m);
    Answer::of(&m)
}

fn cpulist(words: [u64; enoki::abi::CPUMASK_WORDS]) -> String {
    let set = CpuSet::from_words(words);
    let cpus: Vec<CpuId> = set.iter().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// One line for a message's question.
pub fn describe(m: &Msg) -> String {
    let name = kind::NAMES
        .get(m.kind as usize)
        .copied()
        .unwrap_or("unknown");
    let mut s = format!("{name} cpu={} pid={}", m.cpu, m.pid);
    match m.kind {
        kind::TASK_NEW => {
            s += &format!(
                " tgid={} weight={} nice={} allowed={}",
                m.tgid,
                m.weight,
                m.nice,
                cpulist(m.allowed)
            )
        }
        kind::TASK_WAKEUP | kind::TASK_PREEMPT | kind::MIGRATE_TASK_RQ => {
            s += &format!(" task_cpu={} runtime={}", m.task_cpu, m.runtime);
            if m.flags & flag::YIELD != 0 {
                s += " yield";
            }
        }
        kind::TASK_BLOCKED => {
            s += &format!(
                " task_cpu={} runtime={}{}",
                m.task_cpu,
                m.runtime,
                if m.flags & flag::SLEEP != 0 {
                    " sleep"
                } else {
                    ""
                }
            )
        }
        kind::TASK_TICK => s += &format!(" runtime={}", m.runtime),
        kind::SELECT_TASK_RQ => {
            s += &format!(" prev_cpu={} allowed={}", m.task_cpu, cpulist(m.allowed))
        }
        kind::PICK_NEXT_TASK if m.flags & flag::HAS_PREV != 0 => {
            s += &format!(
                " prev runtime={}{}",
                m.runtime,
                if m.flags & flag::PREV_RUNNABLE != 0 {
                    " runnable"
                } else {
                    ""
                }
            )
        }
        kind::PNT_ERR | kind::BALANCE_ERR => {
            s += &format!(" task_cpu={} err={}", m.task_cpu, m.flags)
        }
        kind::TASK_PRIO_CHANGED => s += &format!(" weight={} nice={}", m.weight, m.nice),
        kind::TASK_AFFINITY_CHANGED => s += &format!(" allowed={}", cpulist(m.allowed)),
        _ => {}
    }
    s
}

/// One line for any record, answer included.
pub fn describe_record(r: &Record) -> String {
    let at = format!("seq {:>8} cpu {:>3}", r.seq, r.cpu);
    match &r.event {
        Event::Msg(m) => format!("{at}  {} -> {}", describe(m), Answer::of(m)),
        Event::LockAcquire { addr } => format!("{at}  lock acquire {addr:#x}"),
        Event::LockRelease { addr } => format!("{at}  lock release {addr:#x}"),
    }
}

/// The first message whose answer, or whose lock events, differ.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// 0-based position among the replayed messages.
    pub index: u64,
    /// The message (a lock record when no call precedes it on its CPU).
    pub record: Record,
    pub expected: Answer,
    pub actual: Answer,
    /// The answer matched but the call took other locks, or in another
    /// order: what differed.
    pub locks: Option<String>,
    /// The records before the point of divergence, oldest first.
    pub context: Vec<Record>,
}

impl Divergence {
    pub fn message(&self) -> Msg {
        match self.record.event {
            Event::Msg(m) => m,
            _ => Msg::default(),
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "first divergence at message #{} (seq {}, cpu {}):",
            self.index, self.record.seq, self.record.cpu
        )?;
        match self.record.event {
            Event::Msg(m) => writeln!(f, "  message:  {}", describe(&m))?,
            _ => writeln!(f, "  record:   {}", describe_record(&self.record))?,
        }
        writeln!(f, "  expected: {}", self.expected)?;
        writeln!(f, "  actual:   {}", self.actual)?;
        if let Some(l) = &self.locks {
            writeln!(f, "  locks:    {l}")?;
        }
        writeln!(f, "the {} events before:", self.context.len())?;
        for r in &self.context {
            writeln!(f, "  {}", describe_record(r))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Records kept to show before a divergence.
    pub context: usize,
    /// Rebuild the per-CPU timeline.
    pub timeline: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            context: 10,
            timeline: false,
        }
    }
}

/// What a replay found.
#[derive(Debug)]
pub struct ReplayReport {
    /// The scheduler replayed.
    pub scheduler: String,
    pub messages: u64,
    pub lock_events: u64,
    pub divergence: Option<Divergence>,
    /// Things worth knowing that do not stop the replay (another build,
    /// another scheduler, dropped events).
    pub notices: Vec<String>,
    /// The trace could not be read to its end: replay stopped here.
    pub read_error: Option<TraceError>,
    /// Sequence numbers missing between records (events the recorder lost).
    pub seq_gaps: u64,
    pub timeline: Option<Vec<Slice>>,
}

struct IgnoreHost;

impl HostOps for IgnoreHost {
    fn kick_cpu(&self, _cpu: CpuId, _preempt: bool) {}
    fn set_timer(&self, _cpu: CpuId, _ns: Option<u64>) {}
}

thread_local! {
    /// Lock events of the call being replayed on this thread.
    static LOCKS: RefCell<Vec<(u64, bool)>> = const { RefCell::new(Vec::new()) };
}

fn capture_lock(addr: usize, acquire: bool) {
    LOCKS.with(|l| l.borrow_mut().push((addr as u64, acquire)));
}

/// Captures this thread's lock events while alive.
struct LockCapture;

impl LockCapture {
    fn start() -> Self {
        LOCKS.with(|l| l.borrow_mut().clear());
        enoki::user::set_lock_observer(Some(capture_lock));
        LockCapture
    }

    fn take(&self) -> Vec<(u64, bool)> {
        LOCKS.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}

impl Drop for LockCapture {
    fn drop(&mut self) {
        enoki::user::set_lock_observer(None);
    }
}

/// Pairs recorded lock addresses with this instance's.
#[derive(Default)]
struct LockMap {
    recorded: BTreeMap<u64, u64>,
    replayed: BTreeMap<u64, u64>,
}

impl LockMap {
    fn check(&mut self, recorded: u64, replayed: u64) -> Result<(), String> {
        match (self.recorded.get(&recorded), self.replayed.get(&replayed)) {
            (Some(r), _) if *r != replayed => Err(format!(
                "took lock {replayed:#x} where the recording took {recorded:#x} (paired with {r:#x} before)"
            )),
            (None, Some(o)) => Err(format!(
                "took lock {replayed:#x} where the recording took {recorded:#x} (it stood for {o:#x} before)"
            )),
            _ => {
                self.recorded.insert(recorded, replayed);
                self.replayed.insert(replayed, recorded);
                Ok(())
            }
        }
    }
}

fn lock_name(acquire: bool) -> &'static str {
    if acquire {
        "acquire"
    } else {
        "release"
    }
}

fn checks_locks<S: EnokiScheduler>(header: &TraceHeader) -> bool {
    header.flags & HEADER_LOCKS != 0 && header.scheduler == S::NAME
}

/// The last call replayed for one CPU, and the lock events it did that no
/// record has matched yet. Calls on different CPUs overlap in a kernel
/// trace, so their lock records interleave; each CPU's follow its call.
struct Call {
    index: u64,
    record: Record,
    answer: Answer,
    locks: VecDeque<(u64, bool)>,
}

/// Replay state around one scheduler instance.
pub struct Replayer<S: EnokiScheduler> {
    loaded: Loaded<S>,
    context: VecDeque<Record>,
    keep: usize,
    last_seq: Option<u64>,
    /// Checking lock events: the capture and the address pairing.
    locks: Option<(LockCapture, LockMap)>,
    calls: BTreeMap<u32, Call>,
    pub messages: u64,
    pub lock_events: u64,
    pub seq_gaps: u64,
}

impl<S: EnokiScheduler> Replayer<S> {
    /// Creates the scheduler as the recorded module load did. Lock events
    /// are checked when the trace has them and names this scheduler (another
    /// scheduler locks differently).
    pub fn new(header: &TraceHeader, keep: usize) -> Result<Self> {
        if header.abi_version != ABI_VERSION {
            bail!(
                "the trace speaks message ABI version {}, this build speaks {ABI_VERSION}",
                header.abi_version
            );
        }
        let topology = Topology::from_raw(&header.topology)
            .map_err(|e| anyhow::anyhow!("the trace's topology is unusable: {e:?}"))?;
        let ctx = InitContext {
            topology: &topology,
            max_tasks: usize::try_from(header.max_tasks)?,
            slice_ns: header.slice_ns,
            args: Args(&header.args),
            services: enoki::user::services(Some(Arc::new(IgnoreHost))),
        };
        let sched = S::init(&ctx).map_err(|e| {
            anyhow::anyhow!(
                "{} would not load with the trace's parameters: {e:?}",
                S::NAME
            )
        })?;
        Ok(Replayer {
            loaded: Loaded::new(sched, topology.nr_cpus()),
            context: VecDeque::with_capacity(keep + 1),
            keep,
            last_seq: None,
            locks: checks_locks::<S>(header).then(|| (LockCapture::start(), LockMap::default())),
            calls: BTreeMap::new(),
            messages: 0,
            lock_events: 0,
            seq_gaps: 0,
        })
    }

    /// The scheduler, as replay feeds it.
    pub fn loaded(&self) -> &Loaded<S> {
        &self.loaded
    }

    /// A lock difference in `call` (or, without one, at record `r`).
    fn lock_divergence(&self, call: Option<&Call>, r: &Record, what: String) -> Divergence {
        let (index, record, answer) = match call {
            Some(c) => (c.index, c.record, c.answer),
            None => (self.messages, *r, Answer::of(&Msg::default())),
        };
        Divergence {
            index,
            record,
            expected: answer,
            actual: answer,
            locks: Some(what),
            context: self.context.iter().copied().collect(),
        }
    }

    /// Checks one recorded lock event against what the replayed call on its
    /// CPU did.
    fn check_lock(&mut self, r: &Record, addr: u64, acquire: bool) -> Option<Divergence> {
        let (_, map) = self.locks.as_mut()?;
        let call = self.calls.get_mut(&r.cpu);
        let Some((got, got_acquire)) = call.and_then(|c| c.locks.pop_front()) else {
            let what = format!(
                "the recording has a lock {} of {addr:#x} on CPU {} the replayed call did not do",
                lock_name(acquire),
                r.cpu
            );
            return Some(self.lock_divergence(self.calls.get(&r.cpu), r, what));
        };
        let mismatch = if got_acquire != acquire {
            Some(format!(
                "lock {} of {got:#x} where the recording has a {} of {addr:#x}",
                lock_name(got_acquire),
                lock_name(acquire)
            ))
        } else {
            map.check(addr, got).err()
        };
        mismatch.map(|m| self.lock_divergence(self.calls.get(&r.cpu), r, m))
    }

    /// The last call on `cpu` must have had all its lock events matched.
    fn unmatched_locks(&self, cpu: u32) -> Option<Divergence> {
        let call = self.calls.get(&cpu)?;
        let (addr, acquire) = *call.locks.front()?;
        let what = format!(
            "the replayed call did a lock {} of {addr:#x} the recording does not have",
            lock_name(acquire)
        );
        Some(self.lock_divergence(Some(call), &call.record, what))
    }

    /// Replays one record; the first difference is returned.
    pub fn step(&mut self, r: &Record) -> Result<Option<Divergence>> {
        if let Some(last) = self.last_seq {
            if r.seq <= last {
                bail!(
                    "record seq {} after seq {last}: the trace is not in sequence order",
                    r.seq
                );
            }
            if r.seq > last + 1 {
                // Events were lost: what they did cannot be checked.
                self.seq_gaps += r.seq - last - 1;
                self.calls.values_mut().for_each(|c| c.locks.clear());
            }
        }
        self.last_seq = Some(r.seq);
        let found = match &r.event {
            Event::Msg(m) => match self.unmatched_locks(r.cpu) {
                Some(d) => Some(d),
                None => {
                    let actual = apply(&self.loaded, m);
                    let locks = self
                        .locks
                        .as_ref()
                        .map(|(cap, _)| cap.take().into())
                        .unwrap_or_default();
                    let expected = Answer::of(m);
                    let index = self.messages;
                    self.calls.insert(
                        r.cpu,
                        Call {
                            index,
                            record: *r,
                            answer: expected,
                            locks,
                        },
                    );
                    self.messages += 1;
                    (actual != expected).then(|| Divergence {
                        index,
                        record: *r,
                        expected,
                        actual,
                        locks: None,
                        context: self.context.iter().copied().collect(),
                    })
                }
            },
            Event::LockAcquire { addr } | Event::LockRelease { addr } => {
                self.lock_events += 1;
                self.check_lock(r, *addr, matches!(r.event, Event::LockAcquire { .. }))
            }
        };
        if self.keep > 0 {
            if self.context.len() == self.keep {
                self.context.pop_front();
            }
            self.context.push_back(*r);
        }
        Ok(found)
    }

    /// After the last record: lock events of a last call not in the trace.
    pub fn finish(&mut self) -> Option<Divergence> {
        self.calls.keys().find_map(|cpu| self.unmatched_locks(*cpu))
    }
}

/// Sequential replay of `records` against scheduler `S`, stopping at the
/// first divergence.
pub fn replay<S: EnokiScheduler>(
    header: &TraceHeader,
    records: &mut dyn Iterator<Item = Result<Record, TraceError>>,
    opts: &ReplayOptions,
) -> Result<ReplayReport> {
    let mut notices = Vec::new();
    if header.scheduler != S::NAME {
        let locks = if header.flags & HEADER_LOCKS != 0 {
            " (lock events not checked)"
        } else {
            ""
        };
        notices.push(format!(
            "the trace recorded scheduler {:?}; replaying it against {:?}{locks}",
            header.scheduler,
            S::NAME
        ));
    }
    let ours = crate::build_id();
    if header.build_id != ours {
        notices.push(format!(
            "the trace comes from build {:?}, this is build {ours:?}: replaying anyway",
            header.build_id
        ));
    }
    if header.dropped_events > 0 {
        notices.push(format!(
            "the recorder dropped {} events: answers after a gap may differ",
            header.dropped_events
        ));
    }
    let mut rp = Replayer::<S>::new(header, opts.context)?;
    let mut timeline = opts.timeline.then(TimelineBuilder::default);
    let mut divergence = None;
    let mut read_error = None;
    for item in records {
        let r = match item {
            Ok(r) => r,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if let Some(t) = timeline.as_mut() {
            t.add(&r);
        }
        if let Some(d) = rp.step(&r)? {
            divergence = Some(d);
            break;
        }
    }
    if divergence.is_none() && read_error.is_none() {
        divergence = rp.finish();
    }
    if rp.seq_gaps > 0 && header.dropped_events == 0 {
        notices.push(format!(
            "{} sequence numbers are missing between records",
            rp.seq_gaps
        ));
    }
    Ok(ReplayReport {
        scheduler: S::NAME.to_owned(),
        messages: rp.messages,
        lock_events: rp.lock_events,
        divergence,
        notices,
        read_error,
        seq_gaps: rp.seq_gaps,
        timeline: timeline.map(|t| t.finish()),
    })
}

// ---------------------------------------------------------------------------
// Lock-ordered replay: one thread per recorded CPU.

/// One recorded call: its message record and the lock events that follow
/// it on its CPU.
struct ScriptCall {
    index: u64,
    record: Record,
    locks: Vec<(u64, bool)>,
}

struct Gate {
    /// Per recorded lock: the CPUs in the order they acquired it.
    order: BTreeMap<u64, Vec<u32>>,
    /// Per recorded lock: how many acquisitions have happened.
    turn: std::sync::Mutex<(BTreeMap<u64, usize>, LockMap)>,
    /// One per CPU slot, notified when a lock's turn may be that CPU's.
    conds: Vec<std::sync::Condvar>,
    slot: BTreeMap<u32, usize>,
    failed: std::sync::atomic::AtomicBool,
    /// Per CPU slot: the recorded lock it waits for its turn at (0: none)
    /// and the seq of its current call, for the stall report.
    waiting: Vec<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
    /// Acquisitions so far, all locks: a waiter gives up only when this
    /// stops moving (slow machines and debug builds make turns slow).
    progress: std::sync::atomic::AtomicU64,
}

impl Gate {
    fn waiters(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        self.slot
            .iter()
            .map(|(cpu, i)| {
                let (l, seq) = (
                    self.waiting[*i].0.load(Relaxed),
                    self.waiting[*i].1.load(Relaxed),
                );
                if l == 0 {
                    format!("CPU {cpu} (call seq {seq}) runs")
                } else {
                    let t = *turn.0.get(&l).unwrap_or(&0);
                    format!(
                        "CPU {cpu} (call seq {seq}) waits for {l:#x} #{t} (CPU {:?})",
                        self.order[&l].get(t)
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Gate {
    fn fail(&self) {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _g = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        self.conds.iter().for_each(|c| c.notify_all());
    }
    fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What the replay thread of one CPU is doing, for the lock hooks.
struct ThreadCtx {
    gate: Arc<Gate>,
    cpu: u32,
    /// Recorded lock events of the current call and how far they went.
    locks: Vec<(u64, bool)>,
    pos: usize,
    error: Option<String>,
}

thread_local! {
    static CTX: RefCell<Option<ThreadCtx>> = const { RefCell::new(None) };
}

/// How long a thread waits for its turn at a lock before the replay gives up.
const TURN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn gate_wait(_addr: usize) {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let Some(ctx) = c.as_mut() else { return };
        if ctx.error.is_some() || ctx.gate.failed() {
            return;
        }
        let Some(&(rec, true)) = ctx.locks.get(ctx.pos) else {
            ctx.error = Some(match ctx.locks.get(ctx.pos) {
                Some((a, _)) => format!("the replayed call takes a lock where the recording releases {a:#x}"),
                None => "the replayed call takes a lock the recording does not have".to_string(),
            });
            ctx.gate.fail();
            return;
        };
        let gate = ctx.gate.clone();
        let slot = gate.slot[&ctx.cpu];
        let order = &gate.order[&rec];
        let mut g = gate.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut start = std::time::Instant::now();
        let mut seen = gate.progress.load(std::sync::atomic::Ordering::Relaxed);
        gate.waiting[slot].0.store(rec, std::sync::atomic::Ordering::Relaxed);
        loop {
            let t = *g.0.get(&rec).unwrap_or(&0);
            if order.get(t) == Some(&ctx.cpu) || gate.failed() {
                gate.waiting[slot].0.store(0, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            let now = gate.progress.load(std::sync::atomic::Ordering::Relaxed);
            if now != seen {
                (seen, start) = (now, std::time::Instant::now());
            }
            if start.elapsed() > TURN_TIMEOUT {
                drop(g);
                ctx.error = Some(format!(
                    "no lock taken for {}s while waiting for lock {rec:#x}: acquisition #{t} belongs to CPU {:?}; {}",
                    TURN_TIMEOUT.as_secs(),
                    order.get(t),
                    gate.waiters()
                ));
                gate.fail();
                return;
            }
            g = gate.conds[slot].wait_timeout(g, std::time::Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
    });
}

fn gate_event(addr: usize, acquire: bool) {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let Some(ctx) = c.as_mut() else { return };
        if ctx.error.is_some() {
            return;
        }
        let Some(&(rec, rec_acquire)) = ctx.locks.get(ctx.pos) else {
            ctx.error = Some(format!(
                "the replayed call did a lock {} of {addr:#x} the recording does not have",
                lock_name(acquire)
            ));
            ctx.gate.fail();
            return;
        };
        ctx.pos += 1;
        if rec_acquire != acquire {
            ctx.error = Some(format!(
                "lock {} of {addr:#x} where the recording has a {} of {rec:#x}",
                lock_name(acquire),
                lock_name(rec_acquire)
            ));
            ctx.gate.fail();
            return;
        }
        let gate = ctx.gate.clone();
        let mut g = gate.turn.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = g.1.check(rec, addr as u64) {
            drop(g);
            ctx.error = Some(e);
            gate.fail();
            return;
        }
        if acquire {
            gate.progress
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = g.0.entry(rec).or_insert(0);
            *t += 1;
            if let Some(next) = gate.order[&rec].get(*t) {
                gate.conds[gate.slot[next]].notify_all();
            }
        }
    });
}

/// A CPU's first divergence: the call, its index, expected and actual
/// answers, and what went wrong with its locks.
type Found = (Record, u64, Answer, Answer, Option<String>);

/// Lock-ordered replay of `records` (in sequence order) against `S`: one
/// thread per recorded CPU replays that CPU's calls in order, and every
/// blocking lock acquisition waits until it is that CPU's turn in the
/// recorded acquisition order of that lock. Calls that overlapped on
/// different CPUs in the kernel then see the scheduler state they saw
/// there. Needs a trace with lock events of this scheduler and no gaps.
pub fn replay_by_locks<S: EnokiScheduler>(
    header: &TraceHeader,
    records: &mut dyn Iterator<Item = Result<Record, TraceError>>,
    opts: &ReplayOptions,
) -> Result<ReplayReport>
where
    Loaded<S>: Sync,
{
    if !checks_locks::<S>(header) {
        bail!(
            "lock-ordered replay needs a trace with lock events of {} (recorded: {:?})",
            S::NAME,
            header.scheduler
        );
    }
    let mut notices = Vec::new();
    let ours = crate::build_id();
    if header.build_id != ours {
        notices.push(format!(
            "the trace comes from build {:?}, this is build {ours:?}: replaying anyway",
            header.build_id
        ));
    }
    let mut scripts: BTreeMap<u32, Vec<ScriptCall>> = BTreeMap::new();
    let mut order: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let (mut messages, mut lock_events, mut seq_gaps) = (0u64, 0u64, 0u64);
    let mut last_seq: Option<u64> = None;
    let mut read_error = None;
    let mut all: Vec<Record> = Vec::new();
    for item in records {
        let r = match item {
            Ok(r) => r,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if let Some(last) = last_seq {
            if r.seq <= last {
                bail!(
                    "record seq {} after seq {last}: the trace is not in sequence order",
                    r.seq
                );
            }
            seq_gaps += r.seq - last - 1;
        }
        last_seq = Some(r.seq);
        match r.event {
            Event::Msg(_) => {
                scripts.entry(r.cpu).or_default().push(ScriptCall {
                    index: messages,
                    record: r,
                    locks: Vec::new(),
                });
                messages += 1;
            }
            Event::LockAcquire { addr } | Event::LockRelease { addr } => {
                lock_events += 1;
                let acquire = matches!(r.event, Event::LockAcquire { .. });
                let Some(call) = scripts.get_mut(&r.cpu).and_then(|v| v.last_mut()) else {
                    bail!(
                        "lock event seq {} on CPU {} before any call on that CPU",
                        r.seq,
                        r.cpu
                    );
                };
                call.locks.push((addr, acquire));
                if acquire {
                    order.entry(addr).or_default().push(r.cpu);
                }
            }
        }
        if opts.context > 0 {
            all.push(r);
        }
    }
    if seq_gaps > 0 {
        bail!("{seq_gaps} sequence numbers are missing (dropped events): lock-ordered replay needs a whole trace");
    }
    let rp = Replayer::<S>::new(header, 0)?;
    let loaded = &rp.loaded;
    let slot: BTreeMap<u32, usize> = scripts.keys().enumerate().map(|(i, c)| (*c, i)).collect();
    let gate = Arc::new(Gate {
        order,
        turn: std::sync::Mutex::new((BTreeMap::new(), LockMap::default())),
        conds: (0..slot.len()).map(|_| std::sync::Condvar::new()).collect(),
        waiting: (0..slot.len()).map(|_| Default::default()).collect(),
        progress: Default::default(),
        slot,
        failed: std::sync::atomic::AtomicBool::new(false),
    });
    // Each thread: the first divergence of its CPU, if any.
    let found: Vec<Option<Found>> = std::thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .map(|(cpu, calls)| {
                let gate = gate.clone();
                let cpu = *cpu;
                s.spawn(move || {
                    CTX.with(|c| {
                        *c.borrow_mut() =
                            Some(ThreadCtx { gate: gate.clone(), cpu, locks: Vec::new(), pos: 0, error: None })
                    });
                    enoki::user::set_lock_waiter(Some(gate_wait));
                    enoki::user::set_lock_observer(Some(gate_event));
                    let mut out = None;
                    for call in calls {
                        if gate.failed() {
                            break;
                        }
                        CTX.with(|c| {
                            let mut c = c.borrow_mut();
                            let ctx = c.as_mut().unwrap();
                            ctx.locks.clone_from(&call.locks);
                            ctx.pos = 0;
                            gate.waiting[gate.slot[&cpu]].1.store(call.record.seq, std::sync::atomic::Ordering::Relaxed);
                        });
                        let Event::Msg(m) = &call.record.event else { unreachable!() };
                        let actual = apply(loaded, m);
                        let expected = Answer::of(m);
                        let lock_err = CTX.with(|c| {
                            let mut c = c.borrow_mut();
                            let ctx = c.as_mut().unwrap();
                            ctx.error.take().or_else(|| {
                                (ctx.pos < ctx.locks.len()).then(|| {
                                    let (a, acq) = ctx.locks[ctx.pos];
                                    format!(
                                        "the recording has a lock {} of {a:#x} on CPU {cpu} the replayed call did not do",
                                        lock_name(acq)
                                    )
                                })
                            })
                        });
                        if lock_err.is_none() && gate.failed() {
                            // Another CPU diverged: this call may have run out of order.
                            break;
                        }
                        if actual != expected || lock_err.is_some() {
                            gate.fail();
                            out = Some((call.record, call.index, expected, actual, lock_err));
                            break;
                        }
                    }
                    enoki::user::set_lock_waiter(None);
                    enoki::user::set_lock_observer(None);
                    CTX.with(|c| *c.borrow_mut() = None);
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replay thread panicked"))
            .collect()
    });
    let divergence = found.into_iter().flatten().min_by_key(|(r, ..)| r.seq).map(
        |(record, index, expected, actual, locks)| {
            let at = all.partition_point(|x| x.seq < record.seq);
            let context = all[at.saturating_sub(opts.context)..at].to_vec();
            Divergence {
                index,
                record,
                expected,
                actual,
                locks,
                context,
            }
        },
    );
    Ok(ReplayReport {
        scheduler: S::NAME.to_owned(),
        messages,
        lock_events,
        divergence,
        notices,
        read_error,
        seq_gaps,
        timeline: None,
    })
}
