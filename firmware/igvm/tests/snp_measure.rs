//! Cross-check of the SNP launch-digest prediction against `sev-snp-measure`
//! (PyPI `sev-snp-measure`, an independent implementation by IBM/VirTEE):
//!
//! 1. OVMF alone at VMPL0 under QEMU + KVM: its CLI (`--mode snp`) against
//!    our page chaining, OVMF metadata parsing and VMSA encoding.
//! 2. A whole Rivet SNP image: every page the file holds is replayed through
//!    its `GCTX`, and the SVSM's VMSA is rebuilt by its own `VMSA_SVSM`
//!    builder from only (entry, EBX, signature); the result must equal the
//!    digest `rivet-igvm` prints. The guest's VMPL2 state page is compared
//!    with its QEMU reset-state VMSA.
//!
//! The tool must be installed (`pip install sev-snp-measure==0.0.13`): these
//! tests fail, not skip, without it.

mod common;

use std::fmt::Write as _;
use std::process::Command;

use igvm::{IgvmDirectiveHeader, IgvmFile};
use igvm_defs::IgvmPageDataType;
use rivet_firmware_igvm::firmware::Firmware;
use rivet_firmware_igvm::measure::ovmf_only_snp_digest;
use rivet_firmware_igvm::vmsa::cpu_signature;
use rivet_firmware_igvm::{Measurement, Options, Platform, build};

const PIP: &str = "pip install sev-snp-measure==0.0.13";

fn python(args: &[&str]) -> String {
    let check = Command::new("python3")
        .args(["-c", "import sevsnpmeasure"])
        .output()
        .unwrap_or_else(|e| panic!("python3 not runnable ({e}); needed with `{PIP}`"));
    assert!(
        check.status.success(),
        "sev-snp-measure is not installed: run `{PIP}`\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn ovmf_only_digest_matches_sev_snp_measure_cli() {
    // (firmware, vCPUs, QEMU CPU model, family, model, stepping, guest features)
    let cases = [
        (common::OVMF_2M, 1, "EPYC-v4", (23, 1, 2), 0x1u64),
        (common::OVMF_2M, 4, "EPYC-Milan", (25, 1, 1), 0x21),
        (common::OVMF, 2, "EPYC-Rome", (23, 49, 0), 0x1),
    ];
    for (path, vcpus, cpu, (f, m, s), features) in cases {
        let theirs = python(&[
            "-c",
            "import sys; from sevsnpmeasure.cli import main; sys.exit(main())",
            "--mode",
            "snp",
            "--ovmf",
            path,
            "--vcpus",
            &vcpus.to_string(),
            "--vcpu-type",
            cpu,
            "--guest-features",
            &format!("{features:#x}"),
            "--output-format",
            "hex",
        ]);
        let fw = Firmware::parse(&common::read(path)).expect("OVMF parses");
        let ours = ovmf_only_snp_digest(&fw, vcpus, cpu_signature(f, m, s), features)
            .expect("OVMF has a SEV-ES reset block");
        assert_eq!(hex(&ours), theirs.trim(), "{path} {vcpus} x {cpu}");
    }
}

/// Replays a list of page operations through sev-snp-measure's GCTX.
const REPLAY: &str = r#"
import sys
from sevsnpmeasure.gctx import GCTX
from sevsnpmeasure.vmsa import VMSA, VMSA_SVSM
from sevsnpmeasure.vmm_types import VMMType
ops, blob = open(sys.argv[1]).read().split("\n"), open(sys.argv[2], "rb").read()
g = GCTX()
sig = 0
for line in ops:
    f = line.split()
    if not f:
        continue
    gpa = int(f[1], 16) if len(f) > 1 else 0
    if f[0] == "normal":
        off, n = int(f[2]), int(f[3])
        g.update_normal_pages(gpa, blob[off:off + n] + bytes(4096 - n))
    elif f[0] == "zero":
        g.update_zero_pages(gpa, 4096)
    elif f[0] == "unmeasured":
        g.update_unmeasured_pages(gpa, 4096)
    elif f[0] == "secrets":
        g.update_secrets_page(gpa)
    elif f[0] == "cpuid":
        g.update_cpuid_page(gpa)
    elif f[0] == "svsm_vmsa":
        eip, rbx, sig, vcpus = gpa, int(f[2], 16), int(f[3], 16), int(f[4])
        sa = VMSA_SVSM.build_save_area(eip, 0x1, sig, VMMType.QEMU)
        sa.rbx = rbx
        # 0.0.13's SVSM builder passes `fcw=`, which is no field, so x87_fcw
        # stays 0 there; QEMU's reset value (its non-SVSM builder) is 0x37f.
        sa.x87_fcw = 0x37f
        for _ in range(vcpus):
            g.update_vmsa_page(bytes(sa))
    else:
        raise SystemExit("unknown op " + f[0])
print(g.hex_ld())
guest = VMSA.build_save_area(0xFFFFFFF0, 0x1, sig, VMMType.QEMU)
guest.vmpl = 2
print(bytes(guest).hex())
"#;

/// Turn the directives read back from the file into page operations, the
/// way QEMU hands them to KVM (PageData without data = ZERO, parameter areas
/// = UNMEASURED, VMSAs after everything else).
fn replay_ops(file: &IgvmFile, vcpus: u32) -> (String, Vec<u8>, Vec<u8>) {
    let mut ops = String::new();
    let mut blob = Vec::new();
    let mut vmsa_line = None;
    let mut guest_page = Vec::new();
    let mut area_sizes = std::collections::HashMap::new();
    let guest_gpa = {
        // The launch-info page is the first page after the kernel; its
        // guest-context field (0x58) names the guest's state page.
        let li = file
            .directives()
            .iter()
            .find_map(|d| match d {
                IgvmDirectiveHeader::PageData { data, .. } if data.starts_with(b"RIVETLI\0") => {
                    Some(data.clone())
                }
                _ => None,
            })
            .expect("a launch-info page");
        u64::from_le_bytes(li[0x58..0x60].try_into().unwrap())
    };
    for d in file.directives() {
        match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                flags,
                data_type,
                data,
                ..
            } => {
                assert!(!flags.shared() && !flags.unmeasured() && !flags.is_2mb_page());
                if *gpa == guest_gpa {
                    guest_page = data.clone();
                }
                let line = match *data_type {
                    IgvmPageDataType::SECRETS => format!("secrets {gpa:x}"),
                    IgvmPageDataType::CPUID_DATA => format!("cpuid {gpa:x}"),
                    IgvmPageDataType::NORMAL if data.is_empty() => format!("zero {gpa:x}"),
                    IgvmPageDataType::NORMAL => {
                        let l = format!("normal {gpa:x} {} {}", blob.len(), data.len());
                        blob.extend_from_slice(data);
                        l
                    }
                    other => panic!("unexpected page type {other:?}"),
                };
                ops.push_str(&line);
                ops.push('\n');
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } => {
                area_sizes.insert(*parameter_area_index, *number_of_bytes);
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let size = area_sizes[&p.parameter_area_index];
                for off in (0..size).step_by(4096) {
                    let _ = writeln!(ops, "unmeasured {:x}", p.gpa + off);
                }
            }
            IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => {
                vmsa_line = Some(format!(
                    "svsm_vmsa {:x} {:x} {:x} {vcpus}\n",
                    vmsa.rip, vmsa.rbx, vmsa.rdx
                ));
            }
            _ => {}
        }
    }
    ops.push_str(&vmsa_line.expect("a VMSA"));
    (ops, blob, guest_page)
}

#[test]
fn rivet_snp_image_digest_matches_a_replay_through_sev_snp_measure() {
    let dir = common::scratch("replay");
    let script = dir.join("replay.py");
    std::fs::write(&script, REPLAY).unwrap();
    // A synthetic kernel and the real one (built here, debug).
    let real = rivet_qemu::KernelBuild::default()
        .build()
        .unwrap_or_else(|e| panic!("building the kernel: {e}"));
    let kernels = [
        common::kernel(),
        std::fs::read(&real).unwrap_or_else(|e| panic!("{}: {e}", real.display())),
    ];
    let cases = kernels.iter().flat_map(|k| {
        [
            (k, common::OVMF_2M, 1, cpu_signature(23, 1, 2)),
            (k, common::OVMF, 3, cpu_signature(25, 17, 0)),
        ]
    });
    for (kernel, fw_path, vcpus, sig) in cases {
        let mut opts = Options::new(Platform::Snp);
        opts.vcpus = vcpus;
        opts.vcpu_signature = sig;
        let image = build(kernel, &common::read(fw_path), &opts).expect("build");
        let Some(Measurement::Snp(ours)) = image.measurement else {
            panic!("an SNP image has an SNP measurement");
        };
        let file = IgvmFile::new_from_binary(&image.bytes, Some(igvm::IsolationType::Snp))
            .expect("parses back");
        let (ops, blob, guest_page) = replay_ops(&file, vcpus);
        let ops_path = dir.join("ops.txt");
        let blob_path = dir.join("pages.bin");
        std::fs::write(&ops_path, ops).unwrap();
        std::fs::write(&blob_path, blob).unwrap();
        let out = python(&[
            script.to_str().unwrap(),
            ops_path.to_str().unwrap(),
            blob_path.to_str().unwrap(),
        ]);
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some(hex(&ours).as_str()),
            "{fw_path}, {vcpus} vCPUs"
        );
        assert_eq!(
            lines.next(),
            Some(hex(&guest_page).as_str()),
            "the guest's VMPL2 state page differs from sev-snp-measure's QEMU reset VMSA"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
