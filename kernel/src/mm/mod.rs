//! Memory: physical and virtual address types, the frame allocator, the
//! kernel's page tables, stacks with guard pages, and the heap.

pub mod frame;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod layout;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod stack;

/// Size of a small page.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a large page.
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// A physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

/// A virtual address in the kernel's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtAddr(pub u64);

impl core::fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl core::fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: PhysAddr,
}

impl PhysRange {
    /// `[start, end)`; an inverted range is empty.
    pub const fn new(start: PhysAddr, end: PhysAddr) -> Self {
        Self { start, end }
    }

    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: PhysAddr) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }

    /// The whole pages inside the range, if any.
    pub fn page_inner(&self) -> Option<PhysRange> {
        let start = self.start.0.checked_next_multiple_of(PAGE_SIZE)?;
        let end = self.end.0 & !(PAGE_SIZE - 1);
        (start < end).then(|| PhysRange::new(PhysAddr(start), PhysAddr(end)))
    }
}

#[cfg(target_os = "none")]
pub use kernel_mm::*;

#[cfg(target_os = "none")]
mod kernel_mm {
    use super::frame::{FrameAllocator, FrameInitError};
    use super::{PhysAddr, PhysRange};
    use spin::{Mutex, Once};

    static FRAMES: Once<Mutex<FrameAllocator>> = Once::new();

    /// Sets up the global frame allocator from the usable RAM ranges, with
    /// `reserved` ranges (kernel image, boot data) kept out.
    pub fn init_frames(usable: &[PhysRange], reserved: &[PhysRange]) -> Result<(), FrameInitError> {
        let allocator = FrameAllocator::new(usable, reserved, |range| {
            let words = (range.len() / 8) as usize;
            // SAFETY: `range` is usable RAM outside every reserved range,
            // identity-mapped by the boot page tables, and from now on owned
            // by the allocator alone (it marks it used).
            unsafe { core::slice::from_raw_parts_mut(range.start.0 as *mut u64, words) }
        })?;
        FRAMES.call_once(|| Mutex::new(allocator));
        Ok(())
    }

    fn frames() -> &'static Mutex<FrameAllocator> {
        FRAMES
            .get()
            .expect("frame allocator used before init_frames")
    }

    /// Takes one zeroed frame.
    pub fn alloc_frame() -> Option<PhysAddr> {
        let frame = frames().lock().alloc()?;
        zero(frame, 1);
        Some(frame)
    }

    /// Takes `count` contiguous zeroed frames aligned to `align` frames.
    pub fn alloc_frames(count: usize, align: usize) -> Option<PhysAddr> {
        let frame = frames().lock().alloc_contiguous(count, align)?;
        zero(frame, count);
        Some(frame)
    }

    /// Returns a frame.
    pub fn free_frame(frame: PhysAddr) -> Result<(), super::frame::FreeError> {
        frames().lock().free(frame)
    }

    /// Free frames right now.
    pub fn free_frame_count() -> usize {
        frames().lock().free_frames()
    }

    fn zero(frame: PhysAddr, count: usize) {
        // SAFETY: the frames were just taken from the allocator, so nothing
        // else refers to them, and all RAM is identity-mapped writable.
        unsafe {
            core::ptr::write_bytes(frame.0 as *mut u8, 0, count * super::PAGE_SIZE as usize);
        }
    }
}
