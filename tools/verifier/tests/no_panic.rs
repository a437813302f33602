//! Malformed input never panics: many random mutations and truncations of
//! every kind of evidence go through `appraise` and the parsers.

mod common;
use common::*;
use rivet_verifier::{Evidence, appraise, eventlog, tdx, tpm};
use serde_json::json;

const REPORT: &[u8] = include_bytes!("data/snp/milan_gosev_report.bin");
const VCEK: &[u8] = include_bytes!("data/snp/milan_gosev_vcek.der");
const CHAIN: &[u8] = include_bytes!("data/snp/ask_ark_milan.pem");
const QUOTE: &[u8] = include_bytes!("data/tdx/quote_v4_spr_e4.dat");
const LOG: &[u8] = include_bytes!("data/tpm/rhel8_gce_eventlog.bin");
const ATTEST: &[u8] = include_bytes!("data/synthetic/rsa_quote_attest.bin");
const SIG: &[u8] = include_bytes!("data/synthetic/rsa_quote_sig_rsapss.bin");
const AK: &[u8] = include_bytes!("data/synthetic/rsa_ak_public.bin");

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
    fn mutate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut d = data.to_vec();
        for _ in 0..1 + self.next() % 4 {
            let i = self.next() % d.len();
            d[i] = match self.next() % 3 {
                0 => d[i] ^ (1 << (self.next() % 8)),
                1 => 0xFF,
                _ => 0,
            };
        }
        if self.next().is_multiple_of(4) {
            d.truncate(self.next() % d.len());
        }
        d
    }
}

#[test]
fn mutated_evidence_never_panics() {
    let mut rng = Lcg(0x5eed);
    for _ in 0..150 {
        let ev: Evidence = evidence(json!({
            "snp": { "report": hexs(&rng.mutate(REPORT)), "vek": hexs(&rng.mutate(VCEK)), "chain": [hexs(&rng.mutate(CHAIN))] },
            "nonce": hexs(b"n"), "manifest": hexs(&rng.mutate(AK)),
            "tpm_quote": { "attest": hexs(&rng.mutate(ATTEST)), "signature": hexs(&rng.mutate(SIG)) },
            "ak_public": hexs(&rng.mutate(AK)),
            "event_log": hexs(&rng.mutate(&LOG[..4000])),
            "pcrs": { "sha256": { "0": "00".repeat(32) } },
            "ek_cert": hexs(&rng.mutate(VCEK)),
            "ak_cert": hexs(&rng.mutate(VCEK)),
        }));
        let _ = appraise(&ev, &policy_at("2026-01-01T00:00:00Z"));
    }
    for _ in 0..300 {
        let _ = tdx::Quote::parse(&rng.mutate(QUOTE)).map(|q| {
            let _ = q.verify_quote_signature();
            let _ = q.verify_qe_binding();
            let _ = q.verify_pck(0);
            q.fmspc()
        });
        let _ = eventlog::parse(&rng.mutate(LOG)).map(|l| eventlog::replay(&l));
        let _ = tpm::parse_attest(&rng.mutate(ATTEST));
        if let Ok(k) = tpm::parse_public(&rng.mutate(AK)) {
            let _ = tpm::verify_signature(&k, ATTEST, &rng.mutate(SIG));
        }
    }
}

#[test]
fn malformed_bundles_are_errors() {
    for text in [
        "",
        "[]",
        "{}",
        r#"{"snp": {}}"#,
        r#"{"snp": {"report": 5}}"#,
        r#"{"snp": {"report": {"hex": "zz"}}}"#,
        r#"{"snp": {"report": {"hex": "00", "base64": "AA=="}}}"#,
        r#"{"snp": {"report": "AA=="}, "tdx": {"quote": "AA=="}}"#,
        r#"{"snp": {"report": "AA=="}, "pcrs": {"md5": {"0": "00"}}}"#,
        r#"{"snp": {"report": "AA=="}, "pcrs": {"sha1": {"0": "00"}}}"#,
        r#"{"snp": {"report": "AA=="}, "surprise": 1}"#,
        r#"{"version": 2, "snp": {"report": "AA=="}}"#,
    ] {
        assert!(Evidence::from_json(text, None).is_err(), "{text}");
    }
}
