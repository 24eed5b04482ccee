//! The mesh key: a secret every host of one mesh shares, given by the operator.

use std::path::Path;

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// A pre-shared key. Its bytes never appear in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshKey(Vec<u8>);

impl std::fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeshKey({} bytes)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the mesh key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the mesh key in {path} is not hexadecimal")]
    NotHex { path: String },
    #[error("the mesh key in {path} has {bytes} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")]
    TooShort { path: String, bytes: usize },
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl MeshKey {
    /// A key from raw bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_BYTES).then(|| Self(bytes.to_vec()))
    }

    /// Reads a key file holding the key in hexadecimal.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let bytes = decode_hex(&text).ok_or(KeyError::NotHex {
            path: shown.clone(),
        })?;
        Self::from_bytes(&bytes).ok_or(KeyError::TooShort {
            path: shown,
            bytes: bytes.len(),
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_hex_and_refuses_short_or_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        let key = MeshKey::load(&good).unwrap();
        assert_eq!(format!("{key:?}"), "MeshKey(32 bytes)");
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        assert!(matches!(
            MeshKey::load(&short),
            Err(KeyError::TooShort { bytes: 2, .. })
        ));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not hex at all").unwrap();
        assert!(matches!(MeshKey::load(&bad), Err(KeyError::NotHex { .. })));
        assert!(matches!(
            MeshKey::load(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}
