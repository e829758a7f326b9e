// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-spin`: CPU-bound tasks for the WFQ functional-equivalence tests
//! (paper appendix A.1). Each task is a thread spinning until it has used a
//! fixed amount of CPU time, so the results measure how the scheduler shares
//! CPUs, not how fast the (emulated) CPUs are. Output: `key value` pairs, one
//! line per task plus a summary line.
//!
//! - `group`: N tasks, optionally pinned to CPUs and reniced; reports each
//!   one's finishing time (from a common start), the CPU time every task
//!   had when the first one finished (the CPU shares while all competed),
//!   and the longest it went without a CPU (`max_gap_ms`).
//! - `move`: one task per CPU; after a while task 0 pins itself to the CPU
//!   another task runs on. Reports each task's waiting time (finishing time minus
//!   CPU time): time it was runnable but not running.
//! - `numa`: every CPU of node 0 but one (the spare) runs a pinned task;
//!   one more task starts queued on node 0's first (crowded) CPU and is then
//!   allowed everywhere, while all of node 1 idles. Reports the CPUs it runs
//!   on once it left: a NUMA-aware scheduler moves it to the spare CPU of
//!   its own node; stealing by any idle CPU from the longest queue would
//!   send it to node 1 most of the time (4 idle CPUs there against 1).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use enoki_bench_guest::{
    burn, current_cpu, format_cpu_list, gettid, mono_ns, node_cpus, online_cpus, parse_cpu_list,
    set_affinity, set_nice, task_cpu, thread_cpu_ns,
};

#[derive(Parser)]
#[command(about = "CPU-bound tasks for scheduler functional-equivalence tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N tasks, each spinning for --cpu-ms of CPU time.
    Group {
        #[arg(long, default_value_t = 5)]
        tasks: usize,
        #[arg(long, default_value_t = 1000)]
        cpu_ms: u64,
        /// Pin every task to these CPUs (kernel list syntax, e.g. 3 or 0-3).
        #[arg(long)]
        pin: Option<String>,
        /// Nice value per task, comma separated (missing ones are 0).
        #[arg(long, default_value = "")]
        nice: String,
    },
    /// One task per CPU; task 0 moves onto another task's CPU after --move-at-ms.
    Move {
        /// Tasks (default: one per online CPU).
        #[arg(long)]
        tasks: Option<usize>,
        #[arg(long, default_value_t = 2000)]
        cpu_ms: u64,
        /// CPU time task 0 uses before it pins itself to another task's CPU.
        #[arg(long, default_value_t = 200)]
        move_at_ms: u64,
    },
    /// Where a task waiting on a busy CPU of node 0 goes (see the module doc).
    Numa {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// CPU time the task is followed for once it left the crowded CPU.
        #[arg(long, default_value_t = 300)]
        cpu_ms: u64,
        /// Give up after this long (wall time) if it never leaves.
        #[arg(long, default_value_t = 5000)]
        limit_ms: u64,
    },
}

/// CPU changes a task saw, sampled between chunks of work.
#[derive(Default)]
struct Trail {
    cpus: Vec<usize>,
    migrations: usize,
    last: Option<usize>,
    /// When the last chunk of work started, and the longest time between
    /// two chunks: a chunk takes microseconds, so that is the longest the
    /// task went without a CPU (waiting, or preempted).
    last_ns: Option<u64>,
    max_gap_ns: u64,
}

impl Trail {
    fn sample(&mut self) -> usize {
        let now = mono_ns();
        if let Some(last) = self.last_ns {
            self.max_gap_ns = self.max_gap_ns.max(now.saturating_sub(last));
        }
        self.last_ns = Some(now);
        let cpu = current_cpu();
        if self.last != Some(cpu) {
            if self.last.is_some() {
                self.migrations += 1;
            }
            if !self.cpus.contains(&cpu) {
                self.cpus.push(cpu);
            }
            self.last = Some(cpu);
        }
        cpu
    }
}

const CHUNK: u64 = 2_000;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Group {
            tasks,
            cpu_ms,
            pin,
            nice,
        } => group(tasks, cpu_ms, pin.as_deref(), &nice),
        Cmd::Move {
            tasks,
            cpu_ms,
            move_at_ms,
        } => move_one(tasks, cpu_ms, move_at_ms),
        Cmd::Numa {
            rounds,
            cpu_ms,
            limit_ms,
        } => numa(rounds, cpu_ms, limit_ms),
    }
}

struct Done {
    tid: i32,
    start: u64,
    end: u64,
    cpu: u64,
    trail: Trail,
}

fn group(tasks: usize, cpu_ms: u64, pin: Option<&str>, nice: &str) -> Result<()> {
    ensure!(tasks > 0, "--tasks must be positive");
    let pin = pin.map(parse_cpu_list).transpose()?;
    let nices: Vec<i32> = nice
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("nice value {s:?}"))
        })
        .collect::<Result<_>>()?;
    let budget = cpu_ms * 1_000_000;
    let barrier = Arc::new(Barrier::new(tasks));
    let tids: Arc<Vec<AtomicI32>> = Arc::new((0..tasks).map(|_| AtomicI32::new(0)).collect());
    let first_done = Arc::new(AtomicBool::new(false));
    // Each task's CPU time so far, published after every chunk of work.
    let used: Arc<Vec<AtomicU64>> = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
    // CPU time of every task when the first one finished.
    let at_first: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; tasks]));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (barrier, tids, first_done, at_first, pin, used) = (
                barrier.clone(),
                tids.clone(),
                first_done.clone(),
                at_first.clone(),
                pin.clone(),
                used.clone(),
            );
            let nice = nices.get(i).copied().unwrap_or(0);
            thread::spawn(move || -> Result<Done> {
                let tid = gettid();
                tids[i].store(tid, SeqCst);
                if let Some(cpus) = &pin {
                    set_affinity(0, cpus)?;
                }
                set_nice(0, nice)?;
                barrier.wait();
                let start = mono_ns();
                let cpu0 = thread_cpu_ns();
                let mut trail = Trail::default();
                let mut acc = 1;
                loop {
                    trail.sample();
                    burn(CHUNK, &mut acc);
                    let now = thread_cpu_ns() - cpu0;
                    used[i].store(now, SeqCst);
                    if now >= budget {
                        break;
                    }
                }
                let end = mono_ns();
                let cpu = thread_cpu_ns() - cpu0;
                if !first_done.swap(true, SeqCst) {
                    let mut snap = at_first.lock().unwrap();
                    for (j, u) in used.iter().enumerate() {
                        snap[j] = u.load(SeqCst);
                    }
                }
                std::hint::black_box(acc);
                Ok(Done {
                    tid,
                    start,
                    end,
                    cpu,
                    trail,
                })
            })
        })
        .collect();
    let done: Vec<Done> = handles
        .into_iter()
        .map(|h| h.join().expect("task panicked"))
        .collect::<Result<_>>()?;
    // CPU time before the barrier (thread setup) is subtracted from the snapshot.
    let t0 = done.iter().map(|d| d.start).min().unwrap_or(0);
    let snap = at_first.lock().unwrap().clone();
    println!(
        "group tasks {tasks} cpu_ms {cpu_ms} pin {}",
        pin.as_deref()
            .map(format_cpu_list)
            .unwrap_or_else(|| "none".into())
    );
    let mut walls = Vec::new();
    for (i, d) in done.iter().enumerate() {
        let wall = d.end - t0;
        walls.push(wall);
        println!(
            "task {i} tid {} nice {} wall_ms {:.3} cpu_ms {:.3} cpu_at_first_ms {:.3} wait_ms {:.3} max_gap_ms {:.3} migrations {} cpus {}",
            d.tid,
            nices.get(i).copied().unwrap_or(0),
            ms(wall),
            ms(d.cpu),
            ms(snap[i]),
            ms(wall.saturating_sub(d.cpu)),
            ms(d.trail.max_gap_ns),
            d.trail.migrations,
            format_cpu_list(&d.trail.cpus)
        );
    }
    let (min, max) = (
        walls.iter().min().copied().unwrap_or(0),
        walls.iter().max().copied().unwrap_or(0),
    );
    let max_gap = done.iter().map(|d| d.trail.max_gap_ns).max().unwrap_or(0);
    println!(
        "summary wall_min_ms {:.3} wall_max_ms {:.3} max_gap_ms {:.3}",
        ms(min),
        ms(max),
        ms(max_gap)
    );
    Ok(())
}

fn move_one(tasks: Option<usize>, cpu_ms: u64, move_at_ms: u64) -> Result<()> {
    let tasks = tasks.unwrap_or_else(|| online_cpus().len());
    ensure!(tasks >= 2, "move needs at least 2 tasks");
    let budget = cpu_ms * 1_000_000;
    let barrier = Arc::new(Barrier::new(tasks));
    let tids: Arc<Vec<AtomicI32>> = Arc::new((0..tasks).map(|_| AtomicI32::new(0)).collect());
    // (mover's CPU before, victim's CPU = where it went), usize::MAX until moved.
    let moved = Arc::new((AtomicUsize::new(usize::MAX), AtomicUsize::new(usize::MAX)));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (barrier, tids, moved) = (barrier.clone(), tids.clone(), moved.clone());
            thread::spawn(move || -> Result<Done> {
                let tid = gettid();
                tids[i].store(tid, SeqCst);
                barrier.wait();
                let start = mono_ns();
                let cpu0 = thread_cpu_ns();
                let mut trail = Trail::default();
                let mut acc = 1;
                let mut pending_move = i == 0;
                loop {
                    let here = trail.sample();
                    burn(CHUNK, &mut acc);
                    let used = thread_cpu_ns() - cpu0;
                    if pending_move && used >= move_at_ms * 1_000_000 {
                        pending_move = false;
                        // The CPU of the first other task that runs elsewhere.
                        let mut to = here;
                        for t in tids.iter().skip(1) {
                            to = task_cpu(t.load(SeqCst))?;
                            if to != here {
                                break;
                            }
                        }
                        set_affinity(0, &[to])?;
                        moved.0.store(here, SeqCst);
                        moved.1.store(to, SeqCst);
                    }
                    if used >= budget {
                        break;
                    }
                }
                let end = mono_ns();
                std::hint::black_box(acc);
                Ok(Done {
                    tid,
                    start,
                    end,
                    cpu: thread_cpu_ns() - cpu0,
                    trail,
                })
            })
        })
        .collect();
    let done: Vec<Done> = handles
        .into_iter()
        .map(|h| h.join().expect("task panicked"))
        .collect::<Result<_>>()?;
    let t0 = done.iter().map(|d| d.start).min().unwrap_or(0);
    let (from, to) = (moved.0.load(SeqCst), moved.1.load(SeqCst));
    println!("move tasks {tasks} cpu_ms {cpu_ms} move_at_ms {move_at_ms} moved_from {from} moved_to {to}");
    let mut total_wait = 0;
    let mut max_wait = 0;
    let mut max_wall = 0;
    for (i, d) in done.iter().enumerate() {
        let wall = d.end - t0;
        let wait = wall.saturating_sub(d.cpu);
        total_wait += wait;
        max_wait = max_wait.max(wait);
        max_wall = max_wall.max(wall);
        println!(
            "task {i} tid {} wall_ms {:.3} cpu_ms {:.3} wait_ms {:.3} migrations {} cpus {}",
            d.tid,
            ms(wall),
            ms(d.cpu),
            ms(wait),
            d.trail.migrations,
            format_cpu_list(&d.trail.cpus)
        );
    }
    println!(
        "summary total_wait_ms {:.3} max_wait_ms {:.3} max_wall_ms {:.3} finished {}",
        ms(total_wait),
        ms(max_wait),
        ms(max_wall),
        done.len()
    );
    Ok(())
}

/// The moving task's CPUs, (first CPU off the crowded one, ns until then),
/// and the CPU time it used.
type MoverResult = (Trail, Option<(usize, u64)>, u64);

fn numa(rounds: usize, cpu_ms: u64, limit_ms: u64) -> Result<()> {
    let nodes = node_cpus();
    if nodes.len() < 2 || nodes[0].len() < 2 || nodes[1].is_empty() {
        bail!("numa needs two NUMA nodes, the first with at least 2 CPUs; found {nodes:?}");
    }
    let all = online_cpus();
    let crowded = nodes[0][0];
    let spare = *nodes[0].last().expect("node 0 has CPUs");
    // Pinned spinners: the crowded CPU and every CPU of node 0 but the spare one.
    let pinned: Vec<usize> = nodes[0].iter().copied().filter(|c| *c != spare).collect();
    println!(
        "numa node0 {} node1 {} crowded_cpu {crowded} spare_cpu {spare} idle_node1_cpus {}",
        format_cpu_list(&nodes[0]),
        format_cpu_list(&nodes[1]),
        nodes[1].len()
    );
    let mut stayed = 0;
    for round in 0..rounds {
        let n = pinned.len() + 1;
        let barrier = Arc::new(Barrier::new(n));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for &cpu in &pinned {
            let (barrier, stop) = (barrier.clone(), stop.clone());
            handles.push(thread::spawn(move || -> Result<Trail> {
                set_affinity(0, &[cpu])?;
                barrier.wait();
                let mut acc = 1;
                while !stop.load(SeqCst) {
                    burn(CHUNK, &mut acc);
                }
                std::hint::black_box(acc);
                Ok(Trail::default())
            }));
        }
        // The task that must move: queued on the crowded CPU, then free to go.
        let (b, st, all2) = (barrier.clone(), stop.clone(), all.clone());
        let mover = thread::spawn(move || -> Result<MoverResult> {
            set_affinity(0, &[crowded])?;
            b.wait();
            let mut acc = 1;
            let mut trail = Trail::default();
            set_affinity(0, &all2)?;
            let widened = mono_ns();
            let cpu0 = thread_cpu_ns();
            let mut left = None;
            loop {
                let here = trail.sample();
                burn(CHUNK, &mut acc);
                let now = mono_ns();
                if left.is_none() && here != crowded {
                    left = Some((here, now - widened));
                }
                // Measure for --cpu-ms of CPU time once it left (or give up).
                if left.is_some_and(|_| thread_cpu_ns() - cpu0 >= cpu_ms * 1_000_000)
                    || now - widened > limit_ms * 1_000_000
                {
                    break;
                }
            }
            st.store(true, SeqCst);
            std::hint::black_box(acc);
            Ok((trail, left, thread_cpu_ns() - cpu0))
        });
        let (trail, left, used) = mover.join().expect("mover panicked")?;
        for h in handles {
            h.join().expect("task panicked")?;
        }
        let node_of = |c: usize| {
            nodes
                .iter()
                .position(|n| n.contains(&c))
                .unwrap_or(usize::MAX)
        };
        let remote = trail.cpus.iter().filter(|c| node_of(**c) != 0).count();
        let (first, after) = match left {
            Some((cpu, ns)) => (cpu.to_string(), format!("{:.3}", ms(ns))),
            None => ("none".into(), "-".into()),
        };
        if left.is_some_and(|(c, _)| node_of(c) == 0) && remote == 0 {
            stayed += 1;
        }
        println!(
            "round {round} first_cpu {first} first_node {} after_ms {after} cpus {} remote_cpus {remote} cpu_ms {:.3} migrations {}",
            left.map(|(c, _)| node_of(c).to_string()).unwrap_or_else(|| "none".into()),
            format_cpu_list(&trail.cpus),
            ms(used),
            trail.migrations
        );
    }
    println!("summary rounds {rounds} stayed_in_node {stayed}");
    Ok(())
}
