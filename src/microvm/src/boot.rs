//! Puts a vCPU straight into 64-bit long mode: identity page tables, a flat GDT, control registers.
//! No firmware and no real-mode trampoline: the guest program starts at its first instruction.

use crate::layout::{self, PAGE};
use augur_sys::{GuestMemory, GuestMemoryError};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PDE_HUGE: u64 = 1 << 7;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;

/// Writes the page tables (2 MiB pages covering all of guest memory) and the GDT.
pub fn write_tables(mem: &GuestMemory) -> Result<(), GuestMemoryError> {
    let huge_pages = (mem.size() as u64).div_ceil(2 << 20);
    let directories = huge_pages.div_ceil(512);
    mem.write_u64(layout::PML4, layout::PDPT | PTE_PRESENT | PTE_WRITE)?;
    for d in 0..directories {
        let pd = layout::PD + d * PAGE;
        mem.write_u64(layout::PDPT + d * 8, pd | PTE_PRESENT | PTE_WRITE)?;
    }
    for i in 0..huge_pages {
        let entry = (i << 21) | PTE_PRESENT | PTE_WRITE | PDE_HUGE;
        mem.write_u64(layout::PD + i * 8, entry)?;
    }
    // Null, 64-bit code, data: the guest never reloads segments, but a GDT that matches the
    // hidden segment state keeps an interrupt or a migration restore consistent.
    let gdt: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_u64(layout::GDT + i as u64 * 8, *entry)?;
    }
    Ok(())
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets the special registers for long mode with SSE enabled.
pub fn long_mode_sregs(sregs: &mut kvm_sregs) {
    sregs.cs = segment(CODE_SELECTOR, true);
    let data = segment(DATA_SELECTOR, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.cr3 = layout::PML4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
}

/// The guest program's entry registers for vCPU `cpu` (see `guest_program` for their meaning).
pub fn entry_regs(cpu: u32, per_cpu_pages: u64) -> kvm_regs {
    let c = u64::from(cpu);
    kvm_regs {
        rip: layout::CODE,
        rflags: 0x2,
        rsp: layout::stack_top(cpu),
        rbp: layout::work_area(cpu, per_cpu_pages),
        r8: layout::MB_PROGRESS + c * 8,
        r9: layout::MB_PHASE_OVER + c * 8,
        r10: layout::MB_QUANTUM + c * 8,
        r11: layout::io_area(cpu),
        r13: 0x9e37_79b9_7f4a_7c15 ^ (c + 1),
        r15: c,
        ..Default::default()
    }
}
