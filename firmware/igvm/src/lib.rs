//! The Rivet IGVM image builder: packs the SVSM kernel (an ELF) and a guest
//! firmware (OVMF, or any flat image ending at 4 GiB) into one IGVM file for
//! SEV-SNP, TDX with partitioning, or a native (non-confidential) loader, and
//! predicts the launch measurement a verifier should expect.
//!
//! Host-only; reads bytes, returns bytes. Layout of the guest-physical
//! space (see `README.md` for the formats the kernel reads):
//!
//! ```text
//! kernel PT_LOAD pages      at their p_paddr (128 MiB up, kernel/kernel.ld)
//! launch pages              right after the kernel image, in this order:
//!   launch info             measured; EBX at the kernel entry points here
//!   SNP: VMPL0 VMSA page    the SVSM's initial state
//!   SNP: secrets page       filled by the PSP
//!   SNP: CPUID page         filled by the loader, checked by the PSP
//!   SNP: guest context      the guest firmware's VMPL2 VMSA, measured data
//!   parameters              vCPU count (unmeasured, written by the loader)
//!   memory map              IGVM memory map (unmeasured, written by the loader)
//!   TDP: reset-page copy    the firmware's own last page
//! SVSM memory               up to kernel start + svsm_size, no directive
//!                           (validated / accepted by the kernel itself)
//! SNP: OVMF metadata ranges zero pages (SEC_MEM, secrets, CPUID, CAA, hashes)
//! guest firmware            ending at 4 GiB (TDP: last page = reset stub)
//! ```

pub mod elf;
pub mod error;
pub mod firmware;
pub mod launch_info;
pub mod measure;
pub mod vmsa;

use std::collections::BTreeMap;

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM,
    IgvmNativeVpContextX64, IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType,
};
use zerocopy::IntoBytes;

use elf::KernelElf;
pub use error::BuildError;
use firmware::Firmware;
use launch_info::{FirmwareRegion, LaunchInfo};
use measure::{Digest384, VmsaConvention};

/// The only page size the images use.
pub const PAGE_SIZE: u64 = 4096;
/// The compatibility mask of every header: one platform per file.
pub const COMPATIBILITY_MASK: u32 = 1;
/// The SNP guest policy: SMT allowed (bit 16), bit 17 (reserved, must be 1).
pub const SNP_POLICY: u64 = 0x3_0000;
/// The VMPL the guest firmware runs at on SNP.
pub const GUEST_VMPL: u8 = 2;
/// Parameter area holding the memory map.
pub const MEMORY_MAP_AREA: u32 = 0;
/// Parameter area holding the vCPU count.
pub const PARAMETERS_AREA: u32 = 1;
/// The x86 reset address, where the guest firmware (and on TDX the TD) starts.
pub const RESET_ADDRESS: u64 = 0xffff_fff0;

/// The largest SVSM memory `--svsm-size` accepts.
pub const MAX_SVSM_SIZE: u64 = 1 << 30;

/// Which loader the image is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// AMD SEV-SNP: the SVSM at VMPL0, the guest firmware at VMPL2.
    Snp,
    /// Intel TDX with partitioning: the SVSM as the L1, the firmware as the L2.
    Tdp,
    /// No confidential hardware.
    Native,
}

impl Platform {
    /// Parse `snp`, `tdp` or `native`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "snp" => Some(Self::Snp),
            "tdp" => Some(Self::Tdp),
            "native" => Some(Self::Native),
            _ => None,
        }
    }
}

/// How to build.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The target platform.
    pub platform: Platform,
    /// CPUID signature QEMU reports (goes into RDX of the VMSAs).
    pub vcpu_signature: u32,
    /// vCPUs the SNP prediction assumes (QEMU + KVM measure one VMSA each).
    pub vcpus: u32,
    /// Where the PSP sees VMSAs (SNP only).
    pub vmsa_convention: VmsaConvention,
    /// Size of the SVSM's memory from the kernel's first page; at least the
    /// image plus the launch pages (the default).
    pub svsm_size: Option<u64>,
}

impl Options {
    /// Defaults for `platform`: EPYC-v4 signature, 1 vCPU, QEMU + KVM.
    pub fn new(platform: Platform) -> Self {
        Self {
            platform,
            vcpu_signature: vmsa::EPYC_V4_SIGNATURE,
            vcpus: 1,
            vmsa_convention: VmsaConvention::QemuKvm,
            svsm_size: None,
        }
    }
}

/// The expected launch measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measurement {
    /// SEV-SNP launch digest (the report's MEASUREMENT).
    Snp(Digest384),
    /// TDX MRTD.
    Tdx(Digest384),
}

impl Measurement {
    /// Lower-case hex of the digest.
    pub fn hex(&self) -> String {
        let d = match self {
            Self::Snp(d) | Self::Tdx(d) => d,
        };
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where the builder put things (also written into the launch-info page).
#[derive(Clone, Debug)]
pub struct Layout {
    /// The launch-info page's contents.
    pub info: LaunchInfo,
    /// The kernel's 32-bit entry point.
    pub kernel_entry: u64,
    /// Kernel pages that carry file data.
    pub kernel_data_pages: usize,
    /// Kernel pages that are zero (bss, stack).
    pub kernel_zero_pages: usize,
    /// Guest firmware pages.
    pub firmware_pages: usize,
    /// Zero pages for the firmware's SEV metadata ranges (SNP).
    pub firmware_region_pages: usize,
}

/// A built image.
#[derive(Debug)]
pub struct Image {
    /// The IGVM file as the `igvm` crate holds it.
    pub file: IgvmFile,
    /// The serialized file.
    pub bytes: Vec<u8>,
    /// Where everything is.
    pub layout: Layout,
    /// The expected launch measurement (none for native).
    pub measurement: Option<Measurement>,
}

/// Guest-physical pages claimed so far, with who claimed them.
#[derive(Default)]
struct Claims(BTreeMap<u64, String>);

impl Claims {
    fn claim(&mut self, start: u64, size: u64, who: &str) -> Result<(), BuildError> {
        let first = start & !(PAGE_SIZE - 1);
        let end = start
            .checked_add(size)
            .and_then(|e| e.checked_add(PAGE_SIZE - 1))
            .ok_or_else(|| BuildError::BadParameter(format!("{who} wraps the address space")))?
            & !(PAGE_SIZE - 1);
        if let Some((gpa, owner)) = self.0.range(first..end).next() {
            return Err(BuildError::Overlap {
                first: owner.clone(),
                second: who.to_string(),
                gpa: *gpa,
            });
        }
        let mut p = first;
        while p < end {
            self.0.insert(p, who.to_string());
            p += PAGE_SIZE;
        }
        Ok(())
    }
}

fn page_data(gpa: u64, data_type: IgvmPageDataType, data: Vec<u8>) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: COMPATIBILITY_MASK,
        flags: IgvmPageDataFlags::new(),
        data_type,
        data,
    }
}

/// The kernel's pages: page address → bytes (None: all zero, no file data).
fn kernel_pages(kernel: &KernelElf) -> Result<BTreeMap<u64, Option<Vec<u8>>>, BuildError> {
    let mut pages: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for seg in &kernel.segments {
        let end = seg.gpa + seg.mem_size;
        if let Some((s, _)) = spans.iter().find(|(s, e)| seg.gpa < *e && *s < end) {
            return Err(BuildError::Overlap {
                first: format!("the kernel segment at {s:#x}"),
                second: format!("the kernel segment at {:#x}", seg.gpa),
                gpa: seg.gpa.max(*s) & !(PAGE_SIZE - 1),
            });
        }
        spans.push((seg.gpa, end));
        let mut p = seg.gpa & !(PAGE_SIZE - 1);
        while p < end {
            pages.entry(p).or_insert(None);
            p += PAGE_SIZE;
        }
        // Copy the file bytes page by page.
        let mut off = 0usize;
        while off < seg.data.len() {
            let gpa = seg.gpa + off as u64;
            let page = gpa & !(PAGE_SIZE - 1);
            let in_page = (gpa - page) as usize;
            let n = (PAGE_SIZE as usize - in_page).min(seg.data.len() - off);
            let buf = pages
                .entry(page)
                .or_insert(None)
                .get_or_insert_with(|| vec![0u8; PAGE_SIZE as usize]);
            buf[in_page..in_page + n].copy_from_slice(&seg.data[off..off + n]);
            off += n;
        }
    }
    Ok(pages)
}

/// The TDX reset stub: at 0xfffffff0 the TD starts in 32-bit flat protected
/// mode; load EBX with the launch-info page and jump to the kernel entry.
fn tdx_reset_page(launch_info_gpa: u32, entry: u32) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    let mut stub = Vec::with_capacity(16);
    stub.push(0xbb); // mov ebx, imm32
    stub.extend_from_slice(&launch_info_gpa.to_le_bytes());
    stub.push(0xb8); // mov eax, imm32
    stub.extend_from_slice(&entry.to_le_bytes());
    stub.extend_from_slice(&[0xff, 0xe0]); // jmp eax
    while stub.len() < 16 {
        stub.push(0xf4); // hlt
    }
    page[PAGE_SIZE as usize - 16..].copy_from_slice(&stub);
    page
}

/// Build the image for `opts.platform` from the kernel ELF and the firmware.
pub fn build(
    kernel_elf: &[u8],
    firmware_image: &[u8],
    opts: &Options,
) -> Result<Image, BuildError> {
    let kernel = KernelElf::parse(kernel_elf)?;
    let fw = Firmware::parse(firmware_image)?;
    let kpages = kernel_pages(&kernel)?;
    let mut claims = Claims::default();

    let (Some(&kernel_start), Some(&last)) = (kpages.keys().next(), kpages.keys().next_back())
    else {
        return Err(BuildError::NoLoadableSegment);
    };
    let kernel_end = last + PAGE_SIZE;
    for &gpa in kpages.keys() {
        claims.claim(gpa, PAGE_SIZE, "the kernel image")?;
    }
    claims.claim(fw.base(), fw.data.len() as u64, "the guest firmware")?;

    let platform = opts.platform;
    let snp = platform == Platform::Snp;
    let tdp = platform == Platform::Tdp;

    // The launch pages, in order, right after the kernel image.
    let mut next = kernel_end;
    let mut take = |who: &str, claims: &mut Claims| -> Result<u64, BuildError> {
        let gpa = next;
        claims.claim(gpa, PAGE_SIZE, who)?;
        next += PAGE_SIZE;
        Ok(gpa)
    };
    let launch_info_gpa = take("the launch-info page", &mut claims)?;
    let vmsa_gpa = if snp {
        take("the SVSM VMSA page", &mut claims)?
    } else {
        0
    };
    let secrets_gpa = if snp {
        take("the secrets page", &mut claims)?
    } else {
        0
    };
    let cpuid_gpa = if snp {
        take("the CPUID page", &mut claims)?
    } else {
        0
    };
    let guest_context_gpa = if snp {
        take("the guest-context page", &mut claims)?
    } else {
        0
    };
    let parameters_gpa = take("the parameter page", &mut claims)?;
    let memory_map_gpa = take("the memory-map page", &mut claims)?;
    let reset_copy_gpa = if tdp {
        take("the firmware reset-page copy", &mut claims)?
    } else {
        0
    };
    let launch_end = next;

    let svsm_size = match opts.svsm_size {
        None => launch_end - kernel_start,
        Some(s)
            if s.is_multiple_of(PAGE_SIZE)
                && s >= launch_end - kernel_start
                && s <= MAX_SVSM_SIZE =>
        {
            s
        }
        Some(s) => {
            return Err(BuildError::BadParameter(format!(
                "SVSM size {s:#x} must be page-aligned, at most 1 GiB and at least {:#x} (the kernel image and launch pages)",
                launch_end - kernel_start
            )));
        }
    };
    if svsm_size > launch_end - kernel_start {
        claims.claim(
            launch_end,
            svsm_size - (launch_end - kernel_start),
            "the SVSM memory",
        )?;
    }

    let entry = u32::try_from(kernel.entry).map_err(|_| BuildError::EntryNot32Bit {
        entry: kernel.entry,
    })?;
    let li_gpa32 = u32::try_from(launch_info_gpa).map_err(|_| {
        BuildError::BadParameter(format!(
            "the launch-info page {launch_info_gpa:#x} is above 4 GiB"
        ))
    })?;

    // The firmware's metadata ranges are SNP business (zero pages at launch).
    let mut info = LaunchInfo::new(match platform {
        Platform::Snp => launch_info::platform::SNP,
        Platform::Tdp => launch_info::platform::TDP,
        Platform::Native => launch_info::platform::NATIVE,
    });
    let mut region_pages = 0usize;
    if snp {
        if fw.sections.len() > launch_info::MAX_FIRMWARE_REGIONS {
            return Err(BuildError::BadFirmwareMetadata("too many sections"));
        }
        for (i, s) in fw.sections.iter().enumerate() {
            claims.claim(s.gpa, s.size, &format!("the firmware's {:?} range", s.kind))?;
            info.firmware_regions[i] = FirmwareRegion {
                gpa: s.gpa,
                size: s.size,
                kind: s.kind.raw(),
                reserved: 0,
            };
            region_pages += (s.size / PAGE_SIZE) as usize;
        }
        info.firmware_region_count = fw.sections.len() as u32;
    }

    info.svsm_base = kernel_start;
    info.svsm_size = svsm_size;
    info.kernel_start = kernel_start;
    info.kernel_end = kernel_end;
    info.launch_pages_start = launch_info_gpa;
    info.launch_pages_end = launch_end;
    info.vmsa_gpa = vmsa_gpa;
    info.secrets_gpa = secrets_gpa;
    info.cpuid_gpa = cpuid_gpa;
    info.guest_context_gpa = guest_context_gpa;
    info.memory_map_gpa = memory_map_gpa;
    info.memory_map_size = PAGE_SIZE;
    info.parameters_gpa = parameters_gpa;
    info.firmware_base = fw.base();
    info.firmware_size = fw.data.len() as u64;
    info.firmware_entry = RESET_ADDRESS;
    info.firmware_reset_page_copy_gpa = reset_copy_gpa;
    info.guest_vmpl = if snp { u32::from(GUEST_VMPL) } else { 0 };

    // Directives, in the order the loader (and the measurement) sees them.
    let mut d = Vec::new();
    let mut kernel_data_pages = 0;
    let mut kernel_zero_pages = 0;
    for (gpa, page) in &kpages {
        match page {
            Some(bytes) => {
                kernel_data_pages += 1;
                d.push(page_data(*gpa, IgvmPageDataType::NORMAL, bytes.clone()));
            }
            None => {
                kernel_zero_pages += 1;
                d.push(page_data(*gpa, IgvmPageDataType::NORMAL, Vec::new()));
            }
        }
    }
    let fw_pages = fw.data.len() / PAGE_SIZE as usize;
    for (i, chunk) in fw.data.chunks(PAGE_SIZE as usize).enumerate() {
        let gpa = fw.base() + i as u64 * PAGE_SIZE;
        let bytes = if tdp && i + 1 == fw_pages {
            tdx_reset_page(li_gpa32, entry)
        } else {
            chunk.to_vec()
        };
        d.push(page_data(gpa, IgvmPageDataType::NORMAL, bytes));
    }
    if snp {
        for s in &fw.sections {
            let mut p = s.gpa;
            while p < s.gpa + s.size {
                d.push(page_data(p, IgvmPageDataType::NORMAL, Vec::new()));
                p += PAGE_SIZE;
            }
        }
    }
    d.push(page_data(
        launch_info_gpa,
        IgvmPageDataType::NORMAL,
        info.to_page(),
    ));
    let guest_vmsa = vmsa::guest_reset(GUEST_VMPL, opts.vcpu_signature);
    if snp {
        d.push(page_data(
            guest_context_gpa,
            IgvmPageDataType::NORMAL,
            guest_vmsa.as_bytes().to_vec(),
        ));
        d.push(page_data(
            secrets_gpa,
            IgvmPageDataType::SECRETS,
            Vec::new(),
        ));
        d.push(page_data(
            cpuid_gpa,
            IgvmPageDataType::CPUID_DATA,
            Vec::new(),
        ));
    }
    if tdp {
        let original = fw.data[fw.data.len() - PAGE_SIZE as usize..].to_vec();
        d.push(page_data(
            reset_copy_gpa,
            IgvmPageDataType::NORMAL,
            original,
        ));
    }
    for (index, gpa, what) in [
        (MEMORY_MAP_AREA, memory_map_gpa, 0),
        (PARAMETERS_AREA, parameters_gpa, 1),
    ] {
        d.push(IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: PAGE_SIZE,
            parameter_area_index: index,
            initial_data: Vec::new(),
        });
        let param = IGVM_VHS_PARAMETER {
            parameter_area_index: index,
            byte_offset: 0,
        };
        d.push(if what == 0 {
            IgvmDirectiveHeader::MemoryMap(param)
        } else {
            IgvmDirectiveHeader::VpCount(param)
        });
        d.push(IgvmDirectiveHeader::ParameterInsert(
            IGVM_VHS_PARAMETER_INSERT {
                gpa,
                compatibility_mask: COMPATIBILITY_MASK,
                parameter_area_index: index,
            },
        ));
    }
    match platform {
        Platform::Snp => d.push(IgvmDirectiveHeader::SnpVpContext {
            gpa: vmsa_gpa,
            compatibility_mask: COMPATIBILITY_MASK,
            vp_index: 0,
            vmsa: Box::new(vmsa::svsm_entry(entry, li_gpa32, opts.vcpu_signature)),
        }),
        Platform::Native => d.push(IgvmDirectiveHeader::X64NativeVpContext {
            compatibility_mask: COMPATIBILITY_MASK,
            vp_index: 0,
            context: Box::new(native_context(entry, li_gpa32)),
        }),
        // The TD's initial state is architectural (32-bit flat protected
        // mode at 0xfffffff0); the reset stub in the firmware's last page
        // carries it to the kernel.
        Platform::Tdp => {}
    }

    let (platform_type, init) = match platform {
        Platform::Snp => (
            IgvmPlatformType::SEV_SNP,
            vec![IgvmInitializationHeader::GuestPolicy {
                policy: SNP_POLICY,
                compatibility_mask: COMPATIBILITY_MASK,
            }],
        ),
        Platform::Tdp => (IgvmPlatformType::TDX, Vec::new()),
        Platform::Native => (IgvmPlatformType::NATIVE, Vec::new()),
    };
    let platforms = vec![IgvmPlatformHeader::SupportedPlatform(
        IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: COMPATIBILITY_MASK,
            highest_vtl: 0,
            platform_type,
            platform_version: 1,
            shared_gpa_boundary: 0,
        },
    )];

    let measurement = match platform {
        Platform::Snp => Some(Measurement::Snp(measure::snp_launch_digest(
            &d,
            COMPATIBILITY_MASK,
            opts.vmsa_convention,
            opts.vcpus,
        ))),
        Platform::Tdp => Some(Measurement::Tdx(measure::tdx_mrtd(&d, COMPATIBILITY_MASK))),
        Platform::Native => None,
    };

    let file = IgvmFile::new(IgvmRevision::V1, platforms, init, d)
        .map_err(|e| BuildError::Igvm(e.to_string()))?;
    let mut bytes = Vec::new();
    file.serialize(&mut bytes)
        .map_err(|e| BuildError::Igvm(e.to_string()))?;

    Ok(Image {
        file,
        bytes,
        layout: Layout {
            info,
            kernel_entry: kernel.entry,
            kernel_data_pages,
            kernel_zero_pages,
            firmware_pages: fw_pages,
            firmware_region_pages: region_pages,
        },
        measurement,
    })
}

/// The native VP context: the same 32-bit entry as on SNP.
fn native_context(entry: u32, launch_info_gpa: u32) -> IgvmNativeVpContextX64 {
    use zerocopy::FromZeros;
    let mut c = IgvmNativeVpContextX64::new_zeroed();
    c.rip = u64::from(entry);
    c.rbx = u64::from(launch_info_gpa);
    c.rflags = 0x2;
    c.code_selector = 0x08;
    c.code_attributes = 0xc09b;
    c.code_base = 0;
    c.code_limit = 0xffff_ffff;
    c.data_selector = 0x10;
    c.data_attributes = 0xc093;
    c.data_base = 0;
    c.data_limit = 0xffff_ffff;
    c.gdtr_limit = 0xffff;
    c.idtr_limit = 0xffff;
    c.cr0 = vmsa::CR0_PROTECTED;
    c
}
