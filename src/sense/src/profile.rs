//! The behavioural profile of each VM: one [`Window`] per sampling interval, merged from the rates
//! of every source, and a bounded history of windows.

use crate::guest::GuestWindow;
use crate::rates::Rates;
use augur_wire::{Metric, Sample, Source, VmId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

const PAGE_BYTES: f64 = 4096.0;
const MIB: f64 = 1024.0 * 1024.0;

/// PMU and software perf events reported in a window.
const PERF_EVENTS: [Metric; 9] = [
    Metric::TaskClockNs,
    Metric::ContextSwitches,
    Metric::PageFaults,
    Metric::Instructions,
    Metric::Cycles,
    Metric::Branches,
    Metric::BranchMisses,
    Metric::LlcMisses,
    Metric::FpOps,
];

/// What a VM did during one sampling interval. `None` means no source measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub ts_ns: u64,
    /// Busy vCPUs (1.0 = one vCPU fully busy), from time in KVM_RUN, else task-clock, else /proc.
    pub cpu_vcpus: Option<f64>,
    pub memory_mib: Option<f64>,
    /// Distinct pages written over the working-set window, in MiB.
    pub working_set_mib: Option<f64>,
    pub dirty_pages_per_s: Option<f64>,
    pub dirty_mib_per_s: Option<f64>,
    /// 1 - runs/pages of the dirty pages: 1 for long sequential runs, 0 for scattered pages.
    pub dirty_locality: Option<f64>,
    pub disk_read_bytes_per_s: Option<f64>,
    pub disk_write_bytes_per_s: Option<f64>,
    /// Share of disk bytes that were reads.
    pub disk_read_ratio: Option<f64>,
    pub disk_ops_per_s: Option<f64>,
    pub net_tx_bytes_per_s: Option<f64>,
    pub net_rx_bytes_per_s: Option<f64>,
    pub exits_per_s: Option<f64>,
    /// Share of exits by reason (sums to 1 when there were exits).
    pub exit_mix: BTreeMap<String, f64>,
    /// perf event rates per second; `None` where the host cannot count the event (no PMU).
    pub perf: BTreeMap<String, Option<f64>>,
    /// KVM binary stats rates per second.
    pub kvm_stats: BTreeMap<String, f64>,
    pub guest_progress_per_s: Option<f64>,
    pub guest_phase: Option<u64>,
    /// What the in-guest shim saw, where the guest runs one.
    #[serde(default)]
    pub guest: Option<GuestWindow>,
    /// Sources that contributed to this window.
    pub sources: Vec<String>,
}

fn ratio(part: Option<f64>, other: Option<f64>) -> Option<f64> {
    let (a, b) = (part?, other?);
    (a + b > 0.0).then(|| a / (a + b))
}

fn sum(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    values.into_iter().flatten().reduce(|a, b| a + b)
}

impl Window {
    fn build(ts_ns: u64, rates: &BTreeMap<u8, Rates>) -> Self {
        let by = |source: Source| rates.get(&source.code());
        let run = by(Source::MicrovmRunLoop);
        let dirty = by(Source::DirtyRing).or(by(Source::DirtyLog));
        let perf = by(Source::Perf);
        let proc_ = by(Source::Proc);
        let trace = by(Source::Tracepoint);
        let kvm = by(Source::KvmStats);
        let domain = by(Source::Libvirt);
        let shim = by(Source::Shim);
        let get = |r: Option<&Rates>, m: Metric| r.and_then(|r| r.get(m));

        let cpu_ns = get(run, Metric::VcpuRunNs)
            .or(get(domain, Metric::DomainVcpuNs))
            .or(get(perf, Metric::TaskClockNs))
            .or(get(domain, Metric::DomainCpuNs))
            .or(get(proc_, Metric::ProcCpuNs));
        let dirty_pages = get(dirty, Metric::DirtyPages);
        let dirty_runs = get(dirty, Metric::DirtyRuns);
        let dirty_mib = dirty_pages
            .map(|p| p * PAGE_BYTES / MIB)
            .or(get(domain, Metric::DomainDirtyRateMibS));
        // Device counters come from the microVM run loop or libvirt's block and interface
        // stats; an unknown VMM's I/O from /proc.
        let device = |m: Metric| get(run, m).or(get(domain, m));
        let disk_read = device(Metric::DiskReadBytes).or(get(proc_, Metric::ProcRchar));
        let disk_write = device(Metric::DiskWriteBytes).or(get(proc_, Metric::ProcWchar));

        // The run loop sees every exit of a microVM; the tracepoint every exit of any VMM.
        let exit_source = if run.is_some_and(|r| r.has(Metric::ExitIo)) {
            run
        } else {
            trace
        };
        let mut exit_mix = BTreeMap::new();
        let exits = sum(Metric::EXIT_REASONS.iter().map(|m| get(exit_source, *m)));
        if let Some(total) = exits.filter(|t| *t > 0.0) {
            for metric in Metric::EXIT_REASONS {
                if let Some(rate) = get(exit_source, metric).filter(|r| *r > 0.0) {
                    exit_mix.insert(metric.label().to_string(), rate / total);
                }
            }
        }

        let perf_map = perf
            .map(|p| {
                PERF_EVENTS
                    .iter()
                    .filter(|m| p.has(**m))
                    .map(|m| (m.label().to_string(), p.get(*m)))
                    .collect()
            })
            .unwrap_or_default();
        let kvm_stats = kvm
            .map(|k| {
                k.iter()
                    .filter_map(|(m, v)| Some((m.label().to_string(), v?)))
                    .collect()
            })
            .unwrap_or_default();

        Window {
            ts_ns,
            cpu_vcpus: cpu_ns.map(|ns| ns / 1e9),
            memory_mib: device(Metric::MemoryBytes).map(|b| b / MIB),
            working_set_mib: get(dirty, Metric::WorkingSetPages).map(|p| p * PAGE_BYTES / MIB),
            dirty_pages_per_s: dirty_pages.or(dirty_mib.map(|m| m * MIB / PAGE_BYTES)),
            dirty_mib_per_s: dirty_mib,
            dirty_locality: match (dirty_pages, dirty_runs) {
                (Some(p), Some(r)) if p > 0.0 => Some(1.0 - r / p),
                _ => None,
            },
            disk_read_bytes_per_s: disk_read,
            disk_write_bytes_per_s: disk_write,
            disk_read_ratio: ratio(disk_read, disk_write),
            disk_ops_per_s: sum([device(Metric::DiskReadOps), device(Metric::DiskWriteOps)]),
            net_tx_bytes_per_s: device(Metric::NetTxBytes),
            net_rx_bytes_per_s: device(Metric::NetRxBytes),
            exits_per_s: exits,
            exit_mix,
            perf: perf_map,
            kvm_stats,
            guest_progress_per_s: get(run, Metric::GuestProgress),
            guest_phase: get(run, Metric::GuestPhase).map(|p| p as u64),
            guest: shim.map(GuestWindow::build),
            sources: rates
                .keys()
                .filter_map(|c| Source::from_code(*c))
                .map(|s| s.label().to_string())
                .collect(),
        }
    }
}

/// Intervals without a sample after which a source's rates are no longer reported.
pub const STALE_INTERVALS: u64 = 3;
/// ... and at least this long, so a shim reporting every few seconds is not dropped between
/// its reports at a short sampling interval.
pub const STALE_AFTER_NS: u64 = 10_000_000_000;

#[derive(Debug, Default)]
struct VmTrack {
    last: BTreeMap<u8, Sample>,
    rates: BTreeMap<u8, Rates>,
    history: VecDeque<Window>,
}

/// Profiles of every VM on the host.
#[derive(Debug)]
pub struct Profiler {
    vms: HashMap<VmId, VmTrack>,
    history_len: usize,
}

impl Profiler {
    /// A profiler keeping `history_len` windows per VM.
    pub fn new(history_len: usize) -> Self {
        Self {
            vms: HashMap::new(),
            history_len: history_len.max(1),
        }
    }

    /// Takes one sample: derives its rates against the previous sample of the same VM and source.
    /// Samples older than the previous one of their source are ignored.
    pub fn ingest(&mut self, sample: Sample) {
        let track = self.vms.entry(sample.vm).or_default();
        let prev = track.last.get(&sample.source);
        if prev.is_some_and(|p| p.ts_ns >= sample.ts_ns) {
            return;
        }
        let rates = Rates::new(
            &sample,
            prev.map(|p| (p, Duration::from_nanos(sample.ts_ns - p.ts_ns))),
        );
        track.rates.insert(sample.source, rates);
        track.last.insert(sample.source, sample);
    }

    /// Closes the current interval of `vm`, appending a window built from the latest rates. A
    /// source that has said nothing for `STALE_INTERVALS` intervals and `STALE_AFTER_NS` (libvirt
    /// restarting, a VMM process gone, a guest's shim stopped) is left out rather than repeated
    /// as if current.
    /// Every sample is stamped with the host's clock, the shim's on arrival.
    pub fn close_window(&mut self, vm: VmId, ts_ns: u64) -> Option<&Window> {
        let track = self.vms.get_mut(&vm)?;
        if let Some(last) = track.history.back().filter(|w| w.ts_ns < ts_ns) {
            let oldest =
                ts_ns.saturating_sub((STALE_INTERVALS * (ts_ns - last.ts_ns)).max(STALE_AFTER_NS));
            track.rates.retain(|_, r| r.ts_ns >= oldest);
        }
        let window = Window::build(ts_ns, &track.rates);
        track.history.push_back(window);
        while track.history.len() > self.history_len {
            track.history.pop_front();
        }
        track.history.back()
    }

    /// The latest window of `vm`.
    pub fn current(&self, vm: VmId) -> Option<&Window> {
        self.vms.get(&vm)?.history.back()
    }

    /// The last `n` windows of `vm`, oldest first.
    pub fn history(&self, vm: VmId, n: usize) -> Vec<Window> {
        self.vms.get(&vm).map_or_else(Vec::new, |t| {
            let skip = t.history.len().saturating_sub(n);
            t.history.iter().skip(skip).cloned().collect()
        })
    }

    /// The newest window of `vm` for which `f` gives a value, and that value.
    pub fn latest<T>(&self, vm: VmId, f: impl FnMut(&Window) -> Option<T>) -> Option<T> {
        self.vms.get(&vm)?.history.iter().rev().find_map(f)
    }

    pub fn vms(&self) -> impl Iterator<Item = VmId> + '_ {
        self.vms.keys().copied()
    }

    pub fn remove(&mut self, vm: VmId) {
        self.vms.remove(&vm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_loop(ts_s: u64, io: u64, hlt: u64, run_ns: u64) -> Sample {
        let mut s = Sample::new(3, Source::MicrovmRunLoop, ts_s * 1_000_000_000);
        s.push(Metric::ExitIo, io)
            .push(Metric::ExitHlt, hlt)
            .push(Metric::VcpuRunNs, run_ns)
            .push(Metric::DiskReadBytes, io * 1000)
            .push(Metric::DiskWriteBytes, 0)
            .push(Metric::MemoryBytes, 64 << 20);
        s
    }

    fn dirty(ts_s: u64, pages: u64, runs: u64) -> Sample {
        let mut s = Sample::new(3, Source::DirtyLog, ts_s * 1_000_000_000);
        s.push(Metric::DirtyPages, pages)
            .push(Metric::DirtyRuns, runs)
            .push(Metric::WorkingSetPages, 2560);
        s
    }

    #[test]
    fn merges_sources_into_a_window() {
        let mut p = Profiler::new(10);
        p.ingest(run_loop(1, 0, 0, 0));
        p.ingest(dirty(1, 0, 0));
        p.ingest(run_loop(2, 300, 100, 500_000_000));
        p.ingest(dirty(2, 1000, 10));
        let w = p.close_window(3, 2_000_000_000).unwrap().clone();
        assert_eq!(w.cpu_vcpus, Some(0.5));
        assert_eq!(w.exits_per_s, Some(400.0));
        assert_eq!(w.exit_mix["exit_io"], 0.75);
        assert_eq!(w.dirty_pages_per_s, Some(1000.0));
        assert_eq!(w.dirty_locality, Some(0.99));
        assert_eq!(w.working_set_mib, Some(10.0));
        assert_eq!(w.disk_read_ratio, Some(1.0));
        assert_eq!(w.memory_mib, Some(64.0));
        assert!(w.perf.is_empty(), "no perf source: no perf figures");
        // An out-of-order sample is ignored.
        p.ingest(run_loop(1, 0, 0, 0));
        assert_eq!(
            p.close_window(3, 3_000_000_000).unwrap().cpu_vcpus,
            Some(0.5)
        );
        assert_eq!(p.history(3, 5).len(), 2);
        assert!(p.current(99).is_none());
        // The run loop's last sample was at 2 s; dirty logging goes on. At 1 s intervals its
        // CPU figure is kept for 10 s (more than three intervals), not for ever.
        for ts in 4..=12 {
            p.ingest(dirty(ts, 1000 * ts, 10));
            let w = p.close_window(3, ts * 1_000_000_000).unwrap();
            assert_eq!(w.cpu_vcpus, Some(0.5), "at {ts} s");
        }
        p.ingest(dirty(13, 13000, 10));
        let w = p.close_window(3, 13_000_000_000).unwrap();
        assert_eq!(w.cpu_vcpus, None);
        assert_eq!(w.dirty_pages_per_s, Some(1000.0));
    }
}
