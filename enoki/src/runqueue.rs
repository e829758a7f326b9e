// SPDX-License-Identifier: GPL-2.0
//! Per-CPU run queues: one queue per CPU, each behind its own libEnoki
//! [`SpinLock`] (so record and replay see every access), with the locking
//! patterns schedulers share.
//!
//! - One queue at a time: [`RunQueues::lock`], [`RunQueues::lock_if`].
//! - Two queues, for moving a task: [`RunQueues::lock_pair`] always takes
//!   the lower CPU's lock first, so two CPUs moving tasks towards each other
//!   cannot deadlock. A scheduler that needs another lock as well takes the
//!   run queues first.
//! - "Which queue holds this task": [`RunQueues::lock_holder`] locks the
//!   queues one at a time until one says it holds the task;
//!   [`RunQueues::lock_holder_and`] then also locks a destination queue,
//!   searching again when the task moved between the search and the
//!   locking.
//!
//! Nothing here allocates after [`RunQueues::try_new_with`] or panics: a CPU
//! number out of range is `None`.

use core::ops::Range;

use super::collections::{AllocError, FixedVec};
use super::sync::{SpinLock, SpinLockGuard};
use super::types::CpuId;

/// Attempts at locking the queue that holds a task while the task keeps
/// moving between queues (each attempt is a search and a locking).
pub const LOCK_RETRIES: usize = 8;

/// A run queue, locked.
pub type QueueGuard<'a, Q> = SpinLockGuard<'a, Q>;

/// One `Q` per CPU, each behind its own lock.
pub struct RunQueues<Q> {
    queues: FixedVec<SpinLock<Q>>,
}

/// Where [`RunQueues::lock_holder_and`] found a task, relative to the
/// destination queue, with the locks held.
#[must_use = "the queues are unlocked at once if the guards are not kept"]
pub enum Holder<'a, Q> {
    /// The destination queue holds it.
    Same(QueueGuard<'a, Q>),
    /// Another queue holds it.
    Apart {
        /// The CPU of the queue that holds it.
        from: CpuId,
        /// That queue.
        src: QueueGuard<'a, Q>,
        /// The destination queue.
        dst: QueueGuard<'a, Q>,
    },
}

impl<Q> RunQueues<Q> {
    /// `nr_cpus` queues, CPU `i`'s made by `f(i)` (allocates: init only).
    pub fn try_new_with<E: From<AllocError>>(
        nr_cpus: usize,
        mut f: impl FnMut(CpuId) -> Result<Q, E>,
    ) -> Result<Self, E> {
        Ok(RunQueues {
            queues: FixedVec::try_new_with(nr_cpus, |cpu| f(cpu).map(SpinLock::new))?,
        })
    }

    /// The CPUs with a queue, `0..nr_cpus`.
    pub fn cpus(&self) -> Range<CpuId> {
        0..self.queues.len()
    }

    /// Locks `cpu`'s queue.
    #[must_use = "the queues are unlocked at once if the guards are not kept"]
    pub fn lock(&self, cpu: CpuId) -> Option<QueueGuard<'_, Q>> {
        Some(self.queues.get(cpu)?.lock())
    }

    /// Locks `cpu`'s queue and keeps it locked if `holds` says yes.
    #[must_use = "the queues are unlocked at once if the guards are not kept"]
    pub fn lock_if(&self, cpu: CpuId, holds: impl FnOnce(&Q) -> bool) -> Option<QueueGuard<'_, Q>> {
        let queue = self.lock(cpu)?;
        holds(&queue).then_some(queue)
    }

    /// Locks the queues of `a` and `b`, the lower CPU first; `None` when
    /// `a == b` (one lock cannot be held twice) or either is out of range.
    #[must_use = "the queues are unlocked at once if the guards are not kept"]
    pub fn lock_pair(&self, a: CpuId, b: CpuId) -> Option<(QueueGuard<'_, Q>, QueueGuard<'_, Q>)> {
        let (qa, qb) = (self.queues.get(a)?, self.queues.get(b)?);
        match a.cmp(&b) {
            core::cmp::Ordering::Less => {
                let ga = qa.lock();
                Some((ga, qb.lock()))
            }
            core::cmp::Ordering::Greater => {
                let gb = qb.lock();
                Some((qa.lock(), gb))
            }
            core::cmp::Ordering::Equal => None,
        }
    }

    /// The first queue `holds` says yes to, locked: `hint`'s first, then
    /// every queue in CPU order, one lock at a time. A task moving while
    /// the search runs can be missed: callers that know it exists search
    /// again.
    #[must_use = "the queues are unlocked at once if the guards are not kept"]
    pub fn lock_holder(
        &self,
        hint: Option<CpuId>,
        holds: impl Fn(&Q) -> bool,
    ) -> Option<(CpuId, QueueGuard<'_, Q>)> {
        if let Some(found) = hint.and_then(|cpu| Some((cpu, self.lock_if(cpu, &holds)?))) {
            return Some(found);
        }
        self.cpus()
            .filter(|cpu| Some(*cpu) != hint)
            .find_map(|cpu| Some((cpu, self.lock_if(cpu, &holds)?)))
    }

    /// The queue `holds` says yes to and `to`'s queue, both locked (lower
    /// CPU first): for moving a task to `to`. `find` searches (e.g.
    /// [`RunQueues::lock_holder`], or a scheduler's own search that also
    /// places new tasks); when the task moved between the search and the
    /// locking, it searches again, up to [`LOCK_RETRIES`] times.
    #[must_use = "the queues are unlocked at once if the guards are not kept"]
    pub fn lock_holder_and<'a>(
        &'a self,
        to: CpuId,
        holds: impl Fn(&Q) -> bool,
        mut find: impl FnMut() -> Option<(CpuId, QueueGuard<'a, Q>)>,
    ) -> Option<Holder<'a, Q>> {
        for _ in 0..LOCK_RETRIES {
            let (from, queue) = find()?;
            if from == to {
                return Some(Holder::Same(queue));
            }
            drop(queue);
            let (src, dst) = self.lock_pair(from, to)?;
            if holds(&src) {
                return Some(Holder::Apart { from, src, dst });
            }
        }
        None
    }

    /// The first `Some` of `f` over the queues in CPU order, each locked
    /// only while `f` looks at it.
    pub fn find_map<T>(&self, mut f: impl FnMut(CpuId, &mut Q) -> Option<T>) -> Option<T> {
        self.cpus().find_map(|cpu| f(cpu, &mut *self.lock(cpu)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use std::vec::Vec;

    /// Queues of task ids.
    fn queues(contents: &[&[i32]]) -> RunQueues<Vec<i32>> {
        RunQueues::try_new_with(contents.len(), |cpu| {
            Ok::<_, AllocError>(contents.get(cpu).map_or_else(Vec::new, |c| c.to_vec()))
        })
        .unwrap()
    }

    #[test]
    fn locks_one_queue_and_out_of_range_is_none() {
        let q = queues(&[&[1], &[2, 3]]);
        assert_eq!(q.cpus(), 0..2);
        assert_eq!(*q.lock(1).unwrap(), [2, 3]);
        assert!(q.lock(2).is_none());
        assert!(q.lock_if(0, |q| q.contains(&1)).is_some());
        assert!(q.lock_if(0, |q| q.contains(&2)).is_none());
    }

    #[test]
    fn pair_is_in_argument_order_and_never_the_same_queue() {
        let q = queues(&[&[1], &[2], &[3]]);
        let (a, b) = q.lock_pair(2, 0).unwrap();
        assert_eq!((a[0], b[0]), (3, 1));
        drop((a, b));
        assert!(q.lock_pair(1, 1).is_none());
        assert!(q.lock_pair(1, 3).is_none());
    }

    #[test]
    fn finds_the_holder_hint_first() {
        let q = queues(&[&[7], &[], &[7, 8]]);
        let holds = |id| move |q: &Vec<i32>| q.contains(&id);
        assert_eq!(q.lock_holder(None, holds(7)).unwrap().0, 0);
        assert_eq!(q.lock_holder(Some(2), holds(7)).unwrap().0, 2);
        assert_eq!(q.lock_holder(Some(1), holds(8)).unwrap().0, 2);
        assert!(q.lock_holder(Some(9), holds(9)).is_none());
        assert_eq!(q.find_map(|cpu, q| q.contains(&8).then_some(cpu)), Some(2));
    }

    #[test]
    fn holder_and_destination() {
        let q = queues(&[&[1], &[2]]);
        let holds = |id| move |q: &Vec<i32>| q.contains(&id);
        let q = &q;
        let search = |id| move || q.lock_holder(None, holds(id));
        assert!(matches!(
            q.lock_holder_and(1, holds(2), search(2)),
            Some(Holder::Same(_))
        ));
        match q.lock_holder_and(1, holds(1), search(1)) {
            Some(Holder::Apart {
                from,
                mut src,
                mut dst,
            }) => {
                assert_eq!(from, 0);
                dst.extend(src.drain(..));
            }
            _ => panic!("task 1 is on CPU 0"),
        }
        assert_eq!(*q.lock(1).unwrap(), [2, 1]);
        assert!(q.lock_holder_and(0, holds(5), search(5)).is_none());
    }

    /// Generous: a deadlock fails the test instead of hanging it.
    fn within_timeout(f: impl FnOnce() + Send + 'static) {
        crate::user::within_timeout(Duration::from_secs(60), f);
    }

    #[test]
    fn threads_moving_tasks_both_ways_do_not_deadlock() {
        within_timeout(|| {
            let q = Arc::new(queues(&[&[0; 64], &[1; 64], &[2; 64]]));
            let movers: Vec<_> = [(0, 1), (1, 0), (2, 0), (0, 2)]
                .into_iter()
                .map(|(from, to)| {
                    let q = Arc::clone(&q);
                    std::thread::spawn(move || {
                        for _ in 0..20_000 {
                            if let Some((mut src, mut dst)) = q.lock_pair(from, to) {
                                if let Some(task) = src.pop() {
                                    dst.push(task);
                                }
                            }
                        }
                    })
                })
                .collect();
            movers.into_iter().for_each(|m| m.join().unwrap());
            let total: usize = q.cpus().map(|cpu| q.lock(cpu).unwrap().len()).sum();
            assert_eq!(total, 3 * 64);
        });
    }

    #[test]
    fn holder_search_follows_a_task_that_keeps_moving() {
        within_timeout(|| {
            let q = Arc::new(queues(&[&[42], &[], &[], &[]]));
            let mover = {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for i in 0..20_000usize {
                        let (from, to) = (i % 4, (i + 1) % 4);
                        if let Some((mut src, mut dst)) = q.lock_pair(from, to) {
                            dst.append(&mut src);
                        }
                    }
                })
            };
            let holds = |q: &Vec<i32>| q.contains(&42);
            for _ in 0..20_000 {
                match q.lock_holder_and(3, holds, || q.lock_holder(None, holds)) {
                    Some(Holder::Same(dst)) => assert!(holds(&dst)),
                    Some(Holder::Apart { src, .. }) => assert!(holds(&src)),
                    None => {} // outran LOCK_RETRIES times: allowed
                }
            }
            mover.join().unwrap();
        });
    }

    proptest::proptest! {
        /// Whatever the queues hold, the holder found is one that holds the
        /// task (the hint's when it does), and none is found only when no
        /// queue holds it.
        #[test]
        fn holder_is_a_queue_that_holds_the_task(
            contents in proptest::collection::vec(proptest::collection::vec(0..8i32, 0..4), 1..6),
            task in 0..8i32,
            hint in proptest::option::of(0..8usize),
            to in 0..6usize,
        ) {
            let q = RunQueues::try_new_with(contents.len(), |cpu| {
                Ok::<_, AllocError>(contents[cpu].clone())
            }).unwrap();
            let holds = |q: &Vec<i32>| q.contains(&task);
            let holders: Vec<usize> =
                (0..contents.len()).filter(|c| contents[*c].contains(&task)).collect();
            match q.lock_holder(hint, holds) {
                Some((cpu, guard)) => {
                    proptest::prop_assert!(holds(&guard));
                    let want = hint.filter(|h| holders.contains(h)).or(holders.first().copied());
                    proptest::prop_assert_eq!(Some(cpu), want);
                }
                None => proptest::prop_assert!(holders.is_empty()),
            }
            match q.lock_holder_and(to, holds, || q.lock_holder(hint, holds)) {
                Some(Holder::Same(_)) => proptest::prop_assert!(holders.contains(&to)),
                Some(Holder::Apart { from, src, .. }) => {
                    proptest::prop_assert!(from != to && holds(&src));
                }
                None => proptest::prop_assert!(holders.is_empty() || to >= contents.len()),
            };
        }
    }
}
