//! tracefs: where it is mounted, tracepoint ids, and tracepoint record formats.
//!
//! Debian does not mount tracefs at /sys/kernel/tracing by default; [`Tracefs::discover`] finds
//! it in the mount table or mounts it. [`Tracefs::with_root`] points at any directory laid out
//! the same way, so tests run on a recorded copy.

use std::path::{Path, PathBuf};

pub const DEFAULT_MOUNT: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at {path} failed")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Malformed tracepoint file {path}: {reason}")]
    Malformed { path: String, reason: String },
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

impl Field {
    /// Reads the field as an unsigned little-endian integer from a raw record.
    pub fn read_u64(&self, raw: &[u8]) -> Option<u64> {
        let bytes = raw.get(self.offset..self.offset.checked_add(self.size)?)?;
        let mut word = [0u8; 8];
        match self.size {
            1 | 2 | 4 | 8 => word[..self.size].copy_from_slice(bytes),
            _ => return None,
        }
        Some(u64::from_le_bytes(word))
    }
}

/// The record layout of one tracepoint (its `format` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// Parses a `format` file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if !line.starts_with("field:") {
                continue;
            }
            let mut name = None;
            let mut offset = None;
            let mut size = None;
            let mut signed = false;
            for part in line.split(';').map(str::trim) {
                if let Some(decl) = part.strip_prefix("field:") {
                    // "unsigned int exit_reason", "char comm[16]": the name is the last word.
                    let last = decl.split_whitespace().last().unwrap_or_default();
                    name = Some(last.split('[').next().unwrap_or(last).to_string());
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("signed:") {
                    signed = v == "1";
                }
            }
            match (name, offset, size) {
                (Some(name), Some(offset), Some(size)) if !name.is_empty() => fields.push(Field {
                    name,
                    offset,
                    size,
                    signed,
                }),
                _ => return Err(format!("cannot parse field line {line:?}")),
            }
        }
        if fields.is_empty() {
            return Err("no fields".into());
        }
        Ok(Self { fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A tracefs mount (or a copy of one).
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

/// Finds a tracefs mount point in a mount table (`/proc/self/mounts` format).
pub fn find_in_mounts(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (_, target, fstype) = (parts.next()?, parts.next()?, parts.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(target))
    })
}

impl Tracefs {
    pub fn with_root(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// Finds the mounted tracefs, mounting it at [`DEFAULT_MOUNT`] if it is absent.
    pub fn discover() -> Result<Self, TracefsError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if let Some(root) = find_in_mounts(&mounts) {
            return Ok(Self { root });
        }
        let target = Path::new(DEFAULT_MOUNT);
        augur_sys::mount_tracefs(target).map_err(|source| TracefsError::Mount {
            path: DEFAULT_MOUNT.into(),
            source,
        })?;
        Ok(Self::with_root(target))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn event_file(
        &self,
        system: &str,
        event: &str,
        file: &str,
    ) -> Result<(PathBuf, String), TracefsError> {
        let path = self.root.join("events").join(system).join(event).join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok((path, text))
    }

    /// The perf id of a tracepoint.
    pub fn event_id(&self, system: &str, event: &str) -> Result<u64, TracefsError> {
        let (path, text) = self.event_file(system, event, "id")?;
        text.trim().parse().map_err(|_| TracefsError::Malformed {
            path: path.display().to_string(),
            reason: format!("id {:?} is not a number", text.trim()),
        })
    }

    /// The record layout of a tracepoint.
    pub fn event_format(&self, system: &str, event: &str) -> Result<EventFormat, TracefsError> {
        let (path, text) = self.event_file(system, event, "format")?;
        EventFormat::parse(&text).map_err(|reason| TracefsError::Malformed {
            path: path.display().to_string(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tracefs_in_a_mount_table() {
        let mounts = "proc /proc proc rw 0 0\nnodev /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(
            find_in_mounts(mounts),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(find_in_mounts("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn rejects_a_broken_format() {
        assert!(EventFormat::parse("name: x\nformat:\n").is_err());
        assert!(EventFormat::parse("\tfield:int x;\toffset:zz;\tsize:4;\tsigned:1;\n").is_err());
    }

    #[test]
    fn field_reads_are_bounds_checked() {
        let f = Field {
            name: "x".into(),
            offset: 6,
            size: 4,
            signed: false,
        };
        assert_eq!(f.read_u64(&[0u8; 8]), None);
        assert_eq!(f.read_u64(&[0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), Some(1));
    }
}
