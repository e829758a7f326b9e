// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-pipe`: pipe ping-pong between two processes, like
//! `perf bench sched pipe`: each side writes one byte and blocks reading the
//! reply, so every message is one wakeup of a sleeping task. Prints
//! `usecs_per_op X` (one op = one round trip, as perf counts it) and
//! `ops_per_sec Y`.
//!
//! With `--pairs N`, N such pairs run at once, unpinned, all started
//! together: context-switch-heavy work (the shape of `stress-ng --switch`).
//! `ops_per_sec` is then every pair's round trips per second together, and
//! `sys_s`/`usr_s` the system and user time of all the processes: CPUs that
//! should sleep but spin in the kernel show up there.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use enoki_bench_guest::{children_cpu_s, parse_cpu_list, set_affinity};

#[derive(Parser)]
#[command(about = "Pipe ping-pong latency between two processes")]
struct Cli {
    /// Round trips (of each pair).
    #[arg(long, short, default_value_t = 20_000)]
    loops: u64,
    /// CPUs: one CPU (both pinned to it), two (one process on each), or
    /// `any` (no pinning: the scheduler places them).
    #[arg(long, default_value = "any")]
    cpus: String,
    /// Pairs running at once (more than one: unpinned only).
    #[arg(long, default_value_t = 1)]
    pairs: u32,
    /// Internal: run as the echoing child, pinned to this CPU list.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: run one unpinned pair of `--pairs`, starting on a byte
    /// from stdin once its child is ready.
    #[arg(long, hide = true)]
    pair: bool,
}

/// A started process and its pipes.
struct Peer {
    kid: Child,
    to: ChildStdin,
    from: ChildStdout,
}

impl Peer {
    /// Starts this executable with `args` and waits for its ready byte.
    fn start(args: &[&str]) -> Result<Peer> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut kid = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a child")?;
        let to = kid.stdin.take().context("child stdin")?;
        let mut from = kid.stdout.take().context("child stdout")?;
        let mut byte = [0u8; 1];
        from.read_exact(&mut byte).context("child did not start")?;
        Ok(Peer { kid, to, from })
    }

    /// Closes its stdin and waits for it to exit successfully.
    fn finish(self) -> Result<()> {
        let Peer { mut kid, to, .. } = self;
        drop(to);
        let status = kid.wait()?;
        if !status.success() {
            bail!("child failed: {status}");
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(pin) = cli.child {
        return child(&pin);
    }
    if cli.pair {
        return pair(cli.loops);
    }
    if cli.pairs > 1 {
        ensure!(cli.cpus == "any", "--pairs runs unpinned: leave out --cpus");
        return pairs(cli.pairs, cli.loops);
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
    let mut peer = Peer::start(&["--child", &theirs])?;
    let elapsed = ping_pong(&mut peer, cli.loops)?;
    peer.finish()?;
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

/// `loops` round trips with `peer`; their wall time.
fn ping_pong(peer: &mut Peer, loops: u64) -> Result<Duration> {
    let mut byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..loops {
        peer.to.write_all(&byte)?;
        peer.from.read_exact(&mut byte)?;
    }
    Ok(start.elapsed())
}

/// Runs `n` pairs of `loops` round trips at once.
fn pairs(n: u32, loops: u64) -> Result<()> {
    let loops_arg = loops.to_string();
    let mut peers = (0..n)
        .map(|_| Peer::start(&["--pair", "--loops", &loops_arg]))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    for p in &mut peers {
        p.to.write_all(&[1])?;
    }
    for p in peers {
        p.finish()?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (usr, sys) = children_cpu_s()?;
    println!("pairs {n} loops {loops} total_s {elapsed:.3}");
    println!("usecs_per_op {:.3}", elapsed * 1e6 / loops as f64);
    println!("ops_per_sec {:.0}", f64::from(n) * loops as f64 / elapsed);
    println!("usr_s {usr:.3}");
    println!("sys_s {sys:.3}");
    Ok(())
}

/// One pair of [`pairs`]: ready once its child is, then one byte from
/// stdin starts it.
fn pair(loops: u64) -> Result<()> {
    let mut peer = Peer::start(&["--child", "any"])?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&[1])?;
    stdout.flush()?;
    let mut go = [0u8; 1];
    std::io::stdin()
        .read_exact(&mut go)
        .context("no start byte")?;
    ping_pong(&mut peer, loops)?;
    peer.finish()
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
