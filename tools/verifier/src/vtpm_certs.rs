//! The vTPM's certificates (issue 7): the per-boot *binding certificate*,
//! self-signed, that carries a platform report whose REPORT_DATA is
//! SHA-512("Rivet vTPM binding key v1\0" ‖ the certificate's
//! SubjectPublicKeyInfo DER), and the EK/AK certificates signed by its key.
//! The formats are the kernel's (`rivet_kernel::certs`), implemented here
//! again from their documentation.

use crate::appraisal::{Appraisal, Status};
use crate::cert::{Cert, parse_certs};
use crate::evidence::{Evidence, SnpEvidence, TdxEvidence};
use crate::policy::Policy;
use crate::tpm;
use der::Decode;
use der::asn1::{OctetStringRef, Utf8StringRef};
use sha2::{Digest, Sha512};

/// Domain-separation label of the REPORT_DATA binding (with its NUL).
pub const REPORT_DATA_LABEL: &[u8] = b"Rivet vTPM binding key v1\0";
/// The binding certificate's extension carrying the report:
/// `SEQUENCE { format UTF8String, report OCTET STRING }`.
pub const OID_PLATFORM_REPORT: &str =
    "1.2.840.113556.1.8000.2554.16646.52969.29910.17819.47254.1778824.8088423.1";
/// `format` of an SEV-SNP report (and the native platform's simulated ones).
pub const FORMAT_SNP: &str = "sev-snp-attestation-report";
/// `format` of a TDX quote (v4/v5, as the host's quoting service returns
/// it for the SVSM's TDREPORT).
pub const FORMAT_TDX: &str = "tdx-quote";
/// tcg-kp-EKCertificate.
pub const KP_EK_CERTIFICATE: &str = "2.23.133.8.1";
/// tcg-kp-AIKCertificate.
pub const KP_AK_CERTIFICATE: &str = "2.23.133.8.3";
/// Manifest version 1 key kinds: EK RSA, EK ECC, AK ECC, AK RSA.
pub const KIND_EK_RSA: u16 = 1;
/// See [`KIND_EK_RSA`].
pub const KIND_EK_ECC: u16 = 2;
/// See [`KIND_EK_RSA`].
pub const KIND_AK_ECC: u16 = 3;
/// See [`KIND_EK_RSA`].
pub const KIND_AK_RSA: u16 = 4;

#[derive(der::Sequence)]
struct CarriedReport<'a> {
    format: Utf8StringRef<'a>,
    report: &'a OctetStringRef,
}

/// REPORT_DATA that binds a key: SHA-512(label ‖ SubjectPublicKeyInfo DER).
pub fn binding_report_data(spki_der: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(REPORT_DATA_LABEL);
    h.update(spki_der);
    h.finalize().into()
}

/// The (format, report) a binding certificate carries.
pub fn carried_report(cert: &Cert) -> Result<(String, Vec<u8>), String> {
    let v = cert
        .extension(OID_PLATFORM_REPORT)
        .ok_or("the binding certificate carries no report extension")?;
    let c = CarriedReport::from_der(v).map_err(|e| format!("bad report extension: {e}"))?;
    Ok((c.format.as_str().to_string(), c.report.as_bytes().to_vec()))
}

/// The vTPM manifest version 1: (kind, persistent handle, TPMT_PUBLIC)s;
/// None if `m` is not one.
pub fn parse_manifest_v1(m: &[u8]) -> Option<Vec<(u16, u32, Vec<u8>)>> {
    let be16 = |at: usize| m.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if be16(0)? != 1 {
        return None;
    }
    let count = usize::from(be16(2)?);
    let mut at = 4;
    let mut keys = Vec::new();
    for _ in 0..count {
        let kind = be16(at)?;
        let h = m.get(at + 2..at + 6)?;
        let handle = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let n = usize::from(be16(at + 6)?);
        keys.push((kind, handle, m.get(at + 8..at + 8 + n)?.to_vec()));
        at += 8 + n;
    }
    (at == m.len()).then_some(keys)
}

fn has_eku(cert: &Cert, purpose: &str) -> bool {
    let Some(v) = cert.extension("2.5.29.37") else {
        return false;
    };
    let Ok(eku) = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(v) else {
        return false;
    };
    eku.0.iter().any(|o| o.to_string() == purpose)
}

/// The checks, in the order they run: `certs.binding`,
/// `certs.binding_report`, `certs.binding_report_data`, `certs.chain`,
/// `certs.ek_keys`, `certs.ak_keys`. Nothing is recorded for a bundle with
/// no binding certificate and no EK/AK certificates.
pub(crate) fn appraise(a: &mut Appraisal, ev: &Evidence, policy: &Policy, now: i64) {
    let eks: Vec<&Vec<u8>> = ev.ek_cert.iter().chain(&ev.ek_certs).collect();
    let aks: Vec<&Vec<u8>> = ev.ak_cert.iter().chain(&ev.ak_certs).collect();
    let Some(binding_der) = &ev.binding_cert else {
        if !ev.ek_certs.is_empty() || !ev.ak_certs.is_empty() {
            a.not_run(
                "certs.chain",
                "no binding certificate in the bundle to chain the EK/AK certificates to",
            );
        }
        return;
    };
    let names = [
        "certs.binding_report",
        "certs.binding_report_data",
        "certs.chain",
    ];
    let binding = match parse_certs(binding_der).and_then(|mut v| {
        let c = v.remove(0);
        c.verify_signed_by(&c)
            .map_err(|e| format!("not self-signed: {e}"))?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            a.fail("certs.binding", format!("binding certificate: {e}"));
            for n in names {
                a.fail(n, "no valid binding certificate");
            }
            return;
        }
    };
    let carried = carried_report(&binding);
    match &carried {
        Ok((format, _)) => a.pass(
            "certs.binding",
            format!("self-signed '{}' carrying a {format} report", binding.cn()),
        ),
        Err(e) => a.fail("certs.binding", e.clone()),
    }

    // The carried report, appraised like the platform report.
    match (&carried, &ev.snp) {
        (Err(_), _) => a.fail(
            "certs.binding_report",
            "no report in the binding certificate",
        ),
        (Ok((format, report)), _) if format == FORMAT_TDX => match &ev.tdx {
            Some(tdx) => a.record(
                "certs.binding_report",
                check_tdx_quote(report, tdx, policy, now),
            ),
            None => a.not_run(
                "certs.binding_report",
                "a TDX quote but no TDX platform evidence to check it with",
            ),
        },
        (Ok((format, _)), _) if format != FORMAT_SNP => a.fail(
            "certs.binding_report",
            format!("unknown report format '{format}'"),
        ),
        (Ok(_), None) => a.not_run(
            "certs.binding_report",
            "an SNP report but no SNP platform evidence to check it with",
        ),
        (Ok((_, report)), Some(snp)) => a.record(
            "certs.binding_report",
            check_snp_report(report, snp, policy, now),
        ),
    }
    match &carried {
        Ok((format, report)) => {
            let quote_rd = (format == FORMAT_TDX)
                .then(|| crate::tdx::Quote::parse(report).ok().map(|q| q.report_data))
                .flatten();
            let rd = if format == FORMAT_TDX {
                quote_rd.as_ref().map(|r| &r[..])
            } else {
                report.get(0x50..0x90)
            };
            let want = binding.spki_der().map(|s| binding_report_data(&s));
            match (rd, want) {
                (Some(rd), Ok(want)) if rd == want => a.pass(
                    "certs.binding_report_data",
                    "REPORT_DATA = SHA-512(label || the binding certificate's key)",
                ),
                (Some(_), Ok(_)) => a.fail(
                    "certs.binding_report_data",
                    "the report does not bind the binding certificate's key",
                ),
                (None, _) => a.fail("certs.binding_report_data", "report too short"),
                (_, Err(e)) => a.fail("certs.binding_report_data", e),
            }
        }
        Err(_) => a.fail(
            "certs.binding_report_data",
            "no report in the binding certificate",
        ),
    }

    // Every EK/AK certificate under the binding key.
    let mut parsed: Vec<(&str, Cert)> = Vec::new();
    let mut problems = Vec::new();
    for (kind, list) in [("EK", &eks), ("AK", &aks)] {
        for (i, der) in list.iter().enumerate() {
            match parse_certs(der).map(|mut v| v.remove(0)) {
                Ok(c) => {
                    if let Err(e) = c.verify_signed_by(&binding) {
                        problems.push(format!(
                            "{kind} certificate {i}: not signed by the binding key ({e})"
                        ));
                    } else if let Err(e) = c.check_validity(now) {
                        problems.push(format!("{kind} certificate {i}: {e}"));
                    }
                    parsed.push((kind, c));
                }
                Err(e) => problems.push(format!("{kind} certificate {i}: {e}")),
            }
        }
    }
    if eks.is_empty() && aks.is_empty() {
        a.not_run("certs.chain", "no EK/AK certificates in the bundle");
    } else if problems.is_empty() {
        a.pass(
            "certs.chain",
            format!(
                "{} EK and {} AK certificate(s) signed by the binding key",
                eks.len(),
                aks.len()
            ),
        );
    } else {
        a.fail("certs.chain", problems.join("; "));
    }

    // The certified keys are the manifest's.
    let manifest = ev.manifest.as_deref();
    let v1 = manifest.and_then(parse_manifest_v1);
    for (kind, check, kinds, purpose) in [
        (
            "EK",
            "certs.ek_keys",
            [KIND_EK_RSA, KIND_EK_ECC],
            KP_EK_CERTIFICATE,
        ),
        (
            "AK",
            "certs.ak_keys",
            [KIND_AK_ECC, KIND_AK_RSA],
            KP_AK_CERTIFICATE,
        ),
    ] {
        let certs: Vec<&Cert> = parsed
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, c)| c)
            .collect();
        if certs.is_empty() {
            a.not_run(check, format!("no {kind} certificates in the bundle"));
            continue;
        }
        let Some(m) = manifest else {
            a.not_run(check, "no manifest to compare the keys with");
            continue;
        };
        let candidates: Vec<tpm::PublicKey> = match &v1 {
            Some(keys) => keys
                .iter()
                .filter(|k| kinds.contains(&k.0))
                .filter_map(|k| tpm::parse_public(&k.2).ok())
                .collect(),
            // Version 0: the manifest is the EK's TPMT_PUBLIC.
            None if kind == "EK" => tpm::parse_public(m).into_iter().collect(),
            None => Vec::new(),
        };
        let mut bad = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            let spki = c.spki_der().unwrap_or_default();
            if !candidates.iter().any(|k| tpm::key_matches_spki(k, &spki)) {
                bad.push(format!(
                    "{kind} certificate {i}: its key is not an {kind} in the bound manifest"
                ));
            }
            if !has_eku(c, purpose) {
                bad.push(format!(
                    "{kind} certificate {i}: no extended key usage {purpose}"
                ));
            }
        }
        if bad.is_empty() {
            a.pass(
                check,
                format!(
                    "{} {kind} certificate(s) certify {kind}s of the bound manifest (EKU {purpose})",
                    certs.len()
                ),
            );
        } else {
            a.fail(check, bad.join("; "));
        }
    }
}

/// Fails with every contraindicated check of a scratch appraisal of the
/// carried report (`what`), if there is one.
fn all_checks_pass(scratch: &Appraisal, what: &str) -> Result<(), String> {
    let failed: Vec<String> = scratch
        .checks
        .iter()
        .filter(|c| c.status == Status::Contraindicated)
        .map(|c| format!("{}: {}", c.name, c.reason))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the carried {what} does not verify: {}",
            failed.join("; ")
        ))
    }
}

/// The carried TDX quote, appraised like the platform's quote (signature,
/// QE binding, PCK chain to the Intel root, policy); it must come from the
/// same TD (same MRTD).
fn check_tdx_quote(
    quote: &[u8],
    tdx: &TdxEvidence,
    policy: &Policy,
    now: i64,
) -> Result<String, String> {
    let mut scratch = Appraisal::new("tdx", String::new());
    let ev = TdxEvidence {
        quote: quote.to_vec(),
        ccel: None,
    };
    crate::appraise_platform::tdx(&mut scratch, &ev, policy, now);
    all_checks_pass(&scratch, "quote")?;
    let (Ok(carried), Ok(platform)) = (
        crate::tdx::Quote::parse(quote),
        crate::tdx::Quote::parse(&tdx.quote),
    ) else {
        return Err("the quotes do not parse".into());
    };
    if carried.mrtd != platform.mrtd {
        return Err("the carried quote's MRTD differs from the platform quote's".into());
    }
    Ok("the carried quote verifies like the platform quote, same MRTD".into())
}

/// Appraises a carried SNP report with the bundle's endorsement (VEK chain
/// or simulated key) and the policy, as the platform report is appraised;
/// it must also come from the same launch (measurement and report ID equal
/// the platform report's).
fn check_snp_report(
    report: &[u8],
    snp: &SnpEvidence,
    policy: &Policy,
    now: i64,
) -> Result<String, String> {
    let mut scratch = Appraisal::new("snp", String::new());
    let ev = SnpEvidence {
        report: report.to_vec(),
        ..snp.clone()
    };
    crate::appraise_platform::snp(&mut scratch, &ev, policy, now);
    all_checks_pass(&scratch, "report")?;
    let (Ok(carried), Ok(platform)) = (
        crate::snp::Report::parse(report),
        crate::snp::Report::parse(&snp.report),
    ) else {
        return Err("the reports do not parse".into());
    };
    if carried.measurement != platform.measurement {
        return Err("the carried report's measurement differs from the platform report's".into());
    }
    if carried.raw.get(0x140..0x160) != platform.raw.get(0x140..0x160) {
        return Err("the carried report's REPORT_ID differs from the platform report's".into());
    }
    let signed = scratch
        .check("snp.report_signature")
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    Ok(format!(
        "the carried report verifies like the platform report ({signed}), same measurement and REPORT_ID"
    ))
}
