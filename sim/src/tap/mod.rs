// SPDX-License-Identifier: MIT OR Apache-2.0
//! libEnoki's `Driver`, with a tap on every message and lock event.
//!
//! `Driver::send` is the one place every message passes, but libEnoki has no
//! message hook there yet. Until it does, this module compiles the
//! *unchanged* `enoki/src/user/driver.rs` against a copy of libEnoki's module
//! tree in which `dispatch::Loaded::handle` tells the tap installed on the
//! current thread that a call begins, calls libEnoki's own `Loaded::handle`,
//! and shows the tap the handled message (question and answer). The driver
//! code is libEnoki's, byte for byte, so the simulator sends exactly what
//! Enoki-C's model sends. Lock events come from libEnoki's own hook
//! (`enoki::user::set_lock_observer`).
//!
//! When `Driver` grows a message observer, this module shrinks to a
//! re-export.

use std::cell::RefCell;

use enoki::abi::Msg;

pub use enoki::{abi, collections, log, scheduler, services, sync, topology, types};

pub mod dispatch;
pub mod user;

pub use user::driver::{Driver, DriverCounters, HostEvent, RecordingHost, TaskState};

/// Sees what passes between the driver and the scheduler on this thread.
pub trait Tap {
    /// A message is about to be handled; the tap may complete it (see
    /// `sim::SimTap`).
    fn call_begins(&mut self, m: &mut Msg);
    /// The scheduler answered `m`.
    fn call_ends(&mut self, m: &Msg);
    /// A libEnoki lock at `addr` was taken (`acquire`) or released.
    fn lock(&mut self, addr: usize, acquire: bool);
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

fn on_lock(addr: usize, acquire: bool) {
    with_tap(|t| t.lock(addr, acquire));
}
