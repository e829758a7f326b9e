// SPDX-License-Identifier: MIT OR Apache-2.0
//! `vm-suite [--lanes N] [-- FILTER...]`: runs the VM tests (`cargo make
//! vm-test`), two test files at a time on these 2-core machines.
//!
//! Single-threaded TCG runs a VM on one host thread, so two such VMs keep
//! both host cores busy where one multi-threaded TCG VM mostly does not (a
//! boot, a timing test on single-threaded TCG and a guest waiting for its
//! virtiofs share leave a core idle). Each lane runs one test file at a
//! time, its tests one at a time (they are `#[serial]`), under
//! `ENOKI_ACCEL=tcg`; the files whose tests need vCPUs that really run at
//! once (see [`ALONE`]) run after the lanes, alone, on the launcher's own
//! choice. Where KVM works, or the caller forced KVM or MTTCG, every VM
//! uses every core, and the files run one at a time. The unit tests of this
//! crate run first. Each file's output goes to `target/vm-suite/<file>.log`;
//! each file's time is kept in `target/vm-suite/times.json`, and the next
//! run starts the longest files first.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use enoki_vm::{Accel, VmConfig};

#[derive(Parser)]
#[command(about = "Run the VM tests, several test files at a time on single-threaded TCG")]
struct Cli {
    /// Test files run at once (each in its own VM, on single-threaded TCG).
    #[arg(long, default_value_t = 2)]
    lanes: usize,
    /// Passed to every test file (test name filters, `--exact`...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    filters: Vec<String>,
}

/// Test files run alone after the lanes: some of their tests need vCPUs
/// that run at the same time, which single-threaded TCG never gives
/// (README "Test time, MTTCG vs single-threaded TCG"): a lock cycle is
/// ejected by sched_ext's watchdog before the lock detector sees it
/// (`faults`), and stale tokens need CPUs picking at once (`enoki_c`).
const ALONE: &[&str] = &["enoki_c", "faults"];

/// One test executable cargo built.
#[derive(Debug, Clone, PartialEq)]
struct TestBin {
    /// The target's name (`fifo` for `tests/fifo.rs`).
    name: String,
    /// Whether it is an integration test file (which boots VMs), not the
    /// crate's own unit tests.
    boots_vms: bool,
    exe: PathBuf,
}

/// How one test file went.
struct Ran {
    name: String,
    lane: String,
    passed: bool,
    tests: String,
    time: Duration,
    log: PathBuf,
}

/// The test executables in cargo's `--message-format=json` output.
fn test_bins(json: &str) -> Vec<TestBin> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == true)
        .filter_map(|v| {
            Some(TestBin {
                name: v["target"]["name"].as_str()?.to_string(),
                boots_vms: v["target"]["kind"][0] == "test",
                exe: PathBuf::from(v["executable"].as_str()?),
            })
        })
        .collect()
}

/// Builds the tests and returns their executables.
fn build(root: &Path) -> Result<Vec<TestBin>> {
    println!("vm-suite: building the VM tests");
    let out = Command::new("cargo")
        .args(["test", "-p", "enoki-itests", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("building the VM tests failed (cargo's errors are above)");
    }
    Ok(test_bins(&String::from_utf8_lossy(&out.stdout)))
}

/// The lanes' queue: the files that took longest last time first (they
/// would otherwise end the run alone), files with no time before them.
fn lane_order(mut bins: Vec<TestBin>, times: &BTreeMap<String, f64>) -> VecDeque<TestBin> {
    let key = |b: &TestBin| times.get(&b.name).copied().unwrap_or(f64::INFINITY);
    bins.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    bins.into()
}

/// The libtest summary in `log` ("7 passed; 0 failed; ..."), or what
/// stands in for it.
fn test_counts(log: &str) -> String {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("test result: "))
        .and_then(|r| r.split_once(". ").map(|(_, counts)| counts))
        .and_then(|c| c.split("; finished").next())
        .unwrap_or("no test summary")
        .to_string()
}

/// Lines of a failed file's log printed with its verdict, from its
/// failures' report (panic messages, each failed test's output).
const EXCERPT_LINES: usize = 150;

/// The end of `log`'s failures' report (from libtest's `failures:` on),
/// or of the whole log when it has none (the file crashed): at most
/// [`EXCERPT_LINES`] lines.
fn failure_excerpt(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.iter().position(|l| *l == "failures:").unwrap_or(0);
    let report = lines.get(from..).unwrap_or_default();
    report
        .get(report.len().saturating_sub(EXCERPT_LINES)..)
        .unwrap_or_default()
        .to_vec()
}

/// The tests `log` says failed.
fn failed_tests(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .collect()
}

/// Runs one test file, its output to `dir/<name>.log`.
fn run_bin(bin: &TestBin, lane: &str, cli: &Cli, env: &[(&str, &str)], dir: &Path) -> Ran {
    let log = dir.join(format!("{}.log", bin.name));
    println!("vm-suite: [{lane}] {} started", bin.name);
    let start = Instant::now();
    let status = File::create(&log).and_then(|f| {
        Command::new(&bin.exe)
            .arg("--test-threads=1")
            .args(&cli.filters)
            .envs(env.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(f.try_clone()?)
            .stderr(f)
            .status()
    });
    let text = fs::read_to_string(&log).unwrap_or_default();
    let ran = Ran {
        name: bin.name.clone(),
        lane: lane.to_string(),
        passed: status.as_ref().is_ok_and(|s| s.success()),
        tests: match &status {
            Err(e) => format!("could not run: {e}"),
            Ok(_) => test_counts(&text),
        },
        time: start.elapsed(),
        log,
    };
    report(&ran, &text);
    ran
}

/// One file's line, and its failed tests' names with the log to read.
fn report(ran: &Ran, text: &str) {
    let verdict = if ran.passed { "ok" } else { "FAILED" };
    println!(
        "vm-suite: [{}] {} {verdict}: {} in {:.0} s",
        ran.lane,
        ran.name,
        ran.tests,
        ran.time.as_secs_f64()
    );
    if !ran.passed {
        println!("vm-suite: --- the end of {} ---", ran.log.display());
        for line in failure_excerpt(text) {
            println!("{line}");
        }
        println!("vm-suite: --- end of the excerpt ---");
        for t in failed_tests(text) {
            println!("vm-suite:     failed: {t}");
        }
        println!("vm-suite:     log: {}", ran.log.display());
    }
}

/// How many lanes, and the accelerator they force: lanes only where every
/// VM runs on single-threaded TCG (forced, or chosen for want of KVM).
/// `auto` is what the launcher picks on its own.
fn lane_plan(
    forced: Accel,
    auto: impl FnOnce() -> Result<Accel>,
    lanes: usize,
) -> Result<(usize, Option<&'static str>)> {
    Ok(match forced {
        Accel::Tcg => (lanes, None),
        Accel::Auto if auto()? != Accel::Kvm => (lanes, Some("tcg")),
        _ => (1, None),
    })
}

/// Runs `queue` on `lanes` lanes at once, each taking the next file when
/// its last one ends.
fn run_lanes(
    queue: VecDeque<TestBin>,
    (lanes, accel): (usize, Option<&str>),
    cli: &Cli,
    dir: &Path,
) -> Vec<Ran> {
    let env: Vec<(&str, &str)> = accel.map(|a| ("ENOKI_ACCEL", a)).into_iter().collect();
    let queue = Mutex::new(queue);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for lane in 1..=lanes {
            let (queue, done, env) = (&queue, &done, &env);
            s.spawn(move || loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(bin) = next else { break };
                let ran = run_bin(&bin, &format!("lane {lane}"), cli, env, dir);
                if let Ok(mut d) = done.lock() {
                    d.push(ran);
                }
            });
        }
    });
    done.into_inner().unwrap_or_default()
}

fn read_times(path: &Path) -> BTreeMap<String, f64> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Keeps each file's time for the next run's order (a filtered run's
/// times say nothing of whole files).
fn write_times(path: &Path, ran: &[Ran], cli: &Cli) {
    if !cli.filters.is_empty() {
        return;
    }
    let mut times = read_times(path);
    for r in ran {
        times.insert(r.name.clone(), r.time.as_secs_f64());
    }
    if let Ok(json) = serde_json::to_string_pretty(&times) {
        let _ = fs::write(path, json);
    }
}

fn summary(ran: &[Ran], wall: Duration) -> bool {
    println!("\nvm-suite: summary");
    println!("| test file | where | result | tests | seconds |");
    println!("| --- | --- | --- | --- | ---: |");
    for r in ran {
        let verdict = if r.passed { "ok" } else { "FAILED" };
        println!(
            "| {} | {} | {verdict} | {} | {:.0} |",
            r.name,
            r.lane,
            r.tests,
            r.time.as_secs_f64()
        );
    }
    let total: f64 = ran.iter().map(|r| r.time.as_secs_f64()).sum();
    let failed: Vec<&Ran> = ran.iter().filter(|r| !r.passed).collect();
    println!(
        "vm-suite: {} test files, {} failed; {:.0} s of test files in {:.0} s",
        ran.len(),
        failed.len(),
        total,
        wall.as_secs_f64()
    );
    for r in &failed {
        println!("vm-suite: {} FAILED, log {}", r.name, r.log.display());
    }
    failed.is_empty()
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let root = enoki_vm::find_root()?;
    let dir = root.join("target/vm-suite");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bins = build(&root)?;
    let cfg = VmConfig::new()?;
    let plan = lane_plan(
        cfg.accel,
        || Ok(cfg.clone().build()?.accel()),
        cli.lanes.max(1),
    )?;
    match plan {
        (1, _) => println!("vm-suite: one test file at a time (the VMs use every core)"),
        (n, _) => println!("vm-suite: {n} test files at a time, on single-threaded TCG"),
    }
    let wall = Instant::now();
    let (vm, unit): (Vec<_>, Vec<_>) = bins.into_iter().partition(|b| b.boots_vms);
    let (alone, laned): (Vec<_>, Vec<_>) = vm
        .into_iter()
        .partition(|b| ALONE.contains(&b.name.as_str()));
    let mut ran: Vec<Ran> = unit
        .iter()
        .map(|b| run_bin(b, "host", &cli, &[], &dir))
        .collect();
    let times_path = dir.join("times.json");
    let queue = lane_order(laned, &read_times(&times_path));
    ran.extend(run_lanes(queue, plan, &cli, &dir));
    ran.extend(alone.iter().map(|b| run_bin(b, "alone", &cli, &[], &dir)));
    write_times(&times_path, &ran, &cli);
    Ok(if summary(&ran, wall.elapsed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(name: &str) -> TestBin {
        TestBin {
            name: name.into(),
            boots_vms: true,
            exe: PathBuf::from(format!("/t/{name}")),
        }
    }

    #[test]
    fn test_executables_are_found_in_cargos_messages() {
        let json = r#"{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"fifo","kind":["test"]},"executable":"/t/fifo-1"}
{"reason":"compiler-artifact","profile":{"test":false},"target":{"name":"enoki_vm","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"enoki_itests","kind":["lib"]},"executable":"/t/enoki_itests-2"}
{"reason":"build-finished","success":true}"#;
        let bins = test_bins(json);
        assert_eq!(bins.len(), 2, "{bins:?}");
        assert_eq!(bins[0].name, "fifo");
        assert!(bins[0].boots_vms);
        assert_eq!(bins[0].exe, PathBuf::from("/t/fifo-1"));
        assert!(!bins[1].boots_vms);
    }

    #[test]
    fn the_longest_files_last_time_start_first_and_new_ones_before_them() {
        let times = BTreeMap::from([("a".to_string(), 10.0), ("b".to_string(), 90.0)]);
        let order: Vec<String> = lane_order(vec![bin("a"), bin("b"), bin("new")], &times)
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(order, ["new", "b", "a"]);
    }

    #[test]
    fn a_files_counts_and_failed_tests_come_from_its_log() {
        let log = "running 2 tests\ntest a_thing ... ok\ntest b_thing ... FAILED\n\n\
                   test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; \
                   0 filtered out; finished in 3.00s\n";
        assert_eq!(
            test_counts(log),
            "1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
        );
        assert_eq!(failed_tests(log), ["b_thing"]);
        assert_eq!(test_counts("thread panicked"), "no test summary");
        let failed = "test b ... FAILED\n\nfailures:\n\n---- b stdout ----\nboom\n";
        assert_eq!(
            failure_excerpt(failed),
            ["failures:", "", "---- b stdout ----", "boom"]
        );
        let long: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let tail = failure_excerpt(&long);
        assert_eq!(tail.len(), EXCERPT_LINES);
        assert_eq!(tail.last(), Some(&"line 999"));
    }

    #[test]
    fn lanes_run_only_where_every_vm_is_on_single_threaded_tcg() {
        let never = || -> Result<Accel> { panic!("no probe when forced") };
        assert_eq!(lane_plan(Accel::Tcg, never, 2).unwrap(), (2, None));
        assert_eq!(lane_plan(Accel::Mttcg, never, 2).unwrap(), (1, None));
        assert_eq!(lane_plan(Accel::Kvm, never, 2).unwrap(), (1, None));
        let auto = |a: Accel| lane_plan(Accel::Auto, move || Ok(a), 2).unwrap();
        assert_eq!(auto(Accel::Kvm), (1, None));
        assert_eq!(auto(Accel::Mttcg), (2, Some("tcg")));
        assert_eq!(auto(Accel::Tcg), (2, Some("tcg")));
    }

    #[test]
    fn every_file_run_alone_exists() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        for name in ALONE {
            assert!(tests.join(format!("{name}.rs")).is_file(), "{name}");
        }
    }
}
