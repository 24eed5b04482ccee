//! `augurctl eval forecast`: every forecaster on real traces, offline (no daemon needed).

use anyhow::Context;
use augur_predict::baselines;
use augur_predict::eval::{evaluate, evaluate_gbt, parse_horizons, EvalRow};
use augur_predict::trace::{gwa, wide, Resource};
use std::io::{IsTerminal, Write};
use std::path::Path;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TraceFormat {
    Gwa,
    Wide,
}

pub fn forecast(
    traces: &Path,
    format: TraceFormat,
    metric: &str,
    horizons: &str,
    json: bool,
) -> anyhow::Result<()> {
    let resource: Resource = metric.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let steps = parse_horizons(horizons).map_err(|e| anyhow::anyhow!("--horizons: {e}"))?;
    if !traces.exists() {
        anyhow::bail!("no traces at {}", traces.display());
    }
    let (series, report) = match format {
        TraceFormat::Gwa => gwa::load(traces, resource),
        TraceFormat::Wide => {
            if resource != Resource::Cpu {
                anyhow::bail!("wide traces hold CPU %: use --metric cpu");
            }
            wide::load(traces, 100.0)
        }
    }
    .with_context(|| format!("loading {}", traces.display()))?;
    if series.is_empty() {
        anyhow::bail!("no series in {} (format {format:?})", traces.display());
    }
    let terminal = std::io::stderr().is_terminal() && !json;
    let mut models = baselines::all();
    let (mut rows, skips) = evaluate(&series, metric, &mut models, &steps, |done, total| {
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
    let vms = match format {
        TraceFormat::Gwa => gwa::load_vms(traces, resource)?.0,
        TraceFormat::Wide => series
            .iter()
            .map(|s| augur_predict::gbt::VmSeries {
                id: s.id.clone(),
                start_s: s.start_s,
                target: s.values.clone(),
                others: Vec::new(),
            })
            .collect(),
    };
    let clamp = (resource == Resource::Cpu)
        .then_some((0.0, 100.0))
        .or(Some((0.0, f64::MAX)));
    let started = std::time::Instant::now();
    let gbt = evaluate_gbt(&vms, metric, &steps, 0.95, clamp)
        .map_err(|e| anyhow::anyhow!("augur-gbt: {e}"))?;
    let train_seconds = started.elapsed().as_secs_f64();
    if terminal {
        eprintln!(" {train_seconds:.1} s");
    }
    rows.extend(gbt);
    if json {
        let out = serde_json::json!({ "results": rows, "load": report, "skipped": skips });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} series from {} files ({} rows; {} malformed, {} out of range clamped, {} gap steps filled, {} duplicate or backward)",
        report.series, report.files, report.rows, report.malformed_rows, report.out_of_range, report.gap_steps_filled, report.duplicate_or_backward_rows
    );
    for file in &report.unreadable_files {
        println!("unreadable: {file}");
    }
    println!(
        "left out: {} series too short for a day of training; {} flat in training (no MASE scale)",
        skips.too_short, skips.flat_in_training
    );
    print_table(&rows);
    Ok(())
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
