//! The write-ahead log: every appended batch as one record of (series, timestamp, value bits).
//! Replayed into the in-memory heads at open; emptied by a checkpoint, after the heads it
//! covers are sealed into blocks.

use crate::StoreError;

const POINT_LEN: usize = 20;

/// One point as the WAL holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPoint {
    pub series: u32,
    pub ts: i64,
    pub bits: u64,
}

pub fn encode(points: &[WalPoint], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(points.len() as u32).to_le_bytes());
    for p in points {
        out.extend_from_slice(&p.series.to_le_bytes());
        out.extend_from_slice(&p.ts.to_le_bytes());
        out.extend_from_slice(&p.bits.to_le_bytes());
    }
}

pub fn decode(payload: &[u8]) -> Result<Vec<WalPoint>, StoreError> {
    let bad = || StoreError::Corrupt("WAL record has a wrong length".into());
    let count = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    if payload.len() != 4 + count * POINT_LEN {
        return Err(bad());
    }
    Ok(payload[4..]
        .chunks_exact(POINT_LEN)
        .map(|c| WalPoint {
            series: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            ts: i64::from_le_bytes(c[4..12].try_into().unwrap_or([0; 8])),
            bits: u64::from_le_bytes(c[12..20].try_into().unwrap_or([0; 8])),
        })
        .collect())
}
