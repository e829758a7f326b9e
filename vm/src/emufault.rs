// SPDX-License-Identifier: MIT OR Apache-2.0
//! Signs in the serial log that the emulator, not the guest, failed.
//!
//! Under multi-threaded TCG, QEMU 7.2 can stop delivering a halted vCPU's
//! timer interrupts. The guest then hangs until the run's timeout, and RCU
//! says why about 21 s in: its grace-period thread sleeps on a timer of that
//! CPU that never fired, and the CPU is idle ("Possible timer handling issue
//! on cpu=N"). The kernel prints that only when the thread is not even
//! queued, so no scheduler, Enoki's or another, can cause it; a CPU stuck
//! with interrupts off shows as busy in the same report instead.
//! [`FaultWatch`] reads the log while the VM runs and raises an eventfd at
//! the first such line, so the run ends there and [`crate::Vm::run`] can run
//! the command again on single-threaded TCG.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::logs::read_from;
use crate::logscan::emulator_fault;

/// How often the log is read: the sign comes tens of seconds into a hang.
const PERIOD: Duration = Duration::from_millis(500);

/// Reads a growing serial log in the background until dropped. The line
/// itself is found again in the whole log once the run is over.
pub(crate) struct FaultWatch {
    raised: EventFd,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultWatch {
    pub(crate) fn start(log: PathBuf) -> io::Result<Self> {
        let raised = EventFd::new(EFD_NONBLOCK)?;
        let raise = raised.try_clone()?;
        let (stop, stopped) = channel();
        let thread = thread::spawn(move || {
            let mut reader = LineReader::new(log);
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                if reader
                    .read_new()
                    .is_some_and(|t| emulator_fault(&t).is_some())
                {
                    let _ = raise.write(1);
                    break;
                }
            }
        });
        Ok(Self {
            raised,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Readable once a sign was found.
    pub(crate) fn raised(&self) -> &EventFd {
        &self.raised
    }
}

impl Drop for FaultWatch {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The complete lines a file gained since the last read.
struct LineReader {
    path: PathBuf,
    pos: u64,
}

impl LineReader {
    fn new(path: PathBuf) -> Self {
        LineReader { path, pos: 0 }
    }

    /// New complete lines, if any (a partial last line waits for the next
    /// read).
    fn read_new(&mut self) -> Option<String> {
        let buf = read_from(&self.path, self.pos)?;
        let end = buf.iter().rposition(|b| *b == b'\n')? + 1;
        self.pos += end as u64;
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::time::Instant;

    use crate::wait::{Waiter, Wake};

    const SIGN: &str =
        "[   32.147291] rcu: \tPossible timer handling issue on cpu=5 timer-softirq=0";

    #[test]
    fn only_complete_lines_are_read_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut reader = LineReader::new(path.clone());
        assert_eq!(reader.read_new(), None, "no file yet");
        let mut f = File::create(&path).unwrap();
        let (a, b) = SIGN.split_at(20);
        f.write_all(format!("[    1.0] booting\n{a}").as_bytes())
            .unwrap();
        assert_eq!(reader.read_new().as_deref(), Some("[    1.0] booting\n"));
        assert_eq!(reader.read_new(), None, "half a line");
        f.write_all(format!("{b}\n").as_bytes()).unwrap();
        assert_eq!(reader.read_new(), Some(format!("{SIGN}\n")));
        assert_eq!(reader.read_new(), None);
    }

    #[test]
    fn the_watch_raises_at_the_sign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let watch = FaultWatch::start(path.clone()).unwrap();
        std::fs::write(&path, format!("[    1.0] booting\n{SIGN}\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let woke = Waiter::new(&[(watch.raised(), Wake::EmulatorFault)])
            .unwrap()
            .wait(Some(deadline))
            .unwrap();
        assert_eq!(woke, Wake::EmulatorFault);
    }

    #[test]
    fn dropping_the_watch_ends_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let watch = FaultWatch::start(dir.path().join("none.log")).unwrap();
        let start = Instant::now();
        drop(watch);
        assert!(start.elapsed() < PERIOD);
    }
}
