// SPDX-License-Identifier: GPL-2.0
//! The arbitration: which processes hold hint queues, how many CPUs each
//! asks for, and which CPUs each holds.

use core::cmp::Reverse;

use enoki::{AllocError, CpuId, CpuSet, FixedVec, Pid, QueueId, Topology};

use super::hints::{CoreGrant, GRANT_CPUS, GRANT_HELD, GRANT_RECLAIM, LOWEST_PRIORITY};

/// Hint queues open at once, at most; another open fails (ENOSPC) until
/// one is closed.
pub const MAX_QUEUES: usize = 64;
/// Processes with a queue open at once, at most. A [`Change`] names them
/// by slot in one `u64`, so this is at most 64.
pub const MAX_PROCESSES: usize = 64;

/// A process that holds a queue open.
#[derive(Clone, Copy, Default)]
struct Process {
    /// 0: a free slot.
    tgid: Pid,
    /// Its open queues: the slot, and the grant, go with the last one.
    queues: u32,
    /// CPUs it asked for.
    asked: u32,
    /// How urgent: 0 first.
    priority: u32,
    /// When it started asking: of the processes a max-min split leaves
    /// one CPU short, the earliest askers get the CPUs left over.
    since: u64,
    /// How many CPUs the split gives it.
    target: u32,
    /// The CPUs it holds, those it is asked to give back included.
    grant: CpuSet,
    /// The CPUs of `grant` it is asked to give back.
    reclaiming: CpuSet,
    /// The CPUs it will hold, while a split is placed, and of them those
    /// it will be asked to give back.
    next: CpuSet,
    next_reclaiming: CpuSet,
}

/// What happens to a CPU a split takes from a process that still wants
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// It goes at once.
    AtOnce,
    /// The process is asked to give it back and holds it until it does
    /// (see [`Grants::release_cpu`]); the CPU's new owner waits.
    Asked,
}

#[derive(Clone, Copy)]
struct OpenQueue {
    id: QueueId,
    tgid: Pid,
}

/// What a new split changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Processes whose grant changed, or the CPUs they are asked to give
    /// back, by slot (bit `i`: slot `i`).
    slots: u64,
    /// Processes newly asked to give CPUs back, by slot.
    reclaim_slots: u64,
    /// CPUs that changed hands.
    pub moved: CpuSet,
}

/// Bit `slot` of a [`Change`]'s slots.
fn bit(slot: usize) -> u64 {
    u32::try_from(slot)
        .ok()
        .and_then(|s| 1u64.checked_shl(s))
        .unwrap_or(0)
}

fn count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Every queue, every process asking, and who holds which CPU, under one
/// lock so that a placement sees one split.
pub struct Grants {
    processes: FixedVec<Process>,
    queues: FixedVec<Option<OpenQueue>>,
    /// Per CPU, the CPUs of its physical core (itself included).
    cores: FixedVec<CpuSet>,
    online: CpuSet,
    /// Online CPUs a process may be given: those a [`CoreGrant`] can name.
    grantable: CpuSet,
    /// Every CPU some process holds.
    granted: CpuSet,
    /// CPUs never granted, so that tasks of other processes always have
    /// somewhere to run.
    reserve: usize,
    reclaim: Reclaim,
    generation: u32,
    /// Requests seen, to order askers.
    requests: u64,
}

impl Grants {
    /// Empty tables for `topology`, with `reserve` CPUs never granted.
    pub fn new(topology: &Topology, reserve: usize, reclaim: Reclaim) -> Result<Self, AllocError> {
        let nr = topology.nr_cpus();
        let cores = FixedVec::new_with(nr, |cpu| {
            let mut core = CpuSet::empty();
            for other in topology.cpus() {
                if topology.core_of(other) == topology.core_of(cpu) {
                    core.insert(other);
                }
            }
            core
        })?;
        let online = topology.all_cpus();
        Ok(Grants {
            processes: FixedVec::new_with(MAX_PROCESSES, |_| Process::default())?,
            queues: FixedVec::new_with(MAX_QUEUES, |_| None)?,
            cores,
            online,
            grantable: online & CpuSet::first_n(GRANT_CPUS),
            granted: CpuSet::empty(),
            reserve,
            reclaim,
            generation: 0,
            requests: 0,
        })
    }

    fn slot_of(&self, tgid: Pid) -> Option<usize> {
        if tgid == 0 {
            return None;
        }
        self.processes.iter().position(|p| p.tgid == tgid)
    }

    /// The process owning `queue`.
    pub fn queue_owner(&self, queue: QueueId) -> Option<Pid> {
        self.queues
            .iter()
            .flatten()
            .find(|q| q.id == queue)
            .map(|q| q.tgid)
    }

    /// Takes on `queue` of process `tgid`; false when the queues or the
    /// processes are all taken.
    pub fn open(&mut self, queue: QueueId, tgid: Pid) -> bool {
        if tgid == 0 {
            return false;
        }
        if self.queue_owner(queue).is_some() {
            return self.queue_owner(queue) == Some(tgid);
        }
        let slot = self
            .slot_of(tgid)
            .or_else(|| self.processes.iter().position(|p| p.tgid == 0));
        let free = self.queues.iter().position(Option::is_none);
        let (Some(slot), Some(free)) = (slot, free) else {
            return false;
        };
        let (Some(process), Some(entry)) =
            (self.processes.get_mut(slot), self.queues.get_mut(free))
        else {
            return false;
        };
        if process.tgid == 0 {
            *process = Process {
                tgid,
                ..Process::default()
            };
        }
        process.queues = process.queues.saturating_add(1);
        *entry = Some(OpenQueue { id: queue, tgid });
        true
    }

    /// Forgets `queue`; with its process's last queue, the process's grant
    /// goes and the CPUs are split again.
    pub fn close(&mut self, queue: QueueId, topology: &Topology) -> Change {
        let Some(entry) = self
            .queues
            .iter_mut()
            .find(|q| q.is_some_and(|q| q.id == queue))
        else {
            return Change::default();
        };
        let tgid = entry.map_or(0, |q| q.tgid);
        *entry = None;
        let Some(slot) = self.slot_of(tgid) else {
            return Change::default();
        };
        let Some(process) = self.processes.get_mut(slot) else {
            return Change::default();
        };
        process.queues = process.queues.saturating_sub(1);
        if process.queues > 0 {
            return Change::default();
        }
        process.asked = 0;
        let change = self.split(topology);
        if let Some(process) = self.processes.get_mut(slot) {
            *process = Process::default();
        }
        change
    }

    /// Process `tgid` asks for `cores` CPUs at `priority`; the CPUs are
    /// split again.
    pub fn request(&mut self, tgid: Pid, cores: u32, priority: u32, topology: &Topology) -> Change {
        let requests = self.requests.saturating_add(1);
        let Some(process) = self
            .slot_of(tgid)
            .and_then(|slot| self.processes.get_mut(slot))
        else {
            return Change::default();
        };
        if process.asked == 0 && cores > 0 {
            process.since = requests;
            self.requests = requests;
        }
        process.asked = cores;
        process.priority = priority;
        self.split(topology)
    }

    /// The process asked to give back `cpu` gives it back, if it is
    /// `expected_holder` (any process, with `None`); the CPUs are split
    /// again. `None` when no such process was asked for `cpu`.
    pub fn release_cpu(
        &mut self,
        cpu: CpuId,
        expected_holder: Option<Pid>,
        topology: &Topology,
    ) -> Option<Change> {
        let slot = self.reclaimer_slot(cpu)?;
        let process = self.processes.get_mut(slot)?;
        if expected_holder.is_some_and(|tgid| tgid != process.tgid) {
            return None;
        }
        process.reclaiming.remove(cpu);
        process.grant.remove(cpu);
        let mut change = self.split(topology);
        if change.slots == 0 {
            self.generation = self.generation.wrapping_add(1);
        }
        change.slots |= bit(slot);
        change.moved.insert(cpu);
        Some(change)
    }

    /// The slot of the process asked to give back `cpu`, if any.
    fn reclaimer_slot(&self, cpu: CpuId) -> Option<usize> {
        self.processes
            .iter()
            .position(|p| p.tgid != 0 && p.reclaiming.contains(cpu))
    }

    /// The process asked to give back `cpu`, if any.
    #[cfg(any(test, feature = "introspect"))]
    pub fn reclaimer_of(&self, cpu: CpuId) -> Option<Pid> {
        let slot = self.reclaimer_slot(cpu)?;
        self.processes.get(slot).map(|p| p.tgid)
    }

    /// Every CPU some process is asked to give back.
    pub fn reclaiming(&self) -> CpuSet {
        self.processes
            .iter()
            .fold(CpuSet::empty(), |all, p| all | p.reclaiming)
    }

    /// `cpu` came online or goes offline; the CPUs are split again.
    pub fn set_online(&mut self, cpu: CpuId, online: bool, topology: &Topology) -> Change {
        if online {
            self.online.insert(cpu);
        } else {
            self.online.remove(cpu);
        }
        self.grantable = self.online & CpuSet::first_n(GRANT_CPUS);
        self.split(topology)
    }

    /// The CPUs process `tgid` holds.
    pub fn grant_of(&self, tgid: Pid) -> CpuSet {
        self.slot_of(tgid)
            .and_then(|slot| self.processes.get(slot))
            .map_or(CpuSet::empty(), |p| p.grant)
    }

    /// Every CPU some process holds.
    #[cfg(any(test, feature = "introspect"))]
    pub fn granted(&self) -> CpuSet {
        self.granted
    }

    /// How many times the grants changed.
    #[cfg(any(test, feature = "introspect"))]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Where a task of process `tgid` allowed on `allowed` may run: on the
    /// CPUs its process holds; a task of a process holding none, on the
    /// CPUs no process holds; and a task whose affinity excludes all of
    /// those, wherever it may (it must run somewhere).
    pub fn may_run(&self, tgid: Pid, allowed: &CpuSet) -> CpuSet {
        let online = *allowed & self.online;
        if !self.granted.is_empty() {
            let own = self.grant_of(tgid) & *allowed;
            if !own.is_empty() {
                return own;
            }
            let pool = online.without(self.granted);
            if !pool.is_empty() {
                return pool;
            }
        }
        if online.is_empty() {
            *allowed
        } else {
            online
        }
    }

    /// Whether `change` changed the grant of process `tgid`.
    pub fn changed(&self, tgid: Pid, change: &Change) -> bool {
        self.slot_of(tgid)
            .is_some_and(|slot| change.slots & bit(slot) != 0)
    }

    /// What the process owning `queue` holds now, and that process.
    pub fn answer(&self, queue: QueueId) -> Option<(Pid, CoreGrant)> {
        let tgid = self.queue_owner(queue)?;
        Some((
            tgid,
            CoreGrant::new(GRANT_HELD, &self.grant_of(tgid), self.generation),
        ))
    }

    /// What to tell each queue of a process `change` concerns, in order:
    /// what it holds now if that or what it is asked back changed, then
    /// what it is asked to give back if that grew. (queue, its process,
    /// the grant).
    pub fn notices<'a>(
        &'a self,
        change: &'a Change,
    ) -> impl Iterator<Item = (QueueId, Pid, CoreGrant)> + 'a {
        let held = self
            .queues
            .iter()
            .flatten()
            .filter(move |q| self.changed(q.tgid, change))
            .filter_map(move |q| self.answer(q.id).map(|(tgid, grant)| (q.id, tgid, grant)));
        let asked_back = self.queues.iter().flatten().filter_map(move |q| {
            let slot = self.slot_of(q.tgid)?;
            if change.reclaim_slots & bit(slot) == 0 {
                return None;
            }
            let process = self.processes.get(slot)?;
            let grant = CoreGrant::new(GRANT_RECLAIM, &process.reclaiming, self.generation);
            Some((q.id, q.tgid, grant))
        });
        held.chain(asked_back)
    }

    /// Splits the grantable CPUs among the processes asking, then places
    /// the split on CPUs.
    fn split(&mut self, topology: &Topology) -> Change {
        self.set_targets();
        self.place(topology)
    }

    /// Each process's share, priority by priority (0 first), each level
    /// sharing what the more urgent ones left: what it asked when that
    /// fits, else a max-min fair split (water-filling): every process gets
    /// `min(asked, level)` for the highest level that fits, and the CPUs
    /// left over go one each to processes asking more, first to those
    /// already holding more than the level (they keep a CPU rather than
    /// one moving), then to the earliest askers.
    fn set_targets(&mut self) {
        let capacity = self.grantable.len().saturating_sub(self.reserve);
        let mut left = u64::try_from(capacity).unwrap_or(u64::MAX);
        for p in self.processes.iter_mut() {
            p.target = 0;
        }
        for priority in 0..=LOWEST_PRIORITY {
            let given = water_fill(&mut self.processes, priority, left);
            left = left.saturating_sub(given);
        }
    }

    /// Places the targets on CPUs with few moves: each process keeps as
    /// many of its CPUs as its target allows (whole cores, then CPUs in
    /// its cache, first), keeps those it is asked back (see [`Reclaim`]),
    /// and processes growing, most urgent and earliest askers first, take
    /// free CPUs next to theirs (see [`grow`]) as far as the CPUs asked
    /// back leave room.
    fn place(&mut self, topology: &Topology) -> Change {
        let grantable = self.grantable;
        let reclaim = self.reclaim;
        let cores = &self.cores;
        let mut free = grantable;
        for p in self.processes.iter_mut() {
            let had = p.grant & grantable;
            let was_asked = p.reclaiming & had;
            let target = count(p.target);
            let mut keep = shrink(had.without(was_asked), target, cores, topology);
            let short = target.saturating_sub(keep.len());
            keep = keep | shrink(was_asked, short, cores, topology);
            let lost = had.without(keep);
            let wanted = had.len().min(count(p.asked)).saturating_sub(target);
            p.next = keep;
            p.next_reclaiming = match reclaim {
                Reclaim::AtOnce => CpuSet::empty(),
                Reclaim::Asked => asked_back(lost, was_asked, wanted, cores, topology),
            };
            free = free.without(keep | p.next_reclaiming);
        }
        let mut room = free.len().saturating_sub(self.reserve);
        let mut placed = 0u64;
        loop {
            let growing = self
                .processes
                .iter()
                .enumerate()
                .filter(|(i, p)| placed & bit(*i) == 0 && p.next.len() < count(p.target))
                .min_by_key(|(_, p)| (p.priority, p.since))
                .map(|(i, _)| i);
            let Some(slot) = growing else { break };
            placed |= bit(slot);
            if let Some(p) = self.processes.get_mut(slot) {
                let wants = count(p.target).saturating_sub(p.next.len()).min(room);
                room = room.saturating_sub(wants);
                let to = p.next.len().saturating_add(wants);
                p.next = grow(p.next, to, &mut free, cores, topology);
            }
        }
        self.commit()
    }

    /// Makes the placed split the grants, and says what changed.
    fn commit(&mut self) -> Change {
        let mut change = Change::default();
        let mut granted = CpuSet::empty();
        for (slot, p) in self.processes.iter_mut().enumerate() {
            let grant = p.next | p.next_reclaiming;
            if grant != p.grant || p.next_reclaiming != p.reclaiming {
                change.slots |= bit(slot);
                change.moved = change.moved | grant.without(p.grant) | p.grant.without(grant);
            }
            if !p.next_reclaiming.without(p.reclaiming).is_empty() {
                change.reclaim_slots |= bit(slot);
            }
            p.grant = grant;
            p.reclaiming = p.next_reclaiming;
            granted = granted | p.grant;
        }
        self.granted = granted;
        if change.slots != 0 {
            self.generation = self.generation.wrapping_add(1);
        }
        change
    }
}

/// Of the processes at `priority`, each one's target out of `capacity`
/// CPUs (see [`Grants::set_targets`]); returns how many it gave.
fn water_fill(processes: &mut [Process], priority: u32, capacity: u64) -> u64 {
    let filled = |processes: &[Process], level: u32| -> u64 {
        processes
            .iter()
            .filter(|p| p.priority == priority)
            .map(|p| u64::from(p.asked.min(level)))
            .fold(0, u64::saturating_add)
    };
    let all = filled(processes, u32::MAX);
    if all <= capacity {
        for p in processes.iter_mut().filter(|p| p.priority == priority) {
            p.target = p.asked;
        }
        return all;
    }
    let mut level = 0u32;
    while u64::from(level) < capacity && filled(processes, level.saturating_add(1)) <= capacity {
        level = level.saturating_add(1);
    }
    for p in processes.iter_mut().filter(|p| p.priority == priority) {
        p.target = p.asked.min(level);
    }
    let mut left = capacity.saturating_sub(filled(processes, level));
    while left > 0 {
        let short = processes
            .iter_mut()
            .filter(|p| p.priority == priority && p.target == level && p.asked > level)
            .max_by_key(|p| (p.grant.len() > count(level), Reverse(p.since)));
        let Some(process) = short else { break };
        process.target = process.target.saturating_add(1);
        left = left.saturating_sub(1);
    }
    capacity.saturating_sub(left)
}

/// Of `lost`, the `wanted` CPUs a process is asked to give back (it still
/// wants them; the rest of `lost` it gave up itself): those it was already
/// asked for first, so that a new split does not restart the grace period
/// of a CPU already asked back.
fn asked_back(
    lost: CpuSet,
    was_asked: CpuSet,
    wanted: usize,
    cores: &FixedVec<CpuSet>,
    topology: &Topology,
) -> CpuSet {
    let again = lost & was_asked;
    if again.len() >= wanted {
        return shrink(again, wanted, cores, topology);
    }
    let more = wanted.saturating_sub(again.len());
    again | shrink(lost.without(again), more, cores, topology)
}

/// The CPUs of `cpu`'s physical core.
fn core(cores: &FixedVec<CpuSet>, cpu: CpuId) -> CpuSet {
    cores.get(cpu).copied().unwrap_or_default()
}

/// `held` cut down to `to` CPUs, giving up first the CPUs with the fewest
/// core mates held, then the fewest cache mates held, then the lowest
/// (low CPUs, where the kernel's housekeeping tends to run, go back to
/// everyone first).
fn shrink(held: CpuSet, to: usize, cores: &FixedVec<CpuSet>, topology: &Topology) -> CpuSet {
    let mut kept = held;
    while kept.len() > to {
        let worst = kept.iter().min_by_key(|c| {
            let core_mates = (core(cores, *c) & kept).len();
            let llc_mates = (topology.llc_cpus(*c) & kept).len();
            (core_mates, llc_mates, *c)
        });
        let Some(cpu) = worst else { break };
        kept.remove(cpu);
    }
    kept
}

/// `held` grown to `to` CPUs from `free` (taking them out of it): the CPU
/// whose core holds most of `held`, then whose cache does, then in the
/// cache with most CPUs free (a new process starts where it has room to
/// grow), then on a core no other process uses, then the highest.
fn grow(
    held: CpuSet,
    to: usize,
    free: &mut CpuSet,
    cores: &FixedVec<CpuSet>,
    topology: &Topology,
) -> CpuSet {
    let mut set = held;
    while set.len() < to {
        let best = free.iter().max_by_key(|c| {
            let core = core(cores, *c);
            let llc = topology.llc_cpus(*c);
            (
                (core & set).len(),
                (llc & set).len(),
                (llc & *free).len(),
                core.without(*free | set).is_empty(),
                *c,
            )
        });
        let Some(cpu) = best else { break };
        set.insert(cpu);
        free.remove(cpu);
    }
    set
}
