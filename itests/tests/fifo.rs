// SPDX-License-Identifier: MIT OR Apache-2.0
//! Enoki-C + libEnoki + the FIFO scheduler in the real patched kernel:
//! scheduling the whole VM under load, load/unload cycles, opt-in mode, a
//! deliberately wrong scheduler, and bad input.

use enoki_itests::{self as it, field, number, DUMP};
use serial_test::serial;

#[test]
#[serial]
fn fifo_schedules_everything_under_stress_and_unloads_cleanly() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load fifo --mode all
# CPU, fork and affinity churn (a fixed amount of work, about 15 s under
# multi-threaded TCG here; -t only bounds it), plus a fork/exec loop.
( i=0; while [ $i -lt 400 ]; do /bin/true; i=$((i+1)); done; echo forkexec-done ) &
loop=$!
rc=0
stress-ng -c 8 --cpu-ops 1500 -f 8 --fork-ops 2500 --affinity 1 --affinity-ops 350000 --affinity-delay 1 --affinity-pin -t 120s >/tmp/stress.log 2>&1 || rc=$?
echo stress-exit $rc
tail -3 /tmp/stress.log
wait $loop
dump during.
# A spinner that must survive the switch back to CFS.
( i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo spinner-done ) &
spin=$!
enoki unload
wait $spin
dump after.
echo scx-state $(cat /sys/kernel/sched_ext/state)
"#
    );
    let r = it::run_ok(&script);
    assert_eq!(field(&r, "stress-exit"), "0");
    assert!(
        r.output.contains("successful run completed"),
        "{}",
        r.output
    );
    assert!(r.output.contains("forkexec-done") && r.output.contains("spinner-done"));
    assert_eq!(field(&r, "during.scheduler"), "fifo");
    assert_eq!(
        field(&r, "during.state"),
        "enabled",
        "ejected: {}",
        field(&r, "during.last_exit")
    );
    for msg in [
        "task_new",
        "task_wakeup",
        "pick_next_task",
        "task_blocked",
        "select_task_rq",
    ] {
        assert!(
            number(&r, &format!("during.{msg}")) > 0,
            "no {msg} messages"
        );
    }
    // FIFO keeps the default tick: seconds of ticks on 8 busy CPUs and not one
    // call for them (slices still end, or stress-ng's hogs would starve).
    assert_eq!(number(&r, "during.task_tick"), 0);
    assert_eq!(number(&r, "during.pick_errors"), 0);
    assert_eq!(field(&r, "after.state"), "none");
    assert_eq!(field(&r, "after.last_exit"), "unregistered from user space");
    assert_eq!(
        field(&r, "scx-state"),
        "disabled",
        "tasks must be back on CFS"
    );
}

#[test]
#[serial]
fn twenty_load_unload_cycles_with_load_running() {
    let script = r#"
stress-ng -c 6 -t 120s >/dev/null 2>&1 &
load=$!
ok=0
for i in $(seq 20); do
    enoki load fifo >/dev/null || break
    [ "$(cat /sys/kernel/enoki/state)" = enabled ] || break
    /bin/true
    enoki unload >/dev/null || break
    [ "$(cat /sys/kernel/enoki/state)" = none ] || break
    ok=$i
done
echo cycles $ok
kill $load; wait $load 2>/dev/null
echo scx-state $(cat /sys/kernel/sched_ext/state)
"#;
    let r = it::run_ok(script);
    assert_eq!(field(&r, "cycles"), "20");
    assert_eq!(field(&r, "scx-state"), "disabled");
}

#[test]
#[serial]
fn opt_in_tasks_run_on_enoki_ahead_of_cfs() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load fifo --mode opt-in
echo mode $(cat /sys/kernel/enoki/mode)
before=$(awk '$1=="task_new"{{print $2}}' /sys/kernel/enoki/counters)
sh -c 'enoki policy $$' | sed 's/^/plain-policy /'
mid=$(awk '$1=="task_new"{{print $2}}' /sys/kernel/enoki/counters)
enoki run sh -c 'enoki policy $$' | sed 's/^/optin-policy /'
after=$(awk '$1=="task_new"{{print $2}}' /sys/kernel/enoki/counters)
echo plain-new $((mid - before))
echo optin-new $((after - mid))
# Same work, same CPU: the Enoki spinner must finish first.
spin='i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; echo "$0-done"'
taskset -c 3 sh -c "$spin" cfs &
cfs=$!
taskset -c 3 enoki run sh -c "$spin" enoki &
ext=$!
wait $ext $cfs
dump opt.
enoki unload
"#
    );
    let r = it::run_ok(&script);
    assert_eq!(field(&r, "mode"), "opt-in");
    assert!(
        field(&r, "plain-policy").starts_with("0 "),
        "plain task: {}",
        field(&r, "plain-policy")
    );
    assert!(
        field(&r, "optin-policy").starts_with("7 "),
        "opt-in task: {}",
        field(&r, "optin-policy")
    );
    assert_eq!(
        field(&r, "plain-new"),
        "0",
        "a plain task must not enter Enoki"
    );
    assert!(
        number(&r, "optin-new") >= 1,
        "an opt-in task must enter Enoki"
    );
    let order: Vec<&str> = r.output.lines().filter(|l| l.ends_with("-done")).collect();
    assert_eq!(
        order,
        ["enoki-done", "cfs-done"],
        "the opt-in spinner must get the CPU first"
    );
    assert_eq!(field(&r, "opt.state"), "enabled");
}

#[test]
#[serial]
fn a_scheduler_returning_wrong_tokens_is_survived_and_counted() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load badpick --args every=3
stress-ng -c 8 --cpu-ops 800 -t 120s >/tmp/stress.log 2>&1
tail -1 /tmp/stress.log
( i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done )
dump bad.
enoki unload
echo unloaded
"#
    );
    let r = it::run_ok(&script);
    assert!(
        r.output.contains("successful run completed"),
        "{}",
        r.output
    );
    assert!(
        number(&r, "bad.pick_errors") > 0,
        "wrong tokens must be counted"
    );
    assert_eq!(field(&r, "bad.state"), "enabled");
    assert!(r.output.contains("unloaded"));
}

/// A token libEnoki or Enoki-C hands back goes to its own CPU's queue; that
/// CPU may have found its queue empty and gone idle, and must be woken.
/// badpick misfiles every token for CPU 1 on CPU 2, where a hog keeps the
/// CPU busy and picks it at every slice end. Without the wake-up, CPU 1
/// sleeps until something else wakes it: about 7 s a round instead of
/// 65 ms (MTTCG). The hog runs until badpick is unloaded: with CPU 2 idle,
/// a token misfiled there would wait for whatever wakes CPU 2 next, maybe
/// nothing (one CI run's `enoki unload` hung so).
#[test]
#[serial]
fn a_token_handed_back_to_an_idle_cpu_wakes_it() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load badpick --mode all --args victim=1
taskset -c 2 sh -c 'while :; do :; done' &
hog=$!
rc=0
timeout 120 sh -c 'i=0; while [ $i -lt 200 ]; do taskset -c 1 sleep 0.01; i=$((i+1)); done; echo rounds-done' || rc=$?
echo rounds-exit $rc
dump bad.
enoki unload
kill $hog
"#
    );
    let r = it::run_ok(&script);
    assert_eq!(field(&r, "rounds-exit"), "0", "{}", r.output);
    assert!(r.output.contains("rounds-done"));
    assert!(
        number(&r, "bad.pick_errors") >= 200,
        "every wakeup on CPU 1 must have been handed back once"
    );
    assert_eq!(field(&r, "bad.state"), "enabled");
}

#[test]
#[serial]
fn bad_input_gives_clear_errors_and_leaves_tasks_on_cfs() {
    let script = r#"
check() { echo "$1 scheduler=[$(cat /sys/kernel/enoki/scheduler)] state=$(cat /sys/kernel/enoki/state) scx=$(cat /sys/kernel/sched_ext/state)"; }
enoki load nosuch 2>&1 | sed 's/^/unknown: /'
enoki load fifo --max-tasks 1 2>&1 | sed 's/^/range: /'
check after-range
dmesg | grep -o 'bad parameter: max_tasks.*' | head -1 | sed 's/^/dmesg: /'
enoki load fifo --args nonsense=1 2>&1 | sed 's/^/args: /'
check after-args
enoki load fifo >/dev/null
enoki load badpick 2>&1 | sed 's/^/second: /'
check with-fifo
enoki unload >/dev/null
enoki unload 2>&1 | sed 's/^/none: /'
check end
"#;
    let r = it::run_ok(script);
    assert!(
        field(&r, "unknown").contains("unknown scheduler 'nosuch'"),
        "{}",
        r.output
    );
    assert!(
        field(&r, "range").contains("rejected its parameters"),
        "{}",
        r.output
    );
    assert!(field(&r, "dmesg").contains("max_tasks"), "{}", r.output);
    assert!(
        field(&r, "args").contains("rejected its parameters"),
        "{}",
        r.output
    );
    assert!(
        field(&r, "second").contains("already loaded"),
        "{}",
        r.output
    );
    assert!(
        field(&r, "none").contains("no scheduler is loaded"),
        "{}",
        r.output
    );
    for when in ["after-range", "after-args", "end"] {
        assert_eq!(
            field(&r, when),
            "scheduler=[] state=none scx=disabled",
            "{when}"
        );
    }
    assert_eq!(
        field(&r, "with-fifo"),
        "scheduler=[fifo] state=enabled scx=enabled"
    );
}

/// The C FIFO baseline (`enoki load cfifo`, issue 13's C baseline): the
/// same policy written against sched_ext with no messages. It schedules the
/// whole VM under stress through Enoki's registration, shows in `enoki
/// status`, sends the module no message at all, refuses a live upgrade
/// (it has no state to hand over) and unloads back to CFS.
#[test]
#[serial]
fn c_fifo_baseline_schedules_everything_without_messages() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load cfifo --mode all
echo scx-ops $(cat /sys/kernel/sched_ext/root/ops)
rc=0
stress-ng -c 8 --cpu-ops 800 -f 8 --fork-ops 1200 --affinity 1 --affinity-ops 150000 --affinity-delay 1 --affinity-pin -t 120s >/tmp/stress.log 2>&1 || rc=$?
echo stress-exit $rc
tail -3 /tmp/stress.log
enoki status | sed 's/^/status: /'
dump during.
up=0
enoki upgrade fifo >/tmp/up.log 2>&1 || up=$?
echo upgrade-exit $up
dump after-upgrade.
enoki unload
dump after.
"#
    );
    let r = it::run_ok(&script);
    assert_eq!(field(&r, "scx-ops"), "enoki_cfifo");
    assert_eq!(field(&r, "stress-exit"), "0");
    assert!(r.output.contains("successful run completed"));
    assert!(r.output.contains("status: ") && r.output.contains("cfifo"));
    assert_eq!(field(&r, "during.scheduler"), "cfifo");
    it::assert_enabled(&r, "during.");
    for msg in [
        "task_new",
        "task_wakeup",
        "pick_next_task",
        "select_task_rq",
    ] {
        assert_eq!(number(&r, &format!("during.{msg}")), 0, "{msg} was sent");
    }
    assert_ne!(
        field(&r, "upgrade-exit"),
        "0",
        "an upgrade of the C FIFO ran"
    );
    assert_eq!(field(&r, "after-upgrade.scheduler"), "cfifo");
    it::assert_enabled(&r, "after-upgrade.");
    assert_eq!(field(&r, "after.state"), "none");
    assert_eq!(field(&r, "after.scx"), "disabled");
    assert_eq!(field(&r, "after.last_exit"), "unregistered from user space");
}
