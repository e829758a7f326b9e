// SPDX-License-Identifier: MIT OR Apache-2.0
//! Lock-ordered replay: one thread per recorded CPU, every blocking lock
//! acquisition held until it is that CPU's turn in the lock's recorded
//! acquisition order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use enoki::abi::ret_err;
use enoki::dispatch::Loaded;
use enoki::EnokiScheduler;

use super::{
    apply, build_notice, checks_locks, load, lock_name, question, stopped_before, Answer,
    Divergence, InOrder, LockEvent, LockMap, ReplayOptions, ReplayReport, TraceGap, TraceUpgrade,
};
use crate::trace::{Event, Record, TraceError, TraceHeader};

/// How long a thread waits for its turn at a lock before the replay gives up.
const TURN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting thread looks whether the replay still moves.
const TURN_POLL: Duration = Duration::from_millis(100);

/// One recorded call: its message record and the lock events that follow
/// it on its CPU.
struct ScriptCall {
    index: u64,
    record: Record,
    locks: Vec<LockEvent>,
    /// The call may have run on past the trace's first gap: `locks` are
    /// only those recorded before it, and what it does after them is not
    /// checked.
    open: bool,
    /// The call the replay was asked to stop at ([`stopped_before`]).
    stop: bool,
}

/// A trace, read and sorted for lock-ordered replay.
struct Script {
    /// Per recorded CPU: its calls, in order.
    calls: BTreeMap<u32, Vec<ScriptCall>>,
    /// Per recorded lock: the CPUs in the order they acquired it.
    order: BTreeMap<u64, Vec<u32>>,
    messages: u64,
    lock_events: u64,
    /// Every record, when a divergence report needs context.
    records: Vec<Record>,
    read_error: Option<TraceError>,
    /// The first gap record: the script ends there.
    gap: Option<TraceGap>,
    /// The first upgrade, where the script ends too (every call had ended).
    upgrade: Option<TraceUpgrade>,
    /// The message the script was asked to end at (its last call).
    stopped_at: Option<u64>,
}

impl Script {
    /// Reads `records` up to the first gap or upgrade record; sequence numbers missing
    /// before it (events lost without a gap record) cannot be replayed by
    /// locks.
    fn read(
        records: &mut dyn Iterator<Item = Result<Record, TraceError>>,
        keep_records: bool,
        stop_before: Option<u64>,
    ) -> Result<Self> {
        let mut script = Script {
            calls: BTreeMap::new(),
            order: BTreeMap::new(),
            messages: 0,
            lock_events: 0,
            records: Vec::new(),
            read_error: None,
            gap: None,
            upgrade: None,
            stopped_at: None,
        };
        let mut reader = InOrder::new(records, stop_before);
        while let Some(next) = reader.next()? {
            script.add(next.record, next.stop)?;
            if keep_records {
                script.records.push(next.record);
            }
        }
        if reader.seq_gaps > 0 {
            bail!(
                "{} sequence numbers are missing (dropped events): lock-ordered replay needs a whole trace",
                reader.seq_gaps
            );
        }
        if reader.cut() {
            for call in script.calls.values_mut().filter_map(|c| c.last_mut()) {
                call.open = true;
            }
        }
        script.read_error = reader.read_error;
        script.gap = reader.gap;
        script.upgrade = reader.upgrade;
        script.stopped_at = reader.stopped_at;
        Ok(script)
    }

    fn add(&mut self, r: Record, stop: bool) -> Result<()> {
        let Some(lock) = LockEvent::of(&r) else {
            self.calls.entry(r.cpu).or_default().push(ScriptCall {
                index: self.messages,
                record: r,
                locks: Vec::new(),
                open: false,
                stop,
            });
            self.messages += 1;
            return Ok(());
        };
        self.lock_events += 1;
        let Some(call) = self.calls.get_mut(&r.cpu).and_then(|v| v.last_mut()) else {
            bail!(
                "lock event seq {} on CPU {} before any call on that CPU",
                r.seq,
                r.cpu
            );
        };
        call.locks.push(lock);
        if lock.acquire {
            self.order.entry(lock.addr).or_default().push(r.cpu);
        }
        Ok(())
    }

    /// The `keep` records before `record`.
    fn context(&self, record: &Record, keep: usize) -> Vec<Record> {
        let at = self.records.partition_point(|x| x.seq < record.seq);
        self.records[at.saturating_sub(keep)..at].to_vec()
    }
}

/// Acquisitions so far, under the gate's mutex.
#[derive(Default)]
struct Turns {
    /// Per recorded lock: how many acquisitions have happened.
    taken: BTreeMap<u64, usize>,
    pairs: LockMap,
    /// Per replayed lock: the CPU holding it now.
    held_by: BTreeMap<u64, u32>,
}

impl Turns {
    fn taken(&self, lock: u64) -> usize {
        self.taken.get(&lock).copied().unwrap_or(0)
    }
}

/// Per CPU slot, for the stall report.
#[derive(Default)]
struct Waiting {
    /// The recorded lock it waits for its turn at (0: none).
    lock: AtomicU64,
    /// The seq of its current call.
    seq: AtomicU64,
}

struct Gate {
    /// Per recorded lock: the CPUs in the order they acquired it.
    order: BTreeMap<u64, Vec<u32>>,
    turns: Mutex<Turns>,
    /// One per CPU slot, notified when a lock's turn may be that CPU's.
    conds: Vec<Condvar>,
    slot: BTreeMap<u32, usize>,
    failed: AtomicBool,
    /// The scheduler failed: the replay ends there (not a divergence).
    stopped: AtomicBool,
    waiting: Vec<Waiting>,
    /// Recorded acquisitions so far, all locks: a waiter gives up only
    /// when this stops moving (slow machines and debug builds make turns
    /// slow).
    progress: AtomicU64,
    /// Recorded acquisitions in all.
    recorded: u64,
}

impl Gate {
    fn new(order: BTreeMap<u64, Vec<u32>>, cpus: impl Iterator<Item = u32>) -> Self {
        let slot: BTreeMap<u32, usize> = cpus.enumerate().map(|(i, c)| (c, i)).collect();
        let recorded = order.values().map(|o| o.len() as u64).sum();
        Gate {
            recorded,
            order,
            turns: Mutex::new(Turns::default()),
            conds: (0..slot.len()).map(|_| Condvar::new()).collect(),
            waiting: (0..slot.len()).map(|_| Waiting::default()).collect(),
            progress: AtomicU64::new(0),
            slot,
            failed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What every CPU is doing, for a stall report.
    fn waiters(&self) -> String {
        let turns = self.turns();
        self.slot
            .iter()
            .map(|(cpu, i)| {
                let lock = self.waiting[*i].lock.load(Ordering::Relaxed);
                let seq = self.waiting[*i].seq.load(Ordering::Relaxed);
                if lock == 0 {
                    format!("CPU {cpu} (call seq {seq}) runs")
                } else {
                    let t = turns.taken(lock);
                    format!(
                        "CPU {cpu} (call seq {seq}) waits for {lock:#x} #{t} (CPU {:?})",
                        self.order[&lock].get(t)
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        let _g = self.turns();
        self.conds.iter().for_each(|c| c.notify_all());
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Ends the replay at the scheduler's failure.
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.fail();
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Counts an acquisition of recorded lock `lock` and wakes the CPU
    /// whose turn at it is next, or everyone after the last one (calls
    /// waiting to acquire past a gap).
    fn acquired(&self, turns: &mut Turns, lock: u64) {
        let done = self.progress.fetch_add(1, Ordering::Relaxed) + 1;
        let t = turns.taken.entry(lock).or_insert(0);
        *t += 1;
        if done == self.recorded {
            self.conds.iter().for_each(|c| c.notify_all());
        } else if let Some(next) = self.order[&lock].get(*t) {
            self.conds[self.slot[next]].notify_all();
        }
    }
}

/// What the replay thread of one CPU is doing, for the lock hooks.
struct ThreadCtx {
    gate: Arc<Gate>,
    cpu: u32,
    /// Recorded lock events of the current call and how far they went.
    locks: Vec<LockEvent>,
    pos: usize,
    /// The current call is [`ScriptCall::open`].
    open: bool,
    /// The current call failed in the recording: the acquisition that
    /// failed left no event.
    failing: bool,
    error: Option<String>,
}

impl ThreadCtx {
    fn fail(&mut self, error: String) {
        self.error = Some(error);
        self.gate.fail();
    }

    /// Waits until it is this CPU's turn at recorded lock `rec`, or the
    /// replay failed, or nothing moved for [`TURN_TIMEOUT`].
    fn wait_turn(&mut self, rec: u64) {
        let (gate, cpu) = (self.gate.clone(), self.cpu);
        let order = &gate.order[&rec];
        self.wait_until(
            rec,
            |turns| order.get(turns.taken(rec)) == Some(&cpu),
            |turns| {
                let t = turns.taken(rec);
                format!(
                    "lock {rec:#x}: acquisition #{t} belongs to CPU {:?}",
                    order.get(t)
                )
            },
        );
    }

    /// The acquisition of replayed lock `addr` that failed in the
    /// recording (a deadlock) is tried once another CPU holds the lock, as
    /// it was there, so that replay runs into the same deadlock.
    fn wait_held_elsewhere(&mut self, addr: usize) {
        let cpu = self.cpu;
        let held = |turns: &Turns| {
            turns
                .held_by
                .get(&(addr as u64))
                .is_some_and(|holder| *holder != cpu)
        };
        self.wait_until(0, held, |_| {
            format!("another CPU to hold {addr:#x}, as when this call failed in the recording")
        });
    }

    /// An open call past its recorded lock events acquires after the gap,
    /// so after every recorded acquisition, as in the recording.
    fn wait_past_gap(&mut self) {
        let gate = self.gate.clone();
        let done = || gate.progress.load(Ordering::Relaxed);
        self.wait_until(
            0,
            |_| done() >= gate.recorded,
            |_| {
                format!(
                    "the recorded acquisitions to end ({} of {} done)",
                    done(),
                    gate.recorded
                )
            },
        );
    }

    /// Waits until `ready` holds, or the replay failed, or nothing moved
    /// for [`TURN_TIMEOUT`] (then fails with what it waited for, from
    /// `stalled`). `rec` is the recorded lock waited for, 0 for none.
    fn wait_until(
        &mut self,
        rec: u64,
        ready: impl Fn(&Turns) -> bool,
        stalled: impl Fn(&Turns) -> String,
    ) {
        let gate = self.gate.clone();
        let slot = gate.slot[&self.cpu];
        let mut turns = gate.turns();
        let mut start = Instant::now();
        let mut seen = gate.progress.load(Ordering::Relaxed);
        gate.waiting[slot].lock.store(rec, Ordering::Relaxed);
        loop {
            if ready(&turns) || gate.failed() {
                gate.waiting[slot].lock.store(0, Ordering::Relaxed);
                return;
            }
            let now = gate.progress.load(Ordering::Relaxed);
            if now != seen {
                (seen, start) = (now, Instant::now());
            }
            if start.elapsed() > TURN_TIMEOUT {
                let what = stalled(&turns);
                drop(turns);
                self.fail(format!(
                    "no lock taken for {}s while waiting for {what}; {}",
                    TURN_TIMEOUT.as_secs(),
                    gate.waiters()
                ));
                return;
            }
            turns = gate.conds[slot]
                .wait_timeout(turns, TURN_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The replayed call did `got` at `addr`: it must be the next recorded
    /// event of the call.
    fn lock_event(&mut self, addr: usize, acquire: bool) {
        let Some(&rec) = self.locks.get(self.pos) else {
            if self.open {
                return;
            }
            self.fail(format!(
                "the replayed call did a lock {} of {addr:#x} the recording does not have",
                lock_name(acquire)
            ));
            return;
        };
        self.pos += 1;
        if rec.acquire != acquire {
            self.fail(format!(
                "lock {} of {addr:#x} where the recording has a {} of {:#x}",
                lock_name(acquire),
                lock_name(rec.acquire),
                rec.addr
            ));
            return;
        }
        let gate = self.gate.clone();
        let mut turns = gate.turns();
        if let Err(e) = turns.pairs.check(rec.addr, addr as u64) {
            drop(turns);
            self.fail(e);
            return;
        }
        if acquire {
            turns.held_by.insert(addr as u64, self.cpu);
            gate.acquired(&mut turns, rec.addr);
        } else {
            turns.held_by.remove(&(addr as u64));
        }
    }

    /// What went wrong with the locks of the call that just ended.
    fn call_error(&mut self) -> Option<String> {
        self.error.take().or_else(|| {
            let rec = self.locks.get(self.pos)?;
            Some(format!(
                "the recording has a lock {} of {:#x} on CPU {} the replayed call did not do",
                lock_name(rec.acquire),
                rec.addr,
                self.cpu
            ))
        })
    }
}

thread_local! {
    static CTX: RefCell<Option<ThreadCtx>> = const { RefCell::new(None) };
}

fn with_ctx<T>(f: impl FnOnce(&mut ThreadCtx) -> T) -> Option<T> {
    CTX.with(|c| c.borrow_mut().as_mut().map(f))
}

/// The lock waiter of a replay thread.
fn gate_wait(addr: usize) {
    with_ctx(|ctx| {
        if ctx.error.is_some() || ctx.gate.failed() {
            return;
        }
        let next = ctx.locks.get(ctx.pos).copied();
        if ctx.failing && !next.is_some_and(|e| e.acquire) {
            ctx.wait_held_elsewhere(addr);
            return;
        }
        match next {
            Some(LockEvent {
                addr,
                acquire: true,
            }) => ctx.wait_turn(addr),
            Some(LockEvent { addr, .. }) => ctx.fail(format!(
                "the replayed call takes a lock where the recording releases {addr:#x}"
            )),
            None if ctx.open => ctx.wait_past_gap(),
            None => {
                ctx.fail("the replayed call takes a lock the recording does not have".to_string())
            }
        }
    });
}

/// The lock observer of a replay thread.
fn gate_event(addr: usize, acquire: bool) {
    with_ctx(|ctx| {
        if ctx.error.is_none() {
            ctx.lock_event(addr, acquire);
        }
    });
}

/// Replays `calls`, the calls of recorded CPU `cpu`, on this thread; the
/// first divergence (without context) is returned.
fn replay_cpu<S: EnokiScheduler>(
    gate: &Arc<Gate>,
    cpu: u32,
    calls: &[ScriptCall],
    loaded: &Loaded<S>,
) -> Option<Divergence> {
    CTX.with(|c| {
        *c.borrow_mut() = Some(ThreadCtx {
            gate: gate.clone(),
            cpu,
            locks: Vec::new(),
            pos: 0,
            open: false,
            failing: false,
            error: None,
        })
    });
    enoki::user::set_lock_waiter(Some(gate_wait));
    enoki::user::set_lock_observer(Some(gate_event));
    let found = calls
        .iter()
        .map_while(|call| replay_call(gate, cpu, call, loaded))
        .find_map(|d| d);
    enoki::user::set_lock_waiter(None);
    enoki::user::set_lock_observer(None);
    CTX.with(|c| *c.borrow_mut() = None);
    found
}

/// Replays one call: `None` to stop (the replay failed elsewhere),
/// `Some(Some(d))` when this call diverged.
fn replay_call<S: EnokiScheduler>(
    gate: &Gate,
    cpu: u32,
    call: &ScriptCall,
    loaded: &Loaded<S>,
) -> Option<Option<Divergence>> {
    if gate.failed() {
        return None;
    }
    let Event::Msg(m) = &call.record.event else {
        unreachable!("a script call is a message")
    };
    if m.ret_err & ret_err::FAILED != 0 && call.locks.is_empty() {
        // The scheduler had failed (on another CPU, maybe not replayed
        // yet) and was not called: every later call on this CPU is the
        // same, and the failure is replayed where it happened.
        return None;
    }
    with_ctx(|ctx| {
        ctx.locks.clone_from(&call.locks);
        ctx.pos = 0;
        ctx.open = call.open;
        ctx.failing = m.ret_err & ret_err::FAILED != 0;
    });
    gate.waiting[gate.slot[&cpu]]
        .seq
        .store(call.record.seq, Ordering::Relaxed);
    if call.stop {
        stopped_before(&call.record, &question(m));
    }
    let actual = apply(loaded, m);
    if loaded.failed() {
        gate.stop();
    }
    if gate.stopped() {
        return None;
    }
    let expected = Answer::of(m);
    let lock_err = with_ctx(ThreadCtx::call_error).flatten();
    if lock_err.is_none() && gate.failed() {
        // Another CPU diverged: this call may have run out of order.
        return None;
    }
    if actual != expected || lock_err.is_some() {
        gate.fail();
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

/// Lock-ordered replay of `records` (in sequence order) against `S`: one
/// thread per recorded CPU replays that CPU's calls in order, and every
/// blocking lock acquisition waits until it is that CPU's turn in the
/// recorded acquisition order of that lock. Calls that overlapped on
/// different CPUs in the kernel then see the scheduler state they saw
/// there. Needs a trace with lock events of this scheduler; it stops at
/// the first gap record ([`ReplayReport::gap`]) or upgrade
/// ([`ReplayReport::upgrade`]).
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
    let notices: Vec<String> = build_notice(header).into_iter().collect();
    let mut script = Script::read(records, opts.context > 0, opts.stop_before)?;
    let loaded = load::<S>(header)?;
    let order = std::mem::take(&mut script.order);
    let gate = Arc::new(Gate::new(order, script.calls.keys().copied()));
    let found: Vec<Option<Divergence>> = std::thread::scope(|s| {
        let handles: Vec<_> = script
            .calls
            .iter()
            .map(|(cpu, calls)| {
                let (gate, loaded) = (&gate, &loaded);
                s.spawn(move || replay_cpu(gate, *cpu, calls, loaded))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replay thread panicked"))
            .collect()
    });
    let divergence = found
        .into_iter()
        .flatten()
        .min_by_key(|d| d.record.seq)
        .map(|d| Divergence {
            context: script.context(&d.record, opts.context),
            ..d
        });
    Ok(ReplayReport {
        scheduler: S::NAME.to_owned(),
        messages: script.messages,
        lock_events: script.lock_events,
        divergence,
        notices,
        read_error: script.read_error,
        seq_gaps: 0,
        gap: script.gap,
        upgrade: script.upgrade,
        stopped_at: script.stopped_at,
        timeline: None,
        fault: loaded.fault(),
    })
}
