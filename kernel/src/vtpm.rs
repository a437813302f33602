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

/// The engine as the vTPM protocol drives it.
pub struct Vtpm(pub Tpm<KernelTpmPlatform>);

impl TpmBackend for Vtpm {
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        self.0.execute(locality, command)
    }
}

/// Manufactures the TPM (fresh seeds from hardware entropy).
pub fn manufacture() -> Result<Vtpm, rivet_tpm::Error> {
    Tpm::manufacture(KernelTpmPlatform::new()).map(Vtpm)
}
