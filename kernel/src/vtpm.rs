//! The vTPM inside the SVSM: the engine from `rivet-tpm` on the kernel's
//! entropy (RDSEED, else RDRAND; checked and retried, never weakened) and
//! clock. State lives in SVSM memory for the life of the VM; this platform
//! has no persistent store for it yet.

use alloc::vec::Vec;

use rivet_tpm::{Platform, PlatformError, Tpm};

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
}

impl core::fmt::Display for VtpmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Manufacture(e) => write!(f, "manufacture: {e}"),
            Self::Command(what, rc) => write!(f, "{what}: TPM_RC {rc:#x}"),
            Self::Malformed(what) => write!(f, "{what}: malformed response"),
        }
    }
}

/// The EK templates' authPolicy: PolicySecret(TPM_RH_ENDORSEMENT), SHA-256.
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];
/// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00B2;

/// TPMT_PUBLIC of the TCG EK Credential Profile template L-1 (RSA 2048).
pub fn ek_template_rsa() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&0x0001u16.to_be_bytes()); // TPM_ALG_RSA
    t.extend_from_slice(&0x000Bu16.to_be_bytes()); // nameAlg SHA-256
    t.extend_from_slice(&EK_ATTRIBUTES.to_be_bytes());
    t.extend_from_slice(&32u16.to_be_bytes());
    t.extend_from_slice(&EK_POLICY);
    t.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // AES-128-CFB
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // scheme NULL
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes()); // exponent: default
    t.extend_from_slice(&256u16.to_be_bytes());
    t.extend_from_slice(&[0; 256]);
    t
}

/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
const AK_ATTRIBUTES: u32 = 0x0005_0072;

/// TPMT_PUBLIC of the ECC P-256 attestation key (ECDSA, SHA-256).
pub fn ak_template_ecc() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&0x0023u16.to_be_bytes());
    t.extend_from_slice(&0x000Bu16.to_be_bytes());
    t.extend_from_slice(&AK_ATTRIBUTES.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes()); // no policy
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric NULL
    t.extend_from_slice(&[0x00, 0x18, 0x00, 0x0B]); // ECDSA, SHA-256
    t.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
    t.extend_from_slice(&[0, 0, 0, 0]); // empty unique
    t
}

/// TPMT_PUBLIC of the RSA-2048 attestation key (RSASSA, SHA-256).
pub fn ak_template_rsa() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&0x0001u16.to_be_bytes());
    t.extend_from_slice(&0x000Bu16.to_be_bytes());
    t.extend_from_slice(&AK_ATTRIBUTES.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes());
    t.extend_from_slice(&0x0010u16.to_be_bytes());
    t.extend_from_slice(&[0x00, 0x14, 0x00, 0x0B]); // RSASSA, SHA-256
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes()); // empty unique
    t
}

/// TPMT_PUBLIC of the TCG EK Credential Profile template L-2 (ECC NIST P-256).
pub fn ek_template_ecc() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    t.extend_from_slice(&0x000Bu16.to_be_bytes());
    t.extend_from_slice(&EK_ATTRIBUTES.to_be_bytes());
    t.extend_from_slice(&32u16.to_be_bytes());
    t.extend_from_slice(&EK_POLICY);
    t.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]);
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // scheme NULL
    t.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
    t.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
    t.extend_from_slice(&32u16.to_be_bytes());
    t.extend_from_slice(&[0; 32]);
    t.extend_from_slice(&32u16.to_be_bytes());
    t.extend_from_slice(&[0; 32]);
    t
}

fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(10 + body.len());
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(body);
    c
}

fn response_code(r: &[u8]) -> u32 {
    r.get(6..10)
        .and_then(|b| b.try_into().ok())
        .map_or(u32::MAX, u32::from_be_bytes)
}

/// CreatePrimary in the endorsement hierarchy: returns (handle, TPMT_PUBLIC).
fn create_primary(
    tpm: &mut Tpm<KernelTpmPlatform>,
    template: &[u8],
) -> Result<(u32, Vec<u8>), VtpmError> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x4000_000Bu32.to_be_bytes()); // TPM_RH_ENDORSEMENT
    body.extend_from_slice(&9u32.to_be_bytes()); // password session, empty
    body.extend_from_slice(&0x4000_0009u32.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0]);
    body.extend_from_slice(&4u16.to_be_bytes()); // inSensitive: empty auth and data
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(&(template.len() as u16).to_be_bytes());
    body.extend_from_slice(template);
    body.extend_from_slice(&0u16.to_be_bytes()); // outsideInfo
    body.extend_from_slice(&0u32.to_be_bytes()); // creationPCR: none
    let r = tpm.execute(0, &command(0x8002, 0x131, &body));
    match response_code(&r) {
        0 => {}
        rc => return Err(VtpmError::Command("CreatePrimary", rc)),
    }
    // header, handle, parameterSize, TPM2B_PUBLIC outPublic
    let handle = r.get(10..14).ok_or(VtpmError::Malformed("CreatePrimary"))?;
    let handle = u32::from_be_bytes(
        handle
            .try_into()
            .map_err(|_| VtpmError::Malformed("CreatePrimary"))?,
    );
    let size = r.get(18..20).ok_or(VtpmError::Malformed("CreatePrimary"))?;
    let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
    let public = r
        .get(20..20 + size)
        .ok_or(VtpmError::Malformed("CreatePrimary"))?;
    Ok((handle, public.to_vec()))
}

/// EvictControl(TPM_RH_OWNER): makes `object` persistent at `persistent`.
fn evict_control(
    tpm: &mut Tpm<KernelTpmPlatform>,
    object: u32,
    persistent: u32,
) -> Result<(), VtpmError> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x4000_0001u32.to_be_bytes()); // TPM_RH_OWNER
    body.extend_from_slice(&object.to_be_bytes());
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&0x4000_0009u32.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0]);
    body.extend_from_slice(&persistent.to_be_bytes());
    let r = tpm.execute(0, &command(0x8002, 0x120, &body));
    match response_code(&r) {
        0 => Ok(()),
        rc => Err(VtpmError::Command("EvictControl", rc)),
    }
}

fn flush(tpm: &mut Tpm<KernelTpmPlatform>, handle: u32) -> Result<(), VtpmError> {
    let r = tpm.execute(0, &command(0x8001, 0x165, &handle.to_be_bytes()));
    match response_code(&r) {
        0 => Ok(()),
        rc => Err(VtpmError::Command("FlushContext", rc)),
    }
}

impl Vtpm {
    /// Times `n` Quotes (ECDSA P-256 AK, SHA-256 PCRs 0-9) run on the engine
    /// inside the SVSM, without the guest round trip; returns TSC ticks. The
    /// AK is flushed again, so the guest finds the TPM as before.
    pub fn bench_quotes(&mut self, n: u32) -> Result<u64, VtpmError> {
        let template = ak_template_ecc();
        let (handle, _) = create_primary(&mut self.tpm, &template)?;
        let mut body = handle.to_be_bytes().to_vec();
        body.extend_from_slice(&9u32.to_be_bytes());
        body.extend_from_slice(&0x4000_0009u32.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        body.extend_from_slice(&32u16.to_be_bytes());
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0x00, 0x10, 0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0x03, 0]);
        let quote = command(0x8002, 0x158, &body);
        // One untimed Quote first: under TCG the first run of any code pays
        // for its translation (the guest's timed Quotes follow one too).
        let r = self.tpm.execute(0, &quote);
        if response_code(&r) != 0 {
            return Err(VtpmError::Command("Quote", response_code(&r)));
        }
        let start = crate::cpu::instr::rdtsc();
        for _ in 0..n {
            let r = self.tpm.execute(0, &quote);
            if response_code(&r) != 0 {
                return Err(VtpmError::Command("Quote", response_code(&r)));
            }
        }
        let ticks = crate::cpu::instr::rdtsc() - start;
        flush(&mut self.tpm, handle)?;
        Ok(ticks)
    }
}

/// Manufactures the TPM (fresh seeds from hardware entropy), starts it,
/// creates the EKs from the default templates and the AKs (made persistent
/// at [`AK_ECC_HANDLE`] and [`AK_RSA_HANDLE`]), so that the attestation
/// manifest can carry them all. The guest's own TPM2_Startup then gets TPM_RC_INITIALIZE,
/// as on any TPM its firmware already started.
pub fn manufacture() -> Result<Vtpm, VtpmError> {
    let mut tpm = Tpm::manufacture(KernelTpmPlatform::new()).map_err(VtpmError::Manufacture)?;
    let r = tpm.execute(0, &command(0x8001, 0x144, &0u16.to_be_bytes()));
    match response_code(&r) {
        0 => {}
        rc => return Err(VtpmError::Command("Startup", rc)),
    }
    let mut eks = [Vec::new(), Vec::new()];
    for (slot, template) in eks.iter_mut().zip([ek_template_rsa(), ek_template_ecc()]) {
        let (handle, public) = create_primary(&mut tpm, &template)?;
        flush(&mut tpm, handle)?;
        *slot = public;
    }
    let [ek_rsa, ek_ecc] = eks;
    let mut aks = [Vec::new(), Vec::new()];
    for (slot, (template, persistent)) in aks.iter_mut().zip([
        (ak_template_ecc(), AK_ECC_HANDLE),
        (ak_template_rsa(), AK_RSA_HANDLE),
    ]) {
        let (handle, public) = create_primary(&mut tpm, &template)?;
        evict_control(&mut tpm, handle, persistent)?;
        flush(&mut tpm, handle)?;
        *slot = public;
    }
    let [ak_ecc, ak_rsa] = aks;
    Ok(Vtpm {
        tpm,
        ek_rsa,
        ek_ecc,
        ak_ecc,
        ak_rsa,
    })
}
