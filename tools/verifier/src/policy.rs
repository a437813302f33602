//! The appraisal policy: what the relying party accepts. Every field is
//! optional; an absent reference set means the matching check is not run.

use crate::snp::Tcb;
use serde::Deserialize;

/// Appraisal policy, read from JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Accept guests whose policy (SNP bit 19) or TD attributes (bit 0) allow debugging.
    #[serde(default)]
    pub allow_debug: bool,
    /// Accept chains rooted only in a `--trust-root` (or a simulated key): the
    /// native platform. Such evidence is a warning, never affirming.
    #[serde(default)]
    pub allow_simulated_root: bool,
    /// Minimum SNP reported TCB.
    #[serde(default)]
    pub min_tcb: Option<Tcb>,
    /// Accepted SNP launch measurements (hex, 48 bytes).
    #[serde(default)]
    pub measurements: Option<Vec<String>>,
    /// Accepted VMPLs of the report requester.
    #[serde(default)]
    pub allowed_vmpls: Option<Vec<u32>>,
    /// Accepted TDX MRTD values (hex, 48 bytes).
    #[serde(default)]
    pub mrtd: Option<Vec<String>>,
    /// Time certificate validity is judged at (Unix seconds); `None` = system clock.
    #[serde(skip)]
    pub now: Option<i64>,
    /// Roots trusted in addition to the built-in AMD ARKs (`--trust-root`).
    /// A chain ending in one of them is valid but not hardware-rooted.
    #[serde(skip)]
    pub trust_roots: Vec<crate::cert::Cert>,
    /// Raw SEC1 P-384 keys trusted to sign reports (the native platform's
    /// simulated VCEK key, `--trust-root` with a key file).
    #[serde(skip)]
    pub trusted_keys: Vec<Vec<u8>>,
}

impl Policy {
    /// Parses a policy document.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("bad policy JSON: {e}"))
    }

    /// Adds a trust root: a certificate (PEM or DER) or a SEC1 P-384 public
    /// key (raw bytes or hex text).
    pub fn add_trust_root(&mut self, data: &[u8]) -> Result<(), String> {
        if let Ok(certs) = crate::cert::parse_certs(data) {
            self.trust_roots.extend(certs);
            return Ok(());
        }
        let key = match core::str::from_utf8(data) {
            Ok(t) => crate::evidence::decode_hex(t.trim())?,
            Err(_) => data.to_vec(),
        };
        p384::ecdsa::VerifyingKey::from_sec1_bytes(&key).map_err(|_| {
            "trust root is neither a certificate nor a SEC1 P-384 public key".to_string()
        })?;
        self.trusted_keys.push(key);
        Ok(())
    }
}

/// True if `value` equals one of the hex strings (case-insensitive).
pub fn in_set(set: &[String], value: &[u8]) -> bool {
    let v = hex::encode(value);
    set.iter().any(|s| s.trim().eq_ignore_ascii_case(&v))
}
