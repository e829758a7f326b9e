// SPDX-License-Identifier: MIT OR Apache-2.0
//! Which accelerator a VM gets, and why.
//!
//! KVM when a probe boot works (GitHub's runners). Without it, what the VM is
//! for decides: multi-threaded TCG runs the 8 vCPUs on every host core (tests
//! and throughput work finish ~1.4-1.9x sooner on 2 cores), but a wakeup that
//! crosses vCPUs waits for another host thread, so latency measurements keep
//! single-threaded TCG. MTTCG is only offered to a kernel that patches no text
//! at run time: a vCPU can execute another vCPU's half-written `int3` patch.
//! Nor to a VM whose session cannot be repeated (a dev VM driven through its
//! control port): QEMU 7.2 itself crashes under MTTCG now and then, and only a
//! one-shot command can be run again on single-threaded TCG when it does.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// What the VM is for; decides between the TCG flavours when KVM is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// Functional tests: as fast as possible.
    #[default]
    Test,
    /// Throughput benchmarks (work done per wall-clock second).
    Throughput,
    /// Latency benchmarks (wakeups, round trips, blackouts): one host thread
    /// runs every vCPU, so a cross-vCPU wakeup is not a host thread switch.
    Latency,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Test => "test",
            Purpose::Throughput => "throughput",
            Purpose::Latency => "latency",
        })
    }
}

/// Config options that patch kernel text while other CPUs run it, with why.
const TEXT_PATCHING: &[(&str, &str)] = &[
    ("CONFIG_JUMP_LABEL", "static keys rewrite their branches"),
    ("CONFIG_DYNAMIC_FTRACE", "ftrace rewrites function entries"),
];

/// Whether the kernel built beside `bzimage` is safe under MTTCG: its `.config`
/// (in the build directory, `<build>/arch/x86/boot/bzImage`) turns off every
/// option in [`TEXT_PATCHING`]. `Err` says why not.
pub fn mttcg_safe(bzimage: &Path) -> Result<(), String> {
    let config = kernel_config_path(bzimage);
    let text = fs::read_to_string(&config).map_err(|e| {
        format!(
            "cannot read {} ({e}), so runtime text patching is unknown",
            config.display()
        )
    })?;
    text_patching_in(&text).map_or(Ok(()), |(opt, why)| {
        Err(format!("{opt}=y in {}: {why}", config.display()))
    })
}

fn kernel_config_path(bzimage: &Path) -> PathBuf {
    let build = bzimage.ancestors().nth(4).unwrap_or(Path::new("."));
    build.join(".config")
}

/// The first text-patching option a `.config` turns on.
fn text_patching_in(config: &str) -> Option<(&'static str, &'static str)> {
    TEXT_PATCHING.iter().copied().find(|(opt, _)| {
        config
            .lines()
            .any(|l| l.strip_prefix(opt).is_some_and(|rest| rest == "=y"))
    })
}

/// The accelerator for `purpose` given what the KVM probe and the kernel's
/// config say (each `Err` carries the reason), and one line saying why.
/// `rerunnable`: the launcher can run the session again if QEMU crashes.
pub(crate) fn choose(
    purpose: Purpose,
    rerunnable: bool,
    kvm: Result<(), String>,
    mttcg: Result<(), String>,
) -> (crate::Accel, String) {
    use crate::Accel;
    let why_not_kvm = match kvm {
        Ok(()) => return (Accel::Kvm, format!("KVM works; purpose {purpose}")),
        Err(e) => e,
    };
    match (purpose, mttcg) {
        (Purpose::Latency, _) => (
            Accel::Tcg,
            format!("KVM unusable ({why_not_kvm}); latency work keeps every vCPU on one host thread"),
        ),
        (_, Ok(())) if !rerunnable => (
            Accel::Tcg,
            format!("KVM unusable ({why_not_kvm}); a session driven through a control port cannot be run again if QEMU crashes under MTTCG"),
        ),
        (_, Ok(())) => (
            Accel::Mttcg,
            format!("KVM unusable ({why_not_kvm}); kernel patches no text at run time; purpose {purpose}"),
        ),
        (_, Err(e)) => (
            Accel::Tcg,
            format!("KVM unusable ({why_not_kvm}); MTTCG unsafe for this kernel ({e})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Accel;

    const SAFE: &str = "CONFIG_RUST=y\n# CONFIG_JUMP_LABEL is not set\n";

    #[test]
    fn text_patching_options_are_found() {
        assert_eq!(text_patching_in(SAFE), None);
        assert_eq!(
            text_patching_in("CONFIG_JUMP_LABEL=y\n").map(|t| t.0),
            Some("CONFIG_JUMP_LABEL")
        );
        assert_eq!(
            text_patching_in("CONFIG_DYNAMIC_FTRACE=y\n").map(|t| t.0),
            Some("CONFIG_DYNAMIC_FTRACE")
        );
        // A longer option name with the same prefix is a different option.
        assert_eq!(
            text_patching_in("CONFIG_JUMP_LABEL_FEATURE_CHECKS=y\n"),
            None
        );
    }

    #[test]
    fn kernel_config_is_read_beside_the_build() {
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("arch/x86/boot");
        fs::create_dir_all(&boot).unwrap();
        let bz = boot.join("bzImage");
        assert!(mttcg_safe(&bz).unwrap_err().contains("cannot read"));
        fs::write(d.path().join(".config"), SAFE).unwrap();
        assert_eq!(mttcg_safe(&bz), Ok(()));
        fs::write(d.path().join(".config"), "CONFIG_JUMP_LABEL=y\n").unwrap();
        assert!(mttcg_safe(&bz).unwrap_err().contains("CONFIG_JUMP_LABEL=y"));
    }

    #[test]
    fn choice_follows_kvm_then_purpose_then_kernel() {
        let no = || Err("no /dev/kvm".to_owned());
        assert_eq!(choose(Purpose::Latency, true, Ok(()), Ok(())).0, Accel::Kvm);
        assert_eq!(choose(Purpose::Test, false, Ok(()), Ok(())).0, Accel::Kvm);
        assert_eq!(choose(Purpose::Test, true, no(), Ok(())).0, Accel::Mttcg);
        assert_eq!(
            choose(Purpose::Throughput, true, no(), Ok(())).0,
            Accel::Mttcg
        );
        assert_eq!(choose(Purpose::Latency, true, no(), Ok(())).0, Accel::Tcg);
        let (accel, why) = choose(Purpose::Test, false, no(), Ok(()));
        assert_eq!(accel, Accel::Tcg);
        assert!(why.contains("control port"), "{why}");
        let (accel, why) = choose(Purpose::Test, true, no(), Err("CONFIG_JUMP_LABEL=y".into()));
        assert_eq!(accel, Accel::Tcg);
        assert!(
            why.contains("no /dev/kvm") && why.contains("CONFIG_JUMP_LABEL=y"),
            "{why}"
        );
    }
}
