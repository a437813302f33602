//! A simulated AMD-style chain for the native platform and for tests:
//! ARK → ASK → VCEK certificates with P-384 keys made with x509-cert's
//! builder, and an SNP-layout report signer. Keys derive from a seed, so the
//! same seed gives the same chain. Never hardware-rooted.

use crate::cert::Cert;
use crate::snp::{REPORT_SIZE, SIGNED_LEN};
use der::{Encode, asn1::OctetString};
use p384::ecdsa::SigningKey;
use sha2::{Digest, Sha384};
use spki::{EncodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef};
use std::str::FromStr;
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{TbsCertificate, spki::SubjectPublicKeyInfo};

/// The simulated chain and the report-signing key.
#[derive(Debug, Clone)]
pub struct SimulatedChain {
    /// Self-signed root (pass it with `--trust-root`).
    pub ark: Cert,
    /// Intermediate.
    pub ask: Cert,
    /// Leaf whose key signs reports; carries TCB and hwID extensions.
    pub vcek: Cert,
    /// The VCEK private key.
    pub vcek_key: SigningKey,
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

/// Derives a P-384 key from a seed and a label.
pub fn derive_key(seed: &[u8], label: &str) -> SigningKey {
    let mut ctr = 0u32;
    loop {
        let d = Sha384::new()
            .chain_update(seed)
            .chain_update(label.as_bytes())
            .chain_update(ctr.to_be_bytes())
            .finalize();
        if let Ok(k) = SigningKey::from_slice(&d) {
            return k;
        }
        ctr += 1;
    }
}

fn name(cn: &str) -> Result<Name, String> {
    Name::from_str(&format!("CN={cn},O=Rivet simulated platform")).map_err(|e| e.to_string())
}

fn ext(oid: &str, value: Vec<u8>) -> Result<Extension, String> {
    Ok(Extension {
        extn_id: ObjectIdentifier::new(oid).map_err(|e| e.to_string())?,
        critical: false,
        extn_value: OctetString::new(value).map_err(|e| e.to_string())?,
    })
}

fn issue(
    issuer: &str,
    subject: &str,
    subject_key: &SigningKey,
    signer: &SigningKey,
    serial: u32,
    validity: (i64, i64),
    extensions: Vec<Extension>,
) -> Result<Cert, String> {
    let time = |t: i64| -> Result<Time, String> {
        let d = der::DateTime::from_unix_duration(core::time::Duration::from_secs(t.max(0) as u64))
            .map_err(|e| e.to_string())?;
        Ok(Time::from(d))
    };
    let spki_der = subject_key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| e.to_string())?;
    let spki = SubjectPublicKeyInfo::try_from(spki_der.as_bytes()).map_err(|e| e.to_string())?;
    let profile = Profile {
        issuer: name(issuer)?,
        subject: name(subject)?,
    };
    let mut b = CertificateBuilder::new(
        profile,
        SerialNumber::from(serial),
        Validity::new(time(validity.0)?, time(validity.1)?),
        spki,
    )
    .map_err(|e| e.to_string())?;
    for e in extensions {
        b.add_extension(e).map_err(|e| e.to_string())?;
    }
    let cert = b
        .build::<_, p384::ecdsa::DerSignature>(signer)
        .map_err(|e| e.to_string())?;
    Cert::from_der(&cert.to_der().map_err(|e| e.to_string())?)
}

impl SimulatedChain {
    /// Builds ARK → ASK → VCEK from `seed`, valid from `not_before` to
    /// `not_after` (Unix seconds). The VCEK carries blSPL/teeSPL/snpSPL/ucodeSPL
    /// for the Milan-layout `reported_tcb` and hwID = `chip_id`.
    pub fn new(
        seed: &[u8],
        reported_tcb: u64,
        chip_id: &[u8; 64],
        not_before: i64,
        not_after: i64,
    ) -> Result<Self, String> {
        let ark_key = derive_key(seed, "ARK");
        let ask_key = derive_key(seed, "ASK");
        let vcek_key = derive_key(seed, "VCEK");
        let v = (not_before, not_after);
        let ark = issue(
            "ARK-Simulated",
            "ARK-Simulated",
            &ark_key,
            &ark_key,
            1,
            v,
            vec![],
        )?;
        let ask = issue(
            "ARK-Simulated",
            "SEV-Simulated",
            &ask_key,
            &ark_key,
            2,
            v,
            vec![],
        )?;
        let tcb = crate::snp::Tcb::decode(reported_tcb, false);
        let int =
            |n: u8| -> Result<Vec<u8>, String> { u64::from(n).to_der().map_err(|e| e.to_string()) };
        let exts = vec![
            ext(
                "1.3.6.1.4.1.3704.1.2",
                der::asn1::Ia5StringRef::new("Simulated")
                    .map_err(|e| e.to_string())?
                    .to_der()
                    .map_err(|e| e.to_string())?,
            )?,
            ext("1.3.6.1.4.1.3704.1.3.1", int(tcb.bl)?)?,
            ext("1.3.6.1.4.1.3704.1.3.2", int(tcb.tee)?)?,
            ext("1.3.6.1.4.1.3704.1.3.3", int(tcb.snp)?)?,
            ext("1.3.6.1.4.1.3704.1.3.8", int(tcb.ucode)?)?,
            ext("1.3.6.1.4.1.3704.1.4", chip_id.to_vec())?,
        ];
        let vcek = issue("SEV-Simulated", "SEV-VCEK", &vcek_key, &ask_key, 3, v, exts)?;
        Ok(Self {
            ark,
            ask,
            vcek,
            vcek_key,
        })
    }

    /// The VCEK public key as an uncompressed SEC1 point.
    pub fn vcek_public_sec1(&self) -> Vec<u8> {
        self.vcek_key.verifying_key().to_sec1_bytes().to_vec()
    }

    /// Signs an SNP-layout report in place (bytes 0..0x2A0; R, S little-endian
    /// at 0x2A0 and 0x2E8), setting signature_algo = 1.
    pub fn sign_report(&self, report: &mut [u8]) -> Result<(), String> {
        sign_report(&self.vcek_key, report)
    }
}

/// Signs an SNP-layout report with `key`.
pub fn sign_report(key: &SigningKey, report: &mut [u8]) -> Result<(), String> {
    use ecdsa::signature::hazmat::PrehashSigner;
    if report.len() != REPORT_SIZE {
        return Err(format!("report must be {REPORT_SIZE} bytes"));
    }
    report[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
    let digest = Sha384::digest(&report[..SIGNED_LEN]);
    let sig: p384::ecdsa::Signature = key.sign_prehash(&digest).map_err(|e| e.to_string())?;
    let bytes = sig.to_bytes();
    report[0x2A0..REPORT_SIZE].fill(0);
    for i in 0..48 {
        report[0x2A0 + i] = bytes[47 - i];
        report[0x2E8 + i] = bytes[95 - i];
    }
    Ok(())
}
