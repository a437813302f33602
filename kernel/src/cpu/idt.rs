//! The interrupt descriptor table. Vectors 0..=31 go to the exception stubs
//! (see `exceptions`); every other vector is unexpected and fatal.

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, IST_PAGE_FAULT, KERNEL_CS};
use super::instr::{self, DescriptorPointer};
use spin::Mutex;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist,
            attributes: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Mutex<Idt> = Mutex::new(Idt([Gate::MISSING; 256]));

unsafe extern "C" {
    static exception_stubs: u8;
    static unexpected_vector_stub: u8;
}

/// Size of one exception stub (they are laid out at this stride).
const STUB_STRIDE: u64 = 16;

/// Fills and loads the IDT. With `use_ist` false (before the TSS exists) no
/// gate names an IST stack.
pub fn load(use_ist: bool) {
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    let unexpected = core::ptr::addr_of!(unexpected_vector_stub) as u64;
    let mut idt = IDT.lock();
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let vector = vector as u8;
        *gate = if vector < 32 {
            let ist = if !use_ist {
                0
            } else {
                match vector {
                    2 => IST_NMI,
                    8 => IST_DOUBLE_FAULT,
                    14 => IST_PAGE_FAULT,
                    18 => IST_MACHINE_CHECK,
                    _ => 0,
                }
            };
            Gate::interrupt(stubs + u64::from(vector) * STUB_STRIDE, ist)
        } else {
            Gate::interrupt(unexpected, 0)
        };
    }
    let pointer = DescriptorPointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: &*idt as *const Idt as u64,
    };
    // SAFETY: the IDT is a static that never moves; its gates point at the
    // exception stubs with the kernel code selector.
    unsafe { instr::lidt(&pointer) };
}
