//! Boot: from the PVH entry to a kernel with its own page tables, heap,
//! descriptor tables and platform, then on to the kernel's work.

pub mod elf;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
mod init;
pub mod launch_info;
pub mod pvh;

/// The kernel heap: enough for the TPM engine's RSA work and its state.
pub const HEAP_SIZE: u64 = 32 * 1024 * 1024;

/// SVSM memory an IGVM launch needs beyond the image and its launch pages
/// (rivet-igvm `--svsm-size`): the heap plus 8 MiB of frames (page tables,
/// stacks, per-CPU areas, VMSA pages).
pub const IGVM_SVSM_MEMORY_NEEDED: u64 = HEAP_SIZE + (8 << 20);
