//! Authorization sessions (Part 1 §19): the loaded HMAC, policy and trial
//! sessions, their nonces, session key, symmetric algorithm and binding, and
//! the key derivations that parameter encryption uses.

use alloc::vec::Vec;
use zeroize::Zeroize;

use crate::alg::kdf::kdfa;
use crate::alg::sym::{Direction, SymMode, aes};
use crate::crypto::HashAlg;
use crate::rc::{self, CmdResult, Rc};
use crate::spec::{handle_type, ht};

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

#[derive(Default)]
pub struct Sessions {
    slots: Vec<Session>,
}

impl Sessions {
    pub fn get(&self, h: u32) -> Option<&Session> {
        self.slots.iter().find(|s| s.handle == h)
    }
    pub fn get_mut(&mut self, h: u32) -> Option<&mut Session> {
        self.slots.iter_mut().find(|s| s.handle == h)
    }
    pub fn remove(&mut self, h: u32) -> Option<Session> {
        let i = self.slots.iter().position(|s| s.handle == h)?;
        Some(self.slots.remove(i))
    }
    /// Load a new session; its handle carries the lowest free session number.
    pub fn insert(&mut self, mut s: Session) -> CmdResult<u32> {
        if self.slots.len() >= MAX_LOADED_SESSIONS {
            return Err(Rc::new(rc::SESSION_MEMORY));
        }
        let used = |i: u32| self.slots.iter().any(|x| x.handle & 0x00FF_FFFF == i);
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
    /// Loaded session handles of one type, sorted.
    pub fn handles(&self, kind: u8) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .slots
            .iter()
            .map(|s| s.handle)
            .filter(|h| handle_type(*h) == kind)
            .collect();
        v.sort_unstable();
        v
    }
    pub fn count(&self) -> usize {
        self.slots.len()
    }
}
