//! Just enough ELF64 to place the SVSM kernel: the entry point and the
//! PT_LOAD segments at their physical addresses, every offset checked.
//! Pure: reads bytes, touches nothing.

use crate::error::BuildError;

const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
/// Guest-physical addresses are at most 52 bits wide.
const MAX_GPA: u64 = 1 << 52;
/// No SVSM kernel needs more; larger `p_memsz` totals are corrupt headers,
/// and would otherwise make the builder walk billions of pages.
const MAX_IMAGE: u64 = 1 << 30;

/// One loadable segment: file bytes at a guest-physical address, then zeros
/// up to `mem_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address (`p_paddr`).
    pub gpa: u64,
    /// The bytes the file holds for it.
    pub data: Vec<u8>,
    /// Size in memory (`p_memsz`), at least `data.len()`.
    pub mem_size: u64,
}

/// A parsed kernel image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelElf {
    /// The ELF entry point (the kernel's 32-bit PVH-style entry).
    pub entry: u64,
    /// Loadable segments with memory, in file order.
    pub segments: Vec<Segment>,
}

fn bytes<const N: usize>(b: &[u8], off: u64, what: &'static str) -> Result<[u8; N], BuildError> {
    let start = usize::try_from(off).map_err(|_| BuildError::TruncatedElf(what))?;
    let end = start.checked_add(N).ok_or(BuildError::TruncatedElf(what))?;
    b.get(start..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(BuildError::TruncatedElf(what))
}
fn u16_at(b: &[u8], off: u64, what: &'static str) -> Result<u16, BuildError> {
    bytes::<2>(b, off, what).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], off: u64, what: &'static str) -> Result<u32, BuildError> {
    bytes::<4>(b, off, what).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], off: u64, what: &'static str) -> Result<u64, BuildError> {
    bytes::<8>(b, off, what).map(u64::from_le_bytes)
}

impl KernelElf {
    /// Parse an x86-64 ELF64 executable.
    pub fn parse(file: &[u8]) -> Result<Self, BuildError> {
        if file.is_empty() {
            return Err(BuildError::EmptyKernel);
        }
        if file.len() < 64 || file.get(0..4) != Some(b"\x7fELF".as_slice()) {
            return Err(BuildError::NotElf("no ELF magic"));
        }
        if file[4] != 2 {
            return Err(BuildError::NotElf("not ELF64"));
        }
        if file[5] != 1 {
            return Err(BuildError::NotElf("not little-endian"));
        }
        if u16_at(file, 18, "e_machine")? != EM_X86_64 {
            return Err(BuildError::NotElf("not an x86-64 binary"));
        }
        if u16_at(file, 16, "e_type")? != ET_EXEC {
            return Err(BuildError::NotElf("not an executable (ET_EXEC)"));
        }
        let entry = u64_at(file, 24, "e_entry")?;
        let phoff = u64_at(file, 32, "e_phoff")?;
        let phentsize = u64::from(u16_at(file, 54, "e_phentsize")?);
        let phnum = u64::from(u16_at(file, 56, "e_phnum")?);
        if phentsize < 56 {
            return Err(BuildError::TruncatedElf("program header entries too small"));
        }
        let mut segments = Vec::new();
        let mut total = 0u64;
        for i in 0..phnum {
            let ph = phentsize
                .checked_mul(i)
                .and_then(|o| o.checked_add(phoff))
                .ok_or(BuildError::TruncatedElf("program header table"))?;
            // The whole entry must be in the file.
            bytes::<56>(file, ph, "program header table")?;
            if u32_at(file, ph, "p_type")? != PT_LOAD {
                continue;
            }
            let offset = u64_at(file, ph + 8, "p_offset")?;
            let paddr = u64_at(file, ph + 24, "p_paddr")?;
            let filesz = u64_at(file, ph + 32, "p_filesz")?;
            let memsz = u64_at(file, ph + 40, "p_memsz")?;
            if memsz == 0 {
                continue;
            }
            if filesz > memsz {
                return Err(BuildError::TruncatedElf(
                    "segment file size exceeds memory size",
                ));
            }
            if paddr.checked_add(memsz).is_none_or(|end| end > MAX_GPA) {
                return Err(BuildError::TruncatedElf(
                    "segment ends beyond the 52-bit physical address space",
                ));
            }
            total = total.saturating_add(memsz);
            if total > MAX_IMAGE {
                return Err(BuildError::TruncatedElf(
                    "loadable segments larger than 1 GiB",
                ));
            }
            let start =
                usize::try_from(offset).map_err(|_| BuildError::TruncatedElf("segment data"))?;
            let len =
                usize::try_from(filesz).map_err(|_| BuildError::TruncatedElf("segment data"))?;
            let data = start
                .checked_add(len)
                .and_then(|end| file.get(start..end))
                .ok_or(BuildError::TruncatedElf("segment data outside the file"))?;
            segments.push(Segment {
                gpa: paddr,
                data: data.to_vec(),
                mem_size: memsz,
            });
        }
        if segments.is_empty() {
            return Err(BuildError::NoLoadableSegment);
        }
        let inside = segments
            .iter()
            .any(|s| entry >= s.gpa && entry - s.gpa < s.mem_size);
        if !inside {
            return Err(BuildError::EntryOutsideImage { entry });
        }
        if entry > u64::from(u32::MAX) {
            return Err(BuildError::EntryNot32Bit { entry });
        }
        Ok(Self { entry, segments })
    }
}
