//! Admin-protocol views of a VM.

use crate::host::Host;
use augur_admin::{ProfileReply, VmSummary};
use augur_microvm::MicroVm;

pub fn summarize(host: &Host, vm: &MicroVm) -> VmSummary {
    let status = vm.status();
    VmSummary {
        id: status.id,
        name: status.name,
        state: status.state.to_string(),
        memory_mib: status.memory_mib,
        vcpus: status.vcpus,
        phase: format!("{} ({})", status.phase_index + 1, status.phase_name),
        progress: status.progress,
        uptime_s: status.uptime.as_secs_f64(),
        dirty_source: status.dirty_source.label().to_string(),
        fp_degraded: status.fp_degraded,
        current: host.current_window(status.id),
    }
}

/// The profile reply: summary, history and notes on what could not be measured.
pub fn profile(host: &Host, vm: &MicroVm, history: usize) -> ProfileReply {
    let summary = summarize(host, vm);
    let caps = host.capabilities();
    let mut notes = Vec::new();
    if !caps.pmu {
        notes.push(
            "no hardware PMU on this host: instructions, cycles, branches and LLC misses are unavailable"
                .to_string(),
        );
    }
    notes.push("fp_ops: no portable perf event for retired FP operations".to_string());
    if !caps.tracefs {
        notes.push("tracefs unavailable: no kvm tracepoint exit mix".to_string());
    } else if !caps.kvm_exit_tracepoint {
        notes.push(
            "kvm:kvm_exit has not fired (software hypervisor); exits to the VMM come from kvm:kvm_userspace_exit"
                .to_string(),
        );
    }
    if summary.fp_degraded {
        notes.push(
            "this hypervisor cannot execute guest SSE: fp_compute phases run integer work"
                .to_string(),
        );
    }
    let flows = vm
        .status()
        .flows
        .into_iter()
        .map(|((dest, port), count)| (dest, port, count.bytes, count.packets))
        .collect();
    ProfileReply {
        history: host.history(summary.id, history),
        vm: summary,
        flows,
        notes,
    }
}
