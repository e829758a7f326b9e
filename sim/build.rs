// SPDX-License-Identifier: MIT OR Apache-2.0
//! Generates the simulator's scheduler registry ($OUT_DIR/schedulers.rs)
//! from schedulers/: every directory there whose src/lib.rs calls
//! `enoki::export_scheduler!` becomes a module of the simulator, built from
//! the same source file the kernel module build includes, and an entry with
//! the promises its Cargo.toml declares:
//!
//! ```toml
//! [package.metadata.enoki]
//! correct = false          # default true
//! work_conserving = false  # default true
//! ```
//!
//! So adding a scheduler is adding its directory; nothing here changes.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

/// One scheduler directory, as the registry lists it.
struct Scheduler {
    /// Module name in the simulator: the directory name, `-` as `_`.
    module: String,
    lib: PathBuf,
    correct: bool,
    work_conserving: bool,
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR")?).join("../schedulers");
    let root = root.canonicalize()?;
    // A directory added or removed, or any file in one changed.
    println!("cargo::rerun-if-changed={}", root.display());
    let mut schedulers = Vec::new();
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        if let Some(s) = scheduler(dir)? {
            schedulers.push(s);
        }
    }
    // The correct ones first (the simulator's default and its listings
    // lead with them), each group by name.
    schedulers.sort_by_key(|s| !s.correct);
    let out = Path::new(&env::var("OUT_DIR")?).join("schedulers.rs");
    fs::write(out, registry(&schedulers)?)?;
    Ok(())
}

/// The scheduler in `dir`, or `None` if it exports none.
fn scheduler(dir: &Path) -> Result<Option<Scheduler>, Box<dyn Error>> {
    let lib = dir.join("src/lib.rs");
    let exports = fs::read_to_string(&lib).is_ok_and(|s| s.contains("export_scheduler!"));
    if !exports {
        return Ok(None);
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let module = name.replace('-', "_");
    let valid = module.starts_with(|c: char| c.is_ascii_alphabetic())
        && module
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("schedulers/{name}: the name must be a Rust identifier").into());
    }
    let manifest: toml::Table = fs::read_to_string(dir.join("Cargo.toml"))?.parse()?;
    let promises = manifest
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("enoki"));
    let promise = |key: &str| -> Result<bool, Box<dyn Error>> {
        match promises.and_then(|p| p.get(key)) {
            None => Ok(true),
            Some(v) => v.as_bool().ok_or_else(|| {
                format!("schedulers/{name}: [package.metadata.enoki] {key} is not a bool").into()
            }),
        }
    };
    Ok(Some(Scheduler {
        correct: promise("correct")?,
        work_conserving: promise("work_conserving")?,
        module,
        lib,
    }))
}

/// The generated registry: one module and one entry per scheduler.
fn registry(schedulers: &[Scheduler]) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    for s in schedulers {
        writeln!(out, "#[path = {:?}]", s.lib.display().to_string())?;
        writeln!(out, "pub mod {};", s.module)?;
    }
    writeln!(
        out,
        "/// Every scheduler in schedulers/, with what it promises."
    )?;
    writeln!(out, "pub static SCHEDULERS: &[SchedEntry] = &[")?;
    for s in schedulers {
        writeln!(
            out,
            "    entry::<{}::EnokiSched>(Props {{ correct: {}, work_conserving: {} }}),",
            s.module, s.correct, s.work_conserving
        )?;
    }
    writeln!(out, "];")?;
    Ok(out)
}
