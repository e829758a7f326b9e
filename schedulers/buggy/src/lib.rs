// SPDX-License-Identifier: GPL-2.0
//! Buggy: a per-CPU FIFO that, once armed, commits the bug its `bug=`
//! setting names, so tests can force every fault class Enoki must contain:
//!
//! | `bug=`     | what it does                                | who catches it          |
//! |------------|---------------------------------------------|-------------------------|
//! | `none`     | nothing: a correct FIFO                     | -                       |
//! | `aa`       | takes its CPU's queue lock twice            | libEnoki, at once (AA)  |
//! | `cycle`    | CPUs `0..cpus` each hold their queue (`hold=` spins) and take the next one's (`cpus=2`: ABBA) | libEnoki (cycle) |
//! | `leak`     | returns from a pick holding its queue lock  | libEnoki, at call end   |
//! | `loop`     | locks and unlocks its queue for ever        | libEnoki (call budget)  |
//! | `lost`     | drops one waking task's token               | sched_ext's watchdog    |
//! | `stall`    | never picks a task again                    | sched_ext's watchdog    |
//! | `starve`   | picks only one favoured task                | sched_ext's watchdog    |
//! | `wrongcpu` | picks another CPU's tasks                   | libEnoki's token check, then the watchdog |
//! | `prep`     | deadlocks handing its state to a next version (AA) | libEnoki: the upgrade is refused |
//! | `adopt`    | deadlocks taking over from a previous version (AA) | libEnoki: the upgrade is refused |
//! | `kickbusy` | kicks every other CPU at each tick, busy or not | Enoki-C: only idle CPUs are woken |
//!
//! It arms after `after=` picks (default 1000), so it first schedules the
//! load like any scheduler. A panic is not among the bugs: the module build
//! refuses any scheduler that could panic (see `check-sched-lints.sh`).
#![forbid(unsafe_code)]

use enoki::{
    CpuId, EnokiScheduler, InitContext, InitError, NoHint, NotTaken, PickError, Pid, PrevTask,
    Result, Ring, RunQueues, Schedulable, Services, Shared, TaskError, TaskInfo,
};

/// Spins a CPU of a `cycle` holds its own queue before it takes the next
/// one (`hold=`, by default): a window for the other CPUs to take theirs
/// (a plain spin, not a `Shared` poll, so the kernel record stays small and
/// replays exactly). Short: under emulation a `pause` can cost a
/// microsecond, and a longer hold on every pick starved sched_ext's
/// watchdog work into a stall under a 2 s watchdog. Three emulated CPUs on
/// a 2-core host rarely overlap in so short a window: a cycle of 3 takes a
/// longer one.
const HOLD_SPINS: u32 = 1 << 14;

/// The bug, from `bug=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    None,
    Aa,
    Cycle { cpus: usize },
    Leak,
    Loop,
    Lost,
    Stall,
    Starve,
    WrongCpu,
    Prep,
    Adopt,
    KickBusy,
}

enoki::plain_data! {
    /// What a version hands to the next: a count no other scheduler's
    /// state matches, so an upgrade between Buggy and another stateful
    /// scheduler is refused unless fresh.
    pub struct Carry {
        /// Upgrades the state went through.
        pub upgrades: u32,
    }
}

impl Bug {
    fn parse(name: &str, cpus: usize) -> Option<Bug> {
        Some(match name {
            "none" => Bug::None,
            "aa" => Bug::Aa,
            "cycle" => Bug::Cycle { cpus },
            "leak" => Bug::Leak,
            "loop" => Bug::Loop,
            "lost" => Bug::Lost,
            "stall" => Bug::Stall,
            "starve" => Bug::Starve,
            "wrongcpu" => Bug::WrongCpu,
            "prep" => Bug::Prep,
            "adopt" => Bug::Adopt,
            "kickbusy" => Bug::KickBusy,
            _ => return None,
        })
    }
}

/// The buggy scheduler.
pub struct Buggy {
    bug: Bug,
    after: u64,
    /// `cycle`: spins each CPU holds its own queue first.
    hold: u32,
    queues: RunQueues<Ring<Schedulable>>,
    picks: Shared<u64>,
    /// `lost`: a token was dropped. `starve`: the favoured pid + 1.
    done: Shared<u64>,
    /// Live upgrades its state went through.
    upgrades: Shared<u32>,
    services: Services,
}

impl Buggy {
    fn armed(&self) -> bool {
        self.picks.fetch_add(1) >= self.after
    }

    /// Whether this scheduler has `bug` and is armed (without counting a
    /// pick, as [`Self::armed`] does).
    fn commits(&self, bug: Bug) -> bool {
        self.bug == bug && self.picks.get() >= self.after
    }

    /// Live upgrades its state went through (for tests).
    pub fn upgrades(&self) -> u32 {
        self.upgrades.get()
    }

    /// `prep` and `adopt`: CPU 0's queue taken twice.
    fn deadlock(&self) -> Result {
        let _held = self.queues.lock(0)?;
        let _again = self.queues.lock(0)?;
        Ok(())
    }

    fn push(&self, token: Schedulable) -> Result<(), NotTaken> {
        Ok(self.queues.lock(token.cpu())?.push_back(token)?)
    }

    /// The next CPU of a cycle of `cpus`.
    fn next_in_cycle(cpu: CpuId, cpus: usize) -> CpuId {
        match cpu.checked_add(1) {
            Some(next) if next < cpus => next,
            _ => 0,
        }
    }

    /// Holds `cpu`'s queue a while, then takes the next CPU's: when the
    /// other CPUs of the cycle do the same at once, each waits for the next.
    fn cycle(&self, cpu: CpuId, cpus: usize) -> Result {
        let mine = self.queues.lock(cpu)?;
        for _ in 0..self.hold {
            core::hint::spin_loop();
        }
        let next = self.queues.lock(Self::next_in_cycle(cpu, cpus))?;
        drop((next, mine));
        Ok(())
    }

    /// The bug, in a pick on `cpu`: `Some(answer)` to pick that instead.
    fn misbehave(&self, cpu: CpuId) -> Result<Option<Option<Schedulable>>> {
        match self.bug {
            Bug::Aa => {
                let _held = self.queues.lock(cpu)?;
                let _again = self.queues.lock(cpu)?;
            }
            Bug::Cycle { cpus } if cpu < cpus => self.cycle(cpu, cpus)?,
            Bug::Leak => {
                core::mem::forget(self.queues.lock(cpu)?);
                return Ok(Some(None));
            }
            Bug::Loop => loop {
                drop(self.queues.lock(cpu)?);
            },
            Bug::Stall => return Ok(Some(None)),
            Bug::Starve => return self.favoured(cpu).map(Some),
            Bug::WrongCpu => {
                for other in self.queues.cpus().filter(|c| *c != cpu) {
                    if let Some(stolen) = self.queues.lock(other)?.pop_front() {
                        return Ok(Some(Some(stolen)));
                    }
                }
            }
            Bug::None | Bug::Cycle { .. } | Bug::Lost | Bug::Prep | Bug::Adopt | Bug::KickBusy => {}
        }
        Ok(None)
    }

    /// `starve`: only the first task picked once armed ever runs again.
    fn favoured(&self, cpu: CpuId) -> Result<Option<Schedulable>> {
        let mut queue = self.queues.lock(cpu)?;
        let favoured = self.done.get();
        if favoured == 0 {
            let next = queue.pop_front();
            if let Some(t) = &next {
                self.done
                    .set(u64::from(t.pid().unsigned_abs()).saturating_add(1));
            }
            return Ok(next);
        }
        Ok(queue.remove_first(|t| u64::from(t.pid().unsigned_abs()).saturating_add(1) == favoured))
    }
}

impl EnokiScheduler for Buggy {
    const NAME: &'static str = "buggy";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = Carry;

    fn init(ctx: &InitContext<'_>) -> core::result::Result<Self, InitError> {
        ctx.args.check_known(&["bug", "after", "cpus", "hold"])?;
        let nr = ctx.topology.nr_cpus();
        let cpus = ctx.args.u64_in("cpus", 2, 2, nr as u64)? as usize;
        let bug =
            Bug::parse(ctx.args.str_or("bug", "none"), cpus).ok_or(InitError::InvalidArgument(
                "bug (none aa cycle leak loop lost stall starve wrongcpu prep adopt kickbusy)",
            ))?;
        Ok(Buggy {
            bug,
            after: ctx.args.u64_in("after", 1000, 0, u64::MAX)?,
            hold: u32::try_from(ctx.args.u64_in("hold", HOLD_SPINS.into(), 0, 1 << 20)?)
                .unwrap_or(HOLD_SPINS),
            queues: RunQueues::try_new_with(nr, |_| Ring::with_capacity(ctx.max_tasks))?,
            picks: Shared::new(0),
            done: Shared::new(0),
            upgrades: Shared::new(0),
            services: ctx.services.clone(),
        })
    }

    fn pick_next_task(&self, cpu: CpuId, _prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        if self.armed() {
            if let Some(answer) = self.misbehave(cpu)? {
                return Ok(answer);
            }
        }
        Ok(self.queues.lock(cpu)?.pop_front())
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

    /// `kickbusy`: every other CPU is kicked, as by a scheduler whose idle
    /// flags lag behind; with every CPU busy, not one kick is needed.
    fn task_tick(&self, cpu: CpuId, _pid: Pid, _runtime: u64) -> Result<bool> {
        if self.commits(Bug::KickBusy) {
            for other in self.queues.cpus().filter(|c| *c != cpu) {
                self.services.kick_cpu(other);
            }
        }
        Ok(false)
    }

    fn task_wakeup(&self, _pid: Pid, _runtime: u64, sched: Schedulable) -> Result<(), NotTaken> {
        if self.commits(Bug::Lost) && self.done.replace(1) == 0 {
            // The bug: the token is dropped; the task can never run again.
            return Ok(());
        }
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
            self.task_dead(pid)?;
        }
        Ok(())
    }

    fn task_dead(&self, pid: Pid) -> Result {
        self.queues
            .find_map(|_, q| q.remove_first(|t| t.pid() == pid))?;
        Ok(())
    }

    fn reregister_prep(&self, carry: &mut Carry) -> Result {
        if self.bug == Bug::Prep {
            self.deadlock()?;
        }
        carry.upgrades = self.upgrades.get().saturating_add(1);
        Ok(())
    }

    fn reregister_init(&self, carry: &Carry) -> Result {
        if self.bug == Bug::Adopt {
            self.deadlock()?;
        }
        self.upgrades.set(carry.upgrades);
        Ok(())
    }

    /// `stall`: the running task is not kept either.
    fn keep_running(&self, _cpu: CpuId, _prev: &PrevTask) -> Result<Option<u64>> {
        let stalled = self.commits(Bug::Stall);
        Ok((!stalled).then_some(0))
    }
}

enoki::export_scheduler!(Buggy);
