// SPDX-License-Identifier: GPL-2.0
//! `enoki-schbench`: wakeup latency in the style of schbench. Each message
//! thread repeatedly stamps the time and wakes its workers one after
//! another, then sleeps until all of them have done their work. A worker
//! measures the time from its stamp to when it runs (the wakeup latency),
//! burns `--work-us` of CPU time, reports back and sleeps again. Latencies
//! of the warm-up are dropped. Prints `p50_us`, `p90_us`, `p99_us`,
//! `max_us`, `samples` and `rounds_per_sec`.
//!
//! With `--hint-groups` (the paper's Table 6, "Hints"), before any round
//! it hints each message thread and its workers into one group of the
//! locality scheduler (`enoki load locality`; message thread i's group is
//! i + 1), in one batch, and waits for the scheduler's answers, each
//! group's home CPU (printed as `group.G.home CPU`, and `hints_taken N`).
//! (GPL-2.0, unlike the other workloads: it links the hint queue and the
//! locality scheduler's hint types, enoki-hints and enoki-locality.)

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use clap::Parser;
use enoki_bench_guest::{gettid, mono_ns, percentile, spin_cpu_ns};
use enoki_hints::locality::{hint_groups, Queue, Wait};
use enoki_locality::MAX_GROUPS;

/// How long to wait for the scheduler's answers to the hints.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "schbench-style wakeup latency")]
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
    /// CPU time each worker burns per wakeup, µs.
    #[arg(long, default_value_t = 2000)]
    work_us: u64,
    /// Time a message thread sleeps between rounds, µs.
    #[arg(long, default_value_t = 1000)]
    sleep_us: u64,
    /// Hint each message thread and its workers into one group of the
    /// locality scheduler (message thread i: group i + 1) before the first
    /// round; fails if its hint queue cannot be opened or nothing answers.
    #[arg(long)]
    hint_groups: bool,
}

struct Worker {
    /// When its message thread woke it (mono ns).
    posted: AtomicU64,
    go: AtomicBool,
    thread: OnceLock<Thread>,
}

struct Group {
    workers: Vec<Worker>,
    pending: AtomicUsize,
    thread: OnceLock<Thread>,
    rounds: AtomicU64,
}

/// What every thread shares: when to stop, where measuring starts, how
/// each thread announces its kernel id (with its group: message thread
/// i's index + 1) and the start line it waits at until the hints are in.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    measure_from: Arc<AtomicU64>,
    tids: mpsc::Sender<(i32, u32)>,
    start: Arc<Barrier>,
}

impl Shared {
    /// Called first in every thread: the main thread hints by these ids,
    /// and no thread runs a round before the hints are in (a hint takes
    /// effect at the thread's next wakeup: the barrier's).
    fn announce(&self, group: u32) {
        // A closed channel means main gave up (and is exiting): nothing to do.
        let _ = self.tids.send((gettid(), group));
        self.start.wait();
    }
}

fn new_group(workers: usize) -> Arc<Group> {
    Arc::new(Group {
        workers: (0..workers)
            .map(|_| Worker {
                posted: AtomicU64::new(0),
                go: AtomicBool::new(false),
                thread: OnceLock::new(),
            })
            .collect(),
        pending: AtomicUsize::new(0),
        thread: OnceLock::new(),
        rounds: AtomicU64::new(0),
    })
}

/// Worker `w` of `g`: its wakeup latencies measured after the warm-up.
fn worker_loop(g: &Group, w: usize, sh: &Shared, work_ns: u64) -> Vec<u64> {
    let me = &g.workers[w];
    let mut lat = Vec::with_capacity(1 << 16);
    loop {
        while !me.go.swap(false, SeqCst) {
            if sh.stop.load(SeqCst) {
                return lat;
            }
            thread::park();
        }
        let now = mono_ns();
        let posted = me.posted.load(SeqCst);
        if posted >= sh.measure_from.load(SeqCst) {
            lat.push(now.saturating_sub(posted));
        }
        spin_cpu_ns(work_ns);
        if g.pending.fetch_sub(1, SeqCst) == 1 {
            if let Some(t) = g.thread.get() {
                t.unpark();
            }
        }
    }
}

/// A message thread: rounds of waking every worker of `g` until stopped.
fn message_loop(g: &Group, sh: &Shared, sleep: Duration) {
    while !sh.stop.load(SeqCst) {
        g.pending.store(g.workers.len(), SeqCst);
        for w in &g.workers {
            w.posted.store(mono_ns(), SeqCst);
            w.go.store(true, SeqCst);
            if let Some(t) = w.thread.get() {
                t.unpark();
            }
        }
        while g.pending.load(SeqCst) > 0 {
            thread::park();
        }
        g.rounds.fetch_add(1, SeqCst);
        if !sleep.is_zero() {
            thread::sleep(sleep);
        }
    }
    for w in &g.workers {
        if let Some(t) = w.thread.get() {
            t.unpark();
        }
    }
}

fn spawn_workers(cli: &Cli, groups: &[Arc<Group>], sh: &Shared) -> Vec<JoinHandle<Vec<u64>>> {
    let mut handles = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for w in 0..cli.workers {
            let (g2, sh) = (g.clone(), sh.clone());
            let work_ns = cli.work_us * 1000;
            let h = thread::spawn(move || {
                sh.announce(group_of(i));
                worker_loop(&g2, w, &sh, work_ns)
            });
            // Set before the start line, so every wakeup finds it.
            let _ = g.workers[w].thread.set(h.thread().clone());
            handles.push(h);
        }
    }
    handles
}

fn spawn_messengers(cli: &Cli, groups: &[Arc<Group>], sh: &Shared) -> Vec<JoinHandle<()>> {
    let sleep = Duration::from_micros(cli.sleep_us);
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let (g2, sh) = (g.clone(), sh.clone());
            let h = thread::spawn(move || {
                // Before the first wakeup, so the last worker can always wake us.
                let _ = g2.thread.get_or_init(thread::current);
                sh.announce(group_of(i));
                message_loop(&g2, &sh, sleep);
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
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    check(&cli)?;
    // Before any thread exists: a missing scheduler fails at once, clearly.
    let mut queue = cli.hint_groups.then(open_queue).transpose()?;
    let threads = cli.message_threads * (cli.workers + 1);
    let (tid_tx, tid_rx) = mpsc::channel();
    let sh = Shared {
        stop: Arc::new(AtomicBool::new(false)),
        measure_from: Arc::new(AtomicU64::new(u64::MAX)),
        tids: tid_tx,
        start: Arc::new(Barrier::new(threads + 1)),
    };
    let groups: Vec<Arc<Group>> = (0..cli.message_threads)
        .map(|_| new_group(cli.workers))
        .collect();
    let worker_handles = spawn_workers(&cli, &groups, &sh);
    let msg_handles = spawn_messengers(&cli, &groups, &sh);
    // On an error main returns, and the process exits with every thread
    // still at the start line.
    collect_and_hint(queue.as_mut(), &tid_rx, threads)?;
    sh.start.wait();

    thread::sleep(Duration::from_secs_f64(cli.warmup_s));
    let rounds0: u64 = groups.iter().map(|g| g.rounds.load(SeqCst)).sum();
    let t0 = mono_ns();
    sh.measure_from.store(t0, SeqCst);
    thread::sleep(Duration::from_secs_f64(cli.runtime_s));
    let rounds1: u64 = groups.iter().map(|g| g.rounds.load(SeqCst)).sum();
    let t1 = mono_ns();
    sh.stop.store(true, SeqCst);
    for h in msg_handles {
        h.join().map_err(|_| anyhow!("a message thread panicked"))?;
    }
    let mut all: Vec<u64> = Vec::new();
    for h in worker_handles {
        all.extend(h.join().map_err(|_| anyhow!("a worker panicked"))?);
    }
    all.sort_unstable();
    report(
        &cli,
        &all,
        (rounds1 - rounds0) as f64 / ((t1 - t0) as f64 / 1e9),
    );
    ensure!(!all.is_empty(), "no wakeups measured");
    Ok(())
}

fn report(cli: &Cli, sorted: &[u64], rounds_per_sec: f64) {
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "message_threads {} workers {} work_us {} sleep_us {}",
        cli.message_threads, cli.workers, cli.work_us, cli.sleep_us
    );
    println!("samples {}", sorted.len());
    println!("p50_us {:.1}", us(percentile(sorted, 50.0)));
    println!("p90_us {:.1}", us(percentile(sorted, 90.0)));
    println!("p99_us {:.1}", us(percentile(sorted, 99.0)));
    println!("max_us {:.1}", us(sorted.last().copied().unwrap_or(0)));
    println!("rounds_per_sec {rounds_per_sec:.1}");
}
