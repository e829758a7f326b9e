// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-reload SCHED [UPGRADE OPTIONS]` (`cargo make reload SCHED=wfq`):
//! rebuilds one scheduler module and live-upgrades the running dev VM
//! (`cargo make vm`) to it, with no reboot.

use std::process::ExitCode;

use clap::Parser;
use enoki_vm::control;

/// Rebuild a scheduler module and upgrade the dev VM to it, live.
#[derive(Parser)]
#[command(name = "enoki-reload")]
struct Cli {
    /// Scheduler, e.g. wfq or SCHED=wfq (schedulers/<SCHED>)
    sched: String,
    /// The dev VM's control socket [default: <root>/target/vm/control.sock]
    #[arg(long)]
    control: Option<std::path::PathBuf>,
    /// More `enoki upgrade` options, e.g. --args period_us=6000 or --fresh
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    upgrade: Vec<String>,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(name) = cli.sched.strip_prefix("SCHED=") {
        cli.sched = name.to_string();
    }
    let result = enoki_vm::find_root().and_then(|root| {
        let socket = cli
            .control
            .clone()
            .unwrap_or_else(|| control::default_socket(&root));
        control::reload(
            &root,
            &socket,
            &cli.sched,
            &cli.upgrade,
            &mut std::io::stdout(),
        )
    });
    match result {
        Ok(r) => {
            println!(
                "reload: {} running, {:.1} s from build to running (build {:.1} s, upgrade {:.1} s)",
                cli.sched,
                (r.build + r.upgrade).as_secs_f64(),
                r.build.as_secs_f64(),
                r.upgrade.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("enoki-reload: {e:#}");
            ExitCode::FAILURE
        }
    }
}
