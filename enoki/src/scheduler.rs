// SPDX-License-Identifier: GPL-2.0
//! The `EnokiScheduler` trait (paper, Table 1) and what a scheduler gets at
//! init.

use super::collections::AllocError;
use super::fault::Failed;
use super::hint::HintData;
use super::messages::Messages;
use super::services::Services;
use super::topology::Topology;
use super::types::{
    Bandwidth, CgroupId, CgroupInfo, CpuId, CpuSet, PickError, Pid, PrevTask, Schedulable, TaskInfo,
};
use super::upgrade::PlainData;

/// Why a scheduler could not be created; the module load fails with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// A parameter was out of range or malformed (EINVAL); names the parameter.
    InvalidArgument(&'static str),
    /// Memory for the fixed-capacity state could not be had (ENOMEM).
    OutOfMemory,
}

impl From<AllocError> for InitError {
    fn from(_: AllocError) -> Self {
        InitError::OutOfMemory
    }
}

/// What scheduler calls return: `Err(Failed)` when one of its locks could
/// not be taken (see [`Failed`]); pass it up with `?`.
pub type Result<T = (), E = Failed> = core::result::Result<T, E>;

/// A task could not be taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// No room left (the module's `max_tasks`).
    Full,
    /// The scheduler does not support this.
    Unsupported,
    /// A lock could not be taken.
    Failed,
}

impl From<Failed> for TaskError {
    fn from(_: Failed) -> Self {
        TaskError::Failed
    }
}

/// A hint the scheduler did not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintError {
    /// Out-of-range values, or a task the scheduler does not know: the
    /// sender is told (EINVAL) and the refusal counted.
    Refused,
    /// A lock could not be taken.
    Failed,
}

impl From<Failed> for HintError {
    fn from(_: Failed) -> Self {
        HintError::Failed
    }
}

/// Why `task_wakeup` or `task_preempt` did not keep a task's token.
#[derive(Debug, PartialEq, Eq)]
pub enum NotTaken {
    /// The scheduler cannot take the task: its token, handed back. The task
    /// then runs outside the scheduler.
    Refused(Schedulable),
    /// A lock could not be taken.
    Failed(Failed),
}

impl NotTaken {
    /// Drops a refused token (the task is then the kernel's to run); passes
    /// a failure on: `self.enqueue(token).or_else(NotTaken::drop_token)?`.
    pub fn drop_token(self) -> Result {
        match self {
            NotTaken::Refused(_) => Ok(()),
            NotTaken::Failed(failed) => Err(failed),
        }
    }
}

/// What `pnt_err` usually does with the token it is handed: back where
/// `enqueue` puts tokens (refused there, it is dropped and the task runs
/// outside the scheduler); a lock failure is passed on.
pub fn requeue(
    token: Option<Schedulable>,
    enqueue: impl FnOnce(Schedulable) -> Result<(), NotTaken>,
) -> Result {
    token.map_or(Ok(()), |t| enqueue(t).or_else(NotTaken::drop_token))
}

impl From<Schedulable> for NotTaken {
    fn from(token: Schedulable) -> Self {
        NotTaken::Refused(token)
    }
}

impl From<Failed> for NotTaken {
    fn from(failed: Failed) -> Self {
        NotTaken::Failed(failed)
    }
}

/// Scheduler-specific parameters, `key=value` pairs separated by commas
/// (the module's `args` parameter).
#[derive(Clone, Copy, Debug)]
pub struct Args<'a>(pub &'a str);

impl<'a> Args<'a> {
    fn value(&self, key: &str) -> Option<&'a str> {
        self.0
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
    }

    /// A text parameter, `default` when absent.
    pub fn str_or(&self, key: &str, default: &'a str) -> &'a str {
        self.value(key).unwrap_or(default)
    }

    /// An integer parameter within `min..=max`, `default` when absent.
    pub fn u64_in(
        &self,
        key: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, InitError> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(InitError::InvalidArgument(key)),
            },
        }
    }

    /// Keys present that are not in `known`, to reject typos.
    pub fn check_known(&self, known: &[&'static str]) -> Result<(), InitError> {
        for kv in self.0.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let key = kv.split_once('=').map_or(kv, |(k, _)| k.trim());
            if !known.contains(&key) {
                return Err(InitError::InvalidArgument("args: unknown key"));
            }
        }
        Ok(())
    }
}

/// Everything a scheduler is created from.
pub struct InitContext<'a> {
    /// The machine.
    pub topology: &'a Topology,
    /// Most tasks the scheduler must be able to hold at once.
    pub max_tasks: usize,
    /// The module's default time slice, ns.
    pub slice_ns: u64,
    /// Scheduler-specific settings.
    pub args: Args<'a>,
    /// Kicks and timers; keep a clone.
    pub services: Services,
}

/// A hint queue: one per open of `/dev/enoki`.
pub type QueueId = u32;

/// Who wakes a task, for [`EnokiScheduler::select_task_rq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The CPU the wakeup runs on: the waker's.
    pub waker_cpu: CpuId,
    /// A sync wakeup: the waker is about to sleep (a pipe write before the
    /// read of the reply), so its CPU is about to be free, with the data
    /// the woken task reads in its cache.
    pub sync: bool,
}

/// A CPU scheduler. Every method is called with interrupts off and must not
/// sleep or allocate; state lives behind libEnoki's locks (`&self`), since
/// all CPUs call in at once. Every call returns a [`Result`]: a lock that
/// would deadlock fails, the method passes the failure up with `?`, and
/// libEnoki ejects the scheduler with a report of what went wrong.
pub trait EnokiScheduler: Sized + Send + Sync + 'static {
    /// Name shown in `/sys/kernel/enoki/scheduler`.
    const NAME: &'static str;
    /// Hint entries userspace sends (use [`NoHint`] for none): plain data
    /// read from user memory, see [`HintData`].
    type Hint: HintData;
    /// Hint entries the scheduler sends back to userspace.
    type RevHint: HintData;
    /// State handed to the next version in a live upgrade (see
    /// [`upgrade`](super::upgrade)); `()` for none: the next version then
    /// starts from the task list alone.
    type UpgradeState: PlainData;
    /// Changes whenever the meaning of [`Self::UpgradeState`] changes
    /// without its definition changing: versions that differ here refuse
    /// to hand state to each other.
    const STATE_VERSION: u32 = 1;
    /// The optional messages the scheduler takes: those whose methods it
    /// implements (see [`Messages`]). Enoki-C sends no other, and does
    /// what the default method would; a method implemented but not named
    /// here is never called.
    const MESSAGES: Messages = Messages::ALL;

    /// Creates the scheduler with all the memory it will ever use.
    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError>;

    /// The task CPU `cpu` should run next, as a token for `cpu`. `prev` is the
    /// task it ran before, if Enoki's.
    fn pick_next_task(&self, cpu: CpuId, prev: Option<PrevTask>) -> Result<Option<Schedulable>>;

    /// The token picked for `cpu` could not run; it is handed back when it is
    /// still valid (`None` when the task is gone).
    fn pnt_err(&self, cpu: CpuId, pid: Pid, err: PickError, sched: Option<Schedulable>) -> Result;

    /// A task entered Enoki; it becomes runnable through `task_wakeup`.
    fn task_new(&self, task: &TaskInfo) -> Result<(), TaskError>;

    /// A task became runnable on `sched.cpu()`. Returning the token back means
    /// "cannot take it": the task then runs outside the scheduler.
    fn task_wakeup(&self, pid: Pid, runtime: u64, sched: Schedulable) -> Result<(), NotTaken>;

    /// A running task was preempted (slice over, kicked) or yielded, and is
    /// still runnable.
    fn task_preempt(
        &self,
        pid: Pid,
        runtime: u64,
        yielded: bool,
        sched: Schedulable,
    ) -> Result<(), NotTaken>;

    /// A task left the runnable set (it slept if `sleeping`, otherwise it is
    /// being changed and will wake again). Drop any token held for it.
    fn task_blocked(&self, pid: Pid, runtime: u64, cpu: CpuId, sleeping: bool) -> Result;

    /// A task left Enoki (exited or changed policy).
    fn task_dead(&self, pid: Pid) -> Result;

    /// Timer tick on `cpu` while `pid` runs; `true` preempts it.
    fn task_tick(&self, _cpu: CpuId, _pid: Pid, _runtime: u64) -> Result<bool> {
        Ok(false)
    }

    /// CPU for a waking task; must be in its allowed set.
    fn select_task_rq(&self, _pid: Pid, prev_cpu: CpuId, _wake: Wake) -> Result<CpuId> {
        Ok(prev_cpu)
    }

    /// `pid` moves: here is its token for the new CPU; give back the old one.
    /// Give back `sched` itself to refuse: the task then stays where it
    /// waits. Refuse when the task no longer waits, or may no longer run on
    /// the new CPU: Enoki-C checked `balance`'s answer without the lock of
    /// the CPU the task waits on, so either may have changed since.
    /// Returning `None`, or another task's token, counts a migrate error.
    fn migrate_task_rq(&self, _pid: Pid, sched: Schedulable) -> Result<Option<Schedulable>> {
        Ok(Some(sched))
    }

    /// `cpu` has nothing to run: name a task to pull onto it.
    fn balance(&self, _cpu: CpuId) -> Result<Option<Pid>> {
        Ok(None)
    }

    /// The task named by `balance` could not be moved.
    fn balance_err(&self, _cpu: CpuId, _pid: Pid, _err: PickError) -> Result {
        Ok(())
    }

    /// Nice value, and so weight, changed.
    fn task_prio_changed(&self, _pid: Pid, _weight: u32, _nice: i32) -> Result {
        Ok(())
    }

    /// Allowed CPUs changed; tokens follow through blocked/wakeup.
    fn task_affinity_changed(&self, _pid: Pid, _allowed: &CpuSet) -> Result {
        Ok(())
    }

    /// `cpu` found nothing to pick while `prev` is still runnable:
    /// `Some(slice_ns)` keeps `prev` running for another slice (0: the
    /// module's default) with no switch at all; `None` hands `prev` back
    /// through `task_preempt` and asks again.
    fn keep_running(&self, _cpu: CpuId, _prev: &PrevTask) -> Result<Option<u64>> {
        Ok(Some(0))
    }

    /// `cpu` came online: it may be chosen again.
    fn cpu_online(&self, _cpu: CpuId) -> Result {
        Ok(())
    }

    /// `cpu` is going offline: choose it no more. Its runnable tasks move
    /// through `task_blocked` and `task_wakeup` on another CPU.
    fn cpu_offline(&self, _cpu: CpuId) -> Result {
        Ok(())
    }

    /// A cgroup came, or was there when the scheduler loaded (parents
    /// come first). It cannot be refused: a scheduler with no room left
    /// for it counts its tasks as its nearest known ancestor's.
    fn cgroup_new(&self, _cgroup: &CgroupInfo) -> Result {
        Ok(())
    }

    /// A cgroup went; its tasks had left it.
    fn cgroup_gone(&self, _cgroup: CgroupId) -> Result {
        Ok(())
    }

    /// A cgroup's `cpu.weight` changed (1..=10000).
    fn cgroup_weight(&self, _cgroup: CgroupId, _weight: u32) -> Result {
        Ok(())
    }

    /// A cgroup's `cpu.max` changed. Enforcing it is the scheduler's: the
    /// kernel throttles only tasks outside Enoki.
    fn cgroup_bandwidth(&self, _cgroup: CgroupId, _bandwidth: Bandwidth) -> Result {
        Ok(())
    }

    /// A task moved to `cgroup` (it may be running, waiting or asleep).
    fn task_cgroup_moved(&self, _pid: Pid, _cgroup: CgroupId) -> Result {
        Ok(())
    }

    /// A thread of process `owner` (thread `owner_thread`) opened hint
    /// queue `queue`: `Ok` accepts it, an error refuses it (the open
    /// fails). A scheduler taking hints names [`Messages::HINTS`].
    fn register_queue(
        &self,
        _queue: QueueId,
        _owner: Pid,
        _owner_thread: Pid,
    ) -> Result<(), TaskError> {
        Err(TaskError::Unsupported)
    }

    /// A hint about task `pid` from queue `queue`. Enoki-C has checked that
    /// the sender may steer `pid` and that it is in Enoki; the values are
    /// the scheduler's to check ([`HintError::Refused`]).
    fn parse_hint(&self, _queue: QueueId, _pid: Pid, _hint: Self::Hint) -> Result<(), HintError> {
        Err(HintError::Refused)
    }

    /// Hint queue `queue` was closed.
    fn unregister_queue(&self, _queue: QueueId) -> Result {
        Ok(())
    }

    /// Live upgrade: the next version is taking over; write the state it
    /// starts from into `state` (all zeroes when called). Called twice,
    /// and must only read: first while this version still takes calls on
    /// other CPUs (a pre-copy, which makes the second pass cheap: code and
    /// data are warm), then with every CPU's calls held off, so nothing
    /// changes meanwhile. An error in either refuses the upgrade and this
    /// version keeps running.
    fn reregister_prep(&self, _state: &mut Self::UpgradeState) -> Result {
        Ok(())
    }

    /// Live upgrade: this version, created by [`Self::init`], takes over
    /// from the previous one, whose state is `state`. Called twice, with
    /// each pass of [`Self::reregister_prep`]: the second, with every
    /// CPU's calls held off, is the state to start from, so it must
    /// overwrite whatever the first set. Every task has already met this
    /// version through `task_new` (and, by the second pass, any change
    /// since, through the usual messages), but none has been woken: those
    /// waiting to run arrive next, through `task_wakeup`. An error refuses
    /// the upgrade (the previous version keeps running).
    fn reregister_init(&self, _state: &Self::UpgradeState) -> Result {
        Ok(())
    }
}

/// The hint type of schedulers without hints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoHint;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_and_validate() {
        let a = Args("period_us=6000, min_gran_us = 750");
        assert_eq!(a.u64_in("period_us", 1, 1, 10_000), Ok(6000));
        assert_eq!(a.u64_in("min_gran_us", 1, 1, 10_000), Ok(750));
        assert_eq!(a.u64_in("absent", 42, 1, 100), Ok(42));
        assert_eq!(
            a.u64_in("period_us", 1, 1, 10),
            Err(InitError::InvalidArgument("period_us"))
        );
        assert!(a.check_known(&["period_us", "min_gran_us"]).is_ok());
        assert!(a.check_known(&["period_us"]).is_err());
        assert!(Args("").check_known(&[]).is_ok());
    }
}
