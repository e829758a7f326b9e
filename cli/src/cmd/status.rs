// SPDX-License-Identifier: MIT OR Apache-2.0
use std::process::ExitCode;

use enoki_cli::status::Status;
use enoki_cli::Paths;

/// Show Enoki's state and counters.
///
/// Prints the files of $ENOKI_SYSFS: scheduler, module, mode, state,
/// nr_tasks, pick_errors, balance_errors, rejected, last_exit and the
/// per-message counters. Files the kernel does not provide are shown as `-` (null in JSON).
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let status = Status::read(&Paths::from_env().sysfs)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(ExitCode::SUCCESS)
}
