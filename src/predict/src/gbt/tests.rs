use super::model_file::ModelInfo;
use super::*;

/// A daily cycle with noise and occasional bursts, as VM CPU looks, seeded.
fn synthetic(id: usize, len: usize) -> VmSeries {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ id as u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let level = 5.0 + id as f64;
    let target: Vec<f64> = (0..len)
        .map(|i| {
            let day = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
            let burst = if noise() < 0.02 { 30.0 } else { 0.0 };
            level * (1.0 + 0.5 * day.sin()) + 2.0 * noise() + burst
        })
        .collect();
    let other = target.iter().map(|v| v * 3.0 + 1.0).collect();
    VmSeries {
        id: id.to_string(),
        start_s: 1_375_308_000,
        step_s: 300,
        target,
        others: vec![other],
    }
}

fn trained(vms: &[VmSeries], horizons: &[usize]) -> GbtModel {
    let ends: Vec<usize> = vms.iter().map(|v| v.target.len() * 9 / 10).collect();
    let settings = Settings {
        iterations: 40,
        ..Settings::default()
    };
    GbtModel::train(vms, &ends, horizons, &settings).unwrap()
}

#[test]
fn it_learns_a_daily_cycle_better_than_the_last_value_and_bounds_it() {
    let vms: Vec<VmSeries> = (0..6).map(|i| synthetic(i, 288 * 6)).collect();
    let model = trained(&vms, &[1, 12]);
    let (mut model_err, mut naive_err, mut covered, mut total) = (0.0, 0.0, 0, 0);
    for vm in &vms {
        let end = vm.target.len() * 9 / 10;
        let scales = features::scales_of(vm, end);
        let origins: Vec<(usize, usize)> = (end..vm.target.len() - 12).map(|t| (t, 12)).collect();
        let forecasts = model.forecast(vm, &scales, &origins, None).unwrap();
        for (&(t, h), f) in origins.iter().zip(&forecasts) {
            let actual = vm.target[t + h];
            model_err += (f.mean - actual).abs();
            naive_err += (vm.target[t] - actual).abs();
            covered += usize::from(actual <= f.upper);
            total += 1;
        }
    }
    assert!(
        model_err < 0.8 * naive_err,
        "model {model_err:.1} vs last value {naive_err:.1}"
    );
    let coverage = covered as f64 / total as f64;
    assert!((0.85..=1.0).contains(&coverage), "coverage {coverage}");
}

#[test]
fn a_saved_model_loads_and_forecasts_the_same() {
    let vms: Vec<VmSeries> = (0..3).map(|i| synthetic(i, 288 * 3)).collect();
    let model = trained(&vms, &[1, 3]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.json");
    let info = ModelInfo {
        metric: "cpu".into(),
        trained_at_s: 1,
        series: 3,
        step_s: 300,
        columns: vec!["other".into()],
    };
    model.save(&path, &info).unwrap();
    let (loaded, loaded_info) = GbtModel::load(&path).unwrap();
    assert_eq!(loaded_info, info);
    let vm = &vms[1];
    let scales = features::scales_of(vm, vm.target.len());
    let origins = [(700, 1), (700, 3), (800, 1)];
    assert_eq!(
        model.forecast(vm, &scales, &origins, None).unwrap(),
        loaded.forecast(vm, &scales, &origins, None).unwrap()
    );
}

#[test]
fn damaged_or_foreign_model_files_are_refused_with_a_reason() {
    let vms: Vec<VmSeries> = (0..3).map(|i| synthetic(i, 288 * 3)).collect();
    let model = trained(&vms, &[1]);
    let info = ModelInfo {
        metric: "cpu".into(),
        trained_at_s: 1,
        series: 3,
        step_s: 300,
        columns: vec!["other".into()],
    };
    let text = model.to_file_text(&info).unwrap();
    let newer = text.replace("\"version\":1", "\"version\":99");
    assert!(GbtModel::from_file_text(&newer)
        .unwrap_err()
        .contains("version 99"));
    assert!(GbtModel::from_file_text(&text[..text.len() / 2])
        .unwrap_err()
        .contains("not a model file"));
    assert!(GbtModel::from_file_text("{}").is_err());
    let bad_q = text.replacen("\"quantiles\":[", "\"quantiles\":[1.0,", 1);
    assert!(GbtModel::from_file_text(&bad_q)
        .unwrap_err()
        .contains("inconsistent"));
}

#[test]
fn adaptive_bounds_widen_where_the_calibration_understates_the_misses() {
    let vms: Vec<VmSeries> = (0..6).map(|i| synthetic(i, 288 * 6)).collect();
    let model = trained(&vms, &[1, 12]);
    // A series far noisier than any the model was calibrated on: static bounds under-cover it.
    let mut noisy = synthetic(9, 288 * 6);
    let mut state = 0x1234_5678u64;
    for v in &mut noisy.target {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v += 12.0 * ((state >> 11) as f64 / (1u64 << 53) as f64);
    }
    let end = noisy.target.len() * 9 / 10;
    let scales = features::scales_of(&noisy, end);
    let h = 12;
    let origins = end..noisy.target.len() - h;
    let coverage = |forecasts: &[Forecast]| {
        let covered = origins
            .clone()
            .zip(forecasts)
            .filter(|(t, f)| noisy.target[t + h] <= f.upper)
            .count();
        covered as f64 / forecasts.len() as f64
    };
    let pairs: Vec<(usize, usize)> = origins.clone().map(|t| (t, h)).collect();
    let fixed = model.forecast(&noisy, &scales, &pairs, None).unwrap();
    let adapted =
        adaptive::forecasts(&model, &noisy, &scales, h, origins.clone(), 288, None).unwrap();
    let (fixed, adapted) = (coverage(&fixed), coverage(&adapted));
    println!("coverage at 95%: fixed {fixed:.3}, adaptive {adapted:.3}");
    assert!(adapted > fixed, "{adapted:.3} vs {fixed:.3}");
    assert!(adapted > 0.9, "{adapted:.3}");
    // Until an outcome is known, the centre is the model's own.
    let cold = adaptive::forecasts(&model, &noisy, &scales, h, origins, 0, None).unwrap();
    let own = model.forecast(&noisy, &scales, &pairs, None).unwrap();
    assert!(cold[..=h].iter().zip(&own).all(|(a, b)| a.mean == b.mean));
}

#[test]
fn forecasts_for_untrained_horizons_or_other_shapes_are_errors() {
    let vms: Vec<VmSeries> = (0..3).map(|i| synthetic(i, 288 * 3)).collect();
    let model = trained(&vms, &[1, 3]);
    let vm = &vms[0];
    let scales = features::scales_of(vm, vm.target.len());
    assert!(model.forecast(vm, &scales, &[(700, 2)], None).is_err());
    assert!(model.forecast(vm, &scales, &[(5000, 1)], None).is_err());
    let mut bare = vm.clone();
    bare.others.clear();
    assert!(model
        .forecast(&bare, &scales[..1], &[(700, 1)], None)
        .is_err());
}

#[test]
fn row_by_row_and_matrix_forecasts_agree() {
    let vms: Vec<VmSeries> = (0..3).map(|i| synthetic(i, 288 * 3)).collect();
    let model = trained(&vms, &[1, 3]);
    let vm = &vms[2];
    let scales = features::scales_of(vm, vm.target.len());
    let origins: Vec<(usize, usize)> = (600..700).flat_map(|t| [(t, 1), (t, 3)]).collect();
    let together = model.forecast(vm, &scales, &origins, None).unwrap();
    for (pair, f) in origins.chunks(2).zip(together.chunks(2)) {
        // Row by row, the second horizon of an origin reuses the first one's row.
        let alone = model.forecast(vm, &scales, pair, None).unwrap();
        for (a, f) in alone.iter().zip(f) {
            assert!((a.mean - f.mean).abs() < 1e-9, "{pair:?}: {a:?} vs {f:?}");
            assert!((a.upper - f.upper).abs() < 1e-9);
        }
    }
}

/// A job whose every cycle reads its disk for 6 steps, then computes for 12, then idles for 8.
fn precursor_cycles(cycles: usize, seed: u64) -> VmSeries {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ seed;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut cpu, mut disk) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        for step in 0..26 {
            let (c, d) = match step {
                0..8 => (0.01, 0.0),
                8..14 => (0.01, 6e6),
                _ => (0.5, 0.0),
            };
            cpu.push(c + 0.005 * noise());
            disk.push(d * (1.0 + 0.02 * noise()));
        }
    }
    VmSeries {
        id: format!("job{seed}"),
        start_s: 1_800_000_000,
        step_s: 1,
        target: cpu,
        others: vec![disk],
    }
}

/// What the model forecasts `h` = 4 steps ahead from each step of the last cycle, by step of
/// the cycle, trained on the cycles before it with targets clipped to `clip` σ.
fn forecasts_over_last_cycle(cycles: usize, clip: f64) -> Vec<(usize, f64)> {
    let vms = vec![precursor_cycles(cycles + 1, 1)];
    let ends = vec![cycles * 26];
    let settings = Settings {
        clip,
        ..Settings::default()
    };
    let model = GbtModel::train(&vms, &ends, &[4, 8, 16], &settings).unwrap();
    let vm = &vms[0];
    let scales = features::scales_of(vm, ends[0]);
    let origins: Vec<(usize, usize)> = (ends[0]..vm.target.len() - 4).map(|t| (t, 4)).collect();
    let forecasts = model.forecast(vm, &scales, &origins, None).unwrap();
    origins
        .iter()
        .zip(forecasts)
        .map(|(&(t, _), f)| (t % 26, f.mean))
        .collect()
}

#[test]
fn a_wide_clip_learns_what_a_precursor_foretells() {
    // From the third disk step on, the compute phase is 4 steps ahead.
    let foretold = |f: &[(usize, f64)]| -> f64 {
        let v: Vec<f64> = f
            .iter()
            .filter(|(s, _)| (10..14).contains(s))
            .map(|x| x.1)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let wide = forecasts_over_last_cycle(8, 16.0);
    let narrow = forecasts_over_last_cycle(8, CLIP);
    assert!(
        foretold(&wide) > 0.35,
        "wide clip: {:.2} during the precursor",
        foretold(&wide)
    );
    // The default clip keeps the forecast near the recent level: a jump of 12σ is out of reach.
    assert!(
        foretold(&narrow) < 0.2,
        "narrow clip: {:.2} during the precursor",
        foretold(&narrow)
    );
    let quiet = wide.iter().filter(|(s, _)| (0..3).contains(s)).map(|x| x.1);
    assert!(
        quiet.clone().all(|m| m < 0.25),
        "{:?}",
        quiet.collect::<Vec<_>>()
    );
}

#[test]
fn series_of_one_step_or_none_are_trained_around() {
    // A VM that has run for less than a step sits beside ones with days of history, as on a
    // daemon that has just started one.
    let vms = [synthetic(0, 0), synthetic(1, 1), synthetic(2, 3 * 288)];
    let ends: Vec<usize> = vms.iter().map(|v| v.target.len()).collect();
    let settings = Settings {
        iterations: 20,
        ..Settings::default()
    };
    let model = GbtModel::train(&vms, &ends, &[1, 3], &settings).unwrap();
    let last = vms[2].target.len() - 1;
    let scales = features::scales_of(&vms[2], last);
    assert!(model.forecast(&vms[2], &scales, &[(last, 3)], None).is_ok());
    // Too short to have any row alone: an error, not a panic.
    let short = GbtModel::train(&vms[..2], &ends[..2], &[1], &settings);
    assert!(short.is_err());
}
