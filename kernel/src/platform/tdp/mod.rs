//! Intel TDX with TD partitioning: the SVSM as the L1 (issue 9), its TDCALLs
//! and the TD report (issue 7). Hardware instructions sit behind narrow
//! traits; the logic above them is tested on the host against a model of the
//! TDX module.
//!
//! - `tdcall`: the TDCALL register interface ([`tdcall::TdxModule`], the
//!   one hardware boundary: TDCALL, CPUID, the L1's view of TD memory),
//!   completion status decoding, typed wrappers for VP.INFO, MEM.PAGE.ACCEPT,
//!   MEM.PAGE.ATTR.RD/WR, VM.RD/WR, VP.RD/WR, MR.REPORT, VP.ENTER and
//!   VP.VMCALL (I/O, MMIO, RDMSR/WRMSR, MapGPA, GetQuote, HLT,
//!   ReportFatalError).
//! - `mem`: accepting ranges (2 MiB with 4 KiB fallback), granting the L2
//!   (VM 1) its memory and never the L1's, MapGPA conversions.
//! - `report`: TDG.MR.REPORT into an L1 page, the TDREPORT parser, GetQuote
//!   and the check of the quote the host returns.
//! - `l2`: the L2's reset state, its VMCS setup, and the run loop that sends
//!   SVSM calls (an L2 TDCALL with call_pending set) to the common request
//!   loop and refuses the L2 every TDCALL that would touch the L1's evidence.
//! - `forward`: the L2's TDG.VP.VMCALLs for MMIO, MSRs and MapGPA, checked
//!   and passed to the host; the L2 pages it made shared, which the L1
//!   then never touches privately.
//! - [`Tdp`]: the [`Platform`] built on them.
//!
//! Attestation: the report the SVSM attestation protocol serves on tdp is a
//! TD quote, not the TDREPORT (which is MACed with a key only this CPU has,
//! so a remote verifier cannot check it). [`Tdp::quote`] makes a TDREPORT
//! with the protocol's REPORTDATA, zeroes the L1's GetQuote buffer
//! ([`report::quote_buf::PAGES`] pages), converts it to shared (MapGPA with
//! the SHARED bit, GPAW-1 from TDG.VP.INFO), hands it to the host with
//! TDG.VP.VMCALL<GetQuote>, waits while the host says IN_FLIGHT, copies the
//! answer into private memory once, checks it is a quote of that TDREPORT,
//! and converts the buffer back to private (MapGPA, TDG.MEM.PAGE.ACCEPT again,
//! L2 access revoked). A host without a quoting service (QGS_UNAVAILABLE)
//! gets a clear error ([`PlatformError::Unsupported`]) and the guest
//! INVALID_REQUEST: there is no fallback to the bare TDREPORT, which no
//! remote verifier could use (the SVSM attestation protocol has no way to
//! say which kind of report it returns). A host that answers RETRY or stays
//! IN_FLIGHT past the poll budget gets [`PlatformError::Busy`] and the guest
//! BUSY. [`Tdp::td_report`] gives the TDREPORT to the SVSM itself.
//!
//! Nothing here has run on TDX hardware: every part is tested against the
//! software model in `model.rs` only.

pub mod forward;
pub mod l2;
pub mod mem;
pub mod report;
pub mod tdcall;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

use super::{
    ExitStatus, GuestExit, GuestRegisters, GuestSetup, Platform, PlatformError, PlatformKind,
};
use crate::boot::pvh::BootInfo;
use crate::mm::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::protocols::{Guest, SvsmError, result};
use l2::{L2Vcpu, LoopStats, gpr};
use mem::{L1Memory, MemError, PageSet};
use tdcall::{PageSize, TdxError, TdxModule, VmIndex, VpInfo, attr};

/// The legacy COM1 port the console writes to (through the host).
pub const COM1: u16 = 0x3F8;
/// The isa-debug-exit port (QEMU's test device) `terminate` writes to.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// ReportFatalError code for a failed run ("RIVT" in ASCII).
pub const FATAL_ERROR_CODE: u64 = 0x5249_5654;
/// How often the header of the GetQuote buffer is read while the host says
/// IN_FLIGHT before the quote is given up as busy. Each look is a few
/// hundred nanoseconds on hardware, so this is seconds, not a measured
/// time: the L1 has no calibrated clock on TDX yet.
pub const QUOTE_POLLS: u32 = 1 << 26;
/// Linear address of the quote buffer's shared alias in the kernel's page
/// tables (hardware only; `boot_hw::init` maps it).
pub const QUOTE_WINDOW: u64 = 0xFFFF_E000_0000_0000;

/// What the platform needs from the launch (the IGVM launch-info page and
/// the memory map, as the boot code parsed them).
#[derive(Clone, Copy, Debug)]
pub struct TdpLaunch<'a> {
    /// Every RAM range of the memory map (TD private memory).
    pub ram: &'a [PhysRange],
    /// What the SVSM keeps for itself (its image and launch pages, its heap
    /// and frame pool). The L2 gets the rest of `ram` and the firmware,
    /// never any of these.
    pub l1: &'a [PhysRange],
    /// The guest firmware image (ends at 4 GiB).
    pub firmware: PhysRange,
    /// The firmware's first instruction (linear; 0xfffffff0).
    pub firmware_entry: u64,
    /// The firmware's original last page, which the image replaced by the
    /// stub that enters the SVSM (an L1 launch page).
    pub reset_page_copy: u64,
    /// The L2's Calling Area (L2 memory).
    pub caa: u64,
}

/// L1 pages the platform works in (page aligned, inside the L1's memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Pages {
    /// TDG.MR.REPORT's TDREPORT (offset 0) and REPORTDATA (offset 1024).
    pub report: u64,
    /// The L2 vCPU state buffer of TDG.VP.ENTER.
    pub l2_state: u64,
    /// The L2's virtual-APIC page.
    pub vapic: u64,
    /// The first of the [`report::quote_buf::PAGES`] contiguous pages of
    /// the GetQuote buffer (private but while a quote is asked for).
    pub quote: u64,
}

impl L1Pages {
    /// The GetQuote buffer.
    pub fn quote_buffer(&self) -> PhysRange {
        PhysRange::new(
            PhysAddr(self.quote),
            PhysAddr(self.quote + report::quote_buf::PAGES * PAGE_SIZE),
        )
    }
}

/// Where everything lies, checked once at construction.
#[derive(Debug)]
struct Layout {
    l1: Vec<PhysRange>,
    l2: Vec<PhysRange>,
    firmware: PhysRange,
    entry: u64,
    reset_copy: u64,
    caa: u64,
    pages: L1Pages,
}

impl Layout {
    fn in_l2(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.l2.iter().any(|r| r.start.0 <= gpa && end <= r.end.0)
    }

    fn in_l1(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.l1.iter().any(|r| r.start.0 <= gpa && end <= r.end.0)
    }
}

struct Inner<M> {
    m: M,
    vcpu: Option<L2Vcpu>,
    stats: LoopStats,
    /// The new Calling Area of a core REMAP_CA call the request loop is
    /// handling: adopted when the call succeeded.
    remap: Option<u64>,
    /// The GetQuote buffer could not be made private again: it is never
    /// used again (no more quotes).
    quote_buffer_lost: bool,
    /// L2 pages the L2 converted to shared (MapGPA): the L1 never reads or
    /// writes them through their private alias.
    l2_shared: PageSet,
}

/// The TDX-partitioning platform over the module `M`.
pub struct Tdp<M: TdxModule> {
    inner: Arc<Mutex<Inner<M>>>,
    /// A second handle on the module for the console and termination, so
    /// that logging while `inner` is held cannot deadlock.
    console: Mutex<M>,
    layout: Arc<Layout>,
    info: VpInfo,
    /// Looks at an IN_FLIGHT GetQuote buffer before giving up.
    quote_polls: AtomicU32,
}

fn tdx_err(what: &'static str, e: TdxError) -> PlatformError {
    log::error!("{what}: {e}");
    PlatformError::Firmware(match e {
        TdxError::Status(s) | TdxError::Vmcall(s) => s,
        TdxError::OperandInvalid(op) => {
            (u64::from(tdcall::status::OPERAND_INVALID) << 32) | u64::from(op)
        }
        TdxError::OperandBusy(op) => {
            (u64::from(tdcall::status::OPERAND_BUSY) << 32) | u64::from(op)
        }
        TdxError::PageSizeMismatch(l) => {
            (u64::from(tdcall::status::PAGE_SIZE_MISMATCH) << 32) | u64::from(l)
        }
        TdxError::Malformed(_) | TdxError::BadArgument(_) => u64::MAX,
    })
}

fn mem_err(what: &'static str, e: MemError) -> PlatformError {
    log::error!("{what}: {e}");
    match e {
        MemError::Unaligned(r) => PlatformError::InvalidRange(r),
        MemError::L1Memory { asked, .. } => PlatformError::InvalidRange(asked),
        MemError::Tdx { error, .. } => tdx_err(what, error),
    }
}

fn page_aligned(gpa: u64) -> bool {
    gpa.is_multiple_of(PAGE_SIZE)
}

impl<M: TdxModule> Tdp<M> {
    /// Checks the TD (TDG.VP.INFO, at least one L2 VM) and the launch
    /// layout. `m` runs the L2 and the reports; `console` writes the console.
    pub fn new(
        mut m: M,
        console: M,
        launch: &TdpLaunch<'_>,
        pages: L1Pages,
    ) -> Result<Self, PlatformError> {
        let info = tdcall::vp_info(&mut m).map_err(|e| tdx_err("TDG.VP.INFO", e))?;
        let vms = tdcall::vm_rd(&mut m, tdcall::field::NUM_L2_VMS)
            .map_err(|e| tdx_err("TDG.VM.RD NUM_L2_VMS", e))?;
        match vms {
            0 => {
                return Err(PlatformError::Unsupported(
                    "a TD without L2 VMs (TD partitioning is off)",
                ));
            }
            1..=3 => {}
            _ => {
                return Err(tdx_err(
                    "NUM_L2_VMS",
                    TdxError::Malformed("more than 3 L2 VMs"),
                ));
            }
        }
        if info.debug() {
            log::warn!("this TD is debuggable: its reports say so and prove little");
        }

        let fw = launch.firmware;
        if fw.is_empty() || !page_aligned(fw.start.0) || !page_aligned(fw.end.0) {
            return Err(PlatformError::GuestImage(
                "firmware range empty or unaligned",
            ));
        }
        if !fw.contains(PhysAddr(launch.firmware_entry)) {
            return Err(PlatformError::GuestImage(
                "firmware entry outside the firmware",
            ));
        }
        if launch.l1.iter().any(|r| r.overlaps(&fw)) {
            return Err(PlatformError::GuestImage("firmware overlaps L1 memory"));
        }
        // L2 memory: RAM minus the L1 and the firmware, plus the firmware.
        let mut holes: Vec<PhysRange> = launch.l1.to_vec();
        holes.push(fw);
        let mut l2 = Vec::new();
        for r in launch.ram {
            let Some(r) = r.page_inner() else { continue };
            let mut pieces = [PhysRange::new(PhysAddr(0), PhysAddr(0)); 16];
            let n = mem::subtract(r, &holes, &mut pieces);
            if n > pieces.len() {
                return Err(PlatformError::GuestImage("memory map too fragmented"));
            }
            l2.extend_from_slice(&pieces[..n]);
        }
        l2.push(fw);
        l2.sort_by_key(|r| r.start.0);

        let layout = Layout {
            l1: launch.l1.to_vec(),
            l2,
            firmware: fw,
            entry: launch.firmware_entry,
            reset_copy: launch.reset_page_copy,
            caa: launch.caa,
            pages,
        };
        for (page, what) in [
            (pages.report, "report page"),
            (pages.l2_state, "L2 state page"),
            (pages.vapic, "virtual-APIC page"),
            (launch.reset_page_copy, "reset-page copy"),
        ] {
            if !page_aligned(page) || !layout.in_l1(page, PAGE_SIZE) {
                log::error!("{what} {page:#x} is not an L1 page");
                return Err(PlatformError::GuestImage(
                    "an SVSM page is not in L1 memory",
                ));
            }
        }
        let qb = pages.quote_buffer();
        let others = [
            pages.report,
            pages.l2_state,
            pages.vapic,
            launch.reset_page_copy,
        ];
        if !page_aligned(pages.quote)
            || !layout.in_l1(qb.start.0, qb.len())
            || others.iter().any(|&p| qb.contains(PhysAddr(p)))
        {
            return Err(PlatformError::GuestImage(
                "the GetQuote buffer is not L1 memory of its own",
            ));
        }
        if !layout.in_l2(launch.caa, 8) {
            return Err(PlatformError::GuestImage(
                "the Calling Area is not L2 memory",
            ));
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                m,
                vcpu: None,
                stats: LoopStats::default(),
                remap: None,
                quote_buffer_lost: false,
                l2_shared: PageSet::default(),
            })),
            console: Mutex::new(console),
            layout: Arc::new(layout),
            info,
            quote_polls: AtomicU32::new(QUOTE_POLLS),
        })
    }

    /// Sets how often an IN_FLIGHT GetQuote buffer is looked at before the
    /// quote is given up as busy (default [`QUOTE_POLLS`]).
    pub fn set_quote_polls(&self, polls: u32) {
        self.quote_polls.store(polls, Ordering::Relaxed);
    }

    /// What TDG.VP.INFO said at construction.
    pub fn vp_info(&self) -> VpInfo {
        self.info
    }

    /// The L2's memory ranges.
    pub fn l2_memory(&self) -> &[PhysRange] {
        &self.layout.l2
    }

    /// The run loop's counters.
    pub fn loop_stats(&self) -> LoopStats {
        self.inner.lock().stats
    }

    /// The L2 pages the L2 converted to shared.
    pub fn l2_shared(&self) -> Vec<PhysRange> {
        self.inner.lock().l2_shared.ranges().to_vec()
    }

    /// A fresh TDREPORT carrying `report_data` (for the SVSM itself: the
    /// attestation protocol serves quotes, see the module docs).
    pub fn td_report(&self, report_data: &[u8; 64]) -> Result<[u8; 1024], PlatformError> {
        let mut g = self.inner.lock();
        report::get_report(
            &mut g.m,
            report::ReportPage(self.layout.pages.report),
            report_data,
        )
        .map_err(report_err)
    }

    /// A TD quote of a fresh TDREPORT carrying `report_data`, from the
    /// host's quoting service through the L1's GetQuote buffer (module
    /// docs: zeroed, shared, asked, copied once, checked, private again).
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        let mut g = self.inner.lock();
        let Inner {
            m,
            quote_buffer_lost,
            ..
        } = &mut *g;
        if *quote_buffer_lost {
            return Err(PlatformError::Unsupported(
                "TD quotes (the GetQuote buffer could not be made private again)",
            ));
        }
        let tdreport =
            report::get_report(m, report::ReportPage(self.layout.pages.report), report_data)
                .map_err(report_err)?;
        let range = self.layout.pages.quote_buffer();
        let bit = self.info.shared_bit();
        // Nothing private goes to the host: the pages are zeroed before
        // they are converted.
        let zero = [0u8; PAGE_SIZE as usize];
        for page in (range.start.0..range.end.0).step_by(PAGE_SIZE as usize) {
            m.write(page, &zero)
                .map_err(|_| PlatformError::InvalidRange(range))?;
        }
        let shared = mem::convert(m, range, true, bit).map_err(|e| mem_err("MapGPA shared", e));
        let got = shared.and_then(|()| {
            let mut polls = 0u32;
            let budget = self.quote_polls.load(Ordering::Relaxed);
            let buf = report::QuoteBuffer {
                gpa: range.start.0,
                len: range.len() as usize,
                shared_bit: bit,
            };
            report::get_quote(m, buf, &tdreport, || {
                polls += 1;
                core::hint::spin_loop();
                polls < budget
            })
            .map_err(report_err)
        });
        // Back to private whatever happened (a conversion that stopped
        // half way included), accepted again, the L2 kept out.
        let back =
            mem::convert(m, range, false, bit).and_then(|()| mem::revoke_l2(m, range, VmIndex::L2));
        if let Err(e) = back {
            *quote_buffer_lost = true;
            return Err(mem_err("making the GetQuote buffer private again", e));
        }
        got
    }
}

fn report_err(e: report::ReportError) -> PlatformError {
    use report::ReportError as R;
    match e {
        R::Tdx(t) => tdx_err("TD report/quote", t),
        R::NoQuotingService => {
            log::error!("{e}");
            PlatformError::Unsupported("TD quotes: the host has no quoting service")
        }
        R::QuoteBusy(why) => {
            log::warn!("{e}");
            PlatformError::Busy(why)
        }
        R::QuoteStatus(status) => {
            log::error!("{e}");
            PlatformError::Firmware(status)
        }
        R::Length(_) | R::NotTdx(_) | R::ReportDataMismatch | R::Quote(_) => {
            log::error!("{e}");
            PlatformError::Firmware(u64::MAX)
        }
    }
}

/// The L2's memory as the SVSM protocols reach it.
struct TdGuest<M: TdxModule> {
    inner: Arc<Mutex<Inner<M>>>,
    layout: Arc<Layout>,
}

impl<M: TdxModule> Guest for TdGuest<M> {
    /// L2 memory the L2 has not converted to shared.
    fn is_guest_memory(&self, gpa: u64, len: u64) -> bool {
        self.layout.in_l2(gpa, len) && !self.inner.lock().l2_shared.overlaps(gpa, len)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SvsmError> {
        if !self.is_guest_memory(gpa, buf.len() as u64) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
        self.inner
            .lock()
            .m
            .read(gpa, buf)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), SvsmError> {
        if !self.is_guest_memory(gpa, data.len() as u64) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
        self.inner
            .lock()
            .m
            .write(gpa, data)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
    }

    /// Validating on TDX is accepting the page and granting it to the L2.
    /// There is no guest-side way to give a page back (invalidation would
    /// be a MapGPA to shared, which this SVSM does not offer the L2).
    fn pvalidate(
        &mut self,
        gpa: u64,
        huge: bool,
        valid: bool,
        _ignore_cf: bool,
    ) -> Result<(), SvsmError> {
        let size = if huge {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        if !gpa.is_multiple_of(size.bytes()) || !self.is_guest_memory(gpa, size.bytes()) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
        if !valid {
            return Err(SvsmError::INVALID_REQUEST);
        }
        let range = PhysRange::new(PhysAddr(gpa), PhysAddr(gpa + size.bytes()));
        let mut g = self.inner.lock();
        let done = mem::accept_range(&mut g.m, range).and_then(|_| {
            mem::grant_l2(
                &mut g.m,
                range,
                VmIndex::L2,
                attr::RWX,
                L1Memory(&self.layout.l1),
            )
        });
        done.map(|_| ()).map_err(|e| match e {
            MemError::Tdx {
                error: TdxError::PageSizeMismatch(_),
                ..
            } => SvsmError(result::PVALIDATE_FAIL_SIZEMISMATCH),
            MemError::L1Memory { .. } | MemError::Unaligned(_) => SvsmError::INVALID_ADDRESS,
            MemError::Tdx { .. } => SvsmError(result::PVALIDATE_FAIL_INPUT),
        })
    }
}

impl<M: TdxModule> Platform for Tdp<M> {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Tdp
    }

    fn console_write(&self, bytes: &[u8]) {
        let mut m = self.console.lock();
        for &b in bytes {
            // A host that drops console output cannot be helped here.
            let _ = tdcall::io_write(&mut *m, COM1, 1, u32::from(b));
        }
    }

    fn validate_pages(&self, range: PhysRange) -> Result<(), PlatformError> {
        let mut g = self.inner.lock();
        mem::accept_range(&mut g.m, range)
            .map(|_| ())
            .map_err(|e| mem_err("TDG.MEM.PAGE.ACCEPT", e))
    }

    fn invalidate_pages(&self, range: PhysRange) -> Result<(), PlatformError> {
        // Giving up private pages means converting them to shared; L2
        // memory is not the L1's to give.
        if self.layout.l2.iter().any(|r| r.overlaps(&range)) {
            return Err(PlatformError::InvalidRange(range));
        }
        let mut g = self.inner.lock();
        mem::convert(&mut g.m, range, true, self.info.shared_bit())
            .map_err(|e| mem_err("MapGPA", e))
    }

    fn run_guest(&self, vcpu: u32, regs: &mut GuestRegisters) -> Result<GuestExit, PlatformError> {
        if vcpu != 0 {
            return Err(PlatformError::Unsupported("more than one vCPU"));
        }
        let mut g = self.inner.lock();
        let Inner {
            m,
            vcpu,
            stats,
            remap,
            l2_shared,
            ..
        } = &mut *g;
        let v = vcpu
            .as_mut()
            .ok_or(PlatformError::Unsupported("no guest started"))?;
        // The loop tells SVSM calls from module TDCALLs by call_pending in
        // the Calling Area, so it follows the guest's REMAP_CA: the
        // dispatcher moved it if the call succeeded.
        if let Some(new_caa) = remap.take()
            && regs.rax == result::SUCCESS
            && self.layout.in_l2(new_caa, 8)
            && !l2_shared.overlaps(new_caa, 8)
        {
            v.caa = new_caa;
        }
        let r = &mut v.state.gprs;
        r[gpr::RAX] = regs.rax;
        r[gpr::RCX] = regs.rcx;
        r[gpr::RDX] = regs.rdx;
        r[gpr::R8] = regs.r8;
        r[gpr::R9] = regs.r9;
        let mut bounds = forward::L2Bounds {
            l1: &self.layout.l1,
            l2: &self.layout.l2,
            shared_bit: self.info.shared_bit(),
            shared: l2_shared,
        };
        let exit = l2::run(m, v, stats, &mut bounds).map_err(|e| tdx_err("L2 run loop", e))?;
        let r = &v.state.gprs;
        if exit == GuestExit::SvsmCall && r[gpr::RAX] == 0 {
            // Core protocol (0), call 0: SVSM_CORE_REMAP_CA to RCX.
            *remap = Some(r[gpr::RCX]);
        }
        regs.rax = r[gpr::RAX];
        regs.rcx = r[gpr::RCX];
        regs.rdx = r[gpr::RDX];
        regs.r8 = r[gpr::R8];
        regs.r9 = r[gpr::R9];
        if let GuestExit::Unhandled { code, info } = exit {
            log::error!(
                "L2 exit {code:#x} (qualification {info:#x}) at RIP {:#x}",
                v.state.rip
            );
        }
        Ok(exit)
    }

    fn start_guest(&self, _boot_info: &BootInfo) -> Result<GuestSetup, PlatformError> {
        let lay = &self.layout;
        let mut g = self.inner.lock();
        if g.vcpu.is_some() {
            return Err(PlatformError::Unsupported("the guest was started already"));
        }
        let m = &mut g.m;
        let mut accepted = mem::AcceptStats::default();
        for &r in &lay.l2 {
            let s = mem::accept_range(m, r).map_err(|e| mem_err("accepting L2 memory", e))?;
            accepted.accepted_2m += s.accepted_2m;
            accepted.accepted_4k += s.accepted_4k;
            accepted.already += s.already;
            mem::grant_l2(m, r, VmIndex::L2, attr::RWX, L1Memory(&lay.l1))
                .map_err(|e| mem_err("granting L2 memory", e))?;
        }
        // The image replaced the firmware's last page by the stub that
        // entered the SVSM; put the original back before the L2 runs.
        let io = |_| PlatformError::GuestImage("reset-page copy unreadable");
        let mut page = [0u8; PAGE_SIZE as usize];
        m.read(lay.reset_copy, &mut page).map_err(io)?;
        m.write(lay.firmware.end.0 - PAGE_SIZE, &page).map_err(io)?;
        let state = l2::setup_vmcs(m, VmIndex::L2, lay.entry, lay.pages.vapic)
            .map_err(|e| tdx_err("L2 VMCS setup", e))?;
        g.vcpu = Some(L2Vcpu {
            vm: VmIndex::L2,
            state_gpa: lay.pages.l2_state,
            state,
            caa: lay.caa,
        });
        drop(g);
        log::info!(
            "L2 ready: {} ranges, {} x 2M + {} x 4K accepted ({} before), entry {:#x}, CAA {:#x}",
            lay.l2.len(),
            accepted.accepted_2m,
            accepted.accepted_4k,
            accepted.already,
            lay.entry,
            lay.caa
        );
        Ok(GuestSetup {
            caa: lay.caa,
            memory: Box::new(TdGuest {
                inner: self.inner.clone(),
                layout: self.layout.clone(),
            }),
        })
    }

    /// The TD quote ([`Tdp::quote`]).
    fn attestation_report(
        &self,
        report_data: &[u8; 64],
        out: &mut [u8],
    ) -> Result<usize, PlatformError> {
        let q = self.quote(report_data)?;
        out.get_mut(..q.len())
            .ok_or(PlatformError::BufferTooSmall(q.len()))?
            .copy_from_slice(&q);
        Ok(q.len())
    }

    /// A quote's length is known only once the host made it.
    fn attestation_report_len(&self) -> Option<usize> {
        None
    }

    fn attestation_report_vec(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        self.quote(report_data)
    }

    fn attestation_certificates(&self) -> Option<&[u8]> {
        // The quote carries the quoting enclave's certification data (the
        // PCK certificate chain); a verifier gets the rest (TCB info, CRLs)
        // from Intel's provisioning service.
        Some(&[])
    }

    fn terminate(&self, status: ExitStatus) -> ! {
        let mut m = self.console.lock();
        terminate_with(&mut *m, status)
    }
}

/// Ends the TD: a fatal-error report to the host on failure, the
/// debug-exit port (QEMU's isa-debug-exit, if the VMM has one), then HLT
/// forever.
fn terminate_with(m: &mut dyn TdxModule, status: ExitStatus) -> ! {
    let value = match status {
        ExitStatus::Success => 0x10,
        ExitStatus::Failure => {
            let _ = tdcall::report_fatal_error(m, FATAL_ERROR_CODE);
            0x11
        }
    };
    let _ = tdcall::io_write(m, DEBUG_EXIT_PORT, 4, value);
    loop {
        if tdcall::halt(m).is_err() {
            core::hint::spin_loop();
        }
    }
}

/// TDX hardware entry points for the boot code.
#[cfg(target_os = "none")]
mod boot_hw {
    use super::*;
    use tdcall::hw::HwTdx;

    /// Accepts memory the SVSM is about to use (before the heap exists).
    pub fn accept_l1_memory(range: PhysRange) -> Result<(), PlatformError> {
        let mut hw = HwTdx::new(&[]);
        mem::accept_range(&mut hw, range)
            .map(|_| ())
            .map_err(|e| mem_err("accepting SVSM memory", e))
    }

    /// Writes `bytes` to COM1 through TDG.VP.VMCALL<Instruction.IO>; needs
    /// no state, so it works before `init`.
    pub fn early_console_write(bytes: &[u8]) {
        let mut hw = HwTdx::new(&[]);
        for &b in bytes {
            let _ = tdcall::io_write(&mut hw, COM1, 1, u32::from(b));
        }
    }

    /// Ends the TD before the platform exists (a fatal error during boot):
    /// direct port I/O to the debug-exit port would raise #VE here.
    pub fn early_terminate(status: ExitStatus) -> ! {
        let mut hw = HwTdx::new(&[]);
        terminate_with(&mut hw, status)
    }

    /// Builds the platform (after the heap exists) and leaks it for
    /// `platform::install`.
    pub fn init(launch: &TdpLaunch<'_>) -> Result<&'static dyn Platform, PlatformError> {
        let mut reach: Vec<PhysRange> = launch.ram.to_vec();
        reach.extend_from_slice(launch.l1);
        reach.push(launch.firmware);
        if reach.len() > 16 {
            log::warn!(
                "{} memory ranges: the L1 reaches only the first 16",
                reach.len()
            );
        }
        let frame = || {
            crate::mm::alloc_frame()
                .map(|p| p.0)
                .ok_or(PlatformError::GuestImage(
                    "no free frame for the SVSM's TDX pages",
                ))
        };
        let quote = crate::mm::alloc_frames(report::quote_buf::PAGES as usize, 1)
            .map(|p| p.0)
            .ok_or(PlatformError::GuestImage(
                "no free frames for the GetQuote buffer",
            ))?;
        let pages = L1Pages {
            report: frame()?,
            l2_state: frame()?,
            vapic: frame()?,
            quote,
        };
        let mut hw = HwTdx::new(&reach);
        let info = tdcall::vp_info(&mut hw).map_err(|e| tdx_err("TDG.VP.INFO", e))?;
        hw.map_shared(pages.quote_buffer(), info.shared_bit(), QUOTE_WINDOW)
            .map_err(|e| {
                log::error!("mapping the GetQuote buffer's shared alias: {e}");
                PlatformError::GuestImage("the GetQuote buffer cannot be mapped")
            })?;
        let tdp = Tdp::new(hw, HwTdx::new(&reach), launch, pages)?;
        Ok(Box::leak(Box::new(tdp)))
    }
}

#[cfg(target_os = "none")]
pub use boot_hw::{accept_l1_memory, early_console_write, early_terminate, init};
