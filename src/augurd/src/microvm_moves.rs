//! Moving Augur's microVMs between augurd hosts: the listener that takes them in, and the
//! sending side the orchestrator calls once a peer has granted a reservation.
//!
//! The stream is the mesh's [`SealedStream`], opened for one lease: a target takes a VM only
//! against a live reservation for that VM's name and size, so a peer cannot push a VM nobody
//! negotiated, and a host without the mesh key is dropped in the handshake. A connection takes
//! one of the few incoming slots (and the transfer's long deadline) only once its first
//! authenticated record, the VM's header, is admitted; until then it has `ADMIT_DEADLINE`, so
//! peers without the key cannot hold the slots of real moves. While a VM arrives,
//! its reservation holds the room past its lease; once the VM runs here, this host commits the
//! reservation itself (the source's commit then finds it done), and a failed stream leaves the
//! lease as it was.

use crate::host::Host;
use crate::lock;
use augur_mesh::{LeaseId, MeshKey, Node, SealedStream};
use augur_microvm::{MigrationError, MigrationParams};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Incoming moves at once; more are turned away (each holds a VM's memory while it arrives).
const MAX_INCOMING: usize = 2;
/// Connections not yet admitted (handshake, then the first authenticated record) at once.
const MAX_PENDING: usize = 16;
/// A stalled peer is given up on after this long without a byte.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection has this long to authenticate and send a VM's header that its reservation
/// admits: only then does it take one of the incoming slots and get the transfer's deadline.
/// A replayed handshake gets this far, but no further without the session keys.
const ADMIT_DEADLINE: Duration = Duration::from_secs(5);
/// The longest a whole incoming move may take, however steadily its bytes trickle in.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How long a target may take, once the source's guest is paused, to confirm it has
/// everything: the guest stays paused meanwhile.
const PAUSED_DEADLINE: Duration = Duration::from_secs(5);

/// A connection whose every read and write fails once `until` has passed. The deadline is
/// shared so that it can be moved while the stream is in use (when the guest pauses).
#[derive(Debug)]
struct Deadline {
    conn: TcpStream,
    until: Arc<Mutex<Instant>>,
}

impl Deadline {
    fn new(conn: TcpStream, until: Instant) -> Self {
        Self {
            conn,
            until: Arc::new(Mutex::new(until)),
        }
    }

    fn left(&self) -> std::io::Result<Duration> {
        let until = *lock(&self.until);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer took too long",
            ));
        }
        Ok(left.min(STREAM_TIMEOUT))
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.conn.set_read_timeout(Some(self.left()?))?;
        self.conn.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.conn.set_write_timeout(Some(self.left()?))?;
        self.conn.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush()
    }
}

/// No delay for the small records; and the connection fails once data it sent has gone
/// unacknowledged for `STREAM_TIMEOUT`. A send timeout alone is not enough across a partition:
/// each blocked write that got part of its buffer into the kernel returns that part and the
/// next waits again, so a stalled stream took three timeouts and more to give up.
fn tune(conn: &TcpStream) {
    let _ = conn.set_nodelay(true);
    if let Err(error) = socket2::SockRef::from(conn).set_tcp_user_timeout(Some(STREAM_TIMEOUT)) {
        warn!(%error, "TCP_USER_TIMEOUT not set: a partition is noticed later");
    }
}

fn purpose(lease: LeaseId) -> String {
    format!("microvm lease {lease}")
}

/// What a finished move reports, in the shape the orchestrator records.
#[derive(Debug, Clone, Default)]
pub struct MoveOutcome {
    pub ok: bool,
    pub error: Option<String>,
    pub total_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub bytes: Option<u64>,
    pub running_on_source: bool,
}

/// One of a bounded number of places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds the microVM listener and serves it on a thread of its own; returns the bound address.
pub fn listen(host: &Arc<Host>, node: &Arc<Node>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    // Polled, so the thread ends with the daemon instead of blocking in accept forever.
    listener.set_nonblocking(true)?;
    let (host, node) = (Arc::downgrade(host), node.clone());
    let (pending, arriving) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let claimed: Arc<Mutex<HashSet<LeaseId>>> = Arc::default();
    std::thread::Builder::new()
        .name("microvm-in".into())
        .spawn(move || loop {
            let Some(host) = host.upgrade().filter(|h| !h.stopping()) else {
                return;
            };
            let conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drop(host);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(error) => {
                    warn!(%error, "microVM listener: accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let _ = conn.set_nonblocking(false);
            let Some(slot) = Slot::take(&pending, MAX_PENDING) else {
                warn!(peer = ?conn.peer_addr().ok(), "incoming microVM connection refused: {MAX_PENDING} are authenticating already");
                continue;
            };
            let (node, arriving, claimed) = (node.clone(), arriving.clone(), claimed.clone());
            let spawned = std::thread::Builder::new()
                .name("microvm-recv".into())
                .spawn(move || receive(&host, &node, &claimed, &arriving, conn, slot));
            if spawned.is_err() {
                warn!("no thread for an incoming microVM");
            }
        })?;
    Ok(bound)
}

/// Leases with a stream arriving under them: one stream per lease.
type Claimed = Mutex<HashSet<LeaseId>>;

fn receive(
    host: &Host,
    node: &Node,
    claimed: &Claimed,
    arriving: &Arc<AtomicUsize>,
    conn: TcpStream,
    pending: Slot,
) {
    let peer = conn.peer_addr().ok();
    let started = Instant::now();
    tune(&conn);
    let conn = Deadline::new(conn, started + ADMIT_DEADLINE);
    let deadline = conn.until.clone();
    let (mut stream, purpose_bytes) = match SealedStream::accept(conn, node.key()) {
        Ok(accepted) => accepted,
        Err(error) => {
            node.auth_failures.fetch_add(1, Ordering::Relaxed);
            warn!(?peer, %error, "microVM stream refused");
            return;
        }
    };
    let text = String::from_utf8_lossy(&purpose_bytes).into_owned();
    let lease: Option<LeaseId> = text
        .strip_prefix("microvm lease ")
        .and_then(|l| l.parse().ok());
    // The lease's own expiry while the VM arrives under it, to go back to, and its source.
    let mut lease_expiry = None;
    let mut owner = None;
    let mut arrival: Option<Slot> = None;
    // Whether this stream claimed its lease (a second stream under the same lease does not).
    let mut claimed_here = false;
    let admit = |h: &augur_microvm::migration::IncomingHeader| {
        let lease = lease.ok_or_else(|| format!("{text:?} names no lease"))?;
        let mut ledger = lock(&node.ledger);
        let now = Instant::now();
        let held = ledger
            .reservations(now)
            .into_iter()
            .find(|r| r.lease == lease);
        match held {
            None => Err(format!("no live reservation {lease} here")),
            Some(r) if r.offer.vm != h.spec.name => Err(format!(
                "reservation {lease} is for {:?}, not {:?}",
                r.offer.vm, h.spec.name
            )),
            Some(r) if r.offer.memory_mib < h.spec.memory_mib => Err(format!(
                "reservation {lease} holds {} MiB, the VM has {} MiB",
                r.offer.memory_mib, h.spec.memory_mib
            )),
            Some(r) if r.offer.vcpus < h.spec.vcpus => Err(format!(
                "reservation {lease} holds {} vCPUs, the VM has {}",
                r.offer.vcpus, h.spec.vcpus
            )),
            Some(_) if !lock(claimed).insert(lease) => Err(format!(
                "a stream already arrives under reservation {lease}"
            )),
            Some(r) => {
                owner = Some(r.source.clone());
                let Some(slot) = Slot::take(arriving, MAX_INCOMING) else {
                    lock(claimed).remove(&lease);
                    return Err(format!("{MAX_INCOMING} moves are arriving here already"));
                };
                arrival = Some(slot);
                claimed_here = true;
                drop(pending);
                *lock(&deadline) = started + TRANSFER_DEADLINE;
                // The room stays taken while the VM arrives, even past the lease: freed
                // early, it could be granted to another source while this VM starts here.
                let held = started + TRANSFER_DEADLINE;
                lease_expiry = ledger.set_expiry(lease, held, now);
                Ok(())
            }
        }
    };
    let result = host.receive_vm(&mut stream, admit);
    if let (Some(lease), Some(expiry), Some(owner)) = (lease, lease_expiry, &owner) {
        let mut ledger = lock(&node.ledger);
        let now = Instant::now();
        match result {
            // The VM runs here: its room is this host's load from now on, whether or not the
            // source's own commit ever arrives (that one then finds it done).
            Ok(_) => {
                if let Err(error) = ledger.commit(lease, owner, now) {
                    warn!(lease, %error, "an arrived VM's reservation could not be committed");
                }
            }
            // A failed stream leaves the lease as it was, for the source to release or to lapse.
            Err(_) => {
                ledger.set_expiry(lease, expiry, now);
            }
        }
    }
    if let (Some(lease), true) = (lease, claimed_here) {
        lock(claimed).remove(&lease);
    }
    drop(arrival);
    match result {
        Ok(id) => {
            info!(
                ?peer,
                vm = id,
                lease,
                ms = started.elapsed().as_millis() as u64,
                "microVM arrived"
            );
            host.record_event(
                "migration-in",
                Some(id),
                serde_json::json!({"peer": peer.map(|p| p.to_string()), "lease": lease}),
            );
        }
        Err(error) => warn!(?peer, lease, %error, "incoming microVM failed; nothing runs here"),
    }
}

/// Live-migrates microVM `name` to the peer listening at `to`, for reservation `lease`.
pub fn send(
    host: &Host,
    key: &MeshKey,
    name: &str,
    to: SocketAddr,
    lease: LeaseId,
    params: &MigrationParams,
) -> MoveOutcome {
    let failed = |error: String| MoveOutcome {
        error: Some(error),
        running_on_source: true,
        ..MoveOutcome::default()
    };
    let conn = match TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) {
        Ok(conn) => conn,
        Err(e) => return failed(format!("cannot reach {to}: {e}")),
    };
    tune(&conn);
    let conn = Deadline::new(conn, Instant::now() + TRANSFER_DEADLINE);
    let deadline = conn.until.clone();
    let mut stream = match SealedStream::connect(conn, key, purpose(lease).as_bytes()) {
        Ok(stream) => stream,
        Err(e) => return failed(format!("stream to {to} refused: {e}")),
    };
    let params = MigrationParams {
        on_pause: Some(Arc::new(move || {
            *lock(&deadline) = Instant::now() + PAUSED_DEADLINE;
        })),
        ..params.clone()
    };
    match host.migrate_vm_out(name, &mut stream, &params) {
        Ok(report) => MoveOutcome {
            ok: true,
            error: None,
            total_ms: Some(report.total.as_millis() as u64),
            downtime_ms: Some(report.downtime.as_millis() as u64),
            bytes: Some(report.bytes),
            running_on_source: false,
        },
        // Only an unconfirmed hand-over may have left the VM running on the target (its copy
        // here stays paused); after any other failure it never left.
        Err(error) => MoveOutcome {
            running_on_source: !matches!(error, MigrationError::OutcomeUnknown(_)),
            error: Some(error.to_string()),
            ..MoveOutcome::default()
        },
    }
}
