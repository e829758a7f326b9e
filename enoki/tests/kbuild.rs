// SPDX-License-Identifier: MIT OR Apache-2.0
//! The module build (kbuild/build-modules.sh) keeps target/modules, which
//! the guest gets whole, to the schedulers in schedulers/: run in its
//! `--prune` mode (no kernel needed) on a fake tree.

use std::fs;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn prune_removes_modules_of_removed_schedulers_and_hello() {
    let tmp = TempDir::new().unwrap();
    let top = tmp.path();
    write(
        &top.join("schedulers/fifo/src/lib.rs"),
        "enoki::export_scheduler!(Fifo);\n",
    );
    write(
        &top.join("schedulers/notes/src/lib.rs"),
        "//! no scheduler here\n",
    );
    for ko in [
        "enoki_fifo.ko",
        "enoki_gone.ko",
        "enoki_hello.ko",
        "enoki_notes.ko",
    ] {
        write(&top.join("target/modules").join(ko), "");
    }
    for crate_dir in ["fifo", "gone", "hello"] {
        write(
            &top.join("target/kbuild").join(crate_dir).join("Kbuild"),
            "",
        );
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kbuild/build-modules.sh");
    // `timeout`: the script takes a lock; a test must fail, not hang.
    let out = Command::new("timeout")
        .args(["60", "bash"])
        .arg(&script)
        .arg("--prune")
        .env("ENOKI_TOP", top)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(names(&top.join("target/modules")), ["enoki_fifo.ko"]);
    let kbuild: Vec<String> = names(&top.join("target/kbuild"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(kbuild, ["fifo", "hello"]);
    assert!(stdout.contains("removed enoki_gone.ko"), "{stdout}");
}
