// SPDX-License-Identifier: GPL-2.0
//! `enoki-pool`: a thread-pool runtime that sizes itself to its load by
//! asking the Arachne core arbiter (`schedulers/arachne`) for CPUs, as
//! Arachne's runtime does (paper 4.2.4, 5.6).
//!
//! A load generator issues requests, each `--work-us` of spinning, with
//! open-loop Poisson arrivals at the rate each of `--phases` gives
//! (`RATE:MS,...`, requests per second for that many milliseconds). A pool
//! of `--max-cores` workers serves them in arrival order. Every
//! `--interval-ms` the arbiter thread estimates the CPUs needed from the
//! arrival rate over the last [`load::RATE_TICKS`] intervals and the requests
//! waiting ([`load::estimate`]), clamped to
//! `[--min-cores, --max-cores]`; going up at once, down only once every
//! estimate of the last [`load::DOWN_TICKS`] intervals says so. It sends
//! `CoreRequest::cores(n, --priority)` when that changes, and runs as many
//! workers as the scheduler's newest `GRANT_HELD` names CPUs, parking the
//! rest on a condition variable. On a `GRANT_RECLAIM` it parks workers
//! until they fit on the CPUs it keeps, then gives each CPU asked for back
//! (`CoreRequest::release`). `--no-arbiter` opens no queue and runs every
//! worker (the baseline under another scheduler).
//!
//! The report is `key value` lines: per phase (`phase.N.`) the offered
//! rate, requests arrived and completed, latency percentiles (completion
//! minus arrival) and the CPUs asked for, held and workers active (mean
//! over time, maximum, value at the phase's end); totals (`total.`); the
//! timeline of requests and grants (`timeline MS asked|held|reclaim N`);
//! the reclaims answered and how long each took to give the CPUs back.
//! With `--watch-pid PID` (repeatable) it also reports the CPU time those
//! processes used in each phase (`phase.N.watch_cpus`: CPUs' worth), e.g.
//! a batch job running next to the pool. With `--ready-file PATH` it
//! creates that (empty) file once it holds its first CPUs, as the load
//! starts, for a script that starts something next to it.

mod arbiter;
mod load;
mod pool;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use enoki_arachne::LOWEST_PRIORITY;

use arbiter::{ArbiterLog, ArbiterThread, Queue, Settings};
use load::{parse_phases, Phase, Phases};
use pool::{Pool, Served};
use report::{Bound, PhaseRun, Report, Watch};

#[derive(Parser)]
#[command(
    version,
    about = "A thread pool that asks the Arachne arbiter for the CPUs its load needs"
)]
struct Cli {
    /// Fewest CPUs asked for (and workers run).
    #[arg(long, default_value_t = 2)]
    min_cores: u32,
    /// Most CPUs asked for; also the number of workers.
    #[arg(long, default_value_t = 7)]
    max_cores: u32,
    /// CPU time (spinning) per request, in microseconds.
    #[arg(long, default_value_t = 200)]
    work_us: u64,
    /// Load phases, RATE:MS,...: Poisson arrivals at RATE requests per
    /// second for MS milliseconds each.
    #[arg(long, default_value = "500:2000,3000:2000,500:2000", value_parser = parse_phases)]
    phases: Phases,
    /// How often the CPUs needed are estimated.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Priority of the requests: 0 (most urgent) to 7.
    #[arg(long, default_value_t = 0)]
    priority: u32,
    /// Open no hint queue; run all --max-cores workers.
    #[arg(long)]
    no_arbiter: bool,
    /// Seed of the arrival process.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Report the CPU time this process (all its threads) uses per phase;
    /// repeatable (the times are added up).
    #[arg(long)]
    watch_pid: Vec<u32>,
    /// Longest wait, after the last phase, for the queued requests.
    #[arg(long, default_value_t = 10_000)]
    drain_ms: u64,
    /// Create this (empty) file once the first grant has arrived (at once
    /// with --no-arbiter), as the load starts; a script waiting for it
    /// removes a stale one first.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

impl Cli {
    /// Refuses settings the pool cannot run with.
    fn check(&self) -> Result<()> {
        if self.min_cores == 0 || self.min_cores > self.max_cores {
            bail!("need 1 <= --min-cores <= --max-cores");
        }
        if self.max_cores > 1024 {
            bail!("--max-cores is at most 1024");
        }
        if self.priority > LOWEST_PRIORITY {
            bail!("--priority is 0..={LOWEST_PRIORITY}");
        }
        if self.interval_ms == 0 {
            bail!("--interval-ms must be positive");
        }
        Ok(())
    }

    /// Workers serving from the start: all without the arbiter, else the
    /// fewest until the first grant says how many.
    fn first_active(&self) -> u32 {
        if self.no_arbiter {
            self.max_cores
        } else {
            self.min_cores
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            min: self.min_cores,
            max: self.max_cores,
            priority: self.priority,
            work_us: self.work_us,
            interval: Duration::from_millis(self.interval_ms),
        }
    }

    fn phases(&self) -> &[Phase] {
        &self.phases.0
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    cli.check()?;
    let watch = Watch::new(cli.watch_pid.clone());
    // Opened before anything runs, so that a missing scheduler fails at once.
    let queue = (!cli.no_arbiter)
        .then(Queue::open)
        .transpose()
        .context("opening a hint queue to the Arachne arbiter")?;
    let pool = Arc::new(Pool::new(cli.max_cores, cli.first_active()));
    let work = Duration::from_micros(cli.work_us);
    let workers = pool::spawn_workers(&pool, cli.max_cores, work);
    // The load starts once the pool holds its first CPUs, as Arachne's
    // runtime starts once the arbiter gave it its cores.
    let arbiter = queue
        .map(|queue| ArbiterThread::spawn(queue, &pool, cli.settings()).wait_first_grant())
        .transpose()?;
    mark_ready(cli.ready_file.as_deref())?;
    let start = Instant::now();
    println!("warmup_ms {:.1}", pool.ms(start));
    let load = run_load(&cli, &pool, &watch, start)?;
    wind_down(&cli, &pool, workers, arbiter, &load)
}

/// Creates `path` (empty), if given: the pool is ready.
fn mark_ready(path: Option<&Path>) -> Result<()> {
    if let Some(path) = path {
        std::fs::File::create(path)
            .with_context(|| format!("creating the ready file {}", path.display()))?;
    }
    Ok(())
}

/// The load's run: each phase's bounds (the last one's end too), and the
/// requests that arrived in each.
struct LoadRun {
    bounds: Vec<Bound>,
    arrivals: Vec<u64>,
}

/// Generates the load from `start` on, and notes where each phase ends.
fn run_load(cli: &Cli, pool: &Arc<Pool>, watch: &Watch, start: Instant) -> Result<LoadRun> {
    let generator = {
        let (pool, phases, seed) = (Arc::clone(pool), cli.phases().to_vec(), cli.seed);
        std::thread::spawn(move || load::generate(&pool, &phases, seed, start))
    };
    let bound = |at| Bound {
        ms: pool.ms(at),
        watched_ms: watch.cpu_ms(),
    };
    let mut bounds = vec![bound(start)];
    let mut end = start;
    for p in cli.phases() {
        end += p.duration;
        load::sleep_until(end);
        bounds.push(bound(end));
    }
    let arrivals = generator
        .join()
        .map_err(|_| anyhow!("the load generator panicked"))?;
    Ok(LoadRun { bounds, arrivals })
}

/// Waits for the requests still queued (up to --drain-ms), stops the
/// arbiter and the workers, and prints the report; fails if the arbiter
/// did.
fn wind_down(
    cli: &Cli,
    pool: &Pool,
    workers: Vec<JoinHandle<Served>>,
    arbiter: Option<ArbiterThread>,
    load: &LoadRun,
) -> Result<()> {
    let dropped = pool.drain(Duration::from_millis(cli.drain_ms));
    let finished_ms = pool.ms(Instant::now());
    let (log, failure) = match arbiter.map(ArbiterThread::stop).transpose()? {
        Some(Ok(log)) => (log, None),
        Some(Err(e)) => (ArbiterLog::default(), Some(e)),
        None => (ArbiterLog::default(), None),
    };
    pool.finish();
    let latencies = pool::join_workers(workers, cli.phases().len())?;
    let st = pool.lock();
    report::print(&Report {
        no_arbiter: cli.no_arbiter,
        watching: !cli.watch_pid.is_empty(),
        phases: PhaseRun::collect(cli.phases(), &load.bounds, &load.arrivals, latencies),
        active_log: &st.active_log,
        arrived: st.arrived,
        completed: st.completed,
        dropped,
        finished_ms,
        log: &log,
    });
    failure.map_or(Ok(()), |e| Err(e.context("the arbiter thread failed")))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["enoki-pool", "--ready-file", "/tmp/a.ready"]).unwrap();
        assert_eq!(cli.ready_file, Some(PathBuf::from("/tmp/a.ready")));
        assert!(cli.check().is_ok());
        let cli = Cli::try_parse_from(["enoki-pool", "--min-cores", "8"]).unwrap();
        assert!(cli.check().is_err(), "more than --max-cores");
    }

    #[test]
    fn the_ready_file_is_created_empty() {
        let path = std::env::temp_dir().join(format!("enoki-pool-ready-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        mark_ready(None).unwrap();
        assert!(!path.exists());
        mark_ready(Some(&path)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_file(&path).unwrap();
        assert!(mark_ready(Some(Path::new("/nonexistent/dir/ready"))).is_err());
    }
}
