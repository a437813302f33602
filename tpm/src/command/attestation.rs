//! Attestation commands (Part 3 §18): Quote, Certify, CertifyCreation, GetTime.

use alloc::vec::Vec;

use crate::Core;
use crate::crypto::HashAlg;
use crate::pcr::Selection;
use crate::spec::PCR_COUNT;

/// H(selected PCR values in selection order); unallocated PCRs are dropped
/// from the selection first.
pub fn pcr_digest(core: &Core, h: HashAlg, sel: &mut [Selection]) -> Vec<u8> {
    let banks = &core.vol.pcrs;
    let mut hasher = crate::crypto::Hasher::new(h);
    for s in sel.iter_mut() {
        for pcr in 0..PCR_COUNT {
            let bit = 1u32 << pcr;
            if s.bits & bit == 0 {
                continue;
            }
            if !banks.is_allocated(s.alg, pcr) {
                s.bits &= !bit;
                continue;
            }
            hasher.update(banks.get(s.alg, pcr));
        }
    }
    hasher.finish()
}
