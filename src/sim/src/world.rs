//! The replay loop.

use crate::metrics::SimReport;
use crate::placement::place_first_fit;
use crate::policy::{reactive_choice, Policy, REACTIVE_STEPS, REACTIVE_THRESHOLD};
use augur_plan::limits::{cooldown_left, moves_in_last_hour};
use augur_plan::{migration_cost, Cluster, Host, MoveRecord, Resources, Rules, Vm};
use forecaster::Forecaster;

/// One traced VM: CPU demand per step (in the same unit as host capacity, e.g. MHz) and its
/// memory.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVm {
    pub id: String,
    pub cpu: Vec<f64>,
    /// Provisioned memory, bytes: what a migration copies.
    pub memory: f64,
    /// Memory in use per step, bytes (the working set the cost model uses).
    pub mem_used: Vec<f64>,
}

impl SimVm {
    pub fn mean_cpu(&self) -> f64 {
        self.cpu.iter().sum::<f64>() / self.cpu.len().max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub hosts: usize,
    /// CPU capacity per host; `None`: sized so the VMs' mean demand fills `fill` of the hosts.
    pub host_capacity: Option<f64>,
    pub fill: f64,
    pub seed: u64,
    /// The host of each VM at the start; `None`: seeded first-fit.
    pub initial_hosts: Option<Vec<usize>>,
    pub policy: Policy,
    pub step_s: i64,
    /// Steps replayed before measuring; the proactive forecaster first trains on them.
    pub warmup_steps: usize,
    /// The proactive policy retrains on everything seen so far this often.
    pub retrain_steps: usize,
    /// The planning horizon of the proactive policy, in steps.
    pub horizon_steps: usize,
    /// Limits both policies obey: cool-down, concurrency, budget; and the link.
    pub rules: Rules,
    /// Dirtied bytes per second, as a share of the memory in use (traces carry no dirty rate).
    pub dirty_share_per_s: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            hosts: 10,
            host_capacity: None,
            fill: 0.7,
            seed: 1,
            initial_hosts: None,
            policy: Policy::Proactive,
            step_s: 300,
            warmup_steps: 7 * 288,
            retrain_steps: 7 * 288,
            horizon_steps: 3,
            rules: Rules::default(),
            dirty_share_per_s: 0.01,
        }
    }
}

/// Overhead of a migration on both hosts, as a share of the VM's CPU, for its step.
const MIGRATION_OVERHEAD: f64 = 0.1;

/// Runs one policy over the VMs' common span. Errors name what is wrong with the input.
pub fn simulate(vms: &[SimVm], config: &SimConfig) -> Result<SimReport, String> {
    let steps = vms.iter().map(|v| v.cpu.len()).min().unwrap_or(0);
    if vms.is_empty() || config.hosts == 0 {
        return Err("nothing to simulate: no VMs or no hosts".into());
    }
    if steps <= config.warmup_steps + config.horizon_steps {
        return Err(format!(
            "the traces have {steps} common steps, fewer than the warm-up of {} plus the horizon",
            config.warmup_steps
        ));
    }
    if vms.iter().any(|v| v.mem_used.len() < steps) {
        return Err("a VM's memory series is shorter than its CPU series".into());
    }
    let total_mean: f64 = vms.iter().map(SimVm::mean_cpu).sum();
    let capacity = config
        .host_capacity
        .unwrap_or(total_mean / (config.fill * config.hosts as f64));
    if !(capacity.is_finite() && capacity > 0.0) {
        return Err(format!("host capacity {capacity} is not a positive number"));
    }
    let mut host_of = match &config.initial_hosts {
        Some(hosts) if hosts.len() == vms.len() && hosts.iter().all(|h| *h < config.hosts) => {
            hosts.clone()
        }
        Some(_) => return Err("the initial placement does not match the VMs and hosts".into()),
        None => place_first_fit(vms, config.hosts, capacity, config.fill, config.seed),
    };
    let mut report = SimReport {
        policy: config.policy.as_str().into(),
        hosts: config.hosts,
        vms: vms.len(),
        steps: steps - config.warmup_steps,
        ..SimReport::default()
    };
    // Moves so far; VMs are named by their index, as the planner sees them.
    let mut history: Vec<MoveRecord> = Vec::new();
    let mut hot_for = vec![0usize; config.hosts];
    let mut forecaster = Forecaster::default();
    let (mut saturated, mut active, mut lost, mut demanded) = (0.0, 0.0, 0.0, 0.0);
    let (mut fc_err, mut fc_n) = (0.0, 0usize);
    for t in 0..steps {
        let now_s = t as i64 * config.step_s;
        let mut demand = vec![0.0; config.hosts];
        for (v, vm) in vms.iter().enumerate() {
            demand[host_of[v]] += vm.cpu[t];
        }
        // Decide on what is known at the end of step t, act for step t + 1; every policy starts
        // deciding at the first measured step, so all are measured from the same state and
        // every move is counted and charged.
        let deciding = t >= config.warmup_steps;
        let moves: Vec<(usize, usize)> = match config.policy {
            Policy::None => Vec::new(),
            Policy::Reactive if deciding => {
                for (h, d) in demand.iter().enumerate() {
                    hot_for[h] = if *d > REACTIVE_THRESHOLD * capacity {
                        hot_for[h] + 1
                    } else {
                        0
                    };
                }
                reactive_moves(
                    vms, &host_of, &demand, capacity, &hot_for, &history, now_s, t, config,
                )
            }
            Policy::Reactive => Vec::new(),
            Policy::Proactive if deciding => {
                if forecaster.due(t, config) {
                    forecaster.train(vms, t + 1, config)?;
                }
                let forecasts = forecaster.forecast(vms, t, config)?;
                for (v, f) in forecasts.iter().enumerate() {
                    if let Some(actual) = vms[v].cpu.get(t + config.horizon_steps) {
                        fc_err += (f.at_horizon - actual).abs();
                        fc_n += 1;
                    }
                }
                let peaks: Vec<(f64, f64)> = forecasts
                    .iter()
                    .map(|f| (f.peak_mean, f.peak_upper))
                    .collect();
                proactive_moves(vms, &host_of, &peaks, capacity, &history, now_s, t, config)
            }
            Policy::Proactive => Vec::new(),
            Policy::Oracle if deciding => {
                let foresight: Vec<(f64, f64)> = vms
                    .iter()
                    .map(|vm| {
                        let end = (t + config.horizon_steps).min(steps - 1);
                        let peak = vm.cpu[t + 1..=end].iter().fold(0.0f64, |a, b| a.max(*b));
                        (peak, peak)
                    })
                    .collect();
                proactive_moves(
                    vms, &host_of, &foresight, capacity, &history, now_s, t, config,
                )
            }
            Policy::Oracle => Vec::new(),
            Policy::ReplaceHistory | Policy::ReplaceOracle
                if deciding && (t - config.warmup_steps).is_multiple_of(replace::EVERY_STEPS) =>
            {
                let span = if config.policy == Policy::ReplaceHistory {
                    (t + 1).saturating_sub(replace::HISTORY_STEPS)..t + 1
                } else {
                    t + 1..(t + 1 + replace::EVERY_STEPS).min(steps)
                };
                let window: Vec<&[f64]> = vms.iter().map(|vm| &vm.cpu[span.clone()]).collect();
                replace::moves(&host_of, &window, config.hosts, capacity, config.fill)
            }
            Policy::ReplaceHistory | Policy::ReplaceOracle => Vec::new(),
        };
        if t >= config.warmup_steps {
            // The moves decided now act from the next step; their overhead falls in this one.
            let mut overhead = vec![0.0; config.hosts];
            for &(v, to) in &moves {
                let extra = MIGRATION_OVERHEAD * vms[v].cpu[t];
                overhead[host_of[v]] += extra;
                overhead[to] += extra;
                lost += extra;
            }
            let mut util = Vec::with_capacity(config.hosts);
            for h in 0..config.hosts {
                let d = demand[h] + overhead[h];
                util.push((d / capacity) as f32);
                if demand[h] > 0.0 {
                    active += 1.0;
                    if d >= capacity {
                        saturated += 1.0;
                    }
                }
                if d > capacity {
                    report.overload_host_minutes += config.step_s as f64 / 60.0;
                }
            }
            demanded += demand.iter().sum::<f64>();
            report.utilisation.push(util);
            for &(v, to) in &moves {
                let vm = &vms[v];
                let used = vm.mem_used[t].min(vm.memory);
                let cost = migration_cost(
                    vm.memory,
                    used,
                    used * config.dirty_share_per_s,
                    &config.rules.link,
                );
                report.migrations += 1;
                report.bytes_migrated += cost.bytes;
                report.moves.push((t - config.warmup_steps, host_of[v], to));
            }
        }
        for (v, to) in moves {
            history.push(MoveRecord {
                vm: v.to_string(),
                at_s: now_s,
            });
            host_of[v] = to;
        }
    }
    report.slatah = if active > 0.0 {
        saturated / active
    } else {
        0.0
    };
    report.pdm = if demanded > 0.0 { lost / demanded } else { 0.0 };
    report.slav = report.slatah * report.pdm;
    report.forecast_mae = (fc_n > 0).then(|| fc_err / fc_n as f64);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn reactive_moves(
    vms: &[SimVm],
    host_of: &[usize],
    demand: &[f64],
    capacity: f64,
    hot_for: &[usize],
    history: &[MoveRecord],
    now_s: i64,
    t: usize,
    config: &SimConfig,
) -> Vec<(usize, usize)> {
    let rules = &config.rules;
    let mut budget = rules
        .max_moves_per_hour
        .saturating_sub(moves_in_last_hour(history, now_s))
        .min(rules.max_concurrent_mesh) as usize;
    let mut demand = demand.to_vec();
    let mut busy = vec![0u32; demand.len()];
    let mut moves = Vec::new();
    let mut hot: Vec<usize> = (0..demand.len())
        .filter(|&h| hot_for[h] >= REACTIVE_STEPS)
        .collect();
    hot.sort_by(|a, b| demand[*b].total_cmp(&demand[*a]));
    for h in hot {
        if budget == 0 {
            break;
        }
        if busy[h] >= rules.max_concurrent_per_host {
            continue;
        }
        let on: Vec<(usize, f64, f64)> = (0..vms.len())
            .filter(|&v| host_of[v] == h && !moves.iter().any(|(m, _)| *m == v))
            .map(|v| (v, vms[v].cpu[t], vms[v].memory))
            .collect();
        let choice = reactive_choice(
            h,
            &demand,
            capacity,
            &on,
            |v| cooldown_left(history, &v.to_string(), now_s, rules).is_none(),
            |target| busy[target] < rules.max_concurrent_per_host,
        );
        if let Some((v, to)) = choice {
            demand[h] -= vms[v].cpu[t];
            demand[to] += vms[v].cpu[t];
            busy[h] += 1;
            busy[to] += 1;
            budget -= 1;
            moves.push((v, to));
        }
    }
    moves
}

#[allow(clippy::too_many_arguments)]
fn proactive_moves(
    vms: &[SimVm],
    host_of: &[usize],
    forecasts: &[(f64, f64)],
    capacity: f64,
    history: &[MoveRecord],
    now_s: i64,
    t: usize,
    config: &SimConfig,
) -> Vec<(usize, usize)> {
    let cpu = |c: f64| Resources {
        cpu: c,
        ..Resources::default()
    };
    let mut hosts: Vec<Host> = (0..config.hosts)
        .map(|h| Host {
            id: h.to_string(),
            capacity: cpu(capacity),
            vms: Vec::new(),
            maintenance: false,
            migrating: 0,
            reserved: Resources::default(),
        })
        .collect();
    for (v, vm) in vms.iter().enumerate() {
        let used = vm.mem_used[t].min(vm.memory);
        hosts[host_of[v]].vms.push(Vm {
            id: v.to_string(),
            current: cpu(vm.cpu[t]),
            forecast_mean: cpu(forecasts[v].0),
            forecast_upper: cpu(forecasts[v].1),
            memory: vm.memory,
            working_set: used,
            dirty_rate: used * config.dirty_share_per_s,
            pinned: false,
            affinity_group: None,
            anti_affinity_group: None,
        });
    }
    let cluster = Cluster {
        hosts,
        now_s,
        history: history
            .iter()
            .filter(|m| now_s - m.at_s < 86_400)
            .cloned()
            .collect(),
        migrating: 0,
    };
    augur_plan::plan(&cluster, &config.rules)
        .moves
        .into_iter()
        .filter_map(|m| Some((m.vm.parse().ok()?, m.to.parse().ok()?)))
        .collect()
}

mod forecaster;
mod replace;
#[cfg(test)]
mod tests;
