// SPDX-License-Identifier: MIT OR Apache-2.0
//! Library half of the `enoki` guest tool. Everything that can be tested
//! without a real Enoki kernel lives here; `main.rs` only wires up clap.

pub mod error;
pub mod hints;
pub mod kernel_match;
pub mod load;
pub mod paths;
pub mod policy;
pub mod record;
pub mod run;
pub mod status;
pub mod unload;
pub mod upgrade;

pub use error::Error;
pub use paths::Paths;

/// Module loading and unloading need CAP_SYS_MODULE; checking for root first
/// gives a clearer message than the kernel's bare EPERM.
pub fn ensure_root() -> Result<(), Error> {
    if nix::unistd::Uid::effective().is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}
