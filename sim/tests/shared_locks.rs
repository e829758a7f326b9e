// SPDX-License-Identifier: MIT OR Apache-2.0
//! Lock-ordered replay of readers that held one `RwLock` at the same time
//! in the recorded run, from hand-made kernel traces.

mod common;

use std::io::Cursor;
use std::time::Duration;

use enoki::abi::{kind, Msg};
use enoki::{
    CpuId, EnokiScheduler, InitContext, InitError, NoHint, NotTaken, PickError, Pid, PrevTask,
    Result, RwLock, Schedulable, SpinLock, TaskError, TaskInfo,
};
use enoki_sim::replay::{replay_by_locks, ReplayOptions, ReplayReport};
use enoki_sim::sim::trace_header;
use enoki_sim::trace::{Event, Record, TraceHeader, TraceReader};

use common::{mixed_spec, numbered, quiet, write};

/// Every pick reads `table`, and while reading takes `queue`; it picks
/// nothing.
struct ReadThenLock {
    table: RwLock<u64>,
    queue: SpinLock<u64>,
}

impl EnokiScheduler for ReadThenLock {
    const NAME: &'static str = "readthenlock";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();

    fn init(_ctx: &InitContext<'_>) -> Result<Self, InitError> {
        Ok(ReadThenLock {
            table: RwLock::new(0),
            queue: SpinLock::new(0),
        })
    }
    fn pick_next_task(&self, _cpu: CpuId, _prev: Option<PrevTask>) -> Result<Option<Schedulable>> {
        let table = self.table.read()?;
        let mut queue = self.queue.lock()?;
        *queue = queue.wrapping_add(*table);
        Ok(None)
    }
    fn pnt_err(&self, _: CpuId, _: Pid, _: PickError, sched: Option<Schedulable>) -> Result {
        enoki::requeue(sched, |t| Err(t.into()))
    }
    fn task_new(&self, _task: &TaskInfo) -> Result<(), TaskError> {
        Ok(())
    }
    fn task_wakeup(&self, _: Pid, _: u64, sched: Schedulable) -> Result<(), NotTaken> {
        Err(sched.into())
    }
    fn task_preempt(&self, _: Pid, _: u64, _: bool, sched: Schedulable) -> Result<(), NotTaken> {
        Err(sched.into())
    }
    fn task_blocked(&self, _: Pid, _: u64, _: CpuId, _: bool) -> Result {
        Ok(())
    }
    fn task_dead(&self, _: Pid) -> Result {
        Ok(())
    }
}

const TABLE: u64 = 0xa0;
const QUEUE: u64 = 0xb0;

/// Two picks, on CPUs 0 and 1, as a kernel may record them: CPU 0 reads
/// the table, CPU 1 reads it too and takes and releases the queue, then
/// CPU 0 takes the queue. Replayed with the table taken exclusively, CPU 1
/// waits for CPU 0 to let go of the table while CPU 0 waits for its turn at
/// the queue, after CPU 1: a stall, not the recorded run.
fn overlapping_readers(read: impl Fn(u64) -> Event) -> Vec<Record> {
    let pick = |cpu: i32| {
        let mut m = Msg::new(kind::PICK_NEXT_TASK, cpu);
        (m.ret, m.ret_cpu) = (-1, -1);
        Event::Msg(Box::new(m))
    };
    let (acq, rel) = (
        |addr| Event::LockAcquire { addr },
        |addr| Event::LockRelease { addr },
    );
    let events = [
        (0, pick(0)),
        (1, pick(1)),
        (0, read(TABLE)),
        (1, read(TABLE)),
        (1, acq(QUEUE)),
        (1, rel(QUEUE)),
        (1, rel(TABLE)),
        (0, acq(QUEUE)),
        (0, rel(QUEUE)),
        (0, rel(TABLE)),
    ];
    numbered(events)
}

/// A trace header for `ReadThenLock` from a build speaking `abi_version`.
fn header(abi_version: u32) -> TraceHeader {
    let mut h = trace_header(ReadThenLock::NAME, &mixed_spec()).unwrap();
    h.abi_version = abi_version;
    h
}

/// Lock-ordered replay of `records`, failing the test rather than hanging.
fn replay(header: TraceHeader, records: Vec<Record>) -> ReplayReport {
    let bytes = write(&header, &records);
    enoki::user::within_timeout(Duration::from_secs(60), move || {
        let mut reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
        replay_by_locks::<ReadThenLock>(&header, &mut reader, &ReplayOptions::default()).unwrap()
    })
}

#[test]
fn readers_recorded_holding_a_lock_together_replay_holding_it_together() {
    quiet();
    let read = |addr| Event::LockAcquireShared { addr };
    let rep = replay(header(enoki::abi::ABI_VERSION), overlapping_readers(read));
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
    assert_eq!((rep.messages, rep.lock_events), (2, 8));
}

/// Traces from before shared acquisitions were recorded record a read as
/// any acquisition; one recorded while another CPU held the lock was a
/// read beside a read.
#[test]
fn an_older_trace_s_overlapping_acquisitions_replay_as_readers() {
    quiet();
    let read = |addr| Event::LockAcquire { addr };
    let older = enoki::abi::SHARED_READS_SINCE - 1;
    let rep = replay(header(older), overlapping_readers(read));
    assert!(rep.divergence.is_none(), "{}", rep.divergence.unwrap());
}

#[test]
fn a_read_where_the_recording_has_a_write_diverges() {
    quiet();
    let write = |addr| Event::LockAcquire { addr };
    let rep = replay(header(enoki::abi::ABI_VERSION), overlapping_readers(write));
    let d = rep
        .divergence
        .expect("a read replayed where a write was recorded");
    let locks = d.locks.unwrap_or_default();
    assert!(
        locks.contains("lock shared acquire of")
            && locks.contains("recording has a lock acquire of"),
        "{locks}"
    );
}
