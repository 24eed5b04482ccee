//! Guest physical memory layout of an Augur microVM, and the mailbox the host and guest share.
//!
//! ```text
//! 0x0000_1000  PML4                      0x0000_8000  mailbox (per-vCPU words, below)
//! 0x0000_2000  PDPT                      0x0000_9000  phase table (64 B per phase, 256 max)
//! 0x0000_3000  4 page directories        0x0001_0000  guest program (code)
//! 0x0000_7000  GDT                       0x0002_0000  stacks, 16 KiB per vCPU
//! 0x0010_0000  I/O areas, 128 KiB per vCPU: a 64-byte request descriptor, data from +4 KiB
//! 0x0020_0000  working-set area, split evenly between the vCPUs
//! ```
//! All guest memory is identity-mapped with 2 MiB pages.

pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PD: u64 = 0x3000;
pub const GDT: u64 = 0x7000;
pub const MAILBOX: u64 = 0x8000;
pub const PHASE_TABLE: u64 = 0x9000;
pub const PHASE_ENTRY_LEN: u64 = 64;
pub const CODE: u64 = 0x1_0000;
pub const CODE_MAX: u64 = 0x1_0000;
pub const STACKS: u64 = 0x2_0000;
pub const STACK_LEN: u64 = 0x4000;
pub const IO_BASE: u64 = 0x10_0000;
pub const IO_STRIDE: u64 = 0x2_0000;
/// Offset of the data buffer inside a vCPU's I/O area.
pub const IO_DATA: u64 = 0x1000;
pub const WORK_BASE: u64 = 0x20_0000;
pub const PAGE: u64 = 4096;

// Mailbox words. Per-vCPU arrays hold one u64 per vCPU.
/// u64: number of phases in the table.
pub const MB_PHASE_COUNT: u64 = MAILBOX;
/// u64: 1 if the script restarts after its last phase.
pub const MB_REPEAT: u64 = MAILBOX + 8;
/// [u64; vcpus]: quanta completed (the guest's progress counter).
pub const MB_PROGRESS: u64 = MAILBOX + 0x100;
/// [u64; vcpus]: set to 1 by the host when the current phase's time is up.
pub const MB_PHASE_OVER: u64 = MAILBOX + 0x200;
/// [u64; vcpus]: work units per quantum, tuned by the host.
pub const MB_QUANTUM: u64 = MAILBOX + 0x300;

/// The stack top of vCPU `cpu`.
pub fn stack_top(cpu: u32) -> u64 {
    STACKS + (u64::from(cpu) + 1) * STACK_LEN
}

/// The I/O area of vCPU `cpu`.
pub fn io_area(cpu: u32) -> u64 {
    IO_BASE + u64::from(cpu) * IO_STRIDE
}

/// The first working-set page of vCPU `cpu` given `per_cpu_pages` pages for each vCPU.
pub fn work_area(cpu: u32, per_cpu_pages: u64) -> u64 {
    WORK_BASE + u64::from(cpu) * per_cpu_pages * PAGE
}
