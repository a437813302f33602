//! One file per command family (Part 3 chapters); each handler reads its
//! parameters (numbering errors with their parameter index), checks them all
//! before changing anything, then acts and writes the response parameters.

pub mod asymmetric;
pub mod attestation;
pub mod capability;
pub mod clock;
pub mod context;
pub mod credential;
pub mod duplication;
pub mod hash;
pub mod hierarchy;
pub mod nv;
pub mod object;
pub mod pcr;
pub mod policy;
pub mod random;
pub mod session;
pub mod signature;
pub mod startup;
pub mod symmetric;
pub mod testing;

use crate::crypto::HashAlg;
use crate::dispatch::Ctx;
use crate::marshal::Reader;
use crate::rc::{self, CmdResult, Rc};
use crate::spec::{alg, rh};

/// The context integrity hash (TPM_PT_CONTEXT_HASH): tickets, hierarchy authValue limit.
pub const CONTEXT_HASH: HashAlg = HashAlg::Sha384;

/// TPMI_ALG_HASH without TPM_ALG_NULL.
pub fn read_hash_alg(r: &mut Reader) -> CmdResult<HashAlg> {
    HashAlg::from_id(r.u16()?).ok_or(Rc::new(rc::HASH))
}

/// TPMI_ALG_HASH+ : None for TPM_ALG_NULL.
pub fn read_hash_alg_or_null(r: &mut Reader) -> CmdResult<Option<HashAlg>> {
    let id = r.u16()?;
    if id == alg::NULL {
        return Ok(None);
    }
    HashAlg::from_id(id).map(Some).ok_or(Rc::new(rc::HASH))
}

/// TPMI_RH_HIERARCHY+ (owner, endorsement, platform or null).
pub fn read_hierarchy_or_null(r: &mut Reader) -> CmdResult<u32> {
    let h = r.u32()?;
    match h {
        rh::OWNER | rh::ENDORSEMENT | rh::PLATFORM | rh::NULL => Ok(h),
        _ => Err(Rc::new(rc::VALUE)),
    }
}

/// Random bytes from the DRBG, reseeding from the platform when due; an
/// entropy failure puts the TPM in failure mode.
pub fn random(cx: &mut Ctx, out: &mut [u8]) -> CmdResult<()> {
    let core = &mut *cx.core;
    let Some(drbg) = core.drbg.as_mut() else {
        core.vol.failure = Some("no DRBG");
        return Err(Rc::new(rc::FAILURE));
    };
    for chunk in out.chunks_mut(crate::drbg::MAX_REQUEST) {
        if drbg.needs_reseed() {
            let mut e = [0u8; crate::drbg::SEED_LEN];
            if cx.platform.entropy(&mut e).is_err() {
                core.vol.failure = Some("entropy source");
                return Err(Rc::new(rc::FAILURE));
            }
            drbg.reseed(&e, &[]);
            zeroize::Zeroize::zeroize(&mut e);
        }
        drbg.generate(chunk);
    }
    Ok(())
}

/// The proof value of a hierarchy (for tickets).
pub fn proof(cx: &Ctx, hierarchy: u32) -> [u8; crate::state::SEED_LEN] {
    crate::hierarchy::Hierarchy::from_handle(hierarchy)
        .unwrap_or(crate::hierarchy::Hierarchy::Owner)
        .proof(cx.core)
}
