//! The boot sequence in Rust, entered from `entry` on the boot stack.

use log::info;

use super::pvh::{self, BootInfo, PhysMemory, Unreadable};
use crate::cpu::{self, idt, percpu};
use crate::mm::paging::{self, PageTables, PteFlags};
use crate::mm::{self, PAGE_SIZE, PhysAddr, PhysRange, VirtAddr, heap, layout, stack};
use crate::platform::{self, native::Native};
use crate::{console, fatal};

/// The line the runner waits for.
#[cfg(not(feature = "ktest"))]
pub const READY_LINE: &str = "rivet: ready";

/// Heap size: enough for the TPM engine's RSA work and its state.
const HEAP_SIZE: u64 = 32 * 1024 * 1024;

/// Memory reachable through the boot page tables (identity, low 4 GiB).
struct BootMemory;

const BOOT_MAP_END: u64 = 4 << 30;

impl PhysMemory for BootMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
        let end = addr.checked_add(buf.len() as u64).ok_or(Unreadable)?;
        // Address 0 means "absent"; the rest must be inside the boot map
        // (the loader may put its tables anywhere in low memory, page 0 too).
        if addr == 0 || end > BOOT_MAP_END {
            return Err(Unreadable);
        }
        // SAFETY: [addr, end) lies inside the identity map of the low 4 GiB
        // that the entry code built; reading it has no side effect on RAM
        // (and the loader put only RAM at the addresses it handed us).
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

#[unsafe(no_mangle)]
extern "C" fn kernel_start(start_info: u32) -> ! {
    console::init(log::LevelFilter::Info);
    idt::load(false);
    if let Err(missing) = cpu::enable_nx() {
        fatal!("CPU lacks {}", missing.0);
    }

    let mut cmdline = [0u8; pvh::MAX_CMDLINE];
    let len = pvh::read_cmdline(u64::from(start_info), &BootMemory, &mut cmdline);
    let cmdline = core::str::from_utf8(&cmdline[..len]).unwrap_or("");
    set_log_level(cmdline);
    info!("Rivet SVSM kernel {} starting", env!("CARGO_PKG_VERSION"));

    let boot_info = read_boot_info(u64::from(start_info), cmdline);
    for r in boot_info.regions() {
        info!(
            "memory {:#012x}..{:#012x} {:?}",
            r.range.start.0, r.range.end.0, r.kind
        );
    }

    init_memory(&boot_info);
    let cpu = match percpu::init_boot_cpu() {
        Ok(cpu) => cpu,
        Err(e) => fatal!("per-CPU area: {e:?}"),
    };
    idt::load(true);
    info!("CPU {} ready: GDT, TSS, IDT with IST stacks", cpu.index);

    let native: &'static Native = alloc::boxed::Box::leak(alloc::boxed::Box::new(Native::new()));
    let platform = platform::install(native);
    info!("platform: {:?}", platform.kind());

    #[cfg(feature = "ktest")]
    crate::ktest::run(&boot_info, cmdline);
    #[cfg(not(feature = "ktest"))]
    ready(platform, &boot_info)
}

/// Boot is done: say so, then serve the guest if there is one.
#[cfg(not(feature = "ktest"))]
fn ready(platform: &'static dyn platform::Platform, boot_info: &BootInfo) -> ! {
    let hz = crate::cpu::time::calibrate();
    info!("TSC {hz} Hz");
    let (used, free) = heap::usage();
    info!(
        "{} free frames, heap {} KiB used / {} KiB free",
        mm::free_frame_count(),
        used / 1024,
        free / 1024
    );
    crate::println!("{READY_LINE} ({:?} platform)", platform.kind());
    if boot_info.modules().is_empty() {
        info!("no guest firmware given: nothing to serve");
        platform.terminate(platform::ExitStatus::Success)
    }
    let started = crate::cpu::time::now_ms();
    let tpm = match crate::vtpm::manufacture() {
        Ok(tpm) => tpm,
        Err(e) => fatal!("vTPM: {e}"),
    };
    info!(
        "vTPM manufactured and started; EKs (RSA-2048 L-1, ECC P-256 L-2) and persistent AKs created in {} ms",
        crate::cpu::time::now_ms() - started
    );
    let mut tpm = tpm;
    if boot_info
        .cmdline()
        .split_ascii_whitespace()
        .any(|w| w == "rivet.bench")
    {
        // The same Quotes the test guest times, without the guest round trip.
        match tpm.bench_quotes(10) {
            Ok(ticks) => crate::println!("bench: svsm_quote=10 tsc_ticks={ticks}"),
            Err(e) => fatal!("bench: {e}"),
        }
    }
    let setup = match platform.start_guest(boot_info) {
        Ok(s) => s,
        Err(e) => fatal!("cannot start the guest: {e}"),
    };
    crate::requests::run(platform, setup, Some(tpm))
}

fn set_log_level(cmdline: &str) {
    for word in cmdline.split_ascii_whitespace() {
        if let Some(level) = word.strip_prefix("rivet.log=")
            && let Ok(level) = level.parse::<log::LevelFilter>()
        {
            log::set_max_level(level);
        }
    }
}

fn read_boot_info(start_info: u64, cmdline: &str) -> BootInfo {
    #[cfg(feature = "ktest")]
    let result = crate::ktest::inject::parse_boot_info(start_info, cmdline, &BootMemory);
    #[cfg(not(feature = "ktest"))]
    let result = {
        let _ = cmdline;
        pvh::parse(start_info, &BootMemory)
    };
    match result {
        Ok(info) => info,
        Err(e) => fatal!("boot info: {e}"),
    }
}

/// Frame allocator, the kernel's own page tables, then the heap.
fn init_memory(boot_info: &BootInfo) {
    let image = layout::image();
    let mut usable = [PhysRange::new(PhysAddr(0), PhysAddr(0)); pvh::MAX_MEMMAP_ENTRIES];
    let mut count = 0;
    for r in boot_info.ram() {
        usable[count] = r;
        count += 1;
    }
    let usable = &usable[..count];
    // The first MiB holds the loader's tables and firmware data, the boot
    // modules hold the guest firmware, and the guest's memory is the
    // guest's: keep them all out.
    let mut reserved = [PhysRange::new(PhysAddr(0), PhysAddr(0)); 3 + pvh::MAX_MODULES];
    reserved[0] = PhysRange::new(PhysAddr(0), PhysAddr(0x10_0000));
    reserved[1] = image;
    reserved[2] = Native::guest_memory();
    for (slot, module) in reserved[3..].iter_mut().zip(boot_info.modules()) {
        *slot = *module;
    }
    let reserved = &reserved[..3 + boot_info.modules().len()];
    if let Err(e) = mm::init_frames(usable, reserved) {
        fatal!("frame allocator: {e}");
    }

    let mut tables = match PageTables::new() {
        Ok(t) => t,
        Err(e) => fatal!("page tables: {e}"),
    };
    let data = PteFlags::WRITABLE | PteFlags::NO_EXECUTE;
    // All RAM, identity, read/write, never executable; page 0 stays unmapped
    // so that null pointers fault, and the image gets its own mappings.
    for ram in usable {
        let Some(ram) = ram.page_inner() else {
            continue;
        };
        let start = ram.start.0.max(PAGE_SIZE);
        for (s, e) in [
            (start, ram.end.0.min(image.start.0)),
            (start.max(image.end.0), ram.end.0),
        ] {
            if s < e
                && let Err(err) = tables.map_range(VirtAddr(s), PhysAddr(s), e - s, data)
            {
                fatal!("mapping RAM {s:#x}..{e:#x}: {err}");
            }
        }
    }
    let guard = layout::boot_stack_guard();
    let sections = [
        (layout::text(), PteFlags::empty()),
        (layout::rodata(), PteFlags::NO_EXECUTE),
        (layout::data(), data),
    ];
    for (range, flags) in sections {
        let mut page = range.start.0;
        while page < range.end.0 {
            if !guard.contains(PhysAddr(page))
                && let Err(err) = tables.map_4k(VirtAddr(page), PhysAddr(page), flags)
            {
                fatal!("mapping the image at {page:#x}: {err}");
            }
            page += PAGE_SIZE;
        }
    }
    // SAFETY: the new tables map the image (code, data, the boot stack) and
    // all RAM at the same addresses as the boot tables; the only things left
    // out are page 0 and the boot stack's guard page, which nothing uses.
    unsafe { tables.activate() };
    *paging::KERNEL.lock() = Some(tables);

    if let Err(e) = stack::register_boot_guard(guard) {
        fatal!("stack guard registry: {e:?}");
    }
    if let Err(e) = heap::init(HEAP_SIZE) {
        fatal!("heap: cannot get {} bytes", e.size);
    }
    info!(
        "memory: image {:#x}..{:#x}, {} frames free, heap {} MiB",
        image.start.0,
        image.end.0,
        mm::free_frame_count(),
        HEAP_SIZE >> 20
    );
}
