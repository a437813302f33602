//! The kernel heap: one contiguous run of frames managed by
//! `linked_list_allocator`, behind a spin lock, as the global allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;
use spin::Mutex;

use super::{PAGE_SIZE, alloc_frames};

/// The global allocator.
pub struct KernelHeap(Mutex<Heap>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new(Heap::empty()));

// SAFETY: allocation and deallocation are delegated to a correct allocator
// under a lock; the heap memory is owned by it alone (see `init`).
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = NonNull::new(ptr) {
            // SAFETY: the caller passes a pointer this allocator returned
            // for the same layout (GlobalAlloc contract).
            unsafe { self.0.lock().deallocate(ptr, layout) }
        }
    }
}

/// Why the heap could not be set up.
#[derive(Clone, Copy, Debug)]
pub struct HeapInitError {
    /// Bytes asked for.
    pub size: u64,
}

/// Gives the heap `size` bytes of contiguous RAM.
pub fn init(size: u64) -> Result<(), HeapInitError> {
    let mut heap = HEAP.0.lock();
    if heap.size() != 0 {
        return Err(HeapInitError { size });
    }
    let frames = size.div_ceil(PAGE_SIZE) as usize;
    let start = alloc_frames(frames, 1).ok_or(HeapInitError { size })?;
    // SAFETY: the frames were just taken from the frame allocator, are
    // identity-mapped writable, and now belong to the heap for good; the
    // heap was empty, so nothing it handed out is affected.
    unsafe { heap.init(start.0 as *mut u8, frames * PAGE_SIZE as usize) };
    Ok(())
}

/// (used, free) bytes.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.0.lock();
    (heap.used(), heap.free())
}
