//! AMD SEV-SNP: the ATTESTATION_REPORT layout, its ECDSA P-384 signature, the
//! ARK → ASK/ASVK → VCEK/VLEK chain and the VCEK's TCB and hwID extensions.

use crate::cert::{self, Cert};
use crate::reader::field;
use sha2::{Digest, Sha384};

/// Size of an ATTESTATION_REPORT.
pub const REPORT_SIZE: usize = 0x4A0;
/// Bytes covered by the signature.
pub const SIGNED_LEN: usize = 0x2A0;
/// Policy bit: debugging allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;

/// The endorsement key kind named by signer_info bits 2–4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key (issued to a cloud provider).
    Vlek,
    /// Any other value (2–6 reserved, 7 = none).
    Other(u8),
}

/// The four (Milan/Genoa) or five (Turin) security patch levels of a TCB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Tcb {
    /// Boot loader SPL.
    #[serde(default)]
    pub bl: u8,
    /// PSP OS SPL.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Microcode SPL.
    #[serde(default)]
    pub ucode: u8,
    /// FMC SPL (Turin only).
    #[serde(default)]
    pub fmc: Option<u8>,
}

impl Tcb {
    /// Decodes a TCB_VERSION; the layout differs on Turin.
    pub fn decode(raw: u64, turin: bool) -> Self {
        let b = raw.to_le_bytes();
        if turin {
            Tcb {
                fmc: Some(b[0]),
                bl: b[1],
                tee: b[2],
                snp: b[3],
                ucode: b[7],
            }
        } else {
            Tcb {
                bl: b[0],
                tee: b[1],
                snp: b[6],
                ucode: b[7],
                fmc: None,
            }
        }
    }

    /// Every component at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.bl >= min.bl
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.ucode >= min.ucode
            && self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
    }
}

/// A parsed ATTESTATION_REPORT (the fields the verifier uses).
#[derive(Debug, Clone)]
pub struct Report {
    /// The raw bytes (exactly `REPORT_SIZE`).
    pub raw: Vec<u8>,
    /// Report format version.
    pub version: u32,
    /// Guest policy.
    pub policy: u64,
    /// VMPL of the requester.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// signer_info at 0x48.
    pub signer_info: u32,
    /// Caller-supplied data.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host data.
    pub host_data: [u8; 32],
    /// TCB the report's key was derived from, raw.
    pub reported_tcb: u64,
    /// CPUID family/model/stepping (version 3 and later; 0 before).
    pub cpuid_fms: [u8; 3],
    /// Chip identifier (zero when masked or VLEK-signed).
    pub chip_id: [u8; 64],
}

impl Report {
    /// Parses a report; it must be at least `REPORT_SIZE` bytes (extra bytes are refused).
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.len() != REPORT_SIZE {
            return Err(format!(
                "SNP report is {} bytes, expected {REPORT_SIZE}",
                raw.len()
            ));
        }
        let u32_at = |o| u32::from_le_bytes(field(raw, o));
        let u64_at = |o| u64::from_le_bytes(field(raw, o));
        let version = u32_at(0);
        Ok(Report {
            raw: raw.to_vec(),
            version,
            policy: u64_at(0x08),
            vmpl: u32_at(0x30),
            signature_algo: u32_at(0x34),
            signer_info: u32_at(0x48),
            report_data: field(raw, 0x50),
            measurement: field(raw, 0x90),
            host_data: field(raw, 0xC0),
            reported_tcb: u64_at(0x180),
            cpuid_fms: if version >= 3 {
                field(raw, 0x188)
            } else {
                [0; 3]
            },
            chip_id: field(raw, 0x1A0),
        })
    }

    /// Which key signed it.
    pub fn signing_key(&self) -> SigningKey {
        match (self.signer_info >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            n => SigningKey::Other(n as u8),
        }
    }

    /// True for a Turin (family 0x1A) CPU, as far as the report tells.
    pub fn is_turin(&self) -> bool {
        self.cpuid_fms[0] == 0x1A
    }

    /// The (r, s) pair as big-endian 48-byte scalars; `None` if the high bytes
    /// of the 72-byte little-endian fields are not zero.
    fn signature_rs(&self) -> Option<([u8; 48], [u8; 48])> {
        let r_le = self.raw.get(0x2A0..0x2A0 + 72)?;
        let s_le = self.raw.get(0x2E8..0x2E8 + 72)?;
        if r_le[48..].iter().chain(&s_le[48..]).any(|&b| b != 0) {
            return None;
        }
        let mut r = [0u8; 48];
        let mut s = [0u8; 48];
        for i in 0..48 {
            r[i] = r_le[47 - i];
            s[i] = s_le[47 - i];
        }
        Some((r, s))
    }

    /// Verifies the report signature under a P-384 public key (SEC1 bytes).
    pub fn verify_signature(&self, sec1_point: &[u8]) -> Result<(), String> {
        use ecdsa::signature::hazmat::PrehashVerifier;
        if self.signature_algo != 1 {
            return Err(format!(
                "signature_algo {} is not ECDSA P-384 with SHA-384",
                self.signature_algo
            ));
        }
        let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1_point)
            .map_err(|_| "endorsement key is not a P-384 point")?;
        let (r, s) = self
            .signature_rs()
            .ok_or("signature has non-zero padding")?;
        let mut rs = [0u8; 96];
        rs[..48].copy_from_slice(&r);
        rs[48..].copy_from_slice(&s);
        let sig =
            p384::ecdsa::Signature::from_slice(&rs).map_err(|_| "signature r/s out of range")?;
        let digest = Sha384::digest(&self.raw[..SIGNED_LEN]);
        vk.verify_prehash(&digest, &sig)
            .map_err(|_| "report signature invalid (ECDSA P-384 over bytes 0..0x2A0)".to_string())
    }
}

/// AMD VCEK/VLEK extension OIDs.
mod oid {
    pub const PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
    pub const BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
    pub const TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
    pub const SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
    pub const UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
    pub const FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
    pub const HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
    pub const CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
}

/// Decodes a small DER INTEGER or string extension value.
fn der_small_int(v: &[u8]) -> Option<u8> {
    use der::Decode;
    let n = u64::from_der(v).ok()?;
    u8::try_from(n).ok()
}

/// The product name extension (`Milan-B0`, `Turin`, …), if present.
pub fn product_name(vek: &Cert) -> Option<String> {
    let v = vek.extension(oid::PRODUCT_NAME)?;
    use der::Decode;
    der::asn1::Ia5String::from_der(v)
        .map(|s| s.to_string())
        .ok()
        .or_else(|| String::from_utf8(v.to_vec()).ok())
}

/// Checks the VCEK/VLEK's TCB extensions (and the VCEK's hwID) against the report.
pub fn check_vek_extensions(vek: &Cert, report: &Report, turin: bool) -> Result<String, String> {
    let tcb = Tcb::decode(report.reported_tcb, turin);
    let mut parts = vec![
        ("blSPL", oid::BL_SPL, tcb.bl),
        ("teeSPL", oid::TEE_SPL, tcb.tee),
        ("snpSPL", oid::SNP_SPL, tcb.snp),
        ("ucodeSPL", oid::UCODE_SPL, tcb.ucode),
    ];
    if let Some(fmc) = tcb.fmc {
        parts.push(("fmcSPL", oid::FMC_SPL, fmc));
    }
    for (name, o, want) in &parts {
        let got = vek
            .extension(o)
            .ok_or(format!("certificate lacks the {name} extension"))?;
        let got = der_small_int(got).ok_or(format!("{name} extension is not a small INTEGER"))?;
        if got != *want {
            return Err(format!(
                "certificate {name}={got} but reported_tcb has {want}"
            ));
        }
    }
    let mut why = format!(
        "TCB extensions match reported_tcb (bl={} tee={} snp={} ucode={}{})",
        tcb.bl,
        tcb.tee,
        tcb.snp,
        tcb.ucode,
        tcb.fmc.map(|f| format!(" fmc={f}")).unwrap_or_default()
    );
    match report.signing_key() {
        SigningKey::Vcek => {
            let hwid = vek
                .extension(oid::HW_ID)
                .ok_or("VCEK lacks the hwID extension")?;
            let want: &[u8] = if turin {
                &report.chip_id[..8]
            } else {
                &report.chip_id
            };
            if report.chip_id.iter().all(|&b| b == 0) {
                // MASK_CHIP_ID: the guest asked for a zero chip_id; the VCEK's
                // signature still ties the report to the chip.
                why.push_str("; chip_id masked, hwID not compared");
                return Ok(why);
            }
            if hwid != want {
                return Err("VCEK hwID does not equal the report's chip_id".into());
            }
            why.push_str("; hwID = chip_id");
        }
        _ => {
            if let Some(csp) = vek.extension(oid::CSP_ID) {
                let s: String = csp
                    .iter()
                    .filter(|b| b.is_ascii_graphic() || **b == b' ')
                    .map(|&b| b as char)
                    .collect();
                why.push_str(&format!("; VLEK CSP_ID {s}"));
            }
        }
    }
    Ok(why)
}

/// Outcome of checking an AMD chain.
#[derive(Debug, Clone)]
pub struct ChainResult {
    /// CN of the root the chain ended in.
    pub root_cn: String,
    /// True if that root is one of the built-in AMD ARKs.
    pub hardware_rooted: bool,
    /// Description for the report.
    pub detail: String,
}

/// Verifies VEK ← intermediate ← root at `now`, where the root must be one of
/// the built-in AMD ARKs or one of `extra_roots` (matched by exact DER).
/// The chain must be RSASSA-PSS SHA-384 when it ends in an AMD ARK.
pub fn verify_amd_chain(
    vek: &Cert,
    intermediate: &Cert,
    root: &Cert,
    extra_roots: &[Cert],
    now: i64,
) -> Result<ChainResult, String> {
    let builtin = crate::roots::amd_arks();
    let hardware_rooted = builtin.iter().any(|a| a.der == root.der);
    let trusted_extra = extra_roots.iter().any(|a| a.der == root.der);
    if !root.is_self_signed() {
        return Err(format!("root '{}' is not self-signed", root.cn()));
    }
    if hardware_rooted {
        for c in [vek, intermediate, root] {
            if c.cert.signature_algorithm().oid != cert::OID_RSA_PSS {
                return Err(format!("'{}' is not signed with RSASSA-PSS", c.cn()));
            }
        }
    }
    cert::verify_chain(&[vek, intermediate, root], now)?;
    if !hardware_rooted && !trusted_extra {
        return Err(format!(
            "not hardware-rooted: root '{}' (SHA-256 {}) is neither an AMD ARK nor a passed trust root",
            root.cn(),
            hex::encode(root.fingerprint())
        ));
    }
    Ok(ChainResult {
        root_cn: root.cn(),
        hardware_rooted,
        detail: format!("{} <- {} <- {}", vek.cn(), intermediate.cn(), root.cn()),
    })
}
