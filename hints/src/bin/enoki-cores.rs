// SPDX-License-Identifier: GPL-2.0
//! `enoki-cores`: a process that asks the Arachne core arbiter
//! (`schedulers/arachne`) for dedicated CPUs, then spins threads and
//! reports where they ran.
//!
//! With `--cores N` it sends a `CoreRequest` and waits for the scheduler's
//! `CoreGrant` on the reverse ring before it starts its threads; with
//! `--cores 0` it asks for nothing (a neighbour that must keep off the
//! granted CPUs). The report gives the grant (`grant.mask`, CPUs as a bit
//! mask), the CPUs the threads ran on (`used.mask`) and how many samples
//! fell outside the grant (`outside`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use enoki_arachne::{CoreGrant, CoreRequest};
use enoki_hints::HintQueue;

#[derive(Parser)]
#[command(version, about = "Ask the Arachne arbiter for CPUs and spin on them")]
struct Cli {
    /// CPUs to ask for (0: ask for none).
    #[arg(long, default_value_t = 2)]
    cores: u32,
    /// Spinning threads.
    #[arg(long, default_value_t = 4)]
    threads: u32,
    /// How long they spin.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
}

/// The CPUs one thread ran on, as a bit mask (CPUs past 63 are counted as
/// outside any mask), sampled every few microseconds of spinning.
fn spin(duration: Duration) -> (u64, u64) {
    let end = Instant::now() + duration;
    let (mut mask, mut beyond) = (0u64, 0u64);
    while Instant::now() < end {
        // SAFETY: sched_getcpu() has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        match u32::try_from(cpu).ok().and_then(|c| 1u64.checked_shl(c)) {
            Some(bit) => mask |= bit,
            None => beyond += 1,
        }
    }
    (mask, beyond)
}

/// Asks for `cores` CPUs and waits for the scheduler's answer.
fn ask(cores: u32) -> Result<(HintQueue<CoreRequest, CoreGrant>, CoreGrant)> {
    let mut queue = HintQueue::<CoreRequest, CoreGrant>::open()?;
    queue
        .send(0, &CoreRequest::cores(cores, 0))
        .context("asking for CPUs")?;
    let grant = queue
        .recv(Some(Duration::from_secs(10)))?
        .context("no CoreGrant on the reverse ring")?;
    Ok((queue, grant.hint))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Kept open while the threads run: closing it gives the CPUs back.
    let granted = (cli.cores > 0).then(|| ask(cli.cores)).transpose()?;
    let grant_mask = granted.as_ref().map_or(0, |(_, g)| g.mask[0]);
    if let Some((_, g)) = &granted {
        println!("grant.mask {:#x}", g.mask[0]);
        println!("grant.cpus {}", g.count());
    }
    let duration = Duration::from_millis(cli.duration_ms);
    let threads: Vec<_> = (0..cli.threads)
        .map(|_| std::thread::spawn(move || spin(duration)))
        .collect();
    let (mut used, mut beyond) = (0u64, 0u64);
    for t in threads {
        let (mask, n) = t.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?;
        used |= mask;
        beyond += n;
    }
    println!("used.mask {used:#x}");
    let outside = if granted.is_some() {
        used & !grant_mask
    } else {
        0
    };
    println!(
        "outside {}",
        u64::from(outside != 0) + beyond * u64::from(granted.is_some())
    );
    Ok(())
}
