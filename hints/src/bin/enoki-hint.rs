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
