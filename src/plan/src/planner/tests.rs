use super::*;
use crate::model::{Cluster, Host, MoveRecord, Resources, Rules, Vm};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn cpu(c: f64) -> Resources {
    Resources {
        cpu: c,
        mem: 2.0 * GIB,
        ..Resources::default()
    }
}

fn vm(id: &str, now: f64, upper: f64) -> Vm {
    Vm {
        id: id.into(),
        current: cpu(now),
        forecast_mean: cpu(upper * 0.9),
        forecast_upper: cpu(upper),
        memory: 2.0 * GIB,
        working_set: 0.2 * GIB,
        dirty_rate: 1e7,
        pinned: false,
        affinity_group: None,
        anti_affinity_group: None,
    }
}

fn host(id: &str, vms: Vec<Vm>) -> Host {
    Host {
        id: id.into(),
        capacity: Resources {
            cpu: 16.0,
            mem: 64.0 * GIB,
            disk: 1e9,
            net: 1.25e9,
        },
        vms,
        maintenance: false,
        migrating: 0,
        reserved: Resources::default(),
    }
}

fn cluster(hosts: Vec<Host>) -> Cluster {
    Cluster {
        hosts,
        now_s: 100_000,
        history: Vec::new(),
        migrating: 0,
    }
}

/// A host whose VMs are fine now but forecast to need 17 of its 16 cores.
fn hot() -> Host {
    host(
        "a",
        vec![vm("a1", 4.0, 8.0), vm("a2", 3.0, 5.0), vm("a3", 2.0, 4.0)],
    )
}

#[test]
fn a_host_forecast_to_run_hot_sheds_a_vm_to_the_host_whose_forecast_holds_it() {
    let c = cluster(vec![
        hot(),
        host("b", vec![vm("b1", 10.0, 11.0)]),
        host("c", vec![vm("c1", 2.0, 3.0)]),
    ]);
    let p = plan(&c, &Rules::default());
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    let m = &p.moves[0];
    assert_eq!((m.from.as_str(), m.to.as_str()), ("a", "c"));
    assert!(m.source_before > 1.0 && m.source_after <= 0.9, "{m:?}");
    assert!(m.target_after <= Rules::default().target_share, "{m:?}");
    assert_eq!(m.cost.method, crate::Method::PreCopy);
    // "b" was considered and refused for what its own forecast says.
    let d = &p.decisions[0];
    assert_eq!(d.trigger, "hot");
    assert!(d
        .rejected
        .iter()
        .any(|r| r.target.as_deref() == Some("b") && r.reason.contains("would reach")));
}

#[test]
fn a_move_that_would_overload_every_target_is_not_made_and_says_why() {
    let c = cluster(vec![
        hot(),
        host("b", vec![vm("b1", 10.0, 12.0)]),
        host("c", vec![vm("c1", 11.0, 12.5)]),
    ]);
    let p = plan(&c, &Rules::default());
    assert!(p.moves.is_empty(), "{p:#?}");
    let d = &p.decisions[0];
    assert_eq!(d.note.as_deref(), Some("no move is safe and worth it"));
    assert!(d.rejected.len() >= 6, "{d:#?}");
}

#[test]
fn pinned_affine_and_cooling_vms_stay_and_cool_downs_grow_with_each_move() {
    let mut a = hot();
    a.vms[0].pinned = true;
    a.vms[1].affinity_group = Some("db".into());
    let mut c = cluster(vec![a, host("b", vec![])]);
    c.history = vec![MoveRecord {
        vm: "a3".into(),
        at_s: c.now_s - 1000,
    }];
    let p = plan(&c, &Rules::default());
    assert!(p.moves.is_empty(), "{p:#?}");
    let reasons: Vec<&str> = p.decisions[0]
        .rejected
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("pinned")));
    assert!(reasons.iter().any(|r| r.contains("affinity group")));
    assert!(reasons.iter().any(|r| r.contains("cooling down for 800 s")));

    // After 2000 s a VM moved once may move; one moved twice today waits twice as long.
    c.now_s += 1000;
    assert_eq!(plan(&c, &Rules::default()).moves.len(), 1);
    c.history.push(MoveRecord {
        vm: "a3".into(),
        at_s: c.now_s - 2000,
    });
    let p = plan(&c, &Rules::default());
    assert!(p.moves.is_empty());
    assert!(p.decisions[0]
        .rejected
        .iter()
        .any(|r| r.reason.contains("cooling down for 1600 s")));
}

#[test]
fn anti_affinity_keeps_group_members_apart() {
    let mut a = hot();
    for v in &mut a.vms {
        v.anti_affinity_group = Some("web".into());
    }
    let mut b = host("b", vec![vm("b1", 1.0, 1.0)]);
    b.vms[0].anti_affinity_group = Some("web".into());
    let c = cluster(vec![a, b, host("c", vec![])]);
    let p = plan(&c, &Rules::default());
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.moves[0].to, "c");
}

#[test]
fn a_host_in_maintenance_is_drained_within_the_limits() {
    let mut a = host("a", vec![vm("a1", 1.0, 1.0), vm("a2", 1.0, 1.0)]);
    a.maintenance = true;
    let c = cluster(vec![a, host("b", vec![]), host("c", vec![])]);
    let rules = Rules {
        max_concurrent_per_host: 4,
        ..Rules::default()
    };
    let p = plan(&c, &rules);
    assert_eq!(p.moves.len(), 2, "{p:#?}");
    assert!(p.moves.iter().all(|m| m.from == "a" && m.to != "a"));
    assert_eq!(p.decisions[0].trigger, "maintenance");
    // With the default of one migration per host at a time, one now and the next later.
    let p = plan(&c, &Rules::default());
    assert_eq!(p.moves.len(), 1);
    assert!(p.decisions[1]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("already migrating")));
}

#[test]
fn the_hourly_budget_and_the_mesh_limit_stop_moves() {
    let mut c = cluster(vec![hot(), host("b", vec![])]);
    c.history = (0..12)
        .map(|i| MoveRecord {
            vm: format!("x{i}"),
            at_s: c.now_s - 60 * i,
        })
        .collect();
    let p = plan(&c, &Rules::default());
    assert!(p.moves.is_empty());
    assert!(p.decisions[0]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("hourly budget")));
    c.history.clear();
    c.migrating = 4;
    let p = plan(&c, &Rules::default());
    assert!(p.decisions[0]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("mesh")));
}

#[test]
fn a_guest_that_would_not_converge_is_moved_by_a_named_fallback_or_a_quieter_vm_instead() {
    let restless = Vm {
        dirty_rate: 5e9,
        working_set: 2.0 * GIB,
        ..vm("r", 4.0, 5.0)
    };
    // "r" and "q" relieve the host alike; "r" dirties memory faster than the link sends.
    let a = host(
        "a",
        vec![
            restless.clone(),
            vm("q", 4.0, 5.0),
            vm("x", 2.0, 4.0),
            vm("y", 1.0, 2.5),
        ],
    );
    let p = plan(&cluster(vec![a, host("b", vec![])]), &Rules::default());
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(p.moves[0].vm, "q", "the quiet VM is cheaper to move");
    // When only the restless VM relieves its host enough, it moves by a named fallback.
    let a = host(
        "a",
        vec![
            Vm {
                forecast_upper: cpu(10.0),
                ..restless
            },
            vm("q", 6.0, 7.0),
        ],
    );
    let p = plan(&cluster(vec![a, host("b", vec![])]), &Rules::default());
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(p.moves[0].vm, "r");
    assert_ne!(p.moves[0].cost.method, crate::Method::PreCopy);
}

#[test]
fn host_bounds_add_margins_in_quadrature_not_in_sum() {
    let mut a = vm("a", 1.0, 2.0);
    a.forecast_mean = cpu(1.0);
    let mut b = a.clone();
    b.id = "b".into();
    let h = host("h", vec![a.clone(), b]);
    let upper = h.demand_upper().cpu;
    assert!((upper - (2.0 + 2f64.sqrt())).abs() < 1e-9, "{upper}");
    assert!((h.upper_without("b").cpu - 2.0).abs() < 1e-9);
    let with = host("g", vec![]).upper_with(Some(&a)).cpu;
    assert!((with - 2.0).abs() < 1e-9);
}

#[test]
fn a_host_that_stays_overloaded_whatever_leaves_spends_no_move() {
    // "g" alone needs 20 of the 16 cores: moving a small neighbour away frees nothing that
    // matters, so the budget is kept for hosts a move can save.
    let mut g = vm("g", 20.0, 20.5);
    g.forecast_mean = cpu(20.0);
    let a = host("a", vec![g, vm("a2", 2.0, 3.0)]);
    let c = cluster(vec![a, host("b", vec![vm("b1", 1.0, 2.0)])]);
    let p = plan(&c, &Rules::default());
    assert!(p.moves.is_empty(), "{p:#?}");
    let d = &p.decisions[0];
    assert!(d.overload_risk > 0.99, "{d:#?}");
    assert!(
        d.rejected
            .iter()
            .any(|r| r.vm == "a2" && r.reason.contains("avoids too little risk")),
        "{d:#?}"
    );
}

#[test]
fn the_host_most_at_risk_is_served_first_and_the_move_says_what_it_avoids() {
    let rules = Rules {
        max_moves_per_plan: 1,
        ..Rules::default()
    };
    // "a" is forecast at 17 of 16 cores, "z" at 15.5: both hot, only "a" likely overloaded.
    let z = host(
        "z",
        vec![vm("z1", 4.0, 8.0), vm("z2", 3.0, 4.5), vm("z3", 2.0, 3.0)],
    );
    let c = cluster(vec![z, hot(), host("c", vec![vm("c1", 1.0, 2.0)])]);
    let p = plan(&c, &rules);
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(p.moves[0].from, "a");
    assert!(p.moves[0].risk_avoided > 0.05, "{:?}", p.moves[0]);
}
