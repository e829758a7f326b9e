// SPDX-License-Identifier: MIT OR Apache-2.0
//! The benchmark workloads: the guest command of each and how to read its
//! metrics from its output. Sizes are chosen for single-threaded TCG, where
//! the 8 vCPUs share one host thread: each run takes a few seconds.

use enoki_vm::Purpose;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// Which way a metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

/// The targets a metric counts towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Pipe ping-pong latency (target: overhead <= 5 %).
    Pipe,
    /// schbench-style wakeup latency (target: p99 within 3 %).
    Schbench,
    /// Real programs (target: geomean within 0.5 %, worst within 5 %).
    App,
    /// Context-switch- and yield-heavy work (target: within 20 %).
    Switch,
    /// System time of the switch- and yield-heavy work (target: at most
    /// 1.5x): CPUs that spin in the kernel instead of sleeping.
    SysTime,
}

/// One number a workload reports.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub group: Group,
    /// First capture group is the value.
    pub pattern: &'static str,
    /// Multiplies the captured value (e.g. bytes / seconds).
    pub scale: Scale,
}

#[derive(Clone, Copy, Debug)]
pub enum Scale {
    One,
    /// The value is nanoseconds; the metric is `mib` MiB per second.
    MibPerSecFromNs(f64),
}

/// A workload: a shell command run in the guest, and its metrics.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub what: &'static str,
    /// Shell command (bash); runs in /tmp; output goes to the raw file.
    pub cmd: &'static str,
    /// It runs for a set time whatever the scheduler (its metrics are
    /// rates or latencies), so its wall time says nothing about recording.
    pub fixed_time: bool,
    pub metrics: Vec<Metric>,
}

impl Workload {
    /// What its VM is for: pipe and schbench measure single wakeups
    /// (latency), which need every vCPU on one host thread when there is no
    /// KVM; everything else measures work per second (throughput).
    pub fn purpose(&self) -> Purpose {
        if self
            .metrics
            .iter()
            .any(|m| matches!(m.group, Group::Pipe | Group::Schbench))
        {
            Purpose::Latency
        } else {
            Purpose::Throughput
        }
    }
}

/// Size of the generated input of the compression benchmarks.
pub const ZSTD_MIB: f64 = 16.0;
pub const XZ_MIB: f64 = 4.0;

/// Run once in the guest before the benchmarks.
pub const SETUP: &str = "enoki-util datagen --bytes 16M --seed 1 > /tmp/data16 && \
                         head -c 4194304 /tmp/data16 > /tmp/data4";

fn m(
    name: &'static str,
    unit: &'static str,
    better: Better,
    group: Group,
    pattern: &'static str,
) -> Metric {
    Metric {
        name,
        unit,
        better,
        group,
        pattern,
        scale: Scale::One,
    }
}

/// `$cmd`, run in cgroup `/bench` (the cpu controller on, weight 100): what
/// honouring cgroups costs a scheduler.
macro_rules! in_cgroup {
    ($cmd:literal) => {
        concat!(
            "cg=/sys/fs/cgroup/bench; mkdir -p $cg && ",
            "echo +cpu > /sys/fs/cgroup/cgroup.subtree_control && ",
            "echo $$ > $cg/cgroup.procs && ",
            $cmd
        )
    };
}

/// enoki-schbench's work per request in the A/B workloads: one multiply
/// of 48 KiB of matrices after its 100 us think-time sleep. schbench's own
/// 256 KiB and 4 multiplies (about 2 ms natively) take about 50 times as
/// long under TCG: 4 s then gave about 300 samples, too few for a p99. At
/// this size 5 s gave 5,900-8,700 (TCG, 8 vCPUs), so runs are 6 s; the raw
/// output says how many. Spelled out, so the run list and raw outputs say
/// what ran.
macro_rules! schbench_work {
    () => {
        "--cache-footprint-kb 48 --operations 1 --sleep-us 100"
    };
}

/// [`schbench_work`], for the live-upgrade runs of the guest script.
pub const SCHBENCH_WORK: &str = schbench_work!();

/// [`schbench_work`] in words, for `what`.
macro_rules! schbench_request {
    () => {
        concat!(
            "a request is a round trip: wake a worker, it sleeps 100 us and ",
            "multiplies 48 KiB of matrices once (schbench's work, scaled for TCG)"
        )
    };
}

/// Wakeup latency (from the message thread's stamp to the worker's own)
/// and requests completed per second.
fn schbench_metrics() -> Vec<Metric> {
    use Better::*;
    vec![
        m("p50", "us", Lower, Group::Schbench, r"p50_us ([\d.]+)"),
        m("p99", "us", Lower, Group::Schbench, r"p99_us ([\d.]+)"),
        m(
            "throughput",
            "requests/s",
            Higher,
            Group::Schbench,
            r"requests_per_sec ([\d.]+)",
        ),
    ]
}

pub fn all() -> Vec<Workload> {
    use Better::*;
    use Group::*;
    let elapsed = r"elapsed_ns (\d+)";
    vec![
        Workload {
            name: "perf-pipe-1cpu",
            what: "perf bench sched pipe, both tasks on CPU 0",
            cmd: "taskset -c 0 perf bench sched pipe -l 20000",
            fixed_time: false,
            metrics: vec![m("latency", "us/op", Lower, Pipe, r"([\d.]+) usecs/op")],
        },
        Workload {
            name: "perf-pipe-2cpu",
            what: "perf bench sched pipe, placed by the scheduler",
            cmd: "perf bench sched pipe -l 20000",
            fixed_time: false,
            metrics: vec![m("latency", "us/op", Lower, Pipe, r"([\d.]+) usecs/op")],
        },
        Workload {
            name: "pipe-1cpu",
            what: "enoki-pipe: two processes on CPU 0",
            cmd: "enoki-pipe -l 20000 --cpus 0",
            fixed_time: false,
            metrics: vec![m("latency", "us/op", Lower, Pipe, r"usecs_per_op ([\d.]+)")],
        },
        Workload {
            name: "pipe-2cpu",
            what: "enoki-pipe: one process on CPU 0, one on CPU 1",
            cmd: "enoki-pipe -l 20000 --cpus 0,1",
            fixed_time: false,
            metrics: vec![m("latency", "us/op", Lower, Pipe, r"usecs_per_op ([\d.]+)")],
        },
        Workload {
            name: "pipe-2cpu-cgroup",
            what: "pipe-2cpu in a cgroup",
            cmd: in_cgroup!("enoki-pipe -l 20000 --cpus 0,1"),
            fixed_time: false,
            metrics: vec![m("latency", "us/op", Lower, Pipe, r"usecs_per_op ([\d.]+)")],
        },
        Workload {
            name: "schbench-2x2",
            what: concat!(
                "enoki-schbench: 2 message threads x 2 workers; ",
                schbench_request!(),
                "; 1 s warm-up, 6 s"
            ),
            cmd: concat!("enoki-schbench -m 2 -t 2 -w 1 -r 6 ", schbench_work!()),
            fixed_time: true,
            metrics: schbench_metrics(),
        },
        Workload {
            name: "schbench-2x4",
            what: concat!(
                "enoki-schbench: 2 message threads x 4 workers (8 = CPUs); ",
                schbench_request!(),
                "; 1 s warm-up, 6 s"
            ),
            cmd: concat!("enoki-schbench -m 2 -t 4 -w 1 -r 6 ", schbench_work!()),
            fixed_time: true,
            metrics: schbench_metrics(),
        },
        Workload {
            name: "switch-4pairs",
            what: "enoki-pipe --pairs 4: four unpinned pipe ping-pong pairs at once",
            cmd: "enoki-pipe --pairs 4 -l 5000",
            fixed_time: false,
            metrics: vec![
                m("throughput", "round trips/s", Higher, Switch, r"ops_per_sec ([\d.]+)"),
                m("sys", "s", Lower, SysTime, r"sys_s ([\d.]+)"),
            ],
        },
        Workload {
            name: "yieldpool",
            what: "enoki-yieldpool: 32 threads lock, work 1 us, unlock, yield; 2000 times each",
            cmd: "enoki-yieldpool --threads 32 --ops 2000",
            fixed_time: false,
            metrics: vec![
                m("throughput", "ops/s", Higher, Switch, r"ops_per_sec ([\d.]+)"),
                m("p95", "us", Lower, Switch, r"p95_us ([\d.]+)"),
                m("sys", "s", Lower, SysTime, r"sys_s ([\d.]+)"),
            ],
        },
        Workload {
            name: "hackbench",
            what: "hackbench -g 4 -l 100 (processes, sockets)",
            cmd: "hackbench -g 4 -l 100",
            fixed_time: false,
            metrics: vec![m("time", "s", Lower, App, r"Time: ([\d.]+)")],
        },
        Workload {
            name: "hackbench-cgroup",
            what: "hackbench in a cgroup",
            cmd: in_cgroup!("hackbench -g 4 -l 100"),
            fixed_time: false,
            metrics: vec![m("time", "s", Lower, App, r"Time: ([\d.]+)")],
        },
        Workload {
            name: "zstd",
            what: "zstd -3 -T0 -B1M on 16 MiB of generated text",
            cmd: "enoki-util time -- zstd -T0 -B1M -3 -q -f /tmp/data16 -o /tmp/out.zst",
            fixed_time: false,
            metrics: vec![Metric {
                name: "throughput",
                unit: "MiB/s",
                better: Higher,
                group: App,
                pattern: elapsed,
                scale: Scale::MibPerSecFromNs(ZSTD_MIB),
            }],
        },
        Workload {
            name: "xz",
            what: "xz -1 -T0 --block-size=256KiB on 4 MiB of generated text",
            cmd: "enoki-util time -- xz -T0 -1 --block-size=256KiB -q -k -f /tmp/data4",
            fixed_time: false,
            metrics: vec![Metric {
                name: "throughput",
                unit: "MiB/s",
                better: Higher,
                group: App,
                pattern: elapsed,
                scale: Scale::MibPerSecFromNs(XZ_MIB),
            }],
        },
        Workload {
            name: "stress-cpu",
            what: "stress-ng --cpu 8 -t 4s (bogo-ops/s, real time)",
            cmd: "stress-ng --cpu 8 -t 4s --metrics --yaml /tmp/sng.yaml >/dev/null 2>&1; cat /tmp/sng.yaml",
            fixed_time: true,
            metrics: vec![m("bogo-ops/s", "ops/s", Higher, App, r"bogo-ops-per-second-real-time: ([\d.]+)")],
        },
        Workload {
            name: "stress-matrix",
            what: "stress-ng --matrix 8 -t 4s (bogo-ops/s, real time)",
            cmd: "stress-ng --matrix 8 -t 4s --metrics --yaml /tmp/sng.yaml >/dev/null 2>&1; cat /tmp/sng.yaml",
            fixed_time: true,
            metrics: vec![m("bogo-ops/s", "ops/s", Higher, App, r"bogo-ops-per-second-real-time: ([\d.]+)")],
        },
    ]
}

impl Metric {
    /// Reads this metric from a run's output; None if absent or not positive.
    pub fn parse(&self, output: &str) -> Option<f64> {
        let re = Regex::new(self.pattern).expect("metric pattern");
        let raw: f64 = re.captures(output)?.get(1)?.as_str().parse().ok()?;
        let v = match self.scale {
            Scale::One => raw,
            Scale::MibPerSecFromNs(mib) => mib / (raw / 1e9),
        };
        (v.is_finite() && v > 0.0).then_some(v)
    }

    /// `workload/metric`
    pub fn key(&self, w: &Workload) -> String {
        format!("{}/{}", w.name, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(w: &str, name: &str) -> Metric {
        all()
            .into_iter()
            .find(|x| x.name == w)
            .unwrap()
            .metrics
            .into_iter()
            .find(|m| m.name == name)
            .unwrap()
    }

    #[test]
    fn parses_real_outputs() {
        let perf = "# Running 'sched/pipe' benchmark:\n# Executed 20000 pipe operations between two processes\n\n     Total time: 1.580 [sec]\n\n      79.077400 usecs/op\n          12645 ops/sec\n";
        assert_eq!(
            metric("perf-pipe-1cpu", "latency").parse(perf),
            Some(79.0774)
        );
        assert_eq!(
            metric("pipe-2cpu", "latency").parse("loops 5000\nusecs_per_op 45.042\n"),
            Some(45.042)
        );
        let sch = "message_threads 2 workers 2 cache_footprint_kb 256 matrix_side 104 \
                   operations 4 sleep_us 100\nsamples 1445\nsamples_note too few for p99.9: \
                   1445 < 10000; p99 rests on the 15 largest\np50_us 47.2\np90_us 5623.3\n\
                   p99_us 10244.6\nmax_us 19831.2\nrequests_per_sec 722.5\n";
        assert_eq!(metric("schbench-2x2", "p99").parse(sch), Some(10244.6));
        assert_eq!(metric("schbench-2x2", "p50").parse(sch), Some(47.2));
        assert_eq!(metric("schbench-2x4", "throughput").parse(sch), Some(722.5));
        // From 10,000 samples on p99.9 comes after p99 and must not be taken for it.
        let many = "samples 26550\np50_us 22.5\np90_us 80.6\np99_us 128.2\np999_us 522.0\n\
                    max_us 4939.0\nrequests_per_sec 13274.7\n";
        assert_eq!(metric("schbench-2x4", "p99").parse(many), Some(128.2));
        assert_eq!(
            metric("schbench-2x2", "throughput").parse(many),
            Some(13274.7)
        );
        // The old output (rounds, not requests) has no throughput to read.
        let old = "samples 1828\np50_us 811.9\np99_us 4097.6\nrounds_per_sec 114.2\n";
        assert_eq!(metric("schbench-2x2", "throughput").parse(old), None);
        assert_eq!(
            metric("hackbench", "time").parse("Running in process mode\nTime: 3.206\n"),
            Some(3.206)
        );
        let z = metric("zstd", "throughput")
            .parse("elapsed_ns 2000000000\nstatus 0\n")
            .unwrap();
        assert!((z - 8.0).abs() < 1e-9);
        let yaml = "metrics:\n    - stressor: cpu\n      bogo-ops: 479\n      bogo-ops-per-second-usr-sys-time: 14.4\n      bogo-ops-per-second-real-time: 115.65\n";
        assert_eq!(metric("stress-cpu", "bogo-ops/s").parse(yaml), Some(115.65));
        assert_eq!(metric("stress-cpu", "bogo-ops/s").parse("garbage"), None);
        assert_eq!(metric("hackbench", "time").parse("Time: 0"), None);
        let pairs = "pairs 4 loops 5000 total_s 0.016\nusecs_per_op 7.926\nops_per_sec 504671\nusr_s 0.020\nsys_s 0.014\n";
        assert_eq!(
            metric("switch-4pairs", "throughput").parse(pairs),
            Some(504671.0)
        );
        assert_eq!(metric("switch-4pairs", "sys").parse(pairs), Some(0.014));
        let pool = "threads 32 ops 64000 total_s 0.272\nops_per_sec 235662\np95_us 154.7\nusr_s 0.236\nsys_s 0.066\n";
        assert_eq!(
            metric("yieldpool", "throughput").parse(pool),
            Some(235662.0)
        );
        assert_eq!(metric("yieldpool", "p95").parse(pool), Some(154.7));
        assert_eq!(metric("yieldpool", "sys").parse(pool), Some(0.066));
    }

    #[test]
    fn only_single_wakeup_latency_needs_one_host_thread() {
        let purpose = |w: &str| all().into_iter().find(|x| x.name == w).unwrap().purpose();
        assert_eq!(purpose("pipe-2cpu"), Purpose::Latency);
        assert_eq!(purpose("schbench-2x2"), Purpose::Latency);
        assert_eq!(purpose("hackbench"), Purpose::Throughput);
        assert_eq!(purpose("switch-4pairs"), Purpose::Throughput);
        assert_eq!(purpose("yieldpool"), Purpose::Throughput);
    }

    #[test]
    fn names_are_unique_and_shell_safe() {
        let ws = all();
        let mut names: Vec<_> = ws.iter().map(|w| w.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ws.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')));
        assert!(
            ws.iter().all(|w| !w.cmd.contains('\'')),
            "commands are single-quoted in the guest script"
        );
    }
}
