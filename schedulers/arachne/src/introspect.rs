// SPDX-License-Identifier: GPL-2.0
//! What tests and tools may look at inside Arachne: what became of
//! requests, and the grants. Compiled for tests and the `introspect`
//! feature only, never into the kernel module.

use enoki::{CpuSet, Pid, Result};

use super::Arachne;

/// What became of requests since init.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests taken (0 cores included).
    pub requests_taken: u64,
    /// Requests refused: too many cores, a task of another process or
    /// one the scheduler does not know, a queue it does not hold open.
    pub requests_refused: u64,
    /// Times a CPU was asked to come and take a task waiting where it may
    /// no longer run.
    pub pulls: u64,
    /// CPUs asked back that their process gave back within the grace
    /// period.
    pub released: u64,
    /// CPUs asked back and taken when the grace period ended.
    pub taken: u64,
    /// Changes of the grants (the last `CoreGrant::generation`).
    pub generation: u32,
}

impl Arachne {
    /// The counters now.
    pub fn stats(&self) -> Result<Stats> {
        let c = &self.counters;
        Ok(Stats {
            requests_taken: c.requests_taken.get(),
            requests_refused: c.requests_refused.get(),
            pulls: c.pulls.get(),
            released: c.released.get(),
            taken: c.taken.get(),
            generation: self.grants.read()?.generation(),
        })
    }

    /// The CPUs process `tgid` holds.
    pub fn grant_of(&self, tgid: Pid) -> Result<CpuSet> {
        Ok(self.grants.read()?.grant_of(tgid))
    }

    /// Every CPU some process holds.
    pub fn granted(&self) -> Result<CpuSet> {
        Ok(self.grants.read()?.granted())
    }

    /// Every CPU some process is asked to give back.
    pub fn reclaiming(&self) -> Result<CpuSet> {
        Ok(self.grants.read()?.reclaiming())
    }
}
