//! Memory use of the engine with 64 NV indices defined: the state blob's size
//! and the live heap, measured by a counting global allocator.
//!
//! Run: `cargo run -p rivet-tpm --example memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rivet_tpm::{Platform, PlatformError, Tpm};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Host {
    next: u8,
    blob_len: usize,
}

impl Platform for Host {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError> {
        for b in buf {
            self.next = self.next.wrapping_mul(31).wrapping_add(7);
            *b = self.next;
        }
        Ok(())
    }
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn commit(&mut self, state: &[u8]) -> Result<(), PlatformError> {
        self.blob_len = state.len();
        Ok(())
    }
}

fn command(cc: u32, handles: &[u32], auth: bool, params: &[u8]) -> Vec<u8> {
    let mut c = vec![0x80, if auth { 2 } else { 1 }, 0, 0, 0, 0];
    c.extend_from_slice(&cc.to_be_bytes());
    for h in handles {
        c.extend_from_slice(&h.to_be_bytes());
    }
    if auth {
        c.extend_from_slice(&9u32.to_be_bytes());
        c.extend_from_slice(&[0x40, 0, 0, 9, 0, 0, 1, 0, 0]);
    }
    c.extend_from_slice(params);
    let n = u32::try_from(c.len()).unwrap().to_be_bytes();
    c[2..6].copy_from_slice(&n);
    c
}

fn ok(resp: &[u8]) {
    assert_eq!(&resp[6..10], &[0, 0, 0, 0], "command failed: {resp:02x?}");
}

fn main() {
    const INDICES: u32 = 64;
    const SIZE: u16 = 64;
    let before = LIVE.load(Ordering::Relaxed);
    let mut tpm = Tpm::manufacture(Host {
        next: 1,
        blob_len: 0,
    })
    .expect("manufacture");
    ok(&tpm.execute(0, &command(0x144, &[], false, &[0, 0])));
    let empty_heap = LIVE.load(Ordering::Relaxed) - before;
    let empty_blob = tpm.state().len();
    for i in 0..INDICES {
        let mut p = Vec::new();
        p.extend_from_slice(&[0, 8]);
        p.extend_from_slice(b"password");
        let mut public = (0x0150_0000 + i).to_be_bytes().to_vec();
        public.extend_from_slice(&[0, 0x0B]);
        public.extend_from_slice(&0x0006_0006u32.to_be_bytes()); // OWNER/AUTH read+write
        public.extend_from_slice(&[0, 0]);
        public.extend_from_slice(&SIZE.to_be_bytes());
        p.extend_from_slice(&u16::try_from(public.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&public);
        ok(&tpm.execute(0, &command(0x12A, &[0x4000_0001], true, &p)));
        let mut w = Vec::new();
        w.extend_from_slice(&SIZE.to_be_bytes());
        w.extend(std::iter::repeat_n(0xA5, usize::from(SIZE)));
        w.extend_from_slice(&[0, 0]);
        ok(&tpm.execute(
            0,
            &command(0x137, &[0x4000_0001, 0x0150_0000 + i], true, &w),
        ));
    }
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let blob = tpm.state().len();
    println!("engine with no NV indices: heap {empty_heap} B live, state blob {empty_blob} B");
    println!(
        "engine with {INDICES} NV indices of {SIZE} B: heap {heap} B live, state blob {blob} B (last commit {} B), peak heap {} B",
        tpm.platform().blob_len,
        PEAK.load(Ordering::Relaxed) - before
    );
    println!(
        "fixed part of the engine struct: {} B (stack or static)",
        std::mem::size_of::<Tpm<Host>>()
    );
}
