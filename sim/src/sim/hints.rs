// SPDX-License-Identifier: MIT OR Apache-2.0
//! The spec's hints: sent through one hint queue, as an application would
//! through `/dev/enoki`, so that hint-driven schedulers run on the host.

use anyhow::{bail, Result};
use enoki::{EnokiScheduler, HintData};

use super::{Ev, Sim};

/// The owner of the queue hints go through unless `own_queue`: a process
/// that is not one of the spec's tasks.
const OUTSIDER: enoki::Pid = 1;

impl<S: EnokiScheduler> Sim<S> {
    /// Queues the spec's hints.
    pub(super) fn schedule_hints(&mut self) {
        let times: Vec<u64> = self.spec.hints.iter().map(|h| h.at_ms).collect();
        for (idx, at_ms) in times.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::Hint { idx });
        }
    }

    /// The spec's hint `idx`, about every live task of its target; a hint
    /// the scheduler cannot read at all ends the run.
    pub(super) fn send_hints(&mut self, idx: usize) {
        if let Err(e) = self.try_send_hints(idx) {
            self.refused = Some(format!("{e:#}"));
        }
    }

    fn try_send_hints(&mut self, idx: usize) -> Result<()> {
        let h = self.spec.hints[idx].clone();
        let bytes = h.bytes()?;
        if bytes.len() != <S::Hint as HintData>::SIZE {
            bail!(
                "hint {:?}: {} bytes, but {} reads {}-byte hints",
                h.hex,
                bytes.len(),
                S::NAME,
                <S::Hint as HintData>::SIZE
            );
        }
        let hint = <S::Hint as HintData>::read(&bytes);
        self.on(0);
        for pid in self.targets(&h.target) {
            let owner = if h.own_queue {
                self.tgid(self.tasks[&pid].group, pid)
            } else {
                OUTSIDER
            };
            let queue = self.hint_queue(owner)?;
            if self.d.send_hint(queue, pid, &hint, 0) == 0 {
                self.hints_taken += 1;
            } else {
                self.hints_refused += 1;
            }
        }
        Ok(())
    }

    /// The queue process `owner` opened (on CPU 0), opened at its first
    /// hint.
    fn hint_queue(&mut self, owner: enoki::Pid) -> Result<enoki::QueueId> {
        if let Some(&q) = self.hint_queues.get(&owner) {
            return Ok(q);
        }
        match self.d.open_queue(owner, owner, 0) {
            Ok(q) => {
                self.hint_queues.insert(owner, q);
                Ok(q)
            }
            Err(errno) => bail!("{} refused a hint queue (errno {})", S::NAME, -errno),
        }
    }
}
