//! The SEV-SNP ATTESTATION_REPORT layout (SEV-SNP ABI, table "ATTESTATION_
//! REPORT structure"): 0x4A0 bytes, ECDSA P-384 over SHA-384 of bytes
//! 0..0x2A0, R and S little-endian at 0x2A0 and 0x2E8. The native platform
//! builds and signs reports in this layout with a simulated key; on SNP
//! hardware the firmware builds them and the SVSM only forwards them.

use p384::ecdsa::signature::hazmat::PrehashSigner;
use p384::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha384};

/// Size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// End of the signed part.
pub const SIGNED_LEN: usize = 0x2A0;

/// Field offsets.
pub mod offset {
    /// u32 VERSION.
    pub const VERSION: usize = 0x00;
    /// u64 POLICY.
    pub const POLICY: usize = 0x08;
    /// u32 VMPL.
    pub const VMPL: usize = 0x30;
    /// u32 SIGNATURE_ALGO.
    pub const SIGNATURE_ALGO: usize = 0x34;
    /// u64 PLATFORM_INFO.
    pub const PLATFORM_INFO: usize = 0x40;
    /// REPORT_DATA (64 bytes).
    pub const REPORT_DATA: usize = 0x50;
    /// MEASUREMENT (48 bytes).
    pub const MEASUREMENT: usize = 0x90;
    /// REPORT_ID (32 bytes).
    pub const REPORT_ID: usize = 0x140;
    /// CHIP_ID (64 bytes).
    pub const CHIP_ID: usize = 0x1A0;
    /// Signature R (72 bytes, little-endian).
    pub const SIGNATURE_R: usize = 0x2A0;
    /// Signature S (72 bytes, little-endian).
    pub const SIGNATURE_S: usize = 0x2E8;
}

/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384.
pub const ECDSA_P384_SHA384: u32 = 1;
/// The policy a simulated report carries: SMT allowed, bit 17 (must be one),
/// debug off.
pub const SIMULATED_POLICY: u64 = 0x3_0000;

/// What a report says, apart from REPORT_DATA.
#[derive(Clone, Copy, Debug)]
pub struct ReportFields {
    /// The launch measurement.
    pub measurement: [u8; 48],
    /// The guest policy.
    pub policy: u64,
    /// The VMPL that asked.
    pub vmpl: u32,
    /// A per-boot identifier.
    pub report_id: [u8; 32],
}

/// Builds and signs a version-2 report.
pub fn build_and_sign(
    fields: &ReportFields,
    report_data: &[u8; 64],
    key: &SigningKey,
) -> Result<[u8; REPORT_LEN], p384::ecdsa::Error> {
    let mut r = [0u8; REPORT_LEN];
    r[offset::VERSION..offset::VERSION + 4].copy_from_slice(&2u32.to_le_bytes());
    r[offset::POLICY..offset::POLICY + 8].copy_from_slice(&fields.policy.to_le_bytes());
    r[offset::VMPL..offset::VMPL + 4].copy_from_slice(&fields.vmpl.to_le_bytes());
    r[offset::SIGNATURE_ALGO..offset::SIGNATURE_ALGO + 4]
        .copy_from_slice(&ECDSA_P384_SHA384.to_le_bytes());
    r[offset::REPORT_DATA..offset::REPORT_DATA + 64].copy_from_slice(report_data);
    r[offset::MEASUREMENT..offset::MEASUREMENT + 48].copy_from_slice(&fields.measurement);
    r[offset::REPORT_ID..offset::REPORT_ID + 32].copy_from_slice(&fields.report_id);
    let digest = Sha384::digest(&r[..SIGNED_LEN]);
    let sig: Signature = key.sign_prehash(&digest)?;
    let (rb, sb) = sig.split_bytes();
    // Big-endian scalars become little-endian, zero-extended to 72 bytes.
    for (i, b) in rb.iter().rev().enumerate() {
        r[offset::SIGNATURE_R + i] = *b;
    }
    for (i, b) in sb.iter().rev().enumerate() {
        r[offset::SIGNATURE_S + i] = *b;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::VerifyingKey;
    use p384::ecdsa::signature::hazmat::PrehashVerifier;

    fn key() -> SigningKey {
        SigningKey::from_slice(&[0x42; 48]).unwrap()
    }

    fn verify(report: &[u8; REPORT_LEN], vk: &VerifyingKey) -> bool {
        let be = |o: usize| {
            let mut v = [0u8; 48];
            for i in 0..48 {
                v[47 - i] = report[o + i];
            }
            v
        };
        let sig =
            Signature::from_scalars(be(offset::SIGNATURE_R), be(offset::SIGNATURE_S)).unwrap();
        vk.verify_prehash(&Sha384::digest(&report[..SIGNED_LEN]), &sig)
            .is_ok()
    }

    #[test]
    fn signed_report_verifies_and_a_flipped_bit_does_not() {
        let fields = ReportFields {
            measurement: [3; 48],
            policy: SIMULATED_POLICY,
            vmpl: 0,
            report_id: [9; 32],
        };
        let mut report = build_and_sign(&fields, &[5; 64], &key()).unwrap();
        let vk = VerifyingKey::from(&key());
        assert!(verify(&report, &vk));
        assert_eq!(
            &report[offset::REPORT_DATA..offset::REPORT_DATA + 64],
            &[5; 64]
        );
        assert_eq!(report[offset::SIGNATURE_ALGO], 1);
        assert!(
            report[offset::SIGNATURE_R + 48..offset::SIGNATURE_S]
                .iter()
                .all(|b| *b == 0)
        );
        report[offset::REPORT_DATA] ^= 1;
        assert!(!verify(&report, &vk));
    }
}
