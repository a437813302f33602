//! Builds the Rivet kernel image and boots it under QEMU, showing its serial
//! output; exits 0 only if the kernel reported success.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rivet_qemu::{Boot, Exit, KernelBuild, median};

/// Build and boot the Rivet SVSM under QEMU (TCG).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Boot the in-kernel test image instead of the normal kernel.
    #[arg(long)]
    ktest: bool,
    /// Optimised kernel build.
    #[arg(long)]
    release: bool,
    /// Kernel command line (e.g. "rivet.log=debug").
    #[arg(long, default_value = "")]
    append: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Seconds before the boot is killed.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Boot the SVSM alone, without the test guest firmware.
    #[arg(long)]
    no_guest: bool,
    /// Boot this many times and print the median boot-to-ready time.
    #[arg(long, default_value_t = 1)]
    boots: u32,
    /// Extra QEMU arguments (after `--`).
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let build = KernelBuild {
        features: if args.ktest {
            vec!["ktest".into()]
        } else {
            vec![]
        },
        release: args.release,
        ..KernelBuild::default()
    };
    let guest = (!args.ktest && !args.no_guest).then(|| KernelBuild {
        release: args.release,
        ..KernelBuild::guest_firmware()
    });
    let built = build
        .build()
        .and_then(|k| Ok((k, guest.map(|g| g.build()).transpose()?)));
    let (kernel, guest) = match built {
        Ok(images) => images,
        Err(e) => {
            eprintln!("rivet-run: {e}");
            return ExitCode::from(2);
        }
    };
    let size = std::fs::metadata(&kernel).map(|m| m.len()).unwrap_or(0);
    eprintln!("rivet-run: image {} ({size} bytes)", kernel.display());
    if let Some(g) = &guest {
        eprintln!("rivet-run: guest firmware {}", g.display());
    }
    // A fresh simulated attestation key for this run, never in the image.
    let key = rivet_qemu::workspace_root()
        .join("target")
        .join("rivet-run-report-key");
    if let Err(e) = rivet_qemu::write_report_key(&key) {
        eprintln!("rivet-run: cannot write {}: {e}", key.display());
        return ExitCode::from(2);
    }
    let mut ready = Vec::new();
    let mut last = None;
    for i in 0..args.boots.max(1) {
        let mut boot = Boot::new(&kernel).report_key(&key);
        if let Some(g) = &guest {
            boot = boot.guest_firmware(g);
        }
        let boot = boot
            .append(args.append.clone())
            .memory_mib(args.memory)
            .timeout(Duration::from_secs(args.timeout))
            .extra_args(args.qemu_args.clone())
            .echo(i == 0);
        let outcome = match boot.run() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("rivet-run: {e}");
                return ExitCode::from(2);
            }
        };
        if !outcome.stderr.trim().is_empty() {
            eprint!("{}", outcome.stderr);
        }
        if let Some(t) = outcome.ready_after {
            ready.push(t);
        }
        let failed = outcome.exit != Exit::Success;
        last = Some(outcome);
        if failed {
            break;
        }
    }
    let Some(last) = last else {
        return ExitCode::from(2);
    };
    eprintln!(
        "rivet-run: exit {:?} after {:.3} s",
        last.exit,
        last.elapsed.as_secs_f64()
    );
    if last.exit == Exit::Success && guest.is_some() {
        // The guest's evidence, appraised as a verifier would.
        match rivet_qemu::evidence::appraise_native(&last.serial, &key, &kernel) {
            Ok((evidence, appraisal)) => {
                let bundle = rivet_qemu::workspace_root()
                    .join("target")
                    .join("rivet-run-evidence.json");
                let text = serde_json::to_string_pretty(&evidence.to_json()).unwrap_or_default();
                if let Err(e) = std::fs::write(&bundle, text) {
                    eprintln!("rivet-run: cannot write {}: {e}", bundle.display());
                }
                println!("verifier: evidence bundle {}", bundle.display());
                for check in &appraisal.checks {
                    println!(
                        "verifier: {:<24} {:?}: {}",
                        check.name, check.status, check.reason
                    );
                }
                println!("verifier: verdict {:?}", appraisal.status);
                if appraisal.status == rivet_verifier::Status::Contraindicated {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("rivet-run: no evidence to appraise: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(m) = median(ready.clone()) {
        eprintln!(
            "rivet-run: boot-to-ready median {:.1} ms over {} boot(s)",
            m.as_secs_f64() * 1000.0,
            ready.len()
        );
    }
    if last.exit == Exit::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
