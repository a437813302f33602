//! Build images, read them back with the `igvm` crate, and check they hold
//! what the builder promised; bad inputs give clear errors.

mod common;

use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm_defs::{IgvmPageDataType, IgvmPlatformType};
use rivet_firmware_igvm::firmware::Firmware;
use rivet_firmware_igvm::measure::{self, VmsaConvention};
use rivet_firmware_igvm::{BuildError, Measurement, Options, Platform, build, launch_info};
use zerocopy::FromBytes;

fn page_at(file: &IgvmFile, gpa: u64) -> Option<(IgvmPageDataType, Vec<u8>)> {
    file.directives().iter().find_map(|d| match d {
        IgvmDirectiveHeader::PageData {
            gpa: g,
            data_type,
            data,
            ..
        } if *g == gpa => Some((*data_type, data.clone())),
        _ => None,
    })
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn page_data_count(file: &IgvmFile, range: std::ops::Range<u64>) -> (usize, usize) {
    let (mut data, mut empty) = (0, 0);
    for d in file.directives() {
        if let IgvmDirectiveHeader::PageData {
            gpa, data: bytes, ..
        } = d
            && range.contains(gpa)
        {
            if bytes.is_empty() {
                empty += 1
            } else {
                data += 1
            }
        }
    }
    (data, empty)
}

#[test]
fn snp_image_holds_what_the_builder_promised() {
    let kernel = common::kernel();
    let ovmf = common::read(common::OVMF_2M);
    let image = build(&kernel, &ovmf, &Options::new(Platform::Snp)).expect("build");
    let file = IgvmFile::new_from_binary(&image.bytes, Some(igvm::IsolationType::Snp))
        .expect("parses back");
    let l = &image.layout;

    let IgvmPlatformHeader::SupportedPlatform(p) = &file.platforms()[0];
    assert_eq!(p.platform_type, IgvmPlatformType::SEV_SNP);
    assert!(file.initializations().iter().any(|i| matches!(i,
        IgvmInitializationHeader::GuestPolicy { policy, .. } if *policy == 0x30000)));

    // Kernel: 6 pages with bytes (text 4, rodata 1, data 1), 3 zero (bss, stack).
    assert_eq!(
        (l.info.kernel_start, l.info.kernel_end),
        (0x10_0000, 0x10_9000)
    );
    assert_eq!(page_data_count(&file, 0x10_0000..0x10_9000), (6, 3));
    let (_, text0) = page_at(&file, 0x10_0000).unwrap();
    assert_eq!(text0[..8], kernel[64 + 56 * 5..64 + 56 * 5 + 8]);
    let (_, data_page) = page_at(&file, 0x10_5000).unwrap();
    assert!(
        data_page[..0x120].iter().all(|b| *b == 0xd7) && data_page[0x120..].iter().all(|b| *b == 0)
    );

    // Firmware: every page, at 4 GiB - size, with the file's bytes.
    let base = (1u64 << 32) - ovmf.len() as u64;
    assert_eq!(l.info.firmware_base, base);
    assert_eq!(
        page_data_count(&file, base..1 << 32),
        (ovmf.len() / 4096, 0)
    );
    let (_, last) = page_at(&file, (1 << 32) - 4096).unwrap();
    assert_eq!(last, ovmf[ovmf.len() - 4096..]);

    // OVMF's SEV metadata ranges are zero pages, listed in the launch info.
    assert!(
        l.info.firmware_region_count >= 4,
        "OVMF lists SEC_MEM, secrets, CPUID, CAA"
    );
    let mut region_pages = 0;
    for r in &l.info.firmware_regions[..l.info.firmware_region_count as usize] {
        let (with_data, zero) = page_data_count(&file, r.gpa..r.gpa + r.size);
        assert_eq!((with_data, zero as u64), (0, r.size / 4096), "region {r:?}");
        region_pages += zero;
    }
    assert_eq!(region_pages, l.firmware_region_pages);

    // Launch info page, right after the kernel, decodes to the layout.
    assert_eq!(l.info.launch_pages_start, l.info.kernel_end);
    let (_, li) = page_at(&file, l.info.launch_pages_start).unwrap();
    assert_eq!(li[..8], launch_info::MAGIC);
    assert_eq!(
        u32::from_le_bytes(li[12..16].try_into().unwrap()),
        launch_info::platform::SNP
    );
    assert_eq!(u64_at(&li, 0x48), l.info.secrets_gpa);
    assert_eq!(u64_at(&li, 0x50), l.info.cpuid_gpa);
    assert_eq!(u64_at(&li, 0x58), l.info.guest_context_gpa);
    assert_eq!(u64_at(&li, 0x60), l.info.memory_map_gpa);
    assert_eq!(u64_at(&li, 0x78), base);
    assert_eq!(li[0x98], 2, "guest VMPL");

    assert_eq!(
        page_at(&file, l.info.secrets_gpa).unwrap().0,
        IgvmPageDataType::SECRETS
    );
    assert_eq!(
        page_at(&file, l.info.cpuid_gpa).unwrap().0,
        IgvmPageDataType::CPUID_DATA
    );

    // The guest firmware's VMPL2 state: a VMSA at the reset vector.
    let (_, ctx) = page_at(&file, l.info.guest_context_gpa).unwrap();
    let guest = SevVmsa::read_from_bytes(&ctx).expect("a VMSA page");
    assert_eq!(
        (guest.vmpl, guest.rip, guest.cs.base, guest.cs.selector),
        (2, 0xfff0, 0xffff_0000, 0xf000)
    );
    assert_eq!(guest.cr0, 0x10);

    // Memory map and vCPU count: parameter areas inserted where promised.
    let inserts: Vec<_> = file
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::ParameterInsert(p) => Some((p.parameter_area_index, p.gpa)),
            _ => None,
        })
        .collect();
    assert_eq!(
        inserts,
        vec![(0, l.info.memory_map_gpa), (1, l.info.parameters_gpa)]
    );
    assert!(
        file.directives()
            .iter()
            .any(|d| matches!(d, IgvmDirectiveHeader::MemoryMap(p) if p.parameter_area_index == 0))
    );
    assert!(
        file.directives()
            .iter()
            .any(|d| matches!(d, IgvmDirectiveHeader::VpCount(p) if p.parameter_area_index == 1))
    );

    // The SVSM's VMPL0 VMSA: 32-bit flat entry at the ELF entry, EBX = launch info.
    let vmsas: Vec<_> = file
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                vp_index,
                vmsa,
                ..
            } => Some((*gpa, *vp_index, vmsa.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(vmsas.len(), 1);
    let (gpa, vp, v) = &vmsas[0];
    assert_eq!((*gpa, *vp), (l.info.vmsa_gpa, 0));
    assert_eq!(
        (v.vmpl, v.rip, v.rbx),
        (0, 0x10_0000, l.info.launch_pages_start)
    );
    assert_eq!(
        (v.cs.selector, v.cs.attrib, v.cs.limit, v.cs.base),
        (8, 0xc9b, 0xffff_ffff, 0)
    );
    assert_eq!(v.cr0, 0x11);
    assert_eq!(v.efer & (1 << 12), 1 << 12);
    assert!(v.sev_features.snp());

    // The digest recomputed from what was read back equals the printed one.
    let again = measure::snp_launch_digest(file.directives(), 1, VmsaConvention::QemuKvm, 1);
    assert_eq!(image.measurement, Some(Measurement::Snp(again)));
}

#[test]
fn tdp_image_has_reset_stub_and_mrtd() {
    let kernel = common::kernel();
    let fw = common::flat_firmware(16);
    let image = build(&kernel, &fw, &Options::new(Platform::Tdp)).expect("build");
    let file = IgvmFile::new_from_binary(&image.bytes, Some(igvm::IsolationType::Tdx))
        .expect("parses back");
    let IgvmPlatformHeader::SupportedPlatform(p) = &file.platforms()[0];
    assert_eq!(p.platform_type, IgvmPlatformType::TDX);
    let l = &image.layout;
    assert!(
        !file
            .directives()
            .iter()
            .any(|d| matches!(d, IgvmDirectiveHeader::SnpVpContext { .. }))
    );
    assert_eq!(l.info.secrets_gpa, 0);

    // The last firmware page is the stub: mov ebx, info; mov eax, entry; jmp eax.
    let (_, last) = page_at(&file, 0xffff_f000).unwrap();
    let stub = &last[4080..];
    assert_eq!(stub[0], 0xbb);
    assert_eq!(
        u32::from_le_bytes(stub[1..5].try_into().unwrap()) as u64,
        l.info.launch_pages_start
    );
    assert_eq!(stub[5], 0xb8);
    assert_eq!(
        u32::from_le_bytes(stub[6..10].try_into().unwrap()),
        0x10_0000
    );
    assert_eq!(stub[10..12], [0xff, 0xe0]);
    // The firmware's own last page is kept for the kernel to put back.
    let (_, copy) = page_at(&file, l.info.firmware_reset_page_copy_gpa).unwrap();
    assert_eq!(copy, fw[fw.len() - 4096..]);

    let again = measure::tdx_mrtd(file.directives(), 1);
    assert_eq!(image.measurement, Some(Measurement::Tdx(again)));
}

#[test]
fn native_image_has_a_vp_context_at_the_entry() {
    let image = build(
        &common::kernel(),
        &common::flat_firmware(4),
        &Options::new(Platform::Native),
    )
    .expect("build");
    let file = IgvmFile::new_from_binary(&image.bytes, None).expect("parses back");
    let ctx = file
        .directives()
        .iter()
        .find_map(|d| match d {
            IgvmDirectiveHeader::X64NativeVpContext { context, .. } => Some(context.clone()),
            _ => None,
        })
        .expect("a VP context");
    assert_eq!(
        (ctx.rip, ctx.rbx, ctx.cr0),
        (0x10_0000, image.layout.info.launch_pages_start, 0x11)
    );
    assert_eq!(image.measurement, None);
}

#[test]
fn digests_follow_every_byte() {
    let fw = common::flat_firmware(8);
    let mut k2 = common::kernel();
    // A byte of the kernel's text.
    k2[64 + 56 * 5 + 1000] ^= 1;
    for platform in [Platform::Snp, Platform::Tdp] {
        let a = build(&common::kernel(), &fw, &Options::new(platform))
            .unwrap()
            .measurement;
        let b = build(&k2, &fw, &Options::new(platform))
            .unwrap()
            .measurement;
        assert_ne!(a, b, "{platform:?}");
        let mut fw2 = fw.clone();
        fw2[5] ^= 0x80;
        let c = build(&common::kernel(), &fw2, &Options::new(platform))
            .unwrap()
            .measurement;
        assert_ne!(a, c, "{platform:?}");
    }
    let mut two = Options::new(Platform::Snp);
    two.vcpus = 2;
    assert_ne!(
        build(&common::kernel(), &fw, &Options::new(Platform::Snp))
            .unwrap()
            .measurement,
        build(&common::kernel(), &fw, &two).unwrap().measurement
    );
}

fn err(kernel: &[u8], fw: &[u8], platform: Platform) -> BuildError {
    match build(kernel, fw, &Options::new(platform)) {
        Ok(_) => panic!("built an image from bad input"),
        Err(e) => e,
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let fw = common::flat_firmware(4);
    assert_eq!(err(&[], &fw, Platform::Snp), BuildError::EmptyKernel);
    assert!(matches!(
        err(b"#!/bin/sh\necho not a kernel\n", &fw, Platform::Snp),
        BuildError::NotElf(_)
    ));
    let k = common::kernel();
    assert!(matches!(
        err(&k[..100], &fw, Platform::Snp),
        BuildError::TruncatedElf(_)
    ));
    // Cut inside the last loadable segment's bytes.
    assert!(matches!(
        err(&k[..64 + 56 * 5 + 100], &fw, Platform::Snp),
        BuildError::TruncatedElf(_)
    ));
    assert_eq!(err(&k, &[], Platform::Snp), BuildError::EmptyFirmware);
    assert!(matches!(
        err(&k, &fw[..4000], Platform::Snp),
        BuildError::BadFirmwareSize { .. }
    ));

    // A kernel segment inside the firmware's range at the top of 4 GiB.
    let clash = common::elf(
        0x10_0000,
        &[
            common::Seg::load(0x10_0000, vec![0x90; 4096], 4096),
            common::Seg::load(0xffff_e000, vec![1; 16], 16),
        ],
    );
    let e = err(&clash, &fw, Platform::Tdp);
    assert_eq!(
        e,
        BuildError::Overlap {
            first: "the kernel image".into(),
            second: "the guest firmware".into(),
            gpa: 0xffff_e000,
        }
    );
    assert!(
        e.to_string()
            .contains("overlap at guest-physical page 0xffffe000"),
        "{e}"
    );

    // A kernel reaching OVMF's SEV_SEC_MEM ranges (at 8 MiB) on SNP.
    let big = common::elf(
        0x10_0000,
        &[common::Seg::load(0x10_0000, vec![0x90; 4096], 0x80_0000)],
    );
    let e = err(&big, &common::read(common::OVMF_2M), Platform::Snp);
    assert!(
        matches!(&e, BuildError::Overlap { first, .. } if first == "the kernel image"),
        "{e}"
    );

    // Entry outside the image; no loadable segment.
    let stray = common::elf(
        0x20_0000,
        &[common::Seg::load(0x10_0000, vec![0x90; 16], 16)],
    );
    assert_eq!(
        err(&stray, &fw, Platform::Snp),
        BuildError::EntryOutsideImage { entry: 0x20_0000 }
    );
    let none = common::elf(
        0x10_0000,
        &[common::Seg {
            p_type: 4,
            paddr: 0,
            data: vec![0; 4],
            memsz: 4,
        }],
    );
    assert_eq!(
        err(&none, &fw, Platform::Snp),
        BuildError::NoLoadableSegment
    );
    // A corrupt p_memsz must not make the builder walk the address space.
    let huge = common::elf(
        0x10_0000,
        &[common::Seg::load(0x10_0000, vec![0x90; 16], 1 << 40)],
    );
    assert!(matches!(
        err(&huge, &fw, Platform::Snp),
        BuildError::TruncatedElf(_)
    ));
    // Two segments over the same bytes.
    let twice = common::elf(
        0x10_0000,
        &[
            common::Seg::load(0x10_0000, vec![0x90; 64], 64),
            common::Seg::load(0x10_0020, vec![0x90; 64], 64),
        ],
    );
    assert!(matches!(
        err(&twice, &fw, Platform::Snp),
        BuildError::Overlap { .. }
    ));
}

#[test]
fn cli_prints_the_measurement_and_refuses_bad_input() {
    let dir = common::scratch("cli");
    let kpath = dir.join("kernel.elf");
    std::fs::write(&kpath, common::kernel()).unwrap();
    let out = dir.join("out.igvm");
    let run = |platform: &str, kernel: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rivet-igvm"))
            .args(["build", "--kernel"])
            .arg(kernel)
            .args(["--firmware", common::OVMF, "--platform", platform, "-o"])
            .arg(&out)
            .output()
            .expect("run rivet-igvm")
    };
    let o = run("snp", &kpath);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let expected = build(
        &common::kernel(),
        &common::ovmf(),
        &Options::new(Platform::Snp),
    )
    .unwrap();
    assert_eq!(
        stdout.trim(),
        format!("snp-measurement: {}", expected.measurement.unwrap().hex())
    );
    assert_eq!(std::fs::read(&out).unwrap(), expected.bytes);

    let o = run("tdp", &kpath);
    assert!(
        String::from_utf8(o.stdout)
            .unwrap()
            .starts_with("tdx-mrtd: ")
    );

    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let o = run("snp", &empty);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the kernel file is empty"));
    let o = run("sev", &kpath);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown platform"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mrtd_matches_the_igvm_crates_own_calculation() {
    // Independent implementation (Microsoft's, in the igvm crate) of the
    // TDX module's MEM.PAGE.ADD / MR.EXTEND accounting over IGVM directives.
    for fw in [common::flat_firmware(8), common::ovmf()] {
        let image = build(&common::kernel(), &fw, &Options::new(Platform::Tdp)).expect("build");
        let file = IgvmFile::new_from_binary(&image.bytes, Some(igvm::IsolationType::Tdx))
            .expect("parses back");
        let theirs = igvm::measurement::generate_tdx_measurement(file.directives(), 1)
            .expect("igvm measures it");
        assert_eq!(image.measurement, Some(Measurement::Tdx(theirs)));
    }
}

#[test]
fn corrupt_inputs_never_panic() {
    let kernel = common::kernel();
    let fw = common::flat_firmware(4);
    for len in 0..kernel.len() {
        let _ = build(&kernel[..len], &fw, &Options::new(Platform::Snp));
    }
    // Every byte of the ELF and program headers set to 0xff in turn.
    for i in 0..64 + 56 * 5 {
        let mut k = kernel.clone();
        k[i] = 0xff;
        let _ = build(&k, &fw, &Options::new(Platform::Snp));
    }
    // OVMF's GUID table (its last 0x400 bytes) corrupted byte by byte, and
    // the SEV metadata it points to.
    let ovmf = common::read(common::OVMF_2M);
    let n = ovmf.len();
    let from_end = Firmware::parse(&ovmf)
        .map(|f| f.sections.len())
        .expect("parses");
    assert!(from_end > 0);
    let mut o = ovmf.clone();
    for i in n - 0x400..n {
        for flip in [0x01, 0x80, 0xff] {
            o[i] ^= flip;
            let _ = Firmware::parse(&o);
            o[i] ^= flip;
        }
    }
    for cut in (0..0x400).step_by(7) {
        let _ = Firmware::parse(&ovmf[cut..]);
    }
}
