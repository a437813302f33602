//! The NV layout of the SVSM's certificates, proven with the real tools: an
//! engine in the TPM server is provisioned by the kernel's own certificate
//! code (`rivet_kernel::certs`, the code the SVSM runs at boot, here over
//! the MS-simulator protocol instead of in-process), then
//! `tpm2_getekcertificate` and `tpm2_nvread` read the certificates back.
//! (The SVSM's guest in this repository is the tiny test firmware, not
//! Linux, so the tools run against the host server, not through the SVSM.)
//! The same certificates then go to the verifier, which must accept them.

use p384::ecdsa::SigningKey as ReportKey;
use rivet_kernel::certs::{self, BindingKey, FORMAT_SNP, KeyRole, nv_index};
use rivet_kernel::platform::snp_report::{ReportFields, SIMULATED_POLICY, build_and_sign};
use rivet_tests::server::{Backend, RawClient, TpmServer};
use rivet_tests::tools::Tpm2;
use rivet_tpm::client;

#[test]
fn tpm2_tools_read_the_certificates_the_kernel_code_provisions() {
    let dir = tempfile::tempdir().unwrap();
    let server = TpmServer::start(Backend::Rivet, &dir.path().join("tpm.state"));
    let tools = Tpm2::new(server.tcti());
    tools.ok(&["startup", "-c"]);

    // What the SVSM does at boot: EKs, AKs, binding key, report, certificates.
    let mut tpm = RawClient::command_port(&server);
    let mut publics = Vec::new();
    for t in [
        client::ek_rsa2048_template(),
        client::ek_ecc_p256_template(),
        client::ak_ecc_p256_template(),
        client::ak_rsa2048_template(),
    ] {
        let r = tpm.execute(0, &client::create_primary(client::ENDORSEMENT, &t));
        let p = client::parse_create_primary(&r).expect("CreatePrimary");
        tpm.execute(0, &client::flush_context(p.handle));
        publics.push(p.public);
    }
    let mut seed = 1u8;
    let key = BindingKey::generate(|b| {
        *b = [seed; 32];
        seed += 1;
        Ok(())
    })
    .unwrap();
    let fields = ReportFields {
        measurement: [3; 48],
        policy: SIMULATED_POLICY,
        vmpl: 0,
        report_id: [4; 32],
    };
    let report_key = ReportKey::from_slice(&[0x42; 48]).unwrap();
    let report = build_and_sign(&fields, &key.report_data(), &report_key).unwrap();
    let identity = certs::read_identity(&mut |c| tpm.execute(0, c)).unwrap();
    let issued = certs::issue(
        &key,
        FORMAT_SNP,
        &report,
        [9; 16],
        [&publics[0], &publics[1], &publics[2], &publics[3]],
        &identity,
    )
    .unwrap();
    certs::write_to_nv(&issued, &mut |c| tpm.execute(0, c)).unwrap();
    let cert = |role: KeyRole| &issued.keys.iter().find(|k| k.0 == role).unwrap().1;

    // tpm2_getekcertificate finds both EK certificates at the EK Credential
    // Profile's indices (RSA first, then ECC).
    tools.ok(&["getekcertificate", "-o", "rsa.der", "-o", "ecc.der"]);
    assert_eq!(&tools.read("rsa.der"), cert(KeyRole::EkRsa));
    assert_eq!(&tools.read("ecc.der"), cert(KeyRole::EkEcc));

    // tpm2_nvread reads every index (authorized by the index: AUTHREAD).
    for (index, der) in issued.nv_contents() {
        let file = format!("{index:08x}.der");
        tools.ok(&["nvread", &format!("{index:#010x}"), "-o", &file]);
        assert_eq!(tools.read(&file), der, "{index:#x}");
    }
    assert_eq!(
        issued.nv_contents()[0],
        (nv_index::BINDING_CERT, &issued.binding[..])
    );
    appraise_like_a_verifier(&issued, &publics, &fields, &report_key);

    // The attributes tpm2_nvreadpublic shows for the RSA EK certificate.
    let public = tools.ok(&["nvreadpublic", "0x01c00002"]);
    assert!(public.contains("value: 0x62072801"), "{public}");
    for attr in [
        "ppwrite",
        "writedefine",
        "ppread",
        "ownerread",
        "authread",
        "no_da",
        "written",
        "platformcreate",
        "writelocked",
    ] {
        assert!(public.contains(attr), "{attr} in {public}");
    }
}

/// The kernel's certificates in a bundle with a manifest version 1 of the
/// same keys and a platform report over it (same launch): every `certs.*`
/// check of the verifier passes, and a swapped EK certificate fails.
fn appraise_like_a_verifier(
    issued: &certs::Issued,
    publics: &[Vec<u8>],
    fields: &ReportFields,
    report_key: &ReportKey,
) {
    use sha2::{Digest, Sha512};
    let mut manifest = vec![0, 1, 0, 4];
    for (kind, (handle, public)) in [0u32, 0, 0x8101_8000, 0x8101_8001]
        .iter()
        .zip(publics)
        .enumerate()
    {
        manifest.extend_from_slice(&(kind as u16 + 1).to_be_bytes());
        manifest.extend_from_slice(&handle.to_be_bytes());
        manifest.extend_from_slice(&(public.len() as u16).to_be_bytes());
        manifest.extend_from_slice(public);
    }
    let nonce = b"verifier nonce".to_vec();
    let mut h = Sha512::new();
    h.update(&nonce);
    h.update(&manifest);
    let rd: [u8; 64] = h.finalize().into();
    let platform_report = build_and_sign(fields, &rd, report_key).unwrap();
    let point = report_key
        .verifying_key()
        .to_sec1_point(false)
        .as_bytes()
        .to_vec();
    let mut evidence = rivet_verifier::Evidence {
        snp: Some(rivet_verifier::evidence::SnpEvidence {
            report: platform_report.to_vec(),
            simulated_vcek_public_key: Some(point.clone()),
            ..Default::default()
        }),
        nonce: Some(nonce),
        manifest: Some(manifest),
        binding_cert: Some(issued.binding.clone()),
        ek_certs: issued.keys[..2].iter().map(|k| k.1.clone()).collect(),
        ak_certs: issued.keys[2..].iter().map(|k| k.1.clone()).collect(),
        ..Default::default()
    };
    let mut policy = rivet_verifier::Policy {
        allow_simulated_root: true,
        ..Default::default()
    };
    policy.add_trust_root(&point).unwrap();
    let a = rivet_verifier::appraise(&evidence, &policy);
    for name in [
        "binding.report_data",
        "certs.binding",
        "certs.binding_report",
        "certs.binding_report_data",
        "certs.chain",
        "certs.ek_keys",
        "certs.ak_keys",
    ] {
        let c = a.check(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(c.status, rivet_verifier::Status::Affirming, "{c:?}");
    }
    // An AK certificate offered as an EK certificate: not an EK of the manifest.
    evidence.ek_certs[0] = issued.keys[2].1.clone();
    let a = rivet_verifier::appraise(&evidence, &policy);
    let c = a.check("certs.ek_keys").unwrap();
    assert_eq!(c.status, rivet_verifier::Status::Contraindicated, "{c:?}");
}
