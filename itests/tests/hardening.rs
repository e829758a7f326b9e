// SPDX-License-Identifier: MIT OR Apache-2.0
//! Enoki-C's hardening in the real kernel: CPU hotplug under load, refused
//! tasks that must not stall, who may enter and control Enoki, the exit
//! states, pid reuse, and a lone task that keeps its CPU.

use enoki_itests::{self as it, field, number, DUMP};
use serial_test::serial;

/// Offlines and onlines CPUs 3 and 5 four times while stress-ng runs, under
/// FIFO and then WFQ: the scheduler must see the CPUs go and come
/// (`cpu_offline`/`cpu_online` messages) and keep running.
#[test]
#[serial]
fn cpu_hotplug_under_load_keeps_fifo_and_wfq_enabled() {
    const ROUNDS: u64 = 4;
    let script = format!(
        r#"{DUMP}
# Taking a CPU down stops every CPU (stop_machine): seconds under TCG on a
# busy host, so few rounds.
cat > /tmp/hotplug.sh <<'H'
n=0
for i in $(seq {ROUNDS}); do
    for c in 3 5; do echo 0 > /sys/devices/system/cpu/cpu$c/online || break 2; done
    for c in 3 5; do echo 1 > /sys/devices/system/cpu/cpu$c/online || break 2; done
    n=$i
done
# Never leave a CPU offline for the next scheduler.
for c in 3 5; do echo 1 > /sys/devices/system/cpu/cpu$c/online 2>/dev/null; done
echo $n
H
for S in fifo wfq; do
    enoki load $S --mode all >/dev/null || echo "$S.load-failed"
    stress-ng -c 4 -f 2 -t 10s >/tmp/stress.log 2>&1 &
    stress=$!
    echo "$S.rounds $(timeout 150 sh /tmp/hotplug.sh)"
    rc=0; wait $stress || rc=$?
    echo "$S.stress-exit $rc"
    echo "$S.online $(cat /sys/devices/system/cpu/online)"
    dump $S.
    enoki unload >/dev/null
done
"#
    );
    let r = it::boot(it::heavy_config(), &script);
    r.assert_exit(0);
    for s in ["fifo", "wfq"] {
        it::assert_enabled(&r, &format!("{s}."));
        assert_eq!(
            number(&r, &format!("{s}.rounds")),
            ROUNDS,
            "{s}: hotplug rounds"
        );
        assert_eq!(
            field(&r, &format!("{s}.stress-exit")),
            "0",
            "{s}: stress-ng"
        );
        assert_eq!(field(&r, &format!("{s}.online")), "0-7");
        for msg in ["cpu_offline", "cpu_online"] {
            assert!(
                number(&r, &format!("{s}.{msg}")) >= 2 * ROUNDS,
                "{s}: {msg} messages"
            );
        }
        assert_eq!(number(&r, &format!("{s}.pick_errors")), 0, "{s}");
    }
    r.assert_clean();
}

/// CPUs 3 and 5 are offline before WFQ loads, and stay offline through an
/// upgrade that carries WFQ's state and one from FIFO that does not: each
/// version hears of them at its start (`cpu_offline` at load) and, with
/// every online CPU busy, never chooses them for a task.
#[test]
#[serial]
fn offline_cpus_are_never_chosen_after_a_load_or_an_upgrade() {
    let script = format!(
        r#"{DUMP}
for c in 3 5; do echo 0 > /sys/devices/system/cpu/cpu$c/online; done
echo "online $(cat /sys/devices/system/cpu/online)"
work() {{ rc=0; stress-ng -c 8 --cpu-ops 400 -f 2 --fork-ops 200 -t 120s >/dev/null 2>&1 || rc=$?; echo "$1.stress-exit $rc"; }}
enoki load wfq --mode all >/dev/null
dump load.
work load
enoki upgrade wfq >/dev/null
work carried
enoki upgrade fifo >/dev/null
enoki upgrade wfq >/dev/null
work fresh
dump end.
enoki unload >/dev/null
for c in 3 5; do echo 1 > /sys/devices/system/cpu/cpu$c/online; done
"#
    );
    let r = it::boot(it::heavy_config(), &script);
    r.assert_exit(0);
    assert_eq!(field(&r, "online"), "0-2,4,6-7");
    assert_eq!(number(&r, "load.cpu_offline"), 2, "told at load");
    for phase in ["load", "carried", "fresh"] {
        assert_eq!(field(&r, &format!("{phase}.stress-exit")), "0", "{phase}");
    }
    it::assert_enabled(&r, "end.");
    assert_eq!(field(&r, "end.scheduler"), "wfq");
    assert_eq!(
        number(&r, "end.select_errors"),
        0,
        "an offline CPU was chosen"
    );
    assert_eq!(number(&r, "end.pick_errors"), 0);
    r.assert_clean();
}

/// With room for only 16 tasks, almost every task is refused: a fork storm
/// of 200 processes next to CPU hogs must still finish, without the
/// watchdog ejecting the scheduler for a task left waiting.
#[test]
#[serial]
fn refused_tasks_do_not_stall_a_full_scheduler() {
    let script = format!(
        r#"{DUMP}
set -e
cat > /tmp/storm.sh <<'S'
ms() {{ awk '{{print int($1 * 1000)}}' /proc/uptime; }}
start=$(ms)
for i in $(seq 200); do
    sh -c 'i=0; while [ $i -lt 200 ]; do i=$((i+1)); done' &
done
wait
echo "storm-ms $(( $(ms) - start ))"
S
# The same storm under the default scheduler, for scale.
timeout 90 sh /tmp/storm.sh | sed 's/^/cfs-/'
enoki load fifo --mode all --max-tasks 16
stress-ng -c 8 -t 10s >/tmp/stress.log 2>&1 &
hogs=$!
rc=0
timeout 90 sh /tmp/storm.sh || rc=$?
echo storm-exit $rc
rc=0
wait $hogs || rc=$?
echo stress-exit $rc
dump full.
enoki unload
"#
    );
    let r = it::run_ok_in(it::heavy_config(), &script);
    println!("storm under CFS: {} ms", field(&r, "cfs-storm-ms"));
    assert_eq!(
        field(&r, "storm-exit"),
        "0",
        "the storm did not finish in 90 s"
    );
    println!(
        "storm under FIFO with 16 places: {} ms",
        field(&r, "storm-ms")
    );
    assert_eq!(field(&r, "stress-exit"), "0");
    it::assert_enabled(&r, "full.");
    assert!(number(&r, "full.rejected") > 0, "no task was refused");
}

/// While Enoki ranks above the default scheduler, an unprivileged user may
/// not enter it (EPERM) nor control it; root may. Every writable sysfs file
/// refuses bad text with EINVAL; the trace is root's only.
#[test]
#[serial]
fn only_privileged_tasks_enter_or_control_enoki() {
    let script = r#"
enoki load fifo --mode opt-in >/dev/null
user() { setpriv --reuid 1000 --regid 1000 --clear-groups --inh-caps=-all "$@"; }
# $1: name; the rest: the command. Prints NAME-exit and NAME: OUTPUT lines.
try() { local name=$1 rc=0; shift; "$@" >/tmp/out 2>&1 || rc=$?; echo "$name-exit $rc"; sed "s/^/$name: /" /tmp/out; }
try user-run user enoki run sh -c 'enoki policy $$'
try root-run enoki run sh -c 'enoki policy $$'
try user-record-file user sh -c 'echo 1 > /sys/kernel/enoki/record'
try user-unload user enoki unload
try user-record user enoki record -o /tmp/u.enk -- true
echo state-after-user $(cat /sys/kernel/enoki/state) $(cat /sys/kernel/enoki/record)
n=0
for f in $(find /sys/kernel/enoki -type f -perm -200); do
    try "bad-write-$n" sh -c "echo banana > $f"
    echo "bad-write-$n-file $f"
    n=$((n+1))
done
echo writable $n
echo trace-mode $(stat -c %a /sys/kernel/debug/enoki/trace)
enoki unload >/dev/null
"#;
    let r = it::run_ok(script);
    assert!(
        field(&r, "root-run").starts_with("7 "),
        "root enters Enoki: {}",
        r.output
    );
    assert_eq!(field(&r, "user-record-file-exit"), "1");
    assert!(field(&r, "user-record-file").contains("Permission denied"));
    for cmd in ["user-unload", "user-record"] {
        assert_eq!(field(&r, &format!("{cmd}-exit")), "1", "{cmd}");
        assert!(field(&r, cmd).contains("must be root"), "{cmd}");
    }
    assert_eq!(field(&r, "state-after-user"), "enabled 0");
    let writable = number(&r, "writable");
    assert!(writable >= 1, "record must be writable by root");
    for n in 0..writable {
        let file = field(&r, &format!("bad-write-{n}-file"));
        assert_eq!(field(&r, &format!("bad-write-{n}-exit")), "1", "{file}");
        assert!(
            field(&r, &format!("bad-write-{n}")).contains("Invalid argument"),
            "{file}: {}",
            r.output
        );
    }
    assert_eq!(field(&r, "trace-mode"), "400");
    assert_eq!(
        field(&r, "user-run-exit"),
        "1",
        "an unprivileged task entered Enoki: {}",
        field(&r, "user-run")
    );
    assert!(
        field(&r, "user-run").contains("Operation not permitted"),
        "{}",
        r.output
    );
}

/// sysrq-S makes sched_ext end the scheduler cleanly: Enoki says `exited`
/// with the reason, and a scheduler can be loaded again (after `enoki
/// unload` if the CLI needs it) and runs tasks.
#[test]
#[serial]
fn sysrq_s_leaves_state_exited_and_a_new_load_works() {
    let script = format!(
        r#"{DUMP}
enoki load fifo --mode all >/dev/null
dump before.
echo S > /proc/sysrq-trigger
# sched_ext disables from a worker: wait for it, at most 30 s.
timeout 30 sh -c 'while [ "$(cat /sys/kernel/sched_ext/state)" != disabled ]; do sleep 0.1; done'
echo wait-exit $?
dump exited.
enoki load fifo --mode all >/tmp/load.out 2>&1 || {{
    echo reload-needed-unload
    enoki unload && enoki load fifo --mode all
}}
( i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done; echo forkexec-done )
dump again.
enoki unload
"#
    );
    let r = it::run_ok(&script);
    it::assert_enabled(&r, "before.");
    assert_eq!(field(&r, "wait-exit"), "0", "sched_ext never disabled");
    assert_eq!(field(&r, "exited.scx"), "disabled");
    assert_eq!(
        field(&r, "exited.state"),
        "exited",
        "last_exit: {}",
        field(&r, "exited.last_exit")
    );
    assert!(
        field(&r, "exited.last_exit").contains("sysrq"),
        "the reason names sysrq: {}",
        field(&r, "exited.last_exit")
    );
    assert!(r.output.contains("forkexec-done"));
    it::assert_enabled(&r, "again.");
}

/// A small pid_max and stressors that fork, clone and exec from threads
/// (which swaps pids in de_thread) reuse pids within milliseconds: under
/// FIFO and WFQ no task may be lost or refused, and every task is on
/// Enoki's books once each way (TASK_NEW, TASK_DEAD).
#[test]
#[serial]
fn pid_reuse_storm_loses_no_task() {
    // Pids 300..512 (the kernel reserves those below 300 after a wrap):
    // PIDS_USED new tasks go round them more than twice. stress-ng's exec
    // stressor refuses to run as root, hence setpriv. The work is a fixed
    // number of operations, not a time, so that pids wrap on any host.
    // Dead tasks leave Enoki at their last put, after an RCU grace period:
    // nr_tasks is polled until it settles.
    const PIDS_USED: u64 = 500;
    let script = format!(
        r#"{DUMP}
cd /tmp
echo 512 > /proc/sys/kernel/pid_max
for S in fifo wfq; do
    enoki load $S --mode all >/dev/null || echo "$S.load-failed"
    base=$(cat /sys/kernel/enoki/nr_tasks)
    new0=$(awk '$1=="task_new"{{print $2}}' /sys/kernel/enoki/counters)
    rc=0
    timeout 240 setpriv --reuid 1000 --regid 1000 --clear-groups stress-ng --exec 4 --exec-max 8 --exec-ops 150 --fork 2 --fork-max 8 --fork-ops 200 --clone 2 --clone-max 8 --clone-ops 200 -t 200s >/tmp/stress.log 2>&1 || rc=$?
    echo "$S.stress-exit $rc"
    grep -E 'fail|skip' /tmp/stress.log | sed "s/^/$S.log /"
    echo "$S.new-tasks $(( $(awk '$1=="task_new"{{print $2}}' /sys/kernel/enoki/counters) - new0 ))"
    timeout 30 sh -c "while [ \$(cat /sys/kernel/enoki/nr_tasks) -gt $((base + 4)) ]; do sleep 0.1; done"
    echo "$S.settle-exit $?"
    echo "$S.base $base"
    dump $S.
    enoki unload >/dev/null
done
"#
    );
    let r = it::boot(it::heavy_config(), &script);
    r.assert_exit(0);
    for s in ["fifo", "wfq"] {
        assert_eq!(
            field(&r, &format!("{s}.stress-exit")),
            "0",
            "{s}: stress-ng"
        );
        it::assert_enabled(&r, &format!("{s}."));
        assert_eq!(number(&r, &format!("{s}.pick_errors")), 0, "{s}");
        assert_eq!(
            number(&r, &format!("{s}.rejected")),
            0,
            "{s}: tasks were refused (a task's state lost to a reused pid?)"
        );
        // Every task that entered Enoki and has not left is one the
        // scheduler was told about exactly once each way, renames
        // (de_thread) included. (nr_tasks itself need not return to its
        // base: the storm leaves new kworkers behind.)
        let now = number(&r, &format!("{s}.nr_tasks"));
        let entered = number(&r, &format!("{s}.task_new"));
        let left = number(&r, &format!("{s}.task_dead"));
        assert!(
            entered.abs_diff(left + now) <= 2,
            "{s}: {entered} TASK_NEW, {left} TASK_DEAD, {now} tasks in Enoki"
        );
        let new = number(&r, &format!("{s}.new-tasks"));
        assert!(
            new >= PIDS_USED,
            "{s}: only {new} tasks: pids barely reused"
        );
    }
    r.assert_clean();
}

/// One CPU-bound Enoki task alone on CPU 3 for ~2 s keeps running: at the
/// end of each slice the scheduler answers "keep running it" instead of
/// switching to idle and back.
#[test]
#[serial]
fn a_lone_task_keeps_its_cpu() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load fifo --mode opt-in >/dev/null
# bash spins on $SECONDS without forking; then reports its own switches
# during the spin (not those of its start, exec and taskset's move).
timeout 30 taskset -c 3 enoki run bash -c '
    nv() {{ awk "/^nonvoluntary_ctxt_switches/ {{print \$2}}" /proc/$$/status; }}
    s0=$(awk "/nr_switches/ {{print \$3}}" /proc/$$/sched) nv0=$(nv)
    SECONDS=0; while [ $SECONDS -lt 3 ]; do :; done
    echo "nonvoluntary_ctxt_switches $(( $(nv) - nv0 ))"
    echo "nr_switches $(( $(awk "/nr_switches/ {{print \$3}}" /proc/$$/sched) - s0 ))"
    echo "policy $(enoki policy $$)"'
dump lone.
enoki unload
"#
    );
    let r = it::run_ok(&script);
    assert!(field(&r, "policy").starts_with("7 "), "{}", r.output);
    it::assert_enabled(&r, "lone.");
    let nv = number(&r, "nonvoluntary_ctxt_switches");
    let all = number(&r, "nr_switches");
    assert!(
        nv < 10 && all < 20,
        "a lone task was switched out {nv} times involuntarily ({all} switches in all) in ~3 s"
    );
}
