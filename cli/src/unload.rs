// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki unload`: removes whichever scheduler module Enoki-C says is loaded.

use std::ffi::CString;

use nix::kmod::{delete_module, DeleteModuleFlags};

use crate::status::read_attr;
use crate::{Error, Paths};

/// What was (or is about to be) unloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub module: String,
    /// May be absent if Enoki-C already cleared it (e.g. after an ejection).
    pub scheduler: Option<String>,
}

/// The loaded module according to sysfs, or `NotLoaded`.
pub fn loaded(paths: &Paths) -> Result<Loaded, Error> {
    if !paths.sysfs.is_dir() {
        return Err(Error::NoEnoki(paths.sysfs.clone()));
    }
    let module = read_attr(&paths.sysfs, "module")?.ok_or(Error::NotLoaded)?;
    Ok(Loaded {
        module,
        scheduler: read_attr(&paths.sysfs, "scheduler")?,
    })
}

/// Unloads the current scheduler module. The caller checks for root.
pub fn unload(paths: &Paths) -> Result<Loaded, Error> {
    let loaded = loaded(paths)?;
    let name = CString::new(loaded.module.as_str()).map_err(|_| Error::Malformed {
        path: paths.sysfs.join("module"),
        msg: "contains a NUL byte".into(),
    })?;
    // O_NONBLOCK: fail with EWOULDBLOCK rather than wait for users to go.
    delete_module(&name, DeleteModuleFlags::O_NONBLOCK).map_err(|errno| Error::UnloadFailed {
        module: loaded.module.clone(),
        errno,
    })?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    fn paths(tmp: &TempDir) -> Paths {
        Paths {
            sysfs: tmp.path().to_path_buf(),
            module_dir: tmp.path().join("modules"),
            kernel_notes: tmp.path().join("notes"),
        }
    }

    #[test]
    fn reads_loaded_module() {
        let tmp = TempDir::new().unwrap();
        fs::write(tmp.path().join("module"), "enoki_fifo\n").unwrap();
        fs::write(tmp.path().join("scheduler"), "fifo\n").unwrap();
        assert_eq!(
            loaded(&paths(&tmp)).unwrap(),
            Loaded {
                module: "enoki_fifo".into(),
                scheduler: Some("fifo".into())
            }
        );
    }

    #[test]
    fn none_loaded() {
        let tmp = TempDir::new().unwrap();
        assert!(matches!(loaded(&paths(&tmp)), Err(Error::NotLoaded)));
        fs::write(tmp.path().join("module"), "\n").unwrap();
        let err = unload(&paths(&tmp)).unwrap_err();
        assert_eq!(err.to_string(), "no scheduler is loaded");
    }

    #[test]
    fn no_enoki() {
        let tmp = TempDir::new().unwrap();
        let p = Paths {
            sysfs: tmp.path().join("enoki"),
            ..paths(&tmp)
        };
        assert!(matches!(unload(&p), Err(Error::NoEnoki(_))));
    }
}
