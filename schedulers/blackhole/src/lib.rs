// SPDX-License-Identifier: GPL-2.0
//! A deliberately wrong scheduler, for tests: it takes every task and never
//! picks one. Its tasks starve until sched_ext's stall watchdog ejects it;
//! then every task runs on the default scheduler again, and Enoki-C keeps
//! the state dump of the ejection.
#![forbid(unsafe_code)]

use enoki::{
    CpuId, EnokiScheduler, InitContext, InitError, NoHint, NotTaken, PickError, Pid, PrevTask,
    Result, Schedulable, TaskError, TaskInfo,
};

/// The deliberately wrong scheduler.
pub struct BlackHole;

impl EnokiScheduler for BlackHole {
    const NAME: &'static str = "blackhole";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&[])?;
        Ok(BlackHole)
    }

    /// The bug: nothing is ever picked.
    fn pick_next_task(&self, _cpu: CpuId, _prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        Ok(None)
    }

    /// Nor kept running.
    fn keep_running(&self, _cpu: CpuId, _prev: &PrevTask) -> Result<Option<u64>> {
        Ok(None)
    }

    fn pnt_err(
        &self,
        _cpu: CpuId,
        _pid: Pid,
        _err: PickError,
        _sched: Option<Schedulable>,
    ) -> Result {
        Ok(())
    }

    fn task_new(&self, _task: &TaskInfo) -> Result<(), TaskError> {
        Ok(())
    }

    /// The token is taken and dropped.
    fn task_wakeup(&self, _pid: Pid, _runtime: u64, _sched: Schedulable) -> Result<(), NotTaken> {
        Ok(())
    }

    fn task_preempt(
        &self,
        _pid: Pid,
        _runtime: u64,
        _yielded: bool,
        _sched: Schedulable,
    ) -> Result<(), NotTaken> {
        Ok(())
    }

    fn task_blocked(&self, _pid: Pid, _runtime: u64, _cpu: CpuId, _sleeping: bool) -> Result {
        Ok(())
    }

    fn task_dead(&self, _pid: Pid) -> Result {
        Ok(())
    }
}

enoki::export_scheduler!(BlackHole);
