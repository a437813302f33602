//! The guest's memory on the native platform: a region of RAM the SVSM
//! reserves at boot and maps 1:1 (GPA = HPA) in the nested page tables,
//! nothing else. The SVSM lays out the guest's boot pages in it, loads the
//! guest firmware ELF, and reads/writes guest memory only through
//! [`GuestRegion`], which refuses anything outside the region.

use crate::mm::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysAddr, PhysRange};

/// Where guest memory lives (GPA = HPA).
pub const GUEST_MEMORY: PhysRange = PhysRange::new(PhysAddr(0x0400_0000), PhysAddr(0x0600_0000));

/// Offsets of the boot pages the SVSM writes at the start of guest memory.
pub mod layout {
    /// Guest PML4, then its PDPT and four page directories (6 pages).
    pub const PAGE_TABLES: u64 = 0x0;
    /// The SVSM information page (the secrets-page SVSM fields at 0x140).
    pub const INFO_PAGE: u64 = 0x1_0000;
    /// The boot vCPU's Calling Area.
    pub const CALLING_AREA: u64 = 0x1_1000;
    /// Everything below this belongs to the boot pages; firmware loads above.
    pub const FIRMWARE_MIN: u64 = 0x10_0000;
}

/// Offsets in the information page (same as the SNP secrets page).
pub mod info {
    /// u64 SVSM_BASE.
    pub const SVSM_BASE: usize = 0x140;
    /// u64 SVSM_SIZE.
    pub const SVSM_SIZE: usize = 0x148;
    /// u64 SVSM_CAA.
    pub const SVSM_CAA: usize = 0x150;
    /// u32 SVSM_MAX_VERSION.
    pub const SVSM_MAX_VERSION: usize = 0x158;
    /// u8 SVSM_GUEST_VMPL.
    pub const SVSM_GUEST_VMPL: usize = 0x15C;
}

/// Why a guest access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideGuest {
    /// The first address asked for.
    pub gpa: u64,
    /// The length asked for.
    pub len: usize,
}

/// Access to guest memory, bounds-checked against the region.
pub struct GuestRegion {
    range: PhysRange,
}

impl GuestRegion {
    /// The region `range`, which the caller has reserved for the guest.
    ///
    /// # Safety
    /// `range` must be RAM that the SVSM identity-maps writable and that no
    /// SVSM data structure uses (it was kept out of the frame allocator).
    pub unsafe fn new(range: PhysRange) -> Self {
        Self { range }
    }

    /// The region.
    pub fn range(&self) -> PhysRange {
        self.range
    }

    /// Whether `[gpa, gpa + len)` lies inside guest memory.
    pub fn contains(&self, gpa: u64, len: usize) -> bool {
        match gpa.checked_add(len as u64) {
            Some(end) => gpa >= self.range.start.0 && end <= self.range.end.0,
            None => false,
        }
    }

    fn check(&self, gpa: u64, len: usize) -> Result<(), OutsideGuest> {
        if self.contains(gpa, len) {
            Ok(())
        } else {
            Err(OutsideGuest { gpa, len })
        }
    }

    /// Copies guest bytes out (once; the caller validates the copy).
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideGuest> {
        self.check(gpa, buf.len())?;
        // SAFETY: the range lies inside the guest region, which is
        // identity-mapped RAM (see `new`); the guest may change it
        // concurrently only between VMRUNs, and this runs while it is stopped.
        unsafe { core::ptr::copy_nonoverlapping(gpa as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies bytes into guest memory.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutsideGuest> {
        self.check(gpa, data.len())?;
        // SAFETY: as in `read`; guest memory holds no SVSM data.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), gpa as *mut u8, data.len()) };
        Ok(())
    }

    /// Fills guest memory with zeros.
    pub fn zero(&self, gpa: u64, len: usize) -> Result<(), OutsideGuest> {
        self.check(gpa, len)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(gpa as *mut u8, 0, len) };
        Ok(())
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&self, gpa: u64, v: u64) -> Result<(), OutsideGuest> {
        self.write(gpa, &v.to_le_bytes())
    }
}

pub use crate::boot::elf::{LoadError, Segment, parse_elf};

/// Writes the guest's page tables at the start of guest memory: the low
/// 4 GiB identity-mapped with 2 MiB pages (the nested tables still limit the
/// guest to its own memory). Returns the CR3 value.
pub fn write_page_tables(guest: &GuestRegion) -> Result<u64, OutsideGuest> {
    let base = guest.range().start.0 + layout::PAGE_TABLES;
    let (pml4, pdpt, pd) = (base, base + PAGE_SIZE, base + 2 * PAGE_SIZE);
    guest.zero(base, 6 * PAGE_SIZE as usize)?;
    guest.write_u64(pml4, pdpt | 0x3)?;
    for i in 0..4u64 {
        guest.write_u64(pdpt + i * 8, (pd + i * PAGE_SIZE) | 0x3)?;
    }
    for i in 0..2048u64 {
        guest.write_u64(pd + i * 8, (i * LARGE_PAGE_SIZE) | 0x83)?;
    }
    Ok(pml4)
}
