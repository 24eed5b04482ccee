//! The closed vocabulary of what a sample can hold. Codes are part of the wire format: never
//! reuse or renumber one; add new ones at the end of their block. Readers skip codes they do not
//! know, so an older reader accepts a newer writer's samples.

macro_rules! codes {
    ($(#[$meta:meta])* $vis:vis enum $name:ident : $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $code:expr, $label:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        $vis enum $name { $($(#[$vmeta])* $variant = $code,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn code(self) -> $repr {
                self as $repr
            }

            pub fn from_code(code: $repr) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The stable snake_case name used in logs, JSON and metrics.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

codes! {
    /// Where a sample's readings came from.
    pub enum Source: u8 {
        /// The microVM vCPU run loop: exits by reason, time in KVM_RUN, device counters.
        MicrovmRunLoop = 1, "microvm_run_loop";
        /// KVM binary statistics (`KVM_GET_STATS_FD`).
        KvmStats = 2, "kvm_stats";
        /// Dirty pages from `KVM_GET_DIRTY_LOG`.
        DirtyLog = 3, "dirty_log";
        /// Dirty pages from the KVM dirty ring.
        DirtyRing = 4, "dirty_ring";
        /// perf events on the vCPU threads.
        Perf = 5, "perf";
        /// The `kvm` tracepoints counted on the vCPU threads.
        Tracepoint = 6, "tracepoint";
        /// The VMM process's /proc files.
        Proc = 7, "proc";
        /// The in-guest shim.
        Shim = 8, "shim";
        /// libvirt's bulk domain stats (`virConnectGetAllDomainStats`) for a QEMU domain.
        Libvirt = 9, "libvirt";
    }
}

codes! {
    /// One counter or gauge. Unless a variant says "gauge", the value is cumulative.
    pub enum Metric: u16 {
        /// Exits to user space for port I/O.
        ExitIo = 1, "exit_io";
        /// Exits for MMIO (or EPT misconfiguration on VMX).
        ExitMmio = 2, "exit_mmio";
        /// Exits for HLT.
        ExitHlt = 3, "exit_hlt";
        /// Exits because the guest shut down (triple fault).
        ExitShutdown = 4, "exit_shutdown";
        /// Exits for KVM internal errors, emulation failures included.
        ExitInternalError = 5, "exit_internal_error";
        /// Exits because a dirty ring filled up.
        ExitDirtyRingFull = 6, "exit_dirty_ring_full";
        /// Exits for external interrupts (tracepoint source).
        ExitExternalInterrupt = 7, "exit_external_interrupt";
        /// Exits for EPT/NPT violations, i.e. guest page faults the host serves.
        ExitPageFault = 8, "exit_page_fault";
        /// Exits for MSR reads and writes.
        ExitMsr = 9, "exit_msr";
        /// Exits for CPUID.
        ExitCpuid = 10, "exit_cpuid";
        /// Exits for any other reason.
        ExitOther = 11, "exit_other";

        /// Nanoseconds the vCPUs spent inside KVM_RUN.
        VcpuRunNs = 100, "vcpu_run_ns";
        /// Work quanta the guest program completed (its progress counter).
        GuestProgress = 101, "guest_progress";
        /// Gauge: configured guest memory in bytes.
        MemoryBytes = 102, "memory_bytes";
        /// Gauge: index of the phase the guest is running.
        GuestPhase = 103, "guest_phase";

        /// Guest pages found dirty, summed over harvests.
        DirtyPages = 200, "dirty_pages";
        /// Contiguous runs of dirty pages, summed over harvests (runs/pages measures locality).
        DirtyRuns = 201, "dirty_runs";
        /// Gauge: distinct pages dirtied over the working-set window.
        WorkingSetPages = 202, "working_set_pages";
        /// Dirty log / ring harvests done.
        DirtyHarvests = 203, "dirty_harvests";

        DiskReadBytes = 300, "disk_read_bytes";
        DiskWriteBytes = 301, "disk_write_bytes";
        DiskReadOps = 302, "disk_read_ops";
        DiskWriteOps = 303, "disk_write_ops";
        NetTxBytes = 310, "net_tx_bytes";
        NetRxBytes = 311, "net_rx_bytes";
        NetTxPackets = 312, "net_tx_packets";
        NetRxPackets = 313, "net_rx_packets";

        /// KVM stat `exits`.
        KvmExits = 400, "kvm_exits";
        /// KVM stat `halt_exits`.
        KvmHaltExits = 401, "kvm_halt_exits";
        /// KVM stat `io_exits`.
        KvmIoExits = 402, "kvm_io_exits";
        /// KVM stat `mmio_exits`.
        KvmMmioExits = 403, "kvm_mmio_exits";
        /// KVM stat `insn_emulation`.
        KvmInsnEmulation = 404, "kvm_insn_emulation";
        /// KVM stat `insn_emulation_fail`.
        KvmInsnEmulationFail = 405, "kvm_insn_emulation_fail";
        /// KVM stat `pf_taken`.
        KvmPageFaults = 406, "kvm_pf_taken";
        /// KVM stat `signal_exits`.
        KvmSignalExits = 407, "kvm_signal_exits";

        /// perf task-clock of the vCPU threads, ns.
        TaskClockNs = 500, "task_clock_ns";
        ContextSwitches = 501, "context_switches";
        PageFaults = 502, "page_faults";
        Instructions = 503, "instructions";
        Cycles = 504, "cycles";
        Branches = 505, "branches";
        BranchMisses = 506, "branch_misses";
        LlcMisses = 507, "llc_misses";
        /// Retired floating-point operations (model-specific raw event; often unavailable).
        FpOps = 508, "fp_ops";
        /// `kvm:kvm_userspace_exit` tracepoint hits.
        KvmUserspaceExits = 520, "kvm_userspace_exits";
        /// `kvm:kvm_exit` tracepoint hits (all reasons).
        KvmExitTracepoint = 521, "kvm_exit_tracepoint";

        /// CPU time of the VMM process (user + system), ns.
        ProcCpuNs = 600, "proc_cpu_ns";
        /// Bytes the VMM read from storage (/proc/PID/io read_bytes).
        ProcReadBytes = 601, "proc_read_bytes";
        /// Bytes the VMM wrote to storage (/proc/PID/io write_bytes).
        ProcWriteBytes = 602, "proc_write_bytes";
        /// Bytes passed to read-like syscalls (/proc/PID/io rchar).
        ProcRchar = 603, "proc_rchar";
        /// Bytes passed to write-like syscalls (/proc/PID/io wchar).
        ProcWchar = 604, "proc_wchar";
        /// Gauge: threads of the VMM process.
        ProcThreads = 605, "proc_threads";
        /// Gauge: resident set of the VMM process, bytes.
        ProcRssBytes = 606, "proc_rss_bytes";

        /// Syscalls entered in the guest, all of them (`raw_syscalls:sys_enter`).
        GuestSyscalls = 700, "guest_syscalls";
        /// read, readv, pread64, preadv.
        GuestSysRead = 701, "guest_sys_read";
        /// write, writev, pwrite64, pwritev.
        GuestSysWrite = 702, "guest_sys_write";
        /// Files and directories: open, openat, close, stat family, lseek, getdents64, fsync.
        GuestSysFile = 703, "guest_sys_file";
        /// Address space: mmap, munmap, mprotect, brk, madvise, mremap.
        GuestSysMemory = 704, "guest_sys_memory";
        /// Processes: clone, clone3, fork, vfork, execve, exit_group, wait4.
        GuestSysProcess = 705, "guest_sys_process";
        /// Waiting: poll, ppoll, select, pselect6, epoll_wait, epoll_pwait, nanosleep, clock_nanosleep, futex.
        GuestSysWait = 706, "guest_sys_wait";
        /// Sockets: socket, connect, accept, accept4, bind, listen, sendto, recvfrom, sendmsg, recvmsg.
        GuestSysNet = 707, "guest_sys_net";

        /// Bytes received on the guest's interfaces other than loopback (/proc/net/dev).
        GuestNetRxBytes = 710, "guest_net_rx_bytes";
        GuestNetTxBytes = 711, "guest_net_tx_bytes";
        GuestNetRxPackets = 712, "guest_net_rx_packets";
        GuestNetTxPackets = 713, "guest_net_tx_packets";
        /// Gauge: the guest's open TCP connections and connected UDP sockets.
        GuestFlows = 714, "guest_flows";
        /// Gauge: distinct remote addresses of those flows (fan-out).
        GuestFlowDestinations = 715, "guest_flow_destinations";

        /// Completed reads on the guest's whole disks (/proc/diskstats).
        GuestDiskReadOps = 720, "guest_disk_read_ops";
        GuestDiskWriteOps = 721, "guest_disk_write_ops";
        GuestDiskReadBytes = 722, "guest_disk_read_bytes";
        GuestDiskWriteBytes = 723, "guest_disk_write_bytes";
        /// Milliseconds spent on reads (latency = this rate / read ops rate).
        GuestDiskReadMs = 724, "guest_disk_read_ms";
        GuestDiskWriteMs = 725, "guest_disk_write_ms";
        /// Gauge: requests in flight.
        GuestDiskInFlight = 726, "guest_disk_in_flight";

        /// Page faults in the guest (/proc/vmstat pgfault).
        GuestPageFaults = 730, "guest_page_faults";
        GuestMajorFaults = 731, "guest_major_faults";
        /// Gauge: MemTotal.
        GuestMemTotalBytes = 732, "guest_mem_total_bytes";
        /// Gauge: MemAvailable.
        GuestMemAvailableBytes = 733, "guest_mem_available_bytes";
        /// Gauge: Active(anon) + Active(file), the guest kernel's working set.
        GuestActiveBytes = 734, "guest_active_bytes";
        /// Microseconds some task stalled on memory (/proc/pressure/memory).
        GuestPsiMemorySomeUs = 735, "guest_psi_memory_some_us";
        GuestPsiMemoryFullUs = 736, "guest_psi_memory_full_us";
        GuestSwapOutPages = 737, "guest_swap_out_pages";

        /// CPU time of all guest CPUs that was not idle or iowait (/proc/stat), ns.
        GuestCpuBusyNs = 740, "guest_cpu_busy_ns";
        GuestCpuIdleNs = 741, "guest_cpu_idle_ns";
        GuestCpuIowaitNs = 742, "guest_cpu_iowait_ns";
        /// Time the hypervisor ran something else while a guest CPU wanted to run, ns.
        GuestCpuStealNs = 743, "guest_cpu_steal_ns";
        /// Instructions retired in the guest (guest PMU; unavailable without one).
        GuestInstructions = 744, "guest_instructions";
        GuestCycles = 745, "guest_cycles";
        /// Gauge: online guest CPUs.
        GuestCpus = 746, "guest_cpus";

        /// Gauge: reports the shim has dropped so far because the host did not read them.
        ShimDroppedReports = 750, "shim_dropped_reports";
        /// Gauge: the shim's resident set, bytes.
        ShimRssBytes = 751, "shim_rss_bytes";
        /// CPU time the shim used, ns.
        ShimCpuNs = 752, "shim_cpu_ns";

        /// libvirt `cpu.time`: CPU time of the whole QEMU process, ns.
        DomainCpuNs = 800, "domain_cpu_ns";
        /// Sum of libvirt `vcpu.N.time`: time the vCPUs ran, ns.
        DomainVcpuNs = 801, "domain_vcpu_ns";
        /// Gauge: libvirt `balloon.current`, bytes the guest may use now.
        DomainBalloonBytes = 802, "domain_balloon_bytes";
        /// Gauge: libvirt `balloon.rss`, the QEMU process's resident set, bytes.
        DomainRssBytes = 803, "domain_rss_bytes";
        /// Gauge: libvirt `dirtyrate.megabytes_per_second` of the last dirty-rate measurement.
        DomainDirtyRateMibS = 804, "domain_dirty_rate_mib_s";
    }
}

impl Metric {
    /// Every exit-reason metric, in display order: the exit mix of a profile is made of these.
    pub const EXIT_REASONS: [Metric; 11] = [
        Metric::ExitIo,
        Metric::ExitMmio,
        Metric::ExitHlt,
        Metric::ExitPageFault,
        Metric::ExitExternalInterrupt,
        Metric::ExitMsr,
        Metric::ExitCpuid,
        Metric::ExitShutdown,
        Metric::ExitInternalError,
        Metric::ExitDirtyRingFull,
        Metric::ExitOther,
    ];

    /// Whether the value is a level rather than a running total.
    /// The guest's syscall families, in display order; [`Metric::GuestSyscalls`] is their total
    /// plus everything no family names.
    pub const GUEST_SYSCALL_FAMILIES: [Metric; 7] = [
        Metric::GuestSysRead,
        Metric::GuestSysWrite,
        Metric::GuestSysFile,
        Metric::GuestSysMemory,
        Metric::GuestSysProcess,
        Metric::GuestSysWait,
        Metric::GuestSysNet,
    ];

    pub fn is_gauge(self) -> bool {
        matches!(
            self,
            Metric::MemoryBytes
                | Metric::GuestPhase
                | Metric::WorkingSetPages
                | Metric::ProcThreads
                | Metric::ProcRssBytes
                | Metric::GuestFlows
                | Metric::GuestFlowDestinations
                | Metric::GuestDiskInFlight
                | Metric::GuestMemTotalBytes
                | Metric::GuestMemAvailableBytes
                | Metric::GuestActiveBytes
                | Metric::GuestCpus
                | Metric::ShimRssBytes
                | Metric::ShimDroppedReports
                | Metric::DomainBalloonBytes
                | Metric::DomainRssBytes
                | Metric::DomainDirtyRateMibS
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in Metric::ALL {
            assert_eq!(Metric::from_code(m.code()), Some(*m));
            assert!(seen.insert(m.code()), "duplicate code {}", m.code());
        }
        for s in Source::ALL {
            assert_eq!(Source::from_code(s.code()), Some(*s));
        }
        assert_eq!(Metric::from_code(0), None);
        assert_eq!(Source::from_code(0), None);
    }
}
