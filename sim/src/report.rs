// SPDX-License-Identifier: MIT OR Apache-2.0
//! What a simulation measured: per task, per CPU, per group; as a text table
//! or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::check::Violation;

/// One task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub pid: i32,
    pub name: String,
    pub group: String,
    /// Nice value at the end of the run.
    pub nice: i32,
    pub weight: u32,
    /// CPU time, ns.
    pub runtime_ns: u64,
    /// Time runnable but not running, ns.
    pub wait_ns: u64,
    /// Time the task existed during the run, ns.
    pub alive_ns: u64,
    /// `runtime_ns / alive_ns`.
    pub cpu_share: f64,
    pub wakeups: u64,
    /// Times it was preempted while still runnable.
    pub preemptions: u64,
    /// Wakeup to running, ns (nearest-rank percentiles).
    pub wakeup_p50_ns: Option<u64>,
    pub wakeup_p99_ns: Option<u64>,
    pub wakeup_max_ns: Option<u64>,
    pub exited: bool,
    /// The CPU it ran on most, and the share of its CPU time there.
    pub main_cpu: Option<usize>,
    pub main_cpu_share: f64,
}

/// One CPU.
#[derive(Clone, Debug, Serialize)]
pub struct CpuReport {
    pub cpu: usize,
    pub busy_ns: u64,
    pub utilisation: f64,
}

/// One group of tasks from the spec.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub kind: &'static str,
    pub tasks: usize,
    pub runtime_ns: u64,
    /// Jain's index of `cpu_share` over the group's tasks that share the
    /// group's most common weight and lived through the whole run.
    pub jain: Option<f64>,
    /// Requests groups: arrival to completion, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_p50_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_p99_ns: Option<u64>,
}

/// Jain's fairness index over CPU-bound tasks (spinners) of one weight
/// that lived through the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Fairness {
    pub weight: u32,
    pub tasks: usize,
    pub jain: f64,
}

/// Message and error counts, like `/sys/kernel/enoki/counters`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub messages: std::collections::BTreeMap<&'static str, u64>,
    pub pick_errors: u64,
    pub balance_errors: u64,
    pub select_errors: u64,
    pub migrate_errors: u64,
    pub rejected: u64,
    /// The spec's hints (`[[hint]]`) the scheduler took, and refused.
    pub hints_taken: u64,
    pub hints_refused: u64,
}

/// One cgroup of the spec.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupReport {
    pub name: String,
    /// Its `cpu.weight` at the end of the run.
    pub weight: u32,
    /// CPU time of its tasks while in it, its descendants' included.
    pub runtime_ns: u64,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scheduler: String,
    pub seed: u64,
    pub duration_ns: u64,
    pub nr_cpus: usize,
    pub events: u64,
    /// Live upgrades during the run (`[[upgrade]]`).
    #[serde(skip_serializing_if = "is_zero")]
    pub upgrades: usize,
    pub cpus: Vec<CpuReport>,
    pub groups: Vec<GroupReport>,
    /// The spec's cgroups (`[[cgroup]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<CgroupReport>,
    pub fairness: Vec<Fairness>,
    pub tasks: Vec<TaskReport>,
    pub counters: Counters,
    pub violations: Vec<Violation>,
    /// Violations found beyond the ones kept.
    pub violations_dropped: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Nearest-rank percentile `p` (0..=100) of `v`, sorting it.
pub fn percentile(v: &mut [u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Jain's fairness index: (Σx)² / (n Σx²); 1 is perfectly fair.
pub fn jain(xs: &[f64]) -> Option<f64> {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    (!xs.is_empty() && sq > 0.0).then(|| sum * sum / (xs.len() as f64 * sq))
}

fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

fn us(ns: Option<u64>) -> String {
    ns.map_or("-".into(), |n| format!("{:.1}", n as f64 / 1e3))
}

impl Report {
    /// Human-readable tables.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scheduler {}  seed {}  {} CPUs  {} ms simulated  {} events",
            self.scheduler,
            self.seed,
            self.nr_cpus,
            ms(self.duration_ns),
            self.events
        );
        let _ = writeln!(
            s,
            "\n{:>6} {:<14} {:>5} {:>10} {:>10} {:>6} {:>8} {:>8} {:>10} {:>10}",
            "pid",
            "task",
            "nice",
            "run ms",
            "wait ms",
            "cpu%",
            "wakeups",
            "preempt",
            "wake p50us",
            "wake p99us"
        );
        for t in &self.tasks {
            let _ = writeln!(
                s,
                "{:>6} {:<14} {:>5} {:>10} {:>10} {:>6.1} {:>8} {:>8} {:>10} {:>10}{}",
                t.pid,
                t.name,
                t.nice,
                ms(t.runtime_ns),
                ms(t.wait_ns),
                100.0 * t.cpu_share,
                t.wakeups,
                t.preemptions,
                us(t.wakeup_p50_ns),
                us(t.wakeup_p99_ns),
                if t.exited { "  exited" } else { "" }
            );
        }
        let _ = writeln!(
            s,
            "\n{:<10} {:>6} {:>10} {:>6} {:>10} {:>12} {:>12}",
            "group", "tasks", "run ms", "jain", "requests", "req p50us", "req p99us"
        );
        for g in &self.groups {
            let _ = writeln!(
                s,
                "{:<10} {:>6} {:>10} {:>6} {:>10} {:>12} {:>12}",
                g.name,
                g.tasks,
                ms(g.runtime_ns),
                g.jain.map_or("-".into(), |j| format!("{j:.3}")),
                g.requests_done.map_or("-".into(), |n| n.to_string()),
                us(g.request_p50_ns),
                us(g.request_p99_ns)
            );
        }
        if !self.cgroups.is_empty() {
            let _ = writeln!(s, "\n{:<10} {:>6} {:>10}", "cgroup", "weight", "run ms");
        }
        for c in &self.cgroups {
            let _ = writeln!(s, "{:<10} {:>6} {:>10}", c.name, c.weight, ms(c.runtime_ns));
        }
        for f in &self.fairness {
            let _ = writeln!(
                s,
                "fairness: {} spinners of weight {}: Jain {:.4}",
                f.tasks, f.weight, f.jain
            );
        }
        let util: Vec<String> = self
            .cpus
            .iter()
            .map(|c| format!("{}:{:.0}%", c.cpu, 100.0 * c.utilisation))
            .collect();
        let _ = writeln!(s, "CPU utilisation: {}", util.join(" "));
        let c = &self.counters;
        let msgs: Vec<String> = c
            .messages
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(s, "messages: {}", msgs.join(" "));
        let _ = writeln!(
            s,
            "errors: pick {} balance {} select {} migrate {} rejected {}",
            c.pick_errors, c.balance_errors, c.select_errors, c.migrate_errors, c.rejected
        );
        if self.violations.is_empty() {
            let _ = writeln!(s, "invariants: ok");
        } else {
            let _ = writeln!(
                s,
                "invariants: {} violation(s)",
                self.violations.len() as u64 + self.violations_dropped
            );
            for v in &self.violations {
                let _ = writeln!(s, "  {v}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_jain() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50));
        assert_eq!(percentile(&mut v, 99.0), Some(99));
        assert_eq!(percentile(&mut [7], 99.0), Some(7));
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(jain(&[1.0, 1.0, 1.0]), Some(1.0));
        assert!((jain(&[1.0, 0.0]).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(jain(&[]), None);
    }
}
