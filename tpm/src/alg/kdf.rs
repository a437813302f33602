//! KDFa (SP 800-108 counter mode with HMAC, TPM Part 1 §11.4.10.2), KDFe
//! (SP 800-56A concatenation KDF, Part 1 §11.4.10.3), and [`KdfRng`], the
//! KDFa-keyed byte stream that makes primary keys deterministic.

use alloc::vec::Vec;
use core::convert::Infallible;

use zeroize::{Zeroize, Zeroizing};

use super::AlgError;
use crate::crypto::{HashAlg, Hasher};

/// The separator rule shared by KDFa and KDFe, as the reference code applies
/// it: the label is followed by one 0x00 unless it already ends in one (so
/// "STORAGE" and "STORAGE\0" give the same key), and an empty label is just
/// the 0x00.
fn label_needs_nul(label: &[u8]) -> bool {
    label.last() != Some(&0)
}

/// Zero the bits of the first octet above `bits` (Part 1: a result whose
/// size is not a whole number of octets has its excess high bits cleared).
fn mask_leading(out: &mut [u8], bits: u32) {
    let rem = bits % 8;
    if let Some(first) = out.first_mut().filter(|_| rem != 0) {
        *first &= (1u8 << rem) - 1;
    }
}

/// One KDFa block: HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32).
fn kdfa_block(
    hash: HashAlg,
    key: &[u8],
    counter: u32,
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let nul: &[u8] = if label_needs_nul(label) { &[0] } else { &[] };
    Zeroizing::new(hash.hmac(
        key,
        &[
            &counter.to_be_bytes(),
            label,
            nul,
            context_u,
            context_v,
            &bits.to_be_bytes(),
        ],
    ))
}

/// The largest output KDFa and KDFe produce, in bits: the reference's limit
/// ((bits + 7) / 8 must fit an INT16). Larger requests are [`AlgError::Size`].
pub const MAX_KDF_BITS: u32 = (i16::MAX as u32) * 8;

/// KDFa(hashAlg, key, label, contextU, contextV, bits): `(bits + 7) / 8`
/// octets; when `bits` is not a multiple of 8 the excess high bits of the
/// first octet are zero. `bits == 0` gives an empty result.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, AlgError> {
    if bits > MAX_KDF_BITS {
        return Err(AlgError::Size);
    }
    let len = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u32;
    while out.len() < len {
        counter = counter.wrapping_add(1);
        let block = kdfa_block(hash, key, counter, label, context_u, context_v, bits);
        let take = block.len().min(len - out.len());
        out.extend_from_slice(block.get(..take).unwrap_or(&[]));
    }
    mask_leading(&mut out, bits);
    Ok(out)
}

/// KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits):
/// H([i]32 || Z || label || 0x00 || partyU || partyV) per block, truncated and
/// masked as [`kdfa`]. `z` is the x-coordinate of the shared point.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, AlgError> {
    if bits > MAX_KDF_BITS {
        return Err(AlgError::Size);
    }
    let len = bits.div_ceil(8) as usize;
    let nul: &[u8] = if label_needs_nul(label) { &[0] } else { &[] };
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u32;
    while out.len() < len {
        counter = counter.wrapping_add(1);
        let mut h = Hasher::new(hash);
        h.update(&counter.to_be_bytes());
        h.update(z);
        h.update(label);
        h.update(nul);
        h.update(party_u);
        h.update(party_v);
        let mut block = h.finish();
        let take = block.len().min(len - out.len());
        out.extend_from_slice(block.get(..take).unwrap_or(&[]));
        block.zeroize();
    }
    mask_leading(&mut out, bits);
    Ok(out)
}

/// A deterministic byte stream: the KDFa blocks for counters 1, 2, 3, …
/// with `sizeInBits` fixed at [`KdfRng::STREAM_BITS`], consumed in order.
/// This is the KDF-based RNG of the reference's `DRBG_InstantiateSeededKdf`:
/// keyed by a hierarchy seed, labelled by purpose and bound to the object by
/// its context, it makes key generation repeatable. Unlike the reference it
/// does not stop at `STREAM_BITS` (RSA prime search may, rarely, need more).
pub struct KdfRng {
    hash: HashAlg,
    key: Zeroizing<Vec<u8>>,
    label: Vec<u8>,
    context_u: Vec<u8>,
    context_v: Vec<u8>,
    counter: u32,
    block: Zeroizing<Vec<u8>>,
    used: usize,
}

impl KdfRng {
    /// The `sizeInBits` every block is computed with: the reference's
    /// TPM_MAX_DERIVATION_BITS.
    pub const STREAM_BITS: u32 = 8192;

    pub fn new(
        hash: HashAlg,
        key: &[u8],
        label: &[u8],
        context_u: &[u8],
        context_v: &[u8],
    ) -> Self {
        Self {
            hash,
            key: Zeroizing::new(key.to_vec()),
            label: label.to_vec(),
            context_u: context_u.to_vec(),
            context_v: context_v.to_vec(),
            counter: 0,
            block: Zeroizing::new(Vec::new()),
            used: 0,
        }
    }

    /// Fill `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut pos = 0;
        while pos < out.len() {
            if self.used >= self.block.len() {
                self.counter = self.counter.wrapping_add(1);
                self.block = kdfa_block(
                    self.hash,
                    &self.key,
                    self.counter,
                    &self.label,
                    &self.context_u,
                    &self.context_v,
                    Self::STREAM_BITS,
                );
                self.used = 0;
            }
            let avail = self.block.get(self.used..).unwrap_or(&[]);
            let take = avail.len().min(out.len() - pos);
            if let (Some(dst), Some(src)) = (out.get_mut(pos..pos + take), avail.get(..take)) {
                dst.copy_from_slice(src);
            }
            pos += take;
            self.used += take;
        }
    }
}

impl rand_core::TryRng for KdfRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_be_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_be_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for KdfRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::testing::hex;

    // Vectors computed independently with Python's hmac/hashlib (3.11), e.g.
    //   def kdfa(h, key, label, u, v, bits):
    //       out = b''; i = 1
    //       while len(out) < (bits + 7) // 8:
    //           out += hmac.new(key, i.to_bytes(4, 'big') + label + b'\0' + u + v
    //                           + bits.to_bytes(4, 'big'), h).digest(); i += 1
    //       out = bytearray(out[:(bits + 7) // 8])
    //       if bits % 8: out[0] &= (1 << (bits % 8)) - 1
    //       return out.hex()
    // and kdfe alike with hashlib: H(i || Z || label || 0x00 || u || v).

    #[test]
    fn kdfa_sha256_matches_python() {
        // kdfa('sha256', b'key', b'STORAGE', b'ctxU', b'ctxV', 256)
        let k = kdfa(HashAlg::Sha256, b"key", b"STORAGE", b"ctxU", b"ctxV", 256).unwrap();
        assert_eq!(k, hex(KDFA_SHA256_256));
        // The label's NUL is added once, whether or not the caller supplied it.
        let k0 = kdfa(HashAlg::Sha256, b"key", b"STORAGE\0", b"ctxU", b"ctxV", 256).unwrap();
        assert_eq!(k, k0);
    }

    #[test]
    fn kdfa_multi_block_and_bit_masking() {
        // kdfa('sha1', bytes(range(20)), b'', b'', b'', 300): 3 blocks, first octet masked to 4 bits
        let k = kdfa(
            HashAlg::Sha1,
            &(0u8..20).collect::<Vec<_>>(),
            b"",
            b"",
            b"",
            300,
        )
        .unwrap();
        assert_eq!(k.len(), 38);
        assert_eq!(k, hex(KDFA_SHA1_300));
        assert!(k[0] < 0x10);
        // kdfa('sha384', b'seed', b'ATH', b'nonceNewer', b'nonceOlder', 520)
        let k = kdfa(
            HashAlg::Sha384,
            b"seed",
            b"ATH",
            b"nonceNewer",
            b"nonceOlder",
            520,
        )
        .unwrap();
        assert_eq!(k, hex(KDFA_SHA384_520));
        assert!(
            kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", 0)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", u32::MAX),
            Err(AlgError::Size)
        );
        assert_eq!(
            kdfe(HashAlg::Sha256, b"z", b"L", b"", b"", MAX_KDF_BITS + 1),
            Err(AlgError::Size)
        );
        assert_eq!(
            kdfa(HashAlg::Sha1, b"k", b"L", b"", b"", MAX_KDF_BITS)
                .unwrap()
                .len(),
            32767
        );
    }

    #[test]
    fn kdfe_matches_python() {
        // kdfe('sha256', Z=bytes(range(32)), b'DUPLICATE', b'partyU', b'partyV', 128)
        let z: Vec<u8> = (0u8..32).collect();
        let k = kdfe(HashAlg::Sha256, &z, b"DUPLICATE", b"partyU", b"partyV", 128).unwrap();
        assert_eq!(k, hex(KDFE_SHA256_128));
        // kdfe('sha384', Z=b'\xff'*48, b'SECRET\0', b'', b'', 780): 2 blocks, masked
        let k = kdfe(HashAlg::Sha384, &[0xff; 48], b"SECRET\0", b"", b"", 780).unwrap();
        assert_eq!(k, hex(KDFE_SHA384_780));
    }

    #[test]
    fn stream_is_kdfa_blocks_in_order() {
        let mut rng = KdfRng::new(HashAlg::Sha256, b"seed", b"RSA", b"name", b"data");
        let mut a = [0u8; 5];
        let mut b = [0u8; 70];
        rng.fill(&mut a);
        rng.fill(&mut b);
        let mut expect = Vec::new();
        for i in 1..=3u32 {
            expect.extend_from_slice(&kdfa_block(
                HashAlg::Sha256,
                b"seed",
                i,
                b"RSA",
                b"name",
                b"data",
                KdfRng::STREAM_BITS,
            ));
        }
        assert_eq!(&expect[..5], &a);
        assert_eq!(&expect[5..75], &b);
        // Block 1 equals the first octets of KDFa with sizeInBits = STREAM_BITS.
        let full = kdfa(HashAlg::Sha256, b"seed", b"RSA", b"name", b"data", 8192).unwrap();
        assert_eq!(&full[..96], &expect[..]);
    }

    const KDFA_SHA256_256: &str =
        "3c16d9f44a297f463c42eb7fb2fe62c662969eaff6b55f9dc8da95888006d3c5";
    const KDFA_SHA1_300: &str =
        "0dc08d27e2edc2104c1837cf885934e597eda986d5880de23aaacb258c26d3104a35769ed494";
    const KDFA_SHA384_520: &str = "ea068c0d633d05fdb55e90e393613dc5365e3ec4019a92002ce7ecc018d4322aa4ea9ca151b68455b0cbb01be2a2a49da28d29d8f50022c11473407b86018b6e7e";
    const KDFE_SHA256_128: &str = "f12df589c5db62cfca3f1404f5e715eb";
    const KDFE_SHA384_780: &str = "021e4566a54e0d50535c70fea4cad69c0791716568aa21ef758f288d66f38049384c4dc7c09fcedfaa6c2785b65769dabaa58c3d7d6831cdc8a3f3d30d567d045f270bb2accc2f9a84ecacc8d0b80f496812e8e1d3d713aa3e802d66b26853185a62";
}
