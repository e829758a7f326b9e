// SPDX-License-Identifier: GPL-2.0
//! Hinting threads into the locality scheduler's groups
//! (`schedulers/locality`) and reading back each group's home CPU.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use enoki_locality::{GroupHint, GroupHome};

use crate::{Error, HintQueue, QueueStats, RevHint};

/// A queue to the locality scheduler.
pub type Queue = HintQueue<GroupHint, GroupHome>;

/// What [`hint_groups`] needs of a queue; tests stand in a fake for the
/// device.
pub trait GroupQueue {
    /// As [`HintQueue::push`].
    fn push(&mut self, pid: i32, hint: &GroupHint) -> Result<(), Error>;
    /// As [`HintQueue::enter`].
    fn enter(&mut self) -> Result<u32, Error>;
    /// As [`HintQueue::recv`].
    fn recv(&mut self, wait: Option<Duration>) -> Result<Option<RevHint<GroupHome>>, Error>;
    /// As [`HintQueue::stats`].
    fn stats(&self) -> Result<QueueStats, Error>;
}

impl GroupQueue for Queue {
    fn push(&mut self, pid: i32, hint: &GroupHint) -> Result<(), Error> {
        HintQueue::push(self, pid, hint)
    }
    fn enter(&mut self) -> Result<u32, Error> {
        HintQueue::enter(self)
    }
    fn recv(&mut self, wait: Option<Duration>) -> Result<Option<RevHint<GroupHome>>, Error> {
        HintQueue::recv(self, wait)
    }
    fn stats(&self) -> Result<QueueStats, Error> {
        HintQueue::stats(self)
    }
}

/// How long [`hint_groups`] waits for the scheduler's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Every hint's answer, each within this long; a missing one is an
    /// error.
    Each(Duration),
    /// Whatever arrives within this long in all; none is an error.
    Total(Duration),
}

/// Hints each thread (`tids[i]`: its id and group) in one batch, then
/// reads the answers as `wait` says: each group's home CPU, by group. An
/// error if the scheduler took fewer hints than all.
pub fn hint_groups<Q: GroupQueue>(
    queue: &mut Q,
    tids: &[(i32, u32)],
    wait: Wait,
) -> Result<BTreeMap<u32, u32>> {
    push_all(queue, tids)?;
    let start = Instant::now();
    let mut homes = BTreeMap::new();
    for _ in tids {
        let left = match wait {
            Wait::Each(each) => each,
            Wait::Total(total) => total.saturating_sub(start.elapsed()),
        };
        match (queue.recv(Some(left)).context("reading the answers")?, wait) {
            (Some(a), _) => homes.insert(a.hint.group, a.hint.cpu),
            (None, Wait::Each(_)) => bail!("no answer from the scheduler on the reverse ring"),
            (None, Wait::Total(_)) => break,
        };
    }
    if let Wait::Total(total) = wait {
        ensure!(
            !homes.is_empty(),
            "the scheduler answered none of {} hints within {total:?}",
            tids.len()
        );
    }
    Ok(homes)
}

/// Pushes every hint and rings the doorbell once; an error unless the
/// scheduler took them all.
fn push_all<Q: GroupQueue>(queue: &mut Q, tids: &[(i32, u32)]) -> Result<()> {
    for (tid, group) in tids {
        queue
            .push(*tid, &GroupHint { group: *group })
            .with_context(|| format!("queueing the hint for thread {tid}"))?;
    }
    let taken = queue
        .enter()
        .context("handing the hints to the scheduler")?;
    if usize::try_from(taken).ok() != Some(tids.len()) {
        bail!(
            "the scheduler took {taken} of {} hints: {:?}",
            tids.len(),
            queue.stats()?
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Takes `take` of the hints pushed and answers with `answers`.
    #[derive(Default)]
    struct Fake {
        pushed: Vec<(i32, u32)>,
        take: Option<u32>,
        answers: VecDeque<GroupHome>,
        waits: Vec<Duration>,
    }

    impl GroupQueue for Fake {
        fn push(&mut self, pid: i32, hint: &GroupHint) -> Result<(), Error> {
            self.pushed.push((pid, hint.group));
            Ok(())
        }
        fn enter(&mut self) -> Result<u32, Error> {
            let all = u32::try_from(self.pushed.len()).unwrap_or(u32::MAX);
            Ok(self.take.unwrap_or(all))
        }
        fn recv(&mut self, wait: Option<Duration>) -> Result<Option<RevHint<GroupHome>>, Error> {
            self.waits.extend(wait);
            Ok(self
                .answers
                .pop_front()
                .map(|hint| RevHint { pid: 0, hint }))
        }
        fn stats(&self) -> Result<QueueStats, Error> {
            Ok(QueueStats::default())
        }
    }

    fn fake(answers: &[(u32, u32)]) -> Fake {
        Fake {
            answers: answers
                .iter()
                .map(|&(group, cpu)| GroupHome { group, cpu })
                .collect(),
            ..Fake::default()
        }
    }

    const TIDS: [(i32, u32); 3] = [(10, 1), (11, 1), (12, 2)];
    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn every_answer_comes_back_by_group() {
        for wait in [Wait::Each(TEN), Wait::Total(TEN)] {
            let mut q = fake(&[(1, 3), (1, 3), (2, 5)]);
            let homes = hint_groups(&mut q, &TIDS, wait).expect("answered");
            assert_eq!(homes, BTreeMap::from([(1, 3), (2, 5)]));
            assert_eq!(q.pushed, TIDS);
        }
    }

    #[test]
    fn each_needs_every_answer_and_waits_the_whole_time_for_each() {
        let mut q = fake(&[(1, 3), (2, 5)]);
        let e = hint_groups(&mut q, &TIDS, Wait::Each(TEN)).expect_err("one missing");
        assert!(e.to_string().contains("no answer"), "{e}");
        assert_eq!(q.waits, [TEN; 3]);
    }

    #[test]
    fn total_takes_what_arrives_within_one_deadline() {
        let mut q = fake(&[(2, 5)]);
        let homes = hint_groups(&mut q, &TIDS, Wait::Total(TEN)).expect("one answer");
        assert_eq!(homes, BTreeMap::from([(2, 5)]));
        assert!(q.waits.windows(2).all(|w| w.get(1) <= w.first()));
        let e = hint_groups(&mut fake(&[]), &TIDS, Wait::Total(TEN)).expect_err("none");
        assert!(e.to_string().contains("answered none of 3"), "{e}");
    }

    #[test]
    fn a_hint_not_taken_is_an_error() {
        let mut q = Fake {
            take: Some(2),
            ..fake(&[(1, 3)])
        };
        let e = hint_groups(&mut q, &TIDS, Wait::Each(TEN)).expect_err("refused");
        assert!(e.to_string().contains("took 2 of 3"), "{e}");
    }
}
