// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the repeated tables (`--only locality`, `--only arachne`) share:
//! the run list of `scoped_run` lines, repetitions in a rotated order with
//! a warm-up run first and discarded, the runs read back from the raw
//! files, numbers over the repetitions ([`Stat`]) and ratios paired by
//! repetition, the table cells, the failures' part of the markdown and
//! the written report.
//!
//! Each run names its scheduler: `default`, or an Enoki scheduler the
//! guest script's `scoped_run` loads (`--mode all`) for that run only; a
//! failed unload fails the run, and a default run that finds a scheduler
//! still loaded fails without measuring.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::report::Meta;
use crate::stats;
use crate::sweep::parse_values;

/// Rotates one repetition's order: `items`, in the order of the first
/// repetition, rotated left by one more each repetition, so that over as many
/// repetitions as there are items each runs once in every position;
/// repetition 0 (the warm-up) takes the last rotation.
pub fn rotate<T>(items: &mut [T], rep: usize) {
    let n = items.len();
    if n > 0 {
        items.rotate_left((rep + n - 1) % n);
    }
}

/// The repetitions of a table: `reps` counted ones, after `warmup` (0 or
/// 1) discarded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reps {
    pub reps: usize,
    pub warmup: usize,
}

/// One line of the run list: a `scoped_run` call.
pub struct ScopedRun {
    /// The raw files' id, without the repetition.
    pub id: String,
    /// `default`, or the Enoki scheduler to load for the run.
    pub sched: String,
    /// Its `enoki load --args` (empty: none).
    pub args: String,
    pub label: String,
    pub cmd: String,
}

impl Reps {
    /// Every repetition, the warm-up (0) first if there is one.
    pub fn all(self) -> std::ops::RangeInclusive<usize> {
        (1 - self.warmup.min(1))..=self.reps
    }

    /// The counted repetitions.
    pub fn counted(self) -> std::ops::RangeInclusive<usize> {
        1..=self.reps
    }

    /// `warm-up` or `rep 2/3`.
    fn what(self, rep: usize) -> String {
        match rep {
            0 => "warm-up".into(),
            _ => format!("rep {rep}/{}", self.reps),
        }
    }

    /// The run list for the guest script: one `scoped_run` line per item
    /// of each repetition's `order`, warm-up first, labelled with its
    /// place in the whole list.
    pub fn run_list<T>(
        self,
        order: impl Fn(usize) -> Vec<T>,
        run: impl Fn(&T) -> ScopedRun,
    ) -> String {
        let per_rep = order(1).len();
        let total = (self.reps + self.warmup.min(1)) * per_rep;
        let mut list = String::new();
        let mut n = 0;
        for rep in self.all() {
            for item in order(rep) {
                n += 1;
                let r = run(&item);
                let label = format!("[{n}/{total}] {} {}", self.what(rep), r.label);
                let q = crate::shell_quote;
                let _ = writeln!(
                    list,
                    "scoped_run {} {} {} {} {}",
                    rep_id(rep, &r.id),
                    q(&r.sched),
                    q(&r.args),
                    q(&label),
                    q(&r.cmd)
                );
            }
        }
        list
    }
}

/// A repeated table's settings: what it runs, and how its report is
/// made and written.
pub trait Table: Clone + std::fmt::Debug + Serialize + DeserializeOwned {
    type Row: Clone + std::fmt::Debug + Serialize + DeserializeOwned;
    /// The `--only` name.
    const NAME: &'static str;
    /// Tells its report from the others in `--from`.
    const KIND: &'static str;
    /// The Enoki scheduler of its runs, and its arguments.
    const SCHED: (&'static str, &'static str);
    /// The run list for the guest script (`scoped_run` lines).
    fn run_list(&self) -> String;
    /// Runs in the guest, the warm-up included.
    fn runs(&self) -> usize;
    /// For the progress line: what each repetition runs.
    fn what(&self) -> String;
    /// Every counted run, read back from the raw files.
    fn collect(&self, raw: &Path) -> Vec<Run>;
    /// The table's rows.
    fn summarize(&self, runs: &[Run]) -> Vec<Self::Row>;
    /// Writes the report's files into `dir` (and `latest-<NAME>*`).
    fn write(dir: &Path, report: &Report<Self>) -> Result<()>;
}

/// A repeated table's report.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Report<C: Table> {
    /// [`Table::KIND`].
    pub kind: String,
    pub meta: Meta,
    pub config: C,
    pub rows: Vec<C::Row>,
    pub runs: Vec<Run>,
}

impl<C: Table> Report<C> {
    /// The report of the runs in `raw`.
    pub fn new(meta: Meta, config: C, raw: &Path) -> Self {
        let runs = config.collect(raw);
        Report {
            kind: C::KIND.into(),
            meta,
            rows: config.summarize(&runs),
            config,
            runs,
        }
    }

    /// `--from`: the report in `text` (results.json of `dir`), if it is
    /// one of this table's, made again from the raw files and written.
    pub fn rerender(text: &str, dir: &Path) -> Option<Result<()>> {
        let old: Self = serde_json::from_str(text).ok()?;
        (old.kind == C::KIND).then(|| {
            let report = Self::new(old.meta, old.config, &dir.join("raw"));
            C::write(dir, &report)
        })
    }

    /// The runs whose scheduler was ejected, named: their numbers are not
    /// the scheduler's.
    pub fn ejections(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter(|r| r.status.starts_with("ejected"))
            .map(|r| format!("{} rep {}: {}", r.config, r.rep, r.status))
            .collect()
    }
}

/// `N repetitions (+1 warm-up, discarded), each running <each> back to
/// back ...`, and how the cells are read: the method paragraphs of a
/// report, `what` naming the measure and `default_run` the run ratios are
/// to.
pub fn method_md(r: Reps, meta: &Meta, each: &str, what: &str, default_run: &str) -> String {
    format!(
        "{} repetitions{}, each running {each} back to back in an order rotated each \
         repetition; one boot ({}), {}.\n\n\
         {what}: median over the repetitions [min-max]; `x` ratios: median of the \
         per-repetition ratios to {default_run} of the same repetition, with its {:.0} % \
         bootstrap interval (CI).",
        r.reps,
        if r.warmup > 0 {
            " (+1 warm-up, discarded)"
        } else {
            ""
        },
        meta.vm,
        meta.date,
        stats::CONFIDENCE * 100.0
    )
}

/// Raw-file id of one run: `<rep>-<id>`.
pub fn rep_id(rep: usize, id: &str) -> String {
    format!("{rep:02}-{id}")
}

/// One run of one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The configuration's id.
    pub config: String,
    pub rep: usize,
    /// Its place in the repetition's order, from 1.
    pub position: usize,
    /// `ok`, `exit N`, `timeout`, `load failed: ...`, `ejected: ...`,
    /// `unload failed: ...`, `scheduler X still loaded`, `not run ...`.
    pub status: String,
    /// Every number the workload printed (empty when not ok).
    pub values: BTreeMap<String, f64>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// `key`, if the run went well.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.ok().then(|| self.values.get(key).copied()).flatten()
    }

    /// The run of configuration `config` in repetition `rep`, read from
    /// `raw` (`not run` if the VM ended first); a run whose output lacks
    /// one of `needed` fails.
    pub fn read(raw: &Path, rep: usize, position: usize, config: &str, needed: &[&str]) -> Run {
        let (status, values) = read_raw(raw, &rep_id(rep, config), needed);
        Run {
            config: config.into(),
            rep,
            position,
            status,
            values,
        }
    }
}

/// The status of the run `id` in `raw` (`not run` if the VM ended first)
/// and, when ok, every number it printed; a run whose output lacks one
/// of `needed` fails, with no numbers.
pub fn read_raw(raw: &Path, id: &str, needed: &[&str]) -> (String, BTreeMap<String, f64>) {
    let read = |ext: &str| fs::read_to_string(raw.join(format!("{id}.{ext}"))).ok();
    let status = read("status")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "not run (VM ended)".into());
    if status != "ok" {
        return (status, BTreeMap::new());
    }
    let values = parse_values(&read("out").unwrap_or_default());
    match needed.iter().find(|k| !values.contains_key(**k)) {
        Some(missing) => (format!("no '{missing}' in its output"), BTreeMap::new()),
        None => (status, values),
    }
}

/// One number over the repetitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// One per repetition; None where the run failed.
    pub values: Vec<Option<f64>>,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Bootstrap interval of the median ([`stats::CONFIDENCE`]).
    pub ci: Option<(f64, f64)>,
}

impl Stat {
    pub fn of(values: Vec<Option<f64>>) -> Self {
        let ok: Vec<f64> = values.iter().flatten().copied().collect();
        Stat {
            median: stats::median(&ok),
            min: ok.iter().copied().reduce(f64::min),
            max: ok.iter().copied().reduce(f64::max),
            ci: stats::median_ci(&ok),
            values,
        }
    }
}

/// `key` of configuration `config`, one per repetition.
pub fn per_rep(runs: &[Run], reps: usize, config: &str, key: &str) -> Vec<Option<f64>> {
    (1..=reps)
        .map(|rep| {
            runs.iter()
                .find(|r| r.rep == rep && r.config == config)
                .and_then(|r| r.value(key))
        })
        .collect()
}

/// Per-repetition ratios `a / b` (None where either failed).
pub fn ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<Option<f64>> {
    a.iter()
        .zip(b)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

/// How many of `config`'s runs went well, and how many failed.
pub fn ok_failed(runs: &[Run], config: &str) -> (usize, usize) {
    let mine = runs.iter().filter(|r| r.config == config);
    let ok = mine.clone().filter(|r| r.ok()).count();
    (ok, mine.count() - ok)
}

/// `median [min-max]` with `digits` decimals, or `-` if no run went well.
pub fn cell(s: &Stat, digits: usize) -> String {
    let ok = s.values.iter().flatten().count();
    match (s.median, s.min, s.max) {
        (Some(m), Some(lo), Some(hi)) if ok > 1 => {
            format!("{m:.digits$} [{lo:.digits$}-{hi:.digits$}]")
        }
        (Some(m), ..) => format!("{m:.digits$}"),
        _ => "-".into(),
    }
}

/// A ratio to the default: `x0.06 (CI 0.05-0.08)`.
pub fn ratio_cell(s: &Stat) -> String {
    match (s.median, s.ci) {
        (Some(m), Some((lo, hi))) => format!("x{m:.2} (CI {lo:.2}-{hi:.2})"),
        (Some(m), None) => format!("x{m:.2}"),
        _ => "-".into(),
    }
}

/// The markdown's end: the failed runs and the kernel log's problems.
pub fn failures_md(runs: &[Run], meta: &Meta) -> String {
    let mut s = String::new();
    let failed: Vec<&Run> = runs.iter().filter(|x| !x.ok()).collect();
    if !failed.is_empty() {
        s.push_str("\nFailed runs (left out of every number):\n\n");
        for x in failed {
            let _ = writeln!(s, "- rep {} {}: {}", x.rep, x.config, x.status);
        }
    }
    s.push_str(&kernel_log_md(meta));
    s
}

/// The kernel log's problems during the boot (the first 20), as a
/// markdown block; empty when there were none.
pub fn kernel_log_md(meta: &Meta) -> String {
    let mut s = String::new();
    if !meta.kernel_log_problems.is_empty() {
        s.push_str("\nKernel log problems during the run:\n\n```\n");
        for p in meta.kernel_log_problems.iter().take(20) {
            let _ = writeln!(s, "{p}");
        }
        s.push_str("```\n");
    }
    s
}

/// Writes results.{json,md} into `dir` and copies them, and the `pngs`
/// already there (as `latest-<name>-<file>`), to `latest-<name>.*`
/// beside it.
pub fn write_report(dir: &Path, name: &str, json: &str, md: &str, pngs: &[PathBuf]) -> Result<()> {
    let write = |path: &Path, text: &str| {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(&dir.join("results.json"), json)?;
    write(&dir.join("results.md"), md)?;
    if let Some(parent) = dir.parent() {
        write(&parent.join(format!("latest-{name}.json")), json)?;
        write(&parent.join(format!("latest-{name}.md")), md)?;
        for png in pngs {
            let file = png.file_name().unwrap_or_default().to_string_lossy();
            let to = parent.join(format!("latest-{name}-{file}"));
            fs::copy(png, &to).with_context(|| format!("copying to {}", to.display()))?;
        }
    }
    println!("\n{md}");
    let also = if pngs.is_empty() { "" } else { " and PNGs" };
    println!(
        "bench: wrote {}/results.{{md,json}}{also} (also target/bench/latest-{name}*)",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_puts_each_item_once_in_every_position() {
        let order = |rep| {
            let mut o = ['a', 'b', 'c'];
            rotate(&mut o, rep);
            o
        };
        assert_eq!(order(1), ['a', 'b', 'c']);
        assert_eq!(order(2), ['b', 'c', 'a']);
        assert_eq!(order(0), ['c', 'a', 'b'], "the warm-up");
        for pos in 0..3 {
            let mut at: Vec<char> = (1..=3).map(|rep| order(rep)[pos]).collect();
            at.sort_unstable();
            assert_eq!(at, ['a', 'b', 'c'], "position {pos}");
        }
    }

    #[test]
    fn cells_show_median_range_and_interval() {
        let s = Stat::of(vec![Some(1.0), None, Some(3.0)]);
        assert_eq!(cell(&s, 1), "2.0 [1.0-3.0]");
        assert_eq!(cell(&s, 2), "2.00 [1.00-3.00]");
        assert_eq!(cell(&Stat::of(vec![Some(4.0)]), 0), "4");
        assert_eq!(cell(&Stat::of(vec![None]), 1), "-");
        assert_eq!(ratio_cell(&Stat::of(vec![Some(0.5)])), "x0.50");
        assert_eq!(
            ratio_cell(&Stat::of(vec![Some(0.5), Some(0.5)])),
            "x0.50 (CI 0.50-0.50)"
        );
        assert_eq!(
            ratios(
                &[Some(1.0), Some(2.0), None],
                &[Some(2.0), Some(0.0), Some(1.0)]
            ),
            [Some(0.5), None, None]
        );
    }
}
