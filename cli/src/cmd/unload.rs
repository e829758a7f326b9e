// SPDX-License-Identifier: MIT OR Apache-2.0
use std::process::ExitCode;

use enoki_cli::Paths;

/// Unload the current scheduler module (named in $ENOKI_SYSFS/module).
///
/// Tasks go back to the kernel's fair scheduler.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<ExitCode> {
    enoki_cli::ensure_root()?;
    let gone = enoki_cli::unload::unload(&Paths::from_env())?;
    match gone.scheduler {
        Some(s) => println!("unloaded {s} ({})", gone.module),
        None => println!("unloaded {}", gone.module),
    }
    Ok(ExitCode::SUCCESS)
}
