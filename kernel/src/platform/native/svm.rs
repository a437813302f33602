//! The world switch of the native platform: QEMU's TCG emulates AMD SVM with
//! nested paging, so the SVSM runs its guest with VMRUN and gets control back
//! on every intercepted event (#VMEXIT). Only the registers VMRUN does not
//! switch are saved here; VMSAVE/VMLOAD swap the segment and syscall state.

use core::arch::global_asm;

use super::vmcb::{Segment, Vmcb, control, exit, misc1, misc2, save};
use crate::cpu::instr::{self, cpuid, msr};
use crate::mm::paging::{MapError, PageTables, PteFlags};
use crate::mm::{PAGE_SIZE, PhysRange, VirtAddr, alloc_frame, alloc_frames};

/// `VM_HSAVE_PA`: where VMRUN keeps the host state.
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
/// EFER.SVME.
const EFER_SVME: u64 = 1 << 12;

/// The guest registers VMRUN does not switch (RAX and RSP live in the VMCB).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestGprs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

global_asm!(
    r#"
    .section .text.svm, "ax"
    .global svm_world_switch
    /* svm_world_switch(vmcb_pa: rdi, host_save_pa: rsi, gprs: rdx) */
svm_world_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rdx              /* 16(%rsp): gprs */
    pushq %rdi              /*  8(%rsp): guest VMCB */
    pushq %rsi              /*  0(%rsp): host save area */
    mov %rsi, %rax
    vmsave %rax
    mov %rdi, %rax
    vmload %rax
    mov 0(%rdx), %rbx
    mov 8(%rdx), %rcx
    mov 24(%rdx), %rsi
    mov 32(%rdx), %rdi
    mov 40(%rdx), %rbp
    mov 48(%rdx), %r8
    mov 56(%rdx), %r9
    mov 64(%rdx), %r10
    mov 72(%rdx), %r11
    mov 80(%rdx), %r12
    mov 88(%rdx), %r13
    mov 96(%rdx), %r14
    mov 104(%rdx), %r15
    mov 16(%rdx), %rdx
    clgi
    vmrun %rax
    /* #VMEXIT: RAX (the VMCB) and RSP are the host's again. */
    xchg 16(%rsp), %rdx     /* rdx = gprs, slot = guest rdx */
    mov %rbx, 0(%rdx)
    mov %rcx, 8(%rdx)
    mov %rsi, 24(%rdx)
    mov %rdi, 32(%rdx)
    mov %rbp, 40(%rdx)
    mov %r8, 48(%rdx)
    mov %r9, 56(%rdx)
    mov %r10, 64(%rdx)
    mov %r11, 72(%rdx)
    mov %r12, 80(%rdx)
    mov %r13, 88(%rdx)
    mov %r14, 96(%rdx)
    mov %r15, 104(%rdx)
    mov 16(%rsp), %rcx
    mov %rcx, 16(%rdx)
    vmsave %rax
    mov 0(%rsp), %rax
    vmload %rax
    stgi
    add $24, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn svm_world_switch(vmcb_pa: u64, host_save_pa: u64, gprs: *mut GuestGprs);
}

/// Why SVM cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// The CPU has no SVM (QEMU needs `-cpu max` or an EPYC model).
    NoSvm,
    /// SVM without nested paging (plain `qemu64`): the SVSM needs NPT to hide its memory.
    NoNestedPaging,
    /// SVM is disabled by the firmware (VM_CR.SVMDIS).
    Disabled,
    /// A page for the VMCB, maps or tables could not be had.
    OutOfMemory,
    /// Mapping the guest's memory failed.
    Map(MapError),
}

impl core::fmt::Display for SvmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSvm => write!(f, "the CPU has no SVM (use -cpu max or an EPYC model)"),
            Self::NoNestedPaging => {
                write!(f, "the CPU has SVM but no nested paging (use -cpu max)")
            }
            Self::Disabled => write!(f, "SVM is disabled (VM_CR.SVMDIS)"),
            Self::OutOfMemory => write!(f, "out of memory for SVM structures"),
            Self::Map(e) => write!(f, "nested page tables: {e}"),
        }
    }
}

/// Checks for SVM with nested paging and turns SVM on (EFER.SVME, host
/// save area). Returns the host save area (a VMSAVE page) for the switch.
pub fn enable() -> Result<u64, SvmError> {
    if cpuid(0x8000_0000, 0).eax < 0x8000_000A || cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        return Err(SvmError::NoSvm);
    }
    if cpuid(0x8000_000A, 0).edx & 1 == 0 {
        return Err(SvmError::NoNestedPaging);
    }
    // SAFETY: VM_CR (0xC0010114) exists on every CPU with SVM.
    if unsafe { instr::rdmsr(0xC001_0114) } & (1 << 4) != 0 {
        return Err(SvmError::Disabled);
    }
    let hsave = alloc_frame().ok_or(SvmError::OutOfMemory)?;
    let host_save = alloc_frame().ok_or(SvmError::OutOfMemory)?;
    // SAFETY: SVM is present and enabled (checked above); the save area is a
    // fresh page owned by the CPU from now on.
    unsafe {
        let efer = instr::rdmsr(msr::EFER);
        instr::wrmsr(msr::EFER, efer | EFER_SVME);
        instr::wrmsr(MSR_VM_HSAVE_PA, hsave.0);
    }
    Ok(host_save.0)
}

/// The raw facts of one #VMEXIT.
#[derive(Clone, Copy, Debug)]
pub struct RawExit {
    /// EXITCODE.
    pub code: u64,
    /// EXITINFO1.
    pub info1: u64,
    /// EXITINFO2.
    pub info2: u64,
    /// Guest RIP at the exit.
    pub rip: u64,
}

/// How the guest starts.
#[derive(Clone, Debug)]
pub struct GuestStart {
    /// Guest memory: identity-mapped by the nested tables (GPA = HPA).
    pub memory: PhysRange,
    /// Guest page-table root (a GPA inside `memory`).
    pub cr3: u64,
    /// Entry point.
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// First argument (RDI).
    pub rdi: u64,
    /// Second argument (RSI).
    pub rsi: u64,
    /// I/O ports the guest may use directly (the serial port).
    pub io_ports: core::ops::Range<u16>,
}

/// A guest vCPU run with SVM.
pub struct SvmVcpu {
    vmcb: Vmcb,
    host_save: u64,
    /// The guest's general-purpose registers (RAX, RSP in the VMCB).
    pub gprs: GuestGprs,
    _npt: PageTables,
    first_run: bool,
}

impl SvmVcpu {
    /// Builds the VMCB, I/O and MSR permission maps and nested page tables.
    pub fn new(host_save: u64, start: &GuestStart) -> Result<Self, SvmError> {
        let mut npt = PageTables::new_nested().map_err(SvmError::Map)?;
        npt.map_range(
            VirtAddr(start.memory.start.0),
            start.memory.start,
            start.memory.len(),
            PteFlags::USER | PteFlags::WRITABLE,
        )
        .map_err(SvmError::Map)?;

        // Intercept every port but the ones the guest may own.
        let iopm = alloc_frames(3, 1).ok_or(SvmError::OutOfMemory)?;
        // SAFETY: three fresh contiguous pages owned by this vCPU.
        let iopm_bytes =
            unsafe { core::slice::from_raw_parts_mut(iopm.0 as *mut u8, 3 * PAGE_SIZE as usize) };
        iopm_bytes.fill(0xFF);
        for port in start.io_ports.clone() {
            iopm_bytes[usize::from(port / 8)] &= !(1 << (port % 8));
        }
        // Intercept every MSR.
        let msrpm = alloc_frames(2, 1).ok_or(SvmError::OutOfMemory)?;
        // SAFETY: two fresh contiguous pages owned by this vCPU.
        unsafe { core::ptr::write_bytes(msrpm.0 as *mut u8, 0xFF, 2 * PAGE_SIZE as usize) };

        let frame = alloc_frame().ok_or(SvmError::OutOfMemory)?;
        // SAFETY: a fresh page owned by this VMCB alone.
        let mut vmcb = unsafe { Vmcb::from_frame(frame.0) };
        vmcb.write_u32(control::INTERCEPT_EXCEPTIONS, 0xFFFF_FFFF);
        vmcb.write_u32(
            control::INTERCEPT_MISC1,
            misc1::INTR
                | misc1::NMI
                | misc1::SMI
                | misc1::INIT
                | misc1::INVD
                | misc1::HLT
                | misc1::IOIO_PROT
                | misc1::MSR_PROT
                | misc1::TASK_SWITCH
                | misc1::SHUTDOWN,
        );
        vmcb.write_u32(
            control::INTERCEPT_MISC2,
            misc2::VMRUN
                | misc2::VMMCALL
                | misc2::VMLOAD
                | misc2::VMSAVE
                | misc2::STGI
                | misc2::CLGI
                | misc2::SKINIT,
        );
        vmcb.write_u64(control::IOPM_BASE_PA, iopm.0);
        vmcb.write_u64(control::MSRPM_BASE_PA, msrpm.0);
        vmcb.write_u32(control::GUEST_ASID, 1);
        vmcb.write_u64(control::V_INTR, 1 << 24); // V_INTR_MASKING
        vmcb.write_u64(control::NP_ENABLE, 1);
        vmcb.write_u64(control::N_CR3, npt.root().0);

        let data = Segment {
            selector: 0x10,
            attrib: 0x0C93,
            limit: 0xFFFF_FFFF,
            base: 0,
        };
        for off in [save::ES, save::SS, save::DS, save::FS, save::GS] {
            vmcb.write_segment(off, data);
        }
        vmcb.write_segment(
            save::CS,
            Segment {
                selector: 0x08,
                attrib: 0x0A9B, // present, DPL 0, code, L=1, D=0, G=1
                limit: 0xFFFF_FFFF,
                base: 0,
            },
        );
        vmcb.write_segment(
            save::TR,
            Segment {
                selector: 0,
                attrib: 0x008B,
                limit: 0x67,
                base: 0,
            },
        );
        vmcb.write_u8(save::CPL, 0);
        vmcb.write_u64(save::EFER, (1 << 12) | (1 << 11) | (1 << 10) | (1 << 8));
        vmcb.write_u64(save::CR0, 0x8001_0033);
        vmcb.write_u64(save::CR4, 0x20);
        vmcb.write_u64(save::CR3, start.cr3);
        vmcb.write_u64(save::RFLAGS, 0x2);
        vmcb.write_u64(save::RIP, start.rip);
        vmcb.write_u64(save::RSP, start.rsp);
        vmcb.write_u64(save::DR6, 0xFFFF_0FF0);
        vmcb.write_u64(save::DR7, 0x400);
        vmcb.write_u64(save::G_PAT, 0x0007_0406_0007_0406);

        Ok(Self {
            vmcb,
            host_save,
            gprs: GuestGprs {
                rdi: start.rdi,
                rsi: start.rsi,
                ..GuestGprs::default()
            },
            _npt: npt,
            first_run: true,
        })
    }

    /// Guest RAX.
    pub fn rax(&self) -> u64 {
        self.vmcb.read_u64(save::RAX)
    }

    /// Sets guest RAX.
    pub fn set_rax(&mut self, v: u64) {
        self.vmcb.write_u64(save::RAX, v);
    }

    /// Moves the guest past an instruction of `len` bytes (no nRIP-save here).
    pub fn skip_instruction(&mut self, len: u64) {
        let rip = self.vmcb.read_u64(save::RIP);
        self.vmcb.write_u64(save::RIP, rip.wrapping_add(len));
    }

    /// Runs the guest until the next #VMEXIT.
    pub fn run(&mut self) -> RawExit {
        let tlb = if self.first_run { 1 } else { 0 };
        self.vmcb.write_u8(control::TLB_CONTROL, tlb);
        self.vmcb.write_u32(control::CLEAN_BITS, 0);
        self.first_run = false;
        // SAFETY: the VMCB, its permission maps and nested tables are valid
        // and owned by this vCPU; the nested tables map only guest memory, so
        // the guest cannot reach SVSM memory; the switch saves and restores
        // every host register VMRUN does not.
        unsafe { svm_world_switch(self.vmcb.pa(), self.host_save, &mut self.gprs) };
        RawExit {
            code: self.vmcb.read_u64(control::EXIT_CODE),
            info1: self.vmcb.read_u64(control::EXIT_INFO1),
            info2: self.vmcb.read_u64(control::EXIT_INFO2),
            rip: self.vmcb.read_u64(save::RIP),
        }
    }
}

/// A one-line description of an exit code.
pub fn exit_name(code: u64) -> &'static str {
    match code {
        exit::INTR => "physical interrupt",
        exit::NMI => "NMI",
        exit::HLT => "HLT",
        exit::IOIO => "port I/O to a port the guest does not own",
        exit::MSR => "MSR access",
        exit::SHUTDOWN => "shutdown (guest triple fault)",
        exit::VMRUN => "VMRUN",
        exit::VMMCALL => "VMMCALL",
        exit::NPF => "nested page fault (access outside guest memory)",
        c if (exit::EXCEPTION_BASE..exit::EXCEPTION_BASE + 32).contains(&c) => "guest exception",
        c if c & 0xFFFF_FFFF == exit::INVALID => "invalid guest state",
        _ => "unexpected exit",
    }
}
