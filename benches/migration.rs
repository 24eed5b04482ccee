//! Live migration of a 256 MiB microVM on loopback, through the mesh's authenticated stream,
//! against a plain TCP transfer of 256 MiB between the same two threads in the same run (the
//! link's bandwidth), measured both before the guest starts and while it runs (its vCPU takes
//! one of the CPUs the copy would use). Prints, per guest: total time against bytes moved / bandwidth, downtime,
//! and the cost model's prediction against the measured time: first from that bandwidth and the
//! dirty rate and written memory sensing measured before the move, then calibrated as augurd
//! calibrates it, with the rate the previous move of the guest achieved per byte written.
//!
//! `cargo bench -p augur-benches --bench migration`

use augur_mesh::{MeshKey, SealedStream};
use augur_microvm::migration;
use augur_microvm::{CountingSwitch, MicroVm, MigrationParams, VmOptions, VmSpec};
use augur_plan::{migration_cost, Link, MIN_CALIBRATION_BYTES};
use augur_wire::{Metric, Source};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const MIB: f64 = (1 << 20) as f64;

const IDLE: &str = r#"
    name = "idle256"
    memory_mib = 256
    [[phase]]
    kind = "idle"
    seconds = 600
"#;

const BUSY: &str = r#"
    name = "busy256"
    memory_mib = 256
    [[phase]]
    kind = "memory"
    seconds = 600
    working_set_mib = 64
    touch_mib_per_s = 48
    write_fraction = 1.0
"#;

/// Seconds to move `bytes` over plain loopback TCP, 1 MiB per write.
fn plain_transfer(bytes: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            got += s.read(&mut buf).unwrap();
        }
        s.write_all(b"k").unwrap();
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..bytes / chunk.len() {
        s.write_all(&chunk).unwrap();
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    let took = started.elapsed().as_secs_f64();
    reader.join().unwrap();
    took
}

/// Dirty bytes per second of `vm` and its working set, from two sensing samples `over` apart.
fn dirty_rate(vm: &MicroVm, over: Duration) -> (f64, f64) {
    let read = |samples: &[augur_wire::Sample], metric| {
        samples
            .iter()
            .find(|s| matches!(s.source(), Some(Source::DirtyLog | Source::DirtyRing)))
            .and_then(|s| s.get(metric).flatten())
            .unwrap_or(0)
    };
    let a = vm.sample(0);
    std::thread::sleep(over);
    let b = vm.sample(0);
    let pages = read(&b, Metric::DirtyPages) - read(&a, Metric::DirtyPages);
    let ws = read(&b, Metric::WorkingSetPages);
    (
        pages as f64 * 4096.0 / over.as_secs_f64(),
        ws as f64 * 4096.0,
    )
}

fn migrate(kvm: &kvm_ioctls::Kvm, spec: &str, key: &MeshKey, dir: &std::path::Path) -> Run {
    let options = VmOptions::new(dir, Arc::new(CountingSwitch));
    let mut vm = MicroVm::start(kvm, 1, VmSpec::from_toml(spec).unwrap(), &options).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (dirty, working_set) = dirty_rate(&vm, Duration::from_secs(2));
    let written = vm.written_bytes() as f64;
    // The link as the migration finds it: with this guest's vCPU taking its share of the CPUs.
    let plain_with_guest_s = plain_transfer(256 << 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target_key = key.clone();
    let target = std::thread::spawn(move || {
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let (conn, _) = listener.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        let (mut stream, _) = SealedStream::accept(conn, &target_key).unwrap();
        let cpu_before = augur_sys::thread_cpu_time();
        let moved = migration::accept(&kvm, 2, &mut stream, &options, |_| Ok(())).unwrap();
        let cpu = augur_sys::thread_cpu_time() - cpu_before;
        let at = moved.progress();
        std::thread::sleep(Duration::from_millis(300));
        assert!(moved.progress() >= at);
        cpu
    });
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut stream = SealedStream::connect(conn, key, b"bench").unwrap();
    let params = MigrationParams::default();
    let cpu_before = augur_sys::thread_cpu_time();
    let report = vm.migrate_to(&mut stream, &params).unwrap();
    let source_cpu = augur_sys::thread_cpu_time() - cpu_before;
    let target_cpu = target.join().unwrap();
    Run {
        report,
        dirty,
        working_set,
        written,
        plain_with_guest_s,
        source_cpu,
        target_cpu,
    }
}

struct Run {
    report: augur_microvm::MigrationReport,
    dirty: f64,
    working_set: f64,
    /// Guest memory written before the move, as sensing counted it: the cost model's memory.
    written: f64,
    /// Seconds the plain copy of 256 MiB took with the guest running.
    plain_with_guest_s: f64,
    /// CPU time of the sending and the receiving thread over the move.
    source_cpu: Duration,
    target_cpu: Duration,
}

fn main() {
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        println!("migration bench skipped: /dev/kvm is not usable");
        return;
    };
    let key = MeshKey::from_bytes(&[9u8; 32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let params = MigrationParams::default();
    for (name, spec) in [("idle", IDLE), ("busy 48 MiB/s", BUSY)] {
        let mut calibrated: Option<f64> = None;
        for run in 0..RUNS {
            let plain_s = plain_transfer(256 << 20);
            let bandwidth = 256.0 * MIB / plain_s;
            let r = migrate(&kvm, spec, &key, dir.path());
            let total = r.report.total.as_secs_f64();
            let floor = r.report.bytes as f64 / bandwidth;
            let bandwidth_with_guest = 256.0 * MIB / r.plain_with_guest_s;
            let floor_with_guest = r.report.bytes as f64 / bandwidth_with_guest;
            let link = Link {
                bandwidth,
                max_downtime_s: params.downtime_goal.as_secs_f64(),
                max_rounds: params.max_rounds,
            };
            let predicted = migration_cost(r.written, r.working_set, r.dirty, &link);
            let after_calibration = calibrated.map(|rate| {
                let link = Link {
                    bandwidth: rate,
                    ..link
                };
                let p = migration_cost(r.written, r.working_set, r.dirty, &link).total_s;
                format!(
                    "calibrated on the previous move {:.1} ms, predicted/measured {:.2}",
                    p * 1e3,
                    p / total
                )
            });
            // As augurd does: a move that copied little tells the fixed costs, not the rate.
            if r.written >= MIN_CALIBRATION_BYTES {
                calibrated = Some(r.written / total);
            }
            println!(
                "{name} 256 MiB guest, run {run}: {:.1} MiB in {:.1} ms over {} rounds ({:?} pages, {} of them zero, {} never backed and not read), \
                 loopback {:.0} MiB/s -> bytes moved/bandwidth {:.1} ms, total/that {:.2}x (goal <= 1.5x), \
                 loopback with the guest running {:.0} MiB/s -> total/(bytes moved/that) {:.2}x, \
                 total/(plain copy of all 256 MiB) {:.2}x; CPU: source {:.1} ms, target {:.1} ms; \
                 downtime {:.2} ms (pause {:.2} ms; goal < 50 ms for idle); \
                 {:.1} MiB written, dirty {:.1} MiB/s, predicted from the link {:.1} ms ({} rounds), predicted/measured {:.2}; {}",
                r.report.bytes as f64 / MIB,
                total * 1e3,
                r.report.rounds.len(),
                r.report.rounds.iter().map(|x| (x.pages, (x.seconds * 1e3) as u32)).collect::<Vec<_>>(),
                r.report.zero_pages,
                r.report.unbacked_pages,
                bandwidth / MIB,
                floor * 1e3,
                total / floor,
                bandwidth_with_guest / MIB,
                total / floor_with_guest,
                total / plain_s,
                r.source_cpu.as_secs_f64() * 1e3,
                r.target_cpu.as_secs_f64() * 1e3,
                r.report.downtime.as_secs_f64() * 1e3,
                r.report.pause.as_secs_f64() * 1e3,
                r.written / MIB,
                r.dirty / MIB,
                predicted.total_s * 1e3,
                predicted.rounds,
                predicted.total_s / total,
                after_calibration
                    .unwrap_or_else(|| "no earlier move large enough to calibrate on".into()),
            );
        }
    }
}
