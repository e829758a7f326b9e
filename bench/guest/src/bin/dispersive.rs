// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-dispersive`: a request server with dispersive service times and
//! an open-loop load generator, the shape of the paper's RocksDB benchmark
//! (section 5.4) without a database.
//!
//! - A load-generator thread, pinned to `--loadgen-cpu`, issues requests
//!   at Poisson arrival times (`--rate` per second). A request is short
//!   (`--short-us`, 4) or, with probability `--long-permille`/1000 (0.5 %),
//!   long (`--long-us`, 10 ms). Its latency counts from its *scheduled*
//!   arrival, so a late generator does not hide queueing.
//! - `--workers` threads on `--worker-cpus` take requests from one FIFO and
//!   serve each by burning its service time in their own CPU time, so time
//!   spent preempted is not service.
//! - With `--policy ext` the workers opt in to the Enoki scheduler
//!   (SCHED_EXT); the load generator and the batch job stay on CFS.
//! - `--batch-threads` CPU-bound threads, in a child process at
//!   `--batch-nice`, share the worker CPUs: their CPU share is reported.
//!
//! Output, `key value` lines: offered and achieved rates, counts, short
//! requests' p50/p99/p99.9 latency, every request's p99, and the batch
//! job's share of the worker CPUs during the run.

use std::collections::VecDeque;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use enoki_bench_guest::{
    gettid, mono_ns, parse_cpu_list, percentile, set_affinity, set_nice, spin_cpu_ns,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

/// Linux's SCHED_EXT policy number.
const SCHED_EXT: i32 = 7;

#[derive(Parser)]
#[command(about = "Dispersive request load: Poisson arrivals, short and long requests")]
struct Cli {
    #[command(subcommand)]
    batch: Option<Hidden>,
    #[command(flatten)]
    load: Load,
}

#[derive(Subcommand)]
enum Hidden {
    /// The batch job's process (started by the server itself).
    #[command(hide = true)]
    BatchChild {
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        cpus: String,
        #[arg(long, allow_negative_numbers = true)]
        nice: i32,
    },
}

#[derive(Parser, Clone)]
struct Load {
    /// Server worker threads.
    #[arg(long, default_value_t = 50)]
    workers: usize,
    /// CPUs the workers (and the batch job) may use, kernel list syntax.
    #[arg(long, default_value = "2-7")]
    worker_cpus: String,
    /// CPU of the load-generator thread.
    #[arg(long, default_value_t = 0)]
    loadgen_cpu: usize,
    /// Workers' scheduling policy.
    #[arg(long, value_enum, default_value_t = Policy::Normal)]
    policy: Policy,
    /// Workers' nice value.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    worker_nice: i32,
    /// Offered load, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long requests are generated.
    #[arg(long, default_value_t = 3000)]
    duration_ms: u64,
    #[arg(long, default_value_t = 4)]
    short_us: u64,
    #[arg(long, default_value_t = 10_000)]
    long_us: u64,
    /// Long requests per thousand.
    #[arg(long, default_value_t = 5)]
    long_permille: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// CPU-bound threads of a batch job on the worker CPUs (0: none).
    #[arg(long, default_value_t = 0)]
    batch_threads: usize,
    #[arg(long, default_value_t = 19, allow_negative_numbers = true)]
    batch_nice: i32,
    /// After generation stops, how long outstanding requests may take.
    #[arg(long, default_value_t = 10_000)]
    drain_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Policy {
    Normal,
    Ext,
}

/// One request: when it was due and how much CPU it needs.
#[derive(Clone, Copy)]
struct Request {
    due_ns: u64,
    service_ns: u64,
    long: bool,
}

/// What a worker reports per request.
#[derive(Clone, Copy)]
struct Done {
    latency_ns: u64,
    long: bool,
}

/// The request FIFO between the load generator and the workers.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Request>,
    closed: bool,
    done: Vec<Done>,
}

impl Queue {
    fn push(&self, r: Request) {
        lock(&self.state).pending.push_back(r);
        self.ready.notify_one();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    /// The next request, or `None` once closed and empty.
    fn pop(&self) -> Option<Request> {
        let mut s = lock(&self.state);
        loop {
            if let Some(r) = s.pending.pop_front() {
                return Some(r);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request mix and arrival process, reproducible from the seed.
struct Arrivals {
    rng: ChaCha8Rng,
    gap: Exp<f64>,
    short_ns: u64,
    long_ns: u64,
    long_permille: u32,
}

impl Arrivals {
    fn new(l: &Load) -> Result<Self> {
        ensure!(l.rate > 0.0, "--rate must be positive");
        Ok(Arrivals {
            rng: ChaCha8Rng::seed_from_u64(l.seed),
            gap: Exp::new(l.rate / 1e9).context("arrival rate")?,
            short_ns: l.short_us * 1000,
            long_ns: l.long_us * 1000,
            long_permille: l.long_permille,
        })
    }

    /// Nanoseconds to the next arrival.
    fn next_gap_ns(&mut self) -> u64 {
        self.gap.sample(&mut self.rng) as u64
    }

    /// Service time of the next request, and whether it is long.
    fn next_service(&mut self) -> (u64, bool) {
        let long = self.rng.random_range(0..1000) < self.long_permille;
        (if long { self.long_ns } else { self.short_ns }, long)
    }
}

fn set_policy_ext() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, SCHED_EXT, &param) };
    if rc != 0 {
        bail!(
            "sched_setscheduler(SCHED_EXT): {} (is an Enoki scheduler loaded?)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A worker's CPUs, nice and policy, on the calling thread.
fn set_up_worker(cpus: &[usize], l: &Load) -> Result<()> {
    set_affinity(gettid(), cpus)?;
    set_nice(gettid(), l.worker_nice)?;
    if l.policy == Policy::Ext {
        set_policy_ext()?;
    }
    Ok(())
}

/// Serves requests until the queue is closed and empty.
fn worker(queue: &Queue) {
    while let Some(r) = queue.pop() {
        spin_cpu_ns(r.service_ns);
        let latency_ns = mono_ns().saturating_sub(r.due_ns);
        lock(&queue.state).done.push(Done {
            latency_ns,
            long: r.long,
        });
    }
}

/// Requests issued, and how many of them long.
#[derive(Default)]
struct Issued {
    all: u64,
    long: u64,
}

/// Issues requests at their Poisson times until `end_ns`.
fn generate(queue: &Queue, l: &Load, end_ns: u64) -> Result<Issued> {
    set_affinity(gettid(), &[l.loadgen_cpu])?;
    // Wake-ups on time without spinning long (see wait_until).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut arrivals = Arrivals::new(l)?;
    let mut due = mono_ns();
    let mut issued = Issued::default();
    loop {
        due += arrivals.next_gap_ns();
        if due >= end_ns {
            return Ok(issued);
        }
        wait_until(due);
        let (service_ns, long) = arrivals.next_service();
        queue.push(Request {
            due_ns: due,
            service_ns,
            long,
        });
        issued.all += 1;
        issued.long += u64::from(long);
    }
}

/// Sleeps most of the way (with a 1 ns timer slack, so the sleep does not
/// overshoot by the default 50 us and bunch arrivals at high rates), then
/// spins the rest. The spin stays short: where every vCPU shares one host
/// thread (TCG), a spinning load generator takes time from the workers.
fn wait_until(due_ns: u64) {
    const SPIN_NS: u64 = 50_000;
    let now = mono_ns();
    if due_ns > now + SPIN_NS {
        thread::sleep(Duration::from_nanos(due_ns - now - SPIN_NS));
    }
    while mono_ns() < due_ns {
        std::hint::spin_loop();
    }
}

/// The batch job: a child process of spinners, and its CPU time so far.
struct Batch {
    child: Child,
}

impl Batch {
    fn start(l: &Load) -> Result<Option<Batch>> {
        if l.batch_threads == 0 {
            return Ok(None);
        }
        let child = Command::new("/proc/self/exe")
            .args(["batch-child", "--threads"])
            .arg(l.batch_threads.to_string())
            .args(["--cpus", &l.worker_cpus])
            .arg(format!("--nice={}", l.batch_nice))
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the batch job")?;
        let mut batch = Batch { child };
        // Measure from when every spinner runs.
        let mut byte = [0u8; 1];
        if let Some(out) = batch.child.stdout.as_mut() {
            out.read_exact(&mut byte).context("batch job start")?;
        }
        Ok(Some(batch))
    }

    /// CPU time of all its threads, ns (utime + stime from /proc).
    fn cpu_ns(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        let after = text.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat, counted from the state (field 3).
        let ticks: u64 = f
            .get(11..13)
            .unwrap_or(&[])
            .iter()
            .filter_map(|s| s.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf has no memory arguments.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(ticks * 1_000_000_000 / hz)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn batch_child(threads: usize, cpus: &str, nice: i32) -> Result<()> {
    let cpus = parse_cpu_list(cpus)?;
    // Before the threads exist: they inherit it (nice is per thread).
    set_nice(gettid(), nice)?;
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    for _ in 0..threads {
        let (cpus, ready) = (cpus.clone(), ready.clone());
        thread::spawn(move || {
            let _ = set_affinity(gettid(), &cpus);
            ready.wait();
            loop {
                spin_cpu_ns(1_000_000);
            }
        });
    }
    ready.wait();
    println!("r");
    loop {
        thread::park();
    }
}

fn serve(l: &Load) -> Result<()> {
    let cpus = parse_cpu_list(&l.worker_cpus)?;
    ensure!(
        !cpus.is_empty() && l.workers > 0,
        "no workers or no worker CPUs"
    );
    let queue = Arc::new(Queue::default());
    let failed = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(l.workers + 1));
    let workers: Vec<_> = (0..l.workers)
        .map(|_| {
            let (queue, cpus, l) = (queue.clone(), cpus.clone(), l.clone());
            let (failed, ready) = (failed.clone(), ready.clone());
            thread::spawn(move || {
                let setup = set_up_worker(&cpus, &l);
                if let Err(e) = &setup {
                    eprintln!("worker: {e:#}");
                    failed.store(true, SeqCst);
                }
                ready.wait();
                if setup.is_ok() {
                    worker(&queue);
                }
            })
        })
        .collect();
    // Every worker runs under its policy before the first request, and a
    // worker that cannot fails the run before any load.
    ready.wait();
    if failed.load(SeqCst) {
        queue.close();
        bail!("a worker could not be set up (see above)");
    }
    let batch = Batch::start(l)?;
    let batch_before = batch.as_ref().map(Batch::cpu_ns).transpose()?;
    let start = mono_ns();
    let end = start + l.duration_ms * 1_000_000;
    let issued = generate(&queue, l, end)?;
    let window_ns = mono_ns() - start;
    let batch_ns = match (&batch, batch_before) {
        (Some(b), Some(before)) => b.cpu_ns()?.saturating_sub(before),
        _ => 0,
    };
    let undone = drain(&queue, issued.all, l.drain_ms);
    queue.close();
    if let Some(b) = batch {
        b.stop();
    }
    if undone == 0 {
        for w in workers {
            let _ = w.join();
        }
    }
    let done = std::mem::take(&mut lock(&queue.state).done);
    report(l, &issued, undone, window_ns, &done);
    let share = batch_ns as f64 / (window_ns as f64 * cpus.len() as f64);
    println!("batch_cpu_share {share:.4}");
    Ok(())
}

/// Waits up to `ms` for the workers to finish the `issued` requests;
/// returns how many are not done.
fn drain(queue: &Queue, issued: u64, ms: u64) -> u64 {
    let deadline = mono_ns() + ms * 1_000_000;
    loop {
        let undone = issued.saturating_sub(lock(&queue.state).done.len() as u64);
        if undone == 0 || mono_ns() > deadline {
            return undone;
        }
        // Polling, not a handshake: this only bounds the report's wait.
        thread::sleep(Duration::from_millis(5));
    }
}

fn report(l: &Load, issued: &Issued, undone: u64, window_ns: u64, done: &[Done]) {
    let mut short: Vec<u64> = done
        .iter()
        .filter(|d| !d.long)
        .map(|d| d.latency_ns)
        .collect();
    let mut all: Vec<u64> = done.iter().map(|d| d.latency_ns).collect();
    short.sort_unstable();
    all.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!("offered_rps {:.1}", l.rate);
    println!(
        "achieved_rps {:.1}",
        done.len() as f64 * 1e9 / window_ns as f64
    );
    println!("requests {}", issued.all);
    println!("short_requests {}", issued.all - issued.long);
    println!("long_requests {}", issued.long);
    println!("completed {}", done.len());
    println!("undone {undone}");
    println!("samples {}", short.len());
    println!("short_p50_us {:.1}", us(percentile(&short, 50.0)));
    println!("short_p99_us {:.1}", us(percentile(&short, 99.0)));
    println!("short_p999_us {:.1}", us(percentile(&short, 99.9)));
    println!("all_p99_us {:.1}", us(percentile(&all, 99.0)));
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.batch {
        Some(Hidden::BatchChild {
            threads,
            cpus,
            nice,
        }) => batch_child(threads, &cpus, nice),
        None => serve(&cli.load),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Load {
        let mut v = vec!["enoki-dispersive"];
        v.extend_from_slice(args);
        Cli::parse_from(v).load
    }

    #[test]
    fn arrivals_have_the_asked_rate_and_mix() {
        let mut a = Arrivals::new(&load(&["--rate", "2000", "--long-permille", "50"])).unwrap();
        let n = 100_000;
        let total: u64 = (0..n).map(|_| a.next_gap_ns()).sum();
        let mean_us = total as f64 / n as f64 / 1000.0;
        assert!(
            (480.0..520.0).contains(&mean_us),
            "mean gap {mean_us} us, want 500"
        );
        let long = (0..n).filter(|_| a.next_service().1).count();
        assert!(
            (4_500..5_500).contains(&long),
            "{long} long of {n}, want 5 %"
        );
        assert_eq!(a.next_service().0 % 1000, 0, "whole microseconds");
    }

    #[test]
    fn a_zero_rate_is_refused() {
        assert!(Arrivals::new(&load(&["--rate", "0"])).is_err());
    }
}
