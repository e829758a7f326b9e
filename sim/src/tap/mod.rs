// SPDX-License-Identifier: MIT OR Apache-2.0
//! libEnoki's `Driver`, with a tap on every message and lock event.
//!
//! Messages come from the driver's own observer (`Driver::set_observer`,
//! [`observer`]), lock events from libEnoki's lock hook
//! (`enoki::user::set_lock_observer`); both reach the one tap installed on
//! the current thread, so it sees them in the order they happen.

use std::cell::RefCell;

use enoki::abi::Msg;
use enoki::LockOp;

pub use enoki::user::{
    Driver, DriverCounters, HostEvent, MsgObserver, RecordingHost, RuntimeSource, TaskState,
};

/// Sees what passes between the driver and the scheduler on this thread.
pub trait Tap {
    /// A message is about to be handled.
    fn call_begins(&mut self, m: &Msg);
    /// The scheduler answered `m`.
    fn call_ends(&mut self, m: &Msg);
    /// `op` happened to the libEnoki lock at `addr`.
    fn lock(&mut self, addr: usize, op: LockOp);
    /// A live upgrade hands over (`MsgObserver::upgrade_begins`).
    fn upgrade_begins(&mut self) {}
    /// The hand-over ended (`MsgObserver::upgrade_ends`).
    fn upgrade_ends(&mut self, _done: Option<u64>) {}
}

thread_local! {
    static TAP: RefCell<Option<Box<dyn Tap>>> = const { RefCell::new(None) };
}

/// Removes the tap when dropped.
pub struct TapGuard(());

impl Drop for TapGuard {
    fn drop(&mut self) {
        enoki::user::set_lock_observer(None);
        TAP.with(|t| t.borrow_mut().take());
    }
}

/// Shows everything that passes on this thread to `tap` until the guard
/// is dropped. Replaces any earlier tap (and lock observer).
pub fn install(tap: Box<dyn Tap>) -> TapGuard {
    TAP.with(|t| *t.borrow_mut() = Some(tap));
    enoki::user::set_lock_observer(Some(on_lock));
    TapGuard(())
}

fn with_tap(f: impl FnOnce(&mut dyn Tap)) {
    TAP.with(|t| {
        // A tap never sends messages or takes libEnoki locks itself, so the
        // borrow cannot nest.
        if let Some(tap) = t.borrow_mut().as_mut() {
            f(tap.as_mut());
        }
    });
}

fn on_lock(addr: usize, op: LockOp) {
    with_tap(|t| t.lock(addr, op));
}

/// Forwards the driver's messages to this thread's tap.
struct TapObserver;

impl MsgObserver for TapObserver {
    fn call_begins(&mut self, m: &Msg) {
        with_tap(|t| t.call_begins(m));
    }
    fn call_ends(&mut self, m: &Msg) {
        with_tap(|t| t.call_ends(m));
    }
    fn upgrade_begins(&mut self) {
        with_tap(|t| t.upgrade_begins());
    }
    fn upgrade_ends(&mut self, done: Option<u64>) {
        with_tap(|t| t.upgrade_ends(done));
    }
}

/// The driver observer that shows messages to the installed tap.
pub fn observer() -> Box<dyn MsgObserver> {
    Box::new(TapObserver)
}
