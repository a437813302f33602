//! The AMD SVM virtual machine control block: field offsets (AMD64 APM
//! volume 2, appendix B) and typed access to one VMCB page.

/// Control-area offsets.
pub mod control {
    /// u32: exception intercept bitmap.
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    /// u32: intercepts INTR..SHUTDOWN.
    pub const INTERCEPT_MISC1: usize = 0x00C;
    /// u32: intercepts VMRUN..
    pub const INTERCEPT_MISC2: usize = 0x010;
    /// u64: I/O permission map.
    pub const IOPM_BASE_PA: usize = 0x040;
    /// u64: MSR permission map.
    pub const MSRPM_BASE_PA: usize = 0x048;
    /// u32: guest ASID.
    pub const GUEST_ASID: usize = 0x058;
    /// u8: TLB control.
    pub const TLB_CONTROL: usize = 0x05C;
    /// u64: virtual interrupt control.
    pub const V_INTR: usize = 0x060;
    /// u64: exit code.
    pub const EXIT_CODE: usize = 0x070;
    /// u64: exit information 1.
    pub const EXIT_INFO1: usize = 0x078;
    /// u64: exit information 2.
    pub const EXIT_INFO2: usize = 0x080;
    /// u64: nested paging enable (bit 0).
    pub const NP_ENABLE: usize = 0x090;
    /// u64: nested page-table root.
    pub const N_CR3: usize = 0x0B0;
    /// u32: clean bits.
    pub const CLEAN_BITS: usize = 0x0C0;
}

/// State-save-area offsets.
pub mod save {
    /// Segment registers: selector u16, attrib u16, limit u32, base u64.
    pub const ES: usize = 0x400;
    /// CS.
    pub const CS: usize = 0x410;
    /// SS.
    pub const SS: usize = 0x420;
    /// DS.
    pub const DS: usize = 0x430;
    /// FS.
    pub const FS: usize = 0x440;
    /// GS.
    pub const GS: usize = 0x450;
    /// GDTR (limit, base).
    pub const GDTR: usize = 0x460;
    /// LDTR.
    pub const LDTR: usize = 0x470;
    /// IDTR (limit, base).
    pub const IDTR: usize = 0x480;
    /// TR.
    pub const TR: usize = 0x490;
    /// u8 CPL.
    pub const CPL: usize = 0x4CB;
    /// u64 EFER.
    pub const EFER: usize = 0x4D0;
    /// u64 CR4.
    pub const CR4: usize = 0x548;
    /// u64 CR3.
    pub const CR3: usize = 0x550;
    /// u64 CR0.
    pub const CR0: usize = 0x558;
    /// u64 DR7.
    pub const DR7: usize = 0x560;
    /// u64 DR6.
    pub const DR6: usize = 0x568;
    /// u64 RFLAGS.
    pub const RFLAGS: usize = 0x570;
    /// u64 RIP.
    pub const RIP: usize = 0x578;
    /// u64 RSP.
    pub const RSP: usize = 0x5D8;
    /// u64 RAX.
    pub const RAX: usize = 0x5F8;
    /// u64 guest PAT.
    pub const G_PAT: usize = 0x668;
}

/// Exit codes the SVSM handles by name.
pub mod exit {
    /// Physical interrupt.
    pub const INTR: u64 = 0x60;
    /// NMI.
    pub const NMI: u64 = 0x61;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// IN/OUT.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u64 = 0x7F;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x81;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// First exception exit (0x40 + vector).
    pub const EXCEPTION_BASE: u64 = 0x40;
    /// VMRUN found the guest state invalid (QEMU writes the low 32 bits).
    pub const INVALID: u64 = 0xFFFF_FFFF;
}

/// Intercept bits of [`control::INTERCEPT_MISC1`].
pub mod misc1 {
    /// Physical interrupts.
    pub const INTR: u32 = 1 << 0;
    /// NMI.
    pub const NMI: u32 = 1 << 1;
    /// SMI.
    pub const SMI: u32 = 1 << 2;
    /// INIT.
    pub const INIT: u32 = 1 << 3;
    /// INVD.
    pub const INVD: u32 = 1 << 22;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// IN/OUT through the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR through the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Task switches.
    pub const TASK_SWITCH: u32 = 1 << 29;
    /// Shutdown.
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of [`control::INTERCEPT_MISC2`].
pub mod misc2 {
    /// VMRUN (must be set).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
}

/// A segment register in the VMCB's packed form.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes: descriptor bits 40-47 in 7:0, bits 52-55 in 11:8.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// One 4 KiB VMCB, owned by the SVSM (never mapped into a guest).
pub struct Vmcb {
    page: &'static mut [u8; 4096],
    pa: u64,
}

impl Vmcb {
    /// Wraps a zeroed, identity-mapped page that only this value will use.
    ///
    /// # Safety
    /// `pa` must be a page taken from the frame allocator for this VMCB alone.
    pub unsafe fn from_frame(pa: u64) -> Self {
        // SAFETY: the caller hands over exclusive ownership of an
        // identity-mapped page.
        let page = unsafe { &mut *(pa as *mut [u8; 4096]) };
        Self { page, pa }
    }

    /// The VMCB's physical address (the VMRUN operand).
    pub fn pa(&self) -> u64 {
        self.pa
    }

    /// Reads a u64 field.
    pub fn read_u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.page[off..off + 8].try_into().expect("8 bytes"))
    }

    /// Writes a u64 field.
    pub fn write_u64(&mut self, off: usize, v: u64) {
        self.page[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Writes a u32 field.
    pub fn write_u32(&mut self, off: usize, v: u32) {
        self.page[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Writes a u8 field.
    pub fn write_u8(&mut self, off: usize, v: u8) {
        self.page[off] = v;
    }

    /// Writes a segment register.
    pub fn write_segment(&mut self, off: usize, s: Segment) {
        self.page[off..off + 2].copy_from_slice(&s.selector.to_le_bytes());
        self.page[off + 2..off + 4].copy_from_slice(&s.attrib.to_le_bytes());
        self.page[off + 4..off + 8].copy_from_slice(&s.limit.to_le_bytes());
        self.page[off + 8..off + 16].copy_from_slice(&s.base.to_le_bytes());
    }
}
