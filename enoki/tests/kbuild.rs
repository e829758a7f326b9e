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

/// Runs a kbuild script with `args` under `timeout` (a test must fail,
/// not hang): (success, stdout, stderr).
fn run_script(script: &str, args: &[&Path], top: Option<&Path>) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kbuild")
        .join(script);
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "bash"]).arg(&script).args(args);
    if let Some(top) = top {
        cmd.env("ENOKI_TOP", top);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scheduler source reaching into the kernel crate, one way per line
/// (lines 2..=6), and one line that only looks like it (line 7).
const USES_KERNEL: &str = "#![forbid(unsafe_code)]
use kernel::prelude::*;
extern crate kernel;
fn f() { let _ = ::kernel::time::ktime_get(); }
use kernel as k;
fn g() { kernel :: print::call_printk(); }
fn h() { let my_kernel = 1; let _ = enoki::kernels; }
";

#[test]
fn source_check_names_every_use_of_the_kernel_crate() {
    let tmp = TempDir::new().unwrap();
    let bad = tmp.path().join("bad");
    write(&bad.join("src/lib.rs"), "enoki::export_scheduler!(X);\n");
    write(&bad.join("src/more.rs"), USES_KERNEL);
    let good = tmp.path().join("good");
    write(
        &good.join("src/lib.rs"),
        "//! Runs tasks as the kernel's CFS would.\nuse enoki::SpinLock;\n",
    );

    let (ok, _, stderr) = run_script("check-sched-source.sh", &[&good], None);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run_script("check-sched-source.sh", &[&good, &bad], None);
    assert!(!ok);
    let more = bad.join("src/more.rs");
    for line in 2..=6 {
        let at = format!("{}:{line}:", more.display());
        assert!(stderr.contains(&at), "{at} not in: {stderr}");
    }
    assert!(!stderr.contains(":7:"), "{stderr}");
    assert!(!stderr.contains("lib.rs"), "{stderr}");
}

#[test]
fn module_build_refuses_a_scheduler_that_uses_the_kernel_crate() {
    let tmp = TempDir::new().unwrap();
    let top = tmp.path();
    write(
        &top.join("schedulers/evil/src/lib.rs"),
        "enoki::export_scheduler!(Evil);\nuse kernel::prelude::*;\n",
    );
    let (ok, stdout, stderr) = run_script("build-modules.sh", &[], Some(top));
    assert!(!ok, "{stdout}");
    let at = format!("{}:2:", top.join("schedulers/evil/src/lib.rs").display());
    assert!(stderr.contains(&at), "{stderr}");
    assert!(stderr.contains("refusing to build evil"), "{stderr}");
}

#[test]
fn generated_crate_root_forbids_unsafe_code_in_the_scheduler() {
    let script =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("kbuild/build-modules.sh"))
            .unwrap();
    let root: Vec<&str> = script.lines().map(str::trim).collect();
    let module = root
        .iter()
        .position(|l| *l == "pub mod scheduler_src;")
        .expect("the generated root declares the scheduler module");
    assert!(
        root[..module]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#["))
            .any(|l| *l == "#[forbid(unsafe_code)]"),
        "no #[forbid(unsafe_code)] on `mod scheduler_src`"
    );
}

/// A crate of its own (outside the workspace), named after its directory,
/// whose library is `lib`.
fn lone_crate(dir: &Path, lib: &str) {
    let name = dir.file_name().unwrap().to_str().unwrap();
    write(
        &dir.join("Cargo.toml"),
        &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"),
    );
    write(&dir.join("src/lib.rs"), lib);
}

const PANICS: &str = "\
pub fn f(v: &[u32], d: u32, o: Option<u32>) -> u32 {
    let a = v[0];
    let b = o.unwrap();
    let c = a / d;
    a + b + c
}
";

const CANNOT_PANIC: &str = "\
pub fn f(v: &[u32], d: u32, o: Option<u32>) -> Option<u32> {
    let a = *v.first()?;
    let c = a.checked_div(d)?;
    a.checked_add(o?)?.checked_add(c)
}
";

#[test]
fn lint_check_refuses_a_scheduler_that_could_panic_and_names_each_site() {
    let tmp = TempDir::new().unwrap();
    let (bad, good) = (tmp.path().join("bad"), tmp.path().join("good"));
    lone_crate(&bad, PANICS);
    lone_crate(&good, CANNOT_PANIC);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kbuild/check-sched-lints.sh");
    let run = |dir: &Path| {
        let out = Command::new("timeout")
            .args(["120", "bash"])
            .arg(&script)
            .arg(dir)
            .env("CARGO_TARGET_DIR", tmp.path().join("target"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, stderr) = run(&good);
    assert!(ok, "{stderr}");
    let (ok, stderr) = run(&bad);
    assert!(!ok, "a scheduler that can panic is refused: {stderr}");
    for (line, what) in [
        (2, "indexing"),
        (3, "unwrap"),
        (4, "division"),
        (5, "arithmetic"),
    ] {
        let at = format!("src/lib.rs:{line}:");
        assert!(stderr.contains(&at), "{what} at {at} not in: {stderr}");
    }
    assert!(stderr.contains("refused"), "{stderr}");
}
