// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki upgrade`: replaces the running scheduler with a new version of
//! it (or with another scheduler) while every task keeps running.
//!
//! The kernel cannot load a module under a name already loaded, so the
//! next version loads under the first free name of `enoki_<sched>`,
//! `enoki_<sched>_u1`, `enoki_<sched>_u2`, ...: the module image is
//! renamed in memory. Its init hands over from the running version
//! (Enoki-C's `enoki_upgrade()`); the replaced module is then removed.

use std::ffi::CString;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{delete_module, init_module, DeleteModuleFlags};
use object::{Object, ObjectSection};

use crate::load::{self, LoadParams};
use crate::status::read_attr;
use crate::{Error, Paths};

/// Where `struct module` lives in a module image; its `name` is a fixed
/// `char[MODULE_NAME_LEN]`.
const THIS_MODULE_SECTION: &str = ".gnu.linkonce.this_module";
/// The kernel's `MODULE_NAME_LEN`.
const MODULE_NAME_LEN: usize = 56;

/// What an upgrade did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// The module replaced (now removed).
    pub from: String,
    /// The module now running.
    pub to: String,
    /// Whether removing the replaced module failed (it is harmless, and
    /// named so it can be removed by hand).
    pub old_module_left: Option<Errno>,
}

/// How the next version starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the running version's state, when both have the same kind.
    State,
    /// From the task list alone.
    Fresh,
}

impl Start {
    fn param(self) -> &'static str {
        match self {
            Start::State => "upgrade=state",
            Start::Fresh => "upgrade=fresh",
        }
    }
}

/// The name the next version of `sched` loads under: the first of
/// `enoki_<sched>`, `enoki_<sched>_u1`, ... that is not loaded.
pub fn next_module_name(sched: &str, loaded: impl Fn(&str) -> bool) -> String {
    let base = load::module_name(sched);
    std::iter::once(base.clone())
        .chain((1..).map(|n| format!("{base}_u{n}")))
        .find(|name| !loaded(name))
        .expect("an unbounded list has a free name")
}

/// Renames the module `image` from `from` to `to`: the name in its
/// `struct module`, which is what the kernel registers it under.
pub fn rename_module(image: &mut [u8], from: &str, to: &str) -> Result<(), String> {
    if to.len() >= MODULE_NAME_LEN {
        return Err(format!("module name {to} is too long"));
    }
    let (start, len) = {
        let file = object::File::parse(&*image).map_err(|e| format!("not a module: {e}"))?;
        let section = file
            .section_by_name(THIS_MODULE_SECTION)
            .ok_or_else(|| format!("not a module: no {THIS_MODULE_SECTION} section"))?;
        let (start, len) = section
            .file_range()
            .ok_or_else(|| format!("{THIS_MODULE_SECTION} has no data"))?;
        (start as usize, len as usize)
    };
    let section = image
        .get_mut(start..start + len)
        .ok_or("the section lies outside the file")?;
    let mut field = from.as_bytes().to_vec();
    field.resize(MODULE_NAME_LEN, 0);
    let at = section
        .windows(MODULE_NAME_LEN)
        .position(|w| w == field.as_slice())
        .ok_or_else(|| format!("the module is not named {from}"))?;
    let mut renamed = to.as_bytes().to_vec();
    renamed.resize(MODULE_NAME_LEN, 0);
    section[at..at + MODULE_NAME_LEN].copy_from_slice(&renamed);
    Ok(())
}

/// Replaces the running scheduler with `sched` (a new version of it, or
/// another one), loaded with `params` and starting as `start` says. The
/// caller checks for root.
pub fn upgrade(
    paths: &Paths,
    sysmodule: &Path,
    sched: &str,
    params: &LoadParams,
    start: Start,
) -> Result<Upgraded, Error> {
    let ko = load::scheduler_module(paths, sched)?;
    load::built_for_this_kernel(paths, &ko)?;
    let running = running_module(paths)?;
    let to = next_module_name(sched, |name| sysmodule.join(name).exists());
    let mut image = std::fs::read(&ko).map_err(|e| Error::io(&ko, e))?;
    rename_module(&mut image, &load::module_name(sched), &to).map_err(|msg| Error::Malformed {
        path: ko.clone(),
        msg,
    })?;
    let mut params = params.clone();
    if params.mode.is_none() {
        // The next version must run in the mode the running one does.
        params.mode = read_attr(&paths.sysfs, "mode")?
            .and_then(|m| <load::Mode as clap::ValueEnum>::from_str(&m, true).ok());
    }
    let values = format!("{} {}", params.to_module_params(), start.param());
    let values = CString::new(values.trim()).expect("no NUL in module params");
    init_module(&image, &values).map_err(|errno| Error::UpgradeFailed {
        sched: sched.into(),
        errno,
    })?;
    let old = CString::new(running.as_str()).expect("sysfs gave a module name");
    let old_module_left = delete_module(&old, DeleteModuleFlags::O_NONBLOCK).err();
    Ok(Upgraded {
        from: running,
        to,
        old_module_left,
    })
}

/// The module of the scheduler running now.
fn running_module(paths: &Paths) -> Result<String, Error> {
    let module = read_attr(&paths.sysfs, "module")?.filter(|m| !m.is_empty());
    let running = read_attr(&paths.sysfs, "state")?.as_deref() == Some("enabled");
    match module {
        Some(module) if running => Ok(module),
        _ => Err(Error::NothingToUpgrade),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_takes_the_first_free_name() {
        assert_eq!(next_module_name("wfq", |_| false), "enoki_wfq");
        assert_eq!(
            next_module_name("wfq", |n| n == "enoki_wfq"),
            "enoki_wfq_u1"
        );
        assert_eq!(
            next_module_name("wfq", |n| n == "enoki_wfq" || n == "enoki_wfq_u1"),
            "enoki_wfq_u2"
        );
        assert_eq!(
            next_module_name("wfq", |n| n == "enoki_wfq_u1"),
            "enoki_wfq"
        );
    }

    /// A relocatable ELF with a `.gnu.linkonce.this_module` section
    /// holding `name` where `struct module` has it.
    fn module_image(name: &str) -> Vec<u8> {
        use object::write::Object as Writer;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Writer::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let section = obj.add_section(
            Vec::new(),
            THIS_MODULE_SECTION.as_bytes().to_vec(),
            SectionKind::Data,
        );
        let mut this_module = vec![0xa5u8; 24];
        let mut field = name.as_bytes().to_vec();
        field.resize(MODULE_NAME_LEN, 0);
        this_module.extend(field);
        this_module.extend([0x5a; 64]);
        obj.append_section_data(section, &this_module, 8);
        obj.write().unwrap()
    }

    fn name_in(image: &[u8]) -> String {
        let file = object::File::parse(image).unwrap();
        let data = file
            .section_by_name(THIS_MODULE_SECTION)
            .unwrap()
            .data()
            .unwrap();
        assert_eq!(&data[..24], &[0xa5; 24], "what precedes the name is kept");
        assert_eq!(
            &data[24 + MODULE_NAME_LEN..],
            &[0x5a; 64],
            "what follows is kept"
        );
        let field = &data[24..24 + MODULE_NAME_LEN];
        let end = field.iter().position(|b| *b == 0).unwrap();
        String::from_utf8(field[..end].to_vec()).unwrap()
    }

    #[test]
    fn a_module_image_is_renamed_in_its_struct_module() {
        let mut image = module_image("enoki_wfq");
        rename_module(&mut image, "enoki_wfq", "enoki_wfq_u12").unwrap();
        assert_eq!(name_in(&image), "enoki_wfq_u12");
        rename_module(&mut image, "enoki_wfq_u12", "enoki_w").unwrap();
        assert_eq!(name_in(&image), "enoki_w");
    }

    #[test]
    fn renaming_checks_what_it_renames() {
        let mut image = module_image("enoki_fifo");
        let err = rename_module(&mut image, "enoki_wfq", "enoki_wfq_u1").unwrap_err();
        assert_eq!(err, "the module is not named enoki_wfq");
        let long = "x".repeat(MODULE_NAME_LEN);
        assert!(rename_module(&mut image, "enoki_fifo", &long).is_err());
        assert!(rename_module(&mut b"not an elf".to_vec(), "a", "b").is_err());
    }
}
