// SPDX-License-Identifier: GPL-2.0
//! Runs bindgen on the kernel's `uapi/linux/enoki.h`, the one source of the
//! `/dev/enoki` interface, into `$OUT_DIR/uapi.rs`.

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let header = manifest.join("../kernel/src/include/uapi/linux/enoki.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_type("enoki_.*")
        .allowlist_var("ENOKI_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen on {}: {e}", header.display()));
    let generated = out.join("uapi.rs");
    bindings
        .write_to_file(&generated)
        .unwrap_or_else(|e| panic!("writing {}: {e}", generated.display()));
}
