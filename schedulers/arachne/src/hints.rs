// SPDX-License-Identifier: GPL-2.0
//! The hints applications and the arbiter send each other, and what
//! became of the requests.

use enoki::{CpuSet, Shared};

/// CPUs a [`CoreGrant`] can name (its mask's bits): CPUs from here on are
/// never granted.
pub const GRANT_CPUS: usize = 192;

/// Highest [`CoreRequest::priority`]; 0 is the most urgent.
pub const LOWEST_PRIORITY: u32 = 7;

/// [`CoreRequest::kind`]: asks for `cores` CPUs at `priority`.
pub const REQUEST_CORES: u32 = 0;
/// [`CoreRequest::kind`]: gives back `cpu`, which a [`GRANT_RECLAIM`] asked
/// for.
pub const RELEASE_CORE: u32 = 1;

/// [`CoreGrant::kind`]: `mask` is what the process holds now.
pub const GRANT_HELD: u32 = 0;
/// [`CoreGrant::kind`]: `mask` is the CPUs the process is asked to give
/// back (it still holds them) within the grace period; after it they are
/// taken.
pub const GRANT_RECLAIM: u32 = 1;

enoki::hint_struct! {
    /// A request from the process that owns the queue it is sent through.
    /// Applications send this very type (`enoki_arachne::CoreRequest`
    /// through `enoki_hints::HintQueue`), so the fingerprints match.
    pub struct CoreRequest {
        /// [`REQUEST_CORES`] or [`RELEASE_CORE`].
        pub kind: u32,
        /// CPUs wanted, at most the machine's CPU count; 0 gives them all
        /// back (with [`REQUEST_CORES`]).
        pub cores: u32,
        /// 0 (most urgent) to [`LOWEST_PRIORITY`]: a process asking at a
        /// more urgent priority is served first, taking CPUs from less
        /// urgent ones (with [`REQUEST_CORES`]).
        pub priority: u32,
        /// The CPU given back (with [`RELEASE_CORE`]).
        pub cpu: u32,
    }
}

impl CoreRequest {
    /// Asks for `cores` CPUs at `priority`.
    pub fn cores(cores: u32, priority: u32) -> Self {
        CoreRequest {
            kind: REQUEST_CORES,
            cores,
            priority,
            cpu: 0,
        }
    }

    /// Gives back `cpu`.
    pub fn release(cpu: u32) -> Self {
        CoreRequest {
            kind: RELEASE_CORE,
            cores: 0,
            priority: 0,
            cpu,
        }
    }
}

enoki::hint_struct! {
    /// What a process holds ([`GRANT_HELD`]), sent through each of its
    /// queues' reverse rings whenever it changes and in answer to each
    /// request taken; or the CPUs it is asked to give back
    /// ([`GRANT_RECLAIM`]).
    pub struct CoreGrant {
        /// Bit `i % 64` of word `i / 64`: CPU `i`.
        pub mask: [u64; 3],
        /// Counts the changes of anyone's grants: a grant with a higher
        /// generation is newer (it wraps after 2^32 changes, and restarts
        /// with a live upgrade).
        pub generation: u32,
        /// [`GRANT_HELD`] or [`GRANT_RECLAIM`].
        pub kind: u32,
    }
}

impl CoreGrant {
    /// `cpus` (those below [`GRANT_CPUS`]) at `generation`.
    pub(crate) fn new(kind: u32, cpus: &CpuSet, generation: u32) -> Self {
        let mut mask = [0u64; 3];
        for (m, w) in mask.iter_mut().zip(cpus.words()) {
            *m = w;
        }
        CoreGrant {
            mask,
            generation,
            kind,
        }
    }

    /// How many CPUs `mask` names.
    pub fn count(&self) -> u32 {
        self.mask
            .iter()
            .map(|w| w.count_ones())
            .fold(0u32, u32::saturating_add)
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
    /// CPUs asked back that their process gave back in time: by a
    /// release hint, or by having nothing left to run there.
    pub(crate) released: Shared<u64>,
    /// CPUs asked back and taken when the grace period ended.
    pub(crate) taken: Shared<u64>,
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
