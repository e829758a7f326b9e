// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `.enk` format: round trips, and clear errors for every kind of bad file.

use std::io::Cursor;

use enoki::abi::{kind, Msg};
use enoki::Topology;
use enoki_trace::{
    msg_from_record, msg_to_bytes, read_all, records_from_kernel, Event, Record, TraceError,
    TraceHeader, TraceReader, TraceWriter, FORMAT_VERSION, KERNEL_MSG_REC_BYTES, KERNEL_REC_BYTES,
    MSG_BYTES_BEFORE_CGROUPS,
};
use proptest::prelude::*;

fn header() -> TraceHeader {
    let t = Topology::symmetric(2, 2, 2, 31).unwrap();
    TraceHeader::new("fifo", "test-build 1", &t, 512, 3_000_000, "every=3")
}

fn msg(i: u64) -> Msg {
    let mut m = Msg::new(kind::PICK_NEXT_TASK + (i % 3) as u32, (i % 8) as i32);
    m.pid = 1000 + i as i32;
    m.runtime = i * 1_000_000;
    m.allowed[0] = 0xff;
    m.allowed[3] = 1 << 63;
    m.ret = i as i64;
    m.ret_cpu = 2;
    m.ret_err = 4;
    m.ret_slice = 7;
    m.generation = (i << 32) | 0xabcd;
    m.cgroup = 100 + i;
    m.cgroup_parent = 1;
    m.now = 5_000_000_000 + i;
    m.cgroup_period = 100_000_000;
    m.cgroup_quota = 20_000_000 + i;
    m.cgroup_burst = 3;
    m.queue = 9 + i as u32;
    m.hint_size = 12;
    m
}

fn records(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            seq: 2 * i,
            cpu: (i % 8) as u32,
            time_ns: i * 10,
            event: match i % 5 {
                _ if i % 97 == 96 => Event::Gap { lost: i },
                _ if i % 89 == 88 => Event::Upgrade { state: i % 2 * i },
                _ if i % 83 == 82 => Event::Exit { kind: i },
                _ if i % 79 == 78 => Event::LockAccess {
                    addr: 0xffff_8880_0000_0000 + i,
                },
                _ if i % 73 == 72 => Event::LockAcquireShared {
                    addr: 0xffff_8880_0000_0000 + i,
                },
                3 => Event::LockAcquire {
                    addr: 0xffff_8880_0000_0000 + i,
                },
                4 => Event::LockRelease {
                    addr: 0xffff_8880_0000_0000 + i - 1,
                },
                _ => Event::Msg(Box::new(msg(i))),
            },
        })
        .collect()
}

fn write(recs: &[Record], compress: bool, dropped: u64) -> Vec<u8> {
    let mut w = TraceWriter::new(Cursor::new(Vec::new()), header()).unwrap();
    w.set_compression(compress);
    for r in recs {
        w.write(r).unwrap();
    }
    w.note_dropped(dropped);
    w.finish().unwrap().into_inner()
}

/// A small valid trace of several blocks.
fn sample() -> Vec<u8> {
    write(&records(3000), false, 0)
}

/// Replay moves every record through several layers and `enoki record`
/// keeps every drained one in the guest's memory, and seven records in
/// eight are lock events: a record is as small as one, its message boxed.
#[test]
fn a_record_takes_the_room_of_a_lock_event_not_of_a_message() {
    assert!(
        core::mem::size_of::<Record>() <= 48,
        "{} bytes",
        core::mem::size_of::<Record>()
    );
}

#[test]
fn round_trip_keeps_everything() {
    let recs = records(5000);
    for compress in [false, true] {
        let bytes = write(&recs, compress, 17);
        let (h, back, end) = read_all(Cursor::new(&bytes)).unwrap();
        assert_eq!(back, recs);
        assert_eq!(end.records, 5000);
        assert_eq!(end.dropped_events, 17);
        assert_eq!(
            h.dropped_events, 17,
            "the final count is patched into the header"
        );
        assert_eq!(
            (h.scheduler.as_str(), h.build_id.as_str(), h.args.as_str()),
            ("fifo", "test-build 1", "every=3")
        );
        assert_eq!(
            (h.max_tasks, h.slice_ns, h.abi_version),
            (512, 3_000_000, enoki::abi::ABI_VERSION)
        );
        let t = Topology::from_raw(&h.topology).unwrap();
        assert_eq!(
            (t.nr_cpus(), t.nr_nodes(), t.distance(0, 7), t.core_of(3)),
            (8, 2, 31, 2)
        );
    }
    assert!(
        write(&recs, true, 0).len() * 3 < write(&recs, false, 0).len(),
        "compression pays"
    );
}

#[test]
fn a_message_is_its_repr_c_bytes() {
    // The kernel recorder copies `struct enoki_msg` as is: check the layout
    // the format promises against the real one.
    let m = msg(5);
    let bytes = write(
        &[Record {
            seq: 0,
            cpu: 1,
            time_ns: 2,
            event: Event::Msg(Box::new(m)),
        }],
        false,
        0,
    );
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let rec = &bytes[hlen + 24..hlen + 24 + 184];
    assert_eq!(rec[0], 1, "type");
    assert_eq!(u16::from_le_bytes([rec[2], rec[3]]), 184);
    let body = &rec[24..];
    assert_eq!(u32::from_le_bytes(body[0..4].try_into().unwrap()), m.kind);
    assert_eq!(
        u64::from_le_bytes(body[24..32].try_into().unwrap()),
        m.runtime
    );
    assert_eq!(
        u64::from_le_bytes(body[40..48].try_into().unwrap()),
        m.allowed[0]
    );
    assert_eq!(i64::from_le_bytes(body[72..80].try_into().unwrap()), m.ret);
    assert_eq!(
        u64::from_le_bytes(body[88..96].try_into().unwrap()),
        m.ret_slice
    );
    assert_eq!(
        u64::from_le_bytes(body[96..104].try_into().unwrap()),
        m.generation
    );
    assert_eq!(
        u64::from_le_bytes(body[104..112].try_into().unwrap()),
        m.cgroup
    );
    assert_eq!(
        u64::from_le_bytes(body[112..120].try_into().unwrap()),
        m.cgroup_parent
    );
    let at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap());
    assert_eq!(
        [at(120), at(128), at(136), at(144)],
        [m.now, m.cgroup_period, m.cgroup_quota, m.cgroup_burst]
    );
    let at32 = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().unwrap());
    assert_eq!([at32(152), at32(156)], [m.queue, m.hint_size]);
}

#[test]
fn a_message_from_before_hint_queues_reads_with_them_zero() {
    let m = msg(5);
    let bytes = msg_to_bytes(&m);
    let abi7 = msg_from_record(&bytes[..152]).unwrap();
    assert_eq!((abi7.queue, abi7.hint_size), (0, 0));
    assert_eq!(abi7.cgroup_burst, m.cgroup_burst);
}

#[test]
fn a_message_from_before_timestamps_reads_with_time_and_cpu_max_zero() {
    let m = msg(5);
    let bytes = msg_to_bytes(&m);
    let abi6 = msg_from_record(&bytes[..120]).unwrap();
    assert_eq!(
        abi6,
        Msg {
            now: 0,
            cgroup_period: 0,
            cgroup_quota: 0,
            cgroup_burst: 0,
            queue: 0,
            hint_size: 0,
            ..m
        }
    );
}

#[test]
fn a_message_from_before_cgroups_reads_with_the_cgroup_fields_zero() {
    let m = msg(5);
    let bytes = msg_to_bytes(&m);
    let old = msg_from_record(&bytes[..MSG_BYTES_BEFORE_CGROUPS]).unwrap();
    assert_eq!(
        old,
        Msg {
            cgroup: 0,
            cgroup_parent: 0,
            now: 0,
            cgroup_period: 0,
            cgroup_quota: 0,
            cgroup_burst: 0,
            queue: 0,
            hint_size: 0,
            ..m
        }
    );
    assert_eq!(msg_from_record(&bytes), Some(m));
    assert_eq!(
        msg_from_record(&bytes[..MSG_BYTES_BEFORE_CGROUPS - 8]),
        None
    );
}

/// A trace with a gap between two messages of its CPU.
fn with_gap() -> Vec<Record> {
    let rec = |seq, event| Record {
        seq,
        cpu: 1,
        time_ns: seq * 100,
        event,
    };
    vec![
        rec(1, Event::Msg(Box::new(msg(1)))),
        rec(4, Event::Gap { lost: 3 }),
        rec(7, Event::Msg(Box::new(msg(7)))),
    ]
}

#[test]
fn a_gap_round_trips_where_it_stood() {
    let recs = with_gap();
    for compress in [false, true] {
        let (_, back, _) = read_all(Cursor::new(write(&recs, compress, 3))).unwrap();
        assert_eq!(back, recs);
        let Event::Msg(m) = &back[2].event else {
            panic!("{:?}", back[2])
        };
        assert_eq!(m.generation, (7 << 32) | 0xabcd);
    }
    let bytes = write(&recs, false, 3);
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let gap = &bytes[hlen + 24 + 184..hlen + 24 + 184 + 40];
    assert_eq!((gap[0], u16::from_le_bytes([gap[2], gap[3]])), (4, 40));
    assert_eq!(u64::from_le_bytes(gap[8..16].try_into().unwrap()), 4, "seq");
    assert_eq!(
        u64::from_le_bytes(gap[24..32].try_into().unwrap()),
        3,
        "lost"
    );
}

#[test]
fn an_upgrade_round_trips_with_its_state_fingerprint() {
    let rec = |seq, event| Record {
        seq,
        cpu: 0,
        time_ns: seq,
        event,
    };
    let recs = vec![
        rec(1, Event::Msg(Box::new(msg(1)))),
        rec(2, Event::Upgrade { state: 0 }),
        rec(3, Event::Msg(Box::new(msg(3)))),
        rec(4, Event::Upgrade { state: u64::MAX }),
    ];
    let bytes = write(&recs, false, 0);
    let (_, back, _) = read_all(Cursor::new(&bytes)).unwrap();
    assert_eq!(back, recs);
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let up = &bytes[hlen + 24 + 184..hlen + 24 + 184 + 40];
    assert_eq!((up[0], u16::from_le_bytes([up[2], up[3]])), (5, 40));
}

#[test]
fn an_exit_round_trips_with_its_kind() {
    let recs = vec![
        Record {
            seq: 1,
            cpu: 3,
            time_ns: 1,
            event: Event::Msg(Box::new(msg(1))),
        },
        Record {
            seq: 2,
            cpu: 5,
            time_ns: 2,
            event: Event::Exit {
                kind: enoki::abi::exit_kind::ERROR_STALL,
            },
        },
    ];
    let bytes = write(&recs, false, 0);
    let (_, back, _) = read_all(Cursor::new(&bytes)).unwrap();
    assert_eq!(back, recs);
}

#[test]
fn a_gap_that_loses_nothing_is_refused() {
    let mut w = TraceWriter::new(Cursor::new(Vec::new()), header()).unwrap();
    let e = w
        .write(&Record {
            seq: 1,
            cpu: 0,
            time_ns: 0,
            event: Event::Gap { lost: 0 },
        })
        .unwrap_err();
    assert!(e.to_string().contains("loses no events"), "{e}");
}

#[test]
fn kernel_records_with_a_gap_import_in_order() {
    let rec = |seq: u64, cpu, event| Record {
        seq,
        cpu,
        time_ns: seq * 10,
        event,
    };
    // CPU 1's ring was full for events 3 to 5; its next event (6) wrote
    // the gap first. debugfs gives the rings CPU by CPU.
    let cpu0 = [
        rec(1, 0, Event::Msg(Box::new(msg(1)))),
        rec(2, 0, Event::Msg(Box::new(msg(2)))),
        rec(7, 0, Event::Msg(Box::new(msg(7)))),
    ];
    let cpu1 = [
        rec(3, 1, Event::Gap { lost: 3 }),
        rec(6, 1, Event::LockAcquire { addr: 0xf00 }),
    ];
    let raw: Vec<u8> = cpu0
        .iter()
        .chain(&cpu1)
        .flat_map(|r| r.to_kernel())
        .collect();
    assert_eq!(raw.len(), 3 * KERNEL_MSG_REC_BYTES + 2 * KERNEL_REC_BYTES);
    let recs = records_from_kernel(&raw).unwrap();
    assert_eq!(
        recs,
        [&cpu0[0], &cpu0[1], &cpu1[0], &cpu1[1], &cpu0[2]].map(Clone::clone),
        "sequence order, the gap where its events were"
    );
    let (_, back, _) = read_all(Cursor::new(write(&recs, true, 3))).unwrap();
    assert_eq!(back, recs);
}

#[test]
fn version_1_is_refused_clearly() {
    let mut b = sample();
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    let e = err(&b);
    assert!(
        matches!(
            e,
            TraceError::UnsupportedVersion {
                found: 1,
                supported: 2
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "trace format version 1 is not supported (this build reads version 2)"
    );
}

fn err(bytes: &[u8]) -> TraceError {
    match read_all(Cursor::new(bytes)) {
        Ok(_) => panic!("{} bytes read as a valid trace", bytes.len()),
        Err(e) => e,
    }
}

#[test]
fn empty_file() {
    let e = err(&[]);
    assert!(matches!(e, TraceError::Empty), "{e}");
    assert_eq!(e.to_string(), "the file is empty: not a trace");
}

#[test]
fn wrong_magic() {
    let e = err(b"#!/bin/sh\necho not a trace\n");
    assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not an Enoki trace"), "{e}");
    assert!(
        matches!(err(b"ENOKI"), TraceError::Truncated { .. }),
        "a prefix of the magic is a cut file"
    );
    assert!(matches!(err(b"ENOXI"), TraceError::BadMagic { .. }));
}

#[test]
fn wrong_version() {
    let mut b = sample();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = err(&b);
    assert!(
        matches!(e, TraceError::UnsupportedVersion { found, supported } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION)
    );
    let found = FORMAT_VERSION + 1;
    assert!(
        e.to_string()
            .contains(&format!("version {found} is not supported")),
        "{e}"
    );
}

#[test]
fn truncated_anywhere() {
    let b = sample();
    let hlen = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    for cut in [
        9,
        15,
        16,
        40,
        hlen - 1,
        hlen,
        hlen + 3,
        hlen + 24,
        hlen + 500,
        b.len() / 2,
        b.len() - 17,
        b.len() - 1,
    ] {
        let e = err(&b[..cut]);
        assert!(e.is_truncated(), "cut at {cut}: {e}");
        assert!(e.to_string().starts_with("trace is truncated"), "{e}");
    }
}

#[test]
fn truncated_file_still_yields_its_complete_blocks() {
    let b = sample();
    let mut r = TraceReader::new(Cursor::new(&b[..b.len() - 100])).unwrap();
    let mut n = 0;
    let e = loop {
        match r.next_record() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("a cut file must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(e.is_truncated());
    assert!(
        n > 1000,
        "complete blocks before the cut are readable ({n})"
    );
    assert_eq!(r.next_record().unwrap(), None, "nothing after an error");
}

#[test]
fn corrupt_header_and_blocks() {
    let b = sample();
    let hlen = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    // A flipped bit in the header, in a block header, in a payload.
    for at in [
        20,
        60,
        hlen - 5,
        hlen + 5,
        hlen + 13,
        hlen + 100,
        b.len() - 20,
    ] {
        let mut c = b.clone();
        c[at] ^= 0x10;
        let e = err(&c);
        assert!(matches!(e, TraceError::Corrupt { .. }), "flip at {at}: {e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
    let mut c = b.clone();
    c[hlen] = b'X';
    assert!(err(&c).to_string().contains("no block magic"));
    let mut c = b.clone();
    c[hlen + 100] ^= 1;
    assert!(err(&c).to_string().contains("checksum"));
    let mut c = b;
    c.extend_from_slice(b"junk");
    assert!(err(&c).to_string().contains("after the end block"));
}

#[test]
fn writer_wants_sequence_order() {
    let mut w = TraceWriter::new(Cursor::new(Vec::new()), header()).unwrap();
    let r = records(2);
    w.write(&r[1]).unwrap();
    assert!(matches!(w.write(&r[0]), Err(TraceError::Invalid(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never panic the reader.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        let mut b = bytes;
        if magic && b.len() >= 12 {
            b[..8].copy_from_slice(b"ENOKITRC");
            b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        }
        let _ = read_all(Cursor::new(&b));
    }

    /// Mutated valid traces (flips, cuts, splices) never panic the reader,
    /// and what is read before an error is a prefix of the real records.
    #[test]
    fn mutated_traces_never_panic(
        compress in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let recs = records(40);
        let mut b = write(&recs, compress, 0);
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
        }
        if let Ok(mut r) = TraceReader::new(Cursor::new(&b)) {
            let mut got = Vec::new();
            while let Ok(Some(rec)) = r.next_record() {
                got.push(rec);
            }
            // Checksums catch every edit: whatever was read is real.
            prop_assert!(got.len() <= recs.len());
            prop_assert_eq!(&got[..], &recs[..got.len()]);
        }
    }
}
