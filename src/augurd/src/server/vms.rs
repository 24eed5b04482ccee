//! `vms` and `profile <vm>`: what the VMs are doing.

use crate::host::Host;
use crate::summary;
use augur_admin::{AdminError, Reply};

/// Windows of history a profile request gets when it does not say.
const DEFAULT_HISTORY: usize = 60;
const MAX_HISTORY: usize = 3600;

pub fn apply_list(host: &Host) -> Reply {
    let mut vms = host.each_vm(|vm| summary::summarize(host, vm));
    if let Some(domains) = host.with_domains(|d| {
        d.iter()
            .map(|domain| summary::summarize_domain(host, domain))
            .collect::<Vec<_>>()
    }) {
        vms.extend(domains);
    }
    Reply::Vms { vms }
}

pub fn apply_profile(host: &Host, vm: &str, history: Option<usize>) -> Result<Reply, AdminError> {
    let n = history.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    let domain = host.with_domains(|d| {
        d.find(vm)
            .map(|domain| summary::profile_domain(host, domain, n))
    });
    match domain.flatten() {
        Some(profile) => Ok(Reply::Profile(profile)),
        None => host.with_vm(vm, |vm| Reply::Profile(summary::profile(host, vm, n))),
    }
}
