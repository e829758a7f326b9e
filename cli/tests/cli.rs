// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `enoki` binary end to end, against fake sysfs and module trees.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

struct Fake {
    tmp: TempDir,
}

impl Fake {
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        fs::create_dir(tmp.path().join("sysfs")).unwrap();
        fs::create_dir(tmp.path().join("modules")).unwrap();
        for name in ["fifo", "badpick"] {
            // The modinfo string the module build gives a scheduler module.
            let modinfo = format!("description=Enoki scheduler {name}\0");
            fs::write(tmp.path().join(format!("modules/enoki_{name}.ko")), modinfo).unwrap();
        }
        Fake { tmp }
    }

    /// Adds the hello smoke-test module, which is no scheduler.
    fn add_hello(&self) {
        let modinfo = "description=Enoki hello: out-of-tree Rust module smoke test\0";
        fs::write(self.tmp.path().join("modules/enoki_hello.ko"), modinfo).unwrap();
    }

    fn sysfs(&self) -> std::path::PathBuf {
        self.tmp.path().join("sysfs")
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.sysfs().join(name), text).unwrap();
    }

    fn enoki(&self, args: &[&str]) -> Output {
        enoki_with(args, &self.sysfs(), &self.tmp.path().join("modules"))
    }
}

fn enoki_with(args: &[&str], sysfs: &Path, modules: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enoki"))
        .args(args)
        .env("ENOKI_SYSFS", sysfs)
        .env("ENOKI_MODULE_DIR", modules)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn status_table_and_json() {
    let f = Fake::new();
    f.write("scheduler", "fifo\n");
    f.write("state", "enabled\n");
    f.write("nr_tasks", "4\n");
    f.write("counters", "enqueue 9\ndequeue 2\n");

    let out = f.enoki(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("scheduler       fifo\nmodule          -\n"),
        "{text}"
    );
    assert!(text.contains("\nnr_tasks        4\n"), "{text}");
    assert!(
        text.ends_with("counters\n  enqueue 9\n  dequeue 2\n"),
        "{text}"
    );

    let out = f.enoki(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Counters keep the kernel's order.
    assert!(text.find("enqueue").unwrap() < text.find("dequeue").unwrap());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["scheduler"], "fifo");
    assert_eq!(v["module"], serde_json::Value::Null);
    assert_eq!(v["nr_tasks"], 4);
    assert_eq!(v["counters"]["dequeue"], 2);
}

#[test]
fn status_without_enoki() {
    let f = Fake::new();
    let out = enoki_with(&["status"], &f.tmp.path().join("nope"), Path::new("/"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("enoki: this kernel has no Enoki ("),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn load_offers_schedulers_only() {
    let f = Fake::new();
    f.add_hello();
    f.write("scheduler", "");
    for sched in ["nope", "hello"] {
        let out = f.enoki(&["load", sched]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        if is_root() {
            assert_eq!(
                err,
                format!("enoki: unknown scheduler '{sched}'; available: badpick, fifo\n")
            );
        } else {
            assert_eq!(err, "enoki: must be root\n");
        }
    }
}

#[test]
fn load_errors() {
    let f = Fake::new();
    f.write("scheduler", "");
    let out = f.enoki(&["load", "nope", "--mode", "all"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    if is_root() {
        assert_eq!(
            err,
            "enoki: unknown scheduler 'nope'; available: badpick, fifo\n"
        );
        f.write("scheduler", "badpick\n");
        let err = stderr(&f.enoki(&["load", "fifo"]));
        assert_eq!(
            err,
            "enoki: scheduler 'badpick' is already loaded; run 'enoki unload' first\n"
        );
    } else {
        assert_eq!(err, "enoki: must be root\n");
    }
}

#[test]
fn record_load_replaces_an_ended_scheduler_but_not_a_running_one() {
    if !is_root() {
        return;
    }
    let f = Fake::new();
    f.write("scheduler", "badpick\n");
    let record = |f: &Fake| {
        let out = f.enoki(&["record", "-o", "/dev/null", "--load", "fifo", "--", "true"]);
        stderr(&out)
    };
    f.write("state", "enabled\n");
    assert_eq!(
        record(&f),
        "enoki: scheduler 'badpick' is already loaded; run 'enoki unload' first\n"
    );
    f.write("state", "ejected\n");
    let err = record(&f);
    assert!(!err.contains("already loaded"), "{err}");
}

#[test]
fn load_rejects_bad_arguments() {
    let f = Fake::new();
    for args in [
        &["load", "fifo", "--mode", "some"][..],
        &["load", "fifo", "--slice-us", "-1"],
        &["load", "fifo", "--args", "a=1,oops"],
        &["load"],
    ] {
        let out = f.enoki(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn unload_when_nothing_loaded() {
    let f = Fake::new();
    f.write("module", "\n");
    let out = f.enoki(&["unload"]);
    assert_eq!(out.status.code(), Some(1));
    let expected = if is_root() {
        "enoki: no scheduler is loaded\n"
    } else {
        "enoki: must be root\n"
    };
    assert_eq!(stderr(&out), expected);
}

#[test]
fn policy_of_self_and_missing_pid() {
    let f = Fake::new();
    let out = f.enoki(&["policy", &std::process::id().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let number: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
    assert!(number >= 0, "{text}");

    let out = f.enoki(&["policy", "2147483647"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "enoki: no such process: 2147483647\n");
}

/// Depends on the host: a kernel with sched_ext runs the command, others
/// must refuse with the one-line message.
#[test]
fn run_execs_or_explains() {
    let f = Fake::new();
    let out = f.enoki(&["run", "--", "sh", "-c", "exit 3"]);
    match out.status.code() {
        Some(3) => {
            let out = f.enoki(&["run", "enoki-test-no-such-command"]);
            assert_eq!(out.status.code(), Some(127));
            assert_eq!(
                stderr(&out),
                "enoki: enoki-test-no-such-command: command not found\n"
            );
        }
        _ => assert_eq!(
            stderr(&out),
            "enoki: this kernel has no Enoki/sched_ext policy\n"
        ),
    }
}
