// SPDX-License-Identifier: MIT OR Apache-2.0
//! `libenoki_tcg_profile.so`: a QEMU plugin that profiles the guest by
//! instructions executed (see [`plugin`]); `enoki-tcg-profile` runs it.

pub mod plugin;
