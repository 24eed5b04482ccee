//! Live migration of a 256 MiB microVM on loopback, through the mesh's authenticated stream,
//! against a plain TCP transfer of 256 MiB between the same two threads in the same run (the
//! link's bandwidth), measured both before the guest starts and while it runs (its vCPU takes
//! one of the CPUs the copy would use). As root, the busy guest then moves again inside a network
//! namespace whose loopback `tc` shapes to 1 Gbit/s, where the link rather than the CPU bounds
//! the move and the cost model from the link alone has what it needs. Prints, per guest: total
//! time against bytes moved / bandwidth, downtime, and the cost model's prediction against the
//! measured time: first from that bandwidth and the dirty rate and written memory sensing
//! measured before the move, then calibrated on the moves before as augurd calibrates it (the
//! fixed cost from moves that copied little, the bandwidth under which the model predicts the
//! others' time, each with half the weight on the newest move).
//!
//! `cargo bench -p augur-benches --bench migration`

use augur_mesh::{MeshKey, SealedStream};
use augur_microvm::migration;
use augur_microvm::{CountingSwitch, MicroVm, MigrationParams, VmOptions, VmSpec};
use augur_plan::{bandwidth_for, migration_cost, recalibrated, Link, MIN_CALIBRATION_BYTES};
use augur_wire::{Metric, Source};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
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

/// Writes all the memory it may use, then idles: a move has all of it to carry, once.
const WRITTEN: &str = r#"
    name = "written256"
    memory_mib = 256
    repeat = false
    [[phase]]
    kind = "memory"
    seconds = 2
    working_set_mib = 240
    touch_mib_per_s = 240
    write_fraction = 1.0
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

fn migrate(
    kvm: &kvm_ioctls::Kvm,
    spec: &str,
    key: &MeshKey,
    dir: &std::path::Path,
    probe_bytes: usize,
) -> Run {
    let options = VmOptions::new(dir, Arc::new(CountingSwitch));
    let mut vm = MicroVm::start(kvm, 1, VmSpec::from_toml(spec).unwrap(), &options).unwrap();
    // Past the written guest's first phase, so every guest is sensed in the state it moves in.
    std::thread::sleep(Duration::from_millis(2500));
    let (dirty, working_set) = dirty_rate(&vm, Duration::from_secs(2));
    let written = vm.written_bytes() as f64;
    // The link as the migration finds it: with this guest's vCPU taking its share of the CPUs.
    let plain_with_guest_s = plain_transfer(probe_bytes);
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
    /// Seconds the plain copy of the probe's bytes took with the guest running.
    plain_with_guest_s: f64,
    /// CPU time of the sending and the receiving thread over the move.
    source_cpu: Duration,
    target_cpu: Duration,
}

/// Passed to this bench when it reruns itself inside a namespace with a shaped loopback.
const SHAPED_ARG: &str = "--shaped-link";
const SHAPED_RATE: &str = "1gbit";

/// Runs the busy guest again inside a network namespace of its own, whose loopback `tc` shapes
/// to 1 Gbit/s: there the link, not the CPU, bounds the move, as on a host with cores to spare.
fn rerun_on_a_shaped_link() {
    let ns = format!("augur-bench-{}", std::process::id());
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run("ip", &["netns", "add", &ns]) {
        println!("shaped-link runs skipped: no network namespace (needs root and iproute2)");
        return;
    }
    let shaped = run(
        "ip",
        &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
    ) && run(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "tbf",
            "rate",
            SHAPED_RATE,
            "burst",
            "256kb",
            "latency",
            "50ms",
        ],
    );
    match std::env::current_exe() {
        Ok(exe) if shaped => {
            let exe = exe.to_string_lossy().into_owned();
            if !run("ip", &["netns", "exec", &ns, &exe, SHAPED_ARG]) {
                println!("shaped-link runs failed");
            }
        }
        _ => println!("shaped-link runs skipped: tc could not shape the namespace's loopback"),
    }
    run("ip", &["netns", "del", &ns]);
}

fn main() {
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        println!("migration bench skipped: /dev/kvm is not usable");
        return;
    };
    let shaped = std::env::args().any(|a| a == SHAPED_ARG);
    // `cargo bench --bench migration -- idle` runs only the guests whose name holds "idle".
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let key = MeshKey::from_bytes(&[9u8; 32]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let params = MigrationParams::default();
    let (link_name, probe_bytes, guests): (_, usize, &[(&str, &str)]) = if shaped {
        ("1 Gbit/s link", 128 << 20, &[("busy 48 MiB/s", BUSY)])
    } else {
        (
            "loopback",
            256 << 20,
            &[
                ("written, then idle", WRITTEN),
                ("idle", IDLE),
                ("busy 48 MiB/s", BUSY),
            ],
        )
    };
    let probe = probe_bytes as f64;
    // As augurd calibrates, from every move before: the fixed cost from moves that copied
    // little, the bandwidth fitted to the others.
    let (mut setup_s, mut fitted): (Option<f64>, Option<f64>) = (None, None);
    for &(name, spec) in guests {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        for run in 0..RUNS {
            let plain_s = plain_transfer(probe_bytes);
            let bandwidth = probe / plain_s;
            let r = migrate(&kvm, spec, &key, dir.path(), probe_bytes);
            let total = r.report.total.as_secs_f64();
            let floor = r.report.bytes as f64 / bandwidth;
            let bandwidth_with_guest = probe / r.plain_with_guest_s;
            let floor_with_guest = r.report.bytes as f64 / bandwidth_with_guest;
            let link = Link {
                bandwidth,
                setup_s: 0.0,
                max_downtime_s: params.downtime_goal.as_secs_f64(),
                max_rounds: params.max_rounds,
            };
            let predicted = migration_cost(r.written, r.working_set, r.dirty, &link);
            let calibrated = (setup_s.is_some() || fitted.is_some()).then(|| Link {
                bandwidth: fitted.unwrap_or(bandwidth),
                setup_s: setup_s.unwrap_or(0.0),
                ..link
            });
            let after_calibration = calibrated.map(|link| {
                let p = migration_cost(r.written, r.working_set, r.dirty, &link).total_s;
                format!(
                    "calibrated on the moves before {:.1} ms, predicted/measured {:.2}",
                    p * 1e3,
                    p / total
                )
            });
            if r.written < MIN_CALIBRATION_BYTES {
                setup_s = Some(recalibrated(setup_s, total));
            } else {
                let link = Link {
                    setup_s: setup_s.unwrap_or(0.0),
                    ..link
                };
                if let Some(new) = bandwidth_for(r.written, r.working_set, r.dirty, &link, total) {
                    fitted = Some(recalibrated(fitted, new));
                }
            }
            println!(
                "{name} 256 MiB guest, run {run}: {:.1} MiB in {:.1} ms over {} rounds ({:?} pages, {} of them zero, {} never backed and not read), \
                 {link_name} {:.0} MiB/s -> bytes moved/bandwidth {:.1} ms, total/that {:.2}x (goal <= 1.5x), \
                 {link_name} with the guest running {:.0} MiB/s -> total/(bytes moved/that) {:.2}x, \
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
                total / (256.0 * MIB / bandwidth),
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
                    .unwrap_or_else(|| "no earlier move to calibrate on".into()),
            );
        }
    }
    if !shaped {
        rerun_on_a_shaped_link();
    }
}
