//! Real TDX evidence (tests/data/tdx): both quotes verify (signature, QE
//! binding, PCK chain to the Intel SGX Root CA), the GCP CCEL replays to its
//! quote's RTMRs, and one flipped bit breaks each for the right reason.

mod common;
use common::*;
use rivet_verifier::tdx::Quote;
use rivet_verifier::{Status, appraise};
use serde_json::json;

const SPR: &[u8] = include_bytes!("data/tdx/quote_v4_spr_e4.dat");
const GCP: &[u8] = include_bytes!("data/tdx/gcp_cos113_quote_v4.dat");
const CCEL: &[u8] = include_bytes!("data/tdx/gcp_cos113_ccel_eventlog.bin");
const NONCE: &[u8] = include_bytes!("data/tdx/gcp_cos113_nonce.bin");
const NOW: &str = "2026-01-01T00:00:00Z";
const TDX_CHECKS: [&str; 3] = ["tdx.quote_signature", "tdx.qe_binding", "tdx.pck_chain"];

fn quote_only(q: &[u8]) -> rivet_verifier::Evidence {
    evidence(json!({ "tdx": { "quote": hexs(q) } }))
}

fn gcp_bundle(quote: &[u8], ccel: &[u8]) -> rivet_verifier::Evidence {
    evidence(json!({ "tdx": { "quote": hexs(quote), "ccel": hexs(ccel) }, "nonce": hexs(NONCE) }))
}

#[test]
fn spr_quote_verifies_and_ignores_trailing_bytes() {
    let a = appraise(&quote_only(SPR), &policy_at(NOW));
    for c in TDX_CHECKS {
        assert_pass(&a, c);
    }
    assert_none_failed(&a);
    let q = Quote::parse(SPR).unwrap();
    assert_eq!(q.raw.len(), 4935);
    assert!(
        claim(&a, "tdx.mrtd").starts_with("6363b804")
            && claim(&a, "tdx.mrtd").ends_with("d7215cbb")
    );
    assert!(
        claim(&a, "tdx.rtmr0").starts_with("2927da70")
            && claim(&a, "tdx.rtmr0").ends_with("6593f32a")
    );
    assert!(
        claim(&a, "tdx.report_data").starts_with("6c62dec1")
            && claim(&a, "tdx.report_data").ends_with("281f1113")
    );
    assert_eq!(claim(&a, "tdx.fmspc"), "50806f000000");
    assert_eq!(
        hex::encode(&q.qe_auth_data),
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    );
}

#[test]
fn gcp_quote_verifies_and_its_ccel_replays_to_the_rtmrs() {
    let a = appraise(&gcp_bundle(GCP, CCEL), &policy_at(NOW));
    for c in TDX_CHECKS {
        assert_pass(&a, c);
    }
    assert_pass(&a, "eventlog.ccel_replay");
    assert_pass(&a, "binding.report_data");
    assert_none_failed(&a);
    assert_eq!(claim(&a, "tdx.fmspc"), "00806f050000");
    assert_eq!(claim(&a, "tdx.report_data"), "00".repeat(64));
    assert!(claim(&a, "tdx.rtmr2").starts_with("4969684d"));
    let log = rivet_verifier::eventlog::parse(CCEL).unwrap();
    assert!(log.crypto_agile);
    assert_eq!(log.events.len() + 1, 44);
}

#[test]
fn flipped_bits_break_the_quote_for_the_right_reason() {
    let q = Quote::parse(SPR).unwrap();
    let body_report_data = 48 + 520;
    // Header and TD report body: the quote signature.
    for byte in [0x0C, 48 + 136, body_report_data, 631] {
        let a = appraise(&quote_only(&flip(SPR, byte, 3)), &policy_at(NOW));
        assert_fail(&a, "tdx.quote_signature", "signature invalid");
    }
    // The signature itself.
    let a = appraise(&quote_only(&flip(SPR, 636 + 10, 0)), &policy_at(NOW));
    assert_fail(&a, "tdx.quote_signature", "signature invalid");
    // The QE report (its MRENCLAVE): QE report signature under the PCK.
    let qe = 636 + 128 + 6;
    let a = appraise(&quote_only(&flip(SPR, qe + 64, 1)), &policy_at(NOW));
    assert_fail(&a, "tdx.pck_chain", "QE report signature");
    // The QE auth data: the attestation-key binding.
    let auth = qe + 384 + 64 + 2;
    assert_eq!(SPR[auth + 1], 1);
    let a = appraise(&quote_only(&flip(SPR, auth + 1, 0)), &policy_at(NOW));
    assert_fail(&a, "tdx.qe_binding", "does not bind");
    // The attestation key: both its signature and its binding break.
    let a = appraise(&quote_only(&flip(SPR, 636 + 64 + 5, 2)), &policy_at(NOW));
    assert_eq!(check(&a, "tdx.qe_binding").0, Status::Contraindicated);
    assert_eq!(check(&a, "tdx.quote_signature").0, Status::Contraindicated);
    let _ = q;
}

#[test]
fn a_flipped_ccel_digest_breaks_the_replay() {
    let log = rivet_verifier::eventlog::parse(CCEL).unwrap();
    assert!(!log.events.is_empty());
    // Find the first SHA-384 digest of a measured event by searching its bytes.
    let ev = log.events.iter().find(|e| e.event_type != 3).unwrap();
    let d = &ev.digests[0].1;
    let pos = CCEL.windows(d.len()).position(|w| w == &d[..]).unwrap();
    let a = appraise(&gcp_bundle(GCP, &flip(CCEL, pos, 0)), &policy_at(NOW));
    assert_fail(&a, "eventlog.ccel_replay", "RTMR");
    // The same log against the other quote's RTMRs fails too.
    let spr = evidence(json!({ "tdx": { "quote": hexs(SPR), "ccel": hexs(CCEL) } }));
    assert_fail(
        &appraise(&spr, &policy_at(NOW)),
        "eventlog.ccel_replay",
        "RTMR0",
    );
}

#[test]
fn wrong_nonce_fails_the_binding() {
    let ev = evidence(json!({ "tdx": { "quote": hexs(GCP) }, "nonce": hexs(&[1u8; 64]) }));
    assert_fail(
        &appraise(&ev, &policy_at(NOW)),
        "binding.report_data",
        "does not equal",
    );
}

#[test]
fn pck_chain_is_judged_at_now() {
    // The SPR PCK leaf expires 2029-09-20.
    let a = appraise(&quote_only(SPR), &policy_at("2030-01-01T00:00:00Z"));
    assert_fail(&a, "tdx.pck_chain", "expired");
    let a = appraise(&quote_only(SPR), &policy_at("2018-01-01T00:00:00Z"));
    assert_fail(&a, "tdx.pck_chain", "not valid before");
}

#[test]
fn mrtd_policy() {
    let mut p = policy_at(NOW);
    p.mrtd = Some(vec!["6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb".into()]);
    assert_pass(&appraise(&quote_only(SPR), &p), "policy.mrtd");
    assert_fail(
        &appraise(&quote_only(GCP), &p),
        "policy.mrtd",
        "not a reference value",
    );
}

#[test]
fn truncated_quotes_are_unusable_not_panics() {
    for n in [0, 10, 48, 631, 636, 700, 1200, 4934] {
        let a = appraise(&quote_only(&SPR[..n]), &policy_at(NOW));
        assert!(a.unusable, "prefix {n}");
        assert_eq!(a.status, Status::Contraindicated);
    }
}
