//! `status`: the daemon's health and what this host can sense.

use crate::host::Host;
use augur_admin::{Reply, StatusReply, PROTOCOL_VERSION};

pub fn apply(host: &Host) -> Reply {
    Reply::Status(StatusReply {
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
        uptime_s: host.uptime().as_secs_f64(),
        driver: host.driver_name().to_string(),
        data_dir: host.config.data_dir.display().to_string(),
        sample_interval_ms: host.config.sample_interval_ms,
        vms: host.vm_count(),
        capabilities: host.capabilities(),
        sampling_cpu_ns_per_vm: host.cost.per_vm_sample_ns(),
        ring_lost: host.ring_lost(),
    })
}
