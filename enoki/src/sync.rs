// SPDX-License-Identifier: GPL-2.0
//! Locks for scheduler state.
//!
//! libEnoki's own spin locks, the same code in both backends. Every call into
//! a scheduler runs with interrupts off (Enoki-C guarantees it), so a plain
//! spin lock is enough and never sleeps. Acquisition and release go through
//! [`hooks`], the one place where record and deadlock detection attach.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Lock events, for record/replay and lock debugging: the backend records
/// them while recording is on (one branch when it is off).
pub mod hooks {
    /// About to wait for the lock at `addr` (not called by `try_lock`):
    /// lock-ordered replay holds the thread here until it is its turn.
    #[inline(always)]
    pub fn acquiring(addr: usize) {
        super::super::backend::lock_wait(addr);
    }
    /// A lock at `addr` was taken.
    #[inline(always)]
    pub fn acquired(addr: usize) {
        super::super::backend::lock_event(addr, true);
    }
    /// A lock at `addr` was released.
    #[inline(always)]
    pub fn released(addr: usize) {
        super::super::backend::lock_event(addr, false);
    }
}

/// Makes a guard `!Send` (and `!Sync` until a guard says otherwise): a
/// lock is released by the thread that took it, and two threads must not
/// reach the value through one guard (as std's `MutexGuard`).
type NotSend = PhantomData<*const ()>;

/// A spin lock protecting a `T`.
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

    /// Spins until the lock is free, then holds it until the guard drops.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        hooks::acquiring(self as *const _ as usize);
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        hooks::acquired(self as *const _ as usize);
        SpinLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock if it is free.
    #[must_use = "the lock is released at once if the guard is not kept"]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        hooks::acquired(self as *const _ as usize);
        Some(SpinLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
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
/// let guard = lock.lock();
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
/// let guard = lock.lock();
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
/// let guard = lock.lock();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard));
/// });
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
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
        hooks::released(self.lock as *const _ as usize);
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A value CPUs read and write without another lock around it: a summary
/// other CPUs look at, a counter. Use it instead of an atomic, which
/// record and replay cannot see.
///
/// Every access is a short critical section of the value's own
/// [`SpinLock`] that runs no scheduler code, so it never nests another lock
/// and costs about what an atomic read-modify-write does. Its lock events
/// go through [`hooks`] like any lock's, so the kernel record and
/// lock-ordered replay order the accesses exactly. (An atomic with events
/// recorded around it would not be: two CPUs can record in the other order
/// than they changed the value.)
pub struct Shared<T: Copy> {
    value: SpinLock<T>,
}

impl<T: Copy> Shared<T> {
    /// A shared `value`.
    pub const fn new(value: T) -> Self {
        Shared {
            value: SpinLock::new(value),
        }
    }

    /// The value now.
    pub fn get(&self) -> T {
        *self.value.lock()
    }

    /// Sets the value.
    pub fn set(&self, value: T) {
        *self.value.lock() = value;
    }

    /// Sets the value and returns the one before.
    pub fn replace(&self, value: T) -> T {
        core::mem::replace(&mut *self.value.lock(), value)
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
                let mut v = self.value.lock();
                let old = *v;
                *v = old.wrapping_add(n);
                old
            }
            /// Sets the bits of `bits` and returns the value before.
            pub fn fetch_or(&self, bits: $t) -> $t {
                let mut v = self.value.lock();
                let old = *v;
                *v = old | bits;
                old
            }
            /// Keeps only the bits of `bits` and returns the value before.
            pub fn fetch_and(&self, bits: $t) -> $t {
                let mut v = self.value.lock();
                let old = *v;
                *v = old & bits;
                old
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

    /// Shared access; spins while a writer holds or waits for the lock.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        hooks::acquiring(self as *const _ as usize);
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & WRITER == 0
                && self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            core::hint::spin_loop();
        }
        hooks::acquired(self as *const _ as usize);
        RwLockReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Exclusive access; spins until readers are gone.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        hooks::acquiring(self as *const _ as usize);
        // Claim the writer bit first so new readers back off, then drain readers.
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & WRITER == 0
                && self
                    .state
                    .compare_exchange_weak(s, s | WRITER, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            core::hint::spin_loop();
        }
        while self.state.load(Ordering::Acquire) != WRITER {
            core::hint::spin_loop();
        }
        hooks::acquired(self as *const _ as usize);
        RwLockWriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }
}

/// Shared access to an [`RwLock`]; released when dropped. `Sync` only
/// when `T` is, never `Send` (see [`SpinLockGuard`]).
///
/// ```compile_fail
/// # use enoki::RwLock;
/// let lock = RwLock::new(0u32);
/// let guard = lock.read();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard));
/// });
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
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
        hooks::released(self.lock as *const _ as usize);
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
/// let guard = lock.write();
/// std::thread::scope(|s| {
///     s.spawn(|| guard.set(1));
/// });
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
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
        hooks::released(self.lock as *const _ as usize);
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
                            *lock.lock() += 1;
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(*lock.lock(), 40_000);
        });
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = SpinLock::new(());
        let g = lock.lock();
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
        fn observe(addr: usize, acquired: bool) {
            EVENTS.with(|e| e.borrow_mut().push((addr, acquired)));
        }
        let shared = Shared::new(1u64);
        crate::user::set_lock_observer(Some(observe));
        shared.fetch_add(1);
        let _ = shared.get();
        crate::user::set_lock_observer(None);
        let addr = &shared.value as *const _ as usize;
        let events = EVENTS.with(|e| e.borrow().clone());
        assert_eq!(
            events,
            [(addr, true), (addr, false), (addr, true), (addr, false)]
        );
    }

    #[test]
    fn rwlock_readers_share_writers_exclude() {
        within_timeout(|| {
            let lock = Arc::new(RwLock::new(0u64));
            let r1 = lock.read();
            let r2 = lock.read();
            assert_eq!(*r1 + *r2, 0);
            drop((r1, r2));
            let threads: std::vec::Vec<_> = (0..4)
                .map(|_| {
                    let lock = lock.clone();
                    std::thread::spawn(move || {
                        for _ in 0..5_000 {
                            *lock.write() += 1;
                            let _ = *lock.read();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(*lock.read(), 20_000);
        });
    }
}
