// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo make deploy` on input that cannot work: each is refused with a
//! message naming the cause, the step and the log, before the host is
//! touched. Host tests: no VM (a host that does not resolve, a port where
//! nothing listens).

use enoki_deploy::{deploy, fake_packages};

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("utf-8 temp path")
}

#[test]
fn an_unknown_host_is_named() {
    let pkgs = fake_packages();
    let run = deploy(&[
        ("HOST", "deploy@enoki-no-such-host.invalid"),
        ("PACKAGES", path(&pkgs)),
    ]);
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr.contains(
            "deploy: FAILED at step 'Gathering Facts' on deploy@enoki-no-such-host.invalid: \
             unknown host 'enoki-no-such-host.invalid'"
        ),
        "{}",
        run.text()
    );
    assert!(run.stderr.contains("deploy: log: "), "{}", run.stderr);
}

#[test]
fn a_refused_ssh_connection_is_named() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pkgs = fake_packages();
    let host = format!("deploy@127.0.0.1:{port}");
    let run = deploy(&[("HOST", &host), ("PACKAGES", path(&pkgs))]);
    assert!(!run.ok, "{}", run.text());
    assert!(
        run.stderr
            .contains(&format!("ssh refused by 127.0.0.1 port {port}")),
        "{}",
        run.text()
    );
}

#[test]
fn missing_packages_and_bad_hosts_stop_before_ssh() {
    let empty = tempfile::tempdir().expect("temp dir");
    let run = deploy(&[("HOST", "deploy@localhost"), ("PACKAGES", path(&empty))]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("no packages in")
            && run.stderr.contains("run 'cargo make package' first"),
        "{}",
        run.text()
    );
    let pkgs = fake_packages();
    let run = deploy(&[("HOST", "deploy@localhost:ssh"), ("PACKAGES", path(&pkgs))]);
    assert!(!run.ok);
    assert!(run.stderr.contains("bad port 'ssh'"), "{}", run.text());
    let run = deploy(&[("HOST", ""), ("PACKAGES", path(&pkgs))]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("no host: cargo make deploy HOST="),
        "{}",
        run.text()
    );
}
