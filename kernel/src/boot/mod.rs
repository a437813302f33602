//! Boot: from the PVH entry to a kernel with its own page tables, heap,
//! descriptor tables and platform, then on to the kernel's work.

pub mod elf;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
mod init;
pub mod launch_info;
pub mod pvh;
