// SPDX-License-Identifier: MIT OR Apache-2.0
//! Replay: re-create the recorded scheduler from the trace header, feed it
//! every recorded message through libEnoki's `Loaded::handle` (the function
//! Enoki-C's calls go through) and compare each answer with the recorded one.
//!
//! [`apply`] is the only place a message reaches the scheduler; it takes
//! `&Loaded` and touches nothing else, so per-CPU replay fibers can call it
//! in turn. Both replays read the trace through one loop ([`InOrder`]):
//! records in sequence order, missing sequence numbers counted.
//!
//! [`replay`] is the sequential executor: records in sequence order, one at
//! a time. When the trace has lock events (`HEADER_LOCKS`), the locks each
//! replayed call takes are checked against the lock records that follow its
//! message on its CPU (calls on other CPUs may interleave their records, as
//! in a kernel trace): same order, and the same lock every time a recorded
//! address comes back (addresses differ between instances; the first use
//! pairs them up, as the paper's replay assumes locks are created in the
//! same order).
//!
//! Kernel traces need [`replay_by_locks`]: calls on different CPUs overlap
//! there, so seq order is not the order they saw each other's state in. It
//! runs one fiber per recorded CPU and holds every blocking acquisition
//! (`sync::hooks::acquiring`) until it is that CPU's turn in the lock's
//! recorded acquisition order. State read outside libEnoki locks (atomics)
//! is not ordered: a scheduler replays exactly only if its shared state is
//! behind libEnoki locks.
//!
//! A gap record (Enoki-C's ring for a CPU was full) means the scheduler saw
//! calls the trace does not have, and its state after that point is not
//! the recorded one on any CPU. Both replays stop at the first gap, having
//! replayed every call before it, and say so in [`ReplayReport::gap`]: that
//! is an incomplete replay, not a divergence. Lock events that follow the
//! gap are not read, so the calls still running at it (the last call of
//! each CPU) have their answers checked but only the lock events recorded
//! before the gap.
//!
//! [`ReplayOptions::stop_before`] ends a replay the same way at a message
//! of the user's choosing, calling [`stopped_before`] just before handing
//! it to the scheduler: a debugger's breakpoint there, then `step`, lands
//! in the scheduler's own code at that call.

mod by_locks;
mod describe;
mod sequential;
mod stop;
mod window;

use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use enoki::abi::{flag, kind, Msg, ABI_VERSION, RECORDS_SINCE, SHARED_READS_SINCE};
use enoki::dispatch::Loaded;
use enoki::scheduler::{Args, InitContext};
use enoki::user::HostOps;
use enoki::{CpuId, EnokiScheduler, LockOp, Topology};

use crate::perfetto::Slice;
use crate::trace::{Event, Record, TraceError, TraceHeader, HEADER_LOCKS};

pub use by_locks::replay_by_locks;
pub use describe::{describe, describe_record};
pub use sequential::{replay, Replayer};
pub use stop::stopped_before;

/// The answer fields of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub ret: i64,
    pub ret_cpu: i32,
    pub ret_err: u32,
    pub ret_slice: u64,
    /// PICK_NEXT_TASK: the `KEEP_PREV` bit the scheduler set in `flags`.
    pub keep_prev: bool,
}

/// Whether `m` is a pick answered with "keep running the previous task".
fn keeps_prev(m: &Msg) -> bool {
    m.kind == kind::PICK_NEXT_TASK && m.flags & flag::KEEP_PREV != 0
}

impl Answer {
    pub fn of(m: &Msg) -> Self {
        Answer {
            ret: m.ret,
            ret_cpu: m.ret_cpu,
            ret_err: m.ret_err,
            ret_slice: m.ret_slice,
            keep_prev: keeps_prev(m),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ret={} ret_cpu={} ret_err={:#x} ret_slice={}{}",
            self.ret,
            self.ret_cpu,
            self.ret_err,
            self.ret_slice,
            if self.keep_prev { " keep_prev" } else { "" }
        )
    }
}

/// `m` with its answer fields as Enoki-C sends them (empty; a pick's
/// `flags` without the answer's `KEEP_PREV`).
pub fn question(m: &Msg) -> Msg {
    let blank = Msg::new(m.kind, m.cpu);
    let answer_flags = if keeps_prev(m) { flag::KEEP_PREV } else { 0 };
    Msg {
        flags: m.flags & !answer_flags,
        ret: blank.ret,
        ret_cpu: blank.ret_cpu,
        ret_err: blank.ret_err,
        ret_slice: blank.ret_slice,
        ..*m
    }
}

/// Events the recorder lost: replay stops there. Either a gap record (one
/// CPU's events) or sequence numbers missing between two records: Enoki-C
/// writes a CPU's gap record only once its ring has room again, and by
/// then `enoki record` may have written later events of other CPUs, so a
/// kernel trace's hole can come before its gap record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TraceGap {
    /// Sequence number of the first lost event.
    pub seq: u64,
    /// The CPU whose events were lost; `None` for missing sequence numbers.
    pub cpu: Option<u32>,
    /// Events lost.
    pub lost: u64,
}

impl TraceGap {
    /// The gap `r` records, if it is a gap record.
    fn of(r: &Record) -> Option<Self> {
        match r.event {
            Event::Gap { lost } => Some(TraceGap {
                seq: r.seq,
                cpu: Some(r.cpu),
                lost,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for TraceGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cpu {
            Some(cpu) => write!(
                f,
                "trace has a gap: {} events lost on CPU {cpu} at seq {}",
                self.lost, self.seq
            ),
            None => write!(
                f,
                "trace has a gap: {} sequence numbers missing at seq {} (events lost)",
                self.lost, self.seq
            ),
        }
    }
}

/// A live upgrade in the recording: what follows went to another version,
/// so replay stops there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TraceUpgrade {
    pub seq: u64,
    pub cpu: u32,
    /// Fingerprint of the state the new version took over; 0: it started
    /// fresh.
    pub state: u64,
}

impl TraceUpgrade {
    /// The upgrade `r` records, if it is an upgrade record.
    fn of(r: &Record) -> Option<Self> {
        match r.event {
            Event::Upgrade { state } => Some(TraceUpgrade {
                seq: r.seq,
                cpu: r.cpu,
                state,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for TraceUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the scheduler was live-upgraded at seq {}", self.seq)?;
        match self.state {
            0 => write!(f, " (the new version started fresh)"),
            fp => write!(f, " (the new version took over state {fp:#018x})"),
        }
    }
}

/// The end of the recorded scheduler's run (ejected or unloaded): nothing
/// after it reached the scheduler, so it is where a replay ends, not a
/// divergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TraceExit {
    pub seq: u64,
    pub cpu: u32,
    /// sched_ext's exit kind ([`enoki::abi::exit_kind`]).
    pub kind: u64,
}

impl TraceExit {
    /// The exit `r` records, if it is an exit record.
    pub fn of(r: &Record) -> Option<Self> {
        match r.event {
            Event::Exit { kind } => Some(TraceExit {
                seq: r.seq,
                cpu: r.cpu,
                kind,
            }),
            _ => None,
        }
    }

    /// Whether the run ended in an ejection (not an unload).
    pub fn ejected(&self) -> bool {
        self.kind >= enoki::abi::exit_kind::ERROR
    }
}

impl fmt::Display for TraceExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the recorded run ended at seq {}: the scheduler was {}",
            self.seq,
            enoki::abi::exit_kind::describe(self.kind)
        )
    }
}

/// Feeds one recorded message (answer cleared) to the scheduler; returns
/// the scheduler's answer.
pub fn apply<S: EnokiScheduler>(loaded: &Loaded<S>, recorded: &Msg) -> Answer {
    let mut m = question(recorded);
    loaded.handle(&mut m);
    Answer::of(&m)
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
        match &self.record.event {
            Event::Msg(m) => **m,
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
        match &self.record.event {
            Event::Msg(m) => writeln!(f, "  message:  {}", describe(m))?,
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
    /// End at the first message numbered this or later: it is handed to
    /// the scheduler right after [`stopped_before`], and nothing after it.
    pub stop_before: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            context: 10,
            timeline: false,
            stop_before: None,
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
    /// The most recorded lock acquisitions read and not yet replayed at
    /// once: what a lock-ordered replay's memory grows with (0 for a
    /// sequential replay, which reads a record at a time).
    pub read_ahead: u64,
    pub divergence: Option<Divergence>,
    /// Things worth knowing that do not stop the replay (another build,
    /// another scheduler, dropped events).
    pub notices: Vec<String>,
    /// The trace could not be read to its end: replay stopped here.
    pub read_error: Option<TraceError>,
    /// Sequence numbers missing at the hole replay stopped at (events the
    /// recorder lost; see [`TraceGap`]).
    pub seq_gaps: u64,
    /// The first gap (a gap record or missing sequence numbers): replay stopped there, having replayed every
    /// message before it (`messages`). Not a divergence: what follows
    /// cannot be replayed exactly.
    pub gap: Option<TraceGap>,
    /// The first live upgrade: replay stopped there, having replayed every
    /// message of the recorded version (`messages`); what follows went to
    /// the new one.
    pub upgrade: Option<TraceUpgrade>,
    /// The recorded run's end (an ejection or an unload): replay ended
    /// there, the expected end of the trace.
    pub exit: Option<TraceExit>,
    /// Sequence number of the message the replay stopped at, as
    /// [`ReplayOptions::stop_before`] asked (it was the last one replayed).
    pub stopped_at: Option<u64>,
    pub timeline: Option<Vec<Slice>>,
    /// The scheduler failed in the replay (a deadlock, a leaked lock...):
    /// what libEnoki reported. A recorded failure replays as the same
    /// failure.
    pub fault: Option<enoki::Fault>,
}

/// A record read in sequence order.
struct Next {
    record: Record,
    /// The message [`ReplayOptions::stop_before`] asked to stop at: the
    /// last record read.
    stop: bool,
}

/// The loop every replay reads a trace through: records in sequence order,
/// up to the first gap (a gap record or missing sequence numbers, kept in
/// `gap`), the first upgrade (kept in `upgrade`), the exit (kept in
/// `exit`) or the first record that
/// cannot be read (kept in `read_error`); a record out of order is an
/// error.
struct InOrder<'a> {
    records: &'a mut dyn Iterator<Item = Result<Record, TraceError>>,
    last_seq: Option<u64>,
    seq_gaps: u64,
    read_error: Option<TraceError>,
    gap: Option<TraceGap>,
    upgrade: Option<TraceUpgrade>,
    exit: Option<TraceExit>,
    stop_before: Option<u64>,
    stopped_at: Option<u64>,
}

impl<'a> InOrder<'a> {
    fn new(
        records: &'a mut dyn Iterator<Item = Result<Record, TraceError>>,
        stop_before: Option<u64>,
    ) -> Self {
        InOrder {
            records,
            last_seq: None,
            seq_gaps: 0,
            read_error: None,
            gap: None,
            upgrade: None,
            exit: None,
            stop_before,
            stopped_at: None,
        }
    }

    /// Replay cannot go past what it stopped at.
    fn stopped(&self) -> bool {
        self.read_error.is_some()
            || self.gap.is_some()
            || self.upgrade.is_some()
            || self.exit.is_some()
            || self.stopped_at.is_some()
    }

    /// Whether the replay was cut short with calls still running: their
    /// lock events after the cut were not read.
    fn cut(&self) -> bool {
        self.gap.is_some() || self.stopped_at.is_some()
    }

    /// Reads, replaying nothing, up to where the trace stops (the exit
    /// record of a run whose failure the replay reproduced, or a gap).
    fn skip_to_end(&mut self) -> Result<()> {
        while self.next()?.is_some() {}
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Next>> {
        if self.stopped() {
            return Ok(None);
        }
        let record = match self.records.next() {
            None => return Ok(None),
            Some(Err(e)) => {
                self.read_error = Some(e);
                return Ok(None);
            }
            Some(Ok(r)) => r,
        };
        let missing = match self.last_seq {
            Some(last) if record.seq <= last => bail!(
                "record seq {} after seq {last}: the trace is not in sequence order",
                record.seq
            ),
            Some(last) => record.seq - last - 1,
            None => 0,
        };
        if missing > 0 {
            self.seq_gaps = missing;
            self.gap = Some(TraceGap {
                seq: record.seq - missing,
                cpu: None,
                lost: missing,
            });
            return Ok(None);
        }
        self.last_seq = Some(record.seq);
        self.gap = TraceGap::of(&record);
        self.upgrade = TraceUpgrade::of(&record);
        self.exit = TraceExit::of(&record);
        if self.stopped() {
            return Ok(None);
        }
        let stop = matches!(record.event, Event::Msg(_))
            && self.stop_before.is_some_and(|at| record.seq >= at);
        if stop {
            self.stopped_at = Some(record.seq);
        }
        Ok(Some(Next { record, stop }))
    }
}

/// One lock event: a lock at `addr` taken (one way or the other) or
/// released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockEvent {
    addr: u64,
    op: LockOp,
}

impl LockEvent {
    /// The lock events `r` holds, in order: none, one, or an access's
    /// acquire and release.
    fn of(r: &Record) -> impl Iterator<Item = LockEvent> {
        let (addr, ops): (u64, &[LockOp]) = match r.event {
            Event::LockAcquire { addr } => (addr, &[LockOp::Acquire]),
            Event::LockAcquireShared { addr } => (addr, &[LockOp::AcquireShared]),
            Event::LockRelease { addr } => (addr, &[LockOp::Release]),
            Event::LockAccess { addr } => (addr, &[LockOp::Acquire, LockOp::Release]),
            Event::Msg(_) | Event::Gap { .. } | Event::Upgrade { .. } | Event::Exit { .. } => {
                (0, &[])
            }
        };
        ops.iter().map(move |&op| LockEvent { addr, op })
    }

    fn acquire(&self) -> bool {
        self.op.is_acquire()
    }
}

fn lock_name(op: LockOp) -> &'static str {
    match op {
        LockOp::Acquire => "acquire",
        LockOp::AcquireShared => "shared acquire",
        LockOp::Release => "release",
    }
}

/// How a trace records a replayed lock event `op`: traces older than
/// [`SHARED_READS_SINCE`] (`shared_reads` false) record a read as an
/// exclusive acquisition, and are replayed in that stricter order.
fn as_recorded(op: LockOp, shared_reads: bool) -> LockOp {
    match op {
        LockOp::AcquireShared if !shared_reads => LockOp::Acquire,
        op => op,
    }
}

/// Why replayed lock event `replayed` at `addr` is not `recorded`, if it
/// is not (`shared_reads`: see [`as_recorded`]); the addresses are paired
/// apart, by [`LockMap`].
fn op_mismatch(
    replayed: LockOp,
    addr: u64,
    recorded: LockEvent,
    shared_reads: bool,
) -> Option<String> {
    let op = as_recorded(replayed, shared_reads);
    (op != recorded.op).then(|| {
        format!(
            "lock {} of {addr:#x} where the recording has a lock {} of {:#x}",
            lock_name(op),
            lock_name(recorded.op),
            recorded.addr
        )
    })
}

/// Whether `header`'s trace records reads as shared acquisitions.
fn records_shared_reads(header: &TraceHeader) -> bool {
    header.abi_version >= SHARED_READS_SINCE
}

/// Pairs recorded lock addresses with this instance's.
#[derive(Default)]
struct LockMap {
    recorded: FxHashMap<u64, u64>,
    replayed: FxHashMap<u64, u64>,
}

impl LockMap {
    fn check(&mut self, recorded: u64, replayed: u64) -> Result<(), String> {
        if let Some(r) = self.recorded.get(&recorded) {
            return match *r == replayed {
                true => Ok(()),
                false => Err(format!(
                    "took lock {replayed:#x} where the recording took {recorded:#x} (paired with {r:#x} before)"
                )),
            };
        }
        if let Some(o) = self.replayed.get(&replayed) {
            return Err(format!(
                "took lock {replayed:#x} where the recording took {recorded:#x} (it stood for {o:#x} before)"
            ));
        }
        self.recorded.insert(recorded, replayed);
        self.replayed.insert(replayed, recorded);
        Ok(())
    }
}

/// Whether lock events are checked: the trace has them, and from this
/// scheduler (another scheduler locks differently).
fn checks_locks<S: EnokiScheduler>(header: &TraceHeader) -> bool {
    header.flags & HEADER_LOCKS != 0 && header.scheduler == S::NAME
}

/// The notice for a trace from another build, if it is one.
fn build_notice(header: &TraceHeader) -> Option<String> {
    let ours = crate::build_id();
    (header.build_id != ours).then(|| {
        format!(
            "the trace comes from build {:?}, this is build {ours:?}: replaying anyway",
            header.build_id
        )
    })
}

struct IgnoreHost;

impl HostOps for IgnoreHost {
    fn kick_cpu(&self, _cpu: CpuId, _preempt: bool) {}
    fn set_timer(&self, _cpu: CpuId, _ns: Option<u64>) {}
    fn rev_hint(&self, _queue: u32, _pid: i32, _hint: &[u8]) {}
}

/// Creates the scheduler as the recorded module load did.
fn load<S: EnokiScheduler>(header: &TraceHeader) -> Result<Loaded<S>> {
    if !(RECORDS_SINCE..=ABI_VERSION).contains(&header.abi_version) {
        bail!(
            "the trace speaks message ABI version {}, this build reads {RECORDS_SINCE} to {ABI_VERSION}",
            header.abi_version
        );
    }
    let topology = Topology::from_raw(&header.topology)
        .map_err(|e| anyhow!("the trace's topology is unusable: {e:?}"))?;
    let ctx = InitContext {
        topology: &topology,
        max_tasks: usize::try_from(header.max_tasks)?,
        slice_ns: header.slice_ns,
        args: Args(&header.args),
        services: enoki::user::services(Some(Arc::new(IgnoreHost))),
    };
    let sched = S::init(&ctx).map_err(|e| {
        anyhow!(
            "{} would not load with the trace's parameters: {e:?}",
            S::NAME
        )
    })?;
    Loaded::new(sched, topology.nr_cpus(), ctx.max_tasks)
        .map_err(|_| anyhow!("out of memory for {} tasks", ctx.max_tasks))
}
