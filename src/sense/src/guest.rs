//! What the in-guest shim adds to a window: the guest's own view of its syscalls, CPU, memory,
//! disk and network, from the rates of [`Source::Shim`](augur_wire::Source::Shim) samples.

use crate::rates::Rates;
use augur_wire::Metric;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MIB: f64 = 1024.0 * 1024.0;

/// The guest's view of one interval. `None` means the shim could not measure it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestWindow {
    pub syscalls_per_s: Option<f64>,
    /// Share of syscalls by family (read, write, file, memory, process, wait, net, other).
    pub syscall_mix: BTreeMap<String, f64>,
    /// Share of guest CPU time that was busy, waiting for I/O, and stolen by the hypervisor.
    pub cpu_busy: Option<f64>,
    pub cpu_iowait: Option<f64>,
    pub cpu_steal: Option<f64>,
    pub cpus: Option<u64>,
    /// Instructions per second (needs a PMU in the guest).
    pub instructions_per_s: Option<f64>,
    pub page_faults_per_s: Option<f64>,
    pub major_faults_per_s: Option<f64>,
    pub mem_total_mib: Option<f64>,
    pub mem_available_mib: Option<f64>,
    /// The guest kernel's active pages: its own working-set estimate.
    pub active_mib: Option<f64>,
    /// Share of time some task stalled on memory (PSI).
    pub memory_pressure: Option<f64>,
    pub disk_read_bytes_per_s: Option<f64>,
    pub disk_write_bytes_per_s: Option<f64>,
    pub disk_read_ratio: Option<f64>,
    /// Mean request size, KiB.
    pub disk_request_kib: Option<f64>,
    /// Mean time per completed request, ms.
    pub disk_read_latency_ms: Option<f64>,
    pub disk_write_latency_ms: Option<f64>,
    pub net_rx_bytes_per_s: Option<f64>,
    pub net_tx_bytes_per_s: Option<f64>,
    pub flows: Option<u64>,
    pub flow_destinations: Option<u64>,
    /// The shim's own cost: share of one vCPU, resident set in KiB, reports it dropped.
    pub shim_cpu: Option<f64>,
    pub shim_rss_kib: Option<f64>,
    pub shim_dropped: Option<u64>,
}

fn per(part: Option<f64>, whole: Option<f64>) -> Option<f64> {
    let (p, w) = (part?, whole?);
    (w > 0.0).then(|| p / w)
}

impl GuestWindow {
    pub fn build(r: &Rates) -> Self {
        let get = |m: Metric| r.get(m);
        let level = |m: Metric| r.get(m).map(|v| v as u64);

        let total = get(Metric::GuestSyscalls);
        let mut syscall_mix = BTreeMap::new();
        if let Some(total) = total.filter(|t| *t > 0.0) {
            let mut named = 0.0;
            for metric in Metric::GUEST_SYSCALL_FAMILIES {
                if let Some(rate) = get(metric) {
                    named += rate;
                    let family = metric.label().trim_start_matches("guest_sys_");
                    syscall_mix.insert(family.to_string(), (rate / total).min(1.0));
                }
            }
            syscall_mix.insert("other".to_string(), ((total - named) / total).max(0.0));
        }

        let cpu_all = [
            Metric::GuestCpuBusyNs,
            Metric::GuestCpuIdleNs,
            Metric::GuestCpuIowaitNs,
            Metric::GuestCpuStealNs,
        ]
        .into_iter()
        .map(get)
        .sum::<Option<f64>>();

        let read_ops = get(Metric::GuestDiskReadOps);
        let write_ops = get(Metric::GuestDiskWriteOps);
        let read_bytes = get(Metric::GuestDiskReadBytes);
        let write_bytes = get(Metric::GuestDiskWriteBytes);
        let ops = read_ops.zip(write_ops).map(|(a, b)| a + b);
        let bytes = read_bytes.zip(write_bytes).map(|(a, b)| a + b);

        Self {
            syscalls_per_s: total,
            syscall_mix,
            cpu_busy: per(get(Metric::GuestCpuBusyNs), cpu_all),
            cpu_iowait: per(get(Metric::GuestCpuIowaitNs), cpu_all),
            cpu_steal: per(get(Metric::GuestCpuStealNs), cpu_all),
            cpus: level(Metric::GuestCpus),
            instructions_per_s: get(Metric::GuestInstructions),
            page_faults_per_s: get(Metric::GuestPageFaults),
            major_faults_per_s: get(Metric::GuestMajorFaults),
            mem_total_mib: get(Metric::GuestMemTotalBytes).map(|b| b / MIB),
            mem_available_mib: get(Metric::GuestMemAvailableBytes).map(|b| b / MIB),
            active_mib: get(Metric::GuestActiveBytes).map(|b| b / MIB),
            memory_pressure: get(Metric::GuestPsiMemorySomeUs).map(|us| (us / 1e6).min(1.0)),
            disk_read_bytes_per_s: read_bytes,
            disk_write_bytes_per_s: write_bytes,
            disk_read_ratio: per(read_bytes, bytes),
            disk_request_kib: per(bytes, ops).map(|b| b / 1024.0),
            disk_read_latency_ms: per(get(Metric::GuestDiskReadMs), read_ops),
            disk_write_latency_ms: per(get(Metric::GuestDiskWriteMs), write_ops),
            net_rx_bytes_per_s: get(Metric::GuestNetRxBytes),
            net_tx_bytes_per_s: get(Metric::GuestNetTxBytes),
            flows: level(Metric::GuestFlows),
            flow_destinations: level(Metric::GuestFlowDestinations),
            shim_cpu: get(Metric::ShimCpuNs).map(|ns| ns / 1e9),
            shim_rss_kib: get(Metric::ShimRssBytes).map(|b| b / 1024.0),
            shim_dropped: level(Metric::ShimDroppedReports),
        }
    }
}
