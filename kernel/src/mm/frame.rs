//! The physical frame allocator: one bit per 4 KiB frame between the lowest
//! and highest usable address, the bitmap itself carved out of usable RAM.
//! Pure bookkeeping; the kernel wraps it in a lock (see `mm::frames`).

use super::{PAGE_SIZE, PhysAddr, PhysRange};

/// Why the allocator could not be built from a memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameInitError {
    /// No usable RAM is left once the reserved ranges are taken out.
    NoUsableMemory,
    /// No usable range is large enough to hold the bitmap.
    NoRoomForBitmap {
        /// Bytes the bitmap needs.
        needed: u64,
    },
}

impl core::fmt::Display for FrameInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoUsableMemory => write!(f, "no usable RAM outside the reserved ranges"),
            Self::NoRoomForBitmap { needed } => {
                write!(f, "no usable range can hold the {needed}-byte frame bitmap")
            }
        }
    }
}

/// Why a frame could not be returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The address is not 4 KiB aligned or not a tracked frame.
    NotTracked(PhysAddr),
    /// The frame was already free.
    DoubleFree(PhysAddr),
}

/// A bitmap allocator over `[base, base + frames * 4 KiB)`; a set bit is a
/// used (or never usable) frame.
pub struct FrameAllocator {
    base: u64,
    frames: usize,
    free: usize,
    next: usize,
    bitmap: &'static mut [u64],
}

impl FrameAllocator {
    /// Bytes of bitmap needed to track `usable` (the span from the lowest
    /// to the highest usable page).
    pub fn bitmap_bytes(usable: &[PhysRange]) -> u64 {
        let (lo, hi) = span(usable);
        let frames = hi.saturating_sub(lo) / PAGE_SIZE;
        frames.div_ceil(64) * 8
    }

    /// Builds the allocator. `usable` are the RAM ranges, `reserved` the
    /// ranges inside them that are already in use (kernel image, boot data);
    /// `place_bitmap` maps the chosen physical range to writable memory for
    /// the bitmap (identity in the kernel, a buffer in host tests).
    pub fn new(
        usable: &[PhysRange],
        reserved: &[PhysRange],
        place_bitmap: impl FnOnce(PhysRange) -> &'static mut [u64],
    ) -> Result<Self, FrameInitError> {
        let usable_pages = usable
            .iter()
            .filter_map(|r| r.page_inner())
            .filter(|r| !r.is_empty());
        let mut lo = u64::MAX;
        let mut hi = 0;
        for r in usable_pages.clone() {
            lo = lo.min(r.start.0);
            hi = hi.max(r.end.0);
        }
        if lo >= hi {
            return Err(FrameInitError::NoUsableMemory);
        }
        let frames = ((hi - lo) / PAGE_SIZE) as usize;
        let words = frames.div_ceil(64);
        let needed = (words as u64) * 8;

        // The bitmap goes into the first usable page run that is large
        // enough once the reserved ranges are skipped.
        let mut bitmap_range = None;
        'outer: for r in usable_pages.clone() {
            let mut start = r.start.0;
            loop {
                let end = start + needed.next_multiple_of(PAGE_SIZE);
                if end > r.end.0 {
                    break;
                }
                let candidate = PhysRange::new(PhysAddr(start), PhysAddr(end));
                match reserved.iter().find(|x| x.overlaps(&candidate)) {
                    None => {
                        bitmap_range = Some(candidate);
                        break 'outer;
                    }
                    Some(x) => start = x.end.0.next_multiple_of(PAGE_SIZE),
                }
            }
        }
        let bitmap_range = bitmap_range.ok_or(FrameInitError::NoRoomForBitmap { needed })?;
        let bitmap = place_bitmap(bitmap_range);
        let bitmap = &mut bitmap[..words];
        bitmap.fill(u64::MAX);

        let mut this = Self {
            base: lo,
            frames,
            free: 0,
            next: 0,
            bitmap,
        };
        for r in usable_pages {
            this.set_range(r, false);
        }
        for r in reserved {
            this.set_range(*r, true);
        }
        this.set_range(bitmap_range, true);
        if this.free == 0 {
            return Err(FrameInitError::NoUsableMemory);
        }
        Ok(this)
    }

    fn set_range(&mut self, range: PhysRange, used: bool) {
        let start = range.start.0.max(self.base);
        let end = range.end.0.min(self.base + self.frames as u64 * PAGE_SIZE);
        if start >= end {
            return;
        }
        let first = ((start - self.base) / PAGE_SIZE) as usize;
        let last = (end - self.base).div_ceil(PAGE_SIZE) as usize;
        for i in first..last {
            let was_used = self.is_used(i);
            if was_used != used {
                self.flip(i);
                if used {
                    self.free -= 1;
                } else {
                    self.free += 1;
                }
            }
        }
    }

    fn is_used(&self, i: usize) -> bool {
        self.bitmap[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.bitmap[i / 64] ^= 1 << (i % 64);
    }

    fn addr(&self, i: usize) -> PhysAddr {
        PhysAddr(self.base + i as u64 * PAGE_SIZE)
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> usize {
        self.free
    }

    /// Frames tracked (free, used, or holes).
    pub fn tracked_frames(&self) -> usize {
        self.frames
    }

    /// Takes one frame.
    pub fn alloc(&mut self) -> Option<PhysAddr> {
        self.alloc_contiguous(1, 1)
    }

    /// Takes `count` physically contiguous frames whose first frame is
    /// aligned to `align` frames (a power of two).
    pub fn alloc_contiguous(&mut self, count: usize, align: usize) -> Option<PhysAddr> {
        if count == 0 || !align.is_power_of_two() || count > self.free {
            return None;
        }
        let align_bytes = align as u64 * PAGE_SIZE;
        // Search from the hint, then from the start.
        for start_hint in [self.next, 0] {
            let mut i = start_hint;
            while i + count <= self.frames {
                let addr = self.addr(i).0;
                if !addr.is_multiple_of(align_bytes) {
                    i = ((addr.next_multiple_of(align_bytes) - self.base) / PAGE_SIZE) as usize;
                    continue;
                }
                match (i..i + count).find(|&j| self.is_used(j)) {
                    Some(j) => i = j + 1,
                    None => {
                        for j in i..i + count {
                            self.flip(j);
                        }
                        self.free -= count;
                        self.next = i + count;
                        return Some(self.addr(i));
                    }
                }
            }
        }
        None
    }

    /// Returns one frame.
    pub fn free(&mut self, frame: PhysAddr) -> Result<(), FreeError> {
        if !frame.0.is_multiple_of(PAGE_SIZE) || frame.0 < self.base {
            return Err(FreeError::NotTracked(frame));
        }
        let i = ((frame.0 - self.base) / PAGE_SIZE) as usize;
        if i >= self.frames {
            return Err(FreeError::NotTracked(frame));
        }
        if !self.is_used(i) {
            return Err(FreeError::DoubleFree(frame));
        }
        self.flip(i);
        self.free += 1;
        self.next = self.next.min(i);
        Ok(())
    }
}

fn span(ranges: &[PhysRange]) -> (u64, u64) {
    let mut lo = u64::MAX;
    let mut hi = 0;
    for r in ranges.iter().filter_map(|r| r.page_inner()) {
        if !r.is_empty() {
            lo = lo.min(r.start.0);
            hi = hi.max(r.end.0);
        }
    }
    if lo >= hi { (0, 0) } else { (lo, hi) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec;

    fn r(a: u64, b: u64) -> PhysRange {
        PhysRange::new(PhysAddr(a), PhysAddr(b))
    }

    fn leak(words: usize) -> &'static mut [u64] {
        Box::leak(vec![0u64; words].into_boxed_slice())
    }

    fn allocator(usable: &[PhysRange], reserved: &[PhysRange]) -> FrameAllocator {
        let words = (FrameAllocator::bitmap_bytes(usable) / 8) as usize;
        FrameAllocator::new(usable, reserved, |_| leak(words)).unwrap()
    }

    #[test]
    fn counts_only_usable_pages() {
        let a = allocator(&[r(0x1000, 0x9f000), r(0x10_0000, 0x20_0000)], &[]);
        // 0x9e pages low, 0x100 high, minus one bitmap page.
        assert_eq!(a.free_frames(), 0x9e + 0x100 - 1);
    }

    #[test]
    fn partial_pages_are_not_usable() {
        let a = allocator(&[r(0x1800, 0x4800)], &[]);
        // Only 0x2000..0x4000 is whole pages: 2 pages, one taken by the bitmap.
        assert_eq!(a.free_frames(), 1);
    }

    #[test]
    fn never_hands_out_reserved_or_hole_frames_and_no_duplicates() {
        let usable = [r(0x0, 0x8000), r(0x10000, 0x20000)];
        let reserved = [r(0x12000, 0x14000)];
        let mut a = allocator(&usable, &reserved);
        let mut seen = std::collections::BTreeSet::new();
        while let Some(f) = a.alloc() {
            assert!(f.0 % PAGE_SIZE == 0);
            assert!(usable.iter().any(|u| u.contains(f)), "{f:?} not usable");
            assert!(!reserved.iter().any(|x| x.contains(f)), "{f:?} reserved");
            assert!(seen.insert(f.0), "{f:?} handed out twice");
        }
        assert_eq!(a.free_frames(), 0);
        // 8 + 16 pages, minus 2 reserved, minus 1 bitmap.
        assert_eq!(seen.len(), 8 + 16 - 2 - 1);
    }

    #[test]
    fn free_then_reuse_and_errors() {
        let mut a = allocator(&[r(0x0, 0x10000)], &[]);
        let f = a.alloc().unwrap();
        let before = a.free_frames();
        a.free(f).unwrap();
        assert_eq!(a.free_frames(), before + 1);
        assert_eq!(a.free(f), Err(FreeError::DoubleFree(f)));
        assert_eq!(
            a.free(PhysAddr(0x123)),
            Err(FreeError::NotTracked(PhysAddr(0x123)))
        );
        assert_eq!(
            a.free(PhysAddr(0x100000)),
            Err(FreeError::NotTracked(PhysAddr(0x100000)))
        );
        assert_eq!(a.alloc(), Some(f));
    }

    #[test]
    fn contiguous_and_aligned() {
        // 0x0 is not usable and 0x200000 is reserved: the only 2 MiB-aligned
        // run of 512 frames is at 0x400000.
        let mut a = allocator(&[r(0x1000, 0x60_0000)], &[r(0x20_0000, 0x20_1000)]);
        assert_eq!(a.alloc_contiguous(512, 512), Some(PhysAddr(0x40_0000)));
        assert_eq!(a.alloc_contiguous(512, 512), None);
        // Unaligned runs still fit below.
        assert!(a.alloc_contiguous(256, 1).is_some());
        let mut b = allocator(&[r(0x0, 0x60_0000)], &[]);
        let x = b.alloc_contiguous(512, 512).unwrap();
        let y = b.alloc_contiguous(512, 512).unwrap();
        assert_ne!(x, y);
        assert_eq!(x.0 % 0x20_0000, 0);
        assert_eq!(y.0 % 0x20_0000, 0);
        assert_eq!(b.alloc_contiguous(0, 1), None);
        assert_eq!(b.alloc_contiguous(1, 3), None);
    }

    #[test]
    fn bitmap_avoids_reserved_ranges() {
        let usable = [r(0x0, 0x10_0000)];
        let reserved = [r(0x0, 0x8000)];
        let mut placed = None;
        let words = (FrameAllocator::bitmap_bytes(&usable) / 8) as usize;
        let a = FrameAllocator::new(&usable, &reserved, |range| {
            placed = Some(range);
            leak(words)
        })
        .unwrap();
        let placed = placed.unwrap();
        assert!(!reserved[0].overlaps(&placed));
        assert_eq!(a.free_frames(), 0x100 - 8 - 1);
    }

    #[test]
    fn empty_or_all_reserved_is_an_error() {
        assert_eq!(
            FrameAllocator::new(&[], &[], |_| leak(1)).err(),
            Some(FrameInitError::NoUsableMemory)
        );
        assert_eq!(
            FrameAllocator::new(&[r(0x1000, 0x1800)], &[], |_| leak(1)).err(),
            Some(FrameInitError::NoUsableMemory)
        );
        let res = FrameAllocator::new(&[r(0x0, 0x2000)], &[r(0x0, 0x1000)], |_| leak(1));
        assert_eq!(res.err(), Some(FrameInitError::NoUsableMemory));
    }
}
