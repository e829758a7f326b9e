// SPDX-License-Identifier: MIT OR Apache-2.0
//! Record a simulated run through the driver, replay it through
//! `Loaded::handle`, and find divergences.

mod common;

use std::io::Cursor;

use enoki::abi::kind;
use enoki_fifo::Fifo;
use enoki_sim::check::Props;
use enoki_sim::perfetto::TimelineBuilder;
use enoki_sim::registry;
use enoki_sim::replay::{replay, replay_by_locks, ReplayOptions, TraceExit, TraceGap};
use enoki_sim::sim::{trace_header, Recorder, SimConfig};
use enoki_sim::trace::{Event, Record, TraceHeader, TraceReader};

use common::{mixed_spec, numbered, quiet, record, write, Flaky, LockFlaky};

const FIFO: Props = Props {
    correct: true,
    work_conserving: true,
};

#[test]
fn fifo_round_trip_has_no_divergence() {
    quiet();
    let (out, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    assert!(
        out.report.violations.is_empty(),
        "{:?}",
        out.report.violations
    );
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    assert_eq!(header.scheduler, "fifo");
    assert_eq!(header.topology.nr_cpus, 4);
    assert_eq!(header.slice_ns, 2_000_000);
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert!(rep.read_error.is_none());
    assert!(rep.notices.is_empty(), "{:?}", rep.notices);
    assert_eq!(rep.seq_gaps, 0);
    // Every message the driver sent was recorded and replayed, and every
    // lock event of every call was checked.
    let sent: u64 = out.report.counters.messages.values().sum();
    assert_eq!(rep.messages, sent);
    assert!(
        rep.lock_events > sent,
        "FIFO takes at least one lock per call"
    );
    assert_eq!(reader.end().unwrap().records, sent + rep.lock_events);
    // The workload exercised every kind of call.
    for k in [
        "task_new",
        "task_wakeup",
        "task_preempt",
        "task_blocked",
        "task_dead",
        "pick_next_task",
        "select_task_rq",
        "balance",
        "task_affinity_changed",
    ] {
        assert!(
            out.report.counters.messages[k] > 0,
            "no {k} in the mixed workload"
        );
    }
    // Ticks and nice changes happened, but FIFO keeps those methods'
    // defaults and is not called for them.
    for k in ["task_tick", "task_prio_changed"] {
        assert_eq!(
            out.report.counters.messages.get(k).copied().unwrap_or(0),
            0,
            "{k}"
        );
    }
}

/// The records of a trace, lock addresses replaced by their order of first
/// appearance (heap addresses differ between runs).
fn normalized(bytes: &[u8]) -> Vec<Record> {
    let mut ids = std::collections::BTreeMap::new();
    let mut id = |a: u64| {
        let n = ids.len() as u64;
        *ids.entry(a).or_insert(n)
    };
    TraceReader::new(Cursor::new(bytes))
        .unwrap()
        .map(|r| {
            let mut r = r.unwrap();
            r.event = match r.event {
                Event::LockAcquire { addr } => Event::LockAcquire { addr: id(addr) },
                Event::LockAcquireShared { addr } => Event::LockAcquireShared { addr: id(addr) },
                Event::LockRelease { addr } => Event::LockRelease { addr: id(addr) },
                Event::LockAccess { addr } => Event::LockAccess { addr: id(addr) },
                e => e,
            };
            r
        })
        .collect()
}

#[test]
fn same_seed_same_trace() {
    quiet();
    let (_, a) = record::<Fifo>(&mixed_spec(), 9, FIFO);
    let (_, b) = record::<Fifo>(&mixed_spec(), 9, FIFO);
    assert!(
        normalized(&a) == normalized(&b),
        "same seed, different traces"
    );
    let (_, c) = record::<Fifo>(&mixed_spec(), 10, FIFO);
    assert!(
        normalized(&a) != normalized(&c),
        "the seed must matter (request arrivals)"
    );
}

#[test]
fn fifo_trace_against_badpick_diverges_at_the_first_differing_message() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let entry = registry::find("badpick").unwrap();
    let rep = (entry.replay)(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(
        rep.notices
            .iter()
            .any(|n| n.contains("recorded scheduler \"fifo\"")),
        "{:?}",
        rep.notices
    );
    let d = rep.divergence.expect("badpick must diverge from fifo");
    // The divergence is the first message whose answer differs, with up to
    // 10 events before it.
    let m = d.message();
    assert_eq!(m.kind, kind::PICK_NEXT_TASK, "{d}");
    assert_ne!(d.expected, d.actual);
    assert_eq!(d.context.len() as u64, d.index.min(10));
    assert_eq!(rep.messages, d.index + 1, "replay stops at the divergence");
    let text = d.to_string();
    assert!(
        text.contains("pick_next_task") && text.contains("expected:") && text.contains("actual:"),
        "{text}"
    );
    // It is the index-th message of the trace.
    let msgs: Vec<_> = normalized(&bytes)
        .into_iter()
        .filter(|r| matches!(r.event, Event::Msg(_)))
        .collect();
    assert_eq!(msgs[d.index as usize], d.record);
}

#[test]
fn nondeterministic_scheduler_diverges_on_replay() {
    quiet();
    let (out, bytes) = record::<Flaky>(&mixed_spec(), 1, Props::default());
    assert!(out.report.counters.messages["pick_next_task"] > 100);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let rep = replay::<Flaky>(
        &header,
        &mut reader,
        &ReplayOptions {
            context: 4,
            ..ReplayOptions::default()
        },
    )
    .unwrap();
    let d = rep
        .divergence
        .expect("a pick that depends on a process-wide counter must diverge");
    assert_eq!(d.message().kind, kind::PICK_NEXT_TASK);
    assert_eq!(d.context.len(), 4);
    assert!(
        rep.notices.is_empty(),
        "same scheduler, same build: {:?}",
        rep.notices
    );
}

#[test]
fn different_lock_order_with_the_same_answers_diverges() {
    quiet();
    let (_, bytes) = record::<LockFlaky>(&mixed_spec(), 1, FIFO);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let rep = replay::<LockFlaky>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    let d = rep
        .divergence
        .expect("an extra lock on replay must be found");
    assert_eq!(d.expected, d.actual, "the answers agree; the locks do not");
    let what = d.locks.as_deref().unwrap();
    assert!(what.contains("lock"), "{what}");
    assert_eq!(d.message().kind, kind::PICK_NEXT_TASK);
    assert!(d.to_string().contains("locks:"));
}

#[test]
fn other_build_is_replayed_with_a_notice() {
    quiet();
    let spec = mixed_spec();
    let mut header = enoki_sim::sim::trace_header("fifo", &spec).unwrap();
    header.build_id = "enoki-fifo.ko 6.12.0 deadbeef".into();
    let rec = enoki_sim::sim::Recorder::new(Cursor::new(Vec::new()), header).unwrap();
    let mut cfg = enoki_sim::sim::SimConfig::new(spec, 2, FIFO);
    cfg.record = Some(rec.sink());
    enoki_sim::sim::simulate::<Fifo>(cfg).unwrap();
    let bytes = rec.finish().unwrap().into_inner();
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none());
    assert!(
        rep.notices
            .iter()
            .any(|n| n.contains("deadbeef") && n.contains("replaying anyway")),
        "{:?}",
        rep.notices
    );
}

#[test]
fn truncated_trace_replays_what_is_there_and_says_so() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let cut = &bytes[..bytes.len() - 30];
    let mut reader = TraceReader::new(Cursor::new(cut)).unwrap();
    let header = reader.header().clone();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none());
    let err = rep.read_error.expect("a cut trace must be reported");
    assert!(err.is_truncated(), "{err}");
    assert!(rep.messages > 0);
}

#[test]
fn timeline_from_a_trace_matches_the_simulated_one() {
    quiet();
    let spec = mixed_spec();
    let (out, bytes) = {
        let rec = enoki_sim::sim::Recorder::new(
            Cursor::new(Vec::new()),
            enoki_sim::sim::trace_header("fifo", &spec).unwrap(),
        )
        .unwrap();
        let mut cfg = enoki_sim::sim::SimConfig::new(spec.clone(), 5, FIFO);
        cfg.record = Some(rec.sink());
        cfg.timeline = true;
        let out = enoki_sim::sim::simulate::<Fifo>(cfg).unwrap();
        (out, rec.finish().unwrap().into_inner())
    };
    let mut tb = TimelineBuilder::default();
    for r in TraceReader::new(Cursor::new(&bytes)).unwrap() {
        tb.add(&r.unwrap());
    }
    let slices = tb.finish();
    // Runs of picked tasks (not of tasks the scheduler refused) appear in
    // both, with the same CPU, task, start and end.
    let sim: std::collections::BTreeSet<_> = out
        .timeline
        .iter()
        .map(|s| (s.cpu, s.pid, s.start_ns, s.end_ns))
        .collect();
    let from_trace: Vec<_> = slices
        .iter()
        .filter(|s| s.end_ns > s.start_ns)
        .map(|s| (s.cpu, s.pid, s.start_ns, s.end_ns))
        .collect();
    assert!(from_trace.len() > 50);
    let matching = from_trace.iter().filter(|s| sim.contains(s)).count();
    assert!(
        matching * 10 >= from_trace.len() * 9,
        "{matching} of {} slices match",
        from_trace.len()
    );
    let doc = enoki_sim::perfetto::to_json(4, &slices, &out.names, &[]);
    let events = doc["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "X"));
    assert!(events
        .iter()
        .any(|e| e["ph"] == "M" && e["args"]["name"] == "CPU 3"));
}

#[test]
fn records_carry_cpu_seq_and_time() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let mut last_seq = 0;
    let mut last_time = 0;
    let mut held: Vec<u64> = Vec::new();
    for r in TraceReader::new(Cursor::new(&bytes)).unwrap() {
        let r = r.unwrap();
        // Numbered from 1 without gaps, like Enoki-C's recorder.
        assert_eq!(r.seq, last_seq + 1);
        assert!(r.time_ns >= last_time);
        assert!(r.cpu < 4);
        match r.event {
            Event::Msg(m) => {
                assert!(
                    held.is_empty(),
                    "every lock of a call is released before the next call: {held:x?}"
                );
                if m.kind == kind::TASK_TICK || m.kind == kind::PICK_NEXT_TASK {
                    assert_eq!(m.cpu as u32, r.cpu, "a tick or pick runs on its own CPU");
                }
            }
            // libEnoki's task-generation lock is held around FIFO's in
            // task_new and task_dead: locks nest, innermost released first.
            Event::LockAcquire { addr } | Event::LockAcquireShared { addr } => {
                assert!(!held.contains(&addr), "{addr:#x} taken twice");
                held.push(addr);
            }
            Event::LockRelease { addr } => assert_eq!(held.pop(), Some(addr)),
            Event::LockAccess { addr } => assert!(!held.contains(&addr), "{addr:#x} taken twice"),
            Event::Gap { .. } | Event::Upgrade { .. } | Event::Exit { .. } => {
                panic!("the simulator lost nothing, upgraded nothing and ejected nothing")
            }
        }
        last_seq = r.seq;
        last_time = r.time_ns;
    }
}

#[test]
fn lock_records_of_overlapping_calls_on_other_cpus_are_matched_per_cpu() {
    // In a kernel trace calls on different CPUs overlap: the next call's
    // message can come before the previous call's lock events. Interleave
    // every two consecutive calls made on different CPUs that way.
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let (header, order, interleaved) = interleaved(&bytes);
    assert!(interleaved > 30, "{interleaved}");
    let bytes = write(&header, &order);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert!(rep.lock_events > 0);
}

/// A simulated trace laid out as a kernel recorder may see it: every two
/// consecutive calls made on different CPUs that take no lock in common
/// overlap (both messages, then their lock events alternating),
/// renumbered. (Calls sharing a lock could not overlap like that without
/// changing which took it first.) Also returns how many pairs overlap.
fn interleaved(bytes: &[u8]) -> (TraceHeader, Vec<Record>, usize) {
    let mut reader = TraceReader::new(Cursor::new(bytes)).unwrap();
    let header = reader.header().clone();
    let mut calls: Vec<Vec<Record>> = Vec::new();
    for r in &mut reader {
        let r = r.unwrap();
        match r.event {
            Event::Msg(_) => calls.push(vec![r]),
            _ => calls.last_mut().unwrap().push(r),
        }
    }
    let mut order: Vec<Record> = Vec::new();
    let mut interleaved = 0;
    let mut i = 0;
    while i < calls.len() {
        match calls.get(i + 1) {
            Some(b)
                if b[0].cpu != calls[i][0].cpu
                    && calls[i].len() > 1
                    && b.len() > 1
                    && disjoint(&calls[i], b) =>
            {
                let a = &calls[i];
                order.extend([a[0].clone(), b[0].clone()]);
                let n = a.len().max(b.len());
                for k in 1..n {
                    order.extend(a.get(k).into_iter().chain(b.get(k)).cloned());
                }
                interleaved += 1;
                i += 2;
            }
            _ => {
                order.extend(calls[i].iter().cloned());
                i += 1;
            }
        }
    }
    renumber(&mut order);
    (header, order, interleaved)
}

/// A trace's header and every record.
fn header_and_records(bytes: &[u8]) -> (TraceHeader, Vec<Record>) {
    let reader = TraceReader::new(Cursor::new(bytes)).unwrap();
    let header = reader.header().clone();
    (header, reader.map(Result::unwrap).collect())
}

/// Numbers `records` from 1 in their order.
fn renumber(records: &mut [Record]) {
    for (seq, r) in records.iter_mut().enumerate() {
        r.seq = seq as u64 + 1;
    }
}

/// Whether two calls' lock events name no lock in common.
fn disjoint(a: &[Record], b: &[Record]) -> bool {
    let addr = |r: &Record| match r.event {
        Event::LockAcquire { addr }
        | Event::LockAcquireShared { addr }
        | Event::LockRelease { addr }
        | Event::LockAccess { addr } => Some(addr),
        _ => None,
    };
    let of_a: std::collections::HashSet<u64> = a.iter().filter_map(addr).collect();
    !b.iter().filter_map(addr).any(|x| of_a.contains(&x))
}

/// `records` as Enoki-C records them when the ring of `records[at]`'s CPU
/// is full for that record and the `lost - 1` after it on its CPU: a gap
/// record in the first one's place, the others gone.
fn lose(records: &[Record], at: usize, lost: usize) -> (Vec<Record>, TraceGap) {
    let first = records[at].clone();
    let gap = TraceGap {
        seq: first.seq,
        cpu: Some(first.cpu),
        lost: lost as u64,
    };
    let mut out = records[..at].to_vec();
    out.push(Record {
        event: Event::Gap { lost: gap.lost },
        ..first
    });
    let on_cpu = records[at..].iter().filter(|r| r.cpu == first.cpu);
    let last_lost = on_cpu.clone().nth(lost - 1).unwrap().seq;
    out.extend(
        records[at + 1..]
            .iter()
            .filter(|r| r.cpu != first.cpu || r.seq > last_lost)
            .cloned(),
    );
    (out, gap)
}

/// FIFO's trace `bytes` replayed in sequence order or by locks.
fn replay_fifo(
    header: &TraceHeader,
    bytes: &[u8],
    opts: &ReplayOptions,
    by_locks: bool,
) -> enoki_sim::replay::ReplayReport {
    let mut reader = TraceReader::new(Cursor::new(bytes)).unwrap();
    if by_locks {
        replay_by_locks::<Fifo>(header, &mut reader, opts)
    } else {
        replay::<Fifo>(header, &mut reader, opts)
    }
    .unwrap()
}

/// Messages of `records` before sequence number `seq`.
fn messages_before(records: &[Record], seq: u64) -> u64 {
    records
        .iter()
        .filter(|r| r.seq < seq && matches!(r.event, Event::Msg(_)))
        .count() as u64
}

#[test]
fn a_gap_stops_the_replay_and_is_reported() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let recs = normalized(&bytes);
    let header = TraceReader::new(Cursor::new(&bytes))
        .unwrap()
        .header()
        .clone();
    // CPU 2 loses a lock release and what follows it: the call before the
    // gap never finishes in the trace.
    let at = (recs.len() / 2..recs.len())
        .find(|&i| recs[i].cpu == 2 && matches!(recs[i].event, Event::LockRelease { .. }))
        .unwrap();
    let (lossy, gap) = lose(&recs, at, 5);
    let mut reader = TraceReader::new(Cursor::new(write(&header, &lossy))).unwrap();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert!(rep.read_error.is_none());
    assert_eq!(rep.gap, Some(gap));
    assert_eq!(rep.messages, messages_before(&recs, gap.seq));
    assert!(rep.messages > 100);
    assert_eq!(
        gap.to_string(),
        format!("trace has a gap: 5 events lost on CPU 2 at seq {}", gap.seq)
    );
}

#[test]
fn a_gap_stops_the_lock_ordered_replay_with_calls_cut_short() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let (header, order, _) = interleaved(&bytes);
    // Mid-trace, two overlapping calls (messages of two CPUs, then their
    // lock events alternating): the second CPU loses a release of its call
    // (a release, or an access: an acquire and release in one record).
    let taking = |e: &Event| matches!(e, Event::LockAcquire { .. } | Event::LockAccess { .. });
    let pair = (order.len() / 2..order.len() - 4)
        .find(|&i| {
            let w = &order[i..i + 4];
            matches!(w[0].event, Event::Msg(_))
                && matches!(w[1].event, Event::Msg(_))
                && w[0].cpu != w[1].cpu
                && taking(&w[2].event)
                && taking(&w[3].event)
        })
        .unwrap();
    let cpu = order[pair + 1].cpu;
    let at = (pair + 3..order.len())
        .find(|&i| {
            order[i].cpu == cpu
                && matches!(
                    order[i].event,
                    Event::LockRelease { .. } | Event::LockAccess { .. }
                )
        })
        .unwrap();
    let (lossy, gap) = lose(&order, at, 3);
    let mut reader = TraceReader::new(Cursor::new(write(&header, &lossy))).unwrap();
    let rep = replay_by_locks::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert_eq!(rep.gap, Some(gap));
    assert_eq!(rep.messages, messages_before(&order, gap.seq));
    // The sequential replay agrees.
    let mut reader = TraceReader::new(Cursor::new(write(&header, &lossy))).unwrap();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert_eq!(rep.gap, Some(gap));
}

/// A kernel trace's hole comes before its gap record (written once the
/// ring has room again): both replays stop at the missing sequence numbers
/// as at a gap record, having replayed every message before them.
#[test]
fn missing_sequence_numbers_stop_both_replays_as_a_gap() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let (header, order, _) = interleaved(&bytes);
    let at = (order.len() / 2..order.len())
        .find(|&i| matches!(order[i].event, Event::LockRelease { .. }))
        .unwrap();
    let mut holed = order.clone();
    holed.drain(at..at + 4);
    let gap = TraceGap {
        seq: order[at].seq,
        cpu: None,
        lost: 4,
    };
    for by_locks in [false, true] {
        let bytes = write(&header, &holed);
        let rep = replay_fifo(&header, &bytes, &ReplayOptions::default(), by_locks);
        assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
        assert_eq!(rep.gap, Some(gap), "by locks: {by_locks}");
        assert_eq!(rep.seq_gaps, 4);
        assert_eq!(rep.messages, messages_before(&order, gap.seq));
        assert!(rep.messages > 100);
    }
    assert_eq!(
        gap.to_string(),
        format!(
            "trace has a gap: 4 sequence numbers missing at seq {} (events lost)",
            gap.seq
        )
    );
}

/// An ejection recorded mid-trace is where the recorded run ended: both
/// replays end there without a divergence and report it, and nothing after
/// it is replayed.
#[test]
fn an_exit_record_ends_both_replays_as_the_run_did() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let (header, mut records) = header_and_records(&bytes);
    // Between two calls, as Enoki-C writes it once no call can start.
    let at = (records.len() / 2..records.len())
        .find(|&i| matches!(records[i].event, Event::Msg(_)))
        .unwrap();
    let exit = Record {
        seq: records[at].seq,
        cpu: records[at].cpu,
        time_ns: records[at].time_ns,
        event: Event::Exit {
            kind: enoki::abi::exit_kind::ERROR_STALL,
        },
    };
    records.insert(at, exit.clone());
    for r in &mut records[at + 1..] {
        r.seq += 1;
    }
    let want = TraceExit {
        seq: exit.seq,
        cpu: exit.cpu,
        kind: enoki::abi::exit_kind::ERROR_STALL,
    };
    for by_locks in [false, true] {
        let rep = replay_fifo(
            &header,
            &write(&header, &records),
            &ReplayOptions::default(),
            by_locks,
        );
        assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
        assert!(rep.gap.is_none() && rep.read_error.is_none());
        assert_eq!(rep.exit, Some(want), "by locks: {by_locks}");
        assert_eq!(rep.messages, messages_before(&records, exit.seq));
        assert!(rep.messages > 100);
    }
    assert!(want.ejected());
    assert_eq!(
        want.to_string(),
        format!(
            "the recorded run ended at seq {}: the scheduler was ejected: a runnable task stalled",
            exit.seq
        )
    );
}

#[test]
fn a_changed_keep_running_answer_diverges() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let header = TraceReader::new(Cursor::new(&bytes))
        .unwrap()
        .header()
        .clone();
    let mut recs = normalized(&bytes);
    let kept = recs
        .iter()
        .position(|r| {
            matches!(&r.event, Event::Msg(m) if m.kind == kind::PICK_NEXT_TASK
                && m.flags & enoki::abi::flag::KEEP_PREV != 0)
        })
        .expect("FIFO keeps a task running when nothing else waits");
    let mut reader = TraceReader::new(Cursor::new(write(&header, &recs))).unwrap();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    // The same pid picked, but as a switch: another answer.
    let Event::Msg(m) = &mut recs[kept].event else {
        unreachable!()
    };
    m.flags &= !enoki::abi::flag::KEEP_PREV;
    let mut reader = TraceReader::new(Cursor::new(write(&header, &recs))).unwrap();
    let rep = replay::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    let d = rep.divergence.expect("keep_prev is part of the answer");
    assert_eq!(d.record.seq, recs[kept].seq);
    assert!(d.actual.keep_prev && !d.expected.keep_prev, "{d}");
    assert!(d.to_string().contains("keep_prev"), "{d}");
}

#[test]
fn fifo_round_trip_replays_by_locks_without_divergence() {
    quiet();
    let (_out, bytes) = record::<Fifo>(&mixed_spec(), 5, FIFO);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let seq = replay::<Fifo>(
        &header,
        &mut TraceReader::new(Cursor::new(&bytes)).unwrap(),
        &ReplayOptions::default(),
    )
    .unwrap();
    let rep =
        enoki_sim::replay::replay_by_locks::<Fifo>(&header, &mut reader, &ReplayOptions::default())
            .unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert_eq!(
        (rep.messages, rep.lock_events),
        (seq.messages, seq.lock_events)
    );
}

#[test]
fn lock_ordered_replay_refuses_another_schedulers_trace() {
    quiet();
    let (_out, bytes) = record::<Fifo>(&mixed_spec(), 5, FIFO);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let mut header = reader.header().clone();
    // Another scheduler's trace: refused (its locks cannot be ordered).
    header.scheduler = "wfq".into();
    let entry = registry::find("fifo").unwrap();
    assert!((entry.replay_by_locks)(&header, &mut reader, &ReplayOptions::default()).is_err());
}

#[test]
fn a_replay_asked_to_stop_ends_with_that_message() {
    quiet();
    let (_, bytes) = record::<Fifo>(&mixed_spec(), 3, FIFO);
    let recs = normalized(&bytes);
    let header = TraceReader::new(Cursor::new(&bytes))
        .unwrap()
        .header()
        .clone();
    let msgs: Vec<&Record> = recs
        .iter()
        .filter(|r| matches!(r.event, Event::Msg(_)))
        .collect();
    let at = msgs[msgs.len() / 2].seq;
    let opts = ReplayOptions {
        stop_before: Some(at),
        ..ReplayOptions::default()
    };
    for by_locks in [false, true] {
        let rep = replay_fifo(&header, &bytes, &opts, by_locks);
        assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
        assert_eq!(rep.stopped_at, Some(at), "by_locks {by_locks}");
        assert_eq!(rep.messages, messages_before(&recs, at) + 1);
    }
    // A lock event's number stops before the next message.
    let lock = recs
        .iter()
        .find(|r| r.seq > at && matches!(r.event, Event::LockAcquire { .. }))
        .unwrap();
    let next = msgs.iter().find(|r| r.seq > lock.seq).unwrap().seq;
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let opts = ReplayOptions {
        stop_before: Some(lock.seq),
        ..ReplayOptions::default()
    };
    let rep = replay::<Fifo>(&header, &mut reader, &opts).unwrap();
    assert_eq!(rep.stopped_at, Some(next));
}

/// A kernel trace (`itests` faults: the `buggy` scheduler's ABBA between
/// CPUs 0 and 1) in which CPU 1 began waiting first and found the cycle.
/// The replay runs into the same deadlock and CPU 1 finds it again: CPU 0
/// finding it instead would take locks its recorded call never took.
#[test]
fn a_recorded_abba_replays_with_the_same_cpu_finding_the_cycle() {
    quiet();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/abba-cpu1-finds-the-cycle.enk");
    let mut reader = TraceReader::open(&path).unwrap();
    let header = reader.header().clone();
    let entry = registry::find("buggy").unwrap();
    let rep = (entry.replay_by_locks)(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    let fault = rep
        .fault
        .expect("the replay fails as the kernel did")
        .to_string();
    assert!(
        fault.starts_with("ABBA deadlock in pick_next_task") && fault.contains(": CPU 1 at "),
        "{fault}"
    );
}

/// A hand-made kernel trace of `buggy` (`bug=cycle,cpus=2,hold=0,after=0`)
/// in which CPU 1 holds its queue (B) and finds the cycle with CPU 0, which
/// holds its own (A) and waits for B; before CPU 0 took A, CPU 2 held A for
/// a moment (a wakeup onto CPU 0's queue). The replayed CPU 1 must meet
/// CPU 0 as the holder, as it did in the run: meeting CPU 2 instead, it
/// would wait for A, get it when CPU 2 lets go, and take a lock its
/// recorded call never took.
#[test]
fn a_failing_call_meets_the_holder_it_met_in_the_run_not_an_earlier_one() {
    use enoki::abi::{ret_err, Msg};
    quiet();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/abba-cpu1-finds-the-cycle.enk");
    let mut header = TraceReader::open(&path).unwrap().header().clone();
    header.args = "bug=cycle,cpus=2,hold=0,after=0".into();
    let (picks, a, b, c) = (0x10, 0xa0, 0xb0, 0xc0);
    let pick = |cpu: i32, ret: i64, failed: bool| {
        let mut m = Msg::new(kind::PICK_NEXT_TASK, cpu);
        m.ret = ret;
        m.ret_cpu = if ret < 0 { -1 } else { cpu };
        m.ret_err = if failed { ret_err::FAILED } else { 0 };
        Event::Msg(Box::new(m))
    };
    let mut wakeup = Msg::new(kind::TASK_WAKEUP, 2);
    (wakeup.pid, wakeup.task_cpu, wakeup.ret) = (100, 0, 0);
    let (acq, rel) = (
        |addr| Event::LockAcquire { addr },
        |addr| Event::LockRelease { addr },
    );
    let access = |addr| Event::LockAccess { addr };
    let events = [
        (2, pick(2, -1, false)),
        (1, pick(1, -1, true)),
        (1, access(picks)),
        (1, acq(b)),
        (2, access(picks)),
        (2, acq(c)),
        (2, rel(c)),
        (2, Event::Msg(Box::new(wakeup))),
        (2, acq(a)),
        (2, rel(a)),
        (0, pick(0, 100, false)),
        (0, access(picks)),
        (0, acq(a)),
        // CPU 1 found the cycle and let go of its queue.
        (1, rel(b)),
        (0, acq(b)),
        (0, rel(b)),
        (0, rel(a)),
        (0, acq(a)),
        (0, rel(a)),
    ];
    let (records, exit) = with_exit(numbered(events));
    let bytes = write(&header, &records);
    let rep = enoki::user::within_timeout(std::time::Duration::from_secs(60), move || {
        let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
        let entry = registry::find("buggy").unwrap();
        (entry.replay_by_locks)(&header, &mut reader, &ReplayOptions::default()).unwrap()
    });
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    let fault = rep.fault.expect("the replay fails as the run did");
    assert_eq!(fault.kind, enoki::FaultKind::Cycle, "{fault}");
    assert_eq!(fault.parties[0].map(|p| p.cpu), Some(1), "{fault}");
    assert_eq!(rep.exit.map(|e| e.seq), Some(exit.seq));
}

/// `records` with an ejection's exit record after the last one.
fn with_exit(mut records: Vec<Record>) -> (Vec<Record>, Record) {
    let last = records.last().unwrap();
    let exit = Record {
        seq: last.seq + 1,
        cpu: last.cpu,
        time_ns: last.time_ns,
        event: Event::Exit {
            kind: enoki::abi::exit_kind::ERROR,
        },
    };
    records.push(exit.clone());
    (records, exit)
}

/// A sequential replay that fails as the recorded run did (an AA deadlock,
/// on one CPU) reads on to the exit record and reports the run's end.
#[test]
fn a_replayed_aa_reports_the_recorded_ejection_after_it() {
    quiet();
    let mut spec = mixed_spec();
    spec.run.args = "bug=aa,after=20".into();
    let entry = registry::find("buggy").unwrap();
    let rec = Recorder::new(
        Cursor::new(Vec::new()),
        trace_header("buggy", &spec).unwrap(),
    )
    .unwrap();
    let mut cfg = SimConfig::new(spec, 3, entry.props);
    cfg.record = Some(rec.sink());
    (entry.simulate)(cfg).unwrap();
    let bytes = rec.finish().unwrap().into_inner();
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let (records, exit) = with_exit(reader.by_ref().map(Result::unwrap).collect());
    let bytes = write(&header, &records);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let rep = (entry.replay)(&header, &mut reader, &ReplayOptions::default()).unwrap();
    let fault = rep
        .fault
        .expect("the replay fails as the run did")
        .to_string();
    assert!(fault.starts_with("AA deadlock"), "{fault}");
    assert_eq!(rep.exit.map(|e| e.seq), Some(exit.seq));
}

/// A kernel trace in which CPUs 3 and 6 both hit the armed AA bug (calls
/// seq 4491 and 4495, overlapping; the kernel reported CPU 6's): the
/// lock-ordered replay fails as the run did, with one of the two, and does
/// not wait forever for a fault slot the loser never recorded taking.
#[test]
fn when_two_cpus_fail_at_once_the_replay_reports_one_of_them() {
    quiet();
    let rep = enoki::user::within_timeout(std::time::Duration::from_secs(60), || {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/aa-cpus-3-and-6-fail-at-once.enk");
        let mut reader = TraceReader::open(&path).unwrap();
        let header = reader.header().clone();
        let entry = registry::find("buggy").unwrap();
        (entry.replay_by_locks)(&header, &mut reader, &ReplayOptions::default()).unwrap()
    });
    assert!(rep.divergence.is_none(), "{:?}", rep.divergence);
    let fault = rep.fault.expect("the replay fails as the run did");
    assert_eq!(fault.kind, enoki::FaultKind::SelfDeadlock, "{fault}");
    let cpu = fault.parties[0].map(|p| p.cpu);
    assert!(cpu == Some(3) || cpu == Some(6), "{fault}");
    assert!(rep.exit.is_some_and(|e| e.ejected()));
}

/// A lock-ordered replay that reproduces the recorded ABBA still reads on
/// to the trace's exit record and reports the run's end.
#[test]
fn a_replayed_abba_reports_the_recorded_ejection_after_it() {
    quiet();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/abba-cpu1-finds-the-cycle.enk");
    let mut reader = TraceReader::open(&path).unwrap();
    let header = reader.header().clone();
    let (records, exit) = with_exit(reader.by_ref().map(Result::unwrap).collect());
    let bytes = write(&header, &records);
    let entry = registry::find("buggy").unwrap();
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let rep = (entry.replay_by_locks)(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.fault.is_some());
    assert_eq!(rep.exit.map(|e| e.seq), Some(exit.seq));
}

/// One ping-pong pair on 8 CPUs: most CPUs make a few calls at the start
/// and none after, so each one's last call is never followed by another.
fn one_pair_on_8_cpus() -> enoki_sim::spec::Spec {
    enoki_sim::spec::Spec::from_toml(
        r#"
        [machine]
        cores = 8
        [run]
        duration_ms = 100
        [[pingpong]]
        pairs = 1
        work_us = 5
        "#,
    )
    .unwrap()
}

#[test]
fn lock_ordered_replay_reads_no_further_ahead_than_its_fibers_need() {
    quiet();
    let (_out, bytes) = record::<Fifo>(&one_pair_on_8_cpus(), 1, FIFO);
    let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let header = reader.header().clone();
    let rep = replay_by_locks::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert!(rep.lock_events > 50_000, "{} lock events", rep.lock_events);
    assert!(
        rep.read_ahead < 2_000,
        "the reader ran {} acquisitions ahead of the replay",
        rep.read_ahead
    );
}

/// A call whose recorded lock events end with one the replayed call does
/// not make diverges there, at once: not once its CPU's next call, which
/// may never come, is read.
#[test]
fn a_call_ending_with_an_unreplayed_lock_event_diverges_at_once() {
    quiet();
    let (_out, bytes) = record::<Fifo>(&one_pair_on_8_cpus(), 1, FIFO);
    let (header, mut records) = header_and_records(&bytes);
    let is_msg = |r: &Record| matches!(r.event, Event::Msg(_));
    let last_msg_of = |cpu: u32| records.iter().rposition(|r| r.cpu == cpu && is_msg(r));
    // The CPU whose last call comes first, ending with a lock event.
    let (at, access) = (0..8)
        .filter_map(last_msg_of)
        .filter_map(|msg| {
            let end = (msg + 1..records.len())
                .find(|&i| is_msg(&records[i]))
                .unwrap_or(records.len());
            let last = records.get(end - 1).filter(|r| !is_msg(r))?;
            Some((end, last.clone()))
        })
        .min_by_key(|(end, _)| *end)
        .unwrap();
    let total = records.iter().filter(|r| is_msg(r)).count() as u64;
    let before = records[..at].iter().filter(|r| is_msg(r)).count() as u64;
    assert!(before < total / 10, "{before} of {total} messages");
    records.insert(at, access);
    renumber(&mut records);
    let mut reader = TraceReader::new(Cursor::new(write(&header, &records))).unwrap();
    let rep = replay_by_locks::<Fifo>(&header, &mut reader, &ReplayOptions::default()).unwrap();
    let d = rep.divergence.expect("the extra lock event must diverge");
    assert!(d.locks.is_some(), "{d}");
    assert!(
        rep.messages < total / 10,
        "the replay ran on to message {} of {total} before it noticed (the call is message {before})",
        rep.messages
    );
}
