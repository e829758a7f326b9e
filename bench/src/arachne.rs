// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Arachne request-latency table (`--only arachne`), the paper's 5.6:
//! `enoki-pool`, a thread pool of 7 workers serving requests of
//! `--arachne-work-us` CPU each under Poisson arrivals, at each load of
//! `--arachne-rates` (low, medium, high), next to a CPU-bound batch job
//! (`enoki-cores --cores 0`, 8 spinning threads asking for no CPUs), under
//!
//! - `default`: the default scheduler, the pool running all its workers
//!   (`enoki-pool --no-arbiter`);
//! - `arachne`: the Arachne core arbiter (`enoki load arachne --mode all
//!   --args reclaim_ms=20`), the pool asking for the CPUs its load needs
//!   and the batch job getting the rest.
//!
//! It reports the requests' p50 and p99 latency, the CPUs the pool held
//! (Arachne) and the batch job's CPUs (`enoki-pool --watch-pid`), per load
//! and configuration. All in one latency boot. Each repetition runs every
//! (load, configuration) pair once, back to back, in an order rotated by
//! one each repetition ([`table::rotate`]); a warm-up repetition runs
//! first and is left out. The arbiter is loaded for its runs only and
//! unloaded after each; a failed unload fails that run, and a default run
//! that finds an Enoki scheduler still loaded fails without measuring.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::table::{self, cell, per_rep, ratio_cell, ratios, Reps, Run, ScopedRun, Stat, Table};

/// The `--only` name that selects the table.
pub const NAME: &str = "arachne";
pub const WHAT: &str = "the paper's 5.6: enoki-pool request p50/p99 and a batch job's CPUs at \
                        three loads, default scheduler vs the Arachne arbiter";
/// Tells this report from the others in `--from`.
pub const KIND: &str = "arachne request latency";

/// The Enoki scheduler of the `arachne` runs, and its parameters (the
/// VM test's: a reclaimed CPU goes after 20 ms at the latest).
pub const SCHED: &str = "arachne";
pub const SCHED_ARGS: &str = "reclaim_ms=20";

/// Loads when `--arachne-rates` is not given, requests/s: at 40 ms of
/// work, 0.6, 2.4 and 4.4 CPUs busy (the VM test's low and high loads,
/// which keep up under emulation, and one between).
pub const DEFAULT_RATES: [u32; 3] = [15, 60, 110];
/// CPU time per request, us: long next to what a request costs besides
/// (locks, wakeups), which takes milliseconds on an emulated VM.
pub const DEFAULT_WORK_US: u64 = 40_000;
/// How long each run offers its load, ms.
pub const DEFAULT_PHASE_MS: u64 = 5000;

/// The batch job: one spinning thread per vCPU, asking for no CPUs.
const BATCH_THREADS: u32 = 8;
/// The batch job is started for this much longer than the phase (the
/// pool's wait for its first grant, up to 3 s under emulation) and killed
/// when the pool is done. Not much longer, because under the arbiter the
/// kill takes effect only when the batch job ends by itself, and a batch
/// job left running 10 s after the pool ended got the scheduler ejected
/// ("watchdog failed to check in").
const BATCH_EXTRA_MS: u64 = 5000;
/// A run whose pool took longer than this to start its load (its first
/// grant) fails: its batch job may have ended before the phase did.
const START_LIMIT_MS: f64 = BATCH_EXTRA_MS as f64 - 200.0;
/// A run whose queued requests took longer than this to drain after the
/// phase fell behind its load (or one that dropped requests).
pub const DRAIN_LIMIT_MS: f64 = 1000.0;

/// Keys of enoki-pool's output (one phase: `phase.0.`).
pub const P50: &str = "phase.0.p50_us";
pub const P99: &str = "phase.0.p99_us";
const P999: &str = "phase.0.p999_us";
pub const HELD: &str = "phase.0.held_mean";
pub const BATCH: &str = "phase.0.watch_cpus";
const START: &str = "phase.0.start_ms";
const DURATION: &str = "phase.0.duration_ms";
const ARRIVED: &str = "total.arrived";
const COMPLETED: &str = "total.completed";
const DROPPED: &str = "total.dropped";
const FINISHED: &str = "total.finished_ms";
const GRANTS: &str = "grants";
const WARMUP: &str = "warmup_ms";

/// The pool's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Default,
    Arachne,
}

/// In the order of a load's runs in repetition 1.
pub const CONFIGS: [Config; 2] = [Config::Default, Config::Arachne];

impl Config {
    pub fn id(self) -> &'static str {
        match self {
            Config::Default => "default",
            Config::Arachne => "arachne",
        }
    }

    pub fn label(self) -> String {
        match self {
            Config::Default => "default, all workers (--no-arbiter)".into(),
            Config::Arachne => format!("Enoki {SCHED}, cores on demand"),
        }
    }

    /// `default` or the Enoki scheduler to load, and its arguments.
    fn sched(self) -> (&'static str, &'static str) {
        match self {
            Config::Default => ("default", ""),
            Config::Arachne => (SCHED, SCHED_ARGS),
        }
    }

    /// The keys its runs must print: an Arachne run also the CPUs it
    /// held and the grants it read.
    fn needed(self) -> Vec<&'static str> {
        let mut keys = vec![
            P50, P99, BATCH, START, DURATION, ARRIVED, COMPLETED, DROPPED, FINISHED, WARMUP,
        ];
        if self == Config::Arachne {
            keys.extend([HELD, GRANTS]);
        }
        keys
    }
}

/// One run of a repetition: a configuration at a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub rate: u32,
    pub config: Config,
}

impl Item {
    /// Its id in run ids and the report: `arachne-60`.
    pub fn id(self) -> String {
        format!("{}-{}", self.config.id(), self.rate)
    }
}

/// What the table runs; kept in the report so `--from` can read the raw
/// files again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArachneConfig {
    pub reps: usize,
    /// Warm-up repetitions run first and left out (0 or 1).
    pub warmup: usize,
    /// The loads, requests/s, ascending.
    pub rates: Vec<u32>,
    /// How long each run offers its load, ms.
    pub phase_ms: u64,
    /// CPU time per request, us.
    pub work_us: u64,
}

impl ArachneConfig {
    /// CPUs' worth of work `rate` offers.
    pub fn cpus(&self, rate: u32) -> f64 {
        f64::from(rate) * self.work_us as f64 / 1e6
    }

    /// The command of one run: the batch job in the background, the pool
    /// watching it; the pool's exit status is the run's.
    pub fn command(&self, it: Item) -> String {
        let no_arbiter = match it.config {
            Config::Default => " --no-arbiter",
            Config::Arachne => "",
        };
        format!(
            "enoki-cores --cores 0 --threads {BATCH_THREADS} --duration-ms {} >/dev/null & b=$!; \
             enoki-pool --phases {}:{} --work-us {} --watch-pid $b{no_arbiter}; rc=$?; \
             kill $b; wait $b; exit $rc",
            self.phase_ms + BATCH_EXTRA_MS,
            it.rate,
            self.phase_ms,
            self.work_us
        )
    }

    /// Every run of a repetition, in the order of repetition 1: by load,
    /// the default then Arachne at each.
    fn items(&self) -> Vec<Item> {
        self.rates
            .iter()
            .flat_map(|&rate| CONFIGS.map(|config| Item { rate, config }))
            .collect()
    }

    /// The order of repetition `rep` (0: the warm-up).
    pub fn order(&self, rep: usize) -> Vec<Item> {
        let mut items = self.items();
        table::rotate(&mut items, rep);
        items
    }

    fn reps(&self) -> Reps {
        Reps {
            reps: self.reps,
            warmup: self.warmup,
        }
    }
}

impl Table for ArachneConfig {
    type Row = Row;
    const NAME: &'static str = NAME;
    const KIND: &'static str = KIND;
    const SCHED: (&'static str, &'static str) = (SCHED, SCHED_ARGS);

    fn run_list(&self) -> String {
        self.reps().run_list(
            |rep| self.order(rep),
            |&it| {
                let (sched, args) = it.config.sched();
                ScopedRun {
                    id: it.id(),
                    sched: sched.into(),
                    args: args.into(),
                    label: format!("{} at {}/s", it.config.label(), it.rate),
                    cmd: self.command(it),
                }
            },
        )
    }

    fn runs(&self) -> usize {
        (self.reps + self.warmup) * self.items().len()
    }

    fn what(&self) -> String {
        format!(
            "{} loads x 2 configurations (default, enoki {SCHED})",
            self.rates.len()
        )
    }

    fn collect(&self, raw: &Path) -> Vec<Run> {
        collect(self, raw)
    }

    fn summarize(&self, runs: &[Run]) -> Vec<Row> {
        summarize(self, runs)
    }

    fn write(dir: &Path, report: &ArachneReport) -> Result<()> {
        write_outputs(dir, report)
    }
}

/// Every counted run (the warm-up left out), repetition by repetition in
/// the order they ran.
pub fn collect(cfg: &ArachneConfig, raw: &Path) -> Vec<Run> {
    cfg.reps()
        .counted()
        .flat_map(|rep| {
            cfg.order(rep).into_iter().enumerate().map(move |(i, it)| {
                let mut run = Run::read(raw, rep, i + 1, &it.id(), &it.config.needed());
                if let Some(ms) = run.value(WARMUP).filter(|ms| *ms > START_LIMIT_MS) {
                    run.status = format!(
                        "the pool started after {ms:.0} ms: the batch job may have ended \
                             before the phase"
                    );
                    run.values.clear();
                }
                run
            })
        })
        .collect()
}

/// Whether a run fell behind its load: it dropped requests, or its
/// queue took longer than [`DRAIN_LIMIT_MS`] to drain after the phase.
pub fn behind(run: &Run) -> bool {
    let v = |k| run.value(k);
    let dropped = v(DROPPED).is_some_and(|d| d > 0.0);
    let drain = match (v(FINISHED), v(START), v(DURATION)) {
        (Some(f), Some(s), Some(d)) => f - s - d,
        _ => 0.0,
    };
    dropped || drain > DRAIN_LIMIT_MS
}

/// One row of the table: a configuration at a load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub rate: u32,
    pub config: String,
    pub label: String,
    /// Request latency, ms.
    pub p50_ms: Stat,
    pub p99_ms: Stat,
    /// This configuration's value / the default's at the same load,
    /// paired by repetition.
    pub p50_vs_default: Stat,
    pub p99_vs_default: Stat,
    /// Mean CPUs the pool held (Arachne; 0 without the arbiter).
    pub held: Stat,
    /// The batch job's CPUs (CPU time / wall time over the phase).
    pub batch_cpus: Stat,
    pub batch_vs_default: Stat,
    /// Runs that fell behind their load ([`behind`]).
    pub behind: usize,
    pub ok: usize,
    pub failed: usize,
}

/// The table's rows: by load, the default then Arachne.
pub fn summarize(cfg: &ArachneConfig, runs: &[Run]) -> Vec<Row> {
    let reps = cfg.reps;
    cfg.items()
        .into_iter()
        .map(|it| {
            let id = it.id();
            let default = Item {
                config: Config::Default,
                ..it
            }
            .id();
            let get = |id: &str, key| per_rep(runs, reps, id, key);
            let ms = |v: Vec<Option<f64>>| v.into_iter().map(|x| x.map(|us| us / 1e3)).collect();
            let vs = |key| Stat::of(ratios(&get(&id, key), &get(&default, key)));
            let (ok, failed) = table::ok_failed(runs, &id);
            Row {
                rate: it.rate,
                config: it.config.id().into(),
                label: it.config.label(),
                p50_ms: Stat::of(ms(get(&id, P50))),
                p99_ms: Stat::of(ms(get(&id, P99))),
                p50_vs_default: vs(P50),
                p99_vs_default: vs(P99),
                held: Stat::of(get(&id, HELD)),
                batch_cpus: Stat::of(get(&id, BATCH)),
                batch_vs_default: vs(BATCH),
                behind: runs.iter().filter(|r| r.config == id && behind(r)).count(),
                ok,
                failed,
            }
        })
        .collect()
}

pub type ArachneReport = table::Report<ArachneConfig>;

/// The line of `config` over the loads: (rate, median, min, max, some
/// run fell behind) of `stat`, where some run went well.
pub fn line(r: &ArachneReport, config: Config, stat: fn(&Row) -> &Stat) -> Vec<LinePoint> {
    r.rows
        .iter()
        .filter(|row| row.config == config.id())
        .filter_map(|row| {
            let s = stat(row);
            Some(LinePoint {
                rate: f64::from(row.rate),
                median: s.median?,
                min: s.min?,
                max: s.max?,
                behind: row.behind > 0,
            })
        })
        .collect()
}

/// One point of a plotted line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinePoint {
    pub rate: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub behind: bool,
}

fn table(r: &ArachneReport) -> String {
    let mut s = String::from(
        "| load (req/s) | configuration | p50 (ms) | p99 (ms) | p50 / default | p99 / default | \
         pool CPUs held | batch CPUs | batch / default | runs ok | fell behind |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in &r.rows {
        let arachne = row.config == Config::Arachne.id();
        let vs = |st: &Stat| {
            if arachne {
                ratio_cell(st)
            } else {
                "".into()
            }
        };
        let _ = writeln!(
            s,
            "| {} ({:.1} CPUs) | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
            row.rate,
            r.config.cpus(row.rate),
            row.label,
            cell(&row.p50_ms, 1),
            cell(&row.p99_ms, 1),
            vs(&row.p50_vs_default),
            vs(&row.p99_vs_default),
            if arachne {
                cell(&row.held, 2)
            } else {
                "7 (all)".into()
            },
            cell(&row.batch_cpus, 2),
            vs(&row.batch_vs_default),
            row.ok,
            row.ok + row.failed,
            row.behind
        );
    }
    s
}

/// Every run, in the order it ran, with what it measured or why not.
fn runs_table(r: &ArachneReport) -> String {
    let mut s = String::from(
        "| rep | # | run | status | p50 (ms) | p99 (ms) | p99.9 (ms) | held | batch CPUs | \
         completed/arrived |\n\
         | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for run in &r.runs {
        let v = |k: &str, scale: f64, d: usize| {
            run.value(k)
                .map_or("-".into(), |x| format!("{:.d$}", x / scale))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {}/{} |",
            run.rep,
            run.position,
            run.config,
            run.status,
            if behind(run) { " (fell behind)" } else { "" },
            v(P50, 1e3, 1),
            v(P99, 1e3, 1),
            v(P999, 1e3, 1),
            if run.config.starts_with(Config::Default.id()) {
                "-".into()
            } else {
                v(HELD, 1.0, 2)
            },
            v(BATCH, 1.0, 2),
            v(COMPLETED, 1.0, 0),
            v(ARRIVED, 1.0, 0)
        );
    }
    s
}

/// The markdown report: the table, the plots, every run, failures.
pub fn markdown(r: &ArachneReport) -> String {
    let (m, c) = (&r.meta, &r.config);
    let mut s = format!(
        "Arachne (the paper's 5.6): enoki-pool, 7 workers, requests of {} ms of CPU with \
         Poisson arrivals for {} s per run, next to a batch job ({BATCH_THREADS} spinning \
         threads, `enoki-cores --cores 0`); the default scheduler with the pool running all \
         its workers (`--no-arbiter`) against the Arachne arbiter (`enoki load {SCHED} --mode \
         all --args {SCHED_ARGS}`), the pool asking for the CPUs its load needs. {} Pool \
         CPUs held: the mean over the phase of the CPUs granted; batch CPUs: the batch job's \
         CPU time over the phase's wall time. A run fell behind when it dropped requests or \
         took over {DRAIN_LIMIT_MS:.0} ms to drain its queue after the phase.\n\n",
        c.work_us as f64 / 1e3,
        c.phase_ms as f64 / 1e3,
        table::method_md(
            c.reps(),
            m,
            "every load and configuration",
            "Request latency (arrival to completion), ms",
            "the default run at the same load"
        )
    );
    s.push_str(&table(r));
    s.push('\n');
    for (file, what) in crate::arachne_plot::FILES
        .iter()
        .zip(crate::arachne_plot::TITLES)
    {
        let _ = writeln!(s, "![{what}]({file})");
    }
    s.push_str("\nEvery run:\n\n");
    s.push_str(&runs_table(r));
    s.push_str(&table::failures_md(&r.runs, m));
    s
}

/// Writes results.{json,md} and the plots into `dir` and copies them to
/// `latest-arachne*` beside it.
pub fn write_outputs(dir: &Path, rep: &ArachneReport) -> Result<()> {
    let json = serde_json::to_string_pretty(rep)?;
    let pngs = crate::arachne_plot::pngs(dir, rep)?;
    table::write_report(dir, NAME, &json, &markdown(rep), &pngs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(reps: usize) -> ArachneConfig {
        ArachneConfig {
            reps,
            warmup: 1,
            rates: vec![15, 60],
            phase_ms: 3000,
            work_us: 40_000,
        }
    }

    #[test]
    fn the_run_list_rotates_every_load_and_configuration() {
        let ids = |rep| -> Vec<String> { cfg(2).order(rep).into_iter().map(Item::id).collect() };
        assert_eq!(
            ids(1),
            ["default-15", "arachne-15", "default-60", "arachne-60"]
        );
        assert_eq!(
            ids(2),
            ["arachne-15", "default-60", "arachne-60", "default-15"]
        );
        assert_eq!(
            ids(0),
            ["arachne-60", "default-15", "arachne-15", "default-60"]
        );
        let list = cfg(2).run_list();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!((lines.len(), cfg(2).runs()), (12, 12), "{list}");
        assert_eq!(
            lines[0],
            "scoped_run 00-arachne-60 'arachne' 'reclaim_ms=20' \
             '[1/12] warm-up Enoki arachne, cores on demand at 60/s' \
             'enoki-cores --cores 0 --threads 8 --duration-ms 8000 >/dev/null & b=$!; \
             enoki-pool --phases 60:3000 --work-us 40000 --watch-pid $b; rc=$?; \
             kill $b; wait $b; exit $rc'"
        );
        assert!(
            lines[4].starts_with(
                "scoped_run 01-default-15 'default' '' \
                 '[5/12] rep 1/2 default, all workers (--no-arbiter) at 15/s' \
                 'enoki-cores --cores 0 --threads 8 --duration-ms 8000 >/dev/null & b=$!; \
                 enoki-pool --phases 15:3000 --work-us 40000 --watch-pid $b --no-arbiter;"
            ),
            "{}",
            lines[4]
        );
        assert!(lines[11].starts_with("scoped_run 02-default-15 'default' "));
        assert_eq!(cfg(1).cpus(110), 4.4);
    }

    fn run(rep: usize, it: Item, p99_us: f64, batch: f64) -> Run {
        let values = [
            (P50, p99_us / 2.0),
            (P99, p99_us),
            (BATCH, batch),
            (HELD, 3.0),
            (START, 10.0),
            (DURATION, 3000.0),
            (FINISHED, 3100.0),
            (DROPPED, 0.0),
        ];
        Run {
            config: it.id(),
            rep,
            position: 1,
            status: "ok".into(),
            values: values.map(|(k, v)| (k.to_string(), v)).into(),
        }
    }

    #[test]
    fn ratios_pair_the_default_at_the_same_load_and_repetition() {
        let d = Item {
            rate: 15,
            config: Config::Default,
        };
        let a = Item {
            config: Config::Arachne,
            ..d
        };
        let mut slow = run(2, a, 90_000.0, 6.0);
        slow.values.insert(FINISHED.into(), 5000.0);
        let runs = vec![
            run(1, d, 100_000.0, 2.0),
            run(1, a, 50_000.0, 4.0),
            run(2, d, 50_000.0, 3.0),
            slow,
        ];
        let rows = summarize(&cfg(2), &runs);
        assert_eq!(rows.len(), 4);
        let ar = &rows[1];
        assert_eq!((ar.rate, ar.config.as_str()), (15, "arachne"));
        assert_eq!(ar.p99_ms.values, [Some(50.0), Some(90.0)]);
        assert_eq!(ar.p99_vs_default.values, [Some(0.5), Some(1.8)]);
        assert_eq!(ar.batch_vs_default.values, [Some(2.0), Some(2.0)]);
        assert_eq!(ar.held.median, Some(3.0));
        assert_eq!((ar.behind, ar.ok, ar.failed), (1, 2, 0), "drained 2 s late");
        assert_eq!((rows[0].behind, rows[2].ok), (0, 0));
        assert_eq!(rows[3].p99_ms.median, None, "60/s never ran");
    }
}
