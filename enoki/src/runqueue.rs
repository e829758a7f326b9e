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
//! Nothing here allocates after [`RunQueues::try_new_with`] or panics.
//! Locking fails as [`SpinLock::lock`] does, and for a CPU number out of
//! range (a scheduler bug, reported as such).

use core::ops::Range;
use core::panic::Location;

use super::collections::{AllocError, FixedVec};
use super::fault::{Failed, Site};
use super::sync::{detect, SpinLock, SpinLockGuard};
use super::types::CpuId;

/// Attempts at locking the queue that holds a task while the task keeps
/// moving between queues (each attempt is a search and a locking).
pub const LOCK_RETRIES: usize = 8;

/// A run queue, locked.
pub type QueueGuard<'a, Q> = SpinLockGuard<'a, Q>;

/// Two run queues, locked.
pub type Pair<'a, Q> = (QueueGuard<'a, Q>, QueueGuard<'a, Q>);

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

    fn queue(&self, cpu: CpuId, at: Site) -> Result<&SpinLock<Q>, Failed> {
        self.queues
            .get(cpu)
            .ok_or_else(|| detect::no_such_cpu(cpu, at))
    }

    /// Locks `cpu`'s queue. Fails as [`SpinLock::lock`] does, and for a
    /// CPU the machine does not have.
    #[track_caller]
    pub fn lock(&self, cpu: CpuId) -> Result<QueueGuard<'_, Q>, Failed> {
        let at = Location::caller();
        self.queue(cpu, at)?.lock_at(at)
    }

    /// Locks `cpu`'s queue and keeps it locked if `holds` says yes.
    #[track_caller]
    pub fn lock_if(
        &self,
        cpu: CpuId,
        holds: impl FnOnce(&Q) -> bool,
    ) -> Result<Option<QueueGuard<'_, Q>>, Failed> {
        self.lock_if_at(cpu, holds, Location::caller())
    }

    fn lock_if_at(
        &self,
        cpu: CpuId,
        holds: impl FnOnce(&Q) -> bool,
        at: Site,
    ) -> Result<Option<QueueGuard<'_, Q>>, Failed> {
        let queue = self.queue(cpu, at)?.lock_at(at)?;
        Ok(holds(&queue).then_some(queue))
    }

    /// Locks the queues of `a` and `b`, the lower CPU first; `None` when
    /// `a == b` (one lock cannot be held twice).
    #[track_caller]
    pub fn lock_pair(&self, a: CpuId, b: CpuId) -> Result<Option<Pair<'_, Q>>, Failed> {
        self.lock_pair_at(a, b, Location::caller())
    }

    fn lock_pair_at(&self, a: CpuId, b: CpuId, at: Site) -> Result<Option<Pair<'_, Q>>, Failed> {
        let (qa, qb) = (self.queue(a, at)?, self.queue(b, at)?);
        Ok(match a.cmp(&b) {
            core::cmp::Ordering::Less => {
                let ga = qa.lock_at(at)?;
                Some((ga, qb.lock_at(at)?))
            }
            core::cmp::Ordering::Greater => {
                let gb = qb.lock_at(at)?;
                Some((qa.lock_at(at)?, gb))
            }
            core::cmp::Ordering::Equal => None,
        })
    }

    /// The first queue `holds` says yes to, locked: `hint`'s first, then
    /// every queue in CPU order, one lock at a time. A task moving while
    /// the search runs can be missed: callers that know it exists search
    /// again.
    #[track_caller]
    pub fn lock_holder(
        &self,
        hint: Option<CpuId>,
        holds: impl Fn(&Q) -> bool,
    ) -> Result<Option<(CpuId, QueueGuard<'_, Q>)>, Failed> {
        let at = Location::caller();
        let hint = hint.filter(|cpu| self.cpus().contains(cpu));
        let order = hint
            .into_iter()
            .chain(self.cpus().filter(|cpu| Some(*cpu) != hint));
        for cpu in order {
            if let Some(queue) = self.lock_if_at(cpu, &holds, at)? {
                return Ok(Some((cpu, queue)));
            }
        }
        Ok(None)
    }

    /// The queue `holds` says yes to and `to`'s queue, both locked (lower
    /// CPU first): for moving a task to `to`. `find` searches (e.g.
    /// [`RunQueues::lock_holder`], or a scheduler's own search that also
    /// places new tasks); when the task moved between the search and the
    /// locking, it searches again, up to [`LOCK_RETRIES`] times.
    #[track_caller]
    pub fn lock_holder_and<'a>(
        &'a self,
        to: CpuId,
        holds: impl Fn(&Q) -> bool,
        mut find: impl FnMut() -> Result<Option<(CpuId, QueueGuard<'a, Q>)>, Failed>,
    ) -> Result<Option<Holder<'a, Q>>, Failed> {
        let at = Location::caller();
        for _ in 0..LOCK_RETRIES {
            let Some((from, queue)) = find()? else {
                return Ok(None);
            };
            if from == to {
                return Ok(Some(Holder::Same(queue)));
            }
            drop(queue);
            let Some((src, dst)) = self.lock_pair_at(from, to, at)? else {
                return Ok(None);
            };
            if holds(&src) {
                return Ok(Some(Holder::Apart { from, src, dst }));
            }
        }
        Ok(None)
    }

    /// The first `Some` of `f` over the queues in CPU order, each locked
    /// only while `f` looks at it.
    #[track_caller]
    pub fn find_map<T>(
        &self,
        mut f: impl FnMut(CpuId, &mut Q) -> Option<T>,
    ) -> Result<Option<T>, Failed> {
        let at = Location::caller();
        for cpu in self.cpus() {
            if let Some(found) = f(cpu, &mut *self.queue(cpu, at)?.lock_at(at)?) {
                return Ok(Some(found));
            }
        }
        Ok(None)
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
    fn locks_one_queue_and_out_of_range_fails_naming_the_caller() {
        let q = queues(&[&[1], &[2, 3]]);
        assert_eq!(q.cpus(), 0..2);
        assert_eq!(*q.lock(1).unwrap(), [2, 3]);
        assert!(q.lock_if(0, |q| q.contains(&1)).unwrap().is_some());
        assert!(q.lock_if(0, |q| q.contains(&2)).unwrap().is_none());
        let _ = crate::sync::detect::take_fault();
        let line = line!() + 1;
        assert!(q.lock(2).is_err());
        let fault = crate::sync::detect::take_fault().expect("a fault is left");
        assert_eq!(fault.kind, crate::FaultKind::NoSuchCpu);
        let p = fault.parties().next().unwrap();
        assert_eq!(
            (p.lock, p.at.map(|l| (l.file(), l.line()))),
            (2, Some((file!(), line)))
        );
    }

    #[test]
    fn pair_is_in_argument_order_and_never_the_same_queue() {
        let q = queues(&[&[1], &[2], &[3]]);
        let (a, b) = q.lock_pair(2, 0).unwrap().unwrap();
        assert_eq!((a[0], b[0]), (3, 1));
        drop((a, b));
        assert!(q.lock_pair(1, 1).unwrap().is_none());
        assert!(q.lock_pair(1, 3).is_err());
    }

    #[test]
    fn finds_the_holder_hint_first() {
        let q = queues(&[&[7], &[], &[7, 8]]);
        let holds = |id| move |q: &Vec<i32>| q.contains(&id);
        let found = |hint, id| q.lock_holder(hint, holds(id)).unwrap().map(|(cpu, _)| cpu);
        assert_eq!(found(None, 7), Some(0));
        assert_eq!(found(Some(2), 7), Some(2));
        assert_eq!(found(Some(1), 8), Some(2));
        assert_eq!(found(Some(9), 9), None);
        assert_eq!(
            q.find_map(|cpu, q| q.contains(&8).then_some(cpu)),
            Ok(Some(2))
        );
    }

    #[test]
    fn holder_and_destination() {
        let q = queues(&[&[1], &[2]]);
        let holds = |id| move |q: &Vec<i32>| q.contains(&id);
        let q = &q;
        let search = |id| move || q.lock_holder(None, holds(id));
        assert!(matches!(
            q.lock_holder_and(1, holds(2), search(2)),
            Ok(Some(Holder::Same(_)))
        ));
        match q.lock_holder_and(1, holds(1), search(1)) {
            Ok(Some(Holder::Apart {
                from,
                mut src,
                mut dst,
            })) => {
                assert_eq!(from, 0);
                dst.extend(src.drain(..));
            }
            _ => panic!("task 1 is on CPU 0"),
        }
        assert_eq!(*q.lock(1).unwrap(), [2, 1]);
        assert!(matches!(
            q.lock_holder_and(0, holds(5), search(5)),
            Ok(None)
        ));
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
                            if let Some((mut src, mut dst)) = q.lock_pair(from, to).unwrap() {
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
                        if let Some((mut src, mut dst)) = q.lock_pair(from, to).unwrap() {
                            dst.append(&mut src);
                        }
                    }
                })
            };
            let holds = |q: &Vec<i32>| q.contains(&42);
            for _ in 0..20_000 {
                match q
                    .lock_holder_and(3, holds, || q.lock_holder(None, holds))
                    .unwrap()
                {
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
            match q.lock_holder(hint, holds).unwrap() {
                Some((cpu, guard)) => {
                    proptest::prop_assert!(holds(&guard));
                    let want = hint.filter(|h| holders.contains(h)).or(holders.first().copied());
                    proptest::prop_assert_eq!(Some(cpu), want);
                }
                None => proptest::prop_assert!(holders.is_empty()),
            }
            match q.lock_holder_and(to, holds, || q.lock_holder(hint, holds)) {
                Ok(Some(Holder::Same(_))) => proptest::prop_assert!(holders.contains(&to)),
                Ok(Some(Holder::Apart { from, src, .. })) => {
                    proptest::prop_assert!(from != to && holds(&src));
                }
                Ok(None) => proptest::prop_assert!(holders.is_empty()),
                Err(_) => proptest::prop_assert!(to >= contents.len() && !holders.is_empty()),
            };
        }
    }
}
