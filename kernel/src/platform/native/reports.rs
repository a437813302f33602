//! Simulated attestation reports: the SEV-SNP report layout, signed with an
//! ECDSA P-384 key that the host hands in at launch through fw_cfg (never a
//! key built into the image). The chain behind that key is the host's, not
//! AMD's, so a verifier can always tell these reports from hardware ones.

use alloc::vec::Vec;
use p384::ecdsa::SigningKey;
use sha2::{Digest, Sha384};

use super::fw_cfg;
use crate::cpu::instr::rdrand;
use crate::mm::layout;
use crate::platform::snp_report::{self, REPORT_LEN, ReportFields, SIMULATED_POLICY};

/// fw_cfg file with the key: the 48-byte big-endian P-384 private scalar.
pub const KEY_FILE: &str = "opt/rivet/report-key";
/// fw_cfg file with the certificates returned with each report (opaque).
pub const CERTS_FILE: &str = "opt/rivet/report-certs";

/// The simulated report signer.
pub struct SimulatedReports {
    key: SigningKey,
    fields: ReportFields,
    certs: Vec<u8>,
}

impl SimulatedReports {
    /// Reads the key (and certificates) from fw_cfg; None if none was given.
    pub fn from_host() -> Option<Self> {
        let raw = fw_cfg::read_file(KEY_FILE)?;
        let key = match SigningKey::from_slice(&raw) {
            Ok(k) => k,
            Err(_) => {
                log::error!("{KEY_FILE}: not a P-384 private scalar; no attestation reports");
                return None;
            }
        };
        let certs = fw_cfg::read_file(CERTS_FILE).unwrap_or_default();
        // The "launch measurement": the SVSM's code and constants as loaded.
        let text = layout::text();
        let rodata = layout::rodata();
        // SAFETY: text and rodata are mapped read-only and never written.
        let image = unsafe {
            core::slice::from_raw_parts(
                text.start.0 as *const u8,
                (rodata.end.0 - text.start.0) as usize,
            )
        };
        let measurement: [u8; 48] = Sha384::digest(image).into();
        let mut report_id = [0u8; 32];
        for chunk in report_id.chunks_mut(8) {
            let v = (0..100).find_map(|_| rdrand()).unwrap_or(0);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        log::info!(
            "simulated attestation key from the host; {} bytes of certificates",
            certs.len()
        );
        Some(Self {
            key,
            fields: ReportFields {
                measurement,
                policy: SIMULATED_POLICY,
                vmpl: 0,
                report_id,
            },
            certs,
        })
    }

    /// A signed report for `report_data`.
    pub fn report(&self, report_data: &[u8; 64]) -> Option<[u8; REPORT_LEN]> {
        snp_report::build_and_sign(&self.fields, report_data, &self.key).ok()
    }

    /// The certificates the host gave.
    pub fn certificates(&self) -> &[u8] {
        &self.certs
    }
}
