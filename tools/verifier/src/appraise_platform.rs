//! Platform checks: the SNP report and AMD chain, or the TDX quote and Intel
//! chain; the policy on their claims; the REPORT_DATA binding.

use crate::appraisal::Appraisal;
use crate::cert::{Cert, parse_certs};
use crate::cert_table;
use crate::evidence::{Evidence, SnpEvidence, TdxEvidence};
use crate::policy::{Policy, in_set};
use crate::snp::{self, Report, SigningKey, Tcb};
use crate::tdx::Quote;
use sha2::{Digest, Sha512};

/// Where the report's signing key came from.
enum KeySource {
    /// A VCEK/VLEK certificate whose chain was checked (`hardware_rooted`
    /// tells whether it ended in an AMD ARK).
    Chain {
        vek: Box<Cert>,
        hardware_rooted: bool,
        /// What the certificate table's GUID said the leaf is.
        filed_as: Option<cert_table::Kind>,
    },
    /// A raw key handed in by the native platform's host.
    Simulated(Vec<u8>),
}

/// SNP checks; returns REPORT_DATA when the report parsed.
pub fn snp(a: &mut Appraisal, ev: &SnpEvidence, policy: &Policy, now: i64) -> Option<[u8; 64]> {
    let report = match Report::parse(&ev.report) {
        Ok(r) => r,
        Err(e) => {
            a.fail("snp.report_format", e);
            a.unusable = true;
            return None;
        }
    };
    if !(2..=5).contains(&report.version) {
        a.fail(
            "snp.report_format",
            format!("report version {} is not 2..5", report.version),
        );
    } else {
        a.pass(
            "snp.report_format",
            format!("ATTESTATION_REPORT version {}", report.version),
        );
    }
    claims_snp(a, &report);

    let key = endorsement(a, ev, policy, now);
    let turin = report.is_turin()
        || matches!(&key, Some(KeySource::Chain { vek, .. }) if snp::product_name(vek).is_some_and(|p| p.starts_with("Turin")));

    // Report signature.
    match &key {
        Some(KeySource::Chain { vek, .. }) => {
            let point = vek.spki_der().ok().and_then(|d| crate::cert::ec_point(&d));
            match point {
                Some(p) => a.record(
                    "snp.report_signature",
                    report
                        .verify_signature(&p)
                        .map(|()| format!("ECDSA P-384 signature valid under '{}'", vek.cn())),
                ),
                None => a.fail(
                    "snp.report_signature",
                    "the endorsement certificate holds no EC key",
                ),
            }
        }
        Some(KeySource::Simulated(k)) => a.record(
            "snp.report_signature",
            report
                .verify_signature(k)
                .map(|()| "ECDSA P-384 signature valid under the simulated VCEK key".to_string()),
        ),
        None => a.not_run(
            "snp.report_signature",
            "no VCEK/VLEK or simulated key in the bundle",
        ),
    }

    // signer_info vs the leaf's kind, and the TCB/hwID extensions.
    match &key {
        Some(KeySource::Chain { vek, filed_as, .. }) => {
            let cn = vek.cn();
            let leaf = if cn.contains("VLEK") {
                SigningKey::Vlek
            } else {
                SigningKey::Vcek
            };
            let said = report.signing_key();
            let table_kind = filed_as.map(|k| match k {
                cert_table::Kind::Vlek => SigningKey::Vlek,
                _ => SigningKey::Vcek,
            });
            if let Some(filed) = table_kind.filter(|k| *k != leaf) {
                a.fail(
                    "snp.signing_key",
                    format!(
                        "the certificate table files the leaf as {filed:?} but the certificate is '{cn}'"
                    ),
                );
            } else if said == leaf {
                a.pass(
                    "snp.signing_key",
                    format!("signer_info says {said:?}, the leaf is '{cn}'"),
                );
            } else {
                a.fail(
                    "snp.signing_key",
                    format!("signer_info says {said:?} but the leaf certificate is '{cn}'"),
                );
            }
            a.record(
                "snp.tcb_extensions",
                snp::check_vek_extensions(vek, &report, turin),
            );
        }
        Some(KeySource::Simulated(_)) => {
            a.not_run(
                "snp.signing_key",
                "simulated key: no certificate to compare",
            );
            a.not_run(
                "snp.tcb_extensions",
                "simulated key: no certificate extensions",
            );
        }
        None => {
            a.not_run("snp.signing_key", "no endorsement certificate");
            a.not_run("snp.tcb_extensions", "no endorsement certificate");
        }
    }

    // Hardware root.
    match &key {
        Some(KeySource::Chain {
            hardware_rooted: true,
            ..
        }) => a.pass("snp.hardware_root", "the chain ends in a built-in AMD ARK"),
        Some(KeySource::Chain {
            hardware_rooted: false,
            ..
        })
        | Some(KeySource::Simulated(_)) => {
            if policy.allow_simulated_root {
                a.warn(
                    "snp.hardware_root",
                    "not hardware-rooted: the signing key chains only to an explicitly passed trust root (simulated platform)",
                );
            } else {
                a.fail(
                    "snp.hardware_root",
                    "not hardware-rooted: the signing key chains only to an explicitly passed trust root, and the policy does not allow simulated roots",
                );
            }
        }
        None => {}
    }

    // Policy.
    if report.policy & snp::POLICY_DEBUG != 0 {
        if policy.allow_debug {
            a.warn(
                "policy.debug",
                "guest policy allows debugging (bit 19); allowed by policy",
            );
        } else {
            a.fail("policy.debug", "guest policy allows debugging (bit 19)");
        }
    } else {
        a.pass("policy.debug", "debugging disabled");
    }
    let tcb = Tcb::decode(report.reported_tcb, turin);
    match &policy.min_tcb {
        Some(min) if tcb.at_least(min) => {
            a.pass("policy.min_tcb", format!("reported TCB {tcb:?} >= {min:?}"))
        }
        Some(min) => a.fail(
            "policy.min_tcb",
            format!("reported TCB {tcb:?} is below {min:?}"),
        ),
        None => a.not_run("policy.min_tcb", "the policy sets no minimum TCB"),
    }
    match &policy.measurements {
        Some(set) if in_set(set, &report.measurement) => {
            a.pass("policy.measurement", "measurement is a reference value")
        }
        Some(_) => a.fail(
            "policy.measurement",
            format!(
                "measurement {} is not a reference value",
                hex::encode(report.measurement)
            ),
        ),
        None => a.not_run(
            "policy.measurement",
            "the policy lists no reference measurements",
        ),
    }
    match &policy.allowed_vmpls {
        Some(v) if v.contains(&report.vmpl) => {
            a.pass("policy.vmpl", format!("VMPL {} allowed", report.vmpl))
        }
        Some(_) => a.fail("policy.vmpl", format!("VMPL {} not allowed", report.vmpl)),
        None => a.not_run("policy.vmpl", "the policy lists no allowed VMPLs"),
    }
    Some(report.report_data)
}

fn claims_snp(a: &mut Appraisal, r: &Report) {
    a.claim("snp.version", r.version);
    a.claim("snp.policy", format!("{:#x}", r.policy));
    a.claim("snp.vmpl", r.vmpl);
    a.claim("snp.measurement", hex::encode(r.measurement));
    a.claim("snp.report_data", hex::encode(r.report_data));
    a.claim("snp.host_data", hex::encode(r.host_data));
    a.claim(
        "snp.reported_tcb",
        hex::encode(r.reported_tcb.to_le_bytes()),
    );
    a.claim("snp.chip_id", hex::encode(r.chip_id));
    a.claim("snp.signing_key", format!("{:?}", r.signing_key()));
}

/// Finds and checks the signing key's chain.
fn endorsement(
    a: &mut Appraisal,
    ev: &SnpEvidence,
    policy: &Policy,
    now: i64,
) -> Option<KeySource> {
    const NAME: &str = "snp.endorsement_chain";
    // The certificate table, when given, stands in for `vek` and `chain`.
    let split;
    let (vek_field, chain_field, filed_as) = match &ev.cert_table {
        Some(buf) => {
            if let Err(e) = ev.check_exclusive() {
                a.fail(NAME, e);
                return None;
            }
            match cert_table::parse(buf) {
                Ok(t) => {
                    a.claim("snp.cert_table", t.summary());
                    split = t;
                }
                Err(e) => {
                    a.fail(NAME, e.to_string());
                    return None;
                }
            }
            let Some((kind, vek)) = &split.vek else {
                a.not_run(NAME, "the certificate table has no VCEK or VLEK entry");
                return None;
            };
            (Some(vek), split.chain(), Some(*kind))
        }
        None => (ev.vek.as_ref(), ev.chain.clone(), None),
    };
    let Some(vek_bytes) = vek_field else {
        if let Some(k) = &ev.simulated_vcek_public_key {
            if policy.trusted_keys.iter().any(|t| t == k) {
                a.pass(NAME, "simulated VCEK key passed explicitly as a trust root");
            } else {
                a.fail(
                    NAME,
                    "not hardware-rooted: the simulated VCEK key was not passed as a trust root",
                );
            }
            return Some(KeySource::Simulated(k.clone()));
        }
        a.not_run(NAME, "no VCEK/VLEK certificate in the bundle");
        return None;
    };
    let vek = match parse_certs(vek_bytes).map(|mut v| v.remove(0)) {
        Ok(c) => c,
        Err(e) => {
            a.fail(NAME, format!("VCEK/VLEK: {e}"));
            return None;
        }
    };
    let chain_key = |hardware_rooted| KeySource::Chain {
        vek: Box::new(vek.clone()),
        hardware_rooted,
        filed_as,
    };
    let mut certs = Vec::new();
    for c in &chain_field {
        match parse_certs(c) {
            Ok(mut v) => certs.append(&mut v),
            Err(e) => {
                a.fail(NAME, format!("chain: {e}"));
                return None;
            }
        }
    }
    let (roots, inters): (Vec<Cert>, Vec<Cert>) =
        certs.into_iter().partition(|c| c.is_self_signed());
    let (Some(root), Some(inter)) = (roots.first(), inters.first()) else {
        a.fail(NAME, "the chain needs an ASK/ASVK and a self-signed ARK");
        return Some(chain_key(false));
    };
    if roots.len() > 1 || inters.len() > 1 {
        a.fail(NAME, "the chain holds more than one ASK/ASVK or ARK");
        return Some(chain_key(false));
    }
    match snp::verify_amd_chain(&vek, inter, root, &policy.trust_roots, now) {
        Ok(r) => {
            a.pass(NAME, format!("{} valid at now", r.detail));
            Some(chain_key(r.hardware_rooted))
        }
        Err(e) => {
            a.fail(NAME, e);
            Some(chain_key(false))
        }
    }
}

/// TDX checks; returns REPORTDATA when the quote parsed.
pub fn tdx(a: &mut Appraisal, ev: &TdxEvidence, policy: &Policy, now: i64) -> Option<[u8; 64]> {
    let q = match Quote::parse(&ev.quote) {
        Ok(q) => q,
        Err(e) => {
            a.fail("tdx.quote_format", e);
            a.unusable = true;
            return None;
        }
    };
    a.pass(
        "tdx.quote_format",
        format!(
            "quote v4, {} bytes ({} trailing bytes ignored)",
            q.raw.len(),
            ev.quote.len() - q.raw.len()
        ),
    );
    a.claim("tdx.mrtd", hex::encode(q.mrtd));
    for (i, r) in q.rtmrs.iter().enumerate() {
        a.claim(&format!("tdx.rtmr{i}"), hex::encode(r));
    }
    a.claim("tdx.report_data", hex::encode(q.report_data));
    a.claim("tdx.td_attributes", format!("{:#018x}", q.td_attributes));
    a.claim("tdx.qe_vendor_id", hex::encode(q.qe_vendor_id()));
    a.claim("tdx.qe_mrsigner", hex::encode(q.qe_mrsigner()));
    if let Some(f) = q.fmspc() {
        a.claim("tdx.fmspc", hex::encode(f));
    }
    a.record("tdx.quote_signature", q.verify_quote_signature());
    a.record("tdx.qe_binding", q.verify_qe_binding());
    a.record("tdx.pck_chain", q.verify_pck(now));
    if q.td_attributes & 1 != 0 {
        if policy.allow_debug {
            a.warn("policy.debug", "TD attributes DEBUG set; allowed by policy");
        } else {
            a.fail("policy.debug", "TD attributes DEBUG set");
        }
    } else {
        a.pass("policy.debug", "TD debug off");
    }
    match &policy.mrtd {
        Some(set) if in_set(set, &q.mrtd) => a.pass("policy.mrtd", "MRTD is a reference value"),
        Some(_) => a.fail(
            "policy.mrtd",
            format!("MRTD {} is not a reference value", hex::encode(q.mrtd)),
        ),
        None => a.not_run("policy.mrtd", "the policy lists no reference MRTDs"),
    }
    match &ev.ccel {
        Some(log) => a.record(
            "eventlog.ccel_replay",
            crate::eventlog::parse(log).and_then(|l| {
                let r = crate::eventlog::replay(&l);
                crate::eventlog::compare_with_rtmrs(&r, &q.rtmrs)
                    .map(|s| format!("{s} ({} events)", l.events.len()))
            }),
        ),
        None => a.not_run("eventlog.ccel_replay", "no CCEL log in the bundle"),
    }
    Some(q.report_data)
}

/// REPORT_DATA = SHA-512(nonce ‖ manifest); without a manifest, a 64-byte
/// nonce must equal REPORT_DATA itself.
pub fn binding(a: &mut Appraisal, ev: &Evidence, report_data: Option<[u8; 64]>) {
    const NAME: &str = "binding.report_data";
    let Some(rd) = report_data else {
        a.not_run(NAME, "no parsed report");
        return;
    };
    match (&ev.nonce, &ev.manifest) {
        (Some(n), Some(m)) => {
            let mut h = Sha512::new();
            h.update(n);
            h.update(m);
            if h.finalize()[..] == rd {
                a.pass(NAME, "REPORT_DATA = SHA-512(nonce || manifest)");
            } else {
                a.fail(NAME, "REPORT_DATA is not SHA-512(nonce || manifest)");
            }
        }
        (Some(n), None) if n.len() == 64 => {
            if n[..] == rd {
                a.pass(NAME, "REPORT_DATA equals the 64-byte nonce (no manifest)");
            } else {
                a.fail(NAME, "REPORT_DATA does not equal the nonce");
            }
        }
        (Some(_), None) => a.not_run(NAME, "no manifest (and the nonce is not 64 bytes)"),
        (None, _) => a.not_run(NAME, "no nonce in the bundle"),
    }
}
