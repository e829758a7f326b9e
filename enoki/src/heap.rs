// SPDX-License-Identifier: GPL-2.0
//! An indexed min-heap of tasks with a fixed capacity: the run queue of
//! schedulers that order tasks by a key (virtual runtime, deadline, ...).
//!
//! Entries are ordered by `(key, pid)`, so ties are broken the same way on
//! every run. Push, pop, removal by pid and re-keying are O(log n); lookup by
//! pid is O(1). Memory is taken once, at init.

use super::collections::{AllocError, FixedVec, TaskMap};
use super::types::Pid;

struct Entry<K, V> {
    key: K,
    pid: Pid,
    value: V,
}

/// A min-heap of at most `capacity` tasks, each at most once, ordered by
/// `(key, pid)` and holding a `V` (e.g. the task's token).
pub struct TaskHeap<K, V> {
    /// Slots `0..len` hold the heap; the rest are `None`.
    slots: FixedVec<Option<Entry<K, V>>>,
    len: usize,
    /// Where each pid sits in `slots`.
    index: TaskMap<usize>,
}

impl<K: Ord, V> TaskHeap<K, V> {
    /// Room for `capacity` tasks.
    pub fn with_capacity(capacity: usize) -> Result<Self, AllocError> {
        let capacity = capacity.max(1);
        Ok(TaskHeap {
            slots: FixedVec::new_with(capacity, |_| None)?,
            len: 0,
            index: TaskMap::with_capacity(capacity)?,
        })
    }

    /// Tasks held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no task is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most tasks it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Whether `pid` is held.
    pub fn contains(&self, pid: Pid) -> bool {
        self.index.contains(pid)
    }

    fn entry(&self, i: usize) -> Option<&Entry<K, V>> {
        if i >= self.len {
            return None;
        }
        self.slots.get(i)?.as_ref()
    }

    fn entry_of(&self, pid: Pid) -> Option<&Entry<K, V>> {
        self.entry(*self.index.get(pid)?)
    }

    /// The key and value of `pid`.
    pub fn get(&self, pid: Pid) -> Option<(&K, &V)> {
        self.entry_of(pid).map(|e| (&e.key, &e.value))
    }

    /// The value of `pid`, to change in place (the key stays: use
    /// [`set_key`](Self::set_key) for that).
    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut V> {
        let i = *self.index.get(pid)?;
        if i >= self.len {
            return None;
        }
        self.slots.get_mut(i)?.as_mut().map(|e| &mut e.value)
    }

    /// The smallest entry: its pid, key and value.
    pub fn peek(&self) -> Option<(Pid, &K, &V)> {
        self.entry(0).map(|e| (e.pid, &e.key, &e.value))
    }

    /// Every entry, in heap order (not sorted).
    pub fn iter(&self) -> impl Iterator<Item = (Pid, &K, &V)> + '_ {
        (0..self.len)
            .filter_map(move |i| self.entry(i))
            .map(|e| (e.pid, &e.key, &e.value))
    }

    /// Adds `pid` with `key` and `value`; gives them back when the heap is
    /// full or already holds `pid`.
    pub fn push(&mut self, pid: Pid, key: K, value: V) -> Result<(), (K, V)> {
        if self.len >= self.slots.len() || self.index.contains(pid) {
            return Err((key, value));
        }
        let i = self.len;
        let Some(slot) = self.slots.get_mut(i) else {
            return Err((key, value));
        };
        if self.index.insert(pid, i).is_err() {
            return Err((key, value));
        }
        *slot = Some(Entry { key, pid, value });
        self.len += 1;
        self.sift_up(i);
        Ok(())
    }

    /// Removes and returns the smallest entry.
    pub fn pop(&mut self) -> Option<(Pid, K, V)> {
        let e = self.take_at(0)?;
        Some((e.pid, e.key, e.value))
    }

    /// Removes `pid` and returns its key and value.
    pub fn remove(&mut self, pid: Pid) -> Option<(K, V)> {
        let i = *self.index.get(pid)?;
        let e = self.take_at(i)?;
        Some((e.key, e.value))
    }

    /// Gives `pid` a new key and moves it to its place; returns the old key.
    pub fn set_key(&mut self, pid: Pid, key: K) -> Option<K> {
        let i = *self.index.get(pid)?;
        if i >= self.len {
            return None;
        }
        let entry = self.slots.get_mut(i)?.as_mut()?;
        let old = core::mem::replace(&mut entry.key, key);
        self.restore(i);
        Some(old)
    }

    /// Removes the entry at slot `i`, filling the hole with the last one.
    fn take_at(&mut self, i: usize) -> Option<Entry<K, V>> {
        if i >= self.len {
            return None;
        }
        let e = self.slots.get_mut(i)?.take()?;
        let last = self.len - 1;
        self.len = last;
        self.index.remove(e.pid);
        if i < last {
            self.relocate(last, i);
            self.restore(i);
        }
        Some(e)
    }

    /// Moves the entry at `i`, whose key may be out of place, up or down
    /// to where it belongs.
    fn restore(&mut self, i: usize) {
        if self.sift_up(i) == i {
            self.sift_down(i);
        }
    }

    /// Moves the entry at `from` into the empty slot `to`: entries move
    /// into a hole one step each, so a sift updates each moved task's
    /// index once instead of twice per swap.
    fn relocate(&mut self, from: usize, to: usize) {
        let Some(e) = self.slots.get_mut(from).and_then(Option::take) else {
            return;
        };
        self.place(to, e);
    }

    /// Puts `e` into the empty slot `at` and records where it sits.
    fn place(&mut self, at: usize, e: Entry<K, V>) {
        if let Some(i) = self.index.get_mut(e.pid) {
            *i = at;
        }
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Some(e);
        }
    }

    /// Moves the entry at `i` towards the root while it goes before its
    /// parent; returns where it ends.
    fn sift_up(&mut self, i: usize) -> usize {
        let Some(moving) = self.slots.get_mut(i).and_then(Option::take) else {
            return i;
        };
        let mut hole = i;
        while hole > 0 {
            let parent = (hole - 1) / 2;
            if !self.entry(parent).is_some_and(|p| goes_before(&moving, p)) {
                break;
            }
            self.relocate(parent, hole);
            hole = parent;
        }
        self.place(hole, moving);
        hole
    }

    /// Moves the entry at `i` towards the leaves while a child goes before
    /// it.
    fn sift_down(&mut self, i: usize) {
        let Some(moving) = self.slots.get_mut(i).and_then(Option::take) else {
            return;
        };
        let mut hole = i;
        loop {
            let (left, right) = (2 * hole + 1, 2 * hole + 2);
            let (child, first) = match (self.entry(left), self.entry(right)) {
                (Some(l), Some(r)) if goes_before(r, l) => (right, r),
                (Some(l), _) => (left, l),
                _ => break,
            };
            if !goes_before(first, &moving) {
                break;
            }
            self.relocate(child, hole);
            hole = child;
        }
        self.place(hole, moving);
    }
}

/// Whether `x` goes before `y`: by key, then by pid.
fn goes_before<K: Ord, V>(x: &Entry<K, V>, y: &Entry<K, V>) -> bool {
    (&x.key, x.pid) < (&y.key, y.pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn pops_in_key_then_pid_order() {
        let mut h = TaskHeap::with_capacity(4).unwrap();
        assert_eq!(h.push(7, 30u64, 'a'), Ok(()));
        assert_eq!(h.push(3, 10, 'b'), Ok(()));
        assert_eq!(h.push(5, 10, 'c'), Ok(()));
        assert_eq!(
            h.push(5, 1, 'x'),
            Err((1, 'x')),
            "a pid is held at most once"
        );
        assert_eq!(h.push(9, 20, 'd'), Ok(()));
        assert_eq!(h.push(11, 0, 'e'), Err((0, 'e')), "full");
        assert_eq!(h.set_key(7, 5), Some(30));
        assert_eq!(h.remove(9), Some((20, 'd')));
        assert_eq!(h.pop(), Some((7, 5, 'a')));
        assert_eq!(h.pop(), Some((3, 10, 'b')));
        assert_eq!(h.pop(), Some((5, 10, 'c')));
        assert_eq!(h.pop(), None);
    }

    proptest! {
        #[test]
        fn taskheap_matches_a_sorted_map(ops in proptest::collection::vec((0u8..5, 0i32..24, 0u64..40), 0..300)) {
            let mut h = TaskHeap::with_capacity(16).unwrap();
            // pid -> (key, value); the smallest is the min of (key, pid).
            let mut model: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
            let min = |m: &BTreeMap<i32, (u64, u64)>| m.iter().map(|(p, (k, v))| (*k, *p, *v)).min();
            for (op, pid, key) in ops {
                match op {
                    0 | 1 => {
                        let refused = model.len() == 16 || model.contains_key(&pid);
                        let value = key * 1000 + pid as u64;
                        prop_assert_eq!(h.push(pid, key, value).is_err(), refused);
                        if !refused { model.insert(pid, (key, value)); }
                    }
                    2 => {
                        let want = min(&model).map(|(k, p, v)| (p, k, v));
                        if let Some((p, _, _)) = want { model.remove(&p); }
                        prop_assert_eq!(h.pop(), want);
                    }
                    3 => prop_assert_eq!(h.remove(pid), model.remove(&pid)),
                    _ => {
                        let want = model.get_mut(&pid).map(|e| core::mem::replace(&mut e.0, key));
                        prop_assert_eq!(h.set_key(pid, key), want);
                    }
                }
                prop_assert_eq!(h.len(), model.len());
                prop_assert_eq!(h.peek().map(|(p, k, v)| (*k, p, *v)), min(&model));
                for (p, (k, v)) in &model {
                    prop_assert_eq!(h.get(*p), Some((k, v)));
                }
                let mut seen: Vec<_> = h.iter().map(|(p, k, v)| (p, (*k, *v))).collect();
                seen.sort();
                prop_assert_eq!(seen, model.iter().map(|(p, e)| (*p, *e)).collect::<Vec<_>>());
            }
        }
    }
}
