// SPDX-License-Identifier: MIT OR Apache-2.0
use std::process::ExitCode;

use enoki_cli::record::RecordPaths;
use enoki_cli::status::Status;
use enoki_cli::upgrade::{self, Start};
use enoki_cli::Paths;

use super::load::Options;

/// Replace the running scheduler with a new version of it (or with
/// another scheduler) while every task keeps running.
///
/// The new version loads under a free module name (enoki_<SCHED>,
/// enoki_<SCHED>_u1, ...), takes over the running version's state when
/// both have the same kind (see `--fresh`) and every task, then the
/// replaced module is removed. Refused, the running version goes on
/// untouched; `dmesg | tail` says why.
#[derive(clap::Args)]
pub struct Args {
    /// Scheduler name, e.g. wfq (see $ENOKI_MODULE_DIR/enoki_*.ko)
    sched: String,

    /// Start from the task list alone, dropping the running version's state
    #[arg(long)]
    fresh: bool,

    #[command(flatten)]
    options: Options,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    enoki_cli::ensure_root()?;
    let paths = Paths::from_env();
    let start = if a.fresh { Start::Fresh } else { Start::State };
    let done = upgrade::upgrade(
        &paths,
        &RecordPaths::from_env().sysmodule,
        &a.sched,
        &a.options.params(),
        start,
    )?;
    let held_off = Status::read(&paths.sysfs)
        .ok()
        .and_then(|s| s.upgrades)
        .map(|u| format!(", calls held off {:.1} us", u.blackout_last_ns as f64 / 1e3))
        .unwrap_or_default();
    println!("upgraded {} -> {}{held_off}", done.from, done.to);
    if let Some(errno) = done.old_module_left {
        eprintln!(
            "enoki: the replaced module {} stays loaded ({}); remove it with rmmod",
            done.from,
            errno.desc()
        );
    }
    Ok(ExitCode::SUCCESS)
}
