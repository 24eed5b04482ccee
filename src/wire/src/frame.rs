//! Framed records on a byte stream (a socket, a virtio-serial port, a file).
//!
//! ```text
//!  0      4        6       8          12        16
//!  +------+--------+-------+----------+---------+----------------------+
//!  | AUGR | version| kind  | length   | crc32   | payload (length B)   |
//!  +------+--------+-------+----------+---------+----------------------+
//! ```
//! All integers are little-endian. `version` 0 is reserved as invalid; this build speaks
//! [`FRAME_VERSION`]. `length` is capped at [`MAX_PAYLOAD`] before anything is allocated, and the
//! CRC-32 covers the payload. The payload of a [`FrameKind::Sample`] frame is an rkyv archive of
//! [`Sample`], validated with bytecheck before use. A bad frame is an error, never a panic.

use crate::flows::{ArchivedFlowReport, FlowReport, FLOW_SCHEMA, MAX_FLOWS};
use crate::sample::{ArchivedSample, Sample, SAMPLE_SCHEMA};
use rkyv::rancor;
use rkyv::util::AlignedVec;

pub const MAGIC: [u8; 4] = *b"AUGR";
pub const FRAME_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
/// The largest payload any peer may send.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameKind {
    Sample = 1,
    /// A [`FlowReport`] from the guest shim.
    Flows = 2,
}

impl FrameKind {
    fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(FrameKind::Sample),
            2 => Some(FrameKind::Flows),
            _ => None,
        }
    }
}

/// A validated record from a stream of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Sample(Sample),
    Flows(FlowReport),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("Need {needed} more bytes for a whole frame")]
    Incomplete { needed: usize },
    #[error("Bad frame magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("Unsupported frame version {version} (this build speaks {FRAME_VERSION})")]
    BadVersion { version: u16 },
    #[error("Unknown frame kind {kind}")]
    UnknownKind { kind: u16 },
    #[error("Frame payload of {length} bytes exceeds the cap of {MAX_PAYLOAD}")]
    TooLong { length: usize },
    #[error("Frame checksum mismatch (header {expected:#010x}, payload {actual:#010x})")]
    BadChecksum { expected: u32, actual: u32 },
    #[error("Frame payload is not a valid archive: {reason}")]
    BadPayload { reason: String },
    #[error("Sample schema {schema} is not {SAMPLE_SCHEMA}")]
    BadSchema { schema: u16 },
    #[error("Flow report schema {schema} is not {FLOW_SCHEMA}")]
    BadFlowSchema { schema: u16 },
    #[error("Flow report holds {count} flows, more than the cap of {MAX_FLOWS}")]
    TooManyFlows { count: usize },
    #[error("Record too large to frame: {length} bytes")]
    Encode { length: usize },
}

/// A checked frame borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    pub payload: &'a [u8],
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes the frame at the start of `buf`; returns it and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    if buf.len() < HEADER_LEN {
        // Reject a wrong magic as early as it can be seen, so a stream of junk fails fast.
        let seen = buf.len().min(4);
        if buf[..seen] != MAGIC[..seen] {
            let mut found = [0u8; 4];
            found[..seen].copy_from_slice(&buf[..seen]);
            return Err(FrameError::BadMagic { found });
        }
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    let magic = [buf[0], buf[1], buf[2], buf[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    let version = le_u16(&buf[4..6]);
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion { version });
    }
    let kind_code = le_u16(&buf[6..8]);
    let kind =
        FrameKind::from_code(kind_code).ok_or(FrameError::UnknownKind { kind: kind_code })?;
    let length = le_u32(&buf[8..12]) as usize;
    if length > MAX_PAYLOAD {
        return Err(FrameError::TooLong { length });
    }
    let total = HEADER_LEN + length;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let payload = &buf[HEADER_LEN..total];
    let expected = le_u32(&buf[12..16]);
    let actual = crc32fast::hash(payload);
    if expected != actual {
        return Err(FrameError::BadChecksum { expected, actual });
    }
    Ok((Frame { kind, payload }, total))
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::Encode {
            length: payload.len(),
        });
    }
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Serialises a sample to its rkyv archive.
pub fn archive_sample(sample: &Sample) -> Result<AlignedVec, FrameError> {
    rkyv::to_bytes::<rancor::Error>(sample).map_err(|e| FrameError::BadPayload {
        reason: e.to_string(),
    })
}

/// Appends a sample frame to `out`.
pub fn encode_sample(sample: &Sample, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode(FrameKind::Sample, &archive_sample(sample)?, out)
}

/// Validates an archived sample in an aligned buffer and checks its schema.
pub fn access_sample(bytes: &[u8]) -> Result<&ArchivedSample, FrameError> {
    // A sample holds no shared pointers, so the low-level validator (no pointer-sharing table,
    // no allocation) checks everything there is to check.
    let archived = rkyv::api::low::access::<ArchivedSample, rancor::Error>(bytes).map_err(|e| {
        FrameError::BadPayload {
            reason: e.to_string(),
        }
    })?;
    let schema = archived.schema.to_native();
    if schema != SAMPLE_SCHEMA {
        return Err(FrameError::BadSchema { schema });
    }
    Ok(archived)
}

fn aligned(payload: &[u8]) -> AlignedVec<16> {
    // The payload sits at an arbitrary offset in the input; rkyv needs it aligned.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    aligned
}

fn bad_payload(e: rancor::Error) -> FrameError {
    FrameError::BadPayload {
        reason: e.to_string(),
    }
}

/// Validates a sample frame's payload and returns the owned sample.
pub fn decode_sample(frame: &Frame<'_>) -> Result<Sample, FrameError> {
    if frame.kind != FrameKind::Sample {
        return Err(FrameError::UnknownKind {
            kind: frame.kind as u16,
        });
    }
    let bytes = aligned(frame.payload);
    let archived = access_sample(&bytes)?;
    rkyv::deserialize::<Sample, rancor::Error>(archived).map_err(bad_payload)
}

/// Appends a flow-report frame to `out`.
pub fn encode_flows(report: &FlowReport, out: &mut Vec<u8>) -> Result<(), FrameError> {
    if report.flows.len() > MAX_FLOWS {
        return Err(FrameError::TooManyFlows {
            count: report.flows.len(),
        });
    }
    let bytes = rkyv::to_bytes::<rancor::Error>(report).map_err(bad_payload)?;
    encode(FrameKind::Flows, &bytes, out)
}

/// Validates a flow-report frame's payload (schema and flow cap included) and returns it.
pub fn decode_flows(frame: &Frame<'_>) -> Result<FlowReport, FrameError> {
    if frame.kind != FrameKind::Flows {
        return Err(FrameError::UnknownKind {
            kind: frame.kind as u16,
        });
    }
    let bytes = aligned(frame.payload);
    let archived =
        rkyv::api::low::access::<ArchivedFlowReport, rancor::Error>(&bytes).map_err(bad_payload)?;
    let schema = archived.schema.to_native();
    if schema != FLOW_SCHEMA {
        return Err(FrameError::BadFlowSchema { schema });
    }
    if archived.flows.len() > MAX_FLOWS {
        return Err(FrameError::TooManyFlows {
            count: archived.flows.len(),
        });
    }
    rkyv::deserialize::<FlowReport, rancor::Error>(archived).map_err(bad_payload)
}

/// Validates any frame's payload by its kind.
pub fn decode_record(frame: &Frame<'_>) -> Result<Record, FrameError> {
    match frame.kind {
        FrameKind::Sample => decode_sample(frame).map(Record::Sample),
        FrameKind::Flows => decode_flows(frame).map(Record::Flows),
    }
}

/// Reassembles frames from a byte stream whose chunks arrive in any sizes.
///
/// The buffer never holds more than one maximal frame plus one read chunk. After a bad frame it
/// drops bytes up to the next possible magic, so one corrupt frame costs only itself.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream. Callers read at most [`MAX_PAYLOAD`] bytes at a time.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole sample, `Ok(None)` when more bytes are needed, or the error of a bad frame
    /// (which has been skipped; call again to continue).
    pub fn next_sample(&mut self) -> Result<Option<Sample>, FrameError> {
        match self.next_record()? {
            None => Ok(None),
            Some(Record::Sample(sample)) => Ok(Some(sample)),
            Some(Record::Flows(_)) => Err(FrameError::UnknownKind {
                kind: FrameKind::Flows as u16,
            }),
        }
    }

    /// The next whole record of any kind, `Ok(None)` when more bytes are needed, or the error
    /// of a bad frame (which has been skipped; call again to continue).
    pub fn next_record(&mut self) -> Result<Option<Record>, FrameError> {
        match decode(&self.buf) {
            Ok((frame, used)) => {
                let result = decode_record(&frame);
                self.buf.drain(..used);
                result.map(Some)
            }
            Err(FrameError::Incomplete { .. }) => Ok(None),
            Err(error) => {
                // Drop up to the next whole magic; with none, keep a tail that may be the start
                // of one, so the frame after a bad one survives however the bytes were chunked.
                let len = self.buf.len();
                let skip = self.buf[1..]
                    .windows(MAGIC.len())
                    .position(|w| w == MAGIC)
                    .map(|p| p + 1)
                    .unwrap_or_else(|| {
                        (1..MAGIC.len())
                            .rev()
                            .find(|&k| k < len && self.buf[len - k..] == MAGIC[..k])
                            .map_or(len, |k| len - k)
                    });
                self.buf.drain(..skip);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Metric, Source};
    use proptest::prelude::*;

    fn sample() -> Sample {
        let mut s = Sample::new(7, Source::DirtyLog, 1_700_000_000_000_000_000);
        s.push(Metric::DirtyPages, 1234)
            .push_unavailable(Metric::Cycles);
        s
    }

    #[test]
    fn round_trips_a_sample() {
        let mut out = Vec::new();
        encode_sample(&sample(), &mut out).unwrap();
        let (frame, used) = decode(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(decode_sample(&frame).unwrap(), sample());
    }

    #[test]
    fn rejects_each_kind_of_bad_header() {
        let mut good = Vec::new();
        encode_sample(&sample(), &mut good).unwrap();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            decode(&bad_magic),
            Err(FrameError::BadMagic { .. })
        ));
        let mut bad_version = good.clone();
        bad_version[4] = 0;
        assert!(matches!(
            decode(&bad_version),
            Err(FrameError::BadVersion { version: 0 })
        ));
        let mut too_long = good.clone();
        too_long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&too_long), Err(FrameError::TooLong { .. })));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            decode(&flipped),
            Err(FrameError::BadChecksum { .. })
        ));
        assert!(matches!(
            decode(&good[..10]),
            Err(FrameError::Incomplete { needed: 6 })
        ));
    }

    #[test]
    fn a_valid_crc_over_junk_is_still_rejected() {
        let junk = vec![0xffu8; 64];
        let mut out = Vec::new();
        encode(FrameKind::Sample, &junk, &mut out).unwrap();
        let (frame, _) = decode(&out).unwrap();
        assert!(matches!(
            decode_sample(&frame),
            Err(FrameError::BadPayload { .. })
        ));
    }

    #[test]
    fn reader_skips_a_corrupt_frame_and_keeps_the_next() {
        let mut stream = Vec::new();
        encode_sample(&sample(), &mut stream).unwrap();
        let first_len = stream.len();
        encode_sample(&sample(), &mut stream).unwrap();
        stream[first_len - 1] ^= 1; // corrupt the first frame's payload
        let mut reader = FrameReader::new();
        for chunk in stream.chunks(5) {
            reader.push(chunk);
        }
        assert!(reader.next_sample().is_err());
        assert_eq!(reader.next_sample().unwrap(), Some(sample()));
        assert_eq!(reader.next_sample().unwrap(), None);
    }

    #[test]
    fn resync_keeps_a_partial_magic_at_the_end_of_the_buffer() {
        let mut good = Vec::new();
        encode_sample(&sample(), &mut good).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut reader = FrameReader::new();
        reader.push(&bad);
        reader.push(&good[..2]); // "AU" of the next frame arrives with the bad one
        assert!(reader.next_sample().is_err());
        reader.push(&good[2..]);
        assert_eq!(reader.next_sample().unwrap(), Some(sample()));
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        (
            any::<u64>(),
            any::<u64>(),
            1u8..=8,
            proptest::collection::vec((any::<u16>(), any::<Option<u64>>()), 0..40),
        )
            .prop_map(|(vm, ts, source, readings)| Sample {
                schema: SAMPLE_SCHEMA,
                source,
                vm,
                ts_ns: ts,
                readings: readings
                    .into_iter()
                    .map(|(metric, value)| Reading::from_parts(metric, value))
                    .collect(),
            })
    }

    use crate::sample::Reading;

    proptest! {
        #[test]
        fn any_sample_round_trips_through_a_chunked_stream(
            samples in proptest::collection::vec(arb_sample(), 1..8),
            chunk in 1usize..300,
        ) {
            let mut stream = Vec::new();
            for s in &samples {
                encode_sample(s, &mut stream).unwrap();
            }
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                reader.push(piece);
                while let Some(s) = reader.next_sample().unwrap() {
                    got.push(s);
                }
            }
            prop_assert_eq!(got, samples);
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_overread(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut reader = FrameReader::new();
            reader.push(&bytes);
            for _ in 0..bytes.len() + 1 {
                if let Ok(None) = reader.next_sample() { break }
            }
            prop_assert!(reader.buffered() <= bytes.len());
        }

        #[test]
        fn single_bit_flips_are_caught(s in arb_sample(), bit in any::<usize>()) {
            let mut stream = Vec::new();
            encode_sample(&s, &mut stream).unwrap();
            let bit = bit % (stream.len() * 8);
            stream[bit / 8] ^= 1 << (bit % 8);
            // Every header field is checked and the CRC covers the payload.
            prop_assert!(decode(&stream).is_err());
        }
    }

    fn flow(n: u8) -> crate::GuestFlow {
        crate::GuestFlow {
            addr: [n; 16],
            port: 9000,
            proto: crate::flows::PROTO_TCP,
            reserved: 0,
            sockets: 1,
        }
    }

    #[test]
    fn flow_reports_round_trip_between_samples() {
        let mut report = FlowReport::new(5);
        report.flows = (0..3).map(flow).collect();
        let sample = Sample::new(1, Source::Shim, 7);
        let mut out = Vec::new();
        encode_sample(&sample, &mut out).unwrap();
        encode_flows(&report, &mut out).unwrap();
        let mut reader = FrameReader::new();
        reader.push(&out);
        assert_eq!(reader.next_record(), Ok(Some(Record::Sample(sample))));
        assert_eq!(reader.next_record(), Ok(Some(Record::Flows(report))));
        assert_eq!(reader.next_record(), Ok(None));
    }

    #[test]
    fn a_report_over_the_flow_cap_is_refused_both_ways() {
        let mut report = FlowReport::new(5);
        report.flows = (0..=MAX_FLOWS as u8).map(flow).collect();
        let mut out = Vec::new();
        assert!(matches!(
            encode_flows(&report, &mut out),
            Err(FrameError::TooManyFlows { .. })
        ));
        // A hostile sender framing it by hand is refused on decode.
        let bytes = rkyv::to_bytes::<rancor::Error>(&report).unwrap();
        encode(FrameKind::Flows, &bytes, &mut out).unwrap();
        let (frame, _) = decode(&out).unwrap();
        assert!(matches!(
            decode_flows(&frame),
            Err(FrameError::TooManyFlows { count }) if count == MAX_FLOWS + 1
        ));
    }
}
