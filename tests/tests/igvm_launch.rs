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
//! Then the kernel's SNP core (`SnpCore`, over a small host model of memory,
//! RMP and hypervisor) starts the guest from that parsed launch info, as
//! `Snp::start_guest` does at boot.
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

mod host_model {
    //! A small host-side stand-in for the hardware under the kernel's SNP
    //! core: guest memory loaded from the IGVM file's page directives (plus
    //! what the PSP writes: secrets, CPUID), an RMP that records validation
    //! and per-VMPL permissions, and a hypervisor that answers the GHCB MSR
    //! protocol and SNP_AP_CREATION.

    use std::collections::{BTreeMap, BTreeSet};

    use rivet_kernel::platform::snp::ghcb::{
        GhcbPage, Hypervisor, exit_code, msr_info, offset as ghcb_offset,
    };
    use rivet_kernel::platform::snp::rmp::{Rmp, RmpAttrs, rc};
    use rivet_kernel::platform::snp::svsm::{Memory, Unreachable};

    const PAGE: u64 = 4096;

    #[derive(Default)]
    pub struct Host {
        /// Guest memory: page address → contents (absent pages read zero
        /// if below `ram_end`, else are unreachable).
        pub mem: BTreeMap<u64, Vec<u8>>,
        pub ram_end: u64,
        /// Pages whose RMP entry is validated.
        pub validated: BTreeSet<u64>,
        /// (page, VMPL) → permissions granted by RMPADJUST.
        pub perms: BTreeMap<(u64, u8), u8>,
        /// Pages made VMSAs (with their VMPL).
        pub vmsas: BTreeMap<u64, u8>,
        /// SNP_AP_CREATION events: (EXITINFO1, EXITINFO2 = VMSA, RAX).
        pub ap_creations: Vec<(u64, u64, u64)>,
        pub msr: u64,
        pub ghcb_gpa: Option<u64>,
    }

    impl Host {
        fn reachable(&self, gpa: u64, len: usize) -> bool {
            gpa.checked_add(len as u64)
                .is_some_and(|e| e <= self.ram_end)
                || self.mem.contains_key(&(gpa & !(PAGE - 1)))
        }
    }

    impl Memory for Host {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable> {
            if !self.reachable(gpa, buf.len()) {
                return Err(Unreachable(gpa));
            }
            for (i, b) in buf.iter_mut().enumerate() {
                let a = gpa + i as u64;
                *b = self
                    .mem
                    .get(&(a & !(PAGE - 1)))
                    .and_then(|p| p.get((a % PAGE) as usize).copied())
                    .unwrap_or(0);
            }
            Ok(())
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable> {
            if !self.reachable(gpa, data.len()) {
                return Err(Unreachable(gpa));
            }
            for (i, b) in data.iter().enumerate() {
                let a = gpa + i as u64;
                let page = self.mem.entry(a & !(PAGE - 1)).or_default();
                page.resize(PAGE as usize, 0);
                page[(a % PAGE) as usize] = *b;
            }
            Ok(())
        }
        fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable> {
            self.read(gpa, buf)
        }
        fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable> {
            self.write(gpa, data)
        }
    }

    impl Rmp for Host {
        fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> (u32, bool) {
            assert!(!huge);
            let changed = if validate {
                self.validated.insert(gpa)
            } else {
                self.validated.remove(&gpa)
            };
            (rc::SUCCESS, !changed)
        }
        fn rmpadjust(&mut self, gpa: u64, huge: bool, attrs: RmpAttrs) -> u32 {
            if huge {
                return rc::FAIL_SIZEMISMATCH;
            }
            if !self.validated.contains(&gpa) {
                return rc::FAIL_PERMISSION;
            }
            self.perms.insert((gpa, attrs.vmpl), attrs.perms);
            if attrs.vmsa {
                self.vmsas.insert(gpa, attrs.vmpl);
            } else {
                self.vmsas.remove(&gpa);
            }
            rc::SUCCESS
        }
    }

    impl Hypervisor for Host {
        fn read_msr(&mut self) -> u64 {
            self.msr
        }
        fn write_msr(&mut self, value: u64) {
            self.msr = value;
        }
        fn vmgexit(&mut self, ghcb: &mut GhcbPage) {
            let req = self.msr;
            match req & 0xfff {
                msr_info::REGISTER_REQUEST => {
                    self.ghcb_gpa = Some(req & !0xfff);
                    self.msr = (req & !0xfff) | msr_info::REGISTER_RESPONSE;
                }
                msr_info::SEV_INFO_REQUEST => {
                    self.msr = (2 << 48) | (2 << 32) | (51 << 24) | msr_info::SEV_INFO_RESPONSE;
                }
                0 if Some(req) == self.ghcb_gpa => {
                    let code = ghcb.get(ghcb_offset::SW_EXITCODE);
                    assert_eq!(code, exit_code::SNP_AP_CREATION, "unexpected NAE event");
                    self.ap_creations.push((
                        ghcb.get(ghcb_offset::SW_EXITINFO1),
                        ghcb.get(ghcb_offset::SW_EXITINFO2),
                        ghcb.get(ghcb_offset::RAX),
                    ));
                    ghcb.set(ghcb_offset::SW_EXITINFO1, 0);
                }
                other => panic!("unexpected GHCB MSR request {other:#x}"),
            }
        }
    }
}

/// The kernel's SNP core, started from the launch info the builder wrote:
/// memory holds the IGVM file's pages (the secrets and CPUID pages as the
/// PSP would fill them), the firmware's pages are validated as the launch
/// does, and `SnpCore::start_guest` must hand the guest a secrets page
/// naming exactly the SVSM range, the CPUID page where the firmware looks,
/// VMPL2 access to the firmware and its regions only, and a boot VMSA made
/// from the guest context.
#[test]
fn snp_core_starts_the_guest_from_the_image() {
    use rivet_kernel::platform::snp::ghcb::GhcbPage;
    use rivet_kernel::platform::snp::secrets::{SECRETS_PAGE_SIZE, SvsmFields, offset as so};
    use rivet_kernel::platform::snp::svsm::SnpCore;
    use rivet_kernel::platform::snp::vc::CpuidTable;
    use rivet_kernel::platform::snp::vmsa::{EFER_SVME, offset as vo};

    let (image, _fw) = snp_image();
    let (file, pages) = read_back(&image.bytes);
    let rbx = file
        .directives()
        .iter()
        .find_map(|d| match d {
            IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => Some(vmsa.rbx),
            _ => None,
        })
        .expect("SVSM VP context");
    let info = pages.launch_info(rbx);

    let mut host = host_model::Host {
        ram_end: 0x8000_0000,
        ..Default::default()
    };
    // The launch: every page in the file is loaded and validated.
    for (gpa, (_, data)) in &pages.0 {
        let mut p = data.clone();
        p.resize(PAGE_SIZE as usize, 0);
        host.mem.insert(*gpa, p);
        host.validated.insert(*gpa);
    }
    // What the PSP writes: secrets (version 3, four VMPCKs) and a CPUID
    // page with Fn8000_001F (C-bit 51).
    let secrets_gpa = info.secrets.unwrap();
    let mut secrets = vec![0u8; SECRETS_PAGE_SIZE];
    secrets[0..4].copy_from_slice(&3u32.to_le_bytes());
    for (i, b) in secrets[so::VMPCK0..so::VMPCK0 + 4 * 32]
        .iter_mut()
        .enumerate()
    {
        *b = 0x40 + (i / 32) as u8;
    }
    host.mem.insert(secrets_gpa, secrets);
    let mut cpuid = [0u8; 4096];
    cpuid[0..4].copy_from_slice(&1u32.to_le_bytes());
    cpuid[16..20].copy_from_slice(&0x8000_001fu32.to_le_bytes());
    cpuid[16 + 28..16 + 32].copy_from_slice(&51u32.to_le_bytes()); // EBX
    host.mem.insert(info.cpuid.unwrap(), cpuid.to_vec());
    let table = CpuidTable::parse(&cpuid).expect("CPUID page");
    // The SVSM memory beyond the launch pages is validated by the kernel
    // (validate_early); the GHCB and the VMSA page come from there.
    let free_start = info.launch_pages.end.0;
    let mut p = free_start;
    while p < info.svsm.end.0 {
        host.validated.insert(p);
        p += PAGE_SIZE;
    }
    let ghcb_gpa = free_start;
    let vmsa_page = free_start + PAGE_SIZE;
    assert!(!vmsa_page.is_multiple_of(2 << 20));

    let ghcb: &'static mut GhcbPage = Box::leak(Box::default());
    let ram = [range(0, 0x8000_0000)];
    let mut core = SnpCore::new(
        host,
        ghcb,
        table,
        info.guest_vmpl,
        info.svsm,
        guest_ram(ram.iter().copied(), info.svsm),
    );
    core.register_ghcb(ghcb_gpa).expect("GHCB registered");
    let vmpck0 = core.take_vmpck0(secrets_gpa).expect("VMPCK0 taken");
    assert_eq!(vmpck0.bytes(), &[0x40; 32]);
    let caa = core
        .start_guest(&info, vmsa_page)
        .unwrap_or_else(|e| panic!("start_guest from the image's launch info: {e:?}"));

    let caa_region = info.firmware_region(RegionKind::SvsmCaa).unwrap().range;
    assert_eq!(caa, caa_region.start.0, "the firmware's own Calling Area");
    let (host, _) = core.ghcb_mut();
    // The guest's secrets page, in the firmware's SECRETS region.
    let guest_secrets = info
        .firmware_region(RegionKind::Secrets)
        .unwrap()
        .range
        .start
        .0;
    let page: [u8; SECRETS_PAGE_SIZE] = host.mem[&guest_secrets].clone().try_into().unwrap();
    let fields = SvsmFields::read_from(&page);
    assert_eq!(
        (fields.base, fields.size, fields.caa, fields.guest_vmpl),
        (info.svsm.start.0, info.svsm.len(), caa, 2),
        "the guest learns exactly the SVSM range"
    );
    assert!(
        page[so::VMPCK0..so::VMPCK0 + 64].iter().all(|b| *b == 0),
        "VMPCK0/1 wiped for a VMPL2 guest"
    );
    assert_eq!(&page[so::VMPCK0 + 64..so::VMPCK0 + 96], &[0x42; 32]);
    // The CPUID page where the firmware looks.
    let cpuid_region = info
        .firmware_region(RegionKind::Cpuid)
        .unwrap()
        .range
        .start
        .0;
    assert_eq!(host.mem[&cpuid_region], cpuid.to_vec());
    // VMPL2 access: the firmware and its regions, never SVSM memory.
    let firmware = info.firmware.unwrap();
    for (&(gpa, vmpl), &perm) in &host.perms {
        let page = range(gpa, PAGE_SIZE);
        if host.vmsas.contains_key(&gpa) {
            continue;
        }
        assert_eq!(vmpl, 2);
        assert_ne!(perm, 0);
        assert!(
            !page.overlaps(&info.svsm),
            "SVSM page {gpa:#x} granted to VMPL2"
        );
        assert!(
            page.overlaps(&firmware) || info.firmware_regions().any(|r| r.range.overlaps(&page)),
            "page {gpa:#x} granted but neither firmware nor a region"
        );
    }
    let granted = host.perms.len() as u64;
    let expect =
        (firmware.len() + info.firmware_regions().map(|r| r.range.len()).sum::<u64>()) / PAGE_SIZE;
    assert_eq!(granted, expect + 1, "firmware + regions + the VMSA page");
    // The boot VMSA: the guest context, made a VMPL2 VMSA, not yet
    // runnable, announced to the hypervisor.
    assert_eq!(host.vmsas.get(&vmsa_page), Some(&2));
    let v = &host.mem[&vmsa_page];
    assert_eq!(v[vo::VMPL], 2);
    let efer = u64::from_le_bytes(v[vo::EFER..vo::EFER + 8].try_into().unwrap());
    assert_eq!(efer & EFER_SVME, 0);
    assert_eq!(host.ap_creations.len(), 1);
    assert_eq!(host.ap_creations[0].1, vmsa_page);
    assert_eq!((host.ap_creations[0].0 >> 16) & 0xf, 2, "for VMPL2");
    // The protocol side: SVSM memory is never guest memory.
    assert!(!core.is_guest_memory(info.svsm.start.0, PAGE_SIZE));
    assert!(!core.is_guest_memory(info.svsm.end.0 - PAGE_SIZE, PAGE_SIZE));
    assert!(core.is_guest_memory(caa, PAGE_SIZE));
}
