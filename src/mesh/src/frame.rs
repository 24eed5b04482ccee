//! Authenticated frames: every message between hosts carries an HMAC-SHA256 tag made with the
//! mesh key, so a host without the key is not heard, and a replayed message is refused.
//!
//! ```text
//!  0      4        6          8          12                    12+len         12+len+32
//!  +------+--------+----------+----------+---------------------+--------------+
//!  | AUGM | version| reserved | length   | payload (JSON)      | HMAC-SHA256  |
//!  +------+--------+----------+----------+---------------------+--------------+
//! ```
//! Integers are little-endian. The tag covers the 12-byte header and the payload. The length is
//! capped at [`MAX_PAYLOAD`] before anything is allocated. The payload is an [`Envelope`]; after
//! the tag checks out, the [`ReplayGuard`] refuses a message whose clock is more than
//! [`MAX_SKEW_MS`] off, or whose sequence number its sender has used already or is more than
//! [`REPLAY_WINDOW`] below the highest seen from it.

use crate::key::MeshKey;
use crate::message::{Envelope, HostId};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;

pub const MAGIC: [u8; 4] = *b"AUGM";
/// Version 1 of the mesh protocol; a peer speaking another is refused with a clear error.
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 12;
pub const TAG_LEN: usize = 32;
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// How far a sender's clock may be from ours.
pub const MAX_SKEW_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("need {needed} more bytes")]
    Incomplete { needed: usize },
    #[error("not a mesh frame (magic {found:02x?})")]
    BadMagic { found: [u8; 4] },
    #[error("mesh protocol version {version} (this host speaks {VERSION})")]
    BadVersion { version: u16 },
    #[error("frame payload of {length} bytes exceeds {MAX_PAYLOAD}")]
    TooLong { length: usize },
    #[error("authentication failed (wrong mesh key, or a tampered frame)")]
    BadTag,
    #[error("bad message: {0}")]
    BadPayload(String),
    #[error("message from {from} is {skew_ms} ms off this host's clock (max {MAX_SKEW_MS})")]
    Stale { from: String, skew_ms: u64 },
    #[error("message from {from:?} for {to:?} is not for this host")]
    Misaddressed { from: String, to: String },
    #[error("replayed message from {from} (seq {seq}, last seen {last})")]
    Replayed { from: String, seq: u64, last: u64 },
}

fn tag(key: &MeshKey, header: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length; a MeshKey is never empty.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()).expect("HMAC takes any key");
    mac.update(header);
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// Encodes an envelope into one authenticated frame.
pub fn encode(key: &MeshKey, envelope: &Envelope) -> Result<Vec<u8>, FrameError> {
    let payload =
        serde_json::to_vec(envelope).map_err(|e| FrameError::BadPayload(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLong {
            length: payload.len(),
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let t = tag(key, &out, &payload);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&t);
    Ok(out)
}

/// How many bytes the frame starting at `header` has in all, once its header is whole.
pub fn frame_len(header: &[u8]) -> Result<usize, FrameError> {
    if header.len() < HEADER_LEN {
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - header.len(),
        });
    }
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(FrameError::BadVersion { version });
    }
    let length = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if length > MAX_PAYLOAD {
        return Err(FrameError::TooLong { length });
    }
    Ok(HEADER_LEN + length + TAG_LEN)
}

/// Checks one whole frame's tag and decodes its envelope (replay is the guard's business).
pub fn decode(key: &MeshKey, frame: &[u8]) -> Result<Envelope, FrameError> {
    let total = frame_len(frame)?;
    if frame.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - frame.len(),
        });
    }
    let payload = &frame[HEADER_LEN..total - TAG_LEN];
    let expected = tag(key, &frame[..HEADER_LEN], payload);
    let got = &frame[total - TAG_LEN..total];
    // Constant-time comparison of the tags.
    let diff = expected
        .iter()
        .zip(got)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(FrameError::BadTag);
    }
    serde_json::from_slice(payload).map_err(|e| FrameError::BadPayload(e.to_string()))
}

/// Refuses stale and replayed messages, per sender. A sender's messages may arrive out of order
/// (several connections at once), so each sequence number is accepted once within a window
/// below the highest seen, as IPsec's anti-replay window does.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<HostId, SeenWindow>,
}

#[derive(Debug, Default)]
struct SeenWindow {
    highest: u64,
    seen: std::collections::BTreeSet<u64>,
    /// When this sender was last heard (ms), for eviction.
    heard_ms: u64,
}

/// Sequence numbers further than this below a sender's highest are refused.
pub const REPLAY_WINDOW: u64 = 4096;
/// The most senders a guard remembers; beyond, the one heard from least recently is forgotten.
const MAX_SENDERS: usize = 4096;

impl ReplayGuard {
    pub fn check(&mut self, envelope: &Envelope, now_ms: u64) -> Result<(), FrameError> {
        let skew = now_ms.abs_diff(envelope.sent_ms);
        if skew > MAX_SKEW_MS {
            return Err(FrameError::Stale {
                from: envelope.from.clone(),
                skew_ms: skew,
            });
        }
        let seq = envelope.seq;
        if let Some(w) = self.senders.get(&envelope.from) {
            if seq.saturating_add(REPLAY_WINDOW) <= w.highest || w.seen.contains(&seq) {
                return Err(FrameError::Replayed {
                    from: envelope.from.clone(),
                    seq,
                    last: w.highest,
                });
            }
        } else if self.senders.len() >= MAX_SENDERS {
            if let Some(oldest) = self
                .senders
                .iter()
                .min_by_key(|(_, w)| w.heard_ms)
                .map(|(k, _)| k.clone())
            {
                self.senders.remove(&oldest);
            }
        }
        let w = self.senders.entry(envelope.from.clone()).or_default();
        w.heard_ms = now_ms;
        w.highest = w.highest.max(seq);
        w.seen.insert(seq);
        let floor = w.highest.saturating_sub(REPLAY_WINDOW);
        while w.seen.first().is_some_and(|s| *s < floor) {
            w.seen.pop_first();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn key(b: u8) -> MeshKey {
        MeshKey::from_bytes(&[b; 32]).unwrap()
    }

    fn envelope(seq: u64, sent_ms: u64) -> Envelope {
        Envelope {
            from: "host-a".into(),
            to: "host-b".into(),
            seq,
            sent_ms,
            reply_to: None,
            msg: Message::Ping,
        }
    }

    #[test]
    fn round_trips_with_the_right_key_only() {
        let frame = encode(&key(1), &envelope(1, 1000)).unwrap();
        assert_eq!(frame_len(&frame).unwrap(), frame.len());
        assert_eq!(decode(&key(1), &frame).unwrap(), envelope(1, 1000));
        assert_eq!(decode(&key(2), &frame), Err(FrameError::BadTag));
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let frame = encode(&key(1), &envelope(1, 1000)).unwrap();
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(
                decode(&key(1), &bad).is_err(),
                "bit flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn oversized_and_foreign_headers_fail_before_allocation() {
        let mut header = MAGIC.to_vec();
        header.extend(VERSION.to_le_bytes());
        header.extend(0u16.to_le_bytes());
        header.extend(u32::MAX.to_le_bytes());
        assert!(matches!(
            frame_len(&header),
            Err(FrameError::TooLong { .. })
        ));
        let mut v2 = header.clone();
        v2[4] = 2;
        assert_eq!(frame_len(&v2), Err(FrameError::BadVersion { version: 2 }));
        assert!(matches!(
            frame_len(b"GET / HTTP/1.1\r\n"),
            Err(FrameError::BadMagic { .. })
        ));
    }

    #[test]
    fn the_guard_refuses_replays_and_stale_clocks() {
        let mut guard = ReplayGuard::default();
        assert!(guard.check(&envelope(5, 100_000), 100_000).is_ok());
        assert!(matches!(
            guard.check(&envelope(5, 100_000), 100_000),
            Err(FrameError::Replayed { .. })
        ));
        assert!(guard.check(&envelope(7, 100_000), 100_000).is_ok());
        // Out of order but new: accepted once.
        assert!(guard.check(&envelope(6, 100_000), 100_000).is_ok());
        assert!(guard.check(&envelope(6, 100_000), 100_000).is_err());
        assert!(matches!(
            guard.check(&envelope(8, 10_000), 100_000),
            Err(FrameError::Stale { .. })
        ));
        assert!(guard
            .check(&envelope(7 + 2 * REPLAY_WINDOW, 100_000), 100_000)
            .is_ok());
        assert!(
            guard.check(&envelope(8, 100_000), 100_000).is_err(),
            "below the window"
        );
    }
}
