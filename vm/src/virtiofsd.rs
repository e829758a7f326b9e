// SPDX-License-Identifier: MIT OR Apache-2.0
//! virtiofsd, the vhost-user file server that shares the workspace.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::child::{die_with_parent, which, KillOnDrop};
use crate::logs::read_lossy;

/// virtiofsd ends by itself once QEMU disconnects; this long is left for it
/// before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(50);

/// How long virtiofsd may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the socket's appearance is checked while virtiofsd starts.
const START_CHECK: Duration = Duration::from_millis(10);

fn virtiofsd_path() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    cargo_home
        .map(|h| h.join("bin/virtiofsd"))
        .filter(|p| p.is_file())
        .or_else(|| which(Path::new("virtiofsd")))
}

/// `--name=value` with the value's bytes untouched.
fn flag(name: &str, value: &OsStr) -> OsString {
    let mut s = OsString::from(format!("--{name}="));
    s.push(value);
    s
}

/// virtiofsd's arguments to share `root` on `socket`.
fn args(root: &Path, socket: &Path) -> Vec<OsString> {
    let mut v = vec![
        flag("socket-path", socket.as_os_str()),
        flag("shared-dir", root.as_os_str()),
    ];
    v.extend(["--sandbox=none", "--cache=auto", "--log-level=error"].map(OsString::from));
    v
}

/// Starts virtiofsd sharing `root`, its socket and log in `rundir`; returns
/// its guard and socket once the socket exists.
pub(crate) fn start(root: &Path, rundir: &Path) -> Result<(KillOnDrop, PathBuf)> {
    let bin = virtiofsd_path().context("not installed (cargo make deps)")?;
    let socket = rundir.join("virtiofsd.sock");
    if socket.exists() {
        bail!("socket path {} is busy", socket.display());
    }
    let log = rundir.join("virtiofsd.log");
    let mut cmd = Command::new(&bin);
    cmd.args(args(root, &socket))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?);
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut guard = KillOnDrop::new(child).with_grace(SHUTDOWN_GRACE);
    let deadline = Instant::now() + START_TIMEOUT;
    while !socket.exists() {
        if let Some(st) = guard.child.try_wait()? {
            let msg = read_lossy(&log);
            bail!("{} exited ({st}): {}", bin.display(), msg.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not create {} within {} s",
                bin.display(),
                socket.display(),
                START_TIMEOUT.as_secs()
            );
        }
        thread::sleep(START_CHECK);
    }
    Ok((guard, socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn args_keep_non_utf8_paths() {
        let root = Path::new(OsStr::from_bytes(b"/w/en\xffoki"));
        let a = args(root, Path::new("/tmp/r/v.sock"));
        assert_eq!(a[0], "--socket-path=/tmp/r/v.sock");
        assert_eq!(a[1].as_bytes(), b"--shared-dir=/w/en\xffoki");
    }
}
