// SPDX-License-Identifier: MIT OR Apache-2.0
//! Drives what an operator runs, for the tests: `deploy/deploy.sh` (what
//! `cargo make deploy` runs) and test hosts, Debian VMs reached over ssh
//! (`deploy/testhost/run.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's top directory.
pub fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/ has a parent")
        .to_path_buf()
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `deploy/deploy.sh` with the variables `cargo make deploy` passes.
pub fn deploy(vars: &[(&str, &str)]) -> Run {
    let out = Command::new("bash")
        .arg(top().join("deploy/deploy.sh"))
        .envs(vars.iter().copied())
        .output()
        .expect("bash runs");
    Run::from(out)
}

/// A package directory holding only a manifest, as `cargo make package`
/// writes it: enough for the steps before anything is copied.
pub fn fake_packages() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = serde_json::json!({
        "version": "0.1.0+gittest",
        "architecture": "amd64",
        "kernel": { "release": "6.12.117-enoki", "build_id": "00112233445566778899aabbccddeeff00112233" },
        "packages": [],
    });
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).expect("write manifest");
    dir
}

/// A Debian VM standing in for a bare-metal host (`deploy/testhost/run.sh`),
/// stopped when dropped.
pub struct TestHost {
    pub name: String,
    pub port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl TestHost {
    /// Boots a fresh copy of the test host image (built first if needed) and
    /// waits until ssh works.
    pub fn start(name: &str) -> Self {
        let image = Command::new("bash")
            .arg(top().join("deploy/testhost/build-image.sh"))
            .status()
            .expect("bash runs");
        assert!(image.success(), "building the test host image failed");
        let run = run_sh(&["start", name]);
        assert!(run.ok, "starting test host {name} failed:\n{}", run.text());
        let env = std::fs::read_to_string(top().join("target/testhost").join(name).join("env"))
            .expect("run.sh start writes env");
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in {name}'s env"))
                .to_string()
        };
        TestHost {
            name: name.into(),
            port: var("PORT").parse().expect("a port"),
            key: var("KEY").into(),
            known_hosts: var("KNOWN_HOSTS").into(),
        }
    }

    /// `user@127.0.0.1:port`, as `cargo make deploy HOST=` takes it.
    pub fn target(&self, user: &str) -> String {
        format!("{user}@127.0.0.1:{}", self.port)
    }

    /// `cargo make deploy` to this host as `user` with scheduler `sched`
    /// and more variables (`ARGS`, `EXTRA`...).
    pub fn deploy(&self, user: &str, sched: &str, more: &[(&str, &str)]) -> Run {
        let target = self.target(user);
        let mut vars = vec![
            ("HOST", target.as_str()),
            ("SCHED", sched),
            ("KEY", self.key.to_str().expect("utf-8 key path")),
            (
                "KNOWN_HOSTS",
                self.known_hosts.to_str().expect("utf-8 path"),
            ),
            ("SMOKE_SECONDS", "8"),
        ];
        vars.extend_from_slice(more);
        deploy(&vars)
    }

    /// Runs `cmd` on the host as `deploy`, with `stdin` as its input.
    pub fn ssh_with_input(&self, cmd: &str, stdin: std::process::Stdio) -> Run {
        let out = Command::new("ssh")
            .args(self.ssh_args())
            .arg("deploy@127.0.0.1")
            .arg(cmd)
            .stdin(stdin)
            .output()
            .expect("ssh runs");
        Run::from(out)
    }

    /// Runs `cmd` on the host as `deploy`; panics when it fails.
    pub fn ssh(&self, cmd: &str) -> String {
        let run = self.ssh_with_input(cmd, std::process::Stdio::null());
        assert!(run.ok, "`{cmd}` failed on {}:\n{}", self.name, run.text());
        run.stdout.trim().to_string()
    }

    /// The ssh options that reach this host.
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ]
    }

    /// Reboots the host and waits until it is back: ssh works and the boot
    /// id is new (ssh may still work for a moment while the host goes down).
    pub fn reboot(&self) {
        let before = self.boot_id();
        // The connection drops as the host goes down: no exit status to keep.
        let _ = self.ssh_with_input("sudo systemctl reboot", std::process::Stdio::null());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let run = run_sh(&["wait", &self.name]);
            assert!(run.ok, "{} did not come back:\n{}", self.name, run.text());
            let now = self.boot_id();
            if !now.is_empty() && now != before {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never rebooted",
                self.name
            );
        }
    }

    /// `/proc/sys/kernel/random/boot_id`: new at every boot, kexec included.
    pub fn boot_id(&self) -> String {
        let run = self.ssh_with_input(
            "cat /proc/sys/kernel/random/boot_id",
            std::process::Stdio::null(),
        );
        run.stdout.trim().to_string()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = run_sh(&["stop", &self.name]);
    }
}

fn run_sh(args: &[&str]) -> Run {
    let out = Command::new("bash")
        .arg(top().join("deploy/testhost/run.sh"))
        .args(args)
        .output()
        .expect("bash runs");
    Run::from(out)
}

/// What `cargo make package` wrote in target/package/manifest.json.
pub struct Manifest {
    pub dir: PathBuf,
    pub version: String,
    pub release: String,
    pub build_id: String,
    pub kernel_package_version: String,
}

impl Manifest {
    pub fn read() -> Self {
        let dir = top().join("target/package");
        let text = std::fs::read_to_string(dir.join("manifest.json"))
            .expect("target/package/manifest.json: run `cargo make package`");
        let m: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
        let s = |v: &serde_json::Value| v.as_str().expect("a string").to_string();
        Manifest {
            dir,
            version: s(&m["version"]),
            release: s(&m["kernel"]["release"]),
            build_id: s(&m["kernel"]["build_id"]),
            kernel_package_version: s(&m["kernel"]["package_version"]),
        }
    }
}
