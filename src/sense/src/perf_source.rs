//! perf events on a VM's vCPU threads.
//!
//! Software events (task-clock, context switches, page faults) work everywhere. Hardware events
//! (instructions, cycles, branches, branch misses, LLC misses) need a PMU and are counted in guest
//! mode only (`exclude_host`); where they cannot be opened, the sample says "unavailable" for them
//! and never a number. Retired floating-point operations have no portable perf event (they are
//! model-specific raw events), so `fp_ops` is reported unavailable.

use augur_wire::{Metric, Sample, Source, VmId};
use perf_event::events::{Event, Hardware, Software};
use perf_event::{Builder, Counter};

struct EventCounters {
    metric: Metric,
    counters: Vec<Counter>,
    /// How many threads this event could not be opened on.
    failed: usize,
}

impl std::fmt::Debug for EventCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventCounters")
            .field("metric", &self.metric)
            .field("open", &self.counters.len())
            .field("failed", &self.failed)
            .finish()
    }
}

/// A counter's count over its whole enabled time: where the kernel multiplexed more events
/// than the PMU has counters, the count covers only the share of time it ran, and is
/// scaled up as `perf stat` does.
fn scaled(count: u64, enabled_ns: u64, running_ns: u64) -> u64 {
    if running_ns == 0 || running_ns >= enabled_ns {
        return count;
    }
    (u128::from(count) * u128::from(enabled_ns) / u128::from(running_ns)).min(u128::from(u64::MAX))
        as u64
}

/// Counters for every event on every vCPU thread of one VM.
#[derive(Debug)]
pub struct PerfSource {
    events: Vec<EventCounters>,
}

fn open<E: Event + Clone>(event: E, tid: u32, guest_only: bool) -> Option<Counter> {
    let mut builder = Builder::new(event);
    builder.observe_pid(tid as i32).any_cpu();
    if guest_only {
        builder.exclude_host(true);
    }
    let mut counter = builder.build().ok()?;
    counter.enable().ok()?;
    Some(counter)
}

fn event_counters<E: Event + Clone>(
    metric: Metric,
    event: E,
    tids: &[u32],
    guest_only: bool,
) -> EventCounters {
    let counters: Vec<Counter> = tids
        .iter()
        .filter_map(|tid| open(event.clone(), *tid, guest_only))
        .collect();
    EventCounters {
        metric,
        failed: tids.len() - counters.len(),
        counters,
    }
}

impl PerfSource {
    /// Opens every event on every thread in `tids`.
    pub fn open(tids: &[u32]) -> Self {
        let mut events = vec![
            event_counters(Metric::TaskClockNs, Software::TASK_CLOCK, tids, false),
            event_counters(
                Metric::ContextSwitches,
                Software::CONTEXT_SWITCHES,
                tids,
                false,
            ),
            event_counters(Metric::PageFaults, Software::PAGE_FAULTS, tids, false),
        ];
        for (metric, event) in [
            (Metric::Instructions, Hardware::INSTRUCTIONS),
            (Metric::Cycles, Hardware::CPU_CYCLES),
            (Metric::Branches, Hardware::BRANCH_INSTRUCTIONS),
            (Metric::BranchMisses, Hardware::BRANCH_MISSES),
            (Metric::LlcMisses, Hardware::CACHE_MISSES),
        ] {
            events.push(event_counters(metric, event, tids, true));
        }
        Self { events }
    }

    /// Whether the host has a usable PMU (any hardware event opened).
    pub fn pmu_available(&self) -> bool {
        self.events
            .iter()
            .filter(|e| matches!(e.metric, Metric::Instructions | Metric::Cycles))
            .any(|e| !e.counters.is_empty())
    }

    /// Reads every counter. An event is unavailable if it is not open on every thread.
    pub fn sample(&mut self, vm: VmId, ts_ns: u64) -> Sample {
        let mut sample = Sample::new(vm, Source::Perf, ts_ns);
        for event in &mut self.events {
            let mut total = Some(0u64);
            if event.failed > 0 || event.counters.is_empty() {
                total = None;
            }
            for counter in &mut event.counters {
                match counter.read_count_and_time() {
                    Ok(c) => {
                        let v = scaled(c.count, c.time_enabled, c.time_running);
                        total = total.map(|t| t.saturating_add(v));
                    }
                    Err(_) => total = None,
                }
            }
            match total {
                Some(v) => sample.push(event.metric, v),
                None => sample.push_unavailable(event.metric),
            };
        }
        sample.push_unavailable(Metric::FpOps);
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::scaled;

    #[test]
    fn a_multiplexed_count_is_scaled_to_its_enabled_time() {
        assert_eq!(scaled(1000, 10, 10), 1000, "ran all the time");
        assert_eq!(scaled(1000, 10, 4), 2500, "ran 40% of the time");
        assert_eq!(scaled(1000, 10, 0), 1000, "never ran: nothing to scale by");
        assert_eq!(scaled(u64::MAX, 10, 1), u64::MAX, "saturates");
    }
}
