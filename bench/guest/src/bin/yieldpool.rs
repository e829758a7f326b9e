// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-yieldpool`: a pool of threads that take turns on a lock and
//! yield: each of `--threads` unpinned threads does `--ops` operations, one
//! operation being lock a shared mutex, work about `--work-ns` inside it,
//! unlock, `sched_yield()`. The shape of spin-then-yield thread pools: it
//! measures how cheaply a yield hands the CPU on and whether it wastes a
//! scheduling round. Prints `ops_per_sec` (all threads), `p95_us` (one
//! operation, lock to the yield's return), `usr_s` and `sys_s`.

use std::sync::{Barrier, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Parser;
use enoki_bench_guest::{mono_ns, percentile, process_cpu_s, spin_wall_ns};

#[derive(Parser)]
#[command(about = "Threads taking turns on a lock and yielding")]
struct Cli {
    #[arg(long, default_value_t = 32)]
    threads: usize,
    /// Operations of each thread.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Work inside the lock, ns of wall time.
    #[arg(long, default_value_t = 1000)]
    work_ns: u64,
}

/// One thread's operations; each one's duration, ns.
fn run(lock: &Mutex<u64>, start: &Barrier, ops: usize, work_ns: u64) -> Result<Vec<u64>> {
    let mut took = Vec::with_capacity(ops);
    start.wait();
    for _ in 0..ops {
        let t = mono_ns();
        {
            let mut n = lock.lock().map_err(|_| anyhow!("a thread panicked"))?;
            *n += 1;
            spin_wall_ns(work_ns);
        }
        std::thread::yield_now();
        took.push(mono_ns().saturating_sub(t));
    }
    Ok(took)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let lock = Mutex::new(0u64);
    let start = Barrier::new(cli.threads + 1);
    let began = std::thread::scope(|s| -> Result<(Instant, Vec<u64>)> {
        let workers: Vec<_> = (0..cli.threads)
            .map(|_| s.spawn(|| run(&lock, &start, cli.ops, cli.work_ns)))
            .collect();
        start.wait();
        let began = Instant::now();
        let mut all = Vec::with_capacity(cli.threads * cli.ops);
        for w in workers {
            all.extend(w.join().map_err(|_| anyhow!("a thread panicked"))??);
        }
        Ok((began, all))
    })?;
    let (began, mut took) = began;
    let elapsed = began.elapsed().as_secs_f64();
    took.sort_unstable();
    let done = *lock.lock().map_err(|_| anyhow!("a thread panicked"))?;
    let (usr, sys) = process_cpu_s()?;
    println!("threads {} ops {done} total_s {elapsed:.3}", cli.threads);
    println!("ops_per_sec {:.0}", done as f64 / elapsed);
    println!("p95_us {:.1}", percentile(&took, 95.0) as f64 / 1e3);
    println!("usr_s {usr:.3}");
    println!("sys_s {sys:.3}");
    Ok(())
}
