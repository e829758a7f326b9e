// SPDX-License-Identifier: GPL-2.0
//! [`First`]: a value only the first of several CPUs writes.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const SET: u8 = 2;

/// A value set once, by whichever CPU comes first; later sets are refused.
/// For libEnoki's own bookkeeping, not scheduler state: it makes no lock
/// events, so record and replay do not see it (a replay's first failure may
/// then be another CPU's than the run's when CPUs failed at once, but a
/// replay never waits on it).
///
/// # Invariants
///
/// `value` is written only by the one [`First::set`] that moved `state`
/// from `EMPTY` to `WRITING`, and read only once `state` is `SET`, which
/// that `set` stores (with release) after the write.
pub struct First<T: Copy> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written by one CPU before `state` publishes it, and
// only read (copied) after; `T: Send` lets the copy go to another CPU.
unsafe impl<T: Copy + Send> Sync for First<T> {}

impl<T: Copy> First<T> {
    /// Nothing set yet.
    pub const fn new() -> Self {
        First {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Sets `value` unless another set came first; whether this one did.
    pub fn set(&self, value: T) -> bool {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: this call moved `state` to WRITING, so it is the only
        // writer, and no reader reads before SET (the invariants).
        unsafe { (*self.value.get()).write(value) };
        self.state.store(SET, Ordering::Release);
        true
    }

    /// The value, once set.
    pub fn get(&self) -> Option<T> {
        if self.state.load(Ordering::Acquire) != SET {
            return None;
        }
        // SAFETY: SET was stored (release, paired with this acquire) after
        // the value was written, and it is never written again.
        Some(unsafe { (*self.value.get()).assume_init() })
    }
}

impl<T: Copy> Default for First<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_set_counts_and_every_thread_sees_it() {
        let slot = First::new();
        assert_eq!(slot.get(), None);
        let won: usize = std::thread::scope(|s| {
            let handles: std::vec::Vec<_> = (0..4u32)
                .map(|i| {
                    let slot = &slot;
                    s.spawn(move || usize::from(slot.set(i)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 1);
        let first = slot.get().unwrap();
        assert!(first < 4);
        assert!(!slot.set(9));
        assert_eq!(slot.get(), Some(first));
    }
}
