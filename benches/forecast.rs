//! The forecaster's cost against the `linear` baseline, measured in the same run, on
//! ../shared/traces/bitbrains-rnd/2013-8 (100 VMs, one month at 5 minutes, CPU with memory, disk
//! and network as extra columns):
//! 1. training: augur-gbt (one model, horizons 5, 15 and 60 minutes) on all 100 VMs, against
//!    fitting `linear` per VM and horizon;
//! 2. inference: one VM's forecasts at all three horizons from its last step (goal: under
//!    20 µs), against `linear`'s three forecasts.

use augur_benches::trace::traces_root;
use augur_predict::baselines::{Forecaster, Linear};
use augur_predict::gbt::{features, GbtModel, Settings, VmSeries};
use augur_predict::trace::{gwa, Resource};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

const HORIZONS: [usize; 3] = [1, 3, 12];

fn load() -> Vec<VmSeries> {
    let dir = traces_root().join("bitbrains-rnd/2013-8");
    let (vms, _) = gwa::load_vms(&dir, Resource::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()));
    assert!(vms.len() >= 100, "{} VMs in {}", vms.len(), dir.display());
    vms
}

fn fit_linear(vms: &[VmSeries]) -> Vec<Vec<Linear>> {
    vms.iter()
        .map(|vm| {
            HORIZONS
                .iter()
                .map(|&h| {
                    let mut model = Linear::default();
                    model.fit(&vm.target, h);
                    model
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let vms = load();
    let ends: Vec<usize> = vms.iter().map(|v| v.target.len()).collect();
    let settings = Settings::default();
    let mut group = c.benchmark_group("forecast_training_100_vms_30_days");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("linear", |b| b.iter(|| black_box(fit_linear(&vms))));
    group.bench_function("augur-gbt", |b| {
        b.iter(|| black_box(GbtModel::train(&vms, &ends, &HORIZONS, &settings).unwrap()))
    });
    group.finish();

    let model = GbtModel::train(&vms, &ends, &HORIZONS, &settings).unwrap();
    let linear = fit_linear(&vms);
    let scales: Vec<_> = vms
        .iter()
        .map(|vm| features::scales_of(vm, vm.target.len()))
        .collect();
    let mut group = c.benchmark_group("forecast_inference_per_vm_3_horizons");
    let mut next = 0usize;
    group.bench_function("linear", |b| {
        b.iter(|| {
            next = (next + 1) % vms.len();
            let y = &vms[next].target;
            let t = y.len() - 13;
            let out: Vec<f64> = HORIZONS
                .iter()
                .zip(&linear[next])
                .map(|(&h, m)| m.forecasts(y, h, t + h..t + h + 1)[0])
                .collect();
            black_box(out)
        })
    });
    group.bench_function("augur-gbt", |b| {
        b.iter(|| {
            next = (next + 1) % vms.len();
            let vm = &vms[next];
            let t = vm.target.len() - 13;
            let origins = HORIZONS.map(|h| (t, h));
            black_box(model.forecast(vm, &scales[next], &origins, None).unwrap())
        })
    });
    group.finish();

    // The same, timed directly, for the ratio lines.
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        f();
        started.elapsed()
    };
    let train_linear = time(&mut || {
        black_box(fit_linear(&vms));
    });
    let train_gbt = time(&mut || {
        black_box(GbtModel::train(&vms, &ends, &HORIZONS, &settings).unwrap());
    });
    let rounds = 20;
    let infer = |gbt: bool| {
        // One round untimed first: the training just before leaves the caches full of its own.
        let mut started = Instant::now();
        for round in 0..=rounds {
            if round == 1 {
                started = Instant::now();
            }
            for (v, vm) in vms.iter().enumerate() {
                let t = vm.target.len() - 13;
                if gbt {
                    let origins = HORIZONS.map(|h| (t, h));
                    black_box(model.forecast(vm, &scales[v], &origins, None).unwrap());
                } else {
                    for (&h, m) in HORIZONS.iter().zip(&linear[v]) {
                        black_box(m.forecasts(&vm.target, h, t + h..t + h + 1));
                    }
                }
            }
        }
        started.elapsed().as_secs_f64() * 1e6 / (rounds * vms.len()) as f64
    };
    let (infer_linear, infer_gbt) = (infer(false), infer(true));
    println!(
        "\nforecaster on bitbrains-rnd 2013-8 ({} VMs, {} steps each):",
        vms.len(),
        vms[0].target.len()
    );
    println!(
        "  training, 3 horizons: augur-gbt {:.2} s, linear {:.3} s  (gbt/linear {:.0}x)",
        train_gbt.as_secs_f64(),
        train_linear.as_secs_f64(),
        train_gbt.as_secs_f64() / train_linear.as_secs_f64()
    );
    println!(
        "  inference per VM, 3 horizons: augur-gbt {infer_gbt:.1} us, linear {infer_linear:.2} us  (gbt/linear {:.1}x; goal: gbt under 20 us)\n",
        infer_gbt / infer_linear
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
