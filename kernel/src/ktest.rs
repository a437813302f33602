//! In-kernel unit tests, built in with the `ktest` feature. The image runs
//! them after boot, prints one line per test and a summary on the serial
//! port, and ends QEMU with success only if every test passed:
//!
//! ```text
//! ktest: <name> ... ok
//! ktest: <name> ... FAILED: <reason>
//! ktest: result: <passed> passed, <failed> failed
//! ```
//!
//! The command line can also ask for a deliberate failure (`rivet.inject=`),
//! so the host can check that each fatal path is reported.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::hint::black_box;

use crate::boot::pvh::BootInfo;
use crate::cpu::exceptions::{self, catch_fault, vector};
use crate::cpu::{instr, percpu};
use crate::mm::paging::{self, PageSize, PteFlags};
use crate::mm::{
    self, LARGE_PAGE_SIZE, PAGE_SIZE, PhysAddr, PhysRange, VirtAddr, heap, layout, stack,
};
use crate::platform::{self, ExitStatus, PlatformError};

type TestResult = Result<(), String>;
type Test = (&'static str, fn(&BootInfo) -> TestResult);

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

/// Runs every test (or the injected failure) and ends the VM.
pub fn run(boot_info: &BootInfo, cmdline: &str) -> ! {
    inject::after_boot(cmdline);
    let tests: [Test; 11] = [
        ("boot_info_memory_map", boot_info_memory_map),
        ("frame_allocator_alloc_free", frame_allocator_alloc_free),
        ("frame_allocator_contiguous", frame_allocator_contiguous),
        ("heap_alloc_and_free", heap_alloc_and_free),
        ("paging_map_unmap_4k", paging_map_unmap_4k),
        ("paging_map_2m", paging_map_2m),
        ("image_is_w_xor_x", image_is_w_xor_x),
        ("exception_breakpoint_returns", exception_breakpoint_returns),
        ("stack_guard_hit_reported", stack_guard_hit_reported),
        ("percpu_boot_cpu", percpu_boot_cpu),
        ("platform_native", platform_native),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        match test(boot_info) {
            Ok(()) => {
                passed += 1;
                crate::println!("ktest: {name} ... ok");
            }
            Err(why) => {
                failed += 1;
                crate::println!("ktest: {name} ... FAILED: {why}");
            }
        }
    }
    crate::println!("ktest: result: {passed} passed, {failed} failed");
    let status = if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    };
    match platform::current() {
        Some(p) => p.terminate(status),
        None => platform::native::debug_exit(status),
    }
}

fn boot_info_memory_map(info: &BootInfo) -> TestResult {
    let regions = info.regions();
    ensure!(!regions.is_empty(), "no regions");
    for pair in regions.windows(2) {
        ensure!(
            pair[0].range.end <= pair[1].range.start,
            "regions unsorted or overlapping: {pair:?}"
        );
    }
    let image = layout::image();
    ensure!(
        info.ram()
            .any(|r| r.start <= image.start && image.end <= r.end),
        "kernel image {image:?} not inside RAM"
    );
    Ok(())
}

fn frame_allocator_alloc_free(_: &BootInfo) -> TestResult {
    let before = mm::free_frame_count();
    let frames: Vec<PhysAddr> = (0..64).filter_map(|_| mm::alloc_frame()).collect();
    ensure!(frames.len() == 64, "only {} of 64 frames", frames.len());
    ensure!(
        mm::free_frame_count() == before - 64,
        "free count did not drop by 64"
    );
    let image = layout::image();
    for (i, f) in frames.iter().enumerate() {
        ensure!(f.0 % PAGE_SIZE == 0, "unaligned frame {f}");
        ensure!(
            f.0 >= 0x10_0000 && !image.contains(*f),
            "frame {f} in reserved memory"
        );
        ensure!(!frames[..i].contains(f), "frame {f} handed out twice");
        // SAFETY: the frame is ours and identity-mapped; allocation zeroed it.
        let first = unsafe { core::ptr::read_volatile(f.0 as *const u64) };
        ensure!(first == 0, "frame {f} not zeroed");
    }
    for f in &frames {
        mm::free_frame(*f).map_err(|e| format!("free {f}: {e:?}"))?;
    }
    ensure!(mm::free_frame_count() == before, "free count not restored");
    ensure!(mm::free_frame(frames[0]).is_err(), "double free accepted");
    Ok(())
}

fn frame_allocator_contiguous(_: &BootInfo) -> TestResult {
    let run = mm::alloc_frames(512, 512).ok_or("no 2 MiB-aligned run of 512 frames")?;
    ensure!(run.0 % LARGE_PAGE_SIZE == 0, "run {run} not 2 MiB aligned");
    for i in 0..512 {
        mm::free_frame(PhysAddr(run.0 + i * PAGE_SIZE)).map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

fn heap_alloc_and_free(_: &BootInfo) -> TestResult {
    let (used0, _) = heap::usage();
    let mut v: Vec<u64> = Vec::new();
    for i in 0..(1 << 17) {
        v.push(i);
    }
    ensure!(
        v.iter().sum::<u64>() == (1u64 << 17) * ((1 << 17) - 1) / 2,
        "vector contents wrong"
    );
    let boxed: Vec<Box<[u8; 1000]>> = (0..100).map(|i| Box::new([i as u8; 1000])).collect();
    ensure!(
        boxed.iter().enumerate().all(|(i, b)| b[999] == i as u8),
        "boxes corrupted"
    );
    let (used1, _) = heap::usage();
    ensure!(
        used1 >= used0 + (1 << 20) + 100_000,
        "heap usage did not grow"
    );
    drop(v);
    drop(boxed);
    let (used2, _) = heap::usage();
    ensure!(used2 == used0, "heap usage {used2} not back to {used0}");
    Ok(())
}

const TEST_VA: u64 = 0xFFFF_D000_0000_0000;

extern "C" fn touch(addr: usize) {
    // SAFETY: deliberately reads an address that may be unmapped; the caller
    // runs this under catch_fault, which turns the fault into an error.
    black_box(unsafe { core::ptr::read_volatile(addr as *const u64) });
}

fn paging_map_unmap_4k(_: &BootInfo) -> TestResult {
    let frame = mm::alloc_frame().ok_or("no frame")?;
    let va = VirtAddr(TEST_VA);
    paging::map_4k_live(va, frame, PteFlags::WRITABLE | PteFlags::NO_EXECUTE)
        .map_err(|e| format!("map: {e}"))?;
    ensure!(
        paging::map_4k_live(va, frame, PteFlags::WRITABLE).is_err(),
        "mapping the same page twice was accepted"
    );
    // SAFETY: va now maps `frame`, which this test owns.
    unsafe { core::ptr::write_volatile((TEST_VA + 8) as *mut u64, 0x5A5A_1234) };
    // SAFETY: the same frame through the identity map.
    let seen = unsafe { core::ptr::read_volatile((frame.0 + 8) as *const u64) };
    ensure!(
        seen == 0x5A5A_1234,
        "write through the new mapping not seen at the frame"
    );
    match paging::translate_live(VirtAddr(TEST_VA + 8)) {
        Some((pa, _, PageSize::Small)) if pa.0 == frame.0 + 8 => {}
        other => return Err(format!("translate gave {other:?}")),
    }
    ensure!(
        catch_fault(touch, TEST_VA as usize, 0).is_ok(),
        "mapped page faulted"
    );
    let unmapped = paging::unmap_4k_live(va).map_err(|e| format!("unmap: {e}"))?;
    ensure!(unmapped == frame, "unmap returned {unmapped}");
    ensure!(
        paging::translate_live(va).is_none(),
        "still translates after unmap"
    );
    match catch_fault(touch, TEST_VA as usize, 0) {
        Err(f) if f.vector == vector::PAGE_FAULT && f.cr2 == TEST_VA && !f.stack_guard_hit => {}
        other => return Err(format!("access after unmap gave {other:?}")),
    }
    ensure!(paging::unmap_4k_live(va).is_err(), "second unmap accepted");
    mm::free_frame(frame).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn paging_map_2m(_: &BootInfo) -> TestResult {
    let run = mm::alloc_frames(512, 512).ok_or("no 2 MiB run")?;
    let va = TEST_VA + 0x4000_0000;
    let mut guard = paging::KERNEL.lock();
    let tables = guard.as_mut().ok_or("no live tables")?;
    tables
        .map_2m(VirtAddr(va), run, PteFlags::WRITABLE | PteFlags::NO_EXECUTE)
        .map_err(|e| format!("map_2m: {e}"))?;
    ensure!(
        tables
            .map_4k(VirtAddr(va + PAGE_SIZE), run, PteFlags::WRITABLE)
            .is_err(),
        "4 KiB map inside a 2 MiB page accepted"
    );
    ensure!(
        tables
            .map_2m(VirtAddr(va + PAGE_SIZE), run, PteFlags::WRITABLE)
            .is_err(),
        "misaligned 2 MiB map accepted"
    );
    let probe = va + LARGE_PAGE_SIZE - 8;
    match tables.translate(VirtAddr(probe)) {
        Some((pa, flags, PageSize::Large))
            if pa.0 == run.0 + LARGE_PAGE_SIZE - 8 && flags.contains(PteFlags::HUGE) => {}
        other => return Err(format!("translate gave {other:?}")),
    }
    drop(guard);
    // SAFETY: the last word of the 2 MiB page we just mapped to our frames.
    unsafe { core::ptr::write_volatile(probe as *mut u64, 77) };
    // SAFETY: the same word through the identity map.
    let seen = unsafe { core::ptr::read_volatile((run.0 + LARGE_PAGE_SIZE - 8) as *const u64) };
    ensure!(seen == 77, "write through the 2 MiB page not seen");
    Ok(())
}

fn image_is_w_xor_x(_: &BootInfo) -> TestResult {
    let check = |name: &str, range: PhysRange, writable: bool, executable: bool| -> TestResult {
        let mut page = range.start.0;
        while page < range.end.0 {
            if !layout::boot_stack_guard().contains(PhysAddr(page)) {
                let (_, flags, size) = paging::translate_live(VirtAddr(page))
                    .ok_or(format!("{name} page {page:#x} unmapped"))?;
                ensure!(
                    size == PageSize::Small,
                    "{name} page {page:#x} is a large page"
                );
                ensure!(
                    flags.contains(PteFlags::WRITABLE) == writable,
                    "{name} page {page:#x} writable={}",
                    !writable
                );
                ensure!(
                    flags.contains(PteFlags::NO_EXECUTE) != executable,
                    "{name} page {page:#x} executable={}",
                    !executable
                );
            }
            page += PAGE_SIZE;
        }
        Ok(())
    };
    check("text", layout::text(), false, true)?;
    check("rodata", layout::rodata(), false, false)?;
    check("data", layout::data(), true, false)?;
    ensure!(
        paging::translate_live(VirtAddr(layout::boot_stack_guard().start.0)).is_none(),
        "boot stack guard page is mapped"
    );
    ensure!(
        paging::translate_live(VirtAddr(0)).is_none(),
        "page 0 is mapped"
    );
    ensure!(instr::read_cr0() & (1 << 16) != 0, "CR0.WP is off");
    // SAFETY: reading EFER has no side effect.
    let efer = unsafe { instr::rdmsr(instr::msr::EFER) };
    ensure!(efer & (1 << 11) != 0, "EFER.NXE is off");
    ensure!(instr::read_cr4() & (1 << 5) != 0, "CR4.PAE is off");
    Ok(())
}

fn exception_breakpoint_returns(_: &BootInfo) -> TestResult {
    let before = exceptions::breakpoint_count();
    instr::int3();
    instr::int3();
    ensure!(
        exceptions::breakpoint_count() == before + 2,
        "breakpoints not counted"
    );
    Ok(())
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    if depth == 0 {
        return frame[0];
    }
    recurse(depth - 1).wrapping_add(black_box(frame[3]))
}

extern "C" fn overflow(_: usize) {
    black_box(recurse(black_box(1_000_000)));
}

fn stack_guard_hit_reported(_: &BootInfo) -> TestResult {
    let stack = stack::allocate("ktest", 16 * 1024).map_err(|e| format!("{e:?}"))?;
    match catch_fault(overflow, 0, stack.top.0) {
        Err(f) if f.vector == vector::PAGE_FAULT && f.stack_guard_hit => {
            ensure!(
                stack.guard.0 <= f.cr2 && f.cr2 < stack.guard.0 + PAGE_SIZE,
                "CR2 {:#x} not in the guard page {}",
                f.cr2,
                stack.guard
            );
        }
        other => return Err(format!("overflow gave {other:?}")),
    }
    ensure!(
        stack::guard_hit(stack.guard.0) == Some("ktest"),
        "guard not registered by name"
    );
    Ok(())
}

fn percpu_boot_cpu(_: &BootInfo) -> TestResult {
    let cpu = percpu::current();
    ensure!(cpu.index == 0, "boot CPU index {}", cpu.index);
    // SAFETY: reading GS_BASE has no side effect.
    let gs = unsafe { instr::rdmsr(instr::msr::GS_BASE) };
    ensure!(
        gs == cpu as *const _ as u64,
        "GS base does not point at the per-CPU area"
    );
    for s in &cpu.ist_stacks {
        ensure!(
            paging::translate_live(VirtAddr(s.top.0 - 8)).is_some(),
            "IST stack {} unmapped",
            s.name
        );
        ensure!(
            stack::guard_hit(s.guard.0) == Some(s.name),
            "IST stack {} has no guard",
            s.name
        );
    }
    Ok(())
}

fn platform_native(_: &BootInfo) -> TestResult {
    let p = platform::current().ok_or("no platform")?;
    ensure!(
        p.kind() == platform::PlatformKind::Native,
        "kind {:?}",
        p.kind()
    );
    let page = PhysRange::new(PhysAddr(0x20_0000), PhysAddr(0x20_1000));
    ensure!(p.validate_pages(page).is_ok(), "validate refused a page");
    let odd = PhysRange::new(PhysAddr(0x20_0001), PhysAddr(0x20_1000));
    ensure!(
        p.validate_pages(odd) == Err(PlatformError::InvalidRange(odd)),
        "misaligned range accepted"
    );
    let mut out = [0u8; 0x4A0];
    ensure!(
        matches!(
            p.attestation_report(&[0; 64], &mut out),
            Err(PlatformError::Unsupported(_))
        ),
        "without a key from the host, attestation reports must be unsupported"
    );
    Ok(())
}

/// Deliberate failures, chosen with `rivet.inject=<what>` on the command line.
pub mod inject {
    use super::*;
    use crate::boot::pvh::{self, BootInfoError, PhysMemory, Unreadable, offset};

    fn mode(cmdline: &str) -> Option<&str> {
        cmdline
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("rivet.inject="))
    }

    /// Boot memory with the start info altered as the injection asks.
    struct Altered<'a, M: PhysMemory> {
        inner: &'a M,
        start_info: u64,
        patch: Option<(u64, u64)>, // (offset in start info, value) as u32 or u64
        overlap_memmap: Option<u64>,
    }

    impl<M: PhysMemory> PhysMemory for Altered<'_, M> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
            self.inner.read(addr, buf)?;
            let end = addr + buf.len() as u64;
            let mut patch = |at: u64, bytes: &[u8]| {
                for (i, b) in bytes.iter().enumerate() {
                    let a = at + i as u64;
                    if a >= addr && a < end {
                        buf[(a - addr) as usize] = *b;
                    }
                }
            };
            if let Some((off, value)) = self.patch {
                let width = if off == offset::MEMMAP { 8 } else { 4 };
                patch(self.start_info + off, &value.to_le_bytes()[..width]);
            }
            if let Some(memmap) = self.overlap_memmap {
                // Entry 1 becomes a copy of entry 0's address and size.
                let mut first = [0u8; 16];
                self.inner.read(memmap, &mut first)?;
                patch(memmap + 24, &first);
            }
            Ok(())
        }
    }

    /// Parses the boot info, first altering it if the command line asks.
    pub fn parse_boot_info<M: PhysMemory>(
        start_info: u64,
        cmdline: &str,
        mem: &M,
    ) -> Result<BootInfo, BootInfoError> {
        let mut memmap = [0u8; 8];
        let _ = mem.read(start_info + offset::MEMMAP, &mut memmap);
        let memmap = u64::from_le_bytes(memmap);
        let mut altered = Altered {
            inner: mem,
            start_info,
            patch: None,
            overlap_memmap: None,
        };
        let mut start = start_info;
        match mode(cmdline) {
            Some("no-start-info") => start = 0,
            Some("bad-magic") => altered.patch = Some((offset::MAGIC, 0x1BAD_B002)),
            Some("no-memmap") => altered.patch = Some((offset::MEMMAP, 0)),
            Some("empty-memmap") => altered.patch = Some((offset::MEMMAP_ENTRIES, 0)),
            Some("huge-memmap") => altered.patch = Some((offset::MEMMAP_ENTRIES, 100_000)),
            Some("overlap-memmap") => altered.overlap_memmap = Some(memmap),
            _ => {}
        }
        pvh::parse(start, &altered)
    }

    /// Failures provoked once the kernel is up.
    pub fn after_boot(cmdline: &str) {
        match mode(cmdline) {
            Some("invalid-opcode") => {
                // SAFETY: deliberately raises #UD to check the fatal report.
                unsafe { core::arch::asm!("ud2") };
            }
            Some("stack-overflow") => {
                black_box(recurse(black_box(100_000_000)));
            }
            Some("panic") => panic!("injected panic"),
            _ => {}
        }
    }
}
