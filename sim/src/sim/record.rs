// SPDX-License-Identifier: MIT OR Apache-2.0
//! Recording a simulation: the tap that numbers and stamps what passes
//! between the driver and the scheduler, and the `.enk` writer behind it.

use std::cell::RefCell;
use std::io::{Seek, Write};
use std::rc::Rc;

use anyhow::Result;

use enoki::abi::Msg;
use enoki::LockOp;

use super::Clock;
use crate::spec::Spec;
use crate::tap;
use crate::trace::{Event, Record, TraceError, TraceHeader, TraceWriter, HEADER_LOCKS};

/// Receives every recorded event, in sequence order.
pub type RecordSink = Box<dyn FnMut(&Record)>;

/// The header of a recording of `spec` run under `scheduler`.
pub fn trace_header(scheduler: &str, spec: &Spec) -> Result<TraceHeader> {
    let topology = spec.machine.topology()?;
    let r = &spec.run;
    let mut h = TraceHeader::new(
        scheduler,
        &crate::build_id(),
        &topology,
        r.max_tasks as u64,
        r.slice_us * 1000,
        &r.args,
    );
    h.flags |= HEADER_LOCKS;
    Ok(h)
}

/// Numbers and stamps events as Enoki-C's recorder does: sequence numbers
/// start at 1, and a message takes its number before the call, so the lock
/// events of a call follow its message.
pub(super) struct RecordingTap {
    clock: Clock,
    seq: u64,
    /// Sequence number of the call in progress.
    call: Option<u64>,
    /// Lock events of the call in progress.
    locks: Vec<Record>,
    /// A live upgrade is handing over: as in Enoki-C, where the hand-over
    /// runs outside any recorded call, nothing of it is recorded.
    upgrading: bool,
    sink: RecordSink,
}

impl RecordingTap {
    pub(super) fn new(clock: Clock, sink: RecordSink) -> Self {
        RecordingTap {
            clock,
            seq: 0,
            call: None,
            locks: Vec::new(),
            upgrading: false,
            sink,
        }
    }

    fn stamp(&self, seq: u64, event: Event) -> Record {
        Record {
            seq,
            cpu: self.clock.cpu.get(),
            time_ns: self.clock.now.get(),
            event,
        }
    }
}

impl tap::Tap for RecordingTap {
    fn call_begins(&mut self, _m: &Msg) {
        self.seq += 1;
        self.call = Some(self.seq);
    }

    fn call_ends(&mut self, m: &Msg) {
        let Some(seq) = self.call.take() else { return };
        let r = self.stamp(seq, Event::Msg(Box::new(*m)));
        (self.sink)(&r);
        for l in std::mem::take(&mut self.locks) {
            (self.sink)(&l);
        }
    }

    fn lock(&mut self, addr: usize, op: LockOp) {
        if self.upgrading {
            return;
        }
        let addr = addr as u64;
        // A lock released right after it was taken is one access record,
        // as Enoki-C records a `Shared` value's use.
        if let Some(last) = self
            .locks
            .last_mut()
            .filter(|l| op == LockOp::Release && l.event == Event::LockAcquire { addr })
        {
            last.event = Event::LockAccess { addr };
            return;
        }
        self.seq += 1;
        let event = match op {
            LockOp::Acquire => Event::LockAcquire { addr },
            LockOp::AcquireShared => Event::LockAcquireShared { addr },
            LockOp::Release => Event::LockRelease { addr },
        };
        let r = self.stamp(self.seq, event);
        if self.call.is_some() {
            self.locks.push(r);
        } else {
            (self.sink)(&r);
        }
    }

    fn upgrade_begins(&mut self) {
        self.upgrading = true;
    }

    fn upgrade_ends(&mut self, done: Option<u64>) {
        self.upgrading = false;
        if let Some(state) = done {
            self.seq += 1;
            let r = self.stamp(self.seq, Event::Upgrade { state });
            (self.sink)(&r);
        }
    }
}

/// The writer, and the first error it returned.
struct RecorderState<W: Write + Seek> {
    writer: Option<TraceWriter<W>>,
    error: Option<TraceError>,
}

/// Writes what a simulation records into a `.enk` trace.
pub struct Recorder<W: Write + Seek> {
    state: Rc<RefCell<RecorderState<W>>>,
}

impl<W: Write + Seek + 'static> Recorder<W> {
    pub fn new(out: W, header: TraceHeader) -> Result<Self, TraceError> {
        let state = RecorderState {
            writer: Some(TraceWriter::new(out, header)?),
            error: None,
        };
        Ok(Recorder {
            state: Rc::new(RefCell::new(state)),
        })
    }

    /// The sink to put in [`SimConfig::record`](super::SimConfig::record).
    pub fn sink(&self) -> RecordSink {
        let state = self.state.clone();
        Box::new(move |r| {
            let RecorderState { writer, error } = &mut *state.borrow_mut();
            if let (Some(w), None) = (writer.as_mut(), error.as_ref()) {
                if let Err(e) = w.write(r) {
                    *error = Some(e);
                }
            }
        })
    }

    /// Ends the trace; the first write error, if any, comes out here.
    pub fn finish(self) -> Result<W, TraceError> {
        let mut state = self.state.borrow_mut();
        match (state.writer.take(), state.error.take()) {
            (_, Some(e)) => Err(e),
            (Some(w), None) => w.finish(),
            (None, None) => Err(TraceError::Invalid("recorder already finished".into())),
        }
    }
}
