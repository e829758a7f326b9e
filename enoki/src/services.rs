// SPDX-License-Identifier: GPL-2.0
//! What a scheduler can ask of the kernel: kick a CPU, preempt it now or
//! after a delay, the time. Schedulers never read clocks: the time is the
//! one stamped on the message being handled, so a replay sees the times
//! the recorded run saw.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::abi::HINT_MAX;
use super::backend;
use super::hint::HintData;
use super::scheduler::QueueId;
use super::sync::detect::MAX_CONTEXTS;
use super::types::{CpuId, Pid};

/// The time of the message each context (CPU, thread) is handling.
static MESSAGE_TIME: [AtomicU64; MAX_CONTEXTS] = [const { AtomicU64::new(0) }; MAX_CONTEXTS];
/// ... and of threads without a context.
static SHARED_MESSAGE_TIME: AtomicU64 = AtomicU64::new(0);

/// Where context `ctx` keeps its message time.
fn slot_of(ctx: Option<usize>) -> &'static AtomicU64 {
    ctx.and_then(|i| MESSAGE_TIME.get(i))
        .unwrap_or(&SHARED_MESSAGE_TIME)
}

/// Context `ctx`, this CPU's (thread's), starts handling a message
/// stamped `now`.
pub(super) fn set_message_time(ctx: Option<usize>, now: u64) {
    slot_of(ctx).store(now, Relaxed);
}

/// Handle to the kernel's services, given at init; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub(super) host: backend::Host,
}

impl Services {
    /// Wakes `cpu` if it is idle, so it asks for a task again; a busy CPU
    /// is left alone (its Enoki task keeps running while it has slice
    /// left, a CFS task outranks Enoki's).
    pub fn kick_cpu(&self, cpu: CpuId) {
        self.host.kick_cpu(cpu, false);
    }

    /// Makes `cpu` stop its current task and pick again.
    pub fn preempt_cpu(&self, cpu: CpuId) {
        self.host.kick_cpu(cpu, true);
    }

    /// Preempts `cpu` after `ns` nanoseconds (replaces an armed timer).
    pub fn set_timer(&self, cpu: CpuId, ns: u64) {
        self.host.set_timer(cpu, Some(ns));
    }

    /// When the message being handled was sent (monotonic, ns); 0 in a
    /// trace older than the timestamps.
    pub fn now(&self) -> u64 {
        slot_of(backend::context()).load(Relaxed)
    }

    /// Disarms `cpu`'s timer.
    pub fn cancel_timer(&self, cpu: CpuId) {
        self.host.set_timer(cpu, None);
    }

    /// Sends a reverse hint about `pid` (or 0) to the owner of hint queue
    /// `queue`, through the queue's to-user ring; `R` is the scheduler's
    /// `RevHint` (Enoki-C drops any other size). Never blocks: when the
    /// ring is full the hint is dropped and the ring counts it.
    pub fn send_rev_hint<R: HintData>(&self, queue: QueueId, pid: Pid, hint: &R) {
        let mut bytes = [0u8; HINT_MAX];
        hint.write(&mut bytes);
        self.host
            .rev_hint(queue, pid, bytes.get(..R::SIZE).unwrap_or(&bytes));
    }
}
