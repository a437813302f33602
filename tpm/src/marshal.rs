//! Big-endian TPM marshalling: a bounds-checked reader that fails with
//! TPM_RC_INSUFFICIENT (never panics) and a growable writer.

use alloc::vec::Vec;

use crate::rc::{self, CmdResult, Rc};

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
    pub fn bytes(&mut self, n: usize) -> CmdResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Rc::new(rc::INSUFFICIENT))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(Rc::new(rc::INSUFFICIENT))?;
        self.pos = end;
        Ok(out)
    }
    pub fn u8(&mut self) -> CmdResult<u8> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> CmdResult<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> CmdResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> CmdResult<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// A TPM2B: u16 size then bytes; a size over `max` is TPM_RC_SIZE.
    pub fn tpm2b(&mut self, max: usize) -> CmdResult<&'a [u8]> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(Rc::new(rc::SIZE));
        }
        self.bytes(n)
    }
    /// TPMI_YES_NO.
    pub fn yes_no(&mut self) -> CmdResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Rc::new(rc::VALUE)),
        }
    }
    /// All bytes consumed, or TPM_RC_SIZE (extra bytes after the parameters).
    pub fn finish(&self) -> CmdResult<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Rc::new(rc::SIZE))
        }
    }
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// A TPM2B; callers keep contents under 64 KiB (all TPM buffers are).
    pub fn tpm2b(&mut self, b: &[u8]) {
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(n);
        self.bytes(b.get(..usize::from(n)).unwrap_or(b));
    }
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_overruns() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert_eq!(r.tpm2b(64), Err(Rc::new(rc::INSUFFICIENT)));
        let mut r = Reader::new(&[0, 2, 1, 2, 9]);
        assert_eq!(r.tpm2b(1), Err(Rc::new(rc::SIZE)));
        let mut r = Reader::new(&[0, 2, 1, 2, 9]);
        assert_eq!(r.tpm2b(2).unwrap(), &[1, 2]);
        assert_eq!(r.finish(), Err(Rc::new(rc::SIZE)));
        assert_eq!(r.u32(), Err(Rc::new(rc::INSUFFICIENT)));
        assert_eq!(r.u8().unwrap(), 9);
        assert!(r.finish().is_ok());
    }
}
