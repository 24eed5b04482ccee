//! What sensing costs augurd: CPU time of one sampling pass per VM, with three microVMs running
//! the example specs' scripts, every source on (run loop, KVM stats, dirty ring or log, perf, kvm
//! tracepoints, /proc). Reported as a share of one core per VM at a 1 s interval, against the
//! goal of 0.05%.

use augur_benches::ring_dir;
use augur_microvm::VmSpec;
use augur_wire::ring::RingWriter;
use augurd::config::Config;
use augurd::host::{now_ns, Host};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Mutex;
use std::time::Duration;

const GOAL_PERCENT: f64 = 0.05;

/// The example specs: an idle VM, a batch job and a growing working set.
const SPECS: [&str; 3] = [
    include_str!("../examples/specs/idle.toml"),
    include_str!("../examples/specs/batch.toml"),
    include_str!("../examples/specs/grower.toml"),
];

static PER_VM_NS: Mutex<Vec<f64>> = Mutex::new(Vec::new());

fn bench(c: &mut Criterion) {
    if let Some(reason) = augur_microvm::kvm_unavailable_reason() {
        println!("sensing benchmark skipped: {reason}");
        return;
    }
    let dir = ring_dir();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let host = Host::new(config).unwrap();
    for text in SPECS {
        host.start_vm(VmSpec::from_toml(text).unwrap()).unwrap();
    }
    let mut writer = RingWriter::create(&dir.path().join("bench.ring"), 8192, 2048).unwrap();
    // First pass opens the perf and tracepoint sources: not part of the steady state.
    std::thread::sleep(Duration::from_millis(300));
    host.sample_all(now_ns(), &mut writer);
    let vms = host.vm_count() as f64;

    let mut group = c.benchmark_group("sensing");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("sample_all_3_vms", |b| {
        b.iter_custom(|iters| {
            let mut cpu = Duration::ZERO;
            for _ in 0..iters {
                // Let the VMs run between passes, as at a real sampling interval.
                std::thread::sleep(Duration::from_millis(20));
                let before = augur_sys::thread_cpu_time();
                host.sample_all(now_ns(), &mut writer);
                cpu += augur_sys::thread_cpu_time() - before;
            }
            PER_VM_NS
                .lock()
                .unwrap()
                .push(cpu.as_nanos() as f64 / iters as f64 / vms);
            cpu
        })
    });
    group.finish();
    host.shutdown();

    let mut per_vm = PER_VM_NS.lock().unwrap().clone();
    per_vm.sort_by(f64::total_cmp);
    let median = per_vm[per_vm.len() / 2];
    let percent = median / 1e9 * 100.0;
    println!("\nsensing cost with {vms} microVMs, every source on:");
    println!(
        "  CPU per VM per sample:        {:>8.1} us (median of {} runs)",
        median / 1e3,
        per_vm.len()
    );
    println!("  share of a core per VM at 1s: {:>8.4} %", percent);
    println!("  goal:                         {:>8.4} %", GOAL_PERCENT);
    println!(
        "  cost / goal:                  {:>8.2}x ({})",
        percent / GOAL_PERCENT,
        if percent <= GOAL_PERCENT {
            "within the goal"
        } else {
            "over the goal"
        }
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
