// SPDX-License-Identifier: MIT OR Apache-2.0
//! One module per subcommand, each with its clap `Args` and a `run`.

pub mod load;
pub mod policy;
pub mod record;
pub mod run;
pub mod status;
pub mod unload;
pub mod upgrade;
