//! One host's end of the mesh: the server that answers peers from its [`Ledger`], and the client
//! that asks them. Each request is one authenticated frame on a TCP connection and gets one
//! authenticated reply naming the request it answers.

use crate::frame::{self, FrameError, ReplayGuard, HEADER_LEN};
use crate::key::MeshKey;
use crate::ledger::Ledger;
use crate::message::{Envelope, HostId, Message, PeerInfo};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

/// The longest and shortest lease a target grants, whatever a source asks.
pub const MAX_LEASE: Duration = Duration::from_secs(600);
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// How long a peer may take to send a whole request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may take to send its first request, before it has proven anything.
const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the listen queue. Each may hold a frame buffer
/// before it has proven anything, so this bounds what strangers can make the host allocate.
const MAX_CONNECTIONS: usize = 64;
/// Connections one address may hold at once, so that one stranger cannot take every slot.
const MAX_PER_ADDRESS: usize = 16;
/// At most one log line per this long about peers that fail authentication.
const AUTH_LOG_EVERY: Duration = Duration::from_secs(10);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("bad reply from {addr}: {error}")]
    BadReply { addr: SocketAddr, error: FrameError },
    #[error("reply from {addr} answers request {got:?}, not {sent}")]
    WrongReply {
        addr: SocketAddr,
        sent: u64,
        got: Option<u64>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A host in the mesh: its name, the key, its capacity book and its message counter.
#[derive(Debug)]
pub struct Node {
    pub id: HostId,
    key: MeshKey,
    pub ledger: Mutex<Ledger>,
    seq: AtomicU64,
    guard: Mutex<ReplayGuard>,
    last_auth_log: Mutex<Option<Instant>>,
    /// Frames refused because they failed authentication.
    pub auth_failures: AtomicU64,
    /// What this host advertises to peers.
    pub info: Mutex<PeerInfo>,
}

impl Node {
    pub fn new(id: impl Into<HostId>, key: MeshKey, ledger: Ledger) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            key,
            ledger: Mutex::new(ledger),
            // Starts from the clock so a restarted host's messages are still newer.
            seq: AtomicU64::new(now_ms() * 1000),
            guard: Mutex::new(ReplayGuard::default()),
            last_auth_log: Mutex::new(None),
            auth_failures: AtomicU64::new(0),
            info: Mutex::new(PeerInfo::default()),
        })
    }

    /// The mesh key, for the membership layer.
    pub fn key(&self) -> &MeshKey {
        &self.key
    }

    fn envelope(&self, to: &str, msg: Message, reply_to: Option<u64>) -> Envelope {
        Envelope {
            from: self.id.clone(),
            to: to.to_string(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            sent_ms: now_ms(),
            reply_to,
            msg,
        }
    }

    /// What this host answers to `msg` from `from`.
    pub fn handle(&self, from: &str, msg: Message) -> Message {
        let now = Instant::now();
        let mut ledger = lock(&self.ledger);
        for lease in ledger.expire(now) {
            info!(lease, "reservation lease expired: capacity released");
        }
        match msg {
            Message::Ping => Message::Pong {
                headroom: ledger.headroom(now),
                capacity: ledger.capacity(),
                booked: ledger.booked(now),
                info: PeerInfo {
                    draining: ledger.is_draining(),
                    ..lock(&self.info).clone()
                },
            },
            Message::Offer(offer) => match ledger.headroom_with(&offer, now) {
                Ok(headroom) => Message::Bid {
                    offer_id: offer.offer_id,
                    headroom,
                },
                Err(e) => Message::Decline {
                    offer_id: offer.offer_id,
                    reason: e.to_string(),
                },
            },
            Message::Reserve { offer, lease_ms } => {
                let offer_id = offer.offer_id;
                let lease = Duration::from_millis(lease_ms).clamp(MIN_LEASE, MAX_LEASE);
                match ledger.reserve(from, offer, lease, now) {
                    Ok(r) => {
                        info!(lease = r.lease, source = from, vm = %r.offer.vm, ?lease, "capacity reserved");
                        Message::Granted {
                            offer_id,
                            lease: r.lease,
                            lease_ms: lease.as_millis() as u64,
                        }
                    }
                    Err(e) => Message::Refused {
                        offer_id,
                        reason: e.to_string(),
                    },
                }
            }
            Message::Commit { lease } => match ledger.commit(lease, from, now) {
                Ok(offer) => {
                    info!(lease, source = from, vm = %offer.vm, "move committed");
                    Message::Committed { lease }
                }
                Err(e) => Message::Refused {
                    offer_id: 0,
                    reason: e.to_string(),
                },
            },
            Message::Release { lease } => match ledger.release(lease, from, now) {
                Ok(()) => Message::Released { lease },
                Err(e) => Message::Refused {
                    offer_id: 0,
                    reason: e.to_string(),
                },
            },
            Message::Renew { lease, lease_ms } => {
                let hold = Duration::from_millis(lease_ms).clamp(MIN_LEASE, MAX_LEASE);
                match ledger.renew(lease, from, hold, now) {
                    Ok(()) => Message::Renewed {
                        lease,
                        lease_ms: hold.as_millis() as u64,
                    },
                    Err(e) => Message::Refused {
                        offer_id: 0,
                        reason: e.to_string(),
                    },
                }
            }
            Message::Withdraw { offer_id } => {
                let freed = ledger.withdraw(from, offer_id, now);
                if let Some(lease) = freed {
                    info!(
                        lease,
                        source = from,
                        offer_id,
                        "reservation withdrawn: its grant never reached the source"
                    );
                }
                Message::Withdrawn {
                    offer_id,
                    freed: freed.is_some(),
                }
            }
            other => Message::Error {
                reason: format!("not a request: {}", kind(&other)),
            },
        }
    }

    fn auth_failed(&self, peer: SocketAddr, error: &FrameError) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.last_auth_log);
        if last.is_none_or(|t| t.elapsed() >= AUTH_LOG_EVERY) {
            *last = Some(Instant::now());
            warn!(%peer, %error, "mesh message refused");
        }
    }

    /// Answers peers on `listener` until `stop` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else {
                        // Out of descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    {
                        let mut held = lock(&per_address);
                        let n = held.entry(peer.ip()).or_default();
                        if *n >= MAX_PER_ADDRESS {
                            continue;
                        }
                        *n += 1;
                    }
                    let (node, per_address) = (self.clone(), per_address.clone());
                    tokio::spawn(async move {
                        node.connection(stream, peer).await;
                        let mut held = lock(&per_address);
                        if let Some(n) = held.get_mut(&peer.ip()) {
                            *n -= 1;
                            if *n == 0 {
                                held.remove(&peer.ip());
                            }
                        }
                        drop(slot);
                    });
                }
            }
        }
    }

    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr) {
        let mut wait = FIRST_READ_TIMEOUT;
        loop {
            let frame = match tokio::time::timeout(wait, read_frame(&mut stream)).await {
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) | Err(_) => return,
                Ok(Err(e)) => {
                    self.auth_failed(peer, &e);
                    return;
                }
            };
            let envelope = match frame::decode(&self.key, &frame)
                .and_then(|e| self.addressed_to_me(e))
                .and_then(|e| lock(&self.guard).check(&e, now_ms()).map(|()| e))
            {
                Ok(e) => e,
                Err(e) => {
                    // Nothing is said to a peer that fails: a host without the key is not heard.
                    self.auth_failed(peer, &e);
                    return;
                }
            };
            wait = READ_TIMEOUT;
            let from = envelope.from.clone();
            let reply = self.handle(&from, envelope.msg);
            let out =
                match frame::encode(&self.key, &self.envelope(&from, reply, Some(envelope.seq))) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        warn!(%peer, error = %e, "reply not encoded");
                        return;
                    }
                };
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// Refuses a frame meant for another host, or claiming to come from this one.
    fn addressed_to_me(&self, e: Envelope) -> Result<Envelope, FrameError> {
        let for_me = e.to == self.id || (e.to.is_empty() && matches!(e.msg, Message::Ping));
        if !for_me || e.from == self.id {
            return Err(FrameError::Misaddressed {
                from: e.from,
                to: e.to,
            });
        }
        Ok(e)
    }

    /// Sends `msg` to the host `to` (empty for a ping to a host not known yet) at `addr`
    /// and returns its authenticated answer.
    pub async fn request(
        &self,
        addr: SocketAddr,
        to: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Envelope, MeshError> {
        let exchange = async {
            let mut stream =
                TcpStream::connect(addr)
                    .await
                    .map_err(|e| MeshError::Unreachable {
                        addr,
                        reason: e.to_string(),
                    })?;
            let _ = stream.set_nodelay(true);
            let request = self.envelope(to, msg, None);
            let bytes = frame::encode(&self.key, &request)
                .map_err(|error| MeshError::BadReply { addr, error })?;
            stream
                .write_all(&bytes)
                .await
                .map_err(|e| MeshError::Unreachable {
                    addr,
                    reason: e.to_string(),
                })?;
            let frame = read_frame(&mut stream)
                .await
                .map_err(|error| MeshError::BadReply { addr, error })?
                .ok_or_else(|| MeshError::Unreachable {
                    addr,
                    reason: "closed without answering (a peer with another key says nothing)"
                        .into(),
                })?;
            let reply = frame::decode(&self.key, &frame)
                .and_then(|e| {
                    if e.to != self.id || (!to.is_empty() && e.from != to) {
                        return Err(FrameError::Misaddressed {
                            from: e.from,
                            to: e.to,
                        });
                    }
                    Ok(e)
                })
                .and_then(|e| lock(&self.guard).check(&e, now_ms()).map(|()| e))
                .map_err(|error| MeshError::BadReply { addr, error })?;
            if reply.reply_to != Some(request.seq) {
                return Err(MeshError::WrongReply {
                    addr,
                    sent: request.seq,
                    got: reply.reply_to,
                });
            }
            Ok(reply)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| MeshError::Timeout { addr, timeout })?
    }
}

fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Ping => "ping",
        Message::Pong { .. } => "pong",
        Message::Offer(_) => "offer",
        Message::Bid { .. } => "bid",
        Message::Decline { .. } => "decline",
        Message::Reserve { .. } => "reserve",
        Message::Granted { .. } => "granted",
        Message::Refused { .. } => "refused",
        Message::Commit { .. } => "commit",
        Message::Committed { .. } => "committed",
        Message::Release { .. } => "release",
        Message::Released { .. } => "released",
        Message::Renew { .. } => "renew",
        Message::Renewed { .. } => "renewed",
        Message::Withdraw { .. } => "withdraw",
        Message::Withdrawn { .. } => "withdrawn",
        Message::Error { .. } => "error",
    }
}

/// Reads one whole frame; `None` when the peer closed before a header.
async fn read_frame(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    // The length is checked against the cap before anything is allocated.
    let total = frame::frame_len(&header)?;
    let mut frame = vec![0u8; total];
    frame[..HEADER_LEN].copy_from_slice(&header);
    stream
        .read_exact(&mut frame[HEADER_LEN..])
        .await
        .map_err(|_| FrameError::Incomplete {
            needed: total - HEADER_LEN,
        })?;
    Ok(Some(frame))
}
