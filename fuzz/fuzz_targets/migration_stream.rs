//! Anything a peer can send as a microVM migration stream, into the target's side: never a
//! panic, never memory written outside the VM, and nothing started without a whole stream.
//! Half the inputs go as they are; the other half follow a valid header, to reach the page,
//! vCPU-state and hand-over records.
#![no_main]

use augur_microvm::migration::{self, VERSION};
use augur_microvm::{CountingSwitch, VmOptions};
use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, OnceLock};

const SPEC: &str = "name = \"f\"\nmemory_mib = 4\n[[phase]]\nkind = \"idle\"\nseconds = 1\n";

struct Peer {
    input: Cursor<Vec<u8>>,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn header() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&(4u64 << 20).to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&(SPEC.len() as u32).to_le_bytes());
    p.extend_from_slice(SPEC.as_bytes());
    let mut record = vec![1u8];
    record.extend_from_slice(&(p.len() as u32).to_le_bytes());
    record.extend(p);
    record
}

fuzz_target!(|data: &[u8]| {
    static KVM: OnceLock<Option<kvm_ioctls::Kvm>> = OnceLock::new();
    let Some(kvm) = KVM.get_or_init(|| kvm_ioctls::Kvm::new().ok()) else {
        return;
    };
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = if mode & 1 == 1 { header() } else { Vec::new() };
    input.extend_from_slice(rest);
    let dir = std::env::temp_dir();
    let options = VmOptions::new(&dir, Arc::new(CountingSwitch));
    let mut peer = Peer {
        input: Cursor::new(input),
    };
    if let Ok(mut vm) = migration::accept(kvm, 1, &mut peer, &options, |_| Ok(())) {
        // Only a stream with every vCPU's state, Done and Go gets here.
        vm.stop();
    }
});
