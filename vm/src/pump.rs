// SPDX-License-Identifier: MIT OR Apache-2.0
//! Threads that drain QEMU's stdout and stderr while the VM runs.

use std::io::{self, Read, Write};
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What QEMU prints when KVM fails a guest; QEMU then pauses the VM and
/// waits forever instead of exiting.
const KVM_INTERNAL_ERROR: &str = "KVM internal error";

/// Collects QEMU's stderr (also forwarding it to ours if asked) and raises
/// one eventfd at end of file (QEMU exited) and another on a KVM internal error.
pub(crate) struct Stderr {
    thread: JoinHandle<String>,
    eof: EventFd,
    kvm_error: EventFd,
}

impl Stderr {
    pub(crate) fn start(pipe: impl Read + Send + 'static, forward: bool) -> io::Result<Self> {
        let eof = EventFd::new(EFD_NONBLOCK)?;
        let kvm_error = EventFd::new(EFD_NONBLOCK)?;
        let (eof_w, kvm_w) = (eof.try_clone()?, kvm_error.try_clone()?);
        let thread = thread::spawn(move || {
            let text = collect_stderr(pipe, forward, || {
                let _ = kvm_w.write(1);
            });
            let _ = eof_w.write(1);
            text
        });
        Ok(Self {
            thread,
            eof,
            kvm_error,
        })
    }

    /// Readable once QEMU's stderr reached end of file.
    pub(crate) fn eof(&self) -> &EventFd {
        &self.eof
    }

    /// Readable once QEMU reported a KVM internal error.
    pub(crate) fn kvm_error(&self) -> &EventFd {
        &self.kvm_error
    }

    /// Everything QEMU printed on stderr (call once QEMU is gone).
    pub(crate) fn finish(self) -> String {
        self.thread.join().unwrap_or_default()
    }
}

fn collect_stderr(mut pipe: impl Read, forward: bool, on_kvm_error: impl Fn()) -> String {
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    let mut kvm_failed = false;
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        let s = String::from_utf8_lossy(&buf[..n]);
        if forward {
            let _ = io::stderr().write_all(s.as_bytes());
        }
        all.push_str(&s);
        if !kvm_failed && all.contains(KVM_INTERNAL_ERROR) {
            kvm_failed = true;
            on_kvm_error();
        }
    }
    all
}

/// Collects QEMU's stdout (the guest command's output), echoing it with
/// `print!` if asked so that the test harness captures it.
pub(crate) fn stdout(mut pipe: impl Read + Send + 'static, echo: bool) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if echo {
                print!("{}", String::from_utf8_lossy(&buf[..n]));
            }
        }
        all
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn kvm_error_split_across_reads_is_seen_once() {
        struct Chunks(Vec<&'static [u8]>);
        impl Read for Chunks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                let c = self.0.remove(0);
                buf[..c.len()].copy_from_slice(c);
                Ok(c.len())
            }
        }
        let seen = Cell::new(0);
        let pipe = Chunks(vec![
            b"KVM inter",
            b"nal error. Suberror: 1\n",
            b"KVM internal error\n",
        ]);
        let text = collect_stderr(pipe, false, || seen.set(seen.get() + 1));
        assert_eq!(seen.get(), 1);
        assert!(
            text.starts_with("KVM internal error. Suberror: 1\n"),
            "{text}"
        );
    }
}
