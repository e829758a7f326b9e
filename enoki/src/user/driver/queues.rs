// SPDX-License-Identifier: GPL-2.0
//! Hint queues as Enoki-C keeps them (`enoki_hints.c`): opened, sent
//! through and closed by a test or the simulator instead of `/dev/enoki`.

use super::super::super::abi::errno::{ENODEV, EOPNOTSUPP, ESRCH};
use super::super::super::abi::{kind, Msg};
use super::super::super::dispatch::Loaded;
use super::super::super::hint::HintData;
use super::super::super::scheduler::{EnokiScheduler, QueueId};
use super::super::super::types::{CpuId, Pid};
use super::super::super::upgrade::Refusal;
use super::Driver;

/// A hint queue the scheduler accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenQueue {
    pub id: QueueId,
    /// The thread that opened it.
    pub owner: Pid,
    /// ... and its process.
    pub owner_tgid: Pid,
}

impl OpenQueue {
    fn msg(&self, kind: u32, cpu: CpuId) -> Msg {
        let mut m = Msg::new(kind, cpu as i32);
        m.queue = self.id;
        if kind == kind::QUEUE_NEW {
            m.pid = self.owner;
            m.tgid = self.owner_tgid;
        }
        m
    }
}

/// The queues that outlive an upgrade from `S` to `T`: all of them when
/// `T` takes hints and sends reverse hints of the same types, none
/// otherwise.
pub(super) fn carried<S: EnokiScheduler, T: EnokiScheduler>(
    queues: std::vec::Vec<OpenQueue>,
) -> std::vec::Vec<OpenQueue> {
    if same_hints::<S, T>() {
        queues
    } else {
        std::vec::Vec::new()
    }
}

fn same_hints<S: EnokiScheduler, T: EnokiScheduler>() -> bool {
    T::MESSAGES.takes(kind::QUEUE_NEW)
        && <S::Hint as HintData>::FINGERPRINT == <T::Hint as HintData>::FINGERPRINT
        && <S::Hint as HintData>::SIZE == <T::Hint as HintData>::SIZE
        && <S::RevHint as HintData>::FINGERPRINT == <T::RevHint as HintData>::FINGERPRINT
        && <S::RevHint as HintData>::SIZE == <T::RevHint as HintData>::SIZE
}

impl<S: EnokiScheduler> Driver<S> {
    /// Thread `owner` of process `owner_tgid` opens a queue on CPU `cpu`:
    /// its id, or the negative errno the open fails with.
    pub fn open_queue(&mut self, owner: Pid, owner_tgid: Pid, cpu: CpuId) -> Result<QueueId, i64> {
        if !S::MESSAGES.takes(kind::QUEUE_NEW) {
            return Err(-EOPNOTSUPP);
        }
        self.queue_seq = self.queue_seq.saturating_add(1);
        let queue = OpenQueue {
            id: self.queue_seq,
            owner,
            owner_tgid,
        };
        let mut m = queue.msg(kind::QUEUE_NEW, cpu);
        self.send(&mut m);
        if m.ret < 0 {
            return Err(m.ret);
        }
        self.queues.push(queue);
        Ok(queue.id)
    }

    /// A hint about `pid` through `queue`, from CPU `cpu`: 0, or the
    /// negative errno Enoki-C answers (a task it does not know: ESRCH).
    pub fn send_hint(&mut self, queue: QueueId, pid: Pid, hint: &S::Hint, cpu: CpuId) -> i64 {
        if !self.queues.iter().any(|q| q.id == queue) {
            return -ENODEV;
        }
        let Some(task_cpu) = self.tasks.get(&pid).map(|t| t.last_cpu) else {
            return -ESRCH;
        };
        let mut m = self.msg(kind::HINT, cpu, pid);
        m.queue = queue;
        m.task_cpu = task_cpu as i32;
        let mut bytes = [0u8; super::super::super::abi::HINT_MAX];
        hint.write(&mut bytes);
        m.set_hint_bytes(bytes.get(..<S::Hint as HintData>::SIZE).unwrap_or(&bytes));
        self.send(&mut m);
        m.ret.min(0)
    }

    /// `queue`'s owner closes it, on CPU `cpu`.
    pub fn close_queue(&mut self, queue: QueueId, cpu: CpuId) {
        let Some(at) = self.queues.iter().position(|q| q.id == queue) else {
            return;
        };
        let q = self.queues.remove(at);
        let mut m = q.msg(kind::QUEUE_GONE, cpu);
        self.send(&mut m);
    }

    /// The open queues.
    pub fn queues(&self) -> &[OpenQueue] {
        &self.queues
    }

    /// An upgrade to `T` starts: if the queues outlive it, `new` must take
    /// each one.
    pub(super) fn introduce_queues<T: EnokiScheduler>(
        &self,
        new: &Loaded<T>,
        on: CpuId,
    ) -> Result<(), Refusal> {
        if !same_hints::<S, T>() {
            return Ok(());
        }
        for q in &self.queues {
            let mut m = q.msg(kind::QUEUE_NEW, on);
            m.now = self.now;
            new.handle(&mut m);
            if m.ret < 0 {
                return Err(Refusal::QueueRefused { queue: q.id });
            }
        }
        Ok(())
    }
}
