//! The kernel's own 4-level page tables: 4 KiB and 2 MiB mappings, splitting
//! nothing implicitly (a 4 KiB operation inside a 2 MiB page is an error).
//! Table frames come from the frame allocator and are reached through the
//! identity map of RAM.

use bitflags::bitflags;
use spin::Mutex;

use super::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysAddr, VirtAddr, alloc_frame};
use crate::cpu::instr;

bitflags! {
    /// Page-table entry bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PteFlags: u64 {
        const PRESENT = 1 << 0;
        const WRITABLE = 1 << 1;
        const USER = 1 << 2;
        const WRITE_THROUGH = 1 << 3;
        const NO_CACHE = 1 << 4;
        const ACCESSED = 1 << 5;
        const DIRTY = 1 << 6;
        const HUGE = 1 << 7;
        const GLOBAL = 1 << 8;
        const NO_EXECUTE = 1 << 63;
    }
}

const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const TABLE_FLAGS: PteFlags = PteFlags::PRESENT.union(PteFlags::WRITABLE);

/// Size of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB.
    Small,
    /// 2 MiB.
    Large,
}

/// Why a mapping operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address not aligned to the page size.
    Misaligned(VirtAddr),
    /// Address not canonical.
    NonCanonical(VirtAddr),
    /// Something is already mapped there.
    AlreadyMapped(VirtAddr),
    /// A 2 MiB page covers the 4 KiB page asked for.
    InsideLargePage(VirtAddr),
    /// Nothing is mapped there.
    NotMapped(VirtAddr),
    /// No frame for a page table.
    OutOfMemory,
    /// An alias bit that is not one bit of the address field, or a range
    /// that already carries it.
    BadAlias(PhysAddr),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Misaligned(va) => write!(f, "{va} is not aligned to the page size"),
            Self::NonCanonical(va) => write!(f, "{va} is not canonical"),
            Self::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            Self::InsideLargePage(va) => write!(f, "{va} lies inside a 2 MiB page"),
            Self::NotMapped(va) => write!(f, "{va} is not mapped"),
            Self::OutOfMemory => write!(f, "no frame left for a page table"),
            Self::BadAlias(pa) => write!(f, "{pa} has no usable physical alias"),
        }
    }
}

type Table = [u64; 512];

/// A page-table hierarchy, by its PML4 frame.
pub struct PageTables {
    root: PhysAddr,
    /// Flags of non-leaf entries: nested page tables need the user bit there.
    table_flags: PteFlags,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1FF) as usize
}

fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

impl PageTables {
    /// An empty hierarchy.
    pub fn new() -> Result<Self, MapError> {
        let root = alloc_frame().ok_or(MapError::OutOfMemory)?;
        Ok(Self {
            root,
            table_flags: TABLE_FLAGS,
        })
    }

    /// An empty nested (guest-physical to host-physical) hierarchy: AMD
    /// nested paging treats every access as a user access, so every entry
    /// carries the user bit (leaves get it from their callers).
    pub fn new_nested() -> Result<Self, MapError> {
        let root = alloc_frame().ok_or(MapError::OutOfMemory)?;
        Ok(Self {
            root,
            table_flags: TABLE_FLAGS | PteFlags::USER,
        })
    }

    /// The PML4's physical address (the CR3 value).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    #[allow(clippy::mut_from_ref)]
    fn table(&self, pa: u64) -> &mut Table {
        // SAFETY: every table frame of this hierarchy was allocated for it
        // (PageTables::new / next_table), is identity-mapped, and is only
        // reached through this hierarchy, which callers hold exclusively
        // (`&mut self` on every mutation, the KERNEL lock for the live one).
        unsafe { &mut *(pa as *mut Table) }
    }

    /// The table the entry at `level` points to, creating it if `create`.
    fn next_table(
        &mut self,
        table: u64,
        va: u64,
        level: u32,
        create: bool,
    ) -> Result<u64, MapError> {
        let entry = &mut self.table(table)[index(va, level)];
        let flags = PteFlags::from_bits_retain(*entry);
        if flags.contains(PteFlags::PRESENT) {
            if flags.contains(PteFlags::HUGE) {
                return Err(MapError::InsideLargePage(VirtAddr(va)));
            }
            return Ok(*entry & ADDR_MASK);
        }
        if !create {
            return Err(MapError::NotMapped(VirtAddr(va)));
        }
        let frame = alloc_frame().ok_or(MapError::OutOfMemory)?;
        *entry = frame.0 | self.table_flags.bits();
        Ok(frame.0)
    }

    fn check(va: VirtAddr, align: u64) -> Result<(), MapError> {
        if !is_canonical(va.0) {
            return Err(MapError::NonCanonical(va));
        }
        if !va.0.is_multiple_of(align) {
            return Err(MapError::Misaligned(va));
        }
        Ok(())
    }

    /// Maps one 4 KiB page.
    pub fn map_4k(&mut self, va: VirtAddr, pa: PhysAddr, flags: PteFlags) -> Result<(), MapError> {
        Self::check(va, PAGE_SIZE)?;
        if !pa.0.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let mut table = self.root.0;
        for level in [3, 2, 1] {
            table = self.next_table(table, va.0, level, true)?;
        }
        let entry = &mut self.table(table)[index(va.0, 0)];
        if *entry & PteFlags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped(va));
        }
        *entry = (pa.0 & ADDR_MASK) | (flags | PteFlags::PRESENT).bits();
        Ok(())
    }

    /// Maps one 2 MiB page.
    pub fn map_2m(&mut self, va: VirtAddr, pa: PhysAddr, flags: PteFlags) -> Result<(), MapError> {
        Self::check(va, LARGE_PAGE_SIZE)?;
        if !pa.0.is_multiple_of(LARGE_PAGE_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let mut table = self.root.0;
        for level in [3, 2] {
            table = self.next_table(table, va.0, level, true)?;
        }
        let entry = &mut self.table(table)[index(va.0, 1)];
        if *entry & PteFlags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped(va));
        }
        *entry = (pa.0 & ADDR_MASK) | (flags | PteFlags::PRESENT | PteFlags::HUGE).bits();
        Ok(())
    }

    /// Removes one 4 KiB mapping and returns the frame it mapped. The caller
    /// flushes the TLB if these tables are live (see [`unmap_4k_live`]).
    pub fn unmap_4k(&mut self, va: VirtAddr) -> Result<PhysAddr, MapError> {
        Self::check(va, PAGE_SIZE)?;
        let mut table = self.root.0;
        for level in [3, 2, 1] {
            table = self.next_table(table, va.0, level, false)?;
        }
        let entry = &mut self.table(table)[index(va.0, 0)];
        if *entry & PteFlags::PRESENT.bits() == 0 {
            return Err(MapError::NotMapped(va));
        }
        let pa = *entry & ADDR_MASK;
        *entry = 0;
        Ok(PhysAddr(pa))
    }

    /// What `va` maps to: the physical address, the leaf's flags and size.
    pub fn translate(&self, va: VirtAddr) -> Option<(PhysAddr, PteFlags, PageSize)> {
        if !is_canonical(va.0) {
            return None;
        }
        let mut table = self.root.0;
        for level in [3, 2, 1, 0] {
            let entry = self.table(table)[index(va.0, level)];
            let flags = PteFlags::from_bits_retain(entry);
            if !flags.contains(PteFlags::PRESENT) {
                return None;
            }
            if level == 0 {
                let pa = (entry & ADDR_MASK) | (va.0 & (PAGE_SIZE - 1));
                return Some((PhysAddr(pa), flags, PageSize::Small));
            }
            if level == 1 && flags.contains(PteFlags::HUGE) {
                let pa =
                    (entry & ADDR_MASK & !(LARGE_PAGE_SIZE - 1)) | (va.0 & (LARGE_PAGE_SIZE - 1));
                return Some((PhysAddr(pa), flags, PageSize::Large));
            }
            table = entry & ADDR_MASK;
        }
        None
    }

    /// Maps `[pa, pa + len)` at `va` with 2 MiB pages wherever both sides
    /// are aligned and the rest fits, 4 KiB pages elsewhere.
    pub fn map_range(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: u64,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let mut off = 0;
        while off < len {
            let (v, p) = (va.0 + off, pa.0 + off);
            if v % LARGE_PAGE_SIZE == 0 && p % LARGE_PAGE_SIZE == 0 && len - off >= LARGE_PAGE_SIZE
            {
                self.map_2m(VirtAddr(v), PhysAddr(p), flags)?;
                off += LARGE_PAGE_SIZE;
            } else {
                self.map_4k(VirtAddr(v), PhysAddr(p), flags)?;
                off += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Maps the 4 KiB pages of `range` at `va` through their physical alias
    /// `pa | alias_bit`: in a TDX TD, `alias_bit` is the SHARED bit (GPA bit
    /// GPAW-1: 47 or 51, from TDG.VP.INFO), and the alias reaches the host's
    /// shared memory for that GPA instead of the TD's private page. Checks
    /// everything before mapping anything: `alias_bit` is one bit of the
    /// address field, no page of `range` carries it already, `range` and
    /// `va` are page aligned and `range` is not empty.
    pub fn map_alias(
        &mut self,
        va: VirtAddr,
        range: super::PhysRange,
        alias_bit: u64,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let (start, end) = (range.start.0, range.end.0);
        if !alias_bit.is_power_of_two()
            || alias_bit & ADDR_MASK != alias_bit
            || (start | end.saturating_sub(1)) & alias_bit != 0
            || range.is_empty()
        {
            return Err(MapError::BadAlias(range.start));
        }
        Self::check(va, PAGE_SIZE)?;
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let last =
            va.0.checked_add(range.len() - PAGE_SIZE)
                .ok_or(MapError::NonCanonical(va))?;
        Self::check(VirtAddr(last), PAGE_SIZE)?;
        let mut off = 0;
        while off < range.len() {
            self.map_4k(
                VirtAddr(va.0 + off),
                PhysAddr((start + off) | alias_bit),
                flags,
            )?;
            off += PAGE_SIZE;
        }
        Ok(())
    }

    /// Makes this hierarchy the live one.
    ///
    /// # Safety
    /// The tables must map all code, stacks and data in use, with the same
    /// addresses as the tables they replace.
    pub unsafe fn activate(&self) {
        // SAFETY: forwarded to the caller.
        unsafe { instr::write_cr3(self.root.0) }
    }
}

/// The live kernel page tables, once the kernel has switched to them.
pub static KERNEL: Mutex<Option<PageTables>> = Mutex::new(None);

/// Maps a 4 KiB page in the live tables.
pub fn map_4k_live(va: VirtAddr, pa: PhysAddr, flags: PteFlags) -> Result<(), MapError> {
    let mut guard = KERNEL.lock();
    let tables = guard.as_mut().ok_or(MapError::NotMapped(va))?;
    tables.map_4k(va, pa, flags)
}

/// Unmaps a 4 KiB page in the live tables and flushes it from the TLB.
pub fn unmap_4k_live(va: VirtAddr) -> Result<PhysAddr, MapError> {
    let mut guard = KERNEL.lock();
    let tables = guard.as_mut().ok_or(MapError::NotMapped(va))?;
    let pa = tables.unmap_4k(va)?;
    instr::invlpg(va.0);
    Ok(pa)
}

/// [`PageTables::map_alias`] in the live tables (new mappings only, so no
/// TLB flush is needed).
pub fn map_alias_live(
    va: VirtAddr,
    range: super::PhysRange,
    alias_bit: u64,
    flags: PteFlags,
) -> Result<(), MapError> {
    let mut guard = KERNEL.lock();
    let tables = guard.as_mut().ok_or(MapError::NotMapped(va))?;
    tables.map_alias(va, range, alias_bit, flags)
}

/// Looks an address up in the live tables.
pub fn translate_live(va: VirtAddr) -> Option<(PhysAddr, PteFlags, PageSize)> {
    KERNEL.lock().as_ref()?.translate(va)
}
