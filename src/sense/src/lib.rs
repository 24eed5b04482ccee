//! Agentless sensing: the sources that read a VM from the host, and the profiler that turns their
//! samples into a behavioural profile.
//!
//! Sources produce [`augur_wire::Sample`]s of raw cumulative counters; [`Rates`] derives per-second
//! rates from two samples of one source; [`Profiler`] merges the rates of every source of a VM into
//! one [`Window`] per sampling interval and keeps a bounded history of them.
//!
//! - [`proc_source`]: a VMM process's `/proc/PID/task/*/stat` and `/proc/PID/io` (any root, so tests
//!   use a fake /proc);
//! - [`perf_source`]: perf events on vCPU threads: software events always, hardware events where a
//!   PMU exists (reported unavailable otherwise);
//! - [`tracefs`] and [`kvm_exit`]: the `kvm` tracepoints, with `kvm:kvm_exit` decoded by reason.
//!
//! The microVM sources (run-loop exits, KVM stats, dirty pages) live with the VMs in augur-microvm.
#![forbid(unsafe_code)]

mod guest;
pub mod kvm_exit;
pub mod perf_source;
pub mod proc_source;
mod profile;
mod rates;
pub mod shim_channel;
pub mod tracefs;

pub use guest::GuestWindow;
pub use profile::{Profiler, Window};
pub use rates::Rates;
