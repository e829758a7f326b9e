// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki load`: module-parameter building, pre-flight checks, finit_module.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::kmod::{finit_module, ModuleInitFlags};

use crate::kernel_match::{self, KernelId};
use crate::status::read_attr;
use crate::{Error, Paths};

/// Which tasks the scheduler takes: every task, or only those that asked
/// for SCHED_EXT (`enoki run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    All,
    OptIn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::OptIn => "opt-in",
        }
    }
}

/// One `K=V` item of the scheduler's free-form `args=` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl FromStr for KeyValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not of the form KEY=VALUE"))?;
        if key.is_empty() {
            return Err(format!("'{s}' has an empty key"));
        }
        // The kernel splits module parameters on whitespace and treats
        // quotes specially; ',' separates our items.
        if let Some(c) = s
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '"' | ','))
        {
            return Err(format!(
                "'{s}' contains {c:?}, which cannot pass through args="
            ));
        }
        Ok(KeyValue {
            key: key.into(),
            value: value.into(),
        })
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// The module parameters `enoki load` may pass; `None` leaves the module's
/// own default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadParams {
    pub mode: Option<Mode>,
    pub max_tasks: Option<u32>,
    pub slice_us: Option<u32>,
    pub watchdog_ms: Option<u32>,
    pub lock_timeout_ms: Option<u32>,
    pub args: Vec<KeyValue>,
}

impl LoadParams {
    /// The `param_values` string for finit_module, e.g.
    /// `mode=all slice_us=500 args=a=1,b=2`.
    pub fn to_module_params(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        if let Some(m) = self.mode {
            out.push(format!("mode={}", m.as_str()));
        }
        if let Some(n) = self.max_tasks {
            out.push(format!("max_tasks={n}"));
        }
        if let Some(n) = self.slice_us {
            out.push(format!("slice_us={n}"));
        }
        if let Some(n) = self.watchdog_ms {
            out.push(format!("watchdog_ms={n}"));
        }
        if let Some(n) = self.lock_timeout_ms {
            out.push(format!("lock_timeout_ms={n}"));
        }
        if !self.args.is_empty() {
            let items: Vec<String> = self.args.iter().map(ToString::to_string).collect();
            out.push(format!("args={}", items.join(",")));
        }
        out.join(" ")
    }
}

pub fn module_name(sched: &str) -> String {
    format!("enoki_{sched}")
}

/// The modinfo string the module build (enoki/kbuild/build-modules.sh)
/// gives every scheduler module, followed by the scheduler's name: what
/// tells a scheduler from other Enoki modules, such as the hello smoke test.
const SCHEDULER_MODINFO: &str = "description=Enoki scheduler ";

/// Whether the module file `ko` is the module build's scheduler `name`
/// (an unreadable file is not).
fn is_scheduler_module(ko: &Path, name: &str) -> bool {
    let tag = format!("{SCHEDULER_MODINFO}{name}\0");
    std::fs::read(ko).is_ok_and(|bytes| {
        bytes
            .windows(tag.len())
            .any(|window| window == tag.as_bytes())
    })
}

/// Scheduler names with an `enoki_<name>.ko` scheduler module in `dir`,
/// sorted; a missing directory simply has none.
pub fn available_schedulers(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if let Some(name) = file
            .strip_prefix("enoki_")
            .and_then(|f| f.strip_suffix(".ko"))
        {
            if valid_name(name) && is_scheduler_module(&entry.path(), name) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

// Keeps the name from escaping the module directory.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The currently loaded scheduler's name, if any (`scheduler` is empty or
/// absent when none is).
pub fn loaded_scheduler(sysfs: &Path) -> Result<Option<String>, Error> {
    read_attr(sysfs, "scheduler")
}

/// Whether the loaded scheduler has ended (sched_ext exited or ejected it)
/// while its module is still in memory: it no longer counts as loaded.
pub fn scheduler_ended(sysfs: &Path) -> Result<bool, Error> {
    Ok(matches!(
        read_attr(sysfs, "state")?.as_deref(),
        Some("exited" | "ejected")
    ))
}

/// The module file of scheduler `sched`, on a kernel with Enoki.
pub fn scheduler_module(paths: &Paths, sched: &str) -> Result<PathBuf, Error> {
    if !paths.sysfs.is_dir() {
        return Err(Error::NoEnoki(paths.sysfs.clone()));
    }
    let ko = paths.module_dir.join(format!("{}.ko", module_name(sched)));
    if !valid_name(sched) || !ko.is_file() || !is_scheduler_module(&ko, sched) {
        return Err(Error::UnknownScheduler {
            name: sched.into(),
            available: available_schedulers(&paths.module_dir)?,
            dir: paths.module_dir.clone(),
        });
    }
    Ok(ko)
}

/// Checks everything that can be checked before asking the kernel, and
/// returns the module file to load.
pub fn preflight(paths: &Paths, sched: &str) -> Result<PathBuf, Error> {
    let ko = scheduler_module(paths, sched)?;
    if let Some(loaded) = loaded_scheduler(&paths.sysfs)? {
        if !scheduler_ended(&paths.sysfs)? {
            return Err(Error::AlreadyLoaded(loaded));
        }
    }
    built_for_this_kernel(paths, &ko)?;
    Ok(ko)
}

/// Refuses a module built for another kernel (see `kernel_match`), naming
/// both kernels.
pub fn built_for_this_kernel(paths: &Paths, ko: &Path) -> Result<(), Error> {
    let image = std::fs::read(ko).map_err(|e| Error::io(ko, e))?;
    kernel_match::check(ko, &image, &KernelId::running(&paths.kernel_notes)?)
}

/// Loads scheduler `sched` with `params`. The caller checks for root.
pub fn load(paths: &Paths, sched: &str, params: &LoadParams) -> Result<(), Error> {
    let ko = preflight(paths, sched)?;
    // A scheduler that ended leaves its module behind: it goes first (it
    // may be the very module being loaded again).
    if loaded_scheduler(&paths.sysfs)?.is_some() {
        crate::unload::unload(paths)?;
    }
    let file = File::open(&ko).map_err(|e| Error::io(&ko, e))?;
    // KeyValue and the numeric fields cannot contain NUL.
    let values = CString::new(params.to_module_params()).expect("no NUL in module params");
    finit_module(&file, &values, ModuleInitFlags::empty()).map_err(|errno| Error::LoadFailed {
        sched: sched.into(),
        module: module_name(sched),
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_match::tests::kernel_notes;
    use std::fs;
    use tempfile::TempDir;

    fn kv(s: &str) -> KeyValue {
        s.parse().unwrap()
    }

    #[test]
    fn no_params_is_empty() {
        assert_eq!(LoadParams::default().to_module_params(), "");
    }

    #[test]
    fn only_given_params_in_fixed_order() {
        let p = LoadParams {
            mode: Some(Mode::OptIn),
            slice_us: Some(500),
            ..Default::default()
        };
        assert_eq!(p.to_module_params(), "mode=opt-in slice_us=500");

        let p = LoadParams {
            mode: Some(Mode::All),
            max_tasks: Some(64),
            slice_us: Some(3000),
            watchdog_ms: Some(0),
            lock_timeout_ms: Some(20),
            args: vec![kv("a=1"), kv("verbose=")],
        };
        assert_eq!(
            p.to_module_params(),
            "mode=all max_tasks=64 slice_us=3000 watchdog_ms=0 lock_timeout_ms=20 args=a=1,verbose="
        );
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            kv("k=v=w"),
            KeyValue {
                key: "k".into(),
                value: "v=w".into()
            }
        );
        assert!("novalue".parse::<KeyValue>().is_err());
        assert!("=v".parse::<KeyValue>().is_err());
        assert!("k=a b".parse::<KeyValue>().is_err());
        assert!("k=\"v\"".parse::<KeyValue>().is_err());
    }

    struct Fake {
        _tmp: TempDir,
        paths: Paths,
    }

    /// Module file contents with the modinfo strings of the module build's
    /// scheduler `name`, built for the running kernel's release and the
    /// fake kernel's build id `ab12` (see `fake`).
    fn scheduler_module(name: &str) -> String {
        scheduler_module_for(name, "ab12")
    }

    fn scheduler_module_for(name: &str, build_id: &str) -> String {
        let release = nix::sys::utsname::uname().unwrap();
        let release = release.release().to_str().unwrap();
        format!(
            "ELF\0license=GPL\0description=Enoki scheduler {name}\0author=Enoki\0\
             kernel_build_id={build_id}\0vermagic={release} SMP preempt mod_unload \0"
        )
    }

    /// A sysfs dir with an empty `scheduler` file and a module dir holding
    /// fifo and badpick.
    fn fake() -> Fake {
        let tmp = TempDir::new().unwrap();
        let paths = Paths {
            sysfs: tmp.path().join("sysfs"),
            module_dir: tmp.path().join("modules"),
            kernel_notes: tmp.path().join("notes"),
        };
        fs::write(&paths.kernel_notes, kernel_notes(&[0xab, 0x12])).unwrap();
        fs::create_dir(&paths.sysfs).unwrap();
        fs::create_dir(&paths.module_dir).unwrap();
        fs::write(paths.sysfs.join("scheduler"), "\n").unwrap();
        for f in ["README", "other.ko"] {
            fs::write(paths.module_dir.join(f), "").unwrap();
        }
        for name in ["fifo", "badpick"] {
            let ko = paths.module_dir.join(format!("enoki_{name}.ko"));
            fs::write(ko, scheduler_module(name)).unwrap();
        }
        Fake { _tmp: tmp, paths }
    }

    #[test]
    fn lists_available_schedulers() {
        let f = fake();
        assert_eq!(
            available_schedulers(&f.paths.module_dir).unwrap(),
            ["badpick", "fifo"]
        );
        assert!(available_schedulers(Path::new("/nonexistent/enoki"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn only_scheduler_modules_are_offered() {
        let f = fake();
        let dir = &f.paths.module_dir;
        let hello = "ELF\0description=Enoki hello: out-of-tree Rust module smoke test\0";
        fs::write(dir.join("enoki_hello.ko"), hello).unwrap();
        // Named like one scheduler, built as another.
        fs::write(dir.join("enoki_wfq.ko"), scheduler_module("fifo")).unwrap();
        fs::write(dir.join("enoki_empty.ko"), "").unwrap();
        assert_eq!(available_schedulers(dir).unwrap(), ["badpick", "fifo"]);
        for name in ["hello", "wfq", "empty"] {
            let err = preflight(&f.paths, name).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("unknown scheduler '{name}'; available: badpick, fifo")
            );
        }
    }

    #[test]
    fn a_module_built_for_another_kernel_is_refused() {
        let f = fake();
        let ko = f.paths.module_dir.join("enoki_fifo.ko");
        fs::write(&ko, scheduler_module_for("fifo", "cd34")).unwrap();
        let err = preflight(&f.paths, "fifo").unwrap_err();
        assert!(
            matches!(&err, Error::WrongKernel { built, running, .. }
                if built.build_id.as_deref() == Some("cd34")
                    && running.build_id.as_deref() == Some("ab12")),
            "{err}"
        );
        assert!(matches!(
            load(&f.paths, "fifo", &LoadParams::default()),
            Err(Error::WrongKernel { .. })
        ));
    }

    #[test]
    fn preflight_ok() {
        let f = fake();
        assert_eq!(
            preflight(&f.paths, "fifo").unwrap(),
            f.paths.module_dir.join("enoki_fifo.ko")
        );
    }

    #[test]
    fn unknown_scheduler_lists_available() {
        let f = fake();
        let err = preflight(&f.paths, "nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown scheduler 'nope'; available: badpick, fifo"
        );
        // Path tricks are just unknown names.
        assert!(matches!(
            preflight(&f.paths, "../modules/enoki_fifo").unwrap_err(),
            Error::UnknownScheduler { .. }
        ));
    }

    #[test]
    fn unknown_scheduler_with_no_module_dir() {
        let f = fake();
        let paths = Paths {
            module_dir: f.paths.module_dir.join("missing"),
            ..f.paths.clone()
        };
        let msg = preflight(&paths, "fifo").unwrap_err().to_string();
        assert!(
            msg.starts_with("unknown scheduler 'fifo'; no schedulers found in "),
            "{msg}"
        );
    }

    #[test]
    fn a_scheduler_that_ended_does_not_block_a_load() {
        let f = fake();
        fs::write(f.paths.sysfs.join("scheduler"), "fifo\n").unwrap();
        for state in ["exited", "ejected"] {
            fs::write(f.paths.sysfs.join("state"), format!("{state}\n")).unwrap();
            assert!(preflight(&f.paths, "badpick").is_ok(), "{state}");
        }
        fs::write(f.paths.sysfs.join("state"), "enabled\n").unwrap();
        assert!(matches!(
            preflight(&f.paths, "badpick"),
            Err(Error::AlreadyLoaded(_))
        ));
    }

    #[test]
    fn already_loaded() {
        let f = fake();
        fs::write(f.paths.sysfs.join("scheduler"), "fifo\n").unwrap();
        let err = preflight(&f.paths, "badpick").unwrap_err();
        assert_eq!(
            err.to_string(),
            "scheduler 'fifo' is already loaded; run 'enoki unload' first"
        );
        // load() stops there too, before touching the kernel.
        assert!(matches!(
            load(&f.paths, "badpick", &LoadParams::default()),
            Err(Error::AlreadyLoaded(_))
        ));
    }

    #[test]
    fn no_enoki() {
        let f = fake();
        let paths = Paths {
            sysfs: f.paths.sysfs.join("missing"),
            ..f.paths.clone()
        };
        let msg = preflight(&paths, "fifo").unwrap_err().to_string();
        assert!(msg.starts_with("this kernel has no Enoki ("), "{msg}");
        assert!(msg.ends_with("missing)"), "{msg}");
    }
}
