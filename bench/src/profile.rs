// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--profile`: where the guest kernel's instructions go on a pipe
//! ping-pong, hackbench, pipe pairs switching and a yielding thread pool
//! under the default scheduler and each listed one, from
//! `enoki-tcg-profile` (one single-threaded TCG boot per workload with its
//! counting QEMU plugin), so the report that gives a ratio also names the
//! functions behind it, and says what each scheduler's kernel work is
//! against the default's in instructions, which the time and CPU time of
//! an emulated guest do not (a task is charged for the time its vCPU waits
//! for the host thread).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// The profiled workloads: name, command in the guest.
pub const WORKLOADS: [(&str, &str); 4] = [
    ("pipe-2cpu", "enoki-pipe -l 5000 --cpus 0,1"),
    ("hackbench", "hackbench -g 2 -l 20"),
    ("switch-4pairs", "enoki-pipe --pairs 4 -l 5000"),
    ("yieldpool", "enoki-yieldpool --threads 32 --ops 2000"),
];

/// Functions listed per scheduler and table.
const TOP: usize = 12;

/// One workload's profile, as `enoki-tcg-profile` reported it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    pub workload: String,
    pub cmd: String,
    /// Its markdown report.
    pub report: String,
}

/// `enoki-tcg-profile`, built beside this binary (`cargo make bench`
/// builds it).
fn tool() -> Result<PathBuf> {
    let tool = std::env::current_exe()?.with_file_name("enoki-tcg-profile");
    ensure!(
        tool.is_file(),
        "--profile needs {} (cargo build --release -p enoki-tcg-profile)",
        tool.display()
    );
    Ok(tool)
}

/// The `--sched` list: the default scheduler, then `schedulers`.
fn sched_list(schedulers: &[String]) -> String {
    std::iter::once(crate::report::DEFAULT)
        .chain(schedulers.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(",")
}

/// Profiles every workload under the default scheduler and `schedulers`,
/// each into `dir/profile-<workload>/` (the tool's output in `tool.log`).
pub fn run(dir: &Path, schedulers: &[String]) -> Result<Vec<Section>> {
    let tool = tool()?;
    let scheds = sched_list(schedulers);
    WORKLOADS
        .iter()
        .map(|&(workload, cmd)| {
            let out = dir.join(format!("profile-{workload}"));
            fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            let log = out.join("tool.log");
            println!(
                "bench: profiling {workload} ({cmd}) under {scheds}: {}",
                out.display()
            );
            let status = Command::new(&tool)
                .args(["--sched", &scheds, "--top", &TOP.to_string(), "--out"])
                .arg(&out)
                .arg("--")
                .args(cmd.split(' '))
                .stdin(Stdio::null())
                .stdout(fs::File::create(&log)?)
                .stderr(fs::File::create(out.join("tool.err"))?)
                .status()
                .with_context(|| format!("running {}", tool.display()))?;
            ensure!(
                status.success(),
                "profiling {workload} failed ({status}): see {} and {}",
                log.display(),
                out.join("tool.err").display()
            );
            let report = fs::read_to_string(out.join("report.md"))
                .with_context(|| format!("reading {}", out.join("report.md").display()))?;
            Ok(Section {
                workload: workload.into(),
                cmd: cmd.into(),
                report,
            })
        })
        .collect()
}

impl Section {
    /// Each listed scheduler's kernel instructions over the default
    /// scheduler's, from the report's first table (`| scheduler | user |
    /// kernel | ...`, one row per scheduler; the function tables' rows name
    /// a function in backticks).
    pub fn kernel_vs_default(&self) -> Vec<(String, f64)> {
        let rows: Vec<(&str, f64)> = self
            .report
            .lines()
            .filter_map(|l| {
                let mut cells = l.trim().trim_matches('|').split('|').map(str::trim);
                let sched = cells.next()?;
                let kernel: f64 = cells.nth(1)?.parse().ok()?;
                (!sched.starts_with('`')).then_some((sched, kernel))
            })
            .collect();
        let Some(&(_, base)) = rows.iter().find(|(s, _)| *s == crate::report::DEFAULT) else {
            return Vec::new();
        };
        rows.iter()
            .filter(|(s, _)| *s != crate::report::DEFAULT && base > 0.0)
            .map(|&(s, k)| (s.to_string(), k / base))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_instructions_are_set_against_the_default_schedulers() {
        let report = "| scheduler | user | kernel | Enoki-C |\n| --- | ---: | ---: | ---: |\n\
                      | default | 9.3 | 360.0 | 0.0 |\n| fifo | 9.1 | 396.0 | 54.7 |\n\n\
                      | function | module | instructions (M) | % of kernel |\n\
                      | `enoki_call` | - | 10.0 | 2.5 |\n";
        let section = |report: &str| Section {
            workload: "switch-4pairs".into(),
            cmd: "x".into(),
            report: report.into(),
        };
        let got = section(report).kernel_vs_default();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "fifo");
        assert!((got[0].1 - 1.1).abs() < 1e-9, "{got:?}");
        assert!(section("| fifo | 1 | 2 |\n").kernel_vs_default().is_empty());
    }

    #[test]
    fn the_default_scheduler_is_profiled_first() {
        assert_eq!(
            sched_list(&["cfifo".into(), "fifo".into()]),
            "default,cfifo,fifo"
        );
    }
}
