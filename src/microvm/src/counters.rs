//! Cumulative counters of one microVM, written by its vCPU threads and read by the sampler.

use augur_wire::{Metric, Sample};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Exit reasons the run loop tells apart, each with its wire metric.
pub const EXIT_METRICS: [Metric; 7] = [
    Metric::ExitIo,
    Metric::ExitMmio,
    Metric::ExitHlt,
    Metric::ExitShutdown,
    Metric::ExitInternalError,
    Metric::ExitDirtyRingFull,
    Metric::ExitOther,
];

/// Most distinct network flows remembered per VM; more are summed under one overflow entry.
pub const MAX_FLOWS: usize = 256;
/// The flow key used for traffic beyond [`MAX_FLOWS`].
pub const OVERFLOW_FLOW: (u32, u16) = (u32::MAX, 0);

/// Bytes and packets of one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCount {
    pub bytes: u64,
    pub packets: u64,
}

#[derive(Debug, Default)]
pub struct VmCounters {
    exits: [AtomicU64; EXIT_METRICS.len()],
    pub run_ns: AtomicU64,
    pub disk_read_bytes: AtomicU64,
    pub disk_write_bytes: AtomicU64,
    pub disk_read_ops: AtomicU64,
    pub disk_write_ops: AtomicU64,
    pub net_tx_bytes: AtomicU64,
    pub net_tx_packets: AtomicU64,
    pub net_rx_bytes: AtomicU64,
    pub net_rx_packets: AtomicU64,
    /// Device requests refused because the guest's descriptor was invalid.
    pub bad_requests: AtomicU64,
    flows: Mutex<BTreeMap<(u32, u16), FlowCount>>,
}

impl VmCounters {
    pub fn count_exit(&self, metric: Metric) {
        if let Some(i) = EXIT_METRICS.iter().position(|m| *m == metric) {
            self.exits[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn exits(&self, metric: Metric) -> u64 {
        EXIT_METRICS
            .iter()
            .position(|m| *m == metric)
            .map_or(0, |i| self.exits[i].load(Ordering::Relaxed))
    }

    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Records `bytes` sent to (`dest`, `port`).
    pub fn count_flow(&self, dest: u32, port: u16, bytes: u64) {
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let key = if flows.len() >= MAX_FLOWS && !flows.contains_key(&(dest, port)) {
            OVERFLOW_FLOW
        } else {
            (dest, port)
        };
        let flow = flows.entry(key).or_default();
        flow.bytes += bytes;
        flow.packets += 1;
    }

    /// A copy of the flow table.
    pub fn flows(&self) -> BTreeMap<(u32, u16), FlowCount> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds every run-loop counter to `sample`.
    pub fn fill(&self, sample: &mut Sample) {
        for (i, metric) in EXIT_METRICS.iter().enumerate() {
            sample.push(*metric, self.exits[i].load(Ordering::Relaxed));
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        sample
            .push(Metric::VcpuRunNs, load(&self.run_ns))
            .push(Metric::DiskReadBytes, load(&self.disk_read_bytes))
            .push(Metric::DiskWriteBytes, load(&self.disk_write_bytes))
            .push(Metric::DiskReadOps, load(&self.disk_read_ops))
            .push(Metric::DiskWriteOps, load(&self.disk_write_ops))
            .push(Metric::NetTxBytes, load(&self.net_tx_bytes))
            .push(Metric::NetTxPackets, load(&self.net_tx_packets))
            .push(Metric::NetRxBytes, load(&self.net_rx_bytes))
            .push(Metric::NetRxPackets, load(&self.net_rx_packets));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_table_is_bounded() {
        let c = VmCounters::default();
        for port in 0..(MAX_FLOWS as u16 + 10) {
            c.count_flow(1, port, 100);
        }
        let flows = c.flows();
        assert_eq!(flows.len(), MAX_FLOWS + 1);
        assert_eq!(flows[&OVERFLOW_FLOW].packets, 10);
    }
}
