//! Helpers shared by the integration tests.
#![forbid(unsafe_code)]

pub mod guests;

use augur_admin::AdminClient;
use augur_microvm::{CountingSwitch, MicroVm, VmOptions, VmSpec};
use augur_wire::{Metric, Sample, Source};
use augurd::config::{Config, Driver};
use augurd::host::Host;
use augurd::server::AdminSocket;
use kvm_ioctls::Kvm;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// An augurd host with its admin socket, served in-process from a temporary directory.
#[derive(Debug)]
pub struct TestDaemon {
    pub host: Arc<Host>,
    pub socket: PathBuf,
    pub runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    pub fn start(driver: Driver) -> Self {
        Self::start_with(driver, |_| {})
    }

    /// Starts with the test defaults changed by `adjust`.
    pub fn start_with(driver: Driver, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("augurd.sock");
        let mut config = Config {
            driver,
            data_dir: dir.path().join("data"),
            admin_socket: socket.clone(),
            sample_interval_ms: 200,
            ..Config::default()
        };
        adjust(&mut config);
        let runtime = augurd::daemon::runtime().expect("a tokio runtime");
        let host = Host::new(config).expect("the host starts");
        host.start_threads().expect("sampling threads start");
        let bound = runtime
            .block_on(AdminSocket::bind(&socket))
            .expect("the admin socket binds");
        let (stop, rx) = watch::channel(false);
        runtime.spawn(bound.serve(host.clone(), rx.clone()));
        runtime
            .block_on(augurd::orchestrator::start(&host, rx))
            .expect("the mesh starts");
        Self {
            host,
            socket,
            runtime,
            stop,
            _dir: dir,
        }
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::connect(&self.socket).expect("the admin socket accepts")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.host.shutdown();
    }
}
