//! TDCALL: the register interface to the Intel TDX module, its completion
//! status codes, and typed wrappers for the leaves the L1 uses (Intel TDX
//! Module ABI specification; TD partitioning specification for VP.ENTER and
//! the per-VM page attributes; TDX GHCI specification for TDG.VP.VMCALL).
//!
//! The instruction itself sits behind [`TdxModule`]; everything here is plain
//! register marshalling and decoding, tested on the host against the model in
//! `model.rs`. Nothing the module answers is trusted to be well formed: an
//! answer that makes no sense is an error ([`TdxError::Malformed`]), never a
//! panic.

/// TDCALL leaf numbers (RAX bits 15:0; bits 23:16 are the leaf version).
pub mod leaf {
    /// TDG.VP.VMCALL: a call to the host VMM.
    pub const VP_VMCALL: u64 = 0;
    /// TDG.VP.INFO.
    pub const VP_INFO: u64 = 1;
    /// TDG.MR.RTMR.EXTEND.
    pub const MR_RTMR_EXTEND: u64 = 2;
    /// TDG.VP.VEINFO.GET.
    pub const VP_VEINFO_GET: u64 = 3;
    /// TDG.MR.REPORT.
    pub const MR_REPORT: u64 = 4;
    /// TDG.VP.CPUIDVE.SET.
    pub const VP_CPUIDVE_SET: u64 = 5;
    /// TDG.MEM.PAGE.ACCEPT.
    pub const MEM_PAGE_ACCEPT: u64 = 6;
    /// TDG.VM.RD.
    pub const VM_RD: u64 = 7;
    /// TDG.VM.WR.
    pub const VM_WR: u64 = 8;
    /// TDG.VP.RD.
    pub const VP_RD: u64 = 9;
    /// TDG.VP.WR.
    pub const VP_WR: u64 = 10;
    /// TDG.SYS.RD.
    pub const SYS_RD: u64 = 11;
    /// TDG.SYS.RDALL.
    pub const SYS_RDALL: u64 = 12;
    /// TDG.SERVTD.RD.
    pub const SERVTD_RD: u64 = 18;
    /// TDG.SERVTD.WR.
    pub const SERVTD_WR: u64 = 20;
    /// TDG.MR.VERIFYREPORT.
    pub const MR_VERIFYREPORT: u64 = 22;
    /// TDG.MEM.PAGE.ATTR.RD.
    pub const MEM_PAGE_ATTR_RD: u64 = 23;
    /// TDG.MEM.PAGE.ATTR.WR.
    pub const MEM_PAGE_ATTR_WR: u64 = 24;
    /// TDG.VP.ENTER: run an L2 VM.
    pub const VP_ENTER: u64 = 25;
    /// TDG.VP.INVEPT.
    pub const VP_INVEPT: u64 = 26;
    /// TDG.VP.INVVPID.
    pub const VP_INVVPID: u64 = 27;
}

/// Completion status classes: RAX bits 63:32 of a TDCALL's answer (bits
/// 31:0 carry details such as the operand id or a page level).
pub mod status {
    /// Success.
    pub const SUCCESS: u32 = 0x0000_0000;
    /// An operand is invalid (details: operand id).
    pub const OPERAND_INVALID: u32 = 0xC000_0100;
    /// An operand is busy; try again (details: operand id).
    pub const OPERAND_BUSY: u32 = 0x8000_0200;
    /// The page was accepted before (a warning; details: level).
    pub const PAGE_ALREADY_ACCEPTED: u32 = 0x0000_0B0A;
    /// The page is mapped at another size than asked (details: level).
    pub const PAGE_SIZE_MISMATCH: u32 = 0xC000_0B0B;
    /// The combination of page attributes is not allowed.
    pub const PAGE_ATTR_INVALID: u32 = 0xC000_0B11;
    /// The L2 secure-EPT walk failed.
    pub const L2_SEPT_WALK_FAILED: u32 = 0xC000_0B0F;
    /// A metadata field id is wrong.
    pub const METADATA_FIELD_ID_INCORRECT: u32 = 0xC000_0C00;
    /// A metadata field is not writable.
    pub const METADATA_FIELD_NOT_WRITABLE: u32 = 0xC000_0C01;
    /// VP.ENTER: an L2 exit was handled by the host; L1 resumed.
    pub const L2_EXIT_HOST_ROUTED_ASYNC: u32 = 0x0000_1100;
    /// VP.ENTER: an L2 TDG.VP.VMCALL went to the host; L1 resumed.
    pub const L2_EXIT_HOST_ROUTED_TDVMCALL: u32 = 0x0000_1101;
    /// VP.ENTER: the L2 exited because an interrupt is pending for L1.
    pub const L2_EXIT_PENDING_INTERRUPT: u32 = 0x0000_1102;
    /// VP.ENTER: the L2 VM entry failed (bad L2 state).
    pub const L2_VM_ENTRY_FAILED: u32 = 0x8000_1103;
    /// VP.ENTER: not entered, an interrupt is pending for L1.
    pub const PENDING_INTERRUPT: u32 = 0x0000_1120;

    /// Bit 63: the call failed.
    pub const ERROR_BIT: u64 = 1 << 63;
}

/// Operand ids in the details of OPERAND_INVALID / OPERAND_BUSY.
pub mod operand {
    /// RCX.
    pub const RCX: u32 = 1;
    /// RDX.
    pub const RDX: u32 = 2;
    /// R8.
    pub const R8: u32 = 8;
    /// The L2 virtual-APIC page GPA (VP.ENTER).
    pub const L2_VAPIC_GPA: u32 = 170;
}

/// TDG.VP.VMCALL sub-functions (R11) and status codes (R10).
pub mod vmcall {
    /// Instruction.CPUID (the VMX exit reason).
    pub const CPUID: u64 = 10;
    /// Instruction.HLT.
    pub const HLT: u64 = 12;
    /// Instruction.IO.
    pub const IO: u64 = 30;
    /// Instruction.RDMSR.
    pub const RDMSR: u64 = 31;
    /// Instruction.WRMSR.
    pub const WRMSR: u64 = 32;
    /// #VE.RequestMMIO.
    pub const MMIO: u64 = 48;
    /// MapGPA.
    pub const MAP_GPA: u64 = 0x10001;
    /// GetQuote.
    pub const GET_QUOTE: u64 = 0x10002;
    /// ReportFatalError.
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    /// SetupEventNotifyInterrupt.
    pub const SETUP_EVENT_NOTIFY: u64 = 0x10004;

    /// #VE.RequestMMIO R13: a read.
    pub const MMIO_READ: u64 = 0;
    /// #VE.RequestMMIO R13: a write.
    pub const MMIO_WRITE: u64 = 1;

    /// R10: success.
    pub const SUCCESS: u64 = 0;
    /// R10: try again (MapGPA: R11 holds where to resume).
    pub const RETRY: u64 = 1;
    /// R10: an operand is invalid.
    pub const INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
    /// R10: the GPA is already in the requested state / in use.
    pub const GPA_INUSE: u64 = 0x8000_0000_0000_0001;
    /// R10: an operand is not aligned.
    pub const ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;

    /// RCX bitmap: pass R10..R15 to the host (bits 10..15).
    pub const PASS_R10_R15: u64 = 0xFC00;
}

/// The general-purpose registers a TDCALL reads and writes. RBX and RBP are
/// never passed: the wrappers here do not use them (VP.ENTER sets RBX to 0,
/// which the instruction wrapper saves and restores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdcallArgs {
    /// Leaf in, completion status out.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI (VP.ENTER output: L2 CS selector/attributes/limit).
    pub rsi: u64,
    /// RDI (VP.ENTER output: L2 CS base).
    pub rdi: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

/// A guest-physical access the memory view refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// First byte asked for.
    pub gpa: u64,
    /// Length asked for.
    pub len: usize,
}

/// The narrow hardware boundary: the TDCALL instruction, CPUID, and the L1's
/// view of the TD's private memory (its identity map). On TDX hardware this
/// is `hw::HwTdx`; on the host the model in `model.rs`.
pub trait TdxModule: Send + 'static {
    /// Executes TDCALL with `args` (RAX = leaf on input) and leaves the
    /// registers the module wrote in `args`. Returns RAX (the completion
    /// status).
    ///
    /// Contract (not enforced by the type system): a leaf whose operands
    /// are GPAs the module writes (MR.REPORT, VP.ENTER) may only be given
    /// pages the L1 set aside for the module (`L1Pages`); the wrappers in
    /// this file are the only callers and `Tdp` passes them only those.
    fn tdcall(&mut self, args: &mut TdcallArgs) -> u64;

    /// CPUID as the L1 sees it (the TDX module virtualizes it).
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];

    /// Copies TD private memory at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange>;

    /// Copies `data` into TD private memory at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange>;

    /// Copies the host memory behind the SHARED alias of `gpa` (given
    /// without the SHARED bit) into `buf`. Only pages this view maps at
    /// their shared alias (the quote buffer) can be reached, and only while
    /// the L1 has converted them to shared; the host may change them at any
    /// moment, so callers copy what they need once and validate the copy.
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange>;

    /// Copies `data` into the host memory behind the SHARED alias of `gpa`
    /// (as [`TdxModule::read_shared`]).
    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange>;
}

/// Why a TDCALL did not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdxError {
    /// TDX_OPERAND_INVALID with the operand id.
    OperandInvalid(u32),
    /// TDX_OPERAND_BUSY with the operand id (retries ran out).
    OperandBusy(u32),
    /// TDX_PAGE_SIZE_MISMATCH: the page is mapped at `level` instead.
    PageSizeMismatch(u32),
    /// Any other completion status (the full RAX).
    Status(u64),
    /// TDG.VP.VMCALL completed but the host answered R10 = this code.
    Vmcall(u64),
    /// The module's answer breaks the ABI (what is wrong).
    Malformed(&'static str),
    /// An argument was refused before any TDCALL (what is wrong).
    BadArgument(&'static str),
}

impl core::fmt::Display for TdxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OperandInvalid(op) => write!(f, "TDX_OPERAND_INVALID (operand {op})"),
            Self::OperandBusy(op) => write!(f, "TDX_OPERAND_BUSY (operand {op})"),
            Self::PageSizeMismatch(level) => {
                write!(f, "TDX_PAGE_SIZE_MISMATCH (mapped at level {level})")
            }
            Self::Status(s) => write!(f, "TDX status {s:#018x}"),
            Self::Vmcall(code) => write!(f, "TDG.VP.VMCALL refused by the host: {code:#x}"),
            Self::Malformed(what) => write!(f, "malformed TDX module answer: {what}"),
            Self::BadArgument(what) => write!(f, "refused before TDCALL: {what}"),
        }
    }
}

/// The class of a completion status (RAX bits 63:32).
pub fn class(rax: u64) -> u32 {
    (rax >> 32) as u32
}

/// The details of a completion status (RAX bits 31:0).
pub fn details(rax: u64) -> u32 {
    rax as u32
}

/// Maps an error status to a [`TdxError`]; success and warnings are the
/// caller's business.
pub fn decode_error(rax: u64) -> TdxError {
    match class(rax) {
        status::OPERAND_INVALID => TdxError::OperandInvalid(details(rax) & 0xFF),
        status::OPERAND_BUSY => TdxError::OperandBusy(details(rax) & 0xFF),
        status::PAGE_SIZE_MISMATCH => TdxError::PageSizeMismatch(details(rax) & 0xFF),
        _ => TdxError::Status(rax),
    }
}

/// Plain TDCALL: Ok on TDX_SUCCESS, the decoded error otherwise (a warning
/// status is an error here unless the wrapper expects it).
fn call(m: &mut dyn TdxModule, args: &mut TdcallArgs) -> Result<(), TdxError> {
    let rax = m.tdcall(args);
    if rax == 0 {
        Ok(())
    } else {
        Err(decode_error(rax))
    }
}

/// Page sizes the TDX module accepts and maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB (level 0).
    Size4K,
    /// 2 MiB (level 1).
    Size2M,
}

impl PageSize {
    /// The module's level number.
    pub fn level(self) -> u64 {
        match self {
            Self::Size4K => 0,
            Self::Size2M => 1,
        }
    }

    /// Bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 4096,
            Self::Size2M => 2 << 20,
        }
    }
}

/// GPA bits 51:12 (the page-info operand's address field).
const GPA_MASK: u64 = 0x000F_FFFF_FFFF_F000;

fn page_info(gpa: u64, size: PageSize) -> Result<u64, TdxError> {
    if !gpa.is_multiple_of(size.bytes()) || gpa & !GPA_MASK != 0 {
        return Err(TdxError::BadArgument("GPA not aligned to its page size"));
    }
    Ok(gpa | size.level())
}

/// What TDG.VP.INFO says about this TD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpInfo {
    /// Guest physical address width (48 or 52).
    pub gpaw: u8,
    /// TD ATTRIBUTES.
    pub attributes: u64,
    /// vCPUs initialized.
    pub num_vcpus: u32,
    /// vCPUs allowed.
    pub max_vcpus: u32,
    /// This vCPU's index.
    pub vcpu_index: u32,
}

impl VpInfo {
    /// The SHARED bit of a GPA: bit GPAW-1.
    pub fn shared_bit(&self) -> u64 {
        1 << (self.gpaw - 1)
    }

    /// Whether the TD is debuggable (ATTRIBUTES bit 0): its memory and
    /// state are open to the host, so its reports prove nothing.
    pub fn debug(&self) -> bool {
        self.attributes & 1 != 0
    }
}

/// TDG.VP.INFO.
pub fn vp_info(m: &mut dyn TdxModule) -> Result<VpInfo, TdxError> {
    let mut a = TdcallArgs {
        rax: leaf::VP_INFO,
        ..Default::default()
    };
    call(m, &mut a)?;
    let gpaw = (a.rcx & 0x3F) as u8;
    if gpaw != 48 && gpaw != 52 {
        return Err(TdxError::Malformed(
            "TDG.VP.INFO: GPAW is neither 48 nor 52",
        ));
    }
    let info = VpInfo {
        gpaw,
        attributes: a.rdx,
        num_vcpus: a.r8 as u32,
        max_vcpus: (a.r8 >> 32) as u32,
        vcpu_index: a.r9 as u32,
    };
    if info.num_vcpus == 0 || info.num_vcpus > info.max_vcpus || info.vcpu_index >= info.num_vcpus {
        return Err(TdxError::Malformed("TDG.VP.INFO: inconsistent vCPU counts"));
    }
    Ok(info)
}

/// What TDG.MEM.PAGE.ACCEPT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The page was pending and is now accepted (zeroed).
    Now,
    /// It was accepted before (TDX_PAGE_ALREADY_ACCEPTED); its contents
    /// were left alone.
    Already,
}

/// TDG.MEM.PAGE.ACCEPT of one page.
pub fn mem_page_accept(
    m: &mut dyn TdxModule,
    gpa: u64,
    size: PageSize,
) -> Result<Accepted, TdxError> {
    let mut a = TdcallArgs {
        rax: leaf::MEM_PAGE_ACCEPT,
        rcx: page_info(gpa, size)?,
        ..Default::default()
    };
    let rax = m.tdcall(&mut a);
    if rax == 0 {
        Ok(Accepted::Now)
    } else if class(rax) == status::PAGE_ALREADY_ACCEPTED {
        Ok(Accepted::Already)
    } else {
        Err(decode_error(rax))
    }
}

/// The per-VM page attributes of TDG.MEM.PAGE.ATTR.RD/WR (one u16 per VM).
pub mod attr {
    /// Readable.
    pub const R: u16 = 1 << 0;
    /// Writable.
    pub const W: u16 = 1 << 1;
    /// Executable in supervisor mode.
    pub const XS: u16 = 1 << 2;
    /// Executable in user mode.
    pub const XU: u16 = 1 << 3;
    /// Verify guest paging.
    pub const VGP: u16 = 1 << 4;
    /// Paging-write access.
    pub const PWA: u16 = 1 << 5;
    /// Supervisor shadow stack.
    pub const SSS: u16 = 1 << 6;
    /// Suppress #VE.
    pub const SVE: u16 = 1 << 7;
    /// The VM's attributes are valid (in a write: to be changed).
    pub const VALID: u16 = 1 << 15;
    /// Full access for a VM: R, W, Xs, Xu.
    pub const RWX: u16 = R | W | XS | XU;
}

/// An L2 VM index (1..=3; 0 is the L1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmIndex(u8);

impl VmIndex {
    /// The first L2 VM: the one the SVSM runs its guest in.
    pub const L2: Self = Self(1);

    /// VM `n` if it is an L2 index.
    pub fn new(n: u8) -> Option<Self> {
        (1..=3).contains(&n).then_some(Self(n))
    }

    /// The index.
    pub fn get(self) -> u8 {
        self.0
    }

    fn shift(self) -> u32 {
        16 * u32::from(self.0)
    }
}

/// All four VMs' attributes as the module packs them (VM n in bits
/// 16n+15:16n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpaAttrs(pub u64);

impl GpaAttrs {
    /// VM `vm`'s attributes.
    pub fn vm(self, vm: VmIndex) -> u16 {
        (self.0 >> vm.shift()) as u16
    }

    /// The L1's (VM 0) attributes.
    pub fn l1(self) -> u16 {
        self.0 as u16
    }
}

/// TDG.MEM.PAGE.ATTR.RD: the page's mapping level and every VM's attributes.
pub fn mem_page_attr_rd(m: &mut dyn TdxModule, gpa: u64) -> Result<(u64, GpaAttrs), TdxError> {
    let mut a = TdcallArgs {
        rax: leaf::MEM_PAGE_ATTR_RD,
        rcx: page_info(gpa, PageSize::Size4K)?,
        ..Default::default()
    };
    call(m, &mut a)?;
    Ok((a.rcx, GpaAttrs(a.rdx)))
}

/// TDG.MEM.PAGE.ATTR.WR: sets VM `vm`'s attributes of one page to `attrs`
/// (only the bits in `mask` change). Returns every VM's attributes after.
pub fn mem_page_attr_wr(
    m: &mut dyn TdxModule,
    gpa: u64,
    size: PageSize,
    vm: VmIndex,
    attrs: u16,
    mask: u16,
) -> Result<GpaAttrs, TdxError> {
    if mask & attr::VALID != 0 {
        // In the flags operand bit 15 means INVEPT, not VALID.
        return Err(TdxError::BadArgument("attribute mask includes bit 15"));
    }
    let mut a = TdcallArgs {
        rax: leaf::MEM_PAGE_ATTR_WR,
        rcx: page_info(gpa, size)?,
        rdx: u64::from(attrs | attr::VALID) << vm.shift(),
        r8: u64::from(mask) << vm.shift(),
        ..Default::default()
    };
    call(m, &mut a)?;
    let after = GpaAttrs(a.rdx);
    if after.vm(vm) & mask != attrs & mask {
        return Err(TdxError::Malformed(
            "TDG.MEM.PAGE.ATTR.WR: attributes after differ from those written",
        ));
    }
    Ok(after)
}

/// Metadata field identifiers for TDG.VM.RD/WR and TDG.VP.RD/WR (class code
/// bits 61:56, context bits 54:52, element size bits 33:32, field code
/// bits 23:0).
pub mod field {
    /// Context code: the TD (TDCS).
    pub const CONTEXT_TD: u64 = 1;
    /// Context code: the vCPU (TDVPS).
    pub const CONTEXT_VP: u64 = 2;

    /// Bit 63: a non-architectural field (the TDCS/TDVPS management
    /// fields).
    pub const NON_ARCH: u64 = 1 << 63;
    /// Bit 51: the write mask in R9 applies (set on VMCS writes).
    pub const WRITE_MASK_VALID: u64 = 1 << 51;

    /// A field id.
    pub const fn id(class: u64, context: u64, elem_size_code: u64, code: u64) -> u64 {
        (class << 56) | (context << 52) | (elem_size_code << 32) | code
    }

    /// TDCS: the number of L2 VMs (16 bits).
    pub const NUM_L2_VMS: u64 = NON_ARCH | id(0x10, CONTEXT_TD, 1, 5);

    /// TDVPS: L2_CTLS of VM `vm` (64 bits): bit 0 shared EPTP, bit 1 the
    /// L2's TDG.VP.VMCALL goes straight to the host, bit 2 extended #VE.
    pub const fn l2_ctls(vm: u8) -> u64 {
        NON_ARCH | id(0x20, CONTEXT_VP, 3, 0x50 + vm as u64)
    }

    /// L2_CTLS bit: the L2's TDG.VP.VMCALL goes to the host, not to the L1.
    pub const L2_CTLS_ENABLE_TDVMCALL: u64 = 1 << 1;

    /// TDVPS: a field of VM `vm`'s L2 VMCS; `vmcs_encoding` is the VMX
    /// field encoding, whose bits 14:13 give the width.
    pub const fn l2_vmcs(vm: u8, vmcs_encoding: u32) -> u64 {
        let size = match (vmcs_encoding >> 13) & 3 {
            0 => 1, // 16 bits
            2 => 2, // 32 bits
            _ => 3, // 64 bits and natural width
        };
        id(
            36 + (vm as u64 - 1) * 8,
            CONTEXT_VP,
            size,
            vmcs_encoding as u64,
        )
    }
}

/// TDG.VM.RD: a TD-scope metadata field.
pub fn vm_rd(m: &mut dyn TdxModule, field: u64) -> Result<u64, TdxError> {
    metadata_rd(m, leaf::VM_RD, field)
}

/// TDG.VM.WR: writes the bits of `mask`; returns the old value.
pub fn vm_wr(m: &mut dyn TdxModule, field: u64, value: u64, mask: u64) -> Result<u64, TdxError> {
    metadata_wr(m, leaf::VM_WR, field, value, mask)
}

/// TDG.VP.RD: a vCPU-scope metadata field (e.g. an L2 VMCS field).
pub fn vp_rd(m: &mut dyn TdxModule, field: u64) -> Result<u64, TdxError> {
    metadata_rd(m, leaf::VP_RD, field)
}

/// TDG.VP.WR: writes the bits of `mask`; returns the old value.
pub fn vp_wr(m: &mut dyn TdxModule, field: u64, value: u64, mask: u64) -> Result<u64, TdxError> {
    metadata_wr(m, leaf::VP_WR, field, value, mask)
}

/// The metadata reads (VM.RD, VP.RD): field id in RDX, value back in R8.
fn metadata_rd(m: &mut dyn TdxModule, leaf: u64, field: u64) -> Result<u64, TdxError> {
    let mut a = TdcallArgs {
        rax: leaf,
        rdx: field,
        ..Default::default()
    };
    call(m, &mut a)?;
    Ok(a.r8)
}

/// The metadata writes (VM.WR, VP.WR): field id in RDX, value in R8, write
/// mask in R9; the old value back in R8.
fn metadata_wr(
    m: &mut dyn TdxModule,
    leaf: u64,
    field: u64,
    value: u64,
    mask: u64,
) -> Result<u64, TdxError> {
    let mut a = TdcallArgs {
        rax: leaf,
        rdx: field,
        r8: value,
        r9: mask,
        ..Default::default()
    };
    call(m, &mut a)?;
    Ok(a.r8)
}

/// TDREPORT_STRUCT size and the alignment its buffer needs.
pub const TDREPORT_LEN: usize = 1024;
/// REPORTDATA size and alignment.
pub const REPORTDATA_LEN: usize = 64;

/// TDG.MR.REPORT: the module reads REPORTDATA at `reportdata_gpa` and writes
/// the TDREPORT_STRUCT at `report_gpa` (both L1-private memory).
pub fn mr_report(
    m: &mut dyn TdxModule,
    report_gpa: u64,
    reportdata_gpa: u64,
) -> Result<(), TdxError> {
    if !report_gpa.is_multiple_of(TDREPORT_LEN as u64)
        || !reportdata_gpa.is_multiple_of(REPORTDATA_LEN as u64)
    {
        return Err(TdxError::BadArgument(
            "TDREPORT or REPORTDATA buffer misaligned",
        ));
    }
    let mut a = TdcallArgs {
        rax: leaf::MR_REPORT,
        rcx: report_gpa,
        rdx: reportdata_gpa,
        r8: 0, // subtype 0
        ..Default::default()
    };
    call(m, &mut a)
}

/// What TDG.VP.ENTER came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VpEnterOutcome {
    /// The L2 exited to the L1: its VMX exit information.
    L2Exit(L2ExitInfo),
    /// The L1 got control back without an L2 exit to handle (an interrupt
    /// for the L1, or an exit the host handled): enter again.
    Resume(u32),
}

/// The exit information TDG.VP.ENTER returns on an L2 → L1 exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2ExitInfo {
    /// VMX exit reason (bits 15:0 the basic reason).
    pub reason: u32,
    /// Exit qualification (RCX).
    pub qualification: u64,
    /// Guest linear address (RDX).
    pub gla: u64,
    /// Guest physical address (R8).
    pub gpa: u64,
    /// Interruption information and error code (R9).
    pub interruption: u64,
    /// Instruction information (R11 bits 31:0).
    pub instr_info: u32,
    /// Instruction length (R11 bits 63:32), 1..=15.
    pub instr_len: u32,
    /// The L2's CPL (R12 bits 1:0).
    pub cpl: u8,
}

impl L2ExitInfo {
    /// The basic exit reason.
    pub fn basic(&self) -> u16 {
        self.reason as u16
    }
}

/// VMX basic exit reasons the L1 handles.
pub mod exit_reason {
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// HLT.
    pub const HLT: u16 = 12;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// I/O instruction.
    pub const IO: u16 = 30;
    /// RDMSR.
    pub const MSR_READ: u16 = 31;
    /// WRMSR.
    pub const MSR_WRITE: u16 = 32;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// TDCALL (0x4D).
    pub const TDCALL: u16 = 77;
}

/// Exit-reason bit 31: the VM entry failed.
const VM_ENTRY_FAILURE: u32 = 1 << 31;

/// TDG.VP.ENTER of VM `vm` with the L2 vCPU state buffer at `state_gpa`
/// (256-byte aligned, L1-private). The module loads the L2's registers from
/// the buffer and stores them back there on the L2's exit.
pub fn vp_enter(
    m: &mut dyn TdxModule,
    vm: VmIndex,
    state_gpa: u64,
) -> Result<VpEnterOutcome, TdxError> {
    if !state_gpa.is_multiple_of(256) {
        return Err(TdxError::BadArgument(
            "L2 state buffer not 256-byte aligned",
        ));
    }
    let mut a = TdcallArgs {
        rax: leaf::VP_ENTER,
        rcx: u64::from(vm.get()) << 52,
        rdx: state_gpa,
        ..Default::default()
    };
    let rax = m.tdcall(&mut a);
    match class(rax) {
        status::SUCCESS => {
            let reason = details(rax);
            if reason & VM_ENTRY_FAILURE != 0 {
                return Err(TdxError::Status(rax));
            }
            let instr_len = (a.r11 >> 32) as u32;
            let info = L2ExitInfo {
                reason,
                qualification: a.rcx,
                gla: a.rdx,
                gpa: a.r8,
                interruption: a.r9,
                instr_info: a.r11 as u32,
                instr_len,
                cpl: (a.r12 & 3) as u8,
            };
            Ok(VpEnterOutcome::L2Exit(info))
        }
        c @ (status::L2_EXIT_HOST_ROUTED_ASYNC
        | status::L2_EXIT_HOST_ROUTED_TDVMCALL
        | status::L2_EXIT_PENDING_INTERRUPT
        | status::PENDING_INTERRUPT) => Ok(VpEnterOutcome::Resume(c)),
        _ if rax & status::ERROR_BIT == 0 => Err(TdxError::Malformed(
            "TDG.VP.ENTER: unknown non-error status",
        )),
        _ => Err(decode_error(rax)),
    }
}

/// The registers of a TDG.VP.VMCALL (R10 = 0: a GHCI-standard call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcallRegs {
    /// Sub-function in, first output out.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

/// TDG.VP.VMCALL: passes R10..R15 to the host VMM. Ok when both the TDCALL
/// and the host (R10) report success; `regs` holds what the host returned.
pub fn vp_vmcall(m: &mut dyn TdxModule, regs: &mut VmcallRegs) -> Result<(), TdxError> {
    let mut a = TdcallArgs {
        rax: leaf::VP_VMCALL,
        rcx: vmcall::PASS_R10_R15,
        r10: 0,
        r11: regs.r11,
        r12: regs.r12,
        r13: regs.r13,
        r14: regs.r14,
        r15: regs.r15,
        ..Default::default()
    };
    call(m, &mut a)?;
    regs.r11 = a.r11;
    regs.r12 = a.r12;
    regs.r13 = a.r13;
    regs.r14 = a.r14;
    regs.r15 = a.r15;
    if a.r10 != vmcall::SUCCESS {
        return Err(TdxError::Vmcall(a.r10));
    }
    Ok(())
}

fn io_size_ok(size: u8) -> Result<u64, TdxError> {
    match size {
        1 | 2 | 4 => Ok(u64::from(size)),
        _ => Err(TdxError::BadArgument("I/O size is not 1, 2 or 4")),
    }
}

fn io_mask(size: u8) -> u64 {
    (1u64 << (u32::from(size) * 8)) - 1
}

/// TDG.VP.VMCALL<Instruction.IO> OUT.
pub fn io_write(m: &mut dyn TdxModule, port: u16, size: u8, value: u32) -> Result<(), TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::IO,
        r12: io_size_ok(size)?,
        r13: 1,
        r14: u64::from(port),
        r15: u64::from(value) & io_mask(size),
    };
    vp_vmcall(m, &mut r)
}

/// TDG.VP.VMCALL<Instruction.IO> IN.
pub fn io_read(m: &mut dyn TdxModule, port: u16, size: u8) -> Result<u32, TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::IO,
        r12: io_size_ok(size)?,
        r13: 0,
        r14: u64::from(port),
        r15: 0,
    };
    vp_vmcall(m, &mut r)?;
    Ok((r.r11 & io_mask(size)) as u32)
}

/// The mask of an access of `size` bytes (1, 2, 4 or 8).
pub fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

fn mmio_size_ok(size: u8) -> Result<u64, TdxError> {
    match size {
        1 | 2 | 4 | 8 => Ok(u64::from(size)),
        _ => Err(TdxError::BadArgument("MMIO size is not 1, 2, 4 or 8")),
    }
}

/// TDG.VP.VMCALL<#VE.RequestMMIO> read of `size` bytes at `gpa` (R12 size,
/// R13 = 0, R14 the address; the value comes back in R11, masked here to
/// the size).
pub fn mmio_read(m: &mut dyn TdxModule, gpa: u64, size: u8) -> Result<u64, TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::MMIO,
        r12: mmio_size_ok(size)?,
        r13: vmcall::MMIO_READ,
        r14: gpa,
        r15: 0,
    };
    vp_vmcall(m, &mut r)?;
    Ok(r.r11 & size_mask(size))
}

/// TDG.VP.VMCALL<#VE.RequestMMIO> write of the low `size` bytes of `value`
/// at `gpa` (R13 = 1, R15 the value).
pub fn mmio_write(m: &mut dyn TdxModule, gpa: u64, size: u8, value: u64) -> Result<(), TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::MMIO,
        r12: mmio_size_ok(size)?,
        r13: vmcall::MMIO_WRITE,
        r14: gpa,
        r15: value & size_mask(size),
    };
    vp_vmcall(m, &mut r)
}

/// TDG.VP.VMCALL<Instruction.RDMSR> of MSR `index` (R12); the value comes
/// back in R11.
pub fn rdmsr(m: &mut dyn TdxModule, index: u32) -> Result<u64, TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::RDMSR,
        r12: u64::from(index),
        ..Default::default()
    };
    vp_vmcall(m, &mut r)?;
    Ok(r.r11)
}

/// TDG.VP.VMCALL<Instruction.WRMSR> of `value` (R13) to MSR `index` (R12).
pub fn wrmsr(m: &mut dyn TdxModule, index: u32, value: u64) -> Result<(), TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::WRMSR,
        r12: u64::from(index),
        r13: value,
        ..Default::default()
    };
    vp_vmcall(m, &mut r)
}

/// TDG.VP.VMCALL<MapGPA> of `[gpa, gpa + len)` (`gpa` carries the SHARED bit
/// for a conversion to shared). Returns where the host stopped: `gpa + len`
/// when done, earlier on RETRY.
pub fn map_gpa(m: &mut dyn TdxModule, gpa: u64, len: u64) -> Result<u64, TdxError> {
    let end = gpa
        .checked_add(len)
        .ok_or(TdxError::BadArgument("MapGPA range wraps"))?;
    let mut a = TdcallArgs {
        rax: leaf::VP_VMCALL,
        rcx: vmcall::PASS_R10_R15,
        r11: vmcall::MAP_GPA,
        r12: gpa,
        r13: len,
        ..Default::default()
    };
    call(m, &mut a)?;
    match a.r10 {
        vmcall::SUCCESS => Ok(end),
        vmcall::RETRY if a.r11 >= gpa && a.r11 < end && a.r11.is_multiple_of(4096) => Ok(a.r11),
        vmcall::RETRY => Err(TdxError::Malformed("MapGPA RETRY outside the range")),
        code => Err(TdxError::Vmcall(code)),
    }
}

/// TDG.VP.VMCALL<ReportFatalError>: tells the host the TD cannot go on.
pub fn report_fatal_error(m: &mut dyn TdxModule, code: u64) -> Result<(), TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::REPORT_FATAL_ERROR,
        r12: code,
        ..Default::default()
    };
    vp_vmcall(m, &mut r)
}

/// TDG.VP.VMCALL<Instruction.HLT> with interrupts blocked.
pub fn halt(m: &mut dyn TdxModule) -> Result<(), TdxError> {
    let mut r = VmcallRegs {
        r11: vmcall::HLT,
        r12: 1,
        ..Default::default()
    };
    vp_vmcall(m, &mut r)
}

/// TDG.VP.VMCALL<GetQuote> on the shared buffer at `shared_gpa` (with the
/// SHARED bit) of `len` bytes (both 4 KiB aligned). A host with too many
/// requests in flight answers `Err(TdxError::Vmcall(vmcall::RETRY))`.
pub fn get_quote(m: &mut dyn TdxModule, shared_gpa: u64, len: u64) -> Result<(), TdxError> {
    if !shared_gpa.is_multiple_of(4096) || len == 0 || !len.is_multiple_of(4096) {
        return Err(TdxError::BadArgument(
            "GetQuote buffer not 4 KiB aligned or empty",
        ));
    }
    let mut r = VmcallRegs {
        r11: vmcall::GET_QUOTE,
        r12: shared_gpa,
        r13: len,
        ..Default::default()
    };
    vp_vmcall(m, &mut r)
}

/// The real instruction.
#[cfg(target_os = "none")]
pub mod hw {
    use super::{OutOfRange, TdcallArgs, TdxModule};
    use crate::mm::PhysRange;

    /// TDCALL on TDX hardware, the L1's identity map of TD private memory
    /// limited to the RAM ranges of the launch, and at most one window of
    /// L1 pages mapped at their shared alias (the quote buffer).
    pub struct HwTdx {
        ram: [PhysRange; 16],
        count: usize,
        shared: Option<(PhysRange, u64)>,
    }

    impl HwTdx {
        /// Memory accesses are allowed inside `ram` only (at most 16
        /// ranges; more are ignored).
        pub fn new(ram: &[PhysRange]) -> Self {
            let mut r = [PhysRange::new(crate::mm::PhysAddr(0), crate::mm::PhysAddr(0)); 16];
            let count = ram.len().min(16);
            r[..count].copy_from_slice(&ram[..count]);
            Self {
                ram: r,
                count,
                shared: None,
            }
        }

        /// Maps `range` (L1 pages, page aligned) at their shared alias
        /// (`gpa | shared_bit`) at linear address `va` of the kernel's live
        /// page tables, writable and not executable, for
        /// [`TdxModule::read_shared`] / [`TdxModule::write_shared`]. The
        /// pages reach the host's memory only while the L1 has converted
        /// them to shared (MapGPA); nothing else reads or writes the window.
        pub fn map_shared(
            &mut self,
            range: PhysRange,
            shared_bit: u64,
            va: u64,
        ) -> Result<(), crate::mm::paging::MapError> {
            use crate::mm::paging::{self, PteFlags};
            if self.shared.is_some() {
                return Err(paging::MapError::AlreadyMapped(crate::mm::VirtAddr(va)));
            }
            paging::map_alias_live(
                crate::mm::VirtAddr(va),
                range,
                shared_bit,
                PteFlags::WRITABLE | PteFlags::NO_EXECUTE,
            )?;
            self.shared = Some((range, va));
            Ok(())
        }

        /// The linear address of `[gpa, gpa + len)` in the shared window.
        fn shared_at(&self, gpa: u64, len: usize) -> Result<u64, OutOfRange> {
            let (range, va) = self.shared.ok_or(OutOfRange { gpa, len })?;
            let end = gpa.checked_add(len as u64).ok_or(OutOfRange { gpa, len })?;
            if range.start.0 <= gpa && end <= range.end.0 {
                Ok(va + (gpa - range.start.0))
            } else {
                Err(OutOfRange { gpa, len })
            }
        }

        fn check(&self, gpa: u64, len: usize) -> Result<(), OutOfRange> {
            let end = gpa.checked_add(len as u64).ok_or(OutOfRange { gpa, len })?;
            if gpa != 0
                && self.ram[..self.count]
                    .iter()
                    .any(|r| r.start.0 <= gpa && end <= r.end.0)
            {
                Ok(())
            } else {
                Err(OutOfRange { gpa, len })
            }
        }
    }

    /// One TDCALL with every register of `args`.
    fn tdcall_raw(args: &mut TdcallArgs) -> u64 {
        // SAFETY: TDCALL (66 0F 01 CC) transfers to the TDX module, which
        // reads and writes only the registers listed here (RBX is saved and
        // restored around it because VP.ENTER zeroes it and LLVM reserves
        // it) and the memory the leaf's operands name; every wrapper passes
        // only GPAs of L1-owned buffers that outlive the call. RBP and RSP
        // are preserved by the module.
        unsafe {
            core::arch::asm!(
                "push rbx",
                ".byte 0x66, 0x0f, 0x01, 0xcc",
                "pop rbx",
                inout("rax") args.rax,
                inout("rcx") args.rcx,
                inout("rdx") args.rdx,
                inout("rsi") args.rsi,
                inout("rdi") args.rdi,
                inout("r8") args.r8,
                inout("r9") args.r9,
                inout("r10") args.r10,
                inout("r11") args.r11,
                inout("r12") args.r12,
                inout("r13") args.r13,
                inout("r14") args.r14,
                inout("r15") args.r15,
            );
        }
        args.rax
    }

    impl TdxModule for HwTdx {
        fn tdcall(&mut self, args: &mut TdcallArgs) -> u64 {
            tdcall_raw(args)
        }

        fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
            // In a TD the module answers CPUID (or raises #VE for leaves it
            // leaves to the guest, which the kernel's exception handler reports).
            let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
            [r.eax, r.ebx, r.ecx, r.edx]
        }

        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
            self.check(gpa, buf.len())?;
            // SAFETY: the range lies in TD RAM, which the kernel identity-maps
            // (GPA = VA, private); copying bytes has no other effect.
            unsafe {
                core::ptr::copy_nonoverlapping(gpa as *const u8, buf.as_mut_ptr(), buf.len())
            };
            Ok(())
        }

        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
            self.check(gpa, data.len())?;
            // SAFETY: as in `read`; the callers write only pages the L1 owns
            // or L2 memory it was asked to write.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), gpa as *mut u8, data.len()) };
            Ok(())
        }

        fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
            let va = self.shared_at(gpa, buf.len())?;
            for (i, b) in buf.iter_mut().enumerate() {
                // SAFETY: `va + i` lies in the window `map_shared` mapped
                // (checked above); the host may write that memory at any time,
                // so every byte is read once, volatile, and only its value
                // is used.
                *b = unsafe { core::ptr::read_volatile((va + i as u64) as *const u8) };
            }
            Ok(())
        }

        fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
            let va = self.shared_at(gpa, data.len())?;
            for (i, &b) in data.iter().enumerate() {
                // SAFETY: as in `read_shared`; the window holds only the
                // quote buffer, which no Rust reference points into.
                unsafe { core::ptr::write_volatile((va + i as u64) as *mut u8, b) };
            }
            Ok(())
        }
    }
}
