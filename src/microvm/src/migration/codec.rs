//! The migration stream's records: `kind u8 | length u32 LE | payload`, and the little-endian
//! field codec their payloads use. The stream's peer is untrusted: every length is bounded
//! before anything is allocated, and every read is checked.

use super::MigrationError;
use crate::layout::PAGE;
use std::io::{Read, Write};

/// Pages carried by one `Pages` record (1 MiB).
pub const PAGES_PER_RECORD: usize = 256;
/// The largest payload a record may have: a full `Pages` record and its header.
pub const MAX_PAYLOAD: usize = 12 + PAGES_PER_RECORD * PAGE as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Header = 1,
    Pages = 2,
    Vcpu = 3,
    Done = 4,
    Ready = 5,
    Go = 6,
    Started = 7,
    Abort = 8,
    /// Like `Pages`, with no data: the pages are all zero.
    Zero = 9,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Kind::Header,
            2 => Kind::Pages,
            3 => Kind::Vcpu,
            4 => Kind::Done,
            5 => Kind::Ready,
            6 => Kind::Go,
            7 => Kind::Started,
            8 => Kind::Abort,
            9 => Kind::Zero,
            _ => return None,
        })
    }
}

/// Writes one record made of `parts`; returns the bytes it put on the stream.
pub fn write_record(out: &mut impl Write, kind: Kind, parts: &[&[u8]]) -> std::io::Result<u64> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(len <= MAX_PAYLOAD);
    let mut header = [0u8; 5];
    header[0] = kind as u8;
    header[1..].copy_from_slice(&(len as u32).to_le_bytes());
    out.write_all(&header)?;
    for part in parts {
        out.write_all(part)?;
    }
    Ok(5 + len as u64)
}

/// Reads the next record into `payload` (reused between calls) and returns its kind.
pub fn read_record(input: &mut impl Read, payload: &mut Vec<u8>) -> Result<Kind, MigrationError> {
    let mut header = [0u8; 5];
    input.read_exact(&mut header).map_err(MigrationError::Io)?;
    let kind = Kind::from_u8(header[0])
        .ok_or_else(|| MigrationError::Malformed(format!("unknown record kind {}", header[0])))?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(MigrationError::Malformed(format!(
            "a {kind:?} record of {len} bytes is over the {MAX_PAYLOAD}-byte limit"
        )));
    }
    payload.resize(len, 0);
    input.read_exact(payload).map_err(MigrationError::Io)?;
    Ok(kind)
}

/// Reads the next record, which must be `want`; an Abort instead gives the peer's reason.
pub fn expect(input: &mut impl Read, want: Kind) -> Result<(), MigrationError> {
    let mut payload = Vec::new();
    match read_record(input, &mut payload)? {
        kind if kind == want => Ok(()),
        Kind::Abort => Err(aborted(&payload)),
        other => Err(MigrationError::Malformed(format!(
            "expected {want:?} from the peer, got {other:?}"
        ))),
    }
}

/// The error an Abort record's payload stands for.
pub fn aborted(payload: &[u8]) -> MigrationError {
    MigrationError::PeerAborted(String::from_utf8_lossy(payload).into_owned())
}

/// Appends little-endian fields.
#[derive(Debug, Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A length-prefixed byte string.
    pub fn blob(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32).bytes(v)
    }
}

/// Reads little-endian fields from an untrusted payload.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, at: 0, what }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], MigrationError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(MigrationError::Malformed(format!(
                "the {} record is truncated at byte {}",
                self.what, self.at
            )));
        };
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MigrationError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, MigrationError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, MigrationError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, MigrationError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, MigrationError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Result<f64, MigrationError> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub fn bytes<const N: usize>(&mut self) -> Result<[u8; N], MigrationError> {
        self.array()
    }
    /// A length-prefixed byte string of at most `max` bytes.
    pub fn blob(&mut self, max: usize) -> Result<&'a [u8], MigrationError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(MigrationError::Malformed(format!(
                "a {len}-byte field in the {} record is over its {max}-byte limit",
                self.what
            )));
        }
        self.take(len)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.at..];
        self.at = self.buf.len();
        out
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), MigrationError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(MigrationError::Malformed(format!(
                "the {} record has {} trailing bytes",
                self.what,
                self.buf.len() - self.at
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let mut stream = Vec::new();
        write_record(&mut stream, Kind::Vcpu, &[b"ab", b"cd"]).unwrap();
        let mut payload = Vec::new();
        let kind = read_record(&mut stream.as_slice(), &mut payload).unwrap();
        assert_eq!((kind, payload.as_slice()), (Kind::Vcpu, &b"abcd"[..]));

        let unknown = [99u8, 0, 0, 0, 0];
        assert!(read_record(&mut unknown.as_slice(), &mut payload).is_err());
        let huge = [2u8, 0xff, 0xff, 0xff, 0xff];
        let err = read_record(&mut huge.as_slice(), &mut payload).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let short = [2u8, 10, 0, 0, 0, 1, 2];
        assert!(read_record(&mut short.as_slice(), &mut payload).is_err());
    }

    #[test]
    fn decoder_bounds_every_read() {
        let mut enc = Encoder::default();
        enc.u32(7).blob(b"xyz").u8(1);
        let mut dec = Decoder::new(&enc.0, "test");
        assert_eq!(dec.u32().unwrap(), 7);
        // The same blob read with a lower limit is refused.
        assert!(Decoder::new(&enc.0[4..], "test").blob(2).is_err());
        assert_eq!(dec.blob(3).unwrap(), b"xyz");
        assert!(dec.finish().is_err());
        assert_eq!(dec.u8().unwrap(), 1);
        dec.finish().unwrap();
        assert!(dec.u64().is_err());
    }
}
