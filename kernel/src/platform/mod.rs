//! The platform boundary: everything that differs between running natively
//! under QEMU, at VMPL0 of an SEV-SNP guest, and as the L1 of a TDX
//! partitioned TD. The rest of the kernel calls only this trait.
//!
//! | need | native | snp | tdp |
//! | --- | --- | --- | --- |
//! | console | 16550 port I/O | port I/O through the GHCB | TDG.VP.VMCALL I/O |
//! | page validation | nothing to do (no RMP) | PVALIDATE | TDG.MEM.PAGE.ACCEPT |
//! | guest world switch | VMRUN (nested SVM) | SNP_RUN_VMPL | TDG.VP.ENTER |
//! | attestation report | simulated SNP-layout report | MSG_REPORT_REQ | TD quote (TDG.MR.REPORT, then GetQuote) |
//! | termination | isa-debug-exit | GHCB termination request | TDG.VP.VMCALL |

#[cfg(target_os = "none")]
pub mod native;
pub mod snp;
pub mod snp_report;
pub mod tdp;

use alloc::boxed::Box;

use crate::boot::pvh::BootInfo;
use crate::mm::PhysRange;
use crate::protocols::Guest;
use crate::protocols::attest::KeptReport;

/// Which platform the kernel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// Plain QEMU (TCG) without confidential-computing hardware.
    Native,
    /// AMD SEV-SNP, SVSM at VMPL0.
    Snp,
    /// Intel TDX with TD partitioning, SVSM as L1.
    Tdp,
}

/// How the VM ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked of the kernel was done.
    Success,
    /// A fatal error or a failed test.
    Failure,
}

/// Why the platform could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// This platform does not (yet) provide the operation; nothing was done.
    Unsupported(&'static str),
    /// The range is not page aligned or not memory the platform manages.
    InvalidRange(PhysRange),
    /// The hardware or firmware refused (its code).
    Firmware(u64),
    /// An output buffer is too small; the size needed.
    BufferTooSmall(usize),
    /// The guest firmware is missing or cannot be loaded.
    GuestImage(&'static str),
    /// The host or firmware did not finish in time or asked to be asked
    /// again (what); nothing is wrong with the request.
    Busy(&'static str),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsupported(what) => write!(f, "not supported on this platform: {what}"),
            Self::InvalidRange(r) => write!(f, "invalid range {}..{}", r.start, r.end),
            Self::Firmware(code) => write!(f, "firmware error {code:#x}"),
            Self::BufferTooSmall(n) => write!(f, "buffer too small, {n} bytes needed"),
            Self::GuestImage(why) => write!(f, "guest firmware: {why}"),
            Self::Busy(what) => write!(f, "busy, try again: {what}"),
        }
    }
}

/// Why the guest stopped running and the SVSM got control back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest asked for an SVSM call (its Calling Area says which).
    SvsmCall,
    /// The guest halted.
    Halt,
    /// The guest shut down or reset.
    Shutdown,
    /// An exit the SVSM does not handle: its platform code and detail.
    Unhandled {
        /// Exit code (SVM exit code, TDX exit reason).
        code: u64,
        /// First detail word (EXITINFO1, exit qualification).
        info: u64,
    },
}

/// The guest's register state that the SVSM protocols read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegisters {
    /// Call/result register.
    pub rax: u64,
    /// First parameter.
    pub rcx: u64,
    /// Second parameter.
    pub rdx: u64,
    /// Third parameter.
    pub r8: u64,
    /// Fourth parameter.
    pub r9: u64,
}

/// A guest ready to run.
pub struct GuestSetup {
    /// The boot vCPU's Calling Area (GPA).
    pub caa: u64,
    /// Guest memory, bounds-checked, as the protocols reach it.
    pub memory: Box<dyn Guest>,
}

/// What a platform provides.
pub trait Platform: Sync {
    /// Which platform this is.
    fn kind(&self) -> PlatformKind;

    /// Writes console output.
    fn console_write(&self, bytes: &[u8]);

    /// Makes `range` (page aligned) usable as private SVSM memory: PVALIDATE
    /// on SNP, page acceptance on TDX.
    fn validate_pages(&self, range: PhysRange) -> Result<(), PlatformError>;

    /// Gives up `range` (the reverse of [`Platform::validate_pages`]).
    fn invalidate_pages(&self, range: PhysRange) -> Result<(), PlatformError>;

    /// Runs guest vCPU `vcpu` with `regs` until it exits to the SVSM; `regs`
    /// holds the guest's registers on return.
    fn run_guest(&self, vcpu: u32, regs: &mut GuestRegisters) -> Result<GuestExit, PlatformError>;

    /// Loads the guest firmware and prepares the boot vCPU (on native, from
    /// the first boot module; on SNP and TDX, from what the IGVM file put in
    /// memory). Returns the guest's Calling Area and its memory as the
    /// protocols see it.
    fn start_guest(&self, boot_info: &BootInfo) -> Result<GuestSetup, PlatformError>;

    /// Fills `out` with an attestation report carrying `report_data` and
    /// returns its length; [`PlatformError::BufferTooSmall`] with the length
    /// needed if `out` is shorter.
    fn attestation_report(
        &self,
        report_data: &[u8; 64],
        out: &mut [u8],
    ) -> Result<usize, PlatformError>;

    /// Length of every report [`Platform::attestation_report`] makes when it
    /// is fixed (the SNP layout's by default); None when a report's length
    /// is known only once it is made (a TDX quote).
    fn attestation_report_len(&self) -> Option<usize> {
        Some(snp_report::REPORT_LEN)
    }

    /// An attestation report carrying `report_data`, as long as it is. By
    /// default [`Platform::attestation_report`] into a buffer of
    /// [`Platform::attestation_report_len`] bytes (or [`MAX_REPORT_LEN`]).
    fn attestation_report_vec(
        &self,
        report_data: &[u8; 64],
    ) -> Result<alloc::vec::Vec<u8>, PlatformError> {
        let mut out = alloc::vec![0u8; self.attestation_report_len().unwrap_or(MAX_REPORT_LEN)];
        let n = self.attestation_report(report_data, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// The certificates a verifier needs for this platform's reports; None
    /// when the platform cannot make reports at all.
    fn attestation_certificates(&self) -> Option<&[u8]>;

    /// Ends the VM.
    fn terminate(&self, status: ExitStatus) -> !;
}

#[cfg(target_os = "none")]
static CURRENT: spin::Once<&'static dyn Platform> = spin::Once::new();

/// Installs the platform the kernel runs on (once).
#[cfg(target_os = "none")]
pub fn install(platform: &'static dyn Platform) -> &'static dyn Platform {
    *CURRENT.call_once(|| platform)
}

#[cfg(target_os = "none")]
static EARLY_EXIT: spin::Once<fn(ExitStatus) -> !> = spin::Once::new();

/// Sets how the VM ends before a platform is installed, for launches where
/// the native debug-exit port I/O would fault (tdp). Set once.
#[cfg(target_os = "none")]
pub fn set_early_exit(exit: fn(ExitStatus) -> !) {
    EARLY_EXIT.call_once(|| exit);
}

/// The early exit, if one was set.
#[cfg(target_os = "none")]
pub fn early_exit() -> Option<fn(ExitStatus) -> !> {
    EARLY_EXIT.get().copied()
}

/// The installed platform, if any yet.
#[cfg(target_os = "none")]
pub fn current() -> Option<&'static dyn Platform> {
    CURRENT.get().copied()
}

/// The longest report any platform makes: the bound of a variable-length
/// report (a TDX quote comes back in a GetQuote buffer of at most this).
pub const MAX_REPORT_LEN: usize = 64 * 1024;

/// The platform's reports, as the attestation protocol asks for them. For a
/// platform whose reports vary in length (tdp) it keeps the last report made
/// and not delivered ([`KeptReport`]).
pub struct PlatformReports {
    platform: &'static dyn Platform,
    kept: KeptReport,
}

impl PlatformReports {
    /// The reports of `platform`.
    pub fn new(platform: &'static dyn Platform) -> Self {
        Self {
            platform,
            kept: KeptReport::default(),
        }
    }
}

impl crate::protocols::attest::ReportProvider for PlatformReports {
    fn report(
        &mut self,
        report_data: &[u8; 64],
    ) -> Result<alloc::vec::Vec<u8>, crate::protocols::SvsmError> {
        if let Some(report) = self.kept.take(report_data) {
            return Ok(report);
        }
        self.platform
            .attestation_report_vec(report_data)
            .map_err(|e| {
                log::error!("attestation report: {e}");
                match e {
                    PlatformError::Busy(_) => {
                        crate::protocols::SvsmError(crate::protocols::result::BUSY)
                    }
                    _ => crate::protocols::SvsmError::INVALID_REQUEST,
                }
            })
    }

    fn report_len(&self) -> Option<usize> {
        self.platform.attestation_report_len()
    }

    fn certificates(&self) -> &[u8] {
        self.platform.attestation_certificates().unwrap_or(&[])
    }

    fn keep(&mut self, report_data: &[u8; 64], report: alloc::vec::Vec<u8>) {
        if self.report_len().is_none() {
            self.kept.keep(report_data, report);
        }
    }
}
