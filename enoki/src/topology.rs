// SPDX-License-Identifier: GPL-2.0
//! CPU topology as plain data: cores, last-level caches, NUMA nodes and
//! their distances, as Enoki-C saw them when the scheduler loaded.

use super::abi::{RawCpu, RawTopology, MAX_CPUS, MAX_NODES};
use super::collections::{AllocError, FixedVec};
use super::scheduler::InitError;
use super::types::{CpuId, CpuSet};

/// The machine a scheduler runs on. Kept on the heap (it can describe
/// hundreds of CPUs, too much for a kernel stack).
pub struct Topology {
    cpus: FixedVec<RawCpu>,
    nr_nodes: usize,
    distance: [[u8; MAX_NODES]; MAX_NODES],
    /// Per CPU, the CPUs sharing its LLC; computed once.
    llc_sets: FixedVec<CpuSet>,
    node_sets: [CpuSet; MAX_NODES],
}

impl Topology {
    /// From what Enoki-C (or a trace) filled in; an error if inconsistent.
    pub fn from_raw(raw: &RawTopology) -> Result<Self, InitError> {
        let n = raw.nr_cpus as usize;
        let nodes = raw.nr_nodes as usize;
        if n == 0 || n > MAX_CPUS || nodes == 0 || nodes > MAX_NODES {
            return Err(InitError::InvalidArgument("topology"));
        }
        let ok = raw.cpus[..n].iter().all(|c| {
            (c.core as usize) < n
                && (c.llc as usize) < n
                && (c.node as usize) < nodes
                && c.package >= 0
        });
        if !ok {
            return Err(InitError::InvalidArgument("topology"));
        }
        Ok(Self::build(
            FixedVec::new_with(n, |i| raw.cpus[i])?,
            nodes,
            raw.distance,
        )?)
    }

    fn build(
        cpus: FixedVec<RawCpu>,
        nr_nodes: usize,
        distance: [[u8; MAX_NODES]; MAX_NODES],
    ) -> Result<Self, AllocError> {
        let mut node_sets = [CpuSet::empty(); MAX_NODES];
        for (cpu, c) in cpus.iter().enumerate() {
            node_sets[c.node as usize].insert(cpu);
        }
        let llc_sets = FixedVec::new_with(cpus.len(), |cpu| {
            let mut set = CpuSet::empty();
            for (other, c) in cpus.iter().enumerate() {
                if c.llc == cpus[cpu].llc {
                    set.insert(other);
                }
            }
            set
        })?;
        Ok(Topology {
            cpus,
            nr_nodes,
            distance,
            llc_sets,
            node_sets,
        })
    }

    /// Writes this topology into `raw` (for traces and simulators).
    pub fn fill_raw(&self, raw: &mut RawTopology) {
        raw.nr_cpus = self.cpus.len() as u32;
        raw.nr_nodes = self.nr_nodes as u32;
        raw.cpus[..self.cpus.len()].copy_from_slice(&self.cpus);
        raw.distance = self.distance;
    }

    /// A copy (allocates: call at init only).
    pub fn try_clone(&self) -> Result<Self, AllocError> {
        Self::build(
            FixedVec::new_with(self.cpus.len(), |i| self.cpus[i])?,
            self.nr_nodes,
            self.distance,
        )
    }

    /// `sockets` packages of `cores` cores of `threads` SMT threads each,
    /// one LLC and one NUMA node per socket, remote distance `remote`.
    pub fn symmetric(
        sockets: usize,
        cores: usize,
        threads: usize,
        remote: u8,
    ) -> Result<Self, AllocError> {
        let per_socket = (cores * threads).max(1);
        let n = (sockets.max(1) * per_socket).min(MAX_CPUS);
        let nr_nodes = sockets.clamp(1, MAX_NODES);
        let cpus = FixedVec::new_with(n, |cpu| {
            let socket = cpu / per_socket;
            RawCpu {
                core: (cpu - (cpu % per_socket) % threads.max(1)) as i32,
                llc: (socket * per_socket) as i32,
                node: socket.min(MAX_NODES - 1) as i32,
                package: socket as i32,
            }
        })?;
        let mut distance = [[0; MAX_NODES]; MAX_NODES];
        for (a, row) in distance.iter_mut().enumerate().take(nr_nodes) {
            for (b, d) in row.iter_mut().enumerate().take(nr_nodes) {
                *d = if a == b { 10 } else { remote };
            }
        }
        Self::build(cpus, nr_nodes, distance)
    }

    /// CPUs, numbered `0..nr_cpus()`.
    pub fn nr_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// NUMA nodes.
    pub fn nr_nodes(&self) -> usize {
        self.nr_nodes
    }

    /// Every CPU number.
    pub fn cpus(&self) -> core::ops::Range<CpuId> {
        0..self.nr_cpus()
    }

    /// NUMA node of `cpu`.
    pub fn node_of(&self, cpu: CpuId) -> usize {
        self.cpus[cpu].node as usize
    }

    /// Last-level cache of `cpu`, named by its first CPU.
    pub fn llc_of(&self, cpu: CpuId) -> usize {
        self.cpus[cpu].llc as usize
    }

    /// SMT core of `cpu`, named by its first CPU.
    pub fn core_of(&self, cpu: CpuId) -> usize {
        self.cpus[cpu].core as usize
    }

    /// Socket of `cpu`.
    pub fn package_of(&self, cpu: CpuId) -> usize {
        self.cpus[cpu].package as usize
    }

    /// NUMA distance between the nodes of two CPUs (10 when local).
    pub fn distance(&self, a: CpuId, b: CpuId) -> u8 {
        self.distance[self.node_of(a)][self.node_of(b)]
    }

    /// CPUs sharing `cpu`'s last-level cache (itself included).
    pub fn llc_cpus(&self, cpu: CpuId) -> CpuSet {
        self.llc_sets.get(cpu).copied().unwrap_or_default()
    }

    /// CPUs on NUMA node `node`.
    pub fn node_cpus(&self, node: usize) -> CpuSet {
        self.node_sets.get(node).copied().unwrap_or_default()
    }

    /// Every CPU.
    pub fn all_cpus(&self) -> CpuSet {
        CpuSet::first_n(self.nr_cpus())
    }

    /// The other CPUs in order of closeness to `cpu`: its LLC, its node,
    /// then the rest (where a waking task or a thief looks first).
    pub fn nearest(&self, cpu: CpuId) -> impl Iterator<Item = CpuId> {
        self.nearest_of(cpu, &self.all_cpus())
    }

    /// The CPUs of `set` but `cpu` in the order of [`Topology::nearest`]:
    /// a search over a few CPUs takes a few steps, not one per CPU.
    pub fn nearest_of(&self, cpu: CpuId, set: &CpuSet) -> impl Iterator<Item = CpuId> {
        let mut others = *set & self.all_cpus();
        others.remove(cpu);
        let llc = self.llc_cpus(cpu);
        let node = self.node_cpus(self.node_of(cpu));
        let near = (others & llc).iter();
        let mid = (others & node.without(llc)).iter();
        let far = others.without(node).iter();
        near.chain(mid).chain(far)
    }

    /// `cpu` itself if `set` has it, then the rest of `set` as
    /// [`Topology::nearest_of`] orders them: where a task that ran on `cpu`
    /// is best placed within `set`, best first.
    pub fn cpu_then_nearest_of(&self, cpu: CpuId, set: &CpuSet) -> impl Iterator<Item = CpuId> {
        let here = Some(cpu).filter(|c| set.contains(*c));
        here.into_iter().chain(self.nearest_of(cpu, set))
    }

    /// The CPU of `set` nearest to `cpu` (not `cpu` itself), as
    /// [`Topology::nearest`] orders them.
    pub fn nearest_in(&self, cpu: CpuId, set: &CpuSet) -> Option<CpuId> {
        self.nearest_of(cpu, set).next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_two_sockets() {
        let t = Topology::symmetric(2, 4, 1, 21).unwrap();
        assert_eq!(t.nr_cpus(), 8);
        assert_eq!(t.nr_nodes(), 2);
        assert_eq!(t.node_of(5), 1);
        assert_eq!(t.distance(0, 5), 21);
        assert_eq!(t.distance(4, 5), 10);
        assert_eq!(
            t.llc_cpus(6).iter().collect::<std::vec::Vec<_>>(),
            [4, 5, 6, 7]
        );
        let mut raw = RawTopology::default();
        t.fill_raw(&mut raw);
        let back = Topology::from_raw(&raw).unwrap();
        assert_eq!(back.distance(0, 7), 21);
        assert_eq!(back.llc_cpus(1).len(), 4);
        let smt = Topology::symmetric(1, 2, 2, 21).unwrap();
        assert_eq!(smt.core_of(1), 0);
        assert_eq!(smt.core_of(3), 2);
    }

    #[test]
    fn nearest_cpus_share_the_llc_first() {
        let t = Topology::symmetric(2, 4, 1, 21).unwrap();
        let near: std::vec::Vec<_> = t.nearest(5).collect();
        assert_eq!(near, [4, 6, 7, 0, 1, 2, 3]);
        assert_eq!(t.nearest(0).next(), Some(1));
        let mut set = CpuSet::default();
        set.insert(5);
        assert_eq!(t.nearest_in(5, &set), None, "not the CPU itself");
        set.insert(2);
        set.insert(1);
        assert_eq!(t.nearest_in(5, &set), Some(1));
        for cpu in t.cpus() {
            for set in [set, t.all_cpus(), t.llc_cpus(6), CpuSet::default()] {
                let of: std::vec::Vec<_> = t.nearest_of(cpu, &set).collect();
                let filtered: std::vec::Vec<_> =
                    t.nearest(cpu).filter(|c| set.contains(*c)).collect();
                assert_eq!(of, filtered, "cpu {cpu}");
                let then: std::vec::Vec<_> = t.cpu_then_nearest_of(cpu, &set).collect();
                let once: std::vec::Vec<_> = core::iter::once(cpu)
                    .chain(t.nearest(cpu))
                    .filter(|c| set.contains(*c))
                    .collect();
                assert_eq!(then, once, "cpu {cpu}");
            }
        }
    }

    #[test]
    fn rejects_inconsistent_raw() {
        let mut raw = RawTopology::default();
        Topology::symmetric(1, 2, 1, 21).unwrap().fill_raw(&mut raw);
        raw.cpus[1].node = 3;
        assert!(Topology::from_raw(&raw).is_err());
    }
}
