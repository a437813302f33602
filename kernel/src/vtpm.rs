//! The vTPM inside the SVSM: the engine from `rivet-tpm` on the kernel's
//! entropy (RDSEED, else RDRAND; checked and retried, never weakened) and
//! clock. State lives in SVSM memory for the life of the VM; this platform
//! has no persistent store for it yet. At boot it gets its EKs, persistent
//! AKs, and (when the platform can make reports) the certificates of
//! [`crate::certs`] in NV.

use alloc::vec::Vec;

use rivet_tpm::{Platform, PlatformError, Tpm, client};

use crate::cpu::instr::{cpuid, rdrand, rdseed};
use crate::cpu::time;
use crate::protocols::TpmBackend;

/// How often a value is asked for before the source counts as failed.
const RETRIES: usize = 1000;

/// The kernel's services for the TPM engine.
pub struct KernelTpmPlatform {
    rdseed: bool,
    rdrand: bool,
}

impl KernelTpmPlatform {
    /// Checks which hardware random sources the CPU has.
    pub fn new() -> Self {
        Self {
            rdseed: cpuid(7, 0).ebx & (1 << 18) != 0,
            rdrand: cpuid(1, 0).ecx & (1 << 30) != 0,
        }
    }

    fn random_u64(&self) -> Option<u64> {
        if self.rdseed {
            for _ in 0..RETRIES {
                if let Some(v) = rdseed() {
                    return Some(v);
                }
                core::hint::spin_loop();
            }
        }
        if self.rdrand {
            for _ in 0..RETRIES {
                if let Some(v) = rdrand() {
                    return Some(v);
                }
                core::hint::spin_loop();
            }
        }
        None
    }
}

impl Default for KernelTpmPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for KernelTpmPlatform {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError> {
        for chunk in buf.chunks_mut(8) {
            let v = self.random_u64().ok_or(PlatformError(
                "no hardware entropy (RDSEED/RDRAND missing or failing)",
            ))?;
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }

    fn now_ms(&mut self) -> u64 {
        time::now_ms()
    }

    fn commit(&mut self, _state: &[u8]) -> Result<(), PlatformError> {
        // The state stays in SVSM memory; nothing outlives the VM yet.
        Ok(())
    }
}

/// Persistent handle of the ECC P-256 attestation key the SVSM makes at boot.
pub const AK_ECC_HANDLE: u32 = 0x8101_8000;
/// Persistent handle of the RSA-2048 attestation key the SVSM makes at boot.
pub const AK_RSA_HANDLE: u32 = 0x8101_8001;

/// Kinds of keys in the vTPM manifest version 1.
pub mod manifest_kind {
    /// EK, RSA-2048, template L-1.
    pub const EK_RSA: u16 = 1;
    /// EK, ECC P-256, template L-2.
    pub const EK_ECC: u16 = 2;
    /// AK, ECC P-256, ECDSA-SHA256.
    pub const AK_ECC: u16 = 3;
    /// AK, RSA-2048, RSASSA-SHA256.
    pub const AK_RSA: u16 = 4;
}

/// The engine as the vTPM protocol drives it, with the keys the SVSM made
/// at boot (public areas: TPMT_PUBLIC without a size prefix).
pub struct Vtpm {
    tpm: Tpm<KernelTpmPlatform>,
    /// EK, RSA-2048 (template L-1).
    pub ek_rsa: Vec<u8>,
    /// EK, ECC P-256 (template L-2).
    pub ek_ecc: Vec<u8>,
    /// AK, ECC P-256, at [`AK_ECC_HANDLE`].
    pub ak_ecc: Vec<u8>,
    /// AK, RSA-2048, at [`AK_RSA_HANDLE`].
    pub ak_rsa: Vec<u8>,
}

impl Vtpm {
    /// The vTPM manifest version 1: `u16 version = 1, u16 count`, then per
    /// key `u16 kind, u32 persistent handle (0: none), u16 size, TPMT_PUBLIC`
    /// (all big-endian, as TPM structures are): both EKs and both AKs.
    pub fn manifest_v1(&self) -> Vec<u8> {
        let keys = [
            (manifest_kind::EK_RSA, 0, &self.ek_rsa),
            (manifest_kind::EK_ECC, 0, &self.ek_ecc),
            (manifest_kind::AK_ECC, AK_ECC_HANDLE, &self.ak_ecc),
            (manifest_kind::AK_RSA, AK_RSA_HANDLE, &self.ak_rsa),
        ];
        let mut m = Vec::new();
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(keys.len() as u16).to_be_bytes());
        for (kind, handle, public) in keys {
            m.extend_from_slice(&kind.to_be_bytes());
            m.extend_from_slice(&handle.to_be_bytes());
            m.extend_from_slice(&(public.len() as u16).to_be_bytes());
            m.extend_from_slice(public);
        }
        m
    }
}

impl TpmBackend for Vtpm {
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        self.tpm.execute(locality, command)
    }

    fn service_manifest(&mut self, version: u32) -> Option<Vec<u8>> {
        match version {
            // Version 0 (SVSM specification): the EK from the default RSA template.
            0 => Some(self.ek_rsa.clone()),
            1 => Some(self.manifest_v1()),
            _ => None,
        }
    }
}

/// Why the vTPM could not be brought up.
#[derive(Debug)]
pub enum VtpmError {
    /// The engine refused to manufacture.
    Manufacture(rivet_tpm::Error),
    /// A boot command failed: which, and its response code.
    Command(&'static str, u32),
    /// A response did not parse.
    Malformed(&'static str),
    /// The EK/AK certificates could not be made or stored.
    Certificates(crate::certs::CertError),
}

impl core::fmt::Display for VtpmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Manufacture(e) => write!(f, "manufacture: {e}"),
            Self::Command(what, rc) => write!(f, "{what}: TPM_RC {rc:#x}"),
            Self::Malformed(what) => write!(f, "{what}: malformed response"),
            Self::Certificates(e) => write!(f, "certificates: {e}"),
        }
    }
}

/// Runs one command built by `rivet_tpm::client`; a response other than
/// success is the named command's error.
fn run(
    tpm: &mut Tpm<KernelTpmPlatform>,
    what: &'static str,
    command: &[u8],
) -> Result<Vec<u8>, VtpmError> {
    let r = tpm.execute(0, command);
    match client::response_code(&r) {
        Some(0) => Ok(r),
        Some(rc) => Err(VtpmError::Command(what, rc)),
        None => Err(VtpmError::Malformed(what)),
    }
}

/// CreatePrimary in the endorsement hierarchy: returns (handle, TPMT_PUBLIC).
fn create_primary(
    tpm: &mut Tpm<KernelTpmPlatform>,
    template: &[u8],
) -> Result<(u32, Vec<u8>), VtpmError> {
    let r = run(
        tpm,
        "CreatePrimary",
        &client::create_primary(client::ENDORSEMENT, template),
    )?;
    let primary = client::parse_create_primary(&r).ok_or(VtpmError::Malformed("CreatePrimary"))?;
    Ok((primary.handle, primary.public))
}

fn flush(tpm: &mut Tpm<KernelTpmPlatform>, handle: u32) -> Result<(), VtpmError> {
    run(tpm, "FlushContext", &client::flush_context(handle)).map(drop)
}

impl Vtpm {
    /// Times `n` Quotes (ECDSA P-256 AK, SHA-256 PCRs 0-9) run on the engine
    /// inside the SVSM, without the guest round trip; returns TSC ticks. The
    /// AK is flushed again, so the guest finds the TPM as before.
    pub fn bench_quotes(&mut self, n: u32) -> Result<u64, VtpmError> {
        let (handle, _) = create_primary(&mut self.tpm, &client::ak_ecc_p256_template())?;
        // SHA-256 (0x000B) PCRs 0-9, as the guest quotes them.
        let quote = client::quote(handle, &[7; 32], &[(0x000B, 0x3FF)]);
        // One untimed Quote first: under TCG the first run of any code pays
        // for its translation (the guest's timed Quotes follow one too).
        run(&mut self.tpm, "Quote", &quote)?;
        let start = crate::cpu::instr::rdtsc();
        for _ in 0..n {
            run(&mut self.tpm, "Quote", &quote)?;
        }
        let ticks = crate::cpu::instr::rdtsc() - start;
        flush(&mut self.tpm, handle)?;
        Ok(ticks)
    }
}

/// Makes the per-boot binding key, gets a platform report binding it, and
/// issues and stores the certificates of [`crate::certs`]. Ok(false): the
/// platform makes no reports (e.g. no simulated key from the host), so there
/// are no certificates; the binding key is dropped (zeroized) either way.
fn provision_certificates(
    tpm: &mut Tpm<KernelTpmPlatform>,
    publics: [&[u8]; 4],
) -> Result<bool, VtpmError> {
    use crate::certs::{self, CertError};
    use crate::platform::PlatformKind;
    let Some(platform) = crate::platform::current() else {
        return Ok(false);
    };
    let mut entropy = KernelTpmPlatform::new();
    let key = certs::BindingKey::generate(|b| entropy.entropy(b).map_err(|_| CertError::Entropy))
        .map_err(VtpmError::Certificates)?;
    // A report of whatever length the platform makes (a TDX quote is larger
    // than a page).
    let report = match platform.attestation_report_vec(&key.report_data()) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("no platform report for the binding key ({e}): no EK/AK certificates");
            return Ok(false);
        }
    };
    let format = match platform.kind() {
        PlatformKind::Tdp => certs::FORMAT_TDX,
        PlatformKind::Native | PlatformKind::Snp => certs::FORMAT_SNP,
    };
    let mut serial = [0u8; 16];
    entropy
        .entropy(&mut serial)
        .map_err(|_| VtpmError::Certificates(CertError::Entropy))?;
    let identity =
        certs::read_identity(&mut |c| tpm.execute(0, c)).map_err(VtpmError::Certificates)?;
    let issued = certs::issue(&key, format, &report, serial, publics, &identity)
        .map_err(VtpmError::Certificates)?;
    drop(key);
    certs::write_to_nv(&issued, &mut |c| tpm.execute(0, c)).map_err(VtpmError::Certificates)?;
    Ok(true)
}

/// Manufactures the TPM (fresh seeds from hardware entropy), starts it,
/// creates the EKs from the default templates and the AKs (made persistent
/// at [`AK_ECC_HANDLE`] and [`AK_RSA_HANDLE`]), so that the attestation
/// manifest can carry them all, and provisions their certificates
/// ([`provision_certificates`]). The guest's own TPM2_Startup then gets TPM_RC_INITIALIZE,
/// as on any TPM its firmware already started.
pub fn manufacture() -> Result<Vtpm, VtpmError> {
    let mut tpm = Tpm::manufacture(KernelTpmPlatform::new()).map_err(VtpmError::Manufacture)?;
    // TPM2_Startup(CLEAR): no client builder for it, and it is 12 bytes.
    run(
        &mut tpm,
        "Startup",
        &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0],
    )?;
    let mut eks = [Vec::new(), Vec::new()];
    for (slot, template) in eks.iter_mut().zip([
        client::ek_rsa2048_template(),
        client::ek_ecc_p256_template(),
    ]) {
        let (handle, public) = create_primary(&mut tpm, &template)?;
        flush(&mut tpm, handle)?;
        *slot = public;
    }
    let [ek_rsa, ek_ecc] = eks;
    let mut aks = [Vec::new(), Vec::new()];
    for (slot, (template, persistent)) in aks.iter_mut().zip([
        (client::ak_ecc_p256_template(), AK_ECC_HANDLE),
        (client::ak_rsa2048_template(), AK_RSA_HANDLE),
    ]) {
        let (handle, public) = create_primary(&mut tpm, &template)?;
        run(
            &mut tpm,
            "EvictControl",
            &client::evict_control(handle, persistent),
        )?;
        flush(&mut tpm, handle)?;
        *slot = public;
    }
    let [ak_ecc, ak_rsa] = aks;
    let started = time::now_ms();
    if provision_certificates(&mut tpm, [&ek_rsa, &ek_ecc, &ak_ecc, &ak_rsa])? {
        log::info!(
            "binding key, report and EK/AK certificates in NV (0x{:08x}, 0x{:08x}, 0x{:08x}, 0x{:08x}, 0x{:08x}) in {} ms",
            crate::certs::nv_index::EK_RSA_CERT,
            crate::certs::nv_index::EK_ECC_CERT,
            crate::certs::nv_index::AK_ECC_CERT,
            crate::certs::nv_index::AK_RSA_CERT,
            crate::certs::nv_index::BINDING_CERT,
            time::now_ms() - started
        );
    }
    Ok(Vtpm {
        tpm,
        ek_rsa,
        ek_ecc,
        ak_ecc,
        ak_rsa,
    })
}
