//! The server's state file: one engine state blob plus the host clock, written
//! atomically (temp file, fsync, rename, fsync of the directory) so that a crash
//! at any point leaves either the old or the new state on disk, never a mix.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RIVETTPM";
const FORMAT_VERSION: u32 = 1;
/// magic, version, clock, blob length.
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
const CHECKSUM_LEN: usize = 8;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    /// The host clock (milliseconds) when the file was written; the next run
    /// continues from here so that the TPM clock never goes back on a restart.
    pub clock_ms: u64,
    /// The engine's own persistent-state blob.
    pub engine_state: Vec<u8>,
}

/// Why a state file could not be used.
#[derive(Debug)]
pub enum StateFileError {
    Io(io::Error),
    BadMagic,
    UnsupportedVersion(u32),
    Truncated { expected: usize, found: usize },
    ChecksumMismatch,
}

impl fmt::Display for StateFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::BadMagic => write!(f, "not a Rivet TPM state file (bad magic)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported state file version {v}"),
            Self::Truncated { expected, found } => {
                write!(f, "truncated: expected {expected} bytes, found {found}")
            }
            Self::ChecksumMismatch => write!(f, "checksum mismatch (file corrupted)"),
        }
    }
}

impl std::error::Error for StateFileError {}

impl From<io::Error> for StateFileError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// FNV-1a, 64 bit: catches torn or bit-flipped files before the engine sees
/// them; it is not a defence against an attacker who can write the file.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl SavedState {
    pub fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(self.engine_state.len()).expect("engine state over 4 GiB");
        let mut out = Vec::with_capacity(HEADER_LEN + self.engine_state.len() + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&self.clock_ms.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.engine_state);
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateFileError> {
        let truncated = |expected| StateFileError::Truncated {
            expected,
            found: bytes.len(),
        };
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(truncated(HEADER_LEN + CHECKSUM_LEN));
        }
        if &bytes[..8] != MAGIC {
            return Err(StateFileError::BadMagic);
        }
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(StateFileError::UnsupportedVersion(version));
        }
        let clock_ms = u64_at(12);
        let len = u32_at(20) as usize;
        let total = HEADER_LEN + len + CHECKSUM_LEN;
        if bytes.len() != total {
            return Err(truncated(total));
        }
        if checksum(&bytes[..HEADER_LEN + len]) != u64_at(HEADER_LEN + len) {
            return Err(StateFileError::ChecksumMismatch);
        }
        Ok(Self {
            clock_ms,
            engine_state: bytes[HEADER_LEN..HEADER_LEN + len].to_vec(),
        })
    }

    /// Reads `path`; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, StateFileError> {
        match fs::read(path) {
            Ok(bytes) => Self::decode(&bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn store(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, &self.encode())
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that readers (and a crash) see the old or
/// the new content in full.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            clock_ms: 0x1122_3344_5566,
            engine_state: (0..=255).collect(),
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(SavedState::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn refuses_every_single_bit_flip_and_truncation() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(SavedState::decode(&bad).is_err(), "flip at {i} accepted");
            assert!(
                SavedState::decode(&bytes[..i]).is_err(),
                "truncation at {i} accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SavedState::decode(&longer).is_err());
    }

    #[test]
    fn store_then_load_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tpm.state");
        assert!(SavedState::load(&path).unwrap().is_none());
        sample().store(&path).unwrap();
        let mut next = sample();
        next.clock_ms += 1;
        next.store(&path).unwrap();
        assert_eq!(SavedState::load(&path).unwrap().unwrap(), next);
        assert!(!temp_path(&path).exists());
    }
}
