//! TPM 2.0 structures the verifier reads: the AK's TPMT_PUBLIC, a quote's
//! TPMS_ATTEST and its TPMT_SIGNATURE; signature and PCR-digest checks.

use crate::reader::{Reader, Truncated};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// TPM_GENERATED_VALUE.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

const ALG_RSA: u16 = 0x0001;
const ALG_SHA1: u16 = 0x0004;
const ALG_SHA256: u16 = 0x000B;
const ALG_SHA384: u16 = 0x000C;
const ALG_SHA512: u16 = 0x000D;
const ALG_NULL: u16 = 0x0010;
const ALG_RSASSA: u16 = 0x0014;
const ALG_RSAPSS: u16 = 0x0016;
const ALG_ECDSA: u16 = 0x0018;
const ALG_ECC: u16 = 0x0023;
const ECC_NIST_P256: u16 = 0x0003;
const ECC_NIST_P384: u16 = 0x0004;

/// A TPM hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// From a TPM_ALG_ID.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            ALG_SHA1 => Some(Self::Sha1),
            ALG_SHA256 => Some(Self::Sha256),
            ALG_SHA384 => Some(Self::Sha384),
            ALG_SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// From a bank name as used in bundles (`sha1`, `sha256`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Bank name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn h<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Self::Sha1 => h::<Sha1>(parts),
            Self::Sha256 => h::<Sha256>(parts),
            Self::Sha384 => h::<Sha384>(parts),
            Self::Sha512 => h::<Sha512>(parts),
        }
    }
}

/// The AK's public key.
#[derive(Debug, Clone)]
pub enum PublicKey {
    /// RSA modulus (big-endian) and exponent.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: u32,
    },
    /// ECC point on a NIST curve.
    Ecc {
        /// TPM_ECC_CURVE.
        curve: u16,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
}

/// Parses a TPMT_PUBLIC (no size prefix; a TPM2B_PUBLIC is accepted too).
pub fn parse_public(data: &[u8]) -> Result<PublicKey, String> {
    // A TPM2B_PUBLIC starts with its size, which then equals the rest's length.
    let data = match data {
        [a, b, rest @ ..] if usize::from(u16::from_be_bytes([*a, *b])) == rest.len() => rest,
        _ => data,
    };
    parse_public_inner(data).map_err(|e| format!("bad TPMT_PUBLIC: {e}"))
}

fn parse_public_inner(data: &[u8]) -> Result<PublicKey, Truncated> {
    let mut r = Reader::new(data);
    let ty = r.u16_be("type")?;
    let _name_alg = r.u16_be("nameAlg")?;
    let _attrs = r.u32_be("objectAttributes")?;
    let _policy = r.tpm2b("authPolicy")?;
    let sym = r.u16_be("symmetric")?;
    if sym != ALG_NULL {
        r.u16_be("symmetric.keyBits")?;
        r.u16_be("symmetric.mode")?;
    }
    let scheme = r.u16_be("scheme")?;
    if scheme != ALG_NULL {
        r.u16_be("scheme.hashAlg")?;
    }
    match ty {
        ALG_RSA => {
            let _bits = r.u16_be("keyBits")?;
            let e = r.u32_be("exponent")?;
            let n = r.tpm2b("unique.rsa")?.to_vec();
            Ok(PublicKey::Rsa {
                n,
                e: if e == 0 { 65537 } else { e },
            })
        }
        ALG_ECC => {
            let curve = r.u16_be("curveID")?;
            let kdf = r.u16_be("kdf")?;
            if kdf != ALG_NULL {
                r.u16_be("kdf.hashAlg")?;
            }
            let x = r.tpm2b("unique.x")?.to_vec();
            let y = r.tpm2b("unique.y")?.to_vec();
            Ok(PublicKey::Ecc { curve, x, y })
        }
        _ => Err(Truncated {
            what: "supported key type (RSA or ECC)",
            offset: 0,
        }),
    }
}

/// One bank of a TPML_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// Bank hash.
    pub hash: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

/// A parsed TPMS_ATTEST of type quote.
#[derive(Debug, Clone)]
pub struct Attest {
    /// Qualifying data (the nonce).
    pub extra_data: Vec<u8>,
    /// Selected PCRs.
    pub selection: Vec<PcrSelection>,
    /// Digest of the selected PCRs.
    pub pcr_digest: Vec<u8>,
    /// Reset counter (clockInfo).
    pub reset_count: u32,
}

/// Parses a TPMS_ATTEST and checks magic and type.
pub fn parse_attest(data: &[u8]) -> Result<Attest, String> {
    let mut r = Reader::new(data);
    let t = |e: Truncated| format!("bad TPMS_ATTEST: {e}");
    let magic = r.u32_be("magic").map_err(t)?;
    if magic != TPM_GENERATED {
        return Err(format!(
            "TPMS_ATTEST magic {magic:#x} is not TPM_GENERATED_VALUE"
        ));
    }
    let ty = r.u16_be("type").map_err(t)?;
    if ty != ST_ATTEST_QUOTE {
        return Err(format!(
            "TPMS_ATTEST type {ty:#x} is not TPM_ST_ATTEST_QUOTE"
        ));
    }
    r.tpm2b("qualifiedSigner").map_err(t)?;
    let extra_data = r.tpm2b("extraData").map_err(t)?.to_vec();
    r.u64_be("clock").map_err(t)?;
    let reset_count = r.u32_be("resetCount").map_err(t)?;
    r.u32_be("restartCount").map_err(t)?;
    r.u8("safe").map_err(t)?;
    r.u64_be("firmwareVersion").map_err(t)?;
    let count = r.u32_be("pcrSelect.count").map_err(t)?;
    if count > 16 {
        return Err(format!("bad TPMS_ATTEST: {count} PCR banks"));
    }
    let mut selection = Vec::new();
    for _ in 0..count {
        let hash = r.u16_be("pcrSelections.hash").map_err(t)?;
        let n = r.u8("sizeofSelect").map_err(t)?;
        let bits = r.take(usize::from(n), "pcrSelect").map_err(t)?;
        let mut pcrs = Vec::new();
        for (i, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    pcrs.push((i * 8 + bit) as u32);
                }
            }
        }
        selection.push(PcrSelection { hash, pcrs });
    }
    let pcr_digest = r.tpm2b("pcrDigest").map_err(t)?.to_vec();
    if !r.remaining().is_empty() {
        return Err(format!(
            "bad TPMS_ATTEST: {} trailing bytes",
            r.remaining().len()
        ));
    }
    Ok(Attest {
        extra_data,
        selection,
        pcr_digest,
        reset_count,
    })
}

/// Verifies a TPMT_SIGNATURE over `attest` under `key`. Returns the hash
/// algorithm the signature used.
pub fn verify_signature(key: &PublicKey, attest: &[u8], sig: &[u8]) -> Result<HashAlg, String> {
    let mut r = Reader::new(sig);
    let t = |e: Truncated| format!("bad TPMT_SIGNATURE: {e}");
    let alg = r.u16_be("sigAlg").map_err(t)?;
    let hash_id = r.u16_be("hash").map_err(t)?;
    let hash =
        HashAlg::from_id(hash_id).ok_or(format!("unsupported signature hash {hash_id:#x}"))?;
    let digest = hash.hash(&[attest]);
    match (alg, key) {
        (ALG_ECDSA, PublicKey::Ecc { curve, x, y }) => {
            let sr = r.tpm2b("signatureR").map_err(t)?;
            let ss = r.tpm2b("signatureS").map_err(t)?;
            verify_tpm_ecdsa(*curve, x, y, sr, ss, &digest)?;
        }
        (ALG_RSASSA | ALG_RSAPSS, PublicKey::Rsa { n, e }) => {
            let s = r.tpm2b("sig").map_err(t)?;
            verify_tpm_rsa(alg == ALG_RSAPSS, n, *e, hash, &digest, s)?;
        }
        _ => {
            return Err(format!(
                "signature scheme {alg:#x} does not fit the AK's key type"
            ));
        }
    }
    Ok(hash)
}

fn pad_left(v: &[u8], n: usize) -> Option<Vec<u8>> {
    let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..];
    if v.len() > n {
        return None;
    }
    let mut out = vec![0u8; n - v.len()];
    out.extend_from_slice(v);
    Some(out)
}

fn verify_tpm_ecdsa(
    curve: u16,
    x: &[u8],
    y: &[u8],
    r: &[u8],
    s: &[u8],
    digest: &[u8],
) -> Result<(), String> {
    use ecdsa::signature::hazmat::PrehashVerifier;
    let size = match curve {
        ECC_NIST_P256 => 32,
        ECC_NIST_P384 => 48,
        c => return Err(format!("unsupported ECC curve {c:#x}")),
    };
    let bad = || "AK point or signature has the wrong size".to_string();
    let mut point = vec![4u8];
    point.extend(pad_left(x, size).ok_or_else(bad)?);
    point.extend(pad_left(y, size).ok_or_else(bad)?);
    let mut rs = pad_left(r, size).ok_or_else(bad)?;
    rs.extend(pad_left(s, size).ok_or_else(bad)?);
    let invalid = |_| "TPM quote signature invalid".to_string();
    if size == 32 {
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| "AK is not a P-256 point")?;
        let sig = p256::ecdsa::Signature::from_slice(&rs).map_err(|_| "ECDSA r/s out of range")?;
        vk.verify_prehash(digest, &sig).map_err(invalid)
    } else {
        let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| "AK is not a P-384 point")?;
        let sig = p384::ecdsa::Signature::from_slice(&rs).map_err(|_| "ECDSA r/s out of range")?;
        vk.verify_prehash(digest, &sig).map_err(invalid)
    }
}

fn verify_tpm_rsa(
    pss: bool,
    n: &[u8],
    e: u32,
    hash: HashAlg,
    digest: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    use rsa::signature::hazmat::PrehashVerifier;
    let key = rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(n),
        rsa::BoxedUint::from(u64::from(e)),
    )
    .map_err(|e| format!("bad RSA AK: {e}"))?;
    let invalid = |_| "TPM quote signature invalid".to_string();
    macro_rules! check {
        ($d:ty) => {{
            if pss {
                let vk = rsa::pss::VerifyingKey::<$d>::new_with_auto_salt_len(key);
                let s =
                    rsa::pss::Signature::try_from(sig).map_err(|_| "malformed RSA signature")?;
                vk.verify_prehash(digest, &s).map_err(invalid)
            } else {
                let vk = rsa::pkcs1v15::VerifyingKey::<$d>::new(key);
                let s = rsa::pkcs1v15::Signature::try_from(sig)
                    .map_err(|_| "malformed RSA signature")?;
                vk.verify_prehash(digest, &s).map_err(invalid)
            }
        }};
    }
    match hash {
        HashAlg::Sha1 => check!(Sha1),
        HashAlg::Sha256 => check!(Sha256),
        HashAlg::Sha384 => check!(Sha384),
        HashAlg::Sha512 => check!(Sha512),
    }
}

/// The PCR values of one bank: index → value.
pub type Bank = std::collections::BTreeMap<u32, Vec<u8>>;
/// All banks by hash.
pub type PcrValues = std::collections::BTreeMap<String, Bank>;

/// Recomputes pcrDigest from the selection and the PCR values with `hash`.
pub fn check_pcr_digest(
    attest: &Attest,
    pcrs: &PcrValues,
    hash: HashAlg,
) -> Result<String, String> {
    let mut concat = Vec::new();
    let mut n = 0;
    for sel in &attest.selection {
        let bank_alg =
            HashAlg::from_id(sel.hash).ok_or(format!("unknown PCR bank {:#x}", sel.hash))?;
        let bank = pcrs.get(bank_alg.name()).ok_or(format!(
            "the quote selects the {} bank but no values for it were given",
            bank_alg.name()
        ))?;
        for i in &sel.pcrs {
            let v = bank.get(i).ok_or(format!(
                "the quote selects {} PCR {i} but no value was given",
                bank_alg.name()
            ))?;
            concat.extend_from_slice(v);
            n += 1;
        }
    }
    if hash.hash(&[&concat]) == attest.pcr_digest {
        Ok(format!("pcrDigest matches the {n} selected PCR values"))
    } else {
        Err("pcrDigest does not match the given PCR values".into())
    }
}

/// True if the TPMT_PUBLIC's key equals the key in a certificate's SPKI.
pub fn key_matches_spki(key: &PublicKey, spki_der: &[u8]) -> bool {
    match key {
        PublicKey::Ecc { x, y, .. } => match crate::cert::ec_point(spki_der) {
            Some(p) if p.first() == Some(&4) => {
                let half = (p.len() - 1) / 2;
                pad_left(x, half).as_deref() == Some(&p[1..1 + half])
                    && pad_left(y, half).as_deref() == Some(&p[1 + half..])
            }
            _ => false,
        },
        PublicKey::Rsa { n, .. } => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::traits::PublicKeyParts;
            rsa::PublicKey::from_public_key_der(spki_der)
                .map(|k| pad_left(&k.n().to_be_bytes(), n.len()).as_deref() == Some(&n[..]))
                .unwrap_or(false)
        }
    }
}
