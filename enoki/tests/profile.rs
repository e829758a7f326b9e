// SPDX-License-Identifier: MIT OR Apache-2.0
//! The workspace's optimised builds keep overflow checks, as the kernel
//! does (CONFIG_RUST_OVERFLOW_CHECKS=y): replay and the simulator must do
//! the kernel's arithmetic, panics included. Whether a test binary itself
//! was built with them cannot be seen from inside it (`cfg!` has no
//! flag for it), so this reads the manifest.

use std::path::Path;

#[test]
fn release_and_bench_profiles_check_overflow() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(root).unwrap().parse().unwrap();
    let profile = |name: &str| manifest.get("profile").and_then(|p| p.get(name));
    let checks = |name: &str| profile(name).and_then(|p| p.get("overflow-checks"));
    assert_eq!(
        checks("release").and_then(toml::Value::as_bool),
        Some(true),
        "[profile.release] needs overflow-checks = true"
    );
    // bench inherits release unless it says otherwise.
    assert!(
        checks("bench").is_none_or(|v| v.as_bool() == Some(true)),
        "[profile.bench] turns overflow checks off"
    );
    for (name, p) in manifest
        .get("profile")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
    {
        let inherits_release = p.get("inherits").and_then(toml::Value::as_str) == Some("release");
        if inherits_release {
            assert_ne!(
                p.get("overflow-checks").and_then(toml::Value::as_bool),
                Some(false),
                "[profile.{name}] turns overflow checks off"
            );
        }
    }
}
