//! A real guest stack on the TPM engine: OVMF's measured boot and Debian's
//! cloud kernel with its tpm_crb driver, over QEMU's `-tpmdev emulator`
//! backed by `rivet-tpm-server --ctrl`; the same with swtpm as the check of
//! the test itself.
//!
//! Per backend, two QEMU runs on one TPM state and one OVMF variable store:
//! 1. boot 1 (fresh TPM) makes an EK and an AK, makes the AK persistent,
//!    writes an NV index, quotes PCRs 0-9, and reboots the machine (QEMU
//!    resets the TPM through the control channel: STOP, SET_BUFFERSIZE,
//!    INIT); boot 2 finds the AK and the NV data and quotes again;
//! 2. after the TPM emulator is restarted, boot 3 does as boot 2.
//!
//! For every boot the host checks, with the verifier library, that the
//! firmware event log replays to the PCR values the kernel reads, and that
//! the quote verifies under boot 1's AK and carries the boot's nonce and
//! those PCRs. Across boots: the same EK, AK and NV data, and the same
//! firmware measurements in PCRs 0-7. swtpm is manufactured with the same
//! PCR banks as the engine (SHA-1, SHA-256). The test prints the boot times
//! (QEMU start or reset to the guest's first userspace line) of both.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rivet_tests::hex;
use rivet_tests::linux_guest::{
    CheckedBoot, GuestVm, OVMF_VARS, TpmBackend, TpmProcess, checked_boots, initramfs, kernel,
    random_bytes,
};
use rivet_verifier::{eventlog, tpm};

/// TPM_ALG_SHA256.
const SHA256: u16 = 0x000B;
const NV_TEXT: &str = "rivet-linux-guest-nv";

struct Nonces {
    first: Vec<u8>,
    second: Vec<u8>,
}

impl Nonces {
    fn for_phase(&self, phase: &str) -> &[u8] {
        if phase == "first" {
            &self.first
        } else {
            &self.second
        }
    }
}

/// The checks of one boot; `ak_public` (TPM2B_PUBLIC) is the AK to verify
/// the quote with (default: the one this boot sent).
fn verify_boot(boot: &CheckedBoot, nonce: &[u8], ak_public: Option<&[u8]>) -> Result<(), String> {
    if !boot.failures.is_empty() {
        return Err(format!("the guest failed: {:?}", boot.failures));
    }
    if !boot.ok.iter().any(|o| o == "devices") {
        return Err("no /dev/tpm0 + /dev/tpmrm0 report".into());
    }
    if boot.done_time.is_none() {
        return Err("the guest did not finish (no RIVET-DONE)".into());
    }
    let sha256 = boot
        .pcrs
        .get("sha256")
        .ok_or("no SHA-256 PCRs from sysfs")?;
    if sha256.len() != 24 {
        return Err(format!("{} SHA-256 PCRs from sysfs, not 24", sha256.len()));
    }
    let pcrs: tpm::PcrValues = boot.pcrs.clone().into_iter().collect();

    // The firmware event log replays to the PCRs the kernel reads.
    let log = eventlog::parse(boot.blob("eventlog")?)?;
    if !log.crypto_agile {
        return Err("the event log is not in the crypto-agile format".into());
    }
    let replay = eventlog::replay(&log);
    let replayed_256 = replay.get("sha256").ok_or("no SHA-256 events in the log")?;
    for i in 0..=7 {
        if !replayed_256.contains_key(&i) {
            return Err(format!("the log measures nothing into SHA-256 PCR {i}"));
        }
    }
    eventlog::compare_with_pcrs(&replay, &pcrs).map_err(|e| format!("event log: {e}"))?;

    // The quote: signed by the AK (boot 1's, for later boots), over the
    // host's nonce and SHA-256 PCRs 0-9 with the values read from sysfs.
    let ak_pub = ak_public.unwrap_or(boot.blob("ak.pub")?);
    let ak = tpm::parse_public(ak_pub)?;
    let attest_bytes = boot.blob("quote.msg")?;
    let hash = tpm::verify_signature(&ak, attest_bytes, boot.blob("quote.sig")?)
        .map_err(|e| format!("quote: {e}"))?;
    let attest = tpm::parse_attest(attest_bytes)?;
    if attest.extra_data != nonce {
        return Err(format!(
            "quote nonce {} is not the host's {}",
            hex(&attest.extra_data),
            hex(nonce)
        ));
    }
    let want = vec![tpm::PcrSelection {
        hash: SHA256,
        pcrs: (0..=9).collect(),
    }];
    if attest.selection != want {
        return Err(format!("quote selects {:?}", attest.selection));
    }
    tpm::check_pcr_digest(&attest, &pcrs, hash).map_err(|e| format!("quote: {e}"))?;
    Ok(())
}

/// Both QEMU runs of one backend; returns the three boots.
fn run_backend(
    backend: TpmBackend,
    kernel: &Path,
    initrd: &Path,
    nonces: &Nonces,
) -> Vec<CheckedBoot> {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("OVMF_VARS_4M.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF (qemu/setup.sh installs ovmf)");
    let append = |after: &str| {
        format!(
            "rivet.nonce.first={} rivet.nonce.second={} rivet.nvdata={NV_TEXT} rivet.after={after}",
            hex(&nonces.first),
            hex(&nonces.second)
        )
    };
    let mut boots = Vec::new();
    for (run, allow_reboot) in [(1, true), (2, false)] {
        let tpm = TpmProcess::start(backend, dir.path(), run);
        let vm = GuestVm {
            kernel,
            initrd,
            ovmf_vars: &vars,
            tpm_ctrl: &tpm.ctrl,
            append: append(if allow_reboot { "reboot" } else { "poweroff" }),
            allow_reboot,
            timeout: Duration::from_secs(if allow_reboot { 150 } else { 90 }),
        };
        let output = vm.run().unwrap_or_else(|e| {
            panic!(
                "{backend:?}, QEMU run {run}: {e}\nTPM log: {}",
                tpm.log_text()
            )
        });
        let tail = output.tail(30);
        let log = tpm.log_text();
        // QEMU sends SHUTDOWN on exit: both emulators save and exit then.
        let status = tpm
            .finish()
            .unwrap_or_else(|e| panic!("{backend:?}, run {run}: {e}"));
        assert!(status.success(), "{backend:?} exited with {status}: {log}");
        let run_boots = checked_boots(&output)
            .unwrap_or_else(|e| panic!("{backend:?}, run {run}: {e}\n{tail}"));
        let want_phases: &[&str] = if allow_reboot {
            &["first", "second"]
        } else {
            &["second"]
        };
        let phases: Vec<&str> = run_boots.iter().map(|b| b.phase.as_str()).collect();
        assert_eq!(
            phases, want_phases,
            "{backend:?}, QEMU run {run}: boots by phase; console tail:\n{tail}\nTPM log: {log}"
        );
        println!(
            "{backend:?} run {run}: QEMU exited after {:.1} s",
            output.elapsed.as_secs_f64()
        );
        boots.extend(run_boots);
    }
    boots
}

fn check_backend(backend: TpmBackend, boots: &[CheckedBoot], nonces: &Nonces) {
    let first = &boots[0];
    verify_boot(first, &nonces.first, None).unwrap_or_else(|e| panic!("{backend:?}, boot 1: {e}"));
    let ak = first.blob("ak.pub").unwrap();
    // The checks can fail: a wrong nonce, a PCR the log does not explain.
    assert!(verify_boot(first, &nonces.second, None).is_err());
    let mut forged = first.clone();
    forged.pcrs.get_mut("sha256").unwrap().get_mut(&0).unwrap()[0] ^= 1;
    let err = verify_boot(&forged, &nonces.first, None).unwrap_err();
    assert!(err.contains("event log"), "{err}");
    for (n, boot) in boots.iter().enumerate().skip(1) {
        let which = format!("{backend:?}, boot {}", n + 1);
        verify_boot(boot, nonces.for_phase(&boot.phase), Some(ak))
            .unwrap_or_else(|e| panic!("{which}: {e}"));
        // Persistent object and NV index kept; same seeds, same EK.
        assert_eq!(
            boot.blob("ak.pub").unwrap(),
            ak,
            "{which}: persistent AK changed"
        );
        assert_eq!(
            boot.blob("nvdata").unwrap(),
            NV_TEXT.as_bytes(),
            "{which}: NV data"
        );
        assert_eq!(
            boot.blob("ek.pub").unwrap(),
            first.blob("ek.pub").unwrap(),
            "{which}: EK changed"
        );
        // The firmware measures the same into PCRs 0-7 on every boot.
        assert_eq!(
            boot.pcrs.keys().collect::<Vec<_>>(),
            first.pcrs.keys().collect::<Vec<_>>()
        );
        for (bank, values) in &first.pcrs {
            for i in 0..=7 {
                assert_eq!(
                    boot.pcrs[bank][&i], values[&i],
                    "{which}: {bank} PCR {i} differs from boot 1"
                );
            }
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() - 1) / 2]
}

#[test]
fn ovmf_linux_guest_on_rivet_and_on_swtpm() {
    let started = Instant::now();
    let kernel = kernel();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.cpio.gz");
    initramfs("qemu/linux-guest/init-check", &initrd);
    let nonces = Nonces {
        first: random_bytes(16),
        second: random_bytes(16),
    };

    let mut boot_times = BTreeMap::new();
    let mut banks = Vec::new();
    for backend in [TpmBackend::Rivet, TpmBackend::Swtpm] {
        let boots = run_backend(backend, &kernel, &initrd, &nonces);
        check_backend(backend, &boots, &nonces);
        banks.push(boots[0].pcrs.keys().cloned().collect::<Vec<_>>());
        for (n, b) in boots.iter().enumerate() {
            println!(
                "{backend:?} boot {}: userspace after {:.2} s, TPM work done after {:.2} s",
                n + 1,
                b.boot_time.as_secs_f64(),
                b.done_time.unwrap_or_default().as_secs_f64()
            );
        }
        boot_times.insert(
            backend,
            (
                median(boots.iter().map(|b| b.boot_time).collect()),
                median(boots.iter().filter_map(|b| b.done_time).collect()),
            ),
        );
    }
    // Same banks, so that the firmware does the same work on both.
    assert_eq!(banks[0], banks[1], "PCR banks: Rivet vs swtpm");
    let (ours, ours_done) = boot_times[&TpmBackend::Rivet];
    let (theirs, theirs_done) = boot_times[&TpmBackend::Swtpm];
    println!(
        "boot time to userspace, median of 3 (QEMU start or reset to RIVET-READY): \
         Rivet {:.2} s, swtpm {:.2} s, ratio {:.2}",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "boot + EK/AK/quote, median of 3 (to RIVET-DONE): Rivet {:.2} s, swtpm {:.2} s, ratio {:.2}",
        ours_done.as_secs_f64(),
        theirs_done.as_secs_f64(),
        ours_done.as_secs_f64() / theirs_done.as_secs_f64()
    );
    println!("test time {:.0} s", started.elapsed().as_secs_f64());
}
