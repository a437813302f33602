//! The test guest's evidence, as a verifier takes it: the `guest: evidence`
//! lines of a boot's serial log become a `rivet_verifier::Evidence` bundle
//! (the single-service attestation with manifest version 1, whose report
//! binds both EKs and both AKs, the AK's quote, the PCRs it covers, and the
//! EK/AK certificates and the binding certificate the guest read from NV).

use std::collections::BTreeMap;
use std::path::Path;

use rivet_verifier::Evidence;
use rivet_verifier::evidence::{SnpEvidence, TpmQuote};

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex ({} digits)", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex: {e}")))
        .collect()
}

/// The value of `guest: evidence <key>=<hex>`.
pub fn evidence_value(serial: &str, key: &str) -> Result<Vec<u8>, String> {
    let prefix = format!("guest: evidence {key}=");
    let line = serial
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .ok_or_else(|| format!("the guest printed no {key}"))?;
    unhex(line.trim())
}

/// The bundle for a verifier. `simulated_key` is the SEC1 public key the
/// native platform's reports are signed with (None: as for hardware, a
/// chain would be needed).
pub fn guest_evidence(serial: &str, simulated_key: Option<Vec<u8>>) -> Result<Evidence, String> {
    let mut sha256 = BTreeMap::new();
    for i in 0..10u32 {
        sha256.insert(i, evidence_value(serial, &format!("pcr_sha256_{i}"))?);
    }
    let mut pcrs = BTreeMap::new();
    pcrs.insert("sha256".to_string(), sha256);
    Ok(Evidence {
        snp: Some(SnpEvidence {
            report: evidence_value(serial, "vtpm_report_v1")?,
            simulated_vcek_public_key: simulated_key,
            ..SnpEvidence::default()
        }),
        nonce: Some(evidence_value(serial, "nonce")?),
        manifest: Some(evidence_value(serial, "vtpm_manifest_v1")?),
        tpm_quote: Some(TpmQuote {
            attest: evidence_value(serial, "quote_attest")?,
            signature: evidence_value(serial, "quote_signature")?,
            nonce: Some(evidence_value(serial, "quote_nonce")?),
        }),
        ak_public: Some(evidence_value(serial, "ak_public")?),
        pcrs: Some(pcrs),
        binding_cert: Some(evidence_value(serial, "binding_cert")?),
        ek_certs: vec![
            evidence_value(serial, "ek_cert_rsa")?,
            evidence_value(serial, "ek_cert_ecc")?,
        ],
        ak_certs: vec![
            evidence_value(serial, "ak_cert_ecc")?,
            evidence_value(serial, "ak_cert_rsa")?,
        ],
        ..Evidence::default()
    })
}

/// The SEC1 (uncompressed) public key of a report key file written by
/// [`crate::write_report_key`].
pub fn report_public_key(key_file: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key =
        p384::ecdsa::SigningKey::from_slice(&raw).map_err(|_| "not a P-384 scalar".to_string())?;
    Ok(key.verifying_key().to_sec1_point(false).as_bytes().to_vec())
}

/// The read-only part of an ELF image (code and constants) as it lies in
/// memory: its read-only PT_LOAD segments, holes zero, up to the next page
/// boundary. The native platform's launch measurement is the SHA-384 of
/// this of the kernel; the test guest measures this of itself.
pub fn loaded_read_only_image(elf: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "not an ELF64 image".to_string();
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(bad)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(bad)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(bad)
    };
    if elf.get(0..4) != Some(b"\x7FELF") {
        return Err(bad());
    }
    let (phoff, phnum) = (u64_at(32)? as usize, usize::from(u16_at(56)?));
    let mut segs = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * 56;
        let writable = u32_at(ph + 4)? & 2 != 0;
        if u32_at(ph)? == 1 && !writable {
            segs.push((
                u64_at(ph + 8)? as usize,
                u64_at(ph + 24)?,
                u64_at(ph + 32)? as usize,
                u64_at(ph + 40)?,
            ));
        }
    }
    let lo = segs.iter().map(|s| s.1).min().ok_or_else(bad)?;
    let hi = segs.iter().map(|s| s.1 + s.3).max().ok_or_else(bad)?;
    let mut mem = vec![0u8; usize::try_from(hi - lo).map_err(|_| bad())?];
    for (off, addr, filesz, _) in segs {
        let at = (addr - lo) as usize;
        let src = elf.get(off..off + filesz).ok_or_else(bad)?;
        mem[at..at + filesz].copy_from_slice(src);
    }
    mem.resize(mem.len().next_multiple_of(4096), 0);
    Ok(mem)
}

/// The launch measurement the native platform reports for `kernel_elf`.
pub fn native_measurement(kernel_elf: &Path) -> Result<Vec<u8>, String> {
    use sha2::Digest;
    let elf = std::fs::read(kernel_elf).map_err(|e| format!("{}: {e}", kernel_elf.display()))?;
    Ok(sha2::Sha384::digest(loaded_read_only_image(&elf)?).to_vec())
}

/// Appraises the guest's evidence as the main job shows it: the simulated
/// key passed explicitly as a trust root, simulated roots tolerated (they
/// are still reported as not hardware-rooted), reports from VMPL0 only,
/// and the measurement predicted from the kernel image as the reference.
pub fn appraise_native(
    serial: &str,
    key_file: &Path,
    kernel_elf: &Path,
) -> Result<(Evidence, rivet_verifier::Appraisal), String> {
    let public = report_public_key(key_file)?;
    let evidence = guest_evidence(serial, Some(public.clone()))?;
    let measurement: String = native_measurement(kernel_elf)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut policy = rivet_verifier::Policy {
        allow_simulated_root: true,
        allowed_vmpls: Some(vec![0]),
        measurements: Some(vec![measurement]),
        ..rivet_verifier::Policy::default()
    };
    policy.add_trust_root(&public)?;
    let appraisal = rivet_verifier::appraise(&evidence, &policy);
    Ok((evidence, appraisal))
}
