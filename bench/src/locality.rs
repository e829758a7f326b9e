// SPDX-License-Identifier: MIT OR Apache-2.0
//! The locality table (`--only locality`), the paper's Table 6 (section
//! 5.5): `enoki-schbench` with 2 message threads x 2 workers (futex
//! wakeups, which the kernel cannot tell are sync wakeups), its p50 and
//! p99 wakeup latency under
//!
//! - `default`: the default scheduler;
//! - `pinned`: the default scheduler with every thread on one CPU
//!   (`taskset -c 1`; the paper's cgroup on one core);
//! - `random`: the locality scheduler, no hints (the paper's "random");
//! - `hints`: the locality scheduler, each message thread and its workers
//!   hinted into a group of their own (`enoki-schbench --hint-groups`).
//!
//! All in one latency boot. Each repetition runs the four back to back,
//! in an order rotated by one each repetition, so drift over the boot and
//! the position after a load or unload hit every configuration alike. The
//! locality scheduler is loaded for its runs only (`--mode all`) and
//! unloaded after each; a failed unload fails that run, and a default run
//! that finds an Enoki scheduler still loaded fails without measuring.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::stats;
use crate::table::{self, cell, per_rep, ratio_cell, ratios, Reps, Run, ScopedRun, Stat, Table};

/// The `--only` name that selects the table.
pub const NAME: &str = "locality";
pub const WHAT: &str = "the paper's Table 6: enoki-schbench 2x2 p50/p99 under default, default \
                        on one CPU, locality without and with hints";
/// Tells this report from the others in `--from`.
pub const KIND: &str = "locality table 6";

/// The Enoki scheduler of the `random` and `hints` runs.
pub const SCHED: &str = "locality";
/// The CPU the `pinned` runs are confined to (CPU 0 takes most of the
/// guest's housekeeping).
const PIN_CPU: u32 = 1;
/// The paper's shape: 2 message threads, 2 workers each.
const MESSAGE_THREADS: u32 = 2;
const WORKERS: u32 = 2;
/// Seconds of enoki-schbench's own warm-up in every run.
const SCHBENCH_WARMUP_S: u64 = 1;

/// The keys every run must print, and the one a hinted run adds.
const P50: &str = "p50_us";
const P99: &str = "p99_us";
const SAMPLES: &str = "samples";
const HINTS_TAKEN: &str = "hints_taken";

/// One column of Table 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Default,
    Pinned,
    Random,
    Hints,
}

/// The configurations in the order of repetition 1 (the table's).
pub const CONFIGS: [Config; 4] = [
    Config::Default,
    Config::Pinned,
    Config::Random,
    Config::Hints,
];

impl Config {
    /// Its id in run ids and the report.
    pub fn id(self) -> &'static str {
        match self {
            Config::Default => "default",
            Config::Pinned => "pinned",
            Config::Random => "random",
            Config::Hints => "hints",
        }
    }

    pub fn label(self) -> String {
        match self {
            Config::Default => "default".into(),
            Config::Pinned => format!("default, all on CPU {PIN_CPU}"),
            Config::Random => format!("Enoki {SCHED}, no hints"),
            Config::Hints => format!("Enoki {SCHED}, hints"),
        }
    }

    /// `default` or the Enoki scheduler to load for the run.
    fn sched(self) -> &'static str {
        match self {
            Config::Default | Config::Pinned => "default",
            Config::Random | Config::Hints => SCHED,
        }
    }

    /// The paper's Table 6 (p50, p99), us, for comparison.
    fn paper(self) -> (f64, f64) {
        match self {
            Config::Default => (33.0, 50.0),
            Config::Pinned => (17.0, 32032.0),
            Config::Random => (46.0, 49.0),
            Config::Hints => (2.0, 4.0),
        }
    }
}

/// What the table runs; kept in the report so `--from` can read the raw
/// files again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalityConfig {
    pub reps: usize,
    /// Warm-up repetitions run first and left out (0 or 1).
    pub warmup: usize,
    /// Seconds enoki-schbench measures in each run.
    pub runtime_s: u64,
    /// CPU time a worker burns per wakeup, us (enoki-schbench --work-us).
    /// It decides what co-location costs: a group's workers on one CPU
    /// run one after another, so the second waits for the first's work.
    pub work_us: u64,
}

/// Short work per wakeup, the kind co-location helps: with
/// enoki-schbench's own 2 ms (the A/B workloads') a group's second worker
/// waits 2 ms behind the first, and hints lose.
pub const DEFAULT_WORK_US: u64 = 20;

impl LocalityConfig {
    /// The enoki-schbench command of one configuration.
    pub fn command(&self, c: Config) -> String {
        let run = format!(
            "enoki-schbench -m {MESSAGE_THREADS} -t {WORKERS} -w {SCHBENCH_WARMUP_S} -r {} \
             --work-us {}",
            self.runtime_s, self.work_us
        );
        match c {
            Config::Default | Config::Random => run,
            Config::Pinned => format!("taskset -c {PIN_CPU} {run}"),
            Config::Hints => format!("{run} --hint-groups"),
        }
    }

    fn reps(&self) -> Reps {
        Reps {
            reps: self.reps,
            warmup: self.warmup,
        }
    }
}

impl Table for LocalityConfig {
    type Row = Row;
    const NAME: &'static str = NAME;
    const KIND: &'static str = KIND;
    const SCHED: (&'static str, &'static str) = (SCHED, "");

    fn run_list(&self) -> String {
        self.reps().run_list(
            |rep| order(rep).to_vec(),
            |&c| ScopedRun {
                id: c.id().into(),
                sched: c.sched().into(),
                args: String::new(),
                label: c.label(),
                cmd: self.command(c),
            },
        )
    }

    fn runs(&self) -> usize {
        (self.reps + self.warmup) * CONFIGS.len()
    }

    fn what(&self) -> String {
        format!(
            "4 configurations (default, default on one CPU, enoki {SCHED} without and with hints)"
        )
    }

    fn collect(&self, raw: &Path) -> Vec<Run> {
        collect(self, raw)
    }

    fn summarize(&self, runs: &[Run]) -> Vec<Row> {
        summarize(self.reps, runs)
    }

    fn write(dir: &Path, report: &LocalityReport) -> Result<()> {
        write_outputs(dir, report)
    }
}

/// The order of repetition `rep` (0: the warm-up): [`CONFIGS`] rotated
/// ([`table::rotate`]), so that over four repetitions each configuration
/// runs once in every position; repetition 1 is in table order.
pub fn order(rep: usize) -> [Config; 4] {
    let mut o = CONFIGS;
    table::rotate(&mut o, rep);
    o
}

/// Every counted run (the warm-up left out), repetition by repetition in
/// the order they ran.
pub fn collect(cfg: &LocalityConfig, raw: &Path) -> Vec<Run> {
    (1..=cfg.reps)
        .flat_map(|rep| {
            order(rep).into_iter().enumerate().map(move |(i, c)| {
                // A hinted run that sent no hints would measure "random".
                let needed: &[&str] = match c {
                    Config::Hints => &[P50, P99, SAMPLES, HINTS_TAKEN],
                    _ => &[P50, P99, SAMPLES],
                };
                Run::read(raw, rep, i + 1, c.id(), needed)
            })
        })
        .collect()
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub config: String,
    pub label: String,
    pub p50: Stat,
    pub p99: Stat,
    /// Median of the runs' wakeup counts.
    pub samples: Option<f64>,
    /// This configuration's value / the default's, paired by repetition.
    pub p50_vs_default: Stat,
    pub p99_vs_default: Stat,
    pub ok: usize,
    pub failed: usize,
    /// The paper's (p50, p99), us.
    pub paper: (f64, f64),
}

/// The table's rows, in [`CONFIGS`] order.
pub fn summarize(reps: usize, runs: &[Run]) -> Vec<Row> {
    let default_p50 = per_rep(runs, reps, Config::Default.id(), P50);
    let default_p99 = per_rep(runs, reps, Config::Default.id(), P99);
    CONFIGS
        .iter()
        .map(|&c| {
            let (p50, p99) = (
                per_rep(runs, reps, c.id(), P50),
                per_rep(runs, reps, c.id(), P99),
            );
            let samples: Vec<f64> = per_rep(runs, reps, c.id(), SAMPLES)
                .into_iter()
                .flatten()
                .collect();
            let (ok, failed) = table::ok_failed(runs, c.id());
            Row {
                config: c.id().into(),
                label: c.label(),
                p50_vs_default: Stat::of(ratios(&p50, &default_p50)),
                p99_vs_default: Stat::of(ratios(&p99, &default_p99)),
                p50: Stat::of(p50),
                p99: Stat::of(p99),
                samples: stats::median(&samples),
                ok,
                failed,
                paper: c.paper(),
            }
        })
        .collect()
}

pub type LocalityReport = table::Report<LocalityConfig>;

/// The row of `c`.
fn row(r: &LocalityReport, c: Config) -> Option<&Row> {
    r.rows.iter().find(|r| r.config == c.id())
}

fn table(r: &LocalityReport) -> String {
    let mut s = String::from(
        "| configuration | p50 (us) | p99 (us) | p50 / default | p99 / default | runs ok | \
         samples/run | paper p50 / p99 (us) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in &r.rows {
        let samples = row.samples.map_or("-".into(), |n| format!("{n:.0}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {}/{} | {samples} | {:.0} / {:.0} |",
            row.label,
            cell(&row.p50, 1),
            cell(&row.p99, 1),
            ratio_cell(&row.p50_vs_default),
            ratio_cell(&row.p99_vs_default),
            row.ok,
            row.ok + row.failed,
            row.paper.0,
            row.paper.1
        );
    }
    s
}

/// The headline: hints against the default, measured and in the paper.
fn headline(r: &LocalityReport) -> String {
    let Some(h) = row(r, Config::Hints) else {
        return String::new();
    };
    let (dp, hp) = (Config::Default.paper(), Config::Hints.paper());
    format!(
        "Hints / default: p50 {}, p99 {} (the paper: x{:.2}, x{:.2}).\n",
        ratio_cell(&h.p50_vs_default),
        ratio_cell(&h.p99_vs_default),
        hp.0 / dp.0,
        hp.1 / dp.1
    )
}

/// Every run, in the order it ran, with what it measured or why not.
fn runs_table(r: &LocalityReport) -> String {
    let mut s = String::from(
        "| rep | # | configuration | status | p50 (us) | p99 (us) | samples | group homes |\n\
         | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |\n",
    );
    for run in &r.runs {
        let v = |k: &str, d: usize| run.value(k).map_or("-".into(), |x| format!("{x:.d$}"));
        let homes: Vec<String> = run
            .values
            .iter()
            .filter_map(|(k, cpu)| {
                let g = k.strip_prefix("group.")?.strip_suffix(".home")?;
                Some(format!("{g}: CPU {cpu}"))
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            run.rep,
            run.position,
            run.config,
            run.status,
            v(P50, 1),
            v(P99, 1),
            v(SAMPLES, 0),
            if homes.is_empty() {
                "-".into()
            } else {
                homes.join(", ")
            }
        );
    }
    s
}

/// The markdown report: the table, the headline, every run, failures.
pub fn markdown(r: &LocalityReport) -> String {
    let (m, c) = (&r.meta, &r.config);
    let mut s = format!(
        "Locality (the paper's Table 6): enoki-schbench, {MESSAGE_THREADS} message threads x \
         {WORKERS} workers (futex wakeups; {} us of work per wakeup), {SCHBENCH_WARMUP_S} s \
         warm-up + {} s measured per run; {} The {SCHED} scheduler runs with `--mode all`; \
         `default, all on CPU {PIN_CPU}` is `taskset -c {PIN_CPU}` (the paper: a cgroup on one \
         core).\n\n",
        c.work_us,
        c.runtime_s,
        table::method_md(
            c.reps(),
            m,
            "the four configurations",
            "Wakeup latency, us",
            "the default run"
        )
    );
    s.push_str(&table(r));
    s.push('\n');
    s.push_str(&headline(r));
    s.push_str("\nEvery run:\n\n");
    s.push_str(&runs_table(r));
    s.push_str(&table::failures_md(&r.runs, m));
    s
}

/// Writes results.{json,md} into `dir` and copies them to
/// `latest-locality.*` beside it.
pub fn write_outputs(dir: &Path, rep: &LocalityReport) -> Result<()> {
    let json = serde_json::to_string_pretty(rep)?;
    table::write_report(dir, NAME, &json, &markdown(rep), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(reps: usize) -> LocalityConfig {
        LocalityConfig {
            reps,
            warmup: 1,
            runtime_s: 5,
            work_us: 2000,
        }
    }

    #[test]
    fn every_repetition_runs_all_four_in_a_rotated_order() {
        let ids = |rep| order(rep).map(Config::id);
        assert_eq!(ids(1), ["default", "pinned", "random", "hints"]);
        assert_eq!(ids(2), ["pinned", "random", "hints", "default"]);
        assert_eq!(ids(0), ["hints", "default", "pinned", "random"]);
        // Over four repetitions each runs once in every position.
        for pos in 0..4 {
            let mut at: Vec<&str> = (1..=4).map(|rep| ids(rep)[pos]).collect();
            at.sort_unstable();
            assert_eq!(
                at,
                ["default", "hints", "pinned", "random"],
                "position {pos}"
            );
        }
    }

    #[test]
    fn the_run_list_loads_locality_only_for_its_runs() {
        let list = cfg(2).run_list();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 12, "{list}");
        assert_eq!(
            lines[0],
            "scoped_run 00-hints 'locality' '' '[1/12] warm-up Enoki locality, hints' \
             'enoki-schbench -m 2 -t 2 -w 1 -r 5 --work-us 2000 --hint-groups'"
        );
        assert_eq!(
            lines[4],
            "scoped_run 01-default 'default' '' '[5/12] rep 1/2 default' \
             'enoki-schbench -m 2 -t 2 -w 1 -r 5 --work-us 2000'"
        );
        assert_eq!(
            lines[5],
            "scoped_run 01-pinned 'default' '' '[6/12] rep 1/2 default, all on CPU 1' \
             'taskset -c 1 enoki-schbench -m 2 -t 2 -w 1 -r 5 --work-us 2000'"
        );
        assert!(lines[6].starts_with("scoped_run 01-random 'locality' "));
        assert!(lines[11].starts_with("scoped_run 02-default 'default' "));
        let no_warmup = LocalityConfig {
            warmup: 0,
            ..cfg(1)
        };
        assert_eq!(no_warmup.runs(), 4);
        assert!(no_warmup.run_list().starts_with("scoped_run 01-default "));
    }

    #[test]
    fn ratios_pair_the_runs_of_one_repetition() {
        let run = |rep, c: Config, p50: f64| Run {
            config: c.id().into(),
            rep,
            position: 1,
            status: "ok".into(),
            values: [(P50.into(), p50), (P99.into(), p50 * 2.0)].into(),
        };
        let runs = vec![
            run(1, Config::Default, 40.0),
            run(1, Config::Hints, 4.0),
            run(2, Config::Default, 20.0),
            run(2, Config::Hints, 4.0),
            run(3, Config::Hints, 1.0),
        ];
        let rows = summarize(3, &runs);
        let h = &rows[3];
        assert_eq!(h.p50_vs_default.values, [Some(0.1), Some(0.2), None]);
        assert!((h.p50_vs_default.median.unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(h.p50.median, Some(4.0));
        assert_eq!((h.p50.min, h.p50.max), (Some(1.0), Some(4.0)));
        assert_eq!(rows[0].failed, 0);
        assert_eq!(rows[1].p50.median, None, "pinned never ran");
    }
}
