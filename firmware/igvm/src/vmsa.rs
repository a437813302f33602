//! Initial register states as SEV-SNP VMSAs (AMD APM vol. 2, table B-4):
//! the SVSM's at VMPL0 and the guest firmware's at VMPL2.
//!
//! Values follow what QEMU with KVM puts in a VMSA it measures at launch
//! (EFER.SVME set, CR4.MCE set, RDX = the CPUID family/model/stepping
//! signature, x87/SSE control words at their reset values), so the page the
//! builder writes is the page the PSP measures.

use igvm::snp_defs::{SevFeatures, SevSelector, SevVmsa};
use zerocopy::FromZeros;

/// PAT reset value (APM vol. 2, A.3).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// EFER.SVME: required in every SEV-ES/SNP VMSA.
pub const EFER_SVME: u64 = 1 << 12;
/// CR0.PE | CR0.ET: 32-bit protected mode, paging off.
pub const CR0_PROTECTED: u64 = 0x11;
/// CR0.ET alone: real mode at reset.
pub const CR0_RESET: u64 = 0x10;
/// CR4.MCE, which KVM sets.
pub const CR4_MCE: u64 = 0x40;

/// The CPUID signature (family/model/stepping) QEMU's `-cpu EPYC-v4` reports.
pub const EPYC_V4_SIGNATURE: u32 = cpu_signature(23, 1, 2);

/// CPUID Fn0000_0001 EAX from family, model and stepping (AMD pub. 25481).
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

fn seg(selector: u16, attrib: u16, limit: u32, base: u64) -> SevSelector {
    SevSelector {
        selector,
        attrib,
        limit,
        base,
    }
}

fn common(vcpu_signature: u32) -> SevVmsa {
    let mut v = SevVmsa::new_zeroed();
    v.gdtr = seg(0, 0, 0xffff, 0);
    v.idtr = seg(0, 0, 0xffff, 0);
    v.ldtr = seg(0, 0x82, 0xffff, 0);
    v.tr = seg(0, 0x8b, 0xffff, 0);
    v.efer = EFER_SVME;
    v.cr4 = CR4_MCE;
    v.dr7 = 0x400;
    v.dr6 = 0xffff_0ff0;
    v.rflags = 0x2;
    v.pat = PAT_RESET;
    v.rdx = u64::from(vcpu_signature);
    v.sev_features = SevFeatures::new().with_snp(true);
    v.xcr0 = 0x1;
    v.mxcsr = 0x1f80;
    v.x87_fcw = 0x37f;
    v
}

/// The SVSM's VMPL0 state: 32-bit flat protected mode, paging off, at the
/// kernel's 32-bit entry, EBX = the launch-info page. Long mode cannot be
/// entered without page tables the image would have to carry; the kernel's
/// entry already builds its own, as it does under PVH.
pub fn svsm_entry(entry: u32, launch_info_gpa: u32, vcpu_signature: u32) -> SevVmsa {
    let mut v = common(vcpu_signature);
    let code = seg(0x08, 0xc9b, 0xffff_ffff, 0);
    let data = seg(0x10, 0xc93, 0xffff_ffff, 0);
    v.cs = code;
    v.ds = data;
    v.es = data;
    v.ss = data;
    v.fs = data;
    v.gs = seg(0, 0x93, 0xffff, 0);
    v.cr0 = CR0_PROTECTED;
    v.rip = u64::from(entry);
    v.rbx = u64::from(launch_info_gpa);
    v.vmpl = 0;
    v
}

/// The guest firmware's state at VMPL2: the x86 reset state (real mode,
/// CS base 0xffff0000, IP 0xfff0, so the first fetch is at 0xfffffff0).
pub fn guest_reset(vmpl: u8, vcpu_signature: u32) -> SevVmsa {
    reset_state(0xffff_fff0, vmpl, vcpu_signature)
}

/// A real-mode reset state whose first fetch is at `eip` (CS base = the
/// upper 16 bits, IP = the lower 16), as KVM builds it for a vCPU that
/// starts at OVMF's reset vector or SEV-ES AP reset address.
pub fn reset_state(eip: u32, vmpl: u8, vcpu_signature: u32) -> SevVmsa {
    let mut v = common(vcpu_signature);
    let data = seg(0, 0x93, 0xffff, 0);
    v.cs = seg(0xf000, 0x9b, 0xffff, u64::from(eip & 0xffff_0000));
    v.ds = data;
    v.es = data;
    v.ss = data;
    v.fs = data;
    v.gs = data;
    v.cr0 = CR0_RESET;
    v.rip = u64::from(eip & 0xffff);
    v.vmpl = vmpl;
    v
}
