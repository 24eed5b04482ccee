//! One running microVM: its KVM objects, guest memory, vCPU threads and sensing handles.

use crate::boot;
use crate::clock::GuestClock;
use crate::control::Control;
use crate::counters::{FlowCount, VmCounters};
use crate::devices::{Disk, Net, NetSwitch};
use crate::dirty::{DirtyError, DirtyMode, DirtyTracker, SLOT};
use crate::fp_probe::fp_supported;
use crate::guest_program;
use crate::layout;
use crate::pacer::Pacer;
use crate::phase_plan::{self, PhasePlan};
use crate::spec::VmSpec;
use crate::vcpu::{VcpuContext, VcpuEnd};
use augur_sys::{DirtyRing, GuestMemory, KvmStats};
use augur_wire::{Metric, Sample, Source, VmId};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("Failed to create the KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("Failed to create vCPU {cpu}")]
    CreateVcpu {
        cpu: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("Failed to set up the registers of vCPU {cpu}")]
    Registers {
        cpu: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] augur_sys::GuestMemoryError),
    #[error("Failed to assemble the guest program: {0}")]
    Assemble(String),
    #[error("Failed to create the disk backing file {path}")]
    Disk {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DirtyRing(#[from] augur_sys::DirtyRingError),
    #[error(transparent)]
    Dirty(#[from] DirtyError),
    #[error("Failed to start a vCPU thread")]
    Thread(#[source] std::io::Error),
}

/// Host-side settings for starting microVMs.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Where disk backing files live.
    pub data_dir: PathBuf,
    pub dirty_mode: DirtyMode,
    /// Harvests the write working set is measured over.
    pub working_set_window: usize,
    /// Size of each VM's disk backing file.
    pub disk_mib: u64,
    /// Dirty ring entries per vCPU (a power of two).
    pub ring_entries: usize,
    pub switch: Arc<dyn NetSwitch>,
}

impl VmOptions {
    pub fn new(data_dir: &Path, switch: Arc<dyn NetSwitch>) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            dirty_mode: DirtyMode::Auto,
            working_set_window: 30,
            disk_mib: 64,
            ring_entries: 16384,
            switch,
        }
    }
}

/// Where a VM is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Running,
    /// The vCPUs are held (a migration whose outcome is not known: see `migration`).
    Paused(String),
    /// The script ended (a spec with `repeat = false`).
    Finished,
    Stopped,
    Failed(String),
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmState::Running => f.write_str("running"),
            VmState::Paused(reason) => write!(f, "paused: {reason}"),
            VmState::Finished => f.write_str("finished"),
            VmState::Stopped => f.write_str("stopped"),
            VmState::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// A point-in-time description of a VM.
#[derive(Debug, Clone)]
pub struct VmStatus {
    pub id: VmId,
    pub name: String,
    pub state: VmState,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub phase_index: u64,
    pub phase_name: String,
    pub progress: u64,
    pub uptime: Duration,
    pub vcpu_tids: Vec<u32>,
    pub dirty_source: Source,
    /// Set when fp_compute phases run the integer kernel because the hypervisor cannot do SSE.
    pub fp_degraded: bool,
    pub flows: BTreeMap<(u32, u16), FlowCount>,
}

/// KVM stat names and the metrics they feed (vCPU stats are summed over vCPUs).
const KVM_STATS: [(&str, Metric); 8] = [
    ("exits", Metric::KvmExits),
    ("halt_exits", Metric::KvmHaltExits),
    ("io_exits", Metric::KvmIoExits),
    ("mmio_exits", Metric::KvmMmioExits),
    ("insn_emulation", Metric::KvmInsnEmulation),
    ("insn_emulation_fail", Metric::KvmInsnEmulationFail),
    ("pf_taken", Metric::KvmPageFaults),
    ("signal_exits", Metric::KvmSignalExits),
];

#[derive(Debug)]
pub(crate) struct VcpuHandle {
    thread: Option<JoinHandle<()>>,
    end: Arc<Mutex<Option<VcpuEnd>>>,
    tid: Arc<AtomicU32>,
    phase: Arc<AtomicU64>,
}

/// A running microVM.
#[derive(Debug)]
pub struct MicroVm {
    id: VmId,
    spec: VmSpec,
    plans: Arc<[PhasePlan]>,
    counters: Arc<VmCounters>,
    pub(crate) dirty: Arc<DirtyTracker>,
    pub(crate) control: Arc<Control>,
    vcpus: Vec<VcpuHandle>,
    stats: Vec<KvmStats>,
    /// The guest's clock: the pacer's schedule runs on it.
    pub(crate) clock: GuestClock,
    /// Whether phases run SSE code (the guest's phase table says so; a target must agree).
    pub(crate) fp_used: bool,
    fp_degraded: bool,
    disk_path: PathBuf,
    stopped: bool,
    pub(crate) paused: Option<String>,
    _vm: Arc<VmFd>,
    /// Declared last so it is dropped last: KVM still maps it while the VM fd is open.
    pub(crate) mem: Arc<GuestMemory>,
}

/// A VM's KVM objects, made but with no vCPU thread running yet.
#[derive(Debug)]
pub(crate) struct Parts {
    pub vm: Arc<VmFd>,
    pub vcpus: Vec<VcpuFd>,
    pub stats: Vec<KvmStats>,
    pub dirty: Arc<DirtyTracker>,
    /// Declared last so it is dropped last: KVM still maps it while the VM fd is open.
    pub mem: Arc<GuestMemory>,
}

/// Signal that kicks a vCPU thread out of KVM_RUN (real-time signals are free for this).
fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN() + 4
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Set once the kick handler is installed: without it the signal would end the process.
static KICKS: AtomicBool = AtomicBool::new(false);

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        match vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            Ok(()) => KICKS.store(true, Ordering::Release),
            Err(error) => {
                warn!(%error, "no vCPU kick handler: pauses and stops wait for the next guest exit")
            }
        }
    });
}

fn create_disk(path: &Path, size: u64) -> Result<File, VmError> {
    let err = |source| VmError::Disk {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.set_len(size).map_err(err)?;
    Ok(file)
}

/// Removes a VM's disk file if the VM fails to start after creating it.
#[derive(Debug)]
struct DiskFileGuard(Option<PathBuf>);

impl DiskFileGuard {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for DiskFileGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn current_tid() -> u32 {
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

impl MicroVm {
    /// Creates the VM from `spec` and starts its vCPUs.
    pub fn start(kvm: &Kvm, id: VmId, spec: VmSpec, options: &VmOptions) -> Result<Self, VmError> {
        spec.validate()?;
        let memory_bytes = (spec.memory_mib as usize) << 20;
        let per_cpu_pages =
            (memory_bytes as u64 - layout::WORK_BASE) / layout::PAGE / u64::from(spec.vcpus);
        let fp_used = fp_supported(kvm);
        let plans: Arc<[PhasePlan]> = phase_plan::plan(&spec, fp_used).into();
        let parts = Self::create(kvm, id, &spec, options)?;
        let mem = &parts.mem;
        boot::write_tables(mem)?;
        let code = guest_program::assemble().map_err(|e| VmError::Assemble(e.to_string()))?;
        mem.write(layout::CODE, &code)?;
        for (i, plan) in plans.iter().enumerate() {
            let at = layout::PHASE_TABLE + i as u64 * layout::PHASE_ENTRY_LEN;
            for (j, word) in plan.entry.iter().enumerate() {
                mem.write_u64(at + j as u64 * 8, *word)?;
            }
        }
        mem.write_u64(layout::MB_PHASE_COUNT, plans.len() as u64)?;
        mem.write_u64(layout::MB_REPEAT, u64::from(spec.repeat))?;
        for (cpu, vcpu) in (0u32..).zip(&parts.vcpus) {
            let regs_err = |source| VmError::Registers { cpu, source };
            let mut sregs = vcpu.get_sregs().map_err(regs_err)?;
            boot::long_mode_sregs(&mut sregs);
            vcpu.set_sregs(&sregs).map_err(regs_err)?;
            vcpu.set_regs(&boot::entry_regs(cpu, per_cpu_pages))
                .map_err(regs_err)?;
        }
        let resume = vec![None; spec.vcpus as usize];
        Self::launch(
            id,
            spec,
            plans,
            fp_used,
            parts,
            options,
            GuestClock::start(),
            resume,
        )
    }

    /// Makes the KVM VM, its memory and its vCPUs (with no registers set).
    pub(crate) fn create(
        kvm: &Kvm,
        id: VmId,
        spec: &VmSpec,
        options: &VmOptions,
    ) -> Result<Parts, VmError> {
        let memory_bytes = (spec.memory_mib as usize) << 20;
        let vm = Arc::new(kvm.create_vm().map_err(VmError::CreateVm)?);
        let mem = Arc::new(GuestMemory::new(memory_bytes)?);
        mem.register(&vm, SLOT, true)?;
        let use_ring = match options.dirty_mode {
            DirtyMode::Log => false,
            DirtyMode::Ring => true,
            DirtyMode::Auto => DirtyRing::supported(kvm),
        };
        if use_ring {
            DirtyRing::enable(kvm, &vm, options.ring_entries)?;
        }
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).ok();
        let mut vcpus = Vec::new();
        let mut rings = Vec::new();
        let mut stats = Vec::new();
        match KvmStats::open(&*vm) {
            Ok(s) => stats.push(s),
            Err(error) => warn!(vm = id, %error, "KVM binary stats unavailable"),
        }
        for cpu in 0..spec.vcpus {
            let vcpu = vm
                .create_vcpu(u64::from(cpu))
                .map_err(|source| VmError::CreateVcpu { cpu, source })?;
            if let Some(cpuid) = &cpuid {
                // Without it a hardware host may refuse the SSE control bits; kvm_pvm ignores it.
                if let Err(error) = vcpu.set_cpuid2(cpuid) {
                    warn!(vm = id, cpu, %error, "KVM_SET_CPUID2 failed");
                }
            }
            if use_ring {
                rings.push(DirtyRing::map(&vcpu, options.ring_entries)?);
            }
            if let Ok(s) = KvmStats::open(&vcpu) {
                stats.push(s);
            }
            vcpus.push(vcpu);
        }
        let dirty = Arc::new(if use_ring {
            DirtyTracker::with_rings(vm.clone(), memory_bytes, options.working_set_window, rings)
        } else {
            DirtyTracker::with_log(vm.clone(), memory_bytes, options.working_set_window)
        });
        Ok(Parts {
            vm,
            mem,
            vcpus,
            stats,
            dirty,
        })
    }

    /// Starts the vCPU threads of a VM whose memory and registers are set: from boot, or from
    /// a migration (`resume` then holds each vCPU's pacing state and `epoch` the guest's time).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        id: VmId,
        spec: VmSpec,
        plans: Arc<[PhasePlan]>,
        fp_used: bool,
        parts: Parts,
        options: &VmOptions,
        clock: GuestClock,
        resume: Vec<Option<(Pacer, Duration)>>,
    ) -> Result<Self, VmError> {
        let Parts {
            vm,
            mem,
            vcpus: fds,
            stats,
            dirty,
        } = parts;
        let fp_degraded = !fp_used
            && spec
                .phases
                .iter()
                .any(|p| matches!(p, crate::spec::PhaseKind::FpCompute { .. }));
        let disk_path = options.data_dir.join(format!("vm-{id}-{}.disk", spec.name));
        let disk_size = options.disk_mib << 20;
        let disk_file = Arc::new(create_disk(&disk_path, disk_size)?);
        let disk_guard = DiskFileGuard(Some(disk_path));

        install_kick_handler();
        let counters = Arc::new(VmCounters::default());
        let control = Arc::new(Control::new(fds.len()));
        let mut vcpus = Vec::new();
        for ((cpu, vcpu), resume) in (0u32..).zip(fds).zip(resume) {
            let phase = Arc::new(AtomicU64::new(0));
            let end = Arc::new(Mutex::new(None));
            let tid = Arc::new(AtomicU32::new(0));
            let context = VcpuContext {
                cpu,
                vcpu,
                mem: mem.clone(),
                plans: plans.clone(),
                counters: counters.clone(),
                dirty: dirty.clone(),
                control: control.clone(),
                disk: Disk::new(
                    disk_file.clone(),
                    disk_size,
                    u64::from(cpu) * (disk_size / 8),
                ),
                net: Net::new(id, options.switch.clone()),
                clock,
                phase: phase.clone(),
                resume,
            };
            let (thread_end, thread_tid) = (end.clone(), tid.clone());
            let thread = std::thread::Builder::new()
                .name(format!("vcpu-{id}-{cpu}"))
                .spawn(move || {
                    thread_tid.store(current_tid(), Ordering::Release);
                    let result = context.run();
                    if let VcpuEnd::Failed(reason) = &result {
                        warn!(vm = id, cpu, reason, "vCPU stopped");
                    }
                    *thread_end.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                });
            let thread = match thread {
                Ok(thread) => thread,
                Err(error) => {
                    // Do not leave the vCPUs already running without an owner: a vCPU inside
                    // the guest sees the stop only at its next exit, so kick it out until it
                    // ends, as `stop` does.
                    use vmm_sys_util::signal::Killable;
                    control.stop();
                    let started: Vec<std::thread::JoinHandle<()>> = vcpus
                        .iter_mut()
                        .filter_map(|v: &mut VcpuHandle| v.thread.take())
                        .collect();
                    while KICKS.load(Ordering::Acquire) && started.iter().any(|t| !t.is_finished())
                    {
                        for thread in &started {
                            let _ = thread.kill(kick_signal());
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    for thread in started {
                        let _ = thread.join();
                    }
                    return Err(VmError::Thread(error));
                }
            };
            vcpus.push(VcpuHandle {
                thread: Some(thread),
                end,
                tid,
                phase,
            });
        }
        info!(vm = id, name = %spec.name, memory_mib = spec.memory_mib, vcpus = spec.vcpus,
              dirty = %dirty.source(), fp_degraded, "microVM started");
        Ok(Self {
            id,
            spec,
            plans,
            _vm: vm,
            mem,
            counters,
            dirty,
            control,
            vcpus,
            stats,
            clock,
            fp_used,
            fp_degraded,
            disk_path: disk_guard.keep(),
            stopped: false,
            paused: None,
        })
    }

    /// Interrupts vCPU `cpu` if it is inside the guest.
    pub(crate) fn kick(&self, cpu: usize) {
        use vmm_sys_util::signal::Killable;
        if !KICKS.load(Ordering::Acquire) {
            return;
        }
        if let Some(thread) = self.vcpus.get(cpu).and_then(|v| v.thread.as_ref()) {
            // The thread may have just ended; a failed kick is retried or moot.
            let _ = thread.kill(kick_signal());
        }
    }

    pub fn id(&self) -> VmId {
        self.id
    }

    /// The VM's counters, shared with its vCPU threads.
    pub fn counters(&self) -> Arc<VmCounters> {
        self.counters.clone()
    }

    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// Bytes of guest memory the guest wrote since the VM was made here or arrived, as of the
    /// last sensing harvest: most of what the first round of a move out copies, which also
    /// reads every other page this host backed (what the host wrote at boot, pages the guest
    /// only read) and sends those that are zero as a count.
    pub fn written_bytes(&self) -> u64 {
        self.dirty.written_pages() * layout::PAGE
    }

    /// The guest's memory, to read (a digest, a comparison after a move); a running guest
    /// writes it meanwhile.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// The guest's progress counter, summed over vCPUs.
    pub fn progress(&self) -> u64 {
        (0..self.spec.vcpus)
            .map(|cpu| {
                self.mem
                    .read_u64(layout::MB_PROGRESS + u64::from(cpu) * 8)
                    .unwrap_or(0)
            })
            // The guest writes these: its counters wrap rather than panic the host.
            .fold(0, u64::wrapping_add)
    }

    /// Thread ids of the vCPU threads (0 until a thread has started).
    pub fn vcpu_tids(&self) -> Vec<u32> {
        self.vcpus
            .iter()
            .map(|v| v.tid.load(Ordering::Acquire))
            .collect()
    }

    pub fn state(&self) -> VmState {
        if self.stopped {
            return VmState::Stopped;
        }
        if let Some(reason) = &self.paused {
            return VmState::Paused(reason.clone());
        }
        let ends: Vec<Option<VcpuEnd>> = self
            .vcpus
            .iter()
            .map(|v| v.end.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        if let Some(VcpuEnd::Failed(reason)) = ends
            .iter()
            .flatten()
            .find(|e| matches!(e, VcpuEnd::Failed(_)))
        {
            return VmState::Failed(reason.clone());
        }
        if ends.iter().all(|e| e.is_some()) {
            return VmState::Finished;
        }
        VmState::Running
    }

    /// The first vCPU whose thread has ended, if any.
    pub(crate) fn ended_vcpu(&self) -> Option<usize> {
        self.vcpus
            .iter()
            .position(|v| v.end.lock().unwrap_or_else(|p| p.into_inner()).is_some())
    }

    pub fn status(&self) -> VmStatus {
        let phase_index = self
            .vcpus
            .first()
            .map_or(0, |v| v.phase.load(Ordering::Relaxed));
        VmStatus {
            id: self.id,
            name: self.spec.name.clone(),
            state: self.state(),
            memory_mib: self.spec.memory_mib,
            vcpus: self.spec.vcpus,
            phase_index,
            phase_name: self
                .plans
                .get(phase_index as usize)
                .map_or("-", |p| p.name)
                .to_string(),
            progress: self.progress(),
            uptime: self.clock.now(),
            vcpu_tids: self.vcpu_tids(),
            dirty_source: self.dirty.source(),
            fp_degraded: self.fp_degraded,
            flows: self.counters.flows(),
        }
    }

    /// Counts traffic other VMs sent to this one.
    pub fn count_received(&self, bytes: u64) {
        VmCounters::add(&self.counters.net_rx_bytes, bytes);
        VmCounters::add(&self.counters.net_rx_packets, 1);
    }

    /// Reads every host-side source of this VM: the run loop, KVM stats and dirty pages.
    pub fn sample(&self, ts_ns: u64) -> Vec<Sample> {
        let mut run_loop = Sample::new(self.id, Source::MicrovmRunLoop, ts_ns);
        self.counters.fill(&mut run_loop);
        let phase = self
            .vcpus
            .first()
            .map_or(0, |v| v.phase.load(Ordering::Relaxed));
        run_loop
            .push(Metric::GuestProgress, self.progress())
            .push(Metric::MemoryBytes, self.spec.memory_mib << 20)
            .push(Metric::GuestPhase, phase);

        let mut kvm = Sample::new(self.id, Source::KvmStats, ts_ns);
        let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
        for stats in &self.stats {
            match stats.read() {
                Ok(values) => {
                    for stat in values {
                        if let Some((name, _)) = KVM_STATS.iter().find(|(n, _)| *n == stat.name) {
                            *sums.entry(name).or_default() += stat.value;
                        }
                    }
                }
                Err(error) => warn!(vm = self.id, %error, "KVM stats read failed"),
            }
        }
        for (name, metric) in KVM_STATS {
            match sums.get(name) {
                Some(value) => kvm.push(metric, *value),
                None => kvm.push_unavailable(metric),
            };
        }

        let mut samples = vec![run_loop, kvm];
        match self.dirty.sample(self.id, ts_ns) {
            Ok(dirty) => samples.push(dirty),
            Err(error) => {
                warn!(vm = self.id, %error, "dirty page harvest failed");
                let mut dirty = Sample::new(self.id, self.dirty.source(), ts_ns);
                dirty
                    .push_unavailable(Metric::DirtyPages)
                    .push_unavailable(Metric::WorkingSetPages);
                samples.push(dirty);
            }
        }
        samples
    }

    /// Stops the vCPUs and waits for their threads.
    pub fn stop(&mut self) {
        self.control.stop();
        // A vCPU inside the guest sees the stop only at its next exit: kick it out, again until
        // it ends, since a kick can land just before it enters KVM_RUN.
        while KICKS.load(Ordering::Acquire)
            && self
                .vcpus
                .iter()
                .any(|v| v.thread.as_ref().is_some_and(|t| !t.is_finished()))
        {
            for cpu in 0..self.vcpus.len() {
                self.kick(cpu);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for vcpu in &mut self.vcpus {
            if let Some(thread) = vcpu.thread.take() {
                if thread.join().is_err() {
                    warn!(vm = self.id, "a vCPU thread panicked");
                }
            }
        }
        if !self.stopped {
            self.stopped = true;
            if let Err(error) = std::fs::remove_file(&self.disk_path) {
                warn!(vm = self.id, %error, "could not remove the disk backing file");
            }
            info!(vm = self.id, "microVM stopped");
        }
    }
}

impl Drop for MicroVm {
    fn drop(&mut self) {
        self.stop();
    }
}
