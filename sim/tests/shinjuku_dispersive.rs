// SPDX-License-Identifier: MIT OR Apache-2.0
//! Shinjuku against the paper's dispersive request load (section 5.4,
//! Figure 2a) in the simulator, where a context switch costs nothing and
//! the paper's 10 us slice can be used (under emulation it cannot: README,
//! "Shinjuku"). 99.5 % of requests take 4 us and 0.5 % take 10 ms, from
//! Poisson arrivals to 50 workers on 6 CPUs.

use enoki_sim::registry;
use enoki_sim::report::Report;
use enoki_sim::sim::SimConfig;
use enoki_sim::spec::Spec;

/// The request load at `rate_per_s`, served by `sched` with module `args`.
fn dispersive(sched: &str, args: &str, rate_per_s: u32) -> Report {
    std::env::set_var("ENOKI_QUIET", "1");
    let spec = Spec::from_toml(&format!(
        r#"
        [machine]
        cores = 6
        [run]
        duration_ms = 200
        args = "{args}"
        [[requests]]
        name = "rpc"
        workers = 50
        rate_per_s = {rate_per_s}
        mix = [{{ weight = 99.5, service_us = 4 }}, {{ weight = 0.5, service_us = 10000 }}]
        "#
    ))
    .expect("the spec parses");
    let entry = registry::find(sched).expect("a registered scheduler");
    let report = (entry.simulate)(SimConfig::new(spec, 0, entry.props))
        .expect("the simulation runs")
        .report;
    assert!(
        report.violations.is_empty(),
        "{sched}: {:?}",
        report.violations
    );
    report
}

/// The 99th percentile of every request's arrival-to-completion time, in
/// ns. With 0.5 % of requests long, it is a short request's.
fn p99_ns(r: &Report) -> u64 {
    let rpc = r
        .groups
        .iter()
        .find(|g| g.name == "rpc")
        .expect("rpc group");
    assert!(rpc.requests_done > Some(5_000), "{rpc:?}");
    rpc.request_p99_ns.expect("requests were served")
}

/// At 60 % load, long requests often hold every CPU: without preemption
/// (FIFO) or with millisecond slices (WFQ, CFS-like), short requests wait
/// behind them for milliseconds, while Shinjuku's 10 us preemption keeps
/// their p99 within a few slices.
#[test]
fn shinjukus_preemption_keeps_short_requests_out_of_long_requests_way() {
    let rate = 60_000;
    let shinjuku = p99_ns(&dispersive("shinjuku", "preempt_us=10", rate));
    for other in ["fifo", "wfq"] {
        let p99 = p99_ns(&dispersive(other, "", rate));
        assert!(
            shinjuku.saturating_mul(20) < p99,
            "p99 at {rate} requests/s: shinjuku {shinjuku} ns, {other} {p99} ns"
        );
    }
    assert!(
        shinjuku < 20 * 10_000,
        "shinjuku's p99 {shinjuku} ns is not within 20 slices of 10 us"
    );
}

/// The slice is what buys it: with a 10 ms slice (the long requests' length)
/// Shinjuku is a FIFO again and short requests wait as long.
#[test]
fn with_a_slice_as_long_as_the_long_requests_shinjuku_does_not_help() {
    let rate = 60_000;
    let fast = p99_ns(&dispersive("shinjuku", "preempt_us=10", rate));
    let slow = p99_ns(&dispersive("shinjuku", "preempt_us=10000", rate));
    assert!(
        fast.saturating_mul(20) < slow,
        "p99 at {rate} requests/s: preempt_us=10 {fast} ns, preempt_us=10000 {slow} ns"
    );
}
