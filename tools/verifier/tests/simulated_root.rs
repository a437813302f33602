//! The native platform's evidence: SNP-layout reports signed by a simulated
//! chain (or a bare simulated key). It verifies only when the simulated root
//! or key is passed explicitly, and is never hardware-rooted.

mod common;
use common::*;
use rivet_verifier::simulated::{SimulatedChain, sign_report};
use rivet_verifier::snp::REPORT_SIZE;
use rivet_verifier::{Policy, Status, appraise, parse_time};
use serde_json::json;
use sha2::{Digest, Sha512};

const NOW: &str = "2026-06-01T00:00:00Z";
const TCB: u64 = 0x0300_0000_0000_0873;

fn chain() -> SimulatedChain {
    SimulatedChain::new(
        b"rivet test seed",
        TCB,
        &[0x5a; 64],
        parse_time("2026-01-01T00:00:00Z").unwrap(),
        parse_time("2027-01-01T00:00:00Z").unwrap(),
    )
    .unwrap()
}

fn report(sign: impl Fn(&mut [u8]), nonce: &[u8], manifest: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; REPORT_SIZE];
    r[0] = 2;
    r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes());
    let rd = Sha512::new()
        .chain_update(nonce)
        .chain_update(manifest)
        .finalize();
    r[0x50..0x90].copy_from_slice(&rd);
    r[0x90..0xC0].fill(0xAB);
    r[0x180..0x188].copy_from_slice(&TCB.to_le_bytes());
    r[0x1A0..0x1E0].fill(0x5a);
    sign(&mut r);
    r
}

fn chain_bundle(c: &SimulatedChain, rep: &[u8]) -> rivet_verifier::Evidence {
    evidence(json!({
        "snp": { "report": hexs(rep), "vek": hexs(&c.vcek.der), "chain": [hexs(&c.ask.der), hexs(&c.ark.der)] },
        "nonce": hexs(b"nonce"),
        "manifest": hexs(b"manifest bytes"),
    }))
}

fn policy(trust: Option<&[u8]>, allow: bool) -> Policy {
    let mut p = policy_at(NOW);
    if let Some(t) = trust {
        p.add_trust_root(t).unwrap();
    }
    p.allow_simulated_root = allow;
    p
}

#[test]
fn simulated_chain_verifies_only_with_its_root_passed() {
    let c = chain();
    let rep = report(|r| c.sign_report(r).unwrap(), b"nonce", b"manifest bytes");
    let ev = chain_bundle(&c, &rep);

    let a = appraise(&ev, &policy(Some(&c.ark.der), true));
    for name in [
        "snp.endorsement_chain",
        "snp.report_signature",
        "snp.signing_key",
        "snp.tcb_extensions",
        "binding.report_data",
    ] {
        assert_pass(&a, name);
    }
    let (s, r) = check(&a, "snp.hardware_root");
    assert_eq!(s, Status::Warning);
    assert!(r.contains("not hardware-rooted"));
    assert_none_failed(&a);
    assert_eq!(a.status, Status::Warning);

    // Root passed but the policy does not allow simulated roots.
    let a = appraise(&ev, &policy(Some(&c.ark.der), false));
    assert_fail(&a, "snp.hardware_root", "not hardware-rooted");
    assert_pass(&a, "snp.report_signature");

    // Root not passed.
    let a = appraise(&ev, &policy(None, true));
    assert_fail(&a, "snp.endorsement_chain", "not hardware-rooted");

    // Another simulated root passed.
    let other = SimulatedChain::new(b"other", TCB, &[0; 64], 0, i64::from(u32::MAX)).unwrap();
    let a = appraise(&ev, &policy(Some(&other.ark.der), true));
    assert_fail(&a, "snp.endorsement_chain", "not hardware-rooted");

    // The simulated leaf outside its validity.
    let mut p = policy(Some(&c.ark.der), true);
    p.now = Some(parse_time("2027-06-01T00:00:00Z").unwrap());
    assert_fail(&appraise(&ev, &p), "snp.endorsement_chain", "expired");
}

#[test]
fn simulated_report_with_a_flipped_bit_is_rejected() {
    let c = chain();
    let rep = report(|r| c.sign_report(r).unwrap(), b"nonce", b"manifest bytes");
    let bad = flip(&rep, 0x90, 0);
    let a = appraise(&chain_bundle(&c, &bad), &policy(Some(&c.ark.der), true));
    assert_fail(&a, "snp.report_signature", "signature invalid");
    // The binding catches a different manifest.
    let ev = evidence(json!({
        "snp": { "report": hexs(&rep), "vek": hexs(&c.vcek.der), "chain": [hexs(&c.ask.der), hexs(&c.ark.der)] },
        "nonce": hexs(b"nonce"), "manifest": hexs(b"other manifest"),
    }));
    assert_fail(
        &appraise(&ev, &policy(Some(&c.ark.der), true)),
        "binding.report_data",
        "SHA-512",
    );
}

#[test]
fn bare_simulated_key_variant() {
    let c = chain();
    let key = c.vcek_key.clone();
    let rep = report(|r| sign_report(&key, r).unwrap(), b"n", b"m");
    let sec1 = c.vcek_public_sec1();
    let ev = evidence(json!({
        "snp": { "report": hexs(&rep), "simulated_vcek_public_key": hex::encode(&sec1) },
        "nonce": hexs(b"n"), "manifest": hexs(b"m"),
    }));
    // Passed explicitly (as hex text, as `--trust-root key.hex` would).
    let a = appraise(&ev, &policy(Some(hex::encode(&sec1).as_bytes()), true));
    assert_pass(&a, "snp.endorsement_chain");
    assert_pass(&a, "snp.report_signature");
    assert_eq!(check(&a, "snp.hardware_root").0, Status::Warning);
    assert_none_failed(&a);
    // Not passed.
    let a = appraise(&ev, &policy(None, true));
    assert_fail(&a, "snp.endorsement_chain", "not hardware-rooted");
    // Another key claimed in the bundle.
    let other = SimulatedChain::new(b"other", TCB, &[0; 64], 0, i64::from(u32::MAX)).unwrap();
    let ev2 = evidence(
        json!({ "snp": { "report": hexs(&rep), "simulated_vcek_public_key": hex::encode(other.vcek_public_sec1()) } }),
    );
    let a = appraise(&ev2, &policy(Some(&other.vcek_public_sec1()), true));
    assert_fail(&a, "snp.report_signature", "signature invalid");
}

#[test]
fn the_same_seed_gives_the_same_chain() {
    let a = chain();
    let b = chain();
    assert_eq!(a.ark.der, b.ark.der);
    assert_eq!(a.vcek.der, b.vcek.der);
    assert!(a.ark.is_self_signed());
    a.vcek.verify_signed_by(&a.ask).unwrap();
    // A simulated chain never matches a built-in AMD ARK.
    assert!(
        !rivet_verifier::roots::amd_arks()
            .iter()
            .any(|r| r.der == a.ark.der)
    );
}
