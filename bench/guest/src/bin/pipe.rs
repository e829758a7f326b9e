// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-pipe`: pipe ping-pong between two processes, like
//! `perf bench sched pipe`: each side writes one byte and blocks reading the
//! reply, so every message is one wakeup of a sleeping task. Prints
//! `usecs_per_op X` (one op = one round trip, as perf counts it) and
//! `ops_per_sec Y`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use enoki_bench_guest::{parse_cpu_list, set_affinity};

#[derive(Parser)]
#[command(about = "Pipe ping-pong latency between two processes")]
struct Cli {
    /// Round trips.
    #[arg(long, short, default_value_t = 20_000)]
    loops: u64,
    /// CPUs: one CPU (both pinned to it), two (one process on each), or
    /// `any` (no pinning: the scheduler places them).
    #[arg(long, default_value = "any")]
    cpus: String,
    /// Internal: run as the echoing child, pinned to this CPU list.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(pin) = cli.child {
        return child(&pin);
    }
    let cpus = if cli.cpus == "any" {
        Vec::new()
    } else {
        parse_cpu_list(&cli.cpus)?
    };
    ensure!(cpus.len() <= 2, "--cpus takes one or two CPUs, or any");
    let (mine, theirs) = match cpus.as_slice() {
        [] => (None, "any".to_string()),
        [a] => (Some(*a), a.to_string()),
        [a, b] => (Some(*a), b.to_string()),
        _ => unreachable!(),
    };
    if let Some(cpu) = mine {
        set_affinity(0, &[cpu])?;
    }
    let exe = std::env::current_exe().context("own executable")?;
    let mut kid = Command::new(exe)
        .arg("--child")
        .arg(&theirs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the child")?;
    let mut to = kid.stdin.take().context("child stdin")?;
    let mut from = kid.stdout.take().context("child stdout")?;
    let mut byte = [0u8; 1];
    // Wait for the child to be pinned and ready.
    from.read_exact(&mut byte).context("child did not start")?;
    let start = Instant::now();
    for _ in 0..cli.loops {
        to.write_all(&byte)?;
        from.read_exact(&mut byte)?;
    }
    let elapsed = start.elapsed();
    drop(to);
    let status = kid.wait()?;
    if !status.success() {
        bail!("child failed: {status}");
    }
    let us = elapsed.as_secs_f64() * 1e6 / cli.loops as f64;
    println!(
        "loops {} cpus {} total_s {:.3}",
        cli.loops,
        cli.cpus,
        elapsed.as_secs_f64()
    );
    println!("usecs_per_op {us:.3}");
    println!("ops_per_sec {:.0}", 1e6 / us);
    Ok(())
}

fn child(pin: &str) -> Result<()> {
    if pin != "any" {
        set_affinity(0, &parse_cpu_list(pin)?)?;
    }
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut byte = [1u8; 1];
    stdout.write_all(&byte)?;
    stdout.flush()?;
    while stdin.read(&mut byte)? == 1 {
        stdout.write_all(&byte)?;
        stdout.flush()?;
    }
    Ok(())
}
