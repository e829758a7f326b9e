// SPDX-License-Identifier: GPL-2.0
//! A deliberately wrong scheduler, for tests: every `every`-th pick
//! (module args `every=N`, default 2) returns a token queued for another CPU.
//! libEnoki must hand it back through `pnt_err`, count it, and run nothing;
//! the machine must survive and every task must still make progress.
#![forbid(unsafe_code)]

use enoki::{
    CpuId, EnokiScheduler, FixedVec, InitContext, InitError, NoHint, NotTaken, PickError, Pid,
    PrevTask, Result, Ring, Schedulable, Shared, SpinLock, TaskError, TaskInfo,
};

/// The deliberately wrong scheduler.
pub struct BadPick {
    every: u64,
    picks: Shared<u64>,
    /// Tokens handed back through `pnt_err`.
    pub handed_back: Shared<u64>,
    queues: FixedVec<SpinLock<Ring<Schedulable>>>,
}

impl BadPick {
    fn push(&self, token: Schedulable) -> Result<(), NotTaken> {
        match self.queues.get(token.cpu()) {
            Some(q) => Ok(q.lock()?.push_back(token)?),
            None => Err(token.into()),
        }
    }
}

impl EnokiScheduler for BadPick {
    const NAME: &'static str = "badpick";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&["every"])?;
        Ok(BadPick {
            every: ctx.args.u64_in("every", 2, 1, 1_000_000)?,
            picks: Shared::new(0),
            handed_back: Shared::new(0),
            queues: FixedVec::try_new_with(ctx.topology.nr_cpus(), |_| {
                Ring::with_capacity(ctx.max_tasks).map(SpinLock::new)
            })?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, _prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let n = self.picks.fetch_add(1);
        if n.is_multiple_of(self.every) {
            // The bug: take the first task queued for some other CPU.
            for (_, q) in self
                .queues
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != cpu)
            {
                if let Some(stolen) = q.lock()?.pop_front() {
                    return Ok(Some(stolen));
                }
            }
        }
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
        enoki::requeue(sched, |token| {
            self.handed_back.fetch_add(1);
            self.push(token)
        })
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

    fn task_blocked(&self, pid: Pid, _runtime: u64, _cpu: CpuId, sleeping: bool) -> Result {
        if !sleeping {
            for q in self.queues.iter() {
                q.lock()?.remove_first(|t| t.pid() == pid);
            }
        }
        Ok(())
    }

    fn task_dead(&self, pid: Pid) -> Result {
        self.task_blocked(pid, 0, 0, false)
    }
}

enoki::export_scheduler!(BadPick);
