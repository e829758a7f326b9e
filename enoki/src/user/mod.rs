// SPDX-License-Identifier: GPL-2.0
//! The userspace backend: schedulers run as ordinary host code, for unit
//! tests, the simulator and replay.

use std::sync::Arc;

use super::collections::AllocError;
use super::fault::Fault;
use super::log::Level;
use super::scheduler::QueueId;
use super::sync::detect::{self, MAX_CONTEXTS};
use super::sync::LockOp;
use super::types::{CpuId, Pid};

mod driver;
pub mod fiber;

pub use driver::{
    Driver, DriverCounters, HostEvent, MsgObserver, RecordingHost, RuntimeSource, TaskState,
};

/// What the userspace backend does with a scheduler's service requests.
pub trait HostOps: Send + Sync {
    /// `preempt`: stop the running task; otherwise wake the CPU if idle.
    fn kick_cpu(&self, cpu: CpuId, preempt: bool);
    /// `Some(ns)`: preempt `cpu` after `ns`; `None`: disarm.
    fn set_timer(&self, cpu: CpuId, ns: Option<u64>);
    /// A reverse hint (`hint`'s bytes) about `pid` to queue `queue`.
    fn rev_hint(&self, queue: QueueId, pid: Pid, hint: &[u8]);
}

/// The backend handle inside [`Services`](super::Services).
#[derive(Clone, Default)]
pub struct Host(Option<Arc<dyn HostOps>>);

impl Host {
    pub(super) fn kick_cpu(&self, cpu: CpuId, preempt: bool) {
        if let Some(h) = &self.0 {
            h.kick_cpu(cpu, preempt);
        }
    }

    pub(super) fn set_timer(&self, cpu: CpuId, ns: Option<u64>) {
        if let Some(h) = &self.0 {
            h.set_timer(cpu, ns);
        }
    }

    pub(super) fn rev_hint(&self, queue: QueueId, pid: Pid, hint: &[u8]) {
        if let Some(h) = &self.0 {
            h.rev_hint(queue, pid, hint);
        }
    }
}

/// Services backed by `ops` (or by nothing, with `None`).
pub fn services(ops: Option<Arc<dyn HostOps>>) -> super::Services {
    super::Services { host: Host(ops) }
}

/// Called with a lock's address and what happened to it.
pub type LockObserver = fn(usize, LockOp);

std::thread_local! {
    static LOCK_OBSERVER: core::cell::Cell<Option<LockObserver>> = const { core::cell::Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn within_timeout_returns_passes_panics_on_and_times_out() {
        assert_eq!(super::within_timeout(Duration::from_secs(60), || 7), 7);
        let panicked = std::panic::catch_unwind(|| {
            super::within_timeout(Duration::from_secs(60), || panic!("inner"))
        });
        assert_eq!(*panicked.unwrap_err().downcast::<&str>().unwrap(), "inner");
        let (_keep, parked) = std::sync::mpsc::channel::<()>();
        let hung = std::panic::catch_unwind(move || {
            super::within_timeout(Duration::from_millis(50), move || parked.recv())
        });
        assert!(hung.is_err());
    }
}

/// Calls `observer(addr, op)` on every libEnoki lock event of this
/// thread (simulator record and replay); `None` stops it.
pub fn set_lock_observer(observer: Option<LockObserver>) {
    LOCK_OBSERVER.with(|o| o.set(observer));
}

/// Called with a lock's address before a thread waits for it.
pub type LockWaiter = fn(usize);

std::thread_local! {
    static LOCK_WAITER: core::cell::Cell<Option<LockWaiter>> = const { core::cell::Cell::new(None) };
}

/// Calls `waiter(addr)` on this thread before every blocking libEnoki lock
/// acquisition (lock-ordered replay); `None` stops it.
pub fn set_lock_waiter(waiter: Option<LockWaiter>) {
    LOCK_WAITER.with(|o| o.set(waiter));
}

pub(super) fn lock_wait(addr: usize) {
    LOCK_WAITER.with(|o| {
        if let Some(f) = o.get() {
            f(addr);
        }
    });
}

/// A lock wait inside a [`fiber`] lets the other fibers run: the holder
/// may be one of them.
pub(super) fn lock_spin() {
    fiber::suspend();
}

pub(super) fn lock_event(addr: usize, op: LockOp) {
    LOCK_OBSERVER.with(|o| {
        if let Some(f) = o.get() {
            f(addr, op);
        }
    });
}

/// A lock taken and released at once: the observer sees both events.
pub(super) fn lock_access(addr: usize) {
    lock_event(addr, LockOp::Acquire);
    lock_event(addr, LockOp::Release);
}

/// Runs `f` on a thread of its own and returns what it returns; panics if
/// it takes longer than `limit` (for tests whose threads could deadlock:
/// they fail instead of hanging). A panic in `f` is passed on.
pub fn within_timeout<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("deadlock? not finished within {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker returns only after sending"),
        },
    }
}

/// Host threads can be descheduled while they hold a lock (for tens of
/// milliseconds on a loaded machine), so waits get far longer than in the
/// kernel before they count as a deadlock.
pub(super) const DEFAULT_LOCK_TIMEOUT_NS: u64 = 2_000_000_000;

/// A thread's slot in the deadlock detector's table of contexts, given
/// back (and cleared) when the thread ends.
struct ContextSlot(usize);

static SLOT_TAKEN: [std::sync::atomic::AtomicBool; MAX_CONTEXTS] =
    [const { std::sync::atomic::AtomicBool::new(false) }; MAX_CONTEXTS];

impl ContextSlot {
    fn claim() -> Option<Self> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        SLOT_TAKEN
            .iter()
            .position(|t| t.compare_exchange(false, true, Acquire, Relaxed).is_ok())
            .map(ContextSlot)
    }
}

impl Drop for ContextSlot {
    fn drop(&mut self) {
        detect::reset(self.0);
        if let Some(t) = SLOT_TAKEN.get(self.0) {
            t.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

std::thread_local! {
    static CONTEXT: Option<ContextSlot> = ContextSlot::claim();
    pub(self) static FAULT: core::cell::Cell<Option<Fault>> = const { core::cell::Cell::new(None) };
}

/// This thread's (or the running fiber's) context in the deadlock
/// detector (`None` once more than
/// [`MAX_CONTEXTS`] threads use locks at once: only the timeout works then).
pub(super) fn context() -> Option<usize> {
    if let Some(i) = fiber::ACTING.try_with(|a| a.get()).ok().flatten() {
        return Some(i);
    }
    CONTEXT.try_with(|c| c.as_ref().map(|c| c.0)).ok().flatten()
}

/// A monotonic clock, ns (never 0).
pub(super) fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// Keeps `fault` for this thread's call (the first one wins).
pub(super) fn raise_fault(fault: Fault) {
    let _ = FAULT.try_with(|f| {
        if f.get().is_none() {
            f.set(Some(fault));
        }
    });
}

/// The fault this thread's call ran into, forgetting it (the thread's,
/// whatever its context `_ctx`).
pub(super) fn take_fault(_ctx: Option<usize>) -> Option<Fault> {
    FAULT.try_with(|f| f.take()).ok().flatten()
}

/// A scheduler failed: said on stderr (unless `ENOKI_QUIET` is set).
pub(super) fn report_failure(name: &str, fault: &Fault) {
    log(
        Level::Error,
        format_args!("scheduler {name} failed: {fault}"),
    );
}

pub(super) type Storage<T> = std::vec::Vec<T>;

pub(super) fn try_alloc_with<T, E: From<AllocError>>(
    n: usize,
    f: impl FnMut(usize) -> Result<T, E>,
) -> Result<Storage<T>, E> {
    let mut v = std::vec::Vec::new();
    v.try_reserve_exact(n).map_err(|_| AllocError)?;
    for item in (0..n).map(f) {
        v.push(item?);
    }
    Ok(v)
}

pub(super) fn log(level: Level, args: core::fmt::Arguments<'_>) {
    if std::env::var_os("ENOKI_QUIET").is_none() {
        eprintln!("enoki {:?}: {}", level, args);
    }
}
