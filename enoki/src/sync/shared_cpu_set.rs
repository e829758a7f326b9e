// SPDX-License-Identifier: GPL-2.0
//! A set of CPUs that CPUs change and read without another lock around it
//! (which CPUs are idle, which queues hold tasks), read whole at once.

use super::super::abi::CPUMASK_WORDS;
use super::super::types::{CpuId, CpuSet};
use super::Shared;

/// A set of CPUs kept in [`Shared`] words, 64 CPUs a word: record and
/// replay see every read and write, and a search over all CPUs reads the
/// set in one access per word where [`CpuFlags`](super::CpuFlags) would
/// take one per CPU. A CPU out of range reads as absent and ignores writes.
///
/// # Invariants
///
/// `words` is at most [`CPUMASK_WORDS`]: only the words that hold CPUs
/// `0..nr_cpus` are read or written.
pub struct SharedCpuSet {
    bits: [Shared<u64>; CPUMASK_WORDS],
    words: usize,
}

impl SharedCpuSet {
    /// The CPUs of `initial` among CPUs `0..nr_cpus`.
    pub fn new(nr_cpus: usize, initial: CpuSet) -> Self {
        let words = nr_cpus.div_ceil(64).min(CPUMASK_WORDS);
        let kept = (initial & CpuSet::first_n(nr_cpus)).words();
        SharedCpuSet {
            bits: kept.map(Shared::new),
            words,
        }
    }

    /// The set now (each word read once).
    pub fn get(&self) -> CpuSet {
        CpuSet::from_words(core::array::from_fn(|i| {
            self.word(i).map_or(0, Shared::get)
        }))
    }

    /// Whether `cpu` is in the set (one word read).
    pub fn contains(&self, cpu: CpuId) -> bool {
        self.word(cpu / 64)
            .is_some_and(|w| w.get() & Self::bit(cpu) != 0)
    }

    /// Adds `cpu` if `value`, else removes it.
    pub fn set(&self, cpu: CpuId, value: bool) {
        if let Some(w) = self.word(cpu / 64) {
            if value {
                w.fetch_or(Self::bit(cpu));
            } else {
                w.fetch_and(!Self::bit(cpu));
            }
        }
    }

    /// Every word's [`Shared`], for tools that tell shared values from
    /// locks (a lock observer sees both).
    pub fn shared(&self) -> impl Iterator<Item = &Shared<u64>> {
        self.bits.iter().take(self.words)
    }

    fn word(&self, i: usize) -> Option<&Shared<u64>> {
        self.bits.get(i).filter(|_| i < self.words)
    }

    fn bit(cpu: CpuId) -> u64 {
        1 << (cpu % 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_come_and_go_and_out_of_range_ones_are_absent() {
        let mut initial = CpuSet::empty();
        initial.insert(1);
        initial.insert(70);
        let s = SharedCpuSet::new(66, initial);
        assert!(s.contains(1));
        assert!(!s.contains(70), "CPU 70 is past the 66 CPUs");
        s.set(65, true);
        s.set(1, false);
        s.set(3, true);
        s.set(200, true);
        let mut want = CpuSet::empty();
        want.insert(3);
        want.insert(65);
        assert_eq!(s.get(), want);
        assert!(!s.contains(200));
        assert_eq!(s.shared().count(), 2);
    }
}
