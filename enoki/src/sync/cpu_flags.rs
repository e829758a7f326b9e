// SPDX-License-Identifier: GPL-2.0
//! One yes/no per CPU that other CPUs read without a lock around it (idle,
//! offline, a timer armed): [`Shared`] values, so record and replay see
//! every read and write.

use super::super::collections::{AllocError, FixedVec};
use super::super::types::CpuId;
use super::Shared;

/// A flag per CPU, all clear at first. A CPU out of range reads as clear
/// and ignores writes.
pub struct CpuFlags {
    flags: FixedVec<Shared<bool>>,
}

impl CpuFlags {
    /// Flags for CPUs `0..nr_cpus`.
    pub fn new(nr_cpus: usize) -> Result<Self, AllocError> {
        Ok(CpuFlags {
            flags: FixedVec::new_with(nr_cpus, |_| Shared::new(false))?,
        })
    }

    /// Whether `cpu`'s flag is set.
    pub fn get(&self, cpu: CpuId) -> bool {
        self.flags.get(cpu).is_some_and(Shared::get)
    }

    /// Sets or clears `cpu`'s flag.
    pub fn set(&self, cpu: CpuId, value: bool) {
        if let Some(f) = self.flags.get(cpu) {
            f.set(value);
        }
    }

    /// Sets or clears `cpu`'s flag and returns what it was.
    pub fn replace(&self, cpu: CpuId, value: bool) -> bool {
        self.flags.get(cpu).is_some_and(|f| f.replace(value))
    }

    /// Every flag's [`Shared`], for tools that tell shared values from
    /// locks (a lock observer sees both).
    pub fn shared(&self) -> impl Iterator<Item = &Shared<bool>> {
        self.flags.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_per_cpu_and_out_of_range_reads_clear() {
        let f = CpuFlags::new(4).unwrap();
        f.set(2, true);
        assert!(f.get(2));
        assert!(!f.get(1));
        assert!(f.replace(2, false));
        assert!(!f.get(2));
        f.set(9, true);
        assert!(!f.get(9));
    }
}
