//! From a spec's phases to what each side needs: the phase table the guest reads, and the pacing
//! target the host holds each vCPU to.

use crate::guest_program::kind;
use crate::layout::PAGE;
use crate::spec::{Pattern, PhaseKind, VmSpec};
use std::time::Duration;

/// What the host paces a vCPU to during a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Halted; the host sleeps a tick per HLT.
    Idle,
    /// Keep this share of the vCPU busy.
    Load(f64),
    /// Hold this many work units (pages or bytes) per second on each vCPU.
    Rate(f64),
}

/// One phase as the host runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    pub name: &'static str,
    pub duration: Duration,
    pub target: Target,
    /// The phase table entry: kind, a, b, c, d and padding.
    pub entry: [u64; 8],
}

/// Builds the plan of every phase for a VM with `per_cpu_pages` working-set pages per vCPU.
/// Where the hypervisor cannot execute SSE, floating-point phases run the integer kernel.
pub fn plan(spec: &VmSpec, fp_supported: bool) -> Vec<PhasePlan> {
    let vcpus = f64::from(spec.vcpus);
    spec.phases
        .iter()
        .map(|phase| {
            let mut entry = [0u64; 8];
            let target = match phase {
                PhaseKind::Idle { .. } => {
                    entry[0] = kind::IDLE;
                    Target::Idle
                }
                PhaseKind::Compute { load, .. } => {
                    entry[0] = kind::COMPUTE;
                    Target::Load(*load)
                }
                PhaseKind::FpCompute { load, .. } => {
                    entry[0] = if fp_supported {
                        kind::FP_COMPUTE
                    } else {
                        kind::COMPUTE
                    };
                    Target::Load(*load)
                }
                PhaseKind::Memory {
                    working_set_mib,
                    touch_mib_per_s,
                    write_fraction,
                    pattern,
                    ..
                } => {
                    entry[0] = kind::MEMORY;
                    entry[1] = (working_set_mib * (1 << 20) / PAGE / u64::from(spec.vcpus)).max(1);
                    entry[2] = (write_fraction * (1u64 << 32) as f64).round() as u64;
                    entry[3] = u64::from(*pattern == Pattern::Random);
                    Target::Rate(touch_mib_per_s * (1 << 20) as f64 / PAGE as f64 / vcpus)
                }
                PhaseKind::Disk {
                    read_bytes_per_s,
                    write_bytes_per_s,
                    request_kib,
                    ..
                } => {
                    entry[0] = kind::DISK;
                    entry[1] = *read_bytes_per_s;
                    entry[2] = *write_bytes_per_s;
                    entry[4] = request_kib * 1024;
                    Target::Rate((read_bytes_per_s + write_bytes_per_s) as f64 / vcpus)
                }
                PhaseKind::Net {
                    tx_bytes_per_s,
                    dest,
                    port,
                    packet_bytes,
                    ..
                } => {
                    entry[0] = kind::NET;
                    entry[1] = (u64::from(*dest) << 16) | u64::from(*port);
                    entry[4] = *packet_bytes;
                    Target::Rate(*tx_bytes_per_s as f64 / vcpus)
                }
            };
            PhasePlan {
                name: phase.name(),
                duration: Duration::from_secs_f64(phase.seconds()),
                target,
                entry,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_phase_is_split_over_vcpus() {
        let spec = VmSpec::from_toml(
            r#"
            name = "m"
            memory_mib = 64
            vcpus = 2
            [[phase]]
            kind = "memory"
            seconds = 1
            working_set_mib = 16
            touch_mib_per_s = 8
            write_fraction = 0.5
            [[phase]]
            kind = "fp_compute"
            seconds = 1
            load = 0.5
            "#,
        )
        .unwrap();
        let plans = plan(&spec, false);
        assert_eq!(plans[0].entry[1], 2048); // 8 MiB of pages per vCPU
        assert_eq!(plans[0].entry[2], 1 << 31);
        assert_eq!(plans[0].target, Target::Rate(1024.0));
        assert_eq!(
            plans[1].entry[0],
            kind::COMPUTE,
            "no SSE: integer kernel instead"
        );
        assert_eq!(plan(&spec, true)[1].entry[0], kind::FP_COMPUTE);
    }
}
