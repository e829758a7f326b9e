// SPDX-License-Identifier: GPL-2.0
//! The smallest Rust module, built by the same route as the schedulers:
//! proves that out-of-tree Rust modules build, load and unload.

use kernel::prelude::*;

module! {
    type: EnokiHello,
    name: "enoki_hello",
    author: "Enoki",
    description: "Enoki hello: out-of-tree Rust module smoke test",
    license: "GPL",
}

struct EnokiHello;

impl kernel::Module for EnokiHello {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("enoki_hello: loaded\n");
        Ok(EnokiHello)
    }
}

impl Drop for EnokiHello {
    fn drop(&mut self) {
        pr_info!("enoki_hello: unloaded\n");
    }
}
