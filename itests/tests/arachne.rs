// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Arachne core arbiter with a runtime that sizes itself to its load
//! (`enoki-pool`, hints/src/bin/enoki-pool/), as in the paper's 5.6: the
//! pool's CPUs follow its load, a batch job next to it gets them back when
//! the load falls, and a more urgent pool takes CPUs from a less urgent
//! one through cooperative reclaim (`GRANT_RECLAIM`, `release`).

use std::time::Duration;

use enoki_itests::{self as it, field, float, number, Purpose, DUMP, IRQS};
use serial_test::serial;

/// Work per request: long next to what a request costs besides (locks,
/// wakeups), which takes milliseconds when the host leaves vCPUs waiting.
const WORK_US: u32 = 40_000;
/// Requests per second in the pool's low and high phases: 0.6 and 4.4
/// CPUs busy (the pool provisions 25% more: 2, its minimum, and 6).
const LOW: u32 = 15;
const HIGH: u32 = 110;

/// Several seconds of load next to a batch job; a boot without KVM on a
/// busy host alone can take two minutes.
fn config() -> it::VmConfig {
    it::config().timeout(Duration::from_secs(600))
}

/// The `timeline` lines of the pool whose output lines start with
/// `prefix`: (ms, kind, count).
fn timeline(out: &str, prefix: &str) -> Vec<(f64, String, u64)> {
    let start = format!("{prefix}timeline ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&start))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [ms, kind, count, ..] => (
                    ms.parse().unwrap_or_else(|_| panic!("timeline line {l:?}")),
                    kind.to_string(),
                    count
                        .parse()
                        .unwrap_or_else(|_| panic!("timeline line {l:?}")),
                ),
                _ => panic!("timeline line {l:?}"),
            }
        })
        .collect()
}

/// Arachne with no grants under a plain CPU-bound load (8 spinners on 8
/// CPUs, kernel threads waking now and then) stays loaded, and CPUs that
/// keep their task are not kicked as if idle: those kicks (sched_ext sends
/// them as IRQ work) came at hundreds per CPU-second, and under emulation
/// they kept every kernel thread just switched in from running until
/// sched_ext's watchdog work was late and the scheduler was ejected.
#[test]
#[serial]
fn spinners_on_every_cpu_leave_the_kernel_threads_their_turn() {
    let script = format!(
        r#"{DUMP}
{IRQS}
enoki load arachne --mode all >/dev/null || echo load-failed
before=$(irqs IWI); t0=$(cut -d' ' -f1 /proc/uptime)
enoki-cores --cores 0 --threads 8 --duration-ms 20000 >/dev/null
echo "batch.exit $?"
echo "irq_work $(( $(irqs IWI) - before ))"
echo "seconds $(awk -v t0=$t0 '{{ print $1 - t0 }}' /proc/uptime)"
echo "cpus $(nproc)"
dump ar.
enoki unload >/dev/null
"#
    );
    // The storm showed where one host thread runs the vCPUs in turn, each
    // for as long as no IPI interrupts it (single-threaded TCG).
    let r = it::run_ok_in(config().purpose(Purpose::Latency), &script);
    assert!(!r.output.contains("load-failed"), "enoki load arachne");
    assert_eq!(field(&r, "batch.exit"), "0", "the spinners failed");
    it::assert_enabled(&r, "ar.");
    let per_cpu_second = float(&r, "irq_work") / float(&r, "seconds") / float(&r, "cpus");
    println!("IRQ work per CPU-second: {per_cpu_second:.1}");
    assert!(
        per_cpu_second < 15.0,
        "{per_cpu_second:.1} IRQ work interrupts (sched_ext's kicks) per CPU-second"
    );
}

/// A pool with a low, a high and a low phase of load next to a CPU-bound
/// batch job (8 spinning threads, no grant): the CPUs the pool holds rise
/// to 5 or more in the high phase and fall back to 3 or fewer, every
/// request is served, and the batch job gets more CPU time per second in
/// the low phases than in the high one, where the pool holds its CPUs.
#[test]
#[serial]
fn a_pool_holds_the_cpus_its_load_needs_and_gives_them_back() {
    let script = format!(
        r#"{DUMP}
enoki load arachne --mode all --args reclaim_ms=20 >/dev/null || echo load-failed
enoki-cores --cores 0 --threads 8 --duration-ms 14000 >/tmp/batch.out & batch=$!
timeout 120 enoki-pool --phases {LOW}:2000,{HIGH}:2000,{LOW}:2000 --work-us {WORK_US} --watch-pid $batch >/tmp/pool.out
echo "pool.exit $?"
wait $batch
echo "batch.exit $?"
sed 's/^/pool./' /tmp/pool.out
dump ar.
enoki unload >/dev/null
"#
    );
    let r = it::run_ok_in(config(), &script);
    assert!(!r.output.contains("load-failed"), "enoki load arachne");
    assert_eq!(field(&r, "pool.exit"), "0", "enoki-pool failed");
    assert_eq!(field(&r, "batch.exit"), "0", "the batch job failed");
    assert_eq!(field(&r, "pool.mode"), "arbiter");
    let arrived = number(&r, "pool.total.arrived");
    assert!(arrived > 200, "only {arrived} requests arrived");
    assert_eq!(number(&r, "pool.total.completed"), arrived, "requests lost");
    assert_eq!(number(&r, "pool.total.dropped"), 0, "requests never served");
    assert!(number(&r, "pool.grants") >= 2, "no grants read");

    let held = |p: u32, what: &str| float(&r, &format!("pool.phase.{p}.held_{what}"));
    assert!(
        held(1, "max") >= 5.0,
        "the pool held at most {} CPUs under high load",
        held(1, "max")
    );
    assert!(
        held(1, "mean") >= 4.0,
        "the pool held {:.2} CPUs on average under high load",
        held(1, "mean")
    );
    // Low load: at most 3 CPUs on average (a burst, or a stretch the host
    // left the VM without a CPU, may ask for more for a moment).
    assert!(
        held(0, "min") >= 1.0,
        "the pool held nothing in the first phase"
    );
    assert!(
        held(0, "mean") <= 3.0,
        "the pool held {:.2} CPUs on average in the first low phase",
        held(0, "mean")
    );
    assert!(
        held(2, "min") <= 3.0,
        "the pool's CPUs never fell back to 3 after the high phase"
    );
    assert!(
        held(2, "mean") + 1.5 < held(1, "mean"),
        "the pool held {:.2} CPUs on average after the high phase, {:.2} in it",
        held(2, "mean"),
        held(1, "mean")
    );

    // The batch job's CPU time (CPUs' worth) per phase.
    let batch = |p: u32| float(&r, &format!("pool.phase.{p}.watch_cpus"));
    println!(
        "batch CPUs per phase: {:.2} {:.2} {:.2}",
        batch(0),
        batch(1),
        batch(2)
    );
    assert!(batch(1) > 0.1, "the batch job starved in the high phase");
    for low in [0, 2] {
        assert!(
            batch(low) > 1.5 * batch(1),
            "the batch job used {:.2} CPUs in low phase {low}, {:.2} in the high one",
            batch(low),
            batch(1)
        );
    }
    it::assert_enabled(&r, "ar.");
}

/// A pool asking at priority 0 takes CPUs from a busy one at priority 1:
/// that one is asked to give them back (`GRANT_RECLAIM`), parks workers,
/// gives each CPU back and runs on fewer; both serve every request.
#[test]
#[serial]
fn an_urgent_pool_reclaims_cpus_from_a_less_urgent_one() {
    let script = format!(
        r#"{DUMP}
enoki load arachne --mode all --args reclaim_ms=50 >/dev/null || echo load-failed
timeout 120 enoki-pool --priority 1 --phases 120:5000 --work-us {WORK_US} --seed 1 --ready-file /tmp/a.ready >/tmp/a.out & a=$!
for i in $(seq 200); do [ -e /tmp/a.ready ] && break; sleep 0.05; done
[ -e /tmp/a.ready ] || echo a-not-ready
# Not synchronisation but the load's shape: A alone for a second, time to
# scale up to the 4 or more CPUs it must hold before B asks.
sleep 1
timeout 120 enoki-pool --priority 0 --max-cores 5 --phases 100:2000 --work-us {WORK_US} --seed 2 >/tmp/b.out
echo "b.exit $?"
wait $a
echo "a.exit $?"
sed 's/^/a./' /tmp/a.out
sed 's/^/b./' /tmp/b.out
dump ar.
enoki unload >/dev/null
"#
    );
    let r = it::run_ok_in(config(), &script);
    assert!(!r.output.contains("load-failed"), "enoki load arachne");
    assert!(
        !r.output.contains("a-not-ready"),
        "pool A got no CPUs within 10 s"
    );
    for p in ["a", "b"] {
        assert_eq!(field(&r, &format!("{p}.exit")), "0", "pool {p} failed");
        assert_eq!(
            number(&r, &format!("{p}.total.completed")),
            number(&r, &format!("{p}.total.arrived")),
            "pool {p} lost requests"
        );
        assert_eq!(number(&r, &format!("{p}.total.dropped")), 0);
    }
    assert!(
        number(&r, "b.phase.0.held_max") >= 4,
        "the urgent pool got at most {} CPUs",
        number(&r, "b.phase.0.held_max")
    );
    let reclaims = number(&r, "a.reclaims");
    assert!(
        reclaims >= 1,
        "the less urgent pool was never asked for CPUs"
    );
    assert!(
        number(&r, "a.reclaims.cpus") >= 2,
        "fewer than 2 CPUs asked back"
    );
    let took = float(&r, "a.reclaims.max_ms");
    assert!(
        took < 1000.0,
        "the pool took {took} ms to release reclaimed CPUs"
    );
    assert_eq!(
        number(&r, "a.reclaims.unresolved"),
        0,
        "CPUs asked back were still held at the end"
    );
    let gone = float(&r, "a.reclaims.max_gone_ms");
    assert!(gone < 1000.0, "reclaimed CPUs went after {gone} ms");
    // Before the reclaim it held 4 or more; after it, at most 7 - 4.
    let events = timeline(&r.output, "a.");
    let first = events
        .iter()
        .position(|(_, kind, _)| kind == "reclaim")
        .expect("a reclaim in the timeline");
    let before = events[..first]
        .iter()
        .filter(|(_, kind, _)| kind == "held")
        .map(|(_, _, n)| *n)
        .max()
        .unwrap_or(0);
    let after = events[first..]
        .iter()
        .filter(|(_, kind, _)| kind == "held")
        .map(|(_, _, n)| *n)
        .min()
        .unwrap_or(u64::MAX);
    assert!(before >= 4, "the pool held at most {before} CPUs before");
    assert!(after <= 3, "the pool held at least {after} CPUs after");
    it::assert_enabled(&r, "ar.");
}
