// SPDX-License-Identifier: MIT OR Apache-2.0
//! The QEMU plugin (QEMU 7.2's plugin API, version 1): every translation
//! block gets a counter that the translated code itself increments (an
//! inline add, no call), so the profile costs little and sees code that
//! runs with interrupts off, which a sampling profiler in the guest cannot
//! (under TCG the guest has no NMI-capable PMU: its timer samples land
//! where interrupts are enabled again).
//!
//! The guest marks what to measure through a directory the host shares
//! with it (`dir=PATH`): it writes `SEQ start NAME` or `SEQ stop NAME` to
//! `PATH/ctl`, and waits until `PATH/ack` says `SEQ`. A start snapshots
//! every counter; a stop writes what each block executed since, in
//! instructions, to `PATH/NAME.tbs`.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use std::{fs, thread};

type PluginId = u64;

/// QEMU's `struct qemu_plugin_tb`, only ever behind a pointer.
#[repr(C)]
struct Tb {
    _opaque: [u8; 0],
}

/// `QEMU_PLUGIN_INLINE_ADD_U64` of `enum qemu_plugin_op`.
const INLINE_ADD_U64: c_int = 0;

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: extern "C" fn(PluginId, *mut Tb));
    fn qemu_plugin_register_vcpu_tb_exec_inline(tb: *mut Tb, op: c_int, ptr: *mut c_void, imm: u64);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_vaddr(tb: *const Tb) -> u64;
}

/// The plugin API version this plugin is written against; QEMU refuses a
/// plugin whose version it does not support.
#[no_mangle]
pub static qemu_plugin_version: c_int = 1;

/// One translation of a block: where it starts, its instructions, and how
/// often it ran. The translated code adds to `runs` without Rust's
/// atomics; under single-threaded TCG only the vCPU thread writes it, and
/// the control thread's 64-bit aligned loads see whole values.
struct Block {
    vaddr: u64,
    insns: u64,
    runs: AtomicU64,
}

/// Every block translated so far, in translation order (never removed:
/// retranslated code gets a new one, and QEMU may still run the old one).
static BLOCKS: Mutex<Vec<&'static Block>> = Mutex::new(Vec::new());

extern "C" fn on_translate(_id: PluginId, tb: *mut Tb) {
    // SAFETY: QEMU passes a block under translation, valid for this call.
    let (vaddr, insns) = unsafe { (qemu_plugin_tb_vaddr(tb), qemu_plugin_tb_n_insns(tb)) };
    let block: &'static Block = Box::leak(Box::new(Block {
        vaddr,
        insns: u64::try_from(insns).unwrap_or(u64::MAX),
        runs: AtomicU64::new(0),
    }));
    // SAFETY: `tb` is valid as above; the counter is leaked, so it outlives
    // every execution of the translated code that adds to it.
    unsafe {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, block.runs.as_ptr().cast(), 1);
    }
    if let Ok(mut blocks) = BLOCKS.lock() {
        blocks.push(block);
    }
}

/// QEMU's entry point: `dir=PATH` names the control directory.
///
/// # Safety
/// QEMU calls it once, with `argv` holding `argc` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let args = (0..usize::try_from(argc).unwrap_or(0)).filter_map(|i| {
        // SAFETY: the caller passes `argc` valid C strings in `argv`.
        unsafe { CStr::from_ptr(*argv.add(i)) }.to_str().ok()
    });
    let Some(dir) = args
        .filter_map(|a| a.strip_prefix("dir="))
        .map(PathBuf::from)
        .next_back()
    else {
        eprintln!("enoki-tcg-profile: the plugin needs dir=PATH");
        return -1;
    };
    // SAFETY: `id` is the one QEMU gave this plugin.
    unsafe { qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate) };
    thread::spawn(move || control_loop(&dir));
    0
}

/// How often the control file is read; the guest waits for the answer.
const POLL: Duration = Duration::from_millis(20);

/// Serves the guest's marks until QEMU exits.
fn control_loop(dir: &Path) {
    let mut done = String::new();
    let mut snapshot: Vec<u64> = Vec::new();
    loop {
        thread::sleep(POLL);
        let Ok(line) = fs::read_to_string(dir.join("ctl")) else {
            continue;
        };
        let mut words = line.split_whitespace();
        let (Some(seq), Some(what), Some(name)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if seq == done {
            continue;
        }
        let result = match what {
            "start" => {
                snapshot = counts();
                Ok(())
            }
            "stop" => write_profile(&dir.join(format!("{name}.tbs")), &snapshot),
            _ => Ok(()),
        };
        if let Err(e) =
            result.and_then(|()| write_atomically(&dir.join("ack"), &format!("{seq}\n")))
        {
            eprintln!("enoki-tcg-profile: {}: {e}", dir.display());
        }
        done = seq.to_string();
    }
}

/// Every block's runs so far, in translation order.
fn counts() -> Vec<u64> {
    BLOCKS
        .lock()
        .map(|blocks| blocks.iter().map(|b| b.runs.load(Relaxed)).collect())
        .unwrap_or_default()
}

/// Instructions each start address executed since `snapshot`, as lines
/// `vaddr insns` (hex, decimal).
fn write_profile(path: &Path, snapshot: &[u64]) -> std::io::Result<()> {
    let mut by_vaddr: BTreeMap<u64, u64> = BTreeMap::new();
    if let Ok(blocks) = BLOCKS.lock() {
        for (i, b) in blocks.iter().enumerate() {
            let runs = b
                .runs
                .load(Relaxed)
                .saturating_sub(snapshot.get(i).copied().unwrap_or(0));
            if runs > 0 {
                let n = by_vaddr.entry(b.vaddr).or_default();
                *n = n.saturating_add(runs.saturating_mul(b.insns));
            }
        }
    }
    let text: String = by_vaddr
        .iter()
        .map(|(vaddr, insns)| format!("{vaddr:x} {insns}\n"))
        .collect();
    write_atomically(path, &text)
}

/// Writes `text` to `path` through a rename, so a reader never sees half.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}
