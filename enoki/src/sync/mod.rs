// SPDX-License-Identifier: GPL-2.0
//! Locks for scheduler state.
//!
//! libEnoki's own spin locks, the same code in both backends. Every call into
//! a scheduler runs with interrupts off (Enoki-C guarantees it), so a plain
//! spin lock is enough and never sleeps.
//!
//! They are resilient: an acquisition that would deadlock (the CPU holds
//! the lock already, or CPUs wait for each other in a cycle) or waits past
//! the lock timeout fails with [`Failed`] instead of hanging the CPU (see
//! [`detect`]). Schedulers pass it up with `?`; libEnoki then ejects the
//! scheduler with a report naming the CPUs, locks and source lines.
//! Acquisition and release also go through [`hooks`], where record and
//! replay attach.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::fault::{Failed, Site};

mod cpu_flags;
pub mod detect;
mod first;
mod shared_cpu_set;

pub use cpu_flags::CpuFlags;
pub use first::First;
pub use shared_cpu_set::SharedCpuSet;

/// Lock events, for record/replay and lock debugging: the backend records
/// them while recording is on (one branch when it is off).
pub mod hooks {
    /// About to wait for the lock at `addr` (not called by `try_lock`):
    /// lock-ordered replay holds the CPU's fiber here until it is its turn.
    #[inline(always)]
    pub fn acquiring(addr: usize) {
        super::super::backend::lock_wait(addr);
    }
    use super::LockOp;

    /// A lock at `addr` was taken (exclusively).
    #[inline(always)]
    pub fn acquired(addr: usize) {
        super::super::backend::lock_event(addr, LockOp::Acquire);
    }
    /// A lock at `addr` was taken to read: other readers may hold it too.
    #[inline(always)]
    pub fn acquired_shared(addr: usize) {
        super::super::backend::lock_event(addr, LockOp::AcquireShared);
    }
    /// A lock at `addr` was released.
    #[inline(always)]
    pub fn released(addr: usize) {
        super::super::backend::lock_event(addr, LockOp::Release);
    }
    /// The lock at `addr` was taken to read or write one value and is
    /// released right after, with no other lock taken meanwhile: one event
    /// for the pair (a kernel trace records it once).
    #[inline(always)]
    pub fn accessed(addr: usize) {
        super::super::backend::lock_access(addr);
    }
    /// A lock was found held: lets its holder go on where it is a fiber
    /// of this thread (lock-ordered replay), nothing in the kernel.
    #[inline(always)]
    pub fn spin() {
        super::super::backend::lock_spin();
    }
}

/// A lock event, as record and replay see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOp {
    /// Taken by one holder only.
    Acquire,
    /// Taken to read, beside any other readers: lock-ordered replay orders
    /// a reader after the writers before it, not after the readers.
    AcquireShared,
    /// Released.
    Release,
}

impl LockOp {
    /// Whether the lock was taken (either way).
    pub fn is_acquire(self) -> bool {
        self != LockOp::Release
    }
}

/// Makes a guard `!Send` (and `!Sync` until a guard says otherwise): a
/// lock is released by the thread that took it, and two threads must not
/// reach the value through one guard (as std's `MutexGuard`).
type NotSend = PhantomData<*const ()>;

/// A spin lock protecting a `T`; taking it fails rather than deadlock.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; no thread holds a guard then.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    fn try_take(&self) -> bool {
        self.locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Holds the lock until the guard drops. Fails, without taking it, when
    /// this CPU holds it already, when CPUs wait for each other's locks in a
    /// cycle with this one, or after the lock timeout: return the error
    /// with `?`.
    #[track_caller]
    pub fn lock(&self) -> Result<SpinLockGuard<'_, T>, Failed> {
        self.lock_at(Location::caller())
    }

    /// [`SpinLock::lock`], reporting `at` as where it was taken (for
    /// libEnoki's own helpers that lock on a scheduler's behalf).
    pub(super) fn lock_at(&self, at: Site) -> Result<SpinLockGuard<'_, T>, Failed> {
        let addr = self.addr();
        let ctx = detect::before(addr, at)?;
        hooks::acquiring(addr);
        if !self.try_take() {
            detect::wait(ctx, addr, at, || {
                !self.locked.load(Ordering::Relaxed) && self.try_take()
            })?;
        }
        Ok(self.guard(ctx, at))
    }

    fn guard(&self, ctx: Option<usize>, at: Site) -> SpinLockGuard<'_, T> {
        detect::acquired(ctx, self.addr(), at);
        hooks::acquired(self.addr());
        SpinLockGuard {
            lock: self,
            ctx,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock if it is free (never waits, so never deadlocks).
    #[track_caller]
    #[must_use = "the lock is released at once if the guard is not kept"]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        let ctx = detect::before(self.addr(), Location::caller())
            .ok()
            .flatten();
        Some(self.guard(ctx, Location::caller()))
    }

    /// Direct access when no one else can hold the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Holds a [`SpinLock`]; releases it when dropped.
///
/// Sharing a guard shares `&T`, so it is `Sync` only when `T` is; it
/// cannot move to another thread. A `Cell` behind a lock stays with the
/// thread that holds the lock:
///
/// ```compile_fail
/// # use enoki::SpinLock;
/// # use core::cell::Cell;
/// let lock = SpinLock::new(Cell::new(0u32));
/// let guard = lock.lock().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| guard.set(guard.get() + 1)); // `&guard` is not Send
///     guard.set(guard.get() + 1);
/// });
/// ```
///
/// while a `Sync` value may be read through a shared guard:
///
/// ```
/// # use enoki::SpinLock;
/// let lock = SpinLock::new(0u32);
/// let guard = lock.lock().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| assert_eq!(*guard, 0));
/// });
/// ```
///
/// nor can a guard move to another thread:
///
/// ```compile_fail
/// # use enoki::SpinLock;
/// let lock = SpinLock::new(0u32);
/// let guard = lock.lock().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard));
/// });
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    /// The acquirer's context in the deadlock detector's table.
    ctx: Option<usize>,
    _not_send: NotSend,
}

// SAFETY: a shared guard gives shared access to `T` only.
unsafe impl<T: Sync> Sync for SpinLockGuard<'_, T> {}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        detect::released(self.ctx, self.lock.addr());
        hooks::released(self.lock.addr());
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A value CPUs read and write without another lock around it: a summary
/// other CPUs look at, a counter. Use it instead of an atomic, which
/// record and replay cannot see.
///
/// Every access is a short critical section of the value's own spin lock
/// that runs no scheduler code, so it never nests another lock, cannot
/// deadlock (and so cannot fail), and costs about what an atomic
/// read-modify-write does. Each access is one lock event through
/// [`hooks::accessed`], taken while the lock is held, so the kernel record
/// and lock-ordered replay order the accesses exactly. (An atomic with
/// events recorded around it would not be: two CPUs can record in the
/// other order than they changed the value.)
pub struct Shared<T: Copy> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: every access to `value` is under `locked`.
unsafe impl<T: Copy + Send> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// A shared `value`.
    pub const fn new(value: T) -> Self {
        Shared {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value under its lock.
    fn access<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let addr = self as *const Self as usize;
        hooks::acquiring(addr);
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
            hooks::spin();
        }
        hooks::accessed(addr);
        // SAFETY: `locked` is held, and `f` is one of this type's own
        // closures, which neither lock anything nor keep the reference.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        r
    }

    /// The value now.
    pub fn get(&self) -> T {
        self.access(|v| *v)
    }

    /// Sets the value.
    pub fn set(&self, value: T) {
        self.access(|v| *v = value);
    }

    /// Sets the value and returns the one before.
    pub fn replace(&self, value: T) -> T {
        self.access(|v| core::mem::replace(v, value))
    }
}

impl<T: Copy + Default> Default for Shared<T> {
    fn default() -> Self {
        Shared::new(T::default())
    }
}

macro_rules! shared_int {
    ($($t:ty),*) => {$(
        impl Shared<$t> {
            /// Adds `n` (wrapping) and returns the value before.
            pub fn fetch_add(&self, n: $t) -> $t {
                self.access(|v| core::mem::replace(v, v.wrapping_add(n)))
            }
            /// Sets the bits of `bits` and returns the value before.
            pub fn fetch_or(&self, bits: $t) -> $t {
                self.access(|v| core::mem::replace(v, *v | bits))
            }
            /// Keeps only the bits of `bits` and returns the value before.
            pub fn fetch_and(&self, bits: $t) -> $t {
                self.access(|v| core::mem::replace(v, *v & bits))
            }
        }
    )*};
}

shared_int!(u32, u64, usize);

const WRITER: u32 = 1 << 31;

/// A reader-writer spin lock protecting a `T`; writers wait for readers.
pub struct RwLock<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: shared access only to readers, exclusive access to one writer.
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}
// SAFETY: moving the lock moves the value; no thread holds a guard then.
unsafe impl<T: Send> Send for RwLock<T> {}

impl<T> RwLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        RwLock {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// Sets the writer bit if no writer has it.
    fn try_claim(&self, bits: impl Fn(u32) -> u32) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s & WRITER == 0
            && self
                .state
                .compare_exchange_weak(s, bits(s), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Shared access; waits while a writer holds or waits for the lock.
    /// Fails as [`SpinLock::lock`] does; taking it again on a CPU that
    /// holds it (even for reading) fails too, since a waiting writer
    /// would block the second read for ever.
    #[track_caller]
    pub fn read(&self) -> Result<RwLockReadGuard<'_, T>, Failed> {
        let (addr, at) = (self.addr(), Location::caller());
        let ctx = detect::before(addr, at)?;
        hooks::acquiring(addr);
        detect::wait(ctx, addr, at, || self.try_claim(|s| s + 1))?;
        detect::acquired(ctx, addr, at);
        hooks::acquired_shared(addr);
        Ok(RwLockReadGuard {
            lock: self,
            ctx,
            _not_send: PhantomData,
        })
    }

    /// Exclusive access; waits until readers are gone. Fails as
    /// [`SpinLock::lock`] does.
    #[track_caller]
    pub fn write(&self) -> Result<RwLockWriteGuard<'_, T>, Failed> {
        let (addr, at) = (self.addr(), Location::caller());
        let ctx = detect::before(addr, at)?;
        hooks::acquiring(addr);
        // Claim the writer bit first so new readers back off, then drain readers.
        detect::wait(ctx, addr, at, || self.try_claim(|s| s | WRITER))?;
        let drained = detect::wait(ctx, addr, at, || {
            self.state.load(Ordering::Acquire) == WRITER
        });
        if let Err(failed) = drained {
            self.state.fetch_and(!WRITER, Ordering::Release);
            return Err(failed);
        }
        detect::acquired(ctx, addr, at);
        hooks::acquired(addr);
        Ok(RwLockWriteGuard {
            lock: self,
            ctx,
            _not_send: PhantomData,
        })
    }
}

/// Shared access to an [`RwLock`]; released when dropped. `Sync` only
/// when `T` is, never `Send` (see [`SpinLockGuard`]).
///
/// ```compile_fail
/// # use enoki::RwLock;
/// let lock = RwLock::new(0u32);
/// let guard = lock.read().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard));
/// });
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    ctx: Option<usize>,
    _not_send: NotSend,
}

// SAFETY: a shared guard gives shared access to `T` only.
unsafe impl<T: Sync> Sync for RwLockReadGuard<'_, T> {}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: readers only get shared access while no writer holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        detect::released(self.ctx, self.lock.addr());
        hooks::released(self.lock.addr());
        self.lock.state.fetch_sub(1, Ordering::Release);
    }
}

/// Exclusive access to an [`RwLock`]; released when dropped. `Sync` only
/// when `T` is, never `Send` (see [`SpinLockGuard`]).
///
/// ```compile_fail
/// # use enoki::RwLock;
/// # use core::cell::Cell;
/// let lock = RwLock::new(Cell::new(0u32));
/// let guard = lock.write().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| guard.set(1));
/// });
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    ctx: Option<usize>,
    _not_send: NotSend,
}

// SAFETY: a shared guard gives shared access to `T` only.
unsafe impl<T: Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write guard is exclusive.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the write guard is exclusive.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        detect::released(self.ctx, self.lock.addr());
        hooks::released(self.lock.addr());
        self.lock.state.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Generous: a deadlock fails the test instead of hanging it.
    fn within_timeout(f: impl FnOnce() + Send + 'static) {
        crate::user::within_timeout(std::time::Duration::from_secs(60), f);
    }

    #[test]
    fn spinlock_excludes_threads() {
        within_timeout(|| {
            let lock = Arc::new(SpinLock::new(0u64));
            let threads: std::vec::Vec<_> = (0..4)
                .map(|_| {
                    let lock = lock.clone();
                    std::thread::spawn(move || {
                        for _ in 0..10_000 {
                            *lock.lock().unwrap() += 1;
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(*lock.lock().unwrap(), 40_000);
        });
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = SpinLock::new(());
        let g = lock.lock().unwrap();
        assert!(lock.try_lock().is_none());
        drop(g);
        assert!(lock.try_lock().is_some());
    }

    #[test]
    fn shared_values_are_exact_across_threads() {
        within_timeout(|| {
            let n = Arc::new(Shared::new(0u64));
            let bits = Arc::new(Shared::new(0u32));
            let threads: std::vec::Vec<_> = (0..4)
                .map(|i| {
                    let (n, bits) = (n.clone(), bits.clone());
                    std::thread::spawn(move || {
                        for _ in 0..10_000 {
                            n.fetch_add(1);
                            bits.fetch_or(1 << i);
                            bits.fetch_and(!(1 << (i + 8)));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(n.get(), 40_000);
            assert_eq!(bits.get(), 0xf);
            assert_eq!(n.replace(7), 40_000);
            n.set(n.get() + 1);
            assert_eq!(n.get(), 8);
        });
    }

    #[test]
    fn shared_access_is_a_lock_event_pair() {
        use std::cell::RefCell;
        std::thread_local!(static EVENTS: RefCell<std::vec::Vec<(usize, bool)>> = const { RefCell::new(std::vec::Vec::new()) });
        fn observe(addr: usize, op: LockOp) {
            EVENTS.with(|e| e.borrow_mut().push((addr, op.is_acquire())));
        }
        let shared = Shared::new(1u64);
        crate::user::set_lock_observer(Some(observe));
        shared.fetch_add(1);
        let _ = shared.get();
        crate::user::set_lock_observer(None);
        let addr = &shared as *const _ as usize;
        let events = EVENTS.with(|e| e.borrow().clone());
        assert_eq!(
            events,
            [(addr, true), (addr, false), (addr, true), (addr, false)]
        );
    }

    #[test]
    fn rwlock_reads_are_shared_lock_events_and_writes_exclusive() {
        use std::cell::RefCell;
        std::thread_local!(static OPS: RefCell<std::vec::Vec<LockOp>> = const { RefCell::new(std::vec::Vec::new()) });
        fn observe(_addr: usize, op: LockOp) {
            OPS.with(|e| e.borrow_mut().push(op));
        }
        let lock = RwLock::new(0u32);
        crate::user::set_lock_observer(Some(observe));
        drop(lock.read());
        drop(lock.write());
        crate::user::set_lock_observer(None);
        let ops = OPS.with(|e| e.borrow().clone());
        assert_eq!(
            ops,
            [
                LockOp::AcquireShared,
                LockOp::Release,
                LockOp::Acquire,
                LockOp::Release
            ]
        );
    }

    #[test]
    fn rwlock_readers_share_writers_exclude() {
        within_timeout(|| {
            let lock = Arc::new(RwLock::new(0u64));
            let r1 = lock.read().unwrap();
            std::thread::scope(|s| {
                s.spawn(|| assert_eq!(*lock.read().unwrap(), 0, "readers share"));
            });
            assert!(
                lock.read().is_err(),
                "a second read on one CPU could wait for ever"
            );
            drop(r1);
            let threads: std::vec::Vec<_> = (0..4)
                .map(|_| {
                    let lock = lock.clone();
                    std::thread::spawn(move || {
                        for _ in 0..5_000 {
                            *lock.write().unwrap() += 1;
                            let _ = *lock.read().unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(*lock.read().unwrap(), 20_000);
        });
    }
}
