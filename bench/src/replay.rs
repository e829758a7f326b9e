// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--only replay`: how fast lock-ordered replay runs on this host, on
//! kernel traces. One VM boot records FIFO and WFQ (each loaded by
//! `enoki record --load`, `--mode all`) under a mixed load: hackbench-style
//! messaging and pipe round trips. The host then replays each trace by
//! locks `--reps` times and reports messages per second (median and range)
//! against the target, and the replay's peak memory (the streaming replay
//! keeps only what the fibers still need, not the trace).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use enoki_sim::replay::ReplayOptions;
use enoki_trace::TraceReader;

pub const NAME: &str = "replay";
pub const WHAT: &str =
    "records FIFO and WFQ in the VM, replays each trace by locks on the host: messages/s";

/// Lock-ordered replay speed wanted on a 2-core host (messages per second).
pub const TARGET_MSGS_PER_S: f64 = 500_000.0;

const SCHEDULERS: [&str; 2] = ["fifo", "wfq"];

/// The recorded load: hackbench-style messaging, then pipe round trips.
/// (`stress-ng --switch` here once made the recorder's drain thread fall
/// behind for minutes, and FIFO was ejected for a stall meanwhile.)
const LOAD: &str = "perf bench -f simple sched messaging -g 4 -l 100 >/dev/null; \
                    perf bench -f simple sched pipe -l 5000 >/dev/null";

/// The guest command: one trace per scheduler in `raw`, and what
/// `enoki record` said about it beside it.
pub fn guest_command(raw: &Path) -> String {
    SCHEDULERS
        .iter()
        .map(|s| {
            let trace = raw.join(format!("{s}.enk"));
            let said = raw.join(format!("{s}.record.txt"));
            format!(
                "enoki record -o {} --load {s} --mode all -- sh -c '{LOAD}' >{} 2>&1; \
                 echo \"exit $?\" >>{}; enoki unload",
                trace.display(),
                said.display(),
                said.display()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One replay of one trace.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub messages: u64,
    pub lock_events: u64,
    pub seconds: f64,
    /// Peak resident memory of this process during the replay (KiB).
    pub peak_kib: u64,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
}

/// Replays `trace` by locks once; fails on a divergence or a cut trace.
fn replay_once(trace: &Path) -> Result<Sample> {
    let mut reader =
        TraceReader::open(trace).with_context(|| format!("reading {}", trace.display()))?;
    let header = reader.header().clone();
    let entry = enoki_sim::registry::find(&header.scheduler)?;
    reset_peak_memory();
    let start = Instant::now();
    let rep = (entry.replay_by_locks)(&header, &mut reader, &ReplayOptions::default())?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(d) = &rep.divergence {
        bail!("{} diverged:\n{d}", trace.display());
    }
    if let Some(g) = &rep.gap {
        bail!("{}: {g}; record again", trace.display());
    }
    Ok(Sample {
        messages: rep.messages,
        lock_events: rep.lock_events,
        seconds,
        peak_kib: peak_memory_kib(),
    })
}

/// Resets the kernel's peak-RSS mark of this process (`clear_refs` 5).
fn reset_peak_memory() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, KiB (0 if unknown).
fn peak_memory_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// "met" when every repetition reaches the target, "missed" when none
/// does, else "undecided".
pub fn verdict(samples: &[Sample], target: f64) -> &'static str {
    let reached = samples.iter().filter(|s| s.rate() >= target).count();
    match reached {
        0 => "missed",
        n if n == samples.len() => "met",
        _ => "undecided",
    }
}

/// One line per trace: size, messages, rate (median, range), memory,
/// verdict.
pub fn summary_line(sched: &str, trace_bytes: u64, samples: &[Sample]) -> String {
    let rates: Vec<f64> = samples.iter().map(Sample::rate).collect();
    let (lo, hi) = rates
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
    let first = samples.first().copied().unwrap_or(Sample {
        messages: 0,
        lock_events: 0,
        seconds: 0.0,
        peak_kib: 0,
    });
    let peak = samples.iter().map(|s| s.peak_kib).max().unwrap_or(0);
    format!(
        "| {sched} | {:.1} MB | {} | {} | {:.0}k (range {:.0}k-{:.0}k) | {} MiB | {} |",
        trace_bytes as f64 / 1e6,
        first.messages,
        first.lock_events,
        crate::stats::median(&rates).unwrap_or(f64::NAN) / 1e3,
        lo / 1e3,
        hi / 1e3,
        peak / 1024,
        verdict(samples, TARGET_MSGS_PER_S)
    )
}

/// What the recording boot did: how long it took, and the kernel-log
/// problems it had (the traces still replay; the report names them).
pub struct Recorded {
    pub took: Duration,
    pub problems: Vec<String>,
}

/// Records in a VM (`boot` runs the guest command), replays, writes
/// `results.md` in `dir` and `latest-replay.md` beside it.
pub fn run(
    reps: usize,
    dir: &Path,
    raw: &Path,
    boot: impl FnOnce(&str) -> Result<Recorded>,
) -> Result<PathBuf> {
    let rec = boot(&guest_command(raw))?;
    let vm_time = rec.took;
    let mut md = String::new();
    writeln!(
        md,
        "# Lock-ordered replay speed\n\nKernel traces recorded in one VM boot ({:.0} s) under `{LOAD}`, \
         replayed by locks on this host {reps} times each. Target: {:.0}k messages/s.\n\n\
         | scheduler | trace | messages | lock events | messages/s (median) | peak memory | target |\n\
         |---|---|---|---|---|---|---|",
        vm_time.as_secs_f64(),
        TARGET_MSGS_PER_S / 1e3
    )?;
    for p in &rec.problems {
        println!("bench: replay: kernel log problem while recording: {p}");
    }
    let mut failed = Vec::new();
    for s in SCHEDULERS {
        let line = match measure(s, raw, reps) {
            Ok(line) => line,
            Err(e) => {
                failed.push(s);
                format!("| {s} | not measured: {} | | | | | |", first_line(&e))
            }
        };
        println!("bench: replay {line}");
        writeln!(md, "{line}")?;
    }
    if !rec.problems.is_empty() {
        writeln!(
            md,
            "\nKernel log problems while recording (the traces replay as recorded):\n"
        )?;
        for p in &rec.problems {
            writeln!(md, "- `{p}`")?;
        }
    }
    fs::write(dir.join("results.md"), &md)?;
    if let Some(parent) = dir.parent() {
        fs::write(parent.join("latest-replay.md"), &md)?;
    }
    if !failed.is_empty() {
        bail!(
            "no replay speed for {} (see {})",
            failed.join(", "),
            dir.join("results.md").display()
        );
    }
    Ok(dir.join("results.md"))
}

/// The report line of scheduler `s`: its trace from `raw` replayed `reps`
/// times.
fn measure(s: &str, raw: &Path, reps: usize) -> Result<String> {
    let trace = raw.join(format!("{s}.enk"));
    let said_at = raw.join(format!("{s}.record.txt"));
    let said = fs::read_to_string(&said_at).unwrap_or_default();
    if !trace.exists() || !said.contains("exit 0") {
        bail!("recording failed (see {})", said_at.display());
    }
    let bytes = fs::metadata(&trace)?.len();
    let samples = (0..reps)
        .map(|_| replay_once(&trace))
        .collect::<Result<Vec<_>>>()?;
    Ok(summary_line(s, bytes, &samples))
}

fn first_line(e: &anyhow::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64) -> Sample {
        Sample {
            messages: 1000,
            lock_events: 5000,
            seconds: 1000.0 / rate,
            peak_kib: 2048,
        }
    }

    #[test]
    fn verdict_needs_every_repetition_on_the_same_side() {
        let t = TARGET_MSGS_PER_S;
        assert_eq!(verdict(&[sample(2.0 * t), sample(1.1 * t)], t), "met");
        assert_eq!(verdict(&[sample(0.5 * t), sample(0.9 * t)], t), "missed");
        assert_eq!(verdict(&[sample(0.9 * t), sample(1.1 * t)], t), "undecided");
    }

    #[test]
    fn summary_line_gives_median_range_and_memory() {
        let line = summary_line(
            "fifo",
            21_000_000,
            &[sample(300e3), sample(200e3), sample(250e3)],
        );
        assert_eq!(
            line,
            "| fifo | 21.0 MB | 1000 | 5000 | 250k (range 200k-300k) | 2 MiB | missed |"
        );
    }

    #[test]
    fn the_guest_records_each_scheduler_and_unloads_it() {
        let cmd = guest_command(Path::new("/r"));
        for s in SCHEDULERS {
            assert!(cmd.contains(&format!("enoki record -o /r/{s}.enk --load {s} --mode all")));
        }
        assert_eq!(cmd.matches("enoki unload").count(), SCHEDULERS.len());
    }
}
