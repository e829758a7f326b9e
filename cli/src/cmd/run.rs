// SPDX-License-Identifier: MIT OR Apache-2.0
use std::ffi::OsString;
use std::process::ExitCode;

/// Run a command under the Enoki policy (SCHED_EXT).
///
/// The command replaces this process, so its exit status is the command's;
/// its children inherit the policy. Exits 127 if the command is not found,
/// 126 if it cannot be executed.
#[derive(clap::Args)]
#[command(override_usage = "enoki run [--] <CMD> [ARGS]...")]
pub struct Args {
    /// Command and its arguments
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    argv: Vec<OsString>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    enoki_cli::policy::set_self_ext()?;
    let err = enoki_cli::run::exec(&a.argv);
    eprintln!("enoki: {err}");
    Ok(ExitCode::from(err.exit_code()))
}
