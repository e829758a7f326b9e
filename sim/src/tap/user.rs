// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `user` backend as `driver.rs` sees it (`super::`).

pub use enoki::user::*;

/// libEnoki's host model of Enoki-C, compiled here unchanged.
#[allow(clippy::all, rustdoc::broken_intra_doc_links)]
#[rustfmt::skip]
#[path = "../../../enoki/src/user/driver.rs"]
pub mod driver;
