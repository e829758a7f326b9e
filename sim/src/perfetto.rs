// SPDX-License-Identifier: MIT OR Apache-2.0
//! Chrome/Perfetto trace-event JSON: one track per CPU, a slice for every
//! stretch a task ran. Open it in ui.perfetto.dev or chrome://tracing.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Value};

use enoki::abi::{flag, kind, Msg};
use enoki::{CpuId, Pid};

use crate::check::Violation;
use crate::trace::{Event, Record};

/// A task ran on `cpu` from `start_ns` to `end_ns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub cpu: CpuId,
    pub pid: Pid,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The JSON document for `slices`; `names` labels pids, `marks` become
/// instant events on a global track.
pub fn to_json(
    nr_cpus: usize,
    slices: &[Slice],
    names: &BTreeMap<Pid, String>,
    marks: &[Violation],
) -> Value {
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut ev =
        vec![json!({"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "CPUs"}})];
    for cpu in 0..nr_cpus {
        ev.push(
            json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": cpu, "args": {"name": format!("CPU {cpu}")}}),
        );
        ev.push(json!({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": cpu, "args": {"sort_index": cpu}}));
    }
    for s in slices {
        let name = names
            .get(&s.pid)
            .cloned()
            .unwrap_or_else(|| format!("pid {}", s.pid));
        ev.push(json!({
            "name": name, "cat": "task", "ph": "X", "pid": 0, "tid": s.cpu,
            "ts": us(s.start_ns), "dur": us(s.end_ns.saturating_sub(s.start_ns)),
            "args": {"pid": s.pid},
        }));
    }
    for m in marks {
        ev.push(json!({
            "name": format!("{:?}", m.kind), "cat": "violation", "ph": "i", "s": "g", "pid": 0, "tid": 0,
            "ts": us(m.time_ns), "args": {"detail": m.detail},
        }));
    }
    json!({"displayTimeUnit": "ns", "traceEvents": ev})
}

/// Writes the JSON document to `path`.
pub fn write(path: &std::path::Path, doc: &Value) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer(&mut f, doc)?;
    f.flush()?;
    Ok(())
}

/// Rebuilds who ran where from recorded messages alone: a pick starts a
/// slice on its CPU; a refused pick, a preempt, a block, a death or the next
/// pick there (unless it keeps the task running) ends it. Without recorded times, one sequence number counts as
/// 1 µs.
#[derive(Default)]
pub struct TimelineBuilder {
    open: BTreeMap<CpuId, (Pid, u64)>,
    pub slices: Vec<Slice>,
    last: u64,
}

impl TimelineBuilder {
    fn close(&mut self, cpu: CpuId, at: u64) {
        if let Some((pid, start)) = self.open.remove(&cpu) {
            self.slices.push(Slice {
                cpu,
                pid,
                start_ns: start,
                end_ns: at,
            });
        }
    }

    fn close_pid(&mut self, pid: Pid, at: u64) {
        if let Some(cpu) = self
            .open
            .iter()
            .find(|(_, (p, _))| *p == pid)
            .map(|(c, _)| *c)
        {
            self.close(cpu, at);
        }
    }

    pub fn add(&mut self, r: &Record) {
        let Event::Msg(m) = &r.event else { return };
        let at = if r.time_ns != 0 {
            r.time_ns
        } else {
            r.seq * 1000
        };
        self.last = self.last.max(at);
        self.msg(m, usize::try_from(m.cpu).unwrap_or(0), at);
    }

    fn msg(&mut self, m: &Msg, cpu: CpuId, at: u64) {
        match m.kind {
            // Kept running: no switch, the slice goes on.
            kind::PICK_NEXT_TASK
                if m.flags & flag::KEEP_PREV != 0
                    && self.open.get(&cpu).is_some_and(|(p, _)| *p as i64 == m.ret) => {}
            kind::PICK_NEXT_TASK => {
                self.close(cpu, at);
                if m.ret >= 0 && m.ret_err == 0 {
                    self.open.insert(cpu, (m.ret as Pid, at));
                }
            }
            // The pick just made was refused: it never ran.
            kind::PNT_ERR if self.open.get(&cpu).is_some_and(|(p, _)| *p == m.pid) => {
                self.open.remove(&cpu);
            }
            kind::TASK_PREEMPT | kind::TASK_DEAD => self.close_pid(m.pid, at),
            kind::TASK_BLOCKED if m.flags & flag::SLEEP != 0 => self.close_pid(m.pid, at),
            _ => {}
        }
    }

    /// Ends every open slice at the last time seen.
    pub fn finish(mut self) -> Vec<Slice> {
        let cpus: Vec<CpuId> = self.open.keys().copied().collect();
        for cpu in cpus {
            self.close(cpu, self.last);
        }
        self.slices
    }
}
