// SPDX-License-Identifier: GPL-2.0
//! `enoki-schbench`: wakeup latency and requests per second in the style
//! of schbench (github.com/masoncl/schbench). Each message thread serves
//! its workers; a request is one round trip: the message thread stamps
//! the time and wakes a worker that has replied, the worker stamps its own
//! wakeup as soon as it runs (wakeup latency = its stamp minus the message
//! thread's), sleeps `--sleep-us` (schbench's think time), does the work
//! and replies to its message thread, which wakes it for the next request.
//! A message thread woken by several replies wakes all those workers with
//! one stamp, as schbench does, so a waker that is preempted between
//! wakeups shows in the latency of the ones it wakes late.
//!
//! The work is schbench's: a naive multiply of two square matrices of
//! `u64` into a third, the three filling `--cache-footprint-kb` (each
//! worker its own), repeated `--operations` times per request (schbench
//! also holds a per-CPU lock around it unless `-L`; this does not). The
//! defaults (256 KiB, schbench's, and 4 operations) take about 2 ms per
//! request natively (0.5 ms a multiply on the Xeon they were tuned on);
//! under emulation (QEMU TCG, where the cache footprint means little
//! anyway) the same work takes many times longer, so the same time holds
//! fewer requests and samples. `--work-us` instead burns that much CPU
//! time per request (short, fixed work for the locality table,
//! `enoki-bench --only locality`).
//!
//! Wakeups posted during the warm-up or after the measured window are
//! dropped. Prints `samples`, `p50_us`, `p90_us`, `p99_us`, `max_us`
//! (`p999_us` too from 10,000 samples on; below that a `samples_note`
//! line says so) and `requests_per_sec`, the requests completed per second
//! of the measured window.
//!
//! With `--hint-groups` (the paper's Table 6, "Hints"), before any request
//! it hints each message thread and its workers into one group of the
//! locality scheduler (`enoki load locality`; message thread i's group is
//! i + 1), in one batch, and waits for the scheduler's answers, each
//! group's home CPU (printed as `group.G.home CPU`, and `hints_taken N`).
//! (GPL-2.0, unlike the other workloads: it links the hint queue and the
//! locality scheduler's hint types, enoki-hints and enoki-locality.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use clap::Parser;
use enoki_bench_guest::{gettid, mono_ns, percentile, percentile_rank, spin_cpu_ns, MatrixWork};
use enoki_hints::locality::{hint_groups, Queue, Wait};
use enoki_locality::MAX_GROUPS;

/// How long to wait for the scheduler's answers to the hints.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Fewer samples than this leave p99.9 to fewer than 10 of them.
const ENOUGH_SAMPLES: usize = 10_000;

#[derive(Parser)]
#[command(about = "schbench-style wakeup latency and requests per second")]
struct Cli {
    /// Message threads.
    #[arg(long, short = 'm', default_value_t = 2)]
    message_threads: usize,
    /// Workers per message thread.
    #[arg(long, short = 't', default_value_t = 2)]
    workers: usize,
    /// Seconds measured after the warm-up.
    #[arg(long, short = 'r', default_value_t = 5.0)]
    runtime_s: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, short = 'w', default_value_t = 1.0)]
    warmup_s: f64,
    /// Memory of each worker's three matrices, KiB (schbench's default).
    #[arg(long, short = 'F', default_value_t = 256)]
    cache_footprint_kb: usize,
    /// Matrix multiplies per request (about 0.5 ms each natively at 256
    /// KiB; many times longer under emulation).
    #[arg(long, short = 'n', default_value_t = 4)]
    operations: u64,
    /// Burn this much CPU time per request, us, instead of the matrix
    /// work (short, fixed work for the locality table).
    #[arg(long, conflicts_with_all = ["cache_footprint_kb", "operations"])]
    work_us: Option<u64>,
    /// Time a worker sleeps after its wakeup, before its work, us
    /// (schbench's think time; 0: none).
    #[arg(long, short = 's', default_value_t = 100)]
    sleep_us: u64,
    /// Hint each message thread and its workers into one group of the
    /// locality scheduler (message thread i: group i + 1) before the first
    /// request; fails if its hint queue cannot be opened or nothing answers.
    #[arg(long)]
    hint_groups: bool,
}

/// What a worker does for each request.
enum Work {
    /// schbench's: `operations` multiplies over its own footprint.
    Matrix(MatrixWork, u64),
    /// CPU time to burn, ns.
    Spin(u64),
}

impl Work {
    /// One worker's work, from the options.
    fn new(cli: &Cli) -> Result<Work> {
        if let Some(us) = cli.work_us {
            return Ok(Work::Spin(us.saturating_mul(1000)));
        }
        // Allocated by main, so a bad footprint fails before any thread
        // starts; where the pages live matters little, as every request
        // reads and writes all of them anyway.
        let bytes = cli.cache_footprint_kb.saturating_mul(1024);
        Ok(Work::Matrix(MatrixWork::new(bytes)?, cli.operations))
    }

    fn run(&mut self) {
        match self {
            Work::Matrix(m, ops) => m.run(*ops),
            Work::Spin(ns) => spin_cpu_ns(*ns),
        }
    }
}

struct Worker {
    /// When its message thread woke it (mono ns).
    posted: AtomicU64,
    /// Woken for a request it has not started.
    go: AtomicBool,
    /// Replied to its message thread, waiting for the next request.
    replied: AtomicBool,
    /// Requests completed.
    done: AtomicU64,
    thread: OnceLock<Thread>,
}

/// A message thread and its workers.
struct Group {
    workers: Vec<Worker>,
    /// Some worker replied since the message thread last looked.
    kicked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Group {
    fn new(workers: usize) -> Arc<Group> {
        Arc::new(Group {
            workers: (0..workers)
                .map(|_| Worker {
                    posted: AtomicU64::new(0),
                    go: AtomicBool::new(false),
                    replied: AtomicBool::new(false),
                    done: AtomicU64::new(0),
                    thread: OnceLock::new(),
                })
                .collect(),
            kicked: AtomicBool::new(false),
            thread: OnceLock::new(),
        })
    }

    fn requests_done(&self) -> u64 {
        self.workers.iter().map(|w| w.done.load(SeqCst)).sum()
    }

    fn wake_messenger(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The measured window, mono ns: wakeups posted in [from, until) count.
struct Window {
    from: AtomicU64,
    until: AtomicU64,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        (self.from.load(SeqCst)..self.until.load(SeqCst)).contains(&t)
    }
}

/// What every thread shares: when to stop, the measured window, how each
/// thread announces its kernel id (with its group: message thread i's
/// index + 1) and the start line it waits at until the hints are in.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    window: Arc<Window>,
    tids: mpsc::Sender<(i32, u32)>,
    start: Arc<Barrier>,
}

impl Shared {
    /// Called first in every thread: the main thread hints by these ids,
    /// and no thread runs a request before the hints are in (a hint takes
    /// effect at the thread's next wakeup: the barrier's).
    fn announce(&self, group: u32) {
        // A closed channel means main gave up (and is exiting): nothing to do.
        let _ = self.tids.send((gettid(), group));
        self.start.wait();
    }
}

/// The worker's half of the round trip: tell its message thread it is
/// ready for the next request.
fn reply(g: &Group, me: &Worker) {
    me.replied.store(true, SeqCst);
    g.kicked.store(true, SeqCst);
    g.wake_messenger();
}

/// Waits for the next request; false once stopping.
fn wait_for_request(me: &Worker, stop: &AtomicBool) -> bool {
    while !me.go.swap(false, SeqCst) {
        if stop.load(SeqCst) {
            return false;
        }
        thread::park();
    }
    true
}

/// Worker `w` of `g`: its wakeup latencies in the measured window, ns.
fn worker_loop(g: &Group, w: usize, sh: &Shared, mut work: Work, sleep: Duration) -> Vec<u64> {
    let me = &g.workers[w];
    let mut lat = Vec::with_capacity(1 << 16);
    loop {
        reply(g, me);
        if !wait_for_request(me, &sh.stop) {
            return lat;
        }
        // First thing when running: anything later would count our own
        // work as scheduling delay.
        let now = mono_ns();
        let posted = me.posted.load(SeqCst);
        if sh.window.contains(posted) {
            lat.push(now.saturating_sub(posted));
        }
        if !sleep.is_zero() {
            thread::sleep(sleep);
        }
        work.run();
        me.done.fetch_add(1, SeqCst);
    }
}

/// Wakes every worker of `g` that has replied, with one stamp taken
/// before the first wakeup (schbench's way: time the waker loses while
/// waking counts against the workers it wakes late).
fn answer_replies(g: &Group) {
    let now = mono_ns();
    for w in g.workers.iter().filter(|w| w.replied.swap(false, SeqCst)) {
        w.posted.store(now, SeqCst);
        w.go.store(true, SeqCst);
        if let Some(t) = w.thread.get() {
            t.unpark();
        }
    }
}

/// A message thread: answers its workers' replies until stopped, then
/// wakes them all so they see the stop.
fn message_loop(g: &Group, sh: &Shared) {
    loop {
        // Cleared before looking, so a reply during the look is seen now
        // or sets it again for the next look: none is lost.
        g.kicked.store(false, SeqCst);
        answer_replies(g);
        if sh.stop.load(SeqCst) {
            break;
        }
        while !g.kicked.load(SeqCst) && !sh.stop.load(SeqCst) {
            thread::park();
        }
    }
    for w in &g.workers {
        if let Some(t) = w.thread.get() {
            t.unpark();
        }
    }
}

type WorkerHandle = JoinHandle<Vec<u64>>;

fn spawn_workers(cli: &Cli, groups: &[Arc<Group>], sh: &Shared) -> Result<Vec<WorkerHandle>> {
    let sleep = Duration::from_micros(cli.sleep_us);
    // All made before any thread starts, so an error leaves none waiting.
    let mut works = (0..groups.len() * cli.workers)
        .map(|_| Work::new(cli))
        .collect::<Result<Vec<_>>>()?
        .into_iter();
    let mut handles = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for (w, work) in (0..cli.workers).zip(works.by_ref()) {
            let (g2, sh) = (g.clone(), sh.clone());
            let h = thread::spawn(move || {
                sh.announce(group_of(i));
                worker_loop(&g2, w, &sh, work, sleep)
            });
            // Set before the start line, so every wakeup finds it.
            let _ = g.workers[w].thread.set(h.thread().clone());
            handles.push(h);
        }
    }
    Ok(handles)
}

fn spawn_messengers(groups: &[Arc<Group>], sh: &Shared) -> Vec<JoinHandle<()>> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let (g2, sh) = (g.clone(), sh.clone());
            let h = thread::spawn(move || {
                // Before the first reply, so every worker can wake us.
                let _ = g2.thread.get_or_init(thread::current);
                sh.announce(group_of(i));
                message_loop(&g2, &sh);
            });
            let _ = g.thread.get_or_init(|| h.thread().clone());
            h
        })
        .collect()
}

/// The locality group of message thread `i` and its workers.
fn group_of(i: usize) -> u32 {
    u32::try_from(i).map_or(u32::MAX, |i| i.saturating_add(1))
}

fn open_queue() -> Result<Queue> {
    Queue::open().context(
        "--hint-groups: cannot open the locality scheduler's hint queue \
         (is `enoki load locality` running?)",
    )
}

/// Reads every thread's id, and hints them if asked to.
fn collect_and_hint(
    queue: Option<&mut Queue>,
    tids: &mpsc::Receiver<(i32, u32)>,
    n: usize,
) -> Result<()> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(
            tids.recv_timeout(ANSWER_TIMEOUT)
                .context("a thread did not start")?,
        );
    }
    let Some(queue) = queue else {
        return Ok(());
    };
    for (group, cpu) in hint_groups(queue, &got, Wait::Total(ANSWER_TIMEOUT))? {
        println!("group.{group}.home {cpu}");
    }
    println!("hints_taken {}", queue.stats()?.taken);
    Ok(())
}

fn check(cli: &Cli) -> Result<()> {
    ensure!(
        cli.message_threads > 0 && cli.workers > 0,
        "need at least one message thread and one worker"
    );
    ensure!(
        !cli.hint_groups || group_of(cli.message_threads - 1) <= MAX_GROUPS,
        "--hint-groups: at most {MAX_GROUPS} message threads (one group each)"
    );
    let secs = |s: f64| Duration::try_from_secs_f64(s).ok();
    ensure!(
        cli.runtime_s > 0.0 && secs(cli.runtime_s).is_some() && secs(cli.warmup_s).is_some(),
        "need a positive runtime and a warm-up of 0 or more seconds"
    );
    Ok(())
}

/// Requests completed by all workers so far.
fn requests_done(groups: &[Arc<Group>]) -> u64 {
    groups.iter().map(|g| g.requests_done()).sum()
}

/// Runs the warm-up and the measured window; requests per second in it.
fn measure(cli: &Cli, groups: &[Arc<Group>], sh: &Shared) -> f64 {
    thread::sleep(Duration::from_secs_f64(cli.warmup_s));
    let t0 = mono_ns();
    sh.window.from.store(t0, SeqCst);
    let done0 = requests_done(groups);
    thread::sleep(Duration::from_secs_f64(cli.runtime_s));
    let done1 = requests_done(groups);
    let t1 = mono_ns();
    sh.window.until.store(t1, SeqCst);
    sh.stop.store(true, SeqCst);
    // A message thread may be waiting for replies that never come.
    for g in groups {
        g.wake_messenger();
    }
    (done1 - done0) as f64 / ((t1 - t0) as f64 / 1e9)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    check(&cli)?;
    let (sorted, rps) = run(&cli)?;
    report(&cli, &sorted, rps);
    ensure!(!sorted.is_empty(), "no wakeups measured");
    Ok(())
}

/// The whole benchmark: the sorted wakeup latencies of the measured
/// window, ns, and the requests per second in it.
fn run(cli: &Cli) -> Result<(Vec<u64>, f64)> {
    // Before any thread exists: a missing scheduler fails at once, clearly.
    let mut queue = cli.hint_groups.then(open_queue).transpose()?;
    let threads = cli.message_threads * (cli.workers + 1);
    let (tid_tx, tid_rx) = mpsc::channel();
    let sh = Shared {
        stop: Arc::new(AtomicBool::new(false)),
        window: Arc::new(Window {
            from: AtomicU64::new(u64::MAX),
            until: AtomicU64::new(u64::MAX),
        }),
        tids: tid_tx,
        start: Arc::new(Barrier::new(threads + 1)),
    };
    let groups: Vec<Arc<Group>> = (0..cli.message_threads)
        .map(|_| Group::new(cli.workers))
        .collect();
    let worker_handles = spawn_workers(cli, &groups, &sh)?;
    let msg_handles = spawn_messengers(&groups, &sh);
    // On an error main returns, and the process exits with every thread
    // still at the start line.
    collect_and_hint(queue.as_mut(), &tid_rx, threads)?;
    sh.start.wait();

    let rps = measure(cli, &groups, &sh);
    for h in msg_handles {
        h.join().map_err(|_| anyhow!("a message thread panicked"))?;
    }
    let mut all: Vec<u64> = Vec::new();
    for h in worker_handles {
        all.extend(h.join().map_err(|_| anyhow!("a worker panicked"))?);
    }
    all.sort_unstable();
    Ok((all, rps))
}

/// What each request does, for the first line of the report.
fn work_line(cli: &Cli) -> String {
    match cli.work_us {
        Some(us) => format!("work_us {us}"),
        None => format!(
            "cache_footprint_kb {} matrix_side {} operations {}",
            cli.cache_footprint_kb,
            MatrixWork::side_for(cli.cache_footprint_kb.saturating_mul(1024)),
            cli.operations
        ),
    }
}

fn report(cli: &Cli, sorted: &[u64], requests_per_sec: f64) {
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "message_threads {} workers {} {} sleep_us {}",
        cli.message_threads,
        cli.workers,
        work_line(cli),
        cli.sleep_us
    );
    let n = sorted.len();
    println!("samples {n}");
    if n < ENOUGH_SAMPLES {
        // Say how thin the tail is, so nobody reads more into p99 than it holds.
        let tail = n - percentile_rank(n, 99.0).saturating_sub(1);
        println!(
            "samples_note too few for p99.9: {n} < {ENOUGH_SAMPLES}; \
             p99 rests on the {tail} largest"
        );
    }
    println!("p50_us {:.1}", us(percentile(sorted, 50.0)));
    println!("p90_us {:.1}", us(percentile(sorted, 90.0)));
    println!("p99_us {:.1}", us(percentile(sorted, 99.0)));
    if n >= ENOUGH_SAMPLES {
        println!("p999_us {:.1}", us(percentile(sorted, 99.9)));
    }
    println!("max_us {:.1}", us(sorted.last().copied().unwrap_or(0)));
    println!("requests_per_sec {requests_per_sec:.1}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &str) -> Result<Cli> {
        Ok(Cli::try_parse_from(args.split_whitespace())?)
    }

    #[test]
    fn takes_the_bench_commands() {
        // bench/src/workloads.rs's A/B workloads and the locality table's.
        let ab = cli(
            "enoki-schbench -m 2 -t 4 -w 1 -r 4 --cache-footprint-kb 256 \
                      --operations 4 --sleep-us 100",
        )
        .unwrap();
        assert_eq!((ab.message_threads, ab.workers), (2, 4));
        assert_eq!(
            work_line(&ab),
            "cache_footprint_kb 256 matrix_side 104 operations 4"
        );
        let loc = cli("enoki-schbench -m 2 -t 2 -w 1 -r 5 --work-us 20 --hint-groups").unwrap();
        assert_eq!(work_line(&loc), "work_us 20");
        assert!(loc.hint_groups);
        // One kind of work or the other.
        assert!(cli("enoki-schbench --work-us 20 --operations 3").is_err());
        assert!(check(&cli("enoki-schbench -r 0").unwrap()).is_err());
        assert!(check(&cli("enoki-schbench -t 0").unwrap()).is_err());
    }

    #[test]
    fn round_trips_give_samples_and_requests() {
        let c = cli("enoki-schbench -m 2 -t 2 -w 0.05 -r 0.3 -F 16 -n 1 -s 0").unwrap();
        check(&c).unwrap();
        let (sorted, rps) = run(&c).unwrap();
        // Each measured sample is a request that ran: with tiny work,
        // hundreds in 0.3 s even on a busy machine.
        assert!(sorted.len() > 20, "{} samples", sorted.len());
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
        let per_s = sorted.len() as f64 / 0.3;
        assert!(rps > per_s / 2.0 && rps < per_s * 2.0, "{rps} vs {per_s}");
    }

    #[test]
    fn a_footprint_too_small_fails_before_any_thread() {
        let c = cli("enoki-schbench -F 0").unwrap();
        assert!(run(&c).is_err());
    }
}
