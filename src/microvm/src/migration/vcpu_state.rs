//! What a vCPU is, apart from guest memory: its registers, special registers and FPU/SSE state
//! as KVM holds them, and the host's pacing state for it. Encoded field by field, so the format
//! does not depend on struct layout and a peer's bytes are read as numbers, never as memory.
//!
//! Not carried: MSRs beyond EFER, xsave state past SSE, pending events and the local APIC. The
//! guest program sets up no interrupts and uses nothing past SSE, so none of it holds state.

use super::codec::{Decoder, Encoder};
use super::MigrationError;
use crate::pacer::Pacer;
use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use std::time::Duration;

/// One vCPU, paused at an instruction boundary.
#[derive(Debug, Clone)]
pub struct VcpuSnapshot {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
    pub pacer: Pacer,
    /// Guest run time since the pacer last heard from the guest.
    pub ran_since_pace: Duration,
}

fn put_regs(e: &mut Encoder, r: &kvm_regs) {
    for v in [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ] {
        e.u64(v);
    }
}

fn get_regs(d: &mut Decoder<'_>) -> Result<kvm_regs, MigrationError> {
    let mut v = [0u64; 18];
    for slot in &mut v {
        *slot = d.u64()?;
    }
    let [rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags] =
        v;
    Ok(kvm_regs {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rsp,
        rbp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip,
        rflags,
    })
}

fn put_segment(e: &mut Encoder, s: &kvm_segment) {
    e.u64(s.base).u32(s.limit).u16(s.selector);
    for v in [
        s.type_, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable,
    ] {
        e.u8(v);
    }
}

fn get_segment(d: &mut Decoder<'_>) -> Result<kvm_segment, MigrationError> {
    Ok(kvm_segment {
        base: d.u64()?,
        limit: d.u32()?,
        selector: d.u16()?,
        type_: d.u8()?,
        present: d.u8()?,
        dpl: d.u8()?,
        db: d.u8()?,
        s: d.u8()?,
        l: d.u8()?,
        g: d.u8()?,
        avl: d.u8()?,
        unusable: d.u8()?,
        padding: 0,
    })
}

fn put_dtable(e: &mut Encoder, t: &kvm_dtable) {
    e.u64(t.base).u16(t.limit);
}

fn get_dtable(d: &mut Decoder<'_>) -> Result<kvm_dtable, MigrationError> {
    Ok(kvm_dtable {
        base: d.u64()?,
        limit: d.u16()?,
        padding: [0; 3],
    })
}

fn put_sregs(e: &mut Encoder, s: &kvm_sregs) {
    for seg in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt] {
        put_segment(e, seg);
    }
    put_dtable(e, &s.gdt);
    put_dtable(e, &s.idt);
    for v in [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base] {
        e.u64(v);
    }
    for v in s.interrupt_bitmap {
        e.u64(v);
    }
}

fn get_sregs(d: &mut Decoder<'_>) -> Result<kvm_sregs, MigrationError> {
    let mut s = kvm_sregs {
        cs: get_segment(d)?,
        ds: get_segment(d)?,
        es: get_segment(d)?,
        fs: get_segment(d)?,
        gs: get_segment(d)?,
        ss: get_segment(d)?,
        tr: get_segment(d)?,
        ldt: get_segment(d)?,
        gdt: get_dtable(d)?,
        idt: get_dtable(d)?,
        cr0: d.u64()?,
        cr2: d.u64()?,
        cr3: d.u64()?,
        cr4: d.u64()?,
        cr8: d.u64()?,
        efer: d.u64()?,
        apic_base: d.u64()?,
        interrupt_bitmap: [0; 4],
    };
    for slot in &mut s.interrupt_bitmap {
        *slot = d.u64()?;
    }
    Ok(s)
}

fn put_fpu(e: &mut Encoder, f: &kvm_fpu) {
    for reg in &f.fpr {
        e.bytes(reg);
    }
    e.u16(f.fcw)
        .u16(f.fsw)
        .u8(f.ftwx)
        .u16(f.last_opcode)
        .u64(f.last_ip)
        .u64(f.last_dp);
    for reg in &f.xmm {
        e.bytes(reg);
    }
    e.u32(f.mxcsr);
}

fn get_fpu(d: &mut Decoder<'_>) -> Result<kvm_fpu, MigrationError> {
    let mut f = kvm_fpu::default();
    for reg in &mut f.fpr {
        *reg = d.bytes()?;
    }
    f.fcw = d.u16()?;
    f.fsw = d.u16()?;
    f.ftwx = d.u8()?;
    f.last_opcode = d.u16()?;
    f.last_ip = d.u64()?;
    f.last_dp = d.u64()?;
    for reg in &mut f.xmm {
        *reg = d.bytes()?;
    }
    f.mxcsr = d.u32()?;
    Ok(f)
}

impl VcpuSnapshot {
    pub fn encode(&self, e: &mut Encoder) {
        put_regs(e, &self.regs);
        put_sregs(e, &self.sregs);
        put_fpu(e, &self.fpu);
        self.pacer.encode(e);
        e.u64(self.ran_since_pace.as_nanos() as u64);
    }

    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, MigrationError> {
        Ok(Self {
            regs: get_regs(d)?,
            sregs: get_sregs(d)?,
            fpu: get_fpu(d)?,
            pacer: Pacer::decode(d)?,
            ran_since_pace: Duration::from_nanos(d.u64()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_truncation_is_refused() {
        let mut snap = VcpuSnapshot {
            regs: kvm_regs {
                rip: 0x1_0042,
                r15: 3,
                rflags: 2,
                ..Default::default()
            },
            sregs: kvm_sregs::default(),
            fpu: kvm_fpu::default(),
            pacer: Pacer::default(),
            ran_since_pace: Duration::from_micros(1234),
        };
        crate::boot::long_mode_sregs(&mut snap.sregs);
        snap.fpu.xmm[3] = [7; 16];
        snap.fpu.mxcsr = 0x1f80;
        let mut e = Encoder::default();
        snap.encode(&mut e);
        let mut d = Decoder::new(&e.0, "vcpu");
        let back = VcpuSnapshot::decode(&mut d).unwrap();
        d.finish().unwrap();
        assert_eq!(back.regs.rip, 0x1_0042);
        assert_eq!(back.sregs.cr3, snap.sregs.cr3);
        assert_eq!(back.sregs.cs.l, 1);
        assert_eq!(back.fpu.xmm[3], [7; 16]);
        assert_eq!(back.fpu.mxcsr, 0x1f80);
        assert_eq!(back.ran_since_pace, snap.ran_since_pace);
        for cut in [0, 10, e.0.len() - 1] {
            assert!(VcpuSnapshot::decode(&mut Decoder::new(&e.0[..cut], "vcpu")).is_err());
        }
    }
}
