// SPDX-License-Identifier: GPL-2.0
//! `enoki-groups`: threads in groups that share data, hinted to the
//! locality scheduler (`schedulers/locality`), reporting where each ran.
//!
//! The main thread hints every thread's group in one batch (the hint
//! ring and one doorbell) and reads the scheduler's answers, each group's
//! home CPU, from the reverse ring. Then each thread alternates a short
//! burst of work with a short sleep, so that the scheduler places it again
//! at every wakeup, and notes the CPU it runs on after each. The report
//! says, per thread, the CPU it ran on most and how often; per group, how
//! many CPUs its threads ran on most and the home the scheduler named.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use enoki_hints::locality::{hint_groups, Queue, Wait};

/// How long to wait for each of the scheduler's answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(version, about = "Grouped threads hinted to the locality scheduler")]
struct Cli {
    /// Groups (numbered from 1).
    #[arg(long, default_value_t = 2)]
    groups: u32,
    /// Threads per group.
    #[arg(long, default_value_t = 3)]
    threads: u32,
    /// How long the threads run.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Work per burst.
    #[arg(long, default_value_t = 200)]
    burst_us: u64,
    /// Sleep between bursts.
    #[arg(long, default_value_t = 200)]
    sleep_us: u64,
    /// Send no hints (the baseline).
    #[arg(long)]
    no_hint: bool,
}

/// Where one thread ran: samples per CPU.
struct Placement {
    group: u32,
    samples: BTreeMap<i32, u64>,
}

impl Placement {
    /// The CPU it ran on most, and the share of samples there.
    fn home(&self) -> (i32, f64) {
        let total: u64 = self.samples.values().sum();
        let (cpu, n) = self
            .samples
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or((-1, 0), |(c, n)| (*c, *n));
        (cpu, n as f64 / total.max(1) as f64)
    }
}

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn run_thread(cli: &Cli, group: u32, tids: mpsc::Sender<(i32, u32)>, start: &Barrier) -> Placement {
    // A closed channel means the main thread gave up; it still waits.
    let _ = tids.send((nix::unistd::gettid().as_raw(), group));
    start.wait();
    let end = Instant::now() + Duration::from_millis(cli.duration_ms);
    let mut samples = BTreeMap::new();
    while Instant::now() < end {
        spin_for(Duration::from_micros(cli.burst_us));
        std::thread::sleep(Duration::from_micros(cli.sleep_us));
        // SAFETY: sched_getcpu() has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        *samples.entry(cpu).or_insert(0) += 1;
    }
    Placement { group, samples }
}

fn report(placements: &[Placement], homes: &BTreeMap<u32, u32>) {
    for (g, cpu) in homes {
        println!("group.{g}.home {cpu}");
    }
    let mut homes: BTreeMap<u32, Vec<i32>> = BTreeMap::new();
    for (i, p) in placements.iter().enumerate() {
        let (cpu, share) = p.home();
        println!("thread.{i}.group {}", p.group);
        println!("thread.{i}.cpu {cpu}");
        println!("thread.{i}.share {share:.3}");
        homes.entry(p.group).or_default().push(cpu);
    }
    let mut group_homes = Vec::new();
    for (g, cpus) in &homes {
        let mut distinct = cpus.clone();
        distinct.sort_unstable();
        distinct.dedup();
        println!("group.{g}.cpus {}", distinct.len());
        group_homes.extend(distinct);
    }
    let all = group_homes.len();
    group_homes.sort_unstable();
    group_homes.dedup();
    println!("groups.shared_cpus {}", all - group_homes.len());
}

fn main() -> Result<()> {
    let cli = Arc::new(Cli::parse());
    let mut queue = if cli.no_hint {
        None
    } else {
        Some(Queue::open()?)
    };
    let n = (cli.groups * cli.threads) as usize;
    let start = Arc::new(Barrier::new(n + 1));
    let (tid_tx, tid_rx) = mpsc::channel();
    let handles: Vec<_> = (0..n as u32)
        .map(|i| {
            let (cli, start, tids) = (cli.clone(), start.clone(), tid_tx.clone());
            let group = i / cli.threads + 1;
            std::thread::spawn(move || run_thread(&cli, group, tids, &start))
        })
        .collect();
    drop(tid_tx);
    let tids: Vec<(i32, u32)> = tid_rx.iter().take(n).collect();
    let homes = match queue.as_mut() {
        Some(q) => hint_groups(q, &tids, Wait::Each(ANSWER_TIMEOUT)),
        None => Ok(BTreeMap::new()),
    };
    // the threads start whatever happened, so that none waits forever
    start.wait();
    let mut placements = Vec::new();
    for h in handles {
        placements.push(h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?);
    }
    report(&placements, &homes?);
    if let Some(q) = &queue {
        println!("hints.taken {}", q.stats()?.taken);
    }
    Ok(())
}
