//! Asymmetric encryption as TPM2_RSA_Encrypt/RSA_Decrypt and TPM2_ECDH_KeyGen
//! /ECDH_ZGen use it: RSA with OAEP, RSAES-PKCS1-v1_5 or no padding
//! (TPM_ALG_NULL), and ECDH giving the whole shared point.

use alloc::vec::Vec;

use crypto_bigint::BoxedUint;
use rand_core::CryptoRng;
use rsa::hazmat;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Encrypt};

use super::keys::{
    EccPoint, EccPrivateKey, EccPublicKey, RsaPrivateKey, RsaPublicKey, affine_xy, generate_ecc,
};
use super::sign::with_digest;
use super::{AlgError, fixed_be};
use crate::crypto::HashAlg;

/// The padding of an RSA encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaEncScheme {
    /// RSAES-OAEP with this hash for the label and MGF1.
    Oaep(HashAlg),
    /// RSAES-PKCS1-v1_5.
    RsaEs,
    /// TPM_ALG_NULL: the bare RSA operation on the input, left-padded to the
    /// modulus size.
    Null,
}

/// The TPM's rule for an OAEP label (IsLabelProperlyFormatted): empty, or
/// ending in its NUL, which is then part of the label that is hashed. A label
/// without one is TPM_RC_VALUE.
pub fn label_is_well_formed(label: &[u8]) -> bool {
    label.last().is_none_or(|&b| b == 0)
}

fn oaep<D>(label: &[u8]) -> Oaep<D>
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    if label.is_empty() {
        Oaep::<D>::new()
    } else {
        Oaep::<D>::new_with_label(label)
    }
}

/// Encrypt `message` to `key`. A message too long for the scheme, a
/// malformed label, or (for Null) a value not below the modulus is
/// [`AlgError::Value`]. The result is exactly the modulus size.
pub fn rsa_encrypt<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &RsaPublicKey,
    scheme: RsaEncScheme,
    label: &[u8],
    message: &[u8],
) -> Result<Vec<u8>, AlgError> {
    let k = key.size();
    match scheme {
        RsaEncScheme::Oaep(hash) => {
            if !label_is_well_formed(label) || message.len() + 2 * hash.size() + 2 > k {
                return Err(AlgError::Value);
            }
            with_digest!(hash, D => key.encrypt(rng, oaep::<D>(label), message))
                .map_err(|_| AlgError::Value)
        }
        RsaEncScheme::RsaEs => {
            if message.len() + 11 > k {
                return Err(AlgError::Value);
            }
            key.encrypt(rng, Pkcs1v15Encrypt, message)
                .map_err(|_| AlgError::Value)
        }
        RsaEncScheme::Null => {
            // Leading zeros beyond the modulus size are allowed (the
            // reference strips them); the value must still be below n.
            let m = fixed_be(message, k).ok_or(AlgError::Value)?;
            let n = key.n().as_ref();
            let m =
                BoxedUint::from_be_slice(&m, n.bits_precision()).map_err(|_| AlgError::Value)?;
            if m >= *n {
                return Err(AlgError::Value);
            }
            let c = hazmat::rsa_encrypt(key, &m).map_err(|_| AlgError::Value)?;
            fixed_be(&c.to_be_bytes(), k).ok_or(AlgError::Value)
        }
    }
}

/// Decrypt `ciphertext` (exactly the modulus size, and below the modulus:
/// else [`AlgError::Size`]). Bad OAEP padding or a malformed label is
/// [`AlgError::Value`]. `rng` blinds the private operation. For Null the
/// result is the whole modulus-sized value.
///
/// RSAES-PKCS1-v1_5 deliberately differs from the reference: bad padding
/// gives a deterministic synthetic message (implicit rejection, as `rsa`
/// 0.10 does against Bleichenbacher/Marvin oracles), not TPM_RC_VALUE.
pub fn rsa_decrypt<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &RsaPrivateKey,
    scheme: RsaEncScheme,
    label: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, AlgError> {
    let k = key.size();
    if ciphertext.len() != k {
        return Err(AlgError::Size);
    }
    let n = key.n().as_ref();
    let c = BoxedUint::from_be_slice(ciphertext, n.bits_precision()).map_err(|_| AlgError::Size)?;
    if c >= *n {
        return Err(AlgError::Size);
    }
    match scheme {
        RsaEncScheme::Oaep(hash) => {
            if !label_is_well_formed(label) {
                return Err(AlgError::Value);
            }
            with_digest!(hash, D => key.decrypt_blinded(rng, oaep::<D>(label), ciphertext))
                .map_err(|_| AlgError::Value)
        }
        RsaEncScheme::RsaEs => key
            .decrypt_blinded(rng, Pkcs1v15Encrypt, ciphertext)
            .map_err(|_| AlgError::Value),
        RsaEncScheme::Null => {
            let m =
                hazmat::rsa_decrypt_and_check(key, Some(rng), &c).map_err(|_| AlgError::Value)?;
            fixed_be(&m.to_be_bytes(), k).ok_or(AlgError::Value)
        }
    }
}

/// ECDH_ZGen: the shared point d·P. `point` is checked to be on the key's
/// curve and not the identity ([`AlgError::EccPoint`]).
pub fn ecdh_zgen(key: &EccPrivateKey, point: &EccPoint) -> Result<EccPoint, AlgError> {
    let peer = EccPublicKey::from_point(key.curve(), point)?;
    let shared = match (key, &peer) {
        (EccPrivateKey::P256(d), EccPublicKey::P256(q)) => {
            affine_xy!(
                p256,
                (q.to_projective() * *d.to_nonzero_scalar()).to_affine()
            )
        }
        (EccPrivateKey::P384(d), EccPublicKey::P384(q)) => {
            affine_xy!(
                p384,
                (q.to_projective() * *d.to_nonzero_scalar()).to_affine()
            )
        }
        _ => None,
    };
    shared.ok_or(AlgError::NoResult)
}

/// ECDH_KeyGen: a fresh ephemeral key pair (dₑ, Qₑ) on `peer`'s curve; returns
/// (zPoint = dₑ·Q_peer, pubPoint = Qₑ).
pub fn ecdh_keygen<R: CryptoRng + ?Sized>(
    rng: &mut R,
    peer: &EccPublicKey,
) -> Result<(EccPoint, EccPoint), AlgError> {
    let ephemeral = generate_ecc(rng, peer.curve())?;
    let z = ecdh_zgen(&ephemeral, &peer.point())?;
    Ok((z, ephemeral.public_point()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::keys::{EccCurve, generate_ecc, rsa_private_from_prime, rsa_public};
    use crate::alg::testing::{hex, rng};

    fn test_rsa() -> RsaPrivateKey {
        rsa_private_from_prime(&hex(RSA_N), 0, &hex(RSA_P)).unwrap()
    }

    #[test]
    fn oaep_decrypts_python_ciphertext_with_tpm_label() {
        // Python cryptography, OAEP(MGF1(SHA256), SHA256, label=b"IDENTITY\0").
        let key = test_rsa();
        let m = rsa_decrypt(
            &mut rng(b"d"),
            &key,
            RsaEncScheme::Oaep(HashAlg::Sha256),
            b"IDENTITY\0",
            &hex(OAEP_SHA256_IDENTITY_CT),
        )
        .unwrap();
        assert_eq!(m, b"secret seed");
        // Without the NUL the label differs, and a label must carry one.
        assert_eq!(
            rsa_decrypt(
                &mut rng(b"d"),
                &key,
                RsaEncScheme::Oaep(HashAlg::Sha256),
                b"IDENTITY",
                &hex(OAEP_SHA256_IDENTITY_CT),
            ),
            Err(AlgError::Value)
        );
        assert_eq!(
            rsa_decrypt(
                &mut rng(b"d"),
                &key,
                RsaEncScheme::Oaep(HashAlg::Sha256),
                b"OTHER\0",
                &hex(OAEP_SHA256_IDENTITY_CT),
            ),
            Err(AlgError::Value)
        );
    }

    #[test]
    fn rsa_round_trips_every_scheme() {
        let key = test_rsa();
        let public = rsa_public(&hex(RSA_N), 0).unwrap();
        let schemes = [
            RsaEncScheme::Oaep(HashAlg::Sha1),
            RsaEncScheme::Oaep(HashAlg::Sha256),
            RsaEncScheme::Oaep(HashAlg::Sha384),
            RsaEncScheme::RsaEs,
        ];
        for scheme in schemes {
            for label in [&b""[..], b"DUPLICATE\0"] {
                let c = rsa_encrypt(&mut rng(b"e"), &public, scheme, label, b"hello").unwrap();
                assert_eq!(c.len(), 128);
                let m = rsa_decrypt(&mut rng(b"d"), &key, scheme, label, &c).unwrap();
                assert_eq!(m, b"hello");
                let mut bad = c.clone();
                bad[60] ^= 0x10;
                let tampered = rsa_decrypt(&mut rng(b"d"), &key, scheme, label, &bad);
                if scheme == RsaEncScheme::RsaEs {
                    // Implicit rejection: a deterministic synthetic message,
                    // not an error that would be a padding oracle.
                    let again = rsa_decrypt(&mut rng(b"x"), &key, scheme, label, &bad);
                    assert_eq!(tampered, again);
                    assert_ne!(tampered.unwrap(), b"hello");
                } else {
                    assert_eq!(tampered, Err(AlgError::Value));
                }
            }
        }
        // Message too long: OAEP-SHA384 holds 128 - 98 = 30 octets, RSAES 117.
        let s384 = RsaEncScheme::Oaep(HashAlg::Sha384);
        assert!(rsa_encrypt(&mut rng(b"e"), &public, s384, b"", &[1; 30]).is_ok());
        assert_eq!(
            rsa_encrypt(&mut rng(b"e"), &public, s384, b"", &[1; 31]),
            Err(AlgError::Value)
        );
        assert!(rsa_encrypt(&mut rng(b"e"), &public, RsaEncScheme::RsaEs, b"", &[1; 117]).is_ok());
        assert_eq!(
            rsa_encrypt(&mut rng(b"e"), &public, RsaEncScheme::RsaEs, b"", &[1; 118]),
            Err(AlgError::Value)
        );
        assert_eq!(
            rsa_encrypt(&mut rng(b"e"), &public, s384, b"no nul", b"x"),
            Err(AlgError::Value)
        );
    }

    #[test]
    fn raw_rsa_is_modular_exponentiation() {
        let key = test_rsa();
        let public = rsa_public(&hex(RSA_N), 0).unwrap();
        // 2^65537 mod n computed with Python pow(2, 65537, n).
        let c = rsa_encrypt(&mut rng(b"e"), &public, RsaEncScheme::Null, b"", &[2]).unwrap();
        assert_eq!(c, hex(RAW_2_POW_E));
        let m = rsa_decrypt(&mut rng(b"d"), &key, RsaEncScheme::Null, b"", &c).unwrap();
        let mut two = alloc::vec![0u8; 128];
        two[127] = 2;
        assert_eq!(m, two);
        // Leading zeros beyond the modulus size are fine; values >= n are not.
        let mut padded = alloc::vec![0u8; 10];
        padded.push(2);
        assert_eq!(
            rsa_encrypt(&mut rng(b"e"), &public, RsaEncScheme::Null, b"", &padded).unwrap(),
            c
        );
        let n = hex(RSA_N);
        assert_eq!(
            rsa_encrypt(&mut rng(b"e"), &public, RsaEncScheme::Null, b"", &n),
            Err(AlgError::Value)
        );
        assert_eq!(
            rsa_encrypt(&mut rng(b"e"), &public, RsaEncScheme::Null, b"", &[1; 129]),
            Err(AlgError::Value)
        );
        // Ciphertext of the wrong size, or not below n.
        assert_eq!(
            rsa_decrypt(&mut rng(b"d"), &key, RsaEncScheme::Null, b"", &c[1..]),
            Err(AlgError::Size)
        );
        assert_eq!(
            rsa_decrypt(&mut rng(b"d"), &key, RsaEncScheme::Null, b"", &[0xff; 128]),
            Err(AlgError::Size)
        );
        assert_eq!(
            rsa_decrypt(&mut rng(b"d"), &key, RsaEncScheme::RsaEs, b"", &n),
            Err(AlgError::Size)
        );
    }

    #[test]
    fn ecdh_agrees_and_checks_points() {
        for curve in EccCurve::ALL {
            let a = generate_ecc(&mut rng(b"a"), curve).unwrap();
            let (z, qe) = ecdh_keygen(&mut rng(b"eph"), &a.public_key()).unwrap();
            assert_eq!(ecdh_zgen(&a, &qe).unwrap(), z);
            assert_eq!((z.x.len(), z.y.len()), (curve.size(), curve.size()));
            let mut off = qe.clone();
            off.x[0] ^= 0x40;
            assert_eq!(ecdh_zgen(&a, &off), Err(AlgError::EccPoint));
            let empty = EccPoint {
                x: alloc::vec![],
                y: alloc::vec![],
            };
            assert_eq!(ecdh_zgen(&a, &empty), Err(AlgError::EccPoint));
        }
        // A P-384 point given to a P-256 key is not on its curve.
        let a = generate_ecc(&mut rng(b"a"), EccCurve::NistP256).unwrap();
        let b = generate_ecc(&mut rng(b"b"), EccCurve::NistP384).unwrap();
        assert_eq!(ecdh_zgen(&a, &b.public_point()), Err(AlgError::EccPoint));
        // Python cryptography: the shared x of the two P-256 keys below.
        let d1 = EccPrivateKey::from_scalar(EccCurve::NistP256, &hex(ECDH_D1)).unwrap();
        let d2 = EccPrivateKey::from_scalar(EccCurve::NistP256, &hex(ECDH_D2)).unwrap();
        let z = ecdh_zgen(&d1, &d2.public_point()).unwrap();
        assert_eq!(z.x, hex(ECDH_SHARED_X));
        assert_eq!(ecdh_zgen(&d2, &d1.public_point()).unwrap(), z);
    }

    const RSA_N: &str = "b22fcef51a8cd58b7182a1e291ba52dd39bb4e8ec71766ac91388efbc8ff80b7b3d33190c9ee142fa128de3025017a0daa82d4a73e767b71be09f46192c986e1fe835e9ba4c46927b46b304b158448aba4b813fb6f221b2c483475a7c4d08f50c64b0ad077fe94716d130da7a59250e3dd636b53b777edf5a7f3239dc04ec5fd";
    const RSA_P: &str = "e9c3b79ff40ffbefc7742a59d64b1a0ac9685617efd8375b2ed5002d6af60504bce6d5ad009729ca8665f33857ccb10b720a55db6fcd08dc245b4f73fdf54a89";
    const OAEP_SHA256_IDENTITY_CT: &str = "0c9d03c2a4c6718e9aa4e2c08565d3c499b73eb851c74e2af9abb35d0884a416b5aad5424a47cf2fd38d3b172879172f71f8facdfc7018d4f530905aef5d3b89ac4471804deb8f1fe33b3374706a2614f5c9f3cac23f77a0075d799869b02077385c13f4e07e210dff3ce767057aa5b0c4c50e10c1b8584436e0cfc9a53a65cc";
    const RAW_2_POW_E: &str = "ada1af4c49f0467aee4c0586cc36f45035870d380283d5d41a19630cef2babf1bc1c3061f13259a6f00cc2ec768c6cd882444374a6ed76ebcf65936b490b2ceee154885bf74b440494c3c42c904d35427b122f169c3036529887939dfd0effd2b629478a75e680a1c1c1aeb8f1bed2b5f72e05ba3d4ea1d0657efb901902cd2e";
    const ECDH_D1: &str = "d4b63d705650934bbef11a37596cae0c045ff01f01417c4b17587587ca55513c";
    const ECDH_D2: &str = "abeb18dd34e92b447b1e777aa635e1172cc93d2495e37ae8190d67946fa02ce0";
    const ECDH_SHARED_X: &str = "284b9831f4736df8041786d4ab1427e435e1175ca405b323ee555bedbfa3b1d7";
}
