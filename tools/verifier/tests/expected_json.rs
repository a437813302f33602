//! Field-by-field agreement with the expected.json files that record what
//! the independent check of the third-party evidence concluded.

mod common;
use common::*;
use rivet_verifier::snp::{Report, SigningKey, Tcb};
use rivet_verifier::tdx::Quote;
use rivet_verifier::{appraise, cert::parse_certs};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

fn data(p: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(p),
    )
    .unwrap()
}

fn expected(folder: &str) -> Value {
    serde_json::from_slice(&data(&format!("{folder}/expected.json"))).unwrap()
}

#[test]
fn copied_files_match_the_recorded_sha256sums() {
    let sums = String::from_utf8(data("SHA256SUMS")).unwrap();
    let mut n = 0;
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line.split_once(char::is_whitespace).unwrap();
        let name = name.trim().trim_start_matches('*');
        assert_eq!(hex::encode(Sha256::digest(data(name))), sum, "{name}");
        n += 1;
    }
    assert_eq!(n, 18, "every file of the shared testdata is listed");
}

#[test]
fn snp_reports_match_expected_json() {
    let e = expected("snp");
    for name in [
        "snp/milan_gosev_report.bin",
        "snp/milan_virtee_report.bin",
        "snp/milan_vlek_report.bin",
    ] {
        let x = &e[name];
        let raw = data(name);
        assert_eq!(
            hex::encode(Sha256::digest(&raw)),
            x["file_sha256"].as_str().unwrap()
        );
        let r = Report::parse(&raw).unwrap();
        assert_eq!(
            u64::from(r.version),
            x["version"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            format!("{:#x}", r.policy),
            x["policy"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(u64::from(r.vmpl), x["vmpl"].as_u64().unwrap(), "{name}");
        assert_eq!(
            u64::from(r.signature_algo),
            x["signature_algo"].as_u64().unwrap()
        );
        assert_eq!(
            format!("{:#x}", r.signer_info),
            x["signer_info_0x48"].as_str().unwrap()
        );
        let kind = match r.signing_key() {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::Other(_) => "other",
        };
        assert_eq!(kind, x["signing_key"].as_str().unwrap());
        assert_eq!(
            hex::encode(r.report_data),
            x["report_data"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(r.measurement),
            x["measurement"].as_str().unwrap()
        );
        assert_eq!(hex::encode(r.host_data), x["host_data"].as_str().unwrap());
        assert_eq!(hex::encode(r.chip_id), x["chip_id"].as_str().unwrap());
        assert_eq!(
            hex::encode(r.cpuid_fms),
            x["cpuid_fam_mod_step"].as_str().unwrap()
        );
        assert_eq!(r.reported_tcb, x["reported_tcb_u64_le"].as_u64().unwrap());
        let p = &x["reported_tcb_parts"];
        let part = |k: &str| p[k].as_u64().unwrap() as u8;
        assert_eq!(
            Tcb::decode(r.reported_tcb, false),
            Tcb {
                bl: part("bl"),
                tee: part("tee"),
                snp: part("snp"),
                ucode: part("ucode"),
                fmc: None
            }
        );
        // The conclusion: signature and chain VALID (at a time the certificates are valid).
        let chain = data(x["ca_chain"].as_str().unwrap());
        let vek = data(x["endorsement_key_cert"].as_str().unwrap());
        let ev = evidence(
            json!({ "snp": { "report": hexs(&raw), "vek": hexs(&vek), "chain": [hexs(&chain)] } }),
        );
        let a = appraise(&ev, &policy_at("2025-06-01T00:00:00Z"));
        assert_pass(&a, "snp.report_signature");
        assert_pass(&a, "snp.endorsement_chain");
        // Its VEK's notAfter.
        let c = &parse_certs(&vek).unwrap()[0];
        let na = x["vek_not_after"]
            .as_str()
            .unwrap()
            .replace(' ', "T")
            .replace("+00:00", "Z");
        let t = rivet_verifier::parse_time(&na).unwrap();
        assert!(
            c.check_validity(t).is_ok() && c.check_validity(t + 1).is_err(),
            "{name} notAfter"
        );
    }
    // The KDS chains: subjects and fingerprints.
    for (file, chain) in e["cert_chains"].as_object().unwrap() {
        let certs = parse_certs(&data(&format!("snp/{file}"))).unwrap();
        for (c, want) in certs.iter().zip(chain["certs"].as_array().unwrap()) {
            assert_eq!(
                hex::encode(c.fingerprint()),
                want["sha256_der"].as_str().unwrap(),
                "{file}"
            );
        }
    }
}

#[test]
fn tdx_quotes_match_expected_json() {
    let e = expected("tdx");
    for name in ["tdx/quote_v4_spr_e4.dat", "tdx/gcp_cos113_quote_v4.dat"] {
        let x = &e[name];
        let raw = data(name);
        assert_eq!(
            hex::encode(Sha256::digest(&raw)),
            x["file_sha256"].as_str().unwrap()
        );
        let q = Quote::parse(&raw).unwrap();
        assert_eq!(q.raw.len() as u64, x["quote_len_used"].as_u64().unwrap());
        assert_eq!(
            raw.len() - q.raw.len(),
            x["trailing_bytes_after_quote"].as_u64().unwrap() as usize
        );
        assert_eq!(hex::encode(q.mrtd), x["body"]["mrtd"].as_str().unwrap());
        for i in 0..4 {
            assert_eq!(
                hex::encode(q.rtmrs[i]),
                x["body"][format!("rtmr{i}")].as_str().unwrap(),
                "{name} rtmr{i}"
            );
        }
        assert_eq!(
            hex::encode(q.report_data),
            x["body"]["report_data"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(q.attestation_key),
            x["attestation_key_xy"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(&q.qe_auth_data),
            x["qe_auth_data"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(q.fmspc().unwrap()),
            x["pck_fmspc"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(&q.qe_report[64..96]),
            x["qe_report_mrenclave"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(q.qe_mrsigner()),
            x["qe_report_mrsigner"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(q.qe_vendor_id()),
            x["qe_vendor_id"].as_str().unwrap()
        );
        q.verify_quote_signature().unwrap();
        q.verify_qe_binding().unwrap();
        q.verify_pck(rivet_verifier::parse_time("2026-01-01T00:00:00Z").unwrap())
            .unwrap();
    }
    let log = rivet_verifier::eventlog::parse(&data("tdx/gcp_cos113_ccel_eventlog.bin")).unwrap();
    let replay = rivet_verifier::eventlog::replay(&log);
    for (i, k) in ["rtmr0", "rtmr1", "rtmr2"].iter().enumerate() {
        let want = e["tdx/gcp_cos113_ccel_eventlog.bin"]["replay"][k]
            .as_str()
            .unwrap();
        assert_eq!(hex::encode(&replay["sha384"][&(i as u32 + 1)]), want);
    }
    assert_eq!(
        log.events.len() as u64 + 1,
        e["tdx/gcp_cos113_ccel_eventlog.bin"]["events_including_specid"]
            .as_u64()
            .unwrap()
    );
}
