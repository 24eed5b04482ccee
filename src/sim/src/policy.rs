//! The balancing policies.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Never migrate.
    None,
    /// Threshold-triggered, as Sandpiper, OpenStack Watcher's workload_balance and CloudSim's
    /// THR: a host is hot when its measured CPU demand stays above 80% of capacity for 2
    /// consecutive steps; it then moves the smallest-memory VM whose removal brings it under
    /// 80% (or, if none does, the VM with the most CPU) to the least-loaded host that stays
    /// under 80% after the move.
    Reactive,
    /// Augur's planner on forecasts from augur-gbt trained online on the past only.
    Proactive,
    /// Augur's planner given each VM's actual peak demand over the steps up to the horizon as
    /// its forecast (mean and bound alike), under the same limits: not a policy anyone can run, but the reference for
    /// how far a better forecaster could take the planner.
    Oracle,
    /// Every hour every VM placed afresh from the last 8 hours of demand, with no limit on moves
    /// (the VMs most restless first, each where it adds the fewest overloaded steps): a
    /// reference for what placement from history can do.
    ReplaceHistory,
    /// The same from the coming hour's actual demand: a reference for perfect foresight with
    /// unlimited moves.
    ReplaceOracle,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Reactive => "reactive",
            Policy::Proactive => "proactive",
            Policy::Oracle => "oracle",
            Policy::ReplaceHistory => "replace-history",
            Policy::ReplaceOracle => "replace-oracle",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Policy::None),
            "reactive" => Ok(Policy::Reactive),
            "proactive" => Ok(Policy::Proactive),
            "oracle" => Ok(Policy::Oracle),
            "replace-history" => Ok(Policy::ReplaceHistory),
            "replace-oracle" => Ok(Policy::ReplaceOracle),
            other => Err(format!(
                "unknown policy {other:?} (none, reactive, proactive, oracle, replace-history or replace-oracle)"
            )),
        }
    }
}

/// The reactive threshold and how many consecutive steps above it make a host hot.
pub const REACTIVE_THRESHOLD: f64 = 0.8;
pub const REACTIVE_STEPS: usize = 2;

/// The reactive choice for one hot host: (VM index, target host), or `None`.
/// `demand[h]` is each host's measured CPU demand, `vms_on` the VMs of the hot host with
/// their (index, CPU now, memory bytes), `allowed(vm)` whether the VM may move now and
/// `target_ok(h)` whether host `h` may take a VM now.
pub fn reactive_choice(
    hot: usize,
    demand: &[f64],
    capacity: f64,
    vms_on: &[(usize, f64, f64)],
    allowed: impl Fn(usize) -> bool,
    target_ok: impl Fn(usize) -> bool,
) -> Option<(usize, usize)> {
    let limit = REACTIVE_THRESHOLD * capacity;
    let mut movable: Vec<&(usize, f64, f64)> = vms_on.iter().filter(|v| allowed(v.0)).collect();
    movable.sort_by(|a, b| a.2.total_cmp(&b.2));
    let vm = movable
        .iter()
        .find(|v| demand[hot] - v.1 < limit)
        .or_else(|| movable.iter().max_by(|a, b| a.1.total_cmp(&b.1)))?;
    let target = (0..demand.len())
        .filter(|&h| h != hot && target_ok(h) && demand[h] + vm.1 < limit)
        .min_by(|a, b| demand[*a].total_cmp(&demand[*b]))?;
    Some((vm.0, target))
}
