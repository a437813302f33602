//! Persistent state (seeds, proofs, hierarchy auth, NV indices, clock,
//! counters, PCR allocation, saved Shutdown(STATE) data, persistent objects)
//! and its versioned blob: magic ‖ version ‖ body length ‖ SHA-256(body) ‖ body.
//! A blob is checked whole before anything is taken from it.

use alloc::vec::Vec;
use core::fmt;

use crate::crypto::HashAlg;
use crate::marshal::{Reader, Writer};

pub const MAGIC: [u8; 8] = *b"RIVETTPM";
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 32;
pub const SEED_LEN: usize = 64;

/// Why a state blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    Truncated,
    BadMagic,
    UnknownVersion(u32),
    BadChecksum,
    Malformed(&'static str),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("TPM state blob is truncated"),
            Self::BadMagic => f.write_str("not a Rivet TPM state blob (bad magic)"),
            Self::UnknownVersion(v) => write!(
                f,
                "TPM state blob version {v} is not supported (expected {VERSION})"
            ),
            Self::BadChecksum => f.write_str("TPM state blob checksum mismatch (corrupted)"),
            Self::Malformed(what) => write!(f, "TPM state blob is malformed: {what}"),
        }
    }
}

impl core::error::Error for StateError {}

/// One NV index: its public area, authValue and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvIndex {
    pub handle: u32,
    pub name_alg: HashAlg,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub data_size: u16,
    pub auth: Vec<u8>,
    pub data: Vec<u8>,
}

/// What Shutdown(STATE) saves for Startup(STATE).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SavedState {
    /// Values of the state-saved PCRs, per bank in HashAlg order, concatenated.
    pub pcrs: Vec<u8>,
    pub pcr_update_counter: u32,
    pub sh_enable: bool,
    pub eh_enable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistentState {
    pub eps: [u8; SEED_LEN],
    pub sps: [u8; SEED_LEN],
    pub pps: [u8; SEED_LEN],
    pub ph_proof: [u8; SEED_LEN],
    pub sh_proof: [u8; SEED_LEN],
    pub eh_proof: [u8; SEED_LEN],
    pub owner_auth: Vec<u8>,
    pub endorsement_auth: Vec<u8>,
    pub lockout_auth: Vec<u8>,
    pub disable_clear: bool,
    /// Dictionary-attack state.
    pub failed_tries: u32,
    pub max_tries: u32,
    pub recovery_time: u32,
    pub lockout_recovery: u32,
    pub lockout_auth_enabled: bool,
    /// Clock (ms) as last saved.
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    /// Largest value any deleted counter index had (new counters start above it).
    pub max_counter: u64,
    /// Active PCR banks (bitmask per HashAlg index, 24 bits per bank).
    pub pcr_allocated: [u32; 3],
    /// Allocation that takes effect at the next Startup(CLEAR).
    pub pcr_pending: [u32; 3],
    /// TPM_SU of the last Shutdown, or None after an unorderly stop.
    pub orderly: Option<u16>,
    pub saved: Option<SavedState>,
    pub nv: Vec<NvIndex>,
    /// Slot for persistent objects (handle, serialized object); filled by later parts.
    pub persistent_objects: Vec<(u32, Vec<u8>)>,
}

const ALL_PCRS: u32 = 0x00FF_FFFF;

impl PersistentState {
    pub fn fresh(seeds: &[[u8; SEED_LEN]; 6]) -> Self {
        Self {
            eps: seeds[0],
            sps: seeds[1],
            pps: seeds[2],
            ph_proof: seeds[3],
            sh_proof: seeds[4],
            eh_proof: seeds[5],
            owner_auth: Vec::new(),
            endorsement_auth: Vec::new(),
            lockout_auth: Vec::new(),
            disable_clear: false,
            failed_tries: 0,
            max_tries: 3,
            recovery_time: 1000,
            lockout_recovery: 1000,
            lockout_auth_enabled: true,
            clock: 0,
            reset_count: 0,
            restart_count: 0,
            max_counter: 0,
            // SHA-1 and SHA-256 banks active by default, as tpm2-tools expects.
            pcr_allocated: [ALL_PCRS, ALL_PCRS, 0],
            pcr_pending: [ALL_PCRS, ALL_PCRS, 0],
            orderly: None,
            saved: None,
            nv: Vec::new(),
            persistent_objects: Vec::new(),
        }
    }

    pub fn to_blob(&self) -> Vec<u8> {
        let mut b = Writer::new();
        for s in [
            &self.eps,
            &self.sps,
            &self.pps,
            &self.ph_proof,
            &self.sh_proof,
            &self.eh_proof,
        ] {
            b.bytes(s);
        }
        for a in [&self.owner_auth, &self.endorsement_auth, &self.lockout_auth] {
            b.tpm2b(a);
        }
        b.u8(u8::from(self.disable_clear));
        b.u32(self.failed_tries);
        b.u32(self.max_tries);
        b.u32(self.recovery_time);
        b.u32(self.lockout_recovery);
        b.u8(u8::from(self.lockout_auth_enabled));
        b.u64(self.clock);
        b.u32(self.reset_count);
        b.u32(self.restart_count);
        b.u64(self.max_counter);
        for m in self.pcr_allocated.iter().chain(self.pcr_pending.iter()) {
            b.u32(*m);
        }
        match self.orderly {
            None => b.u8(0),
            Some(t) => {
                b.u8(1);
                b.u16(t);
            }
        }
        match &self.saved {
            None => b.u8(0),
            Some(s) => {
                b.u8(1);
                b.tpm2b(&s.pcrs);
                b.u32(s.pcr_update_counter);
                b.u8(u8::from(s.sh_enable));
                b.u8(u8::from(s.eh_enable));
            }
        }
        b.u32(u32::try_from(self.nv.len()).unwrap_or(0));
        for n in &self.nv {
            b.u32(n.handle);
            b.u16(n.name_alg.id());
            b.u32(n.attributes);
            b.tpm2b(&n.auth_policy);
            b.u16(n.data_size);
            b.tpm2b(&n.auth);
            b.tpm2b(&n.data);
        }
        b.u32(u32::try_from(self.persistent_objects.len()).unwrap_or(0));
        for (h, o) in &self.persistent_objects {
            b.u32(*h);
            b.tpm2b(o);
        }
        let body = b.buf;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&HashAlg::Sha256.digest(&[&body]));
        out.extend_from_slice(&body);
        out
    }

    pub fn from_blob(blob: &[u8]) -> Result<Self, StateError> {
        let header = blob.get(..HEADER_LEN).ok_or(StateError::Truncated)?;
        if header[..8] != MAGIC {
            return Err(StateError::BadMagic);
        }
        let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if version != VERSION {
            return Err(StateError::UnknownVersion(version));
        }
        let len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        let len = usize::try_from(len).map_err(|_| StateError::Truncated)?;
        let body = blob.get(HEADER_LEN..).ok_or(StateError::Truncated)?;
        if body.len() < len {
            return Err(StateError::Truncated);
        }
        if body.len() > len {
            return Err(StateError::Malformed("trailing bytes after the body"));
        }
        if !crate::crypto::ct_eq(&HashAlg::Sha256.digest(&[body]), &header[16..48]) {
            return Err(StateError::BadChecksum);
        }
        parse_body(body).map_err(|_| StateError::Malformed("body does not parse"))
    }
}

fn parse_body(body: &[u8]) -> crate::rc::CmdResult<PersistentState> {
    use crate::rc::{self, Rc};
    let bad = || Rc::new(rc::VALUE);
    let mut r = Reader::new(body);
    let seed = |r: &mut Reader| -> crate::rc::CmdResult<[u8; SEED_LEN]> {
        let mut s = [0u8; SEED_LEN];
        s.copy_from_slice(r.bytes(SEED_LEN)?);
        Ok(s)
    };
    let (eps, sps, pps) = (seed(&mut r)?, seed(&mut r)?, seed(&mut r)?);
    let (ph_proof, sh_proof, eh_proof) = (seed(&mut r)?, seed(&mut r)?, seed(&mut r)?);
    let owner_auth = r.tpm2b(64)?.to_vec();
    let endorsement_auth = r.tpm2b(64)?.to_vec();
    let lockout_auth = r.tpm2b(64)?.to_vec();
    let disable_clear = r.yes_no()?;
    let failed_tries = r.u32()?;
    let max_tries = r.u32()?;
    let recovery_time = r.u32()?;
    let lockout_recovery = r.u32()?;
    let lockout_auth_enabled = r.yes_no()?;
    let clock = r.u64()?;
    let reset_count = r.u32()?;
    let restart_count = r.u32()?;
    let max_counter = r.u64()?;
    let mut pcr_allocated = [0u32; 3];
    let mut pcr_pending = [0u32; 3];
    for m in pcr_allocated.iter_mut().chain(pcr_pending.iter_mut()) {
        *m = r.u32()? & ALL_PCRS;
    }
    let orderly = if r.yes_no()? { Some(r.u16()?) } else { None };
    let saved = if r.yes_no()? {
        Some(SavedState {
            pcrs: r.tpm2b(usize::from(u16::MAX))?.to_vec(),
            pcr_update_counter: r.u32()?,
            sh_enable: r.yes_no()?,
            eh_enable: r.yes_no()?,
        })
    } else {
        None
    };
    let count = r.u32()?;
    let mut nv = Vec::new();
    for _ in 0..count {
        let handle = r.u32()?;
        let name_alg = HashAlg::from_id(r.u16()?).ok_or_else(bad)?;
        let attributes = r.u32()?;
        let auth_policy = r.tpm2b(64)?.to_vec();
        let data_size = r.u16()?;
        let auth = r.tpm2b(64)?.to_vec();
        let data = r.tpm2b(crate::spec::MAX_NV_INDEX_SIZE)?.to_vec();
        if data.len() != usize::from(data_size) {
            return Err(bad());
        }
        nv.push(NvIndex {
            handle,
            name_alg,
            attributes,
            auth_policy,
            data_size,
            auth,
            data,
        });
    }
    let count = r.u32()?;
    let mut persistent_objects = Vec::new();
    for _ in 0..count {
        let h = r.u32()?;
        persistent_objects.push((h, r.tpm2b(usize::from(u16::MAX))?.to_vec()));
    }
    r.finish()?;
    Ok(PersistentState {
        eps,
        sps,
        pps,
        ph_proof,
        sh_proof,
        eh_proof,
        owner_auth,
        endorsement_auth,
        lockout_auth,
        disable_clear,
        failed_tries,
        max_tries,
        recovery_time,
        lockout_recovery,
        lockout_auth_enabled,
        clock,
        reset_count,
        restart_count,
        max_counter,
        pcr_allocated,
        pcr_pending,
        orderly,
        saved,
        nv,
        persistent_objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistentState {
        let mut s = PersistentState::fresh(&[
            [1; SEED_LEN],
            [2; SEED_LEN],
            [3; SEED_LEN],
            [4; SEED_LEN],
            [5; SEED_LEN],
            [6; SEED_LEN],
        ]);
        s.owner_auth = alloc::vec![9, 9];
        s.nv.push(NvIndex {
            handle: 0x0150_0000,
            name_alg: HashAlg::Sha256,
            attributes: 0x2,
            auth_policy: Vec::new(),
            data_size: 3,
            auth: alloc::vec![1],
            data: alloc::vec![0, 0, 0],
        });
        s.saved = Some(SavedState {
            pcrs: alloc::vec![1, 2],
            pcr_update_counter: 7,
            sh_enable: true,
            eh_enable: false,
        });
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(PersistentState::from_blob(&s.to_blob()).unwrap(), s);
    }

    #[test]
    fn corrupt_and_truncated_blobs_are_refused() {
        let blob = sample().to_blob();
        for n in 0..blob.len() {
            assert!(
                PersistentState::from_blob(&blob[..n]).is_err(),
                "truncated at {n}"
            );
        }
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            PersistentState::from_blob(&bad),
            Err(StateError::BadChecksum)
        );
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert_eq!(PersistentState::from_blob(&bad), Err(StateError::BadMagic));
        let mut bad = blob.clone();
        bad[11] = 2;
        assert_eq!(
            PersistentState::from_blob(&bad),
            Err(StateError::UnknownVersion(2))
        );
        let mut bad = blob;
        bad.push(0);
        assert!(PersistentState::from_blob(&bad).is_err());
    }
}
