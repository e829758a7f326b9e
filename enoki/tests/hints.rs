// SPDX-License-Identifier: GPL-2.0
//! Hint queues end to end on the host: the driver opens, sends and closes
//! queues as Enoki-C does, through the same message handling.

use std::sync::Mutex;

use enoki::abi::{errno, kind, Msg};
use enoki::upgrade::Refusal;
use enoki::user::{Driver, HostEvent};
use enoki::{
    CpuId, CpuSet, EnokiScheduler, HintError, InitContext, InitError, Messages, NoHint, NotTaken,
    PickError, Pid, PrevTask, QueueId, Result, Schedulable, Services, TaskError, TaskInfo,
    Topology,
};

enoki::hint_struct! {
    /// A level from 0 to 9 for a task.
    pub struct Level {
        pub level: u32,
    }
}

enoki::hint_struct! {
    /// Another hint type of the same size.
    pub struct Other {
        pub other: u32,
    }
}

/// Notes every queue call; takes at most `queues=N` queues (default 2)
/// and levels up to 9, and sends each hint it takes back as a reverse hint.
struct Hinted<H> {
    notes: Mutex<Vec<String>>,
    max_queues: usize,
    services: Services,
    hint: std::marker::PhantomData<H>,
}

trait LevelOf: enoki::HintData {
    fn level(&self) -> u32;
}
impl LevelOf for Level {
    fn level(&self) -> u32 {
        self.level
    }
}
impl LevelOf for Other {
    fn level(&self) -> u32 {
        self.other
    }
}

impl<H> Hinted<H> {
    fn note(&self, s: String) {
        self.notes.lock().unwrap().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.notes.lock().unwrap())
    }
}

impl<H: LevelOf> EnokiScheduler for Hinted<H> {
    const NAME: &'static str = "hinted";
    type Hint = H;
    type RevHint = H;
    type UpgradeState = ();
    const MESSAGES: Messages = Messages::HINTS;

    fn init(ctx: &InitContext<'_>) -> Result<Self, InitError> {
        Ok(Hinted {
            notes: Mutex::default(),
            max_queues: ctx.args.u64_in("queues", 2, 0, 8)? as usize,
            services: ctx.services.clone(),
            hint: std::marker::PhantomData,
        })
    }
    fn pick_next_task(&self, _: CpuId, _: Option<PrevTask>) -> Result<Option<Schedulable>> {
        Ok(None)
    }
    fn pnt_err(&self, _: CpuId, _: Pid, _: PickError, _: Option<Schedulable>) -> Result {
        Ok(())
    }
    fn task_new(&self, _: &TaskInfo) -> Result<(), TaskError> {
        Ok(())
    }
    fn task_wakeup(&self, _: Pid, _: u64, _: Schedulable) -> Result<(), NotTaken> {
        Ok(())
    }
    fn task_preempt(&self, _: Pid, _: u64, _: bool, _: Schedulable) -> Result<(), NotTaken> {
        Ok(())
    }
    fn task_blocked(&self, _: Pid, _: u64, _: CpuId, _: bool) -> Result {
        Ok(())
    }
    fn task_dead(&self, _: Pid) -> Result {
        Ok(())
    }
    fn register_queue(&self, queue: QueueId, owner: Pid, thread: Pid) -> Result<(), TaskError> {
        let notes = self.notes.lock().unwrap();
        let open = notes.iter().filter(|s| s.starts_with("open")).count();
        let closed = notes.iter().filter(|s| s.starts_with("close")).count();
        drop(notes);
        if open - closed >= self.max_queues {
            return Err(TaskError::Full);
        }
        self.note(format!("open {queue} by {owner}/{thread}"));
        Ok(())
    }
    fn parse_hint(&self, queue: QueueId, pid: Pid, hint: H) -> Result<(), HintError> {
        if hint.level() > 9 {
            return Err(HintError::Refused);
        }
        self.note(format!("hint {queue} {pid} {}", hint.level()));
        self.services.send_rev_hint(queue, pid, &hint);
        Ok(())
    }
    fn unregister_queue(&self, queue: QueueId) -> Result {
        self.note(format!("close {queue}"));
        Ok(())
    }
}

const EINVAL: i64 = -errno::EINVAL;
const ENOSPC: i64 = -errno::ENOSPC;
const EOPNOTSUPP: i64 = -errno::EOPNOTSUPP;
const ESRCH: i64 = -errno::ESRCH;

fn driver<H: LevelOf>() -> Driver<Hinted<H>> {
    std::env::set_var("ENOKI_QUIET", "1");
    let mut d = Driver::new(Topology::symmetric(1, 2, 1, 21).unwrap(), 16, 3_000_000, "").unwrap();
    d.spawn(40, CpuSet::first_n(2), 0, 0);
    d
}

#[test]
fn a_hint_reaches_the_scheduler_with_its_queue_and_task() {
    let mut d = driver::<Level>();
    let q = d.open_queue(30, 29, 1).unwrap();
    assert_eq!(d.send_hint(q, 40, &Level { level: 4 }, 1), 0);
    d.close_queue(q, 0);
    assert_eq!(
        d.scheduler().take(),
        [
            format!("open {q} by 29/30"),
            format!("hint {q} 40 4"),
            format!("close {q}")
        ]
    );
    assert_eq!(d.counters.msgs[kind::HINT as usize], 1);
}

#[test]
fn a_reverse_hint_goes_to_the_queue_it_names() {
    let mut d = driver::<Level>();
    let q = d.open_queue(30, 29, 1).unwrap();
    d.host.take();
    assert_eq!(d.send_hint(q, 40, &Level { level: 7 }, 1), 0);
    let mut bytes = [0u8; enoki::abi::HINT_MAX];
    bytes[..4].copy_from_slice(&7u32.to_ne_bytes());
    assert_eq!(
        d.host.take(),
        [HostEvent::RevHint {
            queue: q,
            pid: 40,
            hint: bytes,
            size: 4
        }]
    );
}

#[test]
fn refusals_come_back_as_errnos_and_the_scheduler_sees_none_of_them() {
    let mut d = driver::<Level>();
    let q = d.open_queue(30, 30, 0).unwrap();
    d.scheduler().take();
    // out of range: the scheduler's refusal
    assert_eq!(d.send_hint(q, 40, &Level { level: 10 }, 0), EINVAL);
    // a task Enoki does not have
    assert_eq!(d.send_hint(q, 41, &Level { level: 1 }, 0), ESRCH);
    // a closed queue
    d.close_queue(q, 0);
    d.scheduler().take();
    assert!(d.send_hint(q, 40, &Level { level: 1 }, 0) < 0);
    assert_eq!(d.scheduler().take(), Vec::<String>::new());
}

#[test]
fn a_hint_of_another_size_is_refused_before_the_scheduler_reads_it() {
    let mut d = driver::<Level>();
    let q = d.open_queue(30, 30, 0).unwrap();
    d.scheduler().take();
    let mut m = Msg::new(kind::HINT, 0);
    (m.queue, m.pid) = (q, 40);
    m.set_hint_bytes(&[1, 0, 0, 0, 0, 0, 0, 0]);
    d.send(&mut m);
    assert_eq!(m.ret, EINVAL);
    m.set_hint_bytes(&[1, 0, 0, 0]);
    d.send(&mut m);
    assert_eq!(m.ret, 0);
    assert_eq!(d.scheduler().take(), [format!("hint {q} 40 1")]);
}

#[test]
fn a_full_scheduler_refuses_a_queue_and_one_without_hints_takes_none() {
    let mut d = driver::<Level>();
    d.open_queue(1, 1, 0).unwrap();
    d.open_queue(2, 2, 0).unwrap();
    assert_eq!(d.open_queue(3, 3, 0), Err(ENOSPC));
    assert_eq!(d.queues().len(), 2);

    std::env::set_var("ENOKI_QUIET", "1");
    let mut plain =
        Driver::<NoHints>::new(Topology::symmetric(1, 2, 1, 21).unwrap(), 16, 3_000_000, "")
            .unwrap();
    assert_eq!(plain.open_queue(1, 1, 0), Err(EOPNOTSUPP));
}

#[test]
fn queues_outlive_an_upgrade_to_the_same_hints_and_no_other() {
    let mut d = driver::<Level>();
    let q = d.open_queue(30, 30, 0).unwrap();
    d.upgrade("", false, 0).unwrap();
    // the new version met the queue before taking over
    assert_eq!(d.scheduler().take(), [format!("open {q} by 30/30")]);
    assert_eq!(d.send_hint(q, 40, &Level { level: 2 }, 0), 0);

    let Ok(mut other) = d.upgrade_to::<Hinted<Other>>("", false, 0) else {
        panic!("the upgrade to other hints was refused");
    };
    assert!(
        other.queues().is_empty(),
        "a queue outlived a change of hint type"
    );
    assert!(other.send_hint(q, 40, &Other { other: 2 }, 0) < 0);
    assert_eq!(other.scheduler().take(), Vec::<String>::new());
}

#[test]
fn an_upgrade_whose_new_version_refuses_an_open_queue_is_refused() {
    let mut d = driver::<Level>();
    let first = d.open_queue(1, 1, 0).unwrap();
    let second = d.open_queue(2, 2, 0).unwrap();
    assert_eq!(
        d.upgrade("queues=1", false, 0),
        Err(Refusal::QueueRefused { queue: second })
    );
    // the running version goes on with both queues
    d.scheduler().take();
    assert_eq!(d.send_hint(first, 40, &Level { level: 1 }, 0), 0);
    assert_eq!(d.send_hint(second, 40, &Level { level: 2 }, 0), 0);
    assert_eq!(
        d.scheduler().take(),
        [format!("hint {first} 40 1"), format!("hint {second} 40 2")]
    );
}

/// A scheduler that keeps the hint methods' defaults.
#[derive(Default)]
struct NoHints;

impl EnokiScheduler for NoHints {
    const NAME: &'static str = "nohints";
    type Hint = NoHint;
    type RevHint = NoHint;
    type UpgradeState = ();
    const MESSAGES: Messages = Messages::NONE;
    fn init(_: &InitContext<'_>) -> Result<Self, InitError> {
        Ok(NoHints)
    }
    fn pick_next_task(&self, _: CpuId, _: Option<PrevTask>) -> Result<Option<Schedulable>> {
        Ok(None)
    }
    fn pnt_err(&self, _: CpuId, _: Pid, _: PickError, _: Option<Schedulable>) -> Result {
        Ok(())
    }
    fn task_new(&self, _: &TaskInfo) -> Result<(), TaskError> {
        Ok(())
    }
    fn task_wakeup(&self, _: Pid, _: u64, _: Schedulable) -> Result<(), NotTaken> {
        Ok(())
    }
    fn task_preempt(&self, _: Pid, _: u64, _: bool, _: Schedulable) -> Result<(), NotTaken> {
        Ok(())
    }
    fn task_blocked(&self, _: Pid, _: u64, _: CpuId, _: bool) -> Result {
        Ok(())
    }
    fn task_dead(&self, _: Pid) -> Result {
        Ok(())
    }
}

proptest::proptest! {
    /// Whatever a HINT message holds (any queue, task, size and bytes, as
    /// a sender or a corrupted trace could make it), handling it neither
    /// panics nor hands the scheduler a hint of another size: the answer
    /// is 0 (taken) or -EINVAL, and only a 4-byte hint with a level the
    /// scheduler accepts is taken.
    #[test]
    fn any_hint_message_is_taken_or_refused(
        queue in proptest::prelude::any::<u32>(),
        pid in proptest::prelude::any::<i32>(),
        size in 0u32..64,
        words in proptest::prelude::any::<[u64; 4]>(),
    ) {
        let mut d = driver::<Level>();
        d.scheduler().take();
        let mut m = Msg::new(kind::HINT, 1);
        (m.queue, m.pid, m.hint_size, m.allowed) = (queue, pid, size, words);
        d.send(&mut m);
        let level = Level::read_first(&m.hint_bytes());
        let takes = size == 4 && level <= 9;
        proptest::prop_assert_eq!(m.ret, if takes { 0 } else { EINVAL });
        proptest::prop_assert_eq!(d.scheduler().take().len(), usize::from(takes));
    }
}

impl Level {
    /// The level the first four bytes of `bytes` hold.
    fn read_first(bytes: &[u8]) -> u32 {
        <Level as enoki::HintData>::read(bytes).level
    }
}
