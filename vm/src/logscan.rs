// SPDX-License-Identifier: MIT OR Apache-2.0
//! Finds the kernel log lines that mean a test must fail, and the one that
//! means the emulator failed the guest (see [`crate::emufault`]).

use std::sync::OnceLock;

use regex::Regex;

fn problem_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"BUG:|WARNING:|Oops|Kernel panic|kernel BUG at|general protection fault",
            r"|Unable to handle kernel|rcu_preempt detected stalls|rcu: INFO|detected stalls",
            r"|soft lockup|hard LOCKUP|hung task|blocked for more than \d+ seconds|UBSAN:",
            r"|sched_ext:.*(error|stall)|Call Trace:",
        ))
        .expect("valid regex")
    })
}

fn emulator_fault_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"rcu:\s+Possible timer handling issue on cpu=\d+").expect("valid regex")
    })
}

/// A log's lines, trimmed, without the console's `\r`.
fn log_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().map(|l| l.trim_end_matches('\r').trim())
}

/// Returns the kernel log lines (trimmed, without the console's `\r`) that
/// report a bug, warning, oops, panic, RCU stall, lockup, hung task or a
/// sched_ext error/stall. Empty means the log is clean.
pub fn kernel_log_problems(log: &str) -> Vec<String> {
    log_lines(log)
        .filter(|l| problem_re().is_match(l))
        .map(str::to_owned)
        .collect()
}

/// The first line of `log` that shows the emulator failing the guest: RCU
/// reporting that a CPU's timer never fired (see [`crate::emufault`]).
pub(crate) fn emulator_fault(log: &str) -> Option<String> {
    log_lines(log)
        .find(|l| emulator_fault_re().is_match(l))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_boot_log_has_no_problems() {
        let log = "\
[    0.000000] Linux version 6.12.117-enoki (root@host) #1 SMP PREEMPT_DYNAMIC\r
[    0.512000] smpboot: Allowing 8 CPUs, 0 hotplug CPUs\r
[    1.100000] sched_ext: BPF scheduler \"enoki_fifo\" enabled\r
[    1.200000] rcu: Hierarchical RCU implementation.\r
[    2.000000] Run /init as init process\r
[    2.100000] enoki-init: running command\r
";
        assert!(
            kernel_log_problems(log).is_empty(),
            "{:?}",
            kernel_log_problems(log)
        );
    }

    #[test]
    fn finds_each_kind_of_problem() {
        let cases = [
            "[    3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[    3.1] BUG: scheduling while atomic: swapper/0/0/0x00000002",
            "[    3.2] WARNING: CPU: 1 PID: 42 at kernel/sched/ext.c:1234 scx_ops_enable+0x1/0x2",
            "[    3.3] Oops: general protection fault, probably for non-canonical address",
            "[    3.4] Kernel panic - not syncing: sysrq triggered crash",
            "[   25.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "[   25.0] rcu_preempt detected stalls on CPUs/tasks",
            "[   30.0] watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [spin:99]",
            "[  120.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
            "[   31.0] sched_ext: BPF scheduler \"enoki\" disabled (runtime error)",
            "[   32.0] sched_ext: enoki: runnable task stall (kworker/1:2[55] failed to run for 30.1s)",
            "[   33.0] Call Trace:",
            "[   34.0] UBSAN: shift-out-of-bounds in kernel/sched/ext.c:99:1",
        ];
        for c in cases {
            let log = format!("[    1.0] fine\n{c}\r\n[    1.1] fine too\n");
            assert_eq!(kernel_log_problems(&log), vec![c.to_owned()], "{c}");
        }
    }

    #[test]
    fn the_rcu_timer_report_is_the_emulator_fault_and_a_plain_stall_is_not() {
        let sign = "[   32.147291] rcu: \tPossible timer handling issue on cpu=5 timer-softirq=0";
        let log = format!(
            "[   32.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\r\n{sign}\r\nafter\n"
        );
        assert_eq!(emulator_fault(&log).as_deref(), Some(sign.trim()));
        let stall = "[   32.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
                     [   32.2] rcu: \t3-....: (20999 ticks this GP) idle=1/1/0x4000000000000000\n";
        assert_eq!(emulator_fault(stall), None);
    }

    #[test]
    fn keeps_order_and_counts_all() {
        let log = "a\nBUG: x\nb\nWARNING: y\nOops: z\n";
        assert_eq!(
            kernel_log_problems(log),
            ["BUG: x", "WARNING: y", "Oops: z"]
        );
    }
}
