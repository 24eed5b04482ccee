//! Augur's own KVM microVMs.
//!
//! A microVM is described by a [`VmSpec`] (TOML): memory, vCPUs and a phase script. The guest is a
//! small x86-64 program assembled from source in [`guest_program`] that interprets the script from
//! a table in guest memory; phases are defined by durations and target rates, which the host's
//! [`pacer`] enforces, so a script means the same on an emulating hypervisor and on VMX/SVM.
//!
//! The host side counts KVM_RUN exits by reason, reads KVM binary stats, and harvests dirty pages
//! (dirty ring where KVM has it, dirty log otherwise); [`MicroVm::sample`] turns all of it into
//! [`augur_wire::Sample`]s of raw cumulative counters.
#![forbid(unsafe_code)]

mod boot;
mod clock;
mod control;
mod counters;
mod devices;
mod dirty;
mod fp_probe;
pub mod guest_program;
pub mod layout;
pub mod migration;
pub mod pacer;
pub mod phase_plan;
pub mod spec;
mod vcpu;
mod vm;

pub use counters::{FlowCount, VmCounters};
pub use devices::{CountingSwitch, NetSwitch};
pub use dirty::{pages_and_runs, DirtyMode};
pub use fp_probe::fp_supported;
pub use migration::{MigrationError, MigrationParams, MigrationReport};
pub use spec::{PhaseKind, SpecError, VmSpec};
pub use vm::{MicroVm, VmError, VmOptions, VmState, VmStatus};

/// Why this host cannot run microVMs, or `None` if it can.
pub fn kvm_unavailable_reason() -> Option<String> {
    match kvm_ioctls::Kvm::new() {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm is not usable: {e}")),
    }
}
