// SPDX-License-Identifier: GPL-2.0
//! The vocabulary schedulers work with: CPUs, tasks, CPU sets and the
//! [`Schedulable`] token.

use core::ops::{BitAnd, BitOr, Sub};

use super::abi::{CPUMASK_WORDS, MAX_CPUS};

/// A CPU number, `0..Topology::nr_cpus()`.
pub type CpuId = usize;
/// A kernel task id (thread id).
pub type Pid = i32;

/// Proof that task `pid` may run on CPU `cpu`.
///
/// Only libEnoki creates one: when a task becomes runnable, is preempted, or
/// is moved. It is neither `Clone` nor `Copy`, so a scheduler holds at most
/// one per task, and it gives it back by returning it from `pick_next_task`.
#[derive(Debug, PartialEq, Eq)]
pub struct Schedulable {
    pid: Pid,
    cpu: CpuId,
    slice_ns: u64,
}

impl Schedulable {
    /// Visible to libEnoki only (`super` is libEnoki's root in both builds).
    pub(super) fn new(pid: Pid, cpu: CpuId) -> Self {
        Schedulable {
            pid,
            cpu,
            slice_ns: 0,
        }
    }

    /// The task this token is for.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The CPU this token allows the task to run on.
    pub fn cpu(&self) -> CpuId {
        self.cpu
    }

    /// Time slice to run for once picked, in ns; 0 means the module default.
    pub fn slice_ns(&self) -> u64 {
        self.slice_ns
    }

    /// Sets the time slice used when this token is picked.
    pub fn set_slice_ns(&mut self, ns: u64) {
        self.slice_ns = ns;
    }

    /// Consumes the token (libEnoki only).
    pub(super) fn into_parts(self) -> (Pid, CpuId, u64) {
        (self.pid, self.cpu, self.slice_ns)
    }
}

/// A fixed-size set of CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSet {
    bits: [u64; CPUMASK_WORDS],
}

impl CpuSet {
    /// The empty set.
    pub const fn empty() -> Self {
        CpuSet {
            bits: [0; CPUMASK_WORDS],
        }
    }

    /// CPUs `0..n`.
    pub fn first_n(n: usize) -> Self {
        let mut s = Self::empty();
        for cpu in 0..n.min(MAX_CPUS) {
            s.insert(cpu);
        }
        s
    }

    /// From the raw words of a message.
    pub const fn from_words(bits: [u64; CPUMASK_WORDS]) -> Self {
        CpuSet { bits }
    }

    /// The raw words, for a message.
    pub const fn words(&self) -> [u64; CPUMASK_WORDS] {
        self.bits
    }

    /// Adds `cpu` (ignored past `MAX_CPUS`).
    pub fn insert(&mut self, cpu: CpuId) {
        if cpu < MAX_CPUS {
            self.bits[cpu / 64] |= 1 << (cpu % 64);
        }
    }

    /// Removes `cpu`.
    pub fn remove(&mut self, cpu: CpuId) {
        if cpu < MAX_CPUS {
            self.bits[cpu / 64] &= !(1 << (cpu % 64));
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: CpuId) -> bool {
        cpu < MAX_CPUS && self.bits[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> CpuSetIter {
        CpuSetIter {
            bits: self.bits,
            word: 0,
            left: self.bits[0],
        }
    }

    /// CPUs in this set but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        *self - *other
    }

    /// Word by word, `f(ours, theirs)`.
    fn combine(self, other: CpuSet, f: impl Fn(u64, u64) -> u64) -> CpuSet {
        let mut bits = self.bits;
        for (b, o) in bits.iter_mut().zip(other.bits) {
            *b = f(*b, o);
        }
        CpuSet { bits }
    }
}

/// The CPUs of a [`CpuSet`] in ascending order ([`CpuSet::iter`]): CPU
/// searches walk sets on every wakeup and idle balance, so it goes word
/// by word with no more state than the word it is in.
#[derive(Clone, Debug)]
pub struct CpuSetIter {
    bits: [u64; CPUMASK_WORDS],
    /// Index of the word `left` came from.
    word: usize,
    /// That word's CPUs not returned yet.
    left: u64,
}

impl Iterator for CpuSetIter {
    type Item = CpuId;

    fn next(&mut self) -> Option<CpuId> {
        while self.left == 0 {
            self.word += 1;
            self.left = *self.bits.get(self.word)?;
        }
        let bit = self.left.trailing_zeros() as usize;
        self.left &= self.left - 1;
        Some(self.word * 64 + bit)
    }
}

/// CPUs in both sets.
impl BitAnd for CpuSet {
    type Output = CpuSet;
    fn bitand(self, other: CpuSet) -> CpuSet {
        self.combine(other, |a, b| a & b)
    }
}

/// CPUs in either set.
impl BitOr for CpuSet {
    type Output = CpuSet;
    fn bitor(self, other: CpuSet) -> CpuSet {
        self.combine(other, |a, b| a | b)
    }
}

impl CpuSet {
    /// CPUs in this set but not in `other` (the `-` operator, by name for
    /// schedulers, whose lints refuse arithmetic operators).
    pub fn without(self, other: CpuSet) -> CpuSet {
        self.combine(other, |a, b| a & !b)
    }
}

/// CPUs in the left set but not in the right one.
impl Sub for CpuSet {
    type Output = CpuSet;
    fn sub(self, other: CpuSet) -> CpuSet {
        self.without(other)
    }
}

/// A cgroup, by its id (the kernel's `cgroup_id()`: stable while the
/// cgroup lives, never reused meanwhile).
pub type CgroupId = u64;

/// The root cgroup's id: every task not in another cgroup is in it.
pub const ROOT_CGROUP: CgroupId = 1;

/// What Enoki-C tells a scheduler about a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup.
    pub id: CgroupId,
    /// Its parent; `None` for the root.
    pub parent: Option<CgroupId>,
    /// Its `cpu.weight`, 1..=10000 (100 by default).
    pub weight: u32,
    /// Its `cpu.max`.
    pub bandwidth: Bandwidth,
}

/// A cgroup's `cpu.max` and `cpu.max.burst`: its tasks together may run
/// for `quota_ns` in each `period_ns`, plus up to `burst_ns` of what they
/// left unused in earlier periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// The period, ns (1 ms..=1 s; 100 ms by default).
    pub period_ns: u64,
    /// CPU time per period, ns; `None`: no limit (`max`, the default).
    pub quota_ns: Option<u64>,
    /// Unused quota carried over, ns (0 by default).
    pub burst_ns: u64,
}

impl Bandwidth {
    /// No limit: a new cgroup's.
    pub const UNLIMITED: Self = Bandwidth {
        period_ns: 100_000_000,
        quota_ns: None,
        burst_ns: 0,
    };

    /// From the kernel's fields: `quota` `u64::MAX` means no limit; a
    /// period of 0 (a trace older than the fields) is [`Self::UNLIMITED`].
    pub fn from_raw(period: u64, quota: u64, burst: u64) -> Self {
        if period == 0 {
            return Self::UNLIMITED;
        }
        Bandwidth {
            period_ns: period,
            quota_ns: (quota != u64::MAX).then_some(quota),
            burst_ns: burst,
        }
    }
}

/// What Enoki-C tells a scheduler about a task entering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task.
    pub pid: Pid,
    /// Its process (thread group).
    pub tgid: Pid,
    /// CFS weight, 1024 at nice 0.
    pub weight: u32,
    /// Nice value, -20..=19.
    pub nice: i32,
    /// Total CPU time so far, ns.
    pub runtime: u64,
    /// CPUs it may run on.
    pub allowed: CpuSet,
    /// Its cgroup ([`ROOT_CGROUP`] in traces older than cgroups).
    pub cgroup: CgroupId,
}

/// The task a CPU ran before asking for the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrevTask {
    /// The task.
    pub pid: Pid,
    /// Total CPU time so far, ns.
    pub runtime: u64,
    /// Still runnable: it will come back through `task_preempt`.
    pub runnable: bool,
}

/// Whether a CPU goes idle after a pick: nothing was `picked` and no
/// runnable `prev` stays. With nothing picked, a runnable `prev` keeps
/// running (the default [`crate::EnokiScheduler::keep_running`]), and the
/// kernel then keeps it without asking again: the CPU is busy. Idle flags
/// should follow this; a busy CPU flagged idle draws the wakeups and kicks
/// meant for idle ones.
pub fn cpu_goes_idle(picked: bool, prev: Option<PrevTask>) -> bool {
    !picked && !prev.is_some_and(|p| p.runnable)
}

/// Why a picked token could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickError {
    /// The token was for another CPU (caught by libEnoki).
    WrongCpu,
    /// The task is not waiting for a CPU any more.
    NotQueued,
    /// The CPU is not allowed for the task right now.
    Affinity,
    /// The task does not exist any more.
    NoTask,
}

impl PickError {
    pub(super) fn from_code(code: u32) -> Self {
        use super::abi::err;
        match code {
            err::WRONG_CPU => PickError::WrongCpu,
            err::AFFINITY => PickError::Affinity,
            err::NO_TASK => PickError::NoTask,
            _ => PickError::NotQueued,
        }
    }
}

/// CFS weights by nice value, `NICE_TO_WEIGHT[(nice + 20) as usize]`
/// (the kernel's `sched_prio_to_weight`): each step is about 10 % CPU.
pub const NICE_TO_WEIGHT: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// CFS weight of `nice` (clamped to -20..=19).
pub fn nice_to_weight(nice: i32) -> u32 {
    NICE_TO_WEIGHT[(nice.clamp(-20, 19) + 20) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_goes_idle_only_with_nothing_picked_and_no_runnable_prev() {
        let prev = |runnable| {
            Some(PrevTask {
                pid: 7,
                runtime: 0,
                runnable,
            })
        };
        assert!(cpu_goes_idle(false, None));
        assert!(cpu_goes_idle(false, prev(false)));
        assert!(!cpu_goes_idle(false, prev(true)), "a runnable prev stays");
        assert!(!cpu_goes_idle(true, None));
        assert!(!cpu_goes_idle(true, prev(false)));
    }

    #[test]
    fn cpuset_basics() {
        let mut s = CpuSet::empty();
        assert!(s.is_empty());
        s.insert(3);
        s.insert(70);
        s.insert(MAX_CPUS + 5); // ignored, not a panic
        assert!(s.contains(3) && s.contains(70) && !s.contains(4));
        assert_eq!(s.iter().collect::<std::vec::Vec<_>>(), [3, 70]);
        s.remove(3);
        assert_eq!(s.len(), 1);
        assert_eq!(CpuSet::first_n(8).len(), 8);
    }

    fn set(cpus: &[CpuId]) -> CpuSet {
        let mut s = CpuSet::empty();
        cpus.iter().for_each(|c| s.insert(*c));
        s
    }

    fn cpus(s: CpuSet) -> std::vec::Vec<CpuId> {
        s.iter().collect()
    }

    #[test]
    fn cpuset_operators() {
        let a = set(&[1, 3, 64, 130]);
        let b = set(&[3, 4, 130, 200]);
        assert_eq!(cpus(a & b), [3, 130]);
        assert_eq!(cpus(a | b), [1, 3, 4, 64, 130, 200]);
        assert_eq!(cpus(a - b), [1, 64]);
        assert_eq!(cpus(b - a), [4, 200]);
        assert_eq!(a.difference(&b), a - b);
        assert!((a - a).is_empty());
        assert_eq!(a | CpuSet::empty(), a);
    }

    proptest::proptest! {
        #[test]
        fn cpuset_operators_match_membership(
            a in proptest::collection::vec(0..MAX_CPUS, 0..40),
            b in proptest::collection::vec(0..MAX_CPUS, 0..40),
        ) {
            let (sa, sb) = (set(&a), set(&b));
            for cpu in 0..MAX_CPUS {
                let (in_a, in_b) = (a.contains(&cpu), b.contains(&cpu));
                proptest::prop_assert_eq!((sa & sb).contains(cpu), in_a && in_b);
                proptest::prop_assert_eq!((sa | sb).contains(cpu), in_a || in_b);
                proptest::prop_assert_eq!((sa - sb).contains(cpu), in_a && !in_b);
            }
        }

        #[test]
        fn cpuset_iterates_its_cpus_once_each_in_order(
            a in proptest::collection::vec(0..MAX_CPUS, 0..40),
        ) {
            let mut want = a.clone();
            want.sort_unstable();
            want.dedup();
            proptest::prop_assert_eq!(cpus(set(&a)), want);
        }
    }

    #[test]
    fn cpuset_iteration_crosses_empty_words_to_the_last_cpu() {
        assert_eq!(cpus(CpuSet::empty()), []);
        assert_eq!(cpus(set(&[MAX_CPUS - 1])), [MAX_CPUS - 1]);
        assert_eq!(cpus(set(&[0, 63, 64, 200])), [0, 63, 64, 200]);
        let mut it = set(&[5]).iter();
        assert_eq!((it.next(), it.next(), it.next()), (Some(5), None, None));
    }
}
