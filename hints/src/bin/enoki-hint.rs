// SPDX-License-Identifier: GPL-2.0
//! `enoki-hint`: talk to the running scheduler's hint queues by hand.
//!
//! Hints go as raw bytes (hex), so any scheduler's hints can be sent, and
//! so can wrong ones: this is a tool for trying a scheduler out and for
//! tests. Applications use the typed `enoki_hints::HintQueue`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use enoki_hints::{Error, RawQueue, DEVICE};

#[derive(Parser)]
#[command(version, about = "Send hints to the running Enoki scheduler")]
struct Cli {
    /// The hint device.
    #[arg(long, default_value = DEVICE)]
    device: PathBuf,
    /// Become this user first (from root; capabilities are dropped), to
    /// try the kernel's access control.
    #[arg(long)]
    uid: Option<u32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open a queue and print what the scheduler reads.
    Info,
    /// Send one hint: `enoki-hint send PID HEX` (PID 0: this process).
    /// Exits 3 if it was refused.
    Send { pid: i32, hex: String },
    /// Keep one queue open and send a hint for each `PID HEX` line read
    /// from stdin, answering `taken` or `refused REASON` per line.
    Session,
    /// Open and close a queue this many times (each must be accepted).
    Cycle { times: u32 },
    /// Send `PID HEX` pairs as one batch through the ring and one doorbell;
    /// prints how many the scheduler took and every reverse hint it sent
    /// back.
    Batch { pairs: Vec<String> },
    /// Ring the doorbell on a ring whose tail makes no sense (a test of
    /// the kernel's refusal).
    Corrupt,
    /// Fill the ring with random bytes and a random tail, ring the
    /// doorbell, this many times; prints what the kernel answered.
    Fuzz {
        rounds: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Bytes from hex digits, two per byte.
fn parse_hex(hex: &str) -> Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        bail!("{hex:?}: an odd number of hex digits");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            let pair = hex.get(i..i + 2).context("hex digits")?;
            u8::from_str_radix(pair, 16).with_context(|| format!("{pair:?} is not hex"))
        })
        .collect()
}

/// `taken`, `refused REASON`, or the error that is neither.
fn send_line(q: &RawQueue, pid: i32, hex: &str) -> Result<String> {
    match q.send(pid, &parse_hex(hex)?) {
        Ok(()) => Ok("taken".into()),
        Err(Error::Refused(reason)) => Ok(format!("refused {reason:?}")),
        Err(e) => Err(e.into()),
    }
}

fn session(q: &RawQueue) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        let mut words = line.split_whitespace();
        let (Some(pid), Some(hex)) = (words.next(), words.next()) else {
            continue;
        };
        let pid: i32 = pid.parse().with_context(|| format!("pid {pid:?}"))?;
        writeln!(out, "{}", send_line(q, pid, hex)?)?;
        out.flush()?;
    }
    Ok(())
}

/// Pushes `pairs` (PID HEX ...) into the ring, rings once, and prints
/// `taken N` then `rev PID HEX` for each reverse hint that came back.
fn batch(q: &mut RawQueue, pairs: &[String]) -> Result<()> {
    for pair in pairs.chunks(2) {
        let [pid, hex] = pair else {
            bail!("batch takes PID HEX pairs");
        };
        let pid: i32 = pid.parse().with_context(|| format!("pid {pid:?}"))?;
        q.push(pid, &parse_hex(hex)?)?;
    }
    println!("taken {}", q.enter()?);
    let wait = Some(std::time::Duration::from_millis(500));
    while let Some((pid, bytes)) = q.recv(wait)? {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        println!("rev {pid} {hex}");
    }
    Ok(())
}

/// `rounds` doorbells on random rings: random entries (the task is this
/// process, no one, or a random pid) and a random tail, sensible or not.
/// Prints how many doorbells were refused outright and how many hints the
/// scheduler took; a failure other than EINVAL is an error.
fn fuzz(q: &mut RawQueue, rounds: u32, seed: u64) -> Result<()> {
    use rand::{Rng, RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut refused, mut taken) = (0u32, 0u32);
    let me = std::process::id() as i32;
    for _ in 0..rounds {
        let mut bytes = vec![0u8; 40 * rng.random_range(0..=64)];
        rng.fill_bytes(&mut bytes);
        for entry in bytes.chunks_mut(40) {
            let pid = match rng.random_range(0..3) {
                0 => 0,
                1 => me,
                _ => rng.random(),
            };
            entry[..4].copy_from_slice(&pid.to_ne_bytes());
            entry[4..8].copy_from_slice(&rng.random_range(0u32..48).to_ne_bytes());
        }
        q.scribble(&bytes, rng.random_range(0..=160));
        match q.enter() {
            Ok(n) => taken += n,
            Err(Error::Io {
                error: nix::Error::EINVAL,
                ..
            }) => refused += 1,
            Err(e) => return Err(e.into()),
        }
    }
    println!("rounds {rounds}");
    println!("refused {refused}");
    println!("taken {taken}");
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(uid) = cli.uid {
        let uid = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setuid(uid).with_context(|| format!("becoming uid {uid}"))?;
    }
    match cli.cmd {
        Cmd::Info => {
            let info = RawQueue::open_at(&cli.device)?.info().clone();
            println!("queue {}", info.id);
            println!("scheduler {}", info.scheduler);
            println!("hint_size {}", info.hint_size);
            println!("hint_fingerprint {:#018x}", info.hint_fingerprint);
            println!("abi_version {}", info.abi_version);
        }
        Cmd::Send { pid, hex } => {
            let answer = send_line(&RawQueue::open_at(&cli.device)?, pid, &hex)?;
            println!("{answer}");
            if answer != "taken" {
                return Ok(ExitCode::from(3));
            }
        }
        Cmd::Session => session(&RawQueue::open_at(&cli.device)?)?,
        Cmd::Batch { pairs } => batch(&mut RawQueue::open_at(&cli.device)?, &pairs)?,
        Cmd::Corrupt => {
            let mut q = RawQueue::open_at(&cli.device)?;
            q.corrupt_ring();
            match q.enter() {
                Err(e) => println!("refused: {e}"),
                Ok(taken) => println!("taken {taken}"),
            }
        }
        Cmd::Fuzz { rounds, seed } => fuzz(&mut RawQueue::open_at(&cli.device)?, rounds, seed)?,
        Cmd::Cycle { times } => {
            for i in 0..times {
                RawQueue::open_at(&cli.device).with_context(|| format!("open #{}", i + 1))?;
            }
            println!("opened and closed {times} queues");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enoki-hint: {e:#}");
            ExitCode::FAILURE
        }
    }
}
