//! The CPU: raw instructions, descriptor tables, exceptions, per-CPU data.

pub mod exceptions;
pub mod gdt;
pub mod idt;
pub mod instr;
pub mod percpu;
pub mod time;

use instr::{cpuid, msr};

/// CPU features the kernel cannot run without, checked at boot.
#[derive(Debug)]
pub struct MissingFeature(pub &'static str);

/// Turns on no-execute (EFER.NXE) after checking the CPU has it.
pub fn enable_nx() -> Result<(), MissingFeature> {
    if cpuid(0x8000_0000, 0).eax < 0x8000_0001 || cpuid(0x8000_0001, 0).edx & (1 << 20) == 0 {
        return Err(MissingFeature("NX (no-execute pages)"));
    }
    // SAFETY: EFER exists on every long-mode CPU and NX is supported (checked
    // above); setting NXE only gives the NX bit of page entries meaning.
    unsafe {
        let efer = instr::rdmsr(msr::EFER);
        instr::wrmsr(msr::EFER, efer | (1 << 11));
    }
    Ok(())
}
