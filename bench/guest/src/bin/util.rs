// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-util`: small helpers for the benchmark scripts in the guest.
//!
//! - `datagen --bytes N [--seed S]`: deterministic, compressible text-like
//!   data on stdout (words from a fixed vocabulary with Zipf-like reuse and
//!   numbers), for the compression benchmarks.
//! - `time [-o FILE] -- CMD ARGS...`: runs CMD and prints (or writes)
//!   `elapsed_ns N` and `status S`; exits with CMD's status.
//! - `clock-check [--seconds S]`: one thread pinned to each CPU reads the
//!   monotonic clock in turn, each read after the one before it; prints
//!   `reads N backwards M max_back_ns X` and fails if the clock ever went
//!   back from one CPU to the next.

use std::io::{BufWriter, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compressible pseudo-text on stdout.
    Datagen {
        /// Size, bytes (suffixes K, M).
        #[arg(long)]
        bytes: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Runs a command and reports its wall time.
    Time {
        /// Write the report here instead of stdout.
        #[arg(short, long)]
        output: Option<String>,
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
    /// Checks that the monotonic clock never goes back across CPUs.
    ClockCheck {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
}

fn parse_size(s: &str) -> Result<u64> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    Ok(num.parse::<u64>().with_context(|| format!("size {s:?}"))? * mul)
}

/// xorshift64*: deterministic and fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

fn datagen(bytes: u64, seed: u64) -> Result<()> {
    let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    // A vocabulary of made-up words, lengths 2..10.
    let letters = b"etaoinshrdlucmfwypvbgkjqxz";
    let vocab: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let len = 2 + (rng.next() % 9) as usize;
            (0..len)
                .map(|_| letters[(rng.next() % 26).min(rng.next() % 26) as usize])
                .collect()
        })
        .collect();
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut written = 0u64;
    let mut line = Vec::with_capacity(256);
    while written < bytes {
        line.clear();
        let words = 6 + rng.next() % 10;
        for i in 0..words {
            if i > 0 {
                line.push(b' ');
            }
            // Skewed choice: small indices much more often.
            let r = rng.next();
            let idx = ((r % 4096) * ((r >> 20) % 4096) / 4096) as usize;
            if r.is_multiple_of(17) {
                line.extend_from_slice((r % 100_000).to_string().as_bytes());
            } else {
                line.extend_from_slice(&vocab[idx]);
            }
        }
        line.push(b'\n');
        let take = line.len().min((bytes - written) as usize);
        out.write_all(&line[..take])?;
        written += take as u64;
    }
    out.flush()?;
    Ok(())
}

fn time(output: Option<&str>, cmd: &[String]) -> Result<i32> {
    let start = Instant::now();
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .with_context(|| format!("running {:?}", cmd[0]));
    let elapsed = start.elapsed();
    let code = match &status {
        Ok(s) => s.code().unwrap_or(128 + 9),
        Err(_) => 127,
    };
    let report = format!("elapsed_ns {}\nstatus {code}\n", elapsed.as_nanos());
    match output {
        Some(path) => std::fs::write(path, report).with_context(|| path.to_string())?,
        None => print!("{report}"),
    }
    status?;
    Ok(code)
}

/// What [`clock_check`] saw.
#[derive(Default)]
struct ClockSeen {
    last: Option<Instant>,
    reads: u64,
    backwards: u64,
    max_back: Duration,
}

fn clock_check(seconds: u64) -> Result<i32> {
    let cpus = std::thread::available_parallelism()?.get();
    let seen = Mutex::new(ClockSeen::default());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..cpus)
            .map(|cpu| {
                let (seen, stop) = (&seen, &stop);
                s.spawn(move || -> Result<()> {
                    enoki_bench_guest::set_affinity(0, &[cpu])?;
                    while !stop.load(Ordering::Relaxed) {
                        let mut g = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        // Read under the lock: this read follows the last one.
                        let now = Instant::now();
                        if let Some(back) = g.last.and_then(|l| l.checked_duration_since(now)) {
                            g.backwards += 1;
                            g.max_back = g.max_back.max(back);
                        }
                        g.last = Some(now);
                        g.reads += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        Ok(())
    })?;
    let g = seen.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?;
    println!(
        "reads {} backwards {} max_back_ns {}",
        g.reads,
        g.backwards,
        g.max_back.as_nanos()
    );
    Ok(i32::from(g.backwards > 0))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Datagen { bytes, seed } => datagen(parse_size(&bytes)?, seed),
        Cmd::Time { output, cmd } => std::process::exit(time(output.as_deref(), &cmd)?),
        Cmd::ClockCheck { seconds } => std::process::exit(clock_check(seconds)?),
    }
}
