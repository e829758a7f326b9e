// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `enoki-sim` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enoki-sim"))
        .args(args)
        .env("ENOKI_QUIET", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_runs_clean() {
    let ex = examples();
    assert!(ex.len() >= 3);
    for p in ex {
        // An example named after a scheduler (`<scheduler>[-what].toml`)
        // is written for it (its hints).
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let named = stem.split('-').next().unwrap_or(stem);
        let sched = if enoki_sim::registry::find(named).is_ok() {
            named
        } else {
            "fifo"
        };
        let spec = p.to_str().unwrap();
        let o = sim(&["--spec", spec, "--sched", sched, "--duration-ms", "30"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{}: {out}{err}", p.display());
        assert!(out.contains("invariants: ok"), "{out}");
    }
}

#[test]
fn json_report() {
    let o = sim(&[
        "--spin",
        "3:2",
        "--sleep",
        "1:100:400",
        "--machine",
        "2",
        "--duration-ms",
        "20",
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["scheduler"], "fifo");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 4);
    assert_eq!(v["tasks"][0]["nice"], 2);
    assert!(v["tasks"][3]["wakeup_p99_ns"].is_u64());
    assert!(v["violations"].as_array().unwrap().is_empty());
}

#[test]
fn record_replay_dump_and_timelines() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("run.enk");
    let (t, pf) = (trace.to_str().unwrap(), dir.path().join("run.json"));
    let o = sim(&[
        "--spec",
        "examples/mixed.toml",
        "--duration-ms",
        "40",
        "--record",
        t,
        "--perfetto",
        pf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&pf).unwrap()).unwrap();
    assert!(doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "spin.0"));

    let o = sim(&["replay", t]);
    let (out, _) = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("no divergence"), "{out}");

    let pf2 = dir.path().join("replay.json");
    let o = sim(&["replay", t, "--json", "--perfetto", pf2.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["messages"].as_u64().unwrap() > 100 && v["divergence"].is_null());
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&pf2).unwrap()).unwrap();
    assert!(doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ph"] == "X"));

    let o = sim(&["replay", t, "--sched", "badpick"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("first divergence at message #") && out.contains("the 10 events before:"),
        "{out}"
    );
    assert!(
        err.contains("notice: the trace recorded scheduler \"fifo\""),
        "{err}"
    );

    let o = sim(&["dump", t, "--limit", "3"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        out.contains("scheduler \"fifo\"")
            && out.contains("4 CPUs, 2 nodes")
            && out.contains("pick_next_task"),
        "{out}"
    );

    // A damaged copy: clear errors, exit status 2.
    let bytes = std::fs::read(&trace).unwrap();
    let bad = dir.path().join("bad.enk");
    let cases: [(&[u8], &str); 3] = [
        (&[], "empty"),
        (&bytes[..bytes.len() / 2], "truncated"),
        (b"GIF89a not a trace at all", "not an Enoki trace"),
    ];
    for (content, want) in cases {
        std::fs::write(&bad, content).unwrap();
        let o = sim(&["replay", bad.to_str().unwrap()]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 100] ^= 0xff;
    std::fs::write(&bad, &flipped).unwrap();
    let o = sim(&["replay", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("corrupt"), "{}", text(&o).1);
}

#[test]
fn seed_alone_runs_a_reproducible_random_workload() {
    let a = sim(&["--seed", "42", "--json"]);
    let b = sim(&["--seed", "42", "--json"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let o = sim(&["--seed", "42"]);
    assert!(text(&o).1.contains("random workload of seed 42"));
    let spec = sim(&["--seed", "42", "--print-spec"]);
    let parsed =
        enoki_sim::spec::Spec::from_toml(&String::from_utf8(spec.stdout).unwrap()).unwrap();
    assert_eq!(parsed, enoki_sim::spec::Spec::random(42));
}

#[test]
fn violations_exit_1_with_a_reproducer() {
    // Four spinners share one CPU in 3 ms slices: a 2 ms stall bound trips.
    let o = sim(&[
        "--spin",
        "4",
        "--machine",
        "1",
        "--duration-ms",
        "50",
        "--stall-ms",
        "2",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("Stall"), "{out}");
    assert!(
        err.contains("reproduce with: enoki-sim --sched fifo --seed 0"),
        "{err}"
    );
}

#[test]
fn bad_input_is_exit_2() {
    for args in [
        &["--sched", "nope"][..],
        &["--spin", "x"],
        &["--sleep", "1:2"],
        &["--machine", "0"],
        &["--spin", "1", "--affinity", "5:ghost:0"],
        &["--spec", "/nonexistent.toml"],
    ] {
        let o = sim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.starts_with("error: "), "{args:?}");
    }
    let o = sim(&["--sched", "nope"]);
    let err = text(&o).1;
    assert!(err.contains("known: ") && err.contains("fifo"), "{err}");
    let o = sim(&["list"]);
    assert!(text(&o).0.contains("badpick"));
}

#[test]
fn import_a_kernel_recording_and_replay_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim_trace = dir.path().join("sim.enk");
    let o = sim(&[
        "--spec",
        "examples/mixed.toml",
        "--duration-ms",
        "30",
        "--record",
        sim_trace.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    // Lay the records out as the debugfs file does: CPU by CPU, each CPU's
    // in order.
    let mut reader = enoki_sim::trace::TraceReader::open(&sim_trace).unwrap();
    let header = reader.header().clone();
    let mut by_cpu: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for r in &mut reader {
        let r = r.unwrap();
        by_cpu[r.cpu as usize].extend(r.to_kernel());
    }
    let raw = dir.path().join("trace.bin");
    std::fs::write(&raw, by_cpu.concat()).unwrap();
    let topo_file = dir.path().join("topology.bin");
    std::fs::write(
        &topo_file,
        enoki_sim::trace::topology_to_kernel(&header.topology),
    )
    .unwrap();

    let out = dir.path().join("kernel.enk");
    let o = sim(&[
        "import",
        raw.to_str().unwrap(),
        "--topology",
        topo_file.to_str().unwrap(),
        "--sched",
        "fifo",
        "--build-id",
        "enoki_fifo.ko 1234",
        "--dropped",
        "0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = sim(&["replay", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("no divergence") && stderr.contains("enoki_fifo.ko 1234"),
        "{stdout}{stderr}"
    );

    // A cut record and a bad topology are refused.
    let import = || {
        let (raw, topo) = (raw.to_str().unwrap(), topo_file.to_str().unwrap());
        sim(&[
            "import",
            raw,
            "--topology",
            topo,
            "--sched",
            "fifo",
            "-o",
            "/dev/null",
        ])
    };
    std::fs::write(&raw, &by_cpu.concat()[..300]).unwrap();
    let o = import();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("truncated"));
    std::fs::write(&topo_file, b"short").unwrap();
    let o = import();
    assert!(text(&o).1.contains("not an enoki topology dump"));
}

#[test]
fn a_kernel_recording_with_a_gap_replays_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim_trace = dir.path().join("sim.enk");
    let o = sim(&[
        "--spec",
        "examples/mixed.toml",
        "--duration-ms",
        "30",
        "--record",
        sim_trace.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    // CPU 1's ring was full for 4 of its events from the middle of its
    // records on: the next one wrote a gap record first.
    let mut reader = enoki_sim::trace::TraceReader::open(&sim_trace).unwrap();
    let header = reader.header().clone();
    let mut by_cpu: Vec<Vec<enoki_sim::trace::Record>> = vec![Vec::new(); 4];
    for r in &mut reader {
        let r = r.unwrap();
        by_cpu[r.cpu as usize].push(r);
    }
    let cpu1 = &mut by_cpu[1];
    let at = cpu1.len() / 2;
    let seq = cpu1[at].seq;
    cpu1[at].event = enoki_sim::trace::Event::Gap { lost: 4 };
    cpu1.drain(at + 1..at + 4);
    let raw = dir.path().join("trace.bin");
    let bytes: Vec<u8> = by_cpu
        .iter()
        .flatten()
        .flat_map(|r| r.to_kernel())
        .collect();
    std::fs::write(&raw, bytes).unwrap();
    let topo = dir.path().join("topology.bin");
    std::fs::write(
        &topo,
        enoki_sim::trace::topology_to_kernel(&header.topology),
    )
    .unwrap();
    let out = dir.path().join("kernel.enk");
    let (raw, topo, out) = (
        raw.to_str().unwrap(),
        topo.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let o = sim(&[
        "import",
        raw,
        "--topology",
        topo,
        "--sched",
        "fifo",
        "--dropped",
        "4",
        "-o",
        out,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));

    let gap = format!("trace has a gap: 4 events lost on CPU 1 at seq {seq}: replay stopped there");
    for extra in [None, Some("--by-locks")] {
        let o = sim(&["replay", out].into_iter().chain(extra).collect::<Vec<_>>());
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(3), "{extra:?}: {stdout}{stderr}");
        assert!(stdout.contains(&gap), "{extra:?}: {stdout}");
        assert!(!stdout.contains("divergence at"), "{stdout}");
    }
    let o = sim(&["replay", out, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["gap"]["seq"], seq);
    assert_eq!(
        (v["gap"]["cpu"].as_u64(), v["gap"]["lost"].as_u64()),
        (Some(1), Some(4))
    );
    let o = sim(&["dump", out]);
    let (stdout, _) = text(&o);
    assert!(
        stdout.contains(&format!(
            "seq {seq:>8} cpu   1  gap: 4 events of this CPU lost"
        )),
        "{stdout}"
    );
}

#[test]
fn a_recording_across_an_upgrade_replays_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("upgraded.toml");
    let mixed = std::fs::read_to_string("examples/mixed.toml").unwrap();
    std::fs::write(&spec, format!("{mixed}\n[[upgrade]]\nat_ms = 20\n")).unwrap();
    let trace = dir.path().join("run.enk");
    let (s, t) = (spec.to_str().unwrap(), trace.to_str().unwrap());
    let o = sim(&[
        "--sched",
        "wfq",
        "--spec",
        s,
        "--duration-ms",
        "40",
        "--record",
        t,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    for extra in [None, Some("--by-locks")] {
        let o = sim(&["replay", t].into_iter().chain(extra).collect::<Vec<_>>());
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{extra:?}: {stdout}{stderr}");
        assert!(
            stdout.contains("the scheduler was live-upgraded at seq")
                && stdout.contains("(the new version took over state 0x")
                && stdout.contains("replay stopped there, at the end of the recorded version"),
            "{extra:?}: {stdout}"
        );
    }
    let o = sim(&["replay", t, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["upgrade"]["seq"].as_u64().unwrap() > 100, "{v}");
    assert!(v["divergence"].is_null() && v["gap"].is_null(), "{v}");
}

#[test]
fn a_dump_whose_reader_leaves_early_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("run.enk");
    let t = trace.to_str().unwrap();
    let o = sim(&[
        "--spec",
        "examples/mixed.toml",
        "--duration-ms",
        "60",
        "--record",
        t,
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    // `enoki-sim dump run.enk | head -1`: more output than a pipe holds,
    // and a reader that takes a line and leaves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_enoki-sim"))
        .args(["dump", t])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "{err}");
}
