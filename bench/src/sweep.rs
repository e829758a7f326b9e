// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Shinjuku sweep (`--only shinjuku`), the paper's Figure 2 (section
//! 5.4): `enoki-dispersive`, a server of 50 workers on CPUs 2-7 under
//! Poisson load with 0.5 % of requests 10 ms long and the rest 4 us, at
//! each offered rate of `--rates`, under
//!
//! - the server alone: the default scheduler, the fair Enoki scheduler
//!   (`--scheduler`, WFQ) and the Shinjuku-style one (`--shinjuku-sched`);
//! - the server and a CPU-bound batch job (one thread per worker CPU, on
//!   CFS at nice 19): the default scheduler with the workers at nice -20,
//!   and the Shinjuku-style scheduler.
//!
//! It reports the short requests' p99 latency and the batch job's share of
//! the worker CPUs per rate. Every point is one run in one latency boot,
//! rate by rate, so drift over the boot hits every scheduler alike; every
//! scheduler sees the same arrivals at a rate (same seed). An Enoki
//! scheduler is loaded for its run only, in its default mode (the workers
//! opt in with SCHED_EXT), so a scheduler whose module does not exist fails
//! its own points and the others are still measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::Meta;

/// The `--only` name that selects the sweep.
pub const NAME: &str = "shinjuku";
pub const WHAT: &str =
    "sweep: enoki-dispersive p99 and batch CPU share vs offered load (default, fair, shinjuku)";

/// Offered loads when `--rates` is not given, requests/s. Mean service is
/// about 54 us, so 6 CPUs serve some 100 k/s natively; a guest where all
/// 8 vCPUs share one host thread serves a small fraction of that, and the
/// top rates are meant to saturate the default scheduler there.
pub const DEFAULT_RATES: [u32; 6] = [250, 500, 1000, 2000, 3000, 4000];

/// The server's layout (the paper's: CPU 0 for the load generator, CPU 1
/// for background work, the rest for 50 workers).
const WORKERS: u32 = 50;
const WORKER_CPUS: &str = "2-7";
const LOADGEN_CPU: u32 = 0;
/// One batch thread per worker CPU: the batch job alone would fill them.
const BATCH_THREADS: u32 = 6;
const BATCH_NICE: i32 = 19;
/// The workers' nice under the default scheduler with the batch job (the
/// paper's RocksDB at -20 against the batch job's 19).
const DEFAULT_WORKER_NICE: i32 = -20;
const SEED: u64 = 1;

/// What the sweep runs; kept in the report so `--from` can read the raw
/// files again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    pub rates: Vec<u32>,
    /// Each point's generation window, ms.
    pub duration_ms: u64,
    /// The fair Enoki scheduler and its `--args` (empty: none).
    pub fair: (String, String),
    /// The Shinjuku-style Enoki scheduler and its `--args`.
    pub shinjuku: (String, String),
}

/// Which scheduler a series runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sched {
    Default,
    Fair,
    Shinjuku,
}

/// One line of the plots: a scheduler, with or without the batch job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub sched: Sched,
    pub batch: bool,
}

/// The series in the order they run at each rate.
pub const SERIES: [Series; 5] = [
    Series {
        sched: Sched::Default,
        batch: false,
    },
    Series {
        sched: Sched::Fair,
        batch: false,
    },
    Series {
        sched: Sched::Shinjuku,
        batch: false,
    },
    Series {
        sched: Sched::Default,
        batch: true,
    },
    Series {
        sched: Sched::Shinjuku,
        batch: true,
    },
];

impl SweepConfig {
    /// The Enoki scheduler to load for `sched` and its arguments; None for
    /// the default scheduler.
    fn enoki(&self, sched: Sched) -> Option<&(String, String)> {
        match sched {
            Sched::Default => None,
            Sched::Fair => Some(&self.fair),
            Sched::Shinjuku => Some(&self.shinjuku),
        }
    }

    /// A series' id part, also its key in the report: `alone-default`,
    /// `batch-shinjuku`, ... (the fair one goes by `fair`, whatever its
    /// scheduler, so ids do not depend on the options).
    pub fn series_id(s: Series) -> String {
        let sched = match s.sched {
            Sched::Default => "default",
            Sched::Fair => "fair",
            Sched::Shinjuku => "shinjuku",
        };
        format!("{}-{sched}", if s.batch { "batch" } else { "alone" })
    }

    /// A series' name in tables and legends.
    pub fn label(&self, s: Series) -> String {
        let sched = match self.enoki(s.sched) {
            None if s.batch => format!("default (workers nice {DEFAULT_WORKER_NICE})"),
            None => "default".to_string(),
            Some((name, _)) => format!("Enoki {name}"),
        };
        if s.batch {
            format!("{sched}, batch nice {BATCH_NICE} on CFS")
        } else {
            sched
        }
    }

    /// The enoki-dispersive command of one point.
    pub fn command(&self, s: Series, rate: u32) -> String {
        let policy = if s.sched == Sched::Default {
            "normal"
        } else {
            "ext"
        };
        let nice = if s.batch && s.sched == Sched::Default {
            DEFAULT_WORKER_NICE
        } else {
            0
        };
        let mut cmd = format!(
            "enoki-dispersive --workers {WORKERS} --worker-cpus {WORKER_CPUS} \
             --loadgen-cpu {LOADGEN_CPU} --rate {rate} --duration-ms {} --seed {SEED} \
             --policy {policy} --worker-nice {nice}",
            self.duration_ms
        );
        if s.batch {
            let _ = write!(
                cmd,
                " --batch-threads {BATCH_THREADS} --batch-nice {BATCH_NICE}"
            );
        }
        cmd
    }

    /// Runs in the guest: every series at each rate, rates ascending.
    pub fn runs(&self) -> usize {
        self.rates.len() * SERIES.len()
    }

    /// The run list for the guest script (`sweep_run` lines).
    pub fn run_list(&self) -> String {
        let mut list = String::new();
        let mut n = 0;
        for &rate in &self.rates {
            for s in SERIES {
                n += 1;
                let (sched, args) = match self.enoki(s.sched) {
                    None => ("default", ""),
                    Some((name, args)) => (name.as_str(), args.as_str()),
                };
                let label = format!("[{n}/{}] {} at {rate}/s", self.runs(), self.label(s));
                let _ = writeln!(
                    list,
                    "sweep_run {} {} {} {} {}",
                    run_id(s, rate),
                    crate::shell_quote(sched),
                    crate::shell_quote(args),
                    crate::shell_quote(&label),
                    crate::shell_quote(&self.command(s, rate))
                );
            }
        }
        list
    }
}

/// Raw-file id of one point: `<series>-<rate>`.
fn run_id(s: Series, rate: u32) -> String {
    format!("{}-{rate}", SweepConfig::series_id(s))
}

/// Every `key number` line of enoki-dispersive's output (the last one
/// wins if a key repeats).
pub fn parse_values(output: &str) -> BTreeMap<String, f64> {
    output
        .lines()
        .filter_map(|l| {
            let (key, value) = l.trim().split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One point of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// `SweepConfig::series_id`.
    pub series: String,
    pub rate: u32,
    /// `ok`, `exit N`, `timeout`, `load failed: ...`, `ejected: ...`, ...
    pub status: String,
    /// Every number enoki-dispersive printed (empty when not ok).
    pub values: BTreeMap<String, f64>,
}

/// The short requests' p99, the y of plots (a) and (b).
pub const P99: &str = "short_p99_us";
/// The batch job's share of the worker CPUs, the y of plot (c).
pub const BATCH_SHARE: &str = "batch_cpu_share";

impl Point {
    fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// `key`, if the run went well.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.ok().then(|| self.values.get(key).copied()).flatten()
    }

    /// The server fell behind: requests left undone at the end, or under
    /// 90 % of the offered rate served. Its p99 then understates latency
    /// (the undone requests have none).
    pub fn saturated(&self) -> bool {
        let undone = self.value("undone").is_some_and(|u| u > 0.0);
        let behind = match (self.value("achieved_rps"), self.value("offered_rps")) {
            (Some(a), Some(o)) => a < 0.9 * o,
            _ => false,
        };
        undone || behind
    }
}

/// The point of one run, read from `raw` (`not run` if the VM ended first).
fn read_point(raw: &Path, s: Series, rate: u32) -> Point {
    let needed = if s.batch {
        &[P99, BATCH_SHARE][..]
    } else {
        &[P99][..]
    };
    let (status, values) = crate::table::read_raw(raw, &run_id(s, rate), needed);
    Point {
        series: SweepConfig::series_id(s),
        rate,
        status,
        values,
    }
}

/// Every point of the sweep, from the raw directory.
pub fn collect(cfg: &SweepConfig, raw: &Path) -> Vec<Point> {
    cfg.rates
        .iter()
        .flat_map(|&rate| SERIES.map(|s| read_point(raw, s, rate)))
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepReport {
    /// `shinjuku sweep`: tells this report from the A/B one in `--from`.
    pub kind: String,
    pub meta: Meta,
    pub config: SweepConfig,
    pub points: Vec<Point>,
}

pub const KIND: &str = "shinjuku sweep";

impl SweepReport {
    /// The points of `s` that have `key`, by rate: the line of a plot,
    /// as (rate, value, saturated).
    pub fn line(&self, s: Series, key: &str) -> Vec<(f64, f64, bool)> {
        let id = SweepConfig::series_id(s);
        self.points
            .iter()
            .filter(|p| p.series == id)
            .filter_map(|p| Some((f64::from(p.rate), p.value(key)?, p.saturated())))
            .collect()
    }

    fn point(&self, s: Series, rate: u32) -> Option<&Point> {
        let id = SweepConfig::series_id(s);
        self.points
            .iter()
            .find(|p| p.series == id && p.rate == rate)
    }
}

/// A table cell: the value, `(sat.)` if the server fell behind, or why
/// there is none.
fn cell(p: Option<&Point>, key: &str, digits: usize) -> String {
    let Some(p) = p else {
        return "-".into();
    };
    match p.value(key) {
        Some(v) if p.saturated() => format!("{v:.digits$} (sat.)"),
        Some(v) => format!("{v:.digits$}"),
        None if p.ok() => "-".into(),
        None => format!("failed: {}", p.status),
    }
}

/// A markdown table of `key` by rate, one column per series.
fn table(r: &SweepReport, title: &str, series: &[Series], key: &str, digits: usize) -> String {
    let mut s = format!("{title}\n\n| offered (req/s) |");
    for &x in series {
        let _ = write!(s, " {} |", r.config.label(x));
    }
    s.push_str("\n| ---: |");
    s.push_str(&" ---: |".repeat(series.len()));
    s.push('\n');
    for &rate in &r.config.rates {
        let _ = write!(s, "| {rate} |");
        for &x in series {
            let _ = write!(s, " {} |", cell(r.point(x, rate), key, digits));
        }
        s.push('\n');
    }
    s
}

pub fn alone() -> Vec<Series> {
    SERIES.into_iter().filter(|s| !s.batch).collect()
}

pub fn with_batch() -> Vec<Series> {
    SERIES.into_iter().filter(|s| s.batch).collect()
}

/// The markdown report: p99 alone, p99 with the batch job, batch share.
pub fn markdown(r: &SweepReport) -> String {
    let (m, c) = (&r.meta, &r.config);
    let mut s = format!(
        "Shinjuku sweep: enoki-dispersive ({WORKERS} workers on CPUs {WORKER_CPUS}, \
         load generator on CPU {LOADGEN_CPU}; Poisson arrivals; 0.5 % of requests 10 ms, \
         the rest 4 us), {} ms per point, one boot ({}), {}.\n\n\
         Short requests' p99 latency, us; `(sat.)`: the server fell behind \
         (requests undone at the end or under 90 % of the offered rate served), \
         so the p99 understates latency (hollow points in the charts).\n\n",
        c.duration_ms, m.vm, m.date
    );
    s.push_str(&table(r, "Server alone:", &alone(), P99, 0));
    s.push('\n');
    s.push_str(&table(
        r,
        &format!("With a batch job ({BATCH_THREADS} CPU-bound threads at nice {BATCH_NICE}):"),
        &with_batch(),
        P99,
        0,
    ));
    s.push('\n');
    s.push_str(&table(
        r,
        "The batch job's share of the worker CPUs (CPU time / (window x 6 CPUs)):",
        &with_batch(),
        BATCH_SHARE,
        3,
    ));
    let failed: Vec<&Point> = r.points.iter().filter(|p| !p.ok()).collect();
    if !failed.is_empty() {
        s.push_str("\nFailed runs:\n\n");
        for p in failed {
            let _ = writeln!(s, "- {} at {}/s: {}", p.series, p.rate, p.status);
        }
    }
    s.push_str(&crate::table::kernel_log_md(m));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SweepConfig {
        SweepConfig {
            rates: vec![500, 1000],
            duration_ms: 3000,
            fair: ("wfq".into(), String::new()),
            shinjuku: ("shinjuku".into(), "preempt_us=10".into()),
        }
    }

    const OUT: &str = "offered_rps 1000.0\nachieved_rps 998.7\nrequests 2996\n\
                       completed 2996\nlong_requests 14\nundone 0\nsamples 2982\n\
                       short_p50_us 41.5\nshort_p99_us 10850.2\nshort_p999_us 20011.0\n\
                       all_p99_us 10990.0\nbatch_cpu_share 0.4123\n";

    #[test]
    fn parses_the_key_value_output() {
        let v = parse_values(&format!("noise line\n{OUT}warning: not a number x\n"));
        assert_eq!(v["short_p99_us"], 10850.2);
        assert_eq!(v["batch_cpu_share"], 0.4123);
        assert_eq!(v["undone"], 0.0);
        assert!(!v.contains_key("noise") && !v.contains_key("warning:"));
        assert_eq!(parse_values("a 1\na 2\n")["a"], 2.0, "the last one wins");
    }

    #[test]
    fn the_run_list_has_every_series_at_every_rate() {
        let c = cfg();
        let list = c.run_list();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 10);
        assert!(lines[0].starts_with("sweep_run alone-default-500 'default' '' '[1/10] default at 500/s' 'enoki-dispersive "), "{}", lines[0]);
        assert!(
            lines[0].contains("--rate 500 ")
                && lines[0].contains("--policy normal --worker-nice 0'")
        );
        assert!(
            lines[1].starts_with("sweep_run alone-fair-500 'wfq' '' "),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("--policy ext"));
        assert!(lines[2].starts_with("sweep_run alone-shinjuku-500 'shinjuku' 'preempt_us=10' "));
        // Default with the batch job: workers at -20, batch at 19, on CFS.
        assert!(lines[3].starts_with("sweep_run batch-default-500 'default' '' "));
        assert!(
            lines[3]
                .contains("--policy normal --worker-nice -20 --batch-threads 6 --batch-nice 19'"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("--policy ext --worker-nice 0 --batch-threads 6 --batch-nice 19'")
        );
        assert!(lines[5].starts_with("sweep_run alone-default-1000 "));
        assert!(
            lines[9].contains("'[10/10] Enoki shinjuku, batch nice 19 on CFS at 1000/s'"),
            "{}",
            lines[9]
        );
    }

    fn write(dir: &Path, id: &str, status: &str, out: &str) {
        std::fs::write(dir.join(format!("{id}.status")), status).unwrap();
        std::fs::write(dir.join(format!("{id}.out")), out).unwrap();
    }

    fn report(dir: &Path) -> SweepReport {
        SweepReport {
            kind: KIND.into(),
            meta: Meta::default(),
            config: cfg(),
            points: collect(&cfg(), dir),
        }
    }

    #[test]
    fn collect_reads_points_and_marks_failures() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "alone-default-500", "ok\n", OUT);
        write(
            d,
            "alone-shinjuku-500",
            "load failed: unknown scheduler 'shinjuku'\n",
            "",
        );
        // A batch run must report the batch share.
        write(d, "batch-default-500", "ok\n", "short_p99_us 12\n");
        write(
            d,
            "alone-default-1000",
            "ok\n",
            &OUT.replace("undone 0", "undone 7"),
        );
        let r = report(d);
        assert_eq!(r.points.len(), 10);
        let p = |s: usize, rate: u32| r.point(SERIES[s], rate).unwrap();
        assert_eq!(p(0, 500).value(P99), Some(10850.2));
        assert!(!p(0, 500).saturated());
        assert!(p(0, 1000).saturated(), "undone requests");
        assert_eq!(p(2, 500).value(P99), None);
        assert_eq!(p(3, 500).status, "no 'batch_cpu_share' in its output");
        assert!(p(1, 500).status.starts_with("not run"));
        assert_eq!(
            r.line(SERIES[0], P99),
            [(500.0, 10850.2, false), (1000.0, 10850.2, true)]
        );
        assert!(r.line(SERIES[2], P99).is_empty());
    }

    #[test]
    fn markdown_shows_values_saturation_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "alone-default-500", "ok\n", OUT);
        write(
            d,
            "alone-default-1000",
            "ok\n",
            &OUT.replace("achieved_rps 998.7", "achieved_rps 700"),
        );
        write(d, "batch-shinjuku-500", "ok\n", OUT);
        write(d, "alone-fair-500", "ejected: runnable task stall\n", "");
        let md = markdown(&report(d));
        assert!(
            md.contains("| offered (req/s) | default | Enoki wfq | Enoki shinjuku |"),
            "{md}"
        );
        assert!(md.contains("| 500 | 10850 | failed: ejected: runnable task stall | failed: not run (VM ended) |"), "{md}");
        assert!(md.contains("| 1000 | 10850 (sat.) |"), "{md}");
        assert!(md.contains("| default (workers nice -20), batch nice 19 on CFS | Enoki shinjuku, batch nice 19 on CFS |"), "{md}");
        assert!(
            md.contains("| 500 | failed: not run (VM ended) | 0.412 |"),
            "{md}"
        );
        assert!(
            md.contains("- alone-fair at 500/s: ejected: runnable task stall"),
            "{md}"
        );
    }
}
