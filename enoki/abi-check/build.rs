// SPDX-License-Identifier: MIT OR Apache-2.0
//! Runs bindgen on Enoki-C's `enoki.h`, the one source of the message ABI,
//! into `$OUT_DIR/enoki_h.rs` for the layout tests in `src/lib.rs`.

use std::path::{Path, PathBuf};

/// What the kernel's `<linux/types.h>` gives `enoki.h`, for a host compiler.
const TYPES_H: &str = "\
#include <stdbool.h>
#include <stddef.h>
typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;
";

/// The kernel's `static_assert` (`<linux/build_bug.h>`) in C11 terms.
const BUILD_BUG_H: &str = "#define static_assert(expr, ...) _Static_assert(expr, #expr)\n";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let header = manifest.join("../../kernel/src/kernel/sched/enoki.h");
    println!("cargo:rerun-if-changed={}", header.display());

    let include = out.join("include");
    let linux = include.join("linux");
    std::fs::create_dir_all(&linux).unwrap_or_else(|e| panic!("creating {}: {e}", linux.display()));
    write(&linux.join("types.h"), TYPES_H);
    write(&linux.join("build_bug.h"), BUILD_BUG_H);

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_type("enoki_.*")
        .allowlist_var("ENOKI_.*")
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen on {}: {e}", header.display()));
    let generated = out.join("enoki_h.rs");
    bindings
        .write_to_file(&generated)
        .unwrap_or_else(|e| panic!("writing {}: {e}", generated.display()));
}
