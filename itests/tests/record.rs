// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki record` in the real kernel: record a scheduler under a mixed
//! workload into the shared directory, then replay the trace on the host
//! against the scheduler's source and require every answer and lock event
//! to match.

use enoki_itests::{self as it, field};
use enoki_sim::trace::Event;
use serial_test::serial;

/// What a recorded run showed besides its replay.
struct Recorded {
    /// Hints the scheduler got.
    hints: u64,
    /// Locks the trace records as taken to read.
    shared_acquisitions: usize,
}

/// Records `sched` (in `all` mode, with `args`) for ~5 s of CPU spinners,
/// a fork/exec loop, a pipe ping-pong and `extra` (a shell command run in
/// the background), then replays the trace by locks.
fn record_and_replay(sched: &str, args: &str, extra: &str) -> Recorded {
    let dir = it::shared_tempdir();
    let trace = dir.path().join(format!("{sched}.enk"));
    let script = format!(
        r#"set -e
cat > /tmp/work.sh <<'W'
end=$(( $(date +%s) + 5 ))
( while [ $(date +%s) -lt $end ]; do /bin/true; done ) &
( enoki-pipe -l 20000 >/dev/null ) &
{extra}
stress-ng -c 4 -t 5s >/dev/null 2>&1
wait
echo workload-done
W
rc=0
# The trace goes to the guest's tmpfs and onto the share afterwards: the
# share's writes are served by virtiofsd on the host, which shares the host
# cores with the vCPUs under multi-threaded TCG and would stall the drain.
# Those vCPUs share two host cores: the drain's can be off them for a while,
# and 24 MiB rings per CPU (4x the default) ride that out.
timeout 120 enoki record -o /tmp/{sched}.enk --buffer-kib 24576 --load {sched} --mode all {args} -- sh /tmp/work.sh || rc=$?
echo record-exit $rc
cp /tmp/{sched}.enk {trace}
echo drops-file $(cat /sys/kernel/enoki/record_drops)
echo hints-sent $(awk '$1=="hint"{{print $2}}' /sys/kernel/enoki/counters)
echo state $(cat /sys/kernel/enoki/state)
enoki unload
"#,
        trace = trace.display()
    );
    let r = it::run_ok_in(it::heavy_config(), &script);
    let out = &r.output;
    assert_eq!(field(out, "record-exit"), "0", "{out}");
    assert!(out.contains("workload-done"), "{out}");
    assert_eq!(field(out, "state"), "enabled");
    assert_eq!(field(out, "drops"), "0", "the recorder dropped events");
    assert_eq!(field(out, "drops-file"), "0");
    let calls: u64 = field(out, "calls").parse().unwrap();
    assert!(calls > 10_000, "only {calls} calls recorded");
    assert!(trace.is_file(), "{} missing", trace.display());

    let mut reader = enoki_sim::trace::TraceReader::open(&trace).expect("reading the trace");
    let header = reader.header().clone();
    assert_eq!(header.scheduler, sched);
    assert_eq!(header.dropped_events, 0);
    let entry = enoki_sim::registry::find(sched).unwrap();
    let rep = (entry.replay_by_locks)(&header, &mut reader, &Default::default()).expect("replay");
    assert!(rep.read_error.is_none(), "{:?}", rep.read_error);
    if let Some(d) = &rep.divergence {
        let keep = it::shared_tempdir().keep().join("diverged.enk");
        std::fs::copy(&trace, &keep).unwrap();
        panic!("replay diverged (trace kept at {}):\n{d}", keep.display());
    }
    assert_eq!(rep.messages, calls);
    assert_eq!(rep.seq_gaps, 0);
    let reader = enoki_sim::trace::TraceReader::open(&trace).expect("reading the trace");
    let mut shared_acquisitions = 0;
    let mut call_time = std::collections::HashMap::new();
    for r in reader {
        let r = r.expect("reading the trace");
        let stamp = match &r.event {
            Event::Msg(m) => {
                call_time.insert(r.cpu, m.now);
                Some(m.now)
            }
            Event::LockAcquireShared { .. } => {
                shared_acquisitions += 1;
                call_time.get(&r.cpu).copied()
            }
            Event::LockAcquire { .. } | Event::LockRelease { .. } | Event::LockAccess { .. } => {
                call_time.get(&r.cpu).copied()
            }
            _ => None,
        };
        if let Some(stamp) = stamp {
            assert_eq!(
                r.time_ns, stamp,
                "record {} is not stamped with its call's time",
                r.seq
            );
        }
    }
    Recorded {
        hints: field(out, "hints-sent").parse().expect("the hint counter"),
        shared_acquisitions,
    }
}

#[test]
#[serial]
fn fifo_recording_replays_without_divergence() {
    record_and_replay("fifo", "", "");
}

/// WFQ's shared state (idle CPUs, queue lengths, load, steals) must be
/// visible to replay for the lock-ordered replay to reproduce its answers.
#[test]
#[serial]
fn wfq_recording_replays_without_divergence() {
    record_and_replay("wfq", "", "");
}

/// Shinjuku's shared state (idle and timer-armed flags per CPU, the
/// arrival counter that orders steals) must be visible to replay too.
#[test]
#[serial]
fn shinjuku_recording_replays_without_divergence() {
    record_and_replay("shinjuku", "--args preempt_us=1000", "");
}

/// Hints are calls like any other: recorded, and replayed with the
/// scheduler's answers to them.
#[test]
#[serial]
fn locality_recording_with_hints_replays_without_divergence() {
    let rec = record_and_replay(
        "locality",
        "",
        "( enoki-groups --groups 2 --threads 3 --duration-ms 4000 >/dev/null ) &",
    );
    assert_eq!(
        rec.hints, 6,
        "the hinted groups' hints were not all recorded"
    );
}

/// The arbiter's grants change where tasks may run mid-run: the replay
/// must see the same requests and answer them the same way. Its calls read
/// the grants under an `RwLock`, often on several CPUs at once: the kernel
/// records those as shared acquisitions, which replay lets overlap.
#[test]
#[serial]
fn arachne_recording_with_core_requests_replays_without_divergence() {
    let rec = record_and_replay(
        "arachne",
        "",
        "( enoki-cores --cores 2 --threads 3 --duration-ms 3000 >/dev/null ) &",
    );
    assert_eq!(rec.hints, 1, "the core request was not recorded");
    assert!(
        rec.shared_acquisitions > 0,
        "no read of the grants recorded"
    );
}
