//! The source side: pre-copy rounds while the guest runs, then stop-and-copy and the hand-over.

use super::codec::{self, Encoder, Kind, PAGES_PER_RECORD};
use super::{MigrationError, VERSION};
use crate::dirty::pages_and_runs;
use crate::layout::{self, PAGE};
use crate::vm::{MicroVm, VmState};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Called once the guest is paused. The stream is the caller's, and so are its timeouts: this
/// is where a caller shortens them, since from here on a slow target keeps the guest paused.
pub type OnPause = std::sync::Arc<dyn Fn() + Send + Sync>;

/// How a migration decides when to stop copying.
#[derive(Clone)]
pub struct MigrationParams {
    /// Stop and copy once the pages left would go in this long at the rate measured so far.
    pub downtime_goal: Duration,
    /// Pre-copy rounds (the first, full one included) before stopping regardless.
    pub max_rounds: u32,
    /// Longest wait for every vCPU to park.
    pub pause_timeout: Duration,
    pub on_pause: Option<OnPause>,
}

impl std::fmt::Debug for MigrationParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationParams")
            .field("downtime_goal", &self.downtime_goal)
            .field("max_rounds", &self.max_rounds)
            .field("pause_timeout", &self.pause_timeout)
            .field("on_pause", &self.on_pause.is_some())
            .finish()
    }
}

impl Default for MigrationParams {
    fn default() -> Self {
        Self {
            downtime_goal: Duration::from_millis(30),
            max_rounds: 30,
            pause_timeout: Duration::from_secs(2),
            on_pause: None,
        }
    }
}

/// One pre-copy round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    pub pages: u64,
    /// Of which all-zero, sent as a count.
    pub zero_pages: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// What a finished migration did.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationReport {
    /// Pre-copy rounds, the full first one included; the stop-and-copy pass is not one.
    pub rounds: Vec<Round>,
    /// Pages sent with the vCPUs paused.
    pub final_pages: u64,
    pub pages: u64,
    /// Of `pages`, those that were all zero and went as a count.
    pub zero_pages: u64,
    /// Pages never backed on this host when the move began: zero without being read, and not
    /// sent at all (nor counted in `pages`).
    pub unbacked_pages: u64,
    /// Every byte put on the stream.
    pub bytes: u64,
    pub total: Duration,
    /// From the pause request to the target's confirmation that the guest runs there.
    pub downtime: Duration,
    /// From the pause request to the last vCPU parked.
    pub pause: Duration,
    /// False when the round limit, not the downtime goal, ended pre-copy.
    pub converged: bool,
    /// Rate the pre-copy rounds went at (bytes per second).
    pub bandwidth: f64,
    /// The guest's progress counter when it paused here.
    pub progress_at_pause: u64,
}

/// Pages the host itself writes into guest memory (the mailbox, device buffers): KVM's dirty
/// log sees only the guest's writes, so these always go in the final pass.
fn host_written_pages(vcpus: u32) -> impl Iterator<Item = u64> {
    let mailbox = layout::MAILBOX / PAGE;
    let io = layout::IO_BASE / PAGE..(layout::io_area(vcpus)) / PAGE;
    std::iter::once(mailbox).chain(io)
}

/// What one pass over a bitmap put on the stream.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    pages: u64,
    /// Pages found all zero and sent as a count, not as data.
    zero_pages: u64,
    bytes: u64,
}

fn is_zero(page: &[u8]) -> bool {
    // A fold over words without an early exit compiles to vector code.
    page.chunks_exact(8).fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes(w.try_into().unwrap_or([1; 8]))
    }) == 0
}

/// Reads pages `first..first+count` and sends them: runs of zero pages as a count (most of an
/// idle guest's memory; the target's fresh memory is zero already), the rest as data.
fn send_run(
    vm: &MicroVm,
    out: &mut impl Write,
    (first, count): (u64, u64),
    buf: &mut Vec<u8>,
    sent: &mut Sent,
) -> Result<(), MigrationError> {
    let len = (count * PAGE) as usize;
    buf.resize(len, 0);
    vm.mem.read(first * PAGE, &mut buf[..len])?;
    let zero: Vec<bool> = buf[..len]
        .chunks_exact(PAGE as usize)
        .map(is_zero)
        .collect();
    let mut at = 0usize;
    while at < zero.len() {
        let same = zero[at..].iter().take_while(|&&z| z == zero[at]).count();
        let mut header = Encoder::default();
        header.u64(first + at as u64).u32(same as u32);
        let data = &buf[at * PAGE as usize..(at + same) * PAGE as usize];
        sent.bytes += if zero[at] {
            sent.zero_pages += same as u64;
            codec::write_record(out, Kind::Zero, &[&header.0])
        } else {
            codec::write_record(out, Kind::Pages, &[&header.0, data])
        }
        .map_err(MigrationError::Io)?;
        at += same;
    }
    sent.pages += count;
    Ok(())
}

/// Sends the pages set in `bitmap` in runs of at most [`PAGES_PER_RECORD`].
fn send_pages(
    vm: &MicroVm,
    out: &mut impl Write,
    bitmap: &[u64],
    buf: &mut Vec<u8>,
) -> Result<Sent, MigrationError> {
    let mut sent = Sent::default();
    let mut run: Option<(u64, u64)> = None; // first page, count
    for (w, &word) in bitmap.iter().enumerate() {
        if word == 0 {
            continue;
        }
        for bit in 0..64 {
            if word & (1 << bit) == 0 {
                continue;
            }
            let page = w as u64 * 64 + bit;
            run = match run {
                Some((first, count))
                    if first + count == page && count < PAGES_PER_RECORD as u64 =>
                {
                    Some((first, count + 1))
                }
                Some(done) => {
                    send_run(vm, out, done, buf, &mut sent)?;
                    Some((page, 1))
                }
                None => Some((page, 1)),
            };
        }
    }
    if let Some(done) = run {
        send_run(vm, out, done, buf, &mut sent)?;
    }
    Ok(sent)
}

/// The reason in an Abort record the peer left in the stream, if there is one.
fn peer_reason(input: &mut impl Read) -> Option<MigrationError> {
    let mut payload = Vec::new();
    for _ in 0..PAGES_PER_RECORD {
        match codec::read_record(input, &mut payload).ok()? {
            Kind::Abort => return Some(codec::aborted(&payload)),
            _ => continue,
        }
    }
    None
}

/// Tells the peer why the migration ends here; it may already be gone.
pub(super) fn send_abort(out: &mut impl Write, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(1024)];
    let _ = codec::write_record(out, Kind::Abort, &[reason]).and_then(|_| out.flush());
}

impl MicroVm {
    /// Migrates this VM over `stream` to a target running [`super::accept`]. On success the VM
    /// here is stopped; on failure it runs on (or, after the hand-over began, stays paused).
    pub fn migrate_to<S: Read + Write>(
        &mut self,
        stream: &mut S,
        params: &MigrationParams,
    ) -> Result<MigrationReport, MigrationError> {
        let state = self.state();
        if state != VmState::Running {
            return Err(MigrationError::NotMigratable(format!("it is {state}")));
        }
        // A vCPU whose script has ended never parks: pausing would wait out its timeout with
        // the guest frozen, and fail.
        if let Some(cpu) = self.ended_vcpu() {
            return Err(MigrationError::NotMigratable(format!(
                "vCPU {cpu} has finished its script while the others run"
            )));
        }
        self.dirty.begin_migration()?;
        let result = self.precopy_and_hand_over(stream, params);
        self.dirty.end_migration();
        match &result {
            Ok(report) => {
                info!(
                    vm = self.id(),
                    rounds = report.rounds.len(),
                    bytes = report.bytes,
                    total_ms = report.total.as_millis() as u64,
                    downtime_ms = report.downtime.as_secs_f64() * 1e3,
                    "microVM migrated out"
                );
                self.stop();
            }
            Err(MigrationError::OutcomeUnknown(why)) => {
                warn!(
                    vm = self.id(),
                    why, "migration outcome unknown: the VM stays paused here"
                );
                self.paused = Some(format!("migration outcome unknown: {why}"));
            }
            Err(error) => {
                send_abort(stream, &error.to_string());
                warn!(vm = self.id(), %error, "migration failed: the VM runs on here");
            }
        }
        // A target that refused closes at once, and the first sign here is often a failed
        // write: its reason may still be waiting to be read.
        if let Err(MigrationError::Io(io)) = result {
            return Err(peer_reason(stream).unwrap_or(MigrationError::Io(io)));
        }
        result
    }

    fn precopy_and_hand_over<S: Read + Write>(
        &mut self,
        stream: &mut S,
        params: &MigrationParams,
    ) -> Result<MigrationReport, MigrationError> {
        let started = Instant::now();
        let spec = self
            .spec()
            .to_toml()
            .map_err(|e| MigrationError::NotMigratable(e.to_string()))?;
        let mut header = Encoder::default();
        header
            .u16(VERSION)
            .u8(u8::from(self.fp_used))
            .u64(self.mem.size() as u64)
            .u32(self.spec().vcpus)
            .blob(spec.as_bytes());
        let mut bytes =
            codec::write_record(stream, Kind::Header, &[&header.0]).map_err(MigrationError::Io)?;

        // The first round reads only pages this host ever backed: the rest are zero, as is the
        // target's fresh memory, so they need neither a read (each would fault in a page) nor
        // a record. Dirty logging began above, so a page the guest writes after this is seen.
        let words = self.mem.size() / PAGE as usize / 64;
        let mut bitmap = self
            .mem
            .populated_pages()
            .unwrap_or_else(|| vec![u64::MAX; words]);
        let unbacked_pages = self.mem.size() as u64 / PAGE - pages_and_runs(&bitmap).0;
        let mut rounds = Vec::new();
        let mut buf = Vec::new();
        let (mut sent_pages, mut zero_pages, mut sending) = (0u64, 0u64, Duration::ZERO);
        let converged = loop {
            let round_started = Instant::now();
            let sent = send_pages(self, stream, &bitmap, &mut buf)?;
            let seconds = round_started.elapsed();
            sending += seconds;
            bytes += sent.bytes;
            sent_pages += sent.pages;
            zero_pages += sent.zero_pages;
            rounds.push(Round {
                pages: sent.pages,
                zero_pages: sent.zero_pages,
                bytes: sent.bytes,
                seconds: seconds.as_secs_f64(),
            });
            bitmap = self.dirty.take_migration()?;
            let rate = bytes as f64 / sending.as_secs_f64().max(1e-6);
            let left = pages_and_runs(&bitmap).0 as f64 * PAGE as f64 / rate;
            if left <= params.downtime_goal.as_secs_f64() {
                break true;
            }
            if rounds.len() >= params.max_rounds as usize {
                break false;
            }
        };
        let bandwidth = bytes as f64 / sending.as_secs_f64().max(1e-6);

        let pause_started = Instant::now();
        let snapshots = self
            .control
            .pause(params.pause_timeout, |cpu| self.kick(cpu))
            .map_err(MigrationError::Pause)?;
        let pause = pause_started.elapsed();
        if let Some(on_pause) = &params.on_pause {
            on_pause();
        }
        let progress_at_pause = self.progress();
        let vm_time = self.clock.now();
        let hand_over = self.stop_and_copy(stream, &mut bitmap, &snapshots, vm_time, &mut buf);
        let final_pages = match hand_over {
            Ok(sent) => {
                bytes += sent.bytes;
                sent_pages += sent.pages;
                zero_pages += sent.zero_pages;
                sent.pages
            }
            Err(error) => {
                self.control.resume();
                return Err(error);
            }
        };
        if let Err(error) = codec::write_record(stream, Kind::Go, &[])
            .and_then(|n| stream.flush().map(|_| n))
            .map_err(MigrationError::Io)
        {
            // Go never left this host whole, so the target cannot have started the guest.
            self.control.resume();
            return Err(error);
        }
        bytes += 5;
        match codec::expect(stream, Kind::Started) {
            Ok(()) => {}
            // The target says, authenticated, that it started nothing: the guest can run on here.
            Err(MigrationError::PeerAborted(why)) => {
                self.control.resume();
                return Err(MigrationError::PeerAborted(why));
            }
            Err(e) => return Err(MigrationError::OutcomeUnknown(e.to_string())),
        }
        Ok(MigrationReport {
            rounds,
            final_pages,
            pages: sent_pages,
            zero_pages,
            unbacked_pages,
            bytes,
            total: started.elapsed(),
            downtime: pause_started.elapsed(),
            pause,
            converged,
            bandwidth,
            progress_at_pause,
        })
    }

    /// With the vCPUs parked: the last pages, the vCPU states, and the target's Ready.
    fn stop_and_copy<S: Read + Write>(
        &self,
        stream: &mut S,
        bitmap: &mut [u64],
        snapshots: &[super::VcpuSnapshot],
        vm_time: Duration,
        buf: &mut Vec<u8>,
    ) -> Result<Sent, MigrationError> {
        let last = self.dirty.take_migration()?;
        bitmap.iter_mut().zip(&last).for_each(|(a, b)| *a |= b);
        for page in host_written_pages(self.spec().vcpus) {
            if let Some(word) = bitmap.get_mut((page / 64) as usize) {
                *word |= 1 << (page % 64);
            }
        }
        let mut sent = send_pages(self, stream, bitmap, buf)?;
        let bytes = &mut sent.bytes;
        for (cpu, snapshot) in (0u32..).zip(snapshots) {
            let mut e = Encoder::default();
            e.u32(cpu);
            snapshot.encode(&mut e);
            *bytes +=
                codec::write_record(stream, Kind::Vcpu, &[&e.0]).map_err(MigrationError::Io)?;
        }
        let mut done = Encoder::default();
        done.u64(vm_time.as_nanos() as u64);
        *bytes +=
            codec::write_record(stream, Kind::Done, &[&done.0]).map_err(MigrationError::Io)?;
        stream.flush().map_err(MigrationError::Io)?;
        codec::expect(stream, Kind::Ready)?;
        Ok(sent)
    }
}
