//! Boot: from the PVH entry to a kernel with its own page tables, heap,
//! descriptor tables and platform, then on to the kernel's work.

pub mod elf;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
mod init;
pub mod launch_info;
pub mod pvh;

/// The kernel heap. Measured peak use (a high-water mark kept for the
/// measurement only) over the native QEMU run with the test guest firmware
/// (vTPM manufacture with EKs, AKs and certificates, then 2272 SVSM calls
/// covering the guest's TPM, attestation and core checks): 39 KiB. The
/// engine's NV data is capped at 128 KiB (`NV_DATA_BUDGET`), 256 indices.
/// 8 MiB leaves two orders of magnitude over the peak.
pub const HEAP_SIZE: u64 = 8 * 1024 * 1024;

/// SVSM memory an IGVM launch needs beyond the image and its launch pages
/// (rivet-igvm `--svsm-size`): the heap plus 8 MiB of frames (page tables,
/// stacks, per-CPU areas, VMSA pages).
pub const IGVM_SVSM_MEMORY_NEEDED: u64 = HEAP_SIZE + (8 << 20);
