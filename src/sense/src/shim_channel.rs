//! The host side of a guest's shim: a stream of frames from a hostile source.
//!
//! [`ShimDecoder`] validates every frame (size cap, version, checksum, rkyv validation, schema,
//! flow cap), keeps only metrics a shim may report, and holds just the latest sample and flow
//! table: counters are cumulative, so the latest report says everything and nothing queues.
//! [`ShimChannel`] runs one decoder per VM on a thread that connects to the VM's channel socket
//! (QEMU listens on it), reconnects when it goes away, reads at most [`MAX_REPORTS_PER_S`]
//! reports a second (a flooding guest is left waiting on its own full channel) and logs bad
//! frames at most once per [`LOG_EVERY`] per VM. Another VM's channel is another thread with its
//! own bounded state, so one guest cannot starve or crash the others.

use augur_wire::frame::{FrameReader, MAX_PAYLOAD};
use augur_wire::{FlowReport, Metric, Record, Sample, Source, VmId};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Frames read per second before the reader pauses; the shim sends one or two per interval.
pub const MAX_REPORTS_PER_S: u32 = 20;
/// The most readings one shim sample may carry.
pub const MAX_READINGS: usize = 128;
/// At most one log line about a VM's bad frames per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_millis(250);
/// One read's worth: a shim report is about 1 KiB, so a read completes a few at most and the
/// per-second cap holds closely.
const READ_CHUNK: usize = 4096;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What a shim may report: the guest and shim blocks of the vocabulary.
fn shim_metric(code: u16) -> bool {
    Metric::from_code(code).is_some_and(|m| (700..800).contains(&m.code()))
}

/// Counts of what a VM's shim sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShimStats {
    pub connected: bool,
    pub connections: u64,
    pub bytes: u64,
    pub reports: u64,
    pub bad_frames: u64,
    /// Readings dropped because they were not a shim's to report (or over the cap).
    pub foreign_readings: u64,
    /// Times the reader paused because the guest sent too fast.
    pub throttled: u64,
    pub last_error: Option<String>,
}

/// Validates a byte stream from a shim and keeps the latest report.
#[derive(Debug, Default)]
pub struct ShimDecoder {
    reader: FrameReader,
    latest: Option<(Sample, u64)>,
    flows: Option<FlowReport>,
    stats: ShimStats,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl ShimDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes as they came off the channel, at most [`MAX_PAYLOAD`] at a time; returns how
    /// many frames (good or bad) they completed, which is what the reader's rate limit counts:
    /// a guest sending junk fast costs validation as much as one sending reports fast.
    pub fn feed(&mut self, bytes: &[u8], vm_name: &str) -> u32 {
        self.stats.bytes += bytes.len() as u64;
        let mut frames = 0;
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            self.reader.push(chunk);
            loop {
                match self.reader.next_record() {
                    Ok(None) => break,
                    Ok(Some(Record::Sample(sample))) => {
                        self.accept_sample(sample, vm_name);
                    }
                    Ok(Some(Record::Flows(flows))) => self.flows = Some(flows),
                    Err(error) => self.bad(error.to_string(), vm_name),
                }
                frames += 1;
            }
        }
        frames
    }

    fn accept_sample(&mut self, mut sample: Sample, vm_name: &str) {
        if sample.source != Source::Shim.code() {
            self.bad(
                format!("sample claims source {} instead of shim", sample.source),
                vm_name,
            );
            return;
        }
        let before = sample.readings.len();
        sample.readings.retain(|r| shim_metric(r.metric));
        sample.readings.truncate(MAX_READINGS);
        self.stats.foreign_readings += (before - sample.readings.len()) as u64;
        self.stats.reports += 1;
        // The guest's clock is the guest's: rates are taken on the host's.
        self.latest = Some((sample, now_ns()));
    }

    fn bad(&mut self, error: String, vm_name: &str) {
        self.stats.bad_frames += 1;
        let due = self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if due {
            warn!(vm = vm_name, %error, suppressed = self.unlogged, "bad frame from the guest shim");
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.stats.last_error = Some(error);
    }

    /// The latest sample, once: named `vm` and stamped with the host's time of arrival.
    pub fn take(&mut self, vm: VmId) -> Option<Sample> {
        let (mut sample, received_ns) = self.latest.take()?;
        sample.vm = vm;
        sample.ts_ns = received_ns;
        Some(sample)
    }

    pub fn flows(&self) -> Option<&FlowReport> {
        self.flows.as_ref()
    }

    pub fn stats(&self) -> &ShimStats {
        &self.stats
    }

    /// Bytes held for a frame not yet whole (bounded by one frame plus one read).
    pub fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    /// Forgets a partial frame: a new connection starts a new stream.
    fn reset_stream(&mut self) {
        self.reader = FrameReader::new();
    }
}

/// A VM's shim channel: a thread that reads the channel socket into a [`ShimDecoder`].
#[derive(Debug)]
pub struct ShimChannel {
    decoder: Arc<Mutex<ShimDecoder>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

fn lock(d: &Mutex<ShimDecoder>) -> std::sync::MutexGuard<'_, ShimDecoder> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShimChannel {
    /// Starts reading the Unix socket at `path` (a libvirt `<channel type='unix'>` in bind mode,
    /// where QEMU listens), connecting and reconnecting as it comes and goes.
    pub fn connect_unix(vm_name: &str, path: PathBuf) -> std::io::Result<Self> {
        let decoder = Arc::new(Mutex::new(ShimDecoder::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (decoder, stop, path, name) = (
                decoder.clone(),
                stop.clone(),
                path.clone(),
                vm_name.to_string(),
            );
            std::thread::Builder::new()
                .name(format!(
                    "augur-shim-{}",
                    vm_name.chars().take(4).collect::<String>()
                ))
                .spawn(move || read_loop(&name, &path, &decoder, &stop))?
        };
        Ok(Self {
            decoder,
            stop,
            thread: Some(thread),
            path,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The latest report, once, as a sample of `vm`.
    pub fn take(&self, vm: VmId) -> Option<Sample> {
        lock(&self.decoder).take(vm)
    }

    pub fn flows(&self) -> Option<FlowReport> {
        lock(&self.decoder).flows().cloned()
    }

    pub fn stats(&self) -> ShimStats {
        lock(&self.decoder).stats().clone()
    }
}

impl Drop for ShimChannel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_loop(name: &str, path: &std::path::Path, decoder: &Mutex<ShimDecoder>, stop: &AtomicBool) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut warned = false;
    while !stop.load(Ordering::Acquire) {
        let mut stream = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(error) => {
                if !warned {
                    info!(vm = name, path = %path.display(), %error, "shim channel not open yet; retrying");
                    warned = true;
                }
                std::thread::sleep(RECONNECT_PAUSE);
                continue;
            }
        };
        warned = false;
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        {
            let mut d = lock(decoder);
            d.reset_stream();
            d.stats.connected = true;
            d.stats.connections += 1;
        }
        let mut second = Instant::now();
        let mut frames_this_second = 0u32;
        while !stop.load(Ordering::Acquire) {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    frames_this_second += lock(decoder).feed(&buf[..n], name);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => {
                    lock(decoder).stats.last_error = Some(error.to_string());
                    break;
                }
            }
            if second.elapsed() >= Duration::from_secs(1) {
                second = Instant::now();
                frames_this_second = 0;
            } else if frames_this_second >= MAX_REPORTS_PER_S {
                // Leave the rest in the socket: the guest's writes block, not our memory.
                lock(decoder).stats.throttled += 1;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(second.elapsed()));
            }
        }
        lock(decoder).stats.connected = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_wire::frame;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    fn shim_sample(syscalls: u64) -> Sample {
        let mut s = Sample::new(999, Source::Shim, 1);
        s.push(Metric::GuestSyscalls, syscalls)
            .push(Metric::VcpuRunNs, 5) // not a shim's to claim
            .push(Metric::GuestCpus, 2);
        s
    }

    fn framed(sample: &Sample) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_sample(sample, &mut out).unwrap();
        out
    }

    #[test]
    fn keeps_the_latest_report_with_the_hosts_name_and_clock() {
        let mut d = ShimDecoder::new();
        let mut bytes = framed(&shim_sample(10));
        bytes.extend(framed(&shim_sample(20)));
        assert_eq!(d.feed(&bytes, "vm"), 2, "two frames");
        let s = d.take(7).unwrap();
        assert_eq!(s.vm, 7);
        assert!(s.ts_ns > 1, "stamped on arrival");
        assert_eq!(s.get(Metric::GuestSyscalls), Some(Some(20)));
        assert_eq!(s.get(Metric::VcpuRunNs), None, "foreign metrics dropped");
        assert_eq!(d.stats().foreign_readings, 2);
        assert!(d.take(7).is_none(), "taken once");
    }

    #[test]
    fn garbage_oversized_and_foreign_frames_are_counted_and_survived() {
        let mut d = ShimDecoder::new();
        d.feed(b"hello, host: this is not a frame at all", "vm");
        // A header claiming a payload over the cap.
        let mut huge = frame::MAGIC.to_vec();
        huge.extend(frame::FRAME_VERSION.to_le_bytes());
        huge.extend(1u16.to_le_bytes());
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend([0u8; 4]);
        d.feed(&huge, "vm");
        let mut wrong_source = Sample::new(1, Source::MicrovmRunLoop, 1);
        wrong_source.push(Metric::GuestSyscalls, 1);
        d.feed(&framed(&wrong_source), "vm");
        assert!(d.stats().bad_frames >= 3);
        assert!(d.take(1).is_none());
        assert!(d.buffered() <= MAX_PAYLOAD + 64);
        // A good frame after all that still gets through.
        d.feed(&framed(&shim_sample(5)), "vm");
        assert_eq!(d.take(1).unwrap().get(Metric::GuestSyscalls), Some(Some(5)));
    }

    fn wait_for(mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_channel_reconnects_and_a_disconnect_mid_frame_costs_only_that_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let channel = ShimChannel::connect_unix("vm", path.clone()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let whole = framed(&shim_sample(1));
        conn.write_all(&whole).unwrap();
        wait_for(|| channel.stats().reports == 1);
        // Half a frame, then the guest side goes away (QEMU restarts, the VM migrates).
        conn.write_all(&whole[..whole.len() / 2]).unwrap();
        drop(conn);
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&framed(&shim_sample(2))).unwrap();
        wait_for(|| channel.stats().reports == 2);
        let stats = channel.stats();
        assert_eq!(stats.connections, 2);
        assert_eq!(
            channel.take(3).unwrap().get(Metric::GuestSyscalls),
            Some(Some(2))
        );
    }

    #[test]
    fn a_flooding_guest_is_throttled_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let channel = ShimChannel::connect_unix("vm", path.clone()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_write_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let one = framed(&shim_sample(1));
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 200).collect();
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(2) {
            match conn.write(&burst) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let stats = channel.stats();
        let seconds = started.elapsed().as_secs() + 2;
        let per_read = (READ_CHUNK / one.len() + 1) as u64;
        assert!(stats.throttled > 0, "the reader paused: {stats:?}");
        assert!(
            stats.reports <= (u64::from(MAX_REPORTS_PER_S) + per_read) * seconds,
            "at most the allowed rate was read in {seconds} s: {stats:?}"
        );
        assert!(sent > 0);
    }
}
