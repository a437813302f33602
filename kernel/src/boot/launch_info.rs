//! The launch-info page of an IGVM launch (`firmware/igvm/README.md`,
//! `firmware/igvm/src/launch_info.rs`, version 1): where the image put the
//! secrets page, the CPUID page, the guest firmware's initial state, the
//! memory map and the guest firmware. EBX at the 32-bit entry points at it
//! instead of at a PVH `hvm_start_info`; the first eight bytes tell the two
//! apart ([`identify`]).
//!
//! The page is copied once into a private buffer, then every field is
//! checked before the kernel uses any of it ([`parse`]). The memory map the
//! loader wrote (unmeasured, so untrusted) is read the same way
//! ([`read_memory_map`]).

use super::pvh::{
    BootInfo, MAX_MEMMAP_ENTRIES, MAX_TRACKABLE_ADDR, MemoryKind, MemoryRegion, PhysMemory,
    START_INFO_MAGIC, Unreadable,
};
use crate::bytes::{le_u32, le_u64};
use crate::mm::{PAGE_SIZE, PhysAddr, PhysRange};

/// The page's first eight bytes.
pub const MAGIC: [u8; 8] = *b"RIVETLI\0";
/// The layout version this kernel reads.
pub const VERSION: u32 = 1;
/// Firmware metadata regions the page can list.
pub const MAX_FIRMWARE_REGIONS: usize = 32;
/// Bytes of the page that carry fields (0xa0 + 32 regions of 24 bytes).
pub const LAYOUT_SIZE: usize = 0xa0 + MAX_FIRMWARE_REGIONS * REGION_SIZE;
/// One IGVM memory-map record (IGVM_VHS_MEMORY_MAP_ENTRY).
pub const MEMORY_MAP_ENTRY_SIZE: usize = 24;

const REGION_SIZE: usize = 24;
const FOUR_GIB: u64 = 1 << 32;

/// Byte offsets of the fields.
pub mod offset {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0x00;
    /// u32 version.
    pub const VERSION: usize = 0x08;
    /// u32 platform.
    pub const PLATFORM: usize = 0x0c;
    /// u64 svsm_base.
    pub const SVSM_BASE: usize = 0x10;
    /// u64 svsm_size.
    pub const SVSM_SIZE: usize = 0x18;
    /// u64 kernel_start.
    pub const KERNEL_START: usize = 0x20;
    /// u64 kernel_end.
    pub const KERNEL_END: usize = 0x28;
    /// u64 launch_pages_start.
    pub const LAUNCH_PAGES_START: usize = 0x30;
    /// u64 launch_pages_end.
    pub const LAUNCH_PAGES_END: usize = 0x38;
    /// u64 SVSM VMSA.
    pub const VMSA: usize = 0x40;
    /// u64 secrets page.
    pub const SECRETS: usize = 0x48;
    /// u64 CPUID page.
    pub const CPUID: usize = 0x50;
    /// u64 guest context page.
    pub const GUEST_CONTEXT: usize = 0x58;
    /// u64 memory map.
    pub const MEMORY_MAP: usize = 0x60;
    /// u64 memory map size.
    pub const MEMORY_MAP_SIZE: usize = 0x68;
    /// u64 parameter page.
    pub const PARAMETERS: usize = 0x70;
    /// u64 firmware base.
    pub const FIRMWARE_BASE: usize = 0x78;
    /// u64 firmware size.
    pub const FIRMWARE_SIZE: usize = 0x80;
    /// u64 firmware entry.
    pub const FIRMWARE_ENTRY: usize = 0x88;
    /// u64 TDP reset-page copy.
    pub const RESET_PAGE_COPY: usize = 0x90;
    /// u32 guest VMPL.
    pub const GUEST_VMPL: usize = 0x98;
    /// u32 region count.
    pub const REGION_COUNT: usize = 0x9c;
    /// regions[32] of {u64 gpa, u64 size, u32 kind, u32 0}.
    pub const REGIONS: usize = 0xa0;
}

/// The platform the image was built for (`platform` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchPlatform {
    /// 1: AMD SEV-SNP, the SVSM at VMPL0.
    Snp,
    /// 2: Intel TDX with partitioning, the SVSM as the L1.
    Tdp,
    /// 3: no confidential hardware (a VMM applying the IGVM VP context).
    Native,
}

impl LaunchPlatform {
    /// The field's value.
    pub fn raw(self) -> u32 {
        match self {
            Self::Snp => 1,
            Self::Tdp => 2,
            Self::Native => 3,
        }
    }

    fn from_raw(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Snp),
            2 => Some(Self::Tdp),
            3 => Some(Self::Native),
            _ => None,
        }
    }
}

/// What a firmware metadata region is (OVMF's SEV metadata section types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// 1: SEC memory (validated zero pages the firmware expects).
    SecMem,
    /// 2: where the firmware expects the secrets page.
    Secrets,
    /// 3: where the firmware expects the CPUID page.
    Cpuid,
    /// 4: the firmware's SVSM Calling Area.
    SvsmCaa,
    /// 0x10: measured-boot kernel hashes.
    KernelHashes,
}

impl RegionKind {
    fn from_raw(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::SecMem),
            2 => Some(Self::Secrets),
            3 => Some(Self::Cpuid),
            4 => Some(Self::SvsmCaa),
            0x10 => Some(Self::KernelHashes),
            _ => None,
        }
    }
}

/// One validated firmware metadata region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareRegion {
    /// Its pages (page aligned, non-empty).
    pub range: PhysRange,
    /// What it is.
    pub kind: RegionKind,
}

/// The validated launch-info page. Addresses are guest-physical; `None`
/// where the page says 0 ("none").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchInfo {
    /// Where the page itself lies.
    pub address: u64,
    /// The platform the image was built for.
    pub platform: LaunchPlatform,
    /// The SVSM's own memory, one range: kernel image, launch pages, then
    /// the memory its heap and frames come from (`--svsm-size`).
    pub svsm: PhysRange,
    /// The kernel image.
    pub kernel: PhysRange,
    /// The launch pages (this page first).
    pub launch_pages: PhysRange,
    /// SNP: the SVSM's VMPL0 VMSA.
    pub vmsa: Option<u64>,
    /// SNP: the secrets page.
    pub secrets: Option<u64>,
    /// SNP: the CPUID page.
    pub cpuid: Option<u64>,
    /// SNP: the guest firmware's initial VMSA.
    pub guest_context: Option<u64>,
    /// The loader's memory map (address, size in bytes).
    pub memory_map: Option<PhysRange>,
    /// The parameter page (u32 vCPU count at 0).
    pub parameters: Option<u64>,
    /// The guest firmware image (ends at 4 GiB).
    pub firmware: Option<PhysRange>,
    /// The firmware's first instruction.
    pub firmware_entry: u64,
    /// TDP: the firmware's own last page, kept aside.
    pub firmware_reset_page_copy: Option<u64>,
    /// The VMPL the guest firmware runs at (SNP: 1..=3; 0 elsewhere).
    pub guest_vmpl: u8,
    regions: [Option<FirmwareRegion>; MAX_FIRMWARE_REGIONS],
    region_count: usize,
}

impl LaunchInfo {
    /// The firmware metadata regions.
    pub fn firmware_regions(&self) -> impl Iterator<Item = FirmwareRegion> + '_ {
        self.regions[..self.region_count].iter().flatten().copied()
    }

    /// The first region of `kind`, if any.
    pub fn firmware_region(&self, kind: RegionKind) -> Option<FirmwareRegion> {
        self.firmware_regions().find(|r| r.kind == kind)
    }
}

/// Why the launch-info page (or the memory map it names) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchInfoError {
    /// The page could not be read at its address.
    Unreadable(u64),
    /// Not `RIVETLI\0`.
    BadMagic,
    /// A layout version this kernel does not read.
    Version(u32),
    /// An unknown platform value.
    Platform(u32),
    /// A field is not page aligned, wraps, or is empty where it must not be.
    BadField(&'static str),
    /// A field lies outside the range that must hold it.
    Outside {
        /// The field.
        field: &'static str,
        /// Where it must lie.
        within: &'static str,
    },
    /// A field the platform needs is 0.
    Missing(&'static str),
    /// Two ranges that must be disjoint overlap.
    Overlap(&'static str, &'static str),
    /// More firmware regions than the page can hold.
    TooManyRegions(u32),
    /// A firmware region is empty, unaligned, wraps or has an unknown kind.
    BadRegion {
        /// Its index.
        index: usize,
    },
    /// The memory map: unreadable, too many records, a wrapping or
    /// overlapping record, no RAM, or RAM beyond what the kernel tracks.
    MemoryMap(&'static str),
}

impl core::fmt::Display for LaunchInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unreadable(a) => write!(f, "launch-info page unreadable at {a:#x}"),
            Self::BadMagic => write!(f, "launch-info page lacks the magic RIVETLI"),
            Self::Version(v) => write!(f, "launch-info version {v}, this kernel reads {VERSION}"),
            Self::Platform(p) => write!(f, "launch-info platform {p} is unknown"),
            Self::BadField(n) => write!(f, "launch-info {n} is unaligned, empty or wraps"),
            Self::Outside { field, within } => {
                write!(f, "launch-info {field} lies outside the {within}")
            }
            Self::Missing(n) => write!(f, "launch-info {n} is 0 but the platform needs it"),
            Self::Overlap(a, b) => write!(f, "launch-info {a} overlaps the {b}"),
            Self::TooManyRegions(n) => write!(
                f,
                "launch-info lists {n} firmware regions, at most {MAX_FIRMWARE_REGIONS}"
            ),
            Self::BadRegion { index } => write!(f, "launch-info firmware region {index} is bad"),
            Self::MemoryMap(why) => write!(f, "IGVM memory map: {why}"),
        }
    }
}

/// How the kernel was launched, from the first bytes EBX points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootMagic {
    /// A PVH `hvm_start_info` (QEMU `-kernel`).
    Pvh,
    /// A Rivet launch-info page (an IGVM launch).
    LaunchInfo,
    /// Neither, or nothing readable there.
    Unknown,
}

/// Tells the PVH start info and the launch-info page apart.
pub fn identify(addr: u64, mem: &impl PhysMemory) -> BootMagic {
    let mut head = [0u8; 8];
    if addr == 0 || mem.read(addr, &mut head).is_err() {
        return BootMagic::Unknown;
    }
    if head == MAGIC {
        BootMagic::LaunchInfo
    } else if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == START_INFO_MAGIC {
        BootMagic::Pvh
    } else {
        BootMagic::Unknown
    }
}

fn aligned(v: u64) -> bool {
    v.is_multiple_of(PAGE_SIZE)
}

/// `[start, start + size)` as a page-aligned, non-empty, non-wrapping range.
fn range(start: u64, size: u64, name: &'static str) -> Result<PhysRange, LaunchInfoError> {
    let end = start
        .checked_add(size)
        .ok_or(LaunchInfoError::BadField(name))?;
    if size == 0 || !aligned(start) || !aligned(size) {
        return Err(LaunchInfoError::BadField(name));
    }
    Ok(PhysRange::new(PhysAddr(start), PhysAddr(end)))
}

fn inside(inner: PhysRange, outer: PhysRange) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// An optional page: 0 = none, else page aligned and inside `launch`.
fn launch_page(
    raw: &[u8],
    at: usize,
    name: &'static str,
    launch: PhysRange,
) -> Result<Option<u64>, LaunchInfoError> {
    let v = le_u64(raw, at);
    if v == 0 {
        return Ok(None);
    }
    if !aligned(v) {
        return Err(LaunchInfoError::BadField(name));
    }
    let page = range(v, PAGE_SIZE, name)?;
    if !inside(page, launch) {
        return Err(LaunchInfoError::Outside {
            field: name,
            within: "launch pages",
        });
    }
    Ok(Some(v))
}

/// Reads the page at `addr` once and validates it.
pub fn parse(addr: u64, mem: &impl PhysMemory) -> Result<LaunchInfo, LaunchInfoError> {
    let mut raw = [0u8; LAYOUT_SIZE];
    if addr == 0 {
        return Err(LaunchInfoError::Unreadable(0));
    }
    mem.read(addr, &mut raw)
        .map_err(|Unreadable| LaunchInfoError::Unreadable(addr))?;
    parse_bytes(addr, &raw)
}

/// Validates a private copy of the page that was found at `addr`.
pub fn parse_bytes(addr: u64, raw: &[u8; LAYOUT_SIZE]) -> Result<LaunchInfo, LaunchInfoError> {
    use LaunchInfoError as E;
    if raw[offset::MAGIC..offset::MAGIC + 8] != MAGIC {
        return Err(E::BadMagic);
    }
    let version = le_u32(raw, offset::VERSION);
    if version != VERSION {
        return Err(E::Version(version));
    }
    let raw_platform = le_u32(raw, offset::PLATFORM);
    let platform = LaunchPlatform::from_raw(raw_platform).ok_or(E::Platform(raw_platform))?;

    let svsm = range(
        le_u64(raw, offset::SVSM_BASE),
        le_u64(raw, offset::SVSM_SIZE),
        "SVSM area",
    )?;
    let k0 = le_u64(raw, offset::KERNEL_START);
    let k1 = le_u64(raw, offset::KERNEL_END);
    if k1 <= k0 || !aligned(k1) {
        return Err(E::BadField("kernel image"));
    }
    // The image may start mid-page (its lowest PT_LOAD address).
    let kernel = PhysRange::new(PhysAddr(k0), PhysAddr(k1));
    let l0 = le_u64(raw, offset::LAUNCH_PAGES_START);
    let l1 = le_u64(raw, offset::LAUNCH_PAGES_END);
    if l1 <= l0 {
        return Err(E::BadField("launch pages"));
    }
    let launch_pages = range(l0, l1 - l0, "launch pages")?;
    for (r, name) in [(kernel, "kernel image"), (launch_pages, "launch pages")] {
        if !inside(r, svsm) {
            return Err(E::Outside {
                field: name,
                within: "SVSM area",
            });
        }
    }
    if kernel.overlaps(&launch_pages) {
        return Err(E::Overlap("kernel image", "launch pages"));
    }
    if addr != l0 {
        return Err(E::Outside {
            field: "page's own address",
            within: "first launch page",
        });
    }

    let vmsa = launch_page(raw, offset::VMSA, "SVSM VMSA", launch_pages)?;
    let secrets = launch_page(raw, offset::SECRETS, "secrets page", launch_pages)?;
    let cpuid = launch_page(raw, offset::CPUID, "CPUID page", launch_pages)?;
    let guest_context = launch_page(raw, offset::GUEST_CONTEXT, "guest context", launch_pages)?;
    let parameters = launch_page(raw, offset::PARAMETERS, "parameter page", launch_pages)?;
    let firmware_reset_page_copy = launch_page(
        raw,
        offset::RESET_PAGE_COPY,
        "reset-page copy",
        launch_pages,
    )?;
    let named = [vmsa, secrets, cpuid, guest_context, parameters, Some(l0)];
    for (i, a) in named.iter().enumerate() {
        if a.is_some() && named[..i].contains(a) {
            return Err(E::Overlap("a launch page", "another launch page"));
        }
    }

    let mm = le_u64(raw, offset::MEMORY_MAP);
    let mm_size = le_u64(raw, offset::MEMORY_MAP_SIZE);
    let memory_map = if mm == 0 {
        None
    } else {
        let end = mm.checked_add(mm_size).ok_or(E::BadField("memory map"))?;
        if mm_size < MEMORY_MAP_ENTRY_SIZE as u64 || !aligned(mm) {
            return Err(E::BadField("memory map"));
        }
        let r = PhysRange::new(PhysAddr(mm), PhysAddr(end));
        if !inside(r, launch_pages) {
            return Err(E::Outside {
                field: "memory map",
                within: "launch pages",
            });
        }
        Some(r)
    };

    let fw_base = le_u64(raw, offset::FIRMWARE_BASE);
    let fw_size = le_u64(raw, offset::FIRMWARE_SIZE);
    let firmware_entry = le_u64(raw, offset::FIRMWARE_ENTRY);
    let firmware = if fw_base == 0 && fw_size == 0 {
        None
    } else {
        let r = range(fw_base, fw_size, "firmware image")?;
        if r.end.0 != FOUR_GIB {
            return Err(E::BadField("firmware image (must end at 4 GiB)"));
        }
        if r.overlaps(&svsm) {
            return Err(E::Overlap("firmware image", "SVSM area"));
        }
        let entry = PhysRange::new(PhysAddr(firmware_entry), PhysAddr(firmware_entry + 1));
        if firmware_entry >= FOUR_GIB || !inside(entry, r) {
            return Err(E::Outside {
                field: "firmware entry",
                within: "firmware image",
            });
        }
        Some(r)
    };

    let raw_vmpl = le_u32(raw, offset::GUEST_VMPL);
    let count = le_u32(raw, offset::REGION_COUNT);
    if count as usize > MAX_FIRMWARE_REGIONS {
        return Err(E::TooManyRegions(count));
    }
    let mut regions = [None; MAX_FIRMWARE_REGIONS];
    for (index, slot) in regions.iter_mut().enumerate().take(count as usize) {
        let at = offset::REGIONS + index * REGION_SIZE;
        let r = range(le_u64(raw, at), le_u64(raw, at + 8), "firmware region")
            .map_err(|_| E::BadRegion { index })?;
        let kind = RegionKind::from_raw(le_u32(raw, at + 16)).ok_or(E::BadRegion { index })?;
        if r.overlaps(&svsm) {
            return Err(E::Overlap("firmware region", "SVSM area"));
        }
        *slot = Some(FirmwareRegion { range: r, kind });
    }

    let guest_vmpl = match platform {
        LaunchPlatform::Snp => {
            for (v, name) in [
                (vmsa, "SVSM VMSA"),
                (secrets, "secrets page"),
                (cpuid, "CPUID page"),
                (guest_context, "guest context"),
            ] {
                if v.is_none() {
                    return Err(E::Missing(name));
                }
            }
            if !(1..=3).contains(&raw_vmpl) {
                return Err(E::BadField("guest VMPL (SNP: 1..=3)"));
            }
            raw_vmpl as u8
        }
        LaunchPlatform::Tdp | LaunchPlatform::Native => {
            if raw_vmpl != 0 {
                return Err(E::BadField("guest VMPL (0 off SNP)"));
            }
            0
        }
    };
    if memory_map.is_none() {
        return Err(E::Missing("memory map"));
    }

    Ok(LaunchInfo {
        address: addr,
        platform,
        svsm,
        kernel,
        launch_pages,
        vmsa,
        secrets,
        cpuid,
        guest_context,
        memory_map,
        parameters,
        firmware,
        firmware_entry,
        firmware_reset_page_copy,
        guest_vmpl,
        regions,
        region_count: count as usize,
    })
}

/// IGVM memory-map entry types (IGVM_MEMORY_MAP_ENTRY_TYPE).
pub mod memory_type {
    /// Usable memory.
    pub const MEMORY: u16 = 0;
    /// Reserved by the platform.
    pub const PLATFORM_RESERVED: u16 = 1;
    /// Persistent memory.
    pub const PERSISTENT: u16 = 2;
    /// VTL2-protectable memory (usable).
    pub const VTL2_PROTECTABLE: u16 = 3;
}

/// Reads the loader's memory map once and turns it into the kernel's boot
/// information (no command line, no modules: an IGVM launch has neither).
pub fn read_memory_map(
    info: &LaunchInfo,
    mem: &impl PhysMemory,
) -> Result<BootInfo, LaunchInfoError> {
    use LaunchInfoError as E;
    let map = info.memory_map.ok_or(E::Missing("memory map"))?;
    let records = (map.len() / MEMORY_MAP_ENTRY_SIZE as u64) as usize;
    let empty = MemoryRegion {
        range: PhysRange::new(PhysAddr(0), PhysAddr(0)),
        kind: MemoryKind::Reserved,
    };
    let mut regions = [empty; MAX_MEMMAP_ENTRIES];
    let mut count = 0;
    for index in 0..records {
        let at = map.start.0 + (index * MEMORY_MAP_ENTRY_SIZE) as u64;
        let mut e = [0u8; MEMORY_MAP_ENTRY_SIZE];
        mem.read(at, &mut e)
            .map_err(|Unreadable| E::MemoryMap("unreadable"))?;
        let first = le_u64(&e, 0);
        let pages = le_u64(&e, 8);
        let kind = match u16::from_le_bytes([e[16], e[17]]) {
            memory_type::MEMORY | memory_type::VTL2_PROTECTABLE => MemoryKind::Ram,
            memory_type::PLATFORM_RESERVED => MemoryKind::Reserved,
            t => MemoryKind::Other(u32::from(t)),
        };
        if pages == 0 {
            break; // the terminator
        }
        let start = first
            .checked_mul(PAGE_SIZE)
            .ok_or(E::MemoryMap("a record wraps"))?;
        let end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| start.checked_add(len))
            .ok_or(E::MemoryMap("a record wraps"))?;
        if kind == MemoryKind::Ram && end > MAX_TRACKABLE_ADDR {
            return Err(E::MemoryMap("RAM beyond what the kernel tracks"));
        }
        if count == MAX_MEMMAP_ENTRIES {
            return Err(E::MemoryMap("too many records"));
        }
        let range = PhysRange::new(PhysAddr(start), PhysAddr(end));
        if regions[..count].iter().any(|r| r.range.overlaps(&range)) {
            return Err(E::MemoryMap("two records overlap"));
        }
        regions[count] = MemoryRegion { range, kind };
        count += 1;
    }
    BootInfo::from_regions(&regions[..count]).ok_or(E::MemoryMap("no RAM"))
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    #[derive(Default)]
    pub struct Fake(pub BTreeMap<u64, u8>);

    impl Fake {
        pub fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
    }

    impl PhysMemory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *self.0.get(&(addr + i as u64)).ok_or(Unreadable)?;
            }
            Ok(())
        }
    }

    pub const LI: u64 = 0x20_0000;

    fn put64(p: &mut [u8], o: usize, v: u64) {
        p[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(p: &mut [u8], o: usize, v: u32) {
        p[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A page laid out the way `rivet-igvm build --platform snp` does it
    /// (kernel, then the launch pages right after), at small addresses.
    pub fn snp_page() -> [u8; LAYOUT_SIZE] {
        let mut p = [0u8; LAYOUT_SIZE];
        p[..8].copy_from_slice(&MAGIC);
        put32(&mut p, offset::VERSION, 1);
        put32(&mut p, offset::PLATFORM, 1);
        put64(&mut p, offset::SVSM_BASE, 0x10_0000);
        put64(&mut p, offset::SVSM_SIZE, 0x10_8000);
        put64(&mut p, offset::KERNEL_START, 0x10_0000);
        put64(&mut p, offset::KERNEL_END, LI);
        put64(&mut p, offset::LAUNCH_PAGES_START, LI);
        put64(&mut p, offset::LAUNCH_PAGES_END, LI + 0x8000);
        put64(&mut p, offset::VMSA, LI + 0x1000);
        put64(&mut p, offset::SECRETS, LI + 0x2000);
        put64(&mut p, offset::CPUID, LI + 0x3000);
        put64(&mut p, offset::GUEST_CONTEXT, LI + 0x4000);
        put64(&mut p, offset::PARAMETERS, LI + 0x5000);
        put64(&mut p, offset::MEMORY_MAP, LI + 0x6000);
        put64(&mut p, offset::MEMORY_MAP_SIZE, 0x1000);
        put64(&mut p, offset::FIRMWARE_BASE, 0xffc0_0000);
        put64(&mut p, offset::FIRMWARE_SIZE, 0x40_0000);
        put64(&mut p, offset::FIRMWARE_ENTRY, 0xffff_fff0);
        put32(&mut p, offset::GUEST_VMPL, 2);
        put32(&mut p, offset::REGION_COUNT, 2);
        put64(&mut p, offset::REGIONS, 0x80_0000);
        put64(&mut p, offset::REGIONS + 8, 0x9000);
        put32(&mut p, offset::REGIONS + 16, 1);
        put64(&mut p, offset::REGIONS + 24, 0x80_9000);
        put64(&mut p, offset::REGIONS + 32, 0x1000);
        put32(&mut p, offset::REGIONS + 40, 2);
        p
    }

    fn memmap(records: &[(u64, u64, u16)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (first, pages, kind) in records {
            v.extend(first.to_le_bytes());
            v.extend(pages.to_le_bytes());
            v.extend(kind.to_le_bytes());
            v.extend([0u8; 6]);
        }
        v.extend([0u8; 24]);
        v
    }

    #[test]
    fn parses_the_builders_snp_layout() {
        let info = parse_bytes(LI, &snp_page()).unwrap();
        assert_eq!(info.platform, LaunchPlatform::Snp);
        assert_eq!(info.secrets, Some(LI + 0x2000));
        assert_eq!(info.cpuid, Some(LI + 0x3000));
        assert_eq!(info.guest_context, Some(LI + 0x4000));
        assert_eq!(info.guest_vmpl, 2);
        assert_eq!(info.firmware.unwrap().start.0, 0xffc0_0000);
        let regions: Vec<_> = info.firmware_regions().collect();
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[1].kind, RegionKind::Secrets);
        assert_eq!(
            info.firmware_region(RegionKind::SecMem)
                .unwrap()
                .range
                .len(),
            0x9000
        );
    }

    /// The first 0xa0 bytes of the page `rivet-igvm build --platform snp`
    /// wrote for a debug kernel and Debian's OVMF_CODE_4M.fd (which lists no
    /// SEV metadata regions); the rest of the page is zero.
    const BUILDER_PAGE: &str = concat!(
        "52495645544c4900010000000100000000001000000000000080320000000000",
        "0000100000000000001042000000000000104200000000000080420000000000",
        "0020420000000000003042000000000000404200000000000050420000000000",
        "0070420000000000001000000000000000604200000000000040c8ff00000000",
        "00c0370000000000f0ffffff0000000000000000000000000200000000000000",
    );

    #[test]
    fn parses_a_page_rivet_igvm_wrote() {
        let mut page = [0u8; LAYOUT_SIZE];
        for (i, b) in page.iter_mut().take(BUILDER_PAGE.len() / 2).enumerate() {
            *b = u8::from_str_radix(&BUILDER_PAGE[2 * i..2 * i + 2], 16).unwrap();
        }
        let info = parse_bytes(0x42_1000, &page).unwrap();
        assert_eq!(info.platform, LaunchPlatform::Snp);
        assert_eq!((info.svsm.start.0, info.svsm.end.0), (0x10_0000, 0x42_8000));
        assert_eq!(
            (info.kernel.start.0, info.kernel.end.0),
            (0x10_0000, 0x42_1000)
        );
        assert_eq!(info.vmsa, Some(0x42_2000));
        assert_eq!(info.secrets, Some(0x42_3000));
        assert_eq!(info.cpuid, Some(0x42_4000));
        assert_eq!(info.guest_context, Some(0x42_5000));
        assert_eq!(info.parameters, Some(0x42_6000));
        assert_eq!(
            info.memory_map.map(|r| (r.start.0, r.len())),
            Some((0x42_7000, 0x1000))
        );
        assert_eq!(
            info.firmware.map(|r| (r.start.0, r.end.0)),
            Some((0xffc8_4000, 1 << 32))
        );
        assert_eq!(info.firmware_entry, 0xffff_fff0);
        assert_eq!(info.guest_vmpl, 2);
        assert_eq!(info.firmware_regions().count(), 0);
        // No room beyond the launch pages: this image has no SVSM memory
        // for the heap (built without --svsm-size).
        assert_eq!(info.svsm.end, info.launch_pages.end);
    }

    #[test]
    fn identify_tells_the_launches_apart() {
        let mut m = Fake::default();
        m.put(LI, &snp_page());
        m.put(0x6000, &START_INFO_MAGIC.to_le_bytes());
        m.put(0x6004, &[1, 0, 0, 0]);
        m.put(0x7000, &[0xAA; 8]);
        assert_eq!(identify(LI, &m), BootMagic::LaunchInfo);
        assert_eq!(identify(0x6000, &m), BootMagic::Pvh);
        assert_eq!(identify(0x7000, &m), BootMagic::Unknown);
        assert_eq!(identify(0, &m), BootMagic::Unknown);
        assert_eq!(identify(0x9000, &m), BootMagic::Unknown);
    }

    #[test]
    fn refuses_each_bad_field() {
        type Edit = fn(&mut [u8; LAYOUT_SIZE]);
        let cases: [(Edit, LaunchInfoError); 14] = [
            (|p| p[3] = b'X', LaunchInfoError::BadMagic),
            (
                |p| put32(p, offset::VERSION, 2),
                LaunchInfoError::Version(2),
            ),
            (
                |p| put32(p, offset::PLATFORM, 7),
                LaunchInfoError::Platform(7),
            ),
            (
                |p| put64(p, offset::SVSM_SIZE, !0xfff),
                LaunchInfoError::BadField("SVSM area"),
            ),
            (
                |p| put64(p, offset::SECRETS, LI + 0x2008),
                LaunchInfoError::BadField("secrets page"),
            ),
            (
                |p| put64(p, offset::CPUID, LI + 0x9000),
                LaunchInfoError::Outside {
                    field: "CPUID page",
                    within: "launch pages",
                },
            ),
            (
                |p| put64(p, offset::CPUID, 0),
                LaunchInfoError::Missing("CPUID page"),
            ),
            (
                |p| put64(p, offset::CPUID, LI + 0x2000),
                LaunchInfoError::Overlap("a launch page", "another launch page"),
            ),
            (
                |p| put32(p, offset::GUEST_VMPL, 0),
                LaunchInfoError::BadField("guest VMPL (SNP: 1..=3)"),
            ),
            (
                |p| put64(p, offset::FIRMWARE_SIZE, 0x20_0000),
                LaunchInfoError::BadField("firmware image (must end at 4 GiB)"),
            ),
            (
                |p| put64(p, offset::FIRMWARE_ENTRY, 0x1000),
                LaunchInfoError::Outside {
                    field: "firmware entry",
                    within: "firmware image",
                },
            ),
            (
                |p| put32(p, offset::REGION_COUNT, 33),
                LaunchInfoError::TooManyRegions(33),
            ),
            (
                |p| put32(p, offset::REGIONS + 16, 9),
                LaunchInfoError::BadRegion { index: 0 },
            ),
            (
                |p| put64(p, offset::LAUNCH_PAGES_END, LI + 0x10_0000),
                LaunchInfoError::Outside {
                    field: "launch pages",
                    within: "SVSM area",
                },
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut p = snp_page();
            edit(&mut p);
            assert_eq!(parse_bytes(LI, &p).err(), Some(want), "case {i}");
        }
        // The page must be where it says it is.
        assert!(matches!(
            parse_bytes(LI + 0x1000, &snp_page()),
            Err(LaunchInfoError::Outside { .. })
        ));
        // A tdp page may not name a VMPL.
        let mut p = snp_page();
        put32(&mut p, offset::PLATFORM, 2);
        assert_eq!(
            parse_bytes(LI, &p).err(),
            Some(LaunchInfoError::BadField("guest VMPL (0 off SNP)"))
        );
        put32(&mut p, offset::GUEST_VMPL, 0);
        assert_eq!(parse_bytes(LI, &p).unwrap().platform, LaunchPlatform::Tdp);
    }

    #[test]
    fn memory_map_is_read_and_checked() {
        let info = parse_bytes(LI, &snp_page()).unwrap();
        let map_at = LI + 0x6000;
        let mut m = Fake::default();
        m.put(
            map_at,
            &memmap(&[(0x100, 0x7f00, 0), (0, 0xa0, 0), (0xfeffc, 4, 1)]),
        );
        let boot = read_memory_map(&info, &m).unwrap();
        assert_eq!(boot.regions().len(), 3);
        assert_eq!(boot.ram().count(), 2);
        assert_eq!(boot.regions()[0].range.start.0, 0);
        assert_eq!(boot.cmdline(), "");
        assert!(boot.modules().is_empty());

        let mut m = Fake::default();
        m.put(map_at, &memmap(&[(0x100, 0x100, 0), (0x180, 0x100, 0)]));
        assert_eq!(
            read_memory_map(&info, &m).err(),
            Some(LaunchInfoError::MemoryMap("two records overlap"))
        );
        let mut m = Fake::default();
        m.put(map_at, &memmap(&[(u64::MAX / 4096, 0x100, 0)]));
        assert_eq!(
            read_memory_map(&info, &m).err(),
            Some(LaunchInfoError::MemoryMap("a record wraps"))
        );
        let mut m = Fake::default();
        m.put(map_at, &memmap(&[(0x100, 0x100, 1)]));
        assert_eq!(
            read_memory_map(&info, &m).err(),
            Some(LaunchInfoError::MemoryMap("no RAM"))
        );
        // No terminator inside the map and the page beyond unreadable.
        let mut m = Fake::default();
        m.put(map_at, &memmap(&[(0x100, 0x100, 0)])[..24]);
        assert_eq!(
            read_memory_map(&info, &m).err(),
            Some(LaunchInfoError::MemoryMap("unreadable"))
        );
    }
}
