// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki`: the guest tool for Enoki schedulers. One module per subcommand
//! under `cmd/`; the logic lives in the `enoki_cli` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

const AFTER_HELP: &str = "\
Environment:
  ENOKI_SYSFS       Enoki-C's sysfs directory [default: /sys/kernel/enoki]
  ENOKI_MODULE_DIR  where enoki_<sched>.ko files live [default: /lib/modules/$(uname -r)/extra/enoki
                    when the package installed it there, else /lib/modules/enoki]
  ENOKI_DEBUGFS     Enoki-C's debugfs directory [default: /sys/kernel/debug/enoki]
  ENOKI_SYSMODULE   module parameters and srcversion [default: /sys/module]";

/// Load, inspect and use Enoki kernel schedulers.
#[derive(Parser)]
#[command(name = "enoki", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Load(cmd::load::Args),
    Unload(cmd::unload::Args),
    Upgrade(cmd::upgrade::Args),
    Status(cmd::status::Args),
    Run(cmd::run::Args),
    Policy(cmd::policy::Args),
    Record(cmd::record::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(a) => cmd::load::run(a),
        Command::Unload(a) => cmd::unload::run(a),
        Command::Upgrade(a) => cmd::upgrade::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Policy(a) => cmd::policy::run(a),
        Command::Record(a) => cmd::record::run(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("enoki: {e:#}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
