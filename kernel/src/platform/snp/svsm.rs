//! The SVSM side of SNP, above the hardware traits: the GHCB, the guest's
//! VMPL, its VMSAs (the boot vCPU's from the IGVM guest-context page, the
//! APs' from CREATE_VCPU), the run loop through SNP_RUN_VMPL, the guest's
//! memory as the protocols see it, and the guest-request transport.
//!
//! Everything here is generic over [`SnpHw`], so the host tests drive it
//! against the model machine (`snp::model`): a model hypervisor, RMP and
//! memory.

use alloc::vec::Vec;

use super::ghcb::{self, GhcbError, GhcbPage, Hypervisor, exit_code, offset};
use super::guest_request::{
    GuestRequestTransport, PAGE_SIZE as GR_PAGE, TransportError, VMM_ERR_INVALID_LEN,
};
use super::rmp::{self, PscChannel, Rmp, RmpError, perm};
use super::secrets::{self, SECRETS_PAGE_SIZE, SecretsPage, SvsmFields, Vmpck};
use super::vc::CpuidTable;
use super::vmsa::{self, EFER_SVME, Vmsa, VmsaError};
use crate::boot::launch_info::{LaunchInfo, RegionKind};
use crate::mm::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysRange};
use crate::platform::{GuestExit, GuestRegisters};
use crate::protocols::{SvsmError, result};

/// The page could not be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable(pub u64);

/// Memory access as the SVSM has it: private (C-bit set, validated pages)
/// and shared (C-bit clear, the hypervisor's pages).
pub trait Memory {
    /// Copies private memory at `gpa` out.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable>;
    /// Copies into private memory at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable>;
    /// Copies a shared page out.
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable>;
    /// Copies into a shared page.
    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable>;
}

/// Everything the SVSM needs from the machine.
pub trait SnpHw: Hypervisor + Rmp + Memory {}
impl<T: Hypervisor + Rmp + Memory> SnpHw for T {}

/// SNP_AP_CREATION requests (SW_EXITINFO1 bits 15:0).
pub mod ap_request {
    /// Create the vCPU, run it now.
    pub const CREATE: u64 = 1;
    /// Destroy the vCPU's VMSA at that VMPL.
    pub const DESTROY: u64 = 2;
}

/// Guest exit codes the loop tells apart (SVM exit codes).
pub mod guest_exit {
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u64 = 0x7F;
}

/// Why the SVSM side failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnpError {
    /// The hypervisor failed or garbled a GHCB exchange.
    Ghcb(GhcbError),
    /// PVALIDATE/RMPADJUST or a page-state change failed.
    Rmp(RmpError),
    /// A VMSA was refused.
    Vmsa(VmsaError),
    /// A page the SVSM needed could not be read or written.
    Memory(u64),
    /// A page that must not be 2 MiB aligned (a VMSA) is, or another
    /// placement rule is broken.
    Placement(u64),
    /// The image lacks something the guest's launch needs.
    Launch(&'static str),
    /// No guest VMSA exists yet.
    NoGuest,
}

impl core::fmt::Display for SnpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Ghcb(e) => write!(f, "{e}"),
            Self::Rmp(e) => write!(f, "{e}"),
            Self::Vmsa(e) => write!(f, "{e}"),
            Self::Memory(a) => write!(f, "page {a:#x} unreachable"),
            Self::Placement(a) => write!(f, "page {a:#x} badly placed"),
            Self::Launch(what) => write!(f, "launch: {what}"),
            Self::NoGuest => write!(f, "no guest VMSA"),
        }
    }
}

impl From<GhcbError> for SnpError {
    fn from(e: GhcbError) -> Self {
        Self::Ghcb(e)
    }
}

impl From<RmpError> for SnpError {
    fn from(e: RmpError) -> Self {
        Self::Rmp(e)
    }
}

/// A guest vCPU the SVSM knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestVcpu {
    /// Its APIC ID.
    pub apic_id: u32,
    /// Its VMSA page.
    pub vmsa: u64,
    /// Its Calling Area.
    pub caa: u64,
    /// Whether the SVSM allocated the VMSA page (the boot vCPU's) or the
    /// guest handed it over (CREATE_VCPU).
    pub svsm_page: bool,
}

/// The SVSM's SNP state.
pub struct SnpCore<H: SnpHw> {
    /// The machine.
    pub hw: H,
    ghcb: &'static mut GhcbPage,
    ghcb_gpa: Option<u64>,
    /// The CPUID page's private copy.
    pub cpuid: CpuidTable,
    /// The guest's VMPL.
    pub guest_vmpl: u8,
    /// The SVSM's memory (the guest may not name it).
    pub svsm: PhysRange,
    /// The guest's RAM.
    pub guest_ram: Vec<PhysRange>,
    /// Guest vCPUs; the boot vCPU first.
    pub vcpus: Vec<GuestVcpu>,
    /// The boot vCPU's registers are written back before the next run
    /// (only after an exit gave them to the SVSM).
    writeback: bool,
}

impl<H: SnpHw> SnpCore<H> {
    /// A core over `hw`, using `ghcb` (at `ghcb_gpa` once registered).
    pub fn new(
        hw: H,
        ghcb: &'static mut GhcbPage,
        cpuid: CpuidTable,
        guest_vmpl: u8,
        svsm: PhysRange,
        guest_ram: Vec<PhysRange>,
    ) -> Self {
        Self {
            hw,
            ghcb,
            ghcb_gpa: None,
            cpuid,
            guest_vmpl,
            svsm,
            guest_ram,
            vcpus: Vec::new(),
            writeback: false,
        }
    }

    /// The GHCB page (for the #VC handler).
    pub fn ghcb_mut(&mut self) -> (&mut H, &mut GhcbPage) {
        (&mut self.hw, self.ghcb)
    }

    /// One #VC of the SVSM itself (see `vc::handle`); the GHCB MSR is
    /// restored afterwards.
    pub fn handle_vc(
        &mut self,
        code: u64,
        insn: &[u8],
        regs: &mut super::vc::VcRegs,
        ports: &[core::ops::Range<u16>],
    ) -> Result<usize, super::vc::VcError> {
        if let Some(gpa) = self.ghcb_gpa {
            self.hw.write_msr(gpa);
        }
        super::vc::handle(
            &mut self.hw,
            self.ghcb,
            &self.cpuid,
            ports,
            code,
            insn,
            regs,
        )
    }

    /// Registers the GHCB page, which the caller has made shared, at `gpa`.
    pub fn register_ghcb(&mut self, gpa: u64) -> Result<(), SnpError> {
        ghcb::register_ghcb(&mut self.hw, gpa, self.ghcb)?;
        self.ghcb_gpa = Some(gpa);
        self.hw.write_msr(gpa);
        Ok(())
    }

    fn channel(&mut self) -> (&mut H, PscChannel<'_>) {
        match self.ghcb_gpa {
            Some(gpa) => (
                &mut self.hw,
                PscChannel::Ghcb(self.ghcb, gpa + offset::SHARED_BUFFER as u64),
            ),
            None => (&mut self.hw, PscChannel::Msr(self.ghcb)),
        }
    }

    fn restore_msr(&mut self) {
        if let Some(gpa) = self.ghcb_gpa {
            self.hw.write_msr(gpa);
        }
    }

    /// One byte to an I/O port through the GHCB IOIO event (the console).
    pub fn port_out8(&mut self, port: u16, value: u8) -> Result<(), SnpError> {
        let info1 = (u64::from(port) << 16) | (1 << 9) | (1 << 4);
        self.nae(exit_code::IOIO, info1, 0, |g| {
            g.set(offset::RAX, u64::from(value))
        })
    }

    /// Asks the hypervisor to end the VM (MSR protocol, reason set 0).
    pub fn terminate(&mut self, reason: u8) {
        ghcb::terminate_request(&mut self.hw, reason, self.ghcb);
    }

    /// Makes `range` validated private memory of VMPL0.
    pub fn validate(&mut self, range: PhysRange) -> Result<(), SnpError> {
        let (hw, mut ch) = self.channel();
        let r = rmp::validate_range(hw, &mut ch, range);
        self.restore_msr();
        Ok(r?)
    }

    /// Gives `range` back to the hypervisor.
    pub fn invalidate(&mut self, range: PhysRange) -> Result<(), SnpError> {
        let (hw, mut ch) = self.channel();
        let r = rmp::invalidate_range(hw, &mut ch, range);
        self.restore_msr();
        Ok(r?)
    }

    /// Gives the guest's VMPL full access to `range` (validated pages).
    pub fn grant_guest(&mut self, range: PhysRange) -> Result<(), SnpError> {
        Ok(rmp::grant(&mut self.hw, range, self.guest_vmpl, perm::ALL)?)
    }

    fn nae(
        &mut self,
        code: u64,
        info1: u64,
        info2: u64,
        setup: impl FnOnce(&mut GhcbPage),
    ) -> Result<(), SnpError> {
        let Some(gpa) = self.ghcb_gpa else {
            return Err(SnpError::Ghcb(GhcbError::NoGhcb));
        };
        self.hw.write_msr(gpa);
        ghcb::nae(&mut self.hw, self.ghcb, code, info1, info2, setup)?;
        Ok(())
    }

    fn read_vmsa(&self, gpa: u64) -> Result<Vmsa, SnpError> {
        let mut v = Vmsa([0; vmsa::VMSA_SIZE]);
        self.hw
            .read(gpa, &mut v.0)
            .map_err(|_| SnpError::Memory(gpa))?;
        Ok(v)
    }

    fn write_vmsa(&mut self, gpa: u64, v: &Vmsa) -> Result<(), SnpError> {
        self.hw.write(gpa, &v.0).map_err(|_| SnpError::Memory(gpa))
    }

    fn set_runnable(&mut self, gpa: u64, runnable: bool) -> Result<(), SnpError> {
        let mut efer = [0u8; 8];
        let at = gpa + vmsa::offset::EFER as u64;
        self.hw
            .read(at, &mut efer)
            .map_err(|_| SnpError::Memory(gpa))?;
        let mut v = u64::from_le_bytes(efer);
        if runnable {
            v |= EFER_SVME;
        } else {
            v &= !EFER_SVME;
        }
        self.hw
            .write(at, &v.to_le_bytes())
            .map_err(|_| SnpError::Memory(gpa))
    }

    fn ap_creation(
        &mut self,
        request: u64,
        apic_id: u32,
        vmsa: u64,
        features: u64,
    ) -> Result<(), SnpError> {
        let info1 = (u64::from(apic_id) << 32) | (u64::from(self.guest_vmpl) << 16) | request;
        self.nae(exit_code::SNP_AP_CREATION, info1, vmsa, |g| {
            g.set(offset::RAX, features);
        })
    }

    /// The boot vCPU: the IGVM guest-context page at `context` is copied
    /// once, checked (VMPL, SEV features, EFER.SVME), written into
    /// `vmsa_page` (SVSM memory, validated, not 2 MiB aligned), which
    /// RMPADJUST makes a VMSA for the guest's VMPL; the hypervisor learns
    /// of it through SNP_AP_CREATION. `caa` is the boot vCPU's Calling Area.
    pub fn create_boot_vcpu(
        &mut self,
        context: u64,
        vmsa_page: u64,
        caa: u64,
    ) -> Result<(), SnpError> {
        if vmsa_page.is_multiple_of(LARGE_PAGE_SIZE) || !vmsa_page.is_multiple_of(PAGE_SIZE) {
            return Err(SnpError::Placement(vmsa_page));
        }
        let mut page = [0u8; vmsa::VMSA_SIZE];
        self.hw
            .read(context, &mut page)
            .map_err(|_| SnpError::Memory(context))?;
        let mut v = Vmsa::from_guest_context(&page, self.guest_vmpl).map_err(SnpError::Vmsa)?;
        let features = v.get(vmsa::offset::SEV_FEATURES);
        // Not runnable until the loop runs it.
        v.set(vmsa::offset::EFER, v.get(vmsa::offset::EFER) & !EFER_SVME);
        self.write_vmsa(vmsa_page, &v)?;
        rmp::set_vmsa(&mut self.hw, vmsa_page, self.guest_vmpl, true, 0)?;
        self.ap_creation(ap_request::CREATE, 0, vmsa_page, features)?;
        self.vcpus.insert(
            0,
            GuestVcpu {
                apic_id: 0,
                vmsa: vmsa_page,
                caa,
                svsm_page: true,
            },
        );
        Ok(())
    }

    /// Takes VMPCK0 out of the secrets page at `gpa` for the SVSM's
    /// guest-request channel and wipes it in the page, so that the channel
    /// holds the only copy.
    pub fn take_vmpck0(&mut self, gpa: u64) -> Result<Vmpck, SnpError> {
        let mut page = alloc::boxed::Box::new([0u8; SECRETS_PAGE_SIZE]);
        self.hw
            .read(gpa, &mut page[..])
            .map_err(|_| SnpError::Memory(gpa))?;
        let mut secrets = SecretsPage::copy_from(&page)
            .map_err(|_| SnpError::Launch("secrets page version not supported"))?;
        let key = secrets
            .take_vmpck(0)
            .map_err(|_| SnpError::Launch("no VMPCK0"))?;
        secrets::wipe_vmpck_in_page(0, &mut page).map_err(|_| SnpError::Launch("secrets page"))?;
        self.hw
            .write(gpa, &page[..])
            .map_err(|_| SnpError::Memory(gpa))?;
        Ok(key)
    }

    /// Prepares the guest firmware's launch from the image: its copy of the
    /// secrets page (its VMPCKs below its VMPL wiped, the SVSM fields
    /// filled) in the firmware's SECRETS region, the CPUID page in its CPUID
    /// region, VMPL access to the firmware and its metadata regions, and the
    /// boot vCPU in `vmsa_page`. Returns the guest's Calling Area.
    pub fn start_guest(&mut self, info: &LaunchInfo, vmsa_page: u64) -> Result<u64, SnpError> {
        let region = |kind| info.firmware_region(kind).map(|r| r.range.start.0);
        let caa = region(RegionKind::SvsmCaa)
            .ok_or(SnpError::Launch("the firmware names no SVSM Calling Area"))?;
        let guest_secrets = region(RegionKind::Secrets)
            .ok_or(SnpError::Launch("the firmware names no secrets page"))?;
        let firmware = info
            .firmware
            .ok_or(SnpError::Launch("no guest firmware in the image"))?;
        let context = info
            .guest_context
            .ok_or(SnpError::Launch("no guest context page"))?;
        let secrets_gpa = info.secrets.ok_or(SnpError::Launch("no secrets page"))?;
        let cpuid_gpa = info.cpuid.ok_or(SnpError::Launch("no CPUID page"))?;

        let mut page = alloc::boxed::Box::new([0u8; SECRETS_PAGE_SIZE]);
        self.hw
            .read(secrets_gpa, &mut page[..])
            .map_err(|_| SnpError::Memory(secrets_gpa))?;
        let fields = SvsmFields {
            base: self.svsm.start.0,
            size: self.svsm.len(),
            caa,
            max_version: 1,
            guest_vmpl: self.guest_vmpl,
        };
        secrets::prepare_guest_page(&mut page, &fields)
            .map_err(|_| SnpError::Launch("guest secrets page"))?;
        self.hw
            .write(guest_secrets, &page[..])
            .map_err(|_| SnpError::Memory(guest_secrets))?;
        if let Some(cpuid_region) = region(RegionKind::Cpuid) {
            let mut p = [0u8; 4096];
            self.hw
                .read(cpuid_gpa, &mut p)
                .map_err(|_| SnpError::Memory(cpuid_gpa))?;
            self.hw
                .write(cpuid_region, &p)
                .map_err(|_| SnpError::Memory(cpuid_region))?;
        }
        let grants: Vec<PhysRange> = info
            .firmware_regions()
            .map(|r| r.range)
            .chain([firmware])
            .collect();
        for r in grants {
            self.grant_guest(r)?;
        }
        self.hw
            .write(vmsa_page, &[0; vmsa::VMSA_SIZE])
            .map_err(|_| SnpError::Memory(vmsa_page))?;
        self.create_boot_vcpu(context, vmsa_page, caa)?;
        Ok(caa)
    }

    /// Runs the boot vCPU until it exits to VMPL0. Registers given to the
    /// SVSM at the previous exit are written back first.
    pub fn run(&mut self, regs: &mut GuestRegisters) -> Result<GuestExit, SnpError> {
        let vmsa_gpa = self.vcpus.first().ok_or(SnpError::NoGuest)?.vmsa;
        if self.writeback {
            let mut v = self.read_vmsa(vmsa_gpa)?;
            v.set_registers(regs);
            self.write_vmsa(vmsa_gpa, &v)?;
        }
        self.set_runnable(vmsa_gpa, true)?;
        let vmpl = u64::from(self.guest_vmpl);
        let ran = self.nae(exit_code::SNP_RUN_VMPL, vmpl, 0, |_| {});
        // Whatever happened, the VMSA is not runnable while the SVSM holds it.
        self.set_runnable(vmsa_gpa, false)?;
        ran?;
        let v = self.read_vmsa(vmsa_gpa)?;
        let code = v.get(vmsa::offset::GUEST_EXIT_CODE);
        let exit = match code {
            exit_code::VMGEXIT => {
                *regs = v.registers();
                self.writeback = true;
                return Ok(GuestExit::SvsmCall);
            }
            guest_exit::HLT => GuestExit::Halt,
            guest_exit::SHUTDOWN => GuestExit::Shutdown,
            code => GuestExit::Unhandled {
                code,
                info: v.get(vmsa::offset::EXIT_INFO1),
            },
        };
        self.writeback = false;
        Ok(exit)
    }

    /// Whether `[gpa, gpa + len)` is guest RAM outside the SVSM (the
    /// addresses a guest may name in a call; its VMSA pages included, so
    /// that DELETE_VCPU can name one).
    pub fn is_guest_memory(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        let r = PhysRange::new(crate::mm::PhysAddr(gpa), crate::mm::PhysAddr(end));
        !r.overlaps(&self.svsm)
            && self
                .guest_ram
                .iter()
                .any(|ram| ram.start <= r.start && r.end <= ram.end)
    }

    /// Whether `[gpa, gpa + len)` touches a VMSA page of a guest vCPU.
    fn touches_vmsa(&self, gpa: u64, len: u64) -> bool {
        let end = gpa.saturating_add(len);
        self.vcpus
            .iter()
            .any(|c| c.vmsa < end && gpa < c.vmsa + PAGE_SIZE)
    }

    /// Whether the SVSM may copy guest data from or to `[gpa, gpa + len)`:
    /// guest memory that is not a VMSA (the SVSM could write a vCPU's state
    /// there on the guest's behalf).
    pub fn is_accessible(&self, gpa: u64, len: u64) -> bool {
        self.is_guest_memory(gpa, len) && !self.touches_vmsa(gpa, len)
    }

    /// SVSM_CORE_PVALIDATE for one guest page: PVALIDATE at VMPL0, then
    /// (validating) RMPADJUST so that the guest's VMPL may use it, or
    /// (rescinding) its permissions removed first.
    pub fn guest_pvalidate(
        &mut self,
        gpa: u64,
        huge: bool,
        valid: bool,
        ignore_cf: bool,
    ) -> Result<(), SvsmError> {
        let size = if huge { LARGE_PAGE_SIZE } else { PAGE_SIZE };
        if self.touches_vmsa(gpa, size) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
        let range = PhysRange::new(crate::mm::PhysAddr(gpa), crate::mm::PhysAddr(gpa + size));
        if !valid {
            // Permissions first, so the guest cannot use a page mid-change.
            let _ = rmp::grant(&mut self.hw, range, self.guest_vmpl, 0);
        }
        match rmp::pvalidate_one(&mut self.hw, gpa, huge, valid) {
            Ok(()) => {}
            Err(RmpError::Unchanged { .. }) if ignore_cf => {}
            Err(RmpError::Unchanged { .. }) => {
                return Err(SvsmError(result::PVALIDATE_FAIL_UNCHANGED));
            }
            Err(RmpError::Pvalidate { code, .. }) => {
                return Err(SvsmError(0x8000_1000 + u64::from(code)));
            }
            Err(_) => return Err(SvsmError::INVALID_REQUEST),
        }
        if valid {
            rmp::grant(&mut self.hw, range, self.guest_vmpl, perm::ALL)
                .map_err(|_| SvsmError::INVALID_REQUEST)?;
        }
        Ok(())
    }

    /// SVSM_CORE_CREATE_VCPU: the guest's VMSA page must not be 2 MiB
    /// aligned (AMD erratum: such VMSA pages may be corrupted), nor a Calling
    /// Area, nor already a VMSA. RMPADJUST turns it into a VMSA (the guest
    /// loses access to it), then it is copied once and checked (VMPL = the
    /// guest's, SEV features, EFER.SVME), and the hypervisor is told to run
    /// it. Any refusal gives the page back to the guest.
    pub fn create_vcpu(&mut self, vmsa_gpa: u64, caa: u64, apic_id: u32) -> Result<(), SvsmError> {
        if vmsa_gpa.is_multiple_of(LARGE_PAGE_SIZE) {
            return Err(SvsmError::INVALID_PARAMETER);
        }
        if self
            .vcpus
            .iter()
            .any(|c| c.vmsa == vmsa_gpa || c.caa == vmsa_gpa)
        {
            return Err(SvsmError::INVALID_PARAMETER);
        }
        if self.vcpus.iter().any(|c| c.apic_id == apic_id) {
            // One VMSA per vCPU: DELETE_VCPU the old one first.
            return Err(SvsmError::INVALID_REQUEST);
        }
        // The page becomes a VMSA first, so that no other guest vCPU can
        // change it between the check and its use; any refusal gives it back.
        rmp::set_vmsa(&mut self.hw, vmsa_gpa, self.guest_vmpl, true, 0)
            .map_err(|_| SvsmError::INVALID_PARAMETER)?;
        let checked = self
            .read_vmsa(vmsa_gpa)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
            .and_then(|v| {
                v.check_guest(self.guest_vmpl)
                    .map_err(|_| SvsmError::INVALID_PARAMETER)?;
                Ok(v.get(vmsa::offset::SEV_FEATURES))
            })
            .and_then(|features| {
                self.ap_creation(ap_request::CREATE, apic_id, vmsa_gpa, features)
                    .map_err(|_| SvsmError::INVALID_REQUEST)
            });
        if let Err(e) = checked {
            let _ = rmp::set_vmsa(&mut self.hw, vmsa_gpa, self.guest_vmpl, false, perm::ALL);
            return Err(e);
        }
        self.vcpus.push(GuestVcpu {
            apic_id,
            vmsa: vmsa_gpa,
            caa,
            svsm_page: false,
        });
        Ok(())
    }

    /// SVSM_CORE_DELETE_VCPU: only a VMSA the guest created, not the boot
    /// vCPU's; the hypervisor drops it, then the page is the guest's again.
    pub fn delete_vcpu(&mut self, vmsa_gpa: u64) -> Result<(), SvsmError> {
        let index = self
            .vcpus
            .iter()
            .position(|c| c.vmsa == vmsa_gpa && !c.svsm_page)
            .ok_or(SvsmError::INVALID_PARAMETER)?;
        let apic_id = self.vcpus[index].apic_id;
        self.ap_creation(ap_request::DESTROY, apic_id, vmsa_gpa, 0)
            .map_err(|_| SvsmError::INVALID_REQUEST)?;
        rmp::set_vmsa(&mut self.hw, vmsa_gpa, self.guest_vmpl, false, perm::ALL)
            .map_err(|_| SvsmError::INVALID_REQUEST)?;
        self.vcpus.remove(index);
        Ok(())
    }

    /// The SNP Guest Request NAE event over two shared pages.
    pub fn guest_request(
        &mut self,
        pages: (u64, u64),
        request: &[u8; GR_PAGE],
        response: &mut [u8; GR_PAGE],
    ) -> Result<(), TransportError> {
        self.guest_request_exit(pages, request, response, None)
    }

    /// The SNP Extended Guest Request NAE event: as [`Self::guest_request`],
    /// with the shared certificate buffer at `certs_gpa` (`certs.len() /
    /// 4096` contiguous shared pages) cleared, offered in RAX/RBX, and on
    /// success copied once into `certs`.
    pub fn extended_guest_request(
        &mut self,
        pages: (u64, u64),
        request: &[u8; GR_PAGE],
        response: &mut [u8; GR_PAGE],
        certs_gpa: u64,
        certs: &mut [u8],
    ) -> Result<(), TransportError> {
        if certs.is_empty() || !certs.len().is_multiple_of(GR_PAGE) {
            return Err(TransportError::Protocol);
        }
        self.guest_request_exit(pages, request, response, Some((certs_gpa, certs)))
    }

    fn guest_request_exit(
        &mut self,
        pages: (u64, u64),
        request: &[u8; GR_PAGE],
        response: &mut [u8; GR_PAGE],
        mut certs: Option<(u64, &mut [u8])>,
    ) -> Result<(), TransportError> {
        let (req_gpa, rsp_gpa) = pages;
        self.hw
            .write_shared(req_gpa, request)
            .map_err(|_| TransportError::Protocol)?;
        let mut code = exit_code::SNP_GUEST_REQUEST;
        let mut regs = (0, 0);
        if let Some((gpa, buf)) = certs.as_mut() {
            // Whatever an earlier answer left there must not pass for this
            // one's certificates.
            let zero = [0u8; GR_PAGE];
            for i in 0..buf.len() / GR_PAGE {
                self.hw
                    .write_shared(*gpa + (i * GR_PAGE) as u64, &zero)
                    .map_err(|_| TransportError::Protocol)?;
            }
            code = exit_code::SNP_EXT_GUEST_REQUEST;
            regs = (*gpa, (buf.len() / GR_PAGE) as u64);
        }
        let r = self.nae(code, req_gpa, rsp_gpa, |g| {
            if code == exit_code::SNP_EXT_GUEST_REQUEST {
                g.set(offset::RAX, regs.0);
                g.set(offset::RBX, regs.1);
            }
        });
        let info2 = self.ghcb.get(offset::SW_EXITINFO2);
        match r {
            Ok(()) => {}
            Err(_) => return Err(TransportError::Protocol),
        }
        if !self.ghcb.is_valid(offset::SW_EXITINFO2) {
            return Err(TransportError::Protocol);
        }
        if info2 == VMM_ERR_INVALID_LEN && certs.is_some() {
            return match self.ghcb.get_valid(offset::RBX) {
                Ok(pages) => Err(TransportError::CertsTooSmall(pages)),
                Err(_) => Err(TransportError::Protocol),
            };
        }
        if info2 != 0 {
            return Err(TransportError::ExitInfo2(info2));
        }
        self.hw
            .read_shared(rsp_gpa, response)
            .map_err(|_| TransportError::Protocol)?;
        if let Some((gpa, buf)) = certs {
            for (i, page) in buf.chunks_exact_mut(GR_PAGE).enumerate() {
                self.hw
                    .read_shared(gpa + (i * GR_PAGE) as u64, page)
                    .map_err(|_| TransportError::Protocol)?;
            }
        }
        Ok(())
    }
}

/// The guest's RAM: every RAM range minus the SVSM's memory.
pub fn guest_ram(ram: impl Iterator<Item = PhysRange>, svsm: PhysRange) -> Vec<PhysRange> {
    ram.flat_map(|r| {
        [
            PhysRange::new(r.start, r.end.min(svsm.start).max(r.start)),
            PhysRange::new(r.start.max(svsm.end).min(r.end), r.end),
        ]
    })
    .filter(|r| !r.is_empty())
    .collect()
}

/// The guest-request transport over a core: the two shared pages it uses.
pub struct GhcbTransport<'a, H: SnpHw> {
    /// The core.
    pub core: &'a spin::Mutex<SnpCore<H>>,
    /// Request and response pages (shared).
    pub pages: (u64, u64),
    /// Waits between attempts after the hypervisor said BUSY (the attempt
    /// number, from 1); the platform waits about 2 s, as Linux does.
    pub backoff: fn(u32),
    /// The shared certificate buffer for extended requests: its first
    /// page's GPA and its size in pages (contiguous). None: extended
    /// requests are not made.
    pub certs: Option<(u64, usize)>,
}

impl<H: SnpHw> GuestRequestTransport for GhcbTransport<'_, H> {
    fn guest_request(
        &mut self,
        request: &[u8; GR_PAGE],
        response: &mut [u8; GR_PAGE],
    ) -> Result<(), TransportError> {
        self.core
            .lock()
            .guest_request(self.pages, request, response)
    }

    fn extended_guest_request(
        &mut self,
        request: &[u8; GR_PAGE],
        response: &mut [u8; GR_PAGE],
        certs: &mut [u8],
    ) -> Result<(), TransportError> {
        match self.certs {
            Some((gpa, max_pages)) if certs.len() <= max_pages * GR_PAGE => self
                .core
                .lock()
                .extended_guest_request(self.pages, request, response, gpa, certs),
            // Nothing sent.
            _ => Err(TransportError::Protocol),
        }
    }

    fn busy_backoff(&mut self, attempt: u32) {
        (self.backoff)(attempt);
    }
}

/// The guest's memory as the protocols see it.
pub struct SnpGuest<'a, H: SnpHw> {
    /// The core.
    pub core: &'a spin::Mutex<SnpCore<H>>,
}

impl<H: SnpHw> crate::protocols::Guest for SnpGuest<'_, H> {
    fn is_guest_memory(&self, gpa: u64, len: u64) -> bool {
        self.core.lock().is_guest_memory(gpa, len)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SvsmError> {
        let core = self.core.lock();
        if !core.is_accessible(gpa, buf.len() as u64) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
        core.hw
            .read(gpa, buf)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), SvsmError> {
        let mut core = self.core.lock();
        if !core.is_accessible(gpa, data.len() as u64) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
        core.hw
            .write(gpa, data)
            .map_err(|_| SvsmError::INVALID_ADDRESS)
    }

    fn pvalidate(
        &mut self,
        gpa: u64,
        huge: bool,
        valid: bool,
        ignore_cf: bool,
    ) -> Result<(), SvsmError> {
        self.core
            .lock()
            .guest_pvalidate(gpa, huge, valid, ignore_cf)
    }

    fn create_vcpu(&mut self, vmsa: u64, caa: u64, apic_id: u32) -> Result<(), SvsmError> {
        self.core.lock().create_vcpu(vmsa, caa, apic_id)
    }

    fn delete_vcpu(&mut self, vmsa: u64) -> Result<(), SvsmError> {
        self.core.lock().delete_vcpu(vmsa)
    }
}
