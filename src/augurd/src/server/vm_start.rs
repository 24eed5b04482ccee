//! `vm start`: a microVM from spec text.

use crate::host::Host;
use crate::summary;
use augur_admin::{AdminError, ErrorCode, Reply};
use augur_microvm::VmSpec;

/// Spec text larger than this is refused before parsing.
const MAX_SPEC_BYTES: usize = 64 * 1024;

pub fn apply(host: &Host, spec: &str, origin: Option<&str>) -> Result<Reply, AdminError> {
    let origin = origin.unwrap_or("spec");
    if spec.len() > MAX_SPEC_BYTES {
        return Err(AdminError::new(
            ErrorCode::InvalidSpec,
            format!("{origin}: larger than {MAX_SPEC_BYTES} bytes"),
        ));
    }
    let spec = VmSpec::from_toml(spec)
        .map_err(|e| AdminError::new(ErrorCode::InvalidSpec, format!("{origin}: {e}")))?;
    let id = host.start_vm(spec)?;
    host.with_vm(&id.to_string(), |vm| Reply::VmStarted {
        vm: summary::summarize(host, vm),
    })
}
