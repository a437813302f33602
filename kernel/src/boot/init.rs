//! The boot sequence in Rust, entered from `entry` on the boot stack.

use log::info;

use super::launch_info::{self, BootMagic, LaunchInfo, LaunchPlatform, RegionKind};
use super::pvh::{self, BootInfo, PhysMemory, Unreadable};
use crate::cpu::{self, idt, percpu};
use crate::mm::paging::{self, PageTables, PteFlags};
use crate::mm::{self, PAGE_SIZE, PhysAddr, PhysRange, VirtAddr, heap, layout, stack};
use crate::platform::{self, native::Native, snp, tdp};
use crate::{console, fatal};

/// The line the runner waits for.
#[cfg(not(feature = "ktest"))]
pub const READY_LINE: &str = "rivet: ready";

use super::{HEAP_SIZE, IGVM_SVSM_MEMORY_NEEDED};

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
    // EBX held either a PVH start info (QEMU -kernel) or the launch-info
    // page of an IGVM image; only the latter takes the other path.
    if launch_info::identify(u64::from(start_info), &BootMemory) == BootMagic::LaunchInfo {
        igvm_start(u64::from(start_info))
    }
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
    ready(platform, &boot_info, !boot_info.modules().is_empty())
}

/// An IGVM launch: EBX = the launch-info page. On SNP the #VC handler and
/// the GHCB come first (the console's port I/O needs them); the SVSM's
/// memory is what the image reserved beyond its launch pages, validated
/// (SNP) or accepted (TDP) before the frame allocator gets it.
fn igvm_start(addr: u64) -> ! {
    idt::load(false);
    let parsed = launch_info::parse(addr, &BootMemory);
    // First page of SVSM memory free for frames and heap.
    let mut free_from = None;
    if let Ok(info) = &parsed {
        match info.platform {
            LaunchPlatform::Snp => match snp::hw::early_init(info) {
                Ok(first) => free_from = Some(first),
                // No console without a GHCB: end the VM with a reason code.
                Err(_) => snp::hw::terminate_now(0x10),
            },
            LaunchPlatform::Tdp | LaunchPlatform::Native => {}
        }
    }
    // The console's 16550 set-up is port I/O: on TDX that raises #VE (no
    // handler), so on tdp the console writes through TDG.VP.VMCALL port I/O
    // from the start (log records and fatal reports included).
    if matches!(&parsed, Ok(i) if i.platform == LaunchPlatform::Tdp) {
        console::init_with_writer(log::LevelFilter::Info, tdp::early_console_write);
        platform::set_early_exit(tdp::early_terminate);
    } else {
        console::init(log::LevelFilter::Info);
    }
    if let Err(missing) = cpu::enable_nx() {
        fatal!("CPU lacks {}", missing.0);
    }
    info!(
        "Rivet SVSM kernel {} starting (IGVM launch)",
        env!("CARGO_PKG_VERSION")
    );
    let info = match parsed {
        Ok(info) => info,
        Err(e) => fatal!("{e}"),
    };
    info!(
        "launch info: platform {:?}, SVSM {:#x}..{:#x}, guest VMPL {}",
        info.platform, info.svsm.start.0, info.svsm.end.0, info.guest_vmpl
    );
    let boot_info = match launch_info::read_memory_map(&info, &BootMemory) {
        Ok(b) => b,
        Err(e) => fatal!("{e}"),
    };
    for r in boot_info.regions() {
        info!(
            "memory {:#012x}..{:#012x} {:?}",
            r.range.start.0, r.range.end.0, r.kind
        );
    }
    let platform: &'static dyn platform::Platform = match info.platform {
        LaunchPlatform::Native => {
            init_memory(&boot_info);
            init_cpu();
            let native: &'static Native =
                alloc::boxed::Box::leak(alloc::boxed::Box::new(Native::new()));
            platform::install(native)
        }
        LaunchPlatform::Snp => {
            let free = PhysRange::new(
                PhysAddr(free_from.unwrap_or(info.launch_pages.end.0)),
                info.svsm.end,
            );
            if let Err(e) = snp::hw::validate_early(free) {
                fatal!("SVSM memory {:#x}..{:#x}: {e}", free.start.0, free.end.0);
            }
            init_memory_igvm(&boot_info, &info, free);
            init_cpu();
            let p = match snp::hw::Snp::create(&info, &boot_info) {
                Ok(p) => p,
                Err(e) => fatal!("SNP platform: {e}"),
            };
            let p: &'static snp::hw::Snp = alloc::boxed::Box::leak(alloc::boxed::Box::new(p));
            platform::install(p)
        }
        LaunchPlatform::Tdp => {
            let free = PhysRange::new(info.launch_pages.end, info.svsm.end);
            if let Err(e) = tdp::accept_l1_memory(free) {
                fatal!("SVSM memory {:#x}..{:#x}: {e}", free.start.0, free.end.0);
            }
            init_memory_igvm(&boot_info, &info, free);
            init_cpu();
            let ram: alloc::vec::Vec<PhysRange> = boot_info.ram().collect();
            let l1 = [info.svsm];
            let (Some(firmware), Some(reset_page_copy)) =
                (info.firmware, info.firmware_reset_page_copy)
            else {
                fatal!("tdp: the image has no guest firmware or no reset-page copy")
            };
            let caa = tdp_calling_area(&info, &boot_info);
            let launch = tdp::TdpLaunch {
                ram: &ram,
                l1: &l1,
                firmware,
                firmware_entry: info.firmware_entry,
                reset_page_copy,
                caa,
            };
            match tdp::init(&launch) {
                Ok(p) => platform::install(p),
                Err(e) => fatal!("tdp platform: {e}"),
            }
        }
    };
    info!("platform: {:?}", platform.kind());
    #[cfg(feature = "ktest")]
    crate::ktest::run(&boot_info, "");
    #[cfg(not(feature = "ktest"))]
    ready(
        platform,
        &boot_info,
        info.platform != LaunchPlatform::Native,
    )
}

/// The L2's Calling Area on TDP: the firmware's SVSM_CAA region if the
/// image names one, else the last page of the first RAM range above the
/// SVSM area.
fn tdp_calling_area(info: &LaunchInfo, boot_info: &BootInfo) -> u64 {
    if let Some(r) = info.firmware_region(RegionKind::SvsmCaa) {
        return r.range.start.0;
    }
    boot_info
        .ram()
        .find(|r| r.start >= info.svsm.end)
        .map_or(0, |r| r.end.0 - PAGE_SIZE)
}

/// Per-CPU area, GDT/TSS, IDT with IST stacks.
fn init_cpu() {
    let cpu = match percpu::init_boot_cpu() {
        Ok(cpu) => cpu,
        Err(e) => fatal!("per-CPU area: {e:?}"),
    };
    idt::load(true);
    info!("CPU {} ready: GDT, TSS, IDT with IST stacks", cpu.index);
}

/// Boot is done: say so, then serve the guest if there is one.
#[cfg(not(feature = "ktest"))]
fn ready(platform: &'static dyn platform::Platform, boot_info: &BootInfo, has_guest: bool) -> ! {
    // On TDX port I/O raises #VE: the TSC rate comes from CPUID there.
    let hz = match platform.kind() {
        platform::PlatformKind::Tdp => crate::cpu::time::calibrate_from_cpuid()
            .unwrap_or_else(|| fatal!("tdp: CPUID 0x15 gives no TSC frequency")),
        _ => crate::cpu::time::calibrate(),
    };
    info!("TSC {hz} Hz");
    let (used, free) = heap::usage();
    info!(
        "{} free frames, heap {} KiB used / {} KiB free",
        mm::free_frame_count(),
        used / 1024,
        free / 1024
    );
    crate::println!("{READY_LINE} ({:?} platform)", platform.kind());
    if !has_guest {
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
    map_image(&mut tables, data, PteFlags::empty());
    activate(tables);

    info!(
        "memory: image {:#x}..{:#x}, {} frames free, heap {} MiB",
        image.start.0,
        image.end.0,
        mm::free_frame_count(),
        HEAP_SIZE >> 20
    );
}

/// Memory for an IGVM launch: frames and heap only from `free` (SVSM
/// memory the platform validated or accepted); page tables map all RAM, the
/// guest firmware and the image, with the C-bit on SNP, and the SNP shared
/// window with it clear.
fn init_memory_igvm(boot_info: &BootInfo, info: &LaunchInfo, free: PhysRange) {
    let needed = IGVM_SVSM_MEMORY_NEEDED;
    if free.len() < needed {
        fatal!(
            "only {} KiB of SVSM memory beyond the launch pages, {} KiB needed (rivet-igvm --svsm-size)",
            free.len() / 1024,
            needed / 1024
        );
    }
    if let Err(e) = mm::init_frames(&[free], &[]) {
        fatal!("frame allocator: {e}");
    }
    let c_bit = PteFlags::from_bits_retain(snp::hw::c_bit());
    let mut tables = match PageTables::new() {
        Ok(t) => t,
        Err(e) => fatal!("page tables: {e}"),
    };
    let image = layout::image();
    let data = PteFlags::WRITABLE | PteFlags::NO_EXECUTE | c_bit;
    let mut ranges: alloc::vec::Vec<PhysRange> = boot_info.ram().collect();
    ranges.extend(info.firmware);
    for r in &ranges {
        let Some(r) = r.page_inner() else {
            continue;
        };
        let start = r.start.0.max(PAGE_SIZE);
        for (s, e) in [
            (start, r.end.0.min(image.start.0)),
            (start.max(image.end.0), r.end.0),
        ] {
            if s < e
                && let Err(err) = tables.map_range(VirtAddr(s), PhysAddr(s), e - s, data)
            {
                fatal!("mapping {s:#x}..{e:#x}: {err}");
            }
        }
    }
    map_image(&mut tables, data, c_bit);
    if info.platform == LaunchPlatform::Snp {
        for (va, pa) in snp::hw::shared_pages() {
            let shared = PteFlags::WRITABLE | PteFlags::NO_EXECUTE;
            if let Err(err) = tables.map_4k(VirtAddr(va), PhysAddr(pa), shared) {
                fatal!("mapping the shared page {pa:#x}: {err}");
            }
        }
    }
    activate(tables);
    info!(
        "memory: image {:#x}..{:#x}, SVSM memory {:#x}..{:#x}, {} frames free, heap {} MiB",
        image.start.0,
        image.end.0,
        free.start.0,
        free.end.0,
        mm::free_frame_count(),
        HEAP_SIZE >> 20
    );
}

/// The image's sections with their own permissions.
fn map_image(tables: &mut PageTables, data: PteFlags, extra: PteFlags) {
    let guard = layout::boot_stack_guard();
    let sections = [
        (layout::text(), extra),
        (layout::rodata(), PteFlags::NO_EXECUTE | extra),
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
}

/// Switches to `tables`, registers the boot stack guard, makes the heap.
fn activate(tables: PageTables) {
    // SAFETY: the new tables map the image (code, data, the boot stack) and
    // all RAM at the same addresses as the boot tables; the only things left
    // out are page 0 and the boot stack's guard page, which nothing uses.
    unsafe { tables.activate() };
    *paging::KERNEL.lock() = Some(tables);
    if let Err(e) = stack::register_boot_guard(layout::boot_stack_guard()) {
        fatal!("stack guard registry: {e:?}");
    }
    if let Err(e) = heap::init(HEAP_SIZE) {
        fatal!("heap: cannot get {} bytes", e.size);
    }
}
