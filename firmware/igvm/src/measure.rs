//! Launch-measurement prediction from an image's directives: the SEV-SNP
//! launch digest (SNP firmware ABI, SNP_LAUNCH_UPDATE: PAGE_INFO chained with
//! SHA-384) and the TDX MRTD (TDX module: TDH.MEM.PAGE.ADD and TDH.MR.EXTEND
//! of 256-byte chunks into one SHA-384). Computed from the directives that go
//! into the file, so it measures what the file says, in the file's order.

use igvm::IgvmDirectiveHeader;
use igvm_defs::IgvmPageDataType;
use sha2::{Digest, Sha384};
use zerocopy::IntoBytes;

use crate::PAGE_SIZE;
use crate::firmware::{Firmware, SectionKind};
use crate::vmsa;

/// A SHA-384 digest.
pub type Digest384 = [u8; 48];

/// SNP page types (SNP firmware ABI, PAGE_TYPE).
pub mod page_type {
    /// Data, measured.
    pub const NORMAL: u8 = 1;
    /// A VMSA, measured.
    pub const VMSA: u8 = 2;
    /// Zeroed by the firmware; contents measured as zero.
    pub const ZERO: u8 = 3;
    /// Not measured (only its address is).
    pub const UNMEASURED: u8 = 4;
    /// The secrets page.
    pub const SECRETS: u8 = 5;
    /// The CPUID page.
    pub const CPUID: u8 = 6;
}

/// Where the PSP sees a VMSA page, which depends on the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmsaConvention {
    /// QEMU + KVM: QEMU applies the IGVM VMSA to the vCPU and KVM measures
    /// the VMSAs at LAUNCH_FINISH, after every page, at GPA 0xFFFFFFFFF000,
    /// one per vCPU (APs are assumed to start from the same state).
    QemuKvm,
    /// A loader that measures the VMSA where and when the file places it.
    FileOrder,
}

/// The GPA KVM gives every VMSA page in its PAGE_INFO: -1, page-aligned, bits 51:0.
pub const KVM_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// The running SNP launch digest.
#[derive(Clone, Debug)]
pub struct SnpDigest {
    ld: Digest384,
}

impl Default for SnpDigest {
    fn default() -> Self {
        Self { ld: [0u8; 48] }
    }
}

impl SnpDigest {
    /// Start from zero (the digest before the first LAUNCH_UPDATE).
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest now.
    pub fn value(&self) -> Digest384 {
        self.ld
    }

    /// One PAGE_INFO (0x70 bytes): DIGEST_CUR, CONTENTS, LENGTH, PAGE_TYPE,
    /// IMI_PAGE, VMPL3/2/1 permissions, reserved, GPA.
    pub fn update(&mut self, page_type: u8, gpa: u64, contents: &Digest384) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        // 99: IMI_PAGE = 0; 100..103: VMPL3/2/1 permissions = 0; 103 reserved.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = Sha384::digest(info).into();
    }

    /// A page of data (shorter data is zero-padded to 4 KiB).
    pub fn normal(&mut self, gpa: u64, data: &[u8]) {
        let contents = page_hash(data);
        self.update(page_type::NORMAL, gpa, &contents);
    }

    /// A page whose type carries no contents (zero, unmeasured, secrets, CPUID).
    pub fn contentless(&mut self, page_type: u8, gpa: u64) {
        self.update(page_type, gpa, &[0u8; 48]);
    }

    /// A VMSA page.
    pub fn vmsa(&mut self, gpa: u64, vmsa_page: &[u8]) {
        let contents = page_hash(vmsa_page);
        self.update(page_type::VMSA, gpa, &contents);
    }
}

/// SHA-384 of a page, zero-padded to 4 KiB.
fn page_hash(data: &[u8]) -> Digest384 {
    let mut h = Sha384::new();
    h.update(data);
    let pad = (PAGE_SIZE as usize).saturating_sub(data.len());
    h.update(vec![0u8; pad]);
    h.finalize().into()
}

fn applies(mask: Option<u32>, compatibility_mask: u32) -> bool {
    mask.is_none_or(|m| m & compatibility_mask != 0)
}

/// Sizes of the parameter areas declared so far, by index.
fn area_size(areas: &[(u32, u64)], index: u32) -> u64 {
    areas
        .iter()
        .rev()
        .find(|(i, _)| *i == index)
        .map_or(0, |(_, n)| *n)
}

/// The SNP launch digest QEMU + KVM (or a file-order loader) produce for
/// these directives; `vcpus` counts the VMSAs KVM measures per VP context.
pub fn snp_launch_digest(
    directives: &[IgvmDirectiveHeader],
    compatibility_mask: u32,
    convention: VmsaConvention,
    vcpus: u32,
) -> Digest384 {
    let mut ld = SnpDigest::new();
    let mut areas: Vec<(u32, u64)> = Vec::new();
    let mut deferred_vmsas: Vec<Vec<u8>> = Vec::new();
    for d in directives {
        if !applies(d.compatibility_mask(), compatibility_mask) {
            continue;
        }
        match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                flags,
                data_type,
                data,
                ..
            } => {
                if flags.shared() {
                    continue;
                }
                match *data_type {
                    IgvmPageDataType::SECRETS => ld.contentless(page_type::SECRETS, *gpa),
                    IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF => {
                        ld.contentless(page_type::CPUID, *gpa)
                    }
                    _ if flags.unmeasured() => ld.contentless(page_type::UNMEASURED, *gpa),
                    // QEMU hands a page with no data to the PSP as a ZERO page.
                    _ if data.is_empty() => ld.contentless(page_type::ZERO, *gpa),
                    _ => ld.normal(*gpa, data),
                }
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } => areas.push((*parameter_area_index, *number_of_bytes)),
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let size = area_size(&areas, p.parameter_area_index);
                let mut off = 0;
                while off < size {
                    ld.contentless(page_type::UNMEASURED, p.gpa + off);
                    off += PAGE_SIZE;
                }
            }
            IgvmDirectiveHeader::SnpVpContext { gpa, vmsa, .. } => {
                let page = vmsa.as_bytes().to_vec();
                match convention {
                    VmsaConvention::QemuKvm => deferred_vmsas.push(page),
                    VmsaConvention::FileOrder => ld.vmsa(*gpa, &page),
                }
            }
            _ => {}
        }
    }
    for page in &deferred_vmsas {
        for _ in 0..vcpus.max(1) {
            ld.vmsa(KVM_VMSA_GPA, page);
        }
    }
    ld.value()
}

/// The TDX MRTD: one SHA-384 over, for each page added, a 128-byte
/// TDH.MEM.PAGE.ADD record ("MEM.PAGE.ADD", GPA at byte 16), and for each
/// measured page sixteen TDH.MR.EXTEND records ("MR.EXTEND", chunk GPA at
/// byte 16) each followed by its 256 bytes. Parameter areas and unmeasured
/// pages are added without extension: their addresses count, not their bytes.
pub fn tdx_mrtd(directives: &[IgvmDirectiveHeader], compatibility_mask: u32) -> Digest384 {
    let mut h = Sha384::new();
    let mut areas: Vec<(u32, u64)> = Vec::new();
    let record = |tag: &[u8], gpa: u64| {
        let mut r = [0u8; 128];
        r[..tag.len()].copy_from_slice(tag);
        r[16..24].copy_from_slice(&gpa.to_le_bytes());
        r
    };
    let page_add = |h: &mut Sha384, gpa: u64| h.update(record(b"MEM.PAGE.ADD", gpa));
    let extend = |h: &mut Sha384, gpa: u64, data: &[u8]| {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let n = data.len().min(page.len());
        page[..n].copy_from_slice(&data[..n]);
        for (i, chunk) in page.chunks(256).enumerate() {
            h.update(record(b"MR.EXTEND", gpa + 256 * i as u64));
            h.update(chunk);
        }
    };
    for d in directives {
        if !applies(d.compatibility_mask(), compatibility_mask) {
            continue;
        }
        match d {
            IgvmDirectiveHeader::PageData {
                gpa, flags, data, ..
            } => {
                if flags.shared() {
                    continue;
                }
                page_add(&mut h, *gpa);
                if !flags.unmeasured() {
                    extend(&mut h, *gpa, data);
                }
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } => areas.push((*parameter_area_index, *number_of_bytes)),
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let size = area_size(&areas, p.parameter_area_index);
                let mut off = 0;
                while off < size {
                    page_add(&mut h, p.gpa + off);
                    off += PAGE_SIZE;
                }
            }
            _ => {}
        }
    }
    h.finalize().into()
}

/// The SNP launch digest of OVMF alone at VMPL0 under QEMU + KVM (no SVSM):
/// its pages, its SEV metadata sections, then one VMSA per vCPU (the BSP at
/// the reset vector, APs at OVMF's SEV-ES reset address). This is the layout
/// `sev-snp-measure --mode snp` predicts, so it anchors the page chaining
/// and the VMSA encoding above to an independent implementation.
pub fn ovmf_only_snp_digest(
    fw: &Firmware,
    vcpus: u32,
    vcpu_signature: u32,
    sev_features: u64,
) -> Option<Digest384> {
    let mut ld = SnpDigest::new();
    for (i, page) in fw.data.chunks(PAGE_SIZE as usize).enumerate() {
        ld.normal(fw.base() + i as u64 * PAGE_SIZE, page);
    }
    for s in &fw.sections {
        let t = match s.kind {
            SectionKind::SnpSecMem | SectionKind::SvsmCaa | SectionKind::KernelHashes => {
                page_type::ZERO
            }
            SectionKind::SnpSecrets => page_type::SECRETS,
            SectionKind::Cpuid => page_type::CPUID,
        };
        let mut off = 0;
        while off < s.size {
            ld.contentless(t, s.gpa + off);
            off += PAGE_SIZE;
        }
    }
    let ap_eip = fw.sev_es_reset_eip?;
    for i in 0..vcpus {
        let eip = if i == 0 { 0xffff_fff0 } else { ap_eip };
        let mut v = vmsa::reset_state(eip, 0, vcpu_signature);
        v.sev_features = igvm::snp_defs::SevFeatures::from(sev_features);
        ld.vmsa(KVM_VMSA_GPA, v.as_bytes());
    }
    Some(ld.value())
}
