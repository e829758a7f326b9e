// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki run`: exec a command under the Enoki policy, with a shell's exit
//! codes when the command cannot be run.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Why exec failed, printed as `<cmd>: <reason>`.
#[derive(Debug)]
pub struct ExecError {
    pub cmd: OsString,
    pub source: std::io::Error,
}

impl ExecError {
    /// 127 for "not found", 126 for found but not runnable, as sh does.
    pub fn exit_code(&self) -> u8 {
        if self.source.kind() == ErrorKind::NotFound {
            127
        } else {
            126
        }
    }
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cmd = self.cmd.to_string_lossy();
        if self.source.kind() == ErrorKind::NotFound {
            write!(f, "{cmd}: command not found")
        } else {
            write!(f, "{cmd}: {}", self.source)
        }
    }
}

/// Replaces the process with `argv` (PATH search, like execvp); returns
/// only on failure. The scheduling policy survives exec.
pub fn exec(argv: &[OsString]) -> ExecError {
    let (cmd, args) = argv.split_first().expect("exec needs a command");
    let source = Command::new(cmd).args(args).exec();
    ExecError {
        cmd: cmd.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_127() {
        // A path, not a name: a PATH entry we may not search gives EACCES.
        let e = exec(&["/nonexistent/enoki-test-cmd".into()]);
        assert_eq!(e.exit_code(), 127, "{e}");
        assert_eq!(
            e.to_string(),
            "/nonexistent/enoki-test-cmd: command not found"
        );
    }

    #[test]
    fn not_executable_is_126() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let e = exec(&[tmp.path().into()]);
        assert_eq!(e.exit_code(), 126, "{e}");
    }
}
