// SPDX-License-Identifier: MIT OR Apache-2.0
//! The profile report (markdown): the kernel's instructions split by where
//! they ran, per scheduler, then each scheduler's busiest functions; and
//! the split alone for programs (`totals.json`, [`Totals`]).

use std::fmt::Write as _;

use serde::Serialize;

use crate::symbols::{Function, Profile};

/// Where a kernel function belongs, for the split.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    EnokiC,
    Module,
    SchedExt,
    Rest,
}

impl Part {
    const ALL: [Part; 4] = [Part::EnokiC, Part::Module, Part::SchedExt, Part::Rest];

    /// By name: Enoki-C's functions are `enoki_*` in the kernel image, a
    /// scheduler's are in an `enoki_*` module, sched_ext's carry `scx`.
    fn of(f: &Function) -> Part {
        match &f.module {
            Some(m) if m.starts_with("enoki_") => Part::Module,
            None if f.name.starts_with("enoki_") => Part::EnokiC,
            None if f.name.contains("scx") => Part::SchedExt,
            _ => Part::Rest,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Part::EnokiC => "Enoki-C",
            Part::Module => "scheduler module",
            Part::SchedExt => "sched_ext (`*scx*`)",
            Part::Rest => "rest of the kernel",
        }
    }
}

/// Millions, one decimal.
fn m(n: u64) -> String {
    format!("{:.1}", n as f64 / 1e6)
}

/// One scheduler's instructions while the workload ran, as
/// `totals.json` lists them (raw counts).
#[derive(Debug, Serialize)]
pub struct Totals {
    /// The scheduler's name as `--sched` gave it.
    pub sched: String,
    /// Whether its calls were recorded (`--record`).
    pub recorded: bool,
    pub user: u64,
    pub kernel: u64,
    pub enoki_c: u64,
    pub module: u64,
    pub sched_ext: u64,
    pub rest: u64,
}

impl Totals {
    pub fn of(sched: &str, recorded: bool, p: &Profile) -> Totals {
        let part = |part: Part| p.sum(|f| Part::of(f) == part);
        Totals {
            sched: sched.to_string(),
            recorded,
            user: p.user,
            kernel: p.kernel(),
            enoki_c: part(Part::EnokiC),
            module: part(Part::Module),
            sched_ext: part(Part::SchedExt),
            rest: part(Part::Rest),
        }
    }
}

/// The report over `profiles` (scheduler name, profile), `top` functions each.
pub fn render(profiles: &[(&str, Profile)], top: usize) -> String {
    let mut s = String::from(
        "Guest instructions (millions) while the workload ran, counted by QEMU \
         for every translated block (single-threaded TCG).\n\n",
    );
    split_table(&mut s, profiles);
    for (sched, p) in profiles {
        let enoki = |f: &Function| matches!(Part::of(f), Part::EnokiC | Part::Module);
        if p.sum(enoki) > 0 {
            let title =
                format!("Enoki's {top} busiest functions (Enoki-C and the scheduler module)");
            top_table(&mut s, sched, &title, p.top(top, enoki), p);
        }
        let title = format!("the {top} kernel functions that executed the most");
        top_table(&mut s, sched, &title, p.top(top, |_| true), p);
    }
    s
}

fn split_table(s: &mut String, profiles: &[(&str, Profile)]) {
    s.push_str("| scheduler | user | kernel |");
    for part in Part::ALL {
        let _ = write!(s, " {} |", part.title());
    }
    s.push_str("\n| --- | ---: | ---: |");
    s.push_str(&" ---: |".repeat(Part::ALL.len()));
    s.push('\n');
    for (sched, p) in profiles {
        let _ = write!(s, "| {sched} | {} | {} |", m(p.user), m(p.kernel()));
        for part in Part::ALL {
            let _ = write!(s, " {} |", m(p.sum(|f| Part::of(f) == part)));
        }
        s.push('\n');
    }
}

fn top_table(s: &mut String, sched: &str, title: &str, rows: Vec<(&Function, u64)>, p: &Profile) {
    let kernel = p.kernel().max(1) as f64;
    let _ = write!(
        s,
        "\n**{sched}**: {title}\n\n\
         | function | module | instructions (M) | % of kernel |\n| --- | --- | ---: | ---: |\n"
    );
    for (f, n) in rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {:.1} |",
            shorter(&f.name),
            f.module.as_deref().unwrap_or("-"),
            m(n),
            n as f64 * 100.0 / kernel
        );
    }
}

/// A demangled Rust name with the generic arguments of generic arguments
/// left out (`<…>`): iterator adapters nest them for hundreds of characters.
fn shorter(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(160));
    let mut depth = 0usize;
    let mut prev = ' ';
    for c in name.chars() {
        match c {
            '<' => {
                depth = depth.saturating_add(1);
                match depth {
                    1 => out.push('<'),
                    2 => out.push_str("<…"),
                    _ => {}
                }
            }
            // `->` of a function type is not a bracket.
            '>' if prev != '-' => {
                if matches!(depth, 1 | 2) {
                    out.push('>');
                }
                depth = depth.saturating_sub(1);
            }
            _ if depth < 2 => out.push(c),
            _ => {}
        }
        prev = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::{read_blocks, Symbols};

    #[test]
    fn the_split_puts_each_function_in_its_part() {
        let syms = Symbols::parse(
            "ffffffff81000000 t enoki_call\nffffffff81000100 T scx_bpf_kick_cpu\n\
             ffffffff81000200 T schedule\nffffffffc0000000 t pick\t[enoki_fifo]\n",
        );
        let blocks = read_blocks(
            "ffffffff81000000 1000000\nffffffff81000100 2000000\n\
             ffffffff81000200 3000000\nffffffffc0000000 4000000\n400000 500000\n",
        )
        .unwrap();
        let profile = Profile::of(&blocks, &syms);
        let t = Totals::of("fifo", false, &profile);
        assert_eq!(
            (t.user, t.kernel, t.enoki_c, t.module, t.sched_ext, t.rest),
            (500_000, 10_000_000, 1_000_000, 4_000_000, 2_000_000, 3_000_000)
        );
        let out = render(&[("fifo", profile)], 2);
        assert!(
            out.contains("| fifo | 0.5 | 10.0 | 1.0 | 4.0 | 2.0 | 3.0 |"),
            "{out}"
        );
        assert!(
            out.contains("| `pick` | enoki_fifo | 4.0 | 40.0 |"),
            "{out}"
        );
        let (enoki, all) = out
            .split_once("the 2 kernel functions")
            .expect("the table of every kernel function");
        assert!(
            enoki.contains("Enoki's 2 busiest functions")
                && enoki.contains("| `enoki_call` | - | 1.0 | 10.0 |")
                && !enoki.contains("`schedule`"),
            "Enoki's own functions only: {enoki}"
        );
        assert!(!all.contains("`enoki_call`"), "only the top 2: {all}");
    }

    #[test]
    fn nested_generic_arguments_are_left_out() {
        assert_eq!(
            shorter("<a::SpinLock<a::Ring<a::Waiting>>>::lock_at"),
            "<a::SpinLock<…>>::lock_at"
        );
        assert_eq!(
            shorter("a::kmod::process::<a::Fifo>"),
            "a::kmod::process::<a::Fifo>"
        );
        assert_eq!(
            shorter("f::<Map<I, fn(u32) -> u32>, usize>::{closure#0}"),
            "f::<Map<…>, usize>::{closure#0}"
        );
        assert_eq!(shorter("enoki_this_cpu"), "enoki_this_cpu");
    }
}
