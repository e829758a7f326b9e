// SPDX-License-Identifier: MIT OR Apache-2.0
//! Errors, each displayed as one line naming its cause (`main` prefixes
//! "enoki: ").

use std::path::PathBuf;

use nix::errno::Errno;

const SEE_DMESG: &str = "see 'dmesg | tail' for details";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("must be root")]
    NotRoot,

    #[error("this kernel has no Enoki ({} missing)", .0.display())]
    NoEnoki(PathBuf),

    #[error("unknown scheduler '{name}'; {}", available_list(.available, .dir))]
    UnknownScheduler {
        name: String,
        available: Vec<String>,
        dir: PathBuf,
    },

    #[error("scheduler '{0}' is already loaded; run 'enoki unload' first")]
    AlreadyLoaded(String),

    #[error("{} was built for kernel {built}, but the running kernel is {running}; install the modules built for this kernel", .module.display())]
    WrongKernel {
        module: PathBuf,
        built: crate::kernel_match::KernelId,
        running: crate::kernel_match::KernelId,
    },

    #[error("no scheduler is loaded")]
    NotLoaded,

    #[error("loading {sched} failed: {}; {SEE_DMESG}", explain_load(*.errno, .module))]
    LoadFailed {
        sched: String,
        module: String,
        errno: Errno,
    },

    #[error("no scheduler is running to upgrade; load one with 'enoki load'")]
    NothingToUpgrade,

    #[error("upgrade to {sched} refused: {}; the running scheduler goes on; {SEE_DMESG}", explain_upgrade(*.errno))]
    UpgradeFailed { sched: String, errno: Errno },

    #[error("unloading {module} failed: {}; {SEE_DMESG}", explain_unload(*.errno, .module))]
    UnloadFailed { module: String, errno: Errno },

    #[error("this kernel has no Enoki/sched_ext policy")]
    NoExtPolicy,

    #[error("cannot set the Enoki policy: {}", describe(*.0))]
    SetPolicy(Errno),

    #[error("no such process: {0}")]
    NoSuchProcess(i32),

    #[error("cannot get the policy of process {pid}: {}", describe(*.errno))]
    GetPolicy { pid: i32, errno: Errno },

    #[error("{}: {msg}", .path.display())]
    Malformed { path: PathBuf, msg: String },

    // Not a thiserror `source`: anyhow's `{:#}` would print it twice.
    #[error("{}: {error}", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}

fn available_list(available: &[String], dir: &std::path::Path) -> String {
    if available.is_empty() {
        format!("no schedulers found in {}", dir.display())
    } else {
        format!("available: {}", available.join(", "))
    }
}

/// "Bad address (EFAULT)": the text for people, the name for searching.
fn describe(errno: Errno) -> String {
    format!("{} ({errno:?})", errno.desc())
}

fn explain_load(errno: Errno, module: &str) -> String {
    let why = match errno {
        Errno::EINVAL => "module rejected its parameters or failed to initialise".into(),
        Errno::EEXIST => format!("module {module} is already loaded; run 'enoki unload' first"),
        Errno::EBUSY => {
            "another scheduler (Enoki or sched_ext) is attached or still going away".into()
        }
        Errno::ENOMEM => "out of kernel memory".into(),
        Errno::ENOEXEC => "not a module for this kernel (built against another kernel?)".into(),
        Errno::ENOENT => {
            "module needs symbols this kernel lacks (built against another kernel?)".into()
        }
        Errno::EPERM => "module loading is disabled on this kernel".into(),
        Errno::ENOKEY | Errno::EKEYREJECTED => "module signature missing or rejected".into(),
        other => return describe(other),
    };
    format!("{why} ({errno:?})")
}

fn explain_upgrade(errno: Errno) -> String {
    let why = match errno {
        Errno::EPROTO => {
            "the two versions' upgrade states differ (use --fresh to start without it)"
        }
        Errno::ECANCELED => {
            "the running version could not hand over its state, or the new one could not take it"
        }
        Errno::EPERM => "the new version would not take a task the running one holds",
        Errno::EAGAIN => "tasks changed too often while the new version met them; try again",
        Errno::ENOENT => "no scheduler is running",
        Errno::EEXIST => "that module is the one running",
        Errno::EINVAL => {
            "the new version rejected its parameters, failed to start, or runs in another mode"
        }
        other => return describe(other),
    };
    format!("{why} ({errno:?})")
}

fn explain_unload(errno: Errno, module: &str) -> String {
    let why = match errno {
        Errno::EWOULDBLOCK => format!("module {module} is in use"),
        Errno::EBUSY => format!("module {module} is still initialising or cannot be removed"),
        Errno::ENOENT => format!("module {module} is not loaded"),
        Errno::EPERM => "module unloading is disabled on this kernel".into(),
        other => return describe(other),
    };
    format!("{why} ({errno:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_einval_message() {
        let e = Error::LoadFailed {
            sched: "fifo".into(),
            module: "enoki_fifo".into(),
            errno: Errno::EINVAL,
        };
        assert_eq!(
            e.to_string(),
            "loading fifo failed: module rejected its parameters or failed to \
             initialise (EINVAL); see 'dmesg | tail' for details"
        );
    }

    #[test]
    fn load_eexist_and_other_errnos() {
        let e = |errno| {
            Error::LoadFailed {
                sched: "fifo".into(),
                module: "enoki_fifo".into(),
                errno,
            }
            .to_string()
        };
        assert!(e(Errno::EEXIST).contains("enoki_fifo is already loaded; run 'enoki unload'"));
        assert!(e(Errno::EBUSY).contains("(EBUSY)"));
        assert!(e(Errno::ENOMEM).contains("out of kernel memory (ENOMEM)"));
        // Unmapped errnos still name themselves and point at dmesg.
        let efault = e(Errno::EFAULT);
        assert!(efault.contains("(EFAULT)"), "{efault}");
        assert!(efault.ends_with("see 'dmesg | tail' for details"));
        for msg in [e(Errno::EINVAL), e(Errno::EEXIST), efault] {
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn unload_messages() {
        let e = Error::UnloadFailed {
            module: "enoki_fifo".into(),
            errno: Errno::EWOULDBLOCK,
        };
        assert_eq!(
            e.to_string(),
            "unloading enoki_fifo failed: module enoki_fifo is in use (EAGAIN); \
             see 'dmesg | tail' for details"
        );
    }

    #[test]
    fn unknown_scheduler_messages() {
        let e = Error::UnknownScheduler {
            name: "x".into(),
            available: vec!["badpick".into(), "fifo".into()],
            dir: "/m".into(),
        };
        assert_eq!(
            e.to_string(),
            "unknown scheduler 'x'; available: badpick, fifo"
        );
        let e = Error::UnknownScheduler {
            name: "x".into(),
            available: vec![],
            dir: "/m".into(),
        };
        assert_eq!(
            e.to_string(),
            "unknown scheduler 'x'; no schedulers found in /m"
        );
    }

    #[test]
    fn simple_messages() {
        assert_eq!(Error::NotRoot.to_string(), "must be root");
        assert_eq!(
            Error::NoEnoki("/sys/kernel/enoki".into()).to_string(),
            "this kernel has no Enoki (/sys/kernel/enoki missing)"
        );
        assert_eq!(
            Error::AlreadyLoaded("fifo".into()).to_string(),
            "scheduler 'fifo' is already loaded; run 'enoki unload' first"
        );
    }
}
