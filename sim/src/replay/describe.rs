// SPDX-License-Identifier: MIT OR Apache-2.0
//! One-line descriptions of messages and records, for divergence reports
//! and `enoki-sim dump`.

use enoki::abi::{flag, kind, Msg};
use enoki::{CpuId, CpuSet};

use super::Answer;
use crate::trace::{Event, Record};

/// The CPUs of a mask as a cpulist ("0-3,6").
fn cpulist(words: [u64; enoki::abi::CPUMASK_WORDS]) -> String {
    let set = CpuSet::from_words(words);
    let cpus: Vec<CpuId> = set.iter().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// " sleep"-style marker: `name` when `flags` has `bit`.
fn marker(flags: u32, bit: u32, name: &'static str) -> &'static str {
    if flags & bit != 0 {
        name
    } else {
        ""
    }
}

/// A cgroup message's cpu.max (nothing when unlimited or unknown).
fn cpu_max(m: &Msg) -> String {
    let b = m.bandwidth();
    match b.quota_ns {
        Some(quota) => format!(
            " max={}/{}us burst={}us",
            quota / 1000,
            b.period_ns / 1000,
            b.burst_ns / 1000
        ),
        None if m.kind == kind::CGROUP_BANDWIDTH => " max=none".into(),
        None => String::new(),
    }
}

/// A HINT's bytes, in hex.
fn hint_hex(m: &Msg) -> String {
    let bytes = m.hint_bytes();
    let n = (m.hint_size as usize).min(bytes.len());
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// The fields of `m` that matter for its kind, after the common ones.
fn details(m: &Msg) -> String {
    match m.kind {
        kind::TASK_NEW => format!(
            " tgid={} weight={} nice={} allowed={} cgroup={}",
            m.tgid,
            m.weight,
            m.nice,
            cpulist(m.allowed),
            m.cgroup
        ),
        kind::CGROUP_NEW => format!(
            " cgroup={} parent={} weight={}{}",
            m.cgroup,
            m.cgroup_parent,
            m.weight,
            cpu_max(m)
        ),
        kind::CGROUP_BANDWIDTH => format!(" cgroup={}{}", m.cgroup, cpu_max(m)),
        kind::CGROUP_GONE | kind::TASK_CGROUP_MOVED => format!(" cgroup={}", m.cgroup),
        kind::CGROUP_WEIGHT => format!(" cgroup={} weight={}", m.cgroup, m.weight),
        kind::TASK_WAKEUP | kind::TASK_PREEMPT | kind::MIGRATE_TASK_RQ => format!(
            " task_cpu={} runtime={}{}",
            m.task_cpu,
            m.runtime,
            marker(m.flags, flag::YIELD, " yield")
        ),
        kind::TASK_BLOCKED => format!(
            " task_cpu={} runtime={}{}",
            m.task_cpu,
            m.runtime,
            marker(m.flags, flag::SLEEP, " sleep")
        ),
        kind::TASK_TICK => format!(" runtime={}", m.runtime),
        kind::SELECT_TASK_RQ => format!(" prev_cpu={} allowed={}", m.task_cpu, cpulist(m.allowed)),
        kind::PICK_NEXT_TASK if m.flags & flag::HAS_PREV != 0 => format!(
            " prev runtime={}{}",
            m.runtime,
            marker(m.flags, flag::PREV_RUNNABLE, " runnable")
        ),
        kind::PNT_ERR | kind::BALANCE_ERR => format!(" task_cpu={} err={}", m.task_cpu, m.flags),
        kind::TASK_PRIO_CHANGED => format!(" weight={} nice={}", m.weight, m.nice),
        kind::TASK_AFFINITY_CHANGED => format!(" allowed={}", cpulist(m.allowed)),
        kind::QUEUE_NEW => format!(" queue={} owner={} tgid={}", m.queue, m.pid, m.tgid),
        kind::QUEUE_GONE => format!(" queue={}", m.queue),
        kind::HINT => format!(
            " queue={} task_cpu={} hint={}",
            m.queue,
            m.task_cpu,
            hint_hex(m)
        ),
        _ => String::new(),
    }
}

/// One line for a message's question.
pub fn describe(m: &Msg) -> String {
    let name = kind::NAMES
        .get(m.kind as usize)
        .copied()
        .unwrap_or("unknown");
    let generation = if m.generation != 0 {
        format!(" gen={}", m.generation)
    } else {
        String::new()
    };
    format!(
        "{name} cpu={} pid={}{generation}{}",
        m.cpu,
        m.pid,
        details(m)
    )
}

/// One line for any record, answer included.
pub fn describe_record(r: &Record) -> String {
    let at = format!("seq {:>8} cpu {:>3}", r.seq, r.cpu);
    match &r.event {
        Event::Msg(m) => format!("{at}  {} -> {}", describe(m), Answer::of(m)),
        Event::LockAcquire { addr } => format!("{at}  lock acquire {addr:#x}"),
        Event::LockAcquireShared { addr } => format!("{at}  lock shared acquire {addr:#x}"),
        Event::LockRelease { addr } => format!("{at}  lock release {addr:#x}"),
        Event::LockAccess { addr } => format!("{at}  lock access {addr:#x}"),
        Event::Gap { lost } => format!("{at}  gap: {lost} events of this CPU lost"),
        Event::Upgrade { state: 0 } => format!("{at}  live upgrade (fresh start)"),
        Event::Upgrade { state } => format!("{at}  live upgrade (state {state:#018x})"),
        Event::Exit { kind } => format!(
            "{at}  exit: {} (kind {kind})",
            enoki::abi::exit_kind::describe(*kind)
        ),
    }
}
