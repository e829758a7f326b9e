// SPDX-License-Identifier: GPL-2.0
//! libEnoki: write Linux CPU schedulers in safe Rust.
//!
//! A scheduler implements [`EnokiScheduler`]. The same source builds into a
//! kernel module (the `kmod` backend, talking to Enoki-C) and into host
//! programs (the `user` backend: tests, simulator, replay).
//!
//! This file is also compiled as a plain module inside each kernel module's
//! crate, so libEnoki refers to its own items with `super::`, never `crate::`.

pub mod abi;
pub mod collections;
pub mod dispatch;
pub mod fault;
pub mod fifo_queues;
pub mod heap;
pub mod hint;
pub mod log;
pub mod messages;
pub mod runqueue;
pub mod scheduler;
pub mod services;
pub mod sync;
pub mod topology;
pub mod types;
pub mod upgrade;

#[cfg(enoki_kernel)]
pub mod kmod;
#[cfg(enoki_kernel)]
use kmod as backend;

#[cfg(not(enoki_kernel))]
pub mod user;
#[cfg(not(enoki_kernel))]
use user as backend;

pub use collections::{AllocError, FixedVec, Ring, TaskMap};
pub use fault::{Failed, Fault, FaultKind};
pub use fifo_queues::{AllowedCpus, FifoGuard, FifoQueues, Waiting};
pub use heap::TaskHeap;
pub use hint::HintData;
pub use messages::Messages;
pub use runqueue::{Holder, QueueGuard, RunQueues};
pub use scheduler::{
    requeue, Args, EnokiScheduler, HintError, InitContext, InitError, NoHint, NotTaken, QueueId,
    Result, TaskError, Wake,
};
pub use services::Services;
pub use sync::{CpuFlags, LockOp, RwLock, Shared, SharedCpuSet, SpinLock};
pub use topology::Topology;
pub use types::{
    cpu_goes_idle, nice_to_weight, Bandwidth, CgroupId, CgroupInfo, CpuId, CpuSet, CpuSetIter,
    PickError, Pid, PrevTask, Schedulable, TaskInfo, ROOT_CGROUP,
};

/// Names the scheduler this file provides; the module build (and the
/// simulator) load it by this name. One line per scheduler file:
/// `enoki::export_scheduler!(Fifo);`
#[macro_export]
macro_rules! export_scheduler {
    ($sched:ty) => {
        /// The scheduler exported by this file.
        pub type EnokiSched = $sched;
        const _: fn() = || {
            fn is_scheduler<T: $crate::EnokiScheduler>() {}
            is_scheduler::<$sched>();
        };
    };
}
