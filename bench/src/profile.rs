// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--profile`: where the guest kernel's instructions go on a pipe
//! ping-pong and on hackbench under the default scheduler and each listed
//! one, from `enoki-tcg-profile` (one single-threaded TCG boot per
//! workload with its counting QEMU plugin), so the report that gives a
//! ratio also names the functions behind it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// The profiled workloads: name, command in the guest.
pub const WORKLOADS: [(&str, &str); 2] = [
    ("pipe-2cpu", "enoki-pipe -l 5000 --cpus 0,1"),
    ("hackbench", "hackbench -g 2 -l 20"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scheduler_is_profiled_first() {
        assert_eq!(
            sched_list(&["cfifo".into(), "fifo".into()]),
            "default,cfifo,fifo"
        );
    }
}
