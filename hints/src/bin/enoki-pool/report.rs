// SPDX-License-Identifier: GPL-2.0
//! The report: `key value` lines of latency percentiles, the CPUs asked
//! for, held and used over time, the CPU time of the watched processes,
//! and the arbiter's timeline and reclaims.

use anyhow::{anyhow, Context, Result};

use crate::arbiter::{ArbiterLog, Reclaimed};
use crate::load::Phase;

/// The `p`-quantile (0..=1) of `sorted` by nearest rank, or None if empty.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Nanoseconds as whole microseconds; `-` for none.
fn fmt_us(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".to_string(), |ns| (ns / 1000).to_string())
}

/// A step function over a span: its mean over time, least and greatest
/// value, and value at the end.
#[derive(Debug, PartialEq)]
struct Span {
    mean: f64,
    min: u32,
    max: u32,
    end: u32,
}

/// A step function given by its changes `(time, value)` in time order (0
/// before the first) over `[from, to]`.
fn weighted(changes: &[(f64, u32)], from: f64, to: f64) -> Span {
    let value_at = |t: f64| {
        changes
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, v)| *v)
    };
    let mut value = value_at(from);
    let (mut area, mut min, mut max, mut since) = (0.0, value, value, from);
    for &(at, v) in changes.iter().filter(|(at, _)| *at > from && *at <= to) {
        area += f64::from(value) * (at - since);
        since = at;
        value = v;
        min = min.min(v);
        max = max.max(v);
    }
    area += f64::from(value) * (to - since);
    let span = to - from;
    let mean = if span > 0.0 {
        area / span
    } else {
        f64::from(value)
    };
    Span {
        mean,
        min,
        max,
        end: value,
    }
}

/// The processes whose CPU time is reported per phase (`--watch-pid`).
pub struct Watch {
    pids: Vec<u32>,
    ticks_per_s: u64,
}

impl Watch {
    pub fn new(pids: Vec<u32>) -> Self {
        // SAFETY: sysconf() has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Watch {
            pids,
            ticks_per_s: u64::try_from(ticks).unwrap_or(100),
        }
    }

    /// CPU time of all the processes (those still readable) in ms.
    pub fn cpu_ms(&self) -> u64 {
        self.pids
            .iter()
            .filter_map(|p| cpu_ms(*p, self.ticks_per_s).ok())
            .sum()
    }
}

/// CPU time (user and system, all threads, in ms) `pid` has used, from
/// `/proc/PID/stat`.
fn cpu_ms(pid: u32, ticks_per_s: u64) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) from 3 (state) on:
    // utime is 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: field {} unreadable", i + 3))
    };
    let ticks = tick(11)?.saturating_add(tick(12)?);
    Ok(ticks.saturating_mul(1000) / ticks_per_s.max(1))
}

/// A phase's start or end: ms since the pool's start, and the CPU time
/// the watched processes had used by then.
#[derive(Clone, Copy)]
pub struct Bound {
    pub ms: f64,
    pub watched_ms: u64,
}

/// What happened in one phase.
pub struct PhaseRun<'a> {
    phase: &'a Phase,
    from: Bound,
    to: Bound,
    arrived: u64,
    /// Of the requests that arrived in it and were served, sorted.
    latencies: Vec<u64>,
}

impl<'a> PhaseRun<'a> {
    /// Each of `phases` with its bounds (`bounds`: each phase's start, and
    /// the last one's end), arrivals and latencies (ns).
    pub fn collect(
        phases: &'a [Phase],
        bounds: &[Bound],
        arrivals: &[u64],
        latencies: Vec<Vec<u64>>,
    ) -> Vec<Self> {
        let each = phases.iter().zip(bounds.windows(2)).zip(arrivals);
        each.zip(latencies)
            .filter_map(|(((phase, bounds), &arrived), mut latencies)| {
                let &[from, to] = bounds else { return None };
                latencies.sort_unstable();
                Some(PhaseRun {
                    phase,
                    from,
                    to,
                    arrived,
                    latencies,
                })
            })
            .collect()
    }
}

/// Everything the report says.
pub struct Report<'a> {
    pub no_arbiter: bool,
    /// Whether any process was watched (`--watch-pid`).
    pub watching: bool,
    pub phases: Vec<PhaseRun<'a>>,
    /// Workers active: (ms since the pool's start, workers) at each change.
    pub active_log: &'a [(f64, u32)],
    pub arrived: u64,
    pub completed: u64,
    /// Requests never served.
    pub dropped: usize,
    /// When the last request was served or the drain gave up.
    pub finished_ms: f64,
    pub log: &'a ArbiterLog,
}

/// Prints the report, `key value` a line.
pub fn print(r: &Report) {
    let mode = if r.no_arbiter {
        "no-arbiter"
    } else {
        "arbiter"
    };
    println!("mode {mode}");
    println!("phases {}", r.phases.len());
    let mut all = Vec::new();
    for (i, phase) in r.phases.iter().enumerate() {
        print_phase(&format!("phase.{i}"), phase, r);
        all.extend_from_slice(&phase.latencies);
    }
    all.sort_unstable();
    println!("total.arrived {}", r.arrived);
    println!("total.completed {}", r.completed);
    println!("total.dropped {}", r.dropped);
    print_percentiles("total", &all);
    println!("total.finished_ms {:.0}", r.finished_ms);
    print_timeline(r.log);
    print_reclaims(&r.log.reclaims);
}

/// `{key}.p50_us` and so on of `sorted` latencies (ns).
fn print_percentiles(key: &str, sorted: &[u64]) {
    println!("{key}.p50_us {}", fmt_us(percentile(sorted, 0.5)));
    println!("{key}.p99_us {}", fmt_us(percentile(sorted, 0.99)));
    println!("{key}.p999_us {}", fmt_us(percentile(sorted, 0.999)));
}

/// One phase's lines, `{key}.…`.
fn print_phase(key: &str, p: &PhaseRun, r: &Report) {
    let (from, to) = (p.from.ms, p.to.ms);
    println!("{key}.rate {}", p.phase.rate);
    println!("{key}.start_ms {from:.1}");
    println!("{key}.duration_ms {}", p.phase.duration.as_millis());
    println!("{key}.arrived {}", p.arrived);
    let offered = p.arrived as f64 / p.phase.duration.as_secs_f64();
    println!("{key}.offered {offered:.0}");
    println!("{key}.completed {}", p.latencies.len());
    print_percentiles(key, &p.latencies);
    for (name, changes) in [
        ("asked", r.log.asked.as_slice()),
        ("held", r.log.held.as_slice()),
        ("active", r.active_log),
    ] {
        let w = weighted(changes, from, to);
        println!("{key}.{name}_mean {:.2}", w.mean);
        println!("{key}.{name}_min {}", w.min);
        println!("{key}.{name}_max {}", w.max);
        println!("{key}.{name}_end {}", w.end);
    }
    if r.watching {
        let ms = p.to.watched_ms.saturating_sub(p.from.watched_ms);
        println!("{key}.watch_cpu_ms {ms}");
        println!("{key}.watch_cpus {:.2}", ms as f64 / (to - from).max(1.0));
    }
}

/// The requests and grants, and each of them in order.
fn print_timeline(log: &ArbiterLog) {
    println!("requests {}", log.requests);
    println!("grants {}", log.grants());
    println!("grants.stale {}", log.stale);
    println!("rev_dropped {}", log.rev_dropped);
    for e in &log.events {
        match e.generation {
            Some(g) => println!("timeline {:.1} {} {} gen {g}", e.ms, e.what, e.count),
            None => println!("timeline {:.1} {} {}", e.ms, e.what, e.count),
        }
    }
}

/// The reclaims answered: totals, then each.
fn print_reclaims(reclaims: &[Reclaimed]) {
    println!("reclaims {}", reclaims.len());
    let cpus: usize = reclaims.iter().map(|r| r.cpus.len()).sum();
    println!("reclaims.cpus {cpus}");
    let refused: u64 = reclaims.iter().map(|r| u64::from(r.refused)).sum();
    println!("reclaims.refused {refused}");
    let took = reclaims.iter().map(|r| r.took_ms).fold(0.0, f64::max);
    println!("reclaims.max_ms {took:.2}");
    let gone = reclaims
        .iter()
        .filter_map(|r| r.gone_ms)
        .fold(0.0, f64::max);
    println!("reclaims.max_gone_ms {gone:.2}");
    let unresolved = reclaims.iter().filter(|r| r.gone_ms.is_none()).count();
    println!("reclaims.unresolved {unresolved}");
    for r in reclaims {
        let gone = r
            .gone_ms
            .map_or_else(|| "-".to_string(), |g| format!("{g:.2}"));
        println!(
            "reclaim {:.1} cpus {} took_ms {:.2} refused {} gone_ms {gone}",
            r.ms,
            r.cpus.len(),
            r.took_ms,
            r.refused
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.999), Some(7));
        assert_eq!(percentile(&[1, 2], 0.5), Some(1));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(fmt_us(Some(1999)), "1");
        assert_eq!(fmt_us(None), "-");
    }

    #[test]
    fn time_weighted_means() {
        let changes = [(0.0, 2), (100.0, 6), (150.0, 4)];
        let w = weighted(&changes, 0.0, 200.0);
        assert!((w.mean - (2.0 * 100.0 + 6.0 * 50.0 + 4.0 * 50.0) / 200.0).abs() < 1e-9);
        assert_eq!((w.min, w.max, w.end), (2, 6, 4));
        // from inside a step: the value in effect counts
        let w = weighted(&changes, 120.0, 140.0);
        assert!((w.mean - 6.0).abs() < 1e-9);
        assert_eq!((w.min, w.max, w.end), (6, 6, 6));
        let w = weighted(&changes, 120.0, 300.0);
        assert_eq!((w.min, w.max, w.end), (4, 6, 4));
        let w = weighted(&[], 0.0, 10.0);
        assert_eq!(
            w,
            Span {
                mean: 0.0,
                min: 0,
                max: 0,
                end: 0
            }
        );
    }

    /// This very process's CPU time reads, and never falls; a process
    /// gone counts nothing.
    #[test]
    fn cpu_time_of_live_processes() {
        let me = std::process::id();
        assert!(cpu_ms(me, 100).is_ok());
        assert!(cpu_ms(u32::MAX, 100).is_err());
        let watch = Watch::new(vec![me, u32::MAX]);
        let before = watch.cpu_ms();
        assert!(watch.cpu_ms() >= before);
    }

    /// Phases pair with their bounds, arrivals and latencies (sorted).
    #[test]
    fn phase_runs_pair_up() {
        let phases = [
            Phase {
                rate: 1.0,
                duration: std::time::Duration::from_millis(10),
            },
            Phase {
                rate: 2.0,
                duration: std::time::Duration::from_millis(20),
            },
        ];
        let bounds: Vec<Bound> = [0.0, 10.0, 30.0]
            .iter()
            .map(|&ms| Bound { ms, watched_ms: 0 })
            .collect();
        let runs = PhaseRun::collect(&phases, &bounds, &[3, 4], vec![vec![3, 1], vec![]]);
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[1].from.ms, runs[1].to.ms, runs[1].arrived),
            (10.0, 30.0, 4)
        );
        assert_eq!(runs[0].latencies, vec![1, 3]);
    }
}
