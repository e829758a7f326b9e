// SPDX-License-Identifier: GPL-2.0
//! A deliberately wrong scheduler, for tests: every `every`-th pick
//! (module args `every=N`, default 2) returns a token queued for another CPU.
//! libEnoki must hand it back through `pnt_err`, count it, and run nothing;
//! the machine must survive and every task must still make progress.
//!
//! With `victim=N` instead, every token for CPU N a wakeup or preemption
//! brings is misfiled in the next CPU's queue, so that CPU's next pick
//! returns it.
//! Handed back, it goes to CPU N's queue, and N, which found its queue
//! empty, must be woken to run it.
#![forbid(unsafe_code)]

use enoki::{
    CpuId, EnokiScheduler, FixedVec, InitContext, InitError, NoHint, NotTaken, PickError, Pid,
    PrevTask, Result, Ring, Schedulable, Shared, SpinLock, TaskError, TaskInfo,
};

/// The deliberately wrong scheduler.
pub struct BadPick {
    every: u64,
    /// The CPU whose tokens are misfiled, if any.
    victim: Option<CpuId>,
    picks: Shared<u64>,
    /// Tokens handed back through `pnt_err`.
    pub handed_back: Shared<u64>,
    queues: FixedVec<SpinLock<Ring<Schedulable>>>,
}

impl BadPick {
    fn push(&self, token: Schedulable) -> Result<(), NotTaken> {
        let cpu = token.cpu();
        self.push_to(cpu, token)
    }

    fn push_to(&self, cpu: CpuId, token: Schedulable) -> Result<(), NotTaken> {
        match self.queues.get(cpu) {
            Some(q) => Ok(q.lock()?.push_back(token)?),
            None => Err(token.into()),
        }
    }

    /// [`Self::push`], but the victim's tokens go to the next CPU's queue.
    fn file(&self, token: Schedulable) -> Result<(), NotTaken> {
        let cpu = token.cpu();
        if self.victim != Some(cpu) {
            return self.push_to(cpu, token);
        }
        let next = cpu.checked_add(1).unwrap_or(0);
        let wrong = if next < self.queues.len() { next } else { 0 };
        self.push_to(wrong, token)
    }
}

impl EnokiScheduler for BadPick {
    const NAME: &'static str = "badpick";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        ctx.args.check_known(&["every", "victim"])?;
        let nr = ctx.topology.nr_cpus();
        let last = nr.saturating_sub(1) as u64;
        let victim = match ctx.args.str_or("victim", "") {
            "" => None,
            _ => Some(ctx.args.u64_in("victim", 0, 0, last)?),
        }
        .and_then(|cpu| CpuId::try_from(cpu).ok());
        Ok(BadPick {
            every: ctx.args.u64_in("every", 2, 1, 1_000_000)?,
            victim,
            picks: Shared::new(0),
            handed_back: Shared::new(0),
            queues: FixedVec::try_new_with(nr, |_| {
                Ring::with_capacity(ctx.max_tasks).map(SpinLock::new)
            })?,
        })
    }

    fn pick_next_task(&self, cpu: CpuId, _prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let n = self.picks.fetch_add(1);
        if self.victim.is_none() && n.is_multiple_of(self.every) {
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
        self.file(sched)
    }

    fn task_preempt(
        &self,
        _pid: Pid,
        _runtime: u64,
        _yielded: bool,
        sched: Schedulable,
    ) -> Result<(), NotTaken> {
        self.file(sched)
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
