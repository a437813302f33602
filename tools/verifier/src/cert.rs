//! X.509 helpers shared by the AMD and Intel chains: decoding PEM or DER,
//! checking one certificate's signature under its issuer's key, validity at a
//! given time, fingerprints and raw extension values.

use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384};
use spki::ObjectIdentifier;
use x509_cert::Certificate;

/// RSASSA-PSS (RFC 4055).
pub const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// ecdsa-with-SHA256.
pub const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// ecdsa-with-SHA384.
pub const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// DER of the SHA-384 OID, as it must appear in PSS parameters.
const SHA384_OID_DER: [u8; 11] = [
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
];
/// DER of `[2] INTEGER 48`, the PSS salt length.
const SALT48_DER: [u8; 5] = [0xa2, 0x03, 0x02, 0x01, 0x30];

/// A certificate together with the DER it was decoded from.
#[derive(Debug, Clone)]
pub struct Cert {
    /// Parsed form.
    pub cert: Certificate,
    /// Exact DER bytes.
    pub der: Vec<u8>,
}

impl Cert {
    /// Decodes one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("malformed certificate: {e}"))?;
        Ok(Self {
            cert,
            der: der.to_vec(),
        })
    }

    /// Subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate().subject().to_string()
    }

    /// Issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate().issuer().to_string()
    }

    /// Common name of the subject, or the whole subject.
    pub fn cn(&self) -> String {
        let s = self.subject();
        s.split(',')
            .find_map(|p| p.trim().strip_prefix("CN="))
            .map(str::to_string)
            .unwrap_or(s)
    }

    /// SHA-256 of the DER.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// The DER of the subject public key info.
    pub fn spki_der(&self) -> Result<Vec<u8>, String> {
        self.cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("cannot encode public key: {e}"))
    }

    /// True when subject == issuer and the certificate verifies under its own key.
    pub fn is_self_signed(&self) -> bool {
        self.subject() == self.issuer() && self.verify_signed_by(self).is_ok()
    }

    /// Checks this certificate's signature under `issuer`'s public key.
    /// Accepts RSASSA-PSS with SHA-384 and salt 48 (AMD), ECDSA P-256/SHA-256
    /// (Intel) and ECDSA P-384/SHA-384 (simulated chains).
    pub fn verify_signed_by(&self, issuer: &Cert) -> Result<(), String> {
        let tbs = self
            .cert
            .tbs_certificate()
            .to_der()
            .map_err(|e| format!("cannot re-encode TBS: {e}"))?;
        let alg = self.cert.signature_algorithm();
        if alg != self.cert.tbs_certificate().signature() {
            return Err("outer and inner signature algorithms differ".into());
        }
        let sig = self
            .cert
            .signature()
            .as_bytes()
            .ok_or("signature BIT STRING has unused bits")?;
        let spki = issuer.spki_der()?;
        if alg.oid == OID_RSA_PSS {
            let params = alg.parameters.as_ref().map(|p| p.to_der()).transpose();
            let params = params
                .map_err(|e| format!("bad PSS parameters: {e}"))?
                .unwrap_or_default();
            if !contains(&params, &SHA384_OID_DER) || !contains(&params, &SALT48_DER) {
                return Err("RSASSA-PSS parameters are not SHA-384 / salt 48".into());
            }
            verify_rsa_pss_sha384(&spki, &tbs, sig)
        } else if alg.oid == OID_ECDSA_SHA256 {
            verify_ecdsa_der(&spki, Sha256::digest(&tbs).as_slice(), sig)
        } else if alg.oid == OID_ECDSA_SHA384 {
            verify_ecdsa_der(&spki, Sha384::digest(&tbs).as_slice(), sig)
        } else {
            Err(format!(
                "unsupported certificate signature algorithm {}",
                alg.oid
            ))
        }?;
        // The signature decides; the names must agree too.
        if self.issuer() != issuer.subject() {
            return Err(format!(
                "issuer name '{}' does not match '{}'",
                self.issuer(),
                issuer.subject()
            ));
        }
        Ok(())
    }

    /// Checks notBefore <= now <= notAfter (`now` in Unix seconds).
    pub fn check_validity(&self, now: i64) -> Result<(), String> {
        let v = self.cert.tbs_certificate().validity();
        let nb = secs(v.not_before.to_unix_duration());
        let na = secs(v.not_after.to_unix_duration());
        if now < nb {
            Err(format!(
                "'{}' is not valid before {}",
                self.cn(),
                v.not_before
            ))
        } else if now > na {
            Err(format!("'{}' expired at {}", self.cn(), v.not_after))
        } else {
            Ok(())
        }
    }

    /// The raw extnValue (contents of the OCTET STRING) of an extension.
    pub fn extension(&self, oid: &str) -> Option<&[u8]> {
        let oid = ObjectIdentifier::new(oid).ok()?;
        self.cert
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

fn secs(d: core::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Decodes every certificate in `data`: one DER certificate, or PEM with any
/// number of CERTIFICATE blocks.
pub fn parse_certs(data: &[u8]) -> Result<Vec<Cert>, String> {
    let text = core::str::from_utf8(data).ok();
    match text {
        Some(t) if t.contains("-----BEGIN") => {
            let mut out = Vec::new();
            let mut rest = t;
            while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
                let after = &rest[start..];
                let end_tag = "-----END CERTIFICATE-----";
                let end = after.find(end_tag).ok_or("PEM block without END line")? + end_tag.len();
                let (_, der) = der::pem::decode_vec(&after.as_bytes()[..end])
                    .map_err(|e| format!("bad PEM: {e}"))?;
                out.push(Cert::from_der(&der)?);
                rest = &after[end..];
            }
            if out.is_empty() {
                return Err("PEM input holds no CERTIFICATE block".into());
            }
            Ok(out)
        }
        _ => Ok(vec![Cert::from_der(data)?]),
    }
}

/// RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48, over `msg`.
pub fn verify_rsa_pss_sha384(spki_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let key = rsa::PublicKey::from_public_key_der(spki_der)
        .map_err(|e| format!("issuer key is not RSA: {e}"))?;
    let vk = rsa::pss::VerifyingKey::<Sha384>::new_with_salt_len(key, 48);
    let sig = rsa::pss::Signature::try_from(sig).map_err(|e| format!("bad RSA signature: {e}"))?;
    vk.verify(msg, &sig)
        .map_err(|_| "RSA-PSS signature invalid".to_string())
}

/// ECDSA over a prehashed message with a DER signature; the curve comes from the SPKI.
pub fn verify_ecdsa_der(spki_der: &[u8], prehash: &[u8], sig: &[u8]) -> Result<(), String> {
    use ecdsa::signature::hazmat::PrehashVerifier;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| format!("bad public key info: {e}"))?;
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(format!("issuer key is not EC ({})", spki.algorithm.oid));
    }
    let curve: ObjectIdentifier = spki
        .algorithm
        .parameters
        .ok_or("EC key without curve")?
        .decode_as()
        .map_err(|e| format!("bad EC curve parameter: {e}"))?;
    let point = spki.subject_public_key.as_bytes().ok_or("bad EC point")?;
    let bad = |_| "ECDSA signature invalid".to_string();
    if curve == OID_P256 {
        let vk =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| "bad P-256 point")?;
        let s =
            p256::ecdsa::DerSignature::from_bytes(sig).map_err(|_| "malformed ECDSA signature")?;
        let s = p256::ecdsa::Signature::try_from(s).map_err(|_| "malformed ECDSA signature")?;
        vk.verify_prehash(prehash, &s).map_err(bad)
    } else if curve == OID_P384 {
        let vk =
            p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| "bad P-384 point")?;
        let s =
            p384::ecdsa::DerSignature::from_bytes(sig).map_err(|_| "malformed ECDSA signature")?;
        let s = p384::ecdsa::Signature::try_from(s).map_err(|_| "malformed ECDSA signature")?;
        vk.verify_prehash(prehash, &s).map_err(bad)
    } else {
        Err(format!("unsupported EC curve {curve}"))
    }
}

/// The SEC1 point of an EC SPKI, if it is one.
pub fn ec_point(spki_der: &[u8]) -> Option<Vec<u8>> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    (spki.algorithm.oid == OID_EC_PUBLIC_KEY).then(|| spki.subject_public_key.raw_bytes().to_vec())
}

/// Verifies a chain given leaf-first: each certificate signed by the next,
/// the last one self-signed, every one valid at `now`.
pub fn verify_chain(chain: &[&Cert], now: i64) -> Result<(), String> {
    for (i, c) in chain.iter().enumerate() {
        let issuer = chain.get(i + 1).copied().unwrap_or(c);
        c.verify_signed_by(issuer)
            .map_err(|e| format!("'{}' not signed by '{}': {e}", c.cn(), issuer.cn()))?;
        c.check_validity(now)?;
    }
    Ok(())
}
