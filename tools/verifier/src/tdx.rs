//! Intel TDX quote v4: header, TD report body, the ECDSA P-256 quote
//! signature, the QE report and its binding to the attestation key, and the
//! PCK chain to the Intel SGX Root CA.

use crate::cert;
use crate::reader::{Reader, Truncated, field};
use sha2::{Digest, Sha256};

const HEADER_LEN: usize = 48;
const BODY_LEN: usize = 584;
/// Bytes covered by the quote signature (header and TD report body).
pub const SIGNED_LEN: usize = HEADER_LEN + BODY_LEN;
const QE_REPORT_LEN: usize = 384;
const TEE_TDX: u32 = 0x81;
const ATT_KEY_ECDSA_P256: u16 = 2;
const CERT_QE_REPORT: u16 = 6;
const CERT_PCK_CHAIN: u16 = 5;

/// A parsed TDX quote v4.
#[derive(Debug, Clone)]
pub struct Quote {
    /// The quote's own bytes (trailing bytes of the input dropped).
    pub raw: Vec<u8>,
    /// TD attributes.
    pub td_attributes: u64,
    /// MRTD.
    pub mrtd: [u8; 48],
    /// RTMR0..3.
    pub rtmrs: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// ECDSA r‖s over the header and body.
    pub signature: [u8; 64],
    /// Attestation public key x‖y.
    pub attestation_key: [u8; 64],
    /// QE report (SGX report body).
    pub qe_report: Vec<u8>,
    /// Signature over the QE report under the PCK.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// PEM chain: PCK leaf, Platform/Processor CA, root.
    pub pck_chain_pem: Vec<u8>,
}

fn t(e: Truncated) -> String {
    format!("TDX quote truncated: {e}")
}

impl Quote {
    /// Parses a quote; bytes after the length its header and signed_data_len
    /// give are ignored.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(data);
        let version = r.u16_le("version").map_err(t)?;
        let att_key_type = r.u16_le("att_key_type").map_err(t)?;
        let tee_type = r.u32_le("tee_type").map_err(t)?;
        if version != 4 {
            return Err(format!("TDX quote version {version} is not 4"));
        }
        if att_key_type != ATT_KEY_ECDSA_P256 {
            return Err(format!(
                "attestation key type {att_key_type} is not ECDSA P-256"
            ));
        }
        if tee_type != TEE_TDX {
            return Err(format!("tee_type {tee_type:#x} is not TDX"));
        }
        let head = r
            .take(SIGNED_LEN - 8, "header and TD report body")
            .map_err(t)?;
        let _ = head;
        let sig_len = r.u32_le("signed_data_len").map_err(t)? as usize;
        let sig_data = r.take(sig_len, "signature data").map_err(t)?;
        let raw = data[..SIGNED_LEN + 4 + sig_len].to_vec();
        let body = &raw[HEADER_LEN..SIGNED_LEN];
        let mut s = Reader::new(sig_data);
        let signature = s.array::<64>("quote signature").map_err(t)?;
        let attestation_key = s.array::<64>("attestation key").map_err(t)?;
        let cd_type = s.u16_le("certification data type").map_err(t)?;
        if cd_type != CERT_QE_REPORT {
            return Err(format!(
                "certification data type {cd_type} is not 6 (QE report)"
            ));
        }
        let cd_len = s.u32_le("certification data size").map_err(t)? as usize;
        let mut c = Reader::new(s.take(cd_len, "certification data").map_err(t)?);
        let qe_report = c.take(QE_REPORT_LEN, "QE report").map_err(t)?.to_vec();
        let qe_report_signature = c.array::<64>("QE report signature").map_err(t)?;
        let auth_len = c.u16_le("QE auth data size").map_err(t)?;
        let qe_auth_data = c
            .take(usize::from(auth_len), "QE auth data")
            .map_err(t)?
            .to_vec();
        let inner_type = c.u16_le("inner certification data type").map_err(t)?;
        if inner_type != CERT_PCK_CHAIN {
            return Err(format!(
                "inner certification data type {inner_type} is not 5 (PCK chain)"
            ));
        }
        let inner_len = c.u32_le("PCK chain size").map_err(t)? as usize;
        let pck_chain_pem = c.take(inner_len, "PCK chain").map_err(t)?.to_vec();
        let mut rtmrs = [[0u8; 48]; 4];
        for (k, m) in rtmrs.iter_mut().enumerate() {
            *m = field(body, 328 + 48 * k);
        }
        Ok(Quote {
            td_attributes: u64::from_le_bytes(field(body, 120)),
            mrtd: field(body, 136),
            rtmrs,
            report_data: field(body, 520),
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
            raw,
        })
    }

    /// The quote signature under the attestation key.
    pub fn verify_quote_signature(&self) -> Result<String, String> {
        verify_p256_raw(
            &self.attestation_key,
            &self.raw[..SIGNED_LEN],
            &self.signature,
        )
        .map_err(|e| format!("quote signature: {e}"))?;
        Ok(
            "ECDSA P-256 quote signature over header and TD report valid under the attestation key"
                .into(),
        )
    }

    /// QE report data = SHA-256(attestation key ‖ QE auth data) ‖ 0^32.
    pub fn verify_qe_binding(&self) -> Result<String, String> {
        let mut want = Sha256::new();
        want.update(self.attestation_key);
        want.update(&self.qe_auth_data);
        let want = want.finalize();
        let rd = &self.qe_report[320..384];
        if rd[..32] == want[..] && rd[32..].iter().all(|&b| b == 0) {
            Ok("QE report data = SHA-256(attestation key || QE auth data) || 0^32".into())
        } else {
            Err("QE report data does not bind the attestation key".into())
        }
    }

    /// The PCK chain to the embedded Intel SGX Root CA, and the QE report
    /// signature under the PCK leaf.
    pub fn verify_pck(&self, now: i64) -> Result<String, String> {
        let certs =
            cert::parse_certs(&self.pck_chain_pem).map_err(|e| format!("PCK chain: {e}"))?;
        let [leaf, ca, root] = certs.as_slice() else {
            return Err(format!(
                "PCK chain has {} certificates, expected 3",
                certs.len()
            ));
        };
        let intel = crate::roots::intel_sgx_root().ok_or("embedded Intel root unreadable")?;
        if root.der != intel.der {
            return Err(format!(
                "not hardware-rooted: PCK chain root (SHA-256 {}) is not the Intel SGX Root CA",
                hex::encode(root.fingerprint())
            ));
        }
        cert::verify_chain(&[leaf, ca, root], now)?;
        let point = cert::ec_point(&leaf.spki_der()?).ok_or("PCK key is not EC")?;
        let xy = point.get(1..65).ok_or("PCK key is not P-256")?;
        let mut key = [0u8; 64];
        key.copy_from_slice(xy);
        verify_p256_raw(&key, &self.qe_report, &self.qe_report_signature)
            .map_err(|e| format!("QE report signature: {e}"))?;
        Ok(format!(
            "QE report signed by the PCK; {} <- {} <- {} (embedded root)",
            leaf.cn(),
            ca.cn(),
            root.cn()
        ))
    }

    /// QE vendor ID from the header.
    pub fn qe_vendor_id(&self) -> [u8; 16] {
        field(&self.raw, 12)
    }

    /// MRSIGNER of the quoting enclave (from the QE report).
    pub fn qe_mrsigner(&self) -> [u8; 32] {
        field(&self.qe_report, 128)
    }

    /// FMSPC from the PCK leaf's SGX extension, if found.
    pub fn fmspc(&self) -> Option<[u8; 6]> {
        let certs = cert::parse_certs(&self.pck_chain_pem).ok()?;
        let ext = certs.first()?.extension("1.2.840.113741.1.13.1")?;
        // OID 1.2.840.113741.1.13.1.4 followed by OCTET STRING (6 bytes).
        let needle = [
            0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01, 0x04, 0x04, 0x06,
        ];
        let pos = ext.windows(needle.len()).position(|w| w == needle)?;
        ext.get(pos + needle.len()..pos + needle.len() + 6)?
            .try_into()
            .ok()
    }
}

/// ECDSA P-256 / SHA-256 with a raw x‖y key and raw r‖s signature.
fn verify_p256_raw(key_xy: &[u8; 64], msg: &[u8], sig: &[u8; 64]) -> Result<(), String> {
    use ecdsa::signature::Verifier;
    let mut point = [0u8; 65];
    point[0] = 4;
    point[1..].copy_from_slice(key_xy);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .map_err(|_| "key is not a P-256 point")?;
    let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|_| "r/s out of range")?;
    vk.verify(msg, &sig)
        .map_err(|_| "signature invalid".to_string())
}
