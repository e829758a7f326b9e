// SPDX-License-Identifier: MIT OR Apache-2.0
use std::process::ExitCode;

/// Print a task's scheduling policy, e.g. `7 ext`.
///
/// Output is `<number> <name>`, plus ` reset-on-fork` when that flag is set;
/// 7 (ext) means the task is under Enoki.
#[derive(clap::Args)]
pub struct Args {
    /// Process or thread id; 0 means this process
    #[arg(value_parser = clap::value_parser!(i32).range(0..))]
    pid: i32,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    println!("{}", enoki_cli::policy::get(a.pid)?);
    Ok(ExitCode::SUCCESS)
}
