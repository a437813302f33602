//! Every raw privileged instruction the kernel uses, each in one small
//! function. Nothing else in the kernel writes inline assembly for these.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The caller must know what the device behind `port` does with the write.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the effect of the port write.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a double word to an I/O port.
///
/// # Safety
/// The caller must know what the device behind `port` does with the write.
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the effect of the port write.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The caller must know that reading `port` has no harmful side effect.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the effect of the port read.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (or the read faults).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be a state the kernel is prepared for.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    let lo = value as u32;
    let hi = (value >> 32) as u32;
    // SAFETY: the caller guarantees the MSR and value are sound.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") lo, in("edx") hi, options(nostack, preserves_flags))
    }
}

/// The faulting linear address of the last page fault.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The current page-table root.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Switches to another page-table root (and flushes non-global TLB entries).
///
/// # Safety
/// `root` must be a complete PML4 that maps the running code, stack and all
/// data the kernel will touch.
pub unsafe fn write_cr3(root: u64) {
    // SAFETY: the caller guarantees the new tables map everything in use.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) }
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Drops the TLB entry of one page.
pub fn invlpg(addr: u64) {
    // SAFETY: invalidating a TLB entry only makes the CPU walk the tables again.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) }
}

/// Loads the GDT register.
///
/// # Safety
/// `pointer` must describe a valid GDT that stays in place for as long as it
/// is loaded.
pub unsafe fn lgdt(pointer: &DescriptorPointer) {
    // SAFETY: the caller guarantees the table is valid and 'static in effect.
    unsafe { asm!("lgdt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) }
}

/// Loads the IDT register.
///
/// # Safety
/// As for [`lgdt`], for an IDT.
pub unsafe fn lidt(pointer: &DescriptorPointer) {
    // SAFETY: the caller guarantees the table is valid and 'static in effect.
    unsafe { asm!("lidt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) }
}

/// Loads the task register.
///
/// # Safety
/// `selector` must name an available TSS descriptor in the loaded GDT.
pub unsafe fn ltr(selector: u16) {
    // SAFETY: the caller guarantees the selector names a TSS.
    unsafe { asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags)) }
}

/// Reloads CS and the data segment registers after a GDT change.
///
/// # Safety
/// The selectors must name a 64-bit code segment and a data segment of the
/// loaded GDT.
pub unsafe fn reload_segments(code: u16, data: u16) {
    // SAFETY: the caller guarantees the selectors are valid; the far return
    // lands on the next instruction with the new CS.
    unsafe {
        asm!(
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            code = in(reg) u64::from(code),
            data = in(reg) data,
            tmp = out(reg) _,
            options(preserves_flags),
        )
    }
}

/// Raises a breakpoint exception (#BP, vector 3).
pub fn int3() {
    // SAFETY: the kernel's #BP handler returns to the next instruction.
    unsafe { asm!("int3", options(nomem, nostack)) }
}

/// Stops the CPU until the next interrupt, forever if interrupts are off.
pub fn halt() {
    // SAFETY: HLT only waits.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CPUID leaf/subleaf.
pub fn cpuid(leaf: u32, subleaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// The operand of LGDT/LIDT.
#[repr(C, packed)]
pub struct DescriptorPointer {
    /// Size of the table in bytes, minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// MSR numbers the kernel uses.
pub mod msr {
    /// Extended feature enable register.
    pub const EFER: u32 = 0xC000_0080;
    /// Base of the GS segment: the per-CPU area.
    pub const GS_BASE: u32 = 0xC000_0101;
}

/// One RDRAND attempt: `None` when the CPU had no value ready (CF = 0).
///
/// The caller checks CPUID.1:ECX.RDRAND first.
pub fn rdrand() -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: RDRAND only writes its destination and CF; the caller checked
    // that the CPU has it.
    unsafe {
        asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack))
    };
    (ok != 0).then_some(value)
}

/// One RDSEED attempt: `None` when the CPU had no value ready (CF = 0).
///
/// The caller checks CPUID.7.0:EBX.RDSEED first.
pub fn rdseed() -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: RDSEED only writes its destination and CF; the caller checked
    // that the CPU has it.
    unsafe {
        asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack))
    };
    (ok != 0).then_some(value)
}

/// Writes a word to an I/O port.
///
/// # Safety
/// The caller must know what the device behind `port` does with the write.
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the effect of the port write.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}
