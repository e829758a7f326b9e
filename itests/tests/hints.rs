// SPDX-License-Identifier: MIT OR Apache-2.0
//! Hint queues in the real kernel: `/dev/enoki` checks every hint and
//! counts each refusal; queues die with their owner, outlive an upgrade to
//! a scheduler with the same hints and no other; the locality scheduler
//! co-locates the groups applications hint.

use enoki_itests::{self as it, field, number, DUMP};
use serial_test::serial;

/// Shell helpers: `counts PREFIX` prints the kernel's all-queue counters
/// as `PREFIXreason count` lines, `open_queues` the number of open queues,
/// and `answers N` waits until the session has answered N hints.
const HELPERS: &str = r#"
counts() { awk -v p="$1" '$1=="hints"{for(i=2;i<NF;i+=2) print p $i, $(i+1)}' /sys/kernel/enoki/hints; }
open_queues() { awk '$1=="queues"{print $2}' /sys/kernel/enoki/hints; }
answers() { until [ "$(wc -l </tmp/session.out)" -ge "$1" ]; do sleep 0.05; done; }
"#;

/// No queue opens without a scheduler that takes hints. Each kind of bad
/// hint is refused with its own reason and counted once: a wrong size, an
/// out-of-range value (the scheduler's check), no such task, a task outside
/// Enoki, another user's task, a ring with a nonsense tail; a thousand
/// queues come and go without a leak; 2000 doorbells on random rings leave
/// the kernel log clean and the scheduler running.
#[test]
#[serial]
fn every_bad_hint_is_refused_and_counted_by_reason() {
    let script = format!(
        r#"{DUMP}
{HELPERS}
echo "none $(enoki-hint info 2>&1 >/dev/null)"
enoki load fifo >/dev/null || echo load-failed
echo "nohints $(enoki-hint info 2>&1 >/dev/null)"
enoki unload >/dev/null
enoki load locality >/dev/null || echo load-failed
enoki-hint info | sed 's/^/info./'
sleep 600 & victim=$!
# the stopper thread of CPU 0 runs in the stop class, never in Enoki
stopper=$(for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = migration/0 ] && echo ${{p#/proc/}}; done | head -1)
echo "own $(enoki-hint send $victim 01000000)"
echo "size $(enoki-hint send $victim 0100)"
echo "range $(enoki-hint send $victim ffffffff)"
echo "nobody $(enoki-hint send 999999 01000000)"
echo "outside $(enoki-hint send $stopper 01000000)"
echo "foreign $(enoki-hint --uid 1000 send $victim 01000000)"
echo "self $(enoki-hint --uid 1000 send 0 01000000)"
echo "victim $victim"
echo "batch $(enoki-hint batch $victim 02000000 $victim ffffffff 999999 01000000 | tr '\n' ' ')"
echo "corrupt $(enoki-hint corrupt)"
counts count.
enoki status | grep '^hints' | sed 's/^hints */status /'
enoki-hint cycle 1000 >/dev/null && echo cycled
echo "open_after $(open_queues)"
counts after.
dump loc.
enoki-hint fuzz 2000 --seed 7 | sed 's/^/fuzz./'
kill $victim
dump end.
enoki unload >/dev/null
"#
    );
    let r = it::run_ok(&script);
    assert!(!r.output.contains("load-failed"), "enoki load");
    assert!(field(&r, "none").contains("no Enoki scheduler is running"));
    assert!(field(&r, "nohints").contains("takes no hints"));
    assert_eq!(field(&r, "info.scheduler"), "locality");
    assert_eq!(field(&r, "info.hint_size"), "4");
    for (case, answer) in [
        ("own", "taken"),
        ("size", "refused Refused"),
        ("range", "refused Refused"),
        ("nobody", "refused Task"),
        ("outside", "refused Task"),
        ("foreign", "refused Permission"),
        ("self", "taken"),
    ] {
        assert_eq!(field(&r, case), answer, "{case}");
    }
    // one doorbell: three hints, one taken and answered on the reverse
    // ring with the group's home
    let batch = field(&r, "batch");
    let answer = format!("taken 1 rev {} 02000000", field(&r, "victim"));
    assert!(batch.starts_with(&answer), "batch: {batch}");
    assert!(
        field(&r, "corrupt").contains("EINVAL"),
        "a nonsense ring tail was read"
    );
    for (reason, n) in [
        ("taken", 3),
        ("size", 1),
        ("refused", 2),
        ("task", 2),
        ("outside", 1),
        ("permission", 1),
        ("gone", 0),
        ("ring", 1),
    ] {
        assert_eq!(number(&r, &format!("count.{reason}")), n, "{reason}");
    }
    assert!(
        field(&r, "status").starts_with("0 queues open; 3 taken, 8 refused"),
        "enoki status: {}",
        field(&r, "status")
    );
    assert!(r.output.contains("cycled"), "1000 queues opened and closed");
    assert_eq!(number(&r, "open_after"), 0, "queues left open");
    assert_eq!(number(&r, "after.taken"), 3, "cycling sent hints");
    // random rings: the kernel refuses or reads them, and survives
    assert_eq!(number(&r, "fuzz.rounds"), 2000);
    assert!(number(&r, "fuzz.refused") > 0, "no random tail was refused");
    // the three it took and the two whose values it refused
    assert_eq!(number(&r, "loc.hint"), 5, "hint messages the scheduler got");
    assert_eq!(number(&r, "loc.queue_new"), number(&r, "loc.queue_gone"));
    it::assert_enabled(&r, "end.");
    r.assert_clean();
}

/// A queue held open outlives an upgrade to the same scheduler (the new
/// version meets it first) and is retired by one to a scheduler without
/// hints; closing it leaves nothing open.
#[test]
#[serial]
fn a_queue_outlives_an_upgrade_only_to_the_same_hints() {
    let script = format!(
        r#"{DUMP}
{HELPERS}
enoki load locality >/dev/null || echo load-failed
sleep 600 & victim=$!
mkfifo /tmp/session.in
: >/tmp/session.out
enoki-hint session </tmp/session.in >/tmp/session.out & session=$!
exec 3>/tmp/session.in
echo "$victim 01000000" >&3; answers 1
echo "open_during $(open_queues)"
enoki upgrade locality >/dev/null || echo upgrade-failed
echo "$victim 02000000" >&3; answers 2
enoki upgrade fifo >/dev/null || echo upgrade-failed
echo "$victim 03000000" >&3; answers 3
grep -c retired /sys/kernel/enoki/hints | sed 's/^/retired /'
exec 3>&-
wait $session
echo "session.exit $?"
sed 's/^/answer /' /tmp/session.out
echo "open_after $(open_queues)"
kill $victim
dump fifo.
enoki unload >/dev/null
"#
    );
    let r = it::run_ok(&script);
    assert!(!r.output.contains("load-failed"), "enoki load locality");
    assert!(!r.output.contains("upgrade-failed"), "an upgrade failed");
    assert_eq!(number(&r, "open_during"), 1);
    assert_eq!(number(&r, "retired"), 1, "the queue was not retired");
    assert_eq!(field(&r, "session.exit"), "0");
    let answers: Vec<&str> = r
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("answer "))
        .collect();
    assert_eq!(answers, ["taken", "taken", "refused Gone"]);
    assert_eq!(number(&r, "open_after"), 0);
    it::assert_enabled(&r, "fifo.");
    r.assert_clean();
}

/// Threads hinted into two groups (one batch through the ring) run each
/// group on one CPU, the groups on different CPUs, and the CPU is the home
/// the scheduler named on the reverse ring. With a group too big for its
/// home (`overload=1`), hints are ignored and every thread still runs.
#[test]
#[serial]
fn locality_runs_each_hinted_group_on_one_cpu() {
    let script = format!(
        r#"{DUMP}
enoki load locality >/dev/null || echo load-failed
enoki-groups --groups 2 --threads 3 --duration-ms 3000 >/tmp/loc.out
echo "loc.exit $?"
sed 's/^/loc./' /tmp/loc.out
dump loc.
enoki unload >/dev/null
enoki load locality --args overload=1 >/dev/null || echo load-failed
enoki-groups --groups 1 --threads 8 --duration-ms 2000 >/tmp/over.out
echo "over.exit $?"
sed 's/^/over./' /tmp/over.out
dump over.
enoki unload >/dev/null
"#
    );
    let r = it::run_ok(&script);
    assert!(!r.output.contains("load-failed"), "enoki load");
    assert_eq!(field(&r, "loc.exit"), "0");
    assert_eq!(number(&r, "loc.hints.taken"), 6);
    assert_eq!(
        field(&r, "over.exit"),
        "0",
        "a thread of the overloaded group"
    );
    assert_eq!(number(&r, "over.hints.taken"), 8);
    for t in 0..8 {
        let share: f64 = field(&r, &format!("over.thread.{t}.share"))
            .parse()
            .unwrap();
        assert!(share > 0.0, "thread {t} never ran");
        assert!(share < 0.9, "thread {t} kept to its home: hint honoured");
    }
    it::assert_enabled(&r, "over.");
    for g in [1, 2] {
        assert_eq!(
            number(&r, &format!("loc.group.{g}.cpus")),
            1,
            "group {g} ran on more than one CPU"
        );
    }
    assert_eq!(
        number(&r, "loc.groups.shared_cpus"),
        0,
        "two groups shared a CPU"
    );
    for t in 0..6 {
        let share: f64 = field(&r, &format!("loc.thread.{t}.share")).parse().unwrap();
        assert!(
            share >= 0.8,
            "thread {t} ran {share:.2} of its bursts on its group's CPU"
        );
        let group = field(&r, &format!("loc.thread.{t}.group"));
        assert_eq!(
            field(&r, &format!("loc.thread.{t}.cpu")),
            field(&r, &format!("loc.group.{group}.home")),
            "thread {t} did not run on the home the scheduler named"
        );
    }
    it::assert_enabled(&r, "loc.");
    r.assert_clean();
}

/// The Arachne arbiter grants a process the CPUs it asks for and says
/// which on the reverse ring; its threads run only there, and a
/// neighbour's threads, started once the grant holds, never do.
#[test]
#[serial]
fn arachne_gives_a_process_its_cpus_alone() {
    let script = format!(
        r#"{DUMP}
enoki load arachne >/dev/null || echo load-failed
enoki-cores --cores 2 --threads 4 --duration-ms 5000 >/tmp/app.out &
app=$!
until grep -q '^grant.cpus' /tmp/app.out 2>/dev/null; do sleep 0.05; done
enoki-cores --cores 0 --threads 6 --duration-ms 2000 >/tmp/other.out
echo "other.exit $?"
wait $app
echo "app.exit $?"
sed 's/^/app./' /tmp/app.out
sed 's/^/other./' /tmp/other.out
dump ar.
enoki unload >/dev/null
"#
    );
    let r = it::run_ok(&script);
    assert!(!r.output.contains("load-failed"), "enoki load arachne");
    assert_eq!(field(&r, "app.exit"), "0");
    assert_eq!(field(&r, "other.exit"), "0");
    assert_eq!(number(&r, "app.grant.cpus"), 2);
    let mask = |key: &str| {
        let v = field(&r, key);
        u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("{key}: {v}"))
    };
    let grant = mask("app.grant.mask");
    assert_eq!(grant.count_ones(), 2, "grant mask {grant:#x}");
    assert_eq!(
        number(&r, "app.outside"),
        0,
        "the app ran outside its grant"
    );
    let other = mask("other.used.mask");
    assert_eq!(
        other & grant,
        0,
        "the neighbour ran on granted CPUs: used {other:#x}, grant {grant:#x}"
    );
    it::assert_enabled(&r, "ar.");
}
