//! Just enough ELF64 to load a guest firmware image: the entry point and
//! the PT_LOAD segments, every offset and address checked. Pure: no memory
//! is touched.

/// Why the guest firmware could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// Not a little-endian x86-64 ELF64 executable.
    NotElf,
    /// A header or segment lies outside the file.
    Truncated,
    /// A segment or the entry point lies outside the firmware's part of guest memory.
    OutOfBounds {
        /// The offending address.
        addr: u64,
    },
    /// No loadable segment.
    Empty,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotElf => write!(f, "not an x86-64 ELF64 executable"),
            Self::Truncated => write!(f, "truncated ELF file"),
            Self::OutOfBounds { addr } => {
                write!(f, "address {addr:#x} outside the firmware's guest memory")
            }
            Self::Empty => write!(f, "no loadable segment"),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, LoadError> {
    Ok(u16::from_le_bytes(
        b.get(o..o + 2)
            .ok_or(LoadError::Truncated)?
            .try_into()
            .map_err(|_| LoadError::Truncated)?,
    ))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, LoadError> {
    Ok(u32::from_le_bytes(
        b.get(o..o + 4)
            .ok_or(LoadError::Truncated)?
            .try_into()
            .map_err(|_| LoadError::Truncated)?,
    ))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, LoadError> {
    Ok(u64::from_le_bytes(
        b.get(o..o + 8)
            .ok_or(LoadError::Truncated)?
            .try_into()
            .map_err(|_| LoadError::Truncated)?,
    ))
}

/// A PT_LOAD segment: where in the file, where in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// File offset.
    pub offset: usize,
    /// Bytes from the file.
    pub file_size: usize,
    /// Guest-physical load address.
    pub gpa: u64,
    /// Bytes in memory (the rest zeroed).
    pub mem_size: u64,
}

/// Parses an ELF64 image for loading into `[lo, hi)`; returns the entry
/// point and the segments. Pure: no memory is touched.
pub fn parse_elf(
    image: &[u8],
    lo: u64,
    hi: u64,
    out: &mut [Segment; 8],
) -> Result<(u64, usize), LoadError> {
    if image.get(0..4) != Some(b"\x7FELF") || image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return Err(LoadError::NotElf);
    }
    if u16_at(image, 18)? != 0x3E {
        return Err(LoadError::NotElf);
    }
    let entry = u64_at(image, 24)?;
    let phoff = usize::try_from(u64_at(image, 32)?).map_err(|_| LoadError::Truncated)?;
    let phentsize = usize::from(u16_at(image, 54)?);
    let phnum = usize::from(u16_at(image, 56)?);
    if phentsize < 56 {
        return Err(LoadError::NotElf);
    }
    let inside = |a: u64, len: u64| a >= lo && a.checked_add(len).is_some_and(|e| e <= hi);
    let mut count = 0;
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or(LoadError::Truncated)?;
        if u32_at(image, ph)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = usize::try_from(u64_at(image, ph + 8)?).map_err(|_| LoadError::Truncated)?;
        let gpa = u64_at(image, ph + 24)?;
        let file_size =
            usize::try_from(u64_at(image, ph + 32)?).map_err(|_| LoadError::Truncated)?;
        let mem_size = u64_at(image, ph + 40)?;
        if offset
            .checked_add(file_size)
            .is_none_or(|e| e > image.len())
            || file_size as u64 > mem_size
        {
            return Err(LoadError::Truncated);
        }
        if !inside(gpa, mem_size) {
            return Err(LoadError::OutOfBounds { addr: gpa });
        }
        let slot = out.get_mut(count).ok_or(LoadError::Truncated)?;
        *slot = Segment {
            offset,
            file_size,
            gpa,
            mem_size,
        };
        count += 1;
    }
    if count == 0 {
        return Err(LoadError::Empty);
    }
    if !inside(entry, 1) {
        return Err(LoadError::OutOfBounds { addr: entry });
    }
    Ok((entry, count))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn elf(entry: u64, segs: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let mut f = std::vec![0u8; 64 + 56 * segs.len()];
        f[0..4].copy_from_slice(b"\x7FELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&0x3Eu16.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, (gpa, data, mem)) in segs.iter().enumerate() {
            let off = f.len();
            f.extend_from_slice(data);
            let ph = 64 + 56 * i;
            f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
            f[ph + 8..ph + 16].copy_from_slice(&(off as u64).to_le_bytes());
            f[ph + 24..ph + 32].copy_from_slice(&gpa.to_le_bytes());
            f[ph + 32..ph + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            f[ph + 40..ph + 48].copy_from_slice(&mem.to_le_bytes());
        }
        f
    }

    #[test]
    fn parses_segments_and_entry() {
        let img = elf(0x2000, &[(0x2000, b"code", 0x1000), (0x4000, b"", 0x100)]);
        let mut segs = [Segment {
            offset: 0,
            file_size: 0,
            gpa: 0,
            mem_size: 0,
        }; 8];
        let (entry, n) = parse_elf(&img, 0x1000, 0x10000, &mut segs).unwrap();
        assert_eq!((entry, n), (0x2000, 2));
        assert_eq!(segs[0].gpa, 0x2000);
        assert_eq!(
            &img[segs[0].offset..segs[0].offset + segs[0].file_size],
            b"code"
        );
    }

    #[test]
    fn refuses_bad_images() {
        let mut segs = [Segment {
            offset: 0,
            file_size: 0,
            gpa: 0,
            mem_size: 0,
        }; 8];
        assert_eq!(parse_elf(b"nope", 0, 1, &mut segs), Err(LoadError::NotElf));
        let outside = elf(0x2000, &[(0x20_0000, b"x", 1)]);
        assert_eq!(
            parse_elf(&outside, 0x1000, 0x10000, &mut segs),
            Err(LoadError::OutOfBounds { addr: 0x20_0000 })
        );
        let bad_entry = elf(0x9_0000, &[(0x2000, b"x", 1)]);
        assert_eq!(
            parse_elf(&bad_entry, 0x1000, 0x10000, &mut segs),
            Err(LoadError::OutOfBounds { addr: 0x9_0000 })
        );
        let mut truncated = elf(0x2000, &[(0x2000, b"abcdef", 6)]);
        truncated.truncate(truncated.len() - 3);
        assert_eq!(
            parse_elf(&truncated, 0x1000, 0x10000, &mut segs),
            Err(LoadError::Truncated)
        );
        let wraps = elf(0x2000, &[(u64::MAX - 1, b"", 10)]);
        assert!(matches!(
            parse_elf(&wraps, 0x1000, 0x10000, &mut segs),
            Err(LoadError::OutOfBounds { .. })
        ));
        let none = elf(0x2000, &[]);
        assert_eq!(
            parse_elf(&none, 0x1000, 0x10000, &mut segs),
            Err(LoadError::Empty)
        );
    }
}
