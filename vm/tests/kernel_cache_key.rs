// SPDX-License-Identifier: MIT OR Apache-2.0
//! The kernel cache key (kernel/build.sh --key) follows a profile's
//! settings and directives, not its comments: a reworded comment must not
//! cost two kernels built from scratch. Run on a copy of kernel/.

use std::fs;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

/// A copy of build.sh and the config fragments in a fresh tree.
fn kernel_copy() -> TempDir {
    let tmp = TempDir::new().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel");
    let to = tmp.path().join("kernel");
    fs::create_dir_all(to.join("config/profiles")).unwrap();
    fs::copy(from.join("build.sh"), to.join("build.sh")).unwrap();
    fs::copy(
        from.join("config/enoki.config"),
        to.join("config/enoki.config"),
    )
    .unwrap();
    for profile in fs::read_dir(from.join("config/profiles")).unwrap() {
        let profile = profile.unwrap();
        fs::copy(
            profile.path(),
            to.join("config/profiles").join(profile.file_name()),
        )
        .unwrap();
    }
    tmp
}

fn key(tree: &Path, profile: &str) -> String {
    let out = Command::new("timeout")
        .args(["60", "bash"])
        .arg(tree.join("kernel/build.sh"))
        .args(["--profile", profile, "--key"])
        .env("ENOKI_CACHE", tree.join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build.sh --key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn append(path: &Path, text: &str) {
    let mut s = fs::read_to_string(path).unwrap();
    s.push_str(text);
    fs::write(path, s).unwrap();
}

#[test]
fn a_comment_keeps_the_kernel_cache_key_and_a_setting_changes_it() {
    let tree = kernel_copy();
    let tree = tree.path();
    let vm = tree.join("kernel/config/profiles/vm.config");
    let (vm_key, debug_key) = (key(tree, "vm"), key(tree, "debug"));
    assert_eq!(vm_key.len(), 16, "{vm_key:?}");
    assert_ne!(vm_key, debug_key, "each profile is cached on its own");

    append(&vm, "\n# why the next setting is there, reworded\n\n");
    assert_eq!(key(tree, "vm"), vm_key, "a comment changed the key");

    append(&vm, "CONFIG_PRINTK_TIME=n\n");
    let changed = key(tree, "vm");
    assert_ne!(changed, vm_key, "a setting left the key as it was");
    assert_ne!(key(tree, "debug"), debug_key, "debug extends vm");

    append(&vm, "# merge: kernel/configs/xen.config\n");
    assert_ne!(
        key(tree, "vm"),
        changed,
        "an upstream fragment left the key"
    );
}
