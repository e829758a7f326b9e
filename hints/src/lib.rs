// SPDX-License-Identifier: GPL-2.0
//! Typed hint queues from an application to the running Enoki scheduler.
//!
//! A scheduler declares the hints it reads (`EnokiScheduler::Hint`, plain
//! data declared with [`enoki::hint_struct!`]); an application opens a
//! [`HintQueue`] of the same type and sends hints about its tasks:
//!
//! ```no_run
//! enoki::hint_struct! {
//!     /// What the scheduler reads (in practice: its crate's type).
//!     pub struct GroupHint { pub group: u32 }
//! }
//! # fn main() -> Result<(), enoki_hints::Error> {
//! let queue = enoki_hints::HintQueue::<GroupHint>::open()?;
//! // pid 0: the calling thread
//! queue.send(0, &GroupHint { group: 3 })?;
//! # Ok(()) }
//! ```
//!
//! Opening checks that the running scheduler reads this very type (size
//! and fingerprint of its definition), so a hint cannot be misread, and
//! answers with reverse hints of type `R` if it says it does.
//!
//! Hints go one at a time ([`HintQueue::send`], a system call each) or in
//! batches: [`HintQueue::push`] writes them into a ring shared with the
//! kernel, and [`HintQueue::enter`] hands the whole batch over in one
//! system call. The scheduler's reverse hints arrive in a second ring;
//! [`HintQueue::recv`] reads the next one, waiting for it if asked to. The
//! kernel checks each hint in turn: the task must exist, be scheduled by
//! Enoki, and be one the caller may steer (its own user's, or with
//! `CAP_SYS_NICE`); the scheduler then checks the values. Every refusal is
//! an [`Error::Refused`] naming the [`Reason`], and is counted per queue
//! ([`HintQueue::stats`]) and in `/sys/kernel/enoki/hints`.
//!
//! C programs use `<linux/enoki.h>` (`kernel/src/include/uapi/linux/enoki.h`)
//! directly; this crate is a typed wrapper of that interface.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use enoki::{HintData, NoHint};

pub mod locality;
mod ring;
use ring::Rings;

/// bindgen's rendering of `uapi/linux/enoki.h`.
#[allow(non_camel_case_types, non_upper_case_globals, dead_code)]
mod uapi {
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

/// Where Enoki-C's hint device is.
pub const DEVICE: &str = "/dev/enoki";

const IOC_MAGIC: u8 = 0xEB;
nix::ioctl_read!(ioc_info, IOC_MAGIC, 0, uapi::enoki_queue_info);
nix::ioctl_write_ptr!(ioc_hint, IOC_MAGIC, 1, uapi::enoki_hint);
nix::ioctl_read!(ioc_stats, IOC_MAGIC, 2, uapi::enoki_queue_stats);
nix::ioctl_none!(ioc_enter, IOC_MAGIC, 3);

/// Why the kernel or the scheduler refused a hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No such task, or it is not scheduled by Enoki.
    Task,
    /// The caller may not steer the task.
    Permission,
    /// The scheduler found the values wrong (or the size did not match).
    Refused,
    /// The scheduler the queue was made for is gone, or was upgraded to
    /// one with other hints.
    Gone,
}

/// What can go wrong with a hint queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Not thiserror `source`s: anyhow's `{:#}` would print them twice.
    #[error("opening {path}: {error}{}", open_advice(error))]
    Open { path: String, error: io::Error },
    #[error(
        "the running scheduler {scheduler} reads {size}-byte hints of another type \
         (fingerprint {fingerprint:#018x}); this program sends {our_size}-byte hints \
         (fingerprint {our_fingerprint:#018x})"
    )]
    WrongType {
        scheduler: String,
        size: u32,
        fingerprint: u64,
        our_size: usize,
        our_fingerprint: u64,
    },
    #[error("hint refused ({0:?})")]
    Refused(Reason),
    #[error("the hint ring is full: enter() the hints in it first")]
    RingFull,
    #[error("{what}: {error}")]
    Io {
        what: &'static str,
        error: nix::Error,
    },
}

/// A hint for the reader of an open() failure.
fn open_advice(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENODEV) => " (no Enoki scheduler is running)",
        Some(libc::EOPNOTSUPP) => " (the running scheduler takes no hints)",
        Some(libc::ENOSPC) => " (the scheduler has no room for another queue)",
        Some(libc::ENOENT) => " (not an Enoki kernel)",
        _ => "",
    }
}

/// What the kernel says about a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's id, as the scheduler and `/sys/kernel/enoki/hints` name it.
    pub id: u32,
    /// The scheduler that accepted it.
    pub scheduler: String,
    /// Bytes of one hint.
    pub hint_size: u32,
    /// Fingerprint of the scheduler's hint type.
    pub hint_fingerprint: u64,
    /// Bytes of one reverse hint (0: the scheduler sends none).
    pub rev_hint_size: u32,
    /// Fingerprint of the scheduler's reverse hint type.
    pub rev_hint_fingerprint: u64,
    /// Enoki-C's message ABI version.
    pub abi_version: u32,
}

/// What became of a queue's hints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub taken: u64,
    /// Of the wrong size (an untyped sender).
    pub wrong_size: u64,
    /// About a task that does not exist.
    pub no_task: u64,
    /// About a task not scheduled by Enoki.
    pub outside: u64,
    /// About a task the sender may not steer.
    pub permission: u64,
    /// Refused by the scheduler.
    pub refused: u64,
    /// After the scheduler went.
    pub gone: u64,
    /// Doorbells whose ring indices made no sense (a whole batch lost).
    pub bad_ring: u64,
}

/// A reverse hint: what the scheduler said, about which task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevHint<R> {
    /// The task it is about, or 0.
    pub pid: i32,
    pub hint: R,
}

/// An open queue to the running scheduler, sending hints of type `H` and
/// receiving reverse hints of type `R`.
pub struct HintQueue<H: HintData, R: HintData = NoHint> {
    raw: RawQueue,
    _hint: PhantomData<fn(H) -> R>,
}

impl<H: HintData, R: HintData> HintQueue<H, R> {
    /// Opens a queue on [`DEVICE`], checking the scheduler reads `H`.
    pub fn open() -> Result<Self, Error> {
        Self::open_at(Path::new(DEVICE))
    }

    /// Opens a queue on the device at `path`.
    pub fn open_at(path: &Path) -> Result<Self, Error> {
        let raw = RawQueue::open_at(path)?;
        let info = raw.info();
        let (size, fingerprint) = (info.hint_size, info.hint_fingerprint);
        let (rev_size, rev_fingerprint) = (info.rev_hint_size, info.rev_hint_fingerprint);
        let wrong =
            |size: u32, fingerprint: u64, our_size: usize, our_fingerprint: u64| Error::WrongType {
                scheduler: info.scheduler.clone(),
                size,
                fingerprint,
                our_size,
                our_fingerprint,
            };
        if size as usize != H::SIZE || fingerprint != H::FINGERPRINT {
            return Err(wrong(size, fingerprint, H::SIZE, H::FINGERPRINT));
        }
        // A receiver of nothing takes any scheduler's answers as none.
        if R::SIZE != 0 && (rev_size as usize != R::SIZE || rev_fingerprint != R::FINGERPRINT) {
            return Err(wrong(rev_size, rev_fingerprint, R::SIZE, R::FINGERPRINT));
        }
        Ok(HintQueue {
            raw,
            _hint: PhantomData,
        })
    }

    /// Hands `hint` about thread `pid` (0: the calling thread) to the
    /// scheduler, and returns once it took it.
    pub fn send(&self, pid: i32, hint: &H) -> Result<(), Error> {
        let mut bytes = [0u8; uapi::ENOKI_HINT_MAX as usize];
        hint.write(&mut bytes);
        self.raw.send(pid, bytes.get(..H::SIZE).unwrap_or(&bytes))
    }

    /// Writes `hint` about `pid` (0: the thread that rings the doorbell)
    /// into the ring, for the next [`Self::enter`].
    pub fn push(&mut self, pid: i32, hint: &H) -> Result<(), Error> {
        let mut bytes = [0u8; uapi::ENOKI_HINT_MAX as usize];
        hint.write(&mut bytes);
        self.raw.push(pid, bytes.get(..H::SIZE).unwrap_or(&bytes))
    }

    /// Hands every hint pushed since the last call to the scheduler, in one
    /// system call; returns how many it took (see [`Self::stats`] for why
    /// the others were refused).
    pub fn enter(&mut self) -> Result<u32, Error> {
        self.raw.enter()
    }

    /// The next reverse hint; with `wait`, waits up to that long for one.
    pub fn recv(&mut self, wait: Option<Duration>) -> Result<Option<RevHint<R>>, Error> {
        Ok(self.raw.recv(wait)?.map(|(pid, bytes)| RevHint {
            pid,
            hint: R::read(&bytes),
        }))
    }

    /// Reverse hints the kernel dropped because the ring was full.
    pub fn rev_dropped(&self) -> u32 {
        self.raw.rings.rev_dropped()
    }

    /// The queue as the kernel describes it.
    pub fn info(&self) -> &QueueInfo {
        self.raw.info()
    }

    /// This queue's counters.
    pub fn stats(&self) -> Result<QueueStats, Error> {
        self.raw.stats()
    }
}

/// A queue that sends bytes: for tools and tests that must send what a
/// typed sender cannot (a wrong size). Applications use [`HintQueue`].
pub struct RawQueue {
    file: File,
    info: QueueInfo,
    rings: Rings,
}

impl RawQueue {
    /// Opens a queue on the device at `path`.
    pub fn open_at(path: &Path) -> Result<Self, Error> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| Error::Open {
                path: path.display().to_string(),
                error,
            })?;
        let mut raw = uapi::enoki_queue_info::default();
        // SAFETY: `file` is open and `raw` is a writable enoki_queue_info,
        // the type ENOKI_IOC_INFO writes.
        unsafe { ioc_info(file.as_raw_fd(), &mut raw) }.map_err(|error| Error::Io {
            what: "ENOKI_IOC_INFO",
            error,
        })?;
        let name: Vec<u8> = raw
            .scheduler
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let info = QueueInfo {
            id: raw.queue,
            scheduler: String::from_utf8_lossy(&name).into_owned(),
            hint_size: raw.hint_size,
            hint_fingerprint: raw.hint_fp,
            rev_hint_size: raw.rev_hint_size,
            rev_hint_fingerprint: raw.rev_hint_fp,
            abi_version: raw.abi_version,
        };
        let rings = Rings::map(file.as_fd())?;
        Ok(RawQueue { file, info, rings })
    }

    /// Writes `bytes` as a hint about `pid` into the ring.
    pub fn push(&mut self, pid: i32, bytes: &[u8]) -> Result<(), Error> {
        let hint = raw_hint(pid, bytes)?;
        if self.rings.push(&hint) {
            Ok(())
        } else {
            Err(Error::RingFull)
        }
    }

    /// Rings the doorbell: the kernel reads every hint pushed; returns how
    /// many the scheduler took.
    pub fn enter(&mut self) -> Result<u32, Error> {
        // SAFETY: `file` is open; ENOKI_IOC_ENTER takes no argument.
        let taken = unsafe { ioc_enter(self.file.as_raw_fd()) }.map_err(|error| Error::Io {
            what: "ENOKI_IOC_ENTER",
            error,
        })?;
        Ok(taken as u32)
    }

    /// Writes an index into the to-kernel ring the kernel must refuse
    /// (more entries than the ring holds), for tests of that refusal.
    pub fn corrupt_ring(&mut self) {
        self.rings.corrupt_tail();
    }

    /// Writes `bytes` over the to-kernel ring's next entries (40 bytes
    /// each, as `struct enoki_hint`) and moves its tail `advance` entries
    /// on, sense or not: what a buggy or hostile application could do,
    /// for fuzzing the kernel's reading of the ring.
    pub fn scribble(&mut self, bytes: &[u8], advance: u32) {
        self.rings.scribble(bytes, advance);
    }

    /// The next reverse hint's task and bytes; with `wait`, waits up to
    /// that long for one.
    pub fn recv(&mut self, wait: Option<Duration>) -> Result<Option<(i32, Vec<u8>)>, Error> {
        if let Some(entry) = self.rings.pop() {
            return Ok(Some(entry));
        }
        let Some(wait) = wait else { return Ok(None) };
        let mut fds = [nix::poll::PollFd::new(
            self.file.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(wait).unwrap_or(nix::poll::PollTimeout::MAX);
        nix::poll::poll(&mut fds, timeout).map_err(|error| Error::Io {
            what: "poll",
            error,
        })?;
        Ok(self.rings.pop())
    }

    /// The queue as the kernel describes it.
    pub fn info(&self) -> &QueueInfo {
        &self.info
    }

    /// Sends `bytes` (at most 32) as a hint about `pid` (0: the caller).
    pub fn send(&self, pid: i32, bytes: &[u8]) -> Result<(), Error> {
        let hint = raw_hint(pid, bytes)?;
        // SAFETY: `file` is open and `hint` a readable enoki_hint, the type
        // ENOKI_IOC_HINT reads.
        match unsafe { ioc_hint(self.file.as_raw_fd(), &hint) } {
            Ok(_) => Ok(()),
            Err(e) => Err(refusal(e)),
        }
    }

    /// This queue's counters.
    pub fn stats(&self) -> Result<QueueStats, Error> {
        let mut raw = uapi::enoki_queue_stats::default();
        // SAFETY: `file` is open and `raw` a writable enoki_queue_stats,
        // the type ENOKI_IOC_STATS writes.
        unsafe { ioc_stats(self.file.as_raw_fd(), &mut raw) }.map_err(|error| Error::Io {
            what: "ENOKI_IOC_STATS",
            error,
        })?;
        let at = |i: u32| raw.hints.get(i as usize).copied().unwrap_or(0);
        Ok(QueueStats {
            taken: at(uapi::ENOKI_HINT_TAKEN),
            wrong_size: at(uapi::ENOKI_HINT_REJ_SIZE),
            no_task: at(uapi::ENOKI_HINT_REJ_TASK),
            outside: at(uapi::ENOKI_HINT_REJ_OUTSIDE),
            permission: at(uapi::ENOKI_HINT_REJ_PERM),
            refused: at(uapi::ENOKI_HINT_REJ_REFUSED),
            gone: at(uapi::ENOKI_HINT_REJ_GONE),
            bad_ring: at(uapi::ENOKI_HINT_REJ_RING),
        })
    }
}

/// The kernel's form of a hint of `bytes` (at most 32) about `pid`.
fn raw_hint(pid: i32, bytes: &[u8]) -> Result<uapi::enoki_hint, Error> {
    let mut hint = uapi::enoki_hint {
        pid,
        ..Default::default()
    };
    if bytes.len() > hint.data.len() {
        return Err(Error::Refused(Reason::Refused));
    }
    hint.size = bytes.len() as u32;
    for (d, b) in hint.data.iter_mut().zip(bytes) {
        *d = *b;
    }
    Ok(hint)
}

/// The refusal an ENOKI_IOC_HINT errno stands for.
fn refusal(e: nix::Error) -> Error {
    match e {
        nix::Error::ESRCH => Error::Refused(Reason::Task),
        nix::Error::EPERM => Error::Refused(Reason::Permission),
        nix::Error::EINVAL => Error::Refused(Reason::Refused),
        nix::Error::ENODEV => Error::Refused(Reason::Gone),
        error => Error::Io {
            what: "ENOKI_IOC_HINT",
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_layouts_are_the_headers() {
        // The ioctl numbers encode these sizes: the kernel answers ENOTTY
        // to any other.
        assert_eq!(std::mem::size_of::<uapi::enoki_queue_info>(), 64);
        assert_eq!(std::mem::size_of::<uapi::enoki_hint>(), 40);
        assert_eq!(
            std::mem::size_of::<uapi::enoki_queue_stats>(),
            8 * uapi::ENOKI_HINT_OUTCOMES as usize
        );
        assert_eq!(uapi::ENOKI_HINT_MAX as usize, enoki::abi::HINT_MAX);
    }

    #[test]
    fn each_errno_names_its_reason() {
        for (errno, reason) in [
            (nix::Error::ESRCH, Reason::Task),
            (nix::Error::EPERM, Reason::Permission),
            (nix::Error::EINVAL, Reason::Refused),
            (nix::Error::ENODEV, Reason::Gone),
        ] {
            assert!(matches!(refusal(errno), Error::Refused(r) if r == reason));
        }
        assert!(matches!(refusal(nix::Error::EFAULT), Error::Io { .. }));
    }

    #[test]
    fn a_missing_device_says_what_it_means() {
        let Err(e) = HintQueue::<u32>::open_at(Path::new("/nonexistent/enoki")) else {
            panic!("opened a missing device");
        };
        assert!(e.to_string().contains("not an Enoki kernel"), "{e}");
    }
}
