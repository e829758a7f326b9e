// SPDX-License-Identifier: MIT OR Apache-2.0
//! The byte images of the `enoki::abi` structures: each field little-endian at
//! its `#[repr(C)]` offset, which enoki-abi-check holds to Enoki-C's `enoki.h`.
//!
//! This is the one encoding of a [`Msg`]: `.enk` message records carry it, and
//! so do the entries of Enoki-C's record rings (`struct enoki_rec`, the debugfs
//! `trace` file), which [`Record::from_kernel`] and [`Record::to_kernel`]
//! convert. The debugfs `topology` file is a [`RawTopology`].

use core::mem::{offset_of, size_of};

use enoki::abi::{rec_type, Msg, RawCpu, RawRec, RawTopology, MAX_NODES};

use crate::{Event, Record, TraceError};

/// Bytes of a [`Msg`].
pub const MSG_BYTES: usize = size_of::<Msg>();
/// Bytes of Enoki-C's `struct enoki_rec` ([`RawRec`]), a record's header:
/// the whole record, unless it is a message.
pub const KERNEL_REC_BYTES: usize = size_of::<RawRec>();
/// Bytes of a message's record in Enoki-C's rings: the header, then the
/// [`Msg`] with its answer. Also the most a record takes.
pub const KERNEL_MSG_REC_BYTES: usize = KERNEL_REC_BYTES + MSG_BYTES;

/// Bytes of a kernel record whose header has type `ty`.
fn kernel_rec_bytes(ty: u32) -> usize {
    if ty == rec_type::MSG {
        KERNEL_MSG_REC_BYTES
    } else {
        KERNEL_REC_BYTES
    }
}
/// Bytes of a [`RawCpu`].
pub(crate) const CPU_BYTES: usize = size_of::<RawCpu>();

/// A fixed-size value that has a little-endian image.
trait Le<const N: usize> {
    fn to_le(self) -> [u8; N];
    fn from_le(b: [u8; N]) -> Self;
}

macro_rules! le {
    ($($t:ty),+) => {$(
        impl Le<{ size_of::<$t>() }> for $t {
            fn to_le(self) -> [u8; size_of::<$t>()] {
                self.to_le_bytes()
            }
            fn from_le(b: [u8; size_of::<$t>()]) -> Self {
                <$t>::from_le_bytes(b)
            }
        }
    )+};
}
le!(u32, i32, u64, i64);

/// Writes `v` at byte `at` of `b`.
fn put<const N: usize>(b: &mut [u8], at: usize, v: impl Le<N>) {
    b[at..at + N].copy_from_slice(&v.to_le());
}

/// Reads a `T` at byte `at` of `b`.
fn get<T: Le<N>, const N: usize>(b: &[u8], at: usize) -> T {
    let mut v = [0u8; N];
    v.copy_from_slice(&b[at..at + N]);
    T::from_le(v)
}

/// The bytes of `m`.
pub fn msg_to_bytes(m: &Msg) -> [u8; MSG_BYTES] {
    let mut b = [0u8; MSG_BYTES];
    put(&mut b, offset_of!(Msg, kind), m.kind);
    put(&mut b, offset_of!(Msg, flags), m.flags);
    put(&mut b, offset_of!(Msg, cpu), m.cpu);
    put(&mut b, offset_of!(Msg, pid), m.pid);
    put(&mut b, offset_of!(Msg, tgid), m.tgid);
    put(&mut b, offset_of!(Msg, task_cpu), m.task_cpu);
    put(&mut b, offset_of!(Msg, runtime), m.runtime);
    put(&mut b, offset_of!(Msg, weight), m.weight);
    put(&mut b, offset_of!(Msg, nice), m.nice);
    for (i, w) in m.allowed.iter().enumerate() {
        put(&mut b, offset_of!(Msg, allowed) + 8 * i, *w);
    }
    put(&mut b, offset_of!(Msg, ret), m.ret);
    put(&mut b, offset_of!(Msg, ret_cpu), m.ret_cpu);
    put(&mut b, offset_of!(Msg, ret_err), m.ret_err);
    put(&mut b, offset_of!(Msg, ret_slice), m.ret_slice);
    put(&mut b, offset_of!(Msg, generation), m.generation);
    put(&mut b, offset_of!(Msg, cgroup), m.cgroup);
    put(&mut b, offset_of!(Msg, cgroup_parent), m.cgroup_parent);
    put(&mut b, offset_of!(Msg, now), m.now);
    put(&mut b, offset_of!(Msg, cgroup_period), m.cgroup_period);
    put(&mut b, offset_of!(Msg, cgroup_quota), m.cgroup_quota);
    put(&mut b, offset_of!(Msg, cgroup_burst), m.cgroup_burst);
    put(&mut b, offset_of!(Msg, queue), m.queue);
    put(&mut b, offset_of!(Msg, hint_size), m.hint_size);
    b
}

/// Bytes of a [`Msg`] before it had cgroup fields (ABI 5 and older).
pub const MSG_BYTES_BEFORE_CGROUPS: usize = offset_of!(Msg, cgroup);

/// The message `b` holds, if it is one: [`MSG_BYTES`], or an older
/// message without the fields added at the end since (they read 0).
pub fn msg_from_record(b: &[u8]) -> Option<Msg> {
    let mut full = [0u8; MSG_BYTES];
    if !(MSG_BYTES_BEFORE_CGROUPS..=MSG_BYTES).contains(&b.len()) {
        return None;
    }
    full[..b.len()].copy_from_slice(b);
    Some(msg_from_bytes(&full))
}

/// The message `b` holds.
pub fn msg_from_bytes(b: &[u8; MSG_BYTES]) -> Msg {
    let mut m = Msg {
        kind: get(b, offset_of!(Msg, kind)),
        flags: get(b, offset_of!(Msg, flags)),
        cpu: get(b, offset_of!(Msg, cpu)),
        pid: get(b, offset_of!(Msg, pid)),
        tgid: get(b, offset_of!(Msg, tgid)),
        task_cpu: get(b, offset_of!(Msg, task_cpu)),
        runtime: get(b, offset_of!(Msg, runtime)),
        weight: get(b, offset_of!(Msg, weight)),
        nice: get(b, offset_of!(Msg, nice)),
        ret: get(b, offset_of!(Msg, ret)),
        ret_cpu: get(b, offset_of!(Msg, ret_cpu)),
        ret_err: get(b, offset_of!(Msg, ret_err)),
        ret_slice: get(b, offset_of!(Msg, ret_slice)),
        generation: get(b, offset_of!(Msg, generation)),
        cgroup: get(b, offset_of!(Msg, cgroup)),
        cgroup_parent: get(b, offset_of!(Msg, cgroup_parent)),
        now: get(b, offset_of!(Msg, now)),
        cgroup_period: get(b, offset_of!(Msg, cgroup_period)),
        cgroup_quota: get(b, offset_of!(Msg, cgroup_quota)),
        cgroup_burst: get(b, offset_of!(Msg, cgroup_burst)),
        queue: get(b, offset_of!(Msg, queue)),
        hint_size: get(b, offset_of!(Msg, hint_size)),
        // Every field is named, so a new one cannot be forgotten here.
        allowed: Default::default(),
    };
    for (i, w) in m.allowed.iter_mut().enumerate() {
        *w = get(b, offset_of!(Msg, allowed) + 8 * i);
    }
    m
}

/// The bytes of `c`.
pub(crate) fn cpu_to_bytes(c: &RawCpu) -> [u8; CPU_BYTES] {
    let mut b = [0u8; CPU_BYTES];
    put(&mut b, offset_of!(RawCpu, core), c.core);
    put(&mut b, offset_of!(RawCpu, llc), c.llc);
    put(&mut b, offset_of!(RawCpu, node), c.node);
    put(&mut b, offset_of!(RawCpu, package), c.package);
    b
}

/// The CPU `b` describes.
pub(crate) fn cpu_from_bytes(b: &[u8; CPU_BYTES]) -> RawCpu {
    RawCpu {
        core: get(b, offset_of!(RawCpu, core)),
        llc: get(b, offset_of!(RawCpu, llc)),
        node: get(b, offset_of!(RawCpu, node)),
        package: get(b, offset_of!(RawCpu, package)),
    }
}

impl Record {
    /// One record of Enoki-C's record rings, its bytes exactly. `None` for
    /// an unknown type or the wrong length.
    pub fn from_kernel(rec: &[u8]) -> Option<Record> {
        let ty = get::<u32, 4>(rec.get(..KERNEL_REC_BYTES)?, offset_of!(RawRec, type_));
        if rec.len() != kernel_rec_bytes(ty) {
            return None;
        }
        let addr = get(rec, offset_of!(RawRec, addr));
        let event = match ty {
            rec_type::MSG => Event::Msg(Box::new(msg_from_bytes(
                rec[KERNEL_REC_BYTES..].try_into().ok()?,
            ))),
            rec_type::LOCK_ACQUIRE => Event::LockAcquire { addr },
            rec_type::LOCK_RELEASE => Event::LockRelease { addr },
            rec_type::LOCK_ACCESS => Event::LockAccess { addr },
            rec_type::LOCK_ACQUIRE_SHARED => Event::LockAcquireShared { addr },
            rec_type::GAP => Event::Gap { lost: addr },
            rec_type::UPGRADE => Event::Upgrade { state: addr },
            rec_type::EXIT => Event::Exit { kind: addr },
            _ => return None,
        };
        Some(Record {
            seq: get(rec, offset_of!(RawRec, seq)),
            cpu: get(rec, offset_of!(RawRec, cpu)),
            time_ns: get(rec, offset_of!(RawRec, time_ns)),
            event,
        })
    }

    /// The bytes of this record in Enoki-C's record rings.
    pub fn to_kernel(&self) -> Vec<u8> {
        let (ty, addr) = match self.event {
            Event::Msg(_) => (rec_type::MSG, 0),
            Event::LockAcquire { addr } => (rec_type::LOCK_ACQUIRE, addr),
            Event::LockRelease { addr } => (rec_type::LOCK_RELEASE, addr),
            Event::LockAccess { addr } => (rec_type::LOCK_ACCESS, addr),
            Event::LockAcquireShared { addr } => (rec_type::LOCK_ACQUIRE_SHARED, addr),
            Event::Gap { lost } => (rec_type::GAP, lost),
            Event::Upgrade { state } => (rec_type::UPGRADE, state),
            Event::Exit { kind } => (rec_type::EXIT, kind),
        };
        let mut b = vec![0u8; KERNEL_REC_BYTES];
        put(&mut b, offset_of!(RawRec, seq), self.seq);
        put(&mut b, offset_of!(RawRec, cpu), self.cpu);
        put(&mut b, offset_of!(RawRec, type_), ty);
        put(&mut b, offset_of!(RawRec, addr), addr);
        put(&mut b, offset_of!(RawRec, time_ns), self.time_ns);
        if let Event::Msg(ref m) = self.event {
            b.extend_from_slice(&msg_to_bytes(m));
        }
        b
    }
}

/// Records as Enoki-C's debugfs `trace` file gives them (whole records,
/// drained CPU by CPU, so out of order), sorted into sequence order.
pub fn records_from_kernel(raw: &[u8]) -> Result<Vec<Record>, TraceError> {
    let mut out = Vec::with_capacity(raw.len() / KERNEL_REC_BYTES);
    append_kernel_records(raw, 0, &mut out)?;
    in_sequence(out)
}

/// Appends the whole kernel records of `raw` to `out`, in the order given;
/// `offset` is where `raw` starts in what was drained (for errors).
pub fn append_kernel_records(
    raw: &[u8],
    offset: u64,
    out: &mut Vec<Record>,
) -> Result<(), TraceError> {
    let mut at = 0;
    while at < raw.len() {
        let truncated = || TraceError::Truncated {
            what: "the last kernel record",
            offset: offset + at as u64,
        };
        let header = raw.get(at..at + KERNEL_REC_BYTES).ok_or_else(truncated)?;
        let ty = get::<u32, 4>(header, offset_of!(RawRec, type_));
        let len = kernel_rec_bytes(ty);
        let bytes = raw.get(at..at + len).ok_or_else(truncated)?;
        let Some(rec) = Record::from_kernel(bytes) else {
            return Err(TraceError::Corrupt {
                what: format!("kernel record of unknown type {ty}"),
                offset: offset + at as u64,
            });
        };
        out.push(rec);
        at += len;
    }
    Ok(())
}

/// Kernel records sorted into sequence order; two with one seq are an
/// error.
pub fn in_sequence(mut records: Vec<Record>) -> Result<Vec<Record>, TraceError> {
    records.sort_unstable_by_key(|r| r.seq);
    if let Some(w) = records.windows(2).find(|w| w[0].seq == w[1].seq) {
        return Err(TraceError::Corrupt {
            what: format!("two kernel records with seq {}", w[0].seq),
            offset: 0,
        });
    }
    Ok(records)
}

/// Offset of `cpu`'s entry in a [`RawTopology`] image.
fn topology_cpu_at(cpu: usize) -> usize {
    offset_of!(RawTopology, cpus) + CPU_BYTES * cpu
}

/// Offset of `node`'s row of distances in a [`RawTopology`] image.
fn topology_row_at(node: usize) -> usize {
    offset_of!(RawTopology, distance) + MAX_NODES * node
}

/// `struct enoki_topology` as Enoki-C's debugfs `topology` file gives it.
pub fn topology_from_kernel(b: &[u8]) -> Option<Box<RawTopology>> {
    if b.len() != size_of::<RawTopology>() {
        return None;
    }
    let mut t = Box::<RawTopology>::default();
    t.nr_cpus = get(b, offset_of!(RawTopology, nr_cpus));
    t.nr_nodes = get(b, offset_of!(RawTopology, nr_nodes));
    for (i, cpu) in t.cpus.iter_mut().enumerate() {
        let at = topology_cpu_at(i);
        *cpu = cpu_from_bytes(b[at..at + CPU_BYTES].try_into().ok()?);
    }
    for (i, row) in t.distance.iter_mut().enumerate() {
        let at = topology_row_at(i);
        row.copy_from_slice(&b[at..at + MAX_NODES]);
    }
    Some(t)
}

/// The debugfs `topology` file Enoki-C would give for `t`.
pub fn topology_to_kernel(t: &RawTopology) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<RawTopology>()];
    put(&mut b, offset_of!(RawTopology, nr_cpus), t.nr_cpus);
    put(&mut b, offset_of!(RawTopology, nr_nodes), t.nr_nodes);
    for (i, cpu) in t.cpus.iter().enumerate() {
        let at = topology_cpu_at(i);
        b[at..at + CPU_BYTES].copy_from_slice(&cpu_to_bytes(cpu));
    }
    for (i, row) in t.distance.iter().enumerate() {
        let at = topology_row_at(i);
        b[at..at + MAX_NODES].copy_from_slice(row);
    }
    b
}

#[cfg(test)]
mod tests {
    use enoki::abi::{kind, MAX_CPUS};

    use super::*;

    fn msg() -> Msg {
        let mut m = Msg::new(kind::MIGRATE_TASK_RQ, 3);
        m.flags = 0x11;
        m.pid = 4242;
        m.tgid = 4240;
        m.task_cpu = 1;
        m.runtime = 0x0102_0304_0506_0708;
        m.weight = 1024;
        m.nice = -5;
        m.allowed = [1, 2, 3, 1 << 63];
        m.ret = -22;
        m.ret_cpu = 7;
        m.ret_err = 4;
        m.ret_slice = 3_000_000;
        m.generation = 0x1122_3344_5566_7788;
        m
    }

    #[test]
    fn a_message_round_trips() {
        let m = msg();
        assert_eq!(msg_from_bytes(&msg_to_bytes(&m)), m);
    }

    #[test]
    fn a_kernel_record_round_trips() {
        for event in [
            Event::Msg(Box::new(msg())),
            Event::LockAcquire {
                addr: 0xffff_8880_1234_5678,
            },
            Event::LockRelease {
                addr: 0xffff_8880_1234_5678,
            },
            Event::LockAcquireShared {
                addr: 0xffff_8880_1234_5678,
            },
            Event::Gap { lost: 77 },
            Event::Upgrade { state: 0 },
            Event::Upgrade {
                state: 0x0123_4567_89ab_cdef,
            },
            Event::Exit {
                kind: enoki::abi::exit_kind::ERROR_STALL,
            },
        ] {
            let r = Record {
                seq: 9,
                cpu: 2,
                time_ns: 123_456,
                event,
            };
            assert_eq!(Record::from_kernel(&r.to_kernel()), Some(r));
        }
    }

    #[test]
    fn a_gap_is_its_kernel_fields() {
        let r = Record {
            seq: 40,
            cpu: 3,
            time_ns: 5,
            event: Event::Gap { lost: 12 },
        };
        let b = r.to_kernel();
        assert_eq!(b.len(), KERNEL_REC_BYTES, "a header alone");
        assert_eq!(get::<u32, 4>(&b, offset_of!(RawRec, type_)), rec_type::GAP);
        assert_eq!(get::<u64, 8>(&b, offset_of!(RawRec, addr)), 12);
        assert_eq!(get::<u64, 8>(&b, offset_of!(RawRec, seq)), 40);
    }

    #[test]
    fn kernel_records_are_walked_by_their_lengths() {
        let lock = Record {
            seq: 1,
            cpu: 0,
            time_ns: 5,
            event: Event::LockAccess { addr: 0x40 },
        };
        let call = Record {
            seq: 2,
            event: Event::Msg(Box::new(msg())),
            ..lock.clone()
        };
        let raw = [lock.to_kernel(), call.to_kernel(), lock.to_kernel()].concat();
        assert_eq!(raw.len(), KERNEL_MSG_REC_BYTES + 2 * KERNEL_REC_BYTES);
        let mut out = Vec::new();
        append_kernel_records(&raw, 0, &mut out).unwrap();
        assert_eq!(out, [lock.clone(), call.clone(), lock.clone()]);

        let cut = &raw[..KERNEL_REC_BYTES + KERNEL_MSG_REC_BYTES - 1];
        match append_kernel_records(cut, 1000, &mut Vec::new()) {
            Err(TraceError::Truncated { offset, .. }) => {
                assert_eq!(
                    offset,
                    1000 + KERNEL_REC_BYTES as u64,
                    "where the message starts"
                );
            }
            other => panic!("a cut message: {other:?}"),
        }
        let mut bad = raw.clone();
        bad[KERNEL_REC_BYTES + offset_of!(RawRec, type_)] = 99;
        match append_kernel_records(&bad, 0, &mut Vec::new()) {
            Err(TraceError::Corrupt { offset, what }) => {
                assert_eq!(offset, KERNEL_REC_BYTES as u64);
                assert!(what.contains("99"), "{what}");
            }
            other => panic!("an unknown type: {other:?}"),
        }
        assert_eq!(
            Record::from_kernel(&raw[..KERNEL_REC_BYTES + 1]),
            None,
            "wrong length"
        );
    }

    #[test]
    fn a_topology_round_trips() {
        let mut t = Box::<RawTopology>::default();
        t.nr_cpus = MAX_CPUS as u32;
        t.nr_nodes = MAX_NODES as u32;
        for (i, c) in t.cpus.iter_mut().enumerate() {
            let i = i as i32;
            *c = RawCpu {
                core: i,
                llc: i / 4,
                node: i / 32,
                package: -i,
            };
        }
        for (i, row) in t.distance.iter_mut().enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                *d = (10 + i * MAX_NODES + j) as u8;
            }
        }
        let b = topology_to_kernel(&t);
        let back = topology_from_kernel(&b).expect("a whole image");
        assert_eq!((back.nr_cpus, back.nr_nodes), (t.nr_cpus, t.nr_nodes));
        assert_eq!(back.cpus, t.cpus);
        assert_eq!(back.distance, t.distance);
    }
}
