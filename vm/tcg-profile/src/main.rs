// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki-tcg-profile`: where the guest kernel spends its instructions
//! while a workload runs under each of some schedulers, in one boot.
//!
//! The VM runs on single-threaded TCG with the `libenoki_tcg_profile.so`
//! QEMU plugin (`src/plugin.rs`), which counts every instruction the guest
//! executes, also where interrupts are off (a scheduler's whole call path),
//! which perf in the guest cannot sample under emulation. For each
//! scheduler the guest loads it (`enoki load NAME --mode all`; `default`
//! is the kernel's own), keeps its `/proc/kallsyms`, marks the start,
//! runs the workload, marks the stop and unloads it. The report names the
//! functions that executed the most and splits the kernel's instructions
//! into Enoki-C, the scheduler module, sched_ext and the rest
//! (`report.md`; the split alone in `totals.json`).
//!
//! `cargo make tcg-profile -- --sched default,cfifo,fifo -- enoki-pipe -l 5000 --cpus 0,1`

mod report;
mod symbols;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

use crate::report::Totals;
use crate::symbols::{read_blocks, Profile, Symbols};

#[derive(Parser)]
#[command(about = "Instruction profile of the guest kernel under each scheduler (QEMU TCG plugin)")]
struct Cli {
    /// Schedulers to profile in turn (`default`: the kernel's own).
    #[arg(long, value_delimiter = ',', default_value = "default,cfifo,fifo")]
    sched: Vec<String>,
    /// Functions listed per scheduler.
    #[arg(long, default_value_t = 25)]
    top: usize,
    /// Seconds before the VM is stopped.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Record each Enoki scheduler's calls (`enoki record`) from before the
    /// start mark to after the stop mark, so that the profile shows what
    /// recording costs while the workload runs: the record path and the
    /// drain thread, not the trace's writing after the run. The default
    /// scheduler and cfifo make no calls to record and run plain.
    #[arg(long)]
    record: bool,
    /// Output directory, created if missing [default:
    /// <workspace>/target/tcg-profile/<seconds since the epoch>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The workload, run in the guest under `sh -c` once per scheduler.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    for s in &cli.sched {
        ensure!(
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad scheduler name {s:?}"
        );
    }
    let root = enoki_vm::find_root()?;
    let plugin = plugin_path()?;
    let dir = out_dir(&root, cli.out.as_deref())?;
    let script = dir.join("guest.sh");
    fs::write(
        &script,
        guest_script(&dir, &cli.sched, &cli.cmd.join(" "), cli.record),
    )
    .with_context(|| format!("writing {}", script.display()))?;
    println!(
        "tcg-profile: {} under {} (single-threaded TCG with the plugin); output in {}",
        cli.cmd.join(" "),
        cli.sched.join(", "),
        dir.display()
    );
    boot(&plugin, &dir, &script, cli.timeout)?;
    let (text, totals) = report_all(&dir, &cli.sched, cli.top, cli.record)?;
    fs::write(dir.join("report.md"), &text)?;
    fs::write(
        dir.join("totals.json"),
        serde_json::to_string_pretty(&totals)?,
    )?;
    println!("{text}");
    println!("tcg-profile: wrote {}", dir.join("report.md").display());
    Ok(())
}

/// The plugin, built beside this tool (`cargo build -p enoki-tcg-profile`).
fn plugin_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let so = exe.with_file_name("libenoki_tcg_profile.so");
    ensure!(
        so.is_file(),
        "no plugin at {} (build it with `cargo build --release -p enoki-tcg-profile`)",
        so.display()
    );
    Ok(so)
}

/// `out`, or a new `target/tcg-profile/<seconds since the epoch>`; inside
/// the workspace, which the guest shares at the same path (the plugin and
/// the guest talk through files there).
fn out_dir(root: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => {
            let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            root.join("target/tcg-profile").join(secs.to_string())
        }
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    ensure!(
        dir.starts_with(root.canonicalize()?),
        "{} is outside the workspace {}, which is all the guest sees",
        dir.display(),
        root.display()
    );
    Ok(dir)
}

/// How long the guest waits for the plugin to answer a mark (0.1 s polls).
const ACK_POLLS: u32 = 600;

/// Whether `sched` makes calls that `enoki record` can record.
fn recordable(sched: &str) -> bool {
    !matches!(sched, "default" | "cfifo")
}

/// With `--record`, what starts the recording before the start mark (once
/// the kernel says it is on) and what stops it after the stop mark.
fn record_around(sched: &str) -> (String, String) {
    let start = format!(
        r#"enoki record -o /tmp/tcg-profile.enk > "$D/{sched}.record" 2>&1 &
rec=$!
n=0
until [ "$(cat /sys/kernel/enoki/record)" = 1 ]; do
	n=$((n+1))
	[ $n -le {ACK_POLLS} ] || {{ echo "tcg-profile: recording did not start under {sched}, see $D/{sched}.record" >&2; exit 1; }}
	sleep 0.1
done
"#
    );
    let stop = format!(
        r#"kill -INT $rec
wait $rec || {{ echo "tcg-profile: enoki record failed under {sched}, see $D/{sched}.record" >&2; exit 1; }}
"#
    );
    (start, stop)
}

/// The guest's script: every scheduler in turn, the workload between marks
/// (recorded, with `record`, for the schedulers that can be).
fn guest_script(dir: &Path, scheds: &[String], cmd: &str, record: bool) -> String {
    let mut s = format!(
        r#"set -e
echo 0 > /proc/sys/kernel/kptr_restrict
D='{dir}'
seq=0
mark() {{
	seq=$((seq+1))
	echo "$seq $1 $2" > "$D/ctl"
	n=0
	until read -r got 2>/dev/null < "$D/ack" && [ "$got" = "$seq" ]; do
		n=$((n+1))
		[ $n -le {ACK_POLLS} ] || {{ echo "tcg-profile: the plugin did not answer '$1 $2'" >&2; exit 1; }}
		sleep 0.1
	done
}}
"#,
        dir = dir.display()
    );
    for sched in scheds {
        let load = if sched == "default" {
            String::new()
        } else {
            format!("enoki load {sched} --mode all\n")
        };
        let unload = if sched == "default" {
            ""
        } else {
            "enoki unload\n"
        };
        let (rec_start, rec_stop) = if record && recordable(sched) {
            record_around(sched)
        } else {
            Default::default()
        };
        let _ = write!(
            s,
            r#"{load}cat /proc/kallsyms > "$D/{sched}.kallsyms"
echo "tcg-profile: running the workload under {sched}"
{rec_start}mark start {sched}
( {cmd} ) > "$D/{sched}.out" 2>&1 || {{ echo "tcg-profile: the workload failed under {sched}, see $D/{sched}.out"; exit 1; }}
mark stop {sched}
{rec_stop}{unload}"#
        );
    }
    s
}

/// Boots the VM with the plugin and runs the script; fails with the
/// serial log named when the guest did not finish cleanly.
fn boot(plugin: &Path, dir: &Path, script: &Path, timeout: u64) -> Result<()> {
    let mut spec = plugin.as_os_str().to_owned();
    spec.push(",dir=");
    spec.push(dir);
    let vm = enoki_vm::VmConfig::new()?
        .accel(enoki_vm::Accel::Tcg)
        .plugin(spec)
        .timeout(Duration::from_secs(timeout))
        .echo_output(true)
        .build()?;
    let out = vm.run(&format!("bash '{}'", script.display()))?;
    if out.exit_code != Some(0) {
        bail!(
            "the guest script failed ({:?}{}); serial log {}",
            out.exit_code,
            if out.timed_out { ", timed out" } else { "" },
            out.serial_log.display()
        );
    }
    let problems = out.problems();
    ensure!(
        problems.is_empty(),
        "kernel log problems (serial log {}): {problems:?}",
        out.serial_log.display()
    );
    Ok(())
}

/// A scheduler's name in the report: recorded ones say so.
fn label(sched: &str, record: bool) -> String {
    if record && recordable(sched) {
        format!("{sched} (recorded)")
    } else {
        sched.to_string()
    }
}

/// Every scheduler's profile, then the report and each one's totals.
fn report_all(
    dir: &Path,
    scheds: &[String],
    top: usize,
    record: bool,
) -> Result<(String, Vec<Totals>)> {
    let labels: Vec<String> = scheds.iter().map(|s| label(s, record)).collect();
    let mut profiles = Vec::new();
    for (sched, label) in scheds.iter().zip(&labels) {
        let read = |ext: &str| {
            let p = dir.join(format!("{sched}.{ext}"));
            fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let symbols = Symbols::parse(&read("kallsyms")?);
        let blocks = read_blocks(&read("tbs")?)?;
        profiles.push((label.as_str(), Profile::of(&blocks, &symbols)));
    }
    let totals = scheds
        .iter()
        .zip(&profiles)
        .map(|(sched, (_, p))| Totals::of(sched, record && recordable(sched), p))
        .collect();
    Ok((report::render(&profiles, top), totals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_must_be_where_the_guest_sees_it() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("target/bench/x/profile-pipe");
        let dir = out_dir(root.path(), Some(&inside)).unwrap();
        assert!(dir.is_dir() && dir.ends_with("target/bench/x/profile-pipe"));
        let dir = out_dir(root.path(), None).unwrap();
        assert!(dir.starts_with(
            root.path()
                .canonicalize()
                .unwrap()
                .join("target/tcg-profile")
        ));
        let elsewhere = tempfile::tempdir().unwrap();
        let e = out_dir(root.path(), Some(elsewhere.path())).unwrap_err();
        assert!(e.to_string().contains("outside the workspace"), "{e}");
    }

    /// The lines of `script` from the one starting with `from` up to the
    /// one starting with `to`.
    fn between<'a>(script: &'a str, from: &str, to: &str) -> Vec<&'a str> {
        script
            .lines()
            .skip_while(|l| !l.starts_with(from))
            .take_while(|l| !l.starts_with(to))
            .collect()
    }

    #[test]
    fn a_recorded_profile_records_from_before_its_start_mark_to_after_its_stop_mark() {
        let scheds = ["default".to_string(), "fifo".to_string()];
        let script = guest_script(Path::new("/w"), &scheds, "enoki-pipe -l 5", true);
        let fifo = between(&script, "enoki load fifo", "enoki unload");
        let at = |prefix: &str| fifo.iter().position(|l| l.starts_with(prefix));
        let (start, on, mark_start, mark_stop, stop, wait) = (
            at("enoki record").unwrap(),
            at("until [ \"$(cat /sys/kernel/enoki/record)\" = 1 ]").unwrap(),
            at("mark start fifo").unwrap(),
            at("mark stop fifo").unwrap(),
            at("kill -INT $rec").unwrap(),
            at("wait $rec").unwrap(),
        );
        assert!(
            start < on && on < mark_start && mark_start < mark_stop,
            "{script}"
        );
        assert!(mark_stop < stop && stop < wait, "{script}");
        let default = between(
            &script,
            "cat /proc/kallsyms > \"$D/default",
            "enoki load fifo",
        );
        assert!(!default.iter().any(|l| l.contains("record")), "{script}");
        let plain = guest_script(Path::new("/w"), &scheds, "enoki-pipe -l 5", false);
        assert!(!plain.contains("enoki record"), "{plain}");
        assert_eq!(label("fifo", true), "fifo (recorded)");
        assert_eq!(label("cfifo", true), "cfifo");
    }
}
