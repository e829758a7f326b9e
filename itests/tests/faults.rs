// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fault containment: each bug class of `schedulers/buggy` is forced under
//! a mixed load (CPU hogs, pipes, fork/exec). Each must be ejected with
//! the right reason in `/sys/kernel/enoki/last_exit` and `enoki status`,
//! in time, with every workload process finishing on CFS and the next
//! scheduler loading cleanly; the kernel log may hold nothing but the
//! ejections.

use enoki_itests as it;
use it::field;
use serial_test::serial;

/// One class: its `bug=` arguments, more `enoki load` options, what its
/// report must say, and the longest time from load to ejection (ms) it
/// may take.
struct Class {
    name: &'static str,
    args: &'static str,
    /// sched_ext's watchdog (`--watchdog-ms`).
    watchdog_ms: u64,
    options: &'static str,
    reason: &'static str,
    eject_ms: u64,
}

/// Where the buggy scheduler takes its locks: libEnoki's reports name it.
const SITE: &str = "buggy/src/lib.rs:";

/// sched_ext's watchdog for the classes only it can catch.
const WATCHDOG_MS: u64 = 2000;

/// For cycles, a longer watchdog: until the cycle closes, its CPUs wait
/// on each other's queues, and on emulated CPUs a 2 s watchdog once saw
/// its own check-in starved first ("watchdog failed to check in").
const CYCLE_WATCHDOG_MS: u64 = 10_000;

/// For cycles: the longest lock timeout the watchdog allows. An emulated
/// CPU the host deschedules while it holds its queue can keep the others
/// waiting long before the cycle closes, which a short timeout reports as
/// a timeout.
const CYCLE_OPTIONS: &str = "--lock-timeout-ms 5000";

/// libEnoki catches these at the acquisition (or call end, or budget):
/// the bound is the arming (500 picks) plus emulation overhead; a cycle
/// also needs its CPUs to pick at the same moment, which emulated CPUs on
/// a busy 2-core host may take long to do. The cycles hold their own queue
/// for 65536 spins (`hold=`, 4x buggy's default): with the default, a
/// cycle of 3 took 36 s to more than 60 s of load to form, and an ABBA up
/// to 52 s; with it, 1-2.5 s.
const LOCK_CLASSES: &[Class] = &[
    Class {
        name: "aa",
        args: "bug=aa",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "AA deadlock",
        eject_ms: 5000,
    },
    Class {
        name: "abba",
        args: "bug=cycle,cpus=2,hold=65536",
        watchdog_ms: CYCLE_WATCHDOG_MS,
        options: CYCLE_OPTIONS,
        reason: "ABBA deadlock",
        eject_ms: 30000,
    },
    Class {
        name: "cycle3",
        args: "bug=cycle,cpus=3,hold=65536",
        watchdog_ms: CYCLE_WATCHDOG_MS,
        options: CYCLE_OPTIONS,
        reason: "lock cycle of 3 CPUs",
        eject_ms: 30000,
    },
    Class {
        name: "leak",
        args: "bug=leak",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "lock leaked",
        eject_ms: 5000,
    },
    Class {
        name: "loop",
        args: "bug=loop",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "call over budget",
        eject_ms: 5000,
    },
];

/// sched_ext's watchdog catches these within `WATCHDOG_MS` of the first
/// task left waiting.
const STALL_CLASSES: &[Class] = &[
    Class {
        name: "lost",
        args: "bug=lost",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "stall",
        eject_ms: 3 * WATCHDOG_MS + 5000,
    },
    Class {
        name: "stall",
        args: "bug=stall",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "stall",
        eject_ms: 3 * WATCHDOG_MS + 5000,
    },
    Class {
        name: "starve",
        args: "bug=starve",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "stall",
        eject_ms: 3 * WATCHDOG_MS + 5000,
    },
    Class {
        name: "wrongcpu",
        args: "bug=wrongcpu",
        watchdog_ms: WATCHDOG_MS,
        options: "",
        reason: "stall",
        eject_ms: 3 * WATCHDOG_MS + 5000,
    },
];

/// The guest script: for each class, load, start the load, wait for the
/// ejection (polling the state, bounded), wait for every workload process,
/// report. Then a good scheduler must load. The load goes on in rounds
/// until the ejection (at least 4 s): a cycle needs its CPUs to pick at
/// the same moment, which an idle machine may take long to do.
fn script(classes: &[Class]) -> String {
    let mut s = String::from(
        r#"set -e
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
state() { cat /sys/kernel/enoki/state; }
"#,
    );
    for c in classes {
        s += &format!(
            r#"enoki load buggy --mode all --watchdog-ms {watchdog_ms} {options} --args {args},after=500 >/dev/null
t0=$(ms)
busy() {{ [ $(ms) -lt $((t0 + 4000)) ] || {{ [ "$(state)" = enabled ] && [ $(ms) -lt $((t0 + 60000)) ]; }}; }}
( while busy; do stress-ng -c 4 --pipe 2 -t 2s >/dev/null 2>&1 || exit; done ) & load=$!
( while busy; do /bin/true; done ) & forks=$!
i=0; while [ "$(state)" = enabled ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
echo "{name} eject-ms $(( $(ms) - t0 ))"
rc=0; wait $load || rc=$?; echo "{name} load-exit $rc"
rc=0; wait $forks || rc=$?; echo "{name} forks-exit $rc"
echo "{name} state $(state)"
echo "{name} last_exit $(cat /sys/kernel/enoki/last_exit)"
echo "{name} status $(enoki status | grep last_exit)"
"#,
            args = c.args,
            watchdog_ms = c.watchdog_ms,
            options = c.options,
            name = c.name,
        );
    }
    s += "enoki load fifo --mode all >/dev/null; echo after $(state); enoki unload\n";
    s
}

fn check(classes: &[Class]) {
    let dir = it::shared_tempdir();
    let path = dir.path().join("faults.sh");
    std::fs::write(&path, script(classes)).unwrap();
    let r = it::boot(it::heavy_config(), &format!("sh {}", path.display()));
    r.assert_exit(0);
    let mut table = String::new();
    for c in classes {
        let at = |what: &str| field(&r, &format!("{} {what}", c.name)).to_owned();
        let eject_ms = it::number(&r, &format!("{} eject-ms", c.name));
        table += &format!("{:<9} {:>6} ms  {}\n", c.name, eject_ms, at("last_exit"));
        assert_eq!(at("state"), "ejected", "{}: {}", c.name, r.output);
        assert!(
            at("last_exit").contains(c.reason),
            "{}: the report must say {:?}: {}",
            c.name,
            c.reason,
            at("last_exit")
        );
        assert!(
            at("status").contains(c.reason),
            "{}: enoki status must show the reason: {}",
            c.name,
            at("status")
        );
        if c.reason != "stall" {
            assert!(
                at("last_exit").contains(SITE),
                "{}: the report must name the acquisition sites: {}",
                c.name,
                at("last_exit")
            );
        }
        assert!(
            eject_ms <= c.eject_ms,
            "{}: ejected after {eject_ms} ms",
            c.name
        );
        assert_eq!(at("load-exit"), "0", "{}: stress-ng must finish", c.name);
        assert_eq!(at("forks-exit"), "0", "{}: fork/exec must finish", c.name);
    }
    eprintln!("time from load to ejection, and the report:\n{table}");
    assert_eq!(
        field(&r, "after"),
        "enabled",
        "a good scheduler loads after"
    );
    r.assert_clean_but_ejections();
}

#[test]
#[serial]
fn lock_faults_are_ejected_with_the_locks_and_sites_named() {
    check(LOCK_CLASSES);
}

#[test]
#[serial]
fn stalls_lost_tasks_and_wrong_tokens_are_ejected_by_the_watchdog() {
    check(STALL_CLASSES);
}

/// The `buggy/src/lib.rs:LINE` sites a report names, sorted.
fn sites(report: &str) -> Vec<String> {
    let re = regex::Regex::new(r"buggy/src/lib\.rs:\d+").unwrap();
    let mut v: Vec<String> = re
        .find_iter(report)
        .map(|m| m.as_str().to_owned())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
#[serial]
fn recorded_deadlocks_replay_on_the_host_as_the_same_failure() {
    let dir = it::shared_tempdir();
    let classes = [
        ("aa", "bug=aa", WATCHDOG_MS, ""),
        (
            "abba",
            "bug=cycle,cpus=2,hold=65536",
            CYCLE_WATCHDOG_MS,
            CYCLE_OPTIONS,
        ),
    ];
    // Load in rounds until the ejection is over (the state says so once the
    // exit record is written), then one round more, as the load of the run
    // goes on after an ejection: on a slow emulator the deadlock can come
    // late, and it must fall inside the recording.
    let mut script = String::from(concat!(
        "set -e\ncat >/tmp/work.sh <<'EOF'\n",
        "i=0\n",
        "while [ \"$(cat /sys/kernel/enoki/state)\" != ejected ] && [ $i -lt 30 ]; do\n",
        "    stress-ng -c 4 --pipe 2 -t 2s >/dev/null 2>&1; i=$((i+1))\n",
        "done\n",
        "stress-ng -c 4 --pipe 2 -t 2s >/dev/null 2>&1\n",
        "EOF\n",
    ));
    for (name, args, watchdog_ms, options) in classes {
        script += &format!(
            "rc=0; timeout 120 enoki record -o /tmp/{name}.enk --load buggy --mode all \
             --watchdog-ms {watchdog_ms} {options} --args {args},after=500 -- sh /tmp/work.sh >/dev/null || rc=$?\n\
             echo {name} record-exit $rc\n\
             cp /tmp/{name}.enk {dir}/{name}.enk\n\
             echo {name} last_exit $(cat /sys/kernel/enoki/last_exit)\n",
            dir = dir.path().display()
        );
    }
    let r = it::boot(it::heavy_config(), &script);
    r.assert_exit(0);
    r.assert_clean_but_ejections();
    for (name, ..) in classes {
        assert_eq!(
            field(&r, &format!("{name} record-exit")),
            "0",
            "{}",
            r.output
        );
        let kernel = field(&r, &format!("{name} last_exit")).to_owned();
        let trace = dir.path().join(format!("{name}.enk"));
        let mut reader = enoki_sim::trace::TraceReader::open(&trace).expect("reading the trace");
        let header = reader.header().clone();
        let entry = enoki_sim::registry::find("buggy").unwrap();
        let rep =
            (entry.replay_by_locks)(&header, &mut reader, &Default::default()).expect("replay");
        assert!(rep.divergence.is_none(), "{name}: {:?}", rep.divergence);
        // The trace ends with the ejection, and replay ends there too,
        // unless the recorder lost events before it (a busy single-threaded
        // TCG run can): then replay stops at that gap.
        let last = enoki_sim::trace::TraceReader::open(&trace)
            .expect("reading the trace")
            .filter_map(Result::ok)
            .last()
            .expect("an empty trace");
        let ejection = enoki_sim::replay::TraceExit::of(&last)
            .unwrap_or_else(|| panic!("{name}: the trace ends with {last:?}, not the ejection"));
        assert!(ejection.ejected(), "{name}: {ejection}");
        match rep.gap {
            None => assert_eq!(rep.exit.map(|e| e.seq), Some(last.seq), "{name}"),
            Some(gap) => eprintln!("{name}: replay stopped before the ejection: {gap}"),
        }
        let fault = rep
            .fault
            .unwrap_or_else(|| panic!("{name}: the replay did not fail; kernel: {kernel}"));
        let replayed = fault.to_string();
        // "ABBA deadlock in pick_next_task", without the wait time.
        let head = replayed.split(':').next().unwrap();
        let kind = head.split(" after").next().unwrap().to_owned();
        assert!(
            kernel.contains(&kind),
            "{name}: kernel {kernel:?}, replay {replayed:?}"
        );
        assert_eq!(
            sites(&kernel),
            sites(&replayed),
            "{name}: kernel {kernel:?}, replay {replayed:?}"
        );
        eprintln!("{name}: kernel: {kernel}\n{name}: replay: {replayed}");
    }
}

/// A SCHED_FIFO hog (RT throttling off) holds CPU 1 for three watchdog
/// periods while an Enoki task waits there: no scheduler could run it, so
/// the scheduler stays and the kernel log says who starved the task.
/// (`timeout` runs outside the hog's CPU and class, or it could never run
/// to stop it. The hog starts once the spinner is in Enoki, policy 7:
/// before that it is a CFS task the hog would starve unseen. The hog is
/// RT before it moves to CPU 1: as a CFS task there it would wait behind
/// the Enoki spinner, which runs ahead of CFS.)
#[test]
#[serial]
fn a_task_starved_by_an_rt_hog_is_not_the_schedulers_stall() {
    let r = it::boot(
        it::config(),
        "set -e; echo -1 > /proc/sys/kernel/sched_rt_runtime_us; \
         enoki load fifo --mode opt-in --watchdog-ms 1000 >/dev/null; \
         taskset -c 1 enoki run -- sh -c 'while :; do :; done' & spin=$!; \
         policy() { cut -d' ' -f41 /proc/$spin/stat; }; \
         for i in $(seq 100); do [ \"$(policy)\" = 7 ] && break; sleep 0.05; done; \
         echo spin_policy $(policy); \
         timeout 3 chrt -f 50 taskset -c 1 sh -c 'while :; do :; done' || true; \
         kill $spin; wait $spin || true; \
         echo state $(cat /sys/kernel/enoki/state); \
         echo last_exit $(cat /sys/kernel/enoki/last_exit); \
         echo excused $(dmesg | grep -c 'of a higher class, not blamed on the BPF scheduler'); \
         enoki unload",
    );
    r.assert_exit(0);
    assert_eq!(field(&r, "spin_policy"), "7", "the spinner entered Enoki");
    assert_eq!(
        field(&r, "state"),
        "enabled",
        "ejected for what the RT task did: {}",
        field(&r, "last_exit")
    );
    assert!(it::number(&r, "excused") >= 1, "{}", r.output);
    r.assert_clean();
}
