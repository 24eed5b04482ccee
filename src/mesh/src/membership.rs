//! Who is in the mesh: SWIM membership and failure detection (foca) over UDP datagrams that
//! carry an HMAC-SHA256 tag made with the mesh key, so a host without the key cannot join,
//! and a datagram more than [`MAX_SKEW_MS`] old is dropped.
//!
//! ```text
//!  0      4        6          14                   14+len      14+len+32
//!  +------+--------+----------+--------------------+-----------+
//!  | AUGG | length | sent_ms  | foca payload       | HMAC      |
//!  +------+--------+----------+--------------------+-----------+
//! ```
//! Gossip only says who is alive and where its authenticated TCP endpoint is; capacity,
//! bids and reservations travel on that endpoint, never in gossip.

use crate::frame::MAX_SKEW_MS;
use crate::key::MeshKey;
use crate::node::now_ms;
use foca::{Config, Foca, Identity, OwnedNotification, PostcardCodec, Timer};
use hmac::{Hmac, Mac};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{info, warn};

const MAGIC: [u8; 4] = *b"AUGG";
const HEADER_LEN: usize = 14;
const TAG_LEN: usize = 32;
/// The largest datagram sent or accepted.
pub const MAX_DATAGRAM: usize = 1400;
const GOSSIP_EVERY: Duration = Duration::from_millis(500);

/// A member: its name, where it gossips (UDP) and where it negotiates (TCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    pub host: String,
    pub gossip: SocketAddr,
    pub mesh: SocketAddr,
    /// Bumped when the member rejoins, so its new life wins over the old.
    pub generation: u16,
}

impl Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

fn tag(key: &MeshKey, head: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()).expect("HMAC takes any key");
    mac.update(head);
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// Signs one foca payload into a datagram.
pub fn seal(key: &MeshKey, payload: &[u8], sent_ms: u64) -> Option<Vec<u8>> {
    if HEADER_LEN + payload.len() + TAG_LEN > MAX_DATAGRAM {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(&sent_ms.to_le_bytes());
    let t = tag(key, &out, payload);
    out.extend_from_slice(payload);
    out.extend_from_slice(&t);
    Some(out)
}

/// The foca payload of an authentic, fresh datagram.
pub fn open<'a>(key: &MeshKey, datagram: &'a [u8], now_ms: u64) -> Option<&'a [u8]> {
    if datagram.len() < HEADER_LEN + TAG_LEN || datagram[..4] != MAGIC {
        return None;
    }
    let len = u16::from_le_bytes([datagram[4], datagram[5]]) as usize;
    if datagram.len() != HEADER_LEN + len + TAG_LEN {
        return None;
    }
    let sent_ms = u64::from_le_bytes(datagram[6..14].try_into().ok()?);
    let payload = &datagram[HEADER_LEN..HEADER_LEN + len];
    let expected = tag(key, &datagram[..HEADER_LEN], payload);
    let diff = expected
        .iter()
        .zip(&datagram[HEADER_LEN + len..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0 && now_ms.abs_diff(sent_ms) <= MAX_SKEW_MS).then_some(payload)
}

/// The live members this host knows, shared with whoever needs them.
#[derive(Debug, Default)]
pub struct Members {
    live: Mutex<BTreeMap<String, MemberId>>,
    /// Datagrams dropped because they failed authentication or were stale.
    pub refused: AtomicU64,
}

impl Members {
    pub fn live(&self) -> Vec<MemberId> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn apply(&self, notification: OwnedNotification<MemberId>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match notification {
            OwnedNotification::MemberUp(m) => {
                info!(member = %m.host, gossip = %m.gossip, "mesh member up");
                live.insert(m.host.clone(), m);
            }
            // Only this life of the member: a newer one may already be up.
            OwnedNotification::MemberDown(m) if live.get(&m.host) == Some(&m) => {
                warn!(member = %m.host, "mesh member down");
                live.remove(&m.host);
            }
            OwnedNotification::Rename(old, new) => {
                live.remove(&old.host);
                live.insert(new.host.clone(), new);
            }
            _ => {}
        }
    }
}

/// Timers foca asked for, soonest first.
struct Due {
    at: tokio::time::Instant,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Runs membership for `me` on `socket`, announcing to `seeds` (UDP addresses), until `stop`.
pub async fn run(
    me: MemberId,
    key: MeshKey,
    socket: UdpSocket,
    seeds: Vec<SocketAddr>,
    members: Arc<Members>,
    mut stop: watch::Receiver<bool>,
) {
    let mut config = Config::simple();
    config.max_packet_size = std::num::NonZeroUsize::new(MAX_DATAGRAM - HEADER_LEN - TAG_LEN)
        .expect("a positive packet size");
    let mut foca = Foca::new(me.clone(), config, StdRng::from_os_rng(), PostcardCodec);
    let mut runtime = foca::AccumulatingRuntime::new();
    let mut timers: BinaryHeap<Due> = BinaryHeap::new();
    let mut seq = 0u64;
    let announce = |foca: &mut Foca<_, _, _, _>,
                    runtime: &mut foca::AccumulatingRuntime<MemberId>| {
        for seed in &seeds {
            if *seed == me.gossip {
                continue;
            }
            // The seed's name is not known yet; foca learns it from the answer.
            let placeholder = MemberId {
                host: String::new(),
                gossip: *seed,
                mesh: *seed,
                generation: 0,
            };
            let _ = foca.announce(placeholder, &mut *runtime);
        }
    };
    announce(&mut foca, &mut runtime);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut gossip = tokio::time::interval(GOSSIP_EVERY);
    let mut reannounce = tokio::time::interval(Duration::from_secs(5));
    loop {
        while let Some((to, data)) = runtime.to_send() {
            if let Some(datagram) = seal(&key, &data, now_ms()) {
                let _ = socket.send_to(&datagram, to.gossip).await;
            }
        }
        while let Some((after, timer)) = runtime.to_schedule() {
            seq += 1;
            timers.push(Due {
                at: tokio::time::Instant::now() + after,
                seq,
                timer,
            });
        }
        while let Some(notification) = runtime.to_notify() {
            members.apply(notification);
        }
        let next = timers
            .peek()
            .map(|d| d.at)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = stop.changed() => {
                let _ = foca.leave_cluster(&mut runtime);
                while let Some((to, data)) = runtime.to_send() {
                    if let Some(datagram) = seal(&key, &data, now_ms()) {
                        let _ = socket.send_to(&datagram, to.gossip).await;
                    }
                }
                return;
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, _)) = received else { continue };
                match open(&key, &buf[..n], now_ms()) {
                    Some(payload) => {
                        let _ = foca.handle_data(payload, &mut runtime);
                    }
                    None => {
                        members.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = tokio::time::sleep_until(next) => {
                while timers.peek().is_some_and(|d| d.at <= tokio::time::Instant::now()) {
                    if let Some(due) = timers.pop() {
                        let _ = foca.handle_timer(due.timer, &mut runtime);
                    }
                }
            }
            _ = gossip.tick() => {
                let _ = foca.gossip(&mut runtime);
            }
            _ = reannounce.tick() => {
                // Until someone answers, keep knocking: seeds may start after us.
                if foca.num_members() == 0 {
                    announce(&mut foca, &mut runtime);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_need_the_key_and_a_fresh_clock() {
        let key = MeshKey::from_bytes(&[1; 32]).unwrap();
        let other = MeshKey::from_bytes(&[2; 32]).unwrap();
        let d = seal(&key, b"hello", 1_000_000).unwrap();
        assert_eq!(open(&key, &d, 1_000_000), Some(&b"hello"[..]));
        assert_eq!(open(&other, &d, 1_000_000), None);
        assert_eq!(open(&key, &d, 1_000_000 + MAX_SKEW_MS + 1), None);
        let mut bad = d.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(open(&key, &bad, 1_000_000), None);
        assert_eq!(open(&key, &d[..d.len() - 1], 1_000_000), None);
        assert!(seal(&key, &[0; MAX_DATAGRAM], 0).is_none());
    }
}
