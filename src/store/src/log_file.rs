//! An append-only file of checksummed records: the one on-disk format of the store. The WAL, the
//! series catalog, the event log and the block segments are all log files.
//!
//! ```text
//! file   := header record*
//! header := "AUGRSTOR" kind:u32 version:u32                       (16 bytes)
//! record := magic:u32 len:u32 crc32(payload):u32 payload[len]     (12 + len bytes)
//! ```
//! Little-endian. A record whose length or checksum is wrong is skipped: the reader looks for the
//! next magic whose record checks out, so one corrupt record costs only itself. Bytes after the
//! last good record (a write cut short by a crash) are a torn tail; opening for append truncates
//! them. Every skip is reported, never silent.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const FILE_MAGIC: &[u8; 8] = b"AUGRSTOR";
const FILE_VERSION: u32 = 1;
pub const FILE_HEADER_LEN: u64 = 16;
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"AUGr");
pub const RECORD_HEADER_LEN: usize = 12;
/// The largest record any log holds; a length above it is corruption.
pub const MAX_RECORD: usize = 64 << 20;

/// What a log file is for; stored in its header so files cannot be mixed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LogKind {
    Wal = 1,
    Catalog = 2,
    Segment = 3,
    Events = 4,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Augur store file of this kind and version")]
    BadHeader { path: PathBuf },
    #[error("record of {len} bytes exceeds the {MAX_RECORD}-byte limit")]
    TooLarge { len: usize },
}

/// A record read back, with where it sits in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// What reading a log found besides good records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Byte ranges skipped inside the file (corrupt records).
    pub corrupt: Vec<(u64, u64)>,
    /// Bytes after the last good record.
    pub torn_tail: u64,
    /// Where the next record would go: the end of the last good record.
    pub good_end: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn header(kind: LogKind) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[..8].copy_from_slice(FILE_MAGIC);
    h[8..12].copy_from_slice(&(kind as u32).to_le_bytes());
    h[12..16].copy_from_slice(&FILE_VERSION.to_le_bytes());
    h
}

/// Encodes one record.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), LogError> {
    if payload.len() > MAX_RECORD {
        return Err(LogError::TooLarge { len: payload.len() });
    }
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Splits the body of a log (after its header) into good records; `base` is the body's file
/// offset.
pub fn scan(body: &[u8], base: u64) -> (Vec<Record>, ScanReport) {
    let mut records = Vec::new();
    let mut report = ScanReport::default();
    let mut at = 0usize;
    let mut last_good_end = 0usize;
    let mut corrupt_from: Option<usize> = None;
    while at + RECORD_HEADER_LEN <= body.len() {
        let valid = (|| {
            if u32_at(body, at)? != RECORD_MAGIC {
                return None;
            }
            let len = u32_at(body, at + 4)? as usize;
            if len > MAX_RECORD {
                return None;
            }
            let payload = body.get(at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + len)?;
            (crc32fast::hash(payload) == u32_at(body, at + 8)?).then_some(payload)
        })();
        match valid {
            Some(payload) => {
                if let Some(from) = corrupt_from.take() {
                    report.corrupt.push((base + from as u64, base + at as u64));
                }
                records.push(Record {
                    offset: base + at as u64,
                    payload: payload.to_vec(),
                });
                at += RECORD_HEADER_LEN + payload.len();
                last_good_end = at;
            }
            None => {
                corrupt_from.get_or_insert(at);
                at += 1;
            }
        }
    }
    // Damage with no good record after it is a torn tail, not a hole.
    report.torn_tail = (body.len() - last_good_end) as u64;
    report.good_end = base + last_good_end as u64;
    (records, report)
}

/// Reads a whole log file: its records and what was skipped.
pub fn read_log(path: &Path, kind: LogKind) -> Result<(Vec<Record>, ScanReport), LogError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    if bytes.len() < FILE_HEADER_LEN as usize || bytes[..16] != header(kind) {
        return Err(LogError::BadHeader {
            path: path.to_path_buf(),
        });
    }
    Ok(scan(&bytes[FILE_HEADER_LEN as usize..], FILE_HEADER_LEN))
}

/// A log file open for appending.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    len: u64,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Creates a new, empty log (failing if it exists). The header is written and synced under
    /// a temporary name and the file renamed into place, so a crash never leaves a log with a
    /// torn header behind: under its final name a log always has a whole header.
    pub fn create(path: &Path, kind: LogKind) -> Result<Self, LogError> {
        if path.exists() {
            return Err(LogError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        let staging = staging_path(path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)
            .map_err(io_err(&staging))?;
        file.write_all(&header(kind)).map_err(io_err(&staging))?;
        file.sync_all().map_err(io_err(&staging))?;
        std::fs::rename(&staging, path).map_err(io_err(path))?;
        sync_dir(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: FILE_HEADER_LEN,
            buf: Vec::new(),
        })
    }

    /// Opens an existing log for appending after `good_end` (from [`read_log`]), cutting off a
    /// torn tail.
    pub fn append_to(path: &Path, good_end: u64) -> Result<Self, LogError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(good_end).map_err(io_err(path))?;
        file.seek(SeekFrom::Start(good_end)).map_err(io_err(path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: good_end,
            buf: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= FILE_HEADER_LEN
    }

    /// Appends records in one write; returns the offset of each. On failure (a full disk) the
    /// file is cut back to where it was, so a half-written record never stays behind.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<Vec<u64>, LogError> {
        self.buf.clear();
        let mut offsets = Vec::with_capacity(payloads.len());
        for payload in payloads {
            offsets.push(self.len + self.buf.len() as u64);
            encode_record(payload, &mut self.buf)?;
        }
        if let Err(source) = self.file.write_all(&self.buf) {
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(LogError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += self.buf.len() as u64;
        Ok(offsets)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

/// Makes a file's creation, rename or removal in its directory durable.
/// Where [`LogWriter::create`] writes a log's header before renaming it into place; a leftover
/// one (a crash between the two) is overwritten by the next create and never read.
fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.new"))
}

pub fn sync_dir(path: &Path) -> Result<(), LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Reads one record's payload at `offset`, checking it.
pub fn read_record_at(
    file: &File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Option<Vec<u8>>, LogError> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; RECORD_HEADER_LEN + len];
    file.read_exact_at(&mut bytes, offset)
        .map_err(io_err(path))?;
    let (records, _) = scan(&bytes, offset);
    Ok(records
        .into_iter()
        .next()
        .filter(|r| r.offset == offset)
        .map(|r| r.payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_damage_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::create(&path, LogKind::Events).unwrap();
        let offsets = w.append(&[b"one", b"two", b"three"]).unwrap();
        w.sync().unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte of "two" and cut "three" short by one byte.
        bytes[offsets[1] as usize + RECORD_HEADER_LEN] ^= 0xff;
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        let (records, report) = read_log(&path, LogKind::Events).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|r| r.payload.as_slice())
                .collect::<Vec<_>>(),
            vec![b"one".as_slice()]
        );
        assert!(report.torn_tail > 0);
        let mut w = LogWriter::append_to(&path, report.good_end).unwrap();
        w.append(&[b"four"]).unwrap();
        let (records, report) = read_log(&path, LogKind::Events).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(report.torn_tail, 0);
    }

    #[test]
    fn a_hole_in_the_middle_costs_only_itself() {
        let mut body = Vec::new();
        for p in [b"aaaa", b"bbbb", b"cccc"] {
            encode_record(p, &mut body).unwrap();
        }
        body[RECORD_HEADER_LEN + 16 + 2] ^= 1; // inside "bbbb"
        let (records, report) = scan(&body, 0);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].payload, b"cccc");
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.torn_tail, 0);
    }

    #[test]
    fn wrong_kind_or_junk_is_a_bad_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        LogWriter::create(&path, LogKind::Wal).unwrap();
        assert!(matches!(
            read_log(&path, LogKind::Catalog),
            Err(LogError::BadHeader { .. })
        ));
        std::fs::write(&path, b"junk").unwrap();
        assert!(matches!(
            read_log(&path, LogKind::Wal),
            Err(LogError::BadHeader { .. })
        ));
    }

    #[test]
    fn a_crash_while_creating_leaves_no_log_with_a_torn_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal-00000002.log");
        // What a crash between writing the header and the rename leaves: a partial staging file.
        std::fs::write(staging_path(&path), &header(LogKind::Wal)[..5]).unwrap();
        assert!(!path.exists());
        LogWriter::create(&path, LogKind::Wal).unwrap();
        let (records, report) = read_log(&path, LogKind::Wal).unwrap();
        assert!(records.is_empty());
        assert_eq!(report.good_end, FILE_HEADER_LEN);
        assert!(!staging_path(&path).exists());
        assert!(LogWriter::create(&path, LogKind::Wal).is_err());
    }
}
