//! The SVSM serves a guest under plain QEMU: the test guest firmware runs as
//! a nested SVM guest, calls every protocol call (good and bad), runs a TPM
//! session through the vTPM protocol, and the host checks what it printed
//! against its own computation from the firmware image.

use std::path::PathBuf;
use std::time::Duration;

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use rivet_qemu::evidence::{appraise_native, guest_evidence, loaded_read_only_image};
use rivet_qemu::{Boot, Exit, KernelBuild};
use rivet_tests::hex;
use rivet_tests::tools::unhex;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Every check the guest firmware must report as passed.
const GUEST_CHECKS: [&str; 57] = [
    "query_core_v1",
    "query_vtpm_v1",
    "query_attest_v1",
    "query_core_v7_unsupported",
    "call_pending_cleared",
    "remap_ca_and_back",
    "pvalidate_one_page",
    "create_vcpu_unsupported",
    "delete_vcpu_unknown_vmsa",
    "configure_vtom_query",
    "deposit_mem_unsupported",
    "withdraw_mem_unsupported",
    "vtpm_query",
    "tpm_already_started",
    "tpm_get_random",
    "tpm_get_capability",
    "tpm_pcr_extend",
    "tpm_pcr_read_matches",
    "tpm_create_primary_ak",
    "tpm_pcr_read_0_7",
    "tpm_pcr_read_8_9",
    "tpm_quote",
    "tpm_flush_ak",
    "attest_services",
    "attest_single_service_vtpm",
    "attest_single_service_vtpm_v1",
    "bad_attest_small_report_buffer_gets_lengths",
    "bad_attest_unknown_service",
    "bad_attest_request_in_svsm",
    "nv_read_ek_cert_rsa",
    "nv_read_ek_cert_ecc",
    "nv_read_ak_cert_ecc",
    "nv_read_ak_cert_rsa",
    "nv_read_binding_cert",
    "bad_unknown_protocol",
    "bad_unknown_core_call",
    "bad_unknown_vtpm_call",
    "bad_configure_vtom",
    "bad_create_vcpu_vmsa_in_svsm",
    "bad_create_vcpu_misaligned",
    "bad_remap_ca_misaligned",
    "bad_remap_ca_svsm_memory",
    "bad_remap_ca_beyond_memory",
    "bad_pvalidate_request_in_svsm",
    "bad_pvalidate_request_misaligned",
    "bad_pvalidate_svsm_page",
    "bad_pvalidate_2m_misaligned",
    "bad_pvalidate_crosses_page",
    "bad_call_without_call_pending_ignored",
    "bad_vtpm_buffer_in_svsm",
    "bad_vtpm_buffer_beyond_memory",
    "bad_vtpm_size_beyond_buffer",
    "bad_vtpm_locality",
    "bad_vtpm_platform_command",
    "bad_vtpm_lying_size_gets_tpm_error",
    "bad_vtpm_garbage_gets_tpm_error",
    "still_serving_after_bad_input",
];

fn build(b: KernelBuild) -> PathBuf {
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

fn value<'a>(serial: &'a str, key: &str) -> &'a str {
    serial
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{serial}"))
        .trim()
}

#[test]
fn svsm_serves_the_guest_firmware() {
    let kernel = build(KernelBuild::default());
    let firmware = build(KernelBuild::guest_firmware());
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("report-key");
    rivet_qemu::write_report_key(&key_path).unwrap();
    let key = SigningKey::from_slice(&std::fs::read(&key_path).unwrap()).unwrap();
    let out = Boot::new(&kernel)
        .guest_firmware(&firmware)
        .report_key(&key_path)
        .append("rivet.bench")
        .timeout(Duration::from_secs(120))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let serial = &out.serial;

    let mut missing = Vec::new();
    for name in GUEST_CHECKS {
        match serial
            .lines()
            .find(|l| l.starts_with(&format!("guest: check {name} ... ")))
        {
            Some(l) if l.ends_with("... ok") => {}
            Some(l) => panic!("guest check failed: {l}\n{serial}"),
            None => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "no result for {missing:?}:\n{serial}");
    let reported = serial
        .lines()
        .filter(|l| l.starts_with("guest: check "))
        .count();
    assert_eq!(
        reported,
        GUEST_CHECKS.len(),
        "unexpected extra checks:\n{serial}"
    );
    assert!(
        serial.contains(&format!(
            "guest: result: {} passed, 0 failed",
            GUEST_CHECKS.len()
        )),
        "{serial}"
    );
    assert!(serial.contains("guest halted after"), "{serial}");
    assert_eq!(out.exit, Exit::Success, "{serial}\n{}", out.stderr);

    // The guest measured the image the SVSM loaded into PCR 8: recompute both.
    let image = loaded_read_only_image(&std::fs::read(&firmware).unwrap()).unwrap();
    let measurement = Sha256::digest(&image);
    assert_eq!(
        value(serial, "guest: evidence measurement_sha256="),
        hex(&measurement)
    );
    let mut pcr = Sha256::new();
    pcr.update([0u8; 32]);
    pcr.update(measurement);
    assert_eq!(
        value(serial, "guest: evidence pcr8_sha256="),
        hex(&pcr.finalize())
    );

    // The attestation evidence: REPORT_DATA binds nonce and manifest, the
    // report verifies under the key the host handed in (and not once a bit
    // is flipped), and the measurement is the SVSM image that ran.
    let nonce = unhex(value(serial, "guest: evidence nonce="));
    let manifest = unhex(value(serial, "guest: evidence services_manifest="));
    let mut report = unhex(value(serial, "guest: evidence report="));
    assert_eq!(report.len(), 0x4A0);
    assert_eq!(
        &manifest[..4],
        &[0xbb, 0x9e, 0x84, 0x63],
        "services manifest GUID"
    );
    assert_eq!(
        u32::from_le_bytes(manifest[16..20].try_into().unwrap()) as usize,
        manifest.len()
    );
    assert_eq!(
        u32::from_le_bytes(manifest[20..24].try_into().unwrap()),
        1,
        "one service"
    );
    assert_eq!(
        &manifest[24..28],
        &[0xeb, 0xf1, 0x76, 0xc4],
        "the vTPM service GUID"
    );
    let off = u32::from_le_bytes(manifest[40..44].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(manifest[44..48].try_into().unwrap()) as usize;
    check_ek_rsa_public(&manifest[off..off + len]);
    let mut h = Sha512::new();
    h.update(&nonce);
    h.update(&manifest);
    assert_eq!(
        &report[0x50..0x90],
        h.finalize().as_slice(),
        "REPORT_DATA != SHA-512(nonce || manifest)"
    );
    let kernel_measurement = rivet_qemu::evidence::native_measurement(&kernel).unwrap();
    assert_eq!(
        &report[0x90..0xC0],
        kernel_measurement.as_slice(),
        "launch measurement"
    );
    let vk = VerifyingKey::from(&key);
    assert!(report_signature_ok(&report, &vk), "report signature");
    // The single-service attestation: the manifest is the EK itself.
    let vtpm_manifest = unhex(value(serial, "guest: evidence vtpm_manifest="));
    let vtpm_report = unhex(value(serial, "guest: evidence vtpm_report="));
    check_ek_rsa_public(&vtpm_manifest);
    assert_eq!(
        &vtpm_manifest[..],
        &manifest[off..off + len],
        "the same EK in both manifests"
    );
    let mut h = Sha512::new();
    h.update(&nonce);
    h.update(&vtpm_manifest);
    assert_eq!(&vtpm_report[0x50..0x90], h.finalize().as_slice());
    assert!(
        report_signature_ok(&vtpm_report, &vk),
        "single-service report signature"
    );
    report[0x50] ^= 1;
    assert!(
        !report_signature_ok(&report, &vk),
        "a flipped REPORT_DATA bit still verifies"
    );

    // The quote: signed by the AK, over the nonce and PCRs 0-9 as read.
    let pcrs: Vec<Vec<u8>> = (0..10)
        .map(|i| unhex(value(serial, &format!("guest: evidence pcr_sha256_{i}="))))
        .collect();
    assert_eq!(hex(&pcrs[8]), value(serial, "guest: evidence pcr8_sha256="));
    let quote_nonce = unhex(value(serial, "guest: evidence quote_nonce="));
    let ak_public = unhex(value(serial, "guest: evidence ak_public="));
    let attest = unhex(value(serial, "guest: evidence quote_attest="));
    let signature = unhex(value(serial, "guest: evidence quote_signature="));
    check_quote(&ak_public, &attest, &signature, &quote_nonce, &pcrs);

    // Manifest version 1 binds both EKs and both AKs to a report; the AK the
    // SVSM made (and persisted) is the very key that signed the guest's quote.
    let v1 = unhex(value(serial, "guest: evidence vtpm_manifest_v1="));
    let v1_report = unhex(value(serial, "guest: evidence vtpm_report_v1="));
    let mut h = Sha512::new();
    h.update(&nonce);
    h.update(&v1);
    assert_eq!(
        &v1_report[0x50..0x90],
        h.finalize().as_slice(),
        "v1 REPORT_DATA"
    );
    assert!(report_signature_ok(&v1_report, &vk), "v1 report signature");
    let keys = parse_manifest_v1(&v1);
    let kinds: Vec<(u16, u32)> = keys.iter().map(|k| (k.0, k.1)).collect();
    assert_eq!(kinds, [(1, 0), (2, 0), (3, 0x8101_8000), (4, 0x8101_8001)]);
    assert_eq!(keys[0].2, vtpm_manifest, "v1's RSA EK is version 0's EK");
    assert_eq!(
        &keys[1].2[0..8],
        &[0x00, 0x23, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2],
        "ECC EK"
    );
    assert_eq!(
        keys[2].2, ak_public,
        "the quote's AK is the AK in the report"
    );
    assert_eq!(
        &keys[3].2[0..8],
        &[0x00, 0x01, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72],
        "RSA AK"
    );

    // The guest read the EK certificates (and the AK and binding
    // certificates) from NV: they chain to the certificate that carries the
    // report, and the certified keys are the manifest's.
    check_nv_certificates(serial, &keys, &vk, &kernel_measurement);

    // The verifier: with the simulated key passed explicitly every check it
    // can run passes, and the verdict is only a warning (not hardware-rooted,
    // no event log); without it the evidence is rejected for that reason.
    let (_, appraisal) = appraise_native(serial, &key_path, &kernel).unwrap();
    for check in &appraisal.checks {
        assert_ne!(
            check.status,
            rivet_verifier::Status::Contraindicated,
            "{check:?}"
        );
    }
    for name in [
        "snp.report_signature",
        "binding.report_data",
        "policy.measurement",
        "policy.vmpl",
        "tpm.quote_signature",
        "tpm.nonce",
        "tpm.pcr_digest",
        "tpm.ak_binding",
        "certs.binding",
        "certs.binding_report",
        "certs.binding_report_data",
        "certs.chain",
        "certs.ek_keys",
        "certs.ak_keys",
    ] {
        let c = appraisal
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(c.status, rivet_verifier::Status::Affirming, "{c:?}");
    }
    assert_eq!(appraisal.status, rivet_verifier::Status::Warning);
    // The same evidence (it names its simulated key) without that key passed
    // as a trust root.
    let public = rivet_qemu::evidence::report_public_key(&key_path).unwrap();
    let evidence = guest_evidence(serial, Some(public)).unwrap();
    let unrooted = rivet_verifier::appraise(&evidence, &rivet_verifier::Policy::default());
    assert_eq!(unrooted.status, rivet_verifier::Status::Contraindicated);
    assert!(
        unrooted
            .checks
            .iter()
            .any(|c| c.status == rivet_verifier::Status::Contraindicated
                && c.reason.contains("not hardware-rooted")),
        "{:#?}",
        unrooted.checks
    );

    // Figures for the record (printed, not asserted).
    let hz: f64 = value(serial, "[INFO ] rivet_kernel::boot::init: TSC ")
        .trim_end_matches(" Hz")
        .parse()
        .unwrap();
    let (n, ticks) = perf(serial, "guest: perf vtpm_quote=");
    let guest_quote = ticks / hz / n;
    let (n, ticks) = perf(serial, "bench: svsm_quote=");
    let svsm_quote = ticks / hz / n;
    let host_quote = host_quote_seconds(10);
    eprintln!(
        "Quote (ECDSA P-256, PCRs 0-9): guest through the vTPM protocol {:.2} ms, on the engine inside the SVSM {:.2} ms \
         (SVSM overhead ratio {:.2}), on the engine in this host process {:.2} ms (guest/host ratio {:.1}, mostly TCG)",
        guest_quote * 1e3,
        svsm_quote * 1e3,
        guest_quote / svsm_quote,
        host_quote * 1e3,
        guest_quote / host_quote
    );
    for key in [
        "guest: perf svsm_calls=",
        "guest: perf vtpm_get_random=",
        "guest: perf vtpm_quote=",
    ] {
        let v = value(serial, key);
        let (n, ticks) = v.split_once(" tsc_ticks=").unwrap();
        let (n, ticks): (f64, f64) = (n.parse().unwrap(), ticks.parse().unwrap());
        eprintln!("{key}{n}: {:.0} per second under TCG", n / (ticks / hz));
    }
}

/// The certificates the guest read from NV, checked on the host: the EK
/// certificates' keys are the manifest's EKs (the AK certificates' its
/// AKs), every one is signed by the binding key, and the binding
/// certificate is self-signed and carries a report, signed by the host's
/// simulated key for this very SVSM image, whose REPORT_DATA is
/// SHA-512("Rivet vTPM binding key v1\0" || the binding key's SPKI).
fn check_nv_certificates(
    serial: &str,
    keys: &[(u16, u32, Vec<u8>)],
    vk: &VerifyingKey,
    kernel_measurement: &[u8],
) {
    use rivet_verifier::cert::Cert;
    let cert = |name: &str| {
        let der = unhex(value(serial, &format!("guest: evidence {name}=")));
        Cert::from_der(&der).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let binding = cert("binding_cert");
    binding
        .verify_signed_by(&binding)
        .expect("binding certificate self-signed");
    let (format, report) = rivet_verifier::vtpm_certs::carried_report(&binding).unwrap();
    assert_eq!(format, "sev-snp-attestation-report");
    assert_eq!(report.len(), 0x4A0);
    assert!(report_signature_ok(&report, vk), "carried report signature");
    let mut flipped = report.clone();
    flipped[0x50] ^= 1;
    assert!(!report_signature_ok(&flipped, vk));
    assert_eq!(&report[0x90..0xC0], kernel_measurement, "same SVSM image");
    let mut h = Sha512::new();
    h.update(b"Rivet vTPM binding key v1\0");
    h.update(binding.spki_der().unwrap());
    assert_eq!(
        &report[0x50..0x90],
        h.finalize().as_slice(),
        "REPORT_DATA binds the binding key"
    );
    for (name, kind, eku) in [
        ("ek_cert_rsa", 1u16, "2.23.133.8.1"),
        ("ek_cert_ecc", 2, "2.23.133.8.1"),
        ("ak_cert_ecc", 3, "2.23.133.8.3"),
        ("ak_cert_rsa", 4, "2.23.133.8.3"),
    ] {
        let c = cert(name);
        c.verify_signed_by(&binding)
            .unwrap_or_else(|e| panic!("{name} not signed by the binding key: {e}"));
        assert!(
            c.verify_signed_by(&cert("ek_cert_ecc")).is_err(),
            "{name}: verifies under a key that did not sign it"
        );
        let public = &keys.iter().find(|k| k.0 == kind).unwrap().2;
        let key = rivet_verifier::tpm::parse_public(public).unwrap();
        assert!(
            rivet_verifier::tpm::key_matches_spki(&key, &c.spki_der().unwrap()),
            "{name}: its key is the manifest's key of kind {kind}"
        );
        assert!(c.subject().is_empty(), "{name}: empty subject");
        assert_eq!(c.issuer(), binding.subject());
        let eku_der = c.extension("2.5.29.37").expect("EKU");
        assert!(hex(eku_der).contains(&eku_hex(eku)), "{name}: EKU {eku}");
        let san = c.extension("2.5.29.17").expect("subjectAltName");
        for attr in ["2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"] {
            assert!(hex(san).contains(&eku_hex(attr)), "{name}: SAN has {attr}");
        }
        assert!(hex(san).contains(&hex(b"id:52564554")), "manufacturer RVET");
    }
}

/// The DER contents of an OID (tcg arcs 2.23.133.x.y only).
fn eku_hex(oid: &str) -> String {
    let arcs: Vec<u8> = oid.split('.').map(|a| a.parse().unwrap()).collect();
    assert_eq!(&arcs[..3], &[2, 23, 133]);
    // 2.23 -> 0x67, 133 -> 0x81 0x05, then small arcs.
    let mut b = vec![0x67, 0x81, 0x05];
    b.extend_from_slice(&arcs[3..]);
    hex(&b)
}

/// The vTPM manifest version 1: (kind, persistent handle, TPMT_PUBLIC)s.
fn parse_manifest_v1(m: &[u8]) -> Vec<(u16, u32, Vec<u8>)> {
    assert_eq!(&m[0..2], &[0, 1], "version 1");
    let count = u16::from_be_bytes([m[2], m[3]]) as usize;
    let mut at = 4;
    let mut keys = Vec::new();
    for _ in 0..count {
        let kind = u16::from_be_bytes([m[at], m[at + 1]]);
        let handle = u32::from_be_bytes(m[at + 2..at + 6].try_into().unwrap());
        let (public, next) = tpm2b(m, at + 6);
        keys.push((kind, handle, public.to_vec()));
        at = next;
    }
    assert_eq!(at, m.len(), "nothing after the keys");
    keys
}

/// (count, TSC ticks) of a guest perf line.
fn perf(serial: &str, key: &str) -> (f64, f64) {
    let v = value(serial, key);
    let (n, ticks) = v.split_once(" tsc_ticks=").unwrap();
    (n.parse().unwrap(), ticks.parse().unwrap())
}

/// The engine in this process: OS entropy, a wall clock, no persistence.
struct HostPlatform(std::time::Instant);

impl rivet_tpm::Platform for HostPlatform {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), rivet_tpm::PlatformError> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .map_err(|_| rivet_tpm::PlatformError("no /dev/urandom"))
    }
    fn now_ms(&mut self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    fn commit(&mut self, _: &[u8]) -> Result<(), rivet_tpm::PlatformError> {
        Ok(())
    }
}

/// Seconds per Quote of the same AK and PCRs as the guest's, on the engine
/// directly (same build profile as the kernel's engine).
fn host_quote_seconds(quotes: u32) -> f64 {
    use rivet_tpm::client;
    let mut tpm = rivet_tpm::Tpm::manufacture(HostPlatform(std::time::Instant::now())).unwrap();
    let r = tpm.execute(0, &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0]);
    assert_eq!(client::response_code(&r), Some(0), "Startup");
    let r = tpm.execute(
        0,
        &client::create_primary(client::ENDORSEMENT, &client::ak_ecc_p256_template()),
    );
    let ak = client::parse_create_primary(&r).expect("CreatePrimary AK");
    let quote = client::quote(ak.handle, &[7; 32], &[(0x000B, 0x3FF)]);
    let start = std::time::Instant::now();
    for _ in 0..quotes {
        let r = tpm.execute(0, &quote);
        assert_eq!(client::response_code(&r), Some(0), "Quote");
    }
    start.elapsed().as_secs_f64() / f64::from(quotes)
}

/// A TPM2B at `at`: (contents, offset after it).
fn tpm2b(b: &[u8], at: usize) -> (&[u8], usize) {
    let n = u16::from_be_bytes([b[at], b[at + 1]]) as usize;
    (&b[at + 2..at + 2 + n], at + 2 + n)
}

/// Checks a TPM2_Quote: TPMS_ATTEST of type quote with the nonce, the AK's
/// name as signer, PCRs 0-9 of SHA-256 and their digest, and an ECDSA
/// P-256 signature over it by the AK.
fn check_quote(ak: &[u8], attest: &[u8], signature: &[u8], nonce: &[u8], pcrs: &[Vec<u8>]) {
    // AK: ECC, SHA-256 name, restricted signing, ECDSA/SHA-256, P-256.
    assert_eq!(&ak[0..4], &[0x00, 0x23, 0x00, 0x0B]);
    assert_eq!(&ak[4..8], &[0x00, 0x05, 0x00, 0x72]);
    let (_, at) = tpm2b(ak, 8);
    assert_eq!(
        &ak[at..at + 10],
        &[0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x10]
    );
    let (x, at) = tpm2b(ak, at + 10);
    let (y, _) = tpm2b(ak, at);
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("AK point on P-256");

    assert_eq!(
        &attest[0..4],
        &[0xff, 0x54, 0x43, 0x47],
        "TPM_GENERATED_VALUE"
    );
    assert_eq!(&attest[4..6], &[0x80, 0x18], "TPM_ST_ATTEST_QUOTE");
    let (signer, at) = tpm2b(attest, 6);
    // Qualified name of a primary key: H(hierarchy handle || Name), Part 1.
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(ak));
    let mut qn = vec![0x00, 0x0B];
    qn.extend_from_slice(&Sha256::digest(
        [&0x4000_000Bu32.to_be_bytes()[..], &name].concat(),
    ));
    assert_eq!(
        signer,
        qn.as_slice(),
        "qualifiedSigner is the AK's qualified name"
    );
    let (extra, at) = tpm2b(attest, at);
    assert_eq!(extra, nonce, "extraData is the nonce");
    let at = at + 17 + 8; // clockInfo, firmwareVersion
    assert_eq!(
        &attest[at..at + 10],
        &[0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0x03, 0x00],
        "PCRs 0-9, SHA-256"
    );
    let (digest, end) = tpm2b(attest, at + 10);
    assert_eq!(end, attest.len());
    let mut h = Sha256::new();
    for p in pcrs {
        h.update(p);
    }
    assert_eq!(digest, h.finalize().as_slice(), "pcrDigest");

    assert_eq!(
        &signature[0..4],
        &[0x00, 0x18, 0x00, 0x0B],
        "ECDSA with SHA-256"
    );
    let (r, at) = tpm2b(signature, 4);
    let (s, _) = tpm2b(signature, at);
    let pad = |v: &[u8]| {
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(v);
        out
    };
    let sig = p256::ecdsa::Signature::from_scalars(pad(r), pad(s)).expect("signature scalars");
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    vk.verify_prehash(&Sha256::digest(attest), &sig)
        .expect("quote signature under the AK");
    let mut forged = attest.to_vec();
    forged[10] ^= 1;
    assert!(vk.verify_prehash(&Sha256::digest(&forged), &sig).is_err());
}

/// The vTPM manifest version 0: the EK's TPMT_PUBLIC from template L-1.
fn check_ek_rsa_public(p: &[u8]) {
    let policy = unhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa");
    assert_eq!(&p[0..2], &[0x00, 0x01], "TPM_ALG_RSA");
    assert_eq!(&p[2..4], &[0x00, 0x0B], "nameAlg SHA-256");
    assert_eq!(&p[4..8], &[0x00, 0x03, 0x00, 0xB2], "EK attributes");
    assert_eq!(&p[8..10], &[0x00, 0x20]);
    assert_eq!(
        &p[10..42],
        policy.as_slice(),
        "PolicySecret(TPM_RH_ENDORSEMENT)"
    );
    assert_eq!(
        &p[42..48],
        &[0x00, 0x06, 0x00, 0x80, 0x00, 0x43],
        "AES-128-CFB"
    );
    assert_eq!(
        &p[48..56],
        &[0x00, 0x10, 0x08, 0x00, 0, 0, 0, 0],
        "no scheme, 2048 bits, e = 65537"
    );
    assert_eq!(&p[56..58], &[0x01, 0x00], "256-byte modulus");
    assert_eq!(p.len(), 58 + 256);
    assert!(p[58] & 0x80 != 0, "a 2048-bit modulus has its top bit set");
}

/// ECDSA P-384 over SHA-384 of bytes 0..0x2A0; R and S little-endian.
fn report_signature_ok(report: &[u8], vk: &VerifyingKey) -> bool {
    let be = |o: usize| {
        let mut v = [0u8; 48];
        for (i, b) in v.iter_mut().enumerate() {
            *b = report[o + 47 - i];
        }
        v
    };
    let Ok(sig) = Signature::from_scalars(be(0x2A0), be(0x2E8)) else {
        return false;
    };
    vk.verify_prehash(&Sha384::digest(&report[..0x2A0]), &sig)
        .is_ok()
}
