//! The TPM's key algorithms as pure functions: KDFa/KDFe, RSA and ECC key
//! generation (deterministic for primary keys), signing and verification,
//! RSA encryption, ECDH and AES modes. No command handling and no TPM state:
//! callers pass keys, digests and an RNG; errors are [`AlgError`] values that
//! the engine maps to TPM_RC at its edge.

// These functions take `crate::crypto::HashAlg`, which is crate-private; the
// module is `pub` so the whole API is checked by the compiler before the
// engine calls all of it.
#![allow(private_interfaces)]

pub mod asym_enc;
pub mod kdf;
pub mod keys;
pub mod sign;
pub mod sym;

use core::convert::Infallible;
use core::fmt;

pub use kdf::{KdfRng, kdfa, kdfe};
pub use keys::{EccCurve, EccPoint, EccPrivateKey, EccPublicKey, RsaPrivateKey, RsaPublicKey};

/// Why an algorithm refused its input. The comment on each variant names the
/// TPM_RC the engine should answer with (the parameter number is its business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgError {
    /// Key size, curve or symmetric key length not supported (TPM_RC_KEY_SIZE,
    /// or TPM_RC_CURVE for an unknown curve).
    KeySize,
    /// Key material is malformed or inconsistent (TPM_RC_KEY).
    Key,
    /// A new key's public exponent is below 65537 or not prime (TPM_RC_RANGE,
    /// as the reference's CryptRsaGenerateKey answers).
    Exponent,
    /// An input has the wrong length for the operation (TPM_RC_SIZE).
    Size,
    /// An input value is out of range or its padding is wrong (TPM_RC_VALUE).
    Value,
    /// A signature did not verify (TPM_RC_SIGNATURE).
    Signature,
    /// A point is not on the curve, or is the identity (TPM_RC_ECC_POINT).
    EccPoint,
    /// The scheme cannot be used with this key and hash, e.g. a digest too
    /// long for the modulus (TPM_RC_SCHEME).
    Scheme,
    /// The computation produced no usable value, e.g. the point at infinity
    /// (TPM_RC_NO_RESULT).
    NoResult,
}

impl fmt::Display for AlgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::KeySize => "unsupported key size",
            Self::Key => "malformed key",
            Self::Exponent => "unusable public exponent",
            Self::Size => "input has the wrong size",
            Self::Value => "input value out of range",
            Self::Signature => "signature does not verify",
            Self::EccPoint => "point not on the curve",
            Self::Scheme => "scheme not usable with this key",
            Self::NoResult => "no result",
        };
        f.write_str(s)
    }
}

impl core::error::Error for AlgError {}

/// An RNG for this module from any byte source, e.g. the engine's DRBG:
/// `FnRng(|b: &mut [u8]| drbg.generate(b))`. Requests are split into chunks
/// of at most [`FnRng::MAX_CHUNK`] bytes, well inside any DRBG's request limit.
pub struct FnRng<F: FnMut(&mut [u8])>(pub F);

impl<F: FnMut(&mut [u8])> FnRng<F> {
    pub const MAX_CHUNK: usize = 4096;
}

impl<F: FnMut(&mut [u8])> rand_core::TryRng for FnRng<F> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        (self.0)(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        (self.0)(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(Self::MAX_CHUNK) {
            (self.0)(chunk);
        }
        Ok(())
    }
}

impl<F: FnMut(&mut [u8])> rand_core::TryCryptoRng for FnRng<F> {}

/// Big-endian `bytes` as exactly `len` bytes: left-padded with zeros, or with
/// leading zero bytes removed. None if the value needs more than `len` bytes.
pub(crate) fn fixed_be(bytes: &[u8], len: usize) -> Option<alloc::vec::Vec<u8>> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let value = bytes.get(first..)?;
    if value.len() > len {
        return None;
    }
    let mut out = alloc::vec![0u8; len];
    out.get_mut(len - value.len()..)?.copy_from_slice(value);
    Some(out)
}

#[cfg(test)]
pub(crate) mod testing {
    use alloc::vec::Vec;

    /// Hex to bytes for test vectors; panics on bad input (tests only).
    pub fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// A deterministic RNG for tests.
    pub fn rng(tag: &[u8]) -> super::KdfRng {
        super::KdfRng::new(crate::crypto::HashAlg::Sha256, b"test rng", tag, &[], &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    /// Arbitrary bytes into every entry point: errors, never panics.
    #[test]
    fn garbage_inputs_never_panic() {
        use crate::crypto::HashAlg;
        use asym_enc::{RsaEncScheme, ecdh_zgen, rsa_decrypt, rsa_encrypt};
        use keys::{generate_ecc, rsa_private_from_prime, rsa_public};
        use sign::*;
        use sym::{Direction, SymMode, aes};

        let mut g = testing::rng(b"garbage");
        let mut bytes = |n: usize| {
            let mut v = alloc::vec![0u8; n];
            g.fill(&mut v);
            v
        };
        let rsa = keys::generate_rsa(&mut testing::rng(b"k"), 1024, 0).unwrap();
        let n = keys::rsa_modulus(rsa.as_ref());
        let ecc = generate_ecc(&mut testing::rng(b"k"), EccCurve::NistP256).unwrap();
        for len in [
            0usize, 1, 15, 16, 17, 31, 32, 33, 48, 64, 127, 128, 129, 256, 513,
        ] {
            let junk = bytes(len);
            let _ = rsa_public(&junk, 3);
            let _ = rsa_private_from_prime(&n, 0, &junk);
            let _ = rsa_private_from_prime(&junk, 0, &junk);
            let point = EccPoint {
                x: junk.clone(),
                y: bytes(len),
            };
            for curve in EccCurve::ALL {
                let _ = EccPublicKey::from_point(curve, &point);
                let _ = EccPrivateKey::from_scalar(curve, &junk);
            }
            let _ = ecdh_zgen(&ecc, &point);
            let sig = EcdsaSignature {
                r: junk.clone(),
                s: bytes(len),
            };
            let _ = ecdsa_verify(&ecc.public_key(), &junk, &sig);
            let _ = ecdsa_sign(&mut testing::rng(b"s"), &ecc, &junk);
            for hash in HashAlg::ALL {
                let _ = rsassa_verify(rsa.as_ref(), hash, &junk, &junk);
                let _ = rsapss_verify(rsa.as_ref(), hash, &junk, &junk);
                let _ = rsassa_sign(&mut testing::rng(b"s"), &rsa, hash, &junk);
                let _ = rsapss_sign(&mut testing::rng(b"s"), &rsa, hash, &junk);
                let _ = hmac_verify(hash, &junk, &junk, &junk);
                let _ = kdf::kdfe(hash, &junk, &junk, &junk, &junk, len as u32);
            }
            for scheme in [
                RsaEncScheme::Oaep(HashAlg::Sha384),
                RsaEncScheme::RsaEs,
                RsaEncScheme::Null,
            ] {
                let _ = rsa_encrypt(&mut testing::rng(b"e"), rsa.as_ref(), scheme, &junk, &junk);
                let _ = rsa_decrypt(&mut testing::rng(b"d"), &rsa, scheme, &junk, &junk);
            }
            for mode in [
                SymMode::Cfb,
                SymMode::Cbc,
                SymMode::Ctr,
                SymMode::Ecb,
                SymMode::Ofb,
            ] {
                for dir in [Direction::Encrypt, Direction::Decrypt] {
                    let _ = aes(dir, mode, &junk, &junk, &junk);
                    let _ = aes(dir, mode, &junk[..len.min(32)], &junk[..len.min(16)], &junk);
                }
            }
        }
    }

    #[test]
    fn fixed_be_pads_and_strips() {
        assert_eq!(fixed_be(&[1, 2], 4).unwrap(), [0, 0, 1, 2]);
        assert_eq!(fixed_be(&[0, 0, 0, 1, 2], 3).unwrap(), [0, 1, 2]);
        assert_eq!(fixed_be(&[], 2).unwrap(), [0, 0]);
        assert!(fixed_be(&[1, 2, 3], 2).is_none());
    }

    #[test]
    fn fn_rng_chunks_large_requests() {
        let mut calls = 0usize;
        let mut buf = [0u8; 10_000];
        FnRng(|b: &mut [u8]| {
            assert!(b.len() <= FnRng::<fn(&mut [u8])>::MAX_CHUNK);
            b.fill(7);
            calls += 1;
        })
        .fill_bytes(&mut buf);
        assert!(buf.iter().all(|&b| b == 7));
        assert_eq!(calls, 3);
    }
}
