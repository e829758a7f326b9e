// SPDX-License-Identifier: MIT OR Apache-2.0
//! A scheduler module loads only into the kernel it was built for.
//!
//! The kernel itself compares only the release in a module's `vermagic`,
//! and two builds of one release share it: the `vm` and `metal` kernel
//! profiles are both `6.12.117-enoki`, yet their structures differ (static
//! keys with and without jump labels). The module build therefore records
//! the build id of the kernel it compiled against (`kernel_build_id=` in
//! modinfo, see `kernel/module/enoki_params.c`), and this compares release
//! and build id with the running kernel's (`uname -r`, `/sys/kernel/notes`)
//! before the kernel is asked, naming both sides when they differ.

use std::fmt;
use std::path::Path;

use object::elf::NT_GNU_BUILD_ID;
use object::read::elf::NoteIterator;
use object::{Endianness, Object, ObjectSection};

use crate::Error;

/// Which kernel a module was built for, or which kernel is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelId {
    /// `uname -r`, e.g. `6.12.117-enoki`.
    pub release: String,
    /// The GNU build id of `vmlinux` in hex; `None` for a module from
    /// another build than Enoki's (it did not record one).
    pub build_id: Option<String>,
}

impl fmt::Display for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.build_id {
            Some(id) => write!(f, "{} (build id {id})", self.release),
            None => write!(f, "{} (no kernel build id recorded)", self.release),
        }
    }
}

impl KernelId {
    /// The running kernel: its release from uname, its build id from the
    /// notes file (normally `/sys/kernel/notes`).
    pub fn running(notes: &Path) -> Result<Self, Error> {
        let release = nix::sys::utsname::uname()
            .map_err(|errno| Error::io("uname", errno.into()))?
            .release()
            .to_string_lossy()
            .into_owned();
        let data = std::fs::read(notes).map_err(|e| Error::io(notes, e))?;
        Ok(KernelId {
            release,
            build_id: gnu_build_id(&data),
        })
    }

    /// The kernel module `image` was built for, from its modinfo strings;
    /// `None` when it has no `vermagic` (not a kernel module).
    pub fn of_module(image: &[u8]) -> Option<Self> {
        let vermagic = modinfo(image, "vermagic")?;
        let release = vermagic.split_whitespace().next()?.to_string();
        Some(KernelId {
            release,
            build_id: modinfo(image, "kernel_build_id"),
        })
    }
}

/// Refuses module `ko` (contents `image`) unless it was built for
/// `running`.
pub fn check(ko: &Path, image: &[u8], running: &KernelId) -> Result<(), Error> {
    let built = KernelId::of_module(image).ok_or_else(|| Error::Malformed {
        path: ko.into(),
        msg: "no vermagic in its modinfo: not a kernel module".into(),
    })?;
    if built.release == running.release
        && built.build_id.is_some()
        && built.build_id == running.build_id
    {
        return Ok(());
    }
    Err(Error::WrongKernel {
        module: ko.into(),
        built,
        running: running.clone(),
    })
}

/// The value of modinfo string `key` (`key=value\0` in `.modinfo`; in the
/// whole image when it is no ELF file with that section).
fn modinfo(image: &[u8], key: &str) -> Option<String> {
    let tag = format!("{key}=");
    let section = object::File::parse(image)
        .ok()
        .and_then(|file| file.section_by_name(".modinfo")?.data().ok());
    section
        .unwrap_or(image)
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(tag.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The GNU build id among ELF notes (4-byte aligned, in the machine's byte
/// order, which for the x86-64 kernels Enoki builds is little endian).
fn gnu_build_id(notes: &[u8]) -> Option<String> {
    let mut iter =
        NoteIterator::<object::elf::FileHeader64<Endianness>>::new(Endianness::Little, 4, notes)
            .ok()?;
    while let Ok(Some(note)) = iter.next() {
        if note.name() == b"GNU" && note.n_type(Endianness::Little) == NT_GNU_BUILD_ID {
            return Some(note.desc().iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One ELF note as the kernel lays it out.
    pub(crate) fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(name.len() + 1).unwrap().to_le_bytes());
        out.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&n_type.to_le_bytes());
        out.extend_from_slice(name);
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(desc);
        pad(&mut out);
        out
    }

    /// `/sys/kernel/notes` of a kernel with build id `id`: a Xen note
    /// first, as x86 kernels have.
    pub(crate) fn kernel_notes(id: &[u8]) -> Vec<u8> {
        let mut notes = note(b"Xen", 6, b"linux\0");
        notes.extend(note(b"GNU", NT_GNU_BUILD_ID, id));
        notes
    }

    fn module(vermagic: &str, build_id: Option<&str>) -> Vec<u8> {
        let id = build_id.map_or(String::new(), |id| format!("kernel_build_id={id}\0"));
        format!("ELF\0license=GPL\0{id}vermagic={vermagic}\0name=enoki_fifo\0").into_bytes()
    }

    fn running(id: &str) -> KernelId {
        KernelId {
            release: "6.12.117-enoki".into(),
            build_id: Some(id.into()),
        }
    }

    #[test]
    fn the_build_id_is_read_from_the_gnu_note() {
        assert_eq!(
            gnu_build_id(&kernel_notes(&[0xde, 0xad, 0x01])).as_deref(),
            Some("dead01")
        );
        assert_eq!(gnu_build_id(&note(b"Xen", 3, b"abcd")), None);
        assert_eq!(gnu_build_id(b"short"), None);
    }

    /// A relocatable ELF whose `.modinfo` section starts with the build id,
    /// as the module build's do: no NUL before it in the file.
    fn elf_module(modinfo: &[u8]) -> Vec<u8> {
        use object::write::Object as Writer;
        use object::{Architecture, BinaryFormat, SectionKind};
        let mut obj = Writer::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0x90; 13], 1);
        let section = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::Data);
        obj.append_section_data(section, modinfo, 1);
        obj.write().unwrap()
    }

    #[test]
    fn modinfo_is_read_from_its_section() {
        let image = elf_module(b"kernel_build_id=ab12\0vermagic=6.12.117-enoki SMP \0");
        assert_eq!(
            KernelId::of_module(&image),
            Some(KernelId {
                release: "6.12.117-enoki".into(),
                build_id: Some("ab12".into())
            })
        );
    }

    #[test]
    fn a_module_for_this_kernel_passes() {
        let image = module("6.12.117-enoki SMP preempt mod_unload ", Some("ab12"));
        check(Path::new("m.ko"), &image, &running("ab12")).unwrap();
    }

    #[test]
    fn another_build_of_the_same_release_is_refused() {
        let image = module("6.12.117-enoki SMP preempt mod_unload ", Some("ab12"));
        let err = check(Path::new("m.ko"), &image, &running("cd34")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ko was built for kernel 6.12.117-enoki (build id ab12), but the running kernel is \
             6.12.117-enoki (build id cd34); install the modules built for this kernel"
        );
    }

    #[test]
    fn another_release_or_no_build_id_is_refused() {
        for image in [
            module("6.1.0-28-amd64 SMP preempt mod_unload ", Some("ab12")),
            module("6.12.117-enoki SMP preempt mod_unload ", None),
        ] {
            let err = check(Path::new("m.ko"), &image, &running("ab12")).unwrap_err();
            assert!(matches!(err, Error::WrongKernel { .. }), "{err}");
        }
        let err = check(Path::new("m.ko"), b"not a module", &running("ab12")).unwrap_err();
        assert!(err.to_string().contains("not a kernel module"), "{err}");
    }
}
