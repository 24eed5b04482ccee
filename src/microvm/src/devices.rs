//! The microVM's port-I/O devices. A device reads a request descriptor the guest wrote into its
//! I/O area, checks it as untrusted input, and moves data between guest memory and the host.
//!
//! - disk: reads and writes a sparse backing file sequentially, wrapping at its end;
//! - net: copies the packet out of the guest and hands it to the host's [`NetSwitch`].

use crate::counters::VmCounters;
use crate::guest_program::desc;
use crate::layout;
use augur_sys::GuestMemory;
use augur_wire::VmId;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Where packets go: a host-wide switch that knows every VM's counters.
pub trait NetSwitch: Send + Sync + std::fmt::Debug {
    /// Delivers `bytes` from VM `from` to (`dest`, `port`).
    fn deliver(&self, from: VmId, dest: u32, port: u16, bytes: u64);
}

/// A switch that only counts: traffic to VMs it does not know is dropped.
#[derive(Debug, Default)]
pub struct CountingSwitch;

impl NetSwitch for CountingSwitch {
    fn deliver(&self, _from: VmId, _dest: u32, _port: u16, _bytes: u64) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub op: u64,
    pub len: usize,
    pub buf: u64,
    pub dest: u64,
}

/// Reads and checks the descriptor at the start of vCPU `cpu`'s I/O area. The guest passes the
/// descriptor's address, which must be exactly that area: a guest cannot point a device at
/// memory of its choosing.
pub fn read_request(mem: &GuestMemory, cpu: u32, desc_gpa: u64, max_len: usize) -> Option<Request> {
    let area = layout::io_area(cpu);
    if desc_gpa != area {
        return None;
    }
    let op = mem.read_u64(area + desc::OP).ok()?;
    let len = usize::try_from(mem.read_u64(area + desc::LEN).ok()?).ok()?;
    let buf = mem.read_u64(area + desc::BUF).ok()?;
    let dest = mem.read_u64(area + desc::DEST).ok()?;
    let data_start = area + layout::IO_DATA;
    let data_end = area + layout::IO_STRIDE;
    let in_area = buf >= data_start && buf.checked_add(len as u64)? <= data_end;
    (len > 0 && len <= max_len && in_area).then_some(Request { op, len, buf, dest })
}

/// The disk: a backing file shared by the VM's vCPUs, with a per-vCPU sequential cursor.
#[derive(Debug)]
pub struct Disk {
    file: Arc<File>,
    size: u64,
    cursor: u64,
    buffer: Vec<u8>,
}

impl Disk {
    pub fn new(file: Arc<File>, size: u64, start: u64) -> Self {
        Self {
            file,
            size,
            cursor: start % size.max(1),
            buffer: Vec::new(),
        }
    }

    /// Carries out one request; false if the request was refused.
    pub fn handle(&mut self, mem: &GuestMemory, req: &Request, counters: &VmCounters) -> bool {
        let len = req.len as u64;
        if len > self.size {
            return false;
        }
        if self.cursor + len > self.size {
            self.cursor = 0;
        }
        self.buffer.resize(req.len, 0);
        let ok = match req.op {
            desc::OP_READ => {
                self.file.read_at(&mut self.buffer, self.cursor).is_ok()
                    && mem.write(req.buf, &self.buffer).is_ok()
            }
            desc::OP_WRITE => {
                mem.read(req.buf, &mut self.buffer).is_ok()
                    && self.file.write_all_at(&self.buffer, self.cursor).is_ok()
            }
            _ => false,
        };
        if ok {
            let (bytes, ops) = if req.op == desc::OP_READ {
                (&counters.disk_read_bytes, &counters.disk_read_ops)
            } else {
                (&counters.disk_write_bytes, &counters.disk_write_ops)
            };
            VmCounters::add(bytes, len);
            VmCounters::add(ops, 1);
            self.cursor += len;
        }
        ok
    }
}

/// The net device of one vCPU.
#[derive(Debug)]
pub struct Net {
    vm: VmId,
    switch: Arc<dyn NetSwitch>,
    buffer: Vec<u8>,
}

impl Net {
    pub fn new(vm: VmId, switch: Arc<dyn NetSwitch>) -> Self {
        Self {
            vm,
            switch,
            buffer: Vec::new(),
        }
    }

    /// Sends one packet; false if the request was refused.
    pub fn handle(&mut self, mem: &GuestMemory, req: &Request, counters: &VmCounters) -> bool {
        if req.op != desc::OP_SEND {
            return false;
        }
        self.buffer.resize(req.len, 0);
        if mem.read(req.buf, &mut self.buffer).is_err() {
            return false;
        }
        let dest = (req.dest >> 16) as u32;
        let port = (req.dest & 0xffff) as u16;
        VmCounters::add(&counters.net_tx_bytes, req.len as u64);
        VmCounters::add(&counters.net_tx_packets, 1);
        counters.count_flow(dest, port, req.len as u64);
        self.switch.deliver(self.vm, dest, port, req.len as u64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_with(op: u64, len: u64, buf: u64) -> GuestMemory {
        let mem = GuestMemory::new(4 << 20).unwrap();
        let area = layout::io_area(0);
        mem.write_u64(area + desc::OP, op).unwrap();
        mem.write_u64(area + desc::LEN, len).unwrap();
        mem.write_u64(area + desc::BUF, buf).unwrap();
        mem
    }

    #[test]
    fn hostile_descriptors_are_refused() {
        let area = layout::io_area(0);
        let data = area + layout::IO_DATA;
        let max = 64 * 1024;
        let ok = mem_with(desc::OP_READ, 4096, data);
        assert!(read_request(&ok, 0, area, max).is_some());
        assert!(
            read_request(&ok, 0, area + 8, max).is_none(),
            "descriptor elsewhere"
        );
        assert!(
            read_request(&ok, 1, area, max).is_none(),
            "another vCPU's area"
        );
        let huge = mem_with(desc::OP_READ, u64::MAX, data);
        assert!(read_request(&huge, 0, area, max).is_none());
        let outside = mem_with(desc::OP_READ, 4096, 0x1000);
        assert!(
            read_request(&outside, 0, area, max).is_none(),
            "buffer outside the I/O area"
        );
        let overflow = mem_with(desc::OP_READ, 4096, u64::MAX - 10);
        assert!(read_request(&overflow, 0, area, max).is_none());
        let empty = mem_with(desc::OP_READ, 0, data);
        assert!(read_request(&empty, 0, area, max).is_none());
    }

    #[test]
    fn disk_moves_bytes_both_ways_and_wraps() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        file.set_len(8192).unwrap();
        let mut disk = Disk::new(file.clone(), 8192, 0);
        let counters = VmCounters::default();
        let area = layout::io_area(0);
        let mem = mem_with(desc::OP_WRITE, 4096, area + layout::IO_DATA);
        mem.write(area + layout::IO_DATA, b"augur").unwrap();
        let req = read_request(&mem, 0, area, 65536).unwrap();
        assert!(disk.handle(&mem, &req, &counters));
        let mut back = [0u8; 5];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"augur");
        for _ in 0..3 {
            assert!(disk.handle(&mem, &req, &counters));
        }
        assert_eq!(
            counters
                .disk_write_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            16384
        );
        let bad = Request { op: 9, ..req };
        assert!(!disk.handle(&mem, &bad, &counters));
    }
}
