//! Whether this hypervisor executes SSE2 floating point in a guest. Hardware virtualisation does;
//! the kvm_pvm software hypervisor's instruction emulator does not (it fails with an internal
//! error). Probed once per process with a one-instruction guest.

use crate::boot;
use crate::guest_program;
use crate::layout;
use augur_sys::GuestMemory;
use kvm_ioctls::{Kvm, VcpuExit};
use std::sync::OnceLock;

static FP_SUPPORTED: OnceLock<bool> = OnceLock::new();

/// True if guest SSE2 arithmetic runs here.
pub fn fp_supported(kvm: &Kvm) -> bool {
    *FP_SUPPORTED.get_or_init(|| probe(kvm).unwrap_or(false))
}

fn probe(kvm: &Kvm) -> Option<bool> {
    let vm = kvm.create_vm().ok()?;
    let mem = GuestMemory::new(4 << 20).ok()?;
    mem.register(&vm, 0, false).ok()?;
    boot::write_tables(&mem).ok()?;
    mem.write(layout::CODE, &guest_program::assemble_fp_probe().ok()?)
        .ok()?;
    let mut vcpu = vm.create_vcpu(0).ok()?;
    let mut sregs = vcpu.get_sregs().ok()?;
    boot::long_mode_sregs(&mut sregs);
    vcpu.set_sregs(&sregs).ok()?;
    vcpu.set_regs(&boot::entry_regs(0, 0)).ok()?;
    for _ in 0..4 {
        match vcpu.run() {
            // 2.0 * 2.0 = 4.0, whose high word is 0x4010_0000.
            Ok(VcpuExit::IoOut(port, data)) if port == guest_program::ports::PACE => {
                let mut bytes = [0u8; 4];
                bytes.copy_from_slice(data.get(..4)?);
                return Some(u32::from_le_bytes(bytes) == 0x4010_0000);
            }
            Ok(VcpuExit::InternalError) | Ok(VcpuExit::Shutdown) => return Some(false),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    Some(false)
}
