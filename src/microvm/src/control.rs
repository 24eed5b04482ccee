//! Stopping, pausing and resuming a VM's vCPU threads.
//!
//! A pause is what a migration's stop-and-copy needs: each vCPU thread parks at a point where
//! its state is whole (no port I/O half done, see `VcpuContext::park`) and hands over its
//! snapshot; the host then resumes the threads (the move failed) or stops them (the VM runs on
//! elsewhere now). A thread inside KVM_RUN is kicked out with a signal; one in a paced sleep
//! is woken through the condition variable it sleeps on.

use crate::migration::VcpuSnapshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a parked vCPU does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Run,
    Stop,
}

/// A vCPU's answer to a pause: its snapshot, or why it could not take one.
pub type Parked = Result<VcpuSnapshot, String>;

#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    pause: AtomicBool,
    parked: Mutex<Vec<Option<Parked>>>,
    changed: Condvar,
}

impl Control {
    pub fn new(vcpus: usize) -> Self {
        Self {
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            parked: Mutex::new(vec![None; vcpus]),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Parked>>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn pause_requested(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Sleeps up to `duration`, waking early for a stop or a pause; false if stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        let mut guard = self.lock();
        loop {
            if self.stopped() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.pause_requested() {
                return true;
            }
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Called by vCPU `cpu`'s thread: hands over its snapshot and waits to be released.
    pub fn park(&self, cpu: usize, parked: Parked) -> Release {
        let mut guard = self.lock();
        // A pause already called off (resume takes the lock to clear it) leaves no snapshot.
        if !self.pause_requested() {
            return if self.stopped() {
                Release::Stop
            } else {
                Release::Run
            };
        }
        if let Some(slot) = guard.get_mut(cpu) {
            *slot = Some(parked);
        }
        self.changed.notify_all();
        while self.pause_requested() && !self.stopped() {
            guard = self.changed.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        if self.stopped() {
            Release::Stop
        } else {
            Release::Run
        }
    }

    /// Asks every vCPU to park and waits until all have, calling `kick` every millisecond to
    /// interrupt those still inside the guest. On a timeout or a vCPU that could not take its
    /// snapshot, the VM is resumed and the reason returned.
    pub fn pause(
        &self,
        timeout: Duration,
        mut kick: impl FnMut(usize),
    ) -> Result<Vec<VcpuSnapshot>, String> {
        self.pause.store(true, Ordering::Release);
        let until = Instant::now() + timeout;
        let mut guard = self.lock();
        self.changed.notify_all();
        loop {
            if let Some(Err(reason)) = guard.iter().flatten().find(|p| p.is_err()) {
                let reason = reason.clone();
                drop(guard);
                self.resume();
                return Err(reason);
            }
            if guard.iter().all(Option::is_some) {
                return Ok(guard.iter().flatten().flatten().cloned().collect());
            }
            if Instant::now() >= until {
                drop(guard);
                self.resume();
                return Err(format!("the vCPUs did not pause within {timeout:?}"));
            }
            for cpu in (0..guard.len()).filter(|&c| guard[c].is_none()) {
                kick(cpu);
            }
            guard = self
                .changed
                .wait_timeout(guard, Duration::from_millis(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Lets parked vCPUs run on.
    pub fn resume(&self) {
        let mut guard = self.lock();
        self.pause.store(false, Ordering::Release);
        guard.iter_mut().for_each(|p| *p = None);
        self.changed.notify_all();
    }
}
