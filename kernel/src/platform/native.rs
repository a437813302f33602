//! The native platform: plain QEMU under TCG, no confidential hardware.
//! Memory needs no validation, the console is the 16550, and the VM ends
//! through QEMU's isa-debug-exit device (port 0xF4).

use super::{ExitStatus, GuestExit, GuestRegisters, Platform, PlatformError, PlatformKind};
use crate::console::serial::{COM1, Serial16550};
use crate::cpu::instr;
use crate::mm::{PAGE_SIZE, PhysRange};

/// isa-debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Value written for success; QEMU exits with (value << 1) | 1 = 33.
pub const EXIT_SUCCESS_VALUE: u32 = 0x10;
/// Value written for failure; QEMU exits with 35.
pub const EXIT_FAILURE_VALUE: u32 = 0x11;

/// The native platform.
pub struct Native {
    serial: Serial16550,
}

impl Native {
    /// Takes over the serial port.
    pub fn new() -> Self {
        Self {
            serial: Serial16550::init(COM1),
        }
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

    fn run_guest(
        &self,
        _vcpu: u32,
        _regs: &mut GuestRegisters,
    ) -> Result<GuestExit, PlatformError> {
        Err(PlatformError::Unsupported(
            "running a guest (nested SVM) is not built yet",
        ))
    }

    fn attestation_report(
        &self,
        _report_data: &[u8; 64],
        _out: &mut [u8],
    ) -> Result<usize, PlatformError> {
        Err(PlatformError::Unsupported(
            "simulated attestation reports are not built yet",
        ))
    }

    fn terminate(&self, status: ExitStatus) -> ! {
        debug_exit(status)
    }
}
