// SPDX-License-Identifier: MIT OR Apache-2.0
//! Enoki-C's own machinery in the real kernel: its pick checks against a
//! scheduler that keeps stale tokens, its kicks against one that kicks busy
//! CPUs, its call lock under lockdep (debug kernel), and its record rings
//! (gap records for lost events, freed once drained).

use enoki_itests::{self as it, assert_enabled, field, float, number, DUMP, IRQS};
use enoki_sim::trace::{records_from_kernel, Event, KERNEL_REC_BYTES};
use serial_test::serial;

#[test]
#[serial]
fn stale_tokens_fail_enoki_cs_checks_once_and_are_dropped() {
    let script = format!(
        r#"{DUMP}
set -e
enoki load staletoken --mode all
( i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; echo forkexec-done ) &
loop=$!
enoki-pipe -l 5000 >/dev/null && echo pipe-done
stress-ng -c 4 -f 2 --affinity 2 --affinity-delay 1 --affinity-pin -t 10s >/tmp/stress.log 2>&1
tail -1 /tmp/stress.log
wait $loop
dump stale.
enoki unload
echo after.state $(cat /sys/kernel/enoki/state)
"#
    );
    let r = it::run_ok(&script);
    assert!(
        r.output.contains("successful run completed"),
        "{}",
        r.output
    );
    assert!(r.output.contains("forkexec-done") && r.output.contains("pipe-done"));
    assert_enabled(&r, "stale.");
    assert!(
        number(&r, "stale.pnt_err") > 0,
        "the stale tokens never reached Enoki-C's checks"
    );
    assert!(number(&r, "stale.pick_errors") >= number(&r, "stale.pnt_err"));
    assert_eq!(field(&r, "after.state"), "none");
}

/// A scheduler that kicks busy CPUs (`buggy`, `bug=kickbusy`: every other
/// CPU at each tick) costs them nothing: with a spinner pinned to every
/// CPU, Enoki-C's kicks without preemption (idle CPUs only) send the busy
/// ones no rescheduling interrupt (0.0 per CPU-second; 77 with every kick
/// sent as a plain reschedule). The kicking CPU may still bounce a kick
/// through its own IRQ work (sched_ext does when the target's run-queue
/// lock is taken, and every CPU's tick holds its own): counted and shown,
/// not bounded.
#[test]
#[serial]
fn kicks_of_busy_cpus_cost_them_nothing() {
    let script = format!(
        r#"{DUMP}
{IRQS}
set -e
enoki load buggy --mode all --args bug=kickbusy,after=0 >/dev/null
n=$(nproc)
pids=
for c in $(seq 0 $((n - 1))); do stress-ng -q -c 1 --taskset $c -t 60s & pids="$pids $!"; done
# Measured once a spinner runs on every CPU (before, idle CPUs were kicked
# awake, as they should be): workers are named stress-ng-cpu, running (R),
# counted by the CPU they are on (field 39). The parents, named stress-ng,
# are also R while they start up, before any worker spins.
until [ "$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == "(stress-ng-cpu)" && $3 == "R" && !($39 in on) {{ on[$39] = 1; cpus++ }} END {{ print cpus + 0 }}')" -ge $n ]; do sleep 0.1; done
iwi=$(irqs IWI); res=$(irqs RES); t0=$(cut -d' ' -f1 /proc/uptime)
sleep 5
echo "irq_work $(( $(irqs IWI) - iwi ))"
echo "resched $(( $(irqs RES) - res ))"
echo "seconds $(awk -v t0=$t0 '{{ print $1 - t0 }}' /proc/uptime)"
echo "cpus $n"
kill $pids; wait || true
dump kb.
enoki unload
"#
    );
    let r = it::run_ok(&script);
    assert_enabled(&r, "kb.");
    assert!(
        number(&r, "kb.task_tick") > 0,
        "no tick reached the scheduler"
    );
    let per_cpu_second = |key| float(&r, key) / float(&r, "seconds") / float(&r, "cpus");
    let (irq_work, resched) = (per_cpu_second("irq_work"), per_cpu_second("resched"));
    println!("per CPU-second: {irq_work:.1} IRQ work, {resched:.1} rescheduling interrupts");
    assert!(
        resched < 10.0,
        "{resched:.1} rescheduling interrupts per CPU-second for kicks of busy CPUs"
    );
}

#[test]
#[serial]
fn lockdep_tracks_the_call_lock_on_the_debug_kernel() {
    let debug = std::env::var("ENOKI_PROFILE").is_ok_and(|p| p == "debug");
    let r = it::run_ok(
        "set -e; enoki load fifo --mode all; stress-ng -c 4 -f 2 -t 3s >/dev/null 2>&1; \
         enoki unload; if [ -e /proc/lockdep ]; then \
         echo lockdep $(grep -c enoki_call_lock /proc/lockdep); else echo lockdep none; fi",
    );
    if debug {
        assert!(
            number(&r, "lockdep") > 0,
            "lockdep never saw enoki_call_lock: the call path is not annotated"
        );
    } else {
        assert_eq!(field(&r, "lockdep"), "none", "the vm kernel has no lockdep");
    }
}

#[test]
#[serial]
fn a_full_record_ring_leaves_gap_records_and_drained_rings_are_freed() {
    let dir = it::shared_tempdir();
    let raw = dir.path().join("trace.raw");
    let script = format!(
        r#"set -e
vmalloc() {{ awk '/^VmallocUsed/{{print $2}}' /proc/meminfo; }}
enoki load fifo --mode all
echo 2048 > /sys/kernel/enoki/record_buffer_kib
v0=$(vmalloc)
echo 1 > /sys/kernel/enoki/record
v1=$(vmalloc)
# Nobody drains the rings: a wakeup-heavy run overflows them.
enoki-pipe -l 20000 >/dev/null
echo 0 > /sys/kernel/enoki/record
echo drops $(cat /sys/kernel/enoki/record_drops)
v2=$(vmalloc)
cat /sys/kernel/debug/enoki/trace > /tmp/trace.raw
echo again $(cat /sys/kernel/debug/enoki/trace | wc -c)
v3=$(vmalloc)
cp /tmp/trace.raw {raw}
enoki unload
echo kib-recording $((v1 - v0))
echo kib-stopped $((v2 - v0))
echo kib-drained $((v3 - v0))
"#,
        raw = raw.display()
    );
    let r = it::run_ok(&script);
    let drops = number(&r, "drops");
    assert!(
        drops > 0,
        "the rings never overflowed: the test proves nothing"
    );
    // 8 CPUs x 2 MiB, give or take the allocator.
    assert!(number(&r, "kib-recording") > 15_000, "{}", r.output);
    assert!(
        number(&r, "kib-stopped") > 15_000,
        "freed before the trace was read"
    );
    assert_eq!(number(&r, "again"), 0, "the first read drains everything");
    let drained: i64 = field(&r, "kib-drained").parse().unwrap();
    assert!(
        drained < 4_096,
        "the rings were not freed: {drained} KiB still in use"
    );

    let bytes = std::fs::read(&raw).expect("reading the raw trace");
    let records = records_from_kernel(&bytes).expect("parsing the kernel records");
    let lost: Vec<u64> = records
        .iter()
        .filter_map(|r| match r.event {
            Event::Gap { lost } => Some(lost),
            _ => None,
        })
        .collect();
    assert!(!lost.is_empty(), "{drops} events lost and no gap record");
    let reported: u64 = lost.iter().sum();
    assert_eq!(
        reported, drops,
        "gap records must account for every event record_drops counted"
    );
}

/// `record_buffer_kib` sizes each CPU's ring for the next start: rounded
/// down to a power of two of 32-byte units (a lock event's record; a
/// message's takes six) within 2^12 and 2^22 of them, and fixed while
/// recording.
#[test]
#[serial]
fn the_record_ring_size_is_chosen_before_a_recording_and_fixed_during_it() {
    let r = it::run_ok(
        r#"set -e
f=/sys/kernel/enoki/record_buffer_kib
vmalloc() { awk '/^VmallocUsed/{print $2}' /proc/meminfo; }
echo default $(cat $f)
echo 1000 > $f; echo small $(cat $f)
echo 0 > $f; echo least $(cat $f)
echo 99999999 > $f; echo most $(cat $f)
echo 18014398509481984 > $f; echo most-of-all $(cat $f)
echo 1000 > $f
enoki load fifo --mode all
v0=$(vmalloc)
echo 1 > /sys/kernel/enoki/record
echo kib-recording $(( $(vmalloc) - v0 ))
if echo 4096 > $f 2>/dev/null; then echo resized-while-recording; fi
echo during $(cat $f)
echo 0 > /sys/kernel/enoki/record
cat /sys/kernel/debug/enoki/trace > /dev/null
echo 2048 > $f; echo after $(cat $f)
enoki unload
"#,
    );
    let kib = |units: u64| units * KERNEL_REC_BYTES as u64 / 1024;
    // The largest power of two of units in 1000 KiB.
    let small = kib(1 << (1000 * 1024 / KERNEL_REC_BYTES as u64).ilog2());
    assert_eq!(number(&r, "default"), kib(1 << 18));
    assert_eq!(number(&r, "small"), small);
    assert_eq!(number(&r, "least"), kib(1 << 12));
    assert_eq!(number(&r, "most"), kib(1 << 22));
    assert_eq!(
        number(&r, "most-of-all"),
        kib(1 << 22),
        "2^54 KiB, whose bytes wrap to 0"
    );
    // Other vmalloc users (a process's stack) come and go meanwhile; a
    // quarter either way still tells this size from the default and the
    // least.
    let recording = number(&r, "kib-recording");
    assert!(
        (8 * small * 3 / 4..8 * small * 5 / 4).contains(&recording),
        "8 rings of {small} KiB took {recording} KiB"
    );
    assert!(
        !r.output.contains("resized-while-recording"),
        "{}",
        r.output
    );
    assert_eq!(number(&r, "during"), small);
    assert!(number(&r, "after") > small, "{}", r.output);
}

#[test]
#[serial]
fn an_ejected_scheduler_leaves_its_state_dump_and_makes_way_for_the_next() {
    let r = it::run(
        "set -e; enoki load blackhole --mode opt-in --watchdog-ms 1000; \
         timeout 60 enoki run sh -c 'echo starved-task-ran'; \
         echo state $(cat /sys/kernel/enoki/state); \
         echo last_exit $(cat /sys/kernel/enoki/last_exit); \
         echo dump-bytes $(wc -c < /sys/kernel/debug/enoki/exit_dump); \
         enoki load fifo --mode opt-in; echo next $(cat /sys/kernel/enoki/state); enoki unload",
    );
    r.assert_exit(0);
    assert!(
        r.output.contains("starved-task-ran"),
        "the task never ran after the ejection"
    );
    assert_eq!(field(&r, "state"), "ejected");
    assert!(field(&r, "last_exit").contains("stall"), "{}", r.output);
    assert!(
        number(&r, "dump-bytes") > 0,
        "sched_ext's dump was not kept"
    );
    assert_eq!(
        field(&r, "next"),
        "enabled",
        "a new load must not need the old module gone"
    );
    r.assert_clean_but_ejections();
}
