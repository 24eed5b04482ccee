//! Exit reasons from the `kvm` tracepoints, for any VMM's vCPU threads.
//!
//! - `kvm:kvm_exit` fires on every exit to KVM on a VMX/SVM host (never under kvm_pvm); its
//!   `exit_reason` is a VMX basic exit reason or an SVM exit code, told apart by `isa`.
//! - `kvm:kvm_userspace_exit` fires on every exit to the VMM (everywhere); its `reason` is a
//!   `KVM_EXIT_*` code.
//!
//! [`ExitDecoder`] maps raw records of either to the exit metrics of the profile, using offsets
//! from the tracepoint's format file. [`TracepointSource`] counts both tracepoints on vCPU threads
//! and samples their records for the reason mix.

use crate::tracefs::{EventFormat, Field, Tracefs, TracefsError};
use augur_wire::{Metric, Sample, Source, VmId};
use perf_event::events::Tracepoint;
use perf_event::{Builder, Counter, SampleFlag, Sampler};
use std::collections::BTreeMap;
use tracing::debug;

const ISA_VMX: u64 = 1;
const ISA_SVM: u64 = 2;

/// VMX basic exit reason (Intel SDM vol. 3, appendix C) to metric.
fn vmx_reason(reason: u64) -> Metric {
    match reason & 0xffff {
        1 => Metric::ExitExternalInterrupt,
        10 => Metric::ExitCpuid,
        12 => Metric::ExitHlt,
        30 => Metric::ExitIo,
        31 | 32 => Metric::ExitMsr,
        48 => Metric::ExitPageFault,
        49 => Metric::ExitMmio,
        _ => Metric::ExitOther,
    }
}

/// SVM exit code (AMD APM vol. 2, appendix C) to metric.
fn svm_reason(code: u64) -> Metric {
    match code {
        0x060 => Metric::ExitExternalInterrupt,
        0x072 => Metric::ExitCpuid,
        0x078 => Metric::ExitHlt,
        0x07b => Metric::ExitIo,
        0x07c => Metric::ExitMsr,
        0x07f => Metric::ExitShutdown,
        0x400 => Metric::ExitPageFault,
        _ => Metric::ExitOther,
    }
}

/// `KVM_EXIT_*` code (include/uapi/linux/kvm.h) to metric.
fn userspace_reason(reason: u64) -> Metric {
    match reason {
        2 => Metric::ExitIo,
        5 => Metric::ExitHlt,
        6 => Metric::ExitMmio,
        8 => Metric::ExitShutdown,
        17 => Metric::ExitInternalError,
        31 => Metric::ExitDirtyRingFull,
        _ => Metric::ExitOther,
    }
}

/// Decodes raw tracepoint records into exit metrics.
#[derive(Debug, Clone)]
pub enum ExitDecoder {
    KvmExit { reason: Field, isa: Option<Field> },
    UserspaceExit { reason: Field, errno: Option<Field> },
}

impl ExitDecoder {
    /// A decoder for `kvm:kvm_exit` records of this layout.
    pub fn kvm_exit(format: &EventFormat) -> Option<Self> {
        Some(Self::KvmExit {
            reason: format.field("exit_reason")?.clone(),
            isa: format.field("isa").cloned(),
        })
    }

    /// A decoder for `kvm:kvm_userspace_exit` records of this layout.
    pub fn userspace_exit(format: &EventFormat) -> Option<Self> {
        Some(Self::UserspaceExit {
            reason: format.field("reason")?.clone(),
            errno: format.field("errno").cloned(),
        })
    }

    /// The exit metric of one raw record; `None` for a record too short, or a restarted run.
    pub fn decode(&self, raw: &[u8]) -> Option<Metric> {
        match self {
            ExitDecoder::KvmExit { reason, isa } => {
                let code = reason.read_u64(raw)?;
                match isa.as_ref().and_then(|f| f.read_u64(raw)) {
                    Some(ISA_SVM) => Some(svm_reason(code)),
                    Some(ISA_VMX) | None => Some(vmx_reason(code)),
                    Some(_) => Some(Metric::ExitOther),
                }
            }
            ExitDecoder::UserspaceExit { reason, errno } => {
                let errno = errno.as_ref().and_then(|f| f.read_u64(raw)).unwrap_or(0) as u32;
                if errno != 0 {
                    return None; // KVM_RUN returned an error (e.g. -EINTR): no exit reason
                }
                Some(userspace_reason(reason.read_u64(raw)?))
            }
        }
    }
}

/// Per-reason exit counts, cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonCounts(pub BTreeMap<Metric, u64>);

impl ReasonCounts {
    pub fn add_raw(&mut self, decoder: &ExitDecoder, raw: &[u8], weight: u64) -> bool {
        match decoder.decode(raw) {
            Some(metric) => {
                *self.0.entry(metric).or_default() += weight;
                true
            }
            None => false,
        }
    }
}

struct ThreadProbe {
    userspace_count: Option<Counter>,
    exit_count: Option<Counter>,
    samplers: Vec<(Sampler, usize)>,
}

impl std::fmt::Debug for ThreadProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadProbe")
            .field("samplers", &self.samplers.len())
            .finish()
    }
}

/// Counts and samples the `kvm` exit tracepoints on a VM's vCPU threads.
///
/// The reason mix comes from `kvm:kvm_exit` where it fires, else from `kvm:kvm_userspace_exit`;
/// each sampled record stands for `period` exits.
#[derive(Debug)]
pub struct TracepointSource {
    threads: Vec<ThreadProbe>,
    decoders: Vec<ExitDecoder>,
    period: u64,
    reasons: ReasonCounts,
    /// Whether kvm_exit was seen at least once (it never fires under kvm_pvm).
    kvm_exit_fires: bool,
    undecodable: u64,
}

fn open_counter(id: u64, tid: u32) -> Option<Counter> {
    let mut counter = Builder::new(Tracepoint::with_id(id))
        .observe_pid(tid as i32)
        .any_cpu()
        .include_kernel()
        .build()
        .ok()?;
    counter.enable().ok()?;
    Some(counter)
}

fn open_sampler(id: u64, tid: u32, period: u64) -> Option<Sampler> {
    let mut sampler = Builder::new(Tracepoint::with_id(id))
        .observe_pid(tid as i32)
        .any_cpu()
        .include_kernel()
        .sample_period(period)
        .sample(SampleFlag::RAW)
        .build()
        .ok()?
        .sampled(64 * 1024)
        .ok()?;
    sampler.enable().ok()?;
    Some(sampler)
}

impl TracepointSource {
    /// Opens the tracepoints on `tids`, sampling one record in `period`.
    pub fn open(tracefs: &Tracefs, tids: &[u32], period: u64) -> Result<Self, TracefsError> {
        let period = period.max(1);
        let exit_id = tracefs.event_id("kvm", "kvm_exit")?;
        let user_id = tracefs.event_id("kvm", "kvm_userspace_exit")?;
        let exit_decoder = ExitDecoder::kvm_exit(&tracefs.event_format("kvm", "kvm_exit")?);
        let user_decoder =
            ExitDecoder::userspace_exit(&tracefs.event_format("kvm", "kvm_userspace_exit")?);
        let decoders: Vec<ExitDecoder> =
            [exit_decoder, user_decoder].into_iter().flatten().collect();
        let threads = tids
            .iter()
            .map(|&tid| {
                let mut samplers = Vec::new();
                for (index, decoder) in decoders.iter().enumerate() {
                    let id = match decoder {
                        ExitDecoder::KvmExit { .. } => exit_id,
                        ExitDecoder::UserspaceExit { .. } => user_id,
                    };
                    if let Some(s) = open_sampler(id, tid, period) {
                        samplers.push((s, index));
                    }
                }
                ThreadProbe {
                    userspace_count: open_counter(user_id, tid),
                    exit_count: open_counter(exit_id, tid),
                    samplers,
                }
            })
            .collect();
        Ok(Self {
            threads,
            decoders,
            period,
            reasons: ReasonCounts::default(),
            kvm_exit_fires: false,
            undecodable: 0,
        })
    }

    /// Whether `kvm:kvm_exit` has fired on these threads.
    pub fn kvm_exit_fires(&self) -> bool {
        self.kvm_exit_fires
    }

    /// Reads the counters and drains the sampled records.
    pub fn sample(&mut self, vm: VmId, ts_ns: u64) -> Sample {
        let mut sample = Sample::new(vm, Source::Tracepoint, ts_ns);
        let mut user_total = None;
        let mut exit_total = None;
        let mut by_tracepoint: [ReasonCounts; 2] = Default::default();
        for thread in &mut self.threads {
            if let Some(c) = thread.userspace_count.as_mut().and_then(|c| c.read().ok()) {
                *user_total.get_or_insert(0) += c;
            }
            if let Some(c) = thread.exit_count.as_mut().and_then(|c| c.read().ok()) {
                *exit_total.get_or_insert(0) += c;
            }
            for (sampler, index) in &mut thread.samplers {
                let decoder = &self.decoders[*index];
                let slot = usize::from(matches!(decoder, ExitDecoder::UserspaceExit { .. }));
                while let Some(record) = sampler.next_record() {
                    let parsed = record.parse_record();
                    let raw = match &parsed {
                        Ok(perf_event::data::Record::Sample(s)) => s.raw(),
                        _ => None,
                    };
                    match raw {
                        Some(raw) => {
                            if !by_tracepoint[slot].add_raw(decoder, raw, self.period) {
                                self.undecodable += 1;
                            }
                        }
                        None => debug!(vm, "non-sample perf record skipped"),
                    }
                }
            }
        }
        if exit_total.is_some_and(|n| n > 0) {
            self.kvm_exit_fires = true;
        }
        // Prefer kvm_exit (every exit) over kvm_userspace_exit (only exits to the VMM).
        let fresh = if self.kvm_exit_fires {
            &by_tracepoint[0]
        } else {
            &by_tracepoint[1]
        };
        for (metric, n) in &fresh.0 {
            *self.reasons.0.entry(*metric).or_default() += n;
        }
        match user_total {
            Some(n) => sample.push(Metric::KvmUserspaceExits, n),
            None => sample.push_unavailable(Metric::KvmUserspaceExits),
        };
        match exit_total {
            Some(n) => sample.push(Metric::KvmExitTracepoint, n),
            None => sample.push_unavailable(Metric::KvmExitTracepoint),
        };
        for metric in Metric::EXIT_REASONS {
            sample.push(metric, self.reasons.0.get(&metric).copied().unwrap_or(0));
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn recorded() -> Tracefs {
        Tracefs::with_root(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tracefs"))
    }

    fn kvm_exit_record(reason: u32, isa: u32) -> Vec<u8> {
        let mut raw = vec![0u8; 72];
        raw[0..2].copy_from_slice(&103u16.to_le_bytes());
        raw[8..12].copy_from_slice(&reason.to_le_bytes());
        raw[24..28].copy_from_slice(&isa.to_le_bytes());
        raw
    }

    #[test]
    fn decodes_vmx_and_svm_exits_with_the_recorded_layout() {
        let tracefs = recorded();
        assert_eq!(tracefs.event_id("kvm", "kvm_exit").unwrap(), 103);
        let format = tracefs.event_format("kvm", "kvm_exit").unwrap();
        let decoder = ExitDecoder::kvm_exit(&format).unwrap();
        let cases = [
            (30, 1, Metric::ExitIo),
            (12, 1, Metric::ExitHlt),
            (48, 1, Metric::ExitPageFault),
            (49, 1, Metric::ExitMmio),
            (0x8000_001e, 1, Metric::ExitIo), // a failed-entry flag in the high bits
            (0x07b, 2, Metric::ExitIo),
            (0x400, 2, Metric::ExitPageFault),
            (0x078, 2, Metric::ExitHlt),
            (7, 1, Metric::ExitOther),
        ];
        for (reason, isa, want) in cases {
            assert_eq!(
                decoder.decode(&kvm_exit_record(reason, isa)),
                Some(want),
                "{reason:#x}/{isa}"
            );
        }
        assert_eq!(decoder.decode(&[0u8; 10]), None, "short record");
    }

    #[test]
    fn decodes_userspace_exits_and_skips_restarts() {
        let format = recorded()
            .event_format("kvm", "kvm_userspace_exit")
            .unwrap();
        let decoder = ExitDecoder::userspace_exit(&format).unwrap();
        let record = |reason: u32, errno: i32| {
            let mut raw = vec![0u8; 16];
            raw[8..12].copy_from_slice(&reason.to_le_bytes());
            raw[12..16].copy_from_slice(&errno.to_le_bytes());
            raw
        };
        assert_eq!(decoder.decode(&record(2, 0)), Some(Metric::ExitIo));
        assert_eq!(decoder.decode(&record(5, 0)), Some(Metric::ExitHlt));
        assert_eq!(decoder.decode(&record(2, -4)), None);
        let mut counts = ReasonCounts::default();
        assert!(counts.add_raw(&decoder, &record(6, 0), 4));
        assert_eq!(counts.0[&Metric::ExitMmio], 4);
    }
}
