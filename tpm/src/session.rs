//! Authorization sessions (Part 1 §19): the loaded HMAC, policy and trial
//! sessions, their nonces, session key, symmetric algorithm and binding, and
//! the key derivations that parameter encryption uses.

use alloc::vec::Vec;
use zeroize::Zeroize;

use crate::alg::kdf::kdfa;
use crate::alg::sym::{Direction, SymMode, aes};
use crate::crypto::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::rc::{self, CmdResult, Rc};
use crate::spec::ht;

/// At most this many sessions are loaded at once (TPM_RC_SESSION_MEMORY beyond).
pub const MAX_LOADED_SESSIONS: usize = 3;
/// Session handles are 0x02xxxxxx (HMAC) and 0x03xxxxxx (policy); at most
/// this many are active (loaded or saved) at once.
pub const MAX_ACTIVE_SESSIONS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hmac,
    Policy,
    Trial,
}

/// The session's parameter-encryption algorithm (TPMT_SYM_DEF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symmetric {
    Null,
    Xor(HashAlg),
    /// AES in CFB mode with this many key bits.
    AesCfb(u16),
}

/// What policy commands asserted in a policy session, checked when the
/// session authorizes (Part 3 §23).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// PolicyCommandCode: the only command the session may authorize.
    pub command_code: Option<u32>,
    /// PolicyLocality: the localities (TPMA_LOCALITY) it may be used at.
    pub locality: Option<u8>,
    /// PolicyPCR: pcrUpdateCounter when the PCRs were checked.
    pub pcr_counter: Option<u32>,
    /// PolicyAuthValue: the entity's authValue keys the HMAC.
    pub auth_value_needed: bool,
    /// PolicyPassword: the HMAC field carries the authValue in the clear.
    pub password_needed: bool,
    /// PolicySecret with cpHashA: the only command parameters allowed.
    pub cp_hash: Option<Vec<u8>>,
    /// PolicySecret with an expiration: Clock (ms) after which the session fails.
    pub timeout: Option<u64>,
    /// PolicyNvWritten: the TPMA_NV_WRITTEN state the NV index must have.
    pub nv_written: Option<bool>,
    /// PolicyNameHash / PolicyDuplicationSelect: H(Name1 ‖ Name2 ‖ …) of the
    /// handles the session may be used with.
    pub name_hash: Option<Vec<u8>>,
    /// PolicyTemplate: H(TPMT_PUBLIC) the created object's template must have.
    pub template_hash: Option<Vec<u8>>,
    /// PolicyPhysicalPresence: physical presence must be asserted.
    pub pp_required: bool,
}

pub struct Session {
    pub handle: u32,
    pub kind: Kind,
    pub hash: HashAlg,
    pub key: Vec<u8>,
    pub nonce_tpm: Vec<u8>,
    pub symmetric: Symmetric,
    /// The bind entity and its authValue when the session started.
    pub bind: Option<(u32, Vec<u8>)>,
    /// Bound to a DA-protected entity: HMAC failures count against DA.
    pub da_bound: bool,
    /// Bound to lockoutAuth: failures count as lockout failures.
    pub lockout_bound: bool,
    pub policy_digest: Vec<u8>,
    pub policy: PolicyState,
    /// Used as an audit session (isAudit), with its session audit digest.
    pub audit: bool,
    pub audit_digest: Vec<u8>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl Session {
    /// Is the session bound to `handle` whose authValue is now `auth`? A
    /// bound session leaves the bind entity's authValue out of its HMAC.
    pub fn bound_to(&self, handle: u32, auth: &[u8]) -> bool {
        self.bind
            .as_ref()
            .is_some_and(|(h, a)| *h == handle && crate::crypto::ct_eq(a, auth))
    }

    /// policyDigest := H(policyDigest ‖ parts…).
    pub fn extend_policy(&mut self, parts: &[&[u8]]) {
        let mut all: Vec<&[u8]> = alloc::vec![&self.policy_digest];
        all.extend_from_slice(parts);
        self.policy_digest = self.hash.digest(&all);
    }

    /// PolicyRestart: the initial policy state.
    pub fn restart_policy(&mut self) {
        self.policy_digest = alloc::vec![0; self.hash.size()];
        self.policy = PolicyState::default();
    }

    /// Encrypt or decrypt the contents of a TPM2B parameter in place (Part 1
    /// §21): XOR with a KDFa mask, or AES-CFB with key and IV from KDFa.
    pub fn crypt(
        &self,
        auth: &[u8],
        newer: &[u8],
        older: &[u8],
        data: &mut [u8],
        encrypt: bool,
    ) -> CmdResult<()> {
        let mut key = self.key.clone();
        key.extend_from_slice(auth);
        let bits = |n: usize| {
            u32::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(8))
                .ok_or(Rc::new(rc::SIZE))
        };
        let result = match self.symmetric {
            Symmetric::Null => Err(Rc::new(rc::SYMMETRIC)),
            Symmetric::Xor(h) => {
                let mask = kdfa(h, &key, b"XOR", newer, older, bits(data.len())?)
                    .map_err(|_| Rc::new(rc::SIZE))?;
                data.iter_mut().zip(mask.iter()).for_each(|(d, m)| *d ^= m);
                Ok(())
            }
            Symmetric::AesCfb(key_bits) => {
                let key_len = usize::from(key_bits / 8);
                let mut kv = kdfa(
                    self.hash,
                    &key,
                    b"CFB",
                    newer,
                    older,
                    u32::from(key_bits) + 128,
                )
                .map_err(|_| Rc::new(rc::SIZE))?;
                let (k, iv) = kv.split_at(key_len.min(kv.len()));
                let dir = if encrypt {
                    Direction::Encrypt
                } else {
                    Direction::Decrypt
                };
                let out = aes(dir, SymMode::Cfb, k, iv, data).map_err(|_| Rc::new(rc::SIZE));
                kv.zeroize();
                let out = out?;
                data.copy_from_slice(out.data.get(..data.len()).ok_or(Rc::new(rc::SIZE))?);
                Ok(())
            }
        };
        key.zeroize();
        result
    }
}

// Used by ContextSave/ContextLoad (command/context.rs, the keys part).
#[allow(dead_code)]
impl Session {
    /// The session's state as a blob for a context save (unprotected: the
    /// context layer adds integrity and confidentiality).
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.handle);
        w.u8(match self.kind {
            Kind::Hmac => 0,
            Kind::Policy => 1,
            Kind::Trial => 3,
        });
        w.u16(self.hash.id());
        w.tpm2b(&self.key);
        w.tpm2b(&self.nonce_tpm);
        match self.symmetric {
            Symmetric::Null => w.u8(0),
            Symmetric::Xor(h) => {
                w.u8(1);
                w.u16(h.id());
            }
            Symmetric::AesCfb(bits) => {
                w.u8(2);
                w.u16(bits);
            }
        }
        match &self.bind {
            None => w.u8(0),
            Some((h, auth)) => {
                w.u8(1);
                w.u32(*h);
                w.tpm2b(auth);
            }
        }
        w.u8(u8::from(self.da_bound));
        w.u8(u8::from(self.lockout_bound));
        w.tpm2b(&self.policy_digest);
        let p = &self.policy;
        let opt32 = |w: &mut Writer, v: Option<u32>| match v {
            None => w.u8(0),
            Some(x) => {
                w.u8(1);
                w.u32(x);
            }
        };
        opt32(&mut w, p.command_code);
        opt32(&mut w, p.locality.map(u32::from));
        opt32(&mut w, p.pcr_counter);
        w.u8(u8::from(p.auth_value_needed));
        w.u8(u8::from(p.password_needed));
        match &p.cp_hash {
            None => w.u8(0),
            Some(c) => {
                w.u8(1);
                w.tpm2b(c);
            }
        }
        match p.timeout {
            None => w.u8(0),
            Some(t) => {
                w.u8(1);
                w.u64(t);
            }
        }
        w.u8(match p.nv_written {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        for h in [&p.name_hash, &p.template_hash] {
            match h {
                None => w.u8(0),
                Some(c) => {
                    w.u8(1);
                    w.tpm2b(c);
                }
            }
        }
        w.u8(u8::from(p.pp_required));
        w.u8(u8::from(self.audit));
        w.tpm2b(&self.audit_digest);
        w.buf
    }

    fn from_bytes(b: &[u8]) -> CmdResult<Self> {
        let mut r = Reader::new(b);
        let bad = || Rc::new(rc::VALUE);
        let handle = r.u32()?;
        let kind = match r.u8()? {
            0 => Kind::Hmac,
            1 => Kind::Policy,
            3 => Kind::Trial,
            _ => return Err(bad()),
        };
        let hash = HashAlg::from_id(r.u16()?).ok_or_else(bad)?;
        let key = r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec();
        let nonce_tpm = r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec();
        let symmetric = match r.u8()? {
            0 => Symmetric::Null,
            1 => Symmetric::Xor(HashAlg::from_id(r.u16()?).ok_or_else(bad)?),
            2 => Symmetric::AesCfb(r.u16()?),
            _ => return Err(bad()),
        };
        let bind = if r.yes_no()? {
            Some((r.u32()?, r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec()))
        } else {
            None
        };
        let da_bound = r.yes_no()?;
        let lockout_bound = r.yes_no()?;
        let policy_digest = r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec();
        let opt32 = |r: &mut Reader| -> CmdResult<Option<u32>> {
            if r.yes_no()? {
                Ok(Some(r.u32()?))
            } else {
                Ok(None)
            }
        };
        let command_code = opt32(&mut r)?;
        let locality = opt32(&mut r)?.map(|l| u8::try_from(l).unwrap_or(0));
        let pcr_counter = opt32(&mut r)?;
        let policy = PolicyState {
            command_code,
            locality,
            pcr_counter,
            auth_value_needed: r.yes_no()?,
            password_needed: r.yes_no()?,
            cp_hash: if r.yes_no()? {
                Some(r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec())
            } else {
                None
            },
            timeout: if r.yes_no()? { Some(r.u64()?) } else { None },
            nv_written: match r.u8()? {
                0 => None,
                1 => Some(false),
                2 => Some(true),
                _ => return Err(bad()),
            },
            name_hash: if r.yes_no()? {
                Some(r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec())
            } else {
                None
            },
            template_hash: if r.yes_no()? {
                Some(r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec())
            } else {
                None
            },
            pp_required: r.yes_no()?,
        };
        let audit = r.yes_no()?;
        let audit_digest = r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec();
        r.finish()?;
        Ok(Self {
            policy,
            handle,
            kind,
            hash,
            key,
            nonce_tpm,
            symmetric,
            bind,
            da_bound,
            lockout_bound,
            policy_digest,
            audit,
            audit_digest,
        })
    }
}

/// TPM_PT_CONTEXT_GAP_MAX: how far the context counter may run ahead of the
/// oldest saved session before ContextSave must refuse (Part 1, "Context
/// Management": the gap is what lets a TPM keep only the low bits of each
/// saved session's counter).
pub const CONTEXT_GAP_MAX: u64 = 0xFFFF;

/// Loaded sessions, and the handles of active sessions whose context was
/// saved (each with the sequence number of its latest save).
#[derive(Default)]
pub struct Sessions {
    slots: Vec<Session>,
    saved: Vec<(u32, u64)>,
    next_sequence: u64,
    /// The exclusive audit session (g_exclusiveAuditSession), if any.
    pub exclusive_audit: Option<u32>,
}

impl Sessions {
    pub fn get(&self, h: u32) -> Option<&Session> {
        self.slots.iter().find(|s| s.handle == h)
    }
    pub fn get_mut(&mut self, h: u32) -> Option<&mut Session> {
        self.slots.iter_mut().find(|s| s.handle == h)
    }
    /// Flush a loaded or saved session.
    pub fn remove(&mut self, h: u32) -> Option<()> {
        if self.exclusive_audit == Some(h) {
            self.exclusive_audit = None;
        }
        if let Some(i) = self.slots.iter().position(|s| s.handle == h) {
            self.slots.remove(i);
            return Some(());
        }
        let i = self.saved.iter().position(|(x, _)| *x == h)?;
        self.saved.remove(i);
        Some(())
    }
    /// Load a new session; its handle carries the lowest free session number.
    pub fn insert(&mut self, mut s: Session) -> CmdResult<u32> {
        if self.slots.len() >= MAX_LOADED_SESSIONS {
            return Err(Rc::new(rc::SESSION_MEMORY));
        }
        if self.active() >= MAX_ACTIVE_SESSIONS {
            return Err(Rc::new(rc::SESSION_HANDLES));
        }
        let used = |i: u32| {
            self.slots.iter().any(|x| x.handle & 0x00FF_FFFF == i)
                || self.saved.iter().any(|(h, _)| h & 0x00FF_FFFF == i)
        };
        let index = (0u32..).find(|i| !used(*i)).unwrap_or(0);
        let kind = if s.kind == Kind::Hmac {
            ht::HMAC_SESSION
        } else {
            ht::POLICY_SESSION
        };
        s.handle = (u32::from(kind) << 24) | index;
        let h = s.handle;
        self.slots.push(s);
        Ok(h)
    }
    #[allow(dead_code)] // for ContextSave
    /// Context save: the session leaves RAM but stays active; returns the
    /// save's sequence number and the session state.
    pub fn save(&mut self, h: u32) -> CmdResult<(u64, Vec<u8>)> {
        let i = self
            .slots
            .iter()
            .position(|s| s.handle == h)
            .ok_or(Rc::new(rc::HANDLE))?;
        // The oldest saved session must be loaded (or flushed) before the
        // counter may run further ahead of it.
        if let Some(oldest) = self.saved.iter().map(|(_, q)| *q).min()
            && self.next_sequence.wrapping_sub(oldest) >= CONTEXT_GAP_MAX
        {
            return Err(Rc::new(rc::CONTEXT_GAP));
        }
        let blob = self.slots.remove(i).to_bytes();
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.saved.push((h, sequence));
        Ok((sequence, blob))
    }
    #[allow(dead_code)] // for ContextLoad
    /// Context load: only the latest save of an active session loads, once.
    pub fn load(&mut self, sequence: u64, blob: &[u8]) -> CmdResult<u32> {
        let s = Session::from_bytes(blob)?;
        let i = self
            .saved
            .iter()
            .position(|(h, q)| *h == s.handle && *q == sequence)
            .ok_or(Rc::new(rc::HANDLE))?;
        if self.slots.len() >= MAX_LOADED_SESSIONS {
            return Err(Rc::new(rc::SESSION_MEMORY));
        }
        self.saved.remove(i);
        let h = s.handle;
        self.slots.push(s);
        Ok(h)
    }
    /// Handles for TPM_CAP_HANDLES: loaded (TPM_HT_LOADED_SESSION) or saved
    /// (TPM_HT_SAVED_SESSION) sessions, by session number.
    pub fn handles(&self, saved: bool) -> Vec<u32> {
        let mut v: Vec<u32> = if saved {
            self.saved.iter().map(|(h, _)| *h).collect()
        } else {
            self.slots.iter().map(|s| s.handle).collect()
        };
        v.sort_unstable_by_key(|h| h & 0x00FF_FFFF);
        v
    }
    /// Loaded sessions.
    pub fn count(&self) -> usize {
        self.slots.len()
    }
    /// Active sessions: loaded or saved.
    pub fn active(&self) -> usize {
        self.slots.len() + self.saved.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(kind: Kind) -> Session {
        Session {
            handle: 0,
            kind,
            hash: HashAlg::Sha256,
            key: alloc::vec![1; 32],
            nonce_tpm: alloc::vec![2; 32],
            symmetric: Symmetric::AesCfb(128),
            bind: Some((0x4000_0001, alloc::vec![3])),
            da_bound: false,
            lockout_bound: false,
            policy_digest: alloc::vec![0; 32],
            policy: PolicyState {
                command_code: Some(0x15D),
                locality: Some(3),
                pcr_counter: None,
                auth_value_needed: true,
                password_needed: false,
                cp_hash: Some(alloc::vec![5; 32]),
                timeout: Some(99),
                nv_written: Some(true),
                name_hash: Some(alloc::vec![6; 32]),
                template_hash: Some(alloc::vec![7; 32]),
                pp_required: true,
            },
            audit: true,
            audit_digest: alloc::vec![8; 32],
        }
    }

    #[test]
    fn save_and_load_once() {
        let mut s = Sessions::default();
        let a = s.insert(session(Kind::Hmac)).unwrap();
        let b = s.insert(session(Kind::Policy)).unwrap();
        assert_eq!((a, b), (0x0200_0000, 0x0300_0001));
        let (q1, blob1) = s.save(a).unwrap();
        assert!(s.get(a).is_none());
        assert_eq!(s.handles(true), [a]);
        // A new session does not reuse a saved session's number.
        let c = s.insert(session(Kind::Hmac)).unwrap();
        assert_eq!(c, 0x0200_0002);
        assert_eq!((s.count(), s.active()), (2, 3));
        assert_eq!(s.load(q1, &blob1).unwrap(), a);
        assert_eq!(s.get(a).map(|x| x.key.clone()), Some(alloc::vec![1; 32]));
        assert_eq!(
            s.get(a).map(|x| x.policy.clone()),
            Some(session(Kind::Hmac).policy.clone())
        );
        // Replaying the same context, or an older one, fails.
        assert_eq!(s.load(q1, &blob1), Err(Rc::new(rc::HANDLE)));
        let (q2, _) = s.save(a).unwrap();
        assert_eq!(s.load(q1, &blob1), Err(Rc::new(rc::HANDLE)));
        assert!(q2 > q1);
        assert_eq!(
            s.load(q2, &blob1[..blob1.len() - 1]),
            Err(Rc::new(rc::INSUFFICIENT))
        );
        assert_eq!(s.remove(a), Some(()));
        assert_eq!(s.active(), 2);
    }

    #[test]
    fn context_gap_is_refused_until_the_oldest_session_loads() {
        let mut s = Sessions::default();
        let old = s.insert(session(Kind::Hmac)).unwrap();
        let busy = s.insert(session(Kind::Hmac)).unwrap();
        let (q_old, blob_old) = s.save(old).unwrap();
        for _ in 0..CONTEXT_GAP_MAX - 1 {
            let (q, blob) = s.save(busy).unwrap();
            assert_eq!(s.load(q, &blob).unwrap(), busy);
        }
        assert_eq!(s.save(busy), Err(Rc::new(rc::CONTEXT_GAP)));
        assert!(
            s.get(busy).is_some(),
            "a refused save leaves the session loaded"
        );
        assert_eq!(s.load(q_old, &blob_old).unwrap(), old);
        assert!(
            s.save(busy).is_ok(),
            "with the oldest loaded the gap is gone"
        );
    }
}
