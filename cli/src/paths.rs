// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where Enoki lives on the guest, overridable so tests can use fake trees.

use std::ffi::OsString;
use std::path::PathBuf;

pub const DEFAULT_SYSFS: &str = "/sys/kernel/enoki";
/// Where the Debian package (`cargo make package`) puts the modules, under
/// `/lib/modules/<release>/`.
pub const PACKAGE_MODULE_SUBDIR: &str = "extra/enoki";
/// Where the test VMs' root file system puts them.
pub const DEFAULT_MODULE_DIR: &str = "/lib/modules/enoki";
pub const DEFAULT_KERNEL_NOTES: &str = "/sys/kernel/notes";
pub const SYSFS_ENV: &str = "ENOKI_SYSFS";
pub const MODULE_DIR_ENV: &str = "ENOKI_MODULE_DIR";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Enoki-C's sysfs directory.
    pub sysfs: PathBuf,
    /// Directory holding `enoki_<sched>.ko` files.
    pub module_dir: PathBuf,
    /// The running kernel's ELF notes (its build id).
    pub kernel_notes: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            sysfs: DEFAULT_SYSFS.into(),
            module_dir: default_module_dir(),
            kernel_notes: DEFAULT_KERNEL_NOTES.into(),
        }
    }
}

/// The packaged modules of the running kernel when they are installed,
/// else the test VMs' directory.
fn default_module_dir() -> PathBuf {
    nix::sys::utsname::uname()
        .ok()
        .map(|u| {
            PathBuf::from("/lib/modules")
                .join(u.release())
                .join(PACKAGE_MODULE_SUBDIR)
        })
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| DEFAULT_MODULE_DIR.into())
}

impl Paths {
    /// Defaults, overridden by `ENOKI_SYSFS` / `ENOKI_MODULE_DIR` when set
    /// and non-empty.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os(SYSFS_ENV),
            std::env::var_os(MODULE_DIR_ENV),
        )
    }

    fn from_vars(sysfs: Option<OsString>, module_dir: Option<OsString>) -> Self {
        let pick = |v: Option<OsString>, default: PathBuf| {
            v.filter(|v| !v.is_empty()).map_or(default, PathBuf::from)
        };
        let default = Paths::default();
        Paths {
            sysfs: pick(sysfs, default.sysfs),
            module_dir: pick(module_dir, default.module_dir),
            kernel_notes: default.kernel_notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_unset_or_empty() {
        assert_eq!(Paths::from_vars(None, None), Paths::default());
        assert_eq!(
            Paths::from_vars(Some("".into()), Some("".into())),
            Paths::default()
        );
    }

    #[test]
    fn overrides() {
        let p = Paths::from_vars(Some("/tmp/s".into()), Some("/tmp/m".into()));
        assert_eq!(p.sysfs, PathBuf::from("/tmp/s"));
        assert_eq!(p.module_dir, PathBuf::from("/tmp/m"));
    }
}
