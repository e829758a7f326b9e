// SPDX-License-Identifier: MIT OR Apache-2.0
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enoki_cli::load::{self, LoadParams};
use enoki_cli::record::{self, RecordPaths, Recording};
use enoki_cli::Paths;

/// Record what passes between the kernel and the loaded scheduler.
///
/// Starts Enoki-C's recorder, runs CMD (or waits for SIGINT/SIGTERM when
/// none is given), draining the record rings every few milliseconds, then
/// writes every message and lock event to a .enk trace that `enoki-sim
/// replay` can check against the scheduler's source. Prints a summary;
/// exits with CMD's status. Needs debugfs mounted
/// ($ENOKI_DEBUGFS, default /sys/kernel/debug/enoki).
///
/// A trace replays only from the scheduler's first message: record a
/// scheduler that is already loaded only to look at the trace, and use
/// --load SCHED (recording starts before the module loads) to replay it.
#[derive(clap::Args)]
pub struct Args {
    /// The .enk file to write
    #[arg(short, long)]
    output: PathBuf,
    /// Write uncompressed blocks
    #[arg(long)]
    no_compress: bool,
    /// Size of each CPU's record ring in KiB (default: the kernel's, 8192);
    /// a larger one rides out longer stretches where the drain falls behind
    #[arg(long, value_name = "KIB")]
    buffer_kib: Option<u64>,
    /// Load this scheduler once recording has started (replayable trace)
    #[arg(long, value_name = "SCHED")]
    load: Option<String>,
    /// With --load: its module parameters, as for `enoki load`
    #[command(flatten)]
    options: super::load::Options,
    /// Command to run while recording
    #[arg(last = true)]
    cmd: Vec<OsString>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler) };
    }
}

pub fn run(mut a: Args) -> anyhow::Result<ExitCode> {
    enoki_cli::ensure_root()?;
    let params = std::mem::take(&mut a.options).params();
    if a.load.is_none() && params != LoadParams::default() {
        anyhow::bail!("module parameters need --load SCHED");
    }
    let paths = RecordPaths::from_env();
    let header = match &a.load {
        None => Some(record::build_header(&paths)?),
        Some(sched) => {
            // Refuses a scheduler still running, not one that ended.
            load::preflight(&Paths::from_env(), sched)?;
            None
        }
    };
    if let Some(kib) = a.buffer_kib {
        let got = record::set_buffer_kib(&paths, kib)?;
        eprintln!("enoki record: {got} KiB of records per CPU");
    }
    // With a command, SIGINT reaches it too: we wait for it to end. Without, it stops us.
    catch_signals();
    let rec = Recording::start(&paths)?;
    let started = rec.started();
    let header = match (header, &a.load) {
        (Some(h), _) => h,
        (None, Some(sched)) => {
            load::load(&Paths::from_env(), sched, &params)?;
            record::build_header(&paths)?
        }
        (None, None) => unreachable!(),
    };
    let status = (|| -> anyhow::Result<u8> {
        if a.cmd.is_empty() {
            while !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(0);
        }
        let st = std::process::Command::new(&a.cmd[0])
            .args(&a.cmd[1..])
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run {:?}: {e}", a.cmd[0]))?;
        Ok(match (st.code(), st.signal()) {
            (Some(c), _) => c as u8,
            (None, Some(s)) => 128u8.wrapping_add(s as u8),
            _ => 1,
        })
    })();
    // The recorded run: from recording on to the command's end. Stopping
    // (waiting out the calls in flight, the last drain) comes after it.
    let duration = started.elapsed();
    let (drained, drops) = rec.stop()?;
    let status = status?;
    let records = drained
        .records()
        .map_err(|e| anyhow::anyhow!("the drained records: {e}"))?;
    let summary = record::write_trace(&a.output, header, records, drops, !a.no_compress, duration)?;
    eprintln!("enoki record: wrote {}", a.output.display());
    println!("{summary}");
    Ok(ExitCode::from(status))
}
