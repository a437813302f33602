//! A bounds-checked cursor over untrusted bytes: every read either succeeds or
//! returns a `Truncated` error naming what was being read, never panics.

use core::fmt;

/// Input ended before a field could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The field that did not fit.
    pub what: &'static str,
    /// Offset at which it was expected.
    pub offset: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "input truncated reading {} at offset {}",
            self.what, self.offset
        )
    }
}

impl std::error::Error for Truncated {}

/// Cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at offset 0.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Truncated {
                what,
                offset: self.pos,
            }),
        }
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Truncated> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Little-endian u16.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Big-endian u8.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Big-endian u16 (TPM wire format).
    pub fn u16_be(&mut self, what: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Big-endian u32 (TPM wire format).
    pub fn u32_be(&mut self, what: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// Big-endian u64 (TPM wire format).
    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B: big-endian u16 size, then that many bytes.
    pub fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], Truncated> {
        let n = self.u16_be(what)?;
        self.take(usize::from(n), what)
    }
}

/// Reads `N` bytes at `offset` of `data`.
pub fn field<const N: usize>(data: &[u8], offset: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = data.get(offset..offset + N) {
        a.copy_from_slice(s);
    }
    a
}
