// SPDX-License-Identifier: MIT OR Apache-2.0
//! Under the schedulers built on libEnoki's FIFO queues, an idle CPU's
//! balance locks only the queues that hold tasks, and a waking task's
//! placement looks for an idle CPU, and these read which queues hold tasks
//! and which CPUs are idle or online in one access each; WFQ's idle
//! balance reads where tasks wait in one access: what they cost does not
//! grow with the CPUs. An enqueue reads each of these sets once. Counted as each call's lock events in a
//! recorded run (every lock and shared value access is one).

use std::io::Cursor;

use enoki::abi::kind;
use enoki_sim::registry;
use enoki_sim::sim::{trace_header, Recorder, SimConfig};
use enoki_sim::spec::Spec;
use enoki_sim::trace::{Event, TraceReader};

/// The lock events of each call of kind `kind` that `sched` made running
/// `spec`'s workload on `cpus` CPUs.
fn lock_events_of_calls(sched: &str, cpus: usize, workload: &str, kind: u32) -> Vec<Vec<Event>> {
    let spec = Spec::from_toml(&format!(
        r#"
        [machine]
        cores = {cpus}
        [run]
        duration_ms = 20
        {workload}
        "#
    ))
    .unwrap();
    let entry = registry::find(sched).unwrap();
    let rec = Recorder::new(Cursor::new(Vec::new()), trace_header(sched, &spec).unwrap()).unwrap();
    let mut cfg = SimConfig::new(spec, 1, entry.props);
    cfg.record = Some(rec.sink());
    (entry.simulate)(cfg).unwrap();
    let bytes = rec.finish().unwrap().into_inner();
    // A call's lock events follow its message.
    let mut calls = Vec::new();
    let mut counting = false;
    for r in TraceReader::new(Cursor::new(&bytes)).unwrap() {
        match r.unwrap().event {
            Event::Msg(m) => {
                counting = m.kind == kind;
                if counting {
                    calls.push(Vec::new());
                }
            }
            e if counting => {
                if let Some(call) = calls.last_mut() {
                    call.push(e);
                }
            }
            _ => {}
        }
    }
    assert!(
        calls.len() > 10,
        "{sched}: {} calls of kind {kind}",
        calls.len()
    );
    calls
}

/// How many lock events each call of kind `kind` made (as
/// [`lock_events_of_calls`]).
fn lock_events_per_call(sched: &str, cpus: usize, workload: &str, kind: u32) -> Vec<usize> {
    lock_events_of_calls(sched, cpus, workload, kind)
        .iter()
        .map(Vec::len)
        .collect()
}

/// Two tasks that sleep more than they run: a CPU whose task sleeps goes
/// idle and balances, mostly with every queue empty.
const SLEEPERS: &str = r#"
        [[sleeper]]
        count = 2
        run_us = 100
        sleep_us = 300
"#;

#[test]
fn an_idle_cpu_s_balance_costs_the_same_on_4_and_on_8_cpus() {
    std::env::set_var("ENOKI_QUIET", "1");
    for sched in ["fifo", "locality", "arachne", "shinjuku", "wfq"] {
        let fewest = |cpus| {
            let calls = lock_events_per_call(sched, cpus, SLEEPERS, kind::BALANCE);
            calls.into_iter().min()
        };
        assert_eq!(
            fewest(4),
            fewest(8),
            "{sched}: an idle balance's fewest lock events, on 4 CPUs and on 8"
        );
    }
}

#[test]
fn placing_a_waking_task_on_a_busy_machine_costs_the_same_on_4_and_on_8_cpus() {
    std::env::set_var("ENOKI_QUIET", "1");
    for sched in ["fifo", "locality", "arachne"] {
        // A spinner on every CPU: no CPU is idle when a sleeper wakes.
        let most = |cpus| {
            let busy = format!("[[spinner]]\ncount = {cpus}\n{SLEEPERS}");
            let calls = lock_events_per_call(sched, cpus, &busy, kind::SELECT_TASK_RQ);
            calls.into_iter().max()
        };
        assert_eq!(
            most(4),
            most(8),
            "{sched}: a placement's most lock events, on 4 CPUs and on 8"
        );
    }
}

#[test]
fn an_enqueue_reads_each_shared_value_once() {
    std::env::set_var("ENOKI_QUIET", "1");
    for sched in ["fifo", "locality", "arachne", "shinjuku"] {
        // A spinner on every CPU: a woken task waits, and its enqueue asks
        // whether its CPU is idle, then looks for an idle CPU to kick.
        let busy = format!("[[spinner]]\ncount = 4\n{SLEEPERS}");
        for call in lock_events_of_calls(sched, 4, &busy, kind::TASK_WAKEUP) {
            let mut read: Vec<u64> = Vec::new();
            for e in &call {
                if let Event::LockAccess { addr } = e {
                    assert!(
                        !read.contains(addr),
                        "{sched}: an enqueue accessed {addr:#x} twice: {call:?}"
                    );
                    read.push(*addr);
                }
            }
        }
    }
}
