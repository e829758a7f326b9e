// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-sim`: simulate, record, replay.
//!
//! Exit status: 0 fine; 1 an invariant was violated (run) or the replay
//! diverged; 2 bad input or an unreadable trace.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use enoki_sim::registry::{self, SCHEDULERS};
use enoki_sim::replay::{describe_record, ReplayOptions};
use enoki_sim::sim::{trace_header, Recorder, SimConfig};
use enoki_sim::spec::{
    ForkStorm, Machine, PingPong, RequestClass, Requests, Sleeper, Spec, Spinner,
};
use enoki_sim::trace::{self, TraceHeader, TraceReader, TraceWriter};
use enoki_sim::{perfetto, spec::AffinityChange, spec::Renice};

#[derive(Parser)]
#[command(
    name = "enoki-sim",
    version,
    about = "Simulate Enoki schedulers; record and replay .enk traces"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Simulate a workload (the default command).
    Run(RunArgs),
    /// Replay a trace against the scheduler it recorded (or --sched).
    Replay(ReplayArgs),
    /// Print a trace's header and records.
    Dump(DumpArgs),
    /// Turn a kernel recording (debugfs enoki/trace and enoki/topology) into a .enk trace.
    Import(ImportArgs),
    /// List the schedulers this build knows.
    List,
}

#[derive(Args, Default)]
struct RunArgs {
    /// Scheduler to run (see `enoki-sim list`).
    #[arg(long, default_value = "fifo")]
    sched: String,
    /// Workload spec (TOML; see sim/examples/). Flags below add to it.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Seed for every random choice. Without any task given, the workload
    /// itself is drawn from the seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Machine: SOCKETSxCORESxTHREADS (e.g. 2x4x2) or a CPU count.
    #[arg(long)]
    machine: Option<String>,
    #[arg(long)]
    duration_ms: Option<u64>,
    #[arg(long)]
    tick_us: Option<u64>,
    /// Module parameter slice_ns, in µs.
    #[arg(long)]
    slice_us: Option<u64>,
    /// Module parameter max_tasks.
    #[arg(long)]
    max_tasks: Option<usize>,
    /// Module parameter args (scheduler-specific key=value,...).
    #[arg(long)]
    args: Option<String>,
    /// Stall bound for the invariant checker, ms.
    #[arg(long)]
    stall_ms: Option<u64>,
    /// CPU spinners: COUNT[:NICE].
    #[arg(long, value_name = "COUNT[:NICE]")]
    spin: Vec<String>,
    /// Sleep/wake loops: COUNT:RUN_US:SLEEP_US.
    #[arg(long, value_name = "COUNT:RUN_US:SLEEP_US")]
    sleep: Vec<String>,
    /// Ping-pong pairs: PAIRS[:WORK_US].
    #[arg(long, value_name = "PAIRS[:WORK_US]")]
    pingpong: Vec<String>,
    /// Fork storms: EVERY_US:BURST:RUN_US[:LIMIT].
    #[arg(long, value_name = "EVERY_US:BURST:RUN_US[:LIMIT]")]
    forks: Vec<String>,
    /// Request pools: RATE_PER_S:WORKERS (service times from --mix).
    #[arg(long, value_name = "RATE_PER_S:WORKERS")]
    requests: Vec<String>,
    /// Service-time mix for --requests: WEIGHT:US,...
    #[arg(long, default_value = "99.5:5,0.5:500")]
    mix: String,
    /// Affinity change: AT_MS:TARGET:CPULIST (TARGET a group or task name).
    #[arg(long, value_name = "AT_MS:TARGET:CPULIST")]
    affinity: Vec<String>,
    /// Nice change: AT_MS:TARGET:NICE.
    #[arg(long, value_name = "AT_MS:TARGET:NICE")]
    renice: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write a Chrome/Perfetto trace-event timeline.
    #[arg(long, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    /// Record every message into the scheduler to a .enk trace.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Do not check invariants.
    #[arg(long)]
    no_check: bool,
    /// Print the workload as TOML and exit.
    #[arg(long)]
    print_spec: bool,
}

#[derive(Args)]
struct ReplayArgs {
    trace: PathBuf,
    /// Replay against this scheduler instead of the recorded one.
    #[arg(long)]
    sched: Option<String>,
    /// Events to show before a divergence.
    #[arg(long, default_value_t = 10)]
    context: usize,
    /// Write a Chrome/Perfetto timeline rebuilt from the trace.
    #[arg(long, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Lock-ordered replay: one thread per recorded CPU, each lock taken in
    /// the recorded order (for kernel traces, where calls overlap)
    #[arg(long)]
    by_locks: bool,
    /// End at the first message numbered SEQ or later, calling
    /// `enoki_sim::replay::stop::stopped_before` just before handing it to
    /// the scheduler: break there in gdb to step into that call
    #[arg(long, value_name = "SEQ")]
    stop_before: Option<u64>,
    /// Replay up to the first divergence, then again to stop just before
    /// it, as --stop-before would
    #[arg(long, conflicts_with = "stop_before")]
    stop_at_divergence: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// Raw records: a copy of /sys/kernel/debug/enoki/trace.
    records: PathBuf,
    /// A copy of /sys/kernel/debug/enoki/topology.
    #[arg(long)]
    topology: PathBuf,
    /// Scheduler that was recorded (/sys/kernel/enoki/scheduler).
    #[arg(long)]
    sched: String,
    /// Output trace.
    #[arg(short, long)]
    output: PathBuf,
    /// Build of the recorded module (e.g. its srcversion).
    #[arg(long, default_value = "kernel")]
    build_id: String,
    /// Module parameter slice_us.
    #[arg(long, default_value_t = 3000)]
    slice_us: u64,
    /// Module parameter max_tasks.
    #[arg(long, default_value_t = 4096)]
    max_tasks: u64,
    /// Module parameter args.
    #[arg(long, default_value = "")]
    args: String,
    /// Events the recorder dropped (/sys/kernel/enoki/record_drops).
    #[arg(long, default_value_t = 0)]
    dropped: u64,
}

#[derive(Args)]
struct DumpArgs {
    trace: PathBuf,
    /// Records to print (0: header only).
    #[arg(long, default_value_t = u64::MAX)]
    limit: u64,
}

fn split<const N: usize>(s: &str, what: &str, min: usize) -> Result<Vec<String>> {
    let parts: Vec<String> = s.split(':').map(str::to_owned).collect();
    if parts.len() < min || parts.len() > N {
        bail!("bad {what} {s:?}");
    }
    Ok(parts)
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.trim()
        .parse::<T>()
        .map_err(|_| anyhow::anyhow!("bad number {s:?} in {what}"))
}

fn mix(s: &str) -> Result<Vec<RequestClass>> {
    s.split(',')
        .map(|c| {
            let (w, us) = c
                .split_once(':')
                .with_context(|| format!("bad --mix class {c:?}: want WEIGHT:US"))?;
            Ok(RequestClass {
                weight: num(w, "--mix")?,
                service_us: num(us, "--mix")?,
            })
        })
        .collect()
}

/// The name of the `i`th group a task flag adds.
fn flag_group(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_owned()
    } else {
        format!("{base}{i}")
    }
}

/// `--spin COUNT[:NICE]`.
fn spinner(i: usize, f: &str) -> Result<Spinner> {
    let p = split::<2>(f, "--spin", 1)?;
    let nice = p.get(1).map(|n| num(n, "--spin")).transpose()?.unwrap_or(0);
    Ok(Spinner {
        name: flag_group("cli-spin", i),
        count: num(&p[0], "--spin")?,
        nice,
        cpus: None,
    })
}

/// `--sleep COUNT:RUN_US:SLEEP_US`.
fn sleeper(i: usize, f: &str) -> Result<Sleeper> {
    let p = split::<3>(f, "--sleep", 3)?;
    Ok(Sleeper {
        name: flag_group("cli-sleep", i),
        count: num(&p[0], "--sleep")?,
        nice: 0,
        run_us: num(&p[1], "--sleep")?,
        sleep_us: num(&p[2], "--sleep")?,
        cpus: None,
    })
}

/// `--pingpong PAIRS[:WORK_US]`.
fn pingpong(i: usize, f: &str) -> Result<PingPong> {
    let p = split::<2>(f, "--pingpong", 1)?;
    let work_us = p
        .get(1)
        .map(|n| num(n, "--pingpong"))
        .transpose()?
        .unwrap_or(5);
    Ok(PingPong {
        name: flag_group("cli-pipe", i),
        pairs: num(&p[0], "--pingpong")?,
        work_us,
        nice: 0,
        cpus: None,
    })
}

/// `--forks EVERY_US:BURST:RUN_US[:LIMIT]`.
fn forkstorm(i: usize, f: &str) -> Result<ForkStorm> {
    let p = split::<4>(f, "--forks", 3)?;
    Ok(ForkStorm {
        name: flag_group("cli-fork", i),
        every_us: num(&p[0], "--forks")?,
        burst: num(&p[1], "--forks")?,
        run_us: num(&p[2], "--forks")?,
        limit: p
            .get(3)
            .map(|n| num(n, "--forks"))
            .transpose()?
            .unwrap_or(0),
        nice: 0,
    })
}

/// `--requests RATE_PER_S:WORKERS`, service times from `--mix`.
fn requests(i: usize, f: &str, mix_flag: &str) -> Result<Requests> {
    let p = split::<2>(f, "--requests", 2)?;
    Ok(Requests {
        name: flag_group("cli-rpc", i),
        workers: num(&p[1], "--requests")?,
        rate_per_s: num(&p[0], "--requests")?,
        mix: mix(mix_flag)?,
        nice: 0,
        cpus: None,
    })
}

/// `--affinity AT_MS:TARGET:CPULIST`.
fn affinity_change(f: &str) -> Result<AffinityChange> {
    let p = split::<3>(f, "--affinity", 3)?;
    Ok(AffinityChange {
        at_ms: num(&p[0], "--affinity")?,
        target: p[1].clone(),
        cpus: p[2].clone(),
    })
}

/// `--renice AT_MS:TARGET:NICE`.
fn renice(f: &str) -> Result<Renice> {
    let p = split::<3>(f, "--renice", 3)?;
    Ok(Renice {
        at_ms: num(&p[0], "--renice")?,
        target: p[1].clone(),
        nice: num(&p[2], "--renice")?,
    })
}

impl RunArgs {
    /// The spec file plus the flags; a random workload when neither names a task.
    fn spec(&self) -> Result<(Spec, bool)> {
        let mut s = match &self.spec {
            Some(path) => Spec::load(path)?,
            None => Spec::default(),
        };
        self.add_tasks(&mut s)?;
        // Nothing but defaults so far: the seed's random workload.
        let random = s.has_no_tasks() && self.spec.is_none();
        if random {
            s = Spec::random(self.seed);
        }
        for f in &self.affinity {
            s.affinity.push(affinity_change(f)?);
        }
        for f in &self.renice {
            s.renice.push(renice(f)?);
        }
        self.set_machine_and_run(&mut s)?;
        s.validate()?;
        Ok((s, random))
    }

    /// The task groups the flags name.
    fn add_tasks(&self, s: &mut Spec) -> Result<()> {
        for (i, f) in self.spin.iter().enumerate() {
            s.spinners.push(spinner(i, f)?);
        }
        for (i, f) in self.sleep.iter().enumerate() {
            s.sleepers.push(sleeper(i, f)?);
        }
        for (i, f) in self.pingpong.iter().enumerate() {
            s.pingpongs.push(pingpong(i, f)?);
        }
        for (i, f) in self.forks.iter().enumerate() {
            s.forkstorms.push(forkstorm(i, f)?);
        }
        for (i, f) in self.requests.iter().enumerate() {
            s.requests.push(requests(i, f, &self.mix)?);
        }
        Ok(())
    }

    /// The machine and the run parameters the flags override.
    fn set_machine_and_run(&self, s: &mut Spec) -> Result<()> {
        if let Some(m) = &self.machine {
            s.machine = Machine {
                numa_distance: s.machine.numa_distance,
                ..Machine::parse(m)?
            };
        }
        let r = &mut s.run;
        r.duration_ms = self.duration_ms.unwrap_or(r.duration_ms);
        r.tick_us = self.tick_us.unwrap_or(r.tick_us);
        r.slice_us = self.slice_us.unwrap_or(r.slice_us);
        r.max_tasks = self.max_tasks.unwrap_or(r.max_tasks);
        r.stall_ms = self.stall_ms.unwrap_or(r.stall_ms);
        if let Some(a) = &self.args {
            r.args = a.clone();
        }
        Ok(())
    }
}

fn run(a: RunArgs) -> Result<u8> {
    let entry = registry::find(&a.sched)?;
    let (spec, random) = a.spec()?;
    if a.print_spec {
        print!("{}", spec.to_toml());
        return Ok(0);
    }
    if random && !a.json {
        eprintln!(
            "no workload given: running the random workload of seed {} (--print-spec shows it)",
            a.seed
        );
    }
    let mut cfg = SimConfig::new(spec.clone(), a.seed, entry.props);
    cfg.timeline = a.perfetto.is_some();
    cfg.check = !a.no_check;
    let recorder = match &a.record {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let r = Recorder::new(
                std::io::BufWriter::new(file),
                trace_header(entry.name, &spec)?,
            )?;
            cfg.record = Some(r.sink());
            Some(r)
        }
        None => None,
    };
    let out = (entry.simulate)(cfg)?;
    if let (Some(r), Some(path)) = (recorder, &a.record) {
        r.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.perfetto {
        let doc = perfetto::to_json(
            out.report.nr_cpus,
            &out.timeline,
            &out.names,
            &out.report.violations,
        );
        perfetto::write(path, &doc)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out.report)?);
    } else {
        print!("{}", out.report.to_text());
    }
    if !out.report.violations.is_empty() {
        eprintln!(
            "invariants violated; reproduce with: enoki-sim --sched {} --seed {}{}",
            entry.name,
            a.seed,
            if random { "" } else { " (same workload flags)" }
        );
        return Ok(1);
    }
    Ok(0)
}

fn replay(a: ReplayArgs) -> Result<u8> {
    let mut reader =
        TraceReader::open(&a.trace).with_context(|| format!("reading {}", a.trace.display()))?;
    let header = reader.header().clone();
    let name = a.sched.clone().unwrap_or_else(|| header.scheduler.clone());
    let entry = registry::find(&name).with_context(|| {
        format!(
            "the trace was recorded with scheduler {:?}",
            header.scheduler
        )
    })?;
    let mut opts = ReplayOptions {
        context: a.context,
        timeline: a.perfetto.is_some(),
        stop_before: a.stop_before,
    };
    let run = if a.by_locks {
        entry.replay_by_locks
    } else {
        entry.replay
    };
    let mut rep = run(&header, &mut reader, &opts)?;
    if let (true, Some(d)) = (a.stop_at_divergence, &rep.divergence) {
        eprintln!(
            "replaying again, to stop before the divergence at seq {}",
            d.record.seq
        );
        opts.stop_before = Some(d.record.seq);
        let mut reader = TraceReader::open(&a.trace)?;
        rep = run(&header, &mut reader, &opts)?;
    }
    for n in &rep.notices {
        eprintln!("notice: {n}");
    }
    if let (Some(path), Some(slices)) = (&a.perfetto, &rep.timeline) {
        let doc = perfetto::to_json(
            header.topology.nr_cpus as usize,
            slices,
            &BTreeMap::new(),
            &[],
        );
        perfetto::write(path, &doc)?;
    }
    if a.json {
        let d = rep.divergence.as_ref().map(|d| {
            serde_json::json!({
                "index": d.index, "seq": d.record.seq, "cpu": d.record.cpu,
                "message": enoki_sim::replay::describe(&d.message()),
                "expected": d.expected, "actual": d.actual,
                "context": d.context.iter().map(describe_record).collect::<Vec<_>>(),
            })
        });
        let doc = serde_json::json!({
            "scheduler": rep.scheduler, "recorded_scheduler": header.scheduler, "build_id": header.build_id,
            "messages": rep.messages, "lock_events": rep.lock_events, "read_ahead": rep.read_ahead, "seq_gaps": rep.seq_gaps,
            "notices": rep.notices, "divergence": d, "read_error": rep.read_error.as_ref().map(|e| e.to_string()),
            "gap": rep.gap, "upgrade": rep.upgrade, "exit": rep.exit, "stopped_at": rep.stopped_at, "fault": rep.fault.map(|f| f.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "replayed {} messages and {} lock events of {} against {}",
            rep.messages,
            rep.lock_events,
            a.trace.display(),
            rep.scheduler
        );
        if let Some(d) = &rep.divergence {
            print!("{d}");
        }
        if let Some(f) = &rep.fault {
            println!("the scheduler failed: {f}");
        }
    }
    if let Some(e) = &rep.read_error {
        eprintln!(
            "error: {}: {e} (replayed the {} messages before it)",
            a.trace.display(),
            rep.messages
        );
    }
    let stop = match (&rep.gap, &rep.upgrade, &rep.exit) {
        (Some(g), ..) => Some(format!("{g}: replay stopped there")),
        (None, Some(u), _) => Some(format!(
            "{u}: replay stopped there, at the end of the recorded version"
        )),
        (None, None, Some(e)) => Some(format!("{e}; replay ended there, as the run did")),
        (None, None, None) => None,
    };
    let say = |line: String| {
        if a.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if let (Some(stop), None) = (stop, &rep.divergence) {
        say(format!(
            "{stop}; no divergence in the {} messages before it",
            rep.messages
        ));
    }
    if let Some(seq) = rep.stopped_at {
        say(format!(
            "stopped at seq {seq} as asked: its message was the last replayed, \
             right after a call to enoki_sim::replay::stop::stopped_before"
        ));
    }
    Ok(match (&rep.divergence, &rep.read_error, &rep.gap) {
        (Some(_), _, _) => 1,
        (None, Some(_), _) => 2,
        (None, None, Some(_)) => 3,
        (None, None, None) => {
            if !a.json {
                println!("no divergence");
            }
            0
        }
    })
}

fn import(a: ImportArgs) -> Result<u8> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let topology = trace::topology_from_kernel(&read(&a.topology)?)
        .with_context(|| format!("{} is not an enoki topology dump", a.topology.display()))?;
    let records = trace::records_from_kernel(&read(&a.records)?)
        .with_context(|| a.records.display().to_string())?;
    let header = TraceHeader {
        abi_version: enoki::abi::ABI_VERSION,
        flags: trace::HEADER_LOCKS,
        scheduler: a.sched,
        build_id: a.build_id,
        topology,
        dropped_events: 0,
        max_tasks: a.max_tasks,
        slice_ns: a.slice_us * 1000,
        args: a.args,
    };
    let file = std::fs::File::create(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let mut w = TraceWriter::new(std::io::BufWriter::new(file), header)?;
    for r in &records {
        w.write(r)?;
    }
    w.note_dropped(a.dropped);
    w.finish()?;
    println!("{} records into {}", records.len(), a.output.display());
    Ok(0)
}

fn dump(a: DumpArgs) -> Result<u8> {
    let mut reader =
        TraceReader::open(&a.trace).with_context(|| format!("reading {}", a.trace.display()))?;
    let h = reader.header().clone();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "scheduler {:?}  build {:?}  ABI {}",
        h.scheduler, h.build_id, h.abi_version
    )?;
    writeln!(
        out,
        "{} CPUs, {} nodes; max_tasks {} slice_ns {} args {:?}; dropped events {}",
        h.topology.nr_cpus, h.topology.nr_nodes, h.max_tasks, h.slice_ns, h.args, h.dropped_events
    )?;
    let mut shown = 0;
    while let Some(r) = reader.next_record()? {
        if shown < a.limit {
            writeln!(out, "{}", describe_record(&r))?;
            shown += 1;
        }
    }
    let end = reader.end().map_or("?".into(), |e| e.records.to_string());
    writeln!(out, "{} records", end)?;
    Ok(0)
}

/// Whether `e` is a write to a pipe whose reader left (`dump | head`):
/// the output was not wanted any more, which is no failure.
fn reader_left(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Run(a)) => run(a),
        Some(Command::Replay(a)) => replay(a),
        Some(Command::Dump(a)) => dump(a),
        Some(Command::Import(a)) => import(a),
        Some(Command::List) => {
            for e in SCHEDULERS {
                println!(
                    "{:<10} correct={} work_conserving={}",
                    e.name, e.props.correct, e.props.work_conserving
                );
            }
            Ok(0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if reader_left(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
