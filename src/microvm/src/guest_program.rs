//! The guest program: a small x86-64 interpreter of the phase table, assembled from source here at
//! run time (iced-x86's code assembler), so there is no opaque blob in the repository.
//!
//! Register contract, set by the host before the first instruction (`boot::entry_regs`):
//! `r8 = &progress[cpu]`, `r9 = &phase_over[cpu]`, `r10 = &quantum[cpu]`, `r11` = this vCPU's
//! I/O area, `rbp` = this vCPU's working-set area, `r13` = random seed, `r15` = vCPU index.
//! The program keeps `r12` = phase index, `rbx = &phase_table[r12]`, `r14` = per-phase state.
//!
//! Each phase runs as a loop of quanta. After a quantum the guest bumps its progress counter and
//! reports the work it did with `out PACE, eax` (units: iterations, pages or bytes). The host paces
//! the guest there (it sleeps to hold the phase's target rate or load), tunes the quantum size in
//! the mailbox, and sets `phase_over` when the phase's time is up. Time therefore lives in the
//! host, and the guest needs no timer or interrupt.
//!
//! Phase table entry (64 bytes, u64 fields): `kind`, then `a`, `b`, `c`, `d`:
//! - memory: a = working-set pages per vCPU, b = write threshold of 2^32, c = 1 for random order
//! - disk: a = read weight, b = write weight, d = request bytes
//! - net: a = destination (vm id << 16 | port), d = packet bytes

use crate::layout;
use iced_x86::code_asm::*;

/// Port numbers of the microVM's devices.
pub mod ports {
    /// `out`: the guest starts phase `eax`.
    pub const PHASE: u16 = 0x500;
    /// `out`: the guest finished a quantum of `eax` work units.
    pub const PACE: u16 = 0x501;
    /// `out`: submit the disk request whose descriptor is at `eax`.
    pub const DISK: u16 = 0x510;
    /// `out`: send the packet whose descriptor is at `eax`.
    pub const NET: u16 = 0x520;
    /// `out`: the script ended (no repeat).
    pub const DONE: u16 = 0x5ff;
}

/// Phase kind codes in the phase table.
pub mod kind {
    pub const IDLE: u64 = 0;
    pub const COMPUTE: u64 = 1;
    pub const FP_COMPUTE: u64 = 2;
    pub const MEMORY: u64 = 3;
    pub const DISK: u64 = 4;
    pub const NET: u64 = 5;
}

/// Descriptor fields in a vCPU's I/O area.
pub mod desc {
    pub const OP: u64 = 0;
    pub const LEN: u64 = 8;
    pub const BUF: u64 = 16;
    pub const DEST: u64 = 24;
    pub const OP_READ: u64 = 1;
    pub const OP_WRITE: u64 = 2;
    pub const OP_SEND: u64 = 3;
}

const LCG_MUL: u64 = 6_364_136_223_846_793_005;
const LCG_ADD: u64 = 1_442_695_040_888_963_407;

/// Field offsets in a phase table entry.
const KIND: i32 = 0;
const A: i32 = 8;
const B: i32 = 16;
const C: i32 = 24;
const D: i32 = 32;

/// Advances the LCG in r13 and leaves its high 32 bits in rax.
fn next_random(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rax, LCG_MUL)?;
    a.imul_2(r13, rax)?;
    a.mov(rax, LCG_ADD)?;
    a.add(r13, rax)?;
    a.mov(rax, r13)?;
    a.shr(rax, 32u32)
}

/// Assembles the program for loading at [`layout::CODE`].
pub fn assemble() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut phase_start = a.create_label();
    let mut have_phase = a.create_label();
    let mut dispatch = a.create_label();
    let mut finished = a.create_label();
    let mut quantum_end = a.create_label();
    let mut idle = a.create_label();
    let mut compute = a.create_label();
    let mut fp_compute = a.create_label();
    let mut memory = a.create_label();
    let mut disk = a.create_label();
    let mut net = a.create_label();

    a.xor(r12, r12)?;

    // Choose the phase: wrap around when the script repeats, stop otherwise.
    a.set_label(&mut phase_start)?;
    a.mov(rax, qword_ptr(layout::MB_PHASE_COUNT))?;
    a.cmp(r12, rax)?;
    a.jb(have_phase)?;
    a.mov(rax, qword_ptr(layout::MB_REPEAT))?;
    a.test(rax, rax)?;
    a.jz(finished)?;
    a.xor(r12, r12)?;
    a.set_label(&mut have_phase)?;
    a.mov(rbx, r12)?;
    a.shl(rbx, 6u32)?;
    a.add(rbx, layout::PHASE_TABLE as i32)?;
    a.mov(qword_ptr(r9), 0i32)?;
    a.xor(r14, r14)?;
    a.mov(eax, r12d)?;
    a.mov(dx, ports::PHASE as u32)?;
    a.out(dx, eax)?;

    // Run one quantum of the current phase's kind.
    a.set_label(&mut dispatch)?;
    a.mov(rax, qword_ptr(rbx + KIND))?;
    for (code, label) in [
        (kind::IDLE, idle),
        (kind::COMPUTE, compute),
        (kind::FP_COMPUTE, fp_compute),
        (kind::MEMORY, memory),
        (kind::DISK, disk),
        (kind::NET, net),
    ] {
        a.cmp(rax, code as i32)?;
        a.je(label)?;
    }
    a.jmp(idle)?; // an unknown kind idles rather than running wild

    // Idle: halt; the host sleeps for a tick.
    a.set_label(&mut idle)?;
    a.hlt()?;
    a.xor(eax, eax)?;
    a.jmp(quantum_end)?;

    // Integer compute: xorshift64* rounds, `quantum` iterations.
    a.set_label(&mut compute)?;
    a.mov(rcx, qword_ptr(r10))?;
    a.mov(rax, r13)?;
    let mut compute_loop = a.create_label();
    a.set_label(&mut compute_loop)?;
    for (shift, left) in [(13u32, true), (7, false), (17, true)] {
        a.mov(rdx, rax)?;
        if left {
            a.shl(rdx, shift)?;
        } else {
            a.shr(rdx, shift)?;
        }
        a.xor(rax, rdx)?;
    }
    a.imul_3(rax, rax, 0x2545_f491)?;
    a.dec(rcx)?;
    a.jnz(compute_loop)?;
    a.mov(r13, rax)?;
    a.mov(rax, qword_ptr(r10))?;
    a.jmp(quantum_end)?;

    // Floating-point compute: x = sqrt(x * x + 1) style SSE2 recurrences, `quantum` iterations.
    a.set_label(&mut fp_compute)?;
    a.mov(rax, 1.5f64.to_bits())?;
    a.movq(xmm0, rax)?;
    a.mov(rax, 0.999_999f64.to_bits())?;
    a.movq(xmm1, rax)?;
    a.mov(rax, 1.0e-6f64.to_bits())?;
    a.movq(xmm2, rax)?;
    a.mov(rcx, qword_ptr(r10))?;
    let mut fp_loop = a.create_label();
    a.set_label(&mut fp_loop)?;
    a.mulsd(xmm0, xmm1)?;
    a.addsd(xmm0, xmm2)?;
    a.sqrtsd(xmm3, xmm0)?;
    a.addsd(xmm3, xmm2)?;
    a.dec(rcx)?;
    a.jnz(fp_loop)?;
    a.mov(rax, qword_ptr(r10))?;
    a.jmp(quantum_end)?;

    // Memory touch: `quantum` pages, sequential (r14 = next page) or random, write or read.
    a.set_label(&mut memory)?;
    a.mov(rcx, qword_ptr(r10))?;
    let mut mem_loop = a.create_label();
    let mut mem_random = a.create_label();
    let mut mem_addr = a.create_label();
    let mut mem_read = a.create_label();
    let mut mem_next = a.create_label();
    a.set_label(&mut mem_loop)?;
    a.cmp(qword_ptr(rbx + C), 0i32)?;
    a.jne(mem_random)?;
    a.mov(rsi, r14)?;
    a.inc(r14)?;
    a.cmp(r14, qword_ptr(rbx + A))?;
    a.jb(mem_addr)?;
    a.xor(r14, r14)?;
    a.jmp(mem_addr)?;
    a.set_label(&mut mem_random)?;
    next_random(&mut a)?;
    a.xor(edx, edx)?;
    a.div(qword_ptr(rbx + A))?;
    a.mov(rsi, rdx)?;
    a.set_label(&mut mem_addr)?;
    a.shl(rsi, 12u32)?;
    a.add(rsi, rbp)?;
    next_random(&mut a)?;
    a.cmp(rax, qword_ptr(rbx + B))?;
    a.jae(mem_read)?;
    a.add(qword_ptr(rsi), 1i32)?;
    a.jmp(mem_next)?;
    a.set_label(&mut mem_read)?;
    a.mov(rax, qword_ptr(rsi))?;
    a.set_label(&mut mem_next)?;
    a.dec(rcx)?;
    a.jnz(mem_loop)?;
    a.mov(rax, qword_ptr(r10))?;
    a.jmp(quantum_end)?;

    // Disk: one request; reads and writes interleaved in proportion to their weights (r14 is
    // the running balance, as in Bresenham's line algorithm).
    a.set_label(&mut disk)?;
    let mut disk_write = a.create_label();
    let mut disk_submit = a.create_label();
    a.add(r14, qword_ptr(rbx + A))?;
    a.mov(rdx, qword_ptr(rbx + A))?;
    a.add(rdx, qword_ptr(rbx + B))?;
    a.cmp(r14, rdx)?;
    a.jb(disk_write)?;
    a.sub(r14, rdx)?;
    a.mov(qword_ptr(r11 + desc::OP as i32), desc::OP_READ as i32)?;
    a.jmp(disk_submit)?;
    a.set_label(&mut disk_write)?;
    a.mov(qword_ptr(r11 + desc::OP as i32), desc::OP_WRITE as i32)?;
    a.mov(rax, qword_ptr(r8))?;
    a.mov(qword_ptr(r11 + layout::IO_DATA as i32), rax)?;
    a.set_label(&mut disk_submit)?;
    a.mov(rax, qword_ptr(rbx + D))?;
    a.mov(qword_ptr(r11 + desc::LEN as i32), rax)?;
    a.lea(rax, qword_ptr(r11 + layout::IO_DATA as i32))?;
    a.mov(qword_ptr(r11 + desc::BUF as i32), rax)?;
    a.mov(eax, r11d)?;
    a.mov(dx, ports::DISK as u32)?;
    a.out(dx, eax)?;
    a.mov(rax, qword_ptr(rbx + D))?;
    a.jmp(quantum_end)?;

    // Net: one packet to the phase's destination.
    a.set_label(&mut net)?;
    a.mov(qword_ptr(r11 + desc::OP as i32), desc::OP_SEND as i32)?;
    a.mov(rax, qword_ptr(rbx + D))?;
    a.mov(qword_ptr(r11 + desc::LEN as i32), rax)?;
    a.lea(rax, qword_ptr(r11 + layout::IO_DATA as i32))?;
    a.mov(qword_ptr(r11 + desc::BUF as i32), rax)?;
    a.mov(rax, qword_ptr(rbx + A))?;
    a.mov(qword_ptr(r11 + desc::DEST as i32), rax)?;
    a.mov(eax, r11d)?;
    a.mov(dx, ports::NET as u32)?;
    a.out(dx, eax)?;
    a.mov(rax, qword_ptr(rbx + D))?;
    a.jmp(quantum_end)?;

    // End of a quantum: count it, report the units in eax, then continue or move on.
    a.set_label(&mut quantum_end)?;
    a.inc(qword_ptr(r8))?;
    a.mov(dx, ports::PACE as u32)?;
    a.out(dx, eax)?;
    a.cmp(qword_ptr(r9), 0i32)?;
    a.je(dispatch)?;
    a.inc(r12)?;
    a.jmp(phase_start)?;

    a.set_label(&mut finished)?;
    a.mov(dx, ports::DONE as u32)?;
    a.out(dx, al)?;
    a.hlt()?;
    a.jmp(finished)?;

    let code = a.assemble(layout::CODE)?;
    debug_assert!(code.len() as u64 <= layout::CODE_MAX);
    Ok(code)
}

/// A program that runs one SSE2 multiply and reports through the PACE port: the host runs it once
/// to learn whether this hypervisor executes floating point (kvm_pvm's emulator does not).
pub fn assemble_fp_probe() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    a.mov(rax, 2.0f64.to_bits())?;
    a.movq(xmm0, rax)?;
    a.mulsd(xmm0, xmm0)?;
    a.movq(rax, xmm0)?;
    a.shr(rax, 32u32)?;
    a.mov(dx, ports::PACE as u32)?;
    a.out(dx, eax)?;
    a.hlt()?;
    a.assemble(layout::CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_within_the_code_area() {
        let code = assemble().unwrap();
        assert!(!code.is_empty() && code.len() as u64 <= layout::CODE_MAX);
        assert!(!assemble_fp_probe().unwrap().is_empty());
    }
}
