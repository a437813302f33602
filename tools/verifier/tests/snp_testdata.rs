//! Real SEV-SNP evidence (tests/data/snp, see its README): every report
//! verifies to the conclusions recorded in expected.json, and breaks for the
//! right reason when a signed bit, the chain or the time is wrong.

mod common;
use common::*;
use rivet_verifier::cert::parse_certs;
use rivet_verifier::snp::{self, Report};
use rivet_verifier::{Policy, Status, appraise};
use serde_json::json;

const GOSEV_REPORT: &[u8] = include_bytes!("data/snp/milan_gosev_report.bin");
const GOSEV_VCEK: &[u8] = include_bytes!("data/snp/milan_gosev_vcek.der");
const VIRTEE_REPORT: &[u8] = include_bytes!("data/snp/milan_virtee_report.bin");
const VIRTEE_VCEK: &[u8] = include_bytes!("data/snp/milan_virtee_vcek.der");
const VLEK_REPORT: &[u8] = include_bytes!("data/snp/milan_vlek_report.bin");
const VLEK: &[u8] = include_bytes!("data/snp/milan_vlek.der");
const ASK_ARK_MILAN: &[u8] = include_bytes!("data/snp/ask_ark_milan.pem");
const ASVK_ARK_MILAN: &[u8] = include_bytes!("data/snp/asvk_ark_milan.pem");
const ASK_ARK_GENOA: &[u8] = include_bytes!("data/snp/ask_ark_genoa.pem");
const ASK_ARK_TURIN: &[u8] = include_bytes!("data/snp/ask_ark_turin.pem");
const TURIN_VCEK: &[u8] = include_bytes!("data/snp/turin_virtee_vcek.der");

fn bundle(report: &[u8], vek: &[u8], chain: &[u8]) -> rivet_verifier::Evidence {
    evidence(json!({ "snp": { "report": hexs(report), "vek": hexs(vek), "chain": [hexs(chain)] } }))
}

const HW_CHECKS: [&str; 5] = [
    "snp.endorsement_chain",
    "snp.report_signature",
    "snp.signing_key",
    "snp.tcb_extensions",
    "snp.hardware_root",
];

#[test]
fn gosev_report_verifies_with_expected_claims() {
    let a = appraise(
        &bundle(GOSEV_REPORT, GOSEV_VCEK, ASK_ARK_MILAN),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    for c in HW_CHECKS {
        assert_pass(&a, c);
    }
    assert_eq!(
        claim(&a, "snp.measurement"),
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
    );
    assert!(claim(&a, "snp.report_data").starts_with("0102030405000000"));
    assert_eq!(claim(&a, "snp.policy"), "0xb0000");
    assert_eq!(claim(&a, "snp.reported_tcb"), "0200000000000544");
    assert!(
        claim(&a, "snp.chip_id").starts_with("3ac3fe21")
            && claim(&a, "snp.chip_id").ends_with("006b5d")
    );
    // Policy 0xb0000 has DEBUG (bit 19): refused unless allowed.
    assert_fail(&a, "policy.debug", "debugging");
    let r = Report::parse(GOSEV_REPORT).unwrap();
    assert_eq!(r.vmpl, 0);
    assert_eq!(
        snp::Tcb::decode(r.reported_tcb, false),
        snp::Tcb {
            bl: 2,
            tee: 0,
            snp: 5,
            ucode: 68,
            fmc: None
        }
    );
}

#[test]
fn gosev_report_with_a_permissive_policy_is_only_warned_for_missing_parts() {
    let mut p: Policy = Policy::from_json(
        r#"{"allow_debug": true, "allowed_vmpls": [0],
            "measurements": ["b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"],
            "min_tcb": {"bl": 2, "snp": 5, "ucode": 68}}"#,
    )
    .unwrap();
    p.now = Some(rivet_verifier::parse_time("2026-01-01T00:00:00Z").unwrap());
    let a = appraise(&bundle(GOSEV_REPORT, GOSEV_VCEK, ASK_ARK_MILAN), &p);
    assert_none_failed(&a);
    assert_eq!(a.status, Status::Warning);
    for c in ["policy.measurement", "policy.min_tcb", "policy.vmpl"] {
        assert_pass(&a, c);
    }
    // Absent inputs are never passes.
    let b = a.check("binding.report_data").unwrap();
    assert!(!b.run && b.status == Status::Warning);
    // A higher minimum TCB fails.
    p.min_tcb = Some(snp::Tcb {
        bl: 2,
        snp: 6,
        ..Default::default()
    });
    assert_fail(
        &appraise(&bundle(GOSEV_REPORT, GOSEV_VCEK, ASK_ARK_MILAN), &p),
        "policy.min_tcb",
        "below",
    );
}

#[test]
fn virtee_report_verifies() {
    let a = appraise(
        &bundle(VIRTEE_REPORT, VIRTEE_VCEK, ASK_ARK_MILAN),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    for c in HW_CHECKS {
        assert_pass(&a, c);
    }
    assert_pass(&a, "policy.debug");
    assert_none_failed(&a);
    assert!(claim(&a, "snp.measurement").starts_with("7a1e5c26"));
    assert!(claim(&a, "snp.report_data").starts_with("d447b55d"));
    assert_eq!(claim(&a, "snp.reported_tcb"), "0300000000000873");
}

#[test]
fn vlek_report_verifies_under_the_asvk_before_expiry() {
    let a = appraise(
        &bundle(VLEK_REPORT, VLEK, ASVK_ARK_MILAN),
        &policy_at("2025-06-01T00:00:00Z"),
    );
    for c in HW_CHECKS {
        assert_pass(&a, c);
    }
    assert_none_failed(&a);
    assert_eq!(claim(&a, "snp.signing_key"), "Vlek");
    assert_eq!(claim(&a, "snp.reported_tcb"), "04000000000018d9");
    let r = Report::parse(VLEK_REPORT).unwrap();
    assert_eq!((r.version, r.vmpl, r.signer_info), (3, 1, 4));
    assert_eq!(r.cpuid_fms, [0x19, 0x01, 0x01]);
    assert!(
        a.check("snp.tcb_extensions")
            .unwrap()
            .reason
            .contains("amazonaws.com")
    );
}

#[test]
fn expired_vlek_fails_after_2025_12_10() {
    let a = appraise(
        &bundle(VLEK_REPORT, VLEK, ASVK_ARK_MILAN),
        &policy_at("2025-12-11T00:00:00Z"),
    );
    assert_fail(&a, "snp.endorsement_chain", "expired");
    let a = appraise(
        &bundle(VLEK_REPORT, VLEK, ASVK_ARK_MILAN),
        &policy_at("2025-12-10T22:00:00Z"),
    );
    assert_pass(&a, "snp.endorsement_chain");
}

#[test]
fn vlek_against_the_ask_fails() {
    let a = appraise(
        &bundle(VLEK_REPORT, VLEK, ASK_ARK_MILAN),
        &policy_at("2025-06-01T00:00:00Z"),
    );
    assert_fail(&a, "snp.endorsement_chain", "signature invalid");
    // Directly: the signature check alone, names aside.
    let vlek = &parse_certs(VLEK).unwrap()[0];
    let ask = &parse_certs(ASK_ARK_MILAN).unwrap()[0];
    let asvk = &parse_certs(ASVK_ARK_MILAN).unwrap()[0];
    assert!(vlek.verify_signed_by(ask).is_err());
    assert!(vlek.verify_signed_by(asvk).is_ok());
}

#[test]
fn vcek_under_the_wrong_product_chain_fails() {
    let a = appraise(
        &bundle(GOSEV_REPORT, GOSEV_VCEK, ASK_ARK_GENOA),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_fail(&a, "snp.endorsement_chain", "not signed by");
}

#[test]
fn report_under_another_chips_vcek_fails() {
    let a = appraise(
        &bundle(GOSEV_REPORT, VIRTEE_VCEK, ASK_ARK_MILAN),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_pass(&a, "snp.endorsement_chain");
    assert_fail(&a, "snp.report_signature", "signature invalid");
    assert_fail(&a, "snp.tcb_extensions", "");
}

#[test]
fn vcek_where_signer_info_says_vlek_is_refused() {
    // The VLEK report names a VLEK; handing it the VCEK kind of leaf must fail
    // the signing-key check (the signature fails too).
    let a = appraise(
        &bundle(VLEK_REPORT, GOSEV_VCEK, ASK_ARK_MILAN),
        &policy_at("2025-06-01T00:00:00Z"),
    );
    assert_fail(&a, "snp.signing_key", "signer_info says Vlek");
}

#[test]
fn every_flipped_signed_bit_breaks_the_signature() {
    for (report, vek, chain, now) in [
        (
            GOSEV_REPORT,
            GOSEV_VCEK,
            ASK_ARK_MILAN,
            "2026-01-01T00:00:00Z",
        ),
        (
            VIRTEE_REPORT,
            VIRTEE_VCEK,
            ASK_ARK_MILAN,
            "2026-01-01T00:00:00Z",
        ),
        (VLEK_REPORT, VLEK, ASVK_ARK_MILAN, "2025-06-01T00:00:00Z"),
    ] {
        // report_data[0] ^= 1, then a spread of bytes over the signed part and the signature.
        let mut spots: Vec<(usize, u8)> = vec![(0x50, 0)];
        spots.extend((0..0x2A0).step_by(41).map(|b| (b, (b % 8) as u8)));
        spots.extend([(0x2A0, 0), (0x2E8 + 47, 7)]);
        for (byte, bit) in spots {
            let bad = flip(report, byte, bit);
            let a = appraise(&bundle(&bad, vek, chain), &policy_at(now));
            let (s, r) = check(&a, "snp.report_signature");
            assert_eq!(
                s,
                Status::Contraindicated,
                "flip {byte:#x}.{bit} accepted: {r}"
            );
            assert_eq!(a.status, Status::Contraindicated);
        }
    }
}

#[test]
fn turin_vcek_chains_to_the_turin_ark_and_its_extensions_are_read() {
    let vcek = &parse_certs(TURIN_VCEK).unwrap()[0];
    let chain = parse_certs(ASK_ARK_TURIN).unwrap();
    let r = snp::verify_amd_chain(
        vcek,
        &chain[0],
        &chain[1],
        &[],
        rivet_verifier::parse_time("2026-01-01T00:00:00Z").unwrap(),
    )
    .unwrap();
    assert!(r.hardware_rooted);
    assert_eq!(snp::product_name(vcek).as_deref(), Some("Turin"));
    // A Turin-layout report (no real one exists): fmc=0 bl=0 tee=0 snp=0 ucode=9, chip_id starting with the hwID.
    let mut raw = vec![0u8; snp::REPORT_SIZE];
    raw[0] = 3;
    raw[0x188] = 0x1A;
    raw[0x187] = 9; // reported_tcb byte 7 = ucode
    raw[0x1A0..0x1A8].copy_from_slice(&hex::decode("1e550a8ee5cf9f4d").unwrap());
    let rep = Report::parse(&raw).unwrap();
    assert!(rep.is_turin());
    snp::check_vek_extensions(vcek, &rep, true).unwrap();
    raw[0x187] = 8;
    let rep = Report::parse(&raw).unwrap();
    assert!(
        snp::check_vek_extensions(vcek, &rep, true)
            .unwrap_err()
            .contains("ucodeSPL")
    );
    // The Turin VCEK is not signed by the Milan ASK.
    let milan = parse_certs(ASK_ARK_MILAN).unwrap();
    assert!(snp::verify_amd_chain(vcek, &milan[0], &milan[1], &[], 0).is_err());
}

#[test]
fn all_kds_chains_are_valid_and_rooted_in_the_builtin_arks() {
    for pem in [ASK_ARK_MILAN, ASK_ARK_GENOA, ASK_ARK_TURIN, ASVK_ARK_MILAN] {
        let c = parse_certs(pem).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[1].is_self_signed());
        c[0].verify_signed_by(&c[1]).unwrap();
        assert!(
            rivet_verifier::roots::amd_arks()
                .iter()
                .any(|a| a.der == c[1].der)
        );
    }
}

#[test]
fn truncated_or_malformed_inputs_are_refused_without_panicking() {
    let a = appraise(
        &bundle(&GOSEV_REPORT[..0x2A0], GOSEV_VCEK, ASK_ARK_MILAN),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert!(a.unusable);
    assert_fail(&a, "snp.report_format", "bytes");
    let a = appraise(
        &bundle(GOSEV_REPORT, &GOSEV_VCEK[..100], ASK_ARK_MILAN),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_fail(&a, "snp.endorsement_chain", "malformed certificate");
    assert!(!a.check("snp.report_signature").unwrap().run);
    let a = appraise(
        &bundle(
            GOSEV_REPORT,
            GOSEV_VCEK,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        ),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_eq!(a.status, Status::Contraindicated);
    // Every prefix of a certificate is handled.
    for n in 0..GOSEV_VCEK.len() {
        let _ = parse_certs(&GOSEV_VCEK[..n]);
    }
}

#[test]
fn a_report_without_endorsement_is_not_run_never_passed() {
    let ev = evidence(json!({ "snp": { "report": hexs(VIRTEE_REPORT) } }));
    let a = appraise(&ev, &policy_at("2026-01-01T00:00:00Z"));
    let c = a.check("snp.report_signature").unwrap();
    assert!(!c.run);
    assert_ne!(a.status, Status::Affirming);
}
