// SPDX-License-Identifier: GPL-2.0
//! Where tasks go: the CPUs around each CPU, nearest first; the CPU a
//! waking task is placed on; the idle CPU kicked to take waiting work; the
//! task an idle CPU steals.

use enoki::abi::MAX_NODES;
use enoki::{CpuId, CpuSet, Pid, Result, Topology, Wake};

use super::Wfq;

/// The CPUs around one CPU, nearest first (computed at init).
pub(super) struct Near {
    /// CPUs sharing its last-level cache, itself included.
    pub(super) llc: CpuSet,
    /// CPUs of its NUMA node.
    pub(super) node: CpuSet,
    /// The CPUs of each other node, nearest node first.
    pub(super) remote: [CpuSet; MAX_NODES],
}

impl Near {
    pub(super) fn new(t: &Topology, cpu: CpuId) -> Self {
        let local = t.node_of(cpu);
        // Other nodes with CPUs, by (distance, node).
        let mut others = [(u8::MAX, 0usize); MAX_NODES];
        let mut n = 0;
        for node in (0..t.nr_nodes()).filter(|node| *node != local) {
            let Some(first) = t.node_cpus(node).iter().next() else {
                continue;
            };
            if let Some(slot) = others.get_mut(n) {
                *slot = (t.distance(cpu, first), node);
                n = n.saturating_add(1);
            }
        }
        others.sort_unstable();
        let mut remote = [CpuSet::empty(); MAX_NODES];
        for (set, (_, node)) in remote.iter_mut().zip(&others).take(n) {
            *set = t.node_cpus(*node);
        }
        Near {
            llc: t.llc_cpus(cpu),
            node: t.node_cpus(local),
            remote,
        }
    }
}

impl Wfq {
    /// The other CPUs, nearest to `cpu` first: its LLC, its node, then the
    /// other nodes by distance.
    pub(super) fn nearest(&self, cpu: CpuId) -> impl Iterator<Item = CpuId> + '_ {
        self.near.get(cpu).into_iter().flat_map(move |near| {
            let llc = near.llc.iter().filter(move |c| *c != cpu);
            let node = near.node.without(near.llc).iter();
            llc.chain(node)
                .chain(near.remote.iter().flat_map(CpuSet::iter))
        })
    }

    /// Tasks on `cpu`'s node (queued or running) and CPUs there.
    fn node_load(&self, cpu: CpuId) -> (u64, u64) {
        let Some(near) = self.near.get(cpu) else {
            return (0, 1);
        };
        (
            near.node.iter().map(|c| self.nr_running(c) as u64).sum(),
            near.node.len() as u64,
        )
    }

    /// Whether `thief` may take work from `victim`: always within a node;
    /// across nodes when the victim's has `imbalance_pct` % more tasks per CPU.
    pub(super) fn may_steal(&self, thief: CpuId, victim: CpuId) -> bool {
        let t = &self.topology;
        if t.node_of(thief) == t.node_of(victim) {
            return true;
        }
        let (here_tasks, here_cpus) = self.node_load(thief);
        let (there_tasks, there_cpus) = self.node_load(victim);
        there_tasks.saturating_mul(here_cpus).saturating_mul(100)
            > here_tasks
                .saturating_mul(there_cpus)
                .saturating_mul(self.params.imbalance_pct)
    }

    /// The CPU of `idle` nearest to `cpu` that `allowed` permits and that
    /// may take work from `cpu`.
    pub(super) fn idle_thief(&self, cpu: CpuId, allowed: &CpuSet, idle: CpuSet) -> Option<CpuId> {
        let candidates = *allowed & idle;
        if candidates.is_empty() {
            return None;
        }
        self.nearest(cpu)
            .find(|c| candidates.contains(*c) && self.may_steal(*c, cpu))
    }

    /// The task `cpu` should take from the busiest of `victims`: of the
    /// waiting tasks allowed on `cpu`, the next in line; and its queue.
    pub(super) fn task_to_steal(
        &self,
        cpu: CpuId,
        victims: impl Iterator<Item = CpuId>,
    ) -> Result<Option<(Pid, CpuId)>> {
        let mut best: Option<(usize, Pid, CpuId)> = None;
        for victim in victims.filter(|v| *v != cpu) {
            // Only a queue where a task waits behind another; the summary
            // spares locking the rest.
            let nr = self.nr_running(victim);
            if nr < 2 || best.is_some_and(|(most, _, _)| nr <= most) {
                continue;
            }
            let rq = self.rqs.lock(victim)?;
            let allowed_here =
                |pid: Pid| rq.tasks.get(pid).is_some_and(|t| t.allowed.contains(cpu));
            let next = rq
                .waiting
                .iter()
                .filter(|(pid, _, _)| allowed_here(*pid))
                .min_by_key(|(pid, v, _)| (**v, *pid));
            if let Some((pid, _, _)) = next.filter(|_| rq.nr_running() >= 2) {
                best = Some((rq.nr_running(), pid, victim));
            }
        }
        Ok(best.map(|(_, pid, victim)| (pid, victim)))
    }

    /// The waker's CPU for a sync wakeup when only the waker runs there:
    /// it is about to sleep, so its CPU switches to the woken task next,
    /// with no idle CPU woken and no migration. Marks the handoff for the
    /// enqueue that follows.
    pub(super) fn sync_target(&self, allowed: CpuSet, wake: Wake) -> Option<CpuId> {
        let waker = wake.waker_cpu;
        let alone = wake.sync && allowed.contains(waker) && self.nr_running(waker) <= 1;
        if alone {
            self.handoff.set(waker, true);
        }
        alone.then_some(waker)
    }

    /// The CPU for a waking task allowed on `allowed` that last ran on
    /// `prev_cpu`: `prev_cpu` if idle, else an idle CPU of its LLC, else of
    /// its node; else, for a task that ran before, `prev_cpu` again if it
    /// may run there (as CFS's wakeups fall back to their target: idle CPUs
    /// and the tick even out the load); else the least loaded allowed CPU,
    /// nearest first on ties (as CFS places a new task). Reading every
    /// CPU's load on each wakeup of a busy machine would contend with each
    /// CPU's own updates of it.
    pub(super) fn choose_cpu(&self, allowed: CpuSet, prev_cpu: CpuId, new: bool) -> CpuId {
        let Some(near) = self.near.get(prev_cpu) else {
            return prev_cpu;
        };
        let idle = allowed & self.idle_cpus();
        if idle.contains(prev_cpu) {
            return prev_cpu;
        }
        if let Some(cpu) = (idle & near.llc)
            .iter()
            .chain((idle & near.node).iter())
            .next()
        {
            return cpu;
        }
        // Offline CPUs last (a task allowed on no other CPU stays on its
        // previous one, whose move the kernel makes).
        let load = |cpu: &CpuId| {
            self.summary(*cpu).map_or((true, u64::MAX), |c| {
                let l = c.load.get();
                (l.offline, l.load)
            })
        };
        let (prev_offline, _) = load(&prev_cpu);
        if !new && allowed.contains(prev_cpu) && !prev_offline {
            return prev_cpu;
        }
        core::iter::once(prev_cpu)
            .chain(self.nearest(prev_cpu))
            .filter(|cpu| allowed.contains(*cpu))
            .map(|cpu| (load(&cpu), cpu))
            .min_by_key(|(load, _)| *load)
            .filter(|((offline, _), _)| !offline)
            .map_or(prev_cpu, |(_, cpu)| cpu)
    }
}
