//! The `rivet-verify` binary: bundles with file references, the EAR JSON on
//! stdout, and the exit codes (1 warning, 2 contraindicated, 3 bad input).

use std::path::{Path, PathBuf};
use std::process::Command;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rivet-verify-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(bundle: &str, args: &[&str], name: &str) -> (i32, serde_json::Value) {
    let dir = scratch(name);
    let path = dir.join("bundle.json");
    std::fs::write(&path, bundle.replace("DATA", data().to_str().unwrap())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rivet-verify"))
        .arg("--evidence")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.code().unwrap_or(-1), json)
}

const VLEK_BUNDLE: &str = r#"{
  "version": 1,
  "snp": {
    "report": {"file": "DATA/snp/milan_vlek_report.bin"},
    "vek": {"file": "DATA/snp/milan_vlek.der"},
    "chain": [{"file": "DATA/snp/asvk_ark_milan.pem"}]
  }
}"#;

#[test]
fn vlek_bundle_exit_codes_follow_now() {
    let (code, j) = run(VLEK_BUNDLE, &["--now", "2025-06-01T00:00:00Z"], "vlek-ok");
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["ear.status"], "warning");
    assert_eq!(j["submods"]["rivet-vtpm"]["rivet.platform"], "snp");
    let (code, j) = run(
        VLEK_BUNDLE,
        &["--now", "2026-01-01T00:00:00Z"],
        "vlek-expired",
    );
    assert_eq!(code, 2);
    assert_eq!(j["ear.status"], "contraindicated");
}

#[test]
fn cert_table_bundle_exit_codes_match_the_separate_fields() {
    use rivet_verifier::cert_table::{GUID_ARK, GUID_ASK, GUID_VLEK, build};
    let chain = rivet_verifier::cert::parse_certs(
        &std::fs::read(data().join("snp/asvk_ark_milan.pem")).unwrap(),
    )
    .unwrap();
    let vlek = std::fs::read(data().join("snp/milan_vlek.der")).unwrap();
    let table = build(&[
        (GUID_VLEK, &vlek),
        (GUID_ASK, &chain[0].der),
        (GUID_ARK, &chain[1].der),
    ]);
    let dir = scratch("cert-table-file");
    std::fs::write(dir.join("table.bin"), &table).unwrap();
    let bundle = format!(
        r#"{{"snp": {{"report": {{"file": "DATA/snp/milan_vlek_report.bin"}}, "cert_table": {{"file": "{}"}}}}}}"#,
        dir.join("table.bin").display()
    );
    for now in ["2025-06-01T00:00:00Z", "2026-01-01T00:00:00Z"] {
        let (c1, j1) = run(VLEK_BUNDLE, &["--now", now], "ct-sep");
        let (c2, j2) = run(&bundle, &["--now", now], "ct-table");
        assert_eq!(c1, c2, "{j2:#}");
        let checks = |j: &serde_json::Value| j["submods"]["rivet-vtpm"]["rivet.checks"].clone();
        assert_eq!(checks(&j1), checks(&j2));
    }
    // A malformed table: contraindicated with the reason.
    std::fs::write(dir.join("table.bin"), &table[..table.len() - 1]).unwrap();
    let (code, j) = run(&bundle, &["--now", "2025-06-01T00:00:00Z"], "ct-bad");
    assert_eq!(code, 2);
    assert!(
        j.to_string()
            .contains("entry 2 (ARK) lies outside the buffer")
    );
    // Together with `vek`: ambiguous, unusable input.
    let both = bundle.replace(
        r#""cert_table""#,
        r#""vek": {"file": "DATA/snp/milan_vlek.der"}, "cert_table""#,
    );
    assert_eq!(run(&both, &[], "ct-both").0, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_exits_3() {
    assert_eq!(run("{ not json", &[], "badjson").0, 3);
    assert_eq!(run(r#"{"nonce": "AAAA"}"#, &[], "noplatform").0, 3);
    assert_eq!(run(r#"{"snp": {"report": "!!"}}"#, &[], "badb64").0, 3);
    assert_eq!(
        run(r#"{"snp": {"report": {"hex": "00ff"}}}"#, &[], "short").0,
        3
    );
    assert_eq!(run(VLEK_BUNDLE, &["--now", "yesterday"], "badnow").0, 3);
    assert_eq!(
        run(
            r#"{"snp": {"report": {"file": "DATA/nope.bin"}}}"#,
            &[],
            "nofile"
        )
        .0,
        3
    );
}

#[test]
fn tdx_bundle_with_policy_file() {
    let dir = scratch("policy");
    let pol = dir.join("policy.json");
    std::fs::write(&pol, r#"{"mrtd": ["dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a"]}"#).unwrap();
    let bundle = r#"{"tdx": {"quote": {"file": "DATA/tdx/gcp_cos113_quote_v4.dat"},
                              "ccel": {"file": "DATA/tdx/gcp_cos113_ccel_eventlog.bin"}},
                     "nonce": {"file": "DATA/tdx/gcp_cos113_nonce.bin"}}"#;
    let (code, j) = run(
        bundle,
        &[
            "--now",
            "2026-01-01T00:00:00Z",
            "--policy",
            pol.to_str().unwrap(),
        ],
        "tdx",
    );
    assert_eq!(code, 1, "{j:#}");
    let checks = j["submods"]["rivet-vtpm"]["rivet.checks"]
        .as_array()
        .unwrap();
    for name in [
        "tdx.quote_signature",
        "tdx.pck_chain",
        "policy.mrtd",
        "eventlog.ccel_replay",
        "binding.report_data",
    ] {
        let c = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["status"], "affirming", "{c}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulated_root_through_the_cli() {
    use rivet_verifier::simulated::SimulatedChain;
    let c = SimulatedChain::new(b"cli", 0, &[1; 64], 0, i64::from(u32::MAX)).unwrap();
    let mut report = vec![0u8; rivet_verifier::snp::REPORT_SIZE];
    report[0] = 2;
    report[0x1A0..0x1E0].fill(1);
    c.sign_report(&mut report).unwrap();
    let ev = rivet_verifier::Evidence {
        snp: Some(rivet_verifier::evidence::SnpEvidence {
            report,
            vek: Some(c.vcek.der.clone()),
            chain: vec![c.ask.der.clone(), c.ark.der.clone()],
            simulated_vcek_public_key: None,
            cert_table: None,
        }),
        ..Default::default()
    };
    let dir = scratch("sim-root");
    let ark = dir.join("ark.der");
    std::fs::write(&ark, &c.ark.der).unwrap();
    let key = dir.join("vcek.hex");
    std::fs::write(&key, hex::encode(c.vcek_public_sec1())).unwrap();
    let bundle = ev.to_json().to_string();
    let ark = ark.to_str().unwrap();
    let (code, j) = run(
        &bundle,
        &["--trust-root", ark, "--allow-simulated-root"],
        "sim1",
    );
    assert_eq!(code, 1, "{j:#}");
    let (code, j) = run(&bundle, &["--trust-root", ark], "sim2");
    assert_eq!(code, 2);
    assert!(j.to_string().contains("not hardware-rooted"));
    let (code, j) = run(&bundle, &[], "sim3");
    assert_eq!(code, 2);
    assert!(j.to_string().contains("not hardware-rooted"));
    // The bare-key variant with the key file as trust root.
    let mut ev2 = ev.clone();
    if let Some(s) = ev2.snp.as_mut() {
        s.vek = None;
        s.chain.clear();
        s.simulated_vcek_public_key = Some(c.vcek_public_sec1());
    }
    let b2 = ev2.to_json().to_string();
    let (code, j) = run(
        &b2,
        &[
            "--trust-root",
            key.to_str().unwrap(),
            "--allow-simulated-root",
        ],
        "sim4",
    );
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(run(&b2, &["--allow-simulated-root"], "sim5").0, 2);
    // A trust root that is neither a certificate nor a key is bad input.
    assert_eq!(run(&b2, &["--trust-root", "/dev/null"], "sim6").0, 3);
    let _ = std::fs::remove_dir_all(&dir);
}
