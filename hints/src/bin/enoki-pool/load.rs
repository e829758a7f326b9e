// SPDX-License-Identifier: GPL-2.0
//! The load: its phases (`--phases`), the Poisson arrivals that make it,
//! and the estimate of the CPUs it needs.

use std::collections::VecDeque;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::pool::Pool;

/// Load the estimate provisions for per unit of offered load: Arachne's
/// runtime asks for another core once its cores are about 80% busy.
const HEADROOM: f64 = 1.25;

/// Intervals over which the arrival rate is measured: arrivals come in
/// bursts when the generator was kept from running a while.
pub const RATE_TICKS: usize = 4;

/// Intervals whose estimates must all be lower before the pool asks for
/// fewer CPUs (it asks for more at once).
pub const DOWN_TICKS: usize = 4;

/// Intervals within which the CPUs asked for should clear the requests
/// waiting (a burst of arrivals, or a backlog left by too few CPUs).
const BACKLOG_INTERVALS: u64 = 4;

/// One load phase: Poisson arrivals at `rate` per second for `duration`.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub rate: f64,
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Phases(pub Vec<Phase>);

/// Parses `RATE:MS[,RATE:MS...]`: a rate of 0 to 10^7 requests per second
/// (decimals allowed) and a duration of 1 to 3600000 ms.
pub fn parse_phases(s: &str) -> Result<Phases, String> {
    s.split(',')
        .map(parse_phase)
        .collect::<Result<Vec<_>, _>>()
        .map(Phases)
}

/// Parses one phase, `RATE:MS`.
fn parse_phase(part: &str) -> Result<Phase, String> {
    let (rate, ms) = part
        .split_once(':')
        .ok_or_else(|| format!("phase {part:?} is not RATE:MS"))?;
    let rate = parse_within(part, ("rate", rate), "a number", "", 0.0..=1e7)?;
    let ms = parse_within(
        part,
        ("duration", ms),
        "a whole number of ms",
        " ms",
        1..=3_600_000u64,
    )?;
    Ok(Phase {
        rate,
        duration: Duration::from_millis(ms),
    })
}

/// Field `name` of phase `part`, `text`: a `T` (`kind`, for the error)
/// within `range` (`unit` follows the value in the error).
fn parse_within<T: FromStr + PartialOrd + Display>(
    part: &str,
    (name, text): (&str, &str),
    kind: &str,
    unit: &str,
    range: RangeInclusive<T>,
) -> Result<T, String> {
    let value: T = text
        .trim()
        .parse()
        .map_err(|_| format!("phase {part:?}: {name} {text:?} is not {kind}"))?;
    if !range.contains(&value) {
        let (lo, hi) = (range.start(), range.end());
        return Err(format!(
            "phase {part:?}: {name} {value}{unit} is not within {lo}..={hi}"
        ));
    }
    Ok(value)
}

/// CPUs needed for `rate` arrivals per second of `work_us` each, with
/// [`HEADROOM`], plus those that clear `queued` waiting requests within
/// `drain_us`; clamped to `[min, max]`.
pub fn estimate(rate: f64, work_us: u64, queued: usize, drain_us: u64, min: u32, max: u32) -> u32 {
    let work = work_us as f64;
    let load = rate.max(0.0) * work / 1e6 * HEADROOM;
    let backlog = queued as f64 * work / drain_us.max(1) as f64;
    let need = (load + backlog).ceil();
    // `as` saturates (and takes NaN to 0).
    (need as u32).clamp(min, max)
}

/// The CPUs the pool asks for, estimated once an interval ([`estimate`])
/// from the arrival rate over the last [`RATE_TICKS`] intervals and the
/// requests waiting: up at once, down only once the estimates of the last
/// [`DOWN_TICKS`] intervals all say so.
pub struct CoreEstimate {
    min: u32,
    max: u32,
    work_us: u64,
    /// Within which the CPUs asked for should clear the requests waiting.
    drain_us: u64,
    /// (when, arrivals by then) at the last [`RATE_TICKS`] ticks and now.
    samples: VecDeque<(Instant, u64)>,
    /// The estimates of the last [`DOWN_TICKS`] ticks.
    recent: VecDeque<u32>,
}

impl CoreEstimate {
    /// Estimates every `interval` from `start` on (no arrivals by then),
    /// for requests of `work_us`, within `[min, max]`.
    pub fn new(min: u32, max: u32, work_us: u64, interval: Duration, start: Instant) -> Self {
        let drain_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(BACKLOG_INTERVALS);
        CoreEstimate {
            min,
            max,
            work_us,
            drain_us,
            samples: VecDeque::from([(start, 0)]),
            recent: VecDeque::new(),
        }
    }

    /// The CPUs to ask for at `now`, with `arrived` requests by then and
    /// `queued` of them waiting.
    pub fn next(&mut self, now: Instant, arrived: u64, queued: usize) -> u32 {
        self.samples.push_back((now, arrived));
        if self.samples.len() > RATE_TICKS + 1 {
            self.samples.pop_front();
        }
        let e = estimate(
            self.rate(),
            self.work_us,
            queued,
            self.drain_us,
            self.min,
            self.max,
        );
        self.recent.push_back(e);
        if self.recent.len() > DOWN_TICKS {
            self.recent.pop_front();
        }
        self.recent.iter().copied().max().unwrap_or(e)
    }

    /// Arrivals per second over the samples kept.
    fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                last.1.saturating_sub(first.1) as f64 / (last.0 - first.0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// Sleeps until `at` (not at all if it has passed).
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Exponentially distributed gaps between Poisson arrivals.
struct Gaps(ChaCha8Rng);

impl Gaps {
    /// The next arrival after one at `at`, at `rate` per second; None if
    /// it is past any time an `Instant` holds.
    fn after(&mut self, at: Instant, rate: f64) -> Option<Instant> {
        // 1 - U is in (0, 1]: its logarithm is finite.
        let u: f64 = 1.0 - self.0.random::<f64>();
        at.checked_add(Duration::try_from_secs_f64(-u.ln() / rate).ok()?)
    }
}

/// The load generator: Poisson arrivals per phase from `start` on, each
/// stamped with the time it was due (so a late generator shows as
/// latency, not less load). Returns the arrivals per phase.
pub fn generate(pool: &Pool, phases: &[Phase], seed: u64, start: Instant) -> Vec<u64> {
    let mut gaps = Gaps(ChaCha8Rng::seed_from_u64(seed));
    let mut arrivals = Vec::with_capacity(phases.len());
    let mut phase_start = start;
    for (index, phase) in phases.iter().enumerate() {
        let end = phase_start + phase.duration;
        arrivals.push(arrive_during(
            pool,
            &mut gaps,
            index,
            phase.rate,
            (phase_start, end),
        ));
        sleep_until(end);
        phase_start = end;
    }
    arrivals
}

/// Queues phase `index`'s arrivals at `rate` within `[from, end)` as they
/// fall due; returns how many there were.
fn arrive_during(
    pool: &Pool,
    gaps: &mut Gaps,
    index: usize,
    rate: f64,
    (from, end): (Instant, Instant),
) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    let mut arrived = 0;
    let mut next = gaps.after(from, rate);
    while let Some(first) = next.filter(|at| *at < end) {
        sleep_until(first);
        let now = Instant::now();
        let mut due = Vec::new();
        next = Some(first);
        while let Some(at) = next.filter(|at| *at <= now && *at < end) {
            due.push(at);
            next = gaps.after(at, rate);
        }
        pool.arrive(index, &due);
        arrived += due.len() as u64;
    }
    arrived
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse() {
        let p = parse_phases("500:2000,3000.5:1500").unwrap();
        assert_eq!(
            p.0,
            vec![
                Phase {
                    rate: 500.0,
                    duration: Duration::from_millis(2000)
                },
                Phase {
                    rate: 3000.5,
                    duration: Duration::from_millis(1500)
                },
            ]
        );
        assert_eq!(parse_phases("0:10").unwrap().0[0].rate, 0.0);
    }

    #[test]
    fn phase_errors_say_what_is_wrong() {
        let err = |s| parse_phases(s).unwrap_err();
        assert_eq!(err("500"), r#"phase "500" is not RATE:MS"#);
        assert_eq!(err("x:1"), r#"phase "x:1": rate "x" is not a number"#);
        assert_eq!(
            err("1e8:1"),
            r#"phase "1e8:1": rate 100000000 is not within 0..=10000000"#
        );
        assert_eq!(
            err("1:2s"),
            r#"phase "1:2s": duration "2s" is not a whole number of ms"#
        );
        assert_eq!(
            err("1: 0"),
            r#"phase "1: 0": duration 0 ms is not within 1..=3600000"#
        );
    }

    #[test]
    fn phases_reject_bad_input() {
        for bad in [
            "",
            "500",
            "500:",
            ":2000",
            "500:2000,",
            "500:2000,,1:1",
            "x:2000",
            "500:2s",
            "500:0",
            "500:-5",
            "-1:2000",
            "NaN:2000",
            "inf:2000",
            "500:2000:3",
            "500:3600001",
        ] {
            assert!(parse_phases(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn estimate_clamps_and_rises_with_load() {
        // 1000/s of 1 ms is one CPU busy: 1.25 with headroom, so 2.
        assert_eq!(estimate(1000.0, 1000, 0, 50_000, 1, 8), 2);
        assert_eq!(estimate(800.0, 1000, 0, 50_000, 1, 8), 1);
        // clamped
        assert_eq!(estimate(0.0, 200, 0, 50_000, 2, 7), 2);
        assert_eq!(estimate(1e6, 200, 0, 50_000, 2, 7), 7);
        assert_eq!(estimate(0.0, 200, 1_000_000, 50_000, 2, 7), 7);
        assert_eq!(estimate(f64::NAN, 200, 0, 50_000, 2, 7), 2);
        // rises with the rate and with the backlog, never falls
        let mut last = 0;
        for rate in (0..40_000).step_by(500) {
            let e = estimate(f64::from(rate), 200, 0, 50_000, 2, 7);
            assert!(e >= last, "{e} CPUs at {rate}/s, {last} below");
            assert!((2..=7).contains(&e));
            last = e;
        }
        assert_eq!(last, 7);
        assert!(estimate(3000.0, 200, 0, 50_000, 1, 7) < estimate(3000.0, 200, 500, 50_000, 1, 7));
        // 500 queued of 200 us clear in one 50 ms interval on 2 CPUs
        assert_eq!(estimate(0.0, 200, 500, 50_000, 1, 7), 2);
        assert_eq!(estimate(0.0, 200, 501, 50_000, 1, 7), 3);
    }

    /// A burst asks for more at once; the estimate comes down only once
    /// the burst has left the rate's window and the last DOWN_TICKS
    /// estimates.
    #[test]
    fn the_estimate_rises_at_once_and_falls_slowly() {
        let interval = Duration::from_millis(50);
        let start = Instant::now();
        let mut cores = CoreEstimate::new(1, 8, 1000, interval, start);
        // 100 requests of 1 ms in the first 50 ms: 2.5 CPUs with headroom.
        let wants: Vec<u32> = (1..=6)
            .map(|tick| cores.next(start + interval * tick, 100, 0))
            .collect();
        assert_eq!(wants, vec![3, 3, 3, 3, 2, 1]);
    }

    /// The same seed gives the same arrivals; each after the one before.
    #[test]
    fn gaps_follow_the_seed() {
        let start = Instant::now();
        let times = |seed| {
            let mut gaps = Gaps(ChaCha8Rng::seed_from_u64(seed));
            let mut at = start;
            (0..100)
                .map(|_| {
                    at = gaps.after(at, 1000.0).unwrap();
                    at
                })
                .collect::<Vec<_>>()
        };
        let a = times(1);
        assert_eq!(a, times(1));
        assert_ne!(a, times(2));
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        // 100 arrivals at 1000/s: about 100 ms.
        let span = a[99] - start;
        assert!(span > Duration::from_millis(50) && span < Duration::from_millis(200));
    }
}
