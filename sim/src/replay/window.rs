// SPDX-License-Identifier: MIT OR Apache-2.0
//! The records a replay keeps for a divergence report's context, kept
//! small: a trace is mostly lock events, and a [`Record`] boxes its message.

use std::collections::VecDeque;

use enoki::abi::Msg;

use crate::trace::{Event, Record};

/// Records read so far for the divergence report's context: the newest
/// `keep` messages, `keep` lock events and `keep` others (gaps, upgrades,
/// exits) at most. Lock events, most of a trace, are kept in a quarter of
/// a record's size.
pub(super) struct Window {
    messages: VecDeque<KeptMsg>,
    locks: VecDeque<KeptLock>,
    others: VecDeque<Record>,
    keep: usize,
}

/// A lock event record, kept small.
#[derive(Clone, Copy)]
struct KeptLock {
    seq: u64,
    time_ns: u64,
    addr: u64,
    cpu: u32,
    kind: LockKind,
}

/// Which lock event a [`KeptLock`] was.
#[derive(Clone, Copy)]
enum LockKind {
    Acquire,
    AcquireShared,
    Release,
    Access,
}

/// A message record kept inline, without the heap box a [`Record`] puts
/// its message in: the window keeps tens of thousands.
#[derive(Clone, Copy)]
pub(super) struct KeptMsg {
    seq: u64,
    time_ns: u64,
    cpu: u32,
    msg: Msg,
}

impl KeptMsg {
    /// `r` kept, if it is a message record.
    pub(super) fn of(r: &Record) -> Option<Self> {
        let Event::Msg(m) = &r.event else {
            return None;
        };
        Some(Self::new(r, m))
    }

    /// Its message.
    pub(super) fn msg(&self) -> &Msg {
        &self.msg
    }

    /// Message record `r`, whose message is `msg`.
    pub(super) fn new(r: &Record, msg: &Msg) -> Self {
        KeptMsg {
            seq: r.seq,
            time_ns: r.time_ns,
            cpu: r.cpu,
            msg: *msg,
        }
    }

    pub(super) fn record(&self) -> Record {
        Record {
            seq: self.seq,
            cpu: self.cpu,
            time_ns: self.time_ns,
            event: Event::Msg(Box::new(self.msg)),
        }
    }
}

impl KeptLock {
    /// `r` kept, if it is a lock event record.
    fn of(r: &Record) -> Option<Self> {
        let (addr, kind) = match r.event {
            Event::LockAcquire { addr } => (addr, LockKind::Acquire),
            Event::LockAcquireShared { addr } => (addr, LockKind::AcquireShared),
            Event::LockRelease { addr } => (addr, LockKind::Release),
            Event::LockAccess { addr } => (addr, LockKind::Access),
            _ => return None,
        };
        Some(KeptLock {
            seq: r.seq,
            time_ns: r.time_ns,
            addr,
            cpu: r.cpu,
            kind,
        })
    }

    fn record(&self) -> Record {
        Record {
            seq: self.seq,
            cpu: self.cpu,
            time_ns: self.time_ns,
            event: match self.kind {
                LockKind::Acquire => Event::LockAcquire { addr: self.addr },
                LockKind::AcquireShared => Event::LockAcquireShared { addr: self.addr },
                LockKind::Release => Event::LockRelease { addr: self.addr },
                LockKind::Access => Event::LockAccess { addr: self.addr },
            },
        }
    }
}

impl Window {
    /// A window of the newest `keep` records of each kind (none with 0).
    pub(super) fn new(keep: usize) -> Self {
        Window {
            messages: VecDeque::new(),
            locks: VecDeque::new(),
            others: VecDeque::new(),
            keep,
        }
    }

    /// Keeps `r`, read after every record kept so far.
    pub(super) fn push(&mut self, r: &Record) {
        if self.keep == 0 {
            return;
        }
        if let Some(l) = KeptLock::of(r) {
            keep_newest(&mut self.locks, l, self.keep);
        } else if let Some(m) = KeptMsg::of(r) {
            keep_newest(&mut self.messages, m, self.keep);
        } else {
            keep_newest(&mut self.others, r.clone(), self.keep);
        }
    }

    /// The `n` records before `record`, oldest first.
    pub(super) fn before(&self, record: &Record, n: usize) -> Vec<Record> {
        self.before_seq(record.seq, n)
    }

    /// The newest records, as many as the window keeps of a kind, oldest
    /// first.
    pub(super) fn newest(&self) -> Vec<Record> {
        self.before_seq(u64::MAX, self.keep)
    }

    /// The `n` records before sequence number `seq`, oldest first.
    fn before_seq(&self, seq: u64, n: usize) -> Vec<Record> {
        let m = self.messages.partition_point(|x| x.seq < seq);
        let l = self.locks.partition_point(|x| x.seq < seq);
        let o = self.others.partition_point(|x| x.seq < seq);
        let mut v: Vec<Record> = self
            .messages
            .range(m.saturating_sub(n)..m)
            .map(KeptMsg::record)
            .chain(
                self.locks
                    .range(l.saturating_sub(n)..l)
                    .map(KeptLock::record),
            )
            .chain(self.others.range(o.saturating_sub(n)..o).cloned())
            .collect();
        v.sort_by_key(|r| r.seq);
        v.split_off(v.len().saturating_sub(n))
    }
}

/// Appends `x` to `q`, dropping the oldest beyond `keep`.
fn keep_newest<T>(q: &mut VecDeque<T>, x: T, keep: usize) {
    if q.len() == keep {
        q.pop_front();
    }
    q.push_back(x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use enoki::abi::kind;

    fn msg(seq: u64) -> Record {
        Record {
            seq,
            cpu: 1,
            time_ns: seq * 10,
            event: Event::Msg(Box::new(Msg::new(kind::TASK_WAKEUP, 1))),
        }
    }

    fn lock(seq: u64, acquire: bool) -> Record {
        let addr = 0x1000 + seq;
        Record {
            seq,
            cpu: 2,
            time_ns: seq * 10,
            event: match acquire {
                true => Event::LockAcquire { addr },
                false => Event::LockRelease { addr },
            },
        }
    }

    #[test]
    fn the_window_gives_the_last_records_before_a_divergence_in_order() {
        let mut w = Window::new(3);
        let records = [
            msg(1),
            lock(2, true),
            lock(3, false),
            msg(4),
            Record {
                event: Event::LockAccess { addr: 0x2000 },
                ..lock(5, true)
            },
            msg(6),
            Record {
                event: Event::Gap { lost: 4 },
                ..lock(7, true)
            },
        ];
        for r in &records {
            w.push(r);
        }
        assert_eq!(w.before(&records[5], 3), records[2..5].to_vec());
        assert_eq!(w.before(&records[1], 3), records[..1].to_vec());
        assert_eq!(w.before(&records[6], 3), records[3..6].to_vec());
        assert_eq!(w.newest(), records[4..].to_vec());
        assert!(Window::new(0).before(&records[5], 3).is_empty());
    }
}
