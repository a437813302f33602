//! Hashing (SHA-1, SHA-256, SHA-384) behind one enum so commands can pick the
//! algorithm at run time, and HMAC for tickets.

use alloc::vec::Vec;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Digest;

use crate::spec::alg;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
}

impl HashAlg {
    pub const ALL: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384];

    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            alg::SHA1 => Some(Self::Sha1),
            alg::SHA256 => Some(Self::Sha256),
            alg::SHA384 => Some(Self::Sha384),
            _ => None,
        }
    }
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => alg::SHA1,
            Self::Sha256 => alg::SHA256,
            Self::Sha384 => alg::SHA384,
        }
    }
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
        }
    }
    pub fn index(self) -> usize {
        match self {
            Self::Sha1 => 0,
            Self::Sha256 => 1,
            Self::Sha384 => 2,
        }
    }
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut h = Hasher::new(self);
        for p in parts {
            h.update(p);
        }
        h.finish()
    }
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        macro_rules! run {
            ($t:ty) => {{
                let mut m =
                    <Hmac<$t> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            Self::Sha1 => run!(sha1::Sha1),
            Self::Sha256 => run!(sha2::Sha256),
            Self::Sha384 => run!(sha2::Sha384),
        }
    }
}

/// A running hash (sequence objects, event sequences).
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
}

impl Hasher {
    pub fn new(alg: HashAlg) -> Self {
        match alg {
            HashAlg::Sha1 => Self::Sha1(sha1::Sha1::new()),
            HashAlg::Sha256 => Self::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Self::Sha384(sha2::Sha384::new()),
        }
    }
    pub fn alg(&self) -> HashAlg {
        match self {
            Self::Sha1(_) => HashAlg::Sha1,
            Self::Sha256(_) => HashAlg::Sha256,
            Self::Sha384(_) => HashAlg::Sha384,
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
        }
    }
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha384(h) => h.finalize().to_vec(),
        }
    }
    /// The running state (for ContextSave of sequence objects).
    pub fn save(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        match self {
            Self::Sha1(h) => h.serialize().to_vec(),
            Self::Sha256(h) => h.serialize().to_vec(),
            Self::Sha384(h) => h.serialize().to_vec(),
        }
    }
    /// A hasher from [`Hasher::save`]'s bytes; None if they do not fit.
    pub fn restore(alg: HashAlg, state: &[u8]) -> Option<Self> {
        use sha2::digest::common::hazmat::SerializableState;
        Some(match alg {
            HashAlg::Sha1 => Self::Sha1(sha1::Sha1::deserialize(state.try_into().ok()?).ok()?),
            HashAlg::Sha256 => {
                Self::Sha256(sha2::Sha256::deserialize(state.try_into().ok()?).ok()?)
            }
            HashAlg::Sha384 => {
                Self::Sha384(sha2::Sha384::deserialize(state.try_into().ok()?).ok()?)
            }
        })
    }
}

/// Known-answer tests run by SelfTest; false puts the TPM in failure mode.
pub fn self_test() -> bool {
    // FIPS 180 "abc" vectors, first bytes.
    let abc = b"abc";
    let s1 = HashAlg::Sha1.digest(&[abc]);
    let s256 = HashAlg::Sha256.digest(&[abc]);
    let s384 = HashAlg::Sha384.digest(&[abc]);
    // RFC 4231 test case 2.
    let mac = HashAlg::Sha256.hmac(b"Jefe", &[b"what do ya want for nothing?"]);
    s1.starts_with(&[0xa9, 0x99, 0x3e, 0x36])
        && s256.starts_with(&[0xba, 0x78, 0x16, 0xbf])
        && s384.starts_with(&[0xcb, 0x00, 0x75, 0x3f])
        && mac.starts_with(&[0x5b, 0xdc, 0xc1, 0x46])
}

/// Constant-time comparison of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An authValue with its trailing zeros removed (Part 1, 19.6.4.3 / 19.6.5).
pub fn trim_auth(a: &[u8]) -> &[u8] {
    let n = a.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    a.get(..n).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kat_passes_and_sizes_match() {
        assert!(self_test());
        for a in HashAlg::ALL {
            assert_eq!(a.digest(&[b"x"]).len(), a.size());
            assert_eq!(HashAlg::from_id(a.id()), Some(a));
        }
        assert_eq!(trim_auth(&[1, 0, 2, 0, 0]), &[1, 0, 2]);
        assert!(ct_eq(b"ab", b"ab") && !ct_eq(b"ab", b"abc"));
    }
}
