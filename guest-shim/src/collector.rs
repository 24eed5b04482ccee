//! One interval's report: the guest's counters as a [`Sample`] and its flows as a [`FlowReport`](augur_wire::FlowReport),
//! framed together.

use crate::procfs::{self, cpu, disk, flows, memory, net};
use crate::syscalls::{GuestPmu, SyscallCounters};
use augur_wire::{frame, Metric, Sample, Source};

/// The shim's open counters; what could not be opened is reported unavailable.
#[derive(Debug)]
pub struct Collector {
    syscalls: Option<SyscallCounters>,
    pmu: Option<GuestPmu>,
    reports: u64,
    /// The flow table and the shim's resident set, read every `slow_every` reports: reading
    /// /proc/net/tcp walks every bucket of the kernel's connection hash (milliseconds on a
    /// large host), and neither changes much in a second.
    slow: Option<(augur_wire::FlowReport, Option<u64>)>,
    slow_every: u64,
}

/// Reports between readings of the slow sources, by default.
pub const SLOW_EVERY: u64 = 30;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn put(sample: &mut Sample, metric: Metric, value: Option<u64>) {
    match value {
        Some(v) => sample.push(metric, v),
        None => sample.push_unavailable(metric),
    };
}

impl Collector {
    pub fn open(slow_every: u64) -> Self {
        let syscalls = SyscallCounters::open()
            .map_err(|e| eprintln!("augur-shim: syscall counts unavailable: {e}"))
            .ok();
        let pmu = GuestPmu::open();
        if pmu.is_none() {
            eprintln!("augur-shim: no PMU in this guest: instructions and cycles unavailable");
        }
        Self {
            syscalls,
            pmu,
            reports: 0,
            slow: None,
            slow_every: slow_every.max(1),
        }
    }

    /// Reads every source that is due. `dropped` is the outbox's count of reports it had to
    /// drop. The flow table comes with every `slow_every`th report.
    pub fn collect(&mut self, dropped: u64) -> (Sample, Option<augur_wire::FlowReport>) {
        let ts = now_ns();
        // The host names the VM by the channel a report arrives on; the id here means nothing.
        let mut s = Sample::new(0, Source::Shim, ts);

        match self.syscalls.as_mut().map(SyscallCounters::read) {
            Some((total, families)) => {
                put(&mut s, Metric::GuestSyscalls, total);
                for (metric, value) in families {
                    put(&mut s, metric, value);
                }
            }
            None => {
                s.push_unavailable(Metric::GuestSyscalls);
                for metric in Metric::GUEST_SYSCALL_FAMILIES {
                    s.push_unavailable(metric);
                }
            }
        }

        let stat = procfs::read("/proc/stat").and_then(|t| cpu::parse_stat(&t));
        put(&mut s, Metric::GuestCpuBusyNs, stat.map(|c| c.busy_ns));
        put(&mut s, Metric::GuestCpuIdleNs, stat.map(|c| c.idle_ns));
        put(&mut s, Metric::GuestCpuIowaitNs, stat.map(|c| c.iowait_ns));
        put(&mut s, Metric::GuestCpuStealNs, stat.map(|c| c.steal_ns));
        put(&mut s, Metric::GuestCpus, stat.map(|c| c.cpus));
        let pmu = self.pmu.as_mut().map(GuestPmu::read);
        put(&mut s, Metric::GuestInstructions, pmu.map(|p| p.0));
        put(&mut s, Metric::GuestCycles, pmu.map(|p| p.1));

        let mem = procfs::read("/proc/meminfo").and_then(|t| memory::parse_meminfo(&t));
        put(
            &mut s,
            Metric::GuestMemTotalBytes,
            mem.map(|m| m.total_bytes),
        );
        put(
            &mut s,
            Metric::GuestMemAvailableBytes,
            mem.map(|m| m.available_bytes),
        );
        put(
            &mut s,
            Metric::GuestActiveBytes,
            mem.map(|m| m.active_bytes),
        );
        let vmstat = procfs::read("/proc/vmstat")
            .map(|t| memory::parse_vmstat(&t))
            .unwrap_or_default();
        put(&mut s, Metric::GuestPageFaults, vmstat.page_faults);
        put(&mut s, Metric::GuestMajorFaults, vmstat.major_faults);
        put(&mut s, Metric::GuestSwapOutPages, vmstat.swap_out_pages);
        let (psi_some, psi_full) = procfs::read("/proc/pressure/memory")
            .map(|t| memory::parse_psi(&t))
            .unwrap_or_default();
        put(&mut s, Metric::GuestPsiMemorySomeUs, psi_some);
        put(&mut s, Metric::GuestPsiMemoryFullUs, psi_full);

        let disks =
            procfs::read("/proc/diskstats").map(|t| disk::parse_diskstats(&t, disk::is_whole_disk));
        put(&mut s, Metric::GuestDiskReadOps, disks.map(|d| d.read_ops));
        put(
            &mut s,
            Metric::GuestDiskWriteOps,
            disks.map(|d| d.write_ops),
        );
        put(
            &mut s,
            Metric::GuestDiskReadBytes,
            disks.map(|d| d.read_bytes),
        );
        put(
            &mut s,
            Metric::GuestDiskWriteBytes,
            disks.map(|d| d.write_bytes),
        );
        put(&mut s, Metric::GuestDiskReadMs, disks.map(|d| d.read_ms));
        put(&mut s, Metric::GuestDiskWriteMs, disks.map(|d| d.write_ms));
        put(
            &mut s,
            Metric::GuestDiskInFlight,
            disks.map(|d| d.in_flight),
        );

        let netdev = procfs::read("/proc/net/dev").map(|t| net::parse_net_dev(&t));
        put(&mut s, Metric::GuestNetRxBytes, netdev.map(|n| n.rx_bytes));
        put(&mut s, Metric::GuestNetTxBytes, netdev.map(|n| n.tx_bytes));
        put(
            &mut s,
            Metric::GuestNetRxPackets,
            netdev.map(|n| n.rx_packets),
        );
        put(
            &mut s,
            Metric::GuestNetTxPackets,
            netdev.map(|n| n.tx_packets),
        );
        let fresh = self.slow.is_none() || self.reports.is_multiple_of(self.slow_every);
        self.reports += 1;
        if fresh {
            // smaps_rollup walks the page tables; VmRSS in status lags behind by up to 64
            // faults per thread (split RSS counting), which for a process this small is most of it.
            let rss = procfs::read("/proc/self/smaps_rollup")
                .and_then(|t| procfs::field(&t, "Rss"))
                .or_else(|| {
                    procfs::read("/proc/self/status").and_then(|t| procfs::field(&t, "VmRSS"))
                })
                .map(|kib| kib * 1024);
            self.slow = Some((flows::read(ts), rss));
        }
        let (flows, own_rss) = self.slow.clone().unwrap_or_else(|| (flows::read(ts), None));
        let destinations: std::collections::HashSet<[u8; 16]> =
            flows.flows.iter().map(|f| f.addr).collect();
        let sockets: u64 = flows.flows.iter().map(|f| u64::from(f.sockets)).sum();
        s.push(Metric::GuestFlows, sockets);
        s.push(Metric::GuestFlowDestinations, destinations.len() as u64);

        s.push(Metric::ShimDroppedReports, dropped);
        put(&mut s, Metric::ShimRssBytes, own_rss);
        let own_cpu = procfs::read("/proc/self/stat").and_then(|t| cpu::parse_self_cpu_ns(&t));
        put(&mut s, Metric::ShimCpuNs, own_cpu);
        (s, fresh.then_some(flows))
    }

    /// One report, framed: the sample, then the flows when they were read.
    pub fn frame(
        sample: &Sample,
        flows: Option<&augur_wire::FlowReport>,
    ) -> Result<Vec<u8>, frame::FrameError> {
        let mut out = Vec::with_capacity(2048);
        frame::encode_sample(sample, &mut out)?;
        if let Some(flows) = flows {
            frame::encode_flows(flows, &mut out)?;
        }
        Ok(out)
    }
}
