// SPDX-License-Identifier: MIT OR Apache-2.0
//! cgroup `cpu.weight` and `cpu.max` under WFQ in the real kernel, against
//! the default scheduler in the same boot: sibling cgroups, a nested
//! hierarchy, a task moved between cgroups while it runs, cgroups removed
//! as their tasks exit, cgroups a live upgrade hands to the next version,
//! and a cgroup limited to 20 % of a CPU. Each case runs one spinner per
//! leaf, all pinned to one CPU, and compares the CPU time each got
//! (`/proc/PID/schedstat`) with the shares the weights or limits give.

use enoki_itests::{self as it, field, DUMP};
use serial_test::serial;

/// Relative error allowed on each task's share.
const TOLERANCE: f64 = 0.10;

/// The guest script: `cases SCHED` runs every case and prints
/// `SCHED.CASE ns ns ...`, one CPU time per spinner.
const CASES: &str = r#"
cg=/sys/fs/cgroup
echo +cpu > $cg/cgroup.subtree_control

# spin DIR: a spinner on CPU 1, moved into cgroup DIR; its pid in $last
spin() {
    taskset -c 1 sh -c 'while :; do :; done' &
    last=$!
    echo $last > $1/cgroup.procs
}

# used PID...: CPU time of each so far, ns
used() {
    for p in "$@"; do cut -d' ' -f1 /proc/$p/schedstat; done
}

# measure NAME PID...: CPU time each gets in $window s (default 8), after
# 1 s left out (new tasks are placed behind the others, a transient that
# favours the smallest share for a while)
measure() {
    name=$1; shift
    sleep 1
    before=$(used "$@")
    sleep ${window:-8}
    after=$(used "$@")
    out=$name; i=1
    for p in "$@"; do
        t0=$(echo $before | cut -d' ' -f$i); t1=$(echo $after | cut -d' ' -f$i)
        out="$out $((t1 - t0))"; i=$((i+1))
    done
    echo "$out"
}

cases() {
    s=$1
    # Three siblings, 100 : 200 : 600.
    for w in 100 200 600; do mkdir $cg/$s-$w; echo $w > $cg/$s-$w/cpu.weight; done
    pids=
    for w in 100 200 600; do spin $cg/$s-$w; pids="$pids $last"; done
    measure $s.siblings $pids
    kill $pids; wait $pids 2>/dev/null
    for w in 100 200 600; do rmdir $cg/$s-$w; done

    # Nested: p (100) holds c1 (100) and c2 (300); q (200) is p's sibling.
    mkdir $cg/$s-p $cg/$s-q
    echo +cpu > $cg/$s-p/cgroup.subtree_control
    mkdir $cg/$s-p/c1 $cg/$s-p/c2
    echo 300 > $cg/$s-p/c2/cpu.weight
    echo 200 > $cg/$s-q/cpu.weight
    spin $cg/$s-p/c1; in_c1=$last
    spin $cg/$s-p/c2; in_c2=$last
    spin $cg/$s-q; in_q=$last
    measure $s.nested $in_c1 $in_c2 $in_q
    # c2's spinner moves to c1 while it runs: c1 holds all of p's share.
    echo $in_c2 > $cg/$s-p/c1/cgroup.procs
    measure $s.moved $in_c1 $in_c2 $in_q
    # The cgroups go as their tasks exit.
    kill $in_c1 $in_c2 $in_q; wait $in_c1 $in_c2 $in_q 2>/dev/null
    rmdir $cg/$s-p/c1 $cg/$s-p/c2 $cg/$s-p $cg/$s-q
    echo $s.removed $(ls -d $cg/$s-* 2>/dev/null | wc -l)
}

# upgraded: three siblings that exist before a live upgrade to the next
# WFQ, which meets them through the upgrade
upgraded() {
    for w in 100 200 600; do mkdir $cg/up-$w; echo $w > $cg/up-$w/cpu.weight; done
    pids=
    for w in 100 200 600; do spin $cg/up-$w; pids="$pids $last"; done
    enoki upgrade wfq >/dev/null
    measure upgraded $pids
    kill $pids; wait $pids 2>/dev/null
    for w in 100 200 600; do rmdir $cg/up-$w; done
}
"#;

/// The CPU times `key` lists.
fn times(r: &it::Run, key: &str) -> Vec<f64> {
    field(r, key)
        .split_whitespace()
        .map(|t| t.parse().unwrap_or_else(|_| panic!("{key}: {t:?}")))
        .collect()
}

/// Each task's share against the share `weights` give it: the largest
/// relative error.
fn error(got: &[f64], weights: &[f64]) -> f64 {
    let (total, wsum) = (got.iter().sum::<f64>(), weights.iter().sum::<f64>());
    assert!(total > 0.0, "no CPU time measured");
    got.iter()
        .zip(weights)
        .map(|(g, w)| ((g / total) / (w / wsum) - 1.0).abs())
        .fold(0.0, f64::max)
}

#[test]
#[serial]
fn wfq_divides_a_cpu_by_cgroup_weight_as_the_default_scheduler_does() {
    let script = format!(
        r#"{DUMP}
{CASES}
cases cfs
enoki load wfq --mode all
cases wfq
upgraded
dump during.
enoki unload
"#
    );
    let r = it::run_ok_in(it::timing_config(), &script);
    it::assert_enabled(&r, "during.");
    for msg in [
        "cgroup_new",
        "cgroup_gone",
        "cgroup_weight",
        "task_cgroup_moved",
    ] {
        assert!(
            it::number(&r, &format!("during.{msg}")) > 0,
            "no {msg} messages"
        );
    }
    // siblings 1:2:6; nested: p and q 1:2, p's third split 1:3; moved:
    // c1 holds p's third, split between its two tasks.
    let cases = [
        ("siblings", [1.0, 2.0, 6.0]),
        ("nested", [1.0, 3.0, 8.0]),
        ("moved", [1.0, 1.0, 4.0]),
    ];
    let mut report = String::new();
    let mut worst = 0.0f64;
    for (case, weights) in cases {
        let cfs = error(&times(&r, &format!("cfs.{case}")), &weights);
        let wfq = error(&times(&r, &format!("wfq.{case}")), &weights);
        report += &format!(
            "{case}: cfs {:.1} %, wfq {:.1} %\n",
            cfs * 100.0,
            wfq * 100.0
        );
        worst = worst.max(wfq - cfs.max(TOLERANCE));
    }
    println!("largest share error per case:\n{report}");
    assert!(
        worst <= 0.0,
        "WFQ's shares are off by more than {:.0} % (or than the default \
         scheduler's):\n{report}",
        TOLERANCE * 100.0
    );
    let upgraded = error(&times(&r, "upgraded"), &[1.0, 2.0, 6.0]);
    assert!(
        upgraded <= TOLERANCE,
        "after a live upgrade the shares are off by {:.1} %",
        upgraded * 100.0
    );
    for s in ["cfs", "wfq"] {
        assert_eq!(field(&r, &format!("{s}.removed")), "0", "cgroups left");
    }
}

/// The guest script's cpu.max case: `capped SCHED` puts a spinner in a
/// cgroup, limits it to 20 ms per 100 ms while it runs, and measures it
/// beside an unlimited spinner on the same CPU (`SCHED.capped ns ns`).
const CAPPED: &str = r#"
capped() {
    mkdir $cg/$1-max
    spin $cg/$1-max; in_max=$last
    spin $cg; free=$last
    echo "20000 100000" > $cg/$1-max/cpu.max
    window=4 measure $1.capped $in_max $free
    kill $in_max $free; wait $in_max $free 2>/dev/null
    rmdir $cg/$1-max
}

# capped_upgraded: the limit set before a live upgrade holds after it
capped_upgraded() {
    mkdir $cg/up-max
    echo "20000 100000" > $cg/up-max/cpu.max
    spin $cg/up-max; in_max=$last
    spin $cg; free=$last
    enoki upgrade wfq >/dev/null
    window=4 measure upgraded.capped $in_max $free
    kill $in_max $free; wait $in_max $free 2>/dev/null
    rmdir $cg/up-max
}
"#;

/// A cgroup with `cpu.max` "20000 100000" gets 20 % of the CPU under WFQ,
/// as under the default scheduler (set while its task runs, and carried
/// through a live upgrade), and the task beside it the rest.
#[test]
#[serial]
fn wfq_holds_a_cgroup_to_its_cpu_max() {
    let script = format!(
        r#"{DUMP}
{CASES}
{CAPPED}
capped cfs
enoki load wfq --mode all
capped wfq
capped_upgraded
dump during.
enoki unload
"#
    );
    let r = it::run_ok_in(it::timing_config(), &script);
    it::assert_enabled(&r, "during.");
    assert!(
        it::number(&r, "during.cgroup_bandwidth") > 0,
        "no cgroup_bandwidth messages"
    );
    // Of the 4 s measured: the capped spinner 20 %, the other the rest.
    let window = 4e9;
    let share = |key: &str| {
        let t = times(&r, key);
        (t[0] / window, t[1] / window)
    };
    let mut report = String::new();
    let mut off = Vec::new();
    for key in ["cfs.capped", "wfq.capped", "upgraded.capped"] {
        let (capped, free) = share(key);
        report += &format!(
            "{key}: capped {:.1} %, beside it {:.1} %\n",
            capped * 100.0,
            free * 100.0
        );
        off.push(((capped / 0.2 - 1.0).abs(), free));
    }
    println!("CPU shares with cpu.max 20 %:\n{report}");
    let cfs = off[0].0;
    for (err, free) in &off[1..] {
        assert!(
            *err <= cfs.max(TOLERANCE),
            "WFQ's capped share is off by more than {:.0} % (or than the default \
             scheduler's):\n{report}",
            TOLERANCE * 100.0
        );
        assert!(
            *free >= 0.7,
            "the task beside the capped one starves:\n{report}"
        );
    }
}

/// More cgroups than WFQ's table holds (`max_cgroups=64` here), created,
/// reweighted, joined by short-lived tasks and removed in a storm while
/// spinners move between them: WFQ stays enabled, every task finishes, and
/// the cgroups past the table's end count as the root's children.
#[test]
#[serial]
fn a_cgroup_storm_past_wfqs_table_loses_no_task() {
    let script = format!(
        r#"{DUMP}
cg=/sys/fs/cgroup
echo +cpu > $cg/cgroup.subtree_control
enoki load wfq --mode all --args max_cgroups=64
stress-ng -q -c 4 -t 20s &
stress=$!
short=
i=0
while [ $i -lt 200 ]; do
    d=$cg/storm-$i
    mkdir $d
    echo $(( i * 37 % 10000 + 1 )) > $d/cpu.weight
    # a short-lived task born into it...
    sh -c "echo \$\$ > $d/cgroup.procs; j=0; while [ \$j -lt 300 ]; do j=\$((j+1)); done" &
    short="$short $!"
    # ...and a stress worker moved into it while it runs
    w=$(ps -o pid,ppid | awk -v s=$stress '$2 == s {{ print $1 }}' | sed -n "$(( i % 4 + 1 ))p")
    [ -n "$w" ] && echo $w > $d/cgroup.procs 2>/dev/null
    i=$((i+1))
done
wait $short
echo short-done
rc=0
wait $stress || rc=$?
echo stress-exit $rc
for d in $cg/storm-*; do rmdir $d; done
echo left $(ls -d $cg/storm-* 2>/dev/null | wc -l)
dump during.
enoki unload
"#
    );
    let r = it::run_ok_in(it::heavy_config(), &script);
    it::assert_enabled(&r, "during.");
    assert_eq!(field(&r, "stress-exit"), "0");
    assert!(r.output.contains("short-done"));
    assert_eq!(field(&r, "left"), "0", "cgroups left behind");
    assert!(it::number(&r, "during.cgroup_new") >= 200);
    assert!(it::number(&r, "during.cgroup_gone") >= 200);
    assert!(it::number(&r, "during.task_cgroup_moved") >= 200);
    assert_eq!(it::number(&r, "during.pick_errors"), 0);
}
