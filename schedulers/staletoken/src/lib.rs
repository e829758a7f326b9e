// SPDX-License-Identifier: GPL-2.0
//! A deliberately wrong scheduler, for tests: per-CPU FIFO queues that
//! never drop a token when its task blocks, changes affinity or dies, and
//! queue again every token handed back. Its stale tokens must be caught by
//! Enoki-C's own checks (the task is not queued, or not allowed on that
//! CPU) and never handed back when they cannot work, so that the queues
//! drain and every task keeps running.
#![forbid(unsafe_code)]

use enoki::{
    CpuId, EnokiScheduler, FixedVec, InitContext, InitError, NoHint, NotTaken, PickError, Pid,
    PrevTask, Result, Ring, Schedulable, SpinLock, TaskError, TaskInfo,
};

/// The deliberately wrong scheduler.
pub struct StaleToken {
    queues: FixedVec<SpinLock<Ring<Schedulable>>>,
}

impl StaleToken {
    fn push(&self, token: Schedulable) -> Result<(), NotTaken> {
        match self.queues.get(token.cpu()) {
            Some(q) => Ok(q.lock()?.push_back(token)?),
            None => Err(token.into()),
        }
    }
}

impl EnokiScheduler for StaleToken {
    const NAME: &'static str = "staletoken";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&[])?;
        // Room for a stale token of every task besides its live one.
        let capacity = ctx.max_tasks.saturating_mul(2);
        Ok(StaleToken {
            queues: FixedVec::try_new_with(ctx.topology.nr_cpus(), |_| {
                Ring::with_capacity(capacity).map(SpinLock::new)
            })?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, _prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        match self.queues.get(cpu) {
            Some(q) => Ok(q.lock()?.pop_front()),
            None => Ok(None),
        }
    }

    fn pnt_err(
        &self,
        _cpu: CpuId,
        _pid: Pid,
        _err: PickError,
        sched: Option<Schedulable>,
    ) -> Result {
        enoki::requeue(sched, |token| self.push(token))
    }

    fn task_new(&self, _task: &TaskInfo) -> Result<(), TaskError> {
        Ok(())
    }

    fn task_wakeup(&self, _pid: Pid, _runtime: u64, sched: Schedulable) -> Result<(), NotTaken> {
        self.push(sched)
    }

    fn task_preempt(
        &self,
        _pid: Pid,
        _runtime: u64,
        _yielded: bool,
        sched: Schedulable,
    ) -> Result<(), NotTaken> {
        self.push(sched)
    }

    /// The bug: the token stays queued.
    fn task_blocked(&self, _pid: Pid, _runtime: u64, _cpu: CpuId, _sleeping: bool) -> Result {
        Ok(())
    }

    /// The bug: the token stays queued.
    fn task_dead(&self, _pid: Pid) -> Result {
        Ok(())
    }
}

enoki::export_scheduler!(StaleToken);
