// SPDX-License-Identifier: MIT OR Apache-2.0
//! Statistics over the runs and the report: markdown table, JSON, targets.
//!
//! Orientation: every ratio is Enoki's *cost* over the default scheduler's
//! (time or latency: Enoki / default; throughput: default / Enoki), so > 1
//! always means Enoki is worse.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::{self, Verdict};
use crate::workloads::{Better, Group, Workload};

/// The two schedulers compared.
pub const SCHEDS: [&str; 2] = ["default", "enoki"];

/// One run of one workload under one scheduler.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub workload: String,
    pub sched: String,
    pub rep: usize,
    /// `ok`, `exit N`, `timeout`, `ejected: ...`, `load failed`, `not run`.
    pub status: String,
    pub elapsed_s: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
}

impl RunRecord {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Side {
    /// One per repetition; None where the run failed.
    pub values: Vec<Option<f64>>,
    pub median: Option<f64>,
    /// (max - min) / median, %.
    pub spread_pct: Option<f64>,
    pub failures: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricSummary {
    pub key: String,
    pub workload: String,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub group: Group,
    pub default: Side,
    pub enoki: Side,
    /// Enoki's cost / default's cost (> 1: Enoki worse): the median of
    /// the per-repetition ratios (both ran back to back in each).
    pub ratio: Option<f64>,
    /// Bootstrap confidence interval of `ratio` ([`stats::CONFIDENCE`]).
    pub ratio_ci: Option<(f64, f64)>,
    /// Range of the per-repetition ratios (same repetition, back to back).
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    /// The ratio of each repetition, in order (`None`: a side failed).
    #[serde(default)]
    pub pairs: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    /// The measured value the goal is about (a ratio), if measurable.
    pub value: Option<f64>,
    /// The interval of `value`, when there is one.
    pub ci: Option<(f64, f64)>,
    /// (Reports from before verdicts read as undecided.)
    #[serde(default)]
    pub verdict: Verdict,
    /// `verdict` is [`Verdict::Met`].
    pub met: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub geomean_app: Option<f64>,
    pub worst_app: Option<(String, f64)>,
    pub geomean_all: Option<f64>,
    pub worst_all: Option<(String, f64)>,
    pub failed_runs: Vec<String>,
    pub targets: Vec<Target>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date: String,
    pub reps: usize,
    /// Warm-up repetitions run first and left out.
    #[serde(default)]
    pub warmup: usize,
    pub scheduler: String,
    pub scheduler_args: String,
    pub accel: String,
    pub vm: String,
    pub host_cpus: usize,
    pub vm_seconds: f64,
    pub vm_exit: String,
    pub kernel_log_problems: Vec<String>,
    pub record: bool,
    pub note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub orientation: String,
    pub meta: Meta,
    pub metrics: Vec<MetricSummary>,
    pub summary: Summary,
    pub runs: Vec<RunRecord>,
}

pub const ORIENTATION: &str =
    "ratio = Enoki's cost / the default scheduler's cost (time and latency: Enoki/default; throughput: default/Enoki); > 1 means Enoki is worse";

fn side(values: Vec<Option<f64>>) -> Side {
    let ok: Vec<f64> = values.iter().flatten().copied().collect();
    let median = stats::median(&ok);
    let spread_pct = median.filter(|m| *m > 0.0 && ok.len() > 1).map(|m| {
        let (lo, hi) = ok
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        (hi - lo) / m * 100.0
    });
    let failures = values.iter().filter(|v| v.is_none()).count();
    Side {
        values,
        median,
        spread_pct,
        failures,
    }
}

/// Cost ratio of Enoki's value over the default's.
fn cost(better: Better, default: f64, enoki: f64) -> f64 {
    match better {
        Better::Lower => enoki / default,
        Better::Higher => default / enoki,
    }
}

pub fn summarize(
    workloads: &[Workload],
    runs: &[RunRecord],
    reps: usize,
) -> (Vec<MetricSummary>, Summary) {
    let find = |w: &str, s: &str, rep: usize| {
        runs.iter()
            .find(|r| r.workload == w && r.sched == s && r.rep == rep)
    };
    let mut out = Vec::new();
    for w in workloads {
        for m in &w.metrics {
            let values = |s: &str| -> Vec<Option<f64>> {
                (1..=reps)
                    .map(|rep| {
                        find(w.name, s, rep)
                            .filter(|r| r.ok())
                            .and_then(|r| r.metrics.get(m.name).copied())
                    })
                    .collect()
            };
            let (d, e) = (side(values("default")), side(values("enoki")));
            let by_rep: Vec<Option<f64>> = d
                .values
                .iter()
                .zip(&e.values)
                .map(|(a, b)| Some(cost(m.better, (*a)?, (*b)?)))
                .collect();
            let pairs: Vec<f64> = by_rep.iter().flatten().copied().collect();
            out.push(MetricSummary {
                key: m.key(w),
                workload: w.name.into(),
                metric: m.name.into(),
                unit: m.unit.into(),
                better: m.better,
                group: m.group,
                ratio: stats::median(&pairs),
                ratio_ci: stats::median_ci(&pairs),
                pairs: by_rep,
                ratio_min: pairs.iter().copied().reduce(f64::min),
                ratio_max: pairs.iter().copied().reduce(f64::max),
                default: d,
                enoki: e,
            });
        }
    }
    let summary = summary_of(&out, runs);
    (out, summary)
}

fn worst(ms: &[&MetricSummary]) -> Option<(String, f64)> {
    ms.iter()
        .filter_map(|m| Some((m.key.clone(), m.ratio?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn summary_of(ms: &[MetricSummary], runs: &[RunRecord]) -> Summary {
    let app: Vec<&MetricSummary> = ms.iter().filter(|m| m.group == Group::App).collect();
    let all: Vec<&MetricSummary> = ms.iter().collect();
    let ratios = |v: &[&MetricSummary]| v.iter().filter_map(|m| m.ratio).collect::<Vec<_>>();
    let incomplete = |v: &[&MetricSummary]| {
        v.iter()
            .filter(|m| m.ratio.is_none())
            .map(|m| m.key.clone())
            .collect::<Vec<_>>()
    };
    let geomean_app = stats::geomean(&ratios(&app));
    let worst_app = worst(&app);
    let pct = |r: f64| (r - 1.0) * 100.0;

    let mut targets = Vec::new();
    // Each: name, goal, the metrics it covers, the statistic and its limit.
    let mut max_target = |name: &str, goal: &str, covered: Vec<&MetricSummary>, limit: f64| {
        let missing = incomplete(&covered);
        let w = worst(&covered);
        let value = w.as_ref().map(|(_, r)| *r);
        let ci = covered
            .iter()
            .find(|m| w.as_ref().is_some_and(|(k, _)| *k == m.key))
            .and_then(|m| m.ratio_ci);
        let verdict = Verdict::all(
            covered
                .iter()
                .map(|m| Verdict::of(m.ratio_ci, limit))
                .chain((!missing.is_empty()).then_some(Verdict::Undecided)),
        );
        let mut detail = match &w {
            Some((k, r)) => format!("worst {k}: {:+.1} %{}", pct(*r), ci_pct(ci)),
            None => "no data".into(),
        };
        if !missing.is_empty() {
            let _ = write!(detail, "; no result for {}", missing.join(", "));
        }
        if let Some(r) = value.filter(|r| *r > limit) {
            let _ = write!(detail, "; over by {:.1} points", pct(r) - pct(limit));
        }
        targets.push(Target {
            name: name.into(),
            goal: goal.into(),
            value,
            ci,
            verdict,
            met: verdict == Verdict::Met,
            detail,
        });
    };
    let group = |g: Group, metric: Option<&str>| -> Vec<&MetricSummary> {
        ms.iter()
            .filter(|m| m.group == g && metric.is_none_or(|n| m.metric == n))
            .collect()
    };
    max_target(
        "pipe latency",
        "overhead <= 5 %",
        group(Group::Pipe, None),
        1.05,
    );
    max_target(
        "schbench p99",
        "within 3 %",
        group(Group::Schbench, Some("p99")),
        1.03,
    );
    max_target("application worst case", "within 5 %", app.clone(), 1.05);
    max_target(
        "switch and yield",
        "within 20 %",
        group(Group::Switch, None),
        1.2,
    );
    max_target(
        "system time of switch and yield",
        "at most 1.5x",
        group(Group::SysTime, None),
        1.5,
    );
    let missing = incomplete(&app);
    let per_rep = geomean_by_rep(&app);
    let (value, ci) = (stats::median(&per_rep), stats::median_ci(&per_rep));
    let verdict = match missing.is_empty() {
        true => Verdict::of(ci, 1.005),
        false => Verdict::Undecided,
    };
    targets.push(Target {
        name: "application geomean".into(),
        goal: "within 0.5 %".into(),
        value,
        ci,
        verdict,
        met: verdict == Verdict::Met,
        detail: match value {
            Some(g) => format!(
                "{:+.2} %{} (median over repetitions of their geomean)",
                pct(g),
                ci_pct(ci)
            ),
            None => "no data".into(),
        } + &if missing.is_empty() {
            String::new()
        } else {
            format!("; no result for {}", missing.join(", "))
        },
    });

    Summary {
        geomean_app,
        worst_app,
        geomean_all: stats::geomean(&ratios(&all)),
        worst_all: worst(&all),
        failed_runs: runs
            .iter()
            .filter(|r| !r.ok())
            .map(|r| {
                format!(
                    "{} rep {} under {}: {}",
                    r.workload, r.rep, r.sched, r.status
                )
            })
            .collect(),
        targets,
    }
}

/// The geometric mean of `ms`' ratios in each repetition where every one
/// of them has a ratio.
fn geomean_by_rep(ms: &[&MetricSummary]) -> Vec<f64> {
    let reps = ms.iter().map(|m| m.pairs.len()).max().unwrap_or(0);
    (0..reps)
        .filter_map(|i| {
            let v: Option<Vec<f64>> = ms.iter().map(|m| *m.pairs.get(i)?).collect();
            stats::geomean(&v?)
        })
        .collect()
}

/// ` [lo, hi]` in percent of overhead, or nothing.
fn ci_pct(ci: Option<(f64, f64)>) -> String {
    ci.map(|(lo, hi)| format!(" [{:+.1}, {:+.1}]", (lo - 1.0) * 100.0, (hi - 1.0) * 100.0))
        .unwrap_or_default()
}

fn num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn side_cell(s: &Side) -> String {
    match s.median {
        Some(m) => {
            let spread = s
                .spread_pct
                .map(|p| format!(" ±{:.1}%", p / 2.0))
                .unwrap_or_default();
            let fail = if s.failures > 0 {
                format!(" ({} failed)", s.failures)
            } else {
                String::new()
            };
            format!("{}{spread}{fail}", num(m))
        }
        None => format!("failed ({}/{})", s.failures, s.values.len()),
    }
}

/// The markdown report: table, summary, targets.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let _ = writeln!(
        s,
        "Enoki `{}` vs the default scheduler, {} repetitions interleaved in the same boot{} ({}), {}.\n",
        m.scheduler,
        m.reps,
        match m.warmup {
            0 => String::new(),
            n => format!(" after {n} warm-up repetition(s) left out"),
        },
        m.vm,
        m.date
    );
    let _ = writeln!(s, "Ratio: {}. Values are medians; ± is half the min-max spread across repetitions. The ratio is the median of the per-repetition ratios (both schedulers back to back in each), with its {:.0} % bootstrap interval; the range is the spread of those ratios. A target is met when the whole interval is within it, missed when the whole interval is beyond it, else undecided.\n", r.orientation.trim_start_matches("ratio = "), stats::CONFIDENCE * 100.0);
    s.push_str("| workload | metric | default | Enoki | ratio | 95 % interval | ratio range |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for x in &r.metrics {
        let ratio = x
            .ratio
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "-".into());
        let range = match (x.ratio_min, x.ratio_max) {
            (Some(a), Some(b)) => format!("{a:.3}-{b:.3}"),
            _ => "-".into(),
        };
        let ci = match x.ratio_ci {
            Some((a, b)) => format!("{a:.3}-{b:.3}"),
            None => "-".into(),
        };
        let better = match x.better {
            Better::Lower => "lower is better",
            Better::Higher => "higher is better",
        };
        let _ = writeln!(
            s,
            "| {} | {} ({}, {better}) | {} | {} | {ratio} | {ci} | {range} |",
            x.workload,
            x.metric,
            x.unit,
            side_cell(&x.default),
            side_cell(&x.enoki)
        );
    }
    let f = |v: Option<f64>| v.map(|g| format!("{g:.3}")).unwrap_or_else(|| "-".into());
    let w = |v: &Option<(String, f64)>| {
        v.as_ref()
            .map(|(k, r)| format!("{r:.3} ({k})"))
            .unwrap_or_else(|| "-".into())
    };
    let sm = &r.summary;
    let _ = writeln!(
        s,
        "\nGeometric mean of the ratios: applications {}, all metrics {}. Worst: applications {}, all metrics {}.\n",
        f(sm.geomean_app),
        f(sm.geomean_all),
        w(&sm.worst_app),
        w(&sm.worst_all)
    );
    s.push_str("| target | goal | measured | verdict |\n| --- | --- | --- | --- |\n");
    for t in &sm.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.name,
            t.goal,
            t.detail,
            t.verdict.word()
        );
    }
    if !sm.failed_runs.is_empty() {
        let _ = writeln!(s, "\nFailed runs:\n");
        for f in &sm.failed_runs {
            let _ = writeln!(s, "- {f}");
        }
    }
    if !m.kernel_log_problems.is_empty() {
        let _ = writeln!(s, "\nKernel log problems during the run:\n\n```");
        for p in m.kernel_log_problems.iter().take(20) {
            let _ = writeln!(s, "{p}");
        }
        let _ = writeln!(s, "```");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads;

    fn rec(w: &str, sched: &str, rep: usize, metric: &str, v: Option<f64>) -> RunRecord {
        RunRecord {
            workload: w.into(),
            sched: sched.into(),
            rep,
            status: if v.is_some() {
                "ok".into()
            } else {
                "timeout".into()
            },
            elapsed_s: Some(1.0),
            metrics: v
                .map(|v| [(metric.to_string(), v)].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn ratios_are_costs_and_failures_are_kept() {
        let ws: Vec<Workload> = workloads::all()
            .into_iter()
            .filter(|w| ["hackbench", "zstd", "pipe-1cpu"].contains(&w.name))
            .collect();
        let runs = vec![
            // hackbench: time, lower is better: Enoki 10 % slower.
            rec("hackbench", "default", 1, "time", Some(2.0)),
            rec("hackbench", "enoki", 1, "time", Some(2.2)),
            rec("hackbench", "default", 2, "time", Some(2.0)),
            rec("hackbench", "enoki", 2, "time", Some(2.2)),
            // zstd: throughput, higher is better: Enoki 20 % faster.
            rec("zstd", "default", 1, "throughput", Some(10.0)),
            rec("zstd", "enoki", 1, "throughput", Some(12.5)),
            rec("zstd", "default", 2, "throughput", Some(10.0)),
            rec("zstd", "enoki", 2, "throughput", None),
            // pipe: Enoki failed every time.
            rec("pipe-1cpu", "default", 1, "latency", Some(50.0)),
            rec("pipe-1cpu", "enoki", 1, "latency", None),
        ];
        let (ms, sum) = summarize(&ws, &runs, 2);
        let get = |k: &str| ms.iter().find(|m| m.key == k).unwrap();
        assert!((get("hackbench/time").ratio.unwrap() - 1.1).abs() < 1e-9);
        assert!((get("zstd/throughput").ratio.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(get("zstd/throughput").enoki.failures, 1);
        assert_eq!(get("pipe-1cpu/latency").ratio, None);
        assert_eq!(get("hackbench/time").default.spread_pct, Some(0.0));
        assert!((sum.geomean_app.unwrap() - (1.1f64 * 0.8).sqrt()).abs() < 1e-9);
        assert_eq!(sum.worst_app.as_ref().unwrap().0, "hackbench/time");
        assert_eq!(sum.failed_runs.len(), 2);
        let t = |n: &str| sum.targets.iter().find(|t| t.name == n).unwrap();
        assert!(!t("pipe latency").met && t("pipe latency").detail.contains("no result"));
        assert_eq!(t("pipe latency").verdict, Verdict::Undecided);
        // hackbench's two pairs agree on +10 %: the whole interval is over.
        assert_eq!(t("application worst case").verdict, Verdict::Missed);
        assert!(!t("application worst case").met);
        assert!(
            t("application worst case")
                .detail
                .contains("worst hackbench/time: +10.0 % [+10.0, +10.0]; over by 5.0 points"),
            "{}",
            t("application worst case").detail
        );
        let md = markdown(&Report {
            orientation: ORIENTATION.into(),
            meta: Meta::default(),
            metrics: ms,
            summary: sum,
            runs,
        });
        assert!(md.contains("| hackbench | time (s, lower is better) | 2.00 ±0.0% | 2.20 ±0.0% | 1.100 | 1.100-1.100 | 1.100-1.100 |"), "{md}");
        assert!(
            md.contains("| application worst case | within 5 % |"),
            "{md}"
        );
        assert!(md.contains("| **missed** |"), "{md}");
        assert!(
            md.contains("| 50.00 (1 failed) | failed (2/2) | - | - | - |"),
            "{md}"
        );
    }

    #[test]
    fn the_ratio_is_the_median_of_paired_ratios_with_an_interval() {
        let ws: Vec<Workload> = workloads::all()
            .into_iter()
            .filter(|w| w.name == "hackbench")
            .collect();
        // The ratio of the medians would be 2.2 / 2.0; the pairs are 2.2,
        // 0.5 and 1.0, and drift between repetitions cancels within each.
        let runs: Vec<RunRecord> = [(1.0, 2.2), (2.0, 1.0), (3.0, 3.0)]
            .iter()
            .enumerate()
            .flat_map(|(i, (d, e))| {
                [
                    rec("hackbench", "default", i + 1, "time", Some(*d)),
                    rec("hackbench", "enoki", i + 1, "time", Some(*e)),
                ]
            })
            .collect();
        let (ms, sum) = summarize(&ws, &runs, 3);
        let m = ms.iter().find(|m| m.key == "hackbench/time").unwrap();
        assert!((m.ratio.unwrap() - 1.0).abs() < 1e-9);
        let (lo, hi) = m.ratio_ci.unwrap();
        assert!(lo <= 0.5 + 1e-9 && hi >= 2.2 - 1e-9, "{lo} {hi}");
        let t = |n: &str| sum.targets.iter().find(|t| t.name == n).unwrap();
        // The interval straddles +5 %: neither met nor missed.
        assert_eq!(t("application worst case").verdict, Verdict::Undecided);
        // One application: its geomean per repetition is its ratio.
        assert!((t("application geomean").value.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(t("application geomean").verdict, Verdict::Undecided);
    }
}
