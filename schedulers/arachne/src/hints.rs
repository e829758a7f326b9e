// SPDX-License-Identifier: GPL-2.0
//! The hints applications and the arbiter send each other, and what
//! became of the requests.

use enoki::{CpuSet, Shared};

/// CPUs a [`CoreGrant`] can name (its mask's bits): CPUs from here on are
/// never granted.
pub const GRANT_CPUS: usize = 192;

enoki::hint_struct! {
    /// Asks for `cores` CPUs for the threads of the process that owns the
    /// queue it is sent through; 0 gives them all back. Applications send
    /// this very type (`enoki_arachne::CoreRequest` through
    /// `enoki_hints::HintQueue`), so the fingerprints match.
    pub struct CoreRequest {
        /// CPUs wanted, at most the machine's CPU count.
        pub cores: u32,
    }
}

enoki::hint_struct! {
    /// What a process holds, sent through each of its queues' reverse
    /// rings whenever it changes, and in answer to each request taken.
    pub struct CoreGrant {
        /// Bit `i % 64` of word `i / 64`: the process holds CPU `i`.
        pub mask: [u64; 3],
        /// How many CPUs that is.
        pub granted: u32,
        /// Counts the changes of anyone's grants: a grant with a higher
        /// generation is newer (it wraps after 2^32 changes, and restarts
        /// with a live upgrade).
        pub generation: u32,
    }
}

impl CoreGrant {
    /// `cpus` (those below [`GRANT_CPUS`]) at `generation`.
    pub(crate) fn new(cpus: &CpuSet, generation: u32) -> Self {
        let mut mask = [0u64; 3];
        for (m, w) in mask.iter_mut().zip(cpus.words()) {
            *m = w;
        }
        let granted = mask
            .iter()
            .map(|w| w.count_ones())
            .fold(0u32, u32::saturating_add);
        CoreGrant {
            mask,
            granted,
            generation,
        }
    }

    /// The CPUs it names.
    pub fn cpus(&self) -> CpuSet {
        let mut cpus = CpuSet::empty();
        for (word, bits) in self.mask.iter().enumerate() {
            let mut rest = *bits;
            while rest != 0 {
                let bit = usize::try_from(rest.trailing_zeros()).unwrap_or(0);
                rest &= rest.wrapping_sub(1);
                cpus.insert(word.saturating_mul(64).saturating_add(bit));
            }
        }
        cpus
    }
}

/// Counts of what became of requests. Shared values, not atomics, so that
/// record and replay see every update.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests_taken: Shared<u64>,
    pub(crate) requests_refused: Shared<u64>,
    /// Times a CPU was asked to come and take a task waiting where it may
    /// no longer run.
    pub(crate) pulls: Shared<u64>,
}

impl Counters {
    pub(crate) fn request(&self, taken: bool) {
        let counter = if taken {
            &self.requests_taken
        } else {
            &self.requests_refused
        };
        counter.fetch_add(1);
    }
}
