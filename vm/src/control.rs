// SPDX-License-Identifier: MIT OR Apache-2.0
//! A dev VM's control channel, and the edit-to-running loop built on it.
//!
//! A VM booted with [`VmConfig::control`](crate::VmConfig::control) has a
//! virtio-serial port (`enoki.control`) whose host end is a unix socket.
//! The guest init runs each line the host sends there as a shell command
//! (in the workspace share) and answers with the output, then
//! `enoki-control: exit STATUS`. `cargo make vm` opens it at
//! [`default_socket`]; `cargo make reload SCHED=...` rebuilds one
//! scheduler module on the host and live-upgrades it into that VM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The line that ends each answer, followed by the exit status.
pub const DONE: &str = "enoki-control: exit ";

/// Where `cargo make vm` opens the control socket.
pub fn default_socket(root: &Path) -> PathBuf {
    root.join("target/vm/control.sock")
}

/// Runs the shell command `cmd` (one line) in the guest behind `socket`,
/// writing its output to `out` as it comes; returns its exit status.
pub fn run(socket: &Path, cmd: &str, timeout: Duration, out: &mut dyn Write) -> Result<i32> {
    if cmd.contains('\n') {
        bail!("a control command is one line");
    }
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "no dev VM listens on {} (start one with `cargo make vm`)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    writeln!(stream, "{cmd}").context("sending the command")?;
    for line in BufReader::new(&stream).lines() {
        let line = line.with_context(|| format!("no answer from the guest within {timeout:?}"))?;
        if let Some(status) = line.strip_prefix(DONE) {
            return status
                .trim()
                .parse()
                .with_context(|| format!("bad exit status line {line:?}"));
        }
        writeln!(out, "{line}")?;
    }
    bail!("the guest closed the control channel")
}

/// What [`reload`] took.
#[derive(Clone, Copy, Debug)]
pub struct Reload {
    /// Building the module on the host.
    pub build: Duration,
    /// The live upgrade in the guest, `enoki upgrade` included.
    pub upgrade: Duration,
}

/// Rebuilds scheduler `sched`'s module of workspace `root` and upgrades
/// the dev VM behind `socket` to it (`upgrade_args`: more `enoki upgrade`
/// options), writing what happens to `out`.
pub fn reload(
    root: &Path,
    socket: &Path,
    sched: &str,
    upgrade_args: &[String],
    out: &mut dyn Write,
) -> Result<Reload> {
    if !socket.exists() {
        bail!(
            "no dev VM: {} does not exist (start one with `cargo make vm`)",
            socket.display()
        );
    }
    let start = Instant::now();
    let script = root.join("enoki/kbuild/build-modules.sh");
    let built = Command::new("bash")
        .arg(&script)
        .env("ENOKI_ONLY", sched)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !built.success() {
        bail!("building the {sched} module failed ({built})");
    }
    let build = start.elapsed();
    let cmd = format!(
        "ENOKI_MODULE_DIR={} enoki upgrade {sched} {}",
        shell_quote(&root.join("target/modules").to_string_lossy()),
        upgrade_args
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let start = Instant::now();
    let status = run(socket, cmd.trim(), Duration::from_secs(120), out)?;
    if status != 0 {
        bail!("the upgrade failed in the guest (exit status {status})");
    }
    Ok(Reload {
        build,
        upgrade: start.elapsed(),
    })
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn words_are_quoted_only_when_they_must_be() {
        assert_eq!(shell_quote("period_us=9000"), "period_us=9000");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    /// A fake guest: answers one command with `answer`.
    fn guest(
        answer: &'static str,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
            line
        });
        (dir, socket, t)
    }

    #[test]
    fn a_command_gets_its_output_and_status() {
        let (_dir, socket, t) = guest("one\ntwo\nenoki-control: exit 3\nlater\n");
        let mut out = Vec::new();
        let status = run(&socket, "echo hi", Duration::from_secs(10), &mut out).unwrap();
        assert_eq!(status, 3);
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\n");
        assert_eq!(t.join().unwrap(), "echo hi\n");
    }

    #[test]
    fn a_guest_that_hangs_up_or_is_absent_is_an_error() {
        let (_dir, socket, t) = guest("partial\n");
        let err = run(&socket, "true", Duration::from_secs(10), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("closed"), "{err:#}");
        t.join().unwrap();
        let err = run(
            Path::new("/nonexistent/control.sock"),
            "true",
            Duration::from_secs(1),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cargo make vm"), "{err:#}");
        assert!(run(&socket, "a\nb", Duration::from_secs(1), &mut Vec::new()).is_err());
    }
}
