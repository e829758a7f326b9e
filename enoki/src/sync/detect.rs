// SPDX-License-Identifier: GPL-2.0
//! Deadlock detection for libEnoki's locks, in the spirit of the kernel's
//! resilient queued spin lock (rqspinlock):
//!
//! - each CPU (user backend: each thread) publishes the locks it holds and
//!   the one it waits for, with the source lines, in a table of contexts;
//! - taking a lock this CPU already holds (AA) fails at once;
//! - a waiter looks for a cycle of CPUs each waiting for a lock the next
//!   holds (ABBA and longer) every [`SPINS`] spins, and fails when it finds
//!   the same cycle twice in a row (the table is read without locks, so a
//!   cycle seen once could be a mix of old and new entries; a deadlock
//!   does not change);
//! - any wait is bounded by the lock timeout, and so is a call that keeps
//!   taking locks (from its [`BUDGET_EVERY`]th acquisition on).
//!
//! A failed acquisition never takes the lock: it leaves a [`Fault`] for
//! the call (see [`take_fault`]) and returns [`Failed`].

use core::panic::Location;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::super::backend;
use super::super::fault::{Failed, Fault, FaultKind, Party, Site, MAX_PARTIES};

/// Locks one context tracks by name; deeper nesting is counted only (the
/// timeout still bounds it).
const MAX_HELD: usize = 8;
/// Spins between two looks at the table and the clock.
const SPINS: u32 = 1 << 10;
/// Acquisitions between two looks at the call's running time.
const BUDGET_EVERY: u32 = 1 << 8;
/// Contexts: CPUs in the kernel, threads in the user backend.
pub const MAX_CONTEXTS: usize = super::super::abi::MAX_CPUS;

/// Default lock timeout, and call budget: far below sched_ext's watchdog
/// and the lockup detectors, far above any legitimate wait (see the
/// backends: host threads can be descheduled while they hold a lock).
pub const DEFAULT_TIMEOUT_NS: u64 = backend::DEFAULT_LOCK_TIMEOUT_NS;

static TIMEOUT_NS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT_NS);
/// One past the highest context index ever used: how far scans go.
static USED: AtomicUsize = AtomicUsize::new(0);

/// Sets the lock timeout and call budget (the module's `lock_timeout_ms`).
pub fn set_timeout_ns(ns: u64) {
    TIMEOUT_NS.store(ns.max(1), Relaxed);
}

fn timeout_ns() -> u64 {
    TIMEOUT_NS.load(Relaxed)
}

fn site_ptr(site: Site) -> *mut Location<'static> {
    site as *const Location<'static> as *mut Location<'static>
}

fn load_site(p: &AtomicPtr<Location<'static>>) -> Option<Site> {
    // SAFETY: these cells only ever hold null or a `&'static Location`.
    unsafe { p.load(Relaxed).as_ref() }
}

/// A lock a context holds.
struct Held {
    /// Its address; 0: the slot is free.
    lock: AtomicUsize,
    at: AtomicPtr<Location<'static>>,
}

/// One CPU's (thread's) locks. Written only by its owner, read by anyone
/// looking for a cycle.
struct Context {
    /// The CPU named in reports (user backend: the CPU of the current call).
    cpu: AtomicU32,
    /// The lock it waits for; 0: none.
    awaiting: AtomicUsize,
    awaiting_at: AtomicPtr<Location<'static>>,
    /// Locks held, tracked or not.
    depth: AtomicUsize,
    held: [Held; MAX_HELD],
    /// When the current call's budget began (ns): its first budget check;
    /// 0 before that and outside calls.
    call_start: AtomicU64,
    acquisitions: AtomicU32,
}

impl Context {
    const fn new() -> Self {
        Context {
            cpu: AtomicU32::new(0),
            awaiting: AtomicUsize::new(0),
            awaiting_at: AtomicPtr::new(core::ptr::null_mut()),
            depth: AtomicUsize::new(0),
            held: [const {
                Held {
                    lock: AtomicUsize::new(0),
                    at: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; MAX_HELD],
            call_start: AtomicU64::new(0),
            acquisitions: AtomicU32::new(0),
        }
    }

    fn holds(&self, lock: usize) -> Option<&Held> {
        self.held.iter().find(|h| h.lock.load(Relaxed) == lock)
    }

    fn cpu(&self) -> u32 {
        self.cpu.load(Relaxed)
    }

    fn stop_waiting(&self) {
        self.awaiting.store(0, Relaxed);
    }
}

static CONTEXTS: [Context; MAX_CONTEXTS] = [const { Context::new() }; MAX_CONTEXTS];

fn context(i: usize) -> Option<&'static Context> {
    CONTEXTS.get(i)
}

/// This CPU's (thread's) context, if it has one.
fn current() -> Option<(usize, &'static Context)> {
    let i = backend::context()?;
    let c = context(i)?;
    if USED.load(Relaxed) <= i {
        USED.fetch_max(i + 1, Relaxed);
    }
    Some((i, c))
}

fn used() -> impl Iterator<Item = (usize, &'static Context)> {
    CONTEXTS.iter().enumerate().take(USED.load(Relaxed))
}

/// The first context other than `except` that holds `lock`, and where it
/// took it.
fn holder_of(lock: usize, except: usize) -> Option<(usize, Option<Site>)> {
    used()
        .filter(|(i, _)| *i != except)
        .find_map(|(i, c)| Some((i, load_site(&c.holds(lock)?.at))))
}

fn fail(fault: Fault) -> Failed {
    backend::raise_fault(fault);
    Failed::new()
}

fn party(c: &Context, lock: usize, at: Option<Site>) -> Party {
    Party {
        cpu: c.cpu(),
        lock,
        at,
        holder: None,
        held_since: None,
    }
}

/// Checks before an acquisition of `lock` at `at`: AA, and the call's
/// budget; then publishes that this context waits for `lock` until
/// [`acquired`] or [`wait`] returns. Returns the context to pass to them.
pub(super) fn before(lock: usize, at: Site) -> Result<Option<usize>, Failed> {
    let Some((i, c)) = current() else {
        return Ok(None);
    };
    // Most acquisitions are a call's first: nothing held, nothing to scan.
    let held = (c.depth.load(Relaxed) != 0)
        .then(|| c.holds(lock))
        .flatten();
    if let Some(h) = held {
        let mut p = party(c, lock, Some(at));
        p.holder = Some(c.cpu());
        p.held_since = load_site(&h.at);
        return Err(fail(Fault::new(FaultKind::SelfDeadlock, p)));
    }
    let n = c.acquisitions.load(Relaxed).wrapping_add(1);
    c.acquisitions.store(n, Relaxed);
    if n % BUDGET_EVERY == 0 {
        check_budget(c, at)?;
    }
    // Published before any wait, including lock-ordered replay's wait for
    // its turn: a thread held there is part of a cycle like any waiter
    // (its turn follows the recording, so such a cycle deadlocked there).
    c.awaiting_at.store(site_ptr(at), Relaxed);
    c.awaiting.store(lock, Relaxed);
    Ok(Some(i))
}

/// The call's budget runs from its first look here, not from its start:
/// most calls never take [`BUDGET_EVERY`] locks, and they then pay no
/// clock read.
fn check_budget(c: &Context, at: Site) -> Result<(), Failed> {
    let start = c.call_start.load(Relaxed);
    let now = backend::now_ns();
    if start == 0 {
        c.call_start.store(now.max(1), Relaxed);
        return Ok(());
    }
    let ran = now.saturating_sub(start);
    if ran > timeout_ns() {
        let mut f = Fault::new(FaultKind::OverBudget, party(c, 0, Some(at)));
        f.waited_ns = ran;
        return Err(fail(f));
    }
    Ok(())
}

/// A scheduler asked for the run queue of `cpu`, which does not exist.
/// (The party's `lock` is that CPU's number.)
pub(in super::super) fn no_such_cpu(cpu: usize, at: Site) -> Failed {
    let me = current().map_or(u32::MAX, |(_, c)| c.cpu());
    let p = Party {
        cpu: me,
        lock: cpu,
        at: Some(at),
        holder: None,
        held_since: None,
    };
    fail(Fault::new(FaultKind::NoSuchCpu, p))
}

/// Spins until `try_take` succeeds, or fails on a cycle or the timeout.
/// The context stays published as waiting for `lock` until [`acquired`].
pub(super) fn wait(
    ctx: Option<usize>,
    lock: usize,
    at: Site,
    mut try_take: impl FnMut() -> bool,
) -> Result<(), Failed> {
    let me = ctx.and_then(|i| Some((i, context(i)?)));
    let start = backend::now_ns();
    let mut suspect = None;
    let result = loop {
        if (0..SPINS).any(|_| {
            core::hint::spin_loop();
            try_take()
        }) {
            break Ok(());
        }
        backend::lock_spin();
        let waited = backend::now_ns().saturating_sub(start);
        if let Some((i, _)) = me {
            let cycle = find_cycle(i, lock);
            if cycle.is_some() && cycle == suspect {
                break Err((FaultKind::Cycle, cycle, waited));
            }
            suspect = cycle;
        }
        if waited >= timeout_ns() {
            break Err((FaultKind::Timeout, None, waited));
        }
    };
    let (kind, cycle, waited) = match result {
        // Still waiting, as far as others can tell, until `acquired`.
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if let Some((_, c)) = me {
        c.stop_waiting();
    }
    let mut fault = match cycle {
        Some(parties) => Fault {
            kind,
            parties,
            waited_ns: 0,
            call: "",
        },
        None => Fault::new(kind, timed_out(me, lock, at)),
    };
    fault.waited_ns = waited;
    Err(fail(fault))
}

fn timed_out(me: Option<(usize, &Context)>, lock: usize, at: Site) -> Party {
    let except = me.map_or(usize::MAX, |(i, _)| i);
    let holder = holder_of(lock, except);
    Party {
        cpu: me.map_or(u32::MAX, |(_, c)| c.cpu()),
        lock,
        at: Some(at),
        holder: holder.and_then(|(h, _)| Some(context(h)?.cpu())),
        held_since: holder.and_then(|(_, s)| s),
    }
}

/// The cycle through `me` waiting for `lock`, if there is one: each party
/// waits for a lock the next one holds, the last for one `me` holds.
fn find_cycle(me: usize, lock: usize) -> Option<[Option<Party>; MAX_PARTIES]> {
    let mut parties = [None; MAX_PARTIES];
    let (mut who, mut want) = (me, lock);
    for slot in parties.iter_mut() {
        let c = context(who)?;
        let (holder, since) = holder_of(want, who)?;
        let h = context(holder)?;
        *slot = Some(Party {
            cpu: c.cpu(),
            lock: want,
            at: load_site(&c.awaiting_at),
            holder: Some(h.cpu()),
            held_since: since,
        });
        if holder == me {
            return Some(parties);
        }
        want = h.awaiting.load(Relaxed);
        if want == 0 {
            return None;
        }
        who = holder;
    }
    None
}

/// `lock` was taken at `at` by context `ctx`.
pub(super) fn acquired(ctx: Option<usize>, lock: usize, at: Site) {
    let Some(c) = ctx.and_then(context) else {
        return;
    };
    c.stop_waiting();
    c.depth
        .store(c.depth.load(Relaxed).saturating_add(1), Relaxed);
    if let Some(h) = c.held.iter().find(|h| h.lock.load(Relaxed) == 0) {
        h.at.store(site_ptr(at), Relaxed);
        h.lock.store(lock, Relaxed);
    }
}

/// `lock`, taken by context `ctx`, was released.
pub(super) fn released(ctx: Option<usize>, lock: usize) {
    let Some(c) = ctx.and_then(context) else {
        return;
    };
    c.depth
        .store(c.depth.load(Relaxed).saturating_sub(1), Relaxed);
    if let Some(h) = c.holds(lock) {
        h.lock.store(0, Relaxed);
    }
}

/// A scheduler call in progress on this CPU (thread); see [`enter_call`].
#[must_use = "finish the call to learn whether it failed"]
pub struct Call {
    ctx: Option<usize>,
    depth: usize,
}

/// A scheduler call begins on this CPU (thread), running for `cpu`: its
/// acquisitions are counted from 0 (its budget starts at the first
/// check, see `check_budget`), and a fault left by an earlier call is
/// forgotten.
pub fn enter_call(cpu: u32) -> Call {
    let me = current();
    let _ = backend::take_fault(me.map(|(i, _)| i));
    let Some((i, c)) = me else {
        return Call {
            ctx: None,
            depth: 0,
        };
    };
    c.cpu.store(cpu, Relaxed);
    c.acquisitions.store(0, Relaxed);
    c.call_start.store(0, Relaxed);
    Call {
        ctx: Some(i),
        depth: c.depth.load(Relaxed),
    }
}

impl Call {
    /// The context the call runs in (this CPU's; `None` without one).
    pub(crate) fn context(&self) -> Option<usize> {
        self.ctx
    }

    /// The call returned: the fault it ran into, or a lock it left held.
    pub fn finish(self) -> Option<Fault> {
        let c = self.ctx.and_then(context);
        if let Some(c) = c {
            c.call_start.store(0, Relaxed);
        }
        if let Some(fault) = backend::take_fault(self.ctx) {
            return Some(fault);
        }
        let c = c?;
        if c.depth.load(Relaxed) == self.depth {
            return None;
        }
        let leaked = c.held.iter().find(|h| h.lock.load(Relaxed) != 0);
        let p = party(
            c,
            leaked.map_or(0, |h| h.lock.load(Relaxed)),
            leaked.and_then(|h| load_site(&h.at)),
        );
        // The scheduler is failing: its locks are nothing to this CPU now.
        if let Some(i) = self.ctx {
            reset(i);
        }
        Some(Fault::new(FaultKind::Leaked, p))
    }
}

/// Forgets everything context `i` held and waited for (its thread ended,
/// or its scheduler failed with locks held).
pub fn reset(i: usize) {
    if let Some(c) = context(i) {
        for h in &c.held {
            h.lock.store(0, Relaxed);
        }
        c.depth.store(0, Relaxed);
        c.awaiting.store(0, Relaxed);
        c.call_start.store(0, Relaxed);
    }
}

/// The fault this CPU (thread) ran into since its call began, if any
/// (for code that takes libEnoki locks outside a scheduler call, such as
/// tests).
pub fn take_fault() -> Option<Fault> {
    backend::take_fault(backend::context())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;
    use std::vec::Vec;

    use super::super::SpinLock;
    use super::*;

    fn within_timeout<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        crate::user::within_timeout(Duration::from_secs(30), f)
    }

    #[test]
    fn taking_a_held_lock_again_fails_at_once_naming_both_sites() {
        let lock = SpinLock::new(0u32);
        let _ = take_fault();
        let first = lock.lock().unwrap();
        let again = lock.lock();
        let line = line!() - 1;
        assert!(again.is_err());
        let fault = take_fault().expect("the fault is left for the call");
        assert_eq!(fault.kind, FaultKind::SelfDeadlock);
        let p = fault.parties().next().unwrap();
        assert_eq!(p.at.map(|l| l.line()), Some(line));
        assert_eq!(p.held_since.map(|l| l.line()), Some(line - 1));
        drop(first);
        assert!(lock.lock().is_ok(), "the failed attempt took nothing");
        assert_eq!(take_fault(), None);
    }

    /// `n` threads, thread `i` holding lock `i` and then taking lock
    /// `i + 1` (mod `n`): a cycle of `n` CPUs. Returns each thread's
    /// result and fault.
    fn cycle(n: usize) -> Vec<(bool, Option<Fault>)> {
        within_timeout(move || {
            let locks: Arc<Vec<SpinLock<()>>> =
                Arc::new((0..n).map(|_| SpinLock::new(())).collect());
            let all_hold = Arc::new(Barrier::new(n));
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let (locks, all_hold) = (locks.clone(), all_hold.clone());
                    std::thread::spawn(move || {
                        let call = enter_call(i as u32);
                        let mine = locks[i].lock().unwrap();
                        all_hold.wait();
                        let next = locks[(i + 1) % n].lock().map(drop);
                        drop(mine);
                        (next.is_ok(), call.finish())
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    fn check_cycle(n: usize) {
        let results = cycle(n);
        let faults: Vec<Fault> = results.iter().filter_map(|(_, f)| *f).collect();
        assert!(
            !faults.is_empty(),
            "someone must see the cycle: {results:?}"
        );
        for f in &faults {
            assert_eq!(f.kind, FaultKind::Cycle, "{f}");
            assert_eq!(f.parties().count(), n, "{f}");
            assert!(
                f.waited_ns < 1_000_000_000,
                "found well under a second: {f}"
            );
            for p in f.parties() {
                assert!(p.at.is_some() && p.held_since.is_some(), "{f}");
                assert_eq!(p.holder, Some((p.cpu + 1) % n as u32), "{f}");
            }
        }
        for (ok, fault) in &results {
            assert_eq!(*ok, fault.is_none(), "fails exactly when it reports");
        }
    }

    #[test]
    fn abba_between_two_cpus_is_found_and_reported_as_such() {
        check_cycle(2);
        let f = cycle(2).into_iter().find_map(|(_, f)| f).unwrap();
        assert!(std::format!("{f}").starts_with("ABBA deadlock"), "{f}");
    }

    #[test]
    fn a_three_cpu_cycle_is_found() {
        check_cycle(3);
    }

    static IN_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static LEAVE_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// A lock waiter like lock-ordered replay's: holds the thread before
    /// it tries the lock.
    fn hold_in_gate(_: usize) {
        IN_GATE.store(true, Relaxed);
        while !LEAVE_GATE.load(Relaxed) {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_cpu_held_before_trying_a_lock_is_part_of_a_cycle() {
        let fault = within_timeout(|| {
            let (x, y) = (Arc::new(SpinLock::new(())), Arc::new(SpinLock::new(())));
            let x_held = Arc::new(Barrier::new(2));
            let other = {
                let (x, y, x_held) = (x.clone(), y.clone(), x_held.clone());
                std::thread::spawn(move || {
                    let call = enter_call(1);
                    x_held.wait();
                    let y = y.lock().unwrap();
                    crate::user::set_lock_waiter(Some(hold_in_gate));
                    let _ = x.lock().map(drop);
                    crate::user::set_lock_waiter(None);
                    drop(y);
                    call.finish()
                })
            };
            let call = enter_call(0);
            let held = x.lock().unwrap();
            x_held.wait();
            while !IN_GATE.load(Relaxed) {
                std::thread::yield_now();
            }
            let y = y.lock().map(drop);
            LEAVE_GATE.store(true, Relaxed);
            drop(held);
            assert!(y.is_err());
            let fault = call.finish();
            assert_eq!(other.join().unwrap(), None);
            fault
        });
        let f = fault.expect("the cycle is reported");
        assert_eq!(f.kind, FaultKind::Cycle, "{f}");
        assert!(
            f.waited_ns < DEFAULT_TIMEOUT_NS,
            "found before the timeout: {f}"
        );
    }

    #[test]
    fn a_lock_held_too_long_times_out_naming_its_holder() {
        let (waited, fault) = within_timeout(|| {
            let lock = Arc::new(SpinLock::new(()));
            let (held, is_held) = std::sync::mpsc::channel();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let holder = {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    let call = enter_call(7);
                    let g = lock.lock().unwrap();
                    held.send(()).unwrap();
                    let _ = released.recv();
                    drop(g);
                    call.finish()
                })
            };
            is_held.recv().unwrap();
            let call = enter_call(3);
            let waited = lock.lock().map(drop);
            let fault = call.finish();
            release.send(()).unwrap();
            assert_eq!(holder.join().unwrap(), None);
            (waited, fault)
        });
        assert!(waited.is_err());
        let f = fault.expect("a timeout is reported");
        assert_eq!(f.kind, FaultKind::Timeout);
        assert!(f.waited_ns >= DEFAULT_TIMEOUT_NS, "{f}");
        let p = f.parties().next().unwrap();
        assert_eq!((p.cpu, p.holder), (3, Some(7)), "{f}");
        assert!(p.held_since.is_some(), "{f}");
    }

    #[test]
    fn a_call_that_returns_holding_a_lock_is_a_leak() {
        let lock = SpinLock::new(());
        let call = enter_call(2);
        core::mem::forget(lock.lock().unwrap());
        let line = line!() - 1;
        let f = call.finish().expect("the leak is found when the call ends");
        assert_eq!(f.kind, FaultKind::Leaked);
        let p = f.parties().next().unwrap();
        assert_eq!((p.cpu, p.at.map(|l| l.line())), (2, Some(line)));
        assert!(
            enter_call(2).finish().is_none(),
            "the next call starts clean"
        );
    }

    #[test]
    fn a_call_looping_over_locks_runs_out_of_budget() {
        let f = within_timeout(|| {
            let lock = SpinLock::new(0u64);
            let call = enter_call(1);
            let failed = loop {
                match lock.lock() {
                    Ok(mut n) => *n += 1,
                    Err(failed) => break failed,
                }
            };
            let _ = failed;
            call.finish()
        });
        let f = f.expect("over budget");
        assert_eq!(f.kind, FaultKind::OverBudget);
        assert!(f.waited_ns > DEFAULT_TIMEOUT_NS, "{f}");
    }
}
