// SPDX-License-Identifier: MIT OR Apache-2.0
//! Scheduling-policy numbers and the two libc calls on them.

use nix::errno::Errno;

use crate::Error;

/// Not in every libc release yet.
pub const SCHED_EXT: i32 = 7;

/// Set in sched_getscheduler's result for reset-on-fork tasks.
const RESET_ON_FORK: i32 = 0x4000_0000;

/// Short name of a policy number, as in `chrt`.
pub fn name(policy: i32) -> Option<&'static str> {
    Some(match policy {
        0 => "other",
        1 => "fifo",
        2 => "rr",
        3 => "batch",
        5 => "idle",
        6 => "deadline",
        SCHED_EXT => "ext",
        _ => return None,
    })
}

/// A task's policy, split from its reset-on-fork flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub policy: i32,
    pub reset_on_fork: bool,
}

impl Policy {
    fn from_raw(raw: i32) -> Self {
        Policy {
            policy: raw & !RESET_ON_FORK,
            reset_on_fork: raw & RESET_ON_FORK != 0,
        }
    }
}

/// `7 ext`, `0 other reset-on-fork`, `42 unknown`.
impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.policy,
            name(self.policy).unwrap_or("unknown")
        )?;
        if self.reset_on_fork {
            write!(f, " reset-on-fork")?;
        }
        Ok(())
    }
}

/// Policy of `pid` (0: the caller).
pub fn get(pid: i32) -> Result<Policy, Error> {
    // SAFETY: sched_getscheduler takes a plain pid and touches no memory.
    let raw = unsafe { libc::sched_getscheduler(pid) };
    match Errno::result(raw) {
        Ok(raw) => Ok(Policy::from_raw(raw)),
        Err(Errno::ESRCH) => Err(Error::NoSuchProcess(pid)),
        Err(errno) => Err(Error::GetPolicy { pid, errno }),
    }
}

/// Puts the calling process under SCHED_EXT, i.e. Enoki.
pub fn set_self_ext() -> Result<(), Error> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which
    // only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, SCHED_EXT, &param) };
    Errno::result(rc).map(drop).map_err(|errno| match errno {
        Errno::EINVAL => Error::NoExtPolicy,
        other => Error::SetPolicy(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(7), Some("ext"));
        assert_eq!(name(0), Some("other"));
        assert_eq!(name(4), None);
    }

    #[test]
    fn display() {
        assert_eq!(Policy::from_raw(7).to_string(), "7 ext");
        assert_eq!(
            Policy::from_raw(RESET_ON_FORK).to_string(),
            "0 other reset-on-fork"
        );
        assert_eq!(Policy::from_raw(42).to_string(), "42 unknown");
    }

    #[test]
    fn own_policy_is_readable() {
        assert!(name(get(0).unwrap().policy).is_some());
    }

    #[test]
    fn missing_process() {
        // Above the kernel's PID_MAX_LIMIT (4M), so never a live pid.
        let err = get(i32::MAX).unwrap_err();
        assert_eq!(err.to_string(), format!("no such process: {}", i32::MAX));
    }
}
