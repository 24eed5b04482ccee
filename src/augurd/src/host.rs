//! The host: its VMs, the sampling thread that reads every source into the sample ring, and the
//! profiler thread that turns the ring into profiles.
//!
//! ```text
//!  sampling thread ──(samples)──► ring file ──► profiler thread ──► Profiler (windows)
//!         └───────────(tick: timestamp)──────────────┘
//! ```
//! The sampling thread owns the ring's writer; after writing every sample of a tick it sends the
//! tick's timestamp, and the profiler drains the ring and closes one window per VM.

use crate::config::{Config, Driver};
use crate::lock;
use crate::switch::HostSwitch;
use augur_admin::{AdminError, Capabilities, ErrorCode};
use augur_microvm::{MicroVm, VmOptions, VmSpec, VmState};
use augur_plan::Link;
use augur_sense::kvm_exit::TracepointSource;
use augur_sense::perf_source::PerfSource;
use augur_sense::proc_source::ProcReader;
use augur_sense::tracefs::Tracefs;
use augur_sense::{Profiler, Window};
use augur_store::{Store, StoreOptions, StoreStats};
use augur_wire::ring::{RingReader, RingWriter};
use augur_wire::{Sample, VmId};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kvm_ioctls::Kvm;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

const RING_SLOTS: u64 = 8192;
/// How often (in sample intervals) old data is dropped from the store.
const RETENTION_EVERY_TICKS: u64 = 60;
/// How often the store is checked for segments old enough to downsample.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
const RING_SLOT_SIZE: u64 = 1024;

/// A VM and the host-side sources watching it.
#[derive(Debug)]
pub struct ManagedVm {
    pub vm: MicroVm,
    perf: Option<PerfSource>,
    trace: Option<TracepointSource>,
    sources_opened: bool,
}

/// Sampling cost, for the status reply and the benchmark.
#[derive(Debug, Default)]
pub struct SamplingCost {
    pub cpu_ns: AtomicU64,
    pub vm_samples: AtomicU64,
}

impl SamplingCost {
    pub fn per_vm_sample_ns(&self) -> Option<f64> {
        let n = self.vm_samples.load(Ordering::Relaxed);
        (n > 0).then(|| self.cpu_ns.load(Ordering::Relaxed) as f64 / n as f64)
    }
}

#[derive(Debug)]
pub struct Host {
    pub config: Config,
    kvm: Option<Kvm>,
    vms: Mutex<BTreeMap<VmId, ManagedVm>>,
    profiler: Mutex<Profiler>,
    next_id: AtomicU64,
    /// Each VM name's id, kept in the store across restarts: a VM (a libvirt domain above all)
    /// keeps its history when augurd restarts, and no id ever names two VMs.
    vm_ids: Mutex<HashMap<String, VmId>>,
    switch: Arc<HostSwitch>,
    capabilities: Mutex<Capabilities>,
    tracefs: Option<Tracefs>,
    proc_reader: ProcReader,
    pub cost: SamplingCost,
    ring_lost: AtomicU64,
    started: Instant,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Held for a whole VM start, so two starts cannot both take one name, and shutdown waits
    /// for a start in flight.
    starting: Mutex<()>,
    /// The embedded store (None when disabled or after shutdown). Lock order: vms, profiler, store.
    store: Mutex<Option<Store>>,
    /// Forecast models (None when forecasting or the store is disabled).
    forecaster: Option<crate::forecast::Forecaster>,
    /// The libvirt domains (driver = "libvirt"). Lock order: vms, domains, profiler, store.
    domains: Mutex<Option<crate::domains::Domains>>,
    /// The mesh member and orchestrator ([mesh] enabled).
    orchestrator: Option<Arc<crate::orchestrator::Orchestrator>>,
    /// What past migrations said of the link.
    measured_link: Mutex<MeasuredLink>,
}

/// The cost model's link as past migrations measured it, each part averaged over moves.
#[derive(Debug, Default, Clone, Copy)]
struct MeasuredLink {
    /// Bytes/s, fitted to moves that copied enough to tell it.
    bandwidth: Option<f64>,
    /// Seconds, from moves that copied too little to tell the bandwidth.
    setup_s: Option<f64>,
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Finds a VM by id or name.
fn resolve(vms: &BTreeMap<VmId, ManagedVm>, key: &str) -> Option<VmId> {
    if let Ok(id) = key.parse::<VmId>() {
        if vms.contains_key(&id) {
            return Some(id);
        }
    }
    vms.iter()
        .find(|(_, m)| m.vm.spec().name == key)
        .map(|(id, _)| *id)
}

/// The orchestrator plans on the shortest forecast horizon.
fn planning_horizon_s(config: &Config) -> u32 {
    let shortest = config.forecast.horizons_s.iter().min().copied();
    shortest.map_or(300, |h| u32::try_from(h).unwrap_or(u32::MAX))
}

fn unknown_vm(key: &str) -> AdminError {
    AdminError::new(
        ErrorCode::UnknownVm,
        format!("no VM with id or name {key:?}"),
    )
}

impl Host {
    /// Opens KVM per the config and probes what this host can sense.
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data_dir {}: {e}", config.data_dir.display())
        })?;
        let kvm = match config.driver {
            Driver::None | Driver::Libvirt => None,
            Driver::Auto => Kvm::new()
                .map_err(|e| warn!(%e, "/dev/kvm unusable: running without microVMs"))
                .ok(),
            Driver::Microvm => Some(Kvm::new().map_err(|e| {
                anyhow::anyhow!("driver = \"microvm\" but /dev/kvm is unusable: {e}")
            })?),
        };
        let tracefs = if config.sensing.tracepoints {
            Tracefs::discover()
                .map_err(|e| warn!(error = %e, "kvm tracepoints unavailable"))
                .ok()
        } else {
            None
        };
        let domains = match config.driver {
            Driver::Libvirt => {
                let domains = crate::domains::Domains::open(&config.libvirt, config.sensing.perf)
                    .map_err(|e| anyhow::anyhow!("driver = \"libvirt\": {e}"))?;
                info!(uri = %config.libvirt.uri, "connected to libvirt");
                Some(domains)
            }
            _ => None,
        };
        let orchestrator = if config.mesh.enabled {
            Some(Arc::new(
                crate::orchestrator::Orchestrator::new(&config.mesh, planning_horizon_s(&config))
                    .map_err(|e| anyhow::anyhow!("[mesh]: {e}"))?,
            ))
        } else {
            None
        };
        let capabilities = Capabilities {
            libvirt: domains.is_some(),
            kvm: kvm.is_some(),
            dirty_ring: kvm.as_ref().is_some_and(augur_sys::DirtyRing::supported),
            guest_fp: kvm.as_ref().is_some_and(augur_microvm::fp_supported),
            pmu: false,
            tracefs: tracefs.is_some(),
            kvm_exit_tracepoint: false,
        };
        info!(?capabilities, "host capabilities");
        let store = if config.store.enabled {
            let dir = config.data_dir.join("store");
            let store = Store::open(&dir, StoreOptions::default())
                .map_err(|e| anyhow::anyhow!("cannot open the store in {}: {e}", dir.display()))?;
            let report = store.open_report();
            info!(dir = %dir.display(), recovery_ms = report.recovery_ms, blocks = report.blocks,
                  replayed = report.wal_points_replayed, clean = report.is_clean(), "store open");
            Some(store)
        } else {
            None
        };
        // Ids the store holds stay with their names; new names get ids above all of them.
        let mut vm_ids: HashMap<String, VmId> = HashMap::new();
        if let Some(store) = &store {
            for meta in store.vms() {
                let id = vm_ids.entry(meta.name.clone()).or_insert(meta.id);
                *id = (*id).max(meta.id);
            }
        }
        let first_id = store
            .as_ref()
            .and_then(|s| s.vms().map(|m| m.id).max())
            .map_or(1, |max| max + 1);
        let forecaster = (config.forecast.enabled && store.is_some()).then(|| {
            crate::forecast::Forecaster::open(
                config.forecast.clone(),
                config.data_dir.join("models"),
            )
        });
        Ok(Arc::new(Self {
            forecaster,
            profiler: Mutex::new(Profiler::new(config.history_windows)),
            config,
            kvm,
            vms: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(first_id),
            vm_ids: Mutex::new(vm_ids),
            switch: Arc::new(HostSwitch::default()),
            capabilities: Mutex::new(capabilities),
            tracefs,
            proc_reader: ProcReader::default(),
            cost: SamplingCost::default(),
            ring_lost: AtomicU64::new(0),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            starting: Mutex::new(()),
            store: Mutex::new(store),
            domains: Mutex::new(domains),
            orchestrator,
            measured_link: Mutex::new(MeasuredLink::default()),
        }))
    }

    pub fn ring_path(&self) -> PathBuf {
        self.config.data_dir.join("samples.ring")
    }

    /// Starts the sampling and profiler threads.
    pub fn start_threads(self: &Arc<Self>) -> anyhow::Result<()> {
        let writer = RingWriter::create(&self.ring_path(), RING_SLOTS, RING_SLOT_SIZE)?;
        let reader = RingReader::open(&self.ring_path())?;
        let (tick_tx, tick_rx) = crossbeam_channel::bounded(16);
        let sampler = {
            let host = self.clone();
            std::thread::Builder::new()
                .name("augur-sampler".into())
                .spawn(move || host.sampling_loop(writer, tick_tx))?
        };
        let profiler = {
            let host = self.clone();
            std::thread::Builder::new()
                .name("augur-profiler".into())
                .spawn(move || host.profiling_loop(reader, tick_rx))?
        };
        let maintenance = {
            let host = self.clone();
            std::thread::Builder::new()
                .name("augur-store-maint".into())
                .spawn(move || host.maintenance_loop())?
        };
        lock(&self.threads).extend([sampler, profiler, maintenance]);
        if self.forecaster.is_some() {
            let host = self.clone();
            let trainer = std::thread::Builder::new()
                .name("augur-trainer".into())
                .spawn(move || host.training_loop())?;
            lock(&self.threads).push(trainer);
        }
        Ok(())
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.config.sample_interval_ms)
    }

    fn sampling_loop(&self, mut writer: RingWriter, ticks: Sender<u64>) {
        let mut next = Instant::now() + self.interval();
        while !self.stop.load(Ordering::Acquire) {
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
            if Instant::now() < next {
                continue;
            }
            next += self.interval();
            let ts = now_ns();
            let cpu_before = augur_sys::thread_cpu_time();
            let sampled = self.sample_all(ts, &mut writer);
            let cpu = augur_sys::thread_cpu_time().saturating_sub(cpu_before);
            if sampled > 0 {
                self.cost
                    .cpu_ns
                    .fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
                self.cost.vm_samples.fetch_add(sampled, Ordering::Relaxed);
            }
            if ticks.send(ts).is_err() {
                return;
            }
        }
    }

    /// Reads every source of every VM into the ring; returns how many VMs were sampled.
    pub fn sample_all(&self, ts: u64, writer: &mut RingWriter) -> u64 {
        let pid = std::process::id();
        let mut vms = lock(&self.vms);
        let mut pmu_seen = false;
        let mut kvm_exit_seen = false;
        for (id, managed) in vms.iter_mut() {
            let tids = managed.vm.vcpu_tids();
            if !managed.sources_opened && tids.iter().all(|t| *t != 0) {
                managed.sources_opened = true;
                if self.config.sensing.perf {
                    managed.perf = Some(PerfSource::open(&tids));
                }
                if let Some(tracefs) = &self.tracefs {
                    managed.trace = TracepointSource::open(
                        tracefs,
                        &tids,
                        self.config.sensing.tracepoint_period,
                    )
                    .map_err(|e| warn!(vm = id, error = %e, "tracepoints not opened"))
                    .ok();
                }
            }
            let mut samples: Vec<Sample> = managed.vm.sample(ts);
            if let Some(perf) = managed.perf.as_mut() {
                pmu_seen |= perf.pmu_available();
                samples.push(perf.sample(*id, ts));
            }
            if let Some(trace) = managed.trace.as_mut() {
                samples.push(trace.sample(*id, ts));
                kvm_exit_seen |= trace.kvm_exit_fires();
            }
            samples.push(self.proc_reader.sample_threads(*id, pid, &tids, ts));
            for sample in &samples {
                if let Err(error) = writer.push(sample) {
                    warn!(vm = id, %error, "sample dropped");
                }
            }
        }
        let mut sampled = vms.len() as u64;
        if let Some(domains) = lock(&self.domains).as_mut() {
            let sources = crate::domains::HostSources {
                proc_reader: &self.proc_reader,
                tracefs: self.tracefs.as_ref(),
                tracepoint_period: self.config.sensing.tracepoint_period,
            };
            let (samples, pmu, kvm_exit) = domains.sample(
                ts,
                &sources,
                |name| self.id_for(name),
                |id, xml| self.register_domain(id, xml),
            );
            pmu_seen |= pmu;
            kvm_exit_seen |= kvm_exit;
            sampled += domains.len() as u64;
            for sample in &samples {
                if let Err(error) = writer.push(sample) {
                    warn!(vm = sample.vm, %error, "sample dropped");
                }
            }
        }
        drop(vms);
        let mut caps = lock(&self.capabilities);
        caps.pmu |= pmu_seen;
        caps.kvm_exit_tracepoint |= kvm_exit_seen;
        sampled
    }

    fn profiling_loop(&self, mut reader: RingReader, ticks: Receiver<u64>) {
        let mut ticks_seen = 0u64;
        loop {
            let ts = match ticks.recv_timeout(Duration::from_millis(200)) {
                Ok(ts) => ts,
                Err(RecvTimeoutError::Timeout) if !self.stop.load(Ordering::Acquire) => continue,
                Err(_) => return,
            };
            // Lock order everywhere: vms, then profiler (admin handlers hold vms while they
            // read windows), so the live set is taken before the profiler is locked.
            let live: Vec<VmId> = {
                let vms = lock(&self.vms);
                let domains = lock(&self.domains);
                vms.keys()
                    .copied()
                    .chain(domains.iter().flat_map(|d| d.ids()))
                    .collect()
            };
            let mut profiler = lock(&self.profiler);
            loop {
                match reader.read(|s| s.to_sample()) {
                    Ok(Some(sample)) => profiler.ingest(sample),
                    Ok(None) => break,
                    Err(error) => {
                        warn!(%error, "invalid record in the sample ring");
                        break;
                    }
                }
            }
            self.ring_lost.store(reader.lost(), Ordering::Relaxed);
            for vm in profiler.vms().collect::<Vec<_>>() {
                if !live.contains(&vm) {
                    profiler.remove(vm);
                }
            }
            let windows: Vec<(VmId, Window)> = live
                .into_iter()
                .filter_map(|vm| profiler.close_window(vm, ts).map(|w| (vm, w.clone())))
                .collect();
            drop(profiler);
            ticks_seen += 1;
            if let Some(store) = lock(&self.store).as_mut() {
                crate::recorder::record(store, &windows);
                if ticks_seen.is_multiple_of(RETENTION_EVERY_TICKS) {
                    self.apply_retention(store);
                }
            }
        }
    }

    /// Starts a microVM.
    pub fn start_vm(&self, spec: VmSpec) -> Result<VmId, AdminError> {
        let kvm = self.kvm.as_ref().ok_or_else(|| {
            AdminError::new(
                ErrorCode::Unavailable,
                "this host runs no microVMs (KVM is unusable or driver = \"none\")",
            )
        })?;
        let _starting = lock(&self.starting);
        if self.stop.load(Ordering::Acquire) {
            return Err(AdminError::new(
                ErrorCode::Unavailable,
                "augurd is shutting down",
            ));
        }
        if lock(&self.vms)
            .values()
            .any(|m| m.vm.spec().name == spec.name)
        {
            return Err(AdminError::new(
                ErrorCode::InvalidSpec,
                format!("a VM named {:?} is already running", spec.name),
            ));
        }
        let id = self.id_for(&spec.name);
        self.register_microvm(id, &spec);
        let vm = MicroVm::start(kvm, id, spec, &self.vm_options()).map_err(|e| {
            AdminError::new(ErrorCode::Unavailable, format!("cannot start the VM: {e}"))
        })?;
        self.adopt(vm);
        Ok(id)
    }

    fn vm_options(&self) -> VmOptions {
        let mut options = VmOptions::new(&self.config.data_dir, self.switch.clone());
        options.dirty_mode = self.config.microvm.dirty_mode;
        options.working_set_window = self.config.working_set_harvests();
        options.disk_mib = self.config.microvm.disk_mib;
        options.ring_entries = self.config.microvm.ring_entries;
        options
    }

    /// The id of the VM named `name`: the one it had before (in this run or, through the
    /// store, an earlier one), else a new one. Names are unique among the VMs running here.
    fn id_for(&self, name: &str) -> VmId {
        *lock(&self.vm_ids)
            .entry(name.to_string())
            .or_insert_with(|| self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn register_microvm(&self, id: VmId, spec: &VmSpec) {
        if let Some(store) = lock(&self.store).as_mut() {
            let attrs = [
                ("memory_mib".to_string(), spec.memory_mib.to_string()),
                ("vcpus".to_string(), spec.vcpus.to_string()),
                ("driver".to_string(), "microvm".to_string()),
            ]
            .into_iter()
            .collect();
            crate::recorder::register(store, id, &spec.name, attrs);
        }
    }

    /// Puts a running microVM in this host's table, where it is sensed and administered.
    fn adopt(&self, vm: MicroVm) {
        let id = vm.id();
        self.switch.attach(id, vm.counters());
        lock(&self.vms).insert(
            id,
            ManagedVm {
                vm,
                perf: None,
                trace: None,
                sources_opened: false,
            },
        );
    }

    /// Receives a microVM live-migrated from another host over `stream`; `admit` sees what is
    /// coming first (the mesh checks it against a reservation). Returns the VM's id here.
    pub fn receive_vm<S: std::io::Read + std::io::Write>(
        &self,
        stream: &mut S,
        admit: impl FnOnce(&augur_microvm::migration::IncomingHeader) -> Result<(), String>,
    ) -> Result<VmId, String> {
        let kvm = self
            .kvm
            .as_ref()
            .ok_or("this host runs no microVMs (KVM is unusable or driver = \"none\")")?;
        if self.stop.load(Ordering::Acquire) {
            return Err("augurd is shutting down".into());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let taken = |name: &str| lock(&self.vms).values().any(|m| m.vm.spec().name == name);
        let mut spec = None;
        let vm = augur_microvm::migration::accept(kvm, id, stream, &self.vm_options(), |h| {
            if taken(&h.spec.name) {
                return Err(format!("a VM named {:?} already runs here", h.spec.name));
            }
            admit(h)?;
            spec = Some(h.spec.clone());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        if let Some(spec) = &spec {
            lock(&self.vm_ids).insert(spec.name.clone(), id);
            self.register_microvm(id, spec);
        }
        self.adopt(vm);
        Ok(id)
    }

    /// Live-migrates the microVM named by `key` over `stream`. It leaves this host's table for
    /// the move (sampling skips it meanwhile) and comes back if the move fails.
    pub fn migrate_vm_out<S: std::io::Read + std::io::Write>(
        &self,
        key: &str,
        stream: &mut S,
        params: &augur_microvm::MigrationParams,
    ) -> Result<augur_microvm::MigrationReport, augur_microvm::MigrationError> {
        let absent =
            || augur_microvm::MigrationError::NotMigratable(format!("no microVM {key:?} here"));
        let mut managed = {
            let mut vms = lock(&self.vms);
            let id = resolve(&vms, key).ok_or_else(absent)?;
            vms.remove(&id).ok_or_else(absent)?
        };
        let id = managed.vm.id();
        match managed.vm.migrate_to(stream, params) {
            Ok(report) => {
                self.switch.detach(id);
                Ok(report)
            }
            Err(error) => {
                lock(&self.vms).insert(id, managed);
                Err(error)
            }
        }
    }

    /// Names a newly found libvirt domain in the store.
    fn register_domain(&self, id: VmId, xml: &augur_libvirt::DomainXml) {
        if let Some(store) = lock(&self.store).as_mut() {
            let attrs = [
                (
                    "memory_mib".to_string(),
                    (xml.memory_kib / 1024).to_string(),
                ),
                ("vcpus".to_string(), xml.vcpus.to_string()),
                ("driver".to_string(), "libvirt".to_string()),
                ("uuid".to_string(), xml.uuid.clone()),
            ]
            .into_iter()
            .collect();
            crate::recorder::register(store, id, &xml.name, attrs);
        }
    }

    /// Appends an event (a migration, say) to the store's history, if the store is enabled.
    pub fn record_event(&self, kind: &str, vm: Option<VmId>, body: serde_json::Value) {
        if let Some(store) = lock(&self.store).as_mut() {
            let event = augur_store::Event {
                ts_ns: now_ns() as i64,
                kind: kind.to_string(),
                vm,
                body,
            };
            if let Err(error) = store.append_event(&event) {
                warn!(%error, kind, "event not stored");
            }
        }
    }

    /// The link the cost model should assume: the bandwidth fitted to past migrations, else the
    /// configured one (and whether it was fitted); the fixed cost past small moves took; the
    /// configured downtime limit.
    pub fn migration_link(&self) -> (Link, bool) {
        let measured = *lock(&self.measured_link);
        let bandwidth = measured
            .bandwidth
            .unwrap_or(self.config.libvirt.migration_bandwidth_mib_s as f64 * 1024.0 * 1024.0);
        let link = Link {
            bandwidth,
            setup_s: measured.setup_s.unwrap_or(0.0),
            max_downtime_s: self.config.libvirt.max_downtime_ms as f64 / 1000.0,
            ..Link::default()
        };
        (link, measured.bandwidth.is_some())
    }

    /// Learns from a finished migration that took `total_ms` from start to finish, with the cost
    /// model's inputs as they were when it began: `memory` to copy (all of a libvirt guest's,
    /// what a microVM had written), `working_set` and `dirty_rate` (bytes, bytes/s). A move
    /// that copied little tells the fixed cost of a move. Otherwise the bandwidth kept is the
    /// one under which the model predicts that time, so it folds in what the link really
    /// carried and the CPU each end spent, without taking a busy guest's extra rounds for a
    /// slow link.
    pub fn observe_migration(
        &self,
        memory: f64,
        working_set: f64,
        dirty_rate: f64,
        total_ms: Option<u64>,
    ) {
        let Some(ms) = total_ms else {
            return;
        };
        let total_s = ms as f64 / 1000.0;
        if memory < augur_plan::MIN_CALIBRATION_BYTES {
            let mut measured = lock(&self.measured_link);
            measured.setup_s = Some(augur_plan::recalibrated(measured.setup_s, total_s));
            info!(seconds = total_s, average = ?measured.setup_s, "fixed cost of a move measured");
            return;
        }
        let (link, _) = self.migration_link();
        let Some(fitted) =
            augur_plan::bandwidth_for(memory, working_set, dirty_rate, &link, total_s)
        else {
            return;
        };
        let mut measured = lock(&self.measured_link);
        measured.bandwidth = Some(augur_plan::recalibrated(measured.bandwidth, fitted));
        info!(bytes_per_s = fitted, average = ?measured.bandwidth, "migration bandwidth fitted");
    }

    /// Whether this host runs Augur microVMs (KVM is usable and the driver is microvm).
    pub fn runs_microvms(&self) -> bool {
        self.kvm.is_some()
    }

    /// Set once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The mesh member and orchestrator, if the mesh is enabled.
    pub fn orchestrator(&self) -> Option<&Arc<crate::orchestrator::Orchestrator>> {
        self.orchestrator.as_ref()
    }

    /// Runs `f` on the libvirt domains, if this host has the libvirt driver.
    pub fn with_domains<R>(&self, f: impl FnOnce(&mut crate::domains::Domains) -> R) -> Option<R> {
        lock(&self.domains).as_mut().map(f)
    }

    /// Stops a VM by id or name; returns its id and name.
    pub fn stop_vm(&self, key: &str) -> Result<(VmId, String), AdminError> {
        let mut managed = {
            let mut vms = lock(&self.vms);
            let id = resolve(&vms, key).ok_or_else(|| unknown_vm(key))?;
            vms.remove(&id).ok_or_else(|| unknown_vm(key))?
        };
        let id = managed.vm.id();
        self.switch.detach(id);
        // Outside the lock: joining vCPU threads may take a quantum.
        managed.vm.stop();
        Ok((id, managed.vm.spec().name.clone()))
    }

    /// Runs `f` on the VM named by `key`.
    pub fn with_vm<R>(&self, key: &str, f: impl FnOnce(&MicroVm) -> R) -> Result<R, AdminError> {
        let vms = lock(&self.vms);
        let id = resolve(&vms, key).ok_or_else(|| unknown_vm(key))?;
        Ok(f(&vms[&id].vm))
    }

    /// Runs `f` on every VM, in id order.
    pub fn each_vm<R>(&self, mut f: impl FnMut(&MicroVm) -> R) -> Vec<R> {
        lock(&self.vms).values().map(|m| f(&m.vm)).collect()
    }

    pub fn vm_count(&self) -> usize {
        lock(&self.vms).len() + lock(&self.domains).as_ref().map_or(0, |d| d.len())
    }

    pub fn current_window(&self, vm: VmId) -> Option<Window> {
        lock(&self.profiler).current(vm).cloned()
    }

    pub fn history(&self, vm: VmId, n: usize) -> Vec<Window> {
        lock(&self.profiler).history(vm, n)
    }

    /// The newest dirty rate measured for `vm` in the kept history: QEMU guests are measured
    /// every `dirty_rate_every_s`, not every window.
    pub fn latest_dirty_mib_per_s(&self, vm: VmId) -> Option<f64> {
        lock(&self.profiler).latest(vm, |w| w.dirty_mib_per_s)
    }

    pub fn capabilities(&self) -> Capabilities {
        lock(&self.capabilities).clone()
    }

    pub fn ring_lost(&self) -> u64 {
        self.ring_lost.load(Ordering::Relaxed)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn driver_name(&self) -> &'static str {
        if lock(&self.domains).is_some() {
            "libvirt"
        } else if self.kvm.is_some() {
            "microvm"
        } else {
            "none"
        }
    }

    /// Stops the threads and every VM. Idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        for thread in lock(&self.threads).drain(..) {
            let name = thread.thread().name().unwrap_or("unnamed").to_string();
            if thread.join().is_err() {
                error!(thread = %name, "a daemon thread had panicked");
            }
        }
        let vms = {
            let _no_start_in_flight = lock(&self.starting);
            std::mem::take(&mut *lock(&self.vms))
        };
        for (id, mut managed) in vms {
            self.switch.detach(id);
            managed.vm.stop();
        }
        // Closes the libvirt connection and joins the shim channels' readers.
        drop(lock(&self.domains).take());
        if let Some(store) = lock(&self.store).take() {
            if let Err(error) = store.close() {
                warn!(%error, "store did not close cleanly; it recovers at the next start");
            }
        }
        if let Err(error) = std::fs::remove_file(self.ring_path()) {
            if error.kind() != std::io::ErrorKind::NotFound {
                warn!(%error, "could not remove the sample ring");
            }
        }
    }

    /// Downsamples old store segments, one at a time: the store lock is held only to pick a
    /// segment and to install the result, never while a segment is read and aggregated.
    fn maintenance_loop(&self) {
        let mut next = Instant::now() + MAINTENANCE_EVERY;
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(200));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + MAINTENANCE_EVERY;
            loop {
                let now = now_ns() as i64;
                let Some(job) = lock(&self.store)
                    .as_ref()
                    .and_then(|s| s.plan_downsample(now))
                else {
                    break;
                };
                let output = match job.run() {
                    Ok(output) => output,
                    Err(error) => {
                        warn!(%error, segment = job.segment(), "downsampling failed");
                        break;
                    }
                };
                let (points_in, points_out) = (output.points_in, output.points_out);
                match lock(&self.store)
                    .as_mut()
                    .map(|s| s.apply_downsample(output))
                {
                    Some(Ok(_)) => info!(
                        segment = job.segment(),
                        points_in, points_out, "segment downsampled"
                    ),
                    Some(Err(error)) => {
                        warn!(%error, "installing a downsampled segment failed");
                        break;
                    }
                    None => break,
                }
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
            }
        }
    }

    /// Retrains the forecast models every `retrain_s`, and at start when none is on disk. The
    /// store lock is held while histories are read, never while models train.
    fn training_loop(&self) {
        let Some(forecaster) = &self.forecaster else {
            return;
        };
        let every = Duration::from_secs(forecaster.config().retrain_s);
        // Train at once while a resource has no usable model (none yet, or one made for
        // another configuration).
        let mut next = if forecaster.generations().len() < crate::forecast::history::RESOURCES.len()
        {
            Instant::now()
        } else {
            Instant::now() + every
        };
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(200));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            // A panic in one training (a bug met on odd history) must not end retraining for
            // the rest of the daemon's life: it is logged and the next one goes ahead.
            let trained =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.train_now()));
            if trained.is_err() {
                error!("forecast training panicked; the models stay as they were, next try in {every:?}");
            }
        }
    }

    /// Trains the forecast models on the stored history now; returns how many trained.
    pub fn train_now(&self) -> usize {
        let Some(forecaster) = &self.forecaster else {
            return 0;
        };
        let now_s = (now_ns() / 1_000_000_000) as i64;
        let histories = self.histories(now_s);
        forecaster.train(&histories, now_s)
    }

    /// Every stored VM's history for the forecasters.
    fn histories(&self, now_s: i64) -> Vec<crate::forecast::history::VmHistory> {
        let config = &self.config.forecast;
        let features = self.forecast_features();
        let guard = lock(&self.store);
        let Some(store) = guard.as_ref() else {
            return Vec::new();
        };
        let ids: Vec<VmId> = store.vms().map(|m| m.id).collect();
        ids.into_iter()
            .filter_map(|id| {
                crate::forecast::history::read(
                    store,
                    id,
                    now_s,
                    config.train_days as i64 * 86_400,
                    config.step_s as i64,
                    &features,
                )
            })
            .collect()
    }

    /// The configured behavioural series, plus what the workload classifier reads.
    fn forecast_features(&self) -> Vec<String> {
        let mut features = self.config.forecast.features.clone();
        if !features.iter().any(|f| f == "dirty_mib_per_s") {
            features.push("dirty_mib_per_s".into());
        }
        features
    }

    /// The generation of each forecast model in use.
    pub fn forecast_generations(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.forecaster
            .as_ref()
            .map(crate::forecast::Forecaster::generations)
            .unwrap_or_default()
    }

    /// Forecasts of a stored VM (by id or name).
    pub fn predict(&self, key: &str) -> Result<augur_admin::PredictReply, AdminError> {
        let forecaster = self.forecaster.as_ref().ok_or_else(|| {
            AdminError::new(
                ErrorCode::Unavailable,
                "forecasting is disabled ([forecast] enabled = false, or the store is disabled)",
            )
        })?;
        let config = &self.config.forecast;
        let now_s = (now_ns() / 1_000_000_000) as i64;
        let features = self.forecast_features();
        let history = {
            let guard = lock(&self.store);
            let store = guard
                .as_ref()
                .ok_or_else(|| AdminError::new(ErrorCode::Unavailable, "the store is closed"))?;
            let id = crate::server::store::resolve(store, key).ok_or_else(|| unknown_vm(key))?;
            // Two of the longest feature window (a season of steps) cover every feature.
            let lookback_s = 2 * augur_predict::SEASON as i64 * config.step_s as i64;
            crate::forecast::history::read(
                store,
                id,
                now_s,
                lookback_s.min(config.train_days as i64 * 86_400),
                config.step_s as i64,
                &features,
            )
            .ok_or_else(|| {
                AdminError::new(
                    ErrorCode::Unavailable,
                    format!("VM {key:?} has no CPU history in the last days to forecast from"),
                )
            })?
        };
        Ok(forecaster.predict(&history))
    }

    fn apply_retention(&self, store: &mut Store) {
        let keep_after =
            now_ns() as i64 - (self.config.store.retention_days as i64) * 86_400 * 1_000_000_000;
        match store.apply_retention(Some(keep_after), Some(self.config.store.max_mib << 20)) {
            Ok(0) => {}
            Ok(n) => info!(segments = n, "old store segments dropped"),
            Err(error) => warn!(%error, "store retention failed"),
        }
    }

    /// Store statistics, if the store is enabled.
    pub fn store_stats(&self) -> Option<StoreStats> {
        lock(&self.store).as_ref().map(Store::stats)
    }

    /// Runs `f` on the store, if it is enabled.
    pub fn with_store<R>(&self, f: impl FnOnce(&Store) -> R) -> Option<R> {
        lock(&self.store).as_ref().map(f)
    }

    /// True if every VM has ended on its own (script finished or failed).
    pub fn all_vms_ended(&self) -> bool {
        lock(&self.vms)
            .values()
            .all(|m| !matches!(m.vm.state(), VmState::Running))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Driver;

    #[test]
    fn a_vm_keeps_its_stored_id_across_restarts_and_new_names_get_new_ids() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        {
            let mut store = Store::open(&data_dir.join("store"), StoreOptions::default()).unwrap();
            for (id, name) in [(5, "web"), (9, "db"), (2, "web")] {
                store
                    .register_vm(augur_store::VmMeta {
                        id,
                        name: name.into(),
                        attrs: Default::default(),
                    })
                    .unwrap();
            }
            store.close().unwrap();
        }
        let config = Config {
            driver: Driver::None,
            data_dir,
            admin_socket: dir.path().join("augurd.sock"),
            ..Config::default()
        };
        let host = Host::new(config).unwrap();
        assert_eq!(host.id_for("web"), 5, "the newest id the name had");
        assert_eq!(host.id_for("db"), 9);
        assert_eq!(host.id_for("cache"), 10, "above every stored id");
        assert_eq!(host.id_for("cache"), 10);
        assert_eq!(host.id_for("queue"), 11);
        host.shutdown();
    }
}
