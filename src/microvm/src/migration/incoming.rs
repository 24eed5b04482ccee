//! The target side: builds the VM from the stream and starts it when the source says Go.

use super::codec::{self, Decoder, Kind, PAGES_PER_RECORD};
use super::outgoing::send_abort;
use super::vcpu_state::VcpuSnapshot;
use super::{MigrationError, VERSION};
use crate::clock::GuestClock;
use crate::fp_probe::fp_supported;
use crate::layout::PAGE;
use crate::phase_plan;
use crate::spec::VmSpec;
use crate::vm::{MicroVm, Parts, VmOptions};
use augur_wire::VmId;
use kvm_ioctls::Kvm;
use std::io::{Read, Write};
use std::time::Duration;
use tracing::{info, warn};

/// Largest spec a source may send.
const MAX_SPEC_BYTES: usize = 64 * 1024;

/// What the source says it is sending, shown to the caller before anything is built.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingHeader {
    pub spec: VmSpec,
    /// Whether the guest's phases run SSE code.
    pub fp_used: bool,
}

fn read_header(payload: &[u8]) -> Result<IncomingHeader, MigrationError> {
    let mut d = Decoder::new(payload, "header");
    let version = d.u16()?;
    if version != VERSION {
        return Err(MigrationError::Refused(format!(
            "stream version {version}; this host speaks {VERSION}"
        )));
    }
    let fp_used = d.u8()? != 0;
    let memory_bytes = d.u64()?;
    let vcpus = d.u32()?;
    let text = std::str::from_utf8(d.blob(MAX_SPEC_BYTES)?)
        .map_err(|_| MigrationError::Malformed("the spec is not UTF-8".into()))?;
    d.finish()?;
    let spec = VmSpec::from_toml(text).map_err(|e| MigrationError::Refused(e.to_string()))?;
    if memory_bytes != spec.memory_mib << 20 || vcpus != spec.vcpus {
        return Err(MigrationError::Malformed(format!(
            "the header says {memory_bytes} bytes and {vcpus} vCPUs, the spec {} MiB and {} vCPUs",
            spec.memory_mib, spec.vcpus
        )));
    }
    Ok(IncomingHeader { spec, fp_used })
}

static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// Pages of the new VM's memory written so far.
struct PageSet(Vec<u64>);

impl PageSet {
    fn new(pages: u64) -> Self {
        Self(vec![0; pages.div_ceil(64) as usize])
    }
    fn mark(&mut self, first: u64, count: u64) {
        for page in first..first + count {
            self.0[(page / 64) as usize] |= 1 << (page % 64);
        }
    }
    fn get(&self, page: u64) -> bool {
        self.0[(page / 64) as usize] & (1 << (page % 64)) != 0
    }
    fn clear(&mut self, page: u64) {
        self.0[(page / 64) as usize] &= !(1 << (page % 64));
    }
}

/// Memory pages and vCPU states as they arrive.
struct Arrivals {
    snapshots: Vec<Option<VcpuSnapshot>>,
    vm_time: Duration,
}

fn receive<S: Read>(stream: &mut S, parts: &Parts) -> Result<Arrivals, MigrationError> {
    let total_pages = parts.mem.size() as u64 / PAGE;
    let mut arrivals = Arrivals {
        snapshots: vec![None; parts.vcpus.len()],
        vm_time: Duration::ZERO,
    };
    let mut written = PageSet::new(total_pages);
    let mut payload = Vec::new();
    loop {
        match codec::read_record(stream, &mut payload)? {
            kind @ (Kind::Pages | Kind::Zero) => {
                let mut d = Decoder::new(&payload, "pages");
                let first = d.u64()?;
                let count = u64::from(d.u32()?);
                let data = d.rest();
                let in_range = first
                    .checked_add(count)
                    .is_some_and(|end| end <= total_pages);
                if count == 0 || count > PAGES_PER_RECORD as u64 || !in_range {
                    return Err(MigrationError::Malformed(format!(
                        "pages {first}+{count} are outside the VM's {total_pages} pages"
                    )));
                }
                let expected = if kind == Kind::Zero { 0 } else { count * PAGE };
                if data.len() as u64 != expected {
                    return Err(MigrationError::Malformed(format!(
                        "{count} {kind:?} pages came with {} bytes",
                        data.len()
                    )));
                }
                if kind == Kind::Pages {
                    if !written.get(first) {
                        parts.mem.prepare_write(first * PAGE, data.len())?;
                    }
                    parts.mem.write(first * PAGE, data)?;
                    written.mark(first, count);
                } else {
                    // Fresh memory is zero: only a page sent earlier with data needs clearing, once
                    // (a repeated Zero record for the same pages costs nothing more).
                    for page in first..first + count {
                        if written.get(page) {
                            parts.mem.write(page * PAGE, &ZERO_PAGE)?;
                            written.clear(page);
                        }
                    }
                }
            }
            Kind::Vcpu => {
                let mut d = Decoder::new(&payload, "vcpu");
                let cpu = d.u32()? as usize;
                let snapshot = VcpuSnapshot::decode(&mut d)?;
                d.finish()?;
                match arrivals.snapshots.get_mut(cpu) {
                    Some(slot @ None) => *slot = Some(snapshot),
                    Some(Some(_)) => {
                        return Err(MigrationError::Malformed(format!("vCPU {cpu} sent twice")))
                    }
                    None => {
                        return Err(MigrationError::Malformed(format!(
                            "state for vCPU {cpu}, and the VM has {}",
                            parts.vcpus.len()
                        )))
                    }
                }
            }
            Kind::Done => {
                let mut d = Decoder::new(&payload, "done");
                arrivals.vm_time = Duration::from_nanos(d.u64()?);
                d.finish()?;
                parts.dirty.mark_written(&written.0);
                if let Some(cpu) = arrivals.snapshots.iter().position(Option::is_none) {
                    return Err(MigrationError::Malformed(format!(
                        "the stream ended without vCPU {cpu}'s state"
                    )));
                }
                return Ok(arrivals);
            }
            Kind::Abort => return Err(codec::aborted(&payload)),
            other => {
                return Err(MigrationError::Malformed(format!(
                    "unexpected {other:?} record during the transfer"
                )))
            }
        }
    }
}

/// Receives a VM sent by [`MicroVm::migrate_to`] and starts it as VM `id` of this host.
/// `admit` sees what is coming before any memory is allocated and may refuse it. Until the
/// source's Go arrives nothing runs, and any failure discards what was built.
pub fn accept<S: Read + Write>(
    kvm: &Kvm,
    id: VmId,
    stream: &mut S,
    options: &VmOptions,
    admit: impl FnOnce(&IncomingHeader) -> Result<(), String>,
) -> Result<MicroVm, MigrationError> {
    let result = accept_inner(kvm, id, stream, options, admit);
    if let Err(error) = &result {
        warn!(vm = id, %error, "incoming migration failed: nothing was started");
        if !matches!(error, MigrationError::PeerAborted(_)) {
            send_abort(stream, &error.to_string());
        }
    }
    result
}

fn accept_inner<S: Read + Write>(
    kvm: &Kvm,
    id: VmId,
    stream: &mut S,
    options: &VmOptions,
    admit: impl FnOnce(&IncomingHeader) -> Result<(), String>,
) -> Result<MicroVm, MigrationError> {
    let mut payload = Vec::new();
    let header = match codec::read_record(stream, &mut payload)? {
        Kind::Header => read_header(&payload)?,
        other => {
            return Err(MigrationError::Malformed(format!(
                "the stream starts with {other:?}, not a header"
            )))
        }
    };
    if header.fp_used && !fp_supported(kvm) {
        return Err(MigrationError::Refused(
            "the guest runs SSE code this host's hypervisor cannot execute".into(),
        ));
    }
    admit(&header).map_err(MigrationError::Refused)?;
    let IncomingHeader { spec, fp_used } = header;
    let parts = MicroVm::create(kvm, id, &spec, options)?;
    let arrivals = receive(stream, &parts)?;
    let mut resume = Vec::new();
    for ((cpu, vcpu), snapshot) in (0u32..).zip(&parts.vcpus).zip(arrivals.snapshots) {
        let snapshot = snapshot.unwrap_or_else(|| unreachable!("checked on Done"));
        let err = |source| MigrationError::SetState { cpu, source };
        vcpu.set_sregs(&snapshot.sregs).map_err(err)?;
        vcpu.set_regs(&snapshot.regs).map_err(err)?;
        vcpu.set_fpu(&snapshot.fpu).map_err(err)?;
        resume.push(Some((snapshot.pacer, snapshot.ran_since_pace)));
    }
    codec::write_record(stream, Kind::Ready, &[])
        .and_then(|_| stream.flush())
        .map_err(MigrationError::Io)?;
    codec::expect(stream, Kind::Go)?;
    // The guest's clock continues from where it paused: the downtime is not guest time.
    let clock = GuestClock::resumed(arrivals.vm_time);
    let plans = phase_plan::plan(&spec, fp_used).into();
    let vm = MicroVm::launch(id, spec, plans, fp_used, parts, options, clock, resume)?;
    if let Err(error) = codec::write_record(stream, Kind::Started, &[]).and_then(|_| stream.flush())
    {
        // The guest runs here now; the source keeps its copy paused without this word.
        warn!(vm = id, %error, "could not confirm the start to the source");
    }
    info!(vm = id, name = %vm.spec().name, "microVM migrated in");
    Ok(vm)
}
