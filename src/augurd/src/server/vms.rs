//! `vms` and `profile <vm>`: what the VMs are doing.

use crate::host::Host;
use crate::summary;
use augur_admin::{AdminError, Reply};

/// Windows of history a profile request gets when it does not say.
const DEFAULT_HISTORY: usize = 60;
const MAX_HISTORY: usize = 3600;

pub fn apply_list(host: &Host) -> Reply {
    Reply::Vms {
        vms: host.each_vm(|vm| summary::summarize(host, vm)),
    }
}

pub fn apply_profile(host: &Host, vm: &str, history: Option<usize>) -> Result<Reply, AdminError> {
    let n = history.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    host.with_vm(vm, |vm| Reply::Profile(summary::profile(host, vm, n)))
}
