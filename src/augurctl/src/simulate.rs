//! `augurctl simulate`: replays real traces on a simulated cluster under a balancing policy.

use crate::eval::TraceFormat;
use anyhow::Context;
use augur_predict::trace::{gwa, wide, Resource};
use augur_sim::{simulate, Policy, Rules, SimConfig, SimReport, SimVm};
use std::path::PathBuf;

/// Memory given to VMs of traces that do not say (wide CPU traces), and the share of it in use.
const DEFAULT_MEMORY: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;
const DEFAULT_USED_SHARE: f64 = 0.5;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A directory of GWA-T-12 traces, or one wide CSV file.
    #[arg(long)]
    pub traces: PathBuf,
    #[arg(long, value_enum, default_value_t = TraceFormat::Gwa)]
    pub format: TraceFormat,
    /// Hosts in the simulated cluster.
    #[arg(long)]
    pub hosts: usize,
    /// CPU capacity per host (MHz for GWA traces, % of one core for wide traces); by default
    /// sized so the VMs' mean demand fills --fill of the hosts.
    #[arg(long)]
    pub host_capacity: Option<f64>,
    /// none, reactive, proactive or oracle (the planner given the actual future: a reference,
    /// not a policy); several separated by commas (or "all" for those four) replay the same
    /// placement under each, draw them in one SVG and print one report (JSON object) per
    /// policy. Two more references ignore every limit on moves: replace-history places every
    /// VM afresh each hour from the last 8 hours, replace-oracle from the coming hour.
    #[arg(long)]
    pub policy: String,
    /// Share of the hosts' capacity the VMs' mean demand fills when --host-capacity is not given.
    #[arg(long, default_value_t = 0.7)]
    pub fill: f64,
    /// Seed of the initial first-fit placement.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Steps replayed before measuring (and trained on by the proactive forecaster); default
    /// 7 days, or a third of the trace if that is shorter.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// The planning horizon of the proactive policy, in 5-minute steps.
    #[arg(long, default_value_t = 3)]
    pub horizon_steps: usize,
    /// Migrations the whole cluster may start per hour (every policy obeys it).
    #[arg(long, default_value_t = 12)]
    pub moves_per_hour: u32,
    /// Migrations in flight at once in the whole cluster (every policy obeys it).
    #[arg(long, default_value_t = 4)]
    pub concurrent: u32,
    /// Draw host utilisation, overloads and migrations to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// The VMs of the traces, and how many were left out (no size or no memory series).
fn load(args: &SimulateArgs) -> anyhow::Result<(Vec<SimVm>, usize)> {
    let dir = &args.traces;
    if !dir.exists() {
        anyhow::bail!("no traces at {}", dir.display());
    }
    match args.format {
        TraceFormat::Gwa => {
            let (cpu, _) = gwa::load(dir, Resource::CpuMhz)
                .with_context(|| format!("loading {}", dir.display()))?;
            let (mem, _) = gwa::load(dir, Resource::Mem)?;
            let sizes = gwa::load_sizes(dir)?;
            let traced = cpu.len();
            let vms: Vec<SimVm> = cpu
                .into_iter()
                .filter_map(|c| {
                    let m = mem
                        .iter()
                        .find(|m| m.id == c.id && m.start_s == c.start_s)?;
                    let size = sizes.get(&c.id)?;
                    Some(SimVm {
                        memory: size.mem_kb * 1024.0,
                        mem_used: m.values.iter().map(|kb| kb * 1024.0).collect(),
                        id: c.id,
                        cpu: c.values,
                    })
                })
                .collect();
            let left_out = traced - vms.len();
            Ok((vms, left_out))
        }
        TraceFormat::Wide => {
            let (cpu, _) =
                wide::load(dir, 100.0).with_context(|| format!("loading {}", dir.display()))?;
            let vms = cpu
                .into_iter()
                .map(|c| {
                    // A VM whose column starts later asks for nothing before it appears.
                    let lead = (c.start_s / augur_predict::STEP_S).max(0) as usize;
                    let cpu: Vec<f64> = std::iter::repeat_n(0.0, lead).chain(c.values).collect();
                    SimVm {
                        memory: DEFAULT_MEMORY,
                        mem_used: vec![DEFAULT_MEMORY * DEFAULT_USED_SHARE; cpu.len()],
                        id: c.id,
                        cpu,
                    }
                })
                .collect();
            Ok((vms, 0))
        }
    }
}

pub fn run(args: &SimulateArgs, json: bool) -> anyhow::Result<()> {
    let names: Vec<&str> = if args.policy == "all" {
        vec!["none", "reactive", "proactive", "oracle"]
    } else {
        args.policy.split(',').map(str::trim).collect()
    };
    let policies: Vec<Policy> = names
        .iter()
        .map(|n| n.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<_>>()?;
    if args.hosts == 0 || args.hosts > 100_000 {
        anyhow::bail!("--hosts must be 1 to 100000");
    }
    if !(0.05..=1.0).contains(&args.fill) {
        anyhow::bail!("--fill must be within 0.05..=1");
    }
    if args
        .host_capacity
        .is_some_and(|c| !(c.is_finite() && c > 0.0))
    {
        anyhow::bail!("--host-capacity must be a positive number");
    }
    if args.moves_per_hour == 0 || args.concurrent == 0 {
        anyhow::bail!("--moves-per-hour and --concurrent must be at least 1");
    }
    if !(1..=288).contains(&args.horizon_steps) {
        anyhow::bail!("--horizon-steps must be 1 to 288");
    }
    let (vms, left_out) = load(args)?;
    if vms.is_empty() {
        anyhow::bail!("no VMs in {}", args.traces.display());
    }
    let steps = vms.iter().map(|v| v.cpu.len()).min().unwrap_or(0);
    let warmup = args.warmup_steps.unwrap_or((7 * 288).min(steps / 3));
    let mut reports = Vec::with_capacity(policies.len());
    for policy in policies {
        let config = SimConfig {
            hosts: args.hosts,
            host_capacity: args.host_capacity,
            fill: args.fill,
            seed: args.seed,
            policy,
            warmup_steps: warmup,
            retrain_steps: 7 * 288,
            horizon_steps: args.horizon_steps,
            rules: Rules {
                max_moves_per_hour: args.moves_per_hour,
                max_concurrent_mesh: args.concurrent,
                max_moves_per_plan: args.concurrent as usize,
                ..Rules::default()
            },
            ..SimConfig::default()
        };
        let report = simulate(&vms, &config).map_err(|e| anyhow::anyhow!(e))?;
        print(&report, left_out, json);
        reports.push(report);
    }
    if let Some(path) = &args.svg {
        let all: Vec<&SimReport> = reports.iter().collect();
        std::fs::write(path, augur_sim::svg::draw(&all, 5.0))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print(r: &SimReport, left_out: usize, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "policy": r.policy,
                "hosts": r.hosts,
                "vms": r.vms,
                "steps": r.steps,
                "overload_host_minutes": r.overload_host_minutes,
                "slatah": r.slatah,
                "pdm": r.pdm,
                "slav": r.slav,
                "migrations": r.migrations,
                "bytes_migrated": r.bytes_migrated,
                "forecast_mae": r.forecast_mae,
                "vms_left_out": left_out,
            })
        );
        return;
    }
    println!(
        "policy {}: {} VMs on {} hosts, {} steps measured",
        r.policy, r.vms, r.hosts, r.steps
    );
    if left_out > 0 {
        println!("{left_out} traced VMs left out: no provisioned size or no memory series");
    }
    println!("overloaded host-minutes  {:.0}", r.overload_host_minutes);
    println!(
        "SLAV                     {:.6} (SLATAH {:.4} × PDM {:.6})",
        r.slav, r.slatah, r.pdm
    );
    println!("migrations               {}", r.migrations);
    println!(
        "bytes migrated           {:.1} GiB",
        r.bytes_migrated / (1u64 << 30) as f64
    );
    if let Some(mae) = r.forecast_mae {
        println!("forecast MAE at horizon  {mae:.1}");
    }
}
