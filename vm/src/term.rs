// SPDX-License-Identifier: MIT OR Apache-2.0
//! The launcher's terminal, which QEMU puts in raw mode for an interactive shell.

use nix::sys::termios::{self, Termios};

/// Restores the terminal settings saved at creation when dropped, even if
/// QEMU was killed before it could restore them itself.
pub(crate) struct TermGuard(Option<Termios>);

impl TermGuard {
    /// Saves stdin's terminal settings if `tty` (stdin is a terminal).
    pub(crate) fn save(tty: bool) -> Self {
        Self(if tty {
            termios::tcgetattr(std::io::stdin()).ok()
        } else {
            None
        })
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, t);
        }
    }
}
