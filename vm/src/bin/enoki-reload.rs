// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-reload SCHED [--watch] [UPGRADE OPTIONS]` (`cargo make reload
//! SCHED=wfq`): rebuilds one scheduler module and live-upgrades the running
//! dev VM (`cargo make vm`) to it, with no reboot; with `--watch`, again
//! after every edit of its sources or libEnoki's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use enoki_vm::control;
use enoki_vm::watch::{SourceWatch, SETTLE};

/// Rebuild a scheduler module and upgrade the dev VM to it, live.
#[derive(Parser)]
#[command(name = "enoki-reload")]
struct Cli {
    /// Scheduler, e.g. wfq or SCHED=wfq (schedulers/<SCHED>)
    sched: String,
    /// The dev VM's control socket [default: <root>/target/vm/control.sock]
    #[arg(long)]
    control: Option<PathBuf>,
    /// Then reload again after every change to schedulers/<SCHED> or
    /// enoki/src, until interrupted (a failed build waits for the next)
    #[arg(long)]
    watch: bool,
    /// More `enoki upgrade` options, e.g. --args period_us=6000 or --fresh
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    upgrade: Vec<String>,
}

/// One rebuild and upgrade, reported on stdout.
fn reload_once(root: &Path, socket: &Path, cli: &Cli) -> Result<()> {
    let r = control::reload(
        root,
        socket,
        &cli.sched,
        &cli.upgrade,
        &mut std::io::stdout(),
    )?;
    println!(
        "reload: {} running, {:.1} s from build to running (build {:.1} s, upgrade {:.1} s)",
        cli.sched,
        (r.build + r.upgrade).as_secs_f64(),
        r.build.as_secs_f64(),
        r.upgrade.as_secs_f64()
    );
    Ok(())
}

/// Reloads after each batch of edits; returns only on a watch error.
fn watch(root: &Path, socket: &Path, cli: &Cli, sources: &SourceWatch) -> Result<()> {
    loop {
        println!("reload: watching schedulers/{} and enoki/src", cli.sched);
        let Some(changed) = sources.next_batch(SETTLE, None)? else {
            continue;
        };
        let names: Vec<String> = changed
            .iter()
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .collect();
        println!("reload: changed {}", names.join(", "));
        if let Err(e) = reload_once(root, socket, cli) {
            eprintln!("enoki-reload: {e:#}");
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let root = enoki_vm::find_root()?;
    let socket = cli
        .control
        .clone()
        .unwrap_or_else(|| control::default_socket(&root));
    if !socket.exists() {
        // Nothing to watch for: this says there is no dev VM.
        return reload_once(&root, &socket, cli);
    }
    // Watching starts first, so that an edit during the first build counts.
    let sources = cli
        .watch
        .then(|| {
            SourceWatch::new(&[
                root.join("schedulers").join(&cli.sched),
                root.join("enoki/src"),
            ])
        })
        .transpose()?;
    let first = reload_once(&root, &socket, cli);
    match sources {
        None => first,
        Some(sources) => {
            if let Err(e) = first {
                eprintln!("enoki-reload: {e:#}");
            }
            watch(&root, &socket, cli, &sources)
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(name) = cli.sched.strip_prefix("SCHED=") {
        cli.sched = name.to_string();
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enoki-reload: {e:#}");
            ExitCode::FAILURE
        }
    }
}
