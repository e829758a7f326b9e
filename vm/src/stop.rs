// SPDX-License-Identifier: MIT OR Apache-2.0
//! Stopping a running VM from another thread: the library owns no signal
//! handling, so a program that wants Ctrl-C to stop the VM registers its
//! signals itself and calls [`StopHandle::stop`] (see the `enoki-vm` CLI).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Stops every launch of the VMs configured with it ([`crate::VmConfig::stop_on`]):
/// QEMU and virtiofsd are killed, the terminal restored, the run directory
/// removed, and the launch returns [`crate::VmError::Stopped`]. Stopping is
/// final: a launch that starts after `stop` stops at once. Clones share one state.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Readable from the first `stop` on (never read), for the launch's epoll.
    fd: EventFd,
    stopped: AtomicBool,
}

impl StopHandle {
    pub fn new() -> io::Result<Self> {
        Ok(Self(Arc::new(Inner {
            fd: EventFd::new(EFD_NONBLOCK)?,
            stopped: AtomicBool::new(false),
        })))
    }

    /// Asks every current and future launch to stop.
    pub fn stop(&self) {
        if !self.0.stopped.swap(true, Ordering::SeqCst) {
            // One write makes the eventfd readable for good; it cannot fail
            // before the counter nears u64::MAX.
            let _ = self.0.fd.write(1);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }
}

impl AsRawFd for StopHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_shared_by_clones_and_final() {
        let a = StopHandle::new().unwrap();
        let b = a.clone();
        assert!(!a.is_stopped());
        b.stop();
        b.stop();
        assert!(a.is_stopped() && b.is_stopped());
    }
}
