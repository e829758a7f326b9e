// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo make deploy` and the Ansible playbook against Debian test hosts
//! booted in QEMU from a disk image (deploy/testhost/), with the packages of
//! `cargo make package`. Each test boots its own hosts; they take minutes
//! under emulation, so they run in `cargo make deploy-test`, not in CI.

use std::fs::File;
use std::process::{Command, Stdio};

use enoki_deploy::{top, Manifest, TestHost};
use serial_test::serial;

/// The scheduler and state Enoki-C reports on `host`.
fn scheduler(host: &TestHost) -> String {
    host.ssh("cat /sys/kernel/enoki/scheduler /sys/kernel/enoki/state | paste -sd ' '")
}

fn installed(host: &TestHost, package: &str) -> bool {
    host.ssh(&format!(
        "dpkg-query -W -f '${{db:Status-Status}}' {package} 2>/dev/null || true"
    )) == "installed"
}

/// The packages the deploy record on `host` names and the host lacks, one
/// per line.
fn missing_recorded_packages(host: &TestHost) -> String {
    let record: serde_json::Value =
        serde_json::from_str(&host.ssh("cat /var/lib/enoki/deployed.json")).expect("JSON");
    let kernel = record["kernel_packages"].as_array().expect("a list");
    let paths: Vec<&str> = kernel
        .iter()
        .chain([&record["module_package"]])
        .map(|p| p.as_str().expect("a path"))
        .collect();
    assert_eq!(paths.len(), 3, "{record}");
    host.ssh(&format!(
        "for p in {}; do [ -f \"$p\" ] || echo \"$p\"; done",
        paths.join(" ")
    ))
}

#[test]
#[ignore = "boots a Debian test host (minutes): cargo make deploy-test"]
#[serial]
fn one_host_is_deployed_upgraded_and_rolled_back() {
    let pkg = Manifest::read();
    let host = TestHost::start("deploy-one");
    let debian_release = host.ssh("uname -r");
    assert_ne!(debian_release, pkg.release);

    // First deploy: kernel installed and booted with kexec, modules, load, smoke.
    let run = host.deploy("deploy", "fifo", &[]);
    assert!(run.ok, "{}", run.text());
    assert!(run.stdout.contains("Boot the new kernel"), "{}", run.stdout);
    assert_eq!(host.ssh("uname -r"), pkg.release);
    // `uname -v` carries the kernel package's revision (bindeb-pkg's build version).
    let revision = pkg
        .kernel_package_version
        .rsplit('-')
        .next()
        .expect("a revision");
    assert!(host.ssh("uname -v").starts_with(&format!("#{revision} ")));
    assert_eq!(scheduler(&host), "fifo enabled");
    assert!(installed(&host, &format!("enoki-{}", pkg.release)));
    let modules = host.ssh(&format!("ls /lib/modules/{}/extra/enoki", pkg.release));
    assert!(
        modules.contains("enoki_fifo.ko") && modules.contains("enoki_wfq.ko"),
        "{modules}"
    );
    assert!(host
        .ssh("cat /var/lib/enoki/deployed.json")
        .contains(&pkg.version));

    // Same packages, another scheduler: no reboot. The host's package
    // cache was emptied: the new deploy record must still name packages a
    // rollback to it can reinstall.
    host.ssh("sudo rm -f /var/cache/enoki/packages/*.deb");
    let boot = host.boot_id();
    let run = host.deploy("deploy", "wfq", &[]);
    assert!(run.ok, "{}", run.text());
    assert_eq!(host.boot_id(), boot, "the kernel did not change: no reboot");
    assert_eq!(scheduler(&host), "wfq enabled");
    assert_eq!(missing_recorded_packages(&host), "");

    // A scheduler ejected under the smoke check's stress: rolled back to wfq.
    let run = host.deploy("deploy", "buggy", &[("ARGS", "--args bug=aa")]);
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr
            .contains("deploy: FAILED at step 'Fail the host after the rollback'")
            && run.stderr.contains("Check the scheduler is")
            && run.stderr.contains("scheduler buggy is not enabled")
            && run.stderr.contains(&format!(
                "rolled back to deploy {}, scheduler wfq",
                pkg.version
            )),
        "{}",
        run.stderr
    );
    assert_eq!(scheduler(&host), "wfq enabled");
    assert!(host
        .ssh("cat /var/lib/enoki/deployed.json")
        .contains("\"wfq\""));

    // Input that cannot work stops before anything changes.
    for (more, want) in [
        (
            "-e ansible_architecture=aarch64",
            "wrong architecture: 127.0.0.1 is aarch64",
        ),
        ("-e enoki_space_factor=100000", "disk full: 127.0.0.1 has"),
    ] {
        let run = host.deploy("deploy", "fifo", &[("EXTRA", more)]);
        assert!(
            !run.ok && run.stderr.contains(want),
            "{more}: {}",
            run.stderr
        );
        assert_eq!(scheduler(&host), "wfq enabled", "{more} changed the host");
    }
    let run = host.deploy("nosudo", "fifo", &[]);
    assert!(
        !run.ok
            && run
                .stderr
                .contains("nosudo cannot sudo without a password on 127.0.0.1"),
        "{}",
        run.stderr
    );
    assert_eq!(scheduler(&host), "wfq enabled");

    // A module built for the VM tests' kernel (same release, another build)
    // is refused by `enoki load`, naming both builds.
    let vm_fifo = top().join("target/modules/enoki_fifo.ko");
    let file = File::open(&vm_fifo).expect("target/modules/enoki_fifo.ko (cargo make modules)");
    let copy = host.ssh_with_input(
        "mkdir -p /tmp/vm && cat > /tmp/vm/enoki_fifo.ko",
        file.into(),
    );
    assert!(copy.ok, "{}", copy.text());
    host.ssh("sudo enoki unload");
    let load = host.ssh_with_input(
        "sudo ENOKI_MODULE_DIR=/tmp/vm enoki load fifo",
        Stdio::null(),
    );
    assert!(!load.ok);
    assert!(
        load.stderr.contains(&format!(
            "/tmp/vm/enoki_fifo.ko was built for kernel {} (build id ",
            pkg.release
        )) && load.stderr.contains(&format!(
            "but the running kernel is {} (build id {})",
            pkg.release, pkg.build_id
        )),
        "{}",
        load.stderr
    );
}

#[test]
#[ignore = "boots two Debian test hosts (minutes): cargo make deploy-test"]
#[serial]
fn a_failed_batch_stops_the_rolling_deploy() {
    let pkg = Manifest::read();
    let a = TestHost::start("fleet-a");
    let b = TestHost::start("fleet-b");
    let debian_release = b.ssh("uname -r");
    let inventory = tempfile::NamedTempFile::new().expect("temp file");
    let line = |name: &str, h: &TestHost, vars: &str| {
        format!(
            "{name} ansible_host=127.0.0.1 ansible_port={} ansible_ssh_private_key_file={} {vars}\n",
            h.port,
            h.key.display()
        )
    };
    let text = format!(
        "[enoki]\n{}{}\n[enoki:vars]\nansible_user=deploy\nenoki_smoke_seconds=8\n\
         ansible_ssh_common_args='-o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new'\n",
        line(
            "a",
            &a,
            "enoki_scheduler=buggy enoki_load_args='[\"--args\", \"bug=aa\"]'"
        ),
        line("b", &b, "enoki_scheduler=fifo"),
        a.known_hosts.display()
    );
    std::fs::write(inventory.path(), text).expect("write inventory");
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg(inventory.path())
        .arg(top().join("deploy/ansible/deploy.yml"))
        .arg("-e")
        .arg(format!("enoki_package_dir={}", pkg.dir.display()))
        .env("ANSIBLE_CONFIG", top().join("deploy/ansible/ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    // a failed in the first batch and was rolled back...
    assert!(stdout.contains("fatal: [a]"), "{stdout}");
    assert!(
        stdout.contains("rolled back to no Enoki packages"),
        "{stdout}"
    );
    // ...so the second batch (b) never started.
    assert!(!stdout.contains("[b]"), "{stdout}");
    assert_eq!(b.ssh("uname -r"), debian_release);
    assert!(!installed(&b, &format!("linux-image-{}", pkg.release)));

    // a runs the new kernel until its next boot, without Enoki's packages;
    // the next boot is the previous kernel.
    assert_eq!(a.ssh("uname -r"), pkg.release);
    assert!(!installed(&a, &format!("enoki-{}", pkg.release)));
    assert!(!installed(&a, &format!("linux-image-{}", pkg.release)));
    a.reboot();
    assert_eq!(a.ssh("uname -r"), debian_release);
}
