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
    /// Each scheduler's kernel instructions while the workload ran, from
    /// the tool's `totals.json`.
    #[serde(default)]
    pub kernel: Vec<(String, u64)>,
}

/// What the bench reads of one entry of `totals.json`.
#[derive(Deserialize)]
struct Totals {
    sched: String,
    kernel: u64,
}

/// Each scheduler's kernel instructions in the tool's `totals.json`.
fn kernel_totals(json: &str) -> Result<Vec<(String, u64)>> {
    let totals: Vec<Totals> = serde_json::from_str(json)?;
    Ok(totals.into_iter().map(|t| (t.sched, t.kernel)).collect())
}

/// A file the tool wrote in `dir`.
fn read_output(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
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
            let totals = read_output(&out, "totals.json")?;
            Ok(Section {
                workload: workload.into(),
                cmd: cmd.into(),
                report: read_output(&out, "report.md")?,
                kernel: kernel_totals(&totals)
                    .with_context(|| format!("parsing {}/totals.json", out.display()))?,
            })
        })
        .collect()
}

impl Section {
    /// Each listed scheduler's kernel instructions over the default
    /// scheduler's.
    pub fn kernel_vs_default(&self) -> Vec<(String, f64)> {
        let Some(&(_, base)) = self
            .kernel
            .iter()
            .find(|(s, _)| s == crate::report::DEFAULT)
        else {
            return Vec::new();
        };
        self.kernel
            .iter()
            .filter(|(s, _)| s != crate::report::DEFAULT && base > 0)
            .map(|(s, k)| (s.clone(), *k as f64 / base as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_instructions_are_set_against_the_default_schedulers() {
        let json = r#"[{"sched":"default","recorded":false,"user":9,"kernel":360,"enoki_c":0,
                        "module":0,"sched_ext":0,"rest":360},
                       {"sched":"fifo","recorded":false,"user":9,"kernel":396,"enoki_c":55,
                        "module":40,"sched_ext":6,"rest":295}]"#;
        let section = |kernel| Section {
            workload: "switch-4pairs".into(),
            cmd: "x".into(),
            report: String::new(),
            kernel,
        };
        let got = section(kernel_totals(json).unwrap()).kernel_vs_default();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "fifo");
        assert!((got[0].1 - 1.1).abs() < 1e-9, "{got:?}");
        let no_default = section(vec![("fifo".into(), 2)]);
        assert!(no_default.kernel_vs_default().is_empty());
        assert!(kernel_totals("| fifo | 1 | 2 |").is_err());
    }

    #[test]
    fn the_default_scheduler_is_profiled_first() {
        assert_eq!(
            sched_list(&["cfifo".into(), "fifo".into()]),
            "default,cfifo,fifo"
        );
    }
}
