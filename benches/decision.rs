//! The orchestrator's planning pass for one host with 500 VMs and three peers (augur-plan:
//! trigger, every VM against every peer with the cost model, anti-oscillation, explanations),
//! against a baseline in the same run: sorting the same 500 VMs by predicted CPU, the least
//! any balancer does. Goal: the decision under 50 ms.
//!
//! Then the whole decision loop as augurd runs it: every one of the 500 VMs forecast (augur-gbt,
//! three horizons, for four resources: the CPU model trained on the Bitbrains trace, run four
//! times, costs what four models would), the forecasts put in the cluster view, and the plan.
//!
//! `cargo bench -p augur-benches --bench decision`

use augur_benches::trace::traces_root;
use augur_plan::{plan, Cluster, Host, Resources, Rules, Vm};
use augur_predict::gbt::{features, GbtModel, Settings, VmSeries};
use augur_predict::trace::{gwa, Resource};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn vm(i: usize) -> Vm {
    // Deterministic variety: sizes and loads from a small LCG.
    let r = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    let cpu = 0.05 + (r % 100) as f64 / 100.0;
    let mem = (1 + r % 8) as f64 * GIB;
    let demand = Resources {
        cpu,
        mem,
        disk: (r % 50) as f64 * 1e5,
        net: (r % 30) as f64 * 1e5,
    };
    Vm {
        id: format!("vm{i}"),
        current: demand,
        forecast_mean: demand,
        forecast_upper: Resources {
            cpu: cpu * 1.3,
            ..demand
        },
        memory: mem,
        working_set: mem * 0.2,
        dirty_rate: (r % 200) as f64 * 1e6,
        pinned: i.is_multiple_of(50),
        affinity_group: None,
        anti_affinity_group: i.is_multiple_of(97).then(|| "db".to_string()),
    }
}

fn cluster() -> Cluster {
    let capacity = Resources {
        cpu: 256.0,
        mem: 4096.0 * GIB,
        disk: 1e10,
        net: 1e10,
    };
    let local = Host {
        id: "local".into(),
        capacity,
        vms: (0..500).map(vm).collect(),
        maintenance: false,
        migrating: 0,
        reserved: Resources::default(),
    };
    let peer = |i: usize| Host {
        id: format!("peer{i}"),
        capacity,
        vms: (0..50).map(|j| vm(1000 + i * 100 + j)).collect(),
        maintenance: false,
        migrating: 0,
        reserved: Resources::default(),
    };
    Cluster {
        hosts: vec![local, peer(0), peer(1), peer(2)],
        now_s: 1_000_000,
        history: Vec::new(),
        migrating: 0,
    }
}

fn bench(c: &mut Criterion) {
    let cluster = cluster();
    // No VM of 500 alone lowers the host's peak by the default minimum gain (5%); without that
    // floor the pass also builds the moves, which is the more expensive case.
    let rules = Rules {
        min_gain: 0.0,
        ..Rules::default()
    };
    let first = plan(&cluster, &rules);
    println!(
        "500 VMs on a hot host ({} decision(s), {} move(s) proposed, {} alternatives explained)",
        first.decisions.len(),
        first.moves.len(),
        first
            .decisions
            .iter()
            .map(|d| d.rejected.len())
            .sum::<usize>()
    );
    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("plan, 500 VMs, 3 peers", |b| {
        b.iter(|| black_box(plan(black_box(&cluster), &rules)))
    });
    group.bench_function("baseline: sort 500 VMs by predicted CPU", |b| {
        b.iter(|| {
            let mut v: Vec<&Vm> = cluster.hosts[0].vms.iter().collect();
            v.sort_by(|a, b| b.forecast_upper.cpu.total_cmp(&a.forecast_upper.cpu));
            black_box(v.len())
        })
    });
    group.finish();
    // The figures the README quotes, measured here as well.
    let time = |f: &dyn Fn()| {
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed() / n
    };
    let planned = time(&|| {
        black_box(plan(&cluster, &rules));
    });
    let sorted = time(&|| {
        let mut v: Vec<&Vm> = cluster.hosts[0].vms.iter().collect();
        v.sort_by(|a, b| b.forecast_upper.cpu.total_cmp(&a.forecast_upper.cpu));
        black_box(v.len());
    });
    println!(
        "decision for 500 VMs: {:.2} ms (goal 50 ms); baseline sort {:.3} ms; ratio {:.0}x",
        planned.as_secs_f64() * 1e3,
        sorted.as_secs_f64() * 1e3,
        planned.as_secs_f64() / sorted.as_secs_f64()
    );
}

/// The decision loop over `cluster`'s local VMs, forecasting each from `series` (cycled).
fn decide_with_forecasts(
    cluster: &mut Cluster,
    rules: &Rules,
    model: &GbtModel,
    series: &[VmSeries],
    scales: &[Vec<features::Scale>],
) -> usize {
    const RESOURCES: usize = 4;
    for (i, vm) in cluster.hosts[0].vms.iter_mut().enumerate() {
        let s = &series[i % series.len()];
        let t = s.target.len() - 13;
        let origins = [(t, 1), (t, 3), (t, 12)];
        let mut upper = 0.0f64;
        for _ in 0..RESOURCES {
            let forecasts = model
                .forecast(s, &scales[i % series.len()], &origins, None)
                .unwrap();
            upper = forecasts.iter().map(|f| f.upper).fold(upper, f64::max);
        }
        vm.forecast_upper.cpu = upper / 100.0 * 2.0;
    }
    plan(cluster, rules).decisions.len()
}

fn decision_loop() {
    let dir = traces_root().join("bitbrains-rnd/2013-8");
    let Ok((mut series, _)) = gwa::load_vms(&dir, Resource::Cpu) else {
        println!(
            "decision loop with forecasting skipped: no trace at {}",
            dir.display()
        );
        return;
    };
    // A week of 20 VMs trains the model quickly; inference costs the same whatever it saw.
    series.truncate(20);
    for s in &mut series {
        let n = s.target.len().min(7 * 288);
        s.target.truncate(n);
        s.others.iter_mut().for_each(|o| o.truncate(n));
    }
    let ends: Vec<usize> = series.iter().map(|s| s.target.len()).collect();
    let model = GbtModel::train(&series, &ends, &[1, 3, 12], &Settings::default()).unwrap();
    let scales: Vec<_> = series
        .iter()
        .map(|s| features::scales_of(s, s.target.len()))
        .collect();
    let rules = Rules {
        min_gain: 0.0,
        ..Rules::default()
    };
    let mut cluster = cluster();
    decide_with_forecasts(&mut cluster, &rules, &model, &series, &scales);
    let runs = 10;
    let started = Instant::now();
    for _ in 0..runs {
        black_box(decide_with_forecasts(
            &mut cluster,
            &rules,
            &model,
            &series,
            &scales,
        ));
    }
    let per_loop = started.elapsed() / runs;
    let planned = {
        let started = Instant::now();
        for _ in 0..runs {
            black_box(plan(&cluster, &rules));
        }
        started.elapsed() / runs
    };
    println!(
        "decision loop for 500 VMs, forecasting 4 resources x 3 horizons each, then planning: {:.1} ms (goal 50 ms); of which planning {:.2} ms",
        per_loop.as_secs_f64() * 1e3,
        planned.as_secs_f64() * 1e3
    );
}

fn bench_loop(_: &mut Criterion) {
    decision_loop();
}

criterion_group!(benches, bench, bench_loop);
criterion_main!(benches);
