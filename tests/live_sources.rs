//! The host-side sources on a live microVM's vCPU threads: perf events, kvm tracepoints, /proc.

use augur_sense::kvm_exit::TracepointSource;
use augur_sense::perf_source::PerfSource;
use augur_sense::proc_source::ProcReader;
use augur_sense::tracefs::Tracefs;
use augur_tests::{kvm_or_skip, start_vm};
use augur_wire::Metric;
use std::time::{Duration, Instant};

const DISK_SPEC: &str = r#"
    name = "io"
    memory_mib = 16
    [[phase]]
    kind = "disk"
    seconds = 30
    read_bytes_per_s = 1_000_000
    request_kib = 16
"#;

fn wait_for_tids(vm: &augur_microvm::MicroVm) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tids = vm.vcpu_tids();
        if tids.iter().all(|t| *t != 0) || Instant::now() > deadline {
            return tids;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn userspace_exit_tracepoint_counts_and_decodes_io_exits() {
    let Some(kvm) = kvm_or_skip("userspace_exit_tracepoint_counts_and_decodes_io_exits") else {
        return;
    };
    let tracefs = match Tracefs::discover() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIPPED userspace_exit_tracepoint_counts_and_decodes_io_exits: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(&kvm, 1, dir.path(), DISK_SPEC);
    let tids = wait_for_tids(&vm);
    let mut source = match TracepointSource::open(&tracefs, &tids, 1) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED userspace_exit_tracepoint_counts_and_decodes_io_exits: {e}");
            return;
        }
    };
    let before = vm.sample(0);
    std::thread::sleep(Duration::from_secs(2));
    let sample = source.sample(1, 0);
    let after = vm.sample(0);
    let Some(Some(hits)) = sample.get(Metric::KvmUserspaceExits) else {
        eprintln!("SKIPPED userspace_exit_tracepoint_counts_and_decodes_io_exits: perf cannot open tracepoints here");
        return;
    };
    let run_loop_io = after[0].get(Metric::ExitIo).flatten().unwrap()
        - before[0].get(Metric::ExitIo).flatten().unwrap();
    assert!(hits > 0, "kvm_userspace_exit fired");
    // The tracepoint sees every exit the run loop sees, over a window that starts a little later.
    assert!(
        hits as f64 <= run_loop_io as f64 * 1.2 + 10.0,
        "{hits} tracepoint hits vs {run_loop_io} run-loop I/O exits"
    );
    let io = sample.get(Metric::ExitIo).flatten().unwrap();
    let other = sample.get(Metric::ExitOther).flatten().unwrap();
    assert!(
        io > 0 && io > other * 10,
        "decoded reasons: io {io}, other {other}"
    );
    if !source.kvm_exit_fires() {
        eprintln!("note: kvm:kvm_exit did not fire (software hypervisor); reasons came from kvm_userspace_exit");
    }
}

#[test]
fn perf_counts_software_events_and_marks_missing_pmu_unavailable() {
    let Some(kvm) = kvm_or_skip("perf_counts_software_events_and_marks_missing_pmu_unavailable")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(&kvm, 2, dir.path(), DISK_SPEC);
    let tids = wait_for_tids(&vm);
    let mut perf = PerfSource::open(&tids);
    std::thread::sleep(Duration::from_millis(1500));
    let sample = perf.sample(2, 0);
    match sample.get(Metric::TaskClockNs) {
        Some(Some(ns)) => assert!(ns > 0, "task clock counts vCPU time"),
        Some(None) => {
            eprintln!("SKIPPED perf_counts_software_events_and_marks_missing_pmu_unavailable: perf_event_open refused");
            return;
        }
        None => panic!("task clock missing from the perf sample"),
    }
    let instructions = sample
        .get(Metric::Instructions)
        .expect("instructions reported");
    assert_eq!(
        instructions.is_some(),
        perf.pmu_available(),
        "hardware figures only with a PMU"
    );
    assert_eq!(sample.get(Metric::FpOps), Some(None));
}

#[test]
fn proc_reads_the_vcpu_threads_io_and_cpu() {
    let Some(kvm) = kvm_or_skip("proc_reads_the_vcpu_threads_io_and_cpu") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(&kvm, 3, dir.path(), DISK_SPEC);
    let tids = wait_for_tids(&vm);
    let reader = ProcReader::default();
    let pid = std::process::id();
    let a = reader.sample_threads(3, pid, &tids, 0);
    std::thread::sleep(Duration::from_millis(2000));
    let b = reader.sample_threads(3, pid, &tids, 0);
    let rchar = |s: &augur_wire::Sample| s.get(Metric::ProcRchar).flatten().unwrap();
    let read = rchar(&b) - rchar(&a);
    // The disk device reads its backing file from the vCPU thread at 1 MB/s.
    assert!(
        (1_400_000..=2_600_000).contains(&read),
        "vCPU threads read {read} bytes in 2 s"
    );
}
