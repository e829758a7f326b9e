// SPDX-License-Identifier: MIT OR Apache-2.0
//! The simulated tasks: what each kind of group does when its burst ends,
//! how it is created, woken and changed.

use std::collections::VecDeque;

use anyhow::Result;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::Rng;
use rand_distr::Exp;

use enoki::{CgroupId, CpuId, CpuSet, EnokiScheduler, Pid, ROOT_CGROUP};

use super::{Ev, Sim};
use crate::spec::parse_cpus;
use crate::tap::TaskState;

/// "Never ends": the burst of a spinner.
const FOREVER: u64 = u64::MAX / 4;
/// First pid handed out.
pub(super) const FIRST_PID: Pid = 1000;

/// A request waiting for a worker.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request {
    arrived: u64,
    /// Service time, ns.
    service: u64,
}

#[derive(Clone, Debug)]
pub(super) enum Kind {
    Spinner,
    Sleeper {
        run: u64,
        sleep: u64,
    },
    PingPong {
        work: u64,
    },
    Fork {
        every: u64,
        burst: usize,
        run: u64,
        limit: usize,
        spawned: usize,
    },
    Requests {
        queue: VecDeque<Request>,
        mix: WeightedIndex<f64>,
        service: Vec<u64>,
        rate: f64,
        latencies: Vec<u64>,
        done: u64,
    },
}

impl Kind {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Kind::Spinner => "spinner",
            Kind::Sleeper { .. } => "sleeper",
            Kind::PingPong { .. } => "pingpong",
            Kind::Fork { .. } => "forkstorm",
            Kind::Requests { .. } => "requests",
        }
    }
}

pub(super) struct Group {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) nice: i32,
    pub(super) allowed: CpuSet,
    /// Tasks (ping-pong: pairs) created at start.
    pub(super) count: usize,
    /// The cgroup its tasks are forked into.
    pub(super) cgroup: CgroupId,
    pub(super) pids: Vec<Pid>,
    /// Its tasks are threads of one process, its first task's.
    pub(super) process: bool,
}

pub(super) struct Task {
    pub(super) name: String,
    pub(super) group: usize,
    pub(super) cgroup: CgroupId,
    pub(super) nice: i32,
    /// CPU time left in the current burst.
    pub(super) remaining: u64,
    pub(super) on_cpu: Option<CpuId>,
    pub(super) runnable_since: Option<u64>,
    /// Set by a wakeup: the latency clock.
    pub(super) woken_at: Option<u64>,
    pub(super) born: u64,
    pub(super) died: Option<u64>,
    /// Ping-pong: holds the token; partner.
    pub(super) token: bool,
    pub(super) partner: Option<Pid>,
    /// Requests: arrival time of the request being served.
    pub(super) request: Option<u64>,
    pub(super) runtime: u64,
    /// ... by CPU.
    pub(super) runtime_by_cpu: std::collections::BTreeMap<CpuId, u64>,
    pub(super) wait: u64,
    pub(super) latencies: Vec<u64>,
    pub(super) preemptions: u64,
}

impl<S: EnokiScheduler> Sim<S> {
    /// The spec's groups, in the spec's order.
    pub(super) fn add_groups(&mut self) -> Result<()> {
        let n = self.nr_cpus();
        let spec = self.spec.clone();
        let cpus = |s: &Option<String>| {
            s.as_deref()
                .map_or(Ok(CpuSet::first_n(n)), |s| parse_cpus(s, n))
        };
        for g in &spec.spinners {
            self.add_group(&g.name, Kind::Spinner, g.nice, cpus(&g.cpus)?, g.count);
        }
        for g in &spec.sleepers {
            let kind = Kind::Sleeper {
                run: g.run_us * 1000,
                sleep: g.sleep_us * 1000,
            };
            self.add_group(&g.name, kind, g.nice, cpus(&g.cpus)?, g.count);
        }
        for g in &spec.pingpongs {
            let kind = Kind::PingPong {
                work: g.work_us * 1000,
            };
            self.add_group(&g.name, kind, g.nice, cpus(&g.cpus)?, g.pairs);
        }
        for g in &spec.forkstorms {
            let kind = Kind::Fork {
                every: g.every_us * 1000,
                burst: g.burst,
                run: g.run_us * 1000,
                limit: g.limit,
                spawned: 0,
            };
            self.add_group(&g.name, kind, g.nice, CpuSet::first_n(n), 0);
        }
        for g in &spec.requests {
            let mix = WeightedIndex::new(g.mix.iter().map(|c| c.weight))?;
            let service = g
                .mix
                .iter()
                .map(|c| (c.service_us * 1000.0).round() as u64)
                .collect();
            let kind = Kind::Requests {
                queue: VecDeque::new(),
                mix,
                service,
                rate: g.rate_per_s,
                latencies: Vec::new(),
                done: 0,
            };
            self.add_group(&g.name, kind, g.nice, cpus(&g.cpus)?, g.workers);
        }
        Ok(())
    }

    fn add_group(&mut self, name: &str, kind: Kind, nice: i32, allowed: CpuSet, count: usize) {
        self.groups.push(Group {
            name: name.to_owned(),
            kind,
            nice,
            allowed,
            count,
            cgroup: ROOT_CGROUP,
            pids: Vec::new(),
            process: self.spec.processes.iter().any(|p| p == name),
        });
    }

    /// Creates group `gi`'s first tasks, or queues its first fork or arrival.
    pub(super) fn start_group(&mut self, gi: usize) {
        let count = self.groups[gi].count;
        match self.groups[gi].kind.clone() {
            Kind::Spinner => {
                for i in 0..count {
                    self.spawn(gi, i, FOREVER);
                }
            }
            Kind::Sleeper { run, .. } => {
                for i in 0..count {
                    self.spawn(gi, i, run);
                }
            }
            Kind::PingPong { work } => {
                for i in 0..count {
                    self.spawn_pair(gi, i, work);
                }
            }
            Kind::Fork { .. } => self.push(0, Ev::Fork { group: gi }),
            Kind::Requests { rate, .. } => {
                for i in 0..count {
                    self.spawn(gi, i, 0);
                }
                let first = self.interarrival(rate);
                self.push(first, Ev::Arrival { group: gi });
            }
        }
    }

    /// Ping-pong pair `i` of group `gi`: the first holds the token.
    fn spawn_pair(&mut self, gi: usize, i: usize, work: u64) {
        let a = self.spawn(gi, 2 * i, work);
        let b = self.spawn(gi, 2 * i + 1, 0);
        for (x, y) in [(a, b), (b, a)] {
            if let Some(t) = self.tasks.get_mut(&x) {
                t.partner = Some(y);
            }
        }
        if let Some(t) = self.tasks.get_mut(&a) {
            t.token = true;
        }
    }

    /// Queues the spec's affinity and nice changes.
    pub(super) fn schedule_changes(&mut self) {
        let spec = &self.spec;
        let affinity: Vec<u64> = spec.affinity.iter().map(|a| a.at_ms).collect();
        let renice: Vec<u64> = spec.renice.iter().map(|r| r.at_ms).collect();
        for (idx, at_ms) in affinity.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::Affinity { idx });
        }
        for (idx, at_ms) in renice.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::Renice { idx });
        }
        let upgrades: Vec<u64> = self.spec.upgrades.iter().map(|u| u.at_ms).collect();
        for (idx, at_ms) in upgrades.into_iter().enumerate() {
            self.push(at_ms * 1_000_000, Ev::Upgrade { idx });
        }
    }

    fn interarrival(&mut self, rate: f64) -> u64 {
        let exp = Exp::new(rate / 1e9).unwrap_or_else(|_| Exp::new(1e-9).expect("positive rate"));
        (exp.sample(&mut self.rng).ceil() as u64).max(1)
    }

    /// Forks task `index` of group `gi` with a first burst of `burst` ns.
    fn spawn(&mut self, gi: usize, index: usize, burst: u64) -> Pid {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.groups[gi].pids.push(pid);
        let tgid = self.tgid(gi, pid);
        let g = &self.groups[gi];
        let (allowed, nice, cgroup) = (g.allowed, g.nice, g.cgroup);
        let task = Task {
            name: format!("{}.{index}", g.name),
            group: gi,
            cgroup,
            nice,
            remaining: burst,
            on_cpu: None,
            runnable_since: Some(self.now),
            woken_at: Some(self.now),
            born: self.now,
            died: None,
            token: false,
            partner: None,
            request: None,
            runtime: 0,
            runtime_by_cpu: Default::default(),
            wait: 0,
            latencies: Vec::new(),
            preemptions: 0,
        };
        self.tasks.insert(pid, task);
        let parent = self.spawn_rr % self.nr_cpus();
        self.spawn_rr += 1;
        self.on(parent);
        self.d
            .spawn_thread_in(pid, tgid, allowed, nice, parent, cgroup);
        self.note_queued(pid);
        pid
    }

    /// The process of task `pid` of group `gi`.
    pub(super) fn tgid(&self, gi: usize, pid: Pid) -> Pid {
        let g = &self.groups[gi];
        match g.pids.first() {
            Some(&leader) if g.process => leader,
            _ => pid,
        }
    }

    /// After `pid` was enqueued: the CPU it waits for must pick if idle.
    fn note_queued(&mut self, pid: Pid) {
        match self.d.state(pid) {
            Some(TaskState::Queued { cpu }) if self.d.running(cpu).is_none() => {
                self.resched.insert(cpu);
            }
            Some(TaskState::Fallback) => {
                let allowed = self.groups[self.tasks[&pid].group].allowed;
                let idle = (0..self.nr_cpus())
                    .find(|c| self.d.running(*c).is_none() && allowed.contains(*c));
                if let Some(cpu) = idle {
                    self.resched.insert(cpu);
                }
            }
            _ => {}
        }
    }

    /// A fork storm's next burst of children.
    pub(super) fn fork(&mut self, group: usize) {
        let Kind::Fork {
            every,
            burst,
            run,
            limit,
            spawned,
        } = self.groups[group].kind
        else {
            return;
        };
        let n = if limit > 0 {
            burst.min(limit - spawned)
        } else {
            burst
        };
        for i in 0..n {
            self.spawn(group, spawned + i, run);
        }
        if let Kind::Fork { spawned, .. } = &mut self.groups[group].kind {
            *spawned += n;
        }
        if limit == 0 || spawned + n < limit {
            self.push(self.now + every, Ev::Fork { group });
        }
    }

    /// The spec's affinity change `idx`.
    pub(super) fn change_affinity(&mut self, idx: usize) {
        let a = self.spec.affinity[idx].clone();
        let allowed =
            parse_cpus(&a.cpus, self.nr_cpus()).unwrap_or_else(|_| CpuSet::first_n(self.nr_cpus()));
        self.on(0);
        for pid in self.targets(&a.target) {
            self.d.set_affinity(pid, allowed);
            self.note_queued(pid);
        }
        // New tasks of a targeted group get the new set too.
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == a.target) {
            g.allowed = allowed;
        }
    }

    /// The spec's nice change `idx`.
    pub(super) fn renice(&mut self, idx: usize) {
        let r = self.spec.renice[idx].clone();
        self.on(0);
        for pid in self.targets(&r.target) {
            self.d.set_nice(pid, r.nice);
            if let Some(t) = self.tasks.get_mut(&pid) {
                t.nice = r.nice;
            }
        }
        if let Some(g) = self.groups.iter_mut().find(|g| g.name == r.target) {
            g.nice = r.nice;
        }
    }

    /// The spec's live upgrade `idx`, from CPU 0; then every CPU picks
    /// again, as Enoki-C's kick makes them. A refusal ends the run.
    pub(super) fn upgrade(&mut self, idx: usize) {
        let u = self.spec.upgrades[idx].clone();
        let args = u.args.unwrap_or_else(|| self.spec.run.args.clone());
        self.on(0);
        match self.d.upgrade(&args, u.fresh, 0) {
            Ok(()) => {
                self.upgrades += 1;
                self.resched.extend(0..self.nr_cpus());
            }
            Err(refusal) => {
                self.refused.get_or_insert(format!(
                    "the upgrade at {} ms was refused: {refusal}",
                    u.at_ms
                ));
            }
        }
    }

    /// Live tasks named by `target`: a group, or one task (`group.index`).
    pub(super) fn targets(&self, target: &str) -> Vec<Pid> {
        self.tasks
            .iter()
            .filter(|(_, t)| {
                t.died.is_none() && (t.name == target || self.groups[t.group].name == target)
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// The task on `cpu` finished its burst: what it does next.
    pub(super) fn burst_end(&mut self, cpu: CpuId) {
        let Some(pid) = self.cpus[cpu].running else {
            return;
        };
        let gi = self.tasks[&pid].group;
        match &self.groups[gi].kind {
            Kind::Spinner => {
                self.tasks.get_mut(&pid).expect("running task").remaining = FOREVER;
                self.restart_burst(cpu);
            }
            Kind::Sleeper { run, sleep } => {
                let (run, sleep) = (*run, *sleep);
                self.tasks.get_mut(&pid).expect("running task").remaining = run;
                self.d.block(cpu);
                self.push(self.now + sleep, Ev::Wake { pid, waker: cpu });
            }
            Kind::PingPong { work } => self.pass_token(cpu, pid, *work),
            Kind::Fork { .. } => {
                self.d.exit(pid);
                self.tasks.get_mut(&pid).expect("running task").died = Some(self.now);
            }
            Kind::Requests { .. } => self.serve_next(cpu, pid, gi),
        }
    }

    /// Ping-pong task `pid` on `cpu` hands its partner the token and `work`,
    /// then sleeps unless the token is already back.
    fn pass_token(&mut self, cpu: CpuId, pid: Pid, work: u64) {
        let t = self.tasks.get_mut(&pid).expect("running task");
        if std::mem::take(&mut t.token) {
            if let Some(partner) = t.partner {
                // It reads the reply next: a sync wakeup.
                self.give(partner, work, cpu, true);
            }
        }
        if self.tasks[&pid].token {
            // Passed back already: the pipe is readable, no sleep.
            self.restart_burst(cpu);
        } else {
            self.d.block(cpu);
        }
    }

    /// Worker `pid` of group `gi` finished its request: it takes the next
    /// waiting one, or sleeps.
    fn serve_next(&mut self, cpu: CpuId, pid: Pid, gi: usize) {
        let Kind::Requests {
            queue,
            latencies,
            done,
            ..
        } = &mut self.groups[gi].kind
        else {
            return;
        };
        let t = self.tasks.get_mut(&pid).expect("running task");
        if let Some(arrived) = t.request.take() {
            latencies.push(self.now - arrived);
            *done += 1;
        }
        if let Some(next) = queue.pop_front() {
            t.request = Some(next.arrived);
            t.remaining = next.service;
            self.restart_burst(cpu);
        } else {
            self.d.block(cpu);
        }
    }

    /// Hands `pid` more work (`ns`), waking it if it sleeps (a sync wakeup
    /// if `sync`: the waker is about to sleep).
    fn give(&mut self, pid: Pid, ns: u64, waker: CpuId, sync: bool) {
        let Some(t) = self.tasks.get_mut(&pid) else {
            return;
        };
        t.token = true;
        t.remaining += ns;
        match (t.on_cpu, self.d.state(pid)) {
            (Some(cpu), _) => self.restart_burst(cpu),
            (None, Some(TaskState::Blocked)) => self.wake(pid, waker, sync),
            _ => {}
        }
    }

    /// A request for group `gi` arrives on a random CPU: an idle worker
    /// takes it, else it waits.
    pub(super) fn arrival(&mut self, gi: usize) {
        let irq = self.rng.random_range(0..self.nr_cpus());
        let Kind::Requests {
            mix, service, rate, ..
        } = &self.groups[gi].kind
        else {
            return;
        };
        let ns = service[mix.sample(&mut self.rng)];
        let rate = *rate;
        let idle = self.groups[gi]
            .pids
            .iter()
            .copied()
            .find(|p| self.tasks[p].request.is_none());
        self.on(irq);
        match idle {
            Some(pid) => {
                self.tasks.get_mut(&pid).expect("worker").request = Some(self.now);
                self.give(pid, ns, irq, false);
            }
            None => {
                if let Kind::Requests { queue, .. } = &mut self.groups[gi].kind {
                    queue.push_back(Request {
                        arrived: self.now,
                        service: ns,
                    });
                }
            }
        }
        let next = self.now + self.interarrival(rate);
        self.push(next, Ev::Arrival { group: gi });
    }

    /// Wakes a sleeping task from `waker` (by a waker about to sleep if
    /// `sync`).
    pub(super) fn wake(&mut self, pid: Pid, waker: CpuId, sync: bool) {
        if self.d.state(pid) != Some(TaskState::Blocked) {
            return;
        }
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.runnable_since = Some(self.now);
            t.woken_at = Some(self.now);
        }
        if sync {
            self.d.wake_sync(pid, waker);
        } else {
            self.d.wake(pid, waker);
        }
        self.note_queued(pid);
    }
}
