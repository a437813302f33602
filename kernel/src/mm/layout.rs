//! The kernel image's sections, from the linker script.

use super::{PhysAddr, PhysRange};

unsafe extern "C" {
    static __image_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __image_end: u8;
    static __boot_stack_guard: u8;
    static __boot_stack_bottom: u8;
    static __boot_stack_top: u8;
}

macro_rules! addr {
    ($sym:ident) => {
        PhysAddr(core::ptr::addr_of!($sym) as u64)
    };
}

/// The whole image, page aligned.
pub fn image() -> PhysRange {
    PhysRange::new(addr!(__image_start), addr!(__image_end))
}

/// Code: read + execute.
pub fn text() -> PhysRange {
    PhysRange::new(addr!(__text_start), addr!(__text_end))
}

/// Constants: read only.
pub fn rodata() -> PhysRange {
    PhysRange::new(addr!(__rodata_start), addr!(__rodata_end))
}

/// Data, bss and the boot stack: read + write, no execute.
pub fn data() -> PhysRange {
    PhysRange::new(addr!(__data_start), addr!(__data_end))
}

/// The unmapped page under the boot stack.
pub fn boot_stack_guard() -> PhysRange {
    PhysRange::new(addr!(__boot_stack_guard), addr!(__boot_stack_bottom))
}

/// The boot stack.
pub fn boot_stack() -> PhysRange {
    PhysRange::new(addr!(__boot_stack_bottom), addr!(__boot_stack_top))
}
