// SPDX-License-Identifier: MIT OR Apache-2.0
//! The report of a finished simulation.

use std::collections::BTreeMap;

use enoki::abi::kind;
use enoki::EnokiScheduler;

use super::workload::Kind;
use super::Sim;
use crate::check::{Violation, ViolationKind};
use crate::report::{self, Counters, CpuReport, Fairness, GroupReport, Report, TaskReport};

/// Ran from the start to the end of the simulation.
fn whole_run(t: &TaskReport, end: u64) -> bool {
    t.alive_ns == end && !t.exited
}

impl<S: EnokiScheduler> Sim<S> {
    pub(super) fn report(&mut self, scheduler: &str) -> Report {
        let tasks = self.task_reports();
        let groups = self.group_reports(&tasks);
        let cgroups = self.cgroup_reports();
        let fairness = self.fairness(&tasks);
        let (mut violations, dropped) = self.checker.as_mut().map_or((Vec::new(), 0), |c| {
            (std::mem::take(&mut c.found), c.dropped)
        });
        // A failure is reported whether or not invariants are checked.
        // (`fault()` only once failed: reading it is a lock event, which a
        // recording in progress would keep.)
        if let Some((time_ns, fault)) = self.failed_at.and_then(|t| Some((t, self.d.fault()?))) {
            violations.insert(
                0,
                Violation {
                    time_ns,
                    kind: ViolationKind::Failed,
                    detail: fault.to_string(),
                },
            );
        }
        let end = self.end;
        Report {
            scheduler: scheduler.to_owned(),
            seed: self.seed,
            duration_ns: end,
            nr_cpus: self.nr_cpus(),
            events: self.events,
            upgrades: self.upgrades,
            cgroups,
            cpus: self
                .cpus
                .iter()
                .enumerate()
                .map(|(cpu, c)| CpuReport {
                    cpu,
                    busy_ns: c.busy,
                    utilisation: c.busy as f64 / end as f64,
                })
                .collect(),
            groups,
            fairness,
            tasks,
            counters: self.counters(),
            violations,
            violations_dropped: dropped,
        }
    }

    fn task_reports(&mut self) -> Vec<TaskReport> {
        let end = self.end;
        let mut tasks = Vec::new();
        for (pid, t) in self.tasks.iter_mut() {
            let alive = t.died.unwrap_or(end) - t.born;
            let wait = t.wait + t.runnable_since.map_or(0, |s| end - s);
            let wakeups = t.latencies.len() as u64;
            let main = t.runtime_by_cpu.iter().max_by_key(|(_, ns)| **ns);
            tasks.push(TaskReport {
                pid: *pid,
                name: t.name.clone(),
                group: self.groups[t.group].name.clone(),
                nice: t.nice,
                weight: enoki::nice_to_weight(t.nice),
                runtime_ns: t.runtime,
                wait_ns: wait,
                alive_ns: alive,
                cpu_share: if alive > 0 {
                    t.runtime as f64 / alive as f64
                } else {
                    0.0
                },
                wakeups,
                preemptions: t.preemptions,
                wakeup_p50_ns: report::percentile(&mut t.latencies, 50.0),
                wakeup_p99_ns: report::percentile(&mut t.latencies, 99.0),
                wakeup_max_ns: t.latencies.last().copied(),
                exited: t.died.is_some(),
                main_cpu: main.map(|(cpu, _)| *cpu),
                main_cpu_share: main.map_or(0.0, |(_, ns)| *ns as f64 / t.runtime.max(1) as f64),
            });
        }
        tasks
    }

    fn group_reports(&mut self, tasks: &[TaskReport]) -> Vec<GroupReport> {
        let end = self.end;
        let mut groups = Vec::new();
        for g in self.groups.iter_mut() {
            let members: Vec<&TaskReport> = tasks.iter().filter(|t| t.group == g.name).collect();
            let mut by_weight: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
            for t in members.iter().filter(|t| whole_run(t, end)) {
                by_weight.entry(t.weight).or_default().push(t.cpu_share);
            }
            let common = by_weight.values().max_by_key(|v| v.len());
            let (done, p50, p99) = match &mut g.kind {
                Kind::Requests {
                    latencies, done, ..
                } => (
                    Some(*done),
                    report::percentile(latencies, 50.0),
                    report::percentile(latencies, 99.0),
                ),
                _ => (None, None, None),
            };
            groups.push(GroupReport {
                name: g.name.clone(),
                kind: g.kind.name(),
                tasks: members.len(),
                runtime_ns: members.iter().map(|t| t.runtime_ns).sum(),
                jain: common.and_then(|v| report::jain(v)),
                requests_done: done,
                request_p50_ns: p50,
                request_p99_ns: p99,
            });
        }
        groups
    }

    /// Jain's index of the spinners' CPU shares, per weight.
    fn fairness(&self, tasks: &[TaskReport]) -> Vec<Fairness> {
        let mut spin: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for t in tasks.iter().filter(|t| {
            whole_run(t, self.end)
                && matches!(self.groups[self.tasks[&t.pid].group].kind, Kind::Spinner)
        }) {
            spin.entry(t.weight).or_default().push(t.cpu_share);
        }
        spin.into_iter()
            .filter_map(|(weight, v)| {
                report::jain(&v).map(|jain| Fairness {
                    weight,
                    tasks: v.len(),
                    jain,
                })
            })
            .collect()
    }

    fn counters(&self) -> Counters {
        let c = &self.d.counters;
        Counters {
            messages: (1..kind::NR as usize)
                .map(|k| (kind::NAMES[k], c.msgs[k]))
                .collect(),
            pick_errors: c.pick_errors,
            balance_errors: c.balance_errors,
            select_errors: c.select_errors,
            migrate_errors: c.migrate_errors,
            rejected: c.rejected,
            hints_taken: self.hints_taken,
            hints_refused: self.hints_refused,
        }
    }
}
