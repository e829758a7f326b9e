// SPDX-License-Identifier: MIT OR Apache-2.0
use std::process::ExitCode;

use enoki_cli::load::{self, KeyValue, LoadParams, Mode};
use enoki_cli::Paths;

/// Load a scheduler module (enoki_<SCHED>.ko) into the kernel.
///
/// Only the options given are passed as module parameters; the rest keep
/// the module's defaults. On failure, `dmesg | tail` has the kernel's side.
#[derive(clap::Args)]
pub struct Args {
    /// Scheduler name, e.g. fifo (see $ENOKI_MODULE_DIR/enoki_*.ko)
    sched: String,

    #[command(flatten)]
    options: Options,
}

/// The module parameters a load may set (also `enoki record --load`).
#[derive(clap::Args, Default)]
pub struct Options {
    /// Schedule every task (all), or only tasks that chose SCHED_EXT, e.g. via `enoki run` (opt-in)
    #[arg(long)]
    mode: Option<Mode>,

    /// Most tasks the scheduler may manage at once
    #[arg(long, value_name = "N")]
    max_tasks: Option<u32>,

    /// Time slice in microseconds
    #[arg(long, value_name = "N")]
    slice_us: Option<u32>,

    /// Watchdog timeout in milliseconds, after which a stuck scheduler is ejected
    #[arg(long, value_name = "N")]
    watchdog_ms: Option<u32>,

    /// Longest wait for one of the scheduler's locks, and longest call, in
    /// milliseconds: past it (or at once, for a deadlock) the scheduler is
    /// ejected with a report of the locks involved
    #[arg(long, value_name = "N")]
    lock_timeout_ms: Option<u32>,

    /// Scheduler-specific KEY=VALUE settings, comma-separated or repeated
    #[arg(long, value_name = "K=V,...", value_delimiter = ',')]
    args: Vec<KeyValue>,
}

impl Options {
    /// As module parameters.
    pub fn params(self) -> LoadParams {
        LoadParams {
            mode: self.mode,
            max_tasks: self.max_tasks,
            slice_us: self.slice_us,
            watchdog_ms: self.watchdog_ms,
            lock_timeout_ms: self.lock_timeout_ms,
            args: self.args,
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    enoki_cli::ensure_root()?;
    let paths = Paths::from_env();
    let params = a.options.params();
    load::load(&paths, &a.sched, &params)?;
    // Report the mode the module actually runs in, defaults included.
    let mode = enoki_cli::status::Status::read(&paths.sysfs)
        .ok()
        .and_then(|s| s.mode)
        .or_else(|| params.mode.map(|m| m.as_str().to_string()));
    match mode {
        Some(m) => println!("loaded {} (mode {m})", a.sched),
        None => println!("loaded {}", a.sched),
    }
    Ok(ExitCode::SUCCESS)
}
