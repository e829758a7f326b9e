// SPDX-License-Identifier: MIT OR Apache-2.0
//! Functional equivalence of Enoki WFQ and the kernel's default scheduler
//! (paper appendix A.1). Each test boots once and runs the same workload
//! under the default scheduler (EEVDF/"CFS") and then under `enoki load
//! wfq`, and asserts both behave as a weighted fair scheduler should and
//! like each other, within tolerances.
//!
//! Workloads come from `enoki-spin` (bench/guest): every task spins until it
//! has used a fixed amount of CPU time, so finishing times measure how the
//! scheduler shares CPUs and not how fast the emulated CPUs are (under
//! single-threaded TCG each busy vCPU gets a fraction of a host core, but the
//! guest clock and its CPU-time accounting keep real time). Only ratios
//! measured in the guest are compared, never absolute host times. That holds
//! when every vCPU progresses at the same rate, so these tests boot
//! [`it::timing_config`] (single-threaded TCG when there is no KVM).

use std::collections::HashMap;

use enoki_itests::{self as it, field, Run};
use serial_test::serial;

/// Weights of nice 0 and nice 19 in the kernel's table.
const NICE_0_WEIGHT: f64 = 1024.0;
const NICE_19_WEIGHT: f64 = 15.0;

/// Runs `body` (a shell fragment that uses `$S`, the scheduler's name, and
/// `run CMD...`, which prefixes each output line with `$S.`) under the
/// default scheduler, then under WFQ; prints WFQ's state and counters after.
fn both(body: &str) -> Run {
    let script = format!(
        r#"set -eo pipefail
run() {{ "$@" | sed "s/^/$S./"; }}
S=cfs
{body}
enoki load wfq >/dev/null
S=wfq
{body}
for f in state pick_errors balance_errors rejected last_exit; do echo "wfq.$f $(cat /sys/kernel/enoki/$f)"; done
sed 's/^/wfq.counter./' /sys/kernel/enoki/counters
enoki unload >/dev/null
echo scx-state $(cat /sys/kernel/sched_ext/state)
"#
    );
    let r = it::boot(it::timing_config(), &script);
    r.assert_exit(0);
    r.assert_clean();
    assert_eq!(
        field(&r, "wfq.state"),
        "enabled",
        "WFQ was ejected: {}",
        field(&r, "wfq.last_exit")
    );
    assert_eq!(field(&r, "wfq.pick_errors"), "0");
    assert_eq!(
        field(&r, "scx-state"),
        "disabled",
        "tasks must be back on the default scheduler"
    );
    r
}

fn counter(r: &Run, name: &str) -> u64 {
    field(r, &format!("wfq.counter.{name}"))
        .parse()
        .expect("counter value")
}

/// One output line of `enoki-spin` as `key -> value` (`task 3 tid 140 ...`
/// gives task=3, tid=140, ...).
#[derive(Debug)]
struct Line(HashMap<String, String>);

impl Line {
    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.0))
    }
    fn f(&self, key: &str) -> f64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number in {:?}", self.0))
    }
}

/// The lines of kind `kind` (first word) that scheduler `sched` printed in
/// the `nth` run of the workload (0-based; runs start with a `group`/`move`/
/// `numa` header line).
fn lines(r: &Run, sched: &str, nth: usize, kind: &str) -> Vec<Line> {
    let prefix = format!("{sched}.");
    let mut run = None::<usize>;
    let mut out = Vec::new();
    for l in r.output.lines().filter_map(|l| l.strip_prefix(&prefix)) {
        let words: Vec<&str> = l.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        if ["group", "move", "numa"].contains(first) {
            run = Some(run.map_or(0, |n| n + 1));
        }
        if run == Some(nth) && *first == kind {
            // `task N k v ...` and `round N k v ...` carry a value after the kind.
            let pairs = if ["task", "round"].contains(first) {
                &words[..]
            } else {
                &words[1..]
            };
            out.push(Line(
                pairs
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].into(), c[1].into()))
                    .collect(),
            ));
        }
    }
    assert!(
        !out.is_empty(),
        "no '{kind}' lines for {sched} run {nth} in:\n{}",
        r.output
    );
    out
}

/// A kernel CPU list (`0,3-5`).
fn cpu_list(s: &str) -> Vec<usize> {
    s.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
            a..=b
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn spread(v: &[f64]) -> f64 {
    let (min, max) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    max / min
}

/// |a/b - 1| <= tol
fn within(a: f64, b: f64, tol: f64) -> bool {
    (a / b - 1.0).abs() <= tol
}

/// A: five tasks on five CPUs each finish in about T; pinned to one CPU,
/// each finishes in about 5T, all within 5 % of each other, on both.
#[test]
#[serial]
fn five_tasks_share_one_cpu_fairly_like_cfs() {
    const CPU_MS: f64 = 1000.0;
    let r = both(
        "run enoki-spin group --tasks 5 --cpu-ms 1000\n\
         run enoki-spin group --tasks 5 --cpu-ms 1000 --pin 3",
    );
    let mut ratios = HashMap::new();
    for s in ["cfs", "wfq"] {
        let apart: Vec<f64> = lines(&r, s, 0, "task")
            .iter()
            .map(|t| t.f("wall_ms"))
            .collect();
        let together: Vec<f64> = lines(&r, s, 1, "task")
            .iter()
            .map(|t| t.f("wall_ms"))
            .collect();
        assert_eq!((apart.len(), together.len()), (5, 5));
        println!("{s}: apart {apart:?} ms, pinned {together:?} ms");
        assert!(
            spread(&apart) <= 1.05,
            "{s}: tasks on separate CPUs finish within 5 %: {apart:?}"
        );
        assert!(
            mean(&apart) <= CPU_MS * 1.10,
            "{s}: alone on a CPU a task finishes in about its CPU time: {apart:?}"
        );
        assert!(
            spread(&together) <= 1.05,
            "{s}: tasks sharing a CPU finish within 5 %: {together:?}"
        );
        for t in lines(&r, s, 1, "task") {
            assert_eq!(
                t.get("cpus"),
                "3",
                "{s}: a pinned task ran elsewhere: {t:?}"
            );
        }
        let ratio = mean(&together) / mean(&apart);
        assert!(
            (4.5..=5.5).contains(&ratio),
            "{s}: five tasks on one CPU take about 5x as long, got {ratio:.2}"
        );
        ratios.insert(s, ratio);
    }
    println!(
        "pinned/apart: cfs {:.3}, wfq {:.3}",
        ratios["cfs"], ratios["wfq"]
    );
    assert!(
        within(ratios["wfq"], ratios["cfs"], 0.05),
        "WFQ's slowdown from sharing differs from CFS's by > 5 %: {ratios:?}"
    );
}

/// B: one of five tasks sharing a CPU at nice 19: the other four finish
/// together (within 5 %), the nice-19 one last; while all five compete, the
/// CPU time they get matches the weight ratio within 10 %.
#[test]
#[serial]
fn nice_19_task_gets_its_weight_share_like_cfs() {
    let r = both("run enoki-spin group --tasks 5 --cpu-ms 2000 --pin 3 --nice 0,0,0,0,19");
    let expected = NICE_19_WEIGHT / NICE_0_WEIGHT;
    let mut order = HashMap::new();
    for s in ["cfs", "wfq"] {
        let tasks = lines(&r, s, 0, "task");
        let (normal, low): (Vec<&Line>, Vec<&Line>) =
            tasks.iter().partition(|t| t.get("nice") == "0");
        assert_eq!((normal.len(), low.len()), (4, 1));
        let low = low[0];
        let walls: Vec<f64> = normal.iter().map(|t| t.f("wall_ms")).collect();
        assert!(
            spread(&walls) <= 1.05,
            "{s}: the nice-0 tasks finish within 5 %: {walls:?}"
        );
        let last = walls.iter().cloned().fold(f64::MIN, f64::max);
        assert!(
            low.f("wall_ms") > last,
            "{s}: the nice-19 task must finish last: {tasks:?}"
        );
        // CPU time when the first task finished: all five competed until then.
        let normal_cpu = mean(
            &normal
                .iter()
                .map(|t| t.f("cpu_at_first_ms"))
                .collect::<Vec<_>>(),
        );
        let share = low.f("cpu_at_first_ms") / normal_cpu;
        println!("{s}: nice-0 finish {walls:?} ms, nice-19 {} ms; share {share:.5} (weights {expected:.5})", low.f("wall_ms"));
        // The weight ratio is WFQ's contract. CFS is the reference for
        // behaviour, not for exact weights: its minimum granularity gives a
        // nice-19 task 5-11 % less than its weight here, so it is reported only.
        if s == "wfq" {
            assert!(
                within(share, expected, 0.10),
                "{s}: nice-19/nice-0 CPU share {share:.5}, weights say {expected:.5}"
            );
        }
        order.insert(s, mean(&walls) / low.f("wall_ms"));
    }
    assert!(
        within(order["wfq"], order["cfs"], 0.05),
        "nice-0 vs nice-19 finishing times differ from CFS: {order:?}"
    );
    assert!(
        counter(&r, "task_prio_changed") > 0,
        "the renice must reach WFQ"
    );
}

/// C: one task per CPU, then one is forced onto another's CPU: every task
/// finishes in about its CPU time, and the waiting time (runnable but not
/// running) stays short: an idle CPU takes the displaced task instead of
/// leaving two to share a CPU (that would cost ~1.8 s of waiting here).
/// WFQ's longest wait is held against the default scheduler's in the same
/// boot, not an absolute time: under TCG the default scheduler's own waits
/// vary from ~60 to ~230 ms with the host's load.
#[test]
#[serial]
fn a_forced_move_is_rebalanced_like_cfs() {
    const CPU_MS: f64 = 2000.0;
    // Sharing a CPU makes both tasks wait ~CPU_MS - move; a rebalance ends
    // the waiting within a balance interval (CFS's busy interval for the
    // machine-wide domain is 8 ms x 16 = 128 ms).
    const MAX_WAIT_MS: f64 = CPU_MS / 4.0;
    const MAX_TOTAL_WAIT_MS: f64 = CPU_MS / 2.0;
    // WFQ may wait up to this much longer than CFS did in the same boot.
    const SLACK_MS: f64 = 50.0;
    let r = both("run enoki-spin move --cpu-ms 2000 --move-at-ms 200");
    let mut longest = HashMap::new();
    for s in ["cfs", "wfq"] {
        let head = &lines(&r, s, 0, "move")[0];
        let tasks = lines(&r, s, 0, "task");
        let summary = &lines(&r, s, 0, "summary")[0];
        assert_eq!(summary.get("finished"), "8", "{s}: every task finishes");
        assert_eq!(tasks.len(), 8);
        let to: usize = head.get("moved_to").parse().expect("task 0 moved");
        assert_ne!(
            head.get("moved_from"),
            head.get("moved_to"),
            "{s}: the move must change CPUs"
        );
        assert!(
            cpu_list(tasks[0].get("cpus")).contains(&to),
            "{s}: task 0 ran on {to}: {:?}",
            tasks[0]
        );
        let waits: Vec<f64> = tasks.iter().map(|t| t.f("wait_ms")).collect();
        let walls: Vec<f64> = tasks.iter().map(|t| t.f("wall_ms")).collect();
        println!(
            "{s}: moved {}->{to}; waits {waits:?} ms; total {}",
            head.get("moved_from"),
            summary.get("total_wait_ms")
        );
        // Waiting is bounded below, against CFS's own in the same boot;
        // CFS's varies with the host's load (227 ms in one CI run).
        assert!(
            walls
                .iter()
                .zip(&waits)
                .all(|(wall, wait)| wall - wait <= CPU_MS * 1.10),
            "{s}: every task finishes in about its CPU time and its waiting: \
             walls {walls:?}, waits {waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= MAX_WAIT_MS),
            "{s}: a task waited longer than {MAX_WAIT_MS} ms: {waits:?}"
        );
        assert!(
            summary.f("total_wait_ms") <= MAX_TOTAL_WAIT_MS,
            "{s}: total waiting {summary:?}"
        );
        longest.insert(s, waits.iter().copied().fold(0.0, f64::max));
    }
    assert!(
        longest["wfq"] <= 1.5 * longest["cfs"] + SLACK_MS,
        "WFQ leaves a task waiting much longer than CFS: longest waits {longest:?} ms"
    );
    assert!(
        counter(&r, "migrate_task_rq") > 0,
        "WFQ must have moved a task by stealing"
    );
}

/// D: NUMA. Node 0 has one idle (spare) CPU, node 1 is idle; a task waits on
/// a busy CPU of node 0 and is then allowed everywhere. WFQ must move it to
/// the spare CPU of its own node. Stealing by any idle CPU from the longest
/// queue would send it to node 1 most of the time (four idle CPUs there
/// against one), so at least six of seven first moves within node 0 are
/// NUMA-aware stealing, not luck (chance below 1/2000). One first move is
/// allowed to go astray: right after a load, a task queued briefly behind
/// the waiting one can get an idle node-1 CPU kicked (seen once in 11
/// boots). After that move the task must stay on node 0 in most rounds; not
/// in all, because a kworker waking on node 0 can make that node busier
/// than node 1 by WFQ's imbalance margin, and then a node-1 CPU rightly
/// steals (two rounds of seven once, in a run whose first moves were all
/// right). The default scheduler is only required to move it off the busy
/// CPU: its NUMA balancing may spread to an idle node (printed, not
/// asserted). Both must do it promptly.
#[test]
#[serial]
fn waiting_task_is_stolen_within_its_numa_node() {
    const ROUNDS: usize = 7;
    let r = both(&format!(
        "run enoki-spin numa --rounds {ROUNDS} --cpu-ms 300"
    ));
    let mut median_ms = HashMap::new();
    for s in ["cfs", "wfq"] {
        let rounds = lines(&r, s, 0, "round");
        assert_eq!(rounds.len(), ROUNDS);
        let mut after: Vec<f64> = Vec::new();
        for round in &rounds {
            assert_ne!(
                round.get("first_cpu"),
                "none",
                "{s}: the waiting task was never moved: {round:?}"
            );
            after.push(round.f("after_ms"));
        }
        after.sort_by(f64::total_cmp);
        median_ms.insert(s, after[ROUNDS / 2]);
        let moved_within = rounds.iter().filter(|x| x.get("first_node") == "0").count();
        let stayed = rounds
            .iter()
            .filter(|x| x.get("first_node") == "0" && x.get("remote_cpus") == "0")
            .count();
        println!("{s}: first move within node 0 in {moved_within}/{ROUNDS} rounds, stayed there in {stayed}; time to move {after:?} ms; {rounds:?}");
        if s == "wfq" {
            assert!(
                moved_within + 1 >= ROUNDS,
                "WFQ moved the task off its node in {} of {ROUNDS} rounds: {rounds:?}",
                ROUNDS - moved_within
            );
            assert!(
                2 * stayed > ROUNDS,
                "WFQ let the task leave its node in {} of {ROUNDS} rounds: {rounds:?}",
                ROUNDS - stayed
            );
        }
    }
    assert!(
        median_ms["wfq"] <= (3.0 * median_ms["cfs"]).max(50.0),
        "WFQ takes much longer than CFS to move a waiting task: {median_ms:?}"
    );
    assert!(counter(&r, "balance") > 0 && counter(&r, "migrate_task_rq") > 0);
}
