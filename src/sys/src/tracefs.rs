//! Mounting tracefs, which Debian does not mount at /sys/kernel/tracing by default.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// Mounts tracefs at `target` (which must exist). Needs CAP_SYS_ADMIN.
pub fn mount_tracefs(target: &Path) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let fstype = c"tracefs";
    let source = c"nodev";
    // SAFETY: all three strings are NUL-terminated and outlive the call; no mount data is passed.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
