//! The vCPU thread: runs KVM_RUN, counts every exit by reason, and serves the guest's ports.

use crate::counters::VmCounters;
use crate::devices::{self, Disk, Net};
use crate::dirty::DirtyTracker;
use crate::guest_program::ports;
use crate::layout;
use crate::pacer::{PaceDecision, Pacer};
use crate::phase_plan::PhasePlan;
use crate::spec::MAX_REQUEST_KIB;
use augur_sys::GuestMemory;
use augur_wire::Metric;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// `KVM_EXIT_DIRTY_RING_FULL`, which kvm-ioctls reports as unsupported.
const KVM_EXIT_DIRTY_RING_FULL: u32 = 31;
/// Longest uninterrupted sleep, so a stop request is seen promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

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
    pub stop: Arc<AtomicBool>,
    pub disk: Disk,
    pub net: Net,
    pub epoch: Instant,
    /// Phase this vCPU is in, for status reports.
    pub phase: Arc<AtomicU64>,
}

impl VcpuContext {
    fn write_mailbox(&self, base: u64, value: u64) {
        // The mailbox is inside the fixed layout, so this cannot fail for a valid VM.
        if let Err(error) = self.mem.write_u64(base + u64::from(self.cpu) * 8, value) {
            warn!(cpu = self.cpu, %error, "mailbox write failed");
        }
    }

    /// Sleeps up to `duration` in slices; false if asked to stop meanwhile.
    fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(SLEEP_SLICE));
        }
    }

    fn apply(&self, decision: PaceDecision) -> bool {
        self.write_mailbox(layout::MB_QUANTUM, decision.quantum);
        if decision.phase_over {
            self.write_mailbox(layout::MB_PHASE_OVER, 1);
        }
        self.sleep(decision.sleep)
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
        let mut pacer = Pacer::default();
        let mut ran_since_pace = Duration::ZERO;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return VcpuEnd::Stopped;
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
            let now = self.epoch.elapsed();
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
