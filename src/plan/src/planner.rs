//! The decision: hot hosts, then for each the best safe move, with every alternative explained.

use crate::cost::{migration_cost, Method, MigrationCost};
use crate::limits::{cooldown_left, moves_in_last_hour};
use crate::model::{Cluster, Host, HostId, Resources, Rules, Vm, VmId};
use crate::risk::quantile_z;
use serde::Serialize;

/// A proposed migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub vm: VmId,
    pub from: HostId,
    pub to: HostId,
    pub cost: MigrationCost,
    /// Peak share of capacity (upper bound at the horizon) before and after, on both hosts.
    pub source_before: f64,
    pub source_after: f64,
    pub target_before: f64,
    pub target_after: f64,
    /// How much the move lowers the expected number of overloaded hosts at the horizon: the
    /// source's chance of overload falls, the target's may rise.
    pub risk_avoided: f64,
    /// What the choice maximised: the source's drop in peak share plus the risk avoided, less
    /// the cost.
    pub score: f64,
}

/// An alternative that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub vm: VmId,
    pub target: Option<HostId>,
    pub reason: String,
}

/// What the planner concluded about one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub host: HostId,
    /// Why the host was looked at: "hot" or "maintenance".
    pub trigger: String,
    pub peak_share: f64,
    pub peak_resource: String,
    /// The chance that the host's demand exceeds its capacity at the horizon, by its forecast.
    pub overload_risk: f64,
    pub chosen: Option<Move>,
    pub rejected: Vec<Rejected>,
    /// When nothing was chosen: why.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub moves: Vec<Move>,
    pub decisions: Vec<Decision>,
}

/// Score lost per hour of predicted migration time, and for methods other than pre-copy.
const COST_PER_HOUR: f64 = 0.1;
const AUTO_CONVERGE_PENALTY: f64 = 0.02;
const POST_COPY_PENALTY: f64 = 0.05;

fn share(demand: &Resources, host: &Host) -> (f64, &'static str) {
    demand.peak_share(&host.capacity)
}

fn candidate_reason(vm: &Vm, cluster: &Cluster, rules: &Rules) -> Option<String> {
    if vm.pinned {
        return Some("pinned".into());
    }
    if let Some(group) = &vm.affinity_group {
        return Some(format!(
            "in affinity group {group:?}: the group moves together or not at all"
        ));
    }
    cooldown_left(&cluster.history, &vm.id, cluster.now_s, rules)
        .map(|left| format!("cooling down for {left} s more"))
}

fn method_penalty(method: Method) -> f64 {
    match method {
        Method::PreCopy => 0.0,
        Method::AutoConverge => AUTO_CONVERGE_PENALTY,
        Method::PostCopy => POST_COPY_PENALTY,
    }
}

/// Plans moves for the hot hosts and hosts in maintenance of `cluster` under `rules`.
pub fn plan(cluster: &Cluster, rules: &Rules) -> Plan {
    let mut hosts: Vec<Host> = cluster.hosts.clone();
    let mut out = Plan::default();
    let mut budget = rules
        .max_moves_per_hour
        .saturating_sub(moves_in_last_hour(&cluster.history, cluster.now_s));
    let mut mesh_slots = rules.max_concurrent_mesh.saturating_sub(cluster.migrating);

    let z = quantile_z(rules.bound_level);
    // Most at risk of overload first, then hottest; hosts in maintenance are drained after.
    let mut order: Vec<(usize, f64, f64)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                i,
                h.overload_risk(None, None, z),
                share(&h.demand_upper(), h).0,
            )
        })
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)));
    order.sort_by_key(|(i, _, _)| hosts[*i].maintenance);

    for (src, _, _) in order {
        loop {
            let host = &hosts[src];
            let (peak, resource) = share(&host.demand_upper(), host);
            let trigger = if host.maintenance && !host.vms.is_empty() {
                "maintenance"
            } else if peak > rules.trigger_share {
                "hot"
            } else {
                break;
            };
            let mut decision = Decision {
                host: host.id.clone(),
                trigger: trigger.into(),
                peak_share: peak,
                peak_resource: resource.into(),
                overload_risk: host.overload_risk(None, None, z),
                chosen: None,
                rejected: Vec::new(),
                note: None,
            };
            let blocked = if out.moves.len() >= rules.max_moves_per_plan {
                Some("the plan's move limit is reached".to_string())
            } else if budget == 0 {
                Some(format!(
                    "the hourly budget of {} moves is spent",
                    rules.max_moves_per_hour
                ))
            } else if mesh_slots == 0 {
                Some("the mesh's concurrent-migration limit is reached".into())
            } else if host.migrating >= rules.max_concurrent_per_host {
                Some("this host is already migrating at its limit".into())
            } else {
                None
            };
            if let Some(note) = blocked {
                decision.note = Some(note);
                out.decisions.push(decision);
                break;
            }
            let best = best_move(&hosts, src, cluster, rules, z, &mut decision.rejected);
            let Some(chosen) = best else {
                decision.note = Some("no move is safe and worth it".into());
                out.decisions.push(decision);
                break;
            };
            apply(&mut hosts, src, &chosen);
            budget -= 1;
            mesh_slots -= 1;
            decision.chosen = Some(chosen.clone());
            out.decisions.push(decision);
            out.moves.push(chosen);
        }
    }
    out
}

/// The best move off host `src`, recording every rejected alternative.
fn best_move(
    hosts: &[Host],
    src: usize,
    cluster: &Cluster,
    rules: &Rules,
    z: f64,
    rejected: &mut Vec<Rejected>,
) -> Option<Move> {
    let source = &hosts[src];
    let source_demand = source.demand_upper();
    let (source_before, _) = share(&source_demand, source);
    // Each host's risk as it stands, once: every VM of the source is weighed against each.
    let risk_now: Vec<f64> = hosts
        .iter()
        .map(|h| h.overload_risk(None, None, z))
        .collect();
    let source_risk = risk_now[src];
    let source_moments = source.moments();
    // A host at risk must have that risk lowered; one merely above the trigger keeps headroom.
    let needs_risk_drop = !source.maintenance && source_risk >= rules.min_risk_drop;
    let mut best: Option<Move> = None;
    for vm in &source.vms {
        if let Some(reason) = candidate_reason(vm, cluster, rules) {
            rejected.push(Rejected {
                vm: vm.id.clone(),
                target: None,
                reason,
            });
            continue;
        }
        let left = source_moments.without(vm);
        let (source_after, _) = share(&left.upper(), source);
        let source_risk_after = left.risk(&source.capacity, z);
        let gain = source_before - source_after;
        if !source.maintenance && gain < rules.min_gain {
            rejected.push(Rejected {
                vm: vm.id.clone(),
                target: None,
                reason: format!(
                    "moving it lowers the host's peak by {:.1} points, below the minimum {:.1}",
                    gain * 100.0,
                    rules.min_gain * 100.0
                ),
            });
            continue;
        }
        let cost = migration_cost(vm.memory, vm.working_set, vm.dirty_rate, &rules.link);
        if !cost.total_s.is_finite() {
            rejected.push(Rejected {
                vm: vm.id.clone(),
                target: None,
                reason: "the link has no bandwidth for a migration".into(),
            });
            continue;
        }
        for (t, target) in hosts.iter().enumerate() {
            if t == src {
                continue;
            }
            let reject = |reason: String| Rejected {
                vm: vm.id.clone(),
                target: Some(target.id.clone()),
                reason,
            };
            if target.maintenance {
                rejected.push(reject("in maintenance".into()));
                continue;
            }
            if target.migrating >= rules.max_concurrent_per_host {
                rejected.push(reject("already migrating at its limit".into()));
                continue;
            }
            if let Some(group) = &vm.anti_affinity_group {
                if target
                    .vms
                    .iter()
                    .any(|o| o.anti_affinity_group.as_ref() == Some(group))
                {
                    rejected.push(reject(format!(
                        "holds a VM of anti-affinity group {group:?}"
                    )));
                    continue;
                }
            }
            let (target_before, _) = share(&target.demand_upper(), target);
            let (target_after, what) = share(&target.upper_with(Some(vm)), target);
            if target_after > rules.target_share {
                rejected.push(reject(format!(
                    "its forecast {what} would reach {:.0}% of capacity (limit {:.0}%)",
                    target_after * 100.0,
                    rules.target_share * 100.0
                )));
                continue;
            }
            let target_risk = risk_now[t];
            let target_risk_after = target.overload_risk(Some(vm), None, z);
            let risk_avoided =
                (source_risk - source_risk_after) - (target_risk_after - target_risk);
            if needs_risk_drop && risk_avoided < rules.min_risk_drop {
                rejected.push(reject(format!(
                    "avoids too little risk of overload: the host's chance {:.0}% -> {:.0}%, \
                     the target's {:.0}% -> {:.0}% (minimum drop {:.0} points)",
                    source_risk * 100.0,
                    source_risk_after * 100.0,
                    target_risk * 100.0,
                    target_risk_after * 100.0,
                    rules.min_risk_drop * 100.0
                )));
                continue;
            }
            let score = gain
                + risk_avoided
                - COST_PER_HOUR * cost.total_s / 3600.0
                - method_penalty(cost.method)
                // Among equals, the emptier target.
                - 0.01 * target_after;
            let candidate = Move {
                vm: vm.id.clone(),
                from: source.id.clone(),
                to: target.id.clone(),
                cost,
                source_before,
                source_after,
                target_before,
                target_after,
                risk_avoided,
                score,
            };
            match &best {
                Some(b) if b.score >= candidate.score => rejected.push(reject(format!(
                    "scores {:.3}, below the chosen move",
                    candidate.score
                ))),
                _ => {
                    if let Some(previous) = best.replace(candidate) {
                        rejected.push(Rejected {
                            vm: previous.vm,
                            target: Some(previous.to),
                            reason: format!("scores {:.3}, below the chosen move", previous.score),
                        });
                    }
                }
            }
        }
    }
    best
}

/// Moves the VM in the working copy, so later decisions see the state after the move.
fn apply(hosts: &mut [Host], src: usize, m: &Move) {
    let Some(i) = hosts[src].vms.iter().position(|v| v.id == m.vm) else {
        return;
    };
    let vm = hosts[src].vms.remove(i);
    hosts[src].migrating += 1;
    if let Some(target) = hosts.iter_mut().find(|h| h.id == m.to) {
        target.migrating += 1;
        target.vms.push(vm);
    }
}

#[cfg(test)]
mod tests;
