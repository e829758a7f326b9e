// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--record`: what recording costs a workload. Every Enoki run is
//! repeated under `enoki record`; each repetition gives the ratio of the
//! recorded run's cost to the plain one's: its time, for a workload that
//! does a set amount of work, or its rate of work (requests or bogo-ops
//! per second), for one that runs for a set time (whose time would always
//! say 1.0). The report has their median with its bootstrap interval and
//! the verdict against [`TARGET`] (met when the whole interval is at or
//! under it, as every other target).

use std::fs;
use std::path::Path;

use crate::report::{cost, CFIFO, DEFAULT};
use crate::stats::{self, Verdict};
use crate::workloads::{Better, Metric, Workload};
use crate::{elapsed, last_value, run_id};

/// Recorded cost over unrecorded cost wanted on every workload.
pub const TARGET: f64 = 1.3;

/// Whether `--record` records `sched`'s runs: not cfifo's, which sends
/// no messages, so there is nothing to record.
fn recorded(sched: &str) -> bool {
    sched != DEFAULT && sched != CFIFO
}

/// Recorded vs unrecorded runs of each recorded scheduler of `scheds`: one
/// line per scheduler and workload, then an overall one per scheduler (see
/// [`overhead_of`]).
pub fn record_overhead(ws: &[Workload], reps: usize, raw: &Path, scheds: &[String]) -> Vec<String> {
    scheds
        .iter()
        .filter(|s| recorded(s))
        .flat_map(|s| overhead_of(s, ws, reps, raw))
        .collect()
}

/// The metric that measures recording's cost on `w` when it runs for a set
/// time: its first higher-is-better one (its rate of work); `None` for a
/// workload that does a set amount of work, measured by its time.
fn rate_metric(w: &Workload) -> Option<&Metric> {
    w.metrics
        .iter()
        .find(|m| m.better == Better::Higher)
        .filter(|_| w.fixed_time)
}

/// What recording cost by `metric`: the recorded run's value over the
/// unrecorded one's, as a slowdown.
fn metric_cost(metric: &Metric, plain_out: &str, rec_out: &str) -> Option<f64> {
    let (plain, rec) = (metric.parse(plain_out)?, metric.parse(rec_out)?);
    Some(cost(metric.better, plain, rec))
}

/// Each repetition's figures for one scheduler and workload.
#[derive(Default)]
struct Pairs {
    /// Recording's cost: recorded time over unrecorded time, or the rate
    /// of work unrecorded over recorded ([`rate_metric`]).
    cost: Vec<f64>,
    /// Trace bytes per call.
    bytes_per_call: Vec<f64>,
    /// Each of the workload's metrics, recorded over unrecorded as a
    /// slowdown, in the workload's order.
    metrics: Vec<Vec<f64>>,
}

/// The repetitions of `w` under `sched` whose plain and recorded runs both
/// succeeded. A run's time is the recorder's own `duration_s` (recording
/// on to the command's end, which leaves out stopping and writing the
/// trace), else the recorded run's wall time.
fn pairs(sched: &str, w: &Workload, reps: usize, raw: &Path) -> Pairs {
    let rate = rate_metric(w);
    let mut p = Pairs {
        metrics: vec![Vec::new(); w.metrics.len()],
        ..Pairs::default()
    };
    for rep in 1..=reps {
        let id = run_id(rep, w.name, sched);
        let file = |ext: &str| raw.join(format!("{id}.{ext}"));
        let ok = fs::read_to_string(file("rec.status")).is_ok_and(|s| s.trim() == "0");
        let (Some(plain), Some(rec)) = (elapsed(&file("time")), elapsed(&file("rec.time"))) else {
            continue;
        };
        if !ok || plain <= 0.0 {
            continue;
        }
        let out = fs::read_to_string(file("rec.out")).unwrap_or_default();
        let plain_out = fs::read_to_string(file("out")).unwrap_or_default();
        let cost = match rate {
            Some(m) => metric_cost(m, &plain_out, &out),
            None => Some(last_value(&out, "duration_s").unwrap_or(rec) / plain),
        };
        let Some(cost) = cost else {
            continue;
        };
        p.cost.push(cost);
        p.bytes_per_call.extend(last_value(&out, "bytes_per_call"));
        for (m, v) in w.metrics.iter().zip(p.metrics.iter_mut()) {
            v.extend(metric_cost(m, &plain_out, &out));
        }
    }
    p
}

/// `x1.234 [1.10-1.45]`: a median ratio and its interval, if any.
fn ratio_with_ci(v: &[f64]) -> Option<String> {
    let m = stats::median(v)?;
    Some(match stats::median_ci(v) {
        Some((lo, hi)) => format!("x{m:.3} [{lo:.2}-{hi:.2}]"),
        None => format!("x{m:.3}"),
    })
}

/// [`record_overhead`]'s lines for one scheduler: per workload recording's
/// cost, each of the workload's own metrics (but the one that gave the
/// cost), trace bytes per call and the verdict; then the verdict over
/// every workload.
fn overhead_of(sched: &str, ws: &[Workload], reps: usize, raw: &Path) -> Vec<String> {
    let (mut all_cost, mut all_bytes, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = Vec::new();
    for w in ws {
        let p = pairs(sched, w, reps, raw);
        let Some(cost) = ratio_with_ci(&p.cost) else {
            continue;
        };
        let rate = rate_metric(w);
        let what = rate.map_or("recorded/unrecorded time".into(), |m| {
            format!("unrecorded/recorded {}", m.name)
        });
        let own: String = w
            .metrics
            .iter()
            .zip(&p.metrics)
            .filter(|(m, _)| rate.is_none_or(|r| r.name != m.name))
            .filter_map(|(m, v)| Some(format!(", its {} {}", m.name, ratio_with_ci(v)?)))
            .collect();
        let bytes = stats::median(&p.bytes_per_call).map_or("-".into(), |b| format!("{b:.1}"));
        let verdict = Verdict::of(stats::median_ci(&p.cost), TARGET);
        lines.push(format!(
            "record overhead {sched} {}: {what} {cost}{own}, {bytes} trace bytes per call; target x{TARGET}: {}",
            w.name,
            verdict.word()
        ));
        verdicts.push(verdict);
        all_cost.extend(p.cost);
        all_bytes.extend(p.bytes_per_call);
    }
    if let Some(m) = stats::median(&all_cost) {
        let bytes = stats::median(&all_bytes).map_or("-".into(), |b| format!("{b:.1}"));
        lines.push(format!(
            "record overhead {sched} (median of all): x{m:.3}, {bytes} trace bytes per call; target x{TARGET} on every workload: {}",
            Verdict::all(verdicts).word()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes repetition `rep` of FIFO on hackbench: 2 s plain, `ratio`
    /// times that recorded.
    fn run(raw: &Path, rep: usize, ratio: f64) {
        let id = run_id(rep, "hackbench", "fifo");
        let w = |ext: &str, s: String| fs::write(raw.join(format!("{id}.{ext}")), s).unwrap();
        w("time", "100.0 102.0\n".into());
        w("rec.time", format!("200.0 {}\n", 200.0 + 2.0 * ratio));
        w("rec.status", "0\n".into());
        w("rec.out", "bytes_per_call 70\n".into());
    }

    /// Five repetitions, recorded at `from` + 0.01, + 0.02 ... times plain.
    fn five_runs(raw: &Path, from: f64) {
        for rep in 1..=5 {
            run(raw, rep, from + rep as f64 * 0.01);
        }
    }

    fn lines(raw: &Path, reps: usize) -> Vec<String> {
        let ws = crate::selected(&["hackbench".into()]).unwrap();
        record_overhead(&ws, reps, raw, &["fifo".into()])
    }

    #[test]
    fn the_verdict_needs_the_whole_interval_on_one_side_of_the_target() {
        let dir = tempfile::tempdir().unwrap();
        five_runs(dir.path(), 1.1);
        let got = lines(dir.path(), 5);
        assert!(
            got[0].contains("time x1.130 [1.11-1.15]") && got[0].ends_with("target x1.3: met"),
            "{got:?}"
        );
        assert!(got[1].ends_with("on every workload: met"), "{got:?}");
        // Two slow repetitions widen the interval past the target.
        run(dir.path(), 4, 1.5);
        run(dir.path(), 5, 1.6);
        let got = lines(dir.path(), 5);
        assert!(got[0].ends_with("target x1.3: undecided"), "{got:?}");
        five_runs(dir.path(), 1.4);
        let got = lines(dir.path(), 5);
        assert!(got[0].ends_with("target x1.3: **missed**"), "{got:?}");
        assert!(got[1].ends_with("on every workload: **missed**"), "{got:?}");
    }

    #[test]
    fn a_workload_that_runs_for_a_set_time_is_measured_by_its_rate_of_work() {
        let dir = tempfile::tempdir().unwrap();
        let ws = crate::selected(&["schbench-2x2".into()]).unwrap();
        let out = |p99: f64, rps: f64| format!("p50_us 10\np99_us {p99}\nrequests_per_sec {rps}\n");
        for rep in 1..=3 {
            let id = run_id(rep, "schbench-2x2", "fifo");
            let w = |ext: &str, s: String| {
                fs::write(dir.path().join(format!("{id}.{ext}")), s).unwrap()
            };
            // Its time says nothing: 7 s either way.
            w("time", "100.0 107.0\n".into());
            w("rec.time", "200.0 207.0\n".into());
            w("rec.status", "0\n".into());
            w("out", out(100.0, 1000.0));
            w(
                "rec.out",
                out(150.0, 800.0) + "bytes_per_call 70\nduration_s 7.0\n",
            );
        }
        let got = record_overhead(&ws, 3, dir.path(), &["fifo".into()]);
        assert!(
            got[0].starts_with(
                "record overhead fifo schbench-2x2: unrecorded/recorded throughput x1.250 [1.25-1.25], \
                 its p50 x1.000 [1.00-1.00], its p99 x1.500 [1.50-1.50], 70.0 trace bytes per call"
            ),
            "{got:?}"
        );
        assert!(got[0].ends_with("target x1.3: met"), "{got:?}");
    }

    #[test]
    fn record_overhead_compares_recorded_and_plain_enoki_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ws = crate::selected(&["hackbench".into()]).unwrap();
        let w = |id: &str, ext: &str, s: &str| {
            fs::write(dir.path().join(format!("{id}.{ext}")), s).unwrap()
        };
        w("01-hackbench-wfq", "time", "100.0 102.0\n");
        w("01-hackbench-wfq", "rec.time", "200.0 203.0\n");
        w("01-hackbench-wfq", "rec.status", "0\n");
        w(
            "01-hackbench-wfq",
            "rec.out",
            "Time: 2.9\nrecords 10\ncalls 4\nbytes_per_call 91.5\n",
        );
        let lines = record_overhead(&ws, 2, dir.path(), &["wfq".into()]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("not recorded")));
        assert!(
            lines[0]
                .contains("hackbench: recorded/unrecorded time x1.500, 91.5 trace bytes per call"),
            "{lines:?}"
        );
        // The recorder's own duration, when it printed one, wins.
        w(
            "01-hackbench-wfq",
            "rec.out",
            "bytes_per_call 91.5\nduration_s 2.5\n",
        );
        assert!(record_overhead(&ws, 1, dir.path(), &["wfq".into()])[0].contains("time x1.250"));
        // And the workload's own metric, from both runs' output.
        w("01-hackbench-wfq", "out", "Time: 2.0\n");
        w(
            "01-hackbench-wfq",
            "rec.out",
            "Time: 2.9\nbytes_per_call 91.5\nduration_s 2.5\n",
        );
        let lines = record_overhead(&ws, 1, dir.path(), &["wfq".into()]);
        assert!(
            lines[0].contains("time x1.250, its time x1.450, 91.5"),
            "{lines:?}"
        );
    }

    #[test]
    fn one_repetition_gives_no_interval_and_no_verdict() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 1, 1.1);
        let got = lines(dir.path(), 1);
        assert!(got[0].contains("time x1.100, "), "{got:?}");
        assert!(got[0].ends_with("target x1.3: undecided"), "{got:?}");
    }
}
