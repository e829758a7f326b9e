// SPDX-License-Identifier: GPL-2.0
//! The arbitration itself (`grants.rs`): splits, placement of grants,
//! releases and limits, without a scheduler around it. Outside the
//! scheduler's source, so no test code can panic in the kernel module.

use enoki::{CpuId, CpuSet, Pid, QueueId, Topology};
use enoki_arachne::grants::{Change, Grants, Reclaim, MAX_QUEUES};
use enoki_arachne::{GRANT_HELD, GRANT_RECLAIM};

/// Two sockets (one LLC each) of two cores of two SMT threads: CPUs
/// 0-3 share a cache, 4-7 the other; cores {0,1} {2,3} {4,5} {6,7}.
fn topology() -> Topology {
    Topology::symmetric(2, 2, 2, 21).unwrap()
}

fn set(cpus: &[CpuId]) -> CpuSet {
    let mut s = CpuSet::empty();
    for c in cpus {
        s.insert(*c);
    }
    s
}

fn grants(reserve: usize, asking: &[(Pid, u32)]) -> (Grants, Topology) {
    let t = topology();
    let mut g = Grants::new(&t, reserve, Reclaim::AtOnce).unwrap();
    for (queue, (tgid, cores)) in asking.iter().enumerate() {
        assert!(g.open(queue as QueueId, *tgid));
        g.request(*tgid, *cores, 0, &t);
    }
    (g, t)
}

fn held(g: &Grants, tgid: Pid) -> usize {
    g.grant_of(tgid).len()
}

#[test]
fn what_fits_is_given_as_asked() {
    let (g, _) = grants(1, &[(10, 2), (20, 3)]);
    assert_eq!((held(&g, 10), held(&g, 20)), (2, 3));
    assert_eq!(g.granted().len(), 5);
}

#[test]
fn too_much_asked_is_split_max_min() {
    // 7 grantable: 6 and 5 asked split 4 and 3 (the leftover CPU to
    // the one holding more); a third asking 1 gets it, the others 3.
    let (mut g, t) = grants(1, &[(10, 6), (20, 5)]);
    assert_eq!((held(&g, 10), held(&g, 20)), (4, 3));
    assert!(g.open(9, 30));
    g.request(30, 1, 0, &t);
    assert_eq!((held(&g, 10), held(&g, 20), held(&g, 30)), (3, 3, 1));
    // Everything asked but the reserve is given, never more.
    assert_eq!(g.granted().len(), 7);
}

#[test]
fn a_small_asker_gets_all_it_asks_under_contention() {
    let (g, _) = grants(1, &[(10, 8), (20, 1), (30, 8)]);
    assert_eq!((held(&g, 10), held(&g, 20), held(&g, 30)), (3, 1, 3));
}

#[test]
fn whole_cores_in_one_cache_and_the_highest_cpus_first() {
    let (g, _) = grants(1, &[(10, 2), (20, 2)]);
    assert_eq!(g.grant_of(10), set(&[6, 7]));
    // The emptier cache, a whole core.
    assert_eq!(g.grant_of(20), set(&[2, 3]));
    let (g, _) = grants(1, &[(10, 4)]);
    assert_eq!(g.grant_of(10), set(&[4, 5, 6, 7]));
}

#[test]
fn regranting_keeps_what_a_process_holds() {
    let (mut g, t) = grants(1, &[(10, 5)]);
    let before = g.grant_of(10);
    assert_eq!(before, set(&[3, 4, 5, 6, 7]));
    assert!(g.open(7, 20));
    let change = g.request(20, 5, 0, &t);
    let after = g.grant_of(10);
    assert_eq!(after, set(&[4, 5, 6, 7]), "the CPU alone in its core goes");
    assert_eq!(g.grant_of(20), set(&[1, 2, 3]));
    // 3 changed hands, 1 and 2 were free.
    assert_eq!(change.moved, set(&[1, 2, 3]));
    assert!(g.changed(10, &change) && g.changed(20, &change));
    assert_eq!(g.generation(), 2);
}

#[test]
fn the_last_queue_closing_gives_the_cpus_back() {
    let (mut g, t) = grants(1, &[(10, 6), (20, 6)]);
    assert_eq!((held(&g, 10), held(&g, 20)), (4, 3));
    assert!(g.open(5, 20));
    assert_eq!(g.close(1, &t), Change::default(), "20 has queue 5 left");
    let change = g.close(0, &t);
    assert_eq!(held(&g, 10), 0);
    assert_eq!(held(&g, 20), 6, "the waiting asker grows");
    assert!(g.changed(20, &change));
    assert_eq!(g.queue_owner(0), None);
}

#[test]
fn reserve_and_offline_cpus_are_never_granted() {
    let (mut g, t) = grants(3, &[(10, 8)]);
    assert_eq!(held(&g, 10), 5);
    let change = g.set_online(7, false, &t);
    assert!(!g.grant_of(10).contains(7));
    assert_eq!(held(&g, 10), 4, "7 online CPUs, 3 kept back");
    assert!(change.moved.contains(7));
}

#[test]
fn tasks_run_on_their_grant_else_on_no_ones_else_where_they_may() {
    let (g, _) = grants(1, &[(10, 2)]);
    let all = CpuSet::first_n(8);
    assert_eq!(g.may_run(10, &all), set(&[6, 7]));
    assert_eq!(g.may_run(99, &all), set(&[0, 1, 2, 3, 4, 5]));
    assert_eq!(g.may_run(10, &set(&[1, 2])), set(&[1, 2]));
    assert_eq!(g.may_run(99, &set(&[5, 6])), set(&[5]));
    assert_eq!(g.may_run(99, &set(&[6])), set(&[6]));
}

#[test]
fn tables_have_limits() {
    let t = topology();
    let mut g = Grants::new(&t, 1, Reclaim::AtOnce).unwrap();
    for q in 0..MAX_QUEUES {
        assert!(g.open(q as QueueId, 100 + q as Pid));
    }
    assert!(!g.open(999, 1));
    assert!(!g.open(999, 100), "no queue slot even for a known process");
    g.close(3, &t);
    assert!(g.open(999, 100));
    assert!(!g.open(999, 101), "a queue belongs to one process");
}

/// Grants with CPUs asked back (see [`Reclaim::Asked`]), reserve 1.
fn asked(asking: &[(Pid, u32, u32)]) -> (Grants, Topology) {
    let t = topology();
    let mut g = Grants::new(&t, 1, Reclaim::Asked).unwrap();
    for (queue, (tgid, cores, priority)) in asking.iter().enumerate() {
        assert!(g.open(queue as QueueId, *tgid));
        g.request(*tgid, *cores, *priority, &t);
    }
    (g, t)
}

#[test]
fn the_more_urgent_are_served_first_and_share_max_min_among_themselves() {
    // 7 grantable. Priority 0 asks 3 + 3, priority 5 asks 6: the urgent
    // get what they ask, the other what is left.
    let (g, _) = grants(1, &[(10, 6), (20, 3), (30, 3)]);
    assert_eq!((held(&g, 10), held(&g, 20), held(&g, 30)), (3, 2, 2));
    let t = topology();
    let mut g = Grants::new(&t, 1, Reclaim::AtOnce).unwrap();
    for (queue, (tgid, cores, priority)) in [(10, 6, 5), (20, 3, 0), (30, 3, 0)].iter().enumerate()
    {
        assert!(g.open(queue as QueueId, *tgid));
        g.request(*tgid, *cores, *priority, &t);
    }
    assert_eq!((held(&g, 10), held(&g, 20), held(&g, 30)), (1, 3, 3));
    // Two urgent ones asking 5 each split the 7 max-min; the other none.
    g.request(20, 5, 0, &t);
    g.request(30, 5, 0, &t);
    assert_eq!((held(&g, 10), held(&g, 20) + held(&g, 30)), (0, 7));
    assert!(held(&g, 20).abs_diff(held(&g, 30)) <= 1);
}

#[test]
fn a_cpu_taken_for_another_is_asked_back_and_the_taker_waits_for_it() {
    let (mut g, t) = asked(&[(10, 6, 4)]);
    let before = g.grant_of(10);
    assert!(g.open(1, 20));
    let change = g.request(20, 3, 0, &t);
    // 10 keeps its 6 meanwhile, 2 of them asked back; 20 gets the one
    // CPU free past the reserve.
    assert_eq!(g.grant_of(10), before);
    let reclaiming = g.reclaiming();
    assert_eq!(reclaiming.len(), 2);
    assert!(reclaiming.without(before).is_empty());
    assert_eq!(held(&g, 20), 1);
    assert!(g.changed(10, &change) && g.changed(20, &change));
    assert!(
        change.moved.without(g.grant_of(20)).is_empty(),
        "none of 10's moved"
    );
    let notices: Vec<_> = g.notices(&change).collect();
    let kinds: Vec<_> = notices.iter().map(|(q, _, n)| (*q, n.kind)).collect();
    assert_eq!(
        kinds,
        [(0, GRANT_HELD), (1, GRANT_HELD), (0, GRANT_RECLAIM)]
    );
    assert_eq!(notices[2].2.cpus(), reclaiming);
    // Each CPU given back goes to 20; one not asked back is refused.
    let cpu = reclaiming.iter().next().unwrap();
    assert_eq!(g.reclaimer_of(cpu), Some(10));
    let not_asked = before.without(reclaiming).iter().next().unwrap();
    assert!(g.release_cpu(not_asked, Some(10), &t).is_none());
    assert!(
        g.release_cpu(cpu, Some(20), &t).is_none(),
        "only the holder gives back"
    );
    let change = g.release_cpu(cpu, Some(10), &t).unwrap();
    assert!(change.moved.contains(cpu));
    assert_eq!((held(&g, 10), held(&g, 20)), (5, 2));
    let last = g.reclaiming().iter().next().unwrap();
    g.release_cpu(last, None, &t).unwrap();
    assert_eq!((held(&g, 10), held(&g, 20)), (4, 3));
    assert!(g.reclaiming().is_empty());
    assert_eq!(g.granted().len(), 7, "never more than all but the reserve");
}

#[test]
fn a_release_of_a_cpu_asked_of_another_is_refused_and_changes_nothing() {
    let (mut g, t) = asked(&[(10, 6, 4), (20, 3, 0)]);
    let (before, generation) = (g.grant_of(10), g.generation());
    let cpu = g.reclaiming().iter().next().unwrap();
    assert_eq!(g.reclaimer_of(cpu), Some(10));
    for wrong in [20, 30] {
        assert!(g.release_cpu(cpu, Some(wrong), &t).is_none(), "{wrong}");
    }
    assert_eq!(g.reclaimer_of(cpu), Some(10), "still asked back of 10");
    assert_eq!((g.grant_of(10), g.generation()), (before, generation));
    assert!(g.release_cpu(cpu, Some(10), &t).is_some());
    assert!(!g.grant_of(10).contains(cpu));
}

#[test]
fn cpus_a_process_gives_up_itself_go_at_once() {
    let (mut g, t) = asked(&[(10, 6, 0)]);
    g.request(10, 2, 0, &t);
    assert_eq!(held(&g, 10), 2);
    assert!(g.reclaiming().is_empty());
    // Asking less while squeezed: only what it still wants is asked back.
    let (mut g, t) = asked(&[(10, 6, 4), (20, 3, 0)]);
    assert_eq!(g.reclaiming().len(), 2);
    g.request(10, 5, 4, &t);
    assert_eq!(g.reclaiming().len(), 1);
    assert_eq!(held(&g, 10), 5);
}

#[test]
fn a_cpu_asked_back_and_wanted_again_stays() {
    let (mut g, t) = asked(&[(10, 6, 4), (20, 3, 0)]);
    let before = g.grant_of(10);
    assert_eq!(g.reclaiming().len(), 2);
    let change = g.request(20, 1, 0, &t);
    assert!(g.reclaiming().is_empty(), "the reclaim is called off");
    assert_eq!(g.grant_of(10), before);
    assert!(g.changed(10, &change), "10 is told");
    assert_eq!(held(&g, 20), 1);
}
