//! The per-CPU GDT and TSS: flat 64-bit kernel code and data segments, and a
//! TSS whose interrupt stack table gives the faults that must not run on a
//! possibly broken stack (#DF, NMI, #MC, #PF) stacks of their own.

use super::instr::{self, DescriptorPointer};

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x18;

/// IST slots (1-based, as the IDT names them).
pub const IST_DOUBLE_FAULT: u8 = 1;
/// NMI stack.
pub const IST_NMI: u8 = 2;
/// Machine-check stack.
pub const IST_MACHINE_CHECK: u8 = 3;
/// Page-fault stack: a fault on a stack guard page must not need that stack.
pub const IST_PAGE_FAULT: u8 = 4;
/// Number of IST stacks in use.
pub const IST_COUNT: usize = 4;

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
#[derive(Default)]
pub struct TaskStateSegment {
    reserved0: u32,
    /// Stacks for privilege changes (unused: everything runs at CPL 0).
    pub rsp: [u64; 3],
    reserved1: u64,
    /// Interrupt stack table, IST1..IST7.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap (none: past the limit).
    pub iomap_base: u16,
}

/// A GDT with null, code, data and a 16-byte TSS descriptor.
#[repr(C, align(16))]
pub struct Gdt {
    entries: [u64; 5],
}

impl Gdt {
    /// Builds the table for a TSS at `tss`.
    pub fn new(tss: &'static TaskStateSegment) -> Self {
        let base = tss as *const TaskStateSegment as u64;
        let limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
        // Available 64-bit TSS (type 9), present.
        let low = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        let high = base >> 32;
        Self {
            entries: [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff, low, high],
        }
    }

    /// Loads this GDT, reloads the segment registers and the task register.
    ///
    /// # Safety
    /// `self` must stay in place (it is `'static`) and its TSS must be valid;
    /// a TSS may be loaded only once per GDT (LTR marks it busy).
    pub unsafe fn load(&'static self) {
        let pointer = DescriptorPointer {
            limit: (core::mem::size_of::<Self>() - 1) as u16,
            base: self as *const Self as u64,
        };
        // SAFETY: the table is 'static and holds valid descriptors at the
        // selectors used below; the caller loads its TSS only once.
        unsafe {
            instr::lgdt(&pointer);
            instr::reload_segments(KERNEL_CS, KERNEL_DS);
            instr::ltr(TSS_SELECTOR);
        }
    }
}
