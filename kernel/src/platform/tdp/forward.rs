//! The L2's TDG.VP.VMCALLs the L1 passes on to the host, filtered (TDX GHCI:
//! R10 = 0 for a standard call, R11 the sub-function, R12..R15 its operands;
//! the status comes back in R10 and a read's value in R11); the L2's
//! RDMSR/WRMSR instruction exits, through the same MSR filter; and the L2's
//! TDG.MEM.PAGE.ACCEPT, made by the L1 for it.
//!
//! A TDX-aware OVMF running as the L2 asks the host for what a TD cannot do
//! itself: MMIO (#VE.RequestMMIO), MSRs the TDX module leaves to the host
//! (Instruction.RDMSR/WRMSR) and private ↔ shared conversions (MapGPA). The
//! host's emulation is for the whole TD, and the TD's vCPU, APIC and memory
//! are the L1's as much as the L2's, so each request is checked against what
//! it could do to the L1 before it goes out through the L1's own
//! TDG.VP.VMCALL:
//! - MMIO: sizes 1, 2, 4, 8; inside one page and below 2^GPAW; never L1
//!   memory at either alias (the GetQuote buffer is L1 memory); never the
//!   private alias of L2 RAM (that is RAM, not a device). Anything else —
//!   emulated devices, or the shared alias of L2 memory — is forwarded.
//! - MSRs: forwarded unless [`msr_denied`] names a reason (the TD's APIC,
//!   timer, paravirtual and hypervisor MSRs, and the vCPU's own mode and
//!   memory-type state).
//! - MapGPA: only ranges inside the L2's memory (never the L1's, never the
//!   GetQuote buffer). Pages the L2 made shared are remembered in a
//!   [`PageSet`] and the L1 never touches them through their private alias
//!   again (SVSM calls naming them get INVALID_ADDRESS; a Calling Area there
//!   has no call pending). Pages the L2 makes private again come back
//!   pending: the L1 accepts them (the module zeroes them) and grants the
//!   L2 its access before the L2 runs again, so the L2 never meets a pending
//!   page (its own TDG.MEM.PAGE.ACCEPT of them hears "already accepted");
//!   if that fails the pages stay in the set and the L2 gets
//!   INVALID_OPERAND. The set holds at most [`MAX_SHARED_RANGES`] disjoint
//!   ranges; at the cap every MapGPA is refused (a conversion back to
//!   private can split a range too).
//!
//! The L2's own TDG.MEM.PAGE.ACCEPT (OVMF accepts the memory it uses) is
//! made by the L1 on its behalf for L2 memory that is not shared: the L1
//! accepted all of it at start, so the L2 mostly hears
//! TDX_PAGE_ALREADY_ACCEPTED (which OVMF counts and goes on) or
//! TDX_PAGE_SIZE_MISMATCH (it retries with 4 KiB pages); a page the host
//! re-added is accepted now (zeroed) and granted to the L2.
//!
//! Whatever the host answers goes back to the L2 as it came (R10, and R11
//! for reads); a TDCALL the module itself fails gives the L2
//! INVALID_OPERAND. A refused request never reaches the host: the L2 gets
//! INVALID_OPERAND (ALIGN_ERROR for an unaligned MapGPA) and resumes.

use super::l2::{LoopStats, gpr};
use super::mem::{self, L1Memory, PageSet};
use super::tdcall::{self, Accepted, PageSize, TdxError, TdxModule, VmIndex, attr, status, vmcall};
use crate::mm::{PAGE_SIZE, PhysAddr, PhysRange};

/// How many disjoint shared ranges the L2 may keep before its MapGPAs are
/// refused (the set lives on the SVSM's heap).
pub const MAX_SHARED_RANGES: usize = 1024;

/// What the loop checks the L2's requests against.
#[derive(Debug)]
pub struct L2Bounds<'a> {
    /// The SVSM's memory (the GetQuote buffer included).
    pub l1: &'a [PhysRange],
    /// The L2's memory (private RAM and firmware).
    pub l2: &'a [PhysRange],
    /// The SHARED bit (GPAW-1).
    pub shared_bit: u64,
    /// L2 pages the L2 converted to shared.
    pub shared: &'a mut PageSet,
}

impl L2Bounds<'_> {
    /// Whether the L1 may read or write `[gpa, gpa + len)` of L2 memory
    /// through its private alias (not converted to shared by the L2).
    pub fn private_l2(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.l2.iter().any(|r| r.start.0 <= gpa && end <= r.end.0)
            && !self.shared.overlaps(gpa, len)
    }
}

/// Why the L2 may not have the host read (`write` false) or write MSR
/// `index`, or None when the host may emulate it for the TD.
pub fn msr_denied(index: u32, write: bool) -> Option<&'static str> {
    let reason = match index {
        // The TD vCPU's local APIC belongs to the L1: ICR writes would send
        // IPIs (INIT/SIPI included) as the L1, EOI/TPR/LVT writes change
        // its interrupt state, reads show it. The L2 has no APIC of its
        // own yet (no interrupt delivery into the L2).
        0x800..=0x8FF => "x2APIC (the L1's local APIC)",
        // The TD vCPU's timer: arming it would interrupt the L1.
        0x6E0 => "IA32_TSC_DEADLINE (the L1's timer)",
        // KVM paravirtual MSRs: each names a GPA the host then writes
        // (kvmclock, steal time, PV EOI, async PF) and configures the
        // vCPU's paravirtual state, which is the L1's. Reads show where
        // the L1's pages are.
        0x11 | 0x12 | 0x4B56_4D00..=0x4B56_4DFF => "KVM paravirtual MSR",
        // Hyper-V (and other hypervisor) synthetic MSRs: hypercall page,
        // SynIC, reference TSC page — GPAs the host writes and the TD's
        // hypervisor interface.
        0x4000_0000..=0x4000_FFFF => "hypervisor synthetic MSR",
        _ if !write => return None,
        // Writes only: the vCPU's own mode, entry points and features.
        0x1B => "IA32_APIC_BASE (the L1's APIC mode and base)",
        0x10 | 0x3B => "the TD's time stamp counter (shared with the L1)",
        0x3A | 0x1A0 | 0x1D9 => "vCPU feature or debug control",
        0x174..=0x176 | 0xC000_0080..=0xC000_0084 | 0xC000_0100..=0xC000_0103 => {
            "the vCPU's mode and system-call entry points"
        }
        // Memory types for the whole TD, the L1's memory included.
        0xFE | 0x200..=0x2FF => "MTRR or PAT (memory types of L1 memory too)",
        _ => return None,
    };
    Some(reason)
}

/// Why the L2 may not have the host emulate an MMIO access of `size` bytes
/// at `gpa` (as the L2 named it, with or without the SHARED bit).
pub fn mmio_denied(b: &L2Bounds<'_>, gpa: u64, size: u64) -> Option<&'static str> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Some("size not 1, 2, 4 or 8");
    }
    let limit = b.shared_bit << 1;
    let Some(end) = gpa.checked_add(size).filter(|&e| e <= limit) else {
        return Some("beyond the GPA width");
    };
    if gpa / PAGE_SIZE != (end - 1) / PAGE_SIZE {
        return Some("crosses a page");
    }
    let private = gpa & !b.shared_bit;
    let r = PhysRange::new(PhysAddr(private), PhysAddr(private + size));
    if b.l1.iter().any(|l| l.overlaps(&r)) {
        return Some("L1 memory");
    }
    if gpa & b.shared_bit == 0 && b.l2.iter().any(|l| l.overlaps(&r)) {
        return Some("private L2 RAM, not a device");
    }
    None
}

fn covered(ranges: &[PhysRange], r: PhysRange) -> bool {
    let mut at = r.start.0;
    while at < r.end.0 {
        match ranges.iter().find(|x| x.start.0 <= at && at < x.end.0) {
            Some(x) => at = x.end.0,
            None => return false,
        }
    }
    true
}

fn refuse(g: &mut [u64; 16], stats: &mut LoopStats, status: u64, what: &str) {
    log::warn!("L2 TDG.VP.VMCALL {:#x} refused: {what}", g[gpr::R11]);
    stats.refused_vmcalls += 1;
    g[gpr::R10] = status;
}

/// The host's answer (or INVALID_OPERAND when the module failed the L1's
/// own TDCALL) for the L2's R10.
fn host_error(stats: &mut LoopStats, e: TdxError) -> u64 {
    stats.host_errors += 1;
    match e {
        TdxError::Vmcall(code) => code,
        other => {
            log::warn!("forwarding an L2 TDG.VP.VMCALL: {other}");
            vmcall::INVALID_OPERAND
        }
    }
}

/// #VE.RequestMMIO: R12 size, R13 direction, R14 address, R15 the value to
/// write; a read's value comes back in R11.
pub fn mmio(m: &mut dyn TdxModule, g: &mut [u64; 16], b: &L2Bounds<'_>, stats: &mut LoopStats) {
    let (size, dir, gpa, value) = (g[gpr::R12], g[gpr::R13], g[gpr::R14], g[gpr::R15]);
    if dir > vmcall::MMIO_WRITE {
        return refuse(g, stats, vmcall::INVALID_OPERAND, "MMIO direction");
    }
    if let Some(why) = mmio_denied(b, gpa, size) {
        log::warn!("L2 MMIO at {gpa:#x} ({size} bytes): {why}");
        return refuse(g, stats, vmcall::INVALID_OPERAND, why);
    }
    stats.mmio_forwarded += 1;
    let size = size as u8;
    let done = if dir == vmcall::MMIO_READ {
        tdcall::mmio_read(m, gpa, size).map(|v| g[gpr::R11] = v)
    } else {
        tdcall::mmio_write(m, gpa, size, value)
    };
    g[gpr::R10] = match done {
        Ok(()) => vmcall::SUCCESS,
        Err(e) => {
            if dir == vmcall::MMIO_READ {
                g[gpr::R11] = 0;
            }
            host_error(stats, e)
        }
    };
}

/// Instruction.RDMSR (R12 the index, the value back in R11) and
/// Instruction.WRMSR (R13 the value).
pub fn msr(m: &mut dyn TdxModule, g: &mut [u64; 16], write: bool, stats: &mut LoopStats) {
    let Ok(index) = u32::try_from(g[gpr::R12]) else {
        return refuse(g, stats, vmcall::INVALID_OPERAND, "MSR index above 32 bits");
    };
    if let Some(why) = msr_denied(index, write) {
        log::warn!(
            "L2 {} of MSR {index:#x}: {why}",
            if write { "WRMSR" } else { "RDMSR" }
        );
        return refuse(g, stats, vmcall::INVALID_OPERAND, why);
    }
    stats.msr_forwarded += 1;
    let done = if write {
        tdcall::wrmsr(m, index, g[gpr::R13])
    } else {
        tdcall::rdmsr(m, index).map(|v| g[gpr::R11] = v)
    };
    g[gpr::R10] = match done {
        Ok(()) => vmcall::SUCCESS,
        Err(e) => {
            if !write {
                g[gpr::R11] = 0;
            }
            host_error(stats, e)
        }
    };
}

/// MapGPA: R12 the first GPA (with the SHARED bit: to shared), R13 the
/// length. RETRY comes back with R11 where to go on (as the host said it,
/// SHARED bit included).
pub fn map_gpa(
    m: &mut dyn TdxModule,
    g: &mut [u64; 16],
    b: &mut L2Bounds<'_>,
    stats: &mut LoopStats,
) {
    let (gpa, len) = (g[gpr::R12], g[gpr::R13]);
    let bit = b.shared_bit;
    let to_shared = gpa & bit != 0;
    let start = gpa & !bit;
    if gpa >= bit << 1 {
        return refuse(
            g,
            stats,
            vmcall::INVALID_OPERAND,
            "MapGPA beyond the GPA width",
        );
    }
    if !start.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return refuse(g, stats, vmcall::ALIGN_ERROR, "MapGPA not page aligned");
    }
    let Some(end) = start.checked_add(len).filter(|&e| len != 0 && e <= bit) else {
        return refuse(
            g,
            stats,
            vmcall::INVALID_OPERAND,
            "MapGPA range empty or too long",
        );
    };
    let range = PhysRange::new(PhysAddr(start), PhysAddr(end));
    if b.l1.iter().any(|l| l.overlaps(&range)) || !covered(b.l2, range) {
        log::warn!("L2 MapGPA {start:#x}..{end:#x} is not L2 memory");
        return refuse(
            g,
            stats,
            vmcall::INVALID_OPERAND,
            "MapGPA of memory not the L2's",
        );
    }
    if b.shared.len() >= MAX_SHARED_RANGES {
        return refuse(g, stats, vmcall::INVALID_OPERAND, "too many shared ranges");
    }
    stats.map_gpa_forwarded += 1;
    let done = match tdcall::map_gpa(m, gpa, len) {
        Ok(done) => done,
        Err(e) => {
            // The host says it did nothing; a host that converted pages
            // anyway could as well have removed them: nothing new.
            g[gpr::R10] = host_error(stats, e);
            return;
        }
    };
    let done_private = done & !bit;
    let converted = PhysRange::new(PhysAddr(start), PhysAddr(done_private));
    if to_shared {
        b.shared.insert(converted);
    } else if !converted.is_empty() {
        // Back private means pending: accepted (zeroed) and granted to the
        // L2 here, before it runs again. Until that worked the L1 keeps
        // treating the pages as shared.
        let settled = mem::accept_range(m, converted)
            .and_then(|_| mem::grant_l2(m, converted, VmIndex::L2, attr::RWX, L1Memory(b.l1)));
        if let Err(e) = settled {
            log::error!("L2 MapGPA to private: {e}");
            b.shared.insert(converted);
            stats.host_errors += 1;
            g[gpr::R10] = vmcall::INVALID_OPERAND;
            return;
        }
        b.shared.remove(converted);
    }
    if done_private == end {
        g[gpr::R10] = vmcall::SUCCESS;
    } else {
        g[gpr::R10] = vmcall::RETRY;
        g[gpr::R11] = done;
    }
}

fn st(class: u32, details: u64) -> u64 {
    (u64::from(class) << 32) | details
}

/// TDG.MEM.PAGE.ACCEPT from the L2: RCX the page (GPA bits 51:12, level in
/// bits 2:0: 0 = 4 KiB, 1 = 2 MiB; the rest reserved); the completion
/// status goes in RAX as the module would put it.
pub fn page_accept(
    m: &mut dyn TdxModule,
    g: &mut [u64; 16],
    b: &L2Bounds<'_>,
    stats: &mut LoopStats,
) {
    let invalid = st(status::OPERAND_INVALID, 1);
    let rcx = g[gpr::RCX];
    let level = rcx & 7;
    let size = match level {
        0 => PageSize::Size4K,
        1 => PageSize::Size2M,
        _ => {
            stats.refused_tdcalls += 1;
            g[gpr::RAX] = invalid;
            return;
        }
    };
    let gpa = rcx & !7;
    // Reserved bits (11:3 and 63:52) clear, GPA aligned to the size, and
    // the page the L2's own, private memory.
    let ok = rcx & !(0x000F_FFFF_FFFF_F000 | 7) == 0
        && gpa.is_multiple_of(size.bytes())
        && b.private_l2(gpa, size.bytes())
        && !b
            .l1
            .iter()
            .any(|l| l.overlaps(&PhysRange::new(PhysAddr(gpa), PhysAddr(gpa + size.bytes()))));
    if !ok {
        log::warn!("L2 TDG.MEM.PAGE.ACCEPT {rcx:#x} refused: not private L2 memory");
        stats.refused_tdcalls += 1;
        g[gpr::RAX] = invalid;
        return;
    }
    stats.accepts_served += 1;
    let range = PhysRange::new(PhysAddr(gpa), PhysAddr(gpa + size.bytes()));
    g[gpr::RAX] = match tdcall::mem_page_accept(m, gpa, size) {
        Ok(Accepted::Now) => {
            match mem::grant_l2(m, range, VmIndex::L2, attr::RWX, L1Memory(b.l1)) {
                Ok(_) => 0,
                Err(e) => {
                    log::error!("granting the L2 a page it accepted: {e}");
                    invalid
                }
            }
        }
        Ok(Accepted::Already) => st(status::PAGE_ALREADY_ACCEPTED, level),
        Err(TdxError::PageSizeMismatch(l)) => st(status::PAGE_SIZE_MISMATCH, u64::from(l)),
        Err(TdxError::OperandBusy(op)) => st(status::OPERAND_BUSY, u64::from(op)),
        Err(e) => {
            log::warn!("L2 TDG.MEM.PAGE.ACCEPT {rcx:#x}: {e}");
            invalid
        }
    };
}

/// An L2 RDMSR/WRMSR instruction exit (ECX the index, EDX:EAX the value):
/// forwarded like [`msr`]. True when done (RDMSR's value is in EDX:EAX,
/// upper halves cleared), false when the L2 should get #GP(0).
pub fn msr_instruction(
    m: &mut dyn TdxModule,
    g: &mut [u64; 16],
    write: bool,
    stats: &mut LoopStats,
) -> bool {
    let index = g[gpr::RCX] as u32;
    if let Some(why) = msr_denied(index, write) {
        log::warn!(
            "L2 {} of MSR {index:#x}: {why}",
            if write { "WRMSR" } else { "RDMSR" }
        );
        return false;
    }
    stats.msr_forwarded += 1;
    let done = if write {
        let value = (g[gpr::RDX] << 32) | (g[gpr::RAX] & 0xFFFF_FFFF);
        tdcall::wrmsr(m, index, value)
    } else {
        tdcall::rdmsr(m, index).map(|v| {
            g[gpr::RAX] = v & 0xFFFF_FFFF;
            g[gpr::RDX] = v >> 32;
        })
    };
    match done {
        Ok(()) => true,
        Err(e) => {
            stats.host_errors += 1;
            log::debug!("L2 MSR {index:#x}: {e}");
            false
        }
    }
}
