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
//! locks are created in the same order). A lock-order executor would instead
//! start one thread per recorded CPU, gate `sync::hooks::acquired` on the
//! recorded per-lock acquisition lists (lock records carry address, CPU and
//! sequence number), and report through the same `step` comparison.

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
        Answer { ret: m.ret, ret_cpu: m.ret_cpu, ret_err: m.ret_err, ret_slice: m.ret_slice }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ret={} ret_cpu={} ret_err={:#x} ret_slice={}", self.ret, self.ret_cpu, self.ret_err, self.ret_slice)
    }
}

/// `m` with its answer fields as Enoki-C sends them (empty).
pub fn question(m: &Msg) -> Msg {
    let blank = Msg::new(m.kind, m.cpu);
    Msg { ret: blank.ret, ret_cpu: blank.ret_cpu, ret_err: blank.ret_err, ret_slice: blank.ret_slice, ..*m }
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
        out.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    out.join(",")
}

/// One line for a message's question.
pub fn describe(m: &Msg) -> String {
    let name = kind::NAMES.get(m.kind as usize).copied().unwrap_or("unknown");
    let mut s = format!("{name} cpu={} pid={}", m.cpu, m.pid);
    match m.kind {
        kind::TASK_NEW => {
            s += &format!(" tgid={} weight={} nice={} allowed={}", m.tgid, m.weight, m.nice, cpulist(m.allowed))
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
                if m.flags & flag::SLEEP != 0 { " sleep" } else { "" }
            )
        }
        kind::TASK_TICK => s += &format!(" runtime={}", m.runtime),
        kind::SELECT_TASK_RQ => s += &format!(" prev_cpu={} allowed={}", m.task_cpu, cpulist(m.allowed)),
        kind::PICK_NEXT_TASK if m.flags & flag::HAS_PREV != 0 => {
            s += &format!(
                " prev runtime={}{}",
                m.runtime,
                if m.flags & flag::PREV_RUNNABLE != 0 { " runnable" } else { "" }
            )
        }
        kind::PNT_ERR | kind::BALANCE_ERR => s += &format!(" task_cpu={} err={}", m.task_cpu, m.flags),
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
        writeln!(f, "first divergence at message #{} (seq {}, cpu {}):", self.index, self.record.seq, self.record.cpu)?;
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
        ReplayOptions { context: 10, timeline: false }
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
            bail!("the trace speaks message ABI version {}, this build speaks {ABI_VERSION}", header.abi_version);
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
        let sched = S::init(&ctx)
            .map_err(|e| anyhow::anyhow!("{} would not load with the trace's parameters: {e:?}", S::NAME))?;
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
        let what =
            format!("the replayed call did a lock {} of {addr:#x} the recording does not have", lock_name(acquire));
        Some(self.lock_divergence(Some(call), &call.record, what))
    }

    /// Replays one record; the first difference is returned.
    pub fn step(&mut self, r: &Record) -> Result<Option<Divergence>> {
        if let Some(last) = self.last_seq {
            if r.seq <= last {
                bail!("record seq {} after seq {last}: the trace is not in sequence order", r.seq);
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
                    let locks = self.locks.as_ref().map(|(cap, _)| cap.take().into()).unwrap_or_default();
                    let expected = Answer::of(m);
                    let index = self.messages;
                    self.calls.insert(r.cpu, Call { index, record: *r, answer: expected, locks });
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
        let locks = if header.flags & HEADER_LOCKS != 0 { " (lock events not checked)" } else { "" };
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
        notices.push(format!("the recorder dropped {} events: answers after a gap may differ", header.dropped_events));
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
        notices.push(format!("{} sequence numbers are missing between records", rp.seq_gaps));
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
