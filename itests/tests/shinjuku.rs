// SPDX-License-Identifier: MIT OR Apache-2.0
//! Shinjuku in the real kernel: the workers of a dispersive request load
//! opt in (SCHED_EXT) while a batch job stays on CFS.

use enoki_itests::{self as it, field, number, DUMP};
use serial_test::serial;

/// Under a request load with long requests, Shinjuku's preemption timer
/// fires (counted by Enoki-C) and every request is served; with the server
/// nearly idle, the batch job on CFS gets the CPUs Shinjuku leaves.
#[test]
#[serial]
fn shinjuku_preempts_by_timer_and_leaves_idle_cpus_to_cfs() {
    // Service times scaled up for emulation: a context switch under TCG
    // costs more than the paper's 10 us slice (README, "Shinjuku").
    let script = format!(
        r#"{DUMP}
enoki load shinjuku --args preempt_us=1000 >/dev/null || echo load-failed
before=$(awk '$1=="timer_preempts"{{print $2}}' /sys/kernel/enoki/counters)
enoki-dispersive --policy ext --rate 2000 --short-us 50 --long-us 20000 \
    --long-permille 20 --duration-ms 2000 >/tmp/busy.out
echo "busy.exit $?"
sed 's/^/busy./' /tmp/busy.out
after=$(awk '$1=="timer_preempts"{{print $2}}' /sys/kernel/enoki/counters)
echo "busy.timer_preempts $((after - before))"
enoki-dispersive --policy ext --rate 20 --batch-threads 6 --duration-ms 2000 >/tmp/idle.out
echo "idle.exit $?"
sed 's/^/idle./' /tmp/idle.out
dump sj.
enoki unload >/dev/null
"#
    );
    let r = it::boot(it::timing_config(), &script);
    r.assert_exit(0);
    assert!(!r.output.contains("load-failed"), "enoki load shinjuku");
    it::assert_enabled(&r, "sj.");
    for run in ["busy", "idle"] {
        assert_eq!(field(&r, &format!("{run}.exit")), "0", "{run}: exit");
        assert_eq!(number(&r, &format!("{run}.undone")), 0, "{run}: undone");
        assert_eq!(
            number(&r, &format!("{run}.completed")),
            number(&r, &format!("{run}.requests")),
            "{run}: every request served"
        );
    }
    assert!(
        number(&r, "busy.long_requests") > 0,
        "the busy run must have long requests"
    );
    assert!(
        number(&r, "busy.timer_preempts") > 0,
        "long requests with others waiting: the timer must preempt"
    );
    let share: f64 = field(&r, "idle.batch_cpu_share")
        .parse()
        .expect("batch_cpu_share is a number");
    assert!(
        share > 0.5,
        "a nearly idle server leaves the CPUs to the batch job: share {share}"
    );
    assert_eq!(number(&r, "sj.pick_errors"), 0);
    r.assert_clean();
}
