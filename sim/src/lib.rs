// SPDX-License-Identifier: MIT OR Apache-2.0
//! enoki-sim: run Enoki schedulers on simulated machines, check invariants
//! on every event, record what passes between the kernel model and the
//! scheduler into `.enk` traces, and replay traces (from the simulator, or
//! from Enoki-C's recorder through `enoki-sim import`) against the same
//! scheduler code.
//!
//! - [`spec`]: workloads (TOML, flags, or random from a seed);
//! - [`sim`]: the event-driven simulator around libEnoki's `Driver`;
//! - [`check`]: the invariants;
//! - [`report`], [`perfetto`]: results as tables, JSON, timelines;
//! - [`trace`]: the `.enk` format ([`trace::TraceWriter`], [`trace::TraceReader`]);
//! - [`replay`]: feeding a trace back through `Loaded::handle`;
//! - [`registry`]: scheduler names to types.

pub mod check;
pub mod perfetto;
pub mod registry;
pub mod replay;
pub mod report;
pub mod sim;
pub mod spec;
pub mod tap;
pub use enoki_trace as trace;

/// Identifies this build in the traces it records: the crate version, plus
/// `ENOKI_BUILD_ID` from the build environment when set (e.g. a git hash).
pub fn build_id() -> String {
    match option_env!("ENOKI_BUILD_ID") {
        Some(id) => format!("enoki-sim {}+{id}", env!("CARGO_PKG_VERSION")),
        None => format!("enoki-sim {}", env!("CARGO_PKG_VERSION")),
    }
}
