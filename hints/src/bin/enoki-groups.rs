// SPDX-License-Identifier: GPL-2.0
//! `enoki-groups`: threads in groups that share data, hinted to the
//! locality scheduler (`schedulers/locality`), reporting where each ran.
//!
//! Each thread tells the scheduler its group through a typed hint queue,
//! then alternates a short burst of work with a short sleep, so that the
//! scheduler places it again at every wakeup, and notes the CPU it runs on
//! after each. The report says, per thread, the CPU it ran on most and how
//! often; per group, how many CPUs its threads ran on most.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use enoki_hints::HintQueue;
use enoki_locality::GroupHint;

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

fn run_thread(
    cli: &Cli,
    group: u32,
    queue: Option<&HintQueue<GroupHint>>,
    start: &Barrier,
) -> Result<Placement> {
    let hinted = queue.map(|q| q.send(0, &GroupHint { group }));
    // every thread waits here, hinted or not, so none waits forever
    start.wait();
    if let Some(sent) = hinted {
        sent.context("hinting the thread's group")?;
    }
    let end = Instant::now() + Duration::from_millis(cli.duration_ms);
    let mut samples = BTreeMap::new();
    while Instant::now() < end {
        spin_for(Duration::from_micros(cli.burst_us));
        std::thread::sleep(Duration::from_micros(cli.sleep_us));
        // SAFETY: sched_getcpu() has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        *samples.entry(cpu).or_insert(0) += 1;
    }
    Ok(Placement { group, samples })
}

fn report(placements: &[Placement]) {
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
    let queue = if cli.no_hint {
        None
    } else {
        Some(Arc::new(HintQueue::<GroupHint>::open()?))
    };
    let n = (cli.groups * cli.threads) as usize;
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n as u32)
        .map(|i| {
            let (cli, queue, start) = (cli.clone(), queue.clone(), start.clone());
            std::thread::spawn(move || {
                run_thread(&cli, i / cli.threads + 1, queue.as_deref(), &start)
            })
        })
        .collect();
    let mut placements = Vec::new();
    for h in handles {
        placements.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("a thread panicked"))??,
        );
    }
    report(&placements);
    if let Some(q) = &queue {
        println!("hints.taken {}", q.stats()?.taken);
    }
    Ok(())
}
