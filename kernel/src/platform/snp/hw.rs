//! The SNP hardware itself (bare metal only): the GHCB MSR and VMGEXIT,
//! PVALIDATE and RMPADJUST, private and shared memory access, the early
//! set-up (CPUID page, GHCB, #VC hook) and the `Snp` platform.
//!
//! None of this has run on SEV-SNP hardware (no machine here has SNP); the
//! logic it calls is model-tested in `snp::tests`.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::{Mutex, Once};

use super::ghcb::{self, GHCB_MSR, GhcbPage, Hypervisor};
use super::guest_request::GuestRequestChannel;
use super::rmp::{Rmp, RmpAttrs};
use super::svsm::{GhcbTransport, Memory, SnpCore, SnpGuest, Unreachable};
use super::vc::{CpuidTable, VcRegs};
use crate::boot::launch_info::LaunchInfo;
use crate::boot::pvh::BootInfo;
use crate::cpu::exceptions::ExceptionFrame;
use crate::cpu::instr;
use crate::mm::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysRange};
use crate::platform::{
    ExitStatus, GuestExit, GuestRegisters, GuestSetup, Platform, PlatformError, PlatformKind,
};

/// Linear address of the shared window: the GHCB, then the guest-request
/// request and response pages, then the extended guest request's
/// certificate buffer, mapped with the C-bit clear.
pub const SHARED_WINDOW: u64 = 0x1_0000_0000;
/// The first page of the certificate buffer in the shared window.
const CERT_PAGE: usize = 3;
/// Pages in the shared window.
pub const SHARED_PAGES: usize = CERT_PAGE + super::certs::MAX_PAGES;
/// The console's ports (COM1).
const CONSOLE_PORTS: core::ops::Range<u16> = 0x3F8..0x400;
/// Ports the SVSM's own code may use through #VC: the console, and the PIT
/// channel 2 and its gate, which the TSC calibration reads (the hypervisor
/// emulates them, so the TSC rate is the hypervisor's word, as on any VM).
const VC_PORTS: [core::ops::Range<u16>; 3] = [CONSOLE_PORTS, 0x42..0x44, 0x61..0x62];

/// The GPAs behind the shared window.
static SHARED_GPA: [AtomicU64; SHARED_PAGES] = [const { AtomicU64::new(0) }; SHARED_PAGES];
/// The C-bit as a page-table bit (0 before `early_init`).
static C_BIT: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    /// The entry code's page table for the shared window (boot::entry).
    static mut boot_pt_shared: [u64; 512];
}

/// The SNP instructions and memory.
pub struct HwSnp;

impl Hypervisor for HwSnp {
    fn read_msr(&mut self) -> u64 {
        // SAFETY: the GHCB MSR exists on every SEV-ES/SNP guest; reading it
        // has no side effect.
        unsafe { instr::rdmsr(GHCB_MSR) }
    }

    fn write_msr(&mut self, value: u64) {
        // SAFETY: writing the GHCB MSR only tells the hypervisor what the
        // next VMGEXIT means; it changes no state of this kernel.
        unsafe { instr::wrmsr(GHCB_MSR, value) }
    }

    fn vmgexit(&mut self, _ghcb: &mut GhcbPage) {
        // SAFETY: VMGEXIT (REP VMMCALL) hands control to the hypervisor,
        // which reads the GHCB MSR and the registered GHCB page (shared, in
        // the window) and returns here; no register but the GHCB MSR and the
        // shared page changes. The memory clobber orders the GHCB writes.
        unsafe { core::arch::asm!("rep vmmcall", options(nostack)) }
    }
}

impl Rmp for HwSnp {
    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> (u32, bool) {
        let rc: u64;
        let cf: u8;
        // SAFETY: PVALIDATE (F2 0F 01 FF: RAX = linear address, RCX = size,
        // RDX = validate) changes only the RMP's validated bit of the page
        // at `gpa`, which the kernel maps 1:1 with the C-bit. Callers never
        // rescind a page the kernel itself uses.
        unsafe {
            core::arch::asm!(
                ".byte 0xf2, 0x0f, 0x01, 0xff",
                "setc {cf}",
                cf = out(reg_byte) cf,
                inout("rax") gpa => rc,
                in("rcx") u64::from(huge),
                in("rdx") u64::from(validate),
                options(nostack),
            )
        };
        (rc as u32, cf != 0)
    }

    fn rmpadjust(&mut self, gpa: u64, huge: bool, attrs: RmpAttrs) -> u32 {
        let rc: u64;
        // SAFETY: RMPADJUST (F3 0F 01 FE: RAX = linear address, RCX = size,
        // RDX = attributes) changes a lower VMPL's permissions or the VMSA
        // bit of the page at `gpa` (mapped 1:1); VMPL0's access is unchanged.
        unsafe {
            core::arch::asm!(
                ".byte 0xf3, 0x0f, 0x01, 0xfe",
                inout("rax") gpa => rc,
                in("rcx") u64::from(huge),
                in("rdx") attrs.encode(),
                options(nostack),
            )
        };
        rc as u32
    }
}

fn shared_va(gpa: u64, len: usize) -> Option<u64> {
    let page = gpa & !(PAGE_SIZE - 1);
    if (gpa % PAGE_SIZE) as usize + len > PAGE_SIZE as usize {
        return None;
    }
    SHARED_GPA
        .iter()
        .position(|g| g.load(Ordering::Relaxed) == page && page != 0)
        .map(|i| SHARED_WINDOW + i as u64 * PAGE_SIZE + gpa % PAGE_SIZE)
}

/// One copy for [`copy_guarded`].
struct CopyArgs {
    src: u64,
    dst: u64,
    len: usize,
}

extern "C" fn copy_bytes(arg: usize) {
    // SAFETY: `arg` is the address of a CopyArgs on copy_guarded's stack,
    // alive for this call.
    let c = unsafe { &*(arg as *const CopyArgs) };
    // SAFETY: copy_guarded's caller checked both ranges: one is the kernel's
    // own buffer, the other identity-mapped RAM; a fault on a page nobody
    // validated is caught by catch_fault and reported to the caller.
    unsafe { core::ptr::copy_nonoverlapping(c.src as *const u8, c.dst as *mut u8, c.len) };
}

/// Copies `len` bytes from `src` to `dst` (identity-mapped addresses). Once
/// the per-CPU area exists, a fault on the way (on SNP, a #VC for a page the
/// guest never validated) is an error for the caller, not the end of the VM.
fn copy_guarded(src: u64, dst: u64, len: usize, gpa: u64) -> Result<(), Unreachable> {
    let args = CopyArgs { src, dst, len };
    if crate::cpu::percpu::try_current().is_none() {
        copy_bytes(&args as *const CopyArgs as usize);
        return Ok(());
    }
    crate::cpu::exceptions::catch_fault(copy_bytes, &args as *const CopyArgs as usize, 0).map_err(
        |f| {
            log::warn!(
                "SNP: access to {gpa:#x} faulted (vector {}, error code {:#x})",
                f.vector,
                f.error_code
            );
            Unreachable(gpa)
        },
    )
}

fn check_ram(gpa: u64, len: usize) -> Result<(), Unreachable> {
    gpa.checked_add(len as u64)
        .filter(|&e| e <= crate::boot::pvh::MAX_TRACKABLE_ADDR)
        .map(|_| ())
        .ok_or(Unreachable(gpa))
}

impl Memory for HwSnp {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable> {
        // All RAM up to the tracked limit is identity-mapped with the
        // C-bit; callers name SVSM pages or guest pages checked against
        // guest RAM, and the guest is stopped while the SVSM copies.
        check_ram(gpa, buf.len())?;
        copy_guarded(gpa, buf.as_mut_ptr() as u64, buf.len(), gpa)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable> {
        // As in `read`; writes go to guest pages or SVSM pages the caller
        // owns (VMSA pages), never to kernel data structures.
        check_ram(gpa, data.len())?;
        copy_guarded(data.as_ptr() as u64, gpa, data.len(), gpa)
    }

    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable> {
        let va = shared_va(gpa, buf.len()).ok_or(Unreachable(gpa))?;
        // SAFETY: `va` lies in a shared-window page mapped (C-bit clear) to
        // one of the kernel's shared pages; the range stays inside it.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable> {
        let va = shared_va(gpa, data.len()).ok_or(Unreachable(gpa))?;
        // SAFETY: as in `read_shared`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), va as *mut u8, data.len()) };
        Ok(())
    }
}

/// The SVSM's SNP state, from `early_init` on.
static CORE: Once<Mutex<SnpCore<HwSnp>>> = Once::new();
/// The CPUID page's private copy, for #VC without the GHCB.
static CPUID: Once<CpuidTable> = Once::new();

/// The C-bit as a page-table flag (0 off SNP or before `early_init`).
pub fn c_bit() -> u64 {
    C_BIT.load(Ordering::Relaxed)
}

/// The shared window: (linear address, GPA) of each page.
pub fn shared_pages() -> [(u64, u64); SHARED_PAGES] {
    core::array::from_fn(|i| {
        (
            SHARED_WINDOW + i as u64 * PAGE_SIZE,
            SHARED_GPA[i].load(Ordering::Relaxed),
        )
    })
}

/// Ends the VM through the MSR protocol (usable before anything else).
pub fn terminate_now(reason: u8) -> ! {
    let mut hv = HwSnp;
    let mut scratch = GhcbPage::default();
    loop {
        ghcb::terminate_request(&mut hv, reason, &mut scratch);
        instr::halt();
    }
}

/// Before the console: the CPUID page, the shared pages (GHCB and the two
/// guest-request pages, taken from the start of the SVSM's extra memory and
/// given to the hypervisor), the GHCB registered, the #VC hook installed.
/// Returns the first SVSM page after the shared ones.
pub fn early_init(info: &LaunchInfo) -> Result<u64, &'static str> {
    let cpuid_gpa = info.cpuid.ok_or("no CPUID page")?;
    let mut page = [0u8; 4096];
    HwSnp
        .read(cpuid_gpa, &mut page)
        .map_err(|_| "CPUID page unreachable")?;
    let cpuid = CpuidTable::parse(&page).map_err(|_| "CPUID page has more than 64 entries")?;
    let c_bit = cpuid.c_bit().ok_or("CPUID page lacks 0x8000_001F")?;
    CPUID.call_once(|| cpuid.clone());
    C_BIT.store(1 << c_bit, Ordering::Relaxed);

    // GHCB protocol version 2 (SNP) must lie in the hypervisor's range.
    let mut scratch = GhcbPage::default();
    match ghcb::sev_info(&mut HwSnp, &mut scratch) {
        Ok((max, min, _)) if (min..=max).contains(&ghcb::PROTOCOL_VERSION) => {}
        _ => terminate_now(1),
    }
    let first = info.launch_pages.end.0;
    let after = first + SHARED_PAGES as u64 * PAGE_SIZE;
    if after > info.svsm.end.0 {
        return Err("no SVSM memory beyond the launch pages (build the image with --svsm-size)");
    }
    for (i, slot) in SHARED_GPA.iter().enumerate() {
        let gpa = first + i as u64 * PAGE_SIZE;
        ghcb::page_state_msr(&mut HwSnp, gpa, ghcb::PageState::Shared, &mut scratch)
            .map_err(|_| "the hypervisor refused to share the GHCB pages")?;
        slot.store(gpa, Ordering::Relaxed);
        // SAFETY: boot_pt_shared is the entry code's page table for the
        // shared window (pdpt[4] → pd[0] → this table); nothing else uses
        // it, and this runs once on the boot CPU before any other mapping.
        unsafe {
            let pt = &mut *core::ptr::addr_of_mut!(boot_pt_shared);
            pt[i] = gpa | 0x3;
        }
        instr::invlpg(SHARED_WINDOW + i as u64 * PAGE_SIZE);
    }
    // SAFETY: the window's first page is mapped (above) to a page that only
    // the GHCB uses from now on; the reference is the only one made.
    let ghcb_page: &'static mut GhcbPage = unsafe { &mut *(SHARED_WINDOW as *mut GhcbPage) };
    let mut core = SnpCore::new(
        HwSnp,
        ghcb_page,
        cpuid,
        info.guest_vmpl,
        info.svsm,
        Vec::new(),
    );
    core.register_ghcb(first)
        .map_err(|_| "the hypervisor refused the GHCB")?;
    CORE.call_once(|| Mutex::new(core));
    crate::cpu::exceptions::set_vc_handler(vc_hook);
    Ok(after)
}

/// Validates `range` as SVSM memory (before the frame allocator gets it).
pub fn validate_early(range: PhysRange) -> Result<(), &'static str> {
    let core = CORE.get().ok_or("SNP not initialised")?;
    core.lock()
        .validate(range)
        .map_err(|_| "PVALIDATE of SVSM memory failed")
}

/// The #VC hook: CPUID, console port I/O, MSRs.
fn vc_hook(frame: &mut ExceptionFrame) -> bool {
    use super::ghcb::exit_code;
    // Anything else (e.g. 0x404, a page nobody validated) is not emulated:
    // the fault path decides (a caught fault in a guest copy, else fatal).
    if !matches!(
        frame.error_code,
        exit_code::CPUID | exit_code::IOIO | exit_code::MSR
    ) {
        return false;
    }
    // CPUID needs no GHCB: answered from the private copy of the CPUID
    // page even while the SVSM holds the GHCB.
    if frame.error_code == exit_code::CPUID {
        let Some(table) = CPUID.get() else {
            return false;
        };
        // SAFETY: RIP points into the kernel's mapped text (see below).
        let opcode = unsafe { core::ptr::read_unaligned(frame.rip as *const [u8; 2]) };
        if opcode != [0x0F, 0xA2] {
            return false;
        }
        let out = table.lookup(frame.rax as u32, frame.rcx as u32, 1, 0);
        frame.rax = u64::from(out[0]);
        frame.rbx = u64::from(out[1]);
        frame.rcx = u64::from(out[2]);
        frame.rdx = u64::from(out[3]);
        frame.rip += 2;
        return true;
    }
    let Some(core) = CORE.get() else {
        return false;
    };
    let Some(mut core) = core.try_lock() else {
        // A #VC while the GHCB is in use: nothing safe is left to do.
        terminate_now(0xFE)
    };
    let mut insn = [0u8; 15];
    // SAFETY: the #VC came from kernel code (there is no other), so RIP
    // points into the kernel's text, mapped readable; 15 bytes stay inside
    // the image's mapped sections.
    unsafe {
        core::ptr::copy_nonoverlapping(frame.rip as *const u8, insn.as_mut_ptr(), insn.len())
    };
    let mut regs = VcRegs {
        rax: frame.rax,
        rbx: frame.rbx,
        rcx: frame.rcx,
        rdx: frame.rdx,
    };
    match core.handle_vc(frame.error_code, &insn, &mut regs, &VC_PORTS) {
        Ok(len) => {
            frame.rax = regs.rax;
            frame.rbx = regs.rbx;
            frame.rcx = regs.rcx;
            frame.rdx = regs.rdx;
            frame.rip += len as u64;
            true
        }
        Err(_) => false,
    }
}

/// About 2 s between guest-request attempts the hypervisor answered BUSY.
fn busy_wait(_attempt: u32) {
    let until = crate::cpu::time::now_ms() + 2000;
    while crate::cpu::time::now_ms() < until {
        core::hint::spin_loop();
    }
}

/// The SNP platform.
pub struct Snp {
    info: LaunchInfo,
    channel: Mutex<Option<GuestRequestChannel<GhcbTransport<'static, HwSnp>>>>,
    /// The host's certificate table, validated (empty if none or bad).
    certs: Vec<u8>,
}

fn core() -> &'static Mutex<SnpCore<HwSnp>> {
    match CORE.get() {
        Some(c) => c,
        None => terminate_now(0xFD),
    }
}

impl Snp {
    /// After the heap exists: the secrets page (VMPCK0 for the report
    /// channel), the guest's RAM from the memory map.
    pub fn create(info: &LaunchInfo, boot_info: &BootInfo) -> Result<Self, PlatformError> {
        let secrets_gpa = info
            .secrets
            .ok_or(PlatformError::GuestImage("no secrets page"))?;
        // Results are logged only after the core's lock is released (the
        // console needs it).
        let taken = core().lock().take_vmpck0(secrets_gpa);
        let vmpck0 = taken.map_err(firmware_error)?;
        let shared = shared_pages();
        let mut channel = GuestRequestChannel::new(
            GhcbTransport {
                core: core(),
                pages: (shared[1].1, shared[2].1),
                backoff: busy_wait,
                certs: Some((shared[CERT_PAGE].1, super::certs::MAX_PAGES)),
            },
            vmpck0,
        )
        .map_err(|e| log::error!("SNP guest-request channel: {e}"))
        .ok();
        // The certificate chain, once, with a throwaway report.
        let certs = match channel.as_mut() {
            Some(ch) => {
                let (table, how) = super::certs::fetch(ch);
                match how {
                    super::certs::Fetched::Table(_) => {
                        let mut names =
                            super::certs::entry_names(&table).map(|n| n.unwrap_or("unknown GUID"));
                        let first = names.next().unwrap_or("");
                        let rest: alloc::string::String =
                            names.map(|n| alloc::format!(", {n}")).collect();
                        log::info!("SNP: {how}: {first}{rest} ({} bytes)", table.len());
                    }
                    super::certs::Fetched::Empty | super::certs::Fetched::NotServed => {
                        log::info!("SNP: {how}; the attestation protocol returns no certificates");
                    }
                    _ => log::warn!("SNP: {how}; the attestation protocol returns no certificates"),
                }
                table
            }
            None => Vec::new(),
        };
        let ram = super::svsm::guest_ram(boot_info.ram(), info.svsm);
        core().lock().guest_ram = ram;
        Ok(Self {
            info: *info,
            channel: Mutex::new(channel),
            certs,
        })
    }
}

fn firmware_error(e: super::svsm::SnpError) -> PlatformError {
    log::error!("SNP: {e}");
    PlatformError::Firmware(0)
}

impl Platform for Snp {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Snp
    }

    fn console_write(&self, bytes: &[u8]) {
        // Output while the SVSM holds the GHCB is dropped, not deadlocked.
        if let Some(mut core) = core().try_lock() {
            for &b in bytes {
                if core.port_out8(CONSOLE_PORTS.start, b).is_err() {
                    break;
                }
            }
        }
    }

    fn validate_pages(&self, range: PhysRange) -> Result<(), PlatformError> {
        let r = core().lock().validate(range);
        r.map_err(firmware_error)
    }

    fn invalidate_pages(&self, range: PhysRange) -> Result<(), PlatformError> {
        let r = core().lock().invalidate(range);
        r.map_err(firmware_error)
    }

    fn run_guest(&self, vcpu: u32, regs: &mut GuestRegisters) -> Result<GuestExit, PlatformError> {
        if vcpu != 0 {
            return Err(PlatformError::Unsupported(
                "running a vCPU other than the boot vCPU",
            ));
        }
        let r = core().lock().run(regs);
        r.map_err(firmware_error)
    }

    fn start_guest(&self, _boot_info: &BootInfo) -> Result<GuestSetup, PlatformError> {
        // A VMSA page from SVSM memory, not 2 MiB aligned.
        let vmsa_page = loop {
            let f = crate::mm::alloc_frame()
                .ok_or(PlatformError::GuestImage("no frame for the VMSA"))?;
            if !f.0.is_multiple_of(LARGE_PAGE_SIZE) {
                break f.0;
            }
        };
        let started = core().lock().start_guest(&self.info, vmsa_page);
        let caa = started.map_err(firmware_error)?;
        log::info!(
            "guest firmware at VMPL{}, Calling Area {caa:#x}, VMSA {vmsa_page:#x}",
            self.info.guest_vmpl
        );
        Ok(GuestSetup {
            caa,
            memory: Box::new(SnpGuest { core: core() }),
        })
    }

    fn attestation_report(
        &self,
        report_data: &[u8; 64],
        out: &mut [u8],
    ) -> Result<usize, PlatformError> {
        let mut guard = self.channel.lock();
        let ch = guard.as_mut().ok_or(PlatformError::Unsupported(
            "no guest-request channel (VMPCK0 missing)",
        ))?;
        let report = ch.report(report_data, 0).map_err(|e| {
            log::error!("SNP report: {e}");
            PlatformError::Firmware(1)
        })?;
        let out = out
            .get_mut(..report.len())
            .ok_or(PlatformError::BufferTooSmall(report.len()))?;
        out.copy_from_slice(&report);
        Ok(report.len())
    }

    fn attestation_certificates(&self) -> Option<&[u8]> {
        // The host's table from the extended guest request at start-up
        // (`certs`); empty if it sent none or a bad one, and the verifier
        // then gets the chain from AMD's key distribution service.
        Some(&self.certs)
    }

    fn terminate(&self, status: ExitStatus) -> ! {
        let reason = match status {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
        };
        if let Some(mut c) = core().try_lock() {
            c.terminate(reason);
        }
        terminate_now(reason)
    }
}
