// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--accel auto`: KVM only if a real boot under KVM works. /dev/kvm can exist
//! and still fail every guest with "KVM internal error", so only a probe boot
//! of the actual kernel tells. The verdict is cached per QEMU + kernel.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::{accel, Accel, Vm, VmConfig, VmError};

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The accelerator for `cfg`, announced on stderr with the reason (the line CI
/// logs show).
pub(crate) fn resolve_accel(cfg: &VmConfig, qemu: &Path) -> Result<Accel> {
    let (accel, why) = match cfg.accel {
        Accel::Auto => {
            let (kvm, reason) = kvm_verdict(cfg, qemu)?;
            let kvm = if kvm { Ok(()) } else { Err(reason) };
            let rerunnable = cfg.control.is_none();
            accel::choose(cfg.purpose, rerunnable, kvm, accel::mttcg_safe(&cfg.kernel))
        }
        Accel::Mttcg => match accel::mttcg_safe(&cfg.kernel) {
            Ok(()) => (
                Accel::Mttcg,
                "forced; kernel patches no text at run time".into(),
            ),
            Err(e) => (
                Accel::Mttcg,
                format!("forced although {e}: expect int3 Oopses"),
            ),
        },
        forced => (forced, "forced (--accel or ENOKI_ACCEL)".into()),
    };
    eprintln!("enoki-vm: accelerator {accel}: {why}");
    Ok(accel)
}

/// Cache key: QEMU version and the kernel file's identity.
fn probe_key(cfg: &VmConfig, qemu: &Path) -> String {
    let version = Command::new(qemu)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    let k = fs::metadata(&cfg.kernel)
        .map(|m| (m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    format!(
        "{version} | {} {} {}.{}",
        cfg.kernel.display(),
        k.0,
        k.1,
        k.2
    )
}

fn kvm_verdict(cfg: &VmConfig, qemu: &Path) -> Result<(bool, String)> {
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok((false, "/dev/kvm not available".into()));
    }
    let cache = cfg.root.join("target/vm/kvm-probe");
    let key = probe_key(cfg, qemu);
    if let Ok(text) = fs::read_to_string(&cache) {
        let mut lines = text.lines();
        if lines.next() == Some(key.as_str()) {
            let verdict = lines.next() == Some("kvm");
            let reason = lines.next().unwrap_or("").to_owned();
            return Ok((verdict, format!("cached verdict: {reason}")));
        }
    }
    eprintln!("enoki-vm: probing KVM with a test boot (once per kernel build)...");
    let (ok, reason) = probe_boot(cfg)?;
    if let Some(dir) = cache.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = fs::write(
        &cache,
        format!("{key}\n{}\n{reason}\n", if ok { "kvm" } else { "tcg" }),
    );
    Ok((ok, reason))
}

/// The smallest VM that boots `cfg`'s kernel: no share, and no control
/// port (whose socket would be left behind for the VM that asked).
fn probe_config(cfg: &VmConfig) -> VmConfig {
    let mut probe = cfg
        .clone()
        .cpus(1)
        .sockets(1)
        .numa(1)
        .mem_mib(512)
        .share(false)
        .verbose(false)
        .echo_output(false)
        .timeout(PROBE_TIMEOUT);
    probe.control = None;
    probe
}

/// Boots `cfg`'s kernel under KVM once: whether it worked, and why (not).
/// Fails only if the probe was stopped, which says nothing about KVM.
fn probe_boot(cfg: &VmConfig) -> Result<(bool, String)> {
    let verdict = match Vm::with_accel(probe_config(cfg), Accel::Kvm).and_then(|vm| vm.run("true"))
    {
        Ok(o) if o.success() => (true, "probe boot worked".to_owned()),
        Ok(o) => {
            let why = o
                .failure()
                .unwrap_or_else(|| format!("exit status {:?}", o.exit_code));
            (
                false,
                format!(
                    "probe boot failed: {}",
                    why.split("; serial log").next().unwrap_or("")
                ),
            )
        }
        Err(e) if matches!(e.downcast_ref::<VmError>(), Some(VmError::Stopped)) => return Err(e),
        Err(e) => {
            let why = match e.downcast_ref::<VmError>() {
                Some(VmError::QemuFailed { status, stderr, .. }) => {
                    format!(
                        "QEMU {status}: {}",
                        stderr.lines().next().unwrap_or("").trim()
                    )
                }
                Some(VmError::KvmInternalError { .. }) => "KVM internal error".to_owned(),
                _ => e.to_string().lines().next().unwrap_or("").to_owned(),
            };
            (false, format!("probe boot failed: {why}"))
        }
    };
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_boot_opens_no_control_port() {
        let cfg = VmConfig::with_root("/nonexistent").control("/tmp/enoki-test-control.sock");
        assert!(probe_config(&cfg).control.is_none());
        assert_eq!(probe_config(&cfg).cpus, 1);
    }
}
