//! Rivet's verifier: appraises the evidence a Rivet vTPM produces (an SEV-SNP
//! report with its AMD chain or a TDX quote, the REPORT_DATA binding of
//! nonce and manifest, the AK's TPM quote, PCRs and event log, the EK/AK
//! certificates and the report-carrying certificate they chain to) against a
//! policy, and returns an EAR-style appraisal. Host-only; no unsafe.
#![forbid(unsafe_code)]

pub mod appraisal;
pub mod cert;
pub mod cert_table;
pub mod eventlog;
pub mod evidence;
pub mod policy;
pub mod reader;
pub mod roots;
pub mod simulated;
pub mod snp;
pub mod tdx;
pub mod tpm;
pub mod vtpm_certs;

mod appraise_platform;
mod appraise_tpm;

pub use appraisal::{Appraisal, Check, Status};
pub use evidence::Evidence;
pub use policy::Policy;

/// Parses an RFC 3339 time ("2026-01-01T00:00:00Z") into Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("bad time '{s}': {e}"))?;
    Ok(t.unix_timestamp())
}

fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Appraises `evidence` under `policy`. Never panics on malformed evidence:
/// what cannot be parsed becomes a contraindicated check.
pub fn appraise(evidence: &Evidence, policy: &Policy) -> Appraisal {
    let now = policy.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    });
    let platform = if evidence.snp.is_some() {
        "snp"
    } else if evidence.tdx.is_some() {
        "tdx"
    } else {
        "none"
    };
    let mut a = Appraisal::new(platform, format_time(now));
    let report_data = match (&evidence.snp, &evidence.tdx) {
        (Some(snp), _) => appraise_platform::snp(&mut a, snp, policy, now),
        (None, Some(tdx)) => appraise_platform::tdx(&mut a, tdx, policy, now),
        (None, None) => {
            a.fail(
                "platform.evidence",
                "the bundle has no SNP report or TDX quote",
            );
            a.unusable = true;
            None
        }
    };
    appraise_platform::binding(&mut a, evidence, report_data);
    appraise_tpm::tpm(&mut a, evidence);
    vtpm_certs::appraise(&mut a, evidence, policy, now);
    a
}
