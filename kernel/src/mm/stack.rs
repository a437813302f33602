//! Kernel stacks in their own virtual area, each with an unmapped guard page
//! under it, and the registry the page-fault handler uses to tell a stack
//! overflow from any other fault.

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use super::paging::{self, MapError, PteFlags};
use super::{PAGE_SIZE, PhysRange, VirtAddr, alloc_frame};

/// Where stacks live: one 1 MiB slot each, guard page at the bottom.
const STACK_AREA: u64 = 0xFFFF_C000_0000_0000;
const SLOT_SIZE: u64 = 1024 * 1024;
const MAX_SLOTS: u64 = 1024;
const MAX_GUARDS: usize = 64;

static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
struct Guard {
    name: &'static str,
    start: u64,
    end: u64,
}

static GUARDS: Mutex<[Option<Guard>; MAX_GUARDS]> = Mutex::new([None; MAX_GUARDS]);

/// A mapped kernel stack.
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    /// What it is for (printed when its guard page is hit).
    pub name: &'static str,
    /// Lowest mapped byte.
    pub bottom: VirtAddr,
    /// One past the highest byte: the initial RSP.
    pub top: VirtAddr,
    /// The unmapped page under `bottom`.
    pub guard: VirtAddr,
}

/// Why a stack could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// Size 0, not page-multiple, or larger than a slot.
    BadSize(u64),
    /// All slots used.
    NoSlot,
    /// Mapping failed.
    Map(MapError),
    /// The guard registry is full.
    TooManyGuards,
}

/// Makes a stack of `size` bytes (a multiple of 4 KiB) with a guard page.
pub fn allocate(name: &'static str, size: u64) -> Result<Stack, StackError> {
    if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > SLOT_SIZE - PAGE_SIZE {
        return Err(StackError::BadSize(size));
    }
    let slot = NEXT_SLOT.fetch_add(1, Ordering::SeqCst);
    if slot >= MAX_SLOTS {
        return Err(StackError::NoSlot);
    }
    let top = STACK_AREA + (slot + 1) * SLOT_SIZE;
    let bottom = top - size;
    let guard = bottom - PAGE_SIZE;
    let mut page = bottom;
    while page < top {
        let frame = alloc_frame().ok_or(StackError::Map(MapError::OutOfMemory))?;
        paging::map_4k_live(
            VirtAddr(page),
            frame,
            PteFlags::WRITABLE | PteFlags::NO_EXECUTE,
        )
        .map_err(StackError::Map)?;
        page += PAGE_SIZE;
    }
    register_guard(name, guard, guard + PAGE_SIZE)?;
    Ok(Stack {
        name,
        bottom: VirtAddr(bottom),
        top: VirtAddr(top),
        guard: VirtAddr(guard),
    })
}

/// Records that `[start, end)` is the guard of stack `name`.
pub fn register_guard(name: &'static str, start: u64, end: u64) -> Result<(), StackError> {
    let mut guards = GUARDS.lock();
    let free = guards
        .iter_mut()
        .find(|g| g.is_none())
        .ok_or(StackError::TooManyGuards)?;
    *free = Some(Guard { name, start, end });
    Ok(())
}

/// Registers the boot stack's guard (inside the image, left unmapped).
pub fn register_boot_guard(guard: PhysRange) -> Result<(), StackError> {
    register_guard("boot", guard.start.0, guard.end.0)
}

/// The stack whose guard page holds `addr`, if any. Called from the fault
/// handler: it never waits for the lock.
pub fn guard_hit(addr: u64) -> Option<&'static str> {
    let guards = GUARDS.try_lock()?;
    guards
        .iter()
        .flatten()
        .find(|g| g.start <= addr && addr < g.end)
        .map(|g| g.name)
}
