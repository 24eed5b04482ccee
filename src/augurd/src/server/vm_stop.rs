//! `vm stop`: stops a VM and frees its resources.

use crate::host::Host;
use augur_admin::{AdminError, Reply};

pub fn apply(host: &Host, vm: &str) -> Result<Reply, AdminError> {
    let (id, name) = host.stop_vm(vm)?;
    Ok(Reply::VmStopped { id, name })
}
