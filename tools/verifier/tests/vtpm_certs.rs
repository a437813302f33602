//! The vTPM's certificates: a binding certificate carrying a (simulated)
//! SNP report that binds its key, EK/AK certificates signed by that key,
//! keys equal to the manifest's. Built here with x509-cert's builder, in the
//! documented format; each rejection tested on its own.

mod common;
use common::*;
use der::asn1::{OctetString, OctetStringRef, Utf8StringRef};
use der::{Encode, Sequence};
use p256::ecdsa::SigningKey;
use p384::ecdsa::SigningKey as ReportKey;
use rivet_verifier::simulated::sign_report;
use rivet_verifier::snp::REPORT_SIZE;
use rivet_verifier::vtpm_certs::{self, FORMAT_SNP, FORMAT_TDX, OID_PLATFORM_REPORT};
use rivet_verifier::{Evidence, Policy, appraise};
use serde_json::json;
use sha2::{Digest, Sha512};
use spki::{EncodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef};
use std::str::FromStr;
use x509_cert::TbsCertificate;
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfo;
use x509_cert::time::{Time, Validity};

const NOW: &str = "2026-06-01T00:00:00Z";
const BINDING: &str = "CN=Rivet vTPM binding key,O=Rivet SVSM";

struct Profile {
    issuer: Name,
    subject: Name,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _: SubjectPublicKeyInfoRef<'_>,
        _: SubjectPublicKeyInfoRef<'_>,
        _: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

#[derive(Sequence)]
struct Carried<'a> {
    format: Utf8StringRef<'a>,
    report: &'a OctetStringRef,
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn spki(k: &SigningKey) -> Vec<u8> {
    k.verifying_key().to_public_key_der().unwrap().to_vec()
}

fn cert(
    signer: &SigningKey,
    subject_key: &SigningKey,
    subject: &str,
    extensions: Vec<Extension>,
) -> Vec<u8> {
    let validity = Validity::new(
        Time::from(der::DateTime::new(1970, 1, 1, 0, 0, 0).unwrap()),
        Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(
            der::DateTime::new(9999, 12, 31, 23, 59, 59).unwrap(),
        )),
    );
    let profile = Profile {
        issuer: Name::from_str(BINDING).unwrap(),
        subject: if subject.is_empty() {
            Name::default()
        } else {
            Name::from_str(subject).unwrap()
        },
    };
    let spki = SubjectPublicKeyInfo::try_from(&spki(subject_key)[..]).unwrap();
    let mut b = CertificateBuilder::new(profile, SerialNumber::from(7u32), validity, spki).unwrap();
    for e in extensions {
        b.add_extension(e).unwrap();
    }
    b.build::<_, p256::ecdsa::DerSignature>(signer)
        .unwrap()
        .to_der()
        .unwrap()
}

fn binding_cert(k: &SigningKey, report: &[u8]) -> Vec<u8> {
    binding_cert_with(k, FORMAT_SNP, report)
}

fn binding_cert_with(k: &SigningKey, format: &str, report: &[u8]) -> Vec<u8> {
    let value = Carried {
        format: Utf8StringRef::new(format).unwrap(),
        report: OctetStringRef::new(report).unwrap(),
    };
    let ext = Extension {
        extn_id: ObjectIdentifier::new(OID_PLATFORM_REPORT).unwrap(),
        critical: false,
        extn_value: OctetString::new(value.to_der().unwrap()).unwrap(),
    };
    cert(k, k, BINDING, vec![ext])
}

fn key_cert(signer: &SigningKey, subject: &SigningKey, purpose: &str) -> Vec<u8> {
    let eku = x509_cert::ext::pkix::ExtendedKeyUsage(vec![ObjectIdentifier::new(purpose).unwrap()]);
    let ext = Extension {
        extn_id: ObjectIdentifier::new("2.5.29.37").unwrap(),
        critical: false,
        extn_value: OctetString::new(eku.to_der().unwrap()).unwrap(),
    };
    cert(signer, subject, "", vec![ext])
}

/// TPMT_PUBLIC of an ECC P-256 key (no symmetric, no scheme, no KDF).
fn tpmt_ecc(k: &SigningKey) -> Vec<u8> {
    let p = k.verifying_key().to_sec1_point(false);
    let p = p.as_bytes();
    let mut t = vec![0x00, 0x23, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2, 0, 0];
    t.extend_from_slice(&[0x00, 0x10, 0x00, 0x10, 0x00, 0x03, 0x00, 0x10]);
    t.extend_from_slice(&[0, 32]);
    t.extend_from_slice(&p[1..33]);
    t.extend_from_slice(&[0, 32]);
    t.extend_from_slice(&p[33..65]);
    t
}

/// Manifest version 1 with an ECC EK (kind 2) and an ECC AK (kind 3).
fn manifest(ek: &SigningKey, ak: &SigningKey) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2];
    for (kind, handle, k) in [(2u16, 0u32, ek), (3, 0x8101_8000, ak)] {
        let t = tpmt_ecc(k);
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&handle.to_be_bytes());
        m.extend_from_slice(&(t.len() as u16).to_be_bytes());
        m.extend_from_slice(&t);
    }
    m
}

fn report_key() -> ReportKey {
    ReportKey::from_slice(&[0x33; 48]).unwrap()
}

fn report(rd: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; REPORT_SIZE];
    r[0] = 2;
    r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes());
    r[0x50..0x90].copy_from_slice(rd);
    r[0x90..0xC0].fill(0xAB);
    r[0x140..0x160].fill(0x77);
    sign_report(&report_key(), &mut r).unwrap();
    r
}

struct Parts {
    binding: Vec<u8>,
    ek: Vec<u8>,
    ak: Vec<u8>,
    carried: Vec<u8>,
}

/// A good set: binding key 1, EK 2, AK 3.
fn good() -> Parts {
    let b = key(1);
    let rd = vtpm_certs::binding_report_data(&spki(&b));
    let carried = report(&rd);
    Parts {
        binding: binding_cert(&b, &carried),
        ek: key_cert(&b, &key(2), vtpm_certs::KP_EK_CERTIFICATE),
        ak: key_cert(&b, &key(3), vtpm_certs::KP_AK_CERTIFICATE),
        carried,
    }
}

fn bundle(p: &Parts) -> Evidence {
    let nonce = b"nonce";
    let m = manifest(&key(2), &key(3));
    let rd = Sha512::new()
        .chain_update(nonce)
        .chain_update(&m)
        .finalize();
    let platform = report(&rd);
    let point = report_key().verifying_key().to_sec1_point(false);
    evidence(json!({
        "snp": { "report": hexs(&platform), "simulated_vcek_public_key": hex::encode(point.as_bytes()) },
        "nonce": hexs(nonce),
        "manifest": hexs(&m),
        "binding_cert": hexs(&p.binding),
        "ek_certs": [hexs(&p.ek)],
        "ak_certs": [hexs(&p.ak)],
    }))
}

fn policy(trusted: bool) -> Policy {
    let mut p = policy_at(NOW);
    p.allow_simulated_root = true;
    if trusted {
        let point = report_key().verifying_key().to_sec1_point(false);
        p.add_trust_root(point.as_bytes()).unwrap();
    }
    p
}

const CHECKS: [&str; 6] = [
    "certs.binding",
    "certs.binding_report",
    "certs.binding_report_data",
    "certs.chain",
    "certs.ek_keys",
    "certs.ak_keys",
];

#[test]
fn good_certificates_chain_to_the_report_carrying_certificate() {
    let p = good();
    let a = appraise(&bundle(&p), &policy(true));
    for c in CHECKS {
        assert_pass(&a, c);
    }
    // The JSON bundle round-trips the new fields.
    let ev = bundle(&p);
    let back = Evidence::from_json(&ev.to_json().to_string(), None).unwrap();
    assert_eq!(back.binding_cert, Some(p.binding.clone()));
    assert_eq!(back.ek_certs, vec![p.ek.clone()]);
    assert_eq!(back.ak_certs, vec![p.ak.clone()]);
    assert_eq!(
        vtpm_certs::carried_report(&rivet_verifier::cert::Cert::from_der(&p.binding).unwrap())
            .unwrap(),
        (FORMAT_SNP.to_string(), p.carried)
    );
}

#[test]
fn an_ek_certificate_from_another_signer_is_rejected() {
    let mut p = good();
    p.ek = key_cert(&key(9), &key(2), vtpm_certs::KP_EK_CERTIFICATE);
    let a = appraise(&bundle(&p), &policy(true));
    assert_fail(
        &a,
        "certs.chain",
        "EK certificate 0: not signed by the binding key",
    );
    assert_pass(&a, "certs.binding_report");
}

#[test]
fn a_certificate_for_a_key_outside_the_manifest_is_rejected() {
    let mut p = good();
    p.ek = key_cert(&key(1), &key(4), vtpm_certs::KP_EK_CERTIFICATE);
    let a = appraise(&bundle(&p), &policy(true));
    assert_pass(&a, "certs.chain");
    assert_fail(&a, "certs.ek_keys", "not an EK in the bound manifest");
    // The AK's key certified as an EK is not an EK either.
    let mut p = good();
    p.ek = key_cert(&key(1), &key(3), vtpm_certs::KP_EK_CERTIFICATE);
    assert_fail(
        &appraise(&bundle(&p), &policy(true)),
        "certs.ek_keys",
        "not an EK",
    );
    // The right key with the wrong purpose.
    let mut p = good();
    p.ak = key_cert(&key(1), &key(3), vtpm_certs::KP_EK_CERTIFICATE);
    assert_fail(
        &appraise(&bundle(&p), &policy(true)),
        "certs.ak_keys",
        "no extended key usage 2.23.133.8.3",
    );
}

#[test]
fn a_report_that_does_not_bind_the_key_is_rejected() {
    let b = key(1);
    let mut p = good();
    // A valid report, but it binds another key.
    let other = vtpm_certs::binding_report_data(&spki(&key(5)));
    p.binding = binding_cert(&b, &report(&other));
    let a = appraise(&bundle(&p), &policy(true));
    assert_fail(
        &a,
        "certs.binding_report_data",
        "does not bind the binding certificate's key",
    );
    assert_pass(&a, "certs.binding_report");
    // SHA-512 without the label does not bind it either.
    let plain: [u8; 64] = Sha512::digest(spki(&b)).into();
    p.binding = binding_cert(&b, &report(&plain));
    assert_fail(
        &appraise(&bundle(&p), &policy(true)),
        "certs.binding_report_data",
        "does not bind",
    );
}

#[test]
fn a_carried_report_that_does_not_verify_is_rejected() {
    let b = key(1);
    let mut p = good();
    let mut bad = p.carried.clone();
    bad[0x51] ^= 1;
    p.binding = binding_cert(&b, &bad);
    let a = appraise(&bundle(&p), &policy(true));
    assert_fail(&a, "certs.binding_report", "snp.report_signature");
    // A report from another launch (measurement differs), properly signed.
    let mut other = p.carried.clone();
    other[0x90] ^= 1;
    sign_report(&report_key(), &mut other).unwrap();
    p.binding = binding_cert(&b, &other);
    assert_fail(
        &appraise(&bundle(&p), &policy(true)),
        "certs.binding_report",
        "measurement differs",
    );
    // The simulated key not passed as a trust root: not hardware-rooted.
    let p = good();
    let a = appraise(&bundle(&p), &policy(false));
    assert_fail(&a, "certs.binding_report", "not hardware-rooted");
}

#[test]
fn a_binding_certificate_that_is_not_self_signed_is_rejected() {
    let mut p = good();
    let rd = vtpm_certs::binding_report_data(&spki(&key(1)));
    // Key 1's certificate, signed by key 8.
    let carried = report(&rd);
    let value = Carried {
        format: Utf8StringRef::new(FORMAT_SNP).unwrap(),
        report: OctetStringRef::new(&carried).unwrap(),
    };
    let ext = Extension {
        extn_id: ObjectIdentifier::new(OID_PLATFORM_REPORT).unwrap(),
        critical: false,
        extn_value: OctetString::new(value.to_der().unwrap()).unwrap(),
    };
    p.binding = cert(&key(8), &key(1), BINDING, vec![ext]);
    let a = appraise(&bundle(&p), &policy(true));
    assert_fail(&a, "certs.binding", "not self-signed");
    assert_fail(&a, "certs.chain", "no valid binding certificate");
    // No report extension at all.
    let mut p = good();
    p.binding = cert(&key(1), &key(1), BINDING, vec![]);
    let a = appraise(&bundle(&p), &policy(true));
    assert_fail(&a, "certs.binding", "carries no report extension");
}

/// A binding certificate carrying a TDX quote (format `tdx-quote`, what the
/// `tdp` platform makes): the carried quote is appraised like the platform's
/// (signature, QE binding, PCK chain to the Intel root) and must be from the
/// same TD. The real quote from ../shared/testdata verifies but cannot bind
/// this test's key, so the binding check fails for that reason alone; a
/// flipped bit in its body fails the quote check.
#[test]
fn a_carried_tdx_quote_is_appraised_like_the_platform_quote() {
    const GCP: &[u8] = include_bytes!("data/tdx/gcp_cos113_quote_v4.dat");
    let b = key(1);
    let tdx_bundle = |carried: &[u8]| {
        evidence(json!({
            "tdx": { "quote": hexs(GCP) },
            "nonce": hexs(b"nonce"),
            "binding_cert": hexs(&binding_cert_with(&b, FORMAT_TDX, carried)),
        }))
    };
    let p = policy_at("2026-01-01T00:00:00Z");
    let a = appraise(&tdx_bundle(GCP), &p);
    assert_pass(&a, "certs.binding");
    assert_pass(&a, "certs.binding_report");
    assert_fail(
        &a,
        "certs.binding_report_data",
        "does not bind the binding certificate's key",
    );

    let mut flipped = GCP.to_vec();
    flipped[48 + 136] ^= 1; // MRTD, inside the signed body
    let a = appraise(&tdx_bundle(&flipped), &p);
    assert_fail(&a, "certs.binding_report", "does not verify");
}
