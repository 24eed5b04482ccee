//! MicroVMs under KVM: what the host senses matches what the spec asks.

use augur_microvm::{CountingSwitch, DirtyMode, MicroVm, VmOptions, VmSpec, VmState};
use augur_tests::{assert_within, dirty, kvm_or_skip, sample_window, start_vm, value};
use augur_wire::{Metric, Source};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMORY_SPEC: &str = r#"
    name = "mem"
    memory_mib = 64
    [[phase]]
    kind = "memory"
    seconds = 30
    working_set_mib = 40
    touch_mib_per_s = 8
    write_fraction = 0.5
"#;

fn dirty_rate_matches(mode: DirtyMode) {
    let Some(kvm) = kvm_or_skip("dirty_rate_matches") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = VmOptions::new(dir.path(), Arc::new(CountingSwitch));
    options.dirty_mode = mode;
    let vm = MicroVm::start(&kvm, 1, VmSpec::from_toml(MEMORY_SPEC).unwrap(), &options).unwrap();
    let start = Instant::now();
    let (a, b, dt) = sample_window(&vm, start, 1.0, 4.0);
    let pages = dirty(&b, Metric::DirtyPages) - dirty(&a, Metric::DirtyPages);
    // 8 MiB/s of page touches, half of them writes, walking a 40 MiB set sequentially: every
    // written page is distinct within the window, so 4 MiB/s = 1024 pages/s are dirtied.
    assert_within(
        &format!("dirty pages/s ({mode:?})"),
        pages as f64 / dt,
        1024.0,
        0.2,
    );
    let ws = dirty(&b, Metric::WorkingSetPages);
    assert!(
        ws >= pages,
        "the working set covers at least the pages of the window"
    );
    let runs = dirty(&b, Metric::DirtyRuns) - dirty(&a, Metric::DirtyRuns);
    assert!(
        runs < pages,
        "half of a sequential walk's pages are written: runs are shorter than pages but exist"
    );
}

#[test]
fn memory_phase_dirty_rate_via_dirty_log() {
    dirty_rate_matches(DirtyMode::Log);
}

#[test]
fn memory_phase_dirty_rate_via_dirty_ring() {
    let Some(kvm) = kvm_or_skip("memory_phase_dirty_rate_via_dirty_ring") else {
        return;
    };
    if !augur_sys::DirtyRing::supported(&kvm) {
        eprintln!("SKIPPED memory_phase_dirty_rate_via_dirty_ring: KVM has no dirty ring");
        return;
    }
    dirty_rate_matches(DirtyMode::Ring);
}

#[test]
fn disk_phase_byte_rates_and_exit_mix() {
    let Some(kvm) = kvm_or_skip("disk_phase_byte_rates_and_exit_mix") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(
        &kvm,
        2,
        dir.path(),
        r#"
        name = "disk"
        memory_mib = 16
        [[phase]]
        kind = "disk"
        seconds = 30
        read_bytes_per_s = 2_000_000
        write_bytes_per_s = 1_000_000
        request_kib = 32
        "#,
    );
    let (a, b, dt) = sample_window(&vm, Instant::now(), 1.0, 4.0);
    let delta =
        |m| (value(&b, Source::MicrovmRunLoop, m) - value(&a, Source::MicrovmRunLoop, m)) as f64;
    assert_within(
        "disk read B/s",
        delta(Metric::DiskReadBytes) / dt,
        2_000_000.0,
        0.2,
    );
    assert_within(
        "disk write B/s",
        delta(Metric::DiskWriteBytes) / dt,
        1_000_000.0,
        0.2,
    );
    let io = delta(Metric::ExitIo);
    let all: f64 = [
        Metric::ExitIo,
        Metric::ExitMmio,
        Metric::ExitHlt,
        Metric::ExitOther,
    ]
    .into_iter()
    .map(delta)
    .sum();
    assert!(
        io / all > 0.9,
        "I/O exits are {:.0}% of {all} exits",
        io / all * 100.0
    );
}

#[test]
fn compute_phase_holds_its_load_and_progress_grows() {
    let Some(kvm) = kvm_or_skip("compute_phase_holds_its_load_and_progress_grows") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(
        &kvm,
        3,
        dir.path(),
        r#"
        name = "cpu"
        memory_mib = 16
        [[phase]]
        kind = "compute"
        seconds = 30
        load = 0.4
        "#,
    );
    let (a, b, dt) = sample_window(&vm, Instant::now(), 1.0, 3.5);
    let run = (value(&b, Source::MicrovmRunLoop, Metric::VcpuRunNs)
        - value(&a, Source::MicrovmRunLoop, Metric::VcpuRunNs)) as f64;
    assert_within("busy vCPU share", run / 1e9 / dt, 0.4, 0.2);
    let progress = |s| value(s, Source::MicrovmRunLoop, Metric::GuestProgress);
    assert!(
        progress(&b) > progress(&a),
        "the guest's progress counter keeps increasing"
    );
}

#[test]
fn net_phase_rate_and_flows() {
    let Some(kvm) = kvm_or_skip("net_phase_rate_and_flows") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vm = start_vm(
        &kvm,
        4,
        dir.path(),
        r#"
        name = "net"
        memory_mib = 16
        [[phase]]
        kind = "net"
        seconds = 30
        tx_bytes_per_s = 600_000
        dest = 9
        port = 8080
        packet_bytes = 1500
        "#,
    );
    let (a, b, dt) = sample_window(&vm, Instant::now(), 1.0, 3.5);
    let tx = (value(&b, Source::MicrovmRunLoop, Metric::NetTxBytes)
        - value(&a, Source::MicrovmRunLoop, Metric::NetTxBytes)) as f64;
    assert_within("net tx B/s", tx / dt, 600_000.0, 0.2);
    let flows = vm.status().flows;
    assert_eq!(flows.keys().copied().collect::<Vec<_>>(), vec![(9, 8080)]);
}

#[test]
fn a_finite_script_finishes_and_a_vm_stops_promptly() {
    let Some(kvm) = kvm_or_skip("a_finite_script_finishes_and_a_vm_stops_promptly") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let done = start_vm(
        &kvm,
        5,
        dir.path(),
        r#"
        name = "short"
        memory_mib = 16
        repeat = false
        [[phase]]
        kind = "idle"
        seconds = 0.3
        [[phase]]
        kind = "compute"
        seconds = 0.3
        load = 1.0
        "#,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.state() == VmState::Running && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(done.state(), VmState::Finished);

    let mut long = start_vm(&kvm, 6, dir.path(), MEMORY_SPEC);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    long.stop();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(long.state(), VmState::Stopped);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "the stopped VM's disk file is removed"
    );
}

#[test]
fn bad_spec_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = VmSpec::from_file(&dir.path().join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.toml"), "{missing}");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"x\"\nmemory_mib = 64\n[[phase]]\nkind = \"memory\"\nseconds = 1\nworking_set_mib = 4\ntouch_mib_per_s = -2\n").unwrap();
    let error = VmSpec::from_file(&path).unwrap_err().to_string();
    assert!(error.contains("touch_mib_per_s"), "{error}");
}
