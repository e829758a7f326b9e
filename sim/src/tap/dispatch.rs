// SPDX-License-Identifier: MIT OR Apache-2.0
//! `Loaded` for the tapped driver: libEnoki's, plus the tap.

use enoki::abi::Msg;
use enoki::EnokiScheduler;

/// libEnoki's [`enoki::dispatch::Loaded`]; every other method is its own.
pub struct Loaded<S>(enoki::dispatch::Loaded<S>);

impl<S: EnokiScheduler> Loaded<S> {
    pub fn new(sched: S, nr_cpus: usize) -> Self {
        Loaded(enoki::dispatch::Loaded::new(sched, nr_cpus))
    }

    /// libEnoki's processing function, between the tap's two calls.
    pub fn handle(&self, m: &mut Msg) {
        super::with_tap(|t| t.call_begins(&mut *m));
        self.0.handle(m);
        super::with_tap(|t| t.call_ends(m));
    }
}

impl<S> core::ops::Deref for Loaded<S> {
    type Target = enoki::dispatch::Loaded<S>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
