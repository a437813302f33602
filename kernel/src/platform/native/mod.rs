//! The native platform: plain QEMU under TCG, no confidential hardware.
//! Memory needs no validation, the console is the 16550, the guest runs as a
//! nested SVM guest whose nested page tables map only its own memory, and
//! the VM ends through QEMU's isa-debug-exit device (port 0xF4).

pub mod fw_cfg;
pub mod guest;
pub mod reports;
pub mod svm;
pub mod vmcb;

use alloc::boxed::Box;
use spin::Mutex;

use super::{
    ExitStatus, GuestExit, GuestRegisters, GuestSetup, Platform, PlatformError, PlatformKind,
};
use crate::boot::pvh::BootInfo;
use crate::console::serial::{COM1, Serial16550};
use crate::cpu::instr;
use crate::mm::{PAGE_SIZE, PhysRange, layout};
use crate::protocols::{Guest, SvsmError};
use guest::{GUEST_MEMORY, GuestRegion};
use svm::{GuestStart, SvmVcpu};
use vmcb::exit;

/// isa-debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Value written for success; QEMU exits with (value << 1) | 1 = 33.
pub const EXIT_SUCCESS_VALUE: u32 = 0x10;
/// Value written for failure; QEMU exits with 35.
pub const EXIT_FAILURE_VALUE: u32 = 0x11;
/// VMMCALL is 3 bytes; without nRIP-save the SVSM steps over it itself.
const VMMCALL_LEN: u64 = 3;

/// The native platform.
pub struct Native {
    serial: Serial16550,
    vcpu: Mutex<Option<SvmVcpu>>,
    reports: Option<reports::SimulatedReports>,
}

impl Native {
    /// Takes over the serial port; takes the simulated attestation key if
    /// the host gave one.
    pub fn new() -> Self {
        Self {
            serial: Serial16550::init(COM1),
            vcpu: Mutex::new(None),
            reports: reports::SimulatedReports::from_host(),
        }
    }

    /// The RAM the guest gets, which the SVSM keeps out of its own use.
    pub fn guest_memory() -> PhysRange {
        GUEST_MEMORY
    }
}

impl Default for Native {
    fn default() -> Self {
        Self::new()
    }
}

/// Ends the VM through isa-debug-exit (usable before any platform exists).
pub fn debug_exit(status: ExitStatus) -> ! {
    let value = match status {
        ExitStatus::Success => EXIT_SUCCESS_VALUE,
        ExitStatus::Failure => EXIT_FAILURE_VALUE,
    };
    // SAFETY: port 0xF4 is QEMU's isa-debug-exit, which ends the VM; on a
    // machine without it the write is ignored and the CPU halts below.
    unsafe { instr::outl(DEBUG_EXIT_PORT, value) };
    loop {
        instr::halt();
    }
}

fn check_range(range: PhysRange) -> Result<(), PlatformError> {
    if !range.start.0.is_multiple_of(PAGE_SIZE)
        || !range.end.0.is_multiple_of(PAGE_SIZE)
        || range.is_empty()
    {
        return Err(PlatformError::InvalidRange(range));
    }
    Ok(())
}

/// Guest memory as the protocols see it on native.
struct NativeGuest {
    region: GuestRegion,
}

impl Guest for NativeGuest {
    fn is_guest_memory(&self, gpa: u64, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|len| self.region.contains(gpa, len))
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SvsmError> {
        self.region
            .read(gpa, buf)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), SvsmError> {
        self.region
            .write(gpa, data)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
    }

    fn pvalidate(
        &mut self,
        _gpa: u64,
        _huge: bool,
        _valid: bool,
        _ignore_cf: bool,
    ) -> Result<(), SvsmError> {
        // No RMP on this platform: every guest page is always valid, so
        // there is nothing to change. (The addresses were checked by the caller.)
        Ok(())
    }
}

impl Platform for Native {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Native
    }

    fn console_write(&self, bytes: &[u8]) {
        self.serial.write_bytes(bytes);
    }

    fn validate_pages(&self, range: PhysRange) -> Result<(), PlatformError> {
        // Without an RMP or secure EPT all RAM is already private to the VM.
        check_range(range)
    }

    fn invalidate_pages(&self, range: PhysRange) -> Result<(), PlatformError> {
        check_range(range)
    }

    fn start_guest(&self, boot_info: &BootInfo) -> Result<GuestSetup, PlatformError> {
        let module = *boot_info
            .modules()
            .first()
            .ok_or(PlatformError::GuestImage(
                "no boot module (pass the guest firmware with -initrd)",
            ))?;
        if !boot_info
            .ram()
            .any(|r| r.start <= GUEST_MEMORY.start && GUEST_MEMORY.end <= r.end)
        {
            return Err(PlatformError::GuestImage(
                "guest memory is not RAM (give QEMU more memory)",
            ));
        }
        if module.overlaps(&GUEST_MEMORY) {
            return Err(PlatformError::GuestImage(
                "the module overlaps guest memory",
            ));
        }
        // SAFETY: the boot code kept GUEST_MEMORY out of the frame allocator
        // (see `boot::init`), and all RAM is identity-mapped writable.
        let region = unsafe { GuestRegion::new(GUEST_MEMORY) };
        // SAFETY: the module was kept out of the frame allocator too; it is
        // RAM the loader wrote and nothing else uses.
        let image = unsafe {
            core::slice::from_raw_parts(module.start.0 as *const u8, module.len() as usize)
        };
        let base = GUEST_MEMORY.start.0;
        let mut segments = [guest::Segment {
            offset: 0,
            file_size: 0,
            gpa: 0,
            mem_size: 0,
        }; 8];
        let (entry, count) = guest::parse_elf(
            image,
            base + guest::layout::FIRMWARE_MIN,
            GUEST_MEMORY.end.0,
            &mut segments,
        )
        .map_err(|e| {
            log::error!("guest firmware ELF: {e}");
            PlatformError::GuestImage("not a loadable ELF for guest memory")
        })?;
        let oom = |_| PlatformError::GuestImage("guest memory access");
        region
            .zero(base, GUEST_MEMORY.len() as usize)
            .map_err(oom)?;
        for s in &segments[..count] {
            region
                .write(s.gpa, &image[s.offset..s.offset + s.file_size])
                .map_err(oom)?;
        }
        let cr3 = guest::write_page_tables(&region).map_err(oom)?;
        let info_page = base + guest::layout::INFO_PAGE;
        let caa = base + guest::layout::CALLING_AREA;
        let svsm = layout::image();
        region
            .write_u64(info_page + guest::info::SVSM_BASE as u64, svsm.start.0)
            .map_err(oom)?;
        region
            .write_u64(info_page + guest::info::SVSM_SIZE as u64, svsm.len())
            .map_err(oom)?;
        region
            .write_u64(info_page + guest::info::SVSM_CAA as u64, caa)
            .map_err(oom)?;
        region
            .write(
                info_page + guest::info::SVSM_MAX_VERSION as u64,
                &1u32.to_le_bytes(),
            )
            .map_err(oom)?;
        region
            .write(info_page + guest::info::SVSM_GUEST_VMPL as u64, &[0])
            .map_err(oom)?;

        let host_save = svm::enable().map_err(|e| {
            log::error!("SVM: {e}");
            PlatformError::Unsupported("SVM with nested paging")
        })?;
        let start = GuestStart {
            memory: GUEST_MEMORY,
            cr3,
            rip: entry,
            rsp: GUEST_MEMORY.end.0 - 16,
            rdi: info_page,
            rsi: GUEST_MEMORY.end.0,
            io_ports: 0x3F8..0x400,
        };
        let vcpu = SvmVcpu::new(host_save, &start).map_err(|e| {
            log::error!("SVM vCPU: {e}");
            PlatformError::Unsupported("SVM vCPU setup")
        })?;
        *self.vcpu.lock() = Some(vcpu);
        log::info!(
            "guest firmware loaded: entry {entry:#x}, {count} segment(s), memory {:#x}..{:#x}",
            GUEST_MEMORY.start.0,
            GUEST_MEMORY.end.0
        );
        // SAFETY: as above; the protocols and the loader never run at the
        // same time, and both only copy bytes.
        let region = unsafe { GuestRegion::new(GUEST_MEMORY) };
        Ok(GuestSetup {
            caa,
            memory: Box::new(NativeGuest { region }),
        })
    }

    fn run_guest(&self, vcpu: u32, regs: &mut GuestRegisters) -> Result<GuestExit, PlatformError> {
        if vcpu != 0 {
            return Err(PlatformError::Unsupported("more than one vCPU"));
        }
        let mut guard = self.vcpu.lock();
        let v = guard
            .as_mut()
            .ok_or(PlatformError::Unsupported("no guest started"))?;
        v.set_rax(regs.rax);
        v.gprs.rcx = regs.rcx;
        v.gprs.rdx = regs.rdx;
        v.gprs.r8 = regs.r8;
        v.gprs.r9 = regs.r9;
        loop {
            let e = v.run();
            let outcome = match e.code {
                exit::VMMCALL => {
                    v.skip_instruction(VMMCALL_LEN);
                    GuestExit::SvsmCall
                }
                exit::INTR | exit::NMI => continue,
                exit::HLT => GuestExit::Halt,
                exit::SHUTDOWN => GuestExit::Shutdown,
                code => {
                    log::error!(
                        "guest exit {:#x} ({}) at RIP {:#x}: info1 {:#x} info2 {:#x}",
                        code,
                        svm::exit_name(code),
                        e.rip,
                        e.info1,
                        e.info2
                    );
                    GuestExit::Unhandled {
                        code,
                        info: e.info1,
                    }
                }
            };
            regs.rax = v.rax();
            regs.rcx = v.gprs.rcx;
            regs.rdx = v.gprs.rdx;
            regs.r8 = v.gprs.r8;
            regs.r9 = v.gprs.r9;
            return Ok(outcome);
        }
    }

    fn attestation_report(
        &self,
        report_data: &[u8; 64],
        out: &mut [u8],
    ) -> Result<usize, PlatformError> {
        let reports = self.reports.as_ref().ok_or(PlatformError::Unsupported(
            "no simulated report key from the host (fw_cfg opt/rivet/report-key)",
        ))?;
        let report = reports
            .report(report_data)
            .ok_or(PlatformError::Firmware(1))?;
        let out = out
            .get_mut(..report.len())
            .ok_or(PlatformError::BufferTooSmall(report.len()))?;
        out.copy_from_slice(&report);
        Ok(report.len())
    }

    fn attestation_certificates(&self) -> Option<&[u8]> {
        self.reports.as_ref().map(|r| r.certificates())
    }

    fn terminate(&self, status: ExitStatus) -> ! {
        debug_exit(status)
    }
}
