// SPDX-License-Identifier: MIT OR Apache-2.0
//! WFQ's wakeup preemption (`wakeup_preemption=1`): a task waking well
//! behind the running task in vruntime gets the CPU at its wakeup, as under
//! CFS, not at the next tick; one within the wakeup granularity waits.

use enoki_sim::check::Props;
use enoki_sim::registry::wfq::Wfq;
use enoki_sim::report::{Report, TaskReport};
use enoki_sim::sim::{simulate, SimConfig};
use enoki_sim::spec::Spec;

const WFQ: Props = Props {
    correct: true,
    work_conserving: true,
};

/// Ticks 10 ms apart.
const TICK_NS: u64 = 10_000_000;

/// One CPU, ticking every 10 ms: a spinner, and a task that runs 100 us
/// and sleeps 7 ms, so that it wakes between ticks, behind the spinner by
/// the most credit a sleeper gets (half WFQ's 6 ms period), with module
/// `args`.
fn spinner_and_sleeper(args: &str) -> Report {
    std::env::set_var("ENOKI_QUIET", "1");
    let spec = Spec::from_toml(&format!(
        r#"
        [machine]
        cores = 1
        [run]
        duration_ms = 1000
        tick_us = {}
        args = "{args}"
        [[spinner]]
        count = 1
        [[sleeper]]
        count = 1
        run_us = 100
        sleep_us = 7000
        "#,
        TICK_NS / 1000
    ))
    .unwrap();
    let report = simulate::<Wfq>(SimConfig::new(spec, 0, WFQ))
        .unwrap()
        .report;
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    report
}

fn task<'a>(r: &'a Report, name: &str) -> &'a TaskReport {
    r.tasks.iter().find(|t| t.name == name).unwrap()
}

#[test]
fn a_task_waking_well_behind_the_running_one_runs_before_the_next_tick() {
    let r = spinner_and_sleeper("wakeup_preemption=1");
    let sleeper = task(&r, "sleep.0");
    // 3 ms behind is past the 1 ms wakeup granularity: every wakeup
    // preempts the spinner at once. (Preempted only at the tick, it waited
    // 2.9 ms each time.)
    assert!(sleeper.wakeups > 100, "{sleeper:?}");
    let max = sleeper.wakeup_max_ns.unwrap();
    assert!(
        max < TICK_NS / 100,
        "woken tasks waited up to {} us for the CPU, with ticks {} us apart",
        max / 1000,
        TICK_NS / 1000
    );
    let spinner = task(&r, "spin.0");
    assert!(spinner.preemptions + 1 >= sleeper.wakeups, "{spinner:?}");
}

#[test]
fn a_task_waking_within_the_wakeup_granularity_waits() {
    // 3 ms behind is within 5 ms: it waits for a tick to find the spinner
    // far enough ahead, or for its slice to end.
    let r = spinner_and_sleeper("wakeup_preemption=1,wakeup_granularity_us=5000");
    let sleeper = task(&r, "sleep.0");
    assert!(sleeper.wakeups > 50, "{sleeper:?}");
    assert!(sleeper.wakeup_p50_ns.unwrap() >= 1_000_000, "{:?}", sleeper);
}
