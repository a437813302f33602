//! The guest firmware: a flat image that ends at 4 GiB (OVMF's layout), and
//! the SEV metadata OVMF carries in the GUID table just below its reset
//! vector. A flat binary without that table is accepted and has no sections.
//! Pure: reads bytes, touches nothing.

use crate::PAGE_SIZE;
use crate::error::BuildError;

/// OVMF's sections are a few pages; a larger one is a corrupt table.
const MAX_SECTION: u64 = 256 << 20;

/// Top of the 32-bit address space: the firmware image ends here.
pub const FOUR_GIB: u64 = 1 << 32;

/// The kinds of OVMF SEV metadata sections (OVMF `SEV_METADATA_SECTION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// Memory OVMF expects validated before it runs (zero pages).
    SnpSecMem,
    /// Where OVMF looks for its SNP secrets page.
    SnpSecrets,
    /// Where OVMF looks for its SNP CPUID page.
    Cpuid,
    /// OVMF's initial SVSM Calling Area.
    SvsmCaa,
    /// The table of kernel/initrd/cmdline hashes (zero when unused).
    KernelHashes,
}

impl SectionKind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::SnpSecMem,
            2 => Self::SnpSecrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::KernelHashes,
            _ => return None,
        })
    }

    /// The raw value as OVMF encodes it (also used in the launch-info page).
    pub fn raw(self) -> u32 {
        match self {
            Self::SnpSecMem => 1,
            Self::SnpSecrets => 2,
            Self::Cpuid => 3,
            Self::SvsmCaa => 4,
            Self::KernelHashes => 0x10,
        }
    }
}

/// One SEV metadata section: a page-aligned guest-physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// Start address.
    pub gpa: u64,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// What OVMF expects there.
    pub kind: SectionKind,
}

/// A parsed guest firmware image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    /// The image, loaded so that it ends at 4 GiB.
    pub data: Vec<u8>,
    /// OVMF's SEV metadata sections, empty for a plain flat binary.
    pub sections: Vec<Section>,
    /// OVMF's SEV-ES AP reset address, if its GUID table names one.
    pub sev_es_reset_eip: Option<u32>,
}

/// A GUID in its on-disk (mixed-endian) byte order, from the textual form.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// 96b582de-1fb2-45f7-baea-a366c55a082d: the footer of OVMF's GUID table.
const TABLE_FOOTER: [u8; 16] = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// 00f771de-1a7e-4fcb-890e-68c77e2fb44e: the SEV-ES reset block.
const SEV_ES_RESET_BLOCK: [u8; 16] = guid(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// dc886566-984a-4798-a75e-5585a7bf67cc: where the SEV metadata is.
const SEV_METADATA_OFFSET: [u8; 16] = guid(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

impl Firmware {
    /// Parse a flat firmware image that is to end at 4 GiB.
    pub fn parse(data: &[u8]) -> Result<Self, BuildError> {
        if data.is_empty() {
            return Err(BuildError::EmptyFirmware);
        }
        let size = data.len() as u64;
        if !size.is_multiple_of(PAGE_SIZE) || size > FOUR_GIB / 2 {
            return Err(BuildError::BadFirmwareSize { size });
        }
        let table = guid_table(data);
        let mut sev_es_reset_eip = None;
        let mut sections = Vec::new();
        for (id, body) in &table {
            if *id == SEV_ES_RESET_BLOCK {
                sev_es_reset_eip = Some(
                    le_u32(body, 0)
                        .ok_or(BuildError::BadFirmwareMetadata("short SEV-ES reset block"))?,
                );
            } else if *id == SEV_METADATA_OFFSET {
                let from_end = le_u32(body, 0).ok_or(BuildError::BadFirmwareMetadata(
                    "short SEV metadata pointer",
                ))?;
                sections = parse_metadata(data, from_end)?;
            }
        }
        Ok(Self {
            data: data.to_vec(),
            sections,
            sev_es_reset_eip,
        })
    }

    /// The guest-physical address of the first byte.
    pub fn base(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }
}

/// The entries of OVMF's GUID table (GUID, body), empty if there is none.
/// The table ends 0x20 bytes before the end of the image, with the footer
/// entry last; each entry is `body, u16 length (body + 18), GUID`, read
/// backwards from the end.
fn guid_table(data: &[u8]) -> Vec<([u8; 16], Vec<u8>)> {
    let mut out = Vec::new();
    let Some(end) = data.len().checked_sub(0x20) else {
        return out;
    };
    let Some(footer_guid_at) = end.checked_sub(16) else {
        return out;
    };
    if data.get(footer_guid_at..end) != Some(TABLE_FOOTER.as_slice()) {
        return out;
    }
    let Some(total) = footer_guid_at
        .checked_sub(2)
        .and_then(|at| le_u16(data, at))
    else {
        return out;
    };
    let Some(start) = end.checked_sub(usize::from(total)) else {
        return out;
    };
    // Skip the footer entry itself (18 bytes: length and GUID).
    let mut pos = end - 18;
    while pos > start {
        let Some(guid_at) = pos.checked_sub(16) else {
            break;
        };
        let Some(len) = guid_at.checked_sub(2).and_then(|at| le_u16(data, at)) else {
            break;
        };
        let len = usize::from(len);
        if len < 18 || pos.checked_sub(len).is_none_or(|s| s < start) {
            break;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&data[guid_at..pos]);
        out.push((id, data[pos - len..guid_at - 2].to_vec()));
        pos -= len;
    }
    out
}

fn parse_metadata(data: &[u8], from_end: u32) -> Result<Vec<Section>, BuildError> {
    let bad = BuildError::BadFirmwareMetadata;
    let at = data
        .len()
        .checked_sub(from_end as usize)
        .ok_or(bad("metadata offset outside the image"))?;
    if data.get(at..at + 4) != Some(b"ASEV".as_slice()) {
        return Err(bad("no ASEV signature"));
    }
    let count = le_u32(data, at + 12).ok_or(bad("short metadata header"))? as usize;
    if count > 64 {
        return Err(bad("too many metadata sections"));
    }
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let e = at + 16 + 12 * i;
        let gpa = u64::from(le_u32(data, e).ok_or(bad("metadata section outside the image"))?);
        let size = u64::from(le_u32(data, e + 4).ok_or(bad("metadata section outside the image"))?);
        let raw = le_u32(data, e + 8).ok_or(bad("metadata section outside the image"))?;
        let kind = SectionKind::from_raw(raw).ok_or(bad("unknown metadata section type"))?;
        if size > MAX_SECTION {
            return Err(bad("metadata section larger than 256 MiB"));
        }
        if !gpa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) || size == 0 {
            return Err(bad("metadata section not page-aligned"));
        }
        sections.push(Section { gpa, size, kind });
    }
    Ok(sections)
}
