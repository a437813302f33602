//! The launch-info page: the one measured page that tells the SVSM kernel
//! where everything the image holds lies. Its address arrives in EBX at the
//! kernel's 32-bit entry (SNP: from the VMSA; TDX: from the reset stub;
//! native: from the VP context). Little-endian, fixed layout, version 1.

use zerocopy::{Immutable, IntoBytes, KnownLayout};

/// The first eight bytes of the page; distinct from the PVH start-info magic
/// (0x336ec578), so the kernel can tell how it was launched.
pub const MAGIC: [u8; 8] = *b"RIVETLI\0";
/// The layout version below.
pub const VERSION: u32 = 1;
/// At most this many guest-firmware metadata regions are listed.
pub const MAX_FIRMWARE_REGIONS: usize = 32;

/// `platform` values.
pub mod platform {
    /// AMD SEV-SNP, the SVSM at VMPL0.
    pub const SNP: u32 = 1;
    /// Intel TDX with partitioning, the SVSM as the L1.
    pub const TDP: u32 = 2;
    /// No confidential hardware.
    pub const NATIVE: u32 = 3;
}

/// A region of the guest firmware's SEV metadata (OVMF), which the image
/// holds as validated zero pages at VMPL0; the SVSM grants them to the
/// guest's VMPL and fills the secrets (kind 2) and CPUID (kind 3) ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, Immutable, KnownLayout)]
pub struct FirmwareRegion {
    /// Start (guest-physical, page-aligned).
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// OVMF's section type: 1 SEC_MEM, 2 SECRETS, 3 CPUID, 4 SVSM_CAA, 0x10 KERNEL_HASHES.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}

/// The page, field by field. Addresses are guest-physical; 0 means "none".
#[repr(C)]
#[derive(Clone, Copy, Debug, IntoBytes, Immutable, KnownLayout)]
pub struct LaunchInfo {
    /// [`MAGIC`]. Offset 0x00.
    pub magic: [u8; 8],
    /// [`VERSION`]. 0x08.
    pub version: u32,
    /// One of [`platform`]. 0x0c.
    pub platform: u32,
    /// The SVSM's own memory, one range from the kernel's first page: the
    /// image, the launch pages, then its heap/frame memory. 0x10.
    pub svsm_base: u64,
    /// Its size in bytes. 0x18.
    pub svsm_size: u64,
    /// First byte of the kernel image (lowest PT_LOAD address). 0x20.
    pub kernel_start: u64,
    /// End of the kernel image (page-aligned). 0x28.
    pub kernel_end: u64,
    /// This page (the first launch page). 0x30.
    pub launch_pages_start: u64,
    /// End of the launch pages. 0x38.
    pub launch_pages_end: u64,
    /// SNP: the SVSM's VMPL0 VMSA page. 0x40.
    pub vmsa_gpa: u64,
    /// SNP: the secrets page the PSP filled. 0x48.
    pub secrets_gpa: u64,
    /// SNP: the CPUID page the PSP checked. 0x50.
    pub cpuid_gpa: u64,
    /// SNP: the guest firmware's initial state, one page holding a VMSA
    /// (APM table B-4 layout, VMPL field = `guest_vmpl`). 0x58.
    pub guest_context_gpa: u64,
    /// The memory map the loader wrote: IGVM_VHS_MEMORY_MAP_ENTRY records
    /// (24 bytes each: u64 first page number, u64 page count, u16 type,
    /// u16 flags, u32 reserved), ended by a zero page count. Unmeasured. 0x60.
    pub memory_map_gpa: u64,
    /// Its size in bytes. 0x68.
    pub memory_map_size: u64,
    /// A page the loader wrote: u32 vCPU count at offset 0. Unmeasured. 0x70.
    pub parameters_gpa: u64,
    /// The guest firmware image: first byte. 0x78.
    pub firmware_base: u64,
    /// Its size in bytes (it ends at 4 GiB). 0x80.
    pub firmware_size: u64,
    /// The guest firmware's first instruction (linear): 0xfffffff0. 0x88.
    pub firmware_entry: u64,
    /// TDP: the firmware's own last page, which the image replaced by the
    /// reset stub; copy it back to `firmware_base + firmware_size - 4096`
    /// before the L2 runs. 0x90.
    pub firmware_reset_page_copy_gpa: u64,
    /// The VMPL the guest firmware runs at (SNP: 2). 0x98.
    pub guest_vmpl: u32,
    /// Entries used in `firmware_regions`. 0x9c.
    pub firmware_region_count: u32,
    /// OVMF's SEV metadata regions. 0xa0.
    pub firmware_regions: [FirmwareRegion; MAX_FIRMWARE_REGIONS],
}

impl LaunchInfo {
    /// An empty page for `platform`.
    pub fn new(platform: u32) -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            platform,
            svsm_base: 0,
            svsm_size: 0,
            kernel_start: 0,
            kernel_end: 0,
            launch_pages_start: 0,
            launch_pages_end: 0,
            vmsa_gpa: 0,
            secrets_gpa: 0,
            cpuid_gpa: 0,
            guest_context_gpa: 0,
            memory_map_gpa: 0,
            memory_map_size: 0,
            parameters_gpa: 0,
            firmware_base: 0,
            firmware_size: 0,
            firmware_entry: 0,
            firmware_reset_page_copy_gpa: 0,
            guest_vmpl: 0,
            firmware_region_count: 0,
            firmware_regions: [FirmwareRegion::default(); MAX_FIRMWARE_REGIONS],
        }
    }

    /// The page as it goes into the image (zero-padded to 4 KiB).
    pub fn to_page(&self) -> Vec<u8> {
        let mut page = vec![0u8; crate::PAGE_SIZE as usize];
        let b = self.as_bytes();
        page[..b.len()].copy_from_slice(b);
        page
    }
}

const _: () = assert!(core::mem::size_of::<LaunchInfo>() <= 4096);
