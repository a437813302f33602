//! The L2 guest: its register state as TDG.VP.ENTER reads and writes it,
//! its initial (reset) state, and the run loop.
//!
//! The loop enters the L2 and handles its exits until one needs the SVSM:
//! - TDCALL (VMX exit reason 77 = 0x4D) with call_pending set in the
//!   Calling Area is an SVSM call: the loop steps over the TDCALL and
//!   returns [`GuestExit::SvsmCall`]; the request loop (`requests.rs`) runs
//!   the same dispatcher as on every platform.
//! - Any other L2 TDCALL is the L2 asking the TDX module for something. Only
//!   TDG.VP.VMCALL, TDG.VP.INFO and TDG.MEM.PAGE.ACCEPT (of L2 memory, by
//!   the L1 on its behalf, `forward.rs`) are served. Port I/O, CPUID and HLT are
//!   handled here; MMIO, MSRs and MapGPA go to the host after the checks of
//!   `forward.rs`; GetQuote, ReportFatalError, SetupEventNotifyInterrupt
//!   and unknown sub-functions are refused (R10 = INVALID_OPERAND). Every
//!   other leaf — TDG.MR.REPORT (a report with the L2's own REPORTDATA would
//!   carry the L1's measurements), TDG.MR.RTMR.EXTEND, TDG.VM.RD/WR,
//!   TDG.VP.RD/WR, TDG.VP.ENTER, the SERVTD and SYS leaves and the rest — is
//!   refused with TDX_OPERAND_INVALID in the L2's RAX, and the L2 resumes.
//! - Port I/O and CPUID exits are forwarded to the host / answered with the
//!   L1's CPUID; RDMSR/WRMSR exits go to the host through the MSR filter of
//!   `forward.rs` (#GP(0) when denied or refused); TDCALL outside CPL 0 gets
//!   #GP(0), VMCALL gets #UD; HLT and triple fault end the run; anything else (EPT violations:
//!   MMIO or a touch of L1 memory) is an unhandled exit.

use super::forward::{self, L2Bounds};
use super::tdcall::{
    self, L2ExitInfo, TdxError, TdxModule, VmIndex, VpEnterOutcome, exit_reason, field, leaf,
    vmcall,
};
use crate::platform::GuestExit;

/// Register indexes in the L2 state buffer (the TDX module's GPR order).
pub mod gpr {
    /// RAX.
    pub const RAX: usize = 0;
    /// RCX.
    pub const RCX: usize = 1;
    /// RDX.
    pub const RDX: usize = 2;
    /// RBX.
    pub const RBX: usize = 3;
    /// RSP.
    pub const RSP: usize = 4;
    /// RBP.
    pub const RBP: usize = 5;
    /// RSI.
    pub const RSI: usize = 6;
    /// RDI.
    pub const RDI: usize = 7;
    /// R8.
    pub const R8: usize = 8;
    /// R9.
    pub const R9: usize = 9;
    /// R10.
    pub const R10: usize = 10;
    /// R11.
    pub const R11: usize = 11;
    /// R12.
    pub const R12: usize = 12;
    /// R13.
    pub const R13: usize = 13;
    /// R14.
    pub const R14: usize = 14;
    /// R15.
    pub const R15: usize = 15;
}

/// Bytes of the L2 state buffer TDG.VP.ENTER uses: 16 GPRs, RFLAGS, RIP,
/// SSP (u64 each), then the u16 guest interrupt status.
pub const STATE_LEN: usize = 16 * 8 + 3 * 8 + 2;

/// The L2 vCPU's registers as the state buffer holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2State {
    /// RAX..R15 in the module's order ([`gpr`]).
    pub gprs: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
    /// Shadow-stack pointer.
    pub ssp: u64,
    /// Guest interrupt status (RVI, SVI).
    pub interrupt_status: u16,
}

impl L2State {
    /// The buffer bytes.
    pub fn to_bytes(&self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        for (i, r) in self.gprs.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&r.to_le_bytes());
        }
        b[128..136].copy_from_slice(&self.rflags.to_le_bytes());
        b[136..144].copy_from_slice(&self.rip.to_le_bytes());
        b[144..152].copy_from_slice(&self.ssp.to_le_bytes());
        b[152..154].copy_from_slice(&self.interrupt_status.to_le_bytes());
        b
    }

    /// From the buffer bytes.
    pub fn from_bytes(b: &[u8; STATE_LEN]) -> Self {
        let u = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let mut gprs = [0u64; 16];
        for (i, r) in gprs.iter_mut().enumerate() {
            *r = u(i * 8);
        }
        Self {
            gprs,
            rflags: u(128),
            rip: u(136),
            ssp: u(144),
            interrupt_status: u16::from_le_bytes([b[152], b[153]]),
        }
    }
}

/// VMX field encodings of the L2 VMCS the L1 writes (Intel SDM vol. 3,
/// appendix B).
pub mod vmcs {
    /// Guest ES selector; CS, SS, DS, FS, GS, LDTR, TR follow at +2 each.
    pub const ES_SELECTOR: u32 = 0x0800;
    /// Guest ES limit; the same order at +2, then GDTR, IDTR.
    pub const ES_LIMIT: u32 = 0x4800;
    /// Guest ES access rights; the same order at +2.
    pub const ES_AR: u32 = 0x4814;
    /// Guest ES base; the same order at +2, then GDTR, IDTR.
    pub const ES_BASE: u32 = 0x6806;
    /// Guest CR0.
    pub const CR0: u32 = 0x6800;
    /// Guest CR3.
    pub const CR3: u32 = 0x6802;
    /// Guest CR4.
    pub const CR4: u32 = 0x6804;
    /// Guest DR7.
    pub const DR7: u32 = 0x681A;
    /// Guest IA32_EFER.
    pub const EFER: u32 = 0x2806;
    /// Guest activity state (read-only to the L1).
    pub const ACTIVITY_STATE: u32 = 0x4826;
    /// Guest interruptibility state.
    pub const INTERRUPTIBILITY: u32 = 0x4824;
    /// VM-entry controls.
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    /// VM-entry interruption information.
    pub const ENTRY_INTR_INFO: u32 = 0x4016;
    /// VM-entry exception error code.
    pub const ENTRY_EXCEPTION_ERROR: u32 = 0x4018;
    /// Virtual-APIC page address.
    pub const VIRTUAL_APIC_PAGE: u32 = 0x2012;

    /// VM-entry control: IA-32e mode guest.
    pub const ENTRY_IA32E_MODE: u64 = 1 << 9;

    /// Guest CR0 bits the L1 may write (PE, MP, EM, TS, ET, WP, AM, PG).
    /// This and the next two masks follow Intel's TD-partitioning SVSM;
    /// they are not checked on hardware.
    pub const CR0_WRITABLE: u64 = 0x8005_001F;
    /// Guest CR4 bits the L1 may write (VMXE and SMXE are the module's).
    pub const CR4_WRITABLE: u64 = 0x03FF_1FBF;
    /// Guest IA32_EFER bits the L1 may write (SCE, LME, LMA).
    pub const EFER_WRITABLE: u64 = 0x501;
}

/// Segment order of the VMCS field groups.
const SEGMENTS: usize = 8;
const CS: u32 = 1;
const LDTR: u32 = 6;
const TR: u32 = 7;

/// How many VMCS writes [`reset_state`] returns.
pub const RESET_WRITES: usize = SEGMENTS * 4 + 2 * 2 + 7;

/// The x86 reset state for a guest whose first instruction is at the
/// linear address `entry` (0xfffffff0 for OVMF): real mode, CS base
/// `entry & !0xffff`, IP `entry & 0xffff`. Returns the VMCS writes (field
/// encoding, value, mask) and the state buffer.
pub fn reset_state(entry: u64) -> ([(u32, u64, u64); RESET_WRITES], L2State) {
    let mut w = [(0u32, 0u64, 0u64); RESET_WRITES];
    let mut n = 0;
    let mut put = |field: u32, value: u64, mask: u64| {
        w[n] = (field, value, mask);
        n += 1;
    };
    for seg in 0..SEGMENTS as u32 {
        let (sel, base, ar) = match seg {
            CS => (0xF000, entry & !0xFFFF, 0x9B),
            LDTR => (0, 0, 0x82),
            TR => (0, 0, 0x8B),
            _ => (0, 0, 0x93),
        };
        put(vmcs::ES_SELECTOR + 2 * seg, sel, 0xFFFF);
        put(vmcs::ES_BASE + 2 * seg, base, u64::MAX);
        put(vmcs::ES_LIMIT + 2 * seg, 0xFFFF, 0xFFFF_FFFF);
        put(vmcs::ES_AR + 2 * seg, ar, 0xFFFF_FFFF);
    }
    // GDTR and IDTR follow the eight segments in the limit and base groups.
    for table in SEGMENTS as u32..SEGMENTS as u32 + 2 {
        put(vmcs::ES_BASE + 2 * table, 0, u64::MAX);
        put(vmcs::ES_LIMIT + 2 * table, 0xFFFF, 0xFFFF_FFFF);
    }
    // Control registers: only the bits the L1 may write (the module keeps
    // the VMX-fixed ones, e.g. CR0.NE and CR4.VMXE, and shadows them).
    // CR0: ET (PE = PG = 0: real mode, which needs unrestricted guest).
    put(vmcs::CR0, 0x10, vmcs::CR0_WRITABLE);
    put(vmcs::CR3, 0, u64::MAX);
    put(vmcs::CR4, 0, vmcs::CR4_WRITABLE);
    put(vmcs::DR7, 0x400, u64::MAX);
    put(vmcs::EFER, 0, vmcs::EFER_WRITABLE);
    put(vmcs::ENTRY_CONTROLS, 0, vmcs::ENTRY_IA32E_MODE);
    put(vmcs::INTERRUPTIBILITY, 0, 0xFFFF_FFFF);
    let state = L2State {
        rflags: 2,
        rip: entry & 0xFFFF,
        ..Default::default()
    };
    (w, state)
}

/// Writes the L2's reset state and controls into its VMCS: every L2 TDCALL
/// (TDG.VP.VMCALL included) exits to the L1, the virtual-APIC page is
/// `vapic_gpa` (an L1 page), and the segment/control registers come from
/// [`reset_state`].
pub fn setup_vmcs(
    m: &mut dyn TdxModule,
    vm: VmIndex,
    entry: u64,
    vapic_gpa: u64,
) -> Result<L2State, TdxError> {
    tdcall::vp_wr(m, field::l2_ctls(vm.get()), 0, 0x7)?;
    vmcs_write(m, vm, vmcs::VIRTUAL_APIC_PAGE, vapic_gpa, !0xFFF)?;
    let (writes, state) = reset_state(entry);
    for (enc, value, mask) in writes {
        if mask != 0 {
            vmcs_write(m, vm, enc, value, mask)?;
        }
    }
    Ok(state)
}

/// The L2 vCPU the loop runs.
#[derive(Clone, Copy, Debug)]
pub struct L2Vcpu {
    /// Its VM.
    pub vm: VmIndex,
    /// The L1 page its state buffer lives in (256-byte aligned).
    pub state_gpa: u64,
    /// Its registers between entries.
    pub state: L2State,
    /// The Calling Area GPA (L2 memory).
    pub caa: u64,
}

/// What the loop did besides SVSM calls (for logs and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// VP.ENTER calls.
    pub entries: u64,
    /// Returns without an L2 exit (interrupts for the L1, host-routed exits).
    pub resumes: u64,
    /// L2 TDCALLs refused (a leaf the L2 may not use).
    pub refused_tdcalls: u64,
    /// L2 TDG.VP.VMCALLs refused (a sub-function the L1 does not serve).
    pub refused_vmcalls: u64,
    /// Port I/O forwarded to the host.
    pub io_forwarded: u64,
    /// CPUIDs answered.
    pub cpuids: u64,
    /// #GP injected (MSR accesses, TDCALL outside CPL 0).
    pub gp_injected: u64,
    /// #UD injected (VMCALL).
    pub ud_injected: u64,
    /// L2 MMIO requests forwarded to the host.
    pub mmio_forwarded: u64,
    /// L2 RDMSR/WRMSR requests forwarded to the host.
    pub msr_forwarded: u64,
    /// L2 MapGPA requests forwarded to the host.
    pub map_gpa_forwarded: u64,
    /// Forwarded requests the host (or the module) answered with an error,
    /// and MapGPAs to private whose pages could not be accepted again.
    pub host_errors: u64,
    /// L2 TDG.MEM.PAGE.ACCEPTs the L1 made for it.
    pub accepts_served: u64,
}

/// The completion status an L2 gets for a TDCALL the L1 refuses:
/// TDX_OPERAND_INVALID on operand RAX (the leaf).
pub const REFUSED: u64 = (tdcall::status::OPERAND_INVALID as u64) << 32;

/// A VP.ENTER that keeps returning without an L2 exit this often in a row
/// is treated as a broken module.
pub const MAX_RESUMES_IN_A_ROW: u32 = 1 << 20;

/// Runs the L2 until it needs the SVSM or stops; `bounds` says what the
/// L2's forwarded requests may name.
pub fn run(
    m: &mut dyn TdxModule,
    v: &mut L2Vcpu,
    stats: &mut LoopStats,
    bounds: &mut L2Bounds<'_>,
) -> Result<GuestExit, TdxError> {
    let mut resumes = 0u32;
    loop {
        m.write(v.state_gpa, &v.state.to_bytes())
            .map_err(|_| TdxError::BadArgument("L2 state buffer is not TD memory"))?;
        stats.entries += 1;
        let info = match tdcall::vp_enter(m, v.vm, v.state_gpa)? {
            VpEnterOutcome::Resume(_) => {
                stats.resumes += 1;
                resumes += 1;
                if resumes >= MAX_RESUMES_IN_A_ROW {
                    return Err(TdxError::Malformed("TDG.VP.ENTER never enters the L2"));
                }
                continue;
            }
            VpEnterOutcome::L2Exit(info) => info,
        };
        resumes = 0;
        let mut buf = [0u8; STATE_LEN];
        m.read(v.state_gpa, &mut buf)
            .map_err(|_| TdxError::BadArgument("L2 state buffer is not TD memory"))?;
        v.state = L2State::from_bytes(&buf);
        if let Some(exit) = handle_exit(m, v, &info, stats, bounds)? {
            return Ok(exit);
        }
    }
}

fn step_over(v: &mut L2Vcpu, info: &L2ExitInfo) -> Result<(), TdxError> {
    if !(1..=15).contains(&info.instr_len) {
        return Err(TdxError::Malformed(
            "L2 exit with an impossible instruction length",
        ));
    }
    v.state.rip = v.state.rip.wrapping_add(u64::from(info.instr_len));
    Ok(())
}

/// One L2 exit: Some(exit) to return to the request loop, None to resume.
fn handle_exit(
    m: &mut dyn TdxModule,
    v: &mut L2Vcpu,
    info: &L2ExitInfo,
    stats: &mut LoopStats,
    bounds: &mut L2Bounds<'_>,
) -> Result<Option<GuestExit>, TdxError> {
    match info.basic() {
        exit_reason::TDCALL if info.cpl != 0 => {
            // Only the L2's kernel may call the SVSM or the module; a user
            // program that gets here gets #GP as TDCALL outside CPL 0 would.
            inject_exception(m, v.vm, 13, Some(0))?;
            stats.gp_injected += 1;
            Ok(None)
        }
        exit_reason::TDCALL => {
            step_over(v, info)?;
            if bounds.private_l2(v.caa, 8) && call_pending(m, v.caa) {
                return Ok(Some(GuestExit::SvsmCall));
            }
            l2_tdcall(m, v, stats, bounds)
        }
        exit_reason::IO => {
            let q = info.qualification;
            let size = ((q & 7) + 1) as u8;
            let input = q & 8 != 0;
            if q & 0x30 != 0 || !matches!(size, 1 | 2 | 4) {
                // String or REP I/O would need the L2's memory and segment
                // state decoded: not supported.
                return Ok(Some(unhandled(info)));
            }
            step_over(v, info)?;
            port_io(m, v, stats, (q >> 16) as u16, size, input, gpr::RAX);
            Ok(None)
        }
        exit_reason::CPUID => {
            step_over(v, info)?;
            cpuid(
                m,
                v,
                stats,
                gpr::RAX,
                gpr::RCX,
                [gpr::RAX, gpr::RBX, gpr::RCX, gpr::RDX],
            );
            Ok(None)
        }
        exit_reason::MSR_READ | exit_reason::MSR_WRITE => {
            // The same filter as TDG.VP.VMCALL<Instruction.RDMSR/WRMSR>; a
            // denied MSR or one the host refuses is #GP(0), as on a CPU
            // without it.
            let write = info.basic() == exit_reason::MSR_WRITE;
            if forward::msr_instruction(m, &mut v.state.gprs, write, stats) {
                step_over(v, info)?;
            } else {
                inject_exception(m, v.vm, 13, Some(0))?;
                stats.gp_injected += 1;
            }
            Ok(None)
        }
        exit_reason::VMCALL => {
            // No hypercalls here (SVSM calls are TDCALLs): #UD, as on a CPU
            // without a hypervisor.
            inject_exception(m, v.vm, 6, None)?;
            stats.ud_injected += 1;
            Ok(None)
        }
        exit_reason::HLT => {
            step_over(v, info)?;
            Ok(Some(GuestExit::Halt))
        }
        exit_reason::TRIPLE_FAULT => Ok(Some(GuestExit::Shutdown)),
        _ => Ok(Some(unhandled(info))),
    }
}

fn unhandled(info: &L2ExitInfo) -> GuestExit {
    GuestExit::Unhandled {
        code: u64::from(info.reason),
        info: info.qualification,
    }
}

/// Whether the L2 set call_pending (bit 0 of the Calling Area's byte 0).
/// An unreadable Calling Area counts as no call; so does one the L2 made
/// shared (the caller checks, the L1 never reads it privately then).
fn call_pending(m: &mut dyn TdxModule, caa: u64) -> bool {
    let mut b = [0u8; 1];
    m.read(caa, &mut b).is_ok() && b[0] & 1 != 0
}

/// A TDCALL the L2 meant for the TDX module.
fn l2_tdcall(
    m: &mut dyn TdxModule,
    v: &mut L2Vcpu,
    stats: &mut LoopStats,
    bounds: &mut L2Bounds<'_>,
) -> Result<Option<GuestExit>, TdxError> {
    let rax = v.state.gprs[gpr::RAX];
    // Leaf in bits 15:0, version in 23:16; anything above is reserved.
    let leaf = if rax >> 24 == 0 {
        rax & 0xFFFF
    } else {
        u64::MAX
    };
    match leaf {
        leaf::VP_VMCALL => l2_vmcall(m, v, stats, bounds),
        leaf::MEM_PAGE_ACCEPT => {
            forward::page_accept(m, &mut v.state.gprs, bounds, stats);
            Ok(None)
        }
        leaf::VP_INFO => {
            // Read-only facts about the TD; nothing of the L1's.
            let mut a = tdcall::TdcallArgs {
                rax: leaf::VP_INFO,
                ..Default::default()
            };
            let status = m.tdcall(&mut a);
            let g = &mut v.state.gprs;
            g[gpr::RAX] = status;
            g[gpr::RCX] = a.rcx;
            g[gpr::RDX] = a.rdx;
            g[gpr::R8] = a.r8;
            g[gpr::R9] = a.r9;
            g[gpr::R10] = 0;
            g[gpr::R11] = 0;
            Ok(None)
        }
        _ => {
            // MR.REPORT, RTMR.EXTEND, VM/VP.RD/WR, VP.ENTER, SERVTD, SYS,
            // VERIFYREPORT, page acceptance and attributes, INVEPT...: the
            // L2 gets none of the L1's powers.
            log::warn!("L2 TDCALL {rax:#x} refused");
            stats.refused_tdcalls += 1;
            v.state.gprs[gpr::RAX] = REFUSED;
            Ok(None)
        }
    }
}

/// A TDG.VP.VMCALL the L2 made (L2_CTLS sends them to the L1).
fn l2_vmcall(
    m: &mut dyn TdxModule,
    v: &mut L2Vcpu,
    stats: &mut LoopStats,
    bounds: &mut L2Bounds<'_>,
) -> Result<Option<GuestExit>, TdxError> {
    let g = v.state.gprs;
    // The TDCALL itself succeeds; the sub-function's result goes in R10.
    v.state.gprs[gpr::RAX] = 0;
    if g[gpr::R10] != 0 {
        stats.refused_vmcalls += 1;
        v.state.gprs[gpr::R10] = vmcall::INVALID_OPERAND;
        return Ok(None);
    }
    match g[gpr::R11] {
        vmcall::IO => {
            let size = g[gpr::R12];
            if !matches!(size, 1 | 2 | 4) || g[gpr::R13] > 1 || g[gpr::R14] > 0xFFFF {
                stats.refused_vmcalls += 1;
                v.state.gprs[gpr::R10] = vmcall::INVALID_OPERAND;
                return Ok(None);
            }
            let input = g[gpr::R13] == 0;
            if input {
                v.state.gprs[gpr::R11] = 0;
                port_io(m, v, stats, g[gpr::R14] as u16, size as u8, true, gpr::R11);
            } else {
                v.state.gprs[gpr::R15] = g[gpr::R15];
                port_io_out(m, stats, g[gpr::R14] as u16, size as u8, g[gpr::R15]);
            }
            v.state.gprs[gpr::R10] = vmcall::SUCCESS;
            Ok(None)
        }
        vmcall::CPUID => {
            cpuid(
                m,
                v,
                stats,
                gpr::R12,
                gpr::R13,
                [gpr::R12, gpr::R13, gpr::R14, gpr::R15],
            );
            v.state.gprs[gpr::R10] = vmcall::SUCCESS;
            Ok(None)
        }
        vmcall::HLT => {
            // Not forwarded: nothing can wake the L2 yet (the L1 delivers
            // it no interrupts), so a forwarded HLT would park the L1's
            // vCPU in the host — no SVSM calls served meanwhile — until an
            // interrupt meant for the L1 arrives, and the L2 would resume
            // into the same wait. The guest halted: the request loop ends.
            v.state.gprs[gpr::R10] = vmcall::SUCCESS;
            Ok(Some(GuestExit::Halt))
        }
        vmcall::MMIO => {
            forward::mmio(m, &mut v.state.gprs, bounds, stats);
            Ok(None)
        }
        vmcall::RDMSR | vmcall::WRMSR => {
            let write = g[gpr::R11] == vmcall::WRMSR;
            forward::msr(m, &mut v.state.gprs, write, stats);
            Ok(None)
        }
        vmcall::MAP_GPA => {
            forward::map_gpa(m, &mut v.state.gprs, bounds, stats);
            Ok(None)
        }
        vmcall::GET_QUOTE => {
            // The L2's evidence comes from the SVSM attestation protocol,
            // which binds it to the vTPM (the SVSM's REPORTDATA covers the
            // nonce and the vTPM manifest). A quote made at the L2's
            // request would carry the L1's measurements under REPORTDATA
            // the L2 chose, and use the L1's quoting service.
            log::warn!("L2 GetQuote refused: use the SVSM attestation protocol");
            stats.refused_vmcalls += 1;
            v.state.gprs[gpr::R10] = vmcall::INVALID_OPERAND;
            Ok(None)
        }
        other => {
            // ReportFatalError (the TD's fatal error is the L1's to report:
            // the host would tear down the whole TD, the SVSM and its vTPM
            // included), SetupEventNotifyInterrupt (it would point the
            // host's notification at the L1's APIC), GetTdVmcallInfo,
            // vendor calls, anything unknown: not served to the L2.
            log::warn!("L2 TDG.VP.VMCALL sub-function {other:#x} refused");
            stats.refused_vmcalls += 1;
            v.state.gprs[gpr::R10] = vmcall::INVALID_OPERAND;
            Ok(None)
        }
    }
}

fn port_io(
    m: &mut dyn TdxModule,
    v: &mut L2Vcpu,
    stats: &mut LoopStats,
    port: u16,
    size: u8,
    input: bool,
    reg: usize,
) {
    let mask = (1u64 << (u32::from(size) * 8)) - 1;
    if input {
        // A host that refuses reads as a floating bus.
        let value = tdcall::io_read(m, port, size).map_or(mask, u64::from);
        stats.io_forwarded += 1;
        v.state.gprs[reg] = (v.state.gprs[reg] & !mask) | (value & mask);
    } else {
        port_io_out(m, stats, port, size, v.state.gprs[reg] & mask);
    }
}

fn port_io_out(m: &mut dyn TdxModule, stats: &mut LoopStats, port: u16, size: u8, value: u64) {
    stats.io_forwarded += 1;
    if let Err(e) = tdcall::io_write(m, port, size, value as u32) {
        log::debug!("L2 OUT {port:#x}: {e}");
    }
}

fn cpuid(
    m: &mut dyn TdxModule,
    v: &mut L2Vcpu,
    stats: &mut LoopStats,
    leaf_reg: usize,
    sub_reg: usize,
    out: [usize; 4],
) {
    let r = m.cpuid(v.state.gprs[leaf_reg] as u32, v.state.gprs[sub_reg] as u32);
    for (reg, value) in out.into_iter().zip(r) {
        v.state.gprs[reg] = u64::from(value);
    }
    stats.cpuids += 1;
}

/// Queues hardware exception `vector` (with `error_code` if it has one)
/// for the next entry of `vm`; the L2's RIP stays on the faulting
/// instruction.
fn inject_exception(
    m: &mut dyn TdxModule,
    vm: VmIndex,
    vector: u8,
    error_code: Option<u32>,
) -> Result<(), TdxError> {
    // Valid (bit 31), type hardware exception (3, bits 10:8), vector.
    let mut info = (1u64 << 31) | (3 << 8) | u64::from(vector);
    if let Some(code) = error_code {
        info |= 1 << 11; // deliver the error code
        vmcs_write(
            m,
            vm,
            vmcs::ENTRY_EXCEPTION_ERROR,
            u64::from(code),
            0xFFFF_FFFF,
        )?;
    }
    vmcs_write(m, vm, vmcs::ENTRY_INTR_INFO, info, 0xFFFF_FFFF)?;
    Ok(())
}

/// TDG.VP.WR of an L2 VMCS field (the bits of `mask`).
fn vmcs_write(
    m: &mut dyn TdxModule,
    vm: VmIndex,
    encoding: u32,
    value: u64,
    mask: u64,
) -> Result<(), TdxError> {
    let id = field::l2_vmcs(vm.get(), encoding) | field::WRITE_MASK_VALID;
    tdcall::vp_wr(m, id, value, mask).map(|_| ())
}
