// SPDX-License-Identifier: MIT OR Apache-2.0
//! Holds `enoki::abi`, the Rust mirror of the message ABI, to Enoki-C's
//! `enoki.h`, its one source.
//!
//! The build script runs bindgen on `enoki.h`; the tests here compare every
//! structure the header defines (size, alignment, and every field's offset
//! and size) and every `ENOKI_*` constant with `enoki::abi`. Each structure is
//! also destructured field by field on both sides, so a field that only one
//! side has does not compile, and the compiler names it.
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests {
    #![allow(non_camel_case_types, non_upper_case_globals, dead_code)]

    use enoki::abi::{self, Msg, RawCpu, RawOps, RawRec, RawTopology};

    /// bindgen's rendering of `enoki.h`.
    mod c {
        #![allow(non_camel_case_types, non_upper_case_globals, dead_code)]
        include!(concat!(env!("OUT_DIR"), "/enoki_h.rs"));
    }
    use c::*;

    const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/enoki_h.rs"));

    /// Size of the field `field` selects, without a value of `T`.
    fn field_size<T, F>(_field: impl Fn(&T) -> &F) -> usize {
        core::mem::size_of::<F>()
    }

    /// Compares `$rust` (abi.rs) with `$c` (enoki.h): size, alignment, and
    /// the offset and size of each field; the fields listed must be all of
    /// either side's. Returns one line per difference.
    macro_rules! layout_diff {
        ($rust:ident == $c:ident { $($field:ident),+ $(,)? }) => {{
            fn _every_field_listed(r: $rust, c: $c) {
                let $rust { $($field: _),+ } = r;
                let $c { $($field: _),+ } = c;
            }
            let mut diff: Vec<String> = Vec::new();
            let mut check = |what: String, rust: usize, c: usize| {
                if rust != c {
                    diff.push(format!(
                        "{what}: {rust} in enoki/src/abi.rs, {c} in enoki.h (struct {})",
                        stringify!($c)
                    ));
                }
            };
            let name = stringify!($rust);
            check(
                format!("size of {name}"),
                core::mem::size_of::<$rust>(),
                core::mem::size_of::<$c>(),
            );
            check(
                format!("alignment of {name}"),
                core::mem::align_of::<$rust>(),
                core::mem::align_of::<$c>(),
            );
            $(
                let field = concat!(stringify!($rust), "::", stringify!($field));
                check(
                    format!("offset of {field}"),
                    core::mem::offset_of!($rust, $field),
                    core::mem::offset_of!($c, $field),
                );
                check(
                    format!("size of {field}"),
                    field_size(|s: &$rust| &s.$field),
                    field_size(|s: &$c| &s.$field),
                );
            )+
            (stringify!($c), diff)
        }};
    }

    /// Every struct of enoki.h, with its Rust mirror.
    fn layouts() -> Vec<(&'static str, Vec<String>)> {
        vec![
            layout_diff!(
                Msg == enoki_msg {
                    kind,
                    flags,
                    cpu,
                    pid,
                    tgid,
                    task_cpu,
                    runtime,
                    weight,
                    nice,
                    allowed,
                    ret,
                    ret_cpu,
                    ret_err,
                    ret_slice,
                    generation,
                    cgroup,
                    cgroup_parent,
                    now,
                    cgroup_period,
                    cgroup_quota,
                    cgroup_burst,
                    queue,
                    hint_size,
                }
            ),
            layout_diff!(
                RawCpu
                    == enoki_cpu_topo {
                        core,
                        llc,
                        node,
                        package
                    }
            ),
            layout_diff!(
                RawTopology
                    == enoki_topology {
                        nr_cpus,
                        nr_nodes,
                        cpus,
                        distance
                    }
            ),
            layout_diff!(
                RawRec
                    == enoki_rec {
                        seq,
                        cpu,
                        type_,
                        addr,
                        time_ns
                    }
            ),
            layout_diff!(
                RawOps
                    == enoki_sched_ops {
                        abi_version,
                        slice_ns,
                        mode,
                        timeout_ms,
                        handles,
                        name,
                        owner,
                        sched,
                        process,
                        state_fp,
                        state,
                        export_state,
                        adopt_state,
                        hint_fp,
                        hint_size,
                        rev_hint_size,
                        rev_hint_fp,
                    }
            ),
        ]
    }

    /// Every `ENOKI_*` constant of enoki.h, with its value in abi.rs.
    fn constants() -> Vec<(&'static str, i128, i128)> {
        macro_rules! pairs {
            ($($rust:expr => $c:ident),+ $(,)?) => {
                vec![$((stringify!($c), $rust as i128, $c as i128)),+]
            };
        }
        pairs![
            abi::ABI_VERSION => ENOKI_ABI_VERSION,
            abi::MAX_CPUS => ENOKI_MAX_CPUS,
            abi::MAX_NODES => ENOKI_MAX_NODES,
            abi::CPUMASK_WORDS => ENOKI_CPUMASK_WORDS,
            abi::NAME_LEN => ENOKI_NAME_LEN,
            abi::kind::TASK_NEW => ENOKI_TASK_NEW,
            abi::kind::TASK_WAKEUP => ENOKI_TASK_WAKEUP,
            abi::kind::TASK_PREEMPT => ENOKI_TASK_PREEMPT,
            abi::kind::TASK_BLOCKED => ENOKI_TASK_BLOCKED,
            abi::kind::TASK_DEAD => ENOKI_TASK_DEAD,
            abi::kind::TASK_TICK => ENOKI_TASK_TICK,
            abi::kind::SELECT_TASK_RQ => ENOKI_SELECT_TASK_RQ,
            abi::kind::PICK_NEXT_TASK => ENOKI_PICK_NEXT_TASK,
            abi::kind::PNT_ERR => ENOKI_PNT_ERR,
            abi::kind::BALANCE => ENOKI_BALANCE,
            abi::kind::BALANCE_ERR => ENOKI_BALANCE_ERR,
            abi::kind::MIGRATE_TASK_RQ => ENOKI_MIGRATE_TASK_RQ,
            abi::kind::TASK_PRIO_CHANGED => ENOKI_TASK_PRIO_CHANGED,
            abi::kind::TASK_AFFINITY_CHANGED => ENOKI_TASK_AFFINITY_CHANGED,
            abi::kind::CPU_ONLINE => ENOKI_CPU_ONLINE,
            abi::kind::CPU_OFFLINE => ENOKI_CPU_OFFLINE,
            abi::kind::CGROUP_NEW => ENOKI_CGROUP_NEW,
            abi::kind::CGROUP_GONE => ENOKI_CGROUP_GONE,
            abi::kind::CGROUP_WEIGHT => ENOKI_CGROUP_WEIGHT,
            abi::kind::TASK_CGROUP_MOVED => ENOKI_TASK_CGROUP_MOVED,
            abi::kind::CGROUP_BANDWIDTH => ENOKI_CGROUP_BANDWIDTH,
            abi::kind::QUEUE_NEW => ENOKI_QUEUE_NEW,
            abi::kind::HINT => ENOKI_HINT,
            abi::kind::QUEUE_GONE => ENOKI_QUEUE_GONE,
            abi::kind::NR => ENOKI_MSG_NR,
            abi::kind::OPTIONAL => ENOKI_MSGS_OPTIONAL,
            abi::flag::YIELD => ENOKI_F_YIELD,
            abi::flag::SLEEP => ENOKI_F_SLEEP,
            abi::flag::HAS_PREV => ENOKI_F_HAS_PREV,
            abi::flag::PREV_RUNNABLE => ENOKI_F_PREV_RUNNABLE,
            abi::flag::NEW => ENOKI_F_NEW,
            abi::flag::KEEP_PREV => ENOKI_F_KEEP_PREV,
            abi::flag::WAKE_SYNC => ENOKI_F_WAKE_SYNC,
            abi::err::WRONG_CPU => ENOKI_ERR_WRONG_CPU,
            abi::err::NOT_QUEUED => ENOKI_ERR_NOT_QUEUED,
            abi::err::AFFINITY => ENOKI_ERR_AFFINITY,
            abi::err::NO_TASK => ENOKI_ERR_NO_TASK,
            abi::ret_err::WRONG_CPU => ENOKI_RET_WRONG_CPU,
            abi::ret_err::BAD_MIGRATE => ENOKI_RET_BAD_MIGRATE,
            abi::ret_err::BAD_SELECT => ENOKI_RET_BAD_SELECT,
            abi::ret_err::FAILED => ENOKI_RET_FAILED,
            abi::mode::ALL => ENOKI_MODE_ALL,
            abi::mode::OPT_IN => ENOKI_MODE_OPT_IN,
            abi::kick::RESCHED => ENOKI_KICK_RESCHED,
            abi::kick::PREEMPT => ENOKI_KICK_PREEMPT,
            abi::rec_type::MSG => ENOKI_REC_MSG,
            abi::rec_type::LOCK_ACQUIRE => ENOKI_REC_LOCK_ACQUIRE,
            abi::rec_type::LOCK_RELEASE => ENOKI_REC_LOCK_RELEASE,
            abi::rec_type::GAP => ENOKI_REC_GAP,
            abi::rec_type::UPGRADE => ENOKI_REC_UPGRADE,
            abi::rec_type::EXIT => ENOKI_REC_EXIT,
            abi::rec_type::LOCK_ACCESS => ENOKI_REC_LOCK_ACCESS,
            abi::rec_type::LOCK_ACQUIRE_SHARED => ENOKI_REC_LOCK_ACQUIRE_SHARED,
            abi::SLICE_MIN_NS => ENOKI_SLICE_MIN_NS,
            abi::SLICE_MAX_NS => ENOKI_SLICE_MAX_NS,
        ]
    }

    /// Names bindgen generated after `prefix` (e.g. `"pub struct "`).
    fn generated(prefix: &str, start: &str) -> Vec<String> {
        GENERATED
            .match_indices(prefix)
            .map(|(i, _)| {
                let rest = &GENERATED[i + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                rest[..end].to_owned()
            })
            .filter(|name| name.starts_with(start))
            .collect()
    }

    #[test]
    fn every_struct_matches_enoki_h() {
        let layouts = layouts();
        let diff: Vec<&String> = layouts.iter().flat_map(|(_, d)| d).collect();
        assert!(
            diff.is_empty(),
            "enoki/src/abi.rs does not match kernel/src/kernel/sched/enoki.h:\n{}",
            diff.iter().map(|d| format!("  {d}\n")).collect::<String>()
        );
        for name in generated("pub struct ", "enoki_") {
            assert!(
                layouts.iter().any(|(c, _)| *c == name),
                "struct {name} of enoki.h has no mirror checked here: add it to enoki/src/abi.rs \
                 and to layouts()"
            );
        }
    }

    #[test]
    fn every_constant_matches_enoki_h() {
        let constants = constants();
        let diff: Vec<String> = constants
            .iter()
            .filter(|(_, rust, c)| rust != c)
            .map(|(name, rust, c)| {
                format!("  {name}: {rust} in enoki/src/abi.rs, {c} in enoki.h\n")
            })
            .collect();
        assert!(
            diff.is_empty(),
            "enoki/src/abi.rs does not match kernel/src/kernel/sched/enoki.h:\n{}",
            diff.concat()
        );
        for name in generated("pub const ", "ENOKI_") {
            assert!(
                constants.iter().any(|(c, _, _)| *c == name),
                "{name} of enoki.h has no mirror checked here: add it to enoki/src/abi.rs and to \
                 constants()"
            );
        }
    }
}
