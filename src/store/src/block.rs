//! A block: up to a few thousand points of one series, compressed with pco.
//!
//! ```text
//! version:u8 kind:u8 ts_mode:u8 0:u8 series:u32 count:u32 resolution_s:u32
//! min_ts:i64 max_ts:i64 step:i64 ts_len:u32 source_segment:u32  (48 bytes)
//! timestamps (pco i64, ts_len bytes; absent when ts_mode = regular) values (pco f64 or u64)
//! ```
//! Sampled series are mostly regular (one point per interval): then only the first timestamp and
//! the step are kept, and a read decompresses values alone. The block travels as the payload of
//! a checksummed log record, so its bytes are verified before they are decoded.

use crate::types::ValueKind;
use pco::standalone::simple_compress;
use pco::ChunkConfig;

const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;
const TS_PCO: u8 = 0;
const TS_REGULAR: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block header is malformed: {0}")]
    Header(&'static str),
    #[error("block data does not decompress: {0}")]
    Decode(String),
    #[error("cannot compress a block: {0}")]
    Encode(String),
}

/// What a block's header says, enough to index it without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub kind: ValueKind,
    pub series: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub origin: Origin,
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

/// Encodes `ts` (strictly increasing) and the raw bits of their values, as raw data.
pub fn encode(
    series: u32,
    kind: ValueKind,
    ts: &[i64],
    bits: &[u64],
) -> Result<Vec<u8>, BlockError> {
    encode_with(series, kind, ts, bits, Origin::default())
}

/// Where a block's points came from: raw samples, or buckets of `resolution_s` made from the
/// blocks of segment `source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    pub resolution_s: u32,
    pub source: u32,
}

/// Encodes a block with its origin.
pub fn encode_with(
    series: u32,
    kind: ValueKind,
    ts: &[i64],
    bits: &[u64],
    origin: Origin,
) -> Result<Vec<u8>, BlockError> {
    if ts.is_empty() || ts.len() != bits.len() {
        return Err(BlockError::Encode(
            "empty block or mismatched lengths".into(),
        ));
    }
    let config = ChunkConfig::default();
    let step = if ts.len() > 1 { ts[1] - ts[0] } else { 0 };
    let regular = ts.windows(2).all(|w| w[1] - w[0] == step);
    let ts_bytes = if regular {
        Vec::new()
    } else {
        simple_compress(ts, &config).map_err(|e| BlockError::Encode(e.to_string()))?
    };
    let values = match kind {
        ValueKind::U64 => simple_compress(bits, &config),
        ValueKind::F64 => {
            let floats: Vec<f64> = bits.iter().map(|b| f64::from_bits(*b)).collect();
            simple_compress(&floats, &config)
        }
    }
    .map_err(|e| BlockError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + ts_bytes.len() + values.len());
    out.extend_from_slice(&[
        VERSION,
        matches!(kind, ValueKind::U64) as u8,
        if regular { TS_REGULAR } else { TS_PCO },
        0,
    ]);
    out.extend_from_slice(&series.to_le_bytes());
    out.extend_from_slice(&(ts.len() as u32).to_le_bytes());
    out.extend_from_slice(&origin.resolution_s.to_le_bytes());
    out.extend_from_slice(&ts[0].to_le_bytes());
    out.extend_from_slice(&ts[ts.len() - 1].to_le_bytes());
    out.extend_from_slice(&step.to_le_bytes());
    out.extend_from_slice(&(ts_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&origin.source.to_le_bytes());
    out.extend_from_slice(&ts_bytes);
    out.extend_from_slice(&values);
    Ok(out)
}

pub fn header(block: &[u8]) -> Result<BlockHeader, BlockError> {
    if block.len() < HEADER_LEN {
        return Err(BlockError::Header("shorter than its header"));
    }
    if block[0] != VERSION {
        return Err(BlockError::Header("unknown version"));
    }
    let kind = match block[1] {
        0 => ValueKind::F64,
        1 => ValueKind::U64,
        _ => return Err(BlockError::Header("unknown value kind")),
    };
    let header = BlockHeader {
        kind,
        series: le_u32(block, 4),
        count: le_u32(block, 8),
        min_ts: le_i64(block, 16),
        max_ts: le_i64(block, 24),
        origin: Origin {
            resolution_s: le_u32(block, 12),
            source: le_u32(block, 44),
        },
    };
    if header.count == 0 || header.max_ts < header.min_ts {
        return Err(BlockError::Header("empty or inverted time range"));
    }
    Ok(header)
}

/// Decoded values of a block, in their own type.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F64(Vec<f64>),
    U64(Vec<u64>),
}

impl Values {
    pub fn new(kind: ValueKind) -> Self {
        match kind {
            ValueKind::F64 => Values::F64(Vec::new()),
            ValueKind::U64 => Values::U64(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::U64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn decompress_append<T: pco::data_types::Number + Default + Clone>(
    src: &[u8],
    out: &mut Vec<T>,
    count: usize,
) -> Result<(), BlockError> {
    let start = out.len();
    out.resize(start + count, T::default());
    let progress = pco::standalone::simple_decompress_into(src, &mut out[start..])
        .map_err(|e| BlockError::Decode(e.to_string()))?;
    if progress.n_processed != count || !progress.finished {
        out.truncate(start);
        return Err(BlockError::Decode(format!(
            "holds {} values, header says {count}",
            progress.n_processed
        )));
    }
    Ok(())
}

/// Decodes a block, appending its timestamps and values to `ts` and `values` (whose kind must be
/// the block's). Nothing is appended if the block does not decode.
pub fn decode_append(
    block: &[u8],
    ts: &mut Vec<i64>,
    values: &mut Values,
) -> Result<BlockHeader, BlockError> {
    let h = header(block)?;
    let count = h.count as usize;
    let step = le_i64(block, 32);
    let ts_len = le_u32(block, 40) as usize;
    let ts_end = HEADER_LEN
        .checked_add(ts_len)
        .filter(|end| *end <= block.len())
        .ok_or(BlockError::Header("timestamp section past the end"))?;
    let ts_start = ts.len();
    match block[2] {
        TS_REGULAR => ts.extend((0..count as i64).map(|i| h.min_ts + i * step)),
        TS_PCO => decompress_append(&block[HEADER_LEN..ts_end], ts, count)?,
        _ => return Err(BlockError::Header("unknown timestamp mode")),
    }
    let data = &block[ts_end..];
    let decoded = match (values, h.kind) {
        (Values::F64(v), ValueKind::F64) => decompress_append(data, v, count),
        (Values::U64(v), ValueKind::U64) => decompress_append(data, v, count),
        _ => Err(BlockError::Header("value kind differs from the series'")),
    };
    if let Err(error) = decoded {
        ts.truncate(ts_start);
        return Err(error);
    }
    Ok(h)
}

/// Decodes a block into timestamps and value bits.
pub fn decode(block: &[u8]) -> Result<(BlockHeader, Vec<i64>, Vec<u64>), BlockError> {
    let h = header(block)?;
    let mut ts = Vec::with_capacity(h.count as usize);
    let mut values = Values::new(h.kind);
    decode_append(block, &mut ts, &mut values)?;
    let bits = match values {
        Values::F64(v) => v.into_iter().map(f64::to_bits).collect(),
        Values::U64(v) => v,
    };
    Ok((h, ts, bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regular_series_store_no_timestamps() {
        let ts: Vec<i64> = (0..1000).map(|i| 1_000_000_000 * i + 7).collect();
        let bits: Vec<u64> = (0..1000).map(|i| (i as f64 * 0.5).to_bits()).collect();
        let block = encode(3, ValueKind::F64, &ts, &bits).unwrap();
        assert_eq!(block[2], TS_REGULAR);
        let (h, ts2, bits2) = decode(&block).unwrap();
        assert_eq!(
            (h.series, h.count, h.min_ts, h.max_ts),
            (3, 1000, 7, 999_000_000_007)
        );
        assert_eq!((ts2, bits2), (ts, bits));
    }

    proptest! {
        #[test]
        fn any_increasing_series_round_trips(
            deltas in proptest::collection::vec(1i64..10_000_000_000, 1..300),
            counters in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut t = 1_600_000_000_000_000_000i64;
            let ts: Vec<i64> = deltas.iter().map(|d| { t += d; t }).collect();
            let kind = if counters { ValueKind::U64 } else { ValueKind::F64 };
            let bits: Vec<u64> = (0..ts.len() as u64)
                .map(|i| if counters { seed.wrapping_add(i * 977) } else { ((seed % 1000) as f64 + i as f64 / 3.0).to_bits() })
                .collect();
            let block = encode(1, kind, &ts, &bits).unwrap();
            let (_, ts2, bits2) = decode(&block).unwrap();
            prop_assert_eq!(ts2, ts);
            prop_assert_eq!(bits2, bits);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
        }
    }
}
