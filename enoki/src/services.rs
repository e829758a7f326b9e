// SPDX-License-Identifier: GPL-2.0
//! What a scheduler can ask of the kernel: kick a CPU, preempt it now or
//! after a delay. Schedulers never read clocks: time comes in messages.

use super::backend;
use super::types::CpuId;

/// Handle to the kernel's services, given at init; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub(super) host: backend::Host,
}

impl Services {
    /// Makes `cpu` ask for a task again unless its Enoki task has slice
    /// left: wakes an idle CPU, interrupts a CFS task.
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

    /// Disarms `cpu`'s timer.
    pub fn cancel_timer(&self, cpu: CpuId) {
        self.host.set_timer(cpu, None);
    }
}
