//! The per-CPU area: one per CPU, found through the GS base. It owns the
//! CPU's GDT, TSS and interrupt stacks, and the state of a fault-catching
//! call. Only the boot CPU exists so far.

use alloc::boxed::Box;
use core::sync::atomic::AtomicU64;
use spin::Mutex;

use super::exceptions::CaughtFault;
use super::gdt::{Gdt, IST_COUNT, TaskStateSegment};
use super::instr::{self, msr};
use crate::mm::stack::{self, Stack, StackError};

/// Size of each interrupt stack.
const IST_STACK_SIZE: u64 = 32 * 1024;

/// One CPU's private data.
pub struct PerCpu {
    /// This CPU's index (0 = boot CPU).
    pub index: u32,
    /// RSP to resume at if a fault hits inside `catch_fault` (0: none armed).
    pub recovery_rsp: AtomicU64,
    /// The fault caught by the last `catch_fault`.
    pub caught: Mutex<Option<CaughtFault>>,
    /// The interrupt stacks, by IST slot - 1.
    pub ist_stacks: [Stack; IST_COUNT],
}

/// Why the per-CPU area could not be set up.
#[derive(Debug)]
pub enum PerCpuError {
    /// An interrupt stack could not be made.
    Stack(StackError),
}

/// Builds the boot CPU's area, loads its GDT and TSS, and points GS at it.
pub fn init_boot_cpu() -> Result<&'static PerCpu, PerCpuError> {
    let names = ["#DF", "NMI", "#MC", "#PF"];
    let mut stacks = [None; IST_COUNT];
    for (slot, name) in stacks.iter_mut().zip(names) {
        *slot = Some(stack::allocate(name, IST_STACK_SIZE).map_err(PerCpuError::Stack)?);
    }
    let ist_stacks = stacks.map(|s| s.expect("every IST slot filled above"));

    let mut tss = TaskStateSegment::default();
    for (i, s) in ist_stacks.iter().enumerate() {
        tss.ist[i] = s.top.0;
    }
    tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss));
    let gdt: &'static Gdt = Box::leak(Box::new(Gdt::new(tss)));
    // SAFETY: the GDT and TSS are leaked, so 'static; this is the only load
    // of this GDT's TSS.
    unsafe { gdt.load() };

    let cpu: &'static PerCpu = Box::leak(Box::new(PerCpu {
        index: 0,
        recovery_rsp: AtomicU64::new(0),
        caught: Mutex::new(None),
        ist_stacks,
    }));
    // SAFETY: GS_BASE exists on every x86-64 CPU; pointing it at a leaked
    // ('static) PerCpu is what `current` relies on.
    unsafe { instr::wrmsr(msr::GS_BASE, cpu as *const PerCpu as u64) };
    Ok(cpu)
}

/// This CPU's area, if it has been set up.
pub fn try_current() -> Option<&'static PerCpu> {
    // SAFETY: GS_BASE exists on every x86-64 CPU.
    let base = unsafe { instr::rdmsr(msr::GS_BASE) };
    if base == 0 {
        return None;
    }
    // SAFETY: only `init_boot_cpu` writes GS_BASE, with a leaked PerCpu.
    Some(unsafe { &*(base as *const PerCpu) })
}

/// This CPU's area.
pub fn current() -> &'static PerCpu {
    try_current().expect("per-CPU area used before init_boot_cpu")
}
