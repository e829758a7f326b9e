// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-bench`: runs each workload under the default scheduler and under
//! each scheduler of `--scheduler` (WFQ by default; `cfifo,fifo,wfq`
//! separates what sched_ext, Enoki's message path and the policy cost),
//! back to back in the same VM boot, for `--reps` repetitions (the order
//! rotates and alternates, see [`order`], so drift hits all alike).
//! Latency workloads (pipe, schbench) and
//! throughput workloads (real programs) each get one boot, with the
//! accelerator for their purpose (see `enoki_vm::accel`). A run that fails,
//! times out or ejects the scheduler is recorded as failed for that
//! scheduler and the harness goes on. Writes `results.md`, `results.json`
//! and `ratios.png` under `target/bench/<time>/` and copies them to
//! `target/bench/latest.*`.
//!
//! `--only shinjuku` is a sweep of its own instead (see `sweep`): the
//! paper's Figure 2, tail latency and a batch job's CPU share over offered
//! load under the default, the fair and the Shinjuku-style scheduler, in
//! one latency boot; `results.{md,json}` and three PNGs, copied to
//! `target/bench/latest-shinjuku*`.
//!
//! `--only locality` is another (see `locality`): the paper's Table 6,
//! enoki-schbench's wakeup latency under the default scheduler, the
//! default on one CPU, and the locality scheduler without and with hints,
//! `--reps` repetitions of the four in one latency boot;
//! `results.{md,json}`, copied to `target/bench/latest-locality.*`.
//!
//! `--only arachne` is another (see `arachne`): the paper's 5.6,
//! enoki-pool's request latency at three loads (`--arachne-rates`) next
//! to a batch job, the default scheduler with all the pool's workers
//! against the Arachne arbiter granting CPUs on demand, `--reps`
//! repetitions in one latency boot; `results.{md,json}` and two PNGs,
//! copied to `target/bench/latest-arachne*`.
//!
//! ```text
//! cargo make bench                       # kernel + rootfs, then 3 reps
//! cargo make bench --reps 5 --scheduler cfifo,fifo,wfq
//! cargo run -p enoki-bench -- --reps 1 --only pipe-1cpu,zstd
//! cargo run -p enoki-bench -- --from target/bench/<time>   # re-render a report
//! cargo run -p enoki-bench -- --only shinjuku --rates 500,1000,2000
//! cargo run -p enoki-bench -- --only locality --reps 5
//! cargo run -p enoki-bench -- --only arachne --arachne-rates 15,60,110
//! ```

mod arachne;
mod arachne_plot;
mod locality;
mod plot;
mod profile;
mod record_overhead;
mod replay;
mod report;
mod stats;
mod sweep;
mod sweep_plot;
mod table;
mod workloads;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;

use arachne::{ArachneConfig, ArachneReport};
use locality::{LocalityConfig, LocalityReport};
use record_overhead::record_overhead;
use report::{Meta, Report, RunRecord, CFIFO, DEFAULT};
use sweep::{SweepConfig, SweepReport};
use table::Table;
use workloads::Workload;

#[derive(Parser, Debug)]
#[command(
    about = "Compare Enoki schedulers with the default scheduler and each other in the same VM boots"
)]
struct Cli {
    /// Repetitions of every workload under each scheduler.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Skip the warm-up repetition (run first, with the same workloads
    /// and order, and left out of every number: the first runs of a boot
    /// pay for cold caches and first-time page faults).
    #[arg(long)]
    no_warmup: bool,
    /// The schedulers compared with the default (`enoki load NAME`), comma
    /// separated; every one runs in every repetition. With cfifo, fifo and
    /// wfq the report also pairs fifo with cfifo (the message path) and
    /// wfq with fifo (the policy).
    #[arg(long, value_delimiter = ',', default_value = "wfq")]
    scheduler: Vec<String>,
    /// Their parameters (`enoki load --args`, given to each), e.g.
    /// period_us=6000.
    #[arg(long)]
    args: Option<String>,
    /// Only these workloads (comma separated; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// Limit for one run of one workload, seconds (then it counts as failed).
    #[arg(long, default_value_t = 120)]
    run_timeout: u64,
    /// Also run every Enoki run again under `enoki record`, to report the
    /// overhead of recording (recorded/unrecorded time, or rate of work
    /// for a workload that runs for a set time, with its interval and the
    /// verdict against 1.3x, and trace bytes per call; in meta.note and on
    /// stdout; not cfifo's runs: it has no messages to record). See
    /// `record_overhead`.
    #[arg(long)]
    record: bool,
    /// Also measure live upgrade in the latency boot: N upgrades of the
    /// last listed scheduler (the one under study, as in cfifo,fifo,wfq)
    /// to itself under enoki-schbench; reports the blackout as a
    /// ratio to a pipe round trip and schbench's p99 before, during and
    /// after (in meta.note and on stdout). See `upgrade_report`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    upgrades: usize,
    /// Offered loads of the shinjuku sweep (`--only shinjuku`), requests/s.
    #[arg(long, value_delimiter = ',', default_values_t = sweep::DEFAULT_RATES)]
    rates: Vec<u32>,
    /// The sweep's Shinjuku-style scheduler (`enoki load NAME`); a scheduler
    /// that does not exist fails only its own points.
    #[arg(long, default_value = "shinjuku")]
    shinjuku_sched: String,
    /// Its parameters (`enoki load --args`). The default slice is 1 ms:
    /// under TCG a switch costs more than the paper's 10 us, which then
    /// only thrashes (README, "Shinjuku"); under KVM pass preempt_us=10.
    #[arg(long, default_value = "preempt_us=1000")]
    shinjuku_args: String,
    /// Requests are generated for this long at each point of the sweep, ms.
    #[arg(long, default_value_t = 3000)]
    sweep_ms: u64,
    /// Seconds enoki-schbench measures in each run of `--only locality`
    /// (after its 1 s warm-up; the paper: 30 s after 5 s).
    #[arg(long, default_value_t = 5)]
    locality_s: u64,
    /// CPU time each enoki-schbench worker burns per wakeup in `--only
    /// locality`, us: co-located workers wait for each other's work, so
    /// the hints pay off only where it is short.
    #[arg(long, default_value_t = locality::DEFAULT_WORK_US)]
    locality_work_us: u64,
    /// The loads of `--only arachne`, requests/s (low, medium, high; at
    /// the default 40 ms of work, 0.6, 2.4 and 4.4 CPUs busy).
    #[arg(long, value_delimiter = ',', default_values_t = arachne::DEFAULT_RATES)]
    arachne_rates: Vec<u32>,
    /// How long each run of `--only arachne` offers its load, ms.
    #[arg(long, default_value_t = arachne::DEFAULT_PHASE_MS)]
    arachne_ms: u64,
    /// CPU time per request in `--only arachne`, us.
    #[arg(long, default_value_t = arachne::DEFAULT_WORK_US)]
    arachne_work_us: u64,
    /// Also profile the guest kernel's instructions on a pipe ping-pong
    /// and on hackbench under the default scheduler and each listed one
    /// (`enoki-tcg-profile`: one more single-threaded TCG boot per
    /// workload, about a minute each); the busiest functions, Enoki's own
    /// first, go into the report.
    #[arg(long)]
    profile: bool,
    /// Output directory (default: <workspace>/target/bench/<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Re-render the report of an earlier run directory (no VM).
    #[arg(long)]
    from: Option<PathBuf>,
}

/// `key value` from the last line of `text` that has it.
fn last_value(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The live-upgrade target: the blackout (median) at most this fraction of
/// a pipe round trip (the paper: 1.5 us against 3 us).
const UPGRADE_TARGET: f64 = 0.3;

/// The live-upgrade measurement (`--upgrades`): blackout against a pipe
/// round trip, and schbench's p99 before, during and after the upgrades.
fn upgrade_report(raw: &Path) -> Vec<String> {
    let read = |name: &str| fs::read_to_string(raw.join(format!("upgrade.{name}")));
    let Ok(blackouts) = read("blackouts") else {
        return Vec::new();
    };
    let ns: Vec<f64> = blackouts
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let failed = read("failed").map_or(0, |f| f.lines().filter(|l| !l.is_empty()).count());
    let mut lines = vec![format!(
        "live upgrade: {} upgrades done, {failed} error lines",
        ns.len()
    )];
    let (Some(med), Some(max)) = (stats::median(&ns), ns.iter().copied().reduce(f64::max)) else {
        return lines;
    };
    let rt_us = read("pipe")
        .ok()
        .and_then(|t| last_value(&t, "usecs_per_op"));
    lines.push(match rt_us {
        Some(rt) => {
            let ratio = med / 1e3 / rt;
            let verdict = if ratio <= UPGRADE_TARGET {
                "met"
            } else {
                "missed"
            };
            format!(
                "live upgrade: blackout median {:.1} us, max {:.1} us; pipe round trip {rt:.1} us; \
                 blackout/round trip {ratio:.2} (target <= {UPGRADE_TARGET}: {verdict})",
                med / 1e3,
                max / 1e3
            )
        }
        None => format!(
            "live upgrade: blackout median {:.1} us, max {:.1} us; no pipe round trip measured",
            med / 1e3,
            max / 1e3
        ),
    });
    let p99 = |name: &str| {
        read(name)
            .ok()
            .and_then(|t| last_value(&t, "p99_us"))
            .map_or("-".into(), |v| format!("{v:.0} us"))
    };
    lines.push(format!(
        "live upgrade: enoki-schbench p99 before {}, during {}, after {}",
        p99("before"),
        p99("during"),
        p99("after")
    ));
    lines
}

/// The wall time in a `.time` file (`start end`, seconds).
fn elapsed(p: &Path) -> Option<f64> {
    let v: Vec<f64> = fs::read_to_string(p)
        .ok()?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 2).then(|| v[1] - v[0])
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run id: `<rep>-<workload>-<sched>`.
fn run_id(rep: usize, w: &str, sched: &str) -> String {
    format!("{rep:02}-{w}-{sched}")
}

/// The order of the runs in repetition `rep` (1-based; 0, the warm-up,
/// takes repetition 2's): the default scheduler and then `scheds`, rotated
/// left by one more every two repetitions and reversed in the even ones.
/// A reversed repetition mirrors every run's position, so over each two
/// repetitions any two schedulers have the same mean position and a drift
/// linear in time cancels from their paired ratios; the rotation puts
/// each one first in turn. With one scheduler: A B, B A, B A, A B, ...
fn order(rep: usize, scheds: &[String]) -> Vec<&str> {
    let mut all: Vec<&str> = std::iter::once(DEFAULT)
        .chain(scheds.iter().map(String::as_str))
        .collect();
    let n = all.len();
    all.rotate_left(rep.saturating_sub(1) / 2 % n);
    if rep.is_multiple_of(2) {
        all.reverse();
    }
    all
}

/// The scheduler `--upgrades` upgrades: the last listed, the one under
/// study when the list goes from baseline to it (cfifo,fifo,wfq).
fn upgraded(cli: &Cli) -> &str {
    cli.scheduler.last().map_or("wfq", String::as_str)
}

/// Checks `--scheduler`: at least one, each a scheduler name (letters,
/// digits, `_`, `-`: it goes into file names and the guest's shell) once,
/// none `default`; and that `--upgrades` has a scheduler that upgrades.
fn check_schedulers(cli: &Cli) -> Result<()> {
    let s = &cli.scheduler;
    if s.is_empty() {
        bail!("--scheduler needs at least one scheduler");
    }
    for (i, name) in s.iter().enumerate() {
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if name.is_empty() || !valid || name == DEFAULT {
            bail!("--scheduler: {name:?} is not a scheduler name");
        }
        if s[..i].contains(name) {
            bail!("--scheduler: {name} is listed twice");
        }
    }
    if cli.upgrades > 0 && upgraded(cli) == CFIFO {
        bail!("--upgrades upgrades the last listed scheduler, and cfifo cannot be upgraded");
    }
    Ok(())
}

/// The script the guest runs (`bench/src/guest.sh`): its parameters come
/// from the environment ([`guest_env`]), what it runs from a run list
/// ([`run_list`]).
const GUEST_SCRIPT: &str = include_str!("guest.sh");

/// The guest script's parameters, as environment variables.
fn guest_env(cli: &Cli, raw: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("BENCH_RAW", raw.display().to_string()),
        ("BENCH_SCHED", upgraded(cli).into()),
        ("BENCH_ARGS", cli.args.clone().unwrap_or_default()),
        ("BENCH_TIMEOUT", cli.run_timeout.to_string()),
        ("BENCH_RECORD", u8::from(cli.record).to_string()),
        ("BENCH_SCHBENCH_WORK", workloads::SCHBENCH_WORK.into()),
    ]
}

/// The shell command that runs `script` on the run list `runs` with `env`.
fn guest_command(env: &[(&str, String)], script: &Path, runs: &Path) -> String {
    let mut cmd = String::from("env");
    for (name, value) in env {
        let _ = write!(cmd, " {name}={}", shell_quote(value));
    }
    let path = |p: &Path| shell_quote(&p.display().to_string());
    let _ = write!(cmd, " bash {} {}", path(script), path(runs));
    cmd
}

/// Warm-up repetitions (0 or 1): repetition 0, whose runs no number uses.
fn warmups(cli: &Cli) -> usize {
    usize::from(!cli.no_warmup)
}

/// How many runs the run list has, warm-up included.
fn total_runs(cli: &Cli, ws: &[Workload]) -> usize {
    (cli.reps + warmups(cli)) * ws.len() * (1 + cli.scheduler.len())
}

/// The run list: the setup, then every (rep, workload, scheduler) run,
/// the warm-up repetition first.
fn run_list(cli: &Cli, ws: &[Workload]) -> String {
    let mut s = format!("bench_setup {}\n", shell_quote(workloads::SETUP));
    let total = total_runs(cli, ws);
    let mut n = 0;
    for rep in 1 - warmups(cli)..=cli.reps {
        for w in ws {
            for sched in order(rep, &cli.scheduler) {
                n += 1;
                let label = match rep {
                    0 => format!("[{n}/{total}] warm-up {} under {sched}", w.name),
                    _ => format!(
                        "[{n}/{total}] rep {rep}/{} {} under {sched}",
                        cli.reps, w.name
                    ),
                };
                let _ = writeln!(
                    s,
                    "{}bench_run {} {sched} {} {}",
                    record_env(cli, rep, sched),
                    run_id(rep, w.name, sched),
                    shell_quote(&label),
                    shell_quote(w.cmd)
                );
            }
        }
    }
    s
}

/// The run's `--record` settings, as a prefix to its run-list line: the
/// warm-up's recorded run is not used, and cfifo has nothing to record;
/// the others alternate recorded and plain order.
fn record_env(cli: &Cli, rep: usize, sched: &str) -> &'static str {
    let skip = rep == 0 || sched == CFIFO;
    match (cli.record, skip, rep % 2) {
        (true, true, _) => "BENCH_RECORD=0 ",
        (true, false, 0) => "BENCH_RECORD_FIRST=1 ",
        _ => "",
    }
}

/// Reads the runs under the default scheduler and `scheds` back from the
/// raw directory; missing ones are `not run`.
fn collect(ws: &[Workload], reps: usize, raw: &Path, scheds: &[String]) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for rep in 1..=reps {
        for w in ws {
            for sched in std::iter::once(DEFAULT).chain(scheds.iter().map(String::as_str)) {
                let id = run_id(rep, w.name, sched);
                let read = |ext: &str| fs::read_to_string(raw.join(format!("{id}.{ext}"))).ok();
                let mut status = read("status")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|| "not run (VM ended)".into());
                let output = read("out").unwrap_or_default();
                let elapsed_s = elapsed(&raw.join(format!("{id}.time")));
                let mut metrics = std::collections::BTreeMap::new();
                if status == "ok" {
                    for m in &w.metrics {
                        match m.parse(&output) {
                            Some(v) => {
                                metrics.insert(m.name.to_string(), v);
                            }
                            None => status = format!("no '{}' in its output", m.name),
                        }
                    }
                }
                runs.push(RunRecord {
                    workload: w.name.into(),
                    sched: sched.into(),
                    rep,
                    status,
                    elapsed_s,
                    metrics,
                });
            }
        }
    }
    runs
}

fn selected(only: &[String]) -> Result<Vec<Workload>> {
    let all = workloads::all();
    for o in only {
        if !all.iter().any(|w| w.name == o) {
            bail!("unknown workload {o:?}; --list shows them");
        }
    }
    Ok(all
        .into_iter()
        .filter(|w| only.is_empty() || only.iter().any(|o| o == w.name))
        .collect())
}

fn now_stamp() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%Y%m%d-%H%M%S|%Y-%m-%d %H:%M UTC",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    match out.trim().split_once('|') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (secs.to_string(), format!("unix time {secs}")),
    }
}

/// Writes results.{json,md} and ratios.png into `dir` and copies them to
/// `latest.*` beside it.
fn write_outputs(dir: &Path, rep: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(rep)?;
    let md = report::markdown(rep);
    fs::write(dir.join("results.json"), &json)?;
    fs::write(dir.join("results.md"), &md)?;
    plot::ratios_png(&dir.join("ratios.png"), rep)?;
    if let Some(parent) = dir.parent() {
        fs::write(parent.join("latest.json"), &json)?;
        fs::write(parent.join("latest.md"), &md)?;
        fs::copy(dir.join("ratios.png"), parent.join("latest.png"))?;
    }
    println!("\n{md}");
    println!(
        "bench: wrote {}/results.{{md,json}} and ratios.png (also target/bench/latest.*)",
        dir.display()
    );
    Ok(())
}

/// `--from`: the report of an earlier run directory, rendered again.
fn rerender(dir: &Path) -> Result<()> {
    let text = fs::read_to_string(dir.join("results.json")).context("results.json")?;
    if let Some(done) = ArachneReport::rerender(&text, dir) {
        return done;
    }
    if let Some(done) = LocalityReport::rerender(&text, dir) {
        return done;
    }
    if let Ok(old) = serde_json::from_str::<SweepReport>(&text) {
        if old.kind == sweep::KIND {
            let points = sweep::collect(&old.config, &dir.join("raw"));
            return write_sweep_outputs(dir, &SweepReport { points, ..old });
        }
    }
    let old: Stored = serde_json::from_str(&text)?;
    let ws: Vec<Workload> = workloads::all()
        .into_iter()
        .filter(|w| old.runs.iter().any(|r| r.workload == w.name))
        .collect();
    let (schedulers, runs) = old.collect_again(&ws, &dir.join("raw"));
    write_outputs(dir, &Report::new(old.meta, schedulers, &ws, runs))
}

/// What `--from` reads back of an A/B report's results.json; the rest is
/// computed again from the raw files.
#[derive(serde::Deserialize)]
struct Stored {
    meta: Meta,
    /// None in reports from before `--scheduler` took a list: their one
    /// scheduler is `meta.scheduler`, its raw files named `-enoki`.
    #[serde(default)]
    schedulers: Vec<String>,
    runs: Vec<RunRecord>,
}

impl Stored {
    /// The schedulers, and the runs of `ws` read from `raw` again.
    fn collect_again(&self, ws: &[Workload], raw: &Path) -> (Vec<String>, Vec<RunRecord>) {
        let reps = self.meta.reps;
        if !self.schedulers.is_empty() {
            return (
                self.schedulers.clone(),
                collect(ws, reps, raw, &self.schedulers),
            );
        }
        let mut runs = collect(ws, reps, raw, &["enoki".into()]);
        for r in runs.iter_mut().filter(|r| r.sched == "enoki") {
            r.sched = self.meta.scheduler.clone();
        }
        (vec![self.meta.scheduler.clone()], runs)
    }
}

/// Writes the sweep's results.{json,md} and charts into `dir` and copies
/// them to `latest-shinjuku*` beside it (apart from the A/B `latest.*`,
/// whose format differs).
fn write_sweep_outputs(dir: &Path, rep: &SweepReport) -> Result<()> {
    let json = serde_json::to_string_pretty(rep)?;
    let md = sweep::markdown(rep);
    fs::write(dir.join("results.json"), &json)?;
    fs::write(dir.join("results.md"), &md)?;
    let pngs = sweep_plot::sweep_pngs(dir, rep)?;
    if let Some(parent) = dir.parent() {
        fs::write(parent.join("latest-shinjuku.json"), &json)?;
        fs::write(parent.join("latest-shinjuku.md"), &md)?;
        for (png, name) in pngs.iter().zip(sweep_plot::FILES) {
            fs::copy(png, parent.join(format!("latest-shinjuku-{name}")))?;
        }
    }
    println!("\n{md}");
    println!(
        "bench: wrote {}/results.{{md,json}} and {} (also target/bench/latest-shinjuku*)",
        dir.display(),
        sweep_plot::FILES.join(", ")
    );
    Ok(())
}

/// The rates of `option`, ascending, each once; an error if there are
/// none or one is 0.
fn ascending_rates(rates: &[u32], option: &str) -> Result<Vec<u32>> {
    let mut rates = rates.to_vec();
    rates.sort_unstable();
    rates.dedup();
    if rates.is_empty() || rates.contains(&0) {
        bail!("{option} needs positive rates (requests/s)");
    }
    Ok(rates)
}

/// The sweep's settings from the command line: `--rates` ascending, the
/// fair scheduler from `--scheduler` (one) and `--args`.
fn sweep_config(cli: &Cli) -> Result<SweepConfig> {
    let rates = ascending_rates(&cli.rates, "--rates")?;
    let [fair] = cli.scheduler.as_slice() else {
        bail!("--only shinjuku takes one --scheduler, its fair scheduler");
    };
    Ok(SweepConfig {
        rates,
        duration_ms: cli.sweep_ms,
        fair: (fair.clone(), cli.args.clone().unwrap_or_default()),
        shinjuku: (cli.shinjuku_sched.clone(), cli.shinjuku_args.clone()),
    })
}

/// `--only shinjuku`: the sweep, in one latency boot (wakeups and tail
/// latency, like pipe and schbench).
fn run_sweep(cli: &Cli) -> Result<()> {
    let cfg = sweep_config(cli)?;
    let what = format!(
        "shinjuku sweep, {} rates x {} series (default, enoki {}, enoki {})",
        cfg.rates.len(),
        sweep::SERIES.len(),
        cfg.fair.0,
        cfg.shinjuku.0
    );
    let (d, mut meta) = latency_boot(
        cli,
        (cfg.run_list(), cfg.runs()),
        what,
        sweep::NAME,
        (&cfg.shinjuku.0, &cfg.shinjuku.1),
    )?;
    meta.reps = 1;
    let report = SweepReport {
        kind: sweep::KIND.into(),
        meta,
        points: sweep::collect(&cfg, &d.raw),
        config: cfg,
    };
    write_sweep_outputs(&d.dir, &report)?;
    println!("bench: VM time {:.0} s", report.meta.vm_seconds);
    Ok(())
}

/// The locality table's settings from the command line.
fn locality_config(cli: &Cli) -> Result<LocalityConfig> {
    if cli.locality_s == 0 {
        bail!("--locality-s needs at least 1 s");
    }
    Ok(LocalityConfig {
        reps: cli.reps,
        warmup: warmups(cli),
        runtime_s: cli.locality_s,
        work_us: cli.locality_work_us,
    })
}

/// The Arachne table's settings from the command line: the loads
/// ascending.
fn arachne_config(cli: &Cli) -> Result<ArachneConfig> {
    let rates = ascending_rates(&cli.arachne_rates, "--arachne-rates")?;
    if cli.arachne_ms == 0 || cli.arachne_work_us == 0 {
        bail!("--arachne-ms and --arachne-work-us need to be positive");
    }
    Ok(ArachneConfig {
        reps: cli.reps,
        warmup: warmups(cli),
        rates,
        phase_ms: cli.arachne_ms,
        work_us: cli.arachne_work_us,
    })
}

/// One latency boot (wakeups and tail latency, like pipe and schbench)
/// of a benchmark of its own, `name`: runs its run list (with `runs`
/// runs; `what` says what they are), returns its run directory and the
/// report's meta, naming `scheduler` and its arguments.
fn latency_boot(
    cli: &Cli,
    (list, runs): (String, usize),
    what: String,
    name: &'static str,
    scheduler: (&str, &str),
) -> Result<(RunDir, Meta)> {
    let (stamp, date) = now_stamp();
    let d = RunDir::create(cli, &stamp)?;
    let plan = Plan {
        purpose: enoki_vm::Purpose::Latency,
        list,
        runs: runs as u64,
        extra_s: 60,
        what,
        workloads: vec![name],
    };
    let boots = [boot(cli, plan, &d)?];
    let meta = Meta {
        scheduler: scheduler.0.into(),
        scheduler_args: scheduler.1.into(),
        ..meta(cli, &[], &d.raw, date, &boots)
    };
    Ok((d, meta))
}

/// A repeated table (`--only locality`, `--only arachne`) in one latency
/// boot (wakeups and request latency); fails if the scheduler was ejected
/// in a run.
fn run_table<C: Table>(cli: &Cli, cfg: C) -> Result<()> {
    let what = format!(
        "{} table, {} reps{} x {}",
        C::NAME,
        cli.reps,
        if warmups(cli) == 0 {
            ""
        } else {
            " (+1 warm-up)"
        },
        cfg.what()
    );
    let (d, meta) = latency_boot(cli, (cfg.run_list(), cfg.runs()), what, C::NAME, C::SCHED)?;
    let vm_seconds = meta.vm_seconds;
    let report = table::Report::new(meta, cfg, &d.raw);
    C::write(&d.dir, &report)?;
    println!("bench: VM time {vm_seconds:.0} s");
    fail_if_ejected(&report.ejections())
}

/// `--only replay`: record in one VM boot, replay on the host.
fn run_replay(cli: &Cli) -> Result<()> {
    let (stamp, _) = now_stamp();
    let d = RunDir::create(cli, &stamp)?;
    let boot = |cmd: &str| {
        let vm = enoki_vm::VmConfig::new()?
            .timeout(Duration::from_secs(900))
            .echo_output(true)
            .build()?;
        println!(
            "bench: replay: recording fifo and wfq in one VM ({}); traces in {}",
            vm.accel(),
            d.raw.display()
        );
        let started = Instant::now();
        let out = vm.run(cmd)?;
        let problems = out.problems();
        if !problems.is_empty() {
            eprintln!(
                "bench: replay: kernel log problems while recording (serial log {})",
                out.serial_log.display()
            );
        }
        Ok(replay::Recorded {
            took: started.elapsed(),
            problems,
        })
    };
    let md = replay::run(cli.reps, &d.dir, &d.raw, boot)?;
    println!("bench: replay report in {}", md.display());
    Ok(())
}

/// Where one benchmark run keeps its files.
struct RunDir {
    dir: PathBuf,
    /// Every run's raw output.
    raw: PathBuf,
    script: PathBuf,
}

impl RunDir {
    /// Creates the directory (`--out`, else `target/bench/<stamp>`) with the
    /// guest script in it.
    fn create(cli: &Cli, stamp: &str) -> Result<Self> {
        let dir = match &cli.out {
            Some(d) => d.clone(),
            None => enoki_vm::find_root()?.join("target/bench").join(stamp),
        };
        let raw = dir.join("raw");
        fs::create_dir_all(&raw).with_context(|| raw.display().to_string())?;
        let dir = dir.canonicalize()?;
        let d = RunDir {
            raw: dir.join("raw"),
            script: dir.join("guest.sh"),
            dir,
        };
        fs::write(&d.script, GUEST_SCRIPT)?;
        Ok(d)
    }
}

/// One VM boot: the workloads of one purpose and what the boot did.
struct Boot {
    purpose: enoki_vm::Purpose,
    workloads: Vec<&'static str>,
    out: enoki_vm::Outcome,
    seconds: f64,
}

/// The workloads grouped by purpose, latency first, in their given order.
fn by_purpose(ws: &[Workload]) -> Vec<(enoki_vm::Purpose, Vec<Workload>)> {
    [enoki_vm::Purpose::Latency, enoki_vm::Purpose::Throughput]
        .into_iter()
        .map(|p| {
            (
                p,
                ws.iter()
                    .filter(|w| w.purpose() == p)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, group)| !group.is_empty())
        .collect()
}

/// What one VM boot runs.
struct Plan {
    purpose: enoki_vm::Purpose,
    /// The run list for the guest script, and how many runs it has.
    list: String,
    runs: u64,
    /// Time for work besides the runs (live upgrades), seconds.
    extra_s: u64,
    /// For the progress line: what the runs are.
    what: String,
    workloads: Vec<&'static str>,
}

/// Boots one VM for `purpose` and runs the guest script on `ws` in it.
fn run_vm(cli: &Cli, purpose: enoki_vm::Purpose, ws: &[Workload], d: &RunDir) -> Result<Boot> {
    let mut list = run_list(cli, ws);
    // Upgrades disturb latency the most: measured where latency is.
    let upgrades = if purpose == enoki_vm::Purpose::Latency {
        cli.upgrades
    } else {
        0
    };
    if upgrades > 0 {
        let _ = writeln!(list, "bench_upgrades {upgrades}");
    }
    let plan = Plan {
        purpose,
        list,
        runs: total_runs(cli, ws) as u64,
        extra_s: 60 + 10 * upgrades as u64,
        what: format!(
            "{} workloads x {} reps{} x {} schedulers (default, {})",
            ws.len(),
            cli.reps,
            if warmups(cli) == 0 {
                ""
            } else {
                " (+1 warm-up)"
            },
            1 + cli.scheduler.len(),
            cli.scheduler.join(", ")
        ),
        workloads: ws.iter().map(|w| w.name).collect(),
    };
    boot(cli, plan, d)
}

/// Boots one VM that runs the guest script on `plan`'s run list.
fn boot(cli: &Cli, plan: Plan, d: &RunDir) -> Result<Boot> {
    let purpose = plan.purpose;
    let runs = d.dir.join(format!("runs-{purpose}.sh"));
    fs::write(&runs, &plan.list)?;
    let vm_timeout = Duration::from_secs(600 + plan.runs * (cli.run_timeout + 15) + plan.extra_s);
    let vm = enoki_vm::VmConfig::new()?
        .purpose(purpose)
        .timeout(vm_timeout)
        .echo_output(true)
        .build()?;
    println!(
        "bench: {purpose}: {} in one VM ({}); raw output in {}",
        plan.what,
        vm.accel(),
        d.raw.display()
    );
    let started = Instant::now();
    let out = vm.run(&guest_command(&guest_env(cli, &d.raw), &d.script, &runs))?;
    let seconds = started.elapsed().as_secs_f64();
    let problems = out.problems();
    if !problems.is_empty() {
        eprintln!(
            "bench: kernel log problems (serial log {}):",
            out.serial_log.display()
        );
        for p in &problems {
            eprintln!("  {p}");
        }
    }
    Ok(Boot {
        purpose,
        workloads: plan.workloads,
        out,
        seconds,
    })
}

/// `purpose: value` for every boot, joined with "; ".
fn per_boot(boots: &[Boot], value: impl Fn(&Boot) -> String) -> String {
    let parts: Vec<String> = boots
        .iter()
        .map(|b| format!("{}: {}", b.purpose, value(b)))
        .collect();
    parts.join("; ")
}

/// The report's facts about the run.
fn meta(cli: &Cli, ws: &[Workload], raw: &Path, date: String, boots: &[Boot]) -> Meta {
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Meta {
        date,
        reps: cli.reps,
        scheduler: cli.scheduler.join(","),
        scheduler_args: cli.args.clone().unwrap_or_default(),
        accel: per_boot(boots, |b| {
            format!("{} ({})", b.out.accel, b.workloads.join(", "))
        }),
        vm: format!(
            "8 vCPUs, 2 NUMA nodes, on a {host_cpus}-CPU host; {}",
            per_boot(boots, |b| b.out.accel.to_string())
        ),
        host_cpus,
        vm_seconds: boots.iter().map(|b| b.seconds).sum(),
        vm_exit: per_boot(boots, |b| {
            b.out
                .failure()
                .unwrap_or_else(|| format!("exit {}", b.out.exit_code.unwrap_or(-1)))
        }),
        kernel_log_problems: boots.iter().flat_map(|b| b.out.problems()).collect(),
        record: cli.record,
        warmup: warmups(cli),
        note: {
            let mut note = Vec::new();
            if cli.record {
                note.extend(record_overhead(ws, cli.reps, raw, &cli.scheduler));
            }
            if cli.upgrades > 0 {
                note.extend(upgrade_report(raw));
            }
            note.join("\n")
        },
    }
}

/// Whether `--only` asks for `name`, a benchmark of its own; an error if
/// other workloads, `--record` or `--upgrades` come with it.
fn runs_alone(cli: &Cli, name: &str) -> Result<bool> {
    if !cli.only.iter().any(|o| o == name) {
        return Ok(false);
    }
    if cli.only.len() > 1 || cli.record || cli.upgrades > 0 {
        bail!("--only {name} is a benchmark of its own, without other workloads, --record or --upgrades");
    }
    Ok(true)
}

/// The command line without the `--` that `cargo make bench -- ARGS`
/// passes on (cargo-make hands the task every argument after its name):
/// enoki-bench takes no positional arguments, so a leading `--` means
/// nothing.
fn cli_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "--") {
        args.remove(1);
    }
    args
}

fn main() -> Result<()> {
    let cli = Cli::parse_from(cli_args(std::env::args_os()));
    if cli.list {
        for w in workloads::all() {
            println!("{:<16} {}", w.name, w.what);
        }
        println!("{:<16} {}", sweep::NAME, sweep::WHAT);
        println!("{:<16} {}", locality::NAME, locality::WHAT);
        println!("{:<16} {}", arachne::NAME, arachne::WHAT);
        println!("{:<16} {}", replay::NAME, replay::WHAT);
        return Ok(());
    }
    if let Some(dir) = &cli.from {
        return rerender(dir);
    }
    check_schedulers(&cli)?;
    if runs_alone(&cli, sweep::NAME)? {
        return run_sweep(&cli);
    }
    if cli.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if runs_alone(&cli, replay::NAME)? {
        return run_replay(&cli);
    }
    if runs_alone(&cli, locality::NAME)? {
        return run_table(&cli, locality_config(&cli)?);
    }
    if runs_alone(&cli, arachne::NAME)? {
        return run_table(&cli, arachne_config(&cli)?);
    }
    let ws = selected(&cli.only)?;
    let (stamp, date) = now_stamp();
    let d = RunDir::create(&cli, &stamp)?;
    let boots = by_purpose(&ws)
        .into_iter()
        .map(|(purpose, group)| run_vm(&cli, purpose, &group, &d))
        .collect::<Result<Vec<_>>>()?;
    let runs = collect(&ws, cli.reps, &d.raw, &cli.scheduler);
    let ejected = ejections(&runs);
    let meta = meta(&cli, &ws, &d.raw, date, &boots);
    let vm_seconds = meta.vm_seconds;
    for l in meta.note.lines() {
        println!("bench: {l}");
    }
    let mut report = Report::new(meta, cli.scheduler.clone(), &ws, runs);
    // A failed profile leaves the measured runs reported, then fails.
    let profile_error = match cli.profile {
        true => profile::run(&d.dir, &cli.scheduler)
            .map(|profiles| report.profiles = profiles)
            .err(),
        false => None,
    };
    write_outputs(&d.dir, &report)?;
    println!("bench: VM time {vm_seconds:.0} s");
    fail_if_ejected(&ejected)?;
    profile_error.map_or(Ok(()), Err)
}

/// An error naming the runs whose scheduler was ejected (`ejected`), if
/// any: the report is written, but its numbers are not the scheduler's.
fn fail_if_ejected(ejected: &[String]) -> Result<()> {
    if !ejected.is_empty() {
        bail!(
            "the scheduler was ejected in {} run(s), so its numbers are not the scheduler's: {}",
            ejected.len(),
            ejected.join("; ")
        );
    }
    Ok(())
}

/// The runs whose scheduler was ejected, named.
fn ejections(runs: &[RunRecord]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.status.starts_with("ejected"))
        .map(|r| {
            format!(
                "{} rep {} under {}: {}",
                r.workload, r.rep, r.sched, r.status
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--scheduler`'s default.
    fn wfq() -> Vec<String> {
        vec!["wfq".into()]
    }

    #[test]
    fn latency_and_throughput_workloads_get_their_own_boot() {
        use enoki_vm::Purpose;
        let groups = by_purpose(&workloads::all());
        let names = |p: Purpose| -> Vec<&str> {
            groups
                .iter()
                .filter(|(q, _)| *q == p)
                .flat_map(|(_, g)| g.iter().map(|w| w.name))
                .collect()
        };
        let latency = names(Purpose::Latency);
        let throughput = names(Purpose::Throughput);
        assert!(
            latency.contains(&"pipe-2cpu") && latency.contains(&"schbench-2x2"),
            "{latency:?}"
        );
        assert!(
            throughput.contains(&"hackbench") && throughput.contains(&"zstd"),
            "{throughput:?}"
        );
        assert_eq!(latency.len() + throughput.len(), workloads::all().len());
        let only_apps = by_purpose(&selected(&["zstd".to_owned()]).unwrap());
        assert_eq!(only_apps.len(), 1, "no boot for a purpose with no workload");
    }

    #[test]
    fn script_interleaves_and_alternates_the_order() {
        let cli = Cli::parse_from([
            "enoki-bench",
            "--reps",
            "2",
            "--no-warmup",
            "--only",
            "hackbench,zstd",
        ]);
        let ws = selected(&cli.only).unwrap();
        let s = run_list(&cli, &ws);
        let runs: Vec<&str> = s.lines().filter(|l| l.starts_with("bench_run ")).collect();
        let ids: Vec<&str> = runs
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "01-hackbench-default",
                "01-hackbench-wfq",
                "01-zstd-default",
                "01-zstd-wfq",
                "02-hackbench-wfq",
                "02-hackbench-default",
                "02-zstd-wfq",
                "02-zstd-default"
            ]
        );
        assert!(
            runs[0].contains("'[1/8] rep 1/2 hackbench under default'"),
            "{}",
            runs[0]
        );
        let env = guest_env(&cli, Path::new("/x/raw"));
        assert!(env.contains(&("BENCH_SCHED", "wfq".into())), "{env:?}");
        assert!(GUEST_SCRIPT.contains("enoki load \"$1\""));
        let rec = guest_env(
            &Cli::parse_from(["enoki-bench", "--record"]),
            Path::new("/x"),
        );
        assert!(rec.contains(&("BENCH_RECORD", "1".into())), "{rec:?}");
        assert!(rec.contains(&("BENCH_TIMEOUT", "120".into())), "{rec:?}");
        assert!(GUEST_SCRIPT.contains(
            "enoki record -o /tmp/x.enk -- timeout -k 5 \"$BENCH_TIMEOUT\" bash -c \"$cmd\""
        ));
        assert!(GUEST_SCRIPT.contains("record_begin \"$id\" \"$RAW\" \"$cmd\""));
        assert!(GUEST_SCRIPT.contains("record_end \"$id\" \"$RAW\" \"$cmd\""));
    }

    /// Runs the guest script with bash on the host, with `list` as its run
    /// list; returns the temporary directory, the raw-output directory in
    /// it and the script's output.
    fn run_guest_script(
        list: &[&str],
        cli: &Cli,
    ) -> (tempfile::TempDir, PathBuf, std::process::Output) {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        fs::create_dir(&raw).unwrap();
        let script = dir.path().join("guest.sh");
        fs::write(&script, GUEST_SCRIPT).unwrap();
        let runs = dir.path().join("runs.sh");
        fs::write(&runs, list.join("\n")).unwrap();
        let cmd = guest_command(&guest_env(cli, &raw), &script, &runs);
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .unwrap();
        (dir, raw, out)
    }

    /// The guest script's record hooks with a fake `enoki`: the recorded
    /// run comes first only where BENCH_RECORD_FIRST=1, and never where
    /// BENCH_RECORD=0.
    #[test]
    fn guest_script_records_once_per_run_before_or_after_it() {
        let list = [
            "enoki() { echo recorded >>\"$RAW/calls\"; }",
            "record_begin after \"$RAW\" true",
            "echo after-ran >>\"$RAW/calls\"",
            "record_end after \"$RAW\" true",
            "BENCH_RECORD_FIRST=1 record_begin before \"$RAW\" true",
            "echo before-ran >>\"$RAW/calls\"",
            "BENCH_RECORD_FIRST=1 record_end before \"$RAW\" true",
            "BENCH_RECORD=0 record_end never \"$RAW\" true",
        ];
        let (_dir, raw, out) =
            run_guest_script(&list, &Cli::parse_from(["enoki-bench", "--record"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = fs::read_to_string(raw.join("calls")).unwrap();
        assert_eq!(calls, "after-ran\nrecorded\nrecorded\nbefore-ran\n");
        for (id, recorded) in [("after", true), ("before", true), ("never", false)] {
            assert_eq!(
                raw.join(format!("{id}.rec.time")).exists(),
                recorded,
                "{id}"
            );
        }
    }

    /// The default-scheduler runs only (an Enoki run needs the kernel's
    /// /sys/kernel/enoki).
    #[test]
    fn guest_script_runs_the_list_and_writes_what_collect_reads() {
        let list = [
            "bench_setup 'echo setup > \"$BENCH_RAW/setup\"'",
            "bench_run 01-hackbench-default default 'a label' 'echo \"Time: 2.5\"'",
            "bench_run 02-hackbench-default default 'failing' 'exit 3'",
        ];
        let cli = Cli::parse_from(["enoki-bench", "--run-timeout", "30"]);
        let (_dir, raw, out) = run_guest_script(&list, &cli);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("bench: a label ... ok ("), "{stdout}");
        assert!(stdout.ends_with("bench: all runs done\n"), "{stdout}");
        assert_eq!(fs::read_to_string(raw.join("setup")).unwrap(), "setup\n");
        let ws = selected(&["hackbench".into()]).unwrap();
        let got = collect(&ws, 2, &raw, &wfq());
        assert_eq!(got[0].status, "ok");
        assert_eq!(got[0].metrics["time"], 2.5);
        assert!(got[0].elapsed_s.is_some());
        assert_eq!(got[2].status, "exit 3");
    }

    #[test]
    fn a_warm_up_repetition_runs_first_and_no_number_uses_it() {
        let cli = Cli::parse_from(["enoki-bench", "--reps", "2", "--only", "hackbench"]);
        let ws = selected(&cli.only).unwrap();
        let s = run_list(&cli, &ws);
        let runs: Vec<&str> = s.lines().filter(|l| l.starts_with("bench_run ")).collect();
        assert_eq!(runs.len(), 6);
        assert_eq!(total_runs(&cli, &ws), 6);
        assert!(
            runs[0].contains("'[1/6] warm-up hackbench under "),
            "{}",
            runs[0]
        );
        assert!(runs[..2].iter().all(|r| r.starts_with("bench_run 00-")));
        assert!(runs[2].starts_with("bench_run 01-hackbench-default"));
        // Only the warm-up ran: every counted run is missing.
        let raw = tempfile::tempdir().unwrap();
        for sched in ["default", "wfq"] {
            let id = run_id(0, "hackbench", sched);
            fs::write(raw.path().join(format!("{id}.status")), "ok\n").unwrap();
            fs::write(raw.path().join(format!("{id}.out")), "Time: 1.0\n").unwrap();
        }
        let got = collect(&ws, cli.reps, raw.path(), &cli.scheduler);
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|r| r.status.starts_with("not run")));
    }

    #[test]
    fn record_records_every_workload_but_the_warm_up_and_alternates_order() {
        let ws = selected(&["hackbench".into(), "stress-cpu".into()]).unwrap();
        let list = |args: &[&str]| {
            let cli = Cli::parse_from([&["enoki-bench"], args].concat());
            run_list(&cli, &ws)
        };
        let recorded = list(&["--record", "--reps", "2"]);
        let runs: Vec<&str> = recorded.lines().skip(1).collect();
        assert_eq!(runs.len(), 12);
        for r in runs {
            let (env, rest) = r.split_once("bench_run ").unwrap();
            let id = rest.split_whitespace().next().unwrap();
            let want = if id.starts_with("00-") {
                "BENCH_RECORD=0 "
            } else if id.starts_with("02-") {
                "BENCH_RECORD_FIRST=1 "
            } else {
                ""
            };
            assert_eq!(env, want, "{r}");
        }
        assert!(!list(&["--reps", "2"]).contains("BENCH_RECORD"));
        // The guest script's record_end does nothing under that prefix.
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(
                "BENCH_RECORD=1; f() { [ \"$BENCH_RECORD\" = 1 ] && echo recorded; }; \
                 BENCH_RECORD=0 f; f",
            )
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "recorded\n");
    }

    #[test]
    fn upgrade_report_sets_the_blackout_against_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(upgrade_report(dir.path()).is_empty(), "nothing measured");
        let w =
            |name: &str, s: &str| fs::write(dir.path().join(format!("upgrade.{name}")), s).unwrap();
        w("blackouts", "3000\n1000\n2000\n9000\n");
        w("pipe", "loops 20000\nusecs_per_op 10.000\n");
        w("before", "p50_us 10\np99_us 40\n");
        w("during", "p99_us 900\n");
        let lines = upgrade_report(dir.path());
        assert_eq!(lines[0], "live upgrade: 4 upgrades done, 0 error lines");
        assert_eq!(
            lines[1],
            "live upgrade: blackout median 2.5 us, max 9.0 us; pipe round trip 10.0 us; \
             blackout/round trip 0.25 (target <= 0.3: met)"
        );
        assert_eq!(
            lines[2],
            "live upgrade: enoki-schbench p99 before 40 us, during 900 us, after -"
        );
        w("pipe", "usecs_per_op 5.0\n");
        assert!(upgrade_report(dir.path())[1].ends_with("0.50 (target <= 0.3: missed)"));
    }

    #[test]
    fn collect_marks_failures_and_missing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ws = selected(&["hackbench".into()]).unwrap();
        let w = |id: &str, ext: &str, s: &str| {
            fs::write(dir.path().join(format!("{id}.{ext}")), s).unwrap()
        };
        w("01-hackbench-default", "status", "ok\n");
        w("01-hackbench-default", "out", "Time: 2.5\n");
        w("01-hackbench-default", "time", "100.0 102.5\n");
        w(
            "01-hackbench-wfq",
            "status",
            "ejected: runnable task stall\n",
        );
        w("01-hackbench-wfq", "out", "Time: 2.5\n");
        let runs = collect(&ws, 2, dir.path(), &wfq());
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[0].metrics["time"], 2.5);
        assert_eq!(runs[0].elapsed_s, Some(2.5));
        assert_eq!(runs[1].status, "ejected: runnable task stall");
        let named = ejections(&runs);
        assert_eq!(named.len(), 1, "{named:?}");
        assert!(
            named[0].ends_with(": ejected: runnable task stall"),
            "{named:?}"
        );
        assert!(
            runs[1].metrics.is_empty(),
            "a failed run's numbers are not used"
        );
        assert!(runs[2].status.starts_with("not run"));
    }

    #[test]
    fn sweep_options_make_the_config() {
        let cli = Cli::parse_from(["enoki-bench", "--only", "shinjuku"]);
        let cfg = sweep_config(&cli).unwrap();
        assert_eq!(cfg.rates, sweep::DEFAULT_RATES);
        assert_eq!(cfg.fair, ("wfq".into(), String::new()));
        assert_eq!(
            cfg.shinjuku,
            ("shinjuku".into(), "preempt_us=1000".into()),
            "a slice that does not thrash under TCG"
        );
        let cli = Cli::parse_from([
            "enoki-bench",
            "--rates",
            "2000,500,500",
            "--shinjuku-sched",
            "sj2",
            "--shinjuku-args",
            "preempt_us=10",
            "--sweep-ms",
            "1000",
        ]);
        let cfg = sweep_config(&cli).unwrap();
        assert_eq!(cfg.rates, [500, 2000], "ascending, once each");
        assert_eq!(cfg.shinjuku, ("sj2".into(), "preempt_us=10".into()));
        assert_eq!(cfg.duration_ms, 1000);
        assert!(sweep_config(&Cli::parse_from(["enoki-bench", "--rates", "0,5"])).is_err());
    }

    /// Runs `sweep_run` lines with the guest script on the host, with a
    /// fake `enoki` whose `status` shows `scheduler` as the loaded one.
    fn run_sweep_script(scheduler: &str, list: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, bin) = (dir.path().join("raw"), dir.path().join("bin"));
        fs::create_dir(&raw).unwrap();
        fs::create_dir(&bin).unwrap();
        let fake = format!(
            "#!/bin/sh\n[ \"$1\" = status ] && printf 'scheduler       {scheduler}\\nstate x\\n'\n\
             [ \"$1\" = load ] && echo \"unknown scheduler '$2'\" && exit 1\nexit 0\n"
        );
        fs::write(bin.join("enoki"), fake).unwrap();
        let chmod = std::process::Command::new("chmod")
            .args(["+x", &bin.join("enoki").display().to_string()])
            .status()
            .unwrap();
        assert!(chmod.success());
        let script = dir.path().join("guest.sh");
        fs::write(&script, GUEST_SCRIPT).unwrap();
        let runs = dir.path().join("runs.sh");
        fs::write(&runs, list).unwrap();
        let cli = Cli::parse_from(["enoki-bench"]);
        let cmd = guest_command(&guest_env(&cli, &raw), &script, &runs);
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .env("PATH", path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        (dir, stdout)
    }

    #[test]
    fn guest_script_runs_the_sweep_and_refuses_a_loaded_scheduler() {
        let cfg = SweepConfig {
            rates: vec![500],
            ..sweep_config(&Cli::parse_from(["enoki-bench"])).unwrap()
        };
        let list = "sweep_run alone-default-500 'default' '' 'a label' 'echo short_p99_us 12.5'\n\
                    sweep_run alone-shinjuku-500 'shinjuku' 'a=1' 'sj' 'echo short_p99_us 1'\n";
        let (dir, stdout) = run_sweep_script("-", list);
        assert!(stdout.contains("bench: a label ... ok ("), "{stdout}");
        assert!(
            stdout.contains("bench: sj ... FAILED (enoki load)"),
            "{stdout}"
        );
        let points = sweep::collect(&cfg, &dir.path().join("raw"));
        assert_eq!(points[0].value(sweep::P99), Some(12.5));
        assert_eq!(
            points[2].status,
            "load failed: unknown scheduler 'shinjuku'"
        );
        // A default run while an Enoki scheduler is still loaded measures
        // nothing.
        let (dir, stdout) = run_sweep_script("wfq", list);
        assert!(
            stdout.contains("FAILED (scheduler wfq still loaded)"),
            "{stdout}"
        );
        let points = sweep::collect(&cfg, &dir.path().join("raw"));
        assert_eq!(points[0].status, "scheduler wfq still loaded");
    }

    #[test]
    fn sweep_report_renders_and_rerenders() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("run");
        let raw = dir.join("raw");
        fs::create_dir_all(&raw).unwrap();
        let cfg = SweepConfig {
            rates: vec![500, 1000],
            ..sweep_config(&Cli::parse_from(["enoki-bench"])).unwrap()
        };
        let report = SweepReport {
            kind: sweep::KIND.into(),
            meta: Meta::default(),
            points: sweep::collect(&cfg, &raw),
            config: cfg,
        };
        // Nothing ran: empty charts still render.
        write_sweep_outputs(&dir, &report).unwrap();
        for (id, out) in [
            ("alone-default-500", "short_p99_us 40\n"),
            ("alone-default-1000", "short_p99_us 9000\n"),
            (
                "batch-shinjuku-500",
                "short_p99_us 30\nbatch_cpu_share 0.5\n",
            ),
        ] {
            fs::write(raw.join(format!("{id}.status")), "ok\n").unwrap();
            fs::write(raw.join(format!("{id}.out")), out).unwrap();
        }
        rerender(&dir).unwrap();
        let md = fs::read_to_string(dir.join("results.md")).unwrap();
        assert!(md.contains("| 1000 | 9000 |"), "{md}");
        for f in sweep_plot::FILES {
            let png = fs::read(top.path().join(format!("latest-shinjuku-{f}"))).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{f}");
        }
    }

    /// The fake guest of the locality tests: `enoki` (status, load,
    /// unload; state in $FAKE), `enoki-schbench` (logs the loaded
    /// scheduler, its pinning and arguments to $FAKE/calls and prints
    /// numbers that tell the configurations apart) and `taskset` (exports
    /// the CPU it pins to). Files in $FAKE change it: `loaded` (the loaded
    /// scheduler, `-` for none), `unload-fails`, `eject`.
    const FAKE_ENOKI: &str = r#"#!/bin/sh
case "$1" in
status) printf 'scheduler       %s\nstate x\n' "$(cat "$FAKE/loaded")" ;;
load) echo "$*" >>"$FAKE/calls"; echo "$2" >"$FAKE/loaded"; echo enabled >"$FAKE/sys/state" ;;
unload)
	echo unload >>"$FAKE/calls"
	[ -e "$FAKE/unload-fails" ] && echo 'enoki: unload: module busy' && exit 1
	echo - >"$FAKE/loaded" ;;
esac
exit 0
"#;
    const FAKE_SCHBENCH: &str = r#"#!/bin/sh
loaded=$(cat "$FAKE/loaded")
echo "run $loaded ${PINNED:-any} $*" >>"$FAKE/calls"
if [ -e "$FAKE/eject" ] && [ "$loaded" != - ]; then
	echo disabled >"$FAKE/sys/state"
	echo 'runnable task stall' >"$FAKE/sys/last_exit"
fi
p=30
[ -n "$PINNED" ] && p=15
[ "$loaded" = locality ] && p=45
case "$*" in *--hint-groups*)
	[ "$loaded" = locality ] || exit 1
	printf 'group.1.home 2\ngroup.2.home 5\nhints_taken 6\n'
	p=3 ;;
esac
printf 'samples 1000\np50_us %s\np99_us %s\n' "$p" "$((p * 2))"
"#;
    const FAKE_TASKSET: &str = "#!/bin/sh\nPINNED=$2; export PINNED; shift 2; exec \"$@\"\n";
    /// Sourced before the run list: the script reads the Enoki state in
    /// /sys/kernel/enoki, here $FAKE/sys.
    const FAKE_SYSFS: &str = "cat() { case \"$1\" in /sys/kernel/enoki/*) \
        command cat \"$FAKE/sys/${1#/sys/kernel/enoki/}\" ;; *) command cat \"$@\" ;; esac; }\n";

    /// Runs a locality run list in the fake guest ([`run_fake_guest`]).
    fn run_locality_script(
        list: &str,
        setup: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, String, Vec<String>) {
        let bins = [("enoki-schbench", FAKE_SCHBENCH), ("taskset", FAKE_TASKSET)];
        run_fake_guest(list, &bins, setup)
    }

    /// Runs a run list with the guest script on the host, in the fake
    /// guest: the fake `enoki` and `bins` (name, script) on the PATH;
    /// `setup` may change $FAKE first. Returns the temporary directory
    /// (raw output in `raw`), the script's output and the fake commands'
    /// calls.
    fn run_fake_guest(
        list: &str,
        bins: &[(&str, &str)],
        setup: impl FnOnce(&Path),
    ) -> (tempfile::TempDir, String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let (raw, bin, fake) = (
            dir.path().join("raw"),
            dir.path().join("bin"),
            dir.path().join("fake"),
        );
        for d in [&raw, &bin, &fake.join("sys")] {
            fs::create_dir_all(d).unwrap();
        }
        for (name, text) in [("enoki", FAKE_ENOKI)].iter().chain(bins) {
            let path = bin.join(name);
            fs::write(&path, text).unwrap();
            let chmod = std::process::Command::new("chmod")
                .arg("+x")
                .arg(&path)
                .status()
                .unwrap();
            assert!(chmod.success());
        }
        fs::write(fake.join("loaded"), "-\n").unwrap();
        fs::write(fake.join("sys/pick_errors"), "0\n").unwrap();
        setup(&fake);
        let script = dir.path().join("guest.sh");
        fs::write(&script, GUEST_SCRIPT).unwrap();
        let runs = dir.path().join("runs.sh");
        fs::write(&runs, format!("{FAKE_SYSFS}{list}")).unwrap();
        let cli = Cli::parse_from(["enoki-bench", "--only", "locality"]);
        let cmd = guest_command(&guest_env(&cli, &raw), &script, &runs);
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .env("PATH", path)
            .env("FAKE", &fake)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = fs::read_to_string(fake.join("calls")).unwrap_or_default();
        (dir, stdout, calls.lines().map(String::from).collect())
    }

    /// The configuration a fake enoki-schbench call ran under.
    fn config_of(call: &str) -> &'static str {
        let w: Vec<&str> = call.split_whitespace().collect();
        match (w[1], w[2], call.ends_with("--hint-groups")) {
            ("-", "any", false) => "default",
            ("-", "1", false) => "pinned",
            ("locality", "any", false) => "random",
            ("locality", "any", true) => "hints",
            _ => panic!("unexpected run: {call}"),
        }
    }

    #[test]
    fn locality_runs_all_four_each_rep_in_a_rotated_order() {
        let cli = Cli::parse_from(["enoki-bench", "--only", "locality", "--reps", "2"]);
        let cfg = locality_config(&cli).unwrap();
        let (dir, stdout, calls) = run_locality_script(&cfg.run_list(), |_| {});
        assert!(stdout.ends_with("bench: all runs done\n"), "{stdout}");
        let ran: Vec<&str> = calls
            .iter()
            .filter(|c| c.starts_with("run "))
            .map(|c| config_of(c))
            .collect();
        #[rustfmt::skip]
        assert_eq!(ran, [
            "hints", "default", "pinned", "random", // the warm-up
            "default", "pinned", "random", "hints",
            "pinned", "random", "hints", "default",
        ]);
        // Loaded for each of its runs only, every task under it, and
        // unloaded after each.
        let enoki: Vec<&str> = calls
            .iter()
            .filter(|c| !c.starts_with("run "))
            .map(String::as_str)
            .collect();
        assert_eq!(enoki, ["load locality --mode all", "unload"].repeat(6));
        let report = LocalityReport::new(Meta::default(), cfg, &dir.path().join("raw"));
        assert_eq!(report.runs.len(), 8);
        assert!(report.runs.iter().all(|r| r.ok()), "{:?}", report.runs);
        let by_rep: Vec<(usize, usize, &str)> = report
            .runs
            .iter()
            .map(|r| (r.rep, r.position, r.config.as_str()))
            .collect();
        assert_eq!(by_rep[4], (2, 1, "pinned"));
        let hints = &report.rows[3];
        assert_eq!((hints.p50.median, hints.p99.median), (Some(3.0), Some(6.0)));
        assert_eq!(hints.p50_vs_default.median, Some(0.1));
        assert_eq!(report.rows[1].p99.median, Some(30.0), "pinned");
        assert!(report.ejections().is_empty());
    }

    #[test]
    fn locality_default_runs_fail_while_a_scheduler_is_loaded() {
        let list = "scoped_run 01-default default '' 'd' 'enoki-schbench'\n\
                    scoped_run 01-pinned default '' 'p' 'taskset -c 1 enoki-schbench'\n";
        let bins = [("enoki-schbench", FAKE_SCHBENCH), ("taskset", FAKE_TASKSET)];
        let stdout = assert_default_runs_refuse_a_loaded_scheduler(
            list,
            &bins,
            &["01-default", "01-pinned"],
        );
        assert!(
            stdout.contains("bench: d ... FAILED (scheduler wfq still loaded)"),
            "{stdout}"
        );
        let list = "scoped_run 01-random locality '' 'r' 'enoki-schbench'\n\
                    scoped_run 01-default default '' 'd' 'enoki-schbench'\n";
        let cfg = LocalityConfig {
            reps: 1,
            warmup: 0,
            runtime_s: 1,
            work_us: 10,
        };
        let calls = assert_failed_unload_fails_two_runs(&cfg, list, &bins, ("random", "default"));
        assert_eq!(calls.iter().filter(|c| c.starts_with("run ")).count(), 1);
    }

    /// Runs `list`, default runs only (raw ids `ids`), while wfq is
    /// loaded: each fails without running anything. Returns the script's
    /// output.
    fn assert_default_runs_refuse_a_loaded_scheduler(
        list: &str,
        bins: &[(&str, &str)],
        ids: &[&str],
    ) -> String {
        let (dir, stdout, calls) = run_fake_guest(list, bins, |fake| {
            fs::write(fake.join("loaded"), "wfq\n").unwrap();
        });
        assert!(calls.is_empty(), "a default run measured Enoki: {calls:?}");
        for id in ids {
            let status = fs::read_to_string(dir.path().join(format!("raw/{id}.status"))).unwrap();
            assert_eq!(status, "scheduler wfq still loaded\n", "{id}");
        }
        stdout
    }

    /// Runs `list`, a run of `C`'s scheduler and then a default run
    /// (configurations `ids`), with unloads failing: the failed unload
    /// fails its own run, and the default run after it. Returns the fake
    /// commands' calls.
    fn assert_failed_unload_fails_two_runs<C: Table>(
        cfg: &C,
        list: &str,
        bins: &[(&str, &str)],
        ids: (&str, &str),
    ) -> Vec<String> {
        let (dir, stdout, calls) = run_fake_guest(list, bins, |fake| {
            fs::write(fake.join("unload-fails"), "").unwrap();
        });
        let sched = C::SCHED.0;
        assert!(
            stdout.contains(&format!("FAILED (enoki unload: {sched} still loaded)")),
            "{stdout}"
        );
        let runs = cfg.collect(&dir.path().join("raw"));
        let status = |id: &str| runs.iter().find(|r| r.config == id).unwrap().status.clone();
        assert_eq!(status(ids.0), "unload failed: enoki: unload: module busy");
        assert_eq!(status(ids.1), format!("scheduler {sched} still loaded"));
        calls
    }

    /// A run directory `run` in a temporary one (where `latest-*` go),
    /// with the raw files of `runs` (id, status, output).
    fn raw_run_dir(runs: &[(&str, &str, String)]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("run");
        let raw = dir.join("raw");
        fs::create_dir_all(&raw).unwrap();
        for (id, status, text) in runs {
            fs::write(raw.join(format!("{id}.status")), format!("{status}\n")).unwrap();
            fs::write(raw.join(format!("{id}.out")), text).unwrap();
        }
        (top, dir, raw)
    }

    #[test]
    fn locality_report_renders_rerenders_and_fails_on_ejection() {
        let cfg = LocalityConfig {
            reps: 2,
            warmup: 1,
            runtime_s: 5,
            work_us: 2000,
        };
        let out = |p50: f64| format!("samples 900\np50_us {p50}\np99_us {}\n", p50 * 2.0);
        let (top, dir, raw) = raw_run_dir(&[
            ("01-default", "ok", out(40.0)),
            ("02-default", "ok", out(20.0)),
            ("01-pinned", "ok", out(10.0)),
            ("01-random", "ejected: runnable task stall", out(50.0)),
            ("02-random", "ok", out(50.0)),
            (
                "01-hints",
                "ok",
                out(4.0) + "hints_taken 6\ngroup.1.home 2\n",
            ),
            // A hinted run that sent no hints measured "random".
            ("02-hints", "ok", out(1.0)),
        ]);
        let report = LocalityReport::new(Meta::default(), cfg, &raw);
        locality::write_outputs(&dir, &report).unwrap();
        let md = fs::read_to_string(top.path().join("latest-locality.md")).unwrap();
        assert!(
            md.contains("| default | 30.0 [20.0-40.0] | 60.0 [40.0-80.0] | x1.00 (CI 1.00-1.00) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| Enoki locality, hints | 4.0 | 8.0 | x0.10 | x0.10 | 1/2 | 900 | 2 / 4 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| default, all on CPU 1 | 10.0 | 20.0 | x0.25 |"),
            "{md}"
        );
        assert!(
            md.contains("- rep 1 random: ejected: runnable task stall"),
            "{md}"
        );
        assert!(
            md.contains("- rep 2 hints: no 'hints_taken' in its output"),
            "{md}"
        );
        assert!(md.contains("- rep 2 pinned: not run (VM ended)"), "{md}");
        assert!(
            md.contains("| 1 | 4 | hints | ok | 4.0 | 8.0 | 900 | 1: CPU 2 |"),
            "{md}"
        );
        let err = fail_if_ejected(&report.ejections())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ejected in 1 run(s)") && err.contains("random rep 1: ejected"),
            "{err}"
        );
        // --from reads the raw files again: the fixed run now counts.
        fs::write(raw.join("02-hints.out"), out(1.0) + "hints_taken 6\n").unwrap();
        let (md, again) = rerendered::<LocalityConfig>(top.path(), &dir);
        assert!(
            md.contains("| Enoki locality, hints | 2.5 [1.0-4.0] |"),
            "{md}"
        );
        assert_eq!(again.rows[3].ok, 2);
    }

    /// `--from` on `dir` (in `top`): the markdown it wrote to
    /// `latest-<name>.md`, and results.json read back as `C`'s report.
    fn rerendered<C: Table>(top: &Path, dir: &Path) -> (String, table::Report<C>) {
        rerender(dir).unwrap();
        let md = fs::read_to_string(top.join(format!("latest-{}.md", C::NAME))).unwrap();
        let json = fs::read_to_string(dir.join("results.json")).unwrap();
        let again: table::Report<C> = serde_json::from_str(&json).unwrap();
        assert_eq!(again.kind, C::KIND);
        (md, again)
    }

    #[test]
    fn locality_runs_alone_with_its_options() {
        let cli = Cli::parse_from(["enoki-bench", "--only", "locality", "--locality-s", "30"]);
        assert!(runs_alone(&cli, locality::NAME).unwrap());
        let cfg = locality_config(&cli).unwrap();
        assert_eq!((cfg.reps, cfg.warmup, cfg.runtime_s), (3, 1, 30));
        assert_eq!(cfg.work_us, 20, "short work, where co-location helps");
        let cli = Cli::parse_from(["enoki-bench", "--locality-work-us", "2000"]);
        let cmd = locality_config(&cli)
            .unwrap()
            .command(locality::Config::Hints);
        assert!(cmd.ends_with(" -r 5 --work-us 2000 --hint-groups"), "{cmd}");
        let cli = Cli::parse_from(["enoki-bench", "--only", "locality,pipe-1cpu"]);
        assert!(runs_alone(&cli, locality::NAME).is_err());
        let cli = Cli::parse_from(["enoki-bench", "--no-warmup", "--locality-s", "0"]);
        assert!(locality_config(&cli).is_err());
    }

    /// The fake enoki-cores (the batch job): logs its arguments, says it
    /// runs ($FAKE/batch.PID) and waits to be killed.
    const FAKE_CORES: &str = "#!/bin/sh\necho \"batch $*\" >>\"$FAKE/calls\"\n\
        touch \"$FAKE/batch.$$\"\nexec sleep 30\n";
    /// The fake enoki-pool: fails unless the batch job it watches runs,
    /// and, asking for CPUs, unless arachne is loaded (the real one gets
    /// no grant); logs the loaded scheduler, its mode and rate, and prints
    /// numbers that tell the configurations and loads apart.
    const FAKE_POOL: &str = r#"#!/bin/sh
loaded=$(cat "$FAKE/loaded") mode=arbiter rate='' watch=''
while [ $# -gt 0 ]; do
	case "$1" in
	--phases) rate=${2%%:*}; shift ;;
	--watch-pid) watch=$2; shift ;;
	--no-arbiter) mode=no-arbiter ;;
	esac
	shift
done
i=0
until [ -e "$FAKE/batch.$watch" ]; do
	i=$((i + 1))
	[ $i -lt 100 ] && kill -0 "$watch" 2>/dev/null || { echo 'no batch job' >&2; exit 2; }
	sleep 0.05
done
echo "pool $loaded $mode $rate" >>"$FAKE/calls"
if [ -e "$FAKE/eject" ] && [ "$loaded" != - ]; then
	echo disabled >"$FAKE/sys/state"
	echo 'runnable task stall' >"$FAKE/sys/last_exit"
fi
if [ $mode = arbiter ]; then
	[ "$loaded" = arachne ] || { echo 'no CoreGrant' >&2; exit 1; }
	p99=$((rate * 500)) batch=$(awk "BEGIN { print (80 - $rate) / 10 }") held=$((rate / 10)) grants=3
else
	p99=$((rate * 1000)) batch=2 held=0 grants=0
fi
printf 'mode %s\nwarmup_ms 10.0\nphase.0.start_ms 10.0\nphase.0.duration_ms 3000\nphase.0.p50_us 40000\n' $mode
printf 'phase.0.p99_us %s\nphase.0.held_mean %s\nphase.0.watch_cpus %s\n' $p99 $held $batch
printf 'total.arrived 50\ntotal.completed 50\ntotal.dropped 0\ntotal.finished_ms 3100\n'
printf 'grants %s\ntimeline 12.5 held 3 gen 1\n' $grants
"#;

    /// The fake commands of the Arachne table's runs.
    const ARACHNE_BINS: [(&str, &str); 2] =
        [("enoki-pool", FAKE_POOL), ("enoki-cores", FAKE_CORES)];

    fn arachne_cli(extra: &[&str]) -> Cli {
        let mut args = vec!["enoki-bench", "--only", "arachne"];
        args.extend(extra);
        Cli::parse_from(args)
    }

    #[test]
    fn arachne_runs_every_load_and_configuration_each_rep_in_a_rotated_order() {
        let cli = arachne_cli(&["--reps", "2", "--arachne-rates", "60,15"]);
        let cfg = arachne_config(&cli).unwrap();
        let (dir, stdout, calls) = run_fake_guest(&cfg.run_list(), &ARACHNE_BINS, |_| {});
        assert!(stdout.ends_with("bench: all runs done\n"), "{stdout}");
        let pools: Vec<&str> = calls
            .iter()
            .filter_map(|c| c.strip_prefix("pool "))
            .collect();
        #[rustfmt::skip]
        assert_eq!(pools, [
            // The warm-up, then two repetitions, rotated by one.
            "arachne arbiter 60", "- no-arbiter 15", "arachne arbiter 15", "- no-arbiter 60",
            "- no-arbiter 15", "arachne arbiter 15", "- no-arbiter 60", "arachne arbiter 60",
            "arachne arbiter 15", "- no-arbiter 60", "arachne arbiter 60", "- no-arbiter 15",
        ]);
        // Every run has its batch job, started before the pool.
        let batch = "batch --cores 0 --threads 8 --duration-ms 10000";
        let expected: Vec<&str> = (0..12).flat_map(|_| [batch, "pool"]).collect();
        let kinds: Vec<&str> = calls
            .iter()
            .filter(|c| !c.starts_with("load") && *c != "unload")
            .map(|c| {
                if c.starts_with("pool") {
                    "pool"
                } else {
                    c.as_str()
                }
            })
            .collect();
        assert_eq!(kinds, expected);
        // Loaded for each of its runs only, every task under it, and
        // unloaded after each.
        let enoki: Vec<&str> = calls
            .iter()
            .filter(|c| c.starts_with("load") || *c == "unload")
            .map(String::as_str)
            .collect();
        assert_eq!(
            enoki,
            ["load arachne --mode all --args reclaim_ms=20", "unload"].repeat(6)
        );
        let report = ArachneReport::new(Meta::default(), cfg, &dir.path().join("raw"));
        assert_eq!(report.runs.len(), 8);
        assert!(report.runs.iter().all(|r| r.ok()), "{:?}", report.runs);
        let rows: Vec<(u32, &str)> = report
            .rows
            .iter()
            .map(|r| (r.rate, r.config.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (15, "default"),
                (15, "arachne"),
                (60, "default"),
                (60, "arachne")
            ]
        );
        let a60 = &report.rows[3];
        assert_eq!(a60.p99_ms.median, Some(30.0));
        assert_eq!(a60.p99_vs_default.median, Some(0.5));
        assert_eq!(a60.held.median, Some(6.0));
        assert_eq!(a60.batch_vs_default.median, Some(1.0));
        assert_eq!(report.rows[1].batch_cpus.median, Some(6.5));
        assert!(report.ejections().is_empty());
    }

    #[test]
    fn arachne_default_runs_fail_while_a_scheduler_is_loaded() {
        let cli = arachne_cli(&["--reps", "1", "--no-warmup", "--arachne-rates", "15"]);
        let cfg = arachne_config(&cli).unwrap();
        let list = cfg.run_list();
        let default = list.lines().find(|l| l.contains("'default'")).unwrap();
        let bins = ARACHNE_BINS;
        let stdout =
            assert_default_runs_refuse_a_loaded_scheduler(default, &bins, &["01-default-15"]);
        assert!(
            stdout.contains("FAILED (scheduler wfq still loaded)"),
            "{stdout}"
        );
        let (arachne, _): (Vec<&str>, Vec<&str>) =
            list.lines().partition(|l| l.contains("arachne"));
        let list = format!("{}\n{default}\n", arachne.join("\n"));
        let calls =
            assert_failed_unload_fails_two_runs(&cfg, &list, &bins, ("arachne-15", "default-15"));
        assert_eq!(calls.iter().filter(|c| c.starts_with("pool ")).count(), 1);
    }

    #[test]
    fn arachne_report_renders_plots_rerenders_and_fails_on_ejection() {
        let cli = arachne_cli(&["--reps", "2", "--arachne-rates", "15,110"]);
        let cfg = arachne_config(&cli).unwrap();
        let out = |p99_ms: f64, batch: f64, held: f64, finished: f64| {
            format!(
                "warmup_ms 10\nphase.0.start_ms 10\nphase.0.duration_ms 5000\nphase.0.p50_us 41000\n\
                 phase.0.p99_us {}\nphase.0.p999_us 90000\nphase.0.watch_cpus {batch}\n\
                 phase.0.held_mean {held}\ntotal.arrived 75\ntotal.completed 75\n\
                 total.dropped 0\ntotal.finished_ms {finished}\ngrants 2\n",
                p99_ms * 1e3
            )
        };
        let (top, dir, raw) = raw_run_dir(&[
            ("01-default-15", "ok", out(50.0, 3.0, 0.0, 5100.0)),
            ("02-default-15", "ok", out(70.0, 3.2, 0.0, 5100.0)),
            ("01-arachne-15", "ok", out(45.0, 6.0, 2.0, 5100.0)),
            (
                "02-arachne-15",
                "ejected: runnable task stall",
                out(1.0, 1.0, 1.0, 1.0),
            ),
            ("01-default-110", "ok", out(80.0, 1.0, 0.0, 5200.0)),
            // Its batch job may have ended before the phase.
            (
                "02-default-110",
                "ok",
                out(90.0, 1.0, 0.0, 5200.0) + "warmup_ms 4900\n",
            ),
            // Drained 2.5 s after the phase: it fell behind.
            ("01-arachne-110", "ok", out(400.0, 2.5, 5.5, 7510.0)),
        ]);
        let report = ArachneReport::new(Meta::default(), cfg, &raw);
        arachne::write_outputs(&dir, &report).unwrap();
        let md = fs::read_to_string(top.path().join("latest-arachne.md")).unwrap();
        for row in [
            "| 15 (0.6 CPUs) | default, all workers (--no-arbiter) | 41.0 [41.0-41.0] | \
             60.0 [50.0-70.0] |  |  | 7 (all) | 3.10 [3.00-3.20] |  | 2/2 | 0 |",
            "| 15 (0.6 CPUs) | Enoki arachne, cores on demand | 41.0 | 45.0 | x1.00 | x0.90 | \
             2.00 | 6.00 | x2.00 | 1/2 | 0 |",
            "| 110 (4.4 CPUs) | Enoki arachne, cores on demand | 41.0 | 400.0 | x1.00 | x5.00 | \
             5.50 | 2.50 | x2.50 | 1/2 | 1 |",
            "![request p99 latency vs load](p99.png)",
            "![the batch job's CPUs vs load](batch_cpus.png)",
            "| 1 | 2 | arachne-15 | ok | 41.0 | 45.0 | 90.0 | 2.00 | 6.00 | 75/75 |",
            "| ok (fell behind) | 41.0 | 400.0 |",
            "- rep 2 arachne-15: ejected: runnable task stall",
            "- rep 2 arachne-110: not run (VM ended)",
            "- rep 2 default-110: the pool started after 4900 ms: the batch job may have ended \
             before the phase",
        ] {
            assert!(md.contains(row), "no {row:?} in\n{md}");
        }
        for png in ["p99.png", "batch_cpus.png"] {
            for path in [
                dir.join(png),
                top.path().join(format!("latest-arachne-{png}")),
            ] {
                let bytes = fs::read(&path).unwrap();
                assert_eq!(&bytes[1..4], b"PNG", "{}", path.display());
            }
        }
        let err = fail_if_ejected(&report.ejections())
            .unwrap_err()
            .to_string();
        assert!(err.contains("arachne-15 rep 2: ejected"), "{err}");
        // --from reads the raw files again: the missing run now counts.
        fs::write(raw.join("02-arachne-110.status"), "ok\n").unwrap();
        fs::write(raw.join("02-arachne-110.out"), out(100.0, 3.5, 5.0, 5200.0)).unwrap();
        let (md, again) = rerendered::<ArachneConfig>(top.path(), &dir);
        assert!(
            md.contains(
                "| Enoki arachne, cores on demand | 41.0 [41.0-41.0] | 250.0 [100.0-400.0] |"
            ),
            "{md}"
        );
        assert_eq!(again.rows[3].ok, 2);
    }

    #[test]
    fn arachne_runs_alone_with_its_options() {
        let cli = arachne_cli(&[]);
        assert!(runs_alone(&cli, arachne::NAME).unwrap());
        let cfg = arachne_config(&cli).unwrap();
        assert_eq!((cfg.reps, cfg.warmup, cfg.phase_ms), (3, 1, 5000));
        assert_eq!((cfg.rates, cfg.work_us), (vec![15, 60, 110], 40_000));
        let cli = arachne_cli(&["--arachne-ms", "2000", "--arachne-work-us", "20000"]);
        let cmd = arachne_config(&cli).unwrap().command(arachne::Item {
            rate: 60,
            config: arachne::Config::Default,
        });
        assert!(
            cmd.contains("enoki-pool --phases 60:2000 --work-us 20000 --watch-pid $b --no-arbiter"),
            "{cmd}"
        );
        let cli = Cli::parse_from(["enoki-bench", "--only", "arachne,locality"]);
        assert!(runs_alone(&cli, arachne::NAME).is_err());
        for bad in [["--arachne-rates", "0"], ["--arachne-ms", "0"]] {
            assert!(arachne_config(&arachne_cli(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn png_renders_without_system_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let ws = selected(&["hackbench".into(), "zstd".into()]).unwrap();
        let mk = |w: &str, s: &str, m: &str, v: f64| RunRecord {
            workload: w.into(),
            sched: s.into(),
            rep: 1,
            status: "ok".into(),
            elapsed_s: None,
            metrics: [(m.to_string(), v)].into(),
        };
        let runs = vec![
            mk("hackbench", "default", "time", 2.0),
            mk("hackbench", "wfq", "time", 2.1),
            mk("zstd", "default", "throughput", 5.0),
        ];
        let meta = Meta {
            reps: 1,
            ..Meta::default()
        };
        let rep = Report::new(meta, wfq(), &ws, runs);
        let png = dir.path().join("r.png");
        plot::ratios_png(&png, &rep).unwrap();
        let bytes = fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }

    fn three_way_cli(extra: &[&str]) -> Cli {
        let mut args = vec!["enoki-bench", "--scheduler", "cfifo,fifo,wfq"];
        args.extend(extra);
        Cli::parse_from(args)
    }

    #[test]
    fn the_order_rotates_and_mirrors_so_drift_hits_every_scheduler_alike() {
        let scheds = three_way_cli(&[]).scheduler;
        let all = ["cfifo", "default", "fifo", "wfq"];
        for rep in 0..=8 {
            let mut o = order(rep, &scheds);
            o.sort_unstable();
            assert_eq!(o, all, "each once in rep {rep}");
        }
        let pos = |rep: usize, s: &str| order(rep, &scheds).iter().position(|x| *x == s);
        // A repetition and the next mirror each other: every scheduler's
        // mean position over the two is the middle.
        for rep in [1, 3, 5, 7] {
            for s in all {
                assert_eq!(pos(rep, s).unwrap() + pos(rep + 1, s).unwrap(), 3, "{s}");
            }
        }
        let firsts: Vec<&str> = (1..=8).map(|rep| order(rep, &scheds)[0]).collect();
        assert_eq!(
            firsts,
            ["default", "wfq", "cfifo", "default", "fifo", "cfifo", "wfq", "fifo"]
        );
        assert_eq!(order(0, &scheds), order(2, &scheds), "the warm-up");
        // One scheduler: A B, B A, as before, then B A, A B.
        let one = wfq();
        let ab: Vec<Vec<&str>> = (0..=4).map(|rep| order(rep, &one)).collect();
        assert_eq!(
            ab,
            [
                ["wfq", "default"],
                ["default", "wfq"],
                ["wfq", "default"],
                ["wfq", "default"],
                ["default", "wfq"]
            ]
        );
    }

    /// A fake hackbench: logs the loaded scheduler, ejects it where
    /// $FAKE/eject names it, and takes 2.0 s under the default, 2.2 under
    /// cfifo, 2.4 under fifo and 3.0 under wfq.
    const FAKE_HACKBENCH: &str = r#"#!/bin/sh
loaded=$(cat "$FAKE/loaded")
echo "run $loaded" >>"$FAKE/calls"
if [ -e "$FAKE/eject" ] && [ "$loaded" = "$(cat "$FAKE/eject")" ]; then
	echo disabled >"$FAKE/sys/state"
	echo 'runnable task stall' >"$FAKE/sys/last_exit"
fi
case "$loaded" in -) t=2.0 ;; cfifo) t=2.2 ;; fifo) t=2.4 ;; *) t=3.0 ;; esac
echo "Time: $t"
"#;

    /// `cli`'s run list without its setup (which would write the input
    /// data to the host's /tmp).
    fn runs_only(cli: &Cli, ws: &[Workload]) -> String {
        let list = run_list(cli, ws);
        let runs: Vec<&str> = list.lines().filter(|l| l.contains("bench_run ")).collect();
        runs.join("\n") + "\n"
    }

    #[test]
    fn every_scheduler_runs_each_rep_in_a_rotating_order_loading_its_own() {
        let cli = three_way_cli(&["--reps", "4", "--only", "hackbench"]);
        let ws = selected(&cli.only).unwrap();
        let list = runs_only(&cli, &ws);
        assert_eq!(total_runs(&cli, &ws), 20);
        assert!(
            list.starts_with("bench_run 00-hackbench-wfq wfq '[1/20] warm-up hackbench under wfq'"),
            "{list}"
        );
        let bins = [("hackbench", FAKE_HACKBENCH)];
        let (dir, stdout, calls) = run_fake_guest(&list, &bins, |_| {});
        assert!(stdout.ends_with("bench: all runs done\n"), "{stdout}");
        let ran: Vec<&str> = calls
            .iter()
            .filter_map(|c| c.strip_prefix("run "))
            .collect();
        #[rustfmt::skip]
        assert_eq!(ran, [
            "wfq", "fifo", "cfifo", "-", // the warm-up: rep 2's order
            "-", "cfifo", "fifo", "wfq",
            "wfq", "fifo", "cfifo", "-",
            "cfifo", "fifo", "wfq", "-",
            "-", "wfq", "fifo", "cfifo",
        ]);
        // Each scheduler is loaded for its run alone, and unloaded after.
        let mut expected = Vec::new();
        for r in &ran {
            match *r {
                "-" => expected.push("run -".to_string()),
                s => expected.extend([format!("load {s}"), format!("run {s}"), "unload".into()]),
            }
        }
        assert_eq!(calls, expected);
        let runs = collect(&ws, cli.reps, &dir.path().join("raw"), &cli.scheduler);
        assert_eq!(runs.len(), 16);
        assert!(runs.iter().all(|r| r.ok()), "{runs:?}");
        let meta = Meta {
            reps: cli.reps,
            ..Meta::default()
        };
        let report = Report::new(meta, cli.scheduler.clone(), &ws, runs);
        let ratio = |title: &str| {
            let c = report.comparisons.iter().find(|c| c.title() == title);
            c.unwrap().metrics[0].ratio.unwrap()
        };
        assert!((ratio("sched_ext: cfifo vs default") - 1.1).abs() < 1e-9);
        assert!((ratio("message path: fifo vs cfifo") - 2.4 / 2.2).abs() < 1e-9);
        assert!((ratio("policy: wfq vs fifo") - 1.25).abs() < 1e-9);
    }

    #[test]
    fn a_failed_unload_or_an_ejection_fails_the_runs_it_touches() {
        let cli = three_way_cli(&["--reps", "1", "--no-warmup", "--only", "hackbench"]);
        let ws = selected(&cli.only).unwrap();
        let list = runs_only(&cli, &ws);
        let bins = [("hackbench", FAKE_HACKBENCH)];
        // Nothing runs while a scheduler is loaded: not the default (it
        // would measure that scheduler), nor another (it cannot load).
        let ids = [
            "01-hackbench-default",
            "01-hackbench-cfifo",
            "01-hackbench-wfq",
        ];
        assert_default_runs_refuse_a_loaded_scheduler(&list, &bins, &ids);
        // cfifo's unload fails: its run says so, the later ones cannot run.
        let (dir, stdout, calls) = run_fake_guest(&list, &bins, |fake| {
            fs::write(fake.join("unload-fails"), "").unwrap();
        });
        assert!(
            stdout.contains("FAILED (enoki unload: cfifo still loaded)"),
            "{stdout}"
        );
        assert_eq!(calls, ["run -", "load cfifo", "run cfifo", "unload"]);
        let runs = collect(&ws, 1, &dir.path().join("raw"), &cli.scheduler);
        let status: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
        #[rustfmt::skip]
        assert_eq!(status, [
            "ok", "unload failed: enoki: unload: module busy",
            "scheduler cfifo still loaded", "scheduler cfifo still loaded",
        ]);
        // fifo is ejected: that run alone, named, and enoki-bench fails.
        let (dir, _, _) = run_fake_guest(&list, &bins, |fake| {
            fs::write(fake.join("eject"), "fifo\n").unwrap();
        });
        let runs = collect(&ws, 1, &dir.path().join("raw"), &cli.scheduler);
        let ejected = ejections(&runs);
        assert_eq!(
            ejected,
            ["hackbench rep 1 under fifo: ejected: runnable task stall"]
        );
        assert!(runs.iter().filter(|r| r.sched != "fifo").all(|r| r.ok()));
        assert!(fail_if_ejected(&ejected).is_err());
    }

    #[test]
    fn record_leaves_out_cfifo_and_upgrades_take_the_last_scheduler() {
        let cli = three_way_cli(&["--record", "--reps", "1", "--no-warmup"]);
        let ws = selected(&["hackbench".into()]).unwrap();
        let list = run_list(&cli, &ws);
        for l in list.lines().filter(|l| l.contains("bench_run ")) {
            let recorded = !l.starts_with("BENCH_RECORD=0 ");
            assert_eq!(recorded, !l.contains("-cfifo cfifo "), "{l}");
        }
        let dir = tempfile::tempdir().unwrap();
        for sched in ["cfifo", "fifo", "wfq"] {
            let w = |ext: &str, s: &str| {
                let id = run_id(1, "hackbench", sched);
                fs::write(dir.path().join(format!("{id}.{ext}")), s).unwrap()
            };
            w("time", "100.0 102.0\n");
            w("rec.time", "200.0 203.0\n");
            w("rec.status", "0\n");
            w("rec.out", "bytes_per_call 80\n");
        }
        let lines = record_overhead(&ws, 1, dir.path(), &cli.scheduler);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines[0].starts_with("record overhead fifo hackbench: recorded/unrecorded time x1.500")
        );
        assert!(lines[2].starts_with("record overhead wfq hackbench:"));
        assert!(!lines.iter().any(|l| l.contains("cfifo")), "{lines:?}");
        // --upgrades upgrades wfq, the last listed; cfifo cannot be.
        let env = guest_env(&three_way_cli(&["--upgrades", "5"]), Path::new("/x"));
        assert!(env.contains(&("BENCH_SCHED", "wfq".into())), "{env:?}");
        let cli = Cli::parse_from([
            "enoki-bench",
            "--scheduler",
            "fifo,cfifo",
            "--upgrades",
            "5",
        ]);
        assert!(check_schedulers(&cli).is_err());
    }

    #[test]
    fn the_scheduler_list_is_checked() {
        let check =
            |list: &str| check_schedulers(&Cli::parse_from(["enoki-bench", "--scheduler", list]));
        assert!(check("cfifo,fifo,wfq").is_ok());
        assert!(check("wfq").is_ok());
        for bad in ["fifo,fifo", "default", "wfq,", "a b", "x;rm"] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert!(check_schedulers(&Cli::parse_from(["enoki-bench"])).is_ok());
        assert_eq!(Cli::parse_from(["enoki-bench"]).scheduler, wfq());
        let sweep = Cli::parse_from(["enoki-bench", "--only", "shinjuku", "--scheduler", "a,b"]);
        assert!(
            sweep_config(&sweep).is_err(),
            "the sweep has one fair scheduler"
        );
    }

    #[test]
    fn a_leading_double_dash_from_cargo_make_is_dropped() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        // `cargo make bench -- --reps 5` runs `enoki-bench -- --reps 5`.
        let passed = args(&["enoki-bench", "--", "--reps", "5", "--only", "zstd"]);
        assert!(Cli::try_parse_from(passed.clone()).is_err());
        let cli = Cli::parse_from(cli_args(passed));
        assert_eq!(
            (cli.reps, cli.only.as_slice()),
            (5, ["zstd".to_string()].as_slice())
        );
        let plain = args(&["enoki-bench", "--reps", "5"]);
        assert_eq!(cli_args(plain.clone()), plain);
    }

    /// results.json as written before `--scheduler` took a list: one
    /// scheduler in meta, runs under `enoki`, raw files named `-enoki`.
    fn legacy_json(reps: usize) -> String {
        let meta = Meta {
            reps,
            scheduler: "wfq".into(),
            ..Meta::default()
        };
        serde_json::json!({
            "orientation": "ratio = Enoki's cost / ...",
            "meta": meta,
            "metrics": [],
            "summary": { "targets": [], "failed_runs": [] },
            "runs": [{ "workload": "hackbench", "sched": "enoki", "rep": 1,
                       "status": "ok", "elapsed_s": null, "metrics": {} }],
        })
        .to_string()
    }

    #[test]
    fn from_rerenders_new_and_old_run_directories() {
        let time = |t: f64| format!("Time: {t}\n");
        let (top, dir, raw) = raw_run_dir(&[
            ("01-hackbench-default", "ok", time(2.0)),
            ("01-hackbench-cfifo", "ok", time(2.2)),
            ("01-hackbench-fifo", "timeout", String::new()),
        ]);
        let ws = selected(&["hackbench".into()]).unwrap();
        let scheds = vec!["cfifo".to_string(), "fifo".into()];
        let meta = Meta {
            reps: 1,
            ..Meta::default()
        };
        let runs = collect(&ws, 1, &raw, &scheds);
        write_outputs(&dir, &Report::new(meta, scheds, &ws, runs)).unwrap();
        // --from reads the raw files again: the fixed fifo run now counts.
        fs::write(raw.join("01-hackbench-fifo.status"), "ok\n").unwrap();
        fs::write(raw.join("01-hackbench-fifo.out"), time(2.42)).unwrap();
        rerender(&dir).unwrap();
        let md = fs::read_to_string(top.path().join("latest.md")).unwrap();
        assert!(
            md.contains("| hackbench | time (s, lower is better) | 1.100 | 1.210 | 1.100 |"),
            "{md}"
        );
        // A directory from before: its one scheduler's files say `enoki`.
        let (top, dir, _) = raw_run_dir(&[
            ("01-hackbench-default", "ok", time(2.0)),
            ("01-hackbench-enoki", "ok", time(2.5)),
        ]);
        fs::write(dir.join("results.json"), legacy_json(1)).unwrap();
        rerender(&dir).unwrap();
        let md = fs::read_to_string(top.path().join("latest.md")).unwrap();
        assert!(
            md.contains("| workload | metric | default | wfq | ratio |")
                && md.contains("| 2.00 | 2.50 | 1.250 |"),
            "{md}"
        );
    }
}
