// SPDX-License-Identifier: MIT OR Apache-2.0
//! `mttcg-soak [--boots N] [--accel A]`: boots the test kernel N times under
//! multi-threaded TCG, each boot loading and unloading every scheduler under
//! stress, and reports clean and failed boots with the first bad log line.
//! Evidence that the kernel profile is safe for MTTCG before the launcher
//! relies on it (`cargo make mttcg-soak`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use enoki_itests as it;

#[derive(Parser)]
#[command(about = "Boot the test kernel N times under MTTCG with scheduler load/unload cycles")]
struct Cli {
    /// Boots to run
    #[arg(long, default_value_t = 50)]
    boots: u32,
    /// Load/unload cycles per boot (each scheduler in turn)
    #[arg(long, default_value_t = 5)]
    cycles: u32,
    /// Accelerator to soak
    #[arg(long, default_value = "mttcg")]
    accel: it::Accel,
}

/// Schedulers cycled through; every one must load, take the load and unload.
const SCHEDULERS: &[&str] = &["fifo", "wfq"];

fn script(cycles: u32) -> String {
    let mut s = String::from("set -e\n");
    for c in 0..cycles {
        let sched = SCHEDULERS
            .get(c as usize % SCHEDULERS.len())
            .copied()
            .unwrap_or("fifo");
        s.push_str(&format!(
            "enoki load {sched} --mode all >/dev/null\n\
             stress-ng -q -c 8 -f 2 -t 3\n\
             enoki unload >/dev/null\n"
        ));
    }
    s
}

/// Why a boot failed, or None when it was clean.
fn verdict(out: &it::Outcome) -> Option<String> {
    if let Some(first) = out.problems().into_iter().next() {
        return Some(first);
    }
    if let Some(why) = out.failure() {
        return Some(why);
    }
    (!out.success()).then(|| {
        let last = out.output.lines().last().unwrap_or("");
        format!("exit status {:?}: {last}", out.exit_code)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = it::VmConfig::new()
        .expect("finding the workspace root")
        .accel(cli.accel)
        .timeout(Duration::from_secs(300));
    let vm = it::vm(cfg);
    let cmd = script(cli.cycles);
    let started = Instant::now();
    let mut failed = Vec::new();
    for boot in 1..=cli.boots {
        let t = Instant::now();
        let why = match vm.run(&cmd) {
            Ok(out) => {
                verdict(&out).map(|w| format!("{w} (serial log {})", out.serial_log.display()))
            }
            Err(e) => Some(format!("launch failed: {e:#}")),
        };
        let secs = t.elapsed().as_secs_f64();
        match &why {
            None => println!("mttcg-soak: boot {boot}/{}: clean ({secs:.1} s)", cli.boots),
            Some(w) => println!(
                "mttcg-soak: boot {boot}/{}: FAILED ({secs:.1} s): {w}",
                cli.boots
            ),
        }
        if let Some(w) = why {
            failed.push((boot, w));
        }
    }
    let clean = cli.boots - failed.len() as u32;
    println!(
        "mttcg-soak: {clean} of {} boots clean under {}, {} cycles each of {} ({:.0} s)",
        cli.boots,
        vm.accel(),
        cli.cycles,
        SCHEDULERS.join("/"),
        started.elapsed().as_secs_f64()
    );
    for (boot, w) in &failed {
        println!("mttcg-soak: boot {boot}: {w}");
    }
    println!("{clean} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
