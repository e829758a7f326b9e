// SPDX-License-Identifier: MIT OR Apache-2.0
//! WFQ in the real kernel under FIFO's battery and more: the whole VM under
//! stress with affinity, nice and fork/exec churn; hackbench and pipe
//! ping-pongs; load/unload cycles under load. (Record and replay of WFQ is
//! in record.rs, CPU hotplug in hardening.rs.)

use enoki_itests::{self as it, field, number, DUMP};
use serial_test::serial;

#[test]
#[serial]
fn wfq_schedules_everything_under_affinity_nice_and_fork_churn() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load wfq --mode all
( i=0; while [ $i -lt 400 ]; do /bin/true; i=$((i+1)); done; echo forkexec-done ) &
loop=$!
# CPU hogs, forks, affinity churn and stress-ng's own nice churn: a fixed
# amount of work (about 15 s under multi-threaded TCG here; -t bounds it).
stress-ng -c 8 --cpu-ops 1500 -f 4 --fork-ops 1200 --nice 2 --nice-ops 800 --affinity 1 --affinity-ops 200000 --affinity-delay 1 --affinity-pin -t 120s >/tmp/stress.log 2>&1 &
stress=$!
# Nice churn from outside: renice every worker, running or not, from -5 to 19
# and back, for as long as stress-ng runs.
# (busybox has no pgrep: the workers are stress-ng's children in ps.)
(
    n=0
    reniced=0
    while kill -0 $stress 2>/dev/null; do
        for p in $(ps -o pid,ppid | awk -v s=$stress '$2 == s {{ print $1 }}'); do
            renice $(( n % 25 - 5 )) -p $p >/dev/null 2>&1 && reniced=$((reniced+1)) || true
        done
        n=$((n+1))
    done
    echo renice-rounds $n
    echo reniced $reniced
) &
churn=$!
rc=0
wait $stress || rc=$?
echo stress-exit $rc
tail -3 /tmp/stress.log
wait $loop $churn
dump during.
( i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo spinner-done ) &
spin=$!
enoki unload
wait $spin
dump after.
"#
    );
    let r = it::run_ok_in(it::heavy_config(), &script);
    assert_eq!(field(&r, "stress-exit"), "0");
    assert!(
        r.output.contains("successful run completed"),
        "{}",
        r.output
    );
    assert!(r.output.contains("forkexec-done") && r.output.contains("spinner-done"));
    assert!(number(&r, "renice-rounds") > 0, "the renice loop never ran");
    assert!(number(&r, "reniced") > 0, "the renice loop found no worker");
    assert_eq!(field(&r, "during.scheduler"), "wfq");
    it::assert_enabled(&r, "during.");
    for msg in [
        "task_new",
        "task_wakeup",
        "task_preempt",
        "task_blocked",
        "task_dead",
        "pick_next_task",
        "select_task_rq",
        "task_prio_changed",
        "task_affinity_changed",
        "migrate_task_rq",
    ] {
        assert!(
            number(&r, &format!("during.{msg}")) > 0,
            "no {msg} messages"
        );
    }
    assert_eq!(number(&r, "during.pick_errors"), 0);
    assert_eq!(number(&r, "during.rejected"), 0);
    assert_eq!(field(&r, "after.state"), "none");
    assert_eq!(
        field(&r, "after.scx"),
        "disabled",
        "tasks must be back on CFS"
    );
}

#[test]
#[serial]
fn wfq_runs_hackbench_and_pipe_ping_pongs() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load wfq --mode all
# Many short wakeups between groups of processes or threads.
timeout 120 hackbench -g 4 -l 50 | grep '^Time' | sed 's/^/hackbench-proc-socket /'
timeout 120 hackbench -p -T -g 4 -l 50 | grep '^Time' | sed 's/^/hackbench-thread-pipe /'
# One wakeup per message: both ends on one CPU, on two CPUs, and placed by WFQ.
timeout 60 enoki-pipe -l 20000 --cpus 0 | sed 's/^/pipe-1cpu./'
timeout 60 enoki-pipe -l 20000 --cpus 0,1 | sed 's/^/pipe-2cpu./'
timeout 60 enoki-pipe -l 20000 | sed 's/^/pipe-any./'
if command -v perf >/dev/null; then
    timeout 60 perf bench sched pipe -l 20000 | grep 'ops/sec' | sed 's/^ */perf-pipe /'
    timeout 120 perf bench sched messaging -g 4 -l 50 | grep 'Total time' | sed 's/^ */perf-messaging /'
fi
dump during.
enoki unload
"#
    );
    let r = it::run_ok_in(it::heavy_config(), &script);
    for key in ["hackbench-proc-socket", "hackbench-thread-pipe"] {
        assert!(field(&r, key).starts_with("Time"), "{key}: {}", r.output);
    }
    for key in ["pipe-1cpu", "pipe-2cpu", "pipe-any"] {
        assert!(number(&r, &format!("{key}.ops_per_sec")) > 0, "{key}");
    }
    if r.output.contains("perf-pipe") {
        assert!(field(&r, "perf-messaging").contains("Total time"));
    }
    it::assert_enabled(&r, "during.");
    assert_eq!(number(&r, "during.pick_errors"), 0);
    assert_eq!(number(&r, "during.rejected"), 0);
}

#[test]
#[serial]
fn twenty_wfq_load_unload_cycles_with_load_running() {
    let script = r#"
stress-ng -c 6 -f 2 -t 120s >/dev/null 2>&1 &
load=$!
ok=0
for i in $(seq 20); do
    enoki load wfq --mode all >/dev/null || break
    [ "$(cat /sys/kernel/enoki/state)" = enabled ] || break
    ( j=0; while [ $j -lt 20 ]; do /bin/true; j=$((j+1)); done )
    [ "$(cat /sys/kernel/enoki/pick_errors)" = 0 ] || break
    enoki unload >/dev/null || break
    [ "$(cat /sys/kernel/enoki/state)" = none ] || break
    ok=$i
done
echo cycles $ok
echo last_exit $(cat /sys/kernel/enoki/last_exit)
kill $load; wait $load 2>/dev/null
echo scx-state $(cat /sys/kernel/sched_ext/state)
"#;
    let r = it::run_ok_in(it::heavy_config(), script);
    assert_eq!(
        field(&r, "cycles"),
        "20",
        "last_exit: {}",
        field(&r, "last_exit")
    );
    assert_eq!(field(&r, "scx-state"), "disabled");
}
