//! Admin-protocol views of a VM.

use crate::domains::Domain;
use crate::host::Host;
use augur_admin::{GuestFlowReply, ProfileReply, ShimChannelReply, VmSummary};
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
        driver: "microvm".into(),
    }
}

pub fn summarize_domain(host: &Host, domain: &Domain) -> VmSummary {
    VmSummary {
        id: domain.id,
        name: domain.xml.name.clone(),
        state: domain.state_label().to_string(),
        memory_mib: domain.xml.memory_kib / 1024,
        vcpus: domain.xml.vcpus,
        phase: "-".into(),
        progress: 0,
        uptime_s: domain.seen_since.elapsed().as_secs_f64(),
        dirty_source: "libvirt dirty-rate (QEMU page sampling)".into(),
        fp_degraded: false,
        current: host.current_window(domain.id),
        driver: "libvirt".into(),
    }
}

/// What the host cannot measure, said once for every VM.
fn host_notes(host: &Host) -> Vec<String> {
    let caps = host.capabilities();
    let mut notes = Vec::new();
    if !caps.pmu {
        notes.push(
            "no hardware PMU on this host: instructions, cycles, branches and LLC misses are unavailable"
                .to_string(),
        );
    }
    if !caps.tracefs {
        notes.push("tracefs unavailable: no kvm tracepoint exit mix".to_string());
    } else if !caps.kvm_exit_tracepoint {
        notes.push(
            "kvm:kvm_exit has not fired (software hypervisor); exits to the VMM come from kvm:kvm_userspace_exit"
                .to_string(),
        );
    }
    notes
}

pub fn profile_domain(host: &Host, domain: &Domain, history: usize) -> ProfileReply {
    let vm = summarize_domain(host, domain);
    let mut notes = host_notes(host);
    match (&domain.xml.shim_socket, domain.shim_stats()) {
        (None, _) => notes.push(format!(
            "no shim: the domain has no unix <channel> named {}",
            augur_libvirt::SHIM_CHANNEL
        )),
        (Some(_), Some(s)) if s.reports == 0 => {
            notes.push("the shim channel has carried no report yet".to_string())
        }
        _ => {}
    }
    if domain.qemu.is_none() {
        notes.push("the QEMU process was not found in /proc: no per-thread figures".to_string());
    }
    let guest_flows = domain
        .shim_flows()
        .map(|report| {
            report
                .flows
                .iter()
                .map(|f| GuestFlowReply {
                    proto: f.proto_label().to_string(),
                    address: f.ip().to_string(),
                    port: f.port,
                    port_class: f.port_class().label().to_string(),
                    sockets: f.sockets,
                })
                .collect()
        })
        .unwrap_or_default();
    let shim = domain.shim_stats().map(|s| ShimChannelReply {
        socket: domain
            .xml
            .shim_socket
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        connected: s.connected,
        connections: s.connections,
        reports: s.reports,
        bad_frames: s.bad_frames,
        throttled: s.throttled,
        last_error: s.last_error,
    });
    ProfileReply {
        history: host.history(domain.id, history),
        vm,
        flows: Vec::new(),
        notes,
        guest_flows,
        shim,
    }
}

/// The profile reply: summary, history and notes on what could not be measured.
pub fn profile(host: &Host, vm: &MicroVm, history: usize) -> ProfileReply {
    let summary = summarize(host, vm);
    let mut notes = host_notes(host);
    notes.push("fp_ops: no portable perf event for retired FP operations".to_string());
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
        guest_flows: Vec::new(),
        shim: None,
    }
}
