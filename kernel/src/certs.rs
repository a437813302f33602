//! Certificates for the vTPM's keys, rooted in the platform's attestation
//! report (issue 7). At boot the SVSM
//!
//! 1. makes a per-boot ECDSA P-256 *binding key* from hardware entropy; the
//!    key never leaves SVSM memory and is dropped (zeroized) once the
//!    certificates below are signed;
//! 2. asks the platform for a report whose REPORT_DATA is
//!    [`binding_report_data`]: SHA-512([`REPORT_DATA_LABEL`] ‖ the binding
//!    key's SubjectPublicKeyInfo DER);
//! 3. issues a self-signed *binding certificate* for that key that carries the
//!    report in the non-critical extension [`OID_PLATFORM_REPORT`];
//! 4. issues, signed by the binding key, an EK certificate per EK following
//!    the TCG EK Credential Profile for TPM 2.0 (empty subject, critical
//!    subjectAltName directoryName with tcg-at-tpmManufacturer / tpmModel /
//!    tpmVersion 2.23.133.2.1/2/3, EKU tcg-kp-EKCertificate 2.23.133.8.1,
//!    key usage keyEncipherment (RSA) or keyAgreement (ECC), critical basic
//!    constraints cA FALSE, authority key identifier, the
//!    tcg-at-tpmSpecification subject directory attribute) and an AK
//!    certificate per AK (the same, EKU tcg-kp-AIKCertificate 2.23.133.8.3,
//!    key usage digitalSignature);
//! 5. writes them all into TPM NV ([`nv_index`]) with the attributes of
//!    [`NV_ATTRIBUTES`], write-locked.
//!
//! A verifier checks: the binding certificate's report verifies like any
//! platform report and its REPORT_DATA binds the certificate's key; every
//! EK/AK certificate verifies under that key; and the certified keys are the
//! EKs/AKs in the (report-bound) manifest. The NV copies are conveniences:
//! their trust comes from the signatures, not from NV access control.
//!
//! Plain logic on `alloc`, tested on the host; the kernel calls it from
//! `vtpm::manufacture`.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::str::FromStr;

use const_oid::{AssociatedOid, ObjectIdentifier};
use der::asn1::{
    Any, BitString, GeneralizedTime, Null, OctetString, SetOfVec, UintRef, Utf8StringRef,
};
use der::{Decode, Encode, Sequence};
use p256::ecdsa::{DerSignature, SigningKey};
use sha2::{Digest, Sha256, Sha512};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::TbsCertificate;
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies, ExtendedKeyUsage, KeyUsage,
    KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

/// Domain-separation label of the REPORT_DATA binding (with its NUL).
pub const REPORT_DATA_LABEL: &[u8] = b"Rivet vTPM binding key v1\0";

/// Rivet's OID arc: UUID 4106cee9-74d6-459b-b896-1b24887b6b67 under
/// Microsoft's GUID arc 1.2.840.113556.1.8000.2554 (the GUID split into
/// 16,16,16,16,16,24,24-bit arcs). The same UUID as `2.25.…` has a 128-bit
/// arc that `const-oid` (and so `x509-cert`) deliberately cannot decode.
pub const RIVET_ARC: &str =
    "1.2.840.113556.1.8000.2554.16646.52969.29910.17819.47254.1778824.8088423";
/// Extension of the binding certificate that carries the platform report
/// (non-critical): `RivetPlatformReport ::= SEQUENCE { format UTF8String,
/// report OCTET STRING }`.
pub const OID_PLATFORM_REPORT: ObjectIdentifier = ObjectIdentifier::new_unwrap(
    "1.2.840.113556.1.8000.2554.16646.52969.29910.17819.47254.1778824.8088423.1",
);
/// Certificate policy of every certificate issued here: "issued at boot by a
/// Rivet SVSM under a per-boot binding key bound to a platform report".
pub const OID_RIVET_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap(
    "1.2.840.113556.1.8000.2554.16646.52969.29910.17819.47254.1778824.8088423.2",
);

/// `format` of an SEV-SNP ATTESTATION_REPORT (also the native platform's
/// simulated reports, which use that layout).
pub const FORMAT_SNP: &str = "sev-snp-attestation-report";
/// `format` of a TDX quote (v4/v5) for the SVSM's TDREPORT, as the host's
/// quoting service returns it (what `Platform::attestation_report` gives on
/// `tdp`).
pub const FORMAT_TDX: &str = "tdx-quote";

/// TCG OIDs (EK Credential Profile, TCG OID registry).
pub mod tcg {
    use const_oid::ObjectIdentifier;
    /// tcg-at-tpmManufacturer.
    pub const TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
    /// tcg-at-tpmModel.
    pub const TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
    /// tcg-at-tpmVersion.
    pub const TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");
    /// tcg-at-tpmSpecification.
    pub const TPM_SPECIFICATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.16");
    /// tcg-kp-EKCertificate.
    pub const KP_EK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");
    /// tcg-kp-AIKCertificate (attestation key).
    pub const KP_AIK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.3");
}

/// subjectDirectoryAttributes (RFC 5280 §4.2.1.8).
pub const OID_SUBJECT_DIRECTORY_ATTRIBUTES: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.5.29.9");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// NV indices of the certificates.
pub mod nv_index {
    /// RSA 2048 EK certificate (EK Credential Profile, low range).
    pub const EK_RSA_CERT: u32 = 0x01C0_0002;
    /// ECC NIST P-256 EK certificate (EK Credential Profile, low range).
    pub const EK_ECC_CERT: u32 = 0x01C0_000A;
    /// The binding certificate (carries the report). Platform-manufacturer
    /// range of the TCG handle registry (0x01400000-0x017FFFFF): the SVSM is
    /// the platform that provisions this TPM; 0x5256 spells "RV".
    pub const BINDING_CERT: u32 = 0x0152_5600;
    /// The ECC P-256 AK certificate (AK at 0x81018000).
    pub const AK_ECC_CERT: u32 = 0x0152_5601;
    /// The RSA-2048 AK certificate (AK at 0x81018001).
    pub const AK_RSA_CERT: u32 = 0x0152_5602;
}

/// TPMA_NV of every certificate index: PPWRITE | WRITEDEFINE | PPREAD |
/// OWNERREAD | AUTHREAD | NO_DA | PLATFORMCREATE, ordinary; the index is
/// write-locked (NV_WriteLock) after it is written, so it reads back with
/// WRITTEN and WRITELOCKED set too.
pub const NV_ATTRIBUTES: u32 = 0x4207_2001;
/// TPMA_NV_WRITTEN | TPMA_NV_WRITELOCKED.
pub const NV_WRITTEN_LOCKED: u32 = 0x2000_0800;

/// TPM_PT values the subjectAltName needs.
mod pt {
    pub const REVISION: u32 = 0x102;
    pub const MANUFACTURER: u32 = 0x105;
    pub const VENDOR_STRING_1: u32 = 0x106;
    pub const FIRMWARE_VERSION_1: u32 = 0x10B;
}

/// Why certificates could not be made or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// A TPMT_PUBLIC is not an RSA-2048 or ECC P-256 key this module knows.
    BadPublicArea(&'static str),
    /// DER encoding or certificate building failed.
    Encoding(String),
    /// The entropy source failed.
    Entropy,
    /// A TPM command failed: which, and its response code (0: malformed).
    Tpm(&'static str, u32),
}

impl core::fmt::Display for CertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadPublicArea(why) => write!(f, "public area: {why}"),
            Self::Encoding(why) => write!(f, "certificate encoding: {why}"),
            Self::Entropy => write!(f, "no entropy for the binding key"),
            Self::Tpm(what, rc) => write!(f, "{what}: TPM_RC {rc:#x}"),
        }
    }
}

fn enc<E: core::fmt::Display>(e: E) -> CertError {
    CertError::Encoding(format!("{e}"))
}

/// The TPM's identity as the subjectAltName states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmIdentity {
    /// TPM_PT_MANUFACTURER.
    pub manufacturer: u32,
    /// TPM_PT_VENDOR_STRING_1..4, NULs removed.
    pub model: String,
    /// TPM_PT_FIRMWARE_VERSION_1.
    pub version: u32,
    /// TPM_PT_REVISION (spec revision × 100).
    pub revision: u32,
}

impl TpmIdentity {
    /// From GetCapability(TPM_PROPERTIES) pairs.
    pub fn from_properties(props: &[(u32, u32)]) -> Self {
        let get = |p: u32| props.iter().find(|x| x.0 == p).map_or(0, |x| x.1);
        let model: Vec<u8> = (0..4)
            .flat_map(|i| get(pt::VENDOR_STRING_1 + i).to_be_bytes())
            .filter(|b| *b != 0)
            .collect();
        Self {
            manufacturer: get(pt::MANUFACTURER),
            model: String::from_utf8_lossy(&model).into(),
            version: get(pt::FIRMWARE_VERSION_1),
            revision: get(pt::REVISION),
        }
    }

    /// The first property to ask for and how many (TPM_PT_REVISION ..
    /// TPM_PT_FIRMWARE_VERSION_1).
    pub const PROPERTIES: (u32, u32) = (pt::REVISION, pt::FIRMWARE_VERSION_1 - pt::REVISION + 1);

    /// `id:` and eight hex digits (EK Credential Profile §3.1.2).
    pub fn manufacturer_id(&self) -> String {
        format!("id:{:08X}", self.manufacturer)
    }

    /// `id:` and eight hex digits of the firmware version.
    pub fn version_id(&self) -> String {
        format!("id:{:08X}", self.version)
    }

    /// The directoryName of the subjectAltName: one RDN with the three
    /// attributes (UTF8String values).
    pub fn directory_name(&self) -> Result<Name, CertError> {
        let atv = |oid: ObjectIdentifier, v: &str| -> Result<AttributeTypeAndValue, CertError> {
            Ok(AttributeTypeAndValue {
                oid,
                value: Any::encode_from(&Utf8StringRef::new(v).map_err(enc)?).map_err(enc)?,
            })
        };
        let rdn = RelativeDistinguishedName::try_from(vec![
            atv(tcg::TPM_MANUFACTURER, &self.manufacturer_id())?,
            atv(tcg::TPM_MODEL, &self.model)?,
            atv(tcg::TPM_VERSION, &self.version_id())?,
        ])
        .map_err(enc)?;
        let mut seq = RdnSequence::default();
        seq.push(rdn);
        Name::from_der(&seq.to_der().map_err(enc)?).map_err(enc)
    }
}

/// Which of the SVSM's keys a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// EK, RSA-2048, template L-1.
    EkRsa,
    /// EK, ECC P-256, template L-2.
    EkEcc,
    /// AK, ECC P-256 (persistent 0x81018000).
    AkEcc,
    /// AK, RSA-2048 (persistent 0x81018001).
    AkRsa,
}

impl KeyRole {
    /// All four, in NV order.
    pub const ALL: [KeyRole; 4] = [Self::EkRsa, Self::EkEcc, Self::AkEcc, Self::AkRsa];

    /// The NV index of this key's certificate.
    pub fn nv_index(self) -> u32 {
        match self {
            Self::EkRsa => nv_index::EK_RSA_CERT,
            Self::EkEcc => nv_index::EK_ECC_CERT,
            Self::AkEcc => nv_index::AK_ECC_CERT,
            Self::AkRsa => nv_index::AK_RSA_CERT,
        }
    }

    /// The certificate's serial number (unique under one binding key).
    pub fn serial(self) -> u8 {
        match self {
            Self::EkRsa => 1,
            Self::EkEcc => 2,
            Self::AkEcc => 3,
            Self::AkRsa => 4,
        }
    }

    /// True for endorsement keys.
    pub fn is_ek(self) -> bool {
        matches!(self, Self::EkRsa | Self::EkEcc)
    }
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// `TPMS_TPM_SPECIFICATION`-style attribute value (EK Credential Profile).
#[derive(Sequence)]
struct TpmSpecification<'a> {
    family: Utf8StringRef<'a>,
    level: u32,
    revision: u32,
}

/// The value of the [`OID_PLATFORM_REPORT`] extension.
#[derive(Sequence)]
pub struct RivetPlatformReport<'a> {
    /// [`FORMAT_SNP`] or [`FORMAT_TDX`].
    pub format: Utf8StringRef<'a>,
    /// The report as the platform returned it.
    pub report: &'a der::asn1::OctetStringRef,
}

struct Reader<'a>(&'a [u8], usize);

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Option<u16> {
        let b = self.0.get(self.1..self.1 + 2)?;
        self.1 += 2;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(self.1..self.1 + 4)?;
        self.1 += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn tpm2b(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        let b = self.0.get(self.1..self.1 + n)?;
        self.1 += n;
        Some(b)
    }
    /// TPMT_SYM_DEF_OBJECT or a scheme: an algorithm and, unless NULL, two
    /// (symmetric) or one (scheme, KDF) more u16.
    fn alg_with(&mut self, extra: usize) -> Option<()> {
        if self.u16()? != 0x0010 {
            for _ in 0..extra {
                self.u16()?;
            }
        }
        Some(())
    }
}

/// The SubjectPublicKeyInfo (DER) of a TPMT_PUBLIC: RSA (rsaEncryption,
/// exponent 0 meaning 65537) or ECC NIST P-256 (id-ecPublicKey, uncompressed
/// point, checked to be on the curve).
pub fn spki_from_tpmt_public(public: &[u8]) -> Result<Vec<u8>, CertError> {
    let bad = CertError::BadPublicArea;
    let mut r = Reader(public, 0);
    let kind = r.u16().ok_or(bad("truncated"))?;
    r.u16().ok_or(bad("truncated"))?; // nameAlg
    r.u32().ok_or(bad("truncated"))?; // objectAttributes
    r.tpm2b().ok_or(bad("truncated"))?; // authPolicy
    r.alg_with(2).ok_or(bad("truncated"))?; // symmetric
    r.alg_with(1).ok_or(bad("truncated"))?; // scheme
    let spki = match kind {
        0x0001 => {
            r.u16().ok_or(bad("truncated"))?; // keyBits
            let exponent = match r.u32().ok_or(bad("truncated"))? {
                0 => 65537,
                e => e,
            };
            let modulus = r.tpm2b().ok_or(bad("truncated"))?;
            if modulus.len() != 256 {
                return Err(bad("RSA modulus is not 2048 bits"));
            }
            let e = exponent.to_be_bytes();
            let key = RsaPublicKey {
                modulus: UintRef::new(modulus).map_err(enc)?,
                public_exponent: UintRef::new(&e).map_err(enc)?,
            };
            SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: OID_RSA_ENCRYPTION,
                    parameters: Some(Any::from(Null)),
                },
                subject_public_key: BitString::from_bytes(&key.to_der().map_err(enc)?)
                    .map_err(enc)?,
            }
        }
        0x0023 => {
            if r.u16().ok_or(bad("truncated"))? != 0x0003 {
                return Err(bad("ECC curve is not NIST P-256"));
            }
            r.alg_with(1).ok_or(bad("truncated"))?; // kdf
            let x = r.tpm2b().ok_or(bad("truncated"))?;
            let y = r.tpm2b().ok_or(bad("truncated"))?;
            if x.len() > 32 || y.len() > 32 {
                return Err(bad("ECC coordinate longer than 32 bytes"));
            }
            let mut point = [0u8; 65];
            point[0] = 4;
            point[33 - x.len()..33].copy_from_slice(x);
            point[65 - y.len()..].copy_from_slice(y);
            p256::PublicKey::from_sec1_bytes(&point).map_err(|_| bad("not a P-256 point"))?;
            ec_spki(&point)?
        }
        _ => return Err(bad("neither RSA nor ECC")),
    };
    if r.1 != public.len() {
        return Err(bad("trailing bytes"));
    }
    spki.to_der().map_err(enc)
}

fn ec_spki(point: &[u8]) -> Result<SubjectPublicKeyInfoOwned, CertError> {
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&OID_P256).map_err(enc)?),
        },
        subject_public_key: BitString::from_bytes(point).map_err(enc)?,
    })
}

/// REPORT_DATA that binds a key: SHA-512(label ‖ SubjectPublicKeyInfo DER).
pub fn binding_report_data(spki_der: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(REPORT_DATA_LABEL);
    h.update(spki_der);
    h.finalize().into()
}

/// Key identifier (RFC 7093 method 1): the leftmost 160 bits of SHA-256 of
/// the subjectPublicKey bits.
fn key_identifier(spki_der: &[u8]) -> Result<OctetString, CertError> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(enc)?;
    let bits = spki.subject_public_key.raw_bytes();
    OctetString::new(&Sha256::digest(bits)[..20]).map_err(enc)
}

struct Profile {
    issuer: Name,
    subject: Name,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

fn extension<T: Encode>(
    oid: ObjectIdentifier,
    critical: bool,
    value: &T,
) -> Result<Extension, CertError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(enc)?).map_err(enc)?,
    })
}

/// The subject (and issuer) name of the binding certificate.
pub const BINDING_SUBJECT: &str = "CN=Rivet vTPM binding key,O=Rivet SVSM";

/// No trusted clock in the SVSM: notBefore 1970-01-01, notAfter
/// 9999-12-31T23:59:59Z (RFC 5280 §4.1.2.5, no well-defined expiration).
/// Freshness comes from the report, made at this boot.
fn validity() -> Result<Validity, CertError> {
    let start = der::DateTime::new(1970, 1, 1, 0, 0, 0).map_err(enc)?;
    let end = der::DateTime::new(9999, 12, 31, 23, 59, 59).map_err(enc)?;
    Ok(Validity::new(
        Time::from(start),
        Time::GeneralTime(GeneralizedTime::from_date_time(end)),
    ))
}

fn policies() -> CertificatePolicies {
    CertificatePolicies(vec![PolicyInformation {
        policy_identifier: OID_RIVET_POLICY,
        policy_qualifiers: None,
    }])
}

/// The per-boot binding key.
pub struct BindingKey {
    key: SigningKey,
    spki_der: Vec<u8>,
}

impl BindingKey {
    /// A key from `fill`'s randomness (32 bytes at a time; a value that is
    /// not a valid scalar is drawn again).
    pub fn generate(
        mut fill: impl FnMut(&mut [u8; 32]) -> Result<(), CertError>,
    ) -> Result<Self, CertError> {
        for _ in 0..16 {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            fill(&mut seed)?;
            if let Ok(key) = SigningKey::from_slice(&seed[..]) {
                let point = key.verifying_key().to_sec1_point(false);
                let spki_der = ec_spki(point.as_bytes())?.to_der().map_err(enc)?;
                return Ok(Self { key, spki_der });
            }
        }
        Err(CertError::Entropy)
    }

    /// The key's SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// REPORT_DATA for the report the binding certificate carries.
    pub fn report_data(&self) -> [u8; 64] {
        binding_report_data(&self.spki_der)
    }

    fn build(
        &self,
        profile: Profile,
        serial: SerialNumber,
        spki_der: &[u8],
        extensions: Vec<Extension>,
    ) -> Result<Vec<u8>, CertError> {
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(enc)?;
        let mut b = CertificateBuilder::new(profile, serial, validity()?, spki).map_err(enc)?;
        for e in extensions {
            b.add_extension(e).map_err(enc)?;
        }
        let cert = b.build::<_, DerSignature>(&self.key).map_err(enc)?;
        cert.to_der().map_err(enc)
    }

    /// The self-signed binding certificate carrying `report` (of `format`);
    /// `serial` is random (positive: its top bit is cleared).
    pub fn binding_certificate(
        &self,
        format: &str,
        report: &[u8],
        mut serial: [u8; 16],
    ) -> Result<Vec<u8>, CertError> {
        serial[0] &= 0x7F;
        serial[0] |= 0x01; // positive and exactly 16 bytes
        let name = Name::from_str(BINDING_SUBJECT).map_err(enc)?;
        let ski = key_identifier(&self.spki_der)?;
        let carried = RivetPlatformReport {
            format: Utf8StringRef::new(format).map_err(enc)?,
            report: der::asn1::OctetStringRef::new(report).map_err(enc)?,
        };
        let extensions = vec![
            extension(
                BasicConstraints::OID,
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
            )?,
            extension(
                KeyUsage::OID,
                true,
                &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::DigitalSignature),
            )?,
            extension(SubjectKeyIdentifier::OID, false, &SubjectKeyIdentifier(ski))?,
            extension(CertificatePolicies::OID, false, &policies())?,
            extension(OID_PLATFORM_REPORT, false, &carried)?,
        ];
        self.build(
            Profile {
                issuer: name.clone(),
                subject: name,
            },
            SerialNumber::new(&serial).map_err(enc)?,
            &self.spki_der,
            extensions,
        )
    }

    /// The certificate of one of the SVSM's keys (`public`: its TPMT_PUBLIC).
    pub fn key_certificate(
        &self,
        role: KeyRole,
        public: &[u8],
        tpm: &TpmIdentity,
    ) -> Result<Vec<u8>, CertError> {
        let spki_der = spki_from_tpmt_public(public)?;
        let (usage, purpose) = match role {
            KeyRole::EkRsa => (KeyUsages::KeyEncipherment, tcg::KP_EK_CERTIFICATE),
            KeyRole::EkEcc => (KeyUsages::KeyAgreement, tcg::KP_EK_CERTIFICATE),
            KeyRole::AkEcc | KeyRole::AkRsa => {
                (KeyUsages::DigitalSignature, tcg::KP_AIK_CERTIFICATE)
            }
        };
        let san = SubjectAltName(vec![GeneralName::DirectoryName(tpm.directory_name()?)]);
        let family = Utf8StringRef::new("2.0").map_err(enc)?;
        let spec = TpmSpecification {
            family,
            level: 0,
            revision: tpm.revision,
        };
        let mut values = SetOfVec::new();
        values
            .insert(Any::encode_from(&spec).map_err(enc)?)
            .map_err(enc)?;
        let directory: Vec<Attribute> = vec![Attribute {
            oid: tcg::TPM_SPECIFICATION,
            values,
        }];
        let extensions = vec![
            // The subject is empty, so the subjectAltName is critical.
            extension(SubjectAltName::OID, true, &san)?,
            extension(
                BasicConstraints::OID,
                true,
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
            )?,
            extension(KeyUsage::OID, true, &KeyUsage(usage.into()))?,
            extension(
                ExtendedKeyUsage::OID,
                false,
                &ExtendedKeyUsage(vec![purpose]),
            )?,
            extension(
                AuthorityKeyIdentifier::OID,
                false,
                &AuthorityKeyIdentifier {
                    key_identifier: Some(key_identifier(&self.spki_der)?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
            )?,
            extension(CertificatePolicies::OID, false, &policies())?,
            extension(OID_SUBJECT_DIRECTORY_ATTRIBUTES, false, &directory)?,
        ];
        self.build(
            Profile {
                issuer: Name::from_str(BINDING_SUBJECT).map_err(enc)?,
                subject: Name::default(),
            },
            SerialNumber::from(role.serial()),
            &spki_der,
            extensions,
        )
    }
}

/// Everything issued at one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The binding certificate (DER).
    pub binding: Vec<u8>,
    /// (role, certificate DER), in [`KeyRole::ALL`] order.
    pub keys: Vec<(KeyRole, Vec<u8>)>,
}

impl Issued {
    /// (NV index, certificate) for every certificate.
    pub fn nv_contents(&self) -> Vec<(u32, &[u8])> {
        let mut v = vec![(nv_index::BINDING_CERT, &self.binding[..])];
        v.extend(self.keys.iter().map(|(r, c)| (r.nv_index(), &c[..])));
        v
    }
}

/// Issues the binding certificate (with `report`) and the four key
/// certificates for `publics` (TPMT_PUBLIC of each role in
/// [`KeyRole::ALL`] order).
pub fn issue(
    key: &BindingKey,
    format: &str,
    report: &[u8],
    serial: [u8; 16],
    publics: [&[u8]; 4],
    tpm: &TpmIdentity,
) -> Result<Issued, CertError> {
    let binding = key.binding_certificate(format, report, serial)?;
    let keys = KeyRole::ALL
        .iter()
        .zip(publics)
        .map(|(role, public)| Ok((*role, key.key_certificate(*role, public, tpm)?)))
        .collect::<Result<_, CertError>>()?;
    Ok(Issued { binding, keys })
}

/// Largest NV_Write chunk (TPM_PT_NV_BUFFER_MAX of the engine).
pub const NV_CHUNK: usize = 1024;

/// Writes every certificate into its NV index with the platform hierarchy
/// (empty platformAuth, as after manufacture): NV_DefineSpace with
/// [`NV_ATTRIBUTES`], NV_Write in [`NV_CHUNK`] pieces, NV_WriteLock.
/// `execute` runs one command and returns its response.
pub fn write_to_nv(
    issued: &Issued,
    execute: &mut dyn FnMut(&[u8]) -> Vec<u8>,
) -> Result<(), CertError> {
    use rivet_tpm::client;
    let mut run = |what: &'static str, cmd: Vec<u8>| -> Result<(), CertError> {
        match client::response_code(&execute(&cmd)) {
            Some(0) => Ok(()),
            Some(rc) => Err(CertError::Tpm(what, rc)),
            None => Err(CertError::Tpm(what, 0)),
        }
    };
    for (index, cert) in issued.nv_contents() {
        let size = u16::try_from(cert.len()).map_err(|_| enc("certificate too large"))?;
        run(
            "NV_DefineSpace",
            client::nv_define_space(client::PLATFORM, index, NV_ATTRIBUTES, size),
        )?;
        for (i, chunk) in cert.chunks(NV_CHUNK).enumerate() {
            let offset = u16::try_from(i * NV_CHUNK).map_err(|_| enc("offset"))?;
            run(
                "NV_Write",
                client::nv_write(client::PLATFORM, index, offset, chunk),
            )?;
        }
        run(
            "NV_WriteLock",
            client::nv_write_lock(client::PLATFORM, index),
        )?;
    }
    Ok(())
}

/// Reads the TPM's identity (GetCapability of the TPM properties).
pub fn read_identity(execute: &mut dyn FnMut(&[u8]) -> Vec<u8>) -> Result<TpmIdentity, CertError> {
    use rivet_tpm::client;
    let (first, count) = TpmIdentity::PROPERTIES;
    let r = execute(&client::get_tpm_properties(first, count));
    let props = client::parse_tpm_properties(&r).ok_or(CertError::Tpm(
        "GetCapability",
        client::response_code(&r).unwrap_or(0),
    ))?;
    Ok(TpmIdentity::from_properties(&props))
}

#[cfg(test)]
mod tests;
