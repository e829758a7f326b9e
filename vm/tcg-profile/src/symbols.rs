// SPDX-License-Identifier: MIT OR Apache-2.0
//! Names the guest code a profile counted: the guest's `/proc/kallsyms`
//! (taken while the scheduler module was loaded, so its symbols are in it)
//! turns block start addresses into functions and modules.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

/// Where the kernel's address space starts (x86-64, 4-level paging).
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

/// A function of the guest kernel or of a module.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Function {
    pub name: String,
    /// The module it is in; None: the kernel image.
    pub module: Option<String>,
}

/// The guest's text symbols, by address.
pub struct Symbols {
    by_addr: BTreeMap<u64, Function>,
}

impl Symbols {
    /// Parses `/proc/kallsyms` (`ADDR TYPE NAME [MODULE]`), keeping text.
    pub fn parse(kallsyms: &str) -> Self {
        let by_addr = kallsyms
            .lines()
            .filter_map(|line| {
                let mut w = line.split_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                let kind = w.next()?;
                let name = w.next()?;
                let module = w.next().map(|m| m.trim_matches(['[', ']']).to_string());
                let text = matches!(kind, "t" | "T" | "w" | "W");
                (text && addr != 0).then(|| {
                    let name = format!("{:#}", rustc_demangle::demangle(name));
                    (addr, Function { name, module })
                })
            })
            .collect();
        Symbols { by_addr }
    }

    /// The function `vaddr` is in; None for user space and code no
    /// symbol covers.
    pub fn function(&self, vaddr: u64) -> Option<&Function> {
        if vaddr < KERNEL_START {
            return None;
        }
        self.by_addr.range(..=vaddr).next_back().map(|(_, f)| f)
    }
}

/// Instructions per start address, as the plugin writes them
/// (`vaddr insns` per line, hex and decimal).
pub fn read_blocks(text: &str) -> Result<Vec<(u64, u64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut w = line.split_whitespace();
            let parsed = w
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .zip(w.next().and_then(|n| n.parse().ok()));
            parsed.with_context(|| format!("bad profile line {line:?}"))
        })
        .collect()
}

/// What a profile adds up to.
#[derive(Debug, Default)]
pub struct Profile {
    pub user: u64,
    /// Kernel code no symbol covers.
    pub unknown: u64,
    pub functions: BTreeMap<Function, u64>,
}

impl Profile {
    /// Adds up `blocks` by function.
    pub fn of(blocks: &[(u64, u64)], symbols: &Symbols) -> Self {
        let mut p = Profile::default();
        for &(vaddr, insns) in blocks {
            let slot = match symbols.function(vaddr) {
                Some(f) => p.functions.entry(f.clone()).or_default(),
                None if vaddr < KERNEL_START => &mut p.user,
                None => &mut p.unknown,
            };
            *slot = slot.saturating_add(insns);
        }
        p
    }

    /// Every kernel instruction (modules included).
    pub fn kernel(&self) -> u64 {
        self.functions
            .values()
            .fold(self.unknown, |a, &n| a.saturating_add(n))
    }

    /// Kernel instructions in functions that `keep` selects.
    pub fn sum(&self, keep: impl Fn(&Function) -> bool) -> u64 {
        self.functions
            .iter()
            .filter(|(f, _)| keep(f))
            .fold(0u64, |a, (_, &n)| a.saturating_add(n))
    }

    /// The `n` functions that `keep` selects and that executed the most,
    /// most first.
    pub fn top(&self, n: usize, keep: impl Fn(&Function) -> bool) -> Vec<(&Function, u64)> {
        let mut all: Vec<_> = self
            .functions
            .iter()
            .filter(|(f, _)| keep(f))
            .map(|(f, &i)| (f, i))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 t enoki_call
ffffffff81000200 D some_data
ffffffff81000300 T scx_bpf_kick_cpu
ffffffffc0000000 t _RNvCs1234_5enoki4call\t[enoki_fifo]
";

    #[test]
    fn blocks_are_named_by_the_function_they_start_in() {
        let s = Symbols::parse(KALLSYMS);
        let name = |a| s.function(a).map(|f| f.name.as_str());
        assert_eq!(name(0xffff_ffff_8100_0150), Some("enoki_call"));
        // Data symbols do not end a function.
        assert_eq!(name(0xffff_ffff_8100_0250), Some("enoki_call"));
        assert_eq!(name(0xffff_ffff_8100_0300), Some("scx_bpf_kick_cpu"));
        assert_eq!(name(0x40_1000), None);
        let m = s
            .function(0xffff_ffff_c000_0010)
            .and_then(|f| f.module.clone());
        assert_eq!(m.as_deref(), Some("enoki_fifo"));
    }

    #[test]
    fn a_profile_adds_up_by_function_and_keeps_user_and_unknown_apart() {
        let s = Symbols::parse(KALLSYMS);
        let blocks =
            read_blocks("ffffffff81000100 10\nffffffff81000180 5\n401000 7\nffffffff80000000 3\n")
                .unwrap();
        let p = Profile::of(&blocks, &s);
        assert_eq!(p.user, 7);
        assert_eq!(p.unknown, 3);
        assert_eq!(p.kernel(), 18);
        assert_eq!(p.sum(|f| f.name.starts_with("enoki_")), 15);
        let top = p.top(1, |_| true);
        assert_eq!((top[0].0.name.as_str(), top[0].1), ("enoki_call", 15));
    }

    #[test]
    fn a_bad_profile_line_is_an_error() {
        assert!(read_blocks("zz 1\n").is_err());
    }
}
