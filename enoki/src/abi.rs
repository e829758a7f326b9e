// SPDX-License-Identifier: GPL-2.0
//! The message ABI shared with Enoki-C (`kernel/src/kernel/sched/enoki.h`).
//!
//! Every call from the kernel is one fixed-size [`Msg`]: plain data, no
//! pointers, so it can be recorded and replayed byte for byte. `enoki.h` is
//! the one source of the layout: `enoki-abi-check` (enoki/abi-check) runs
//! bindgen on it and compares every structure, field offset and constant
//! here with what the C compiler sees. `ABI_VERSION` guards against mixing a
//! module and a kernel built from different versions.

/// Bumped on any change to the layout or meaning of the structures below.
pub const ABI_VERSION: u32 = 10;
/// The oldest [`ABI_VERSION`] whose messages and records mean what this
/// one's do, so its traces replay here: the versions since differ in what a
/// module registers, in how Enoki-C's rings lay records out, and in fields
/// added at the end of [`Msg`] (0 in older traces) with the kinds that use
/// them.
pub const RECORDS_SINCE: u32 = 3;
/// The first [`ABI_VERSION`] whose traces record a lock taken to read as
/// such ([`rec_type::LOCK_ACQUIRE_SHARED`]); older ones record it as any
/// other acquisition.
pub const SHARED_READS_SINCE: u32 = 9;
/// Largest CPU count a scheduler can address.
pub const MAX_CPUS: usize = 256;
/// Largest NUMA node count in [`RawTopology`].
pub const MAX_NODES: usize = 8;
/// `u64` words of a CPU mask.
pub const CPUMASK_WORDS: usize = MAX_CPUS / 64;
/// Shortest time slice Enoki-C gives a task, whatever the module asks for.
pub const SLICE_MIN_NS: u64 = 50_000;
/// Longest time slice Enoki-C gives a task.
pub const SLICE_MAX_NS: u64 = 1_000_000_000;

/// Message kinds (`Msg::kind`). Plain constants: a C value outside an enum's
/// range must not be undefined behaviour on the Rust side.
pub mod kind {
    /// A task entered Enoki.
    pub const TASK_NEW: u32 = 1;
    /// A task became runnable; carries its token.
    pub const TASK_WAKEUP: u32 = 2;
    /// A running task was preempted or yielded; carries its token.
    pub const TASK_PREEMPT: u32 = 3;
    /// A task left the runnable set.
    pub const TASK_BLOCKED: u32 = 4;
    /// A task left Enoki.
    pub const TASK_DEAD: u32 = 5;
    /// Timer tick while a task runs.
    pub const TASK_TICK: u32 = 6;
    /// Choose a CPU for a waking task.
    pub const SELECT_TASK_RQ: u32 = 7;
    /// Pick the next task for a CPU.
    pub const PICK_NEXT_TASK: u32 = 8;
    /// The picked task could not run.
    pub const PNT_ERR: u32 = 9;
    /// Name a task to pull onto an idle CPU.
    pub const BALANCE: u32 = 10;
    /// The task named by BALANCE could not move.
    pub const BALANCE_ERR: u32 = 11;
    /// A task moves: new token in, old token out.
    pub const MIGRATE_TASK_RQ: u32 = 12;
    /// Nice value changed.
    pub const TASK_PRIO_CHANGED: u32 = 13;
    /// Allowed CPUs changed.
    pub const TASK_AFFINITY_CHANGED: u32 = 14;
    /// A CPU came online (`cpu` names it).
    pub const CPU_ONLINE: u32 = 15;
    /// A CPU is going offline (`cpu` names it).
    pub const CPU_OFFLINE: u32 = 16;
    /// A cgroup came (`cgroup`, `cgroup_parent`, its cpu.weight in
    /// `weight`); sent parents first.
    pub const CGROUP_NEW: u32 = 17;
    /// A cgroup went (`cgroup`); its tasks left it before.
    pub const CGROUP_GONE: u32 = 18;
    /// A cgroup's cpu.weight changed (`cgroup`, `weight`).
    pub const CGROUP_WEIGHT: u32 = 19;
    /// A task moved to cgroup `cgroup`.
    pub const TASK_CGROUP_MOVED: u32 = 20;
    /// A cgroup's cpu.max changed (`cgroup`, `cgroup_period`,
    /// `cgroup_quota`, `cgroup_burst`).
    pub const CGROUP_BANDWIDTH: u32 = 21;
    /// Userspace opened hint queue `queue` (its owner: `pid`, `tgid`);
    /// `ret` < 0 refuses it.
    pub const QUEUE_NEW: u32 = 22;
    /// A hint from queue `queue` about task `pid`: `hint_size` bytes in
    /// `allowed`; `ret` < 0 refuses it.
    pub const HINT: u32 = 23;
    /// Hint queue `queue` was closed.
    pub const QUEUE_GONE: u32 = 24;
    /// One past the last kind; sizes the per-kind counters.
    pub const NR: u32 = 25;

    /// Optional kinds, one bit (`1 << kind`) each: a scheduler takes
    /// those [`RawOps::handles`](super::RawOps::handles) names, and Enoki-C
    /// sends it no other.
    pub const OPTIONAL: u32 = 1 << TASK_TICK
        | 1 << SELECT_TASK_RQ
        | 1 << BALANCE
        | 1 << BALANCE_ERR
        | 1 << MIGRATE_TASK_RQ
        | 1 << TASK_PRIO_CHANGED
        | 1 << TASK_AFFINITY_CHANGED
        | 1 << CPU_ONLINE
        | 1 << CPU_OFFLINE
        | 1 << CGROUP_NEW
        | 1 << CGROUP_GONE
        | 1 << CGROUP_WEIGHT
        | 1 << TASK_CGROUP_MOVED
        | 1 << CGROUP_BANDWIDTH
        | 1 << QUEUE_NEW
        | 1 << HINT
        | 1 << QUEUE_GONE;

    /// Short names, indexed by kind, as shown in `/sys/kernel/enoki/counters`.
    pub const NAMES: [&str; NR as usize] = [
        "invalid",
        "task_new",
        "task_wakeup",
        "task_preempt",
        "task_blocked",
        "task_dead",
        "task_tick",
        "select_task_rq",
        "pick_next_task",
        "pnt_err",
        "balance",
        "balance_err",
        "migrate_task_rq",
        "task_prio_changed",
        "task_affinity_changed",
        "cpu_online",
        "cpu_offline",
        "cgroup_new",
        "cgroup_gone",
        "cgroup_weight",
        "task_cgroup_moved",
        "cgroup_bandwidth",
        "queue_new",
        "hint",
        "queue_gone",
    ];
}

/// The errnos a message's `ret` carries back to Enoki-C (negated), and
/// the ones the user backend answers with where Enoki-C would.
pub mod errno {
    /// No such task.
    pub const ESRCH: i64 = 3;
    /// No such queue, or its scheduler is gone.
    pub const ENODEV: i64 = 19;
    /// A hint refused.
    pub const EINVAL: i64 = 22;
    /// No room for another queue.
    pub const ENOSPC: i64 = 28;
    /// The scheduler takes no hint queues.
    pub const EOPNOTSUPP: i64 = 95;
}

/// `Msg::flags` bits.
pub mod flag {
    /// TASK_PREEMPT: the task gave up the CPU with `sched_yield()`.
    pub const YIELD: u32 = 1 << 0;
    /// TASK_BLOCKED: the task went to sleep (otherwise it is only leaving the
    /// queue for a moment, e.g. to change priority or affinity).
    pub const SLEEP: u32 = 1 << 1;
    /// PICK_NEXT_TASK: `pid`/`runtime` describe the task that was running.
    pub const HAS_PREV: u32 = 1 << 2;
    /// PICK_NEXT_TASK: the previous task is still runnable.
    pub const PREV_RUNNABLE: u32 = 1 << 3;
    /// TASK_WAKEUP: first time the task becomes runnable under Enoki.
    pub const NEW: u32 = 1 << 4;
    /// Answer to PICK_NEXT_TASK: keep running the previous task (`ret` is
    /// its pid) for another slice.
    pub const KEEP_PREV: u32 = 1 << 5;
    /// SELECT_TASK_RQ: a sync wakeup, the waker is about to sleep (a pipe
    /// write before the read of the reply), so its CPU is about to be free.
    pub const WAKE_SYNC: u32 = 1 << 6;
}

/// Error codes carried in `Msg::flags` of PNT_ERR / BALANCE_ERR.
pub mod err {
    /// The token was for another CPU.
    pub const WRONG_CPU: u32 = 1;
    /// The task is not waiting for a CPU (running, blocked, gone).
    pub const NOT_QUEUED: u32 = 2;
    /// The CPU is not in the task's allowed set, or it cannot migrate now.
    pub const AFFINITY: u32 = 3;
    /// No such task.
    pub const NO_TASK: u32 = 4;
}

/// `Msg::ret_err` bits: mistakes libEnoki caught before they reached Enoki-C.
pub mod ret_err {
    /// pick_next_task returned a token for another CPU.
    pub const WRONG_CPU: u32 = 1 << 0;
    /// migrate_task_rq returned a token that was not the task's old one.
    pub const BAD_MIGRATE: u32 = 1 << 1;
    /// select_task_rq returned a CPU outside the task's allowed set.
    pub const BAD_SELECT: u32 = 1 << 2;
    /// The scheduler has failed (libEnoki reported why through
    /// `enoki_fail()`); it was not called.
    pub const FAILED: u32 = 1 << 3;
}

/// One call into the scheduler and its answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    /// One of [`kind`].
    pub kind: u32,
    /// [`flag`] bits, or an [`err`] code for the *_ERR kinds.
    pub flags: u32,
    /// CPU making the call.
    pub cpu: i32,
    /// Task the message is about, or -1.
    pub pid: i32,
    /// Thread group of `pid` (TASK_NEW).
    pub tgid: i32,
    /// CPU of the token handed over (wakeup, preempt, migrate), the task's
    /// CPU (blocked), the previous CPU (select), or the token's CPU (PNT_ERR).
    pub task_cpu: i32,
    /// Total CPU time of `pid` in ns, accounted by Enoki-C.
    pub runtime: u64,
    /// CFS weight of `pid` (1024 at nice 0).
    pub weight: u32,
    /// Nice value of `pid`.
    pub nice: i32,
    /// CPUs `pid` may run on (TASK_NEW, TASK_AFFINITY_CHANGED); HINT: the
    /// hint's bytes.
    pub allowed: [u64; CPUMASK_WORDS],
    /// Answer: a pid, a CPU, a boolean or a negative error.
    pub ret: i64,
    /// Answer: CPU of a returned token.
    pub ret_cpu: i32,
    /// Answer: [`ret_err`] bits.
    pub ret_err: u32,
    /// Answer: time slice for a picked task in ns (0: the module default;
    /// Enoki-C clamps it to [`SLICE_MIN_NS`]..=[`SLICE_MAX_NS`]).
    pub ret_slice: u64,
    /// Generation of `pid`: unique to the task while it is in Enoki, so a
    /// reused pid (a new task) has a different one.
    pub generation: u64,
    /// The task's cgroup where `weight` is the task's; the cgroup a
    /// `CGROUP_*` message is about (its cpu.weight is then `weight`). An
    /// id: the root's is 1; 0 in traces older than the field.
    pub cgroup: u64,
    /// CGROUP_NEW: the parent's id (0 for the root).
    pub cgroup_parent: u64,
    /// When the call was made (CLOCK_MONOTONIC, ns): the scheduler's only
    /// clock ([`Services::now`](crate::Services::now)), so a replay sees the
    /// recorded times. 0 in traces older than the field.
    pub now: u64,
    /// CGROUP_NEW, CGROUP_BANDWIDTH: the cgroup's cpu.max period, ns.
    pub cgroup_period: u64,
    /// ... the CPU time its tasks may use per period, ns; `u64::MAX`: no
    /// limit.
    pub cgroup_quota: u64,
    /// ... the unused quota it may carry into the next period
    /// (cpu.max.burst), ns.
    pub cgroup_burst: u64,
    /// QUEUE_NEW, HINT, QUEUE_GONE: the hint queue.
    pub queue: u32,
    /// HINT: how many bytes of `allowed` the hint is.
    pub hint_size: u32,
}

impl Msg {
    /// The cgroup's `cpu.max` a CGROUP_NEW or CGROUP_BANDWIDTH carries.
    pub fn bandwidth(&self) -> crate::Bandwidth {
        crate::Bandwidth::from_raw(self.cgroup_period, self.cgroup_quota, self.cgroup_burst)
    }

    /// HINT: the hint's bytes, as the sender wrote them.
    pub fn hint_bytes(&self) -> [u8; HINT_MAX] {
        let mut bytes = [0u8; HINT_MAX];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.allowed) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        bytes
    }

    /// HINT: writes `bytes` (at most [`HINT_MAX`]) where Enoki-C puts a
    /// hint, and their length into `hint_size`.
    pub fn set_hint_bytes(&mut self, bytes: &[u8]) {
        let mut padded = [0u8; HINT_MAX];
        let n = bytes.len().min(HINT_MAX);
        padded[..n].copy_from_slice(&bytes[..n]);
        for (word, chunk) in self.allowed.iter_mut().zip(padded.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(w);
        }
        self.hint_size = n as u32;
    }

    /// Writes `b` into the `cpu.max` fields, as Enoki-C does.
    pub fn set_bandwidth(&mut self, b: &crate::Bandwidth) {
        self.cgroup_period = b.period_ns;
        self.cgroup_quota = b.quota_ns.unwrap_or(u64::MAX);
        self.cgroup_burst = b.burst_ns;
    }

    /// A message of `kind` on `cpu` with every other field empty.
    pub fn new(kind: u32, cpu: i32) -> Self {
        Msg {
            kind,
            cpu,
            pid: -1,
            tgid: -1,
            task_cpu: -1,
            ret: -1,
            ret_cpu: -1,
            ..Default::default()
        }
    }
}

/// Scheduling modes (`RawOps::mode`).
pub mod mode {
    /// Every normal task is scheduled by Enoki.
    pub const ALL: u32 = 0;
    /// Only tasks that set the SCHED_EXT policy (7).
    pub const OPT_IN: u32 = 1;
}

/// `enoki_kick_cpu()` flags.
pub mod kick {
    /// Wake the CPU if it is idle, so it picks again (a busy CPU is left
    /// alone: its Enoki task keeps running while it has slice left).
    pub const RESCHED: u32 = 0;
    /// Make the CPU stop its current task and pick again.
    pub const PREEMPT: u32 = 1;
}

/// Where one CPU sits in the machine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCpu {
    /// First CPU of its SMT core: equal for SMT siblings.
    pub core: i32,
    /// First CPU sharing its last-level cache.
    pub llc: i32,
    /// NUMA node.
    pub node: i32,
    /// Physical package (socket).
    pub package: i32,
}

/// The machine as Enoki-C sees it when a scheduler loads.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawTopology {
    /// CPUs described in `cpus`.
    pub nr_cpus: u32,
    /// NUMA nodes described in `distance`.
    pub nr_nodes: u32,
    /// Where each CPU sits.
    pub cpus: [RawCpu; MAX_CPUS],
    /// `node_distance()` (10 local).
    pub distance: [[u8; MAX_NODES]; MAX_NODES],
}

impl Default for RawTopology {
    fn default() -> Self {
        RawTopology {
            nr_cpus: 0,
            nr_nodes: 0,
            cpus: [RawCpu::default(); MAX_CPUS],
            distance: [[0; MAX_NODES]; MAX_NODES],
        }
    }
}

/// Record entry types ([`RawRec::type_`], `enum enoki_rec_type`).
pub mod rec_type {
    /// A message with its answer: the [`Msg`](super::Msg) follows the
    /// header in the ring.
    pub const MSG: u32 = 1;
    /// A libEnoki lock was taken ([`RawRec::addr`](super::RawRec::addr)).
    pub const LOCK_ACQUIRE: u32 = 2;
    /// A libEnoki lock was released.
    pub const LOCK_RELEASE: u32 = 3;
    /// [`RawRec::addr`](super::RawRec::addr) events of this CPU were lost
    /// to a full ring; `seq` is the first lost event's.
    pub const GAP: u32 = 4;
    /// The scheduler was live-upgraded here: every later message went to
    /// the new version. [`RawRec::addr`](super::RawRec::addr) is the state
    /// fingerprint it carried over (0: it started fresh).
    pub const UPGRADE: u32 = 5;
    /// The scheduler left (ejected or unloaded); nothing after it reached
    /// the scheduler. [`RawRec::addr`](super::RawRec::addr) is sched_ext's
    /// exit kind ([`super::exit_kind`]).
    pub const EXIT: u32 = 6;
    /// A libEnoki lock at `addr` was taken and released at once (a
    /// [`Shared`](super::super::Shared) value read or written): the pair in one
    /// record.
    pub const LOCK_ACCESS: u32 = 7;
    /// A libEnoki lock was taken to read: other readers may hold it at the
    /// same time, so its acquisitions order it only against writers.
    pub const LOCK_ACQUIRE_SHARED: u32 = 8;
}

/// sched_ext's exit kinds (`enum scx_exit_kind`, Linux 6.12), as an exit
/// record carries them.
pub mod exit_kind {
    /// The scheduler was unloaded (`SCX_EXIT_UNREG*`, `SCX_EXIT_DONE`).
    pub const UNREG_KERN: u64 = 66;
    /// sysrq-S switched every task back to the default scheduler.
    pub const SYSRQ: u64 = 67;
    /// Kinds from here on are ejections.
    pub const ERROR: u64 = 1024;
    /// `SCX_EXIT_ERROR_BPF`: an error the scheduler raised itself.
    pub const ERROR_BPF: u64 = 1025;
    /// sched_ext's watchdog: a runnable task did not run in time.
    pub const ERROR_STALL: u64 = 1026;

    /// What an exit of `kind` was, in words.
    pub fn describe(kind: u64) -> &'static str {
        match kind {
            SYSRQ => "switched back by sysrq",
            ERROR_STALL => "ejected: a runnable task stalled",
            k if k >= ERROR => "ejected for an error",
            _ => "unloaded",
        }
    }
}

/// The header of every record in Enoki-C's per-CPU record rings, as its
/// debugfs `trace` file hands them out; a [`rec_type::MSG`] record's is
/// followed by its [`Msg`], answer included, and the others are the header
/// alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawRec {
    /// Global order across CPUs; a message takes its number before the call.
    pub seq: u64,
    /// CPU the call or lock operation ran on.
    pub cpu: u32,
    /// One of [`rec_type`] (`type` in C).
    pub type_: u32,
    /// Lock address of the lock events; events lost for a gap.
    pub addr: u64,
    /// CLOCK_MONOTONIC in ns, its call's message's; for timelines only.
    pub time_ns: u64,
}

/// Length of [`RawOps::name`].
pub const NAME_LEN: usize = 32;

/// What a scheduler module registers with Enoki-C.
#[repr(C)]
pub struct RawOps {
    /// [`ABI_VERSION`] of the module.
    pub abi_version: u32,
    /// One of [`mode`].
    pub mode: u32,
    /// Default time slice in ns.
    pub slice_ns: u64,
    /// Stall watchdog: a runnable task not run for this long ejects the scheduler.
    pub timeout_ms: u32,
    /// The [`kind::OPTIONAL`] bits of the messages the scheduler takes.
    pub handles: u32,
    /// NUL-terminated scheduler name.
    pub name: [u8; NAME_LEN],
    /// `struct module *` of the scheduler module.
    pub owner: *mut core::ffi::c_void,
    /// Passed back as the first argument of `process`.
    pub sched: *const core::ffi::c_void,
    /// The one entry point: handles `msg` in place.
    pub process: unsafe extern "C" fn(sched: *const core::ffi::c_void, msg: *mut Msg) -> i64,
    /// Live upgrade: the fingerprint of the upgrade state (0: none).
    pub state_fp: u64,
    /// Room for the state this version starts from (an upgrade), or null.
    pub state: *mut core::ffi::c_void,
    /// Writes this version's state into the next version's `state`.
    pub export_state:
        unsafe extern "C" fn(sched: *const core::ffi::c_void, state: *mut core::ffi::c_void) -> i32,
    /// Starts this version from `state`.
    pub adopt_state: unsafe extern "C" fn(
        sched: *const core::ffi::c_void,
        state: *const core::ffi::c_void,
    ) -> i32,
    /// The fingerprint of the scheduler's hint type: queues outlive an
    /// upgrade only to a version whose hints match.
    pub hint_fp: u64,
    /// Bytes of one hint (at most [`HINT_MAX`]).
    pub hint_size: u32,
    /// Bytes of one reverse hint (at most [`HINT_MAX`]).
    pub rev_hint_size: u32,
    /// The fingerprint of the scheduler's reverse hint type.
    pub rev_hint_fp: u64,
}

/// Largest hint: it travels in [`Msg::allowed`].
pub const HINT_MAX: usize = CPUMASK_WORDS * 8;

/// The layout `enoki.h` states with its own static_asserts, checked by
/// every build (the kernel module's included): a mismatch does not compile.
/// `enoki-abi-check` compares the rest with bindgen's reading of `enoki.h`.
const _: () = {
    use core::mem::{offset_of, size_of};
    macro_rules! at {
        ($t:ty { $($field:ident: $off:expr),+ $(,)? } size $size:expr) => {
            $(assert!(offset_of!($t, $field) == $off);)+
            assert!(size_of::<$t>() == $size);
        };
    }
    at!(Msg {
        kind: 0, flags: 4, cpu: 8, pid: 12, tgid: 16, task_cpu: 20, runtime: 24, weight: 32,
        nice: 36, allowed: 40, ret: 72, ret_cpu: 80, ret_err: 84, ret_slice: 88, generation: 96,
        cgroup: 104, cgroup_parent: 112, now: 120, cgroup_period: 128, cgroup_quota: 136,
        cgroup_burst: 144, queue: 152, hint_size: 156,
    } size 160);
    at!(RawCpu { core: 0, llc: 4, node: 8, package: 12 } size 16);
    at!(RawTopology {
        nr_cpus: 0, nr_nodes: 4, cpus: 8, distance: 8 + 16 * MAX_CPUS,
    } size 8 + 16 * MAX_CPUS + MAX_NODES * MAX_NODES);
    at!(RawRec { seq: 0, cpu: 8, type_: 12, addr: 16, time_ns: 24 } size 32);
    at!(RawOps {
        abi_version: 0, mode: 4, slice_ns: 8, timeout_ms: 16, handles: 20, name: 24, owner: 56,
        sched: 64,
        process: 72, state_fp: 80, state: 88, export_state: 96, adopt_state: 104,
        hint_fp: 112, hint_size: 120, rev_hint_size: 124, rev_hint_fp: 128,
    } size 136);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_name() {
        assert_eq!(kind::NAMES.len(), kind::NR as usize);
        assert_eq!(
            kind::NAMES[kind::MIGRATE_TASK_RQ as usize],
            "migrate_task_rq"
        );
    }
}
