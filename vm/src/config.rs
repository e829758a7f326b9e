// SPDX-License-Identifier: MIT OR Apache-2.0
//! What a VM looks like: topology, memory, paths, accelerator, timeouts.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{Purpose, StopHandle, VmError};

/// Accelerator choice. `Auto` uses KVM only when a real probe boot works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    /// Single-threaded TCG: the safe default without KVM.
    Tcg,
    /// Multi-threaded TCG: every host core runs vCPUs; safe only for a kernel
    /// that patches no text at run time (see [`crate::accel`]).
    Mttcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Mttcg => "mttcg",
        })
    }
}

impl FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        <Accel as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| anyhow::anyhow!("unknown accelerator {s:?} (auto, kvm, tcg, mttcg)"))
    }
}

/// Default command timeout: TCG boots and runs ~10x slower than KVM.
pub fn default_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(120),
        _ => Duration::from_secs(300),
    }
}

/// Parses a QEMU-style size (`4G`, `512M`, `1024`) into MiB.
pub fn parse_mem_mib(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1),
        Some('T' | 't') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad memory size {s:?} (e.g. 4G, 512M)"))?;
    if n == 0 {
        bail!("memory size must be > 0");
    }
    Ok(n * mult)
}

/// Everything needed to boot one VM. Build with [`VmConfig::new`] and the
/// chained setters, then turn into a [`crate::Vm`] with [`VmConfig::build`].
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Workspace root: shared into the guest and base of the default paths.
    pub root: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cpus: u32,
    pub sockets: u32,
    pub mem_mib: u64,
    /// NUMA nodes; CPUs and memory are split evenly between them.
    pub numa: u32,
    /// Extra kernel command-line arguments, appended after the defaults.
    pub append: Vec<String>,
    /// None: 300 s under TCG, 120 s under KVM for commands, no limit for
    /// interactive shells.
    pub timeout: Option<Duration>,
    pub accel: Accel,
    /// What the VM is for: picks the TCG flavour when `accel` is `Auto`.
    pub purpose: Purpose,
    /// Share `root` into the guest (virtiofs, else 9p).
    pub share: bool,
    /// Echo the serial console (kernel log) to stderr while running.
    pub verbose: bool,
    /// `run` also echoes the command's output to stdout while capturing it.
    pub echo_output: bool,
    /// Guest working directory; None: the host cwd when it is inside the share.
    pub cwd: Option<PathBuf>,
    /// Directory for serial logs; None: `<root>/target/vm/logs`.
    pub log_dir: Option<PathBuf>,
    /// Stops launches from another thread; None: a launch runs to its end.
    pub stop: Option<StopHandle>,
    /// A unix socket the guest takes commands on (a dev VM, see
    /// [`crate::control`]); None: no control port.
    pub control: Option<PathBuf>,
    /// A QEMU TCG plugin and its arguments (QEMU's `-plugin` value, e.g.
    /// `/path/libx.so,dir=/tmp/x`); None: no plugin.
    pub plugin: Option<OsString>,
}

impl VmConfig {
    /// Defaults for the workspace found from the current directory:
    /// 8 CPUs, 2 sockets, 2 NUMA nodes, 4 GiB, accel from `ENOKI_ACCEL` or auto.
    pub fn new() -> Result<Self> {
        Ok(Self::with_root(crate::find_root()?))
    }

    /// Defaults for an explicit workspace root. The kernel and initrd are
    /// those of kernel profile `ENOKI_PROFILE` (default `vm`; another
    /// profile NAME boots `target/kernel-NAME` with `target/rootfs-NAME`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let suffix = match std::env::var("ENOKI_PROFILE") {
            Ok(p) if !p.is_empty() && p != "vm" => format!("-{p}"),
            _ => String::new(),
        };
        let accel = std::env::var("ENOKI_ACCEL")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(Accel::Auto);
        Self {
            kernel: root.join(format!("target/kernel{suffix}/arch/x86/boot/bzImage")),
            initrd: root.join(format!("target/rootfs{suffix}/initrd.cpio")),
            root,
            cpus: 8,
            sockets: 2,
            mem_mib: 4096,
            numa: 2,
            append: Vec::new(),
            timeout: None,
            accel,
            purpose: Purpose::default(),
            share: true,
            verbose: false,
            echo_output: false,
            cwd: None,
            log_dir: None,
            stop: None,
            control: None,
            plugin: None,
        }
    }

    /// Takes commands from the host on the unix socket `socket`.
    pub fn control(mut self, socket: impl Into<PathBuf>) -> Self {
        self.control = Some(socket.into());
        self
    }

    pub fn kernel(mut self, p: impl Into<PathBuf>) -> Self {
        self.kernel = p.into();
        self
    }
    pub fn initrd(mut self, p: impl Into<PathBuf>) -> Self {
        self.initrd = p.into();
        self
    }
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }
    pub fn sockets(mut self, n: u32) -> Self {
        self.sockets = n;
        self
    }
    pub fn mem_mib(mut self, n: u64) -> Self {
        self.mem_mib = n;
        self
    }
    pub fn numa(mut self, n: u32) -> Self {
        self.numa = n;
        self
    }
    /// Appends kernel command-line arguments (whitespace-separated).
    pub fn append(mut self, args: &str) -> Self {
        self.append
            .extend(args.split_whitespace().map(str::to_owned));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    pub fn accel(mut self, a: Accel) -> Self {
        self.accel = a;
        self
    }
    pub fn purpose(mut self, p: Purpose) -> Self {
        self.purpose = p;
        self
    }
    pub fn share(mut self, yes: bool) -> Self {
        self.share = yes;
        self
    }
    pub fn verbose(mut self, yes: bool) -> Self {
        self.verbose = yes;
        self
    }
    pub fn echo_output(mut self, yes: bool) -> Self {
        self.echo_output = yes;
        self
    }
    pub fn cwd(mut self, p: impl Into<PathBuf>) -> Self {
        self.cwd = Some(p.into());
        self
    }
    pub fn log_dir(mut self, p: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(p.into());
        self
    }
    /// Launches stop (QEMU killed, [`crate::VmError::Stopped`]) once `handle` fires.
    /// Loads a TCG plugin (QEMU's `-plugin` value); ignored under KVM.
    pub fn plugin(mut self, spec: impl Into<OsString>) -> Self {
        self.plugin = Some(spec.into());
        self
    }
    pub fn stop_on(mut self, handle: StopHandle) -> Self {
        self.stop = Some(handle);
        self
    }

    /// Validates the config, checks QEMU, kernel and initrd exist, and picks
    /// the accelerator (running the cached KVM probe for `Auto`).
    pub fn build(self) -> Result<crate::Vm> {
        crate::Vm::new(self)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.cpus == 0 || self.sockets == 0 || self.numa == 0 {
            bail!("--cpus, --sockets and --numa must be at least 1");
        }
        if !self.cpus.is_multiple_of(self.sockets) {
            bail!(
                "--cpus {} is not a multiple of --sockets {}",
                self.cpus,
                self.sockets
            );
        }
        if !self.cpus.is_multiple_of(self.numa) {
            bail!(
                "--cpus {} is not a multiple of --numa {}",
                self.cpus,
                self.numa
            );
        }
        if !self.mem_mib.is_multiple_of(u64::from(self.numa)) {
            bail!(
                "--mem {}M does not split evenly into {} NUMA nodes",
                self.mem_mib,
                self.numa
            );
        }
        if !self.kernel.is_file() {
            return Err(VmError::KernelMissing(self.kernel.clone()).into());
        }
        if !self.initrd.is_file() {
            return Err(VmError::InitrdMissing(self.initrd.clone()).into());
        }
        Ok(())
    }

    pub(crate) fn logs(&self) -> PathBuf {
        self.log_dir
            .clone()
            .unwrap_or_else(|| self.root.join("target/vm/logs"))
    }

    /// Guest working directory: explicit, else host cwd inside the share,
    /// else the share root (or `/` without a share).
    pub(crate) fn guest_cwd(&self, host_cwd: Option<&Path>) -> PathBuf {
        if let Some(c) = &self.cwd {
            return c.clone();
        }
        if !self.share {
            return PathBuf::from("/");
        }
        match host_cwd {
            Some(c) if c.starts_with(&self.root) => c.to_path_buf(),
            _ => self.root.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem_mib("4G").unwrap(), 4096);
        assert_eq!(parse_mem_mib("512M").unwrap(), 512);
        assert_eq!(parse_mem_mib("300").unwrap(), 300);
        assert!(parse_mem_mib("0").is_err());
        assert!(parse_mem_mib("lots").is_err());
    }

    #[test]
    fn accel_names() {
        assert_eq!("TCG".parse::<Accel>().unwrap(), Accel::Tcg);
        assert_eq!("mttcg".parse::<Accel>().unwrap(), Accel::Mttcg);
        assert!("hvf".parse::<Accel>().is_err());
        assert_eq!(default_timeout(Accel::Kvm), Duration::from_secs(120));
        assert_eq!(default_timeout(Accel::Tcg), Duration::from_secs(300));
    }

    #[test]
    fn guest_cwd_follows_host_inside_share() {
        let c = VmConfig::with_root("/w/enoki");
        assert_eq!(
            c.guest_cwd(Some(Path::new("/w/enoki/vm"))),
            Path::new("/w/enoki/vm")
        );
        assert_eq!(
            c.guest_cwd(Some(Path::new("/elsewhere"))),
            Path::new("/w/enoki")
        );
        let c = c.share(false);
        assert_eq!(c.guest_cwd(Some(Path::new("/w/enoki/vm"))), Path::new("/"));
    }

    #[test]
    fn topology_validation() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, b"").unwrap();
        let base = VmConfig::with_root(dir.path()).kernel(&k).initrd(&k);
        assert!(base.clone().validate().is_ok());
        assert!(base.clone().cpus(6).sockets(4).validate().is_err());
        assert!(base.clone().cpus(8).numa(3).validate().is_err());
        assert!(base.clone().mem_mib(1001).validate().is_err());
        let e = base
            .clone()
            .kernel(dir.path().join("nope"))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("cargo make kernel"), "{e}");
        let e = base.initrd(dir.path().join("nope")).validate().unwrap_err();
        assert!(e.to_string().contains("cargo make rootfs"), "{e}");
    }
}
