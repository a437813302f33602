//! The IGVM image ↔ kernel contract: an image `rivet_firmware_igvm` builds
//! from the real kernel ELF and an SEV-SNP-capable firmware (an OVMF-like
//! blob whose GUID table lists SEC_MEM at 8 MiB, secrets, CPUID and SVSM
//! Calling Area pages, as OVMF built for SEV-SNP does) is read back with the
//! `igvm` crate, and the page its SNP VMSA's RBX points at is parsed with
//! the kernel's own parser (`rivet_kernel::boot::launch_info::parse_bytes`).
//! Both sides must agree: the SVSM range holds the kernel's needs
//! (`IGVM_SVSM_MEMORY_NEEDED`), every launch page is where the file puts the
//! matching directive, the firmware and its regions are named and outside
//! the SVSM, nothing overlaps, and the guest context passes the kernel's
//! VMSA check. The TDP image is checked the same way through its reset stub.
//! No QEMU run: one kernel build (shared with the other tests), then
//! milliseconds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use igvm::{IgvmDirectiveHeader, IgvmFile};
use igvm_defs::IgvmPageDataType;
use rivet_firmware_igvm::{BuildError, Options, PAGE_SIZE, Platform, build};
use rivet_kernel::boot::IGVM_SVSM_MEMORY_NEEDED;
use rivet_kernel::boot::launch_info::{
    LAYOUT_SIZE, LaunchInfo, LaunchPlatform, RegionKind, parse_bytes,
};
use rivet_kernel::mm::{PhysAddr, PhysRange};
use rivet_kernel::platform::snp::svsm::guest_ram;
use rivet_kernel::platform::snp::vmsa::{VMSA_SIZE, Vmsa};

const FOUR_GIB: u64 = 1 << 32;

fn kernel_elf() -> &'static Vec<u8> {
    static ELF: OnceLock<Vec<u8>> = OnceLock::new();
    ELF.get_or_init(|| {
        let path: PathBuf = rivet_qemu::KernelBuild::default()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

/// OVMF's SEV metadata section types.
const SEC_MEM: u32 = 1;
const SECRETS: u32 = 2;
const CPUID: u32 = 3;
const SVSM_CAA: u32 = 4;

/// The ranges an SEV-SNP OVMF (OvmfPkg/AmdSev, ResetVector metadata) lists:
/// SEC page tables and GHCB pages, then secrets, CPUID, the SVSM Calling
/// Area and its temporary RAM, all from 8 MiB.
const SNP_OVMF_SECTIONS: [(u32, u32, u32); 6] = [
    (0x0080_0000, 0x9000, SEC_MEM),
    (0x0080_b000, 0x2000, SEC_MEM),
    (0x0080_d000, 0x1000, SECRETS),
    (0x0080_e000, 0x1000, CPUID),
    (0x0080_f000, 0x1000, SVSM_CAA),
    (0x0081_0000, 0x10000, SEC_MEM),
];

/// A GUID in its on-disk (mixed-endian) order.
fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&d1.to_le_bytes());
    g[4..6].copy_from_slice(&d2.to_le_bytes());
    g[6..8].copy_from_slice(&d3.to_le_bytes());
    g[8..].copy_from_slice(&d4);
    g
}

/// A flat firmware of `size` bytes (ending at 4 GiB) that carries OVMF's
/// GUID table (footer 96b582de-…, entry "SEV metadata offset"
/// dc886566-…) pointing at an `ASEV` header with `sections`. Written from
/// the layout OVMF's ResetVector uses, independently of the builder's parser.
fn snp_firmware(size: usize, sections: &[(u32, u32, u32)]) -> Vec<u8> {
    let footer = guid(
        0x96b5_82de,
        0x1fb2,
        0x45f7,
        [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
    );
    let metadata_guid = guid(
        0xdc88_6566,
        0x984a,
        0x4798,
        [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
    );
    let mut fw = vec![0xf4u8; size]; // hlt
    // The ASEV header 0x1000 bytes before the end.
    let meta_from_end = 0x1000usize;
    let at = size - meta_from_end;
    let len = 16 + 12 * sections.len();
    fw[at..at + 4].copy_from_slice(b"ASEV");
    fw[at + 4..at + 8].copy_from_slice(&(len as u32).to_le_bytes());
    fw[at + 8..at + 12].copy_from_slice(&1u32.to_le_bytes());
    fw[at + 12..at + 16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    for (i, (gpa, sz, kind)) in sections.iter().enumerate() {
        let e = at + 16 + 12 * i;
        fw[e..e + 4].copy_from_slice(&gpa.to_le_bytes());
        fw[e + 4..e + 8].copy_from_slice(&sz.to_le_bytes());
        fw[e + 8..e + 12].copy_from_slice(&kind.to_le_bytes());
    }
    // The GUID table ends 0x20 bytes before the image's end: entries are
    // `body, u16 length, GUID`, the footer entry last.
    let end = size - 0x20;
    let footer_entry = end - 18;
    let meta_entry = footer_entry - 22;
    fw[meta_entry..meta_entry + 4].copy_from_slice(&(meta_from_end as u32).to_le_bytes());
    fw[meta_entry + 4..meta_entry + 6].copy_from_slice(&22u16.to_le_bytes());
    fw[meta_entry + 6..meta_entry + 22].copy_from_slice(&metadata_guid);
    let total = (end - meta_entry) as u16;
    fw[footer_entry..footer_entry + 2].copy_from_slice(&total.to_le_bytes());
    fw[footer_entry + 2..end].copy_from_slice(&footer);
    fw
}

const FIRMWARE_SIZE: usize = 2 << 20;

/// The image's page directives: GPA → (data type, bytes), read back from
/// the serialized file.
struct Pages(BTreeMap<u64, (IgvmPageDataType, Vec<u8>)>);

fn read_back(bytes: &[u8]) -> (IgvmFile, Pages) {
    let file = IgvmFile::new_from_binary(bytes, None).expect("the builder's file parses back");
    let mut pages = BTreeMap::new();
    for d in file.directives() {
        if let IgvmDirectiveHeader::PageData {
            gpa,
            data_type,
            data,
            ..
        } = d
        {
            assert!(
                pages.insert(*gpa, (*data_type, data.clone())).is_none(),
                "page {gpa:#x} is loaded twice"
            );
        }
    }
    (file, Pages(pages))
}

impl Pages {
    fn page(&self, gpa: u64) -> &(IgvmPageDataType, Vec<u8>) {
        self.0
            .get(&gpa)
            .unwrap_or_else(|| panic!("no page directive at {gpa:#x}"))
    }

    /// The launch-info page at `gpa`, as the kernel copies it.
    fn launch_info(&self, gpa: u64) -> LaunchInfo {
        let (ty, data) = self.page(gpa);
        assert_eq!(
            *ty,
            IgvmPageDataType::NORMAL,
            "launch info is measured data"
        );
        let mut raw = [0u8; LAYOUT_SIZE];
        raw.copy_from_slice(&data[..LAYOUT_SIZE]);
        parse_bytes(gpa, &raw).unwrap_or_else(|e| panic!("the kernel refuses the page: {e}"))
    }
}

fn range(start: u64, len: u64) -> PhysRange {
    PhysRange::new(PhysAddr(start), PhysAddr(start + len))
}

/// The kernel's PT_LOAD span, read from the ELF by the kernel's own loader.
fn kernel_span(elf: &[u8]) -> (u64, PhysRange) {
    let mut segs = [rivet_kernel::boot::elf::Segment {
        offset: 0,
        file_size: 0,
        gpa: 0,
        mem_size: 0,
    }; 8];
    let (entry, n) = rivet_kernel::boot::elf::parse_elf(elf, 0, FOUR_GIB, &mut segs)
        .unwrap_or_else(|e| panic!("kernel ELF: {e:?}"));
    let start = segs[..n].iter().map(|s| s.gpa).min().unwrap();
    let end = segs[..n].iter().map(|s| s.gpa + s.mem_size).max().unwrap();
    (
        entry,
        PhysRange::new(PhysAddr(start), PhysAddr(end.next_multiple_of(PAGE_SIZE))),
    )
}

/// `--svsm-size` for the kernel: its image, the launch pages and what it
/// needs beyond them.
fn svsm_size_for(platform: Platform, firmware: &[u8]) -> u64 {
    let probe = build(kernel_elf(), firmware, &Options::new(platform)).expect("default build");
    let i = &probe.layout.info;
    i.launch_pages_end - i.kernel_start + IGVM_SVSM_MEMORY_NEEDED
}

fn snp_image() -> (rivet_firmware_igvm::Image, Vec<u8>) {
    let fw = snp_firmware(FIRMWARE_SIZE, &SNP_OVMF_SECTIONS);
    let mut opts = Options::new(Platform::Snp);
    opts.svsm_size = Some(svsm_size_for(Platform::Snp, &fw));
    let image = build(kernel_elf(), &fw, &opts).unwrap_or_else(|e| {
        panic!("an SNP image with an SNP OVMF and the kernel's SVSM memory: {e}")
    });
    (image, fw)
}

#[test]
fn snp_image_and_kernel_agree() {
    let (image, fw) = snp_image();
    let (file, pages) = read_back(&image.bytes);

    // The SVSM starts at the VMSA's RIP with RBX = the launch-info page.
    let vmsas: Vec<_> = file
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::SnpVpContext { gpa, vmsa, .. } => Some((*gpa, vmsa.rip, vmsa.rbx)),
            _ => None,
        })
        .collect();
    assert_eq!(vmsas.len(), 1, "one SNP VP context (the SVSM's)");
    let (vmsa_gpa, rip, rbx) = vmsas[0];
    let (entry, kernel) = kernel_span(kernel_elf());
    assert_eq!(rip, entry, "the VMSA starts the kernel at its ELF entry");
    let info = pages.launch_info(rbx);

    assert_eq!(info.platform, LaunchPlatform::Snp);
    assert_eq!(info.guest_vmpl, 2);
    assert_eq!(info.kernel, kernel, "kernel image = the ELF's PT_LOAD span");
    assert_eq!(
        info.svsm.start, kernel.start,
        "the SVSM range starts at the kernel"
    );
    assert_eq!(
        info.launch_pages.start, kernel.end,
        "launch pages follow the image"
    );
    let beyond = info.svsm.end.0 - info.launch_pages.end.0;
    assert!(
        beyond >= IGVM_SVSM_MEMORY_NEEDED,
        "SVSM memory beyond the launch pages: {beyond:#x} < {IGVM_SVSM_MEMORY_NEEDED:#x}"
    );
    assert!(info.svsm.end.0 <= FOUR_GIB);

    // Every launch page is where the file has the matching directive.
    assert_eq!(
        info.vmsa,
        Some(vmsa_gpa),
        "SVSM VMSA = the VP context's page"
    );
    let secrets = info.secrets.expect("secrets page");
    assert_eq!(pages.page(secrets).0, IgvmPageDataType::SECRETS);
    let cpuid = info.cpuid.expect("CPUID page");
    assert_eq!(pages.page(cpuid).0, IgvmPageDataType::CPUID_DATA);
    let context = info.guest_context.expect("guest context");
    let (ty, data) = pages.page(context);
    assert_eq!(
        *ty,
        IgvmPageDataType::NORMAL,
        "the guest context is measured"
    );
    let mut vmsa = [0u8; VMSA_SIZE];
    vmsa.copy_from_slice(data);
    let v = Vmsa::from_guest_context(&vmsa, info.guest_vmpl)
        .unwrap_or_else(|e| panic!("the kernel refuses the guest context: {e}"));
    assert_eq!(
        v.cs(),
        (0xf000, 0xffff_0000),
        "guest starts at the reset vector"
    );
    let mut inserts = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    for d in file.directives() {
        match d {
            IgvmDirectiveHeader::ParameterInsert(p) => {
                inserts.insert(p.gpa, p.parameter_area_index);
            }
            IgvmDirectiveHeader::MemoryMap(p) => {
                kinds.insert(p.parameter_area_index, "memory map");
            }
            IgvmDirectiveHeader::VpCount(p) => {
                kinds.insert(p.parameter_area_index, "vCPU count");
            }
            _ => {}
        }
    }
    let mm = info.memory_map.expect("memory map");
    assert_eq!(kinds.get(&inserts[&mm.start.0]), Some(&"memory map"));
    let params = info.parameters.expect("parameter page");
    assert_eq!(kinds.get(&inserts[&params]), Some(&"vCPU count"));

    // The firmware and its regions: named, where the blob says, outside the
    // SVSM, loaded as (zero) pages.
    let firmware = info.firmware.expect("firmware");
    assert_eq!(firmware, range(FOUR_GIB - fw.len() as u64, fw.len() as u64));
    assert_eq!(info.firmware_entry, 0xffff_fff0);
    let regions: Vec<_> = info.firmware_regions().collect();
    assert_eq!(regions.len(), SNP_OVMF_SECTIONS.len());
    for (r, (gpa, size, kind)) in regions.iter().zip(SNP_OVMF_SECTIONS) {
        assert_eq!(r.range, range(u64::from(gpa), u64::from(size)));
        let want = match kind {
            SEC_MEM => RegionKind::SecMem,
            SECRETS => RegionKind::Secrets,
            CPUID => RegionKind::Cpuid,
            _ => RegionKind::SvsmCaa,
        };
        assert_eq!(r.kind, want);
        let mut p = r.range.start.0;
        while p < r.range.end.0 {
            assert!(
                pages.page(p).1.is_empty(),
                "region page {p:#x} is a zero page"
            );
            p += PAGE_SIZE;
        }
    }
    for kind in [RegionKind::Secrets, RegionKind::Cpuid, RegionKind::SvsmCaa] {
        assert!(info.firmware_region(kind).is_some(), "{kind:?} named");
    }

    // Nothing overlaps: SVSM, firmware and every region pairwise disjoint.
    let mut all: Vec<(String, PhysRange)> =
        vec![("SVSM".into(), info.svsm), ("firmware".into(), firmware)];
    all.extend(
        regions
            .iter()
            .map(|r| (format!("{:?} region", r.kind), r.range)),
    );
    for (i, (a, ra)) in all.iter().enumerate() {
        for (b, rb) in &all[i + 1..] {
            assert!(!ra.overlaps(rb), "{a} {ra:?} overlaps {b} {rb:?}");
        }
    }
    // Every page the file loads belongs to exactly one claimant, and none
    // lies in the SVSM memory beyond the launch pages (the kernel validates
    // that itself; a pre-validated page would make its PVALIDATE fail).
    let free = PhysRange::new(info.launch_pages.end, info.svsm.end);
    for &gpa in pages.0.keys() {
        let page = range(gpa, PAGE_SIZE);
        let owners = [info.kernel, info.launch_pages, firmware]
            .iter()
            .chain(regions.iter().map(|r| &r.range))
            .filter(|r| r.overlaps(&page))
            .count();
        assert_eq!(owners, 1, "page {gpa:#x} has {owners} claimants");
        assert!(
            !free.overlaps(&page),
            "page {gpa:#x} in the free SVSM memory"
        );
    }

    // The guest is never handed SVSM memory: with all low RAM present, the
    // guest RAM the SNP core allows for PVALIDATE and the protocol excludes
    // exactly the SVSM range.
    let ram = [range(0, 0x8000_0000)];
    let guest = guest_ram(ram.iter().copied(), info.svsm);
    assert!(guest.iter().all(|g| !g.overlaps(&info.svsm)));
    let total: u64 = guest.iter().map(|g| g.len()).sum();
    assert_eq!(total + info.svsm.len(), 0x8000_0000);
    for r in &regions {
        assert!(
            guest
                .iter()
                .any(|g| g.start <= r.range.start && r.range.end <= g.end)
        );
    }
}

/// The builder refuses what the kernel could not use, naming both sides:
/// SVSM memory reaching into the firmware's regions, or a firmware whose
/// SEC_MEM lies on the kernel.
#[test]
fn overlaps_with_the_firmware_are_refused() {
    let kernel_start = kernel_span(kernel_elf()).1.start.0;
    // An SEC_MEM range 16 MiB above the kernel: the SVSM area (~45 MiB)
    // would cover it.
    let mut sections = SNP_OVMF_SECTIONS.to_vec();
    sections.push((
        u32::try_from(kernel_start + (16 << 20)).unwrap(),
        0x1000,
        SEC_MEM,
    ));
    let fw = snp_firmware(FIRMWARE_SIZE, &sections);
    let mut opts = Options::new(Platform::Snp);
    opts.svsm_size = Some(svsm_size_for(Platform::Snp, &fw));
    match build(kernel_elf(), &fw, &opts) {
        Err(BuildError::Overlap { first, second, .. }) => {
            assert!(first.contains("SVSM memory") || second.contains("SVSM memory"));
        }
        other => panic!("SVSM memory over SEC_MEM accepted: {:?}", other.map(|_| ())),
    }
    // SEC_MEM on the kernel's first page.
    let fw = snp_firmware(
        FIRMWARE_SIZE,
        &[(u32::try_from(kernel_start).unwrap(), 0x1000, SEC_MEM)],
    );
    match build(kernel_elf(), &fw, &Options::new(Platform::Snp)) {
        Err(BuildError::Overlap { first, .. }) => assert!(first.contains("kernel")),
        other => panic!("SEC_MEM on the kernel accepted: {:?}", other.map(|_| ())),
    }
}

/// TDP: the TD starts at 0xfffffff0 in the firmware's last page, which the
/// builder replaced by `mov ebx, launch_info; mov eax, entry; jmp eax`; the
/// page EBX names parses, and the original last page is kept where the
/// launch info says.
#[test]
fn tdp_image_and_kernel_agree() {
    let fw = snp_firmware(FIRMWARE_SIZE, &SNP_OVMF_SECTIONS);
    let mut opts = Options::new(Platform::Tdp);
    opts.svsm_size = Some(svsm_size_for(Platform::Tdp, &fw));
    let image = build(kernel_elf(), &fw, &opts).unwrap_or_else(|e| panic!("tdp image: {e}"));
    let (_, pages) = read_back(&image.bytes);
    let last = FOUR_GIB - PAGE_SIZE;
    let stub = &pages.page(last).1[PAGE_SIZE as usize - 16..];
    assert_eq!(
        (stub[0], stub[5], &stub[10..12]),
        (0xbb, 0xb8, &[0xff, 0xe0][..])
    );
    let ebx = u64::from(u32::from_le_bytes(stub[1..5].try_into().unwrap()));
    let eax = u64::from(u32::from_le_bytes(stub[6..10].try_into().unwrap()));
    let (entry, kernel) = kernel_span(kernel_elf());
    assert_eq!(eax, entry);
    let info = pages.launch_info(ebx);
    assert_eq!(info.platform, LaunchPlatform::Tdp);
    assert_eq!(info.guest_vmpl, 0);
    assert_eq!(info.kernel, kernel);
    assert!(info.svsm.end.0 - info.launch_pages.end.0 >= IGVM_SVSM_MEMORY_NEEDED);
    assert_eq!((info.vmsa, info.secrets, info.cpuid), (None, None, None));
    assert_eq!(info.firmware_regions().count(), 0, "SEV metadata is SNP's");
    let copy = info.firmware_reset_page_copy.expect("reset-page copy");
    assert_eq!(pages.page(copy).1, fw[fw.len() - PAGE_SIZE as usize..]);
    assert!(!info.firmware.unwrap().overlaps(&info.svsm));
}
