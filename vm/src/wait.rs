// SPDX-License-Identifier: MIT OR Apache-2.0
//! Waiting for a running QEMU without polling: one epoll set over eventfds
//! that the stderr pump and the stop handle write, with the deadline as the
//! epoll timeout.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Why [`Waiter::wait`] returned, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wake {
    /// The stop handle fired.
    Stop,
    /// QEMU printed a KVM internal error (it pauses the VM instead of exiting).
    KvmError,
    /// QEMU closed its stderr: it exited (reap it with `wait`).
    QemuGone,
    /// The serial log shows the emulator failing (see [`crate::emufault`]).
    EmulatorFault,
    /// The deadline passed.
    Deadline,
}

impl Wake {
    const ALL: [Wake; 4] = [
        Wake::Stop,
        Wake::KvmError,
        Wake::QemuGone,
        Wake::EmulatorFault,
    ];

    fn token(self) -> u64 {
        self as u64
    }

    fn from_token(t: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.token() == t)
    }
}

/// An epoll set watching file descriptors that become readable for good.
pub(crate) struct Waiter {
    epoll: Epoll,
}

impl Waiter {
    /// Watches each fd for readability, reporting it as its [`Wake`].
    pub(crate) fn new(sources: &[(&dyn AsRawFd, Wake)]) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        for (fd, wake) in sources {
            let ev = EpollEvent::new(EventSet::IN, wake.token());
            epoll.ctl(ControlOperation::Add, fd.as_raw_fd(), ev)?;
        }
        Ok(Self { epoll })
    }

    /// Sleeps until a source is readable (the most urgent wins) or `deadline`
    /// (none: no limit) passes.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> io::Result<Wake> {
        let mut events = [EpollEvent::default(); Wake::ALL.len()];
        loop {
            let n = match self.epoll.wait(timeout_ms(deadline), &mut events) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            let woken = events[..n]
                .iter()
                .filter_map(|e| Wake::from_token(e.data()))
                .min();
            if let Some(w) = woken {
                return Ok(w);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Wake::Deadline);
            }
        }
    }
}

/// The epoll timeout reaching `deadline`, rounded up so that waking means it
/// passed; -1 (forever) without one.
fn timeout_ms(deadline: Option<Instant>) -> i32 {
    let Some(d) = deadline else { return -1 };
    let left = d.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pump;
    use crate::StopHandle;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    fn qemu_like(script: &str) -> (std::process::Child, pump::Stderr) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = pump::Stderr::start(child.stderr.take().unwrap(), false).unwrap();
        (child, stderr)
    }

    fn waiter(stderr: &pump::Stderr, stop: &StopHandle) -> Waiter {
        Waiter::new(&[
            (stop, Wake::Stop),
            (stderr.kvm_error(), Wake::KvmError),
            (stderr.eof(), Wake::QemuGone),
        ])
        .unwrap()
    }

    #[test]
    fn wakes_on_child_exit_with_no_deadline() {
        let (mut child, stderr) = qemu_like("sleep 0.2; exit 4");
        let stop = StopHandle::new().unwrap();
        let w = waiter(&stderr, &stop);
        let start = Instant::now();
        assert_eq!(w.wait(None).unwrap(), Wake::QemuGone);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(child.wait().unwrap().code(), Some(4));
    }

    #[test]
    fn times_out_at_the_deadline() {
        let (mut child, stderr) = qemu_like("exec sleep 30");
        let stop = StopHandle::new().unwrap();
        let w = waiter(&stderr, &stop);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(150);
        assert_eq!(w.wait(Some(deadline)).unwrap(), Wake::Deadline);
        assert!(Instant::now() >= deadline);
        assert!(start.elapsed() < Duration::from_secs(5));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn kvm_error_and_stop_wake_it() {
        let (mut child, stderr) =
            qemu_like("echo 'KVM internal error. Suberror: 1' >&2; exec sleep 30");
        let stop = StopHandle::new().unwrap();
        let w = waiter(&stderr, &stop);
        assert_eq!(w.wait(None).unwrap(), Wake::KvmError);
        stop.stop();
        // Both stay readable; the stop is the more urgent.
        assert_eq!(w.wait(None).unwrap(), Wake::Stop);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn timeout_rounds_up() {
        assert_eq!(timeout_ms(None), -1);
        let d = Instant::now() + Duration::from_micros(1500);
        assert!((1..=2).contains(&timeout_ms(Some(d))));
        assert_eq!(timeout_ms(Some(Instant::now())), 0);
    }
}
