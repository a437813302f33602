//! Host tests: the SVSM's boot flow on a host engine, every certificate
//! parsed back with x509-cert and every promised field and signature checked.

use super::*;
use alloc::string::ToString;
use der::Decode;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use rivet_tpm::client;
use std::io::Read;
use x509_cert::Certificate;

struct HostPlatform;

impl rivet_tpm::Platform for HostPlatform {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), rivet_tpm::PlatformError> {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .map_err(|_| rivet_tpm::PlatformError("no /dev/urandom"))
    }
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn commit(&mut self, _: &[u8]) -> Result<(), rivet_tpm::PlatformError> {
        Ok(())
    }
}

fn urandom<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

/// A started engine with the four keys the SVSM makes; their TPMT_PUBLICs.
fn engine_with_keys() -> (rivet_tpm::Tpm<HostPlatform>, [Vec<u8>; 4]) {
    let mut tpm = rivet_tpm::Tpm::manufacture(HostPlatform).unwrap();
    let r = tpm.execute(0, &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0]);
    assert_eq!(client::response_code(&r), Some(0));
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
    (tpm, publics.try_into().unwrap())
}

/// A report-shaped blob whose REPORT_DATA (at 0x50) is `rd`.
fn fake_report(rd: &[u8; 64]) -> Vec<u8> {
    let mut r = vec![0x5Au8; 0x4A0];
    r[0x50..0x90].copy_from_slice(rd);
    r
}

fn ext(c: &Certificate, oid: ObjectIdentifier) -> &Extension {
    c.tbs_certificate()
        .extensions()
        .and_then(|e| e.iter().find(|e| e.extn_id == oid))
        .unwrap_or_else(|| panic!("no extension {oid}"))
}

fn verify(cert: &Certificate, issuer_spki: &[u8]) -> bool {
    let spki = SubjectPublicKeyInfoRef::from_der(issuer_spki).unwrap();
    let vk = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).unwrap();
    let sig = Signature::from_der(cert.signature().raw_bytes()).unwrap();
    vk.verify(&cert.tbs_certificate().to_der().unwrap(), &sig)
        .is_ok()
}

fn identity() -> TpmIdentity {
    TpmIdentity {
        manufacturer: u32::from_be_bytes(*b"RVET"),
        model: "Rivet vTPM".into(),
        version: 1,
        revision: 159,
    }
}

#[test]
fn boot_flow_certificates_parse_back_with_every_promised_field() {
    let (mut tpm, publics) = engine_with_keys();
    let id = read_identity(&mut |c| tpm.execute(0, c)).unwrap();
    assert_eq!(id, identity(), "the engine's GetCapability values");

    let key = BindingKey::generate(|b| {
        *b = urandom();
        Ok(())
    })
    .unwrap();
    let report = fake_report(&key.report_data());
    let publics_ref = [&publics[0][..], &publics[1], &publics[2], &publics[3]];
    let issued = issue(&key, FORMAT_SNP, &report, urandom(), publics_ref, &id).unwrap();

    // The binding certificate: self-signed, CA for one level, carries the
    // report whose REPORT_DATA binds the certificate's own key.
    let binding = Certificate::from_der(&issued.binding).unwrap();
    let tbs = binding.tbs_certificate();
    assert_eq!(tbs.version(), x509_cert::Version::V3);
    assert_eq!(tbs.subject().to_string(), BINDING_SUBJECT);
    assert_eq!(tbs.issuer(), tbs.subject());
    let binding_spki = tbs.subject_public_key_info().to_der().unwrap();
    assert_eq!(binding_spki, key.spki_der());
    assert_eq!(tbs.serial_number().as_bytes().len(), 16);
    assert!(verify(&binding, &binding_spki), "self-signature");
    assert_eq!(
        binding.signature_algorithm().oid,
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
        "ecdsa-with-SHA256"
    );
    let bc = ext(&binding, BasicConstraints::OID);
    assert!(bc.critical);
    let bc = BasicConstraints::from_der(bc.extn_value.as_bytes()).unwrap();
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = ext(&binding, KeyUsage::OID);
    assert!(ku.critical);
    let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).unwrap();
    assert!(ku.key_cert_sign() && ku.digital_signature() && !ku.key_encipherment());
    let carried = ext(&binding, OID_PLATFORM_REPORT);
    assert!(!carried.critical);
    let carried = RivetPlatformReport::from_der(carried.extn_value.as_bytes()).unwrap();
    assert_eq!(carried.format.as_str(), FORMAT_SNP);
    assert_eq!(carried.report.as_bytes(), &report[..]);
    assert_eq!(
        &carried.report.as_bytes()[0x50..0x90],
        &binding_report_data(&binding_spki)[..],
        "REPORT_DATA = SHA-512(label || SPKI)"
    );
    let ski = SubjectKeyIdentifier::from_der(
        ext(&binding, SubjectKeyIdentifier::OID)
            .extn_value
            .as_bytes(),
    )
    .unwrap();
    let mut h = Sha256::new();
    h.update(
        SubjectPublicKeyInfoRef::from_der(&binding_spki)
            .unwrap()
            .subject_public_key
            .raw_bytes(),
    );
    assert_eq!(ski.0.as_bytes(), &h.finalize()[..20]);

    // The key certificates.
    assert_eq!(issued.keys.len(), 4);
    for ((role, der), public) in issued.keys.iter().zip(&publics) {
        let c = Certificate::from_der(der).unwrap();
        let tbs = c.tbs_certificate();
        assert_eq!(tbs.version(), x509_cert::Version::V3);
        assert_eq!(
            tbs.issuer(),
            binding.tbs_certificate().subject(),
            "{role:?}"
        );
        assert!(tbs.subject().is_empty(), "{role:?}: empty subject");
        assert_eq!(tbs.serial_number().as_bytes(), &[role.serial()]);
        assert!(
            verify(&c, &binding_spki),
            "{role:?} signed by the binding key"
        );
        assert!(!verify(&c, &spki_from_tpmt_public(&publics[1]).unwrap()));
        // Its key is the TPM's key.
        let spki = tbs.subject_public_key_info();
        assert_eq!(
            spki.to_der().unwrap(),
            spki_from_tpmt_public(public).unwrap()
        );
        match role {
            KeyRole::EkRsa | KeyRole::AkRsa => {
                assert_eq!(spki.algorithm.oid, OID_RSA_ENCRYPTION);
                let rsa = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()).unwrap();
                // The modulus is the TPM2B at the end of the TPMT_PUBLIC.
                assert_eq!(rsa.modulus.as_bytes(), &public[public.len() - 256..]);
                assert_eq!(rsa.public_exponent.as_bytes(), &[1, 0, 1]);
            }
            KeyRole::EkEcc | KeyRole::AkEcc => {
                assert_eq!(spki.algorithm.oid, OID_EC_PUBLIC_KEY);
                let point = spki.subject_public_key.raw_bytes();
                assert_eq!(point[0], 4);
                // x and y: the two TPM2B of 32 bytes at the end.
                let n = public.len();
                assert_eq!(&point[1..33], &public[n - 66..n - 34]);
                assert_eq!(&point[33..], &public[n - 32..]);
            }
        }
        // subjectAltName: critical, one directoryName, one RDN of three.
        let san = ext(&c, SubjectAltName::OID);
        assert!(san.critical, "{role:?}: SAN critical with an empty subject");
        let san = SubjectAltName::from_der(san.extn_value.as_bytes()).unwrap();
        assert_eq!(san.0.len(), 1);
        let GeneralName::DirectoryName(dn) = &san.0[0] else {
            panic!("not a directoryName")
        };
        let rdns: &RdnSequence = dn.as_ref();
        assert_eq!(rdns.len(), 1);
        let rdn = rdns.iter().next().unwrap();
        let mut found = Vec::new();
        for atv in rdn.iter() {
            let v = Utf8StringRef::try_from(&atv.value)
                .unwrap()
                .as_str()
                .to_string();
            found.push((atv.oid, v));
        }
        found.sort();
        let mut want = vec![
            (tcg::TPM_MANUFACTURER, "id:52564554".to_string()),
            (tcg::TPM_MODEL, "Rivet vTPM".to_string()),
            (tcg::TPM_VERSION, "id:00000001".to_string()),
        ];
        want.sort();
        assert_eq!(found, want);
        // Basic constraints: critical, not a CA.
        let bc = ext(&c, BasicConstraints::OID);
        assert!(bc.critical);
        assert!(
            !BasicConstraints::from_der(bc.extn_value.as_bytes())
                .unwrap()
                .ca
        );
        // Key usage (critical) and extended key usage.
        let ku = ext(&c, KeyUsage::OID);
        assert!(ku.critical);
        let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).unwrap();
        let eku = ExtendedKeyUsage::from_der(ext(&c, ExtendedKeyUsage::OID).extn_value.as_bytes())
            .unwrap();
        match role {
            KeyRole::EkRsa => {
                assert!(ku.key_encipherment() && !ku.digital_signature());
                assert_eq!(eku.0, [tcg::KP_EK_CERTIFICATE]);
            }
            KeyRole::EkEcc => {
                assert!(ku.key_agreement() && !ku.digital_signature());
                assert_eq!(eku.0, [tcg::KP_EK_CERTIFICATE]);
            }
            KeyRole::AkEcc | KeyRole::AkRsa => {
                assert!(ku.digital_signature() && !ku.key_encipherment());
                assert_eq!(eku.0, [tcg::KP_AIK_CERTIFICATE]);
            }
        }
        // Authority key identifier = the binding certificate's SKI.
        let aki = AuthorityKeyIdentifier::from_der(
            ext(&c, AuthorityKeyIdentifier::OID).extn_value.as_bytes(),
        )
        .unwrap();
        assert_eq!(aki.key_identifier.unwrap(), ski.0);
        // Policy and the TPM specification attribute.
        let pol =
            CertificatePolicies::from_der(ext(&c, CertificatePolicies::OID).extn_value.as_bytes())
                .unwrap();
        assert_eq!(pol.0[0].policy_identifier, OID_RIVET_POLICY);
        let dir = Vec::<Attribute>::from_der(
            ext(&c, OID_SUBJECT_DIRECTORY_ATTRIBUTES)
                .extn_value
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(dir[0].oid, tcg::TPM_SPECIFICATION);
        let spec: TpmSpecification<'_> = dir[0].values.iter().next().unwrap().decode_as().unwrap();
        assert_eq!(
            (spec.family.as_str(), spec.level, spec.revision),
            ("2.0", 0, 159)
        );
        // Validity: no trusted clock, so 1970 .. 9999.
        let v = tbs.validity();
        assert_eq!(v.not_before.to_unix_duration().as_secs(), 0);
        assert_eq!(
            v.not_after.to_date_time(),
            der::DateTime::new(9999, 12, 31, 23, 59, 59).unwrap()
        );
    }

    // Into NV and back, as the guest (or tpm2_nvread) reads it.
    write_to_nv(&issued, &mut |c| tpm.execute(0, c)).unwrap();
    for (index, cert) in issued.nv_contents() {
        let (_, attrs, size) =
            client::parse_nv_read_public(&tpm.execute(0, &client::nv_read_public(index))).unwrap();
        assert_eq!(attrs, NV_ATTRIBUTES | NV_WRITTEN_LOCKED, "{index:#x}");
        assert_eq!(usize::from(size), cert.len());
        assert!(cert.len() <= 2048, "fits MAX_NV_INDEX_SIZE: {}", cert.len());
        let mut back = Vec::new();
        while back.len() < cert.len() {
            let n = (cert.len() - back.len()).min(NV_CHUNK) as u16;
            let r = tpm.execute(0, &client::nv_read(index, index, n, back.len() as u16));
            back.extend(client::parse_nv_read(&r).expect("NV_Read"));
        }
        assert_eq!(back, cert, "{index:#x}");
        let r = tpm.execute(0, &client::nv_write(client::PLATFORM, index, 0, &[0]));
        assert_ne!(client::response_code(&r), Some(0), "write-locked");
    }
    assert_eq!(
        issued.nv_contents()[1..3]
            .iter()
            .map(|x| x.0)
            .collect::<Vec<_>>(),
        [0x01C0_0002, 0x01C0_000A]
    );
}

#[test]
fn different_binding_keys_sign_differently_and_bind_different_report_data() {
    let a = BindingKey::generate(|b| {
        *b = [7; 32];
        Ok(())
    })
    .unwrap();
    let b = BindingKey::generate(|b| {
        *b = [8; 32];
        Ok(())
    })
    .unwrap();
    assert_ne!(a.report_data(), b.report_data());
    let mut h = Sha512::new();
    h.update(b"Rivet vTPM binding key v1\0");
    h.update(a.spki_der());
    assert_eq!(a.report_data()[..], h.finalize()[..]);
    // A zero scalar is drawn again; a failing source is an error.
    let mut first = true;
    let k = BindingKey::generate(|b| {
        *b = if first { [0; 32] } else { [9; 32] };
        first = false;
        Ok(())
    });
    assert!(k.is_ok());
    assert_eq!(
        BindingKey::generate(|_| Err(CertError::Entropy)).err(),
        Some(CertError::Entropy)
    );
}

#[test]
fn malformed_public_areas_are_errors_not_panics() {
    let (_, publics) = engine_with_keys();
    for p in &publics {
        assert!(spki_from_tpmt_public(p).is_ok());
        for n in 0..p.len() {
            assert!(spki_from_tpmt_public(&p[..n]).is_err(), "prefix {n}");
        }
        let mut longer = p.clone();
        longer.push(0);
        assert!(spki_from_tpmt_public(&longer).is_err());
    }
    // An ECC point off the curve.
    let mut ecc = publics[1].clone();
    let n = ecc.len();
    ecc[n - 1] ^= 1;
    assert_eq!(
        spki_from_tpmt_public(&ecc),
        Err(CertError::BadPublicArea("not a P-256 point"))
    );
    for seed in 0..2000u32 {
        let junk: Vec<u8> = (0..(seed % 97))
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 17)) as u8)
            .collect();
        let _ = spki_from_tpmt_public(&junk);
    }
}

#[test]
fn identity_from_properties() {
    let props = [
        (0x102, 159),
        (0x105, u32::from_be_bytes(*b"RVET")),
        (0x106, u32::from_be_bytes(*b"Rive")),
        (0x107, u32::from_be_bytes(*b"t vT")),
        (0x108, u32::from_be_bytes(*b"PM\0\0")),
        (0x109, 0),
        (0x10B, 0x0002_0001),
    ];
    let id = TpmIdentity::from_properties(&props);
    assert_eq!(id.model, "Rivet vTPM");
    assert_eq!(id.manufacturer_id(), "id:52564554");
    assert_eq!(id.version_id(), "id:00020001");
}
