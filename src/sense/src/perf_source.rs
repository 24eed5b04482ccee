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
                match counter.read() {
                    Ok(v) => total = total.map(|t| t + v),
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
