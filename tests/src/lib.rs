//! Helpers shared by the integration tests.
#![forbid(unsafe_code)]

use augur_microvm::{CountingSwitch, MicroVm, VmOptions, VmSpec};
use augur_wire::{Metric, Sample, Source};
use kvm_ioctls::Kvm;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// KVM, or `None` after printing why the calling test is skipped.
pub fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            eprintln!("SKIPPED {test}: needs /dev/kvm ({e})");
            None
        }
    }
}

/// Starts a microVM from spec text with default options in `dir`.
pub fn start_vm(kvm: &Kvm, id: u64, dir: &std::path::Path, spec: &str) -> MicroVm {
    let spec = VmSpec::from_toml(spec).expect("test spec is valid");
    MicroVm::start(
        kvm,
        id,
        spec,
        &VmOptions::new(dir, Arc::new(CountingSwitch)),
    )
    .expect("microVM starts")
}

/// The value of `metric` in the sample of `source` among `samples`.
pub fn value(samples: &[Sample], source: Source, metric: Metric) -> u64 {
    samples
        .iter()
        .find(|s| s.source() == Some(source))
        .and_then(|s| s.get(metric).flatten())
        .unwrap_or_else(|| panic!("no {metric} from {source}"))
}

/// The value of a dirty-page `metric`, from whichever of the dirty log or ring the VM uses.
pub fn dirty(samples: &[Sample], metric: Metric) -> u64 {
    samples
        .iter()
        .find(|s| matches!(s.source(), Some(Source::DirtyLog | Source::DirtyRing)))
        .and_then(|s| s.get(metric).flatten())
        .unwrap_or_else(|| panic!("no {metric} from the dirty source"))
}

/// Samples `vm` at `from` and `to` seconds after `start`; returns both sample sets and the
/// seconds between them.
pub fn sample_window(
    vm: &MicroVm,
    start: Instant,
    from: f64,
    to: f64,
) -> (Vec<Sample>, Vec<Sample>, f64) {
    let wait_until = |t: f64| {
        let at = start + Duration::from_secs_f64(t);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    };
    wait_until(from);
    let t0 = Instant::now();
    let a = vm.sample(0);
    wait_until(to);
    let b = vm.sample(0);
    (a, b, t0.elapsed().as_secs_f64())
}

/// Asserts `measured` is within `tolerance` (a fraction) of `expected`.
pub fn assert_within(what: &str, measured: f64, expected: f64, tolerance: f64) {
    let error = (measured - expected).abs() / expected;
    assert!(
        error <= tolerance,
        "{what}: measured {measured:.1}, expected {expected:.1} (off by {:.1}%, allowed {:.0}%)",
        error * 100.0,
        tolerance * 100.0
    );
    eprintln!(
        "{what}: measured {measured:.1}, expected {expected:.1} ({:+.1}%)",
        (measured / expected - 1.0) * 100.0
    );
}
