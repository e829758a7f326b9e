// SPDX-License-Identifier: GPL-2.0
//! How a scheduler fails, and the report that says exactly why.
//!
//! A scheduler never hangs a CPU on its own locks: an acquisition that
//! would deadlock, or has waited too long, fails with [`Failed`], which the
//! scheduler passes up with `?`. libEnoki keeps a [`Fault`] describing it
//! (kind, CPUs, locks, the source lines of every acquisition involved),
//! marks the scheduler failed, and Enoki-C ejects it: no further message
//! reaches it and its tasks go back to the kernel's own scheduler.

use core::fmt;
use core::panic::Location;

/// A scheduler call could not go on: a lock acquisition failed (or the
/// scheduler was found failed). libEnoki has the details as a [`Fault`];
/// return this with `?`.
/// Only libEnoki makes one, when it has recorded why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed(());

impl Failed {
    pub(super) const fn new() -> Self {
        Failed(())
    }
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A CPU acquired a lock it already holds (AA).
    SelfDeadlock,
    /// CPUs wait for each other's locks in a cycle (ABBA, or longer).
    Cycle,
    /// A lock stayed held longer than the lock timeout.
    Timeout,
    /// A call returned with a lock still held (a guard leaked).
    Leaked,
    /// A call ran longer than the lock timeout (an endless loop).
    OverBudget,
    /// A run queue was asked for a CPU the machine does not have.
    NoSuchCpu,
    /// A call failed with no fault recorded (it said `TaskError::Failed`
    /// itself, or its CPU had no place in the detector's table).
    Unexplained,
}

impl FaultKind {
    /// The short name in reports and `/sys/kernel/enoki/last_exit`.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::SelfDeadlock => "AA deadlock",
            FaultKind::Cycle => "lock cycle",
            FaultKind::Timeout => "lock timeout",
            FaultKind::Leaked => "lock leaked",
            FaultKind::OverBudget => "call over budget",
            FaultKind::NoSuchCpu => "no such CPU",
            FaultKind::Unexplained => "failed",
        }
    }
}

/// Most CPUs a reported cycle names (longer cycles are found up to
/// [`MAX_PARTIES`] CPUs; beyond that the lock timeout catches them).
pub const MAX_PARTIES: usize = 4;

/// A source line, as `#[track_caller]` gives it.
pub type Site = &'static Location<'static>;

/// One CPU's part in a fault: the lock it waited for (or held), where it
/// tried to take it, and who held it since where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Party {
    /// The CPU (user backend: the CPU of the call the thread runs).
    pub cpu: u32,
    /// The lock's address.
    pub lock: usize,
    /// Where this CPU tried to take it (or, for a leak, took it).
    pub at: Option<Site>,
    /// The CPU holding it, if known.
    pub holder: Option<u32>,
    /// Where the holder took it.
    pub held_since: Option<Site>,
}

/// A scheduler's failure, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What went wrong.
    pub kind: FaultKind,
    /// The CPUs involved, the failing one first.
    pub parties: [Option<Party>; MAX_PARTIES],
    /// How long the failing CPU waited (or its call ran), ns.
    pub waited_ns: u64,
    /// The call it happened in (a [`kind`](super::abi::kind) name), once known.
    pub call: &'static str,
}

impl Fault {
    /// A fault of `kind` with `first` as the failing CPU's part.
    pub fn new(kind: FaultKind, first: Party) -> Self {
        Fault {
            kind,
            parties: [Some(first), None, None, None],
            waited_ns: 0,
            call: "",
        }
    }

    /// The CPUs involved, the failing one first.
    pub fn parties(&self) -> impl Iterator<Item = &Party> {
        self.parties.iter().flatten()
    }
}

struct At(Option<Site>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{}:{}", l.file(), l.line()),
            None => f.write_str("?"),
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU {} at {} wants lock {:#x}",
            self.cpu,
            At(self.at),
            self.lock
        )?;
        match self.holder {
            Some(h) => write!(f, " held by CPU {} since {}", h, At(self.held_since)),
            None => f.write_str(" (holder unknown)"),
        }
    }
}

impl fmt::Display for Fault {
    /// One line: kind, call, then each CPU's part, e.g.
    /// `ABBA deadlock in pick_next_task: CPU 0 at src/lib.rs:40 wants lock
    /// 0x… held by CPU 1 since src/lib.rs:52; CPU 1 at …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.parties().count();
        match self.kind {
            FaultKind::Cycle if n == 2 => f.write_str("ABBA deadlock")?,
            FaultKind::Cycle => write!(f, "lock cycle of {n} CPUs")?,
            kind => f.write_str(kind.name())?,
        }
        if !self.call.is_empty() {
            write!(f, " in {}", self.call)?;
        }
        if self.waited_ns > 0 {
            let ms = self.waited_ns / 1_000_000;
            let us = self.waited_ns / 1_000 % 1_000;
            write!(f, " after {ms}.{us:03} ms")?;
        }
        f.write_str(":")?;
        for (i, p) in self.parties().enumerate() {
            f.write_str(if i == 0 { " " } else { "; " })?;
            match self.kind {
                FaultKind::Leaked => write!(
                    f,
                    "CPU {} took lock {:#x} at {} and still holds it",
                    p.cpu,
                    p.lock,
                    At(p.at)
                )?,
                FaultKind::NoSuchCpu => write!(
                    f,
                    "CPU {} at {} wants the queue of CPU {}",
                    p.cpu,
                    At(p.at),
                    p.lock
                )?,
                FaultKind::OverBudget | FaultKind::Unexplained => {
                    write!(f, "CPU {} at {}", p.cpu, At(p.at))?
                }
                _ => p.fmt(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_two_cpu_cycle_reads_as_abba_with_both_sites() {
        let a = Location::caller();
        let mut f = Fault::new(
            FaultKind::Cycle,
            Party {
                cpu: 0,
                lock: 0x10,
                at: Some(a),
                holder: Some(1),
                held_since: Some(a),
            },
        );
        f.parties[1] = Some(Party {
            cpu: 1,
            lock: 0x20,
            at: Some(a),
            holder: Some(0),
            held_since: None,
        });
        f.call = "pick_next_task";
        f.waited_ns = 1_234_567;
        let s = f.to_string();
        let line = a.line();
        assert_eq!(
            s,
            std::format!(
                "ABBA deadlock in pick_next_task after 1.234 ms: CPU 0 at enoki/src/fault.rs:{line} \
                 wants lock 0x10 held by CPU 1 since enoki/src/fault.rs:{line}; CPU 1 at \
                 enoki/src/fault.rs:{line} wants lock 0x20 held by CPU 0 since ?"
            )
        );
    }
}
