// SPDX-License-Identifier: MIT OR Apache-2.0
//! Sequential replay: records in sequence order, one at a time, on this
//! thread.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use anyhow::Result;

use enoki::abi::Msg;
use enoki::dispatch::Loaded;
use enoki::{EnokiScheduler, LockOp};

use super::window::{KeptMsg, Window};
use super::{
    apply, build_notice, checks_locks, load, lock_name, op_mismatch, question,
    records_shared_reads, stopped_before, Answer, Divergence, InOrder, LockEvent, LockMap,
    ReplayOptions, ReplayReport,
};
use crate::perfetto::TimelineBuilder;
use crate::trace::{Event, Record, TraceError, TraceHeader, HEADER_LOCKS};

thread_local! {
    /// Lock events of the call being replayed on this thread.
    static LOCKS: RefCell<Vec<LockEvent>> = const { RefCell::new(Vec::new()) };
}

fn capture_lock(addr: usize, op: LockOp) {
    LOCKS.with(|l| {
        l.borrow_mut().push(LockEvent {
            addr: addr as u64,
            op,
        })
    });
}

/// Captures this thread's lock events while alive.
struct LockCapture;

impl LockCapture {
    fn start() -> Self {
        LOCKS.with(|l| l.borrow_mut().clear());
        enoki::user::set_lock_observer(Some(capture_lock));
        LockCapture
    }

    fn take(&self) -> Vec<LockEvent> {
        LOCKS.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}

impl Drop for LockCapture {
    fn drop(&mut self) {
        enoki::user::set_lock_observer(None);
    }
}

/// Checking lock events: the capture and the address pairing.
struct LockCheck {
    capture: LockCapture,
    pairs: LockMap,
    /// The trace tells reads apart ([`records_shared_reads`]).
    shared_reads: bool,
}

/// The last call replayed for one CPU, and the lock events it did that no
/// record has matched yet. Calls on different CPUs overlap in a kernel
/// trace, so their lock records interleave; each CPU's follow its call.
struct Call {
    index: u64,
    record: KeptMsg,
    answer: Answer,
    locks: VecDeque<LockEvent>,
}

/// Replay state around one scheduler instance.
pub struct Replayer<S: EnokiScheduler> {
    loaded: Loaded<S>,
    context: Window,
    locks: Option<LockCheck>,
    calls: BTreeMap<u32, Call>,
    pub messages: u64,
    pub lock_events: u64,
}

impl<S: EnokiScheduler> Replayer<S> {
    /// Creates the scheduler as the recorded module load did, keeping the
    /// last `keep` records for a divergence report. Lock events are checked
    /// when the trace has them and names this scheduler.
    pub fn new(header: &TraceHeader, keep: usize) -> Result<Self> {
        let loaded = load::<S>(header)?;
        Ok(Replayer {
            loaded,
            context: Window::new(keep),
            locks: checks_locks::<S>(header).then(|| LockCheck {
                capture: LockCapture::start(),
                pairs: LockMap::default(),
                shared_reads: records_shared_reads(header),
            }),
            calls: BTreeMap::new(),
            messages: 0,
            lock_events: 0,
        })
    }

    /// The scheduler, as replay feeds it.
    pub fn loaded(&self) -> &Loaded<S> {
        &self.loaded
    }

    /// A lock difference in a call (or, with no call on its CPU, at a
    /// record).
    fn lock_divergence(&self, at: Result<&Call, &Record>, what: String) -> Divergence {
        let (index, record, answer) = match at {
            Ok(c) => (c.index, c.record.record(), c.answer),
            Err(r) => (self.messages, r.clone(), Answer::of(&Msg::default())),
        };
        Divergence {
            index,
            context: self.context.newest(),
            record,
            expected: answer,
            actual: answer,
            locks: Some(what),
        }
    }

    /// Checks one recorded lock event against what the replayed call on its
    /// CPU did.
    fn check_lock(&mut self, r: &Record, recorded: LockEvent) -> Option<Divergence> {
        let check = self.locks.as_mut()?;
        let call = self.calls.get_mut(&r.cpu);
        let Some(got) = call.and_then(|c| c.locks.pop_front()) else {
            let what = format!(
                "the recording has a lock {} of {:#x} on CPU {} the replayed call did not do",
                lock_name(recorded.op),
                recorded.addr,
                r.cpu
            );
            return Some(self.lock_divergence(self.calls.get(&r.cpu).ok_or(r), what));
        };
        let mismatch = op_mismatch(got.op, got.addr, recorded, check.shared_reads)
            .or_else(|| check.pairs.check(recorded.addr, got.addr).err());
        mismatch.map(|m| self.lock_divergence(self.calls.get(&r.cpu).ok_or(r), m))
    }

    /// The last call on `cpu` must have had all its lock events matched.
    fn unmatched_locks(&self, cpu: u32) -> Option<Divergence> {
        let call = self.calls.get(&cpu)?;
        let first = call.locks.front()?;
        let what = format!(
            "the replayed call did a lock {} of {:#x} the recording does not have",
            lock_name(first.op),
            first.addr
        );
        Some(self.lock_divergence(Ok(call), what))
    }

    /// Replays one message; a different answer is returned.
    fn call(&mut self, r: &Record, m: &Msg) -> Option<Divergence> {
        if let Some(d) = self.unmatched_locks(r.cpu) {
            return Some(d);
        }
        let actual = apply(&self.loaded, m);
        let locks = self
            .locks
            .as_ref()
            .map(|l| l.capture.take().into())
            .unwrap_or_default();
        let expected = Answer::of(m);
        let index = self.messages;
        let call = Call {
            index,
            record: KeptMsg::new(r, m),
            answer: expected,
            locks,
        };
        self.calls.insert(r.cpu, call);
        self.messages += 1;
        (actual != expected).then(|| Divergence {
            index,
            record: r.clone(),
            expected,
            actual,
            locks: None,
            context: self.context.newest(),
        })
    }

    /// Events were lost before the next record: what the calls before did
    /// cannot be checked against the records after.
    pub fn events_lost(&mut self) {
        self.calls.values_mut().for_each(|c| c.locks.clear());
    }

    /// Replays one record (in sequence order); the first difference is
    /// returned.
    pub fn step(&mut self, r: &Record) -> Option<Divergence> {
        let found = match &r.event {
            Event::Msg(m) => self.call(r, m),
            Event::Gap { .. } => {
                self.events_lost();
                None
            }
            Event::LockAcquire { .. }
            | Event::LockAcquireShared { .. }
            | Event::LockRelease { .. }
            | Event::LockAccess { .. } => {
                self.lock_events += 1;
                LockEvent::of(r).find_map(|lock| self.check_lock(r, lock))
            }
            Event::Upgrade { .. } | Event::Exit { .. } => None,
        };
        self.context.push(r);
        found
    }

    /// After the last record: lock events of a last call not in the trace.
    pub fn finish(&mut self) -> Option<Divergence> {
        self.calls.keys().find_map(|cpu| self.unmatched_locks(*cpu))
    }
}

/// What is worth knowing before replaying `header`'s trace against `S`.
fn notices<S: EnokiScheduler>(header: &TraceHeader) -> Vec<String> {
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
    notices.extend(build_notice(header));
    if header.dropped_events > 0 {
        notices.push(format!(
            "the recorder dropped {} events: answers after a gap may differ",
            header.dropped_events
        ));
    }
    notices
}

/// Sequential replay of `records` against scheduler `S`, stopping at the
/// first divergence, the first gap, upgrade or exit record, or the
/// scheduler's failure.
pub fn replay<S: EnokiScheduler>(
    header: &TraceHeader,
    records: &mut dyn Iterator<Item = Result<Record, TraceError>>,
    opts: &ReplayOptions,
) -> Result<ReplayReport> {
    let mut notices = notices::<S>(header);
    let mut rp = Replayer::<S>::new(header, opts.context)?;
    let mut timeline = opts.timeline.then(TimelineBuilder::default);
    let mut divergence = None;
    let mut reader = InOrder::new(records, opts.stop_before);
    while let Some(next) = reader.next()? {
        if let Some(t) = timeline.as_mut() {
            t.add(&next.record);
        }
        // Replay ends where the scheduler failed (its report is the
        // result): later calls ran in the kernel partly before the failure
        // was marked, which replay cannot order.
        if rp.loaded.failed() && matches!(next.record.event, Event::Msg(_)) {
            break;
        }
        if let (true, Event::Msg(m)) = (next.stop, &next.record.event) {
            stopped_before(&next.record, &question(m));
        }
        divergence = rp.step(&next.record);
        if divergence.is_some() {
            break;
        }
    }
    if rp.loaded.failed() {
        reader.skip_to_end()?;
    }
    // Past a gap or a stop, the lock events of the calls running at it are
    // not read; an upgrade held every call off, so each had ended before it.
    if divergence.is_none() && reader.read_error.is_none() && !reader.cut() {
        divergence = rp.finish();
    }
    if reader.seq_gaps > 0 && header.dropped_events == 0 {
        notices.push(format!(
            "{} sequence numbers are missing between records",
            reader.seq_gaps
        ));
    }
    Ok(ReplayReport {
        scheduler: S::NAME.to_owned(),
        messages: rp.messages,
        lock_events: rp.lock_events,
        read_ahead: 0,
        divergence,
        notices,
        read_error: reader.read_error,
        seq_gaps: reader.seq_gaps,
        gap: reader.gap,
        upgrade: reader.upgrade,
        exit: reader.exit,
        stopped_at: reader.stopped_at,
        timeline: timeline.map(|t| t.finish()),
        fault: rp.loaded.fault(),
    })
}
