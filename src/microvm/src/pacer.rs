//! The host half of the guest's clock: holds each vCPU to its phase's target rate or load, ends
//! phases on time, and sizes the work quantum. Pure logic on times the caller supplies.

use crate::migration::codec::{Decoder, Encoder};
use crate::migration::MigrationError;
use crate::phase_plan::{PhasePlan, Target};
use std::time::Duration;

/// Run time one compute quantum should take: long enough to keep exits rare, short enough to
/// pace smoothly and end phases on time.
const COMPUTE_QUANTUM_RUN: Duration = Duration::from_millis(2);
/// Wall time of work a rate-paced quantum should cover.
const RATE_QUANTUM_SPAN: f64 = 0.010;
const MAX_MEMORY_QUANTUM: u64 = 4096;
const MAX_COMPUTE_QUANTUM: u64 = 1 << 24;
/// How long one HLT of an idle phase lasts.
pub const IDLE_TICK: Duration = Duration::from_millis(10);

/// Seconds as a duration, saturating: a huge or non-finite figure means "a long time", never a
/// panic (the sleep is capped at the end of the phase anyway).
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(if secs > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// What the vCPU thread does after the guest reports a quantum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceDecision {
    pub sleep: Duration,
    pub phase_over: bool,
    pub quantum: u64,
}

/// Pacing state of one vCPU.
#[derive(Debug, Clone)]
pub struct Pacer {
    phase: usize,
    duration: Duration,
    target: Target,
    started: Duration,
    units: f64,
    busy: Duration,
    quantum: u64,
    rate_paced_by_request: bool,
}

impl Pacer {
    /// Starts phase `index` of `plans` at `now` (time since the VM started); returns the first
    /// quantum size. An out-of-range index from the guest is treated as idle.
    pub fn start(&mut self, plans: &[PhasePlan], index: usize, now: Duration) -> u64 {
        let (duration, target, request) = plans
            .get(index)
            .map(|p| (p.duration, p.target, p.entry[4]))
            .unwrap_or((IDLE_TICK, Target::Idle, 0));
        self.phase = index;
        self.duration = duration;
        self.target = target;
        self.started = now;
        self.units = 0.0;
        self.busy = Duration::ZERO;
        self.rate_paced_by_request = request > 0;
        self.quantum = match target {
            Target::Idle => 1,
            Target::Load(_) => 256,
            Target::Rate(rate) => ((rate * RATE_QUANTUM_SPAN) as u64).clamp(1, MAX_MEMORY_QUANTUM),
        };
        self.quantum
    }

    pub fn phase(&self) -> usize {
        self.phase
    }

    fn finish(&self, now: Duration, sleep: Duration) -> PaceDecision {
        let elapsed = now.saturating_sub(self.started);
        let left = self.duration.saturating_sub(elapsed);
        PaceDecision {
            sleep: sleep.min(left),
            phase_over: sleep >= left,
            quantum: self.quantum,
        }
    }

    /// The guest finished a quantum of `units` after running `ran` inside KVM_RUN.
    pub fn on_quantum(&mut self, units: u64, ran: Duration, now: Duration) -> PaceDecision {
        self.units += units as f64;
        self.busy += ran;
        let elapsed = now.saturating_sub(self.started);
        let sleep = match self.target {
            Target::Idle => Duration::ZERO,
            Target::Load(load) => {
                if !ran.is_zero() {
                    let scaled =
                        self.quantum as f64 * COMPUTE_QUANTUM_RUN.as_secs_f64() / ran.as_secs_f64();
                    // Move halfway to the new size so one preempted quantum cannot swing it.
                    let next = (self.quantum as f64 + scaled) / 2.0;
                    self.quantum = (next as u64).clamp(16, MAX_COMPUTE_QUANTUM);
                }
                seconds(self.busy.as_secs_f64() / load).saturating_sub(elapsed)
            }
            Target::Rate(rate) => {
                if !self.rate_paced_by_request
                    && ran > Duration::from_millis(20)
                    && self.quantum > 1
                {
                    self.quantum /= 2;
                }
                seconds(self.units / rate).saturating_sub(elapsed)
            }
        };
        self.finish(now, sleep)
    }

    /// The guest halted: sleep one idle tick (or to the end of the phase).
    pub fn on_halt(&mut self, now: Duration) -> PaceDecision {
        self.finish(now, IDLE_TICK)
    }
}

impl Pacer {
    /// Writes the pacing state for a migration stream.
    pub(crate) fn encode(&self, e: &mut Encoder) {
        let (tag, value) = match self.target {
            Target::Idle => (0, 0.0),
            Target::Load(load) => (1, load),
            Target::Rate(rate) => (2, rate),
        };
        e.u64(self.phase as u64)
            .u64(self.duration.as_nanos() as u64)
            .u8(tag)
            .f64(value)
            .u64(self.started.as_nanos() as u64)
            .f64(self.units)
            .u64(self.busy.as_nanos() as u64)
            .u64(self.quantum)
            .u8(u8::from(self.rate_paced_by_request));
    }

    /// Reads pacing state from a peer, refusing figures no pacer could have.
    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Self, MigrationError> {
        let bad = |what: &str| MigrationError::Malformed(format!("pacer state: {what}"));
        let phase = usize::try_from(d.u64()?).map_err(|_| bad("phase index"))?;
        let duration = Duration::from_nanos(d.u64()?);
        let (tag, value) = (d.u8()?, d.f64()?);
        if !value.is_finite() || value < 0.0 {
            return Err(bad("target is not a finite, non-negative figure"));
        }
        let target = match tag {
            0 => Target::Idle,
            1 => Target::Load(value),
            2 => Target::Rate(value),
            _ => return Err(bad("unknown target kind")),
        };
        let started = Duration::from_nanos(d.u64()?);
        let units = d.f64()?;
        if !units.is_finite() || units < 0.0 {
            return Err(bad("units done is not a finite, non-negative figure"));
        }
        let busy = Duration::from_nanos(d.u64()?);
        let quantum = d.u64()?;
        if quantum == 0 || quantum > MAX_COMPUTE_QUANTUM {
            return Err(bad("quantum out of range"));
        }
        let rate_paced_by_request = d.u8()? != 0;
        Ok(Self {
            phase,
            duration,
            target,
            started,
            units,
            busy,
            quantum,
            rate_paced_by_request,
        })
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            phase: 0,
            duration: IDLE_TICK,
            target: Target::Idle,
            started: Duration::ZERO,
            units: 0.0,
            busy: Duration::ZERO,
            quantum: 1,
            rate_paced_by_request: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(target: Target, secs: u64, request: u64) -> Vec<PhasePlan> {
        let mut entry = [0u64; 8];
        entry[4] = request;
        vec![PhasePlan {
            name: "p",
            duration: Duration::from_secs(secs),
            target,
            entry,
        }]
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn rate_pacing_sleeps_until_the_work_is_due() {
        let mut p = Pacer::default();
        p.start(&plan(Target::Rate(1000.0), 10, 100), 0, MS(0));
        // 100 units at 1000/s are due at 100 ms; reported at 10 ms: sleep 90 ms.
        let d = p.on_quantum(100, MS(5), MS(10));
        assert_eq!(d.sleep, MS(90));
        assert!(!d.phase_over);
        // Behind schedule: no sleep.
        assert_eq!(p.on_quantum(100, MS(5), MS(500)).sleep, Duration::ZERO);
    }

    #[test]
    fn load_pacing_holds_the_busy_share() {
        let mut p = Pacer::default();
        p.start(&plan(Target::Load(0.25), 10, 0), 0, MS(0));
        // 10 ms busy at 25% load should take 40 ms of wall time.
        let d = p.on_quantum(256, MS(10), MS(10));
        assert_eq!(d.sleep, MS(30));
        assert!(d.quantum < 256, "a 10 ms quantum shrinks toward 2 ms");
    }

    #[test]
    fn phase_ends_on_time_and_never_oversleeps() {
        let mut p = Pacer::default();
        p.start(&plan(Target::Rate(1.0), 1, 1), 0, MS(0));
        let d = p.on_quantum(100, MS(1), MS(900));
        assert!(d.phase_over);
        assert_eq!(d.sleep, MS(100));
        let mut idle = Pacer::default();
        idle.start(&plan(Target::Idle, 1, 0), 0, MS(0));
        assert_eq!(idle.on_halt(MS(500)).sleep, IDLE_TICK);
        assert!(idle.on_halt(MS(995)).phase_over);
    }

    #[test]
    fn absurd_figures_saturate_instead_of_panicking() {
        let mut p = Pacer::default();
        p.start(&plan(Target::Rate(1e-300), 5, 1), 0, MS(0));
        let d = p.on_quantum(u64::MAX, MS(1), MS(10));
        assert_eq!(d.sleep, MS(4990));
        assert!(d.phase_over);
    }

    #[test]
    fn unknown_phase_index_idles() {
        let mut p = Pacer::default();
        assert_eq!(p.start(&[], 7, MS(0)), 1);
        assert_eq!(p.phase(), 7);
    }
}
