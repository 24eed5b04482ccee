//! The vCPU thread: runs KVM_RUN, counts every exit by reason, and serves the guest's ports.

use crate::clock::GuestClock;
use crate::control::{Control, Release};
use crate::counters::VmCounters;
use crate::devices::{self, Disk, Net};
use crate::dirty::DirtyTracker;
use crate::guest_program::ports;
use crate::layout;
use crate::migration::VcpuSnapshot;
use crate::pacer::{PaceDecision, Pacer};
use crate::phase_plan::PhasePlan;
use crate::spec::MAX_REQUEST_KIB;
use augur_sys::GuestMemory;
use augur_wire::Metric;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// `KVM_EXIT_DIRTY_RING_FULL`, which kvm-ioctls reports as unsupported.
const KVM_EXIT_DIRTY_RING_FULL: u32 = 31;

/// Why a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEnd {
    Stopped,
    ScriptDone,
    Failed(String),
}

/// Everything a vCPU thread owns or shares.
#[derive(Debug)]
pub struct VcpuContext {
    pub cpu: u32,
    pub vcpu: VcpuFd,
    pub mem: Arc<GuestMemory>,
    pub plans: Arc<[PhasePlan]>,
    pub counters: Arc<VmCounters>,
    pub dirty: Arc<DirtyTracker>,
    pub control: Arc<Control>,
    pub disk: Disk,
    pub net: Net,
    pub clock: GuestClock,
    /// Phase this vCPU is in, for status reports.
    pub phase: Arc<AtomicU64>,
    /// Pacing state carried over from the host this vCPU ran on before a migration.
    pub resume: Option<(Pacer, Duration)>,
}

impl VcpuContext {
    fn write_mailbox(&self, base: u64, value: u64) {
        // The mailbox is inside the fixed layout, so this cannot fail for a valid VM.
        if let Err(error) = self.mem.write_u64(base + u64::from(self.cpu) * 8, value) {
            warn!(cpu = self.cpu, %error, "mailbox write failed");
        }
    }

    /// Writes the pacer's decision for the guest and sleeps it out; false if stopped. A pause
    /// cuts the sleep short: the pacer's schedule is absolute, so the next quantum catches up.
    fn apply(&self, decision: PaceDecision) -> bool {
        self.write_mailbox(layout::MB_QUANTUM, decision.quantum);
        if decision.phase_over {
            self.write_mailbox(layout::MB_PHASE_OVER, 1);
        }
        self.control.sleep(decision.sleep)
    }

    /// Takes this vCPU's snapshot for a pause and waits to be resumed or stopped.
    fn park(&mut self, pacer: &Pacer, ran_since_pace: Duration) -> Release {
        let parked = self.snapshot(pacer, ran_since_pace);
        if let Err(reason) = &parked {
            warn!(cpu = self.cpu, reason, "vCPU could not take its snapshot");
        }
        self.control.park(self.cpu as usize, parked)
    }

    fn snapshot(
        &mut self,
        pacer: &Pacer,
        ran_since_pace: Duration,
    ) -> Result<VcpuSnapshot, String> {
        // KVM finishes a port access the guest is in the middle of only on the next KVM_RUN;
        // one with immediate_exit set does that and returns at once, so the registers then
        // describe the instruction after it.
        self.vcpu.set_kvm_immediate_exit(1);
        let entered = match self.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(format!("KVM_RUN to complete pending I/O failed: {e}")),
            Ok(exit) => Err(format!(
                "KVM_RUN with immediate_exit ran the guest: {exit:?}"
            )),
        };
        self.vcpu.set_kvm_immediate_exit(0);
        entered?;
        let err = |what: &str, e: kvm_ioctls::Error| format!("{what} failed: {e}");
        Ok(VcpuSnapshot {
            regs: self.vcpu.get_regs().map_err(|e| err("KVM_GET_REGS", e))?,
            sregs: self.vcpu.get_sregs().map_err(|e| err("KVM_GET_SREGS", e))?,
            fpu: self.vcpu.get_fpu().map_err(|e| err("KVM_GET_FPU", e))?,
            pacer: pacer.clone(),
            ran_since_pace,
        })
    }

    fn device_request(&mut self, port: u16, value: u64) {
        let max = (MAX_REQUEST_KIB * 1024) as usize;
        let ok = match devices::read_request(&self.mem, self.cpu, value, max) {
            Some(req) if port == ports::DISK => self.disk.handle(&self.mem, &req, &self.counters),
            Some(req) => self.net.handle(&self.mem, &req, &self.counters),
            None => false,
        };
        if !ok {
            VmCounters::add(&self.counters.bad_requests, 1);
        }
    }

    /// Runs the vCPU until it is stopped, the script ends, or the guest fails.
    pub fn run(mut self) -> VcpuEnd {
        let (mut pacer, mut ran_since_pace) = self.resume.take().unwrap_or_default();
        self.phase.store(pacer.phase() as u64, Ordering::Relaxed);
        loop {
            if self.control.stopped() {
                return VcpuEnd::Stopped;
            }
            if self.control.pause_requested() {
                match self.park(&pacer, ran_since_pace) {
                    Release::Run => continue,
                    Release::Stop => return VcpuEnd::Stopped,
                }
            }
            let entered = Instant::now();
            let exit = self.vcpu.run();
            let ran = entered.elapsed();
            ran_since_pace += ran;
            VmCounters::add(&self.counters.run_ns, ran.as_nanos() as u64);
            // Copy what the exit says, so the borrow of the vCPU ends here.
            let event = match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut bytes = [0u8; 8];
                    let n = data.len().min(8);
                    bytes[..n].copy_from_slice(&data[..n]);
                    Event::Out(port, u64::from_le_bytes(bytes))
                }
                Ok(VcpuExit::IoIn(_, data)) => {
                    data.fill(0xff); // no device answers reads: the floating bus
                    Event::Count(Metric::ExitIo)
                }
                Ok(VcpuExit::MmioRead(_, data)) => {
                    data.fill(0xff);
                    Event::Count(Metric::ExitMmio)
                }
                Ok(VcpuExit::MmioWrite(..)) => Event::Count(Metric::ExitMmio),
                Ok(VcpuExit::Hlt) => Event::Halt,
                Ok(VcpuExit::Shutdown) => Event::Fatal(
                    Metric::ExitShutdown,
                    "guest shut down (triple fault)".into(),
                ),
                Ok(VcpuExit::InternalError) => Event::Fatal(
                    Metric::ExitInternalError,
                    "KVM internal error (emulation failure)".into(),
                ),
                Ok(VcpuExit::FailEntry(reason, _)) => Event::Fatal(
                    Metric::ExitOther,
                    format!("VM entry failed, reason {reason:#x}"),
                ),
                Ok(VcpuExit::Unsupported(KVM_EXIT_DIRTY_RING_FULL)) => Event::RingFull,
                Ok(VcpuExit::Intr) => Event::Count(Metric::ExitOther),
                Ok(other) => {
                    debug!(cpu = self.cpu, exit = ?other, "unexpected exit");
                    Event::Count(Metric::ExitOther)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Event::Count(Metric::ExitOther)
                }
                Err(e) => Event::Fatal(Metric::ExitOther, format!("KVM_RUN failed: {e}")),
            };
            let now = self.clock.now();
            match event {
                Event::Count(metric) => self.counters.count_exit(metric),
                Event::Out(port, value) => {
                    self.counters.count_exit(Metric::ExitIo);
                    match port {
                        ports::PHASE => {
                            let index = value as usize;
                            let quantum = pacer.start(&self.plans, index, now);
                            self.phase.store(index as u64, Ordering::Relaxed);
                            self.write_mailbox(layout::MB_QUANTUM, quantum);
                            ran_since_pace = Duration::ZERO;
                        }
                        ports::PACE => {
                            let decision =
                                pacer.on_quantum(value & 0xffff_ffff, ran_since_pace, now);
                            ran_since_pace = Duration::ZERO;
                            if !self.apply(decision) {
                                return VcpuEnd::Stopped;
                            }
                        }
                        ports::DISK | ports::NET => self.device_request(port, value & 0xffff_ffff),
                        ports::DONE => return VcpuEnd::ScriptDone,
                        _ => VmCounters::add(&self.counters.bad_requests, 1),
                    }
                }
                Event::Halt => {
                    self.counters.count_exit(Metric::ExitHlt);
                    let decision = pacer.on_halt(now);
                    if !self.apply(decision) {
                        return VcpuEnd::Stopped;
                    }
                }
                Event::RingFull => {
                    self.counters.count_exit(Metric::ExitDirtyRingFull);
                    if let Err(error) = self.dirty.on_ring_full(self.cpu as usize) {
                        return VcpuEnd::Failed(format!("dirty ring reset failed: {error}"));
                    }
                }
                Event::Fatal(metric, reason) => {
                    self.counters.count_exit(metric);
                    return VcpuEnd::Failed(reason);
                }
            }
        }
    }
}

enum Event {
    Count(Metric),
    Out(u16, u64),
    Halt,
    RingFull,
    Fatal(Metric, String),
}
