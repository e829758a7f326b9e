// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where a replay stopped at the user's request waits for a debugger.

use enoki::abi::Msg;

use crate::trace::Record;

/// Called just before the message `record` holds (`m`, answer cleared) is
/// handed to the scheduler, when a replay was asked to stop there
/// (`--stop-before`, `--stop-at-divergence`). Break here (`break
/// enoki_sim::replay::stop::stopped_before`), then `step` into the call, or
/// `rbreak` the scheduler's crate and `continue`.
#[inline(never)]
pub fn stopped_before(record: &Record, m: &Msg) {
    // Keeps the arguments, and the call, for the debugger to see.
    std::hint::black_box((record, m));
}
