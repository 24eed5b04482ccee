//! `augurctl eval forecast`: every forecaster on real traces, offline (no daemon needed).

use anyhow::Context;
use augur_predict::baselines;
use augur_predict::eval::{evaluate, evaluate_gbt, parse_horizons, EvalRow, Protocol};
use augur_predict::gbt::Settings;
use augur_predict::split::Split;
use augur_predict::trace::{gwa, wide, Resource};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TraceFormat {
    Gwa,
    Wide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    /// Every test step at each of --horizons.
    Rolling,
    /// GIFT-Eval windows of --window steps from non-overlapping origins.
    Gift,
}

#[derive(Debug, clap::Args)]
pub struct ForecastArgs {
    /// A directory of traces (subfolders such as months are read too), or one wide file.
    #[arg(long)]
    pub traces: PathBuf,
    #[arg(long, value_enum, default_value_t = TraceFormat::Gwa)]
    pub format: TraceFormat,
    /// cpu, mem, disk or net.
    #[arg(long, default_value = "cpu")]
    pub metric: String,
    /// Comma-separated, in minutes or hours (multiples of 5 minutes); for --protocol rolling.
    #[arg(long, default_value = "5m,15m,60m")]
    pub horizons: String,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Rolling)]
    pub protocol: ProtocolArg,
    /// Prediction length in steps for --protocol gift.
    #[arg(long, default_value_t = 48)]
    pub window: usize,
    /// Which VMs: design (tuned on), held-out (never tuned on; a fixed hash of the VM id), all.
    #[arg(long, default_value = "all")]
    pub split: Split,
    /// Coverage target of augur-gbt's upper bound.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
}

pub fn forecast(args: &ForecastArgs, json: bool) -> anyhow::Result<()> {
    let metric = args.metric.as_str();
    let traces = args.traces.as_path();
    let format = args.format;
    let resource: Resource = metric.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let protocol = match args.protocol {
        ProtocolArg::Rolling => Protocol::Rolling(
            parse_horizons(&args.horizons).map_err(|e| anyhow::anyhow!("--horizons: {e}"))?,
        ),
        ProtocolArg::Gift if (1..=2016).contains(&args.window) => Protocol::Gift(args.window),
        ProtocolArg::Gift => anyhow::bail!("--window must be 1 to 2016 steps (7 days)"),
    };
    if !(0.5..1.0).contains(&args.level) {
        anyhow::bail!("--level must be at least 0.5 and below 1");
    }
    if !traces.exists() {
        anyhow::bail!("no traces at {}", traces.display());
    }
    let (mut series, report) = match format {
        TraceFormat::Gwa => gwa::load(traces, resource),
        TraceFormat::Wide => {
            if resource != Resource::Cpu {
                anyhow::bail!("wide traces hold CPU %: use --metric cpu");
            }
            wide::load(traces, 100.0)
        }
    }
    .with_context(|| format!("loading {}", traces.display()))?;
    series.retain(|s| args.split.contains(&s.id));
    if series.is_empty() {
        anyhow::bail!(
            "no series in {} (format {format:?}, split {})",
            traces.display(),
            args.split.as_str()
        );
    }
    let terminal = std::io::stderr().is_terminal() && !json;
    let mut models = baselines::all();
    let (mut rows, skips) = evaluate(&series, metric, &mut models, &protocol, |done, total| {
        if terminal {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} series",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            let _ = std::io::stderr().flush();
        }
    });
    if terminal {
        eprintln!();
        eprint!("training augur-gbt ...");
    }
    let mut vms = match format {
        TraceFormat::Gwa => gwa::load_vms(traces, resource)?.0,
        TraceFormat::Wide => series
            .iter()
            .map(|s| augur_predict::gbt::VmSeries {
                id: s.id.clone(),
                start_s: s.start_s,
                step_s: augur_predict::STEP_S,
                target: s.values.clone(),
                others: Vec::new(),
            })
            .collect(),
    };
    vms.retain(|vm| args.split.contains(&vm.id));
    // Forecasts and bounds stay within what the trace itself may hold.
    let clamp = (resource == Resource::Cpu)
        .then_some((0.0, augur_predict::trace::CPU_MAX_PERCENT))
        .or(Some((0.0, f64::MAX)));
    let started = std::time::Instant::now();
    let settings = Settings {
        level: args.level,
        ..Settings::default()
    };
    let gbt = evaluate_gbt(&vms, metric, &protocol, &settings, clamp)
        .map_err(|e| anyhow::anyhow!("augur-gbt: {e}"))?;
    let train_seconds = started.elapsed().as_secs_f64();
    if terminal {
        eprintln!(" {train_seconds:.1} s");
    }
    rows.extend(gbt);
    if json {
        let out = serde_json::json!({
            "results": rows,
            "split": args.split,
            "protocol": protocol_name(&protocol),
            "load": report,
            "skipped": skips,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} series from {} files ({} rows; {} malformed, {} out of range clamped, {} gap steps filled, {} duplicate or backward, {} stamped over a year from the rest)",
        report.series, report.files, report.rows, report.malformed_rows, report.out_of_range, report.gap_steps_filled, report.duplicate_or_backward_rows, report.far_timestamp_rows
    );
    for file in &report.unreadable_files {
        println!("unreadable: {file}");
    }
    println!(
        "left out: {} series too short for a day of training; {} flat in training (no MASE scale)",
        skips.too_short, skips.flat_in_training
    );
    println!(
        "split: {}; protocol: {}",
        args.split.as_str(),
        protocol_name(&protocol)
    );
    print_table(&rows);
    Ok(())
}

fn protocol_name(protocol: &Protocol) -> String {
    match protocol {
        Protocol::Rolling(_) => "rolling, every test step at each horizon".into(),
        Protocol::Gift(window) => format!("gift, {window}-step windows"),
    }
}

fn print_table(rows: &[EvalRow]) {
    println!(
        "{:<16} {:>8} {:>12} {:>8} {:>9} {:>7}",
        "model", "horizon", "MAE", "MASE", "coverage", "series"
    );
    let mut horizons: Vec<i64> = rows.iter().map(|r| r.horizon_s).collect();
    horizons.sort();
    horizons.dedup();
    for h in horizons {
        let at_h: Vec<&EvalRow> = rows.iter().filter(|r| r.horizon_s == h).collect();
        let best = at_h
            .iter()
            .map(|r| r.mase)
            .filter(|m| m.is_finite())
            .fold(f64::INFINITY, f64::min);
        for r in at_h {
            println!(
                "{:<16} {:>7}m {:>12.4} {:>8.4} {:>9} {:>7}{}",
                r.model,
                r.horizon_s / 60,
                r.mae,
                r.mase,
                r.coverage
                    .map_or_else(|| "-".into(), |c| format!("{:.3}", c)),
                r.series,
                if r.mase == best { "  best" } else { "" }
            );
        }
    }
}
