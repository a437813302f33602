//! The VMSA (AMD APM vol. 2, table B-4, SEV-ES/SNP save area): the offsets
//! the SVSM reads and writes, the checks a VMSA must pass before the SVSM
//! turns its page into a VMSA for the guest's VMPL (the IGVM guest-context
//! page at boot, the guest's own pages in CREATE_VCPU), and the registers of
//! an SVSM call.

use crate::platform::GuestRegisters;

/// Bytes in a VMSA page.
pub const VMSA_SIZE: usize = 4096;

/// Byte offsets (table B-4).
pub mod offset {
    /// Segment CS (selector u16, attrib u16, limit u32, base u64).
    pub const CS: usize = 0x010;
    /// u8 VMPL.
    pub const VMPL: usize = 0x0CA;
    /// u8 CPL.
    pub const CPL: usize = 0x0CB;
    /// u64 EFER.
    pub const EFER: usize = 0x0D0;
    /// u64 CR4.
    pub const CR4: usize = 0x148;
    /// u64 CR0.
    pub const CR0: usize = 0x158;
    /// u64 RFLAGS.
    pub const RFLAGS: usize = 0x170;
    /// u64 RIP.
    pub const RIP: usize = 0x178;
    /// u64 RSP.
    pub const RSP: usize = 0x1D8;
    /// u64 RAX.
    pub const RAX: usize = 0x1F8;
    /// u64 RCX.
    pub const RCX: usize = 0x308;
    /// u64 RDX.
    pub const RDX: usize = 0x310;
    /// u64 RBX.
    pub const RBX: usize = 0x318;
    /// u64 R8.
    pub const R8: usize = 0x340;
    /// u64 R9.
    pub const R9: usize = 0x348;
    /// u64 EXITINFO1 of the last automatic exit.
    pub const EXIT_INFO1: usize = 0x390;
    /// u64 EXITINFO2.
    pub const EXIT_INFO2: usize = 0x398;
    /// u64 SEV_FEATURES.
    pub const SEV_FEATURES: usize = 0x3B0;
    /// u64 guest exit code (why this VMSA last stopped).
    pub const GUEST_EXIT_CODE: usize = 0x3C0;
    /// u64 XCR0.
    pub const XCR0: usize = 0x3E8;
}

/// EFER.SVME: a VMSA runs only while it is set. The SVSM clears it while it
/// works on a guest VMSA so that nothing runs it meanwhile.
pub const EFER_SVME: u64 = 1 << 12;

/// SEV_FEATURES bits.
pub mod feature {
    /// SNP active (must be set).
    pub const SNP: u64 = 1 << 0;
    /// Virtual TOM.
    pub const VTOM: u64 = 1 << 1;
    /// #VC reflected to the hypervisor.
    pub const REFLECT_VC: u64 = 1 << 2;
    /// Restricted injection.
    pub const RESTRICTED_INJECTION: u64 = 1 << 3;
    /// Alternate injection.
    pub const ALTERNATE_INJECTION: u64 = 1 << 4;
    /// Debug register swap.
    pub const DEBUG_SWAP: u64 = 1 << 5;
    /// Prevent host IBS.
    pub const PREVENT_HOST_IBS: u64 = 1 << 6;
    /// BTB isolation.
    pub const BTB_ISOLATION: u64 = 1 << 7;
    /// Secure TSC.
    pub const SECURE_TSC: u64 = 1 << 9;
    /// VMSA register protection.
    pub const VMSA_REG_PROT: u64 = 1 << 14;
}

/// Features a guest VMSA may carry: the hardening ones. vTOM (this SVSM
/// configures none), ReflectVC (the hypervisor would see the guest's #VC
/// state) and any unknown bit are refused.
pub const ALLOWED_FEATURES: u64 = feature::SNP
    | feature::RESTRICTED_INJECTION
    | feature::ALTERNATE_INJECTION
    | feature::DEBUG_SWAP
    | feature::PREVENT_HOST_IBS
    | feature::BTB_ISOLATION
    | feature::SECURE_TSC
    | feature::VMSA_REG_PROT;

/// Why a VMSA was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmsaError {
    /// Its VMPL field is not the guest's VMPL.
    Vmpl(u8),
    /// SEV_FEATURES lacks SNP or carries a refused bit.
    Features(u64),
    /// EFER.SVME is clear.
    NotRunnable,
}

impl core::fmt::Display for VmsaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Vmpl(v) => write!(f, "VMSA is for VMPL {v}, not the guest's"),
            Self::Features(x) => write!(f, "VMSA SEV_FEATURES {x:#x} refused"),
            Self::NotRunnable => write!(f, "VMSA has EFER.SVME clear"),
        }
    }
}

/// A private copy of a VMSA page.
#[derive(Clone)]
pub struct Vmsa(pub [u8; VMSA_SIZE]);

impl Vmsa {
    /// Reads the u64 at `at`.
    pub fn get(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }

    /// Writes the u64 at `at`.
    pub fn set(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The VMPL field.
    pub fn vmpl(&self) -> u8 {
        self.0[offset::VMPL]
    }

    /// CS selector and base.
    pub fn cs(&self) -> (u16, u64) {
        (
            u16::from_le_bytes([self.0[offset::CS], self.0[offset::CS + 1]]),
            self.get(offset::CS + 8),
        )
    }

    /// Checks a VMSA that is to run the guest at `guest_vmpl`.
    pub fn check_guest(&self, guest_vmpl: u8) -> Result<(), VmsaError> {
        if self.vmpl() != guest_vmpl {
            return Err(VmsaError::Vmpl(self.vmpl()));
        }
        let features = self.get(offset::SEV_FEATURES);
        if features & feature::SNP == 0 || features & !ALLOWED_FEATURES != 0 {
            return Err(VmsaError::Features(features));
        }
        if self.get(offset::EFER) & EFER_SVME == 0 {
            return Err(VmsaError::NotRunnable);
        }
        Ok(())
    }

    /// The guest firmware's first VMSA from the IGVM guest-context page:
    /// checked, then handed over unchanged except that the guest exit code
    /// starts at 0.
    pub fn from_guest_context(page: &[u8; VMSA_SIZE], guest_vmpl: u8) -> Result<Self, VmsaError> {
        let mut v = Self(*page);
        v.check_guest(guest_vmpl)?;
        v.set(offset::GUEST_EXIT_CODE, 0);
        Ok(v)
    }

    /// The call registers.
    pub fn registers(&self) -> GuestRegisters {
        GuestRegisters {
            rax: self.get(offset::RAX),
            rcx: self.get(offset::RCX),
            rdx: self.get(offset::RDX),
            r8: self.get(offset::R8),
            r9: self.get(offset::R9),
        }
    }

    /// Writes the call registers back.
    pub fn set_registers(&mut self, regs: &GuestRegisters) {
        self.set(offset::RAX, regs.rax);
        self.set(offset::RCX, regs.rcx);
        self.set(offset::RDX, regs.rdx);
        self.set(offset::R8, regs.r8);
        self.set(offset::R9, regs.r9);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The guest-context page `rivet-igvm` writes (firmware/igvm/src/vmsa.rs
    /// `guest_reset(2, EPYC-v4)`), field by field.
    pub fn igvm_guest_context() -> [u8; VMSA_SIZE] {
        let mut v = Vmsa([0; VMSA_SIZE]);
        let seg = |v: &mut Vmsa, at: usize, sel: u16, attr: u16, limit: u32, base: u64| {
            v.0[at..at + 2].copy_from_slice(&sel.to_le_bytes());
            v.0[at + 2..at + 4].copy_from_slice(&attr.to_le_bytes());
            v.0[at + 4..at + 8].copy_from_slice(&limit.to_le_bytes());
            v.set(at + 8, base);
        };
        for at in [0x00, 0x20, 0x30, 0x40, 0x50] {
            seg(&mut v, at, 0, 0x93, 0xffff, 0);
        }
        seg(&mut v, offset::CS, 0xf000, 0x9b, 0xffff, 0xffff_0000);
        seg(&mut v, 0x60, 0, 0, 0xffff, 0); // GDTR
        seg(&mut v, 0x70, 0, 0x82, 0xffff, 0); // LDTR
        seg(&mut v, 0x80, 0, 0, 0xffff, 0); // IDTR
        seg(&mut v, 0x90, 0, 0x8b, 0xffff, 0); // TR
        v.0[offset::VMPL] = 2;
        v.set(offset::EFER, EFER_SVME);
        v.set(offset::CR4, 0x40);
        v.set(offset::CR0, 0x10);
        v.set(0x160, 0x400); // DR7
        v.set(0x168, 0xffff_0ff0); // DR6
        v.set(offset::RFLAGS, 2);
        v.set(offset::RIP, 0xfff0);
        v.set(0x268, 0x0007_0406_0007_0406); // PAT
        v.set(offset::RDX, 0x800f12);
        v.set(offset::SEV_FEATURES, feature::SNP);
        v.set(offset::XCR0, 1);
        v.0[0x408..0x40C].copy_from_slice(&0x1f80u32.to_le_bytes());
        v.0[0x410..0x412].copy_from_slice(&0x37fu16.to_le_bytes());
        v.0
    }

    #[test]
    fn guest_vmsa_from_the_igvm_guest_context() {
        let v = Vmsa::from_guest_context(&igvm_guest_context(), 2).unwrap();
        assert_eq!(v.vmpl(), 2);
        assert_eq!(v.cs(), (0xf000, 0xffff_0000));
        assert_eq!(v.get(offset::RIP), 0xfff0);
        assert_eq!(v.get(offset::CR0), 0x10);
        assert_eq!(v.get(offset::SEV_FEATURES), feature::SNP);
        assert_eq!(v.get(offset::RDX), 0x800f12);
        assert_eq!(v.0[..], igvm_guest_context()[..]);
    }

    #[test]
    fn refuses_wrong_vmpl_features_and_unrunnable() {
        let page = igvm_guest_context();
        assert_eq!(
            Vmsa::from_guest_context(&page, 1).err(),
            Some(VmsaError::Vmpl(2))
        );
        let mut v = Vmsa(page);
        v.set(offset::SEV_FEATURES, 0);
        assert_eq!(v.check_guest(2), Err(VmsaError::Features(0)));
        v.set(offset::SEV_FEATURES, feature::SNP | feature::VTOM);
        assert_eq!(v.check_guest(2), Err(VmsaError::Features(3)));
        v.set(offset::SEV_FEATURES, feature::SNP | feature::REFLECT_VC);
        assert!(v.check_guest(2).is_err());
        v.set(
            offset::SEV_FEATURES,
            feature::SNP | feature::RESTRICTED_INJECTION,
        );
        assert_eq!(v.check_guest(2), Ok(()));
        v.set(offset::EFER, 0);
        assert_eq!(v.check_guest(2), Err(VmsaError::NotRunnable));
    }

    #[test]
    fn call_registers_round_trip() {
        let mut v = Vmsa(igvm_guest_context());
        let regs = GuestRegisters {
            rax: 1,
            rcx: 2,
            rdx: 3,
            r8: 4,
            r9: 5,
        };
        v.set_registers(&regs);
        assert_eq!(v.registers(), regs);
        assert_eq!(v.get(0x1F8), 1);
        assert_eq!(v.get(0x348), 5);
    }
}
