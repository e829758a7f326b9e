// SPDX-License-Identifier: MIT OR Apache-2.0
//! Lock-ordered replay: one fiber per recorded CPU, all on this thread
//! ([`enoki::user::fiber`]), every blocking lock acquisition held until it
//! is that CPU's turn in the lock's recorded acquisition order.
//!
//! A fiber runs its CPU's calls back to back until an acquisition is not
//! its turn yet; it then suspends and the driver resumes the next fiber
//! round the ring. Handing over costs a stack switch, not a thread
//! wake-up, and the order is the same on every run. When every fiber waits
//! for a turn that none of them can give, the replay stalled: reported at
//! once, with what each CPU waits for.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{bail, Result};
use rustc_hash::FxHashMap;

use enoki::abi::ret_err;
use enoki::dispatch::Loaded;
use enoki::user::fiber::{self, Fiber, Resumed};
use enoki::{EnokiScheduler, LockOp};

use super::window::{KeptMsg, Window};
use super::{
    apply, build_notice, checks_locks, load, lock_name, op_mismatch, question,
    records_shared_reads, stopped_before, Answer, Divergence, InOrder, LockEvent, LockMap,
    ReplayOptions, ReplayReport,
};
use crate::trace::{Event, Record, TraceError, TraceHeader};

/// One recorded lock event of a call, its lock numbered densely.
#[derive(Clone, Copy, Debug)]
struct Step {
    event: LockEvent,
    /// Index of the recorded lock in [`Gate::order`].
    lock: usize,
    /// Its record's seq.
    seq: u64,
}

/// One recorded call: its message record and the lock events that follow
/// it on its CPU.
struct ScriptCall {
    index: u64,
    record: Record,
    steps: Vec<Step>,
    /// The call may have run on past the end of what is replayed (the
    /// trace's first gap, or `--stop-before`): `steps` are only those
    /// recorded before it, and what it does after them is not checked.
    open: bool,
    /// The call the replay was asked to stop at ([`stopped_before`]).
    stop: bool,
}

/// How many messages and lock events the context window keeps for a
/// divergence report of `context` records: a divergence may be found
/// behind the read frontier, which runs ahead only as far as a waiting
/// fiber needs.
fn context_kept(context: usize) -> usize {
    const BEHIND: usize = 1 << 16;
    if context == 0 {
        0
    } else {
        BEHIND.max(context)
    }
}

/// The trace, read as the fibers need it: calls go to their CPU's queue,
/// acquisitions to their lock's turn order.
struct Reader<'a> {
    input: InOrder<'a>,
    /// Recorded lock address -> its index in [`Gate::order`].
    locks: FxHashMap<u64, usize>,
    messages: u64,
    lock_events: u64,
    window: Window,
    /// The trace predates shared acquisition records
    /// ([`records_shared_reads`]): an acquisition recorded while another
    /// CPU held the lock was a reader's, beside another reader.
    infer_reads: bool,
    /// Per recorded lock (as [`Gate::order`]), counted with `infer_reads`:
    /// acquisitions read and not yet released.
    holding: Vec<u32>,
}

/// Records read per refill: enough to amortise waking every fiber, few
/// enough to keep the read frontier close.
const REFILL: usize = 512;

impl<'a> Reader<'a> {
    fn new(
        records: &'a mut dyn Iterator<Item = Result<Record, TraceError>>,
        header: &TraceHeader,
        opts: &ReplayOptions,
    ) -> Self {
        Reader {
            input: InOrder::new(records, opts.stop_before),
            locks: FxHashMap::default(),
            messages: 0,
            lock_events: 0,
            window: Window::new(context_kept(opts.context)),
            infer_reads: !records_shared_reads(header),
            holding: Vec::new(),
        }
    }

    /// Reads up to [`REFILL`] records into `gate` (returns the CPUs seen
    /// for the first time); at the end, seals every CPU's last call.
    fn refill(&mut self, gate: &mut Gate) -> Result<Vec<u32>> {
        let mut new_cpus = Vec::new();
        for _ in 0..REFILL {
            let Some(next) = self.input.next()? else {
                self.finish(gate);
                break;
            };
            if let Some(cpu) = self.add(gate, next.record, next.stop)? {
                new_cpus.push(cpu);
            }
        }
        Ok(new_cpus)
    }

    fn finish(&mut self, gate: &mut Gate) {
        gate.input_done = true;
        let cut = self.input.cut();
        for c in &mut gate.cpus {
            if cut && c.unsealed {
                match c.queue.back_mut() {
                    Some(last) => last.open = true,
                    None => c.open = true,
                }
            }
            c.unsealed = false;
        }
    }

    /// Files `r`; returns its CPU if it is the first record of that CPU.
    fn add(&mut self, gate: &mut Gate, r: Record, stop: bool) -> Result<Option<u32>> {
        self.window.push(&r);
        let mut events = LockEvent::of(&r).peekable();
        if events.peek().is_none() {
            let (slot, new) = gate.slot_of(r.cpu);
            let cpu = r.cpu;
            let c = &mut gate.cpus[slot];
            c.queue.push_back(ScriptCall {
                index: self.messages,
                record: r,
                steps: gate.spare.pop().unwrap_or_default(),
                open: false,
                stop,
            });
            c.unsealed = true;
            self.messages += 1;
            return Ok(new.then_some(cpu));
        }
        self.lock_events += 1;
        let slot = gate.slot.get(&r.cpu).copied();
        // The CPU's newest call: queued, or begun (its fiber takes its
        // events as they are read, so a CPU that goes quiet after a call
        // does not make the reader read on to its next one).
        let steps = slot.and_then(|s| {
            let c = &mut gate.cpus[s];
            match c.queue.back_mut() {
                Some(call) => Some(&mut call.steps),
                None => c.unsealed.then_some(&mut c.steps),
            }
        });
        let Some(steps) = steps else {
            bail!(
                "lock event seq {} on CPU {} before any call on that CPU",
                r.seq,
                r.cpu
            );
        };
        for event in events {
            let (order, holding) = (&mut gate.order, &mut self.holding);
            let lock = *self.locks.entry(event.addr).or_insert_with(|| {
                order.push(VecDeque::new());
                gate.addrs.push(event.addr);
                gate.taken.push(0);
                holding.push(0);
                order.len() - 1
            });
            steps.push(Step {
                event,
                lock,
                seq: r.seq,
            });
            let overlaps = self.infer_reads && held_before(&mut self.holding, lock, event.op);
            if event.acquire() {
                if let Some(o) = gate.order.get_mut(lock) {
                    o.push_back(Turn {
                        cpu: r.cpu,
                        seq: r.seq,
                        shared: event.op == LockOp::AcquireShared || overlaps,
                    });
                }
                gate.pending += 1;
                gate.peak_pending = gate.peak_pending.max(gate.pending);
            }
        }
        Ok(None)
    }
}
/// Counts `op` in `holding[lock]` (acquisitions not released); returns
/// whether the lock was held before it.
fn held_before(holding: &mut [u32], lock: usize, op: LockOp) -> bool {
    let Some(n) = holding.get_mut(lock) else {
        return false;
    };
    let before = *n > 0;
    *n = match op {
        LockOp::Release => n.saturating_sub(1),
        LockOp::Acquire | LockOp::AcquireShared => n.saturating_add(1),
    };
    before
}

/// What a fiber waits for before its next acquisition.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Its turn at this recorded lock (index into [`Gate::order`]).
    Turn(usize),
    /// Another CPU to hold this replayed lock, as when the call failed in
    /// the recording, once every acquisition recorded before `until` (the
    /// seq of the call's next lock event, if it has one) is replayed: the
    /// holder is then the one the call found in the recording, not a CPU
    /// that held the lock for a moment before.
    HeldElsewhere { addr: u64, until: Option<u64> },
    /// Every recorded acquisition to be done (a call cut by the trace's
    /// end takes its locks after them, as in the recording).
    PastGap,
    /// More of the trace: its next call, or its current call's next lock
    /// event or end.
    Input,
}

/// A recorded acquisition of a lock: by which CPU, at which seq, and
/// whether to read (beside other readers).
#[derive(Clone, Copy, Debug)]
struct Turn {
    cpu: u32,
    seq: u64,
    shared: bool,
}

/// A replayed lock held now: its address, by which CPU, and whether to
/// read.
#[derive(Clone, Copy, Debug)]
struct Held {
    addr: u64,
    cpu: u32,
    shared: bool,
}

/// One recorded CPU's fiber, as the lock hooks see it.
struct CpuState {
    cpu: u32,
    /// Its calls read and not begun, oldest first.
    queue: VecDeque<ScriptCall>,
    /// More lock events of the newest call read (the last in `queue`, or
    /// the current call when `queue` is empty) may follow.
    unsealed: bool,
    /// Recorded lock events of the current call and how far they went.
    steps: Vec<Step>,
    pos: usize,
    /// The current call is [`ScriptCall::open`].
    open: bool,
    /// The current call failed in the recording: the acquisition that
    /// failed left no event.
    failing: bool,
    error: Option<String>,
    /// The seq of its current call.
    seq: u64,
    waits: Option<Wait>,
    /// Its current call: its index among the messages, and its record.
    call: Option<(u64, KeptMsg)>,
}

impl CpuState {
    /// More lock events of the current call may follow.
    fn current_unsealed(&self) -> bool {
        self.queue.is_empty() && self.unsealed
    }

    /// The current call's next recorded lock event is not read yet.
    fn awaits_input(&self) -> bool {
        self.pos >= self.steps.len() && self.current_unsealed()
    }
}

/// The replay's shared state: the fibers, the hooks and the driver all run
/// on one thread and reach it through [`GATE`], never across a suspend.
struct Gate {
    /// Per recorded lock: the acquisitions read and not replayed yet, in
    /// the recorded order.
    order: Vec<VecDeque<Turn>>,
    /// Recorded address of each lock in `order`.
    addrs: Vec<u64>,
    /// Per recorded lock: how many acquisitions have been replayed.
    taken: Vec<usize>,
    pairs: LockMap,
    /// Replayed locks held now.
    held: Vec<Held>,
    /// The trace tells reads apart ([`records_shared_reads`]).
    shared_reads: bool,
    /// Recorded acquisitions read and not replayed yet, all locks.
    pending: u64,
    /// The most `pending` has been.
    peak_pending: u64,
    /// The reader has read every record.
    input_done: bool,
    /// Acquisitions plus calls begun: the driver's measure of progress.
    moves: u64,
    failed: bool,
    /// The scheduler failed: the replay ends there (not a divergence).
    stopped: bool,
    /// The fiber running now (index into `cpus`).
    current: usize,
    cpus: Vec<CpuState>,
    /// Emptied step lists, reused for calls read later.
    spare: Vec<Vec<Step>>,
    /// Recorded CPU -> its index in `cpus` (and among the fibers).
    slot: FxHashMap<u32, usize>,
}

thread_local! {
    static GATE: RefCell<Option<Gate>> = const { RefCell::new(None) };
}

/// Runs `f` on the gate; `None` outside a lock-ordered replay.
fn with_gate<T>(f: impl FnOnce(&mut Gate) -> T) -> Option<T> {
    GATE.with(|g| g.borrow_mut().as_mut().map(f))
}

impl Gate {
    fn new(shared_reads: bool) -> Self {
        Gate {
            order: Vec::new(),
            addrs: Vec::new(),
            taken: Vec::new(),
            pairs: LockMap::default(),
            held: Vec::new(),
            shared_reads,
            pending: 0,
            peak_pending: 0,
            input_done: false,
            moves: 0,
            failed: false,
            stopped: false,
            current: 0,
            cpus: Vec::new(),
            spare: Vec::new(),
            slot: FxHashMap::default(),
        }
    }

    /// The slot of recorded CPU `cpu`, and whether it is new.
    fn slot_of(&mut self, cpu: u32) -> (usize, bool) {
        if let Some(&s) = self.slot.get(&cpu) {
            return (s, false);
        }
        self.cpus.push(CpuState {
            cpu,
            queue: VecDeque::new(),
            unsealed: false,
            steps: Vec::new(),
            pos: 0,
            open: false,
            failing: false,
            error: None,
            seq: 0,
            waits: None,
            call: None,
        });
        self.slot.insert(cpu, self.cpus.len() - 1);
        (self.cpus.len() - 1, true)
    }

    /// The current fiber's next call, once it is read (a failing call's
    /// replay depends on all its events: once it is read whole).
    fn next_call(&mut self) -> Result<ScriptCall, Wait> {
        let me = self.me();
        let partial = me.queue.len() == 1 && me.unsealed;
        match me.queue.front() {
            Some(call) if !(partial && failed_in_recording(&call.record)) => {
                me.queue.pop_front().ok_or(Wait::Input)
            }
            _ => Err(Wait::Input),
        }
    }

    fn me(&mut self) -> &mut CpuState {
        let i = self.current;
        &mut self.cpus[i]
    }

    fn fail(&mut self, error: String) {
        self.me().error = Some(error);
        self.failed = true;
    }

    /// Whether another fiber's failing call waits for replayed lock `addr`
    /// to be held, and would now go on.
    fn awaited_held(&self, addr: u64) -> bool {
        self.cpus.iter().enumerate().any(|(i, c)| {
            i != self.current
                && matches!(c.waits, Some(w @ Wait::HeldElsewhere { addr: a, .. })
                    if a == addr && self.ready_on(c.cpu, w))
        })
    }

    /// Whether every acquisition recorded before seq `until` is replayed.
    fn replayed_before(&self, until: u64) -> bool {
        self.order
            .iter()
            .all(|o| o.front().is_none_or(|t| t.seq > until))
    }

    /// Whether a CPU other than `cpu` holds replayed lock `addr`.
    fn held_elsewhere(&self, addr: u64, cpu: u32) -> bool {
        self.held.iter().any(|h| h.addr == addr && h.cpu != cpu)
    }

    /// Whether replayed lock `addr` is held in a way that keeps out an
    /// acquisition, `shared` (a reader, kept out by a writer only) or not.
    fn held_against(&self, addr: u64, shared: bool) -> bool {
        self.held
            .iter()
            .any(|h| h.addr == addr && !(shared && h.shared))
    }

    /// What the current fiber must wait for before acquiring replayed lock
    /// `addr`, if anything (a mismatch fails the replay and lets it go on).
    fn wait_for(&mut self, addr: u64) -> Option<Wait> {
        let me = &self.cpus[self.current];
        if me.error.is_some() || self.failed {
            return None;
        }
        if me.awaits_input() {
            return Some(Wait::Input);
        }
        let next = me.steps.get(me.pos).copied();
        if me.failing && !next.is_some_and(|s| s.event.acquire()) {
            let until = next.map(|s| s.seq);
            return Some(Wait::HeldElsewhere { addr, until });
        }
        match next {
            Some(s) if s.event.acquire() => Some(Wait::Turn(s.lock)),
            Some(s) => {
                let rec = s.event.addr;
                self.fail(format!(
                    "the replayed call takes a lock where the recording releases {rec:#x}"
                ));
                None
            }
            None if me.open => Some(Wait::PastGap),
            None => {
                self.fail("the replayed call takes a lock the recording does not have".into());
                None
            }
        }
    }

    /// Whether `wait` is over for the current fiber, about to take `addr`.
    fn ready(&self, wait: Wait, addr: u64) -> bool {
        let cpu = self.cpus[self.current].cpu;
        match wait {
            Wait::Turn(lock) => {
                let turn = self.order.get(lock).and_then(|o| o.front());
                turn.is_some_and(|t| t.cpu == cpu && !self.held_against(addr, t.shared))
            }
            Wait::Input => !self.cpus[self.current].awaits_input(),
            _ => self.ready_on(cpu, wait),
        }
    }

    /// Whether `wait` of recorded CPU `cpu` is over, for the waits that do
    /// not depend on the lock it is about to take.
    fn ready_on(&self, cpu: u32, wait: Wait) -> bool {
        match wait {
            Wait::HeldElsewhere { addr, until } => {
                self.held_elsewhere(addr, cpu) && until.is_none_or(|u| self.replayed_before(u))
            }
            Wait::PastGap => self.input_done && self.pending == 0,
            Wait::Turn(_) | Wait::Input => false,
        }
    }

    /// The replayed call did `replayed` at `addr`: it must be the next
    /// recorded event of the call.
    fn lock_event(&mut self, addr: u64, replayed: LockOp) {
        let me = &mut self.cpus[self.current];
        let cpu = me.cpu;
        let Some(step) = me.steps.get(me.pos).copied() else {
            if !me.open {
                self.fail(format!(
                    "the replayed call did a lock {} of {addr:#x} the recording does not have",
                    lock_name(replayed)
                ));
            }
            return;
        };
        me.pos += 1;
        if let Some(e) = op_mismatch(replayed, addr, step.event, self.shared_reads) {
            self.fail(e);
            return;
        }
        if let Err(e) = self.pairs.check(step.event.addr, addr) {
            self.fail(e);
            return;
        }
        if replayed.is_acquire() {
            let shared = replayed == LockOp::AcquireShared;
            self.held.push(Held { addr, cpu, shared });
            if let Some(o) = self.order.get_mut(step.lock) {
                o.pop_front();
            }
            if let Some(t) = self.taken.get_mut(step.lock) {
                *t += 1;
            }
            self.pending = self.pending.saturating_sub(1);
            self.moves += 1;
        } else {
            self.held.retain(|h| h.addr != addr || h.cpu != cpu);
        }
    }

    /// What went wrong with the locks of the current fiber's call that
    /// just ended.
    fn call_error(&mut self) -> Option<String> {
        let me = self.me();
        me.error.take().or_else(|| {
            let step = me.steps.get(me.pos)?;
            Some(format!(
                "the recording has a lock {} of {:#x} on CPU {} the replayed call did not do",
                lock_name(step.event.op),
                step.event.addr,
                me.cpu
            ))
        })
    }

    /// What every CPU is doing, for a stall report.
    fn waiters(&self) -> String {
        self.cpus
            .iter()
            .map(|c| {
                let (cpu, seq) = (c.cpu, c.seq);
                match c.waits {
                    None => format!("CPU {cpu} (call seq {seq}) runs or is done"),
                    Some(Wait::Turn(lock)) => {
                        let t = self.taken.get(lock).copied().unwrap_or(0);
                        let owner = self.order.get(lock).and_then(|o| o.front()).map(|t| t.cpu);
                        let addr = self.addrs.get(lock).copied().unwrap_or(0);
                        format!(
                            "CPU {cpu} (call seq {seq}) waits for {addr:#x} #{t} (CPU {owner:?})"
                        )
                    }
                    Some(Wait::HeldElsewhere { addr: a, .. }) => format!(
                        "CPU {cpu} (call seq {seq}) waits for another CPU to hold {a:#x}, as when this call failed in the recording"
                    ),
                    Some(Wait::PastGap) => format!(
                        "CPU {cpu} (call seq {seq}) waits for the recorded acquisitions to end ({} to go)",
                        self.pending
                    ),
                    Some(Wait::Input) => format!("CPU {cpu} (call seq {seq}) waits for more of the trace"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The lock waiter of the replay: suspends the fiber until its wait is
/// over.
fn gate_wait(addr: usize) {
    let addr = addr as u64;
    loop {
        let Some(Some(wait)) = with_gate(|g| g.wait_for(addr)) else {
            return;
        };
        loop {
            let go = with_gate(|g| {
                let over = g.failed || g.ready(wait, addr);
                g.me().waits = (!over).then_some(wait);
                over
            });
            if go != Some(false) {
                break;
            }
            fiber::suspend();
        }
        // The call's next event is read now: what it waits for is known.
        if !matches!(wait, Wait::Input) {
            return;
        }
    }
}

/// Suspends the current fiber while its call's next recorded lock event
/// is not read yet (at its end: while more may follow).
fn await_input() {
    loop {
        let waiting = with_gate(|g| {
            let w = !g.failed && g.me().awaits_input();
            g.me().waits = w.then_some(Wait::Input);
            w
        });
        if waiting != Some(true) {
            return;
        }
        fiber::suspend();
    }
}

/// The lock observer of the replay. A fiber that takes a lock another
/// fiber's failing call waits to see held ([`Wait::HeldElsewhere`]) lets
/// every other fiber run first: in the recording that call was already
/// spinning for it, so it enters the lock wait first and, in a cycle, is
/// the one that finds it (as it was there).
fn gate_event(addr: usize, op: LockOp) {
    await_input();
    let awaited = with_gate(|g| {
        if g.me().error.is_none() {
            g.lock_event(addr as u64, op);
        }
        op.is_acquire() && g.awaited_held(addr as u64)
    });
    if awaited == Some(true) {
        fiber::suspend();
    }
}

/// The body of a recorded CPU's fiber: its calls in order as they are
/// read; the first divergence (without context) is returned.
fn replay_cpu<S: EnokiScheduler>(loaded: Arc<Loaded<S>>) -> Option<Divergence> {
    loop {
        let next = with_gate(|g| {
            if g.failed {
                return None;
            }
            match g.next_call() {
                Ok(call) => {
                    g.me().waits = None;
                    Some(Some(call))
                }
                Err(_) if g.input_done => None,
                Err(wait) => {
                    g.me().waits = Some(wait);
                    Some(None)
                }
            }
        })
        .flatten();
        match next {
            None => return None,
            Some(None) => fiber::suspend(),
            Some(Some(call)) => {
                if let Some(d) = replay_call(call, &loaded)? {
                    return Some(d);
                }
            }
        }
    }
}

/// Whether `r` is a call the scheduler failed in (or after) in the
/// recording.
fn failed_in_recording(r: &Record) -> bool {
    matches!(&r.event, Event::Msg(m) if m.ret_err & ret_err::FAILED != 0)
}

/// Replays one call: `None` to stop (the replay failed elsewhere),
/// `Some(Some(d))` when this call diverged.
fn replay_call<S: EnokiScheduler>(
    mut call: ScriptCall,
    loaded: &Loaded<S>,
) -> Option<Option<Divergence>> {
    let Event::Msg(m) = &call.record.event else {
        unreachable!("a script call is a message")
    };
    let failing = failed_in_recording(&call.record);
    if failing && call.steps.is_empty() {
        // The scheduler had failed (on another CPU, maybe not replayed
        // yet) and was not called: every later call on this CPU is the
        // same, and the failure is replayed where it happened.
        return None;
    }
    let go_on = with_gate(|g| {
        if g.failed {
            return false;
        }
        g.moves += 1;
        let me = g.me();
        std::mem::swap(&mut me.steps, &mut call.steps);
        me.pos = 0;
        me.open = call.open;
        me.failing = failing;
        me.seq = call.record.seq;
        me.call = KeptMsg::of(&call.record).map(|k| (call.index, k));
        // The previous call's steps, kept for a call read later.
        call.steps.clear();
        g.spare.push(std::mem::take(&mut call.steps));
        true
    });
    if go_on != Some(true) {
        return None;
    }
    if call.stop {
        stopped_before(&call.record, &question(m));
    }
    let actual = apply(loaded, m);
    let expected = Answer::of(m);
    // Recorded events of the call may still be unread: one that is read
    // and not replayed is a divergence already.
    await_input();
    let lock_err = with_gate(|g| {
        if loaded.failed() {
            g.stopped = true;
            g.failed = true;
        }
        if g.stopped {
            return Err(());
        }
        let err = g.call_error();
        if err.is_none() && g.failed {
            // Another CPU diverged: this call may have run out of order.
            return Err(());
        }
        if actual != expected || err.is_some() {
            g.failed = true;
        }
        Ok(err)
    })?
    .ok()?;
    if actual != expected || lock_err.is_some() {
        return Some(Some(Divergence {
            index: call.index,
            record: call.record,
            expected,
            actual,
            locks: lock_err,
            context: Vec::new(),
        }));
    }
    Some(None)
}

/// Resumes the fibers round the ring, reading more of the trace whenever
/// none can go on, until all are done, the replay failed, or every fiber
/// waits for a turn none of them can give with the whole trace read (then
/// the first waiting CPU's call diverges with what each CPU waits for).
/// `spawn` makes the fiber of a CPU met for the first time.
fn drive(
    reader: &mut Reader<'_>,
    fibers: &mut Vec<Fiber<Option<Divergence>>>,
    spawn: impl Fn() -> std::io::Result<Fiber<Option<Divergence>>>,
) -> Result<Vec<Option<Divergence>>> {
    let mut found = Vec::new();
    let (mut live, mut idle, mut at) = (0usize, 0usize, 0usize);
    loop {
        if live == 0 || idle >= live {
            if with_gate(|g| g.input_done) != Some(false) {
                if live > 0 {
                    found.push(stall());
                }
                return Ok(found);
            }
            let new = with_gate(|g| reader.refill(g)).unwrap_or_else(|| Ok(Vec::new()))?;
            for _ in new {
                fibers.push(spawn()?);
                live += 1;
            }
            idle = 0;
            continue;
        }
        let slot = at;
        at = (at + 1) % fibers.len();
        let Some(f) = fibers.get_mut(slot).filter(|f| !f.done()) else {
            continue;
        };
        let Some((false, moves)) = with_gate(|g| {
            g.current = slot;
            (g.failed, g.moves)
        }) else {
            return Ok(found);
        };
        match f.resume() {
            Resumed::Finished(d) => {
                found.push(d);
                live -= 1;
                idle = 0;
            }
            Resumed::Suspended => {
                let waiting = with_gate(|g| g.moves == moves && g.me().waits.is_some());
                idle = if waiting == Some(true) { idle + 1 } else { 0 };
            }
        }
    }
}

/// The divergence a stalled replay ends with: the call of the first
/// waiting CPU, with what every CPU waits for.
fn stall() -> Option<Divergence> {
    with_gate(|g| {
        g.failed = true;
        let report = g.waiters();
        let (index, kept) = g.cpus.iter().find(|c| c.waits.is_some())?.call?;
        let expected = Answer::of(kept.msg());
        let record = kept.record();
        Some(Divergence {
            index,
            record,
            expected,
            actual: expected,
            locks: Some(format!(
                "no CPU can take its next lock in the recorded order: {report}"
            )),
            context: Vec::new(),
        })
    })
    .flatten()
}

/// The replay's gate and lock hooks on this thread, until dropped (also
/// when a fiber's panic passes through).
struct Installed;

impl Installed {
    fn new(gate: Gate) -> Self {
        GATE.with(|g| *g.borrow_mut() = Some(gate));
        enoki::user::set_lock_waiter(Some(gate_wait));
        enoki::user::set_lock_observer(Some(gate_event));
        Installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        enoki::user::set_lock_waiter(None);
        enoki::user::set_lock_observer(None);
        GATE.with(|g| *g.borrow_mut() = None);
    }
}

/// Lock-ordered replay of `records` (in sequence order) against `S`: one
/// fiber per recorded CPU replays that CPU's calls in order, and every
/// blocking lock acquisition waits until it is that CPU's turn in the
/// recorded acquisition order of that lock. Calls that overlapped on
/// different CPUs in the kernel then see the scheduler state they saw
/// there. Needs a trace with lock events of this scheduler; it stops at
/// the first gap record ([`ReplayReport::gap`]), upgrade
/// ([`ReplayReport::upgrade`]) or exit ([`ReplayReport::exit`]).
pub fn replay_by_locks<S: EnokiScheduler + 'static>(
    header: &TraceHeader,
    records: &mut dyn Iterator<Item = Result<Record, TraceError>>,
    opts: &ReplayOptions,
) -> Result<ReplayReport> {
    if !checks_locks::<S>(header) {
        bail!(
            "lock-ordered replay needs a trace with lock events of {} (recorded: {:?})",
            S::NAME,
            header.scheduler
        );
    }
    let notices: Vec<String> = build_notice(header).into_iter().collect();
    let mut reader = Reader::new(records, header, opts);
    let loaded = Arc::new(load::<S>(header)?);
    let spawn = || {
        let loaded = loaded.clone();
        Fiber::new(move || replay_cpu(loaded))
    };
    let (found, read_ahead) = {
        let _hooks = Installed::new(Gate::new(records_shared_reads(header)));
        let mut fibers = Vec::new();
        let found = drive(&mut reader, &mut fibers, spawn);
        // Fibers still suspended unwind here, hooks still on.
        drop(fibers);
        (found?, with_gate(|g| g.peak_pending).unwrap_or(0))
    };
    if loaded.failed() {
        reader.input.skip_to_end()?;
    }
    let divergence = found
        .into_iter()
        .flatten()
        .min_by_key(|d| d.record.seq)
        .map(|d| Divergence {
            context: reader.window.before(&d.record, opts.context),
            ..d
        });
    Ok(ReplayReport {
        scheduler: S::NAME.to_owned(),
        messages: reader.messages,
        lock_events: reader.lock_events,
        read_ahead,
        divergence,
        notices,
        read_error: reader.input.read_error,
        seq_gaps: reader.input.seq_gaps,
        gap: reader.input.gap,
        upgrade: reader.input.upgrade,
        exit: reader.input.exit,
        stopped_at: reader.input.stopped_at,
        timeline: None,
        fault: loaded.fault(),
    })
}
