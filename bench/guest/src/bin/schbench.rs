// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-schbench`: wakeup latency in the style of schbench. Each message
//! thread repeatedly stamps the time and wakes its workers one after
//! another, then sleeps until all of them have done their work. A worker
//! measures the time from its stamp to when it runs (the wakeup latency),
//! burns `--work-us` of CPU time, reports back and sleeps again. Latencies
//! of the warm-up are dropped. Prints `p50_us`, `p90_us`, `p99_us`,
//! `max_us`, `samples` and `rounds_per_sec`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use anyhow::{ensure, Result};
use clap::Parser;
use enoki_bench_guest::{mono_ns, percentile, spin_cpu_ns};

#[derive(Parser)]
#[command(about = "schbench-style wakeup latency")]
struct Cli {
    /// Message threads.
    #[arg(long, short = 'm', default_value_t = 2)]
    message_threads: usize,
    /// Workers per message thread.
    #[arg(long, short = 't', default_value_t = 2)]
    workers: usize,
    /// Seconds measured after the warm-up.
    #[arg(long, short = 'r', default_value_t = 5.0)]
    runtime_s: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, short = 'w', default_value_t = 1.0)]
    warmup_s: f64,
    /// CPU time each worker burns per wakeup, µs.
    #[arg(long, default_value_t = 2000)]
    work_us: u64,
    /// Time a message thread sleeps between rounds, µs.
    #[arg(long, default_value_t = 1000)]
    sleep_us: u64,
}

struct Worker {
    /// When its message thread woke it (mono ns).
    posted: AtomicU64,
    go: AtomicBool,
    thread: OnceLock<Thread>,
}

struct Group {
    workers: Vec<Worker>,
    pending: AtomicUsize,
    thread: OnceLock<Thread>,
    rounds: AtomicU64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    ensure!(
        cli.message_threads > 0 && cli.workers > 0,
        "need at least one message thread and one worker"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let measure_from = Arc::new(AtomicU64::new(u64::MAX));
    let groups: Vec<Arc<Group>> = (0..cli.message_threads)
        .map(|_| {
            Arc::new(Group {
                workers: (0..cli.workers)
                    .map(|_| Worker {
                        posted: AtomicU64::new(0),
                        go: AtomicBool::new(false),
                        thread: OnceLock::new(),
                    })
                    .collect(),
                pending: AtomicUsize::new(0),
                thread: OnceLock::new(),
                rounds: AtomicU64::new(0),
            })
        })
        .collect();

    let mut worker_handles = Vec::new();
    for g in &groups {
        for w in 0..cli.workers {
            let (gc, stop, from) = (g.clone(), stop.clone(), measure_from.clone());
            let work_ns = cli.work_us * 1000;
            let h = thread::spawn(move || {
                let g = gc;
                let me = &g.workers[w];
                let mut lat = Vec::with_capacity(1 << 16);
                loop {
                    while !me.go.swap(false, SeqCst) {
                        if stop.load(SeqCst) {
                            return lat;
                        }
                        thread::park();
                    }
                    let now = mono_ns();
                    let posted = me.posted.load(SeqCst);
                    if posted >= from.load(SeqCst) {
                        lat.push(now.saturating_sub(posted));
                    }
                    spin_cpu_ns(work_ns);
                    if g.pending.fetch_sub(1, SeqCst) == 1 {
                        if let Some(t) = g.thread.get() {
                            t.unpark();
                        }
                    }
                }
            });
            g.workers[w]
                .thread
                .set(h.thread().clone())
                .expect("set once");
            worker_handles.push(h);
        }
    }
    let mut msg_handles = Vec::new();
    for g in &groups {
        let (gc, stop) = (g.clone(), stop.clone());
        let sleep = Duration::from_micros(cli.sleep_us);
        let h = thread::spawn(move || {
            let g = gc;
            // Before the first wakeup, so the last worker can always wake us.
            let _ = g.thread.get_or_init(thread::current);
            while !stop.load(SeqCst) {
                g.pending.store(g.workers.len(), SeqCst);
                for w in &g.workers {
                    w.posted.store(mono_ns(), SeqCst);
                    w.go.store(true, SeqCst);
                    if let Some(t) = w.thread.get() {
                        t.unpark();
                    }
                }
                while g.pending.load(SeqCst) > 0 {
                    thread::park();
                }
                g.rounds.fetch_add(1, SeqCst);
                if !sleep.is_zero() {
                    thread::sleep(sleep);
                }
            }
            for w in &g.workers {
                if let Some(t) = w.thread.get() {
                    t.unpark();
                }
            }
        });
        let _ = g.thread.get_or_init(|| h.thread().clone());
        msg_handles.push(h);
    }

    thread::sleep(Duration::from_secs_f64(cli.warmup_s));
    let rounds0: u64 = groups.iter().map(|g| g.rounds.load(SeqCst)).sum();
    let t0 = mono_ns();
    measure_from.store(t0, SeqCst);
    thread::sleep(Duration::from_secs_f64(cli.runtime_s));
    let rounds1: u64 = groups.iter().map(|g| g.rounds.load(SeqCst)).sum();
    let t1 = mono_ns();
    stop.store(true, SeqCst);
    for h in msg_handles {
        h.join().expect("message thread panicked");
    }
    let mut all: Vec<u64> = Vec::new();
    for h in worker_handles {
        all.extend(h.join().expect("worker panicked"));
    }
    all.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "message_threads {} workers {} work_us {} sleep_us {}",
        cli.message_threads, cli.workers, cli.work_us, cli.sleep_us
    );
    println!("samples {}", all.len());
    println!("p50_us {:.1}", us(percentile(&all, 50.0)));
    println!("p90_us {:.1}", us(percentile(&all, 90.0)));
    println!("p99_us {:.1}", us(percentile(&all, 99.0)));
    println!("max_us {:.1}", us(all.last().copied().unwrap_or(0)));
    println!(
        "rounds_per_sec {:.1}",
        (rounds1 - rounds0) as f64 / ((t1 - t0) as f64 / 1e9)
    );
    ensure!(!all.is_empty(), "no wakeups measured");
    Ok(())
}
