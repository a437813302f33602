//! Signing and verification over a digest the caller supplies, as TPM2_Sign
//! and TPM2_VerifySignature use them: RSASSA-PKCS1-v1_5, RSASSA-PSS (salt as
//! long as the digest), ECDSA on P-256/P-384 (r and s fixed-size big-endian)
//! and HMAC.

use alloc::boxed::Box;
use alloc::vec::Vec;

use rand_core::CryptoRng;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, Pss};

use super::keys::{EccCurve, EccPrivateKey, EccPublicKey, RsaPrivateKey, RsaPublicKey, per_curve};
use super::{AlgError, fixed_be};
use crate::crypto::{HashAlg, ct_eq};

/// Run `$body` with `$d` naming the RustCrypto digest type of `$hash`.
macro_rules! with_digest {
    ($hash:expr, $d:ident => $body:expr) => {
        match $hash {
            HashAlg::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            HashAlg::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            HashAlg::Sha384 => {
                type $d = sha2::Sha384;
                $body
            }
        }
    };
}
pub(crate) use with_digest;

/// DER of the DigestInfo that precedes the digest in EMSA-PKCS1-v1_5
/// (RFC 8017 §9.2 note 1).
fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    }
}

fn pkcs1v15(hash: HashAlg) -> Pkcs1v15Sign {
    Pkcs1v15Sign {
        hash_len: Some(hash.size()),
        prefix: Box::from(digest_info_prefix(hash)),
    }
}

/// RSASSA-PKCS1-v1_5 signature of `digest` (which must be `hash`'s size),
/// as long as the modulus. `rng` blinds the private operation.
pub fn rsassa_sign<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &RsaPrivateKey,
    hash: HashAlg,
    digest: &[u8],
) -> Result<Vec<u8>, AlgError> {
    if digest.len() != hash.size() {
        return Err(AlgError::Size);
    }
    key.sign_with_rng(rng, pkcs1v15(hash), digest)
        .map_err(|_| AlgError::Size)
}

pub fn rsassa_verify(
    key: &RsaPublicKey,
    hash: HashAlg,
    digest: &[u8],
    signature: &[u8],
) -> Result<(), AlgError> {
    if digest.len() != hash.size() || signature.len() != key.size() {
        return Err(AlgError::Signature);
    }
    key.verify(pkcs1v15(hash), digest, signature)
        .map_err(|_| AlgError::Signature)
}

/// The salt length the TPM signs with: the digest size, or less if the
/// modulus is too small to hold it (Part 1, RSASSA-PSS; the reference's
/// PssEncode).
fn pss_salt_len(key_bytes: usize, hash: HashAlg) -> usize {
    let h = hash.size();
    h.min(key_bytes.saturating_sub(h + 2))
}

/// RSASSA-PSS signature of `digest`, salt from `rng`, MGF1 with the same hash.
pub fn rsapss_sign<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &RsaPrivateKey,
    hash: HashAlg,
    digest: &[u8],
) -> Result<Vec<u8>, AlgError> {
    if digest.len() != hash.size() {
        return Err(AlgError::Size);
    }
    let salt = pss_salt_len(key.size(), hash);
    with_digest!(hash, D => key
        .sign_with_rng(rng, Pss::<D>::new_with_salt(salt), digest)
        .map_err(|_| AlgError::Size))
}

/// RSASSA-PSS verification with any salt length, as the TPM accepts.
pub fn rsapss_verify(
    key: &RsaPublicKey,
    hash: HashAlg,
    digest: &[u8],
    signature: &[u8],
) -> Result<(), AlgError> {
    if digest.len() != hash.size() || signature.len() != key.size() {
        return Err(AlgError::Signature);
    }
    with_digest!(hash, D => {
        let scheme = Pss::<D> {
            blinded: false,
            digest: <D as sha2::Digest>::new(),
            salt_len: None,
        };
        key.verify(scheme, digest, signature)
            .map_err(|_| AlgError::Signature)
    })
}

/// An ECDSA signature as TPMS_SIGNATURE_ECDSA carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcdsaSignature {
    pub r: Vec<u8>,
    pub s: Vec<u8>,
}

/// The digest as the integer ECDSA signs: the leftmost bits up to the order's
/// length (whole octets for P-256/P-384), a shorter digest taken as is and
/// left-padded to the field size.
fn ecdsa_z(curve: EccCurve, digest: &[u8]) -> Vec<u8> {
    let size = curve.size();
    let d = digest.get(..size.min(digest.len())).unwrap_or(&[]);
    let mut z = alloc::vec![0u8; size - d.len()];
    z.extend_from_slice(d);
    z
}

/// ECDSA signature of `digest`. The nonce is RFC 6979's, hedged with octets
/// from `rng`, so a weak RNG cannot leak the key through a repeated nonce.
pub fn ecdsa_sign<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &EccPrivateKey,
    digest: &[u8],
) -> Result<EcdsaSignature, AlgError> {
    let z = ecdsa_z(key.curve(), digest);
    per_curve!(key, EccPrivateKey, k, c => {
        use c::ecdsa::signature::hazmat::RandomizedPrehashSigner;
        let signer = c::ecdsa::SigningKey::from(k);
        let sig: c::ecdsa::Signature = signer
            .sign_prehash_with_rng(rng, &z)
            .map_err(|_| AlgError::NoResult)?;
        let (r, s) = sig.split_bytes();
        Ok(EcdsaSignature { r: r.to_vec(), s: s.to_vec() })
    })
}

/// ECDSA verification; r and s may be shorter than the field size.
pub fn ecdsa_verify(
    key: &EccPublicKey,
    digest: &[u8],
    signature: &EcdsaSignature,
) -> Result<(), AlgError> {
    let size = key.curve().size();
    let z = ecdsa_z(key.curve(), digest);
    let r = fixed_be(&signature.r, size).ok_or(AlgError::Signature)?;
    let s = fixed_be(&signature.s, size).ok_or(AlgError::Signature)?;
    per_curve!(key, EccPublicKey, k, c => {
        use c::ecdsa::signature::hazmat::PrehashVerifier;
        let r = c::FieldBytes::try_from(r.as_slice()).map_err(|_| AlgError::Signature)?;
        let s = c::FieldBytes::try_from(s.as_slice()).map_err(|_| AlgError::Signature)?;
        let sig = c::ecdsa::Signature::from_scalars(r, s).map_err(|_| AlgError::Signature)?;
        c::ecdsa::VerifyingKey::from(k)
            .verify_prehash(&z, &sig)
            .map_err(|_| AlgError::Signature)
    })
}

/// An HMAC "signature": HMAC(key, digest).
pub fn hmac_sign(hash: HashAlg, key: &[u8], digest: &[u8]) -> Vec<u8> {
    hash.hmac(key, &[digest])
}

/// Constant-time check of an HMAC signature.
pub fn hmac_verify(
    hash: HashAlg,
    key: &[u8],
    digest: &[u8],
    signature: &[u8],
) -> Result<(), AlgError> {
    if ct_eq(&hmac_sign(hash, key, digest), signature) {
        Ok(())
    } else {
        Err(AlgError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::keys::{generate_ecc, rsa_private_from_prime, rsa_public};
    use crate::alg::testing::{hex, rng};
    use std::time::Instant;

    fn flip(v: &[u8], i: usize) -> Vec<u8> {
        let mut v = v.to_vec();
        v[i] ^= 0x01;
        v
    }

    fn test_rsa() -> RsaPrivateKey {
        rsa_private_from_prime(&hex(RSA_N), 0, &hex(RSA_P)).unwrap()
    }

    // Beyond the vectors below, the outputs of rsapss_sign (salt = digest
    // size), ecdsa_sign (both curves, every hash) and rsa_encrypt (OAEP with
    // a NUL-terminated label, RSAES) were checked once with Python
    // cryptography (OpenSSL): all verified or decrypted.

    #[test]
    fn rsassa_matches_python_cryptography() {
        // A deterministic scheme: the signature is a known answer.
        let key = test_rsa();
        let digest = HashAlg::Sha256.digest(&[b"rivet"]);
        let sig = rsassa_sign(&mut rng(b"s"), &key, HashAlg::Sha256, &digest).unwrap();
        assert_eq!(sig, hex(RSASSA_SHA256_SIG));
        let public = rsa_public(&hex(RSA_N), 0).unwrap();
        rsassa_verify(&public, HashAlg::Sha256, &digest, &sig).unwrap();
        assert_eq!(
            rsassa_verify(&public, HashAlg::Sha256, &digest, &flip(&sig, 100)),
            Err(AlgError::Signature)
        );
        assert_eq!(
            rsassa_verify(&public, HashAlg::Sha256, &flip(&digest, 0), &sig),
            Err(AlgError::Signature)
        );
        assert_eq!(
            rsassa_verify(&public, HashAlg::Sha256, &digest, &sig[1..]),
            Err(AlgError::Signature)
        );
        assert_eq!(
            rsassa_sign(&mut rng(b"s"), &key, HashAlg::Sha384, &digest),
            Err(AlgError::Size)
        );
        for hash in HashAlg::ALL {
            let d = hash.digest(&[b"x"]);
            let sig = rsassa_sign(&mut rng(b"s"), &key, hash, &d).unwrap();
            rsassa_verify(&public, hash, &d, &sig).unwrap();
        }
    }

    #[test]
    fn rsapss_round_trip_and_python_vector() {
        let key = test_rsa();
        let public = rsa_public(&hex(RSA_N), 0).unwrap();
        for hash in HashAlg::ALL {
            let d = hash.digest(&[b"pss"]);
            let sig = rsapss_sign(&mut rng(b"p"), &key, hash, &d).unwrap();
            assert_eq!(sig.len(), 128);
            rsapss_verify(&public, hash, &d, &sig).unwrap();
            assert_eq!(
                rsapss_verify(&public, hash, &d, &flip(&sig, 5)),
                Err(AlgError::Signature)
            );
            assert_eq!(
                rsapss_verify(&public, hash, &flip(&d, 3), &sig),
                Err(AlgError::Signature)
            );
        }
        // Made by Python cryptography with salt_length=PSS.MAX_LENGTH (not the
        // digest size): verification recovers any salt length.
        let d = HashAlg::Sha256.digest(&[b"rivet"]);
        rsapss_verify(
            &public,
            HashAlg::Sha256,
            &d,
            &hex(RSAPSS_SHA256_MAXSALT_SIG),
        )
        .unwrap();
        assert_eq!(
            rsapss_sign(&mut rng(b"p"), &key, HashAlg::Sha256, &d[1..]),
            Err(AlgError::Size)
        );
    }

    #[test]
    fn ecdsa_round_trip_and_python_vectors() {
        for curve in EccCurve::ALL {
            let key = generate_ecc(&mut rng(b"ecdsa"), curve).unwrap();
            let public = key.public_key();
            for hash in HashAlg::ALL {
                let d = hash.digest(&[b"ecdsa"]);
                let sig = ecdsa_sign(&mut rng(b"k"), &key, &d).unwrap();
                assert_eq!((sig.r.len(), sig.s.len()), (curve.size(), curve.size()));
                ecdsa_verify(&public, &d, &sig).unwrap();
                let bad = EcdsaSignature {
                    r: sig.r.clone(),
                    s: flip(&sig.s, 7),
                };
                assert_eq!(ecdsa_verify(&public, &d, &bad), Err(AlgError::Signature));
                assert_eq!(
                    ecdsa_verify(&public, &flip(&d, 0), &sig),
                    Err(AlgError::Signature)
                );
            }
            let zero = EcdsaSignature {
                r: alloc::vec![],
                s: alloc::vec![0; 3],
            };
            assert_eq!(ecdsa_verify(&public, b"d", &zero), Err(AlgError::Signature));
            let long = EcdsaSignature {
                r: alloc::vec![1; 80],
                s: alloc::vec![1; 8],
            };
            assert_eq!(ecdsa_verify(&public, b"d", &long), Err(AlgError::Signature));
            let over = EcdsaSignature {
                r: alloc::vec![0xff; curve.size()],
                s: alloc::vec![1],
            };
            assert_eq!(ecdsa_verify(&public, b"d", &over), Err(AlgError::Signature));
        }
        // Signatures made by Python cryptography over SHA-256("rivet") with the
        // key whose scalar is below, with a P-384 digest on P-256 (truncated)
        // and a SHA-1 digest on P-384 (shorter than the order).
        let k256 = EccPrivateKey::from_scalar(EccCurve::NistP256, &hex(P256_D)).unwrap();
        let sig = EcdsaSignature {
            r: hex(P256_SHA384_R),
            s: hex(P256_SHA384_S),
        };
        ecdsa_verify(
            &k256.public_key(),
            &HashAlg::Sha384.digest(&[b"rivet"]),
            &sig,
        )
        .unwrap();
        let k384 = EccPrivateKey::from_scalar(EccCurve::NistP384, &hex(P384_D)).unwrap();
        let sig = EcdsaSignature {
            r: hex(P384_SHA1_R),
            s: hex(P384_SHA1_S),
        };
        ecdsa_verify(&k384.public_key(), &HashAlg::Sha1.digest(&[b"rivet"]), &sig).unwrap();
    }

    #[test]
    fn hmac_signatures() {
        // RFC 4231 test case 2.
        let mac = hmac_sign(HashAlg::Sha256, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        hmac_verify(
            HashAlg::Sha256,
            b"Jefe",
            b"what do ya want for nothing?",
            &mac,
        )
        .unwrap();
        assert_eq!(
            hmac_verify(
                HashAlg::Sha256,
                b"Jefe",
                b"what do ya want for nothing?",
                &flip(&mac, 31)
            ),
            Err(AlgError::Signature)
        );
        assert_eq!(
            hmac_verify(HashAlg::Sha256, b"Jefe", b"x", &mac[..31]),
            Err(AlgError::Signature)
        );
    }

    #[test]
    fn signing_speed() {
        let key =
            crate::alg::keys::derive_rsa(b"seed", HashAlg::Sha256, b"speed", 2048, 0).unwrap();
        let d = HashAlg::Sha256.digest(&[b"x"]);
        let t = Instant::now();
        for _ in 0..5 {
            rsassa_sign(&mut rng(b"s"), &key, HashAlg::Sha256, &d).unwrap();
        }
        std::println!("RSA-2048 RSASSA sign: {:?} each", t.elapsed() / 5);
        for curve in EccCurve::ALL {
            let key = generate_ecc(&mut rng(b"e"), curve).unwrap();
            let t = Instant::now();
            for _ in 0..5 {
                ecdsa_sign(&mut rng(b"k"), &key, &d).unwrap();
            }
            std::println!("{curve:?} ECDSA sign: {:?} each", t.elapsed() / 5);
        }
    }

    const RSA_N: &str = "b22fcef51a8cd58b7182a1e291ba52dd39bb4e8ec71766ac91388efbc8ff80b7b3d33190c9ee142fa128de3025017a0daa82d4a73e767b71be09f46192c986e1fe835e9ba4c46927b46b304b158448aba4b813fb6f221b2c483475a7c4d08f50c64b0ad077fe94716d130da7a59250e3dd636b53b777edf5a7f3239dc04ec5fd";
    const RSA_P: &str = "e9c3b79ff40ffbefc7742a59d64b1a0ac9685617efd8375b2ed5002d6af60504bce6d5ad009729ca8665f33857ccb10b720a55db6fcd08dc245b4f73fdf54a89";
    const RSASSA_SHA256_SIG: &str = "392cc7c969ea4a93f4244857f448a6cf8c52db9a9a82ac8478f5d0031e7c83ac534b66f59552687e0327d4a8dfc820d8499a250bb446efac96466abc01c38b9b3ed52ba905fe652719b0a5d931d38f4e03f85a647758283f4ba5a24c4a5a26e955f53c9677ce506d01d32df5490b413ae9c1a2b8a49f642e677078ba608c0609";
    const RSAPSS_SHA256_MAXSALT_SIG: &str = "38b791a3380908f5cc4854ebe435e08a4ef7c818de45432b3a42c0d62a701642bb3121f3e6cefbd1d35dd58436004aa0334e4ae468ffec8b28f22cd23d4a40eb16d580025c040aacdcf14fe5cf04856604d01e2f1be8656cd75dbedf338729beae1a75ea011ac20bca9e469a4eb21c856efe91ebea1aaa22c2c17a1bf7ddb0e8";
    const P256_D: &str = "3ebc10505cd492bb59641b1d6c4924b5231658238bb6d3b903f63848373e2c34";
    const P256_SHA384_R: &str = "8d76ec0c22469cc4752bef38f6533eb94a1fe3b886c990ded1e5837ae664af39";
    const P256_SHA384_S: &str = "ac5aa80ab5fc615de117b1bf1c1def1c5129ecfe29c6f0b5592002d5a43973e2";
    const P384_D: &str = "adad5c94ad718c750bac8e797946da8e7b715379cf48ec59fd93b16904c084e06f8e6295ed76bcdc757d628f909e0c7b";
    const P384_SHA1_R: &str = "36f4c244439ca3eef708968e358869e6459905ee6592501f8b8c61426d76517b3ed8a4a23f312519157d328f46b66c9a";
    const P384_SHA1_S: &str = "840770687fad2c0e85703fbb8f8cb754f5091b34d8f32585f5193fc1156514dd14df750f1b3f4b0adb0f72d10e3dab1b";
}
