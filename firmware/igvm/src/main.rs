//! `rivet-igvm`: build an IGVM image and print its expected launch measurement.
//!
//! ```text
//! rivet-igvm build --kernel ELF --firmware OVMF.fd --platform snp|tdp|native -o out.igvm
//!            [--vcpus N] [--vcpu-sig 0xHEX] [--vmsa-gpa qemu|file] [--svsm-size BYTES]
//! ```

use std::process::ExitCode;

use rivet_firmware_igvm::measure::VmsaConvention;
use rivet_firmware_igvm::{Measurement, Options, Platform, build};

const USAGE: &str = "usage: rivet-igvm build --kernel ELF --firmware FIRMWARE.fd \
--platform snp|tdp|native -o OUT.igvm [--vcpus N] [--vcpu-sig 0xHEX] \
[--vmsa-gpa qemu|file] [--svsm-size BYTES]";

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("build") => {}
        _ => return Err(USAGE.to_string()),
    }
    let (mut kernel, mut firmware, mut platform, mut out) = (None, None, None, None);
    let mut vcpus = 1u32;
    let mut sig = None;
    let mut convention = VmsaConvention::QemuKvm;
    let mut svsm_size = None;
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--kernel" => kernel = Some(value()?),
            "--firmware" => firmware = Some(value()?),
            "--platform" => {
                let v = value()?;
                platform = Some(
                    Platform::from_name(&v)
                        .ok_or(format!("unknown platform {v:?}: snp, tdp or native"))?,
                );
            }
            "-o" | "--output" => out = Some(value()?),
            "--vcpus" => {
                let v = value()?;
                vcpus = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("bad vCPU count {v:?}"))?;
            }
            "--vcpu-sig" => {
                let v = value()?;
                sig = Some(
                    parse_u64(&v)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(format!("bad vCPU signature {v:?}"))?,
                );
            }
            "--vmsa-gpa" => {
                convention = match value()?.as_str() {
                    "qemu" => VmsaConvention::QemuKvm,
                    "file" => VmsaConvention::FileOrder,
                    v => return Err(format!("--vmsa-gpa {v:?}: qemu or file")),
                }
            }
            "--svsm-size" => {
                let v = value()?;
                svsm_size = Some(parse_u64(&v).ok_or(format!("bad size {v:?}"))?);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(kernel), Some(firmware), Some(platform), Some(out)) =
        (kernel, firmware, platform, out)
    else {
        return Err(format!(
            "--kernel, --firmware, --platform and -o are required\n{USAGE}"
        ));
    };
    let kernel_bytes = std::fs::read(&kernel).map_err(|e| format!("{kernel}: {e}"))?;
    let firmware_bytes = std::fs::read(&firmware).map_err(|e| format!("{firmware}: {e}"))?;
    let mut opts = Options::new(platform);
    opts.vcpus = vcpus;
    opts.vmsa_convention = convention;
    opts.svsm_size = svsm_size;
    if let Some(s) = sig {
        opts.vcpu_signature = s;
    }
    let image = build(&kernel_bytes, &firmware_bytes, &opts).map_err(|e| e.to_string())?;
    std::fs::write(&out, &image.bytes).map_err(|e| format!("{out}: {e}"))?;
    let l = &image.layout;
    eprintln!(
        "{out}: {} bytes; kernel {:#x}..{:#x} entry {:#x}; launch info {:#x}; firmware {:#x}..4 GiB",
        image.bytes.len(),
        l.info.kernel_start,
        l.info.kernel_end,
        l.kernel_entry,
        l.info.launch_pages_start,
        l.info.firmware_base
    );
    match image.measurement {
        Some(m @ Measurement::Snp(_)) => println!("snp-measurement: {}", m.hex()),
        Some(m @ Measurement::Tdx(_)) => println!("tdx-mrtd: {}", m.hex()),
        None => println!("native: no launch measurement"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rivet-igvm: {e}");
            ExitCode::FAILURE
        }
    }
}
