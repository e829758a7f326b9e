// SPDX-License-Identifier: GPL-2.0
//! Fixed-capacity containers: memory is taken once, when the scheduler is
//! created, so nothing allocates on the scheduling path. Running out is an
//! `Err` the scheduler handles, never a crash.

use core::ops::{Deref, DerefMut};

use super::backend;
use super::types::Pid;

/// Memory could not be had when the scheduler was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

/// A slice allocated once, at init.
pub struct FixedVec<T> {
    items: backend::Storage<T>,
}

impl<T> FixedVec<T> {
    /// `n` items, item `i` made by `f(i)`.
    pub fn new_with(n: usize, mut f: impl FnMut(usize) -> T) -> Result<Self, AllocError> {
        Self::try_new_with(n, |i| Ok(f(i)))
    }

    /// `n` items made by a fallible `f`; the first error is returned.
    pub fn try_new_with<E: From<AllocError>>(
        n: usize,
        f: impl FnMut(usize) -> Result<T, E>,
    ) -> Result<Self, E> {
        Ok(FixedVec {
            items: backend::try_alloc_with(n, f)?,
        })
    }
}

impl<T> Deref for FixedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> DerefMut for FixedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

/// A FIFO queue of at most `capacity` items.
pub struct Ring<T> {
    slots: FixedVec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Ring<T> {
    /// Room for `capacity` items.
    pub fn with_capacity(capacity: usize) -> Result<Self, AllocError> {
        Ok(Ring {
            slots: FixedVec::new_with(capacity.max(1), |_| None)?,
            head: 0,
            len: 0,
        })
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most items it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) % self.slots.len()
    }

    /// Appends `item`, or gives it back when full.
    pub fn push_back(&mut self, item: T) -> Result<(), T> {
        if self.len == self.slots.len() {
            return Err(item);
        }
        let i = self.slot(self.len);
        self.slots[i] = Some(item);
        self.len += 1;
        Ok(())
    }

    /// Prepends `item`, or gives it back when full.
    pub fn push_front(&mut self, item: T) -> Result<(), T> {
        if self.len == self.slots.len() {
            return Err(item);
        }
        self.head = (self.head + self.slots.len() - 1) % self.slots.len();
        self.slots[self.head] = Some(item);
        self.len += 1;
        Ok(())
    }

    /// Removes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let head = self.head;
        let item = self.slots[head].take();
        self.head = self.slot(1);
        self.len -= 1;
        item
    }

    /// The oldest item.
    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    /// The `i`-th item from the front.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        self.slots[self.slot(i)].as_ref()
    }

    /// Items from front to back.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }

    /// Removes and returns the first item matching `pred`, keeping the order
    /// of the others.
    pub fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        let pos = self.iter().position(&mut pred)?;
        let at = self.slot(pos);
        let item = self.slots[at].take();
        for i in pos..self.len - 1 {
            let (from, to) = (self.slot(i + 1), self.slot(i));
            let moved = self.slots[from].take();
            self.slots[to] = moved;
        }
        self.len -= 1;
        item
    }
}

/// A map from pid to `V` with a fixed capacity (open addressing, linear
/// probing, backward-shift deletion: no tombstones to clean up). The
/// occupied slots are also listed densely, so that going through the
/// entries costs what is held, not the size of the table.
///
/// # Invariants
///
/// `dense[..len]` are exactly the occupied slots, each once, and
/// `at[s]` is the index of slot `s` in `dense` for every occupied `s`.
pub struct TaskMap<V> {
    slots: FixedVec<Option<(Pid, V)>>,
    dense: FixedVec<u32>,
    at: FixedVec<u32>,
    len: usize,
    capacity: usize,
}

impl<V> TaskMap<V> {
    /// Room for `capacity` tasks.
    pub fn with_capacity(capacity: usize) -> Result<Self, AllocError> {
        // Keep the table at most half full so probes stay short.
        let slots = (capacity.max(1) * 2).next_power_of_two();
        Ok(TaskMap {
            slots: FixedVec::new_with(slots, |_| None)?,
            dense: FixedVec::new_with(capacity.max(1), |_| 0)?,
            at: FixedVec::new_with(slots, |_| 0)?,
            len: 0,
            capacity: capacity.max(1),
        })
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most items it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn home(&self, pid: Pid) -> usize {
        // Fibonacci hashing spreads consecutive pids.
        ((pid as u32).wrapping_mul(0x9E37_79B9) as usize) & (self.slots.len() - 1)
    }

    fn find(&self, pid: Pid) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(pid);
        loop {
            match &self.slots[i] {
                None => return None,
                Some((p, _)) if *p == pid => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// Whether `pid` has an entry.
    pub fn contains(&self, pid: Pid) -> bool {
        self.find(pid).is_some()
    }

    /// The entry of `pid`.
    pub fn get(&self, pid: Pid) -> Option<&V> {
        self.find(pid)
            .and_then(|i| self.slots[i].as_ref().map(|(_, v)| v))
    }

    /// The entry of `pid`, mutably.
    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut V> {
        let i = self.find(pid)?;
        self.slots[i].as_mut().map(|(_, v)| v)
    }

    /// Inserts or replaces; gives `value` back when the map is full.
    pub fn insert(&mut self, pid: Pid, value: V) -> Result<Option<V>, V> {
        if let Some(i) = self.find(pid) {
            let old = self.slots[i].replace((pid, value));
            return Ok(old.map(|(_, v)| v));
        }
        if self.len == self.capacity {
            return Err(value);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(pid);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some((pid, value));
        self.dense[self.len] = i as u32;
        self.at[i] = self.len as u32;
        self.len += 1;
        Ok(None)
    }

    /// Slot `from`'s entry moved to slot `to`: the dense list follows.
    fn moved(&mut self, from: usize, to: usize) {
        let k = self.at[from];
        self.dense[k as usize] = to as u32;
        self.at[to] = k;
    }

    /// Removes and returns the entry of `pid`.
    pub fn remove(&mut self, pid: Pid) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut hole = self.find(pid)?;
        let (_, value) = self.slots[hole].take()?;
        // The last of the dense list takes the removed entry's place there.
        self.len -= 1;
        let last = self.dense[self.len] as usize;
        let k = self.at[hole];
        self.dense[k as usize] = last as u32;
        self.at[last] = k;
        // Shift later entries of the probe chain back into the hole.
        let mut i = (hole + 1) & mask;
        while let Some((p, _)) = &self.slots[i] {
            let home = self.home(*p);
            // Move it if its home is not in the cyclic range (hole, i].
            let in_range = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !in_range {
                self.slots[hole] = self.slots[i].take();
                self.moved(i, hole);
                hole = i;
            }
            i = (i + 1) & mask;
        }
        Some(value)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Pid, &V)> + '_ {
        self.dense
            .iter()
            .take(self.len)
            .filter_map(|&s| self.slots.get(s as usize)?.as_ref())
            .map(|(p, v)| (*p, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, VecDeque};

    #[test]
    fn ring_is_fifo_and_bounded() {
        let mut r = Ring::with_capacity(3).unwrap();
        assert_eq!(r.push_back(1), Ok(()));
        assert_eq!(r.push_back(2), Ok(()));
        assert_eq!(r.push_front(0), Ok(()));
        assert_eq!(r.push_back(9), Err(9));
        assert_eq!(r.remove_first(|x| *x == 1), Some(1));
        assert_eq!(r.pop_front(), Some(0));
        assert_eq!(r.pop_front(), Some(2));
        assert_eq!(r.pop_front(), None);
    }

    proptest! {
        #[test]
        fn ring_matches_vecdeque(ops in proptest::collection::vec((0u8..4, 0u32..50), 0..200)) {
            let mut r = Ring::with_capacity(16).unwrap();
            let mut model = VecDeque::new();
            for (op, v) in ops {
                match op {
                    0 => { let full = model.len() == 16; prop_assert_eq!(r.push_back(v).is_err(), full); if !full { model.push_back(v); } }
                    1 => { let full = model.len() == 16; prop_assert_eq!(r.push_front(v).is_err(), full); if !full { model.push_front(v); } }
                    2 => prop_assert_eq!(r.pop_front(), model.pop_front()),
                    _ => {
                        let pos = model.iter().position(|x| *x % 5 == v % 5);
                        let want = pos.map(|p| model.remove(p).unwrap());
                        prop_assert_eq!(r.remove_first(|x| *x % 5 == v % 5), want);
                    }
                }
                prop_assert_eq!(r.iter().copied().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            }
        }

        #[test]
        fn taskmap_matches_hashmap(ops in proptest::collection::vec((any::<bool>(), 0i32..64, 0u32..1000), 0..400)) {
            let mut m = TaskMap::with_capacity(40).unwrap();
            let mut model = HashMap::new();
            for (insert, n, v) in ops {
                // Half the pids share two home slots: long probe chains, so
                // removals shift entries.
                let pid = if n % 2 == 0 { n * 64 } else { n };
                if insert {
                    let full = model.len() == 40 && !model.contains_key(&pid);
                    let r = m.insert(pid, v);
                    prop_assert_eq!(r.is_err(), full);
                    if !full { prop_assert_eq!(r.unwrap(), model.insert(pid, v)); }
                } else {
                    prop_assert_eq!(m.remove(pid), model.remove(&pid));
                }
                prop_assert_eq!(m.len(), model.len());
                for (p, v) in &model { prop_assert_eq!(m.get(*p), Some(v)); }
                let mut listed: Vec<(i32, u32)> = m.iter().map(|(p, v)| (p, *v)).collect();
                let mut expected: Vec<(i32, u32)> = model.iter().map(|(p, v)| (*p, *v)).collect();
                listed.sort_unstable();
                expected.sort_unstable();
                prop_assert_eq!(listed, expected);
            }
        }
    }
}
