//! vTPM evidence: the real RHEL 8 event log replays to the recorded PCRs in
//! every bank; quotes by ECDSA (made here) and RSA (OpenSSL-made fixtures)
//! AKs verify, and break when a signed bit, the nonce or a PCR changes.

mod common;
use common::*;
use p256::ecdsa::SigningKey as P256Key;
use rivet_verifier::tpm::HashAlg;
use rivet_verifier::{Status, appraise, eventlog};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const LOG: &[u8] = include_bytes!("data/tpm/rhel8_gce_eventlog.bin");
const EXPECTED: &str = include_str!("data/tpm/expected.json");
const VIRTEE_REPORT: &[u8] = include_bytes!("data/snp/milan_virtee_report.bin");
const RSA_PUB: &[u8] = include_bytes!("data/synthetic/rsa_ak_public.bin");
const RSA_ATTEST: &[u8] = include_bytes!("data/synthetic/rsa_quote_attest.bin");
const RSA_NONCE: &[u8] = include_bytes!("data/synthetic/rsa_quote_nonce.bin");
const RSA_SIG_SSA: &[u8] = include_bytes!("data/synthetic/rsa_quote_sig_rsassa.bin");
const RSA_SIG_PSS: &[u8] = include_bytes!("data/synthetic/rsa_quote_sig_rsapss.bin");
const SEL: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14];

fn expected_pcrs() -> Value {
    let v: Value = serde_json::from_str(EXPECTED).unwrap();
    v["rhel8_gce_eventlog.bin"]["replayed_pcrs"].clone()
}

fn b2(x: &[u8]) -> Vec<u8> {
    let mut v = (x.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(x);
    v
}

/// TPMT_PUBLIC of an ECC P-256 ECDSA signing key.
fn ecc_public(key: &P256Key) -> Vec<u8> {
    let p = key.verifying_key().to_sec1_point(false);
    let b = p.as_bytes();
    let mut v = Vec::new();
    for x in [0x0023u16, 0x000B] {
        v.extend(x.to_be_bytes());
    }
    v.extend(0x0005_0072u32.to_be_bytes());
    v.extend(b2(&[]));
    for x in [0x0010u16, 0x0018, 0x000B, 0x0003, 0x0010] {
        v.extend(x.to_be_bytes());
    }
    v.extend(b2(&b[1..33]));
    v.extend(b2(&b[33..65]));
    v
}

/// TPMS_ATTEST quoting SHA-256 PCRs `SEL` with the given digest.
fn attest(nonce: &[u8], pcr_digest: &[u8]) -> Vec<u8> {
    let mut v = 0xff54_4347u32.to_be_bytes().to_vec();
    v.extend(0x8018u16.to_be_bytes());
    v.extend(b2(&[0u8; 34]));
    v.extend(b2(nonce));
    v.extend(1000u64.to_be_bytes());
    v.extend(1u32.to_be_bytes());
    v.extend(0u32.to_be_bytes());
    v.push(1);
    v.extend(0x2020u64.to_be_bytes());
    v.extend(1u32.to_be_bytes());
    v.extend(0x000Bu16.to_be_bytes());
    v.extend([3, 0xff, 0x43, 0x00]);
    v.extend(b2(pcr_digest));
    v
}

fn sha256_pcr_digest() -> Vec<u8> {
    let e = expected_pcrs();
    let mut h = Sha256::new();
    for i in SEL {
        h.update(hex::decode(e["sha256"][i.to_string()].as_str().unwrap()).unwrap());
    }
    h.finalize().to_vec()
}

fn ecdsa_sig(key: &P256Key, msg: &[u8]) -> Vec<u8> {
    use ecdsa::signature::Signer;
    let s: p256::ecdsa::Signature = key.sign(msg);
    let b = s.to_bytes();
    let mut v = 0x0018u16.to_be_bytes().to_vec();
    v.extend(0x000Bu16.to_be_bytes());
    v.extend(b2(&b[..32]));
    v.extend(b2(&b[32..]));
    v
}

fn bundle(
    attest: &[u8],
    sig: &[u8],
    ak: &[u8],
    nonce: &[u8],
    log: &[u8],
) -> rivet_verifier::Evidence {
    evidence(json!({
        "snp": { "report": hexs(VIRTEE_REPORT) },
        "tpm_quote": { "attest": hexs(attest), "signature": hexs(sig), "nonce": hexs(nonce) },
        "ak_public": hexs(ak),
        "pcrs": expected_pcrs(),
        "event_log": hexs(log),
    }))
}

#[test]
fn rhel8_log_replays_to_the_recorded_pcrs_in_every_bank() {
    let log = eventlog::parse(LOG).unwrap();
    assert!(log.crypto_agile);
    assert_eq!(
        log.banks,
        vec![HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384]
    );
    assert_eq!(log.events.len() + 1, 83);
    let replay = eventlog::replay(&log);
    let e = expected_pcrs();
    let mut n = 0;
    for bank in ["sha1", "sha256", "sha384"] {
        let want = e[bank].as_object().unwrap();
        let got = &replay[bank];
        assert_eq!(got.len(), want.len(), "{bank}: PCRs extended");
        for (i, v) in want {
            let i: u32 = i.parse().unwrap();
            assert_eq!(hex::encode(&got[&i]), v.as_str().unwrap(), "{bank} PCR {i}");
            n += 1;
        }
    }
    assert_eq!(n, 33);
}

#[test]
fn ecdsa_quote_verifies_and_breaks_on_every_change() {
    let key = P256Key::from_slice(&Sha256::digest(b"rivet test AK")).unwrap();
    let ak = ecc_public(&key);
    let nonce = b"fresh nonce 0123456789abcdef".to_vec();
    let at = attest(&nonce, &sha256_pcr_digest());
    let sig = ecdsa_sig(&key, &at);
    let a = appraise(
        &bundle(&at, &sig, &ak, &nonce, LOG),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    for c in [
        "tpm.quote_signature",
        "tpm.nonce",
        "tpm.pcr_digest",
        "eventlog.replay",
    ] {
        assert_pass(&a, c);
    }
    // A bit flipped anywhere in TPMS_ATTEST breaks the signature.
    for byte in (0..at.len()).step_by(7) {
        let a = appraise(
            &bundle(&flip(&at, byte, 1), &sig, &ak, &nonce, LOG),
            &policy_at("2026-01-01T00:00:00Z"),
        );
        let (s, r) = check(&a, "tpm.quote_signature");
        assert_eq!(s, Status::Contraindicated, "byte {byte}: {r}");
    }
    // Wrong nonce.
    let a = appraise(
        &bundle(&at, &sig, &ak, b"stale", LOG),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_fail(&a, "tpm.nonce", "does not equal");
    // A correctly signed quote over other PCR values.
    let at2 = attest(&nonce, &[7u8; 32]);
    let a = appraise(
        &bundle(&at2, &ecdsa_sig(&key, &at2), &ak, &nonce, LOG),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_pass(&a, "tpm.quote_signature");
    assert_fail(&a, "tpm.pcr_digest", "does not match");
    // Another AK.
    let other = ecc_public(&P256Key::from_slice(&Sha256::digest(b"other")).unwrap());
    let a = appraise(
        &bundle(&at, &sig, &other, &nonce, LOG),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_fail(&a, "tpm.quote_signature", "invalid");
}

#[test]
fn rsa_quotes_made_by_openssl_verify() {
    for sig in [RSA_SIG_SSA, RSA_SIG_PSS] {
        let a = appraise(
            &bundle(RSA_ATTEST, sig, RSA_PUB, RSA_NONCE, LOG),
            &policy_at("2026-01-01T00:00:00Z"),
        );
        for c in ["tpm.quote_signature", "tpm.nonce", "tpm.pcr_digest"] {
            assert_pass(&a, c);
        }
        let a = appraise(
            &bundle(&flip(RSA_ATTEST, 40, 0), sig, RSA_PUB, RSA_NONCE, LOG),
            &policy_at("2026-01-01T00:00:00Z"),
        );
        assert_fail(&a, "tpm.quote_signature", "invalid");
        let a = appraise(
            &bundle(RSA_ATTEST, &flip(sig, 100, 0), RSA_PUB, RSA_NONCE, LOG),
            &policy_at("2026-01-01T00:00:00Z"),
        );
        assert_fail(&a, "tpm.quote_signature", "invalid");
    }
}

#[test]
fn a_flipped_event_digest_or_pcr_fails_the_replay() {
    let log = eventlog::parse(LOG).unwrap();
    let ev = log
        .events
        .iter()
        .find(|e| e.event_type != 3 && e.index == 7)
        .unwrap();
    let d = &ev.digests[1].1; // the SHA-256 digest
    let pos = LOG.windows(d.len()).position(|w| w == &d[..]).unwrap();
    let key = P256Key::from_slice(&Sha256::digest(b"rivet test AK")).unwrap();
    let at = attest(b"n", &sha256_pcr_digest());
    let sig = ecdsa_sig(&key, &at);
    let a = appraise(
        &bundle(&at, &sig, &ecc_public(&key), b"n", &flip(LOG, pos, 4)),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_fail(&a, "eventlog.replay", "sha256 PCR 7");
    // A truncated log is refused, not panicked on.
    for n in [1, 20, 100, 5000, LOG.len() - 1] {
        let a = appraise(
            &bundle(&at, &sig, &ecc_public(&key), b"n", &LOG[..n]),
            &policy_at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            check(&a, "eventlog.replay").0,
            Status::Contraindicated,
            "prefix {n}"
        );
    }
}

#[test]
fn sha1_legacy_log_replays() {
    // TCG_PCR_EVENT records: PCR 0 extended twice, PCR 4 once, one EV_NO_ACTION skipped.
    let mut log = Vec::new();
    let mut pcr0 = [0u8; 20];
    let mut pcr4 = [0u8; 20];
    for (idx, ty, data) in [
        (0u32, 8u32, &b"a"[..]),
        (0, 3, b"skip"),
        (4, 0x80000003, b"boot"),
        (0, 8, b"b"),
    ] {
        let d: [u8; 20] = sha1::Sha1::digest(data).into();
        log.extend(idx.to_le_bytes());
        log.extend(ty.to_le_bytes());
        log.extend(d);
        log.extend((data.len() as u32).to_le_bytes());
        log.extend(data);
        if ty != 3 {
            let r = if idx == 0 { &mut pcr0 } else { &mut pcr4 };
            *r = sha1::Sha1::new()
                .chain_update(*r)
                .chain_update(d)
                .finalize()
                .into();
        }
    }
    let parsed = eventlog::parse(&log).unwrap();
    assert!(!parsed.crypto_agile);
    let r = eventlog::replay(&parsed);
    assert_eq!(r["sha1"][&0], pcr0.to_vec());
    assert_eq!(r["sha1"][&4], pcr4.to_vec());
}

#[test]
fn p384_quote_and_ak_certificate() {
    use ecdsa::signature::hazmat::PrehashSigner;
    // The simulated chain's leaf key doubles as a P-384 AK with a certificate.
    let chain =
        rivet_verifier::simulated::SimulatedChain::new(b"ak", 0, &[0; 64], 0, i64::from(u32::MAX))
            .unwrap();
    let point = chain.vcek_public_sec1();
    let mut ak = Vec::new();
    for x in [0x0023u16, 0x000C] {
        ak.extend(x.to_be_bytes());
    }
    ak.extend(0x0005_0072u32.to_be_bytes());
    ak.extend(b2(&[]));
    for x in [0x0010u16, 0x0018, 0x000C, 0x0004, 0x0010] {
        ak.extend(x.to_be_bytes());
    }
    ak.extend(b2(&point[1..49]));
    ak.extend(b2(&point[49..97]));
    let at = attest(b"n384", &sha256_pcr_digest());
    let digest = sha2::Sha384::digest(&at);
    let s: p384::ecdsa::Signature = chain.vcek_key.sign_prehash(&digest).unwrap();
    let b = s.to_bytes();
    let mut sig = 0x0018u16.to_be_bytes().to_vec();
    sig.extend(0x000Cu16.to_be_bytes());
    sig.extend(b2(&b[..48]));
    sig.extend(b2(&b[48..]));
    // pcrDigest is SHA-256 here but the signing hash is SHA-384: the digest
    // check uses the signature's hash, so it must fail while the signature passes.
    let ev = evidence(json!({
        "snp": { "report": hexs(VIRTEE_REPORT) },
        "tpm_quote": { "attest": hexs(&at), "signature": hexs(&sig), "nonce": hexs(b"n384") },
        "ak_public": hexs(&ak),
        "pcrs": expected_pcrs(),
        "ak_cert": hexs(&chain.vcek.der),
        "ek_cert": hexs(&chain.ask.der),
        "manifest": hexs(&ak),
    }));
    let a = appraise(&ev, &policy_at("2026-01-01T00:00:00Z"));
    assert_pass(&a, "tpm.quote_signature");
    assert_pass(&a, "tpm.nonce");
    assert_pass(&a, "tpm.ak_certificate");
    assert_pass(&a, "tpm.ak_binding");
    assert_fail(&a, "tpm.pcr_digest", "does not match");
    assert_fail(&a, "tpm.ek_certificate", "not in the bound manifest");
    // Another certificate for the AK.
    let ev = evidence(json!({
        "snp": { "report": hexs(VIRTEE_REPORT) },
        "ak_public": hexs(&ak),
        "ak_cert": hexs(&chain.ark.der),
    }));
    assert_fail(
        &appraise(&ev, &policy_at("2026-01-01T00:00:00Z")),
        "tpm.ak_certificate",
        "not the AK",
    );
}

#[test]
fn pcrs_outside_the_log() {
    let log = eventlog::parse(LOG).unwrap();
    let r = eventlog::replay(&log);
    let mut pcrs: rivet_verifier::tpm::PcrValues = Default::default();
    for (bank, values) in &r {
        pcrs.insert(bank.to_string(), values.clone());
    }
    eventlog::compare_with_pcrs(&r, &pcrs).unwrap();
    // PCR 10 extended by IMA (another log): tolerated.
    pcrs.get_mut("sha256").unwrap().insert(10, vec![1; 32]);
    eventlog::compare_with_pcrs(&r, &pcrs).unwrap();
    // A firmware PCR the log does not extend must be zero.
    let mut r2 = r.clone();
    r2.get_mut("sha256").unwrap().remove(&5);
    let e = eventlog::compare_with_pcrs(&r2, &pcrs).unwrap_err();
    assert!(e.contains("sha256 PCR 5"), "{e}");
    // A different value fails.
    pcrs.get_mut("sha384").unwrap().insert(14, vec![0; 48]);
    assert!(
        eventlog::compare_with_pcrs(&r, &pcrs)
            .unwrap_err()
            .contains("sha384 PCR 14")
    );
}
