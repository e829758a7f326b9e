// SPDX-License-Identifier: MIT OR Apache-2.0
//! Statistics over the runs and the report: markdown tables, JSON, targets.
//!
//! Every listed scheduler is compared with the default scheduler, and,
//! when both of a pair are listed, with the simpler one ([`SPLITS`]): fifo
//! against cfifo is what Enoki's message path costs, wfq against fifo
//! what WFQ's policy costs (cfifo against the default is sched_ext's own
//! cost). All of them ran in every repetition, so each comparison pairs
//! the two runs of one repetition.
//!
//! Orientation: every ratio is a scheduler's *cost* over its baseline's
//! (time or latency: scheduler / baseline; throughput: baseline /
//! scheduler), so > 1 always means the scheduler is worse.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::profile::Section;
use crate::stats::{self, Verdict};
use crate::workloads::{Better, Group, Workload};

/// The default scheduler's name in run records and run ids.
pub const DEFAULT: &str = "default";

/// The C baseline: schedulers/fifo's policy on sched_ext with no
/// messages, so against the default scheduler it measures sched_ext alone.
pub const CFIFO: &str = "cfifo";

/// What a comparison separates, and so which targets it is judged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A listed scheduler against the default scheduler: the overhead
    /// targets.
    VsDefault,
    /// fifo against cfifo, the same policy with and without Enoki's
    /// messages: [`MESSAGE_PATH_LIMIT`].
    MessagePath,
    /// wfq against fifo: what the policy costs; no target.
    Policy,
}

/// The comparisons between two listed schedulers: (kind, baseline,
/// scheduler), each made when both are listed.
pub const SPLITS: [(Kind, &str, &str); 2] = [
    (Kind::MessagePath, CFIFO, "fifo"),
    (Kind::Policy, "fifo", "wfq"),
];

/// The message-path target: fifo at most 5 % over cfifo ...
const MESSAGE_PATH_LIMIT: f64 = 1.05;
/// ... on the workloads made of wakeups, where the messages are most of
/// the scheduler's work (not the cgroup variants: cfifo has no cgroup
/// support to compare with).
const MESSAGE_PATH_WORKLOADS: [&str; 5] = [
    "pipe-1cpu",
    "pipe-2cpu",
    "perf-pipe-1cpu",
    "perf-pipe-2cpu",
    "hackbench",
];

/// One run of one workload under one scheduler.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub workload: String,
    /// [`DEFAULT`] or the listed scheduler's name.
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

/// One metric of one comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricSummary {
    pub key: String,
    pub workload: String,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub group: Group,
    /// The baseline's values ([`Comparison::base`]).
    pub base: Side,
    /// The compared scheduler's ([`Comparison::sched`]).
    pub sched: Side,
    /// The scheduler's cost / the baseline's (> 1: worse): the median of
    /// the per-repetition ratios (both ran in each).
    pub ratio: Option<f64>,
    /// Bootstrap confidence interval of `ratio` ([`stats::CONFIDENCE`]).
    pub ratio_ci: Option<(f64, f64)>,
    /// Range of the per-repetition ratios.
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

/// One comparison's geometric means, worst cases and targets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub geomean_app: Option<f64>,
    pub worst_app: Option<(String, f64)>,
    pub geomean_all: Option<f64>,
    pub worst_all: Option<(String, f64)>,
    pub targets: Vec<Target>,
}

/// One scheduler against its baseline, paired by repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub kind: Kind,
    /// The baseline: [`DEFAULT`], or the simpler scheduler of a split.
    pub base: String,
    pub sched: String,
    pub metrics: Vec<MetricSummary>,
    pub summary: Summary,
}

impl Comparison {
    /// Its name in the report: `wfq vs default`, `message path: fifo vs
    /// cfifo`, ...
    pub fn title(&self) -> String {
        let what = match self.kind {
            Kind::VsDefault if self.sched == CFIFO => "sched_ext: ",
            Kind::VsDefault => "",
            Kind::MessagePath => "message path: ",
            Kind::Policy => "policy: ",
        };
        format!("{what}{} vs {}", self.sched, self.base)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date: String,
    pub reps: usize,
    /// Warm-up repetitions run first and left out.
    #[serde(default)]
    pub warmup: usize,
    /// The scheduler(s) compared with the default, comma separated.
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
    /// The schedulers compared with the default, as listed
    /// (`--scheduler`).
    pub schedulers: Vec<String>,
    /// Each listed scheduler against the default, in the listed order,
    /// then the splits ([`SPLITS`]) whose two schedulers are both listed.
    pub comparisons: Vec<Comparison>,
    pub failed_runs: Vec<String>,
    pub runs: Vec<RunRecord>,
    /// `--profile`: where the kernel's instructions went, per workload.
    #[serde(default)]
    pub profiles: Vec<Section>,
}

pub const ORIENTATION: &str =
    "ratio = a scheduler's cost / its baseline's cost (the default scheduler; \
     in the split, the simpler scheduler: fifo / cfifo, wfq / fifo) (time and latency: \
     scheduler / baseline; throughput: baseline / scheduler); > 1 means the scheduler is worse";

impl Report {
    /// The report on `runs` of `workloads` under the default scheduler and
    /// `schedulers`, `meta.reps` repetitions.
    pub fn new(
        meta: Meta,
        schedulers: Vec<String>,
        workloads: &[Workload],
        runs: Vec<RunRecord>,
    ) -> Self {
        let comparisons = comparisons(&schedulers)
            .into_iter()
            .map(|(kind, base, sched)| compare(workloads, &runs, meta.reps, kind, base, sched))
            .collect();
        Report {
            orientation: ORIENTATION.into(),
            failed_runs: failed_runs(&runs),
            meta,
            schedulers,
            comparisons,
            runs,
            profiles: Vec::new(),
        }
    }

    /// The comparisons of the listed schedulers with the default.
    pub fn vs_default(&self) -> impl Iterator<Item = &Comparison> {
        self.comparisons
            .iter()
            .filter(|c| c.kind == Kind::VsDefault)
    }
}

/// What to compare: each of `schedulers` with the default, then each
/// split both of whose schedulers are listed.
fn comparisons(schedulers: &[String]) -> Vec<(Kind, &str, &str)> {
    let listed = |s: &str| schedulers.iter().any(|x| x == s);
    schedulers
        .iter()
        .map(|s| (Kind::VsDefault, DEFAULT, s.as_str()))
        .chain(
            SPLITS
                .into_iter()
                .filter(|(_, base, sched)| listed(base) && listed(sched)),
        )
        .collect()
}

/// The failed runs, named.
fn failed_runs(runs: &[RunRecord]) -> Vec<String> {
    runs.iter()
        .filter(|r| !r.ok())
        .map(|r| {
            format!(
                "{} rep {} under {}: {}",
                r.workload, r.rep, r.sched, r.status
            )
        })
        .collect()
}

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

/// Cost ratio of the scheduler's value over the baseline's.
pub fn cost(better: Better, base: f64, sched: f64) -> f64 {
    match better {
        Better::Lower => sched / base,
        Better::Higher => base / sched,
    }
}

/// `sched` against `base` on every metric of `workloads`.
fn compare(
    workloads: &[Workload],
    runs: &[RunRecord],
    reps: usize,
    kind: Kind,
    base: &str,
    sched: &str,
) -> Comparison {
    let mut metrics = Vec::new();
    for w in workloads {
        for m in &w.metrics {
            // One value per repetition, None where the run failed.
            let values = |s: &str| -> Vec<Option<f64>> {
                (1..=reps)
                    .map(|rep| {
                        runs.iter()
                            .find(|r| r.workload == w.name && r.sched == s && r.rep == rep)
                            .filter(|r| r.ok())
                            .and_then(|r| r.metrics.get(m.name).copied())
                    })
                    .collect()
            };
            let (b, s) = (side(values(base)), side(values(sched)));
            let by_rep: Vec<Option<f64>> = b
                .values
                .iter()
                .zip(&s.values)
                .map(|(x, y)| Some(cost(m.better, (*x)?, (*y)?)))
                .collect();
            let pairs: Vec<f64> = by_rep.iter().flatten().copied().collect();
            metrics.push(MetricSummary {
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
                base: b,
                sched: s,
            });
        }
    }
    Comparison {
        kind,
        base: base.into(),
        sched: sched.into(),
        summary: summary_of(&metrics, kind),
        metrics,
    }
}

fn worst(ms: &[&MetricSummary]) -> Option<(String, f64)> {
    ms.iter()
        .filter_map(|m| Some((m.key.clone(), m.ratio?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The keys of the metrics in `ms` without a ratio.
fn incomplete(ms: &[&MetricSummary]) -> Vec<String> {
    ms.iter()
        .filter(|m| m.ratio.is_none())
        .map(|m| m.key.clone())
        .collect()
}

/// Overhead in percent.
fn pct(r: f64) -> f64 {
    (r - 1.0) * 100.0
}

fn summary_of(ms: &[MetricSummary], kind: Kind) -> Summary {
    let app: Vec<&MetricSummary> = ms.iter().filter(|m| m.group == Group::App).collect();
    let all: Vec<&MetricSummary> = ms.iter().collect();
    let ratios = |v: &[&MetricSummary]| v.iter().filter_map(|m| m.ratio).collect::<Vec<_>>();
    Summary {
        geomean_app: stats::geomean(&ratios(&app)),
        worst_app: worst(&app),
        geomean_all: stats::geomean(&ratios(&all)),
        worst_all: worst(&all),
        targets: match kind {
            Kind::VsDefault => overhead_targets(ms),
            Kind::MessagePath => vec![message_path_target(ms)],
            Kind::Policy => Vec::new(),
        },
    }
}

/// The targets of a scheduler against the default scheduler.
fn overhead_targets(ms: &[MetricSummary]) -> Vec<Target> {
    let group = |g: Group, metric: Option<&str>| -> Vec<&MetricSummary> {
        ms.iter()
            .filter(|m| m.group == g && metric.is_none_or(|n| m.metric == n))
            .collect()
    };
    let app = group(Group::App, None);
    vec![
        max_target(
            "pipe latency",
            "overhead <= 5 %",
            &group(Group::Pipe, None),
            1.05,
        ),
        max_target(
            "schbench p99",
            "within 3 %",
            &group(Group::Schbench, Some("p99")),
            1.03,
        ),
        max_target("application worst case", "within 5 %", &app, 1.05),
        max_target(
            "switch and yield",
            "within 20 %",
            &group(Group::Switch, None),
            1.2,
        ),
        max_target(
            "system time of switch and yield",
            "at most 1.5x",
            &group(Group::SysTime, None),
            1.5,
        ),
        geomean_target(&app),
    ]
}

/// fifo against cfifo on [`MESSAGE_PATH_WORKLOADS`].
fn message_path_target(ms: &[MetricSummary]) -> Target {
    let covered: Vec<&MetricSummary> = ms
        .iter()
        .filter(|m| MESSAGE_PATH_WORKLOADS.contains(&m.workload.as_str()))
        .collect();
    max_target(
        "message path",
        "overhead <= 5 % on pipe and hackbench",
        &covered,
        MESSAGE_PATH_LIMIT,
    )
}

/// A target every metric of `covered` must meet: ratio at most `limit`;
/// its value is the worst one.
fn max_target(name: &str, goal: &str, covered: &[&MetricSummary], limit: f64) -> Target {
    let missing = incomplete(covered);
    let w = worst(covered);
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
    Target {
        name: name.into(),
        goal: goal.into(),
        value,
        ci,
        verdict,
        met: verdict == Verdict::Met,
        detail,
    }
}

/// The applications' geomean within 0.5 %: the median over repetitions
/// of each repetition's geomean.
fn geomean_target(app: &[&MetricSummary]) -> Target {
    let missing = incomplete(app);
    let per_rep = geomean_by_rep(app);
    let (value, ci) = (stats::median(&per_rep), stats::median_ci(&per_rep));
    let verdict = match missing.is_empty() {
        true => Verdict::of(ci, 1.005),
        false => Verdict::Undecided,
    };
    let mut detail = match value {
        Some(g) => format!(
            "{:+.2} %{} (median over repetitions of their geomean)",
            pct(g),
            ci_pct(ci)
        ),
        None => "no data".into(),
    };
    if !missing.is_empty() {
        let _ = write!(detail, "; no result for {}", missing.join(", "));
    }
    Target {
        name: "application geomean".into(),
        goal: "within 0.5 %".into(),
        value,
        ci,
        verdict,
        met: verdict == Verdict::Met,
        detail,
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
    ci.map(|(lo, hi)| format!(" [{:+.1}, {:+.1}]", pct(lo), pct(hi)))
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

/// `1.234`, or `-` for none.
fn ratio_cell(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// `1.200-1.300`, or `-` for none.
fn range_cell(r: Option<(f64, f64)>) -> String {
    r.map(|(a, b)| format!("{a:.3}-{b:.3}"))
        .unwrap_or_else(|| "-".into())
}

/// `time (s, lower is better)`.
fn metric_cell(m: &MetricSummary) -> String {
    let better = match m.better {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    };
    format!("{} ({}, {better})", m.metric, m.unit)
}

/// The first line: who against whom, how often, where, when.
fn heading(r: &Report) -> String {
    let m = &r.meta;
    let names: Vec<String> = r.schedulers.iter().map(|s| format!("`{s}`")).collect();
    let split = if r.comparisons.len() > r.schedulers.len() {
        " and each other"
    } else {
        ""
    };
    format!(
        "Enoki {} vs the default scheduler{split}, {} repetitions interleaved in the same boot{} ({}), {}.\n",
        names.join(", "),
        m.reps,
        match m.warmup {
            0 => String::new(),
            n => format!(" after {n} warm-up repetition(s) left out"),
        },
        m.vm,
        m.date
    )
}

/// With several comparisons, one line per metric with each one's ratio
/// and interval: what sched_ext, the message path and the policy cost.
fn split_table(r: &Report) -> String {
    let mut s = String::from(
        "Cost split: each cell is the ratio [95 % interval] of one comparison (sched_ext: cfifo vs \
         default; message path: fifo vs cfifo; policy: wfq vs fifo); the tables below have the values.\n\n\
         | workload | metric |",
    );
    for c in &r.comparisons {
        let _ = write!(s, " {} |", c.title());
    }
    s.push_str("\n| --- | --- |");
    s.push_str(&" ---: |".repeat(r.comparisons.len()));
    s.push('\n');
    let Some(first) = r.comparisons.first() else {
        return s;
    };
    for (i, m) in first.metrics.iter().enumerate() {
        let _ = write!(s, "| {} | {} |", m.workload, metric_cell(m));
        // Every comparison has the same metrics, in the same order.
        for x in r.comparisons.iter().map(|c| c.metrics.get(i)) {
            let ci = x
                .and_then(|x| x.ratio_ci)
                .map(|(a, b)| format!(" [{a:.2}-{b:.2}]"))
                .unwrap_or_default();
            let _ = write!(s, " {}{ci} |", ratio_cell(x.and_then(|x| x.ratio)));
        }
        s.push('\n');
    }
    s
}

/// One comparison's table of values and ratios, and its geometric means.
fn comparison_table(c: &Comparison) -> String {
    let mut s = format!(
        "| workload | metric | {} | {} | ratio | 95 % interval | ratio range |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
        c.base, c.sched
    );
    for x in &c.metrics {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            x.workload,
            metric_cell(x),
            side_cell(&x.base),
            side_cell(&x.sched),
            ratio_cell(x.ratio),
            range_cell(x.ratio_ci),
            range_cell(x.ratio_min.zip(x.ratio_max))
        );
    }
    let w = |v: &Option<(String, f64)>| {
        v.as_ref()
            .map(|(k, r)| format!("{r:.3} ({k})"))
            .unwrap_or_else(|| "-".into())
    };
    let sm = &c.summary;
    let _ = writeln!(
        s,
        "\nGeometric mean of the ratios: applications {}, all metrics {}. Worst: applications {}, all metrics {}.",
        ratio_cell(sm.geomean_app),
        ratio_cell(sm.geomean_all),
        w(&sm.worst_app),
        w(&sm.worst_all)
    );
    s
}

/// Every comparison's targets in one table.
fn targets_table(r: &Report) -> String {
    let mut s = String::from(
        "| comparison | target | goal | measured | verdict |\n| --- | --- | --- | --- | --- |\n",
    );
    for c in &r.comparisons {
        for t in &c.summary.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                c.title(),
                t.name,
                t.goal,
                t.detail,
                t.verdict.word()
            );
        }
    }
    s
}

/// The markdown report: the split (with several comparisons), each
/// comparison's table, the targets, the failures.
pub fn markdown(r: &Report) -> String {
    let mut s = heading(r);
    let _ = writeln!(s, "\nRatio: {}. Values are medians; ± is half the min-max spread across repetitions. The ratio is the median of the per-repetition ratios (every scheduler ran in each repetition, back to back, in an order that rotates), with its {:.0} % bootstrap interval; the range is the spread of those ratios. A target is met when the whole interval is within it, missed when the whole interval is beyond it, else undecided.\n", r.orientation.trim_start_matches("ratio = "), stats::CONFIDENCE * 100.0);
    let several = r.comparisons.len() > 1;
    if several {
        let _ = writeln!(s, "{}", split_table(r));
    }
    for c in &r.comparisons {
        if several {
            let _ = writeln!(s, "### {}\n", c.title());
        }
        let _ = writeln!(s, "{}", comparison_table(c));
    }
    s.push_str(&targets_table(r));
    if !r.failed_runs.is_empty() {
        let _ = writeln!(s, "\nFailed runs:\n");
        for f in &r.failed_runs {
            let _ = writeln!(s, "- {f}");
        }
    }
    profile_sections(&mut s, &r.profiles);
    let m = &r.meta;
    if !m.kernel_log_problems.is_empty() {
        let _ = writeln!(s, "\nKernel log problems during the run:\n\n```");
        for p in m.kernel_log_problems.iter().take(20) {
            let _ = writeln!(s, "{p}");
        }
        let _ = writeln!(s, "```");
    }
    s
}

/// `--profile`'s reports, one per workload.
fn profile_sections(s: &mut String, profiles: &[Section]) {
    if profiles.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Where the kernel's instructions go\n\n\
         `enoki-tcg-profile`: one single-threaded TCG boot per workload, its QEMU \
         plugin counting every instruction, also with interrupts off (the whole \
         scheduler path), which perf in an emulated guest cannot sample."
    );
    for p in profiles {
        let _ = writeln!(s, "\n### {}: `{}`\n", p.workload, p.cmd);
        let ratios: Vec<String> = p
            .kernel_vs_default()
            .iter()
            .map(|(sched, r)| format!("{sched} x{r:.2}"))
            .collect();
        if !ratios.is_empty() {
            let _ = writeln!(
                s,
                "Kernel instructions against the default scheduler's: {}.\n",
                ratios.join(", ")
            );
        }
        let _ = writeln!(s, "{}", p.report.trim_end());
    }
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

    fn chosen(names: &[&str]) -> Vec<Workload> {
        workloads::all()
            .into_iter()
            .filter(|w| names.contains(&w.name))
            .collect()
    }

    fn report(scheds: &[&str], ws: &[Workload], runs: Vec<RunRecord>, reps: usize) -> Report {
        let meta = Meta {
            reps,
            ..Meta::default()
        };
        let scheds = scheds.iter().map(|s| s.to_string()).collect();
        Report::new(meta, scheds, ws, runs)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn profiles_are_reported_per_workload_and_kept_for_a_rerender() {
        let ws = chosen(&["pipe-1cpu"]);
        let mut r = report(&["fifo"], &ws, Vec::new(), 1);
        assert!(!markdown(&r).contains("Where the kernel's instructions go"));
        r.profiles = vec![Section {
            workload: "hackbench".into(),
            cmd: "hackbench -g 2 -l 20".into(),
            report: "| default | 1.0 | 200.0 |\n| fifo | 1.0 | 250.0 |\n\n\
                     | `enoki_call` | - | 1.0 | 10.0 |\n"
                .into(),
            kernel: vec![
                ("default".into(), 200_000_000),
                ("fifo".into(), 250_000_000),
            ],
        }];
        let again: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        let md = markdown(&again);
        assert!(
            md.contains("## Where the kernel's instructions go")
                && md.contains(
                    "### hackbench: `hackbench -g 2 -l 20`\n\n\
                     Kernel instructions against the default scheduler's: fifo x1.25.\n\n\
                     | default | 1.0 | 200.0 |"
                )
                && md.contains("| `enoki_call` | - | 1.0 | 10.0 |"),
            "{md}"
        );
    }

    #[test]
    fn ratios_are_costs_and_failures_are_kept() {
        let ws = chosen(&["hackbench", "zstd", "pipe-1cpu"]);
        let runs = vec![
            // hackbench: time, lower is better: wfq 10 % slower.
            rec("hackbench", "default", 1, "time", Some(2.0)),
            rec("hackbench", "wfq", 1, "time", Some(2.2)),
            rec("hackbench", "default", 2, "time", Some(2.0)),
            rec("hackbench", "wfq", 2, "time", Some(2.2)),
            // zstd: throughput, higher is better: wfq 20 % faster.
            rec("zstd", "default", 1, "throughput", Some(10.0)),
            rec("zstd", "wfq", 1, "throughput", Some(12.5)),
            rec("zstd", "default", 2, "throughput", Some(10.0)),
            rec("zstd", "wfq", 2, "throughput", None),
            // pipe: wfq failed every time.
            rec("pipe-1cpu", "default", 1, "latency", Some(50.0)),
            rec("pipe-1cpu", "wfq", 1, "latency", None),
        ];
        let r = report(&["wfq"], &ws, runs, 2);
        assert_eq!(r.comparisons.len(), 1, "one scheduler: no split");
        let c = &r.comparisons[0];
        assert_eq!(c.title(), "wfq vs default");
        let (ms, sum) = (&c.metrics, &c.summary);
        let get = |k: &str| ms.iter().find(|m| m.key == k).unwrap();
        assert!(close(get("hackbench/time").ratio, 1.1));
        assert!(close(get("zstd/throughput").ratio, 0.8));
        assert_eq!(get("zstd/throughput").sched.failures, 1);
        assert_eq!(get("pipe-1cpu/latency").ratio, None);
        assert_eq!(get("hackbench/time").base.spread_pct, Some(0.0));
        assert!(close(sum.geomean_app, (1.1f64 * 0.8).sqrt()));
        assert_eq!(sum.worst_app.as_ref().unwrap().0, "hackbench/time");
        assert_eq!(r.failed_runs.len(), 2);
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
        assert_eq!(sum.targets.len(), 6, "no message-path target without cfifo");
        let md = markdown(&r);
        assert!(md.starts_with("Enoki `wfq` vs the default scheduler, 2 repetitions"));
        assert!(
            md.contains("| workload | metric | default | wfq | ratio |"),
            "{md}"
        );
        assert!(md.contains("| hackbench | time (s, lower is better) | 2.00 ±0.0% | 2.20 ±0.0% | 1.100 | 1.100-1.100 | 1.100-1.100 |"), "{md}");
        assert!(
            md.contains("| wfq vs default | application worst case | within 5 % |"),
            "{md}"
        );
        assert!(md.contains("| **missed** |"), "{md}");
        assert!(
            md.contains("| 50.00 (1 failed) | failed (2/2) | - | - | - |"),
            "{md}"
        );
        assert!(!md.contains("Cost split") && !md.contains("###"), "{md}");
    }

    #[test]
    fn the_ratio_is_the_median_of_paired_ratios_with_an_interval() {
        let ws = chosen(&["hackbench"]);
        // The ratio of the medians would be 2.2 / 2.0; the pairs are 2.2,
        // 0.5 and 1.0, and drift between repetitions cancels within each.
        let runs: Vec<RunRecord> = [(1.0, 2.2), (2.0, 1.0), (3.0, 3.0)]
            .iter()
            .enumerate()
            .flat_map(|(i, (d, e))| {
                [
                    rec("hackbench", "default", i + 1, "time", Some(*d)),
                    rec("hackbench", "wfq", i + 1, "time", Some(*e)),
                ]
            })
            .collect();
        let r = report(&["wfq"], &ws, runs, 3);
        let (ms, sum) = (&r.comparisons[0].metrics, &r.comparisons[0].summary);
        let m = ms.iter().find(|m| m.key == "hackbench/time").unwrap();
        assert!(close(m.ratio, 1.0));
        let (lo, hi) = m.ratio_ci.unwrap();
        assert!(lo <= 0.5 + 1e-9 && hi >= 2.2 - 1e-9, "{lo} {hi}");
        let t = |n: &str| sum.targets.iter().find(|t| t.name == n).unwrap();
        // The interval straddles +5 %: neither met nor missed.
        assert_eq!(t("application worst case").verdict, Verdict::Undecided);
        // One application: its geomean per repetition is its ratio.
        assert!(close(t("application geomean").value, 1.0));
        assert_eq!(t("application geomean").verdict, Verdict::Undecided);
    }

    /// Three repetitions of default, cfifo, fifo and wfq, by hand:
    ///
    /// | rep | workload | default | cfifo | fifo | wfq |
    /// | 1 | hackbench (s) | 2.0 | 2.0 | 2.1 | 2.31 |
    /// | 2 | hackbench | 4.0 | 4.4 | 4.4 | 4.4 |
    /// | 3 | hackbench | 3.0 | 3.0 | 3.3 | 3.0 |
    /// | 1 | pipe-1cpu (us) | 10 | 12 | 15 | 15 |
    /// | 2 | pipe-1cpu | 10 | 12 | 15.6 | 18.72 |
    /// | 3 | pipe-1cpu | 10 | 10 | 13 | failed |
    /// | 1-3 | zstd (MiB/s, higher is better) | 10 | 10 | 5 | 5 |
    fn three_way_runs() -> Vec<RunRecord> {
        /// Each repetition's values under default, cfifo, fifo, wfq.
        type Reps = [[Option<f64>; 4]; 3];
        let table: [(&str, &str, Reps); 3] = [
            (
                "hackbench",
                "time",
                [
                    [Some(2.0), Some(2.0), Some(2.1), Some(2.31)],
                    [Some(4.0), Some(4.4), Some(4.4), Some(4.4)],
                    [Some(3.0), Some(3.0), Some(3.3), Some(3.0)],
                ],
            ),
            (
                "pipe-1cpu",
                "latency",
                [
                    [Some(10.0), Some(12.0), Some(15.0), Some(15.0)],
                    [Some(10.0), Some(12.0), Some(15.6), Some(18.72)],
                    [Some(10.0), Some(10.0), Some(13.0), None],
                ],
            ),
            (
                "zstd",
                "throughput",
                [[Some(10.0), Some(10.0), Some(5.0), Some(5.0)]; 3],
            ),
        ];
        let mut runs = Vec::new();
        for (w, metric, reps) in table {
            for (i, values) in reps.iter().enumerate() {
                for (sched, v) in ["default", "cfifo", "fifo", "wfq"].iter().zip(values) {
                    runs.push(rec(w, sched, i + 1, metric, *v));
                }
            }
        }
        runs
    }

    #[test]
    fn the_split_pairs_message_path_and_policy_by_repetition() {
        let ws = chosen(&["hackbench", "pipe-1cpu", "zstd"]);
        let r = report(&["cfifo", "fifo", "wfq"], &ws, three_way_runs(), 3);
        let titles: Vec<String> = r.comparisons.iter().map(Comparison::title).collect();
        assert_eq!(
            titles,
            [
                "sched_ext: cfifo vs default",
                "fifo vs default",
                "wfq vs default",
                "message path: fifo vs cfifo",
                "policy: wfq vs fifo"
            ]
        );
        let ratio = |c: usize, key: &str| {
            let m = r.comparisons[c].metrics.iter().find(|m| m.key == key);
            m.unwrap().clone()
        };
        // sched_ext: hackbench 1.0, 1.1, 1.0; pipe 1.2, 1.2, 1.0.
        assert!(close(ratio(0, "hackbench/time").ratio, 1.0));
        assert!(close(ratio(0, "pipe-1cpu/latency").ratio, 1.2));
        // Message path: hackbench 2.1/2.0, 4.4/4.4, 3.3/3.0 = 1.05, 1.0,
        // 1.1; pipe 15/12, 15.6/12, 13/10 = 1.25, 1.3, 1.3.
        let hb = ratio(3, "hackbench/time");
        assert_eq!(hb.pairs.len(), 3);
        for (got, want) in hb.pairs.iter().zip([1.05, 1.0, 1.1]) {
            assert!(close(*got, want), "{:?}", hb.pairs);
        }
        assert!(close(hb.ratio, 1.05));
        assert!(close(ratio(3, "pipe-1cpu/latency").ratio, 1.3));
        assert!(close(ratio(3, "pipe-1cpu/latency").ratio_min, 1.25));
        // Policy: hackbench 2.31/2.1, 4.4/4.4, 3.0/3.3 = 1.1, 1.0, 0.909;
        // pipe 1.0, 1.2 and a failed repetition.
        assert!(close(ratio(4, "hackbench/time").ratio, 1.0));
        let pipe = ratio(4, "pipe-1cpu/latency");
        assert!(close(pipe.ratio, 1.1), "{:?}", pipe.pairs);
        assert_eq!(pipe.pairs[2], None);
        assert_eq!(pipe.sched.failures, 1);
        // zstd, higher is better: fifo has half cfifo's throughput.
        assert!(close(ratio(3, "zstd/throughput").ratio, 2.0));
        // The message-path target covers pipe and hackbench only (not
        // zstd's 2.0): pipe's +25-30 % misses it.
        let path = &r.comparisons[3].summary.targets;
        assert_eq!(path.len(), 1);
        assert_eq!(path[0].name, "message path");
        assert_eq!(path[0].verdict, Verdict::Missed);
        assert!(close(path[0].value, 1.3));
        assert!(
            path[0]
                .detail
                .starts_with("worst pipe-1cpu/latency: +30.0 % [+25.0, +30.0]; over by 25.0"),
            "{}",
            path[0].detail
        );
        assert!(r.comparisons[4].summary.targets.is_empty(), "policy");
        // Each scheduler is judged on the overhead targets.
        assert!(r.vs_default().all(|c| c.summary.targets.len() == 6));
        assert_eq!(r.failed_runs, ["pipe-1cpu rep 3 under wfq: timeout"]);
        let md = markdown(&r);
        for want in [
            "Enoki `cfifo`, `fifo`, `wfq` vs the default scheduler and each other, 3 repetitions",
            "| workload | metric | sched_ext: cfifo vs default | fifo vs default | wfq vs default \
             | message path: fifo vs cfifo | policy: wfq vs fifo |",
            // wfq vs default: 1.5 and 1.872 (rep 3 failed).
            "| pipe-1cpu | latency (us/op, lower is better) | 1.200 [1.00-1.20] | 1.500 [1.30-1.56] \
             | 1.686 [1.50-1.87] | 1.300 [1.25-1.30] | 1.100 [1.00-1.20] |",
            "### message path: fifo vs cfifo\n\n| workload | metric | cfifo | fifo | ratio |",
            // cfifo: 2.0-4.4 around 3.0; fifo: 2.1-4.4 around 3.3.
            "| hackbench | time (s, lower is better) | 3.00 ±40.0% | 3.30 ±34.8% | 1.050 |",
            "| message path: fifo vs cfifo | message path | overhead <= 5 % on pipe and hackbench \
             | worst pipe-1cpu/latency: +30.0 % [+25.0, +30.0]; over by 25.0 points | **missed** |",
            "| sched_ext: cfifo vs default | pipe latency | overhead <= 5 % |",
        ] {
            assert!(md.contains(want), "no {want:?} in\n{md}");
        }
    }

    #[test]
    fn splits_need_both_schedulers() {
        let titles = |s: &[&str]| {
            let r = report(s, &chosen(&["hackbench"]), Vec::new(), 1);
            r.comparisons
                .iter()
                .map(Comparison::title)
                .collect::<Vec<_>>()
        };
        assert_eq!(titles(&["wfq"]), ["wfq vs default"]);
        assert_eq!(
            titles(&["fifo", "wfq"]),
            ["fifo vs default", "wfq vs default", "policy: wfq vs fifo"]
        );
        assert_eq!(
            titles(&["cfifo", "wfq"]),
            ["sched_ext: cfifo vs default", "wfq vs default"]
        );
    }
}
