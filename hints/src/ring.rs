// SPDX-License-Identifier: GPL-2.0
//! The two rings a queue shares with the kernel (`struct enoki_hint_rings`):
//! hints to the kernel, reverse hints from it.

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::{uapi, Error};

const ENTRIES: u32 = uapi::ENOKI_RING_ENTRIES;
const BYTES: usize = std::mem::size_of::<uapi::enoki_hint_rings>();
const _: () = assert!(std::mem::size_of::<uapi::enoki_hint>() == 40);

/// A queue's rings, mapped.
///
/// # Invariants
/// `ptr` maps a whole `enoki_hint_rings` of an open queue, read and write,
/// until drop. Indices and counters are only accessed as atomics, by both
/// sides; an entry is written only by its ring's producer and only while
/// outside the range the consumer may read. Nothing in the mapping is
/// trusted: the kernel never trusts this side, and this side reads only
/// plain integers from it.
pub(crate) struct Rings {
    ptr: NonNull<uapi::enoki_hint_rings>,
    /// Our copy of `to_kernel.tail`: we produce hints.
    to_kernel_tail: u32,
    /// Our copy of `to_user.head`: we consume reverse hints.
    to_user_head: u32,
}

// SAFETY: the mapping is process memory; moving the owner to another
// thread changes nothing about who writes it.
unsafe impl Send for Rings {}
// SAFETY: through `&Rings` only atomic loads are made (`rev_dropped`);
// every write needs `&mut Rings`.
unsafe impl Sync for Rings {}

/// Which index of which ring.
#[derive(Clone, Copy)]
enum Index {
    KernelBoundHead,
    KernelBoundTail,
    UserBoundHead,
    UserBoundTail,
    UserBoundDropped,
}

impl Rings {
    /// Maps the rings of the queue open on `fd`.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> Result<Self, Error> {
        let len = NonZeroUsize::new(BYTES).ok_or(Error::Io {
            what: "mmap",
            error: nix::Error::EINVAL,
        })?;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new shared mapping of the queue's rings, placed by the
        // kernel, over nothing that exists.
        let ptr =
            unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }.map_err(|error| {
                Error::Io {
                    what: "mmap",
                    error,
                }
            })?;
        let mut rings = Rings {
            ptr: ptr.cast(),
            to_kernel_tail: 0,
            to_user_head: 0,
        };
        rings.to_kernel_tail = rings.index(Index::KernelBoundTail).load(Ordering::Relaxed);
        rings.to_user_head = rings.index(Index::UserBoundHead).load(Ordering::Relaxed);
        Ok(rings)
    }

    fn index(&self, which: Index) -> &AtomicU32 {
        let r = self.ptr.as_ptr();
        // SAFETY: every field is inside the mapping (invariant), a u32 of
        // a repr(C) struct so 4-aligned, and only accessed atomically.
        unsafe {
            AtomicU32::from_ptr(match which {
                Index::KernelBoundHead => &raw mut (*r).to_kernel.head,
                Index::KernelBoundTail => &raw mut (*r).to_kernel.tail,
                Index::UserBoundHead => &raw mut (*r).to_user.head,
                Index::UserBoundTail => &raw mut (*r).to_user.tail,
                Index::UserBoundDropped => &raw mut (*r).to_user.dropped,
            })
        }
    }

    /// Writes `hint` into the to-kernel ring; false if it is full.
    pub(crate) fn push(&mut self, hint: &uapi::enoki_hint) -> bool {
        let head = self.index(Index::KernelBoundHead).load(Ordering::Acquire);
        if self.to_kernel_tail.wrapping_sub(head) >= ENTRIES {
            return false;
        }
        let slot = (self.to_kernel_tail % ENTRIES) as usize;
        // SAFETY: `slot` < ENTRIES, so inside the mapping; the kernel reads
        // this slot only once the tail below says it is written.
        unsafe { ptr::write_volatile(&raw mut (*self.ptr.as_ptr()).to_kernel.hint[slot], *hint) };
        self.to_kernel_tail = self.to_kernel_tail.wrapping_add(1);
        self.index(Index::KernelBoundTail)
            .store(self.to_kernel_tail, Ordering::Release);
        true
    }

    /// The next reverse hint's task and bytes, if there is one.
    pub(crate) fn pop(&mut self) -> Option<(i32, Vec<u8>)> {
        let tail = self.index(Index::UserBoundTail).load(Ordering::Acquire);
        if tail == self.to_user_head {
            return None;
        }
        let slot = (self.to_user_head % ENTRIES) as usize;
        // SAFETY: `slot` < ENTRIES, so inside the mapping; the kernel wrote
        // it before publishing the tail just read, and leaves it alone
        // until the head below moves past it.
        let e = unsafe { ptr::read_volatile(&raw const (*self.ptr.as_ptr()).to_user.hint[slot]) };
        self.to_user_head = self.to_user_head.wrapping_add(1);
        self.index(Index::UserBoundHead)
            .store(self.to_user_head, Ordering::Release);
        let n = (e.size as usize).min(e.data.len());
        Some((e.pid, e.data.get(..n).unwrap_or_default().to_vec()))
    }

    /// Reverse hints the kernel dropped on a full ring.
    pub(crate) fn rev_dropped(&self) -> u32 {
        self.index(Index::UserBoundDropped).load(Ordering::Relaxed)
    }

    /// Publishes a to-kernel tail far past anything written.
    pub(crate) fn corrupt_tail(&mut self) {
        self.scribble(&[], 10 * ENTRIES);
    }

    /// Writes `bytes` over the to-kernel entries from the tail's slot on
    /// (wrapping, as many entries as they fill), then moves the tail
    /// `advance` entries on, whatever that means.
    pub(crate) fn scribble(&mut self, bytes: &[u8], advance: u32) {
        for (i, chunk) in bytes.chunks(40).take(ENTRIES as usize).enumerate() {
            let slot = (self.to_kernel_tail.wrapping_add(i as u32) % ENTRIES) as usize;
            let mut raw = [0u8; 40];
            raw[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: `slot` < ENTRIES, so the entry is inside the mapping
            // and `raw` is exactly its size; the kernel reads entries only
            // between its head and the tail, which has not moved yet.
            unsafe {
                ptr::write_volatile(
                    (&raw mut (*self.ptr.as_ptr()).to_kernel.hint[slot]).cast::<[u8; 40]>(),
                    raw,
                )
            };
        }
        self.to_kernel_tail = self.to_kernel_tail.wrapping_add(advance);
        self.index(Index::KernelBoundTail)
            .store(self.to_kernel_tail, Ordering::Release);
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this length; nothing uses it after.
        let _ = unsafe { munmap(self.ptr.cast(), BYTES) };
    }
}
