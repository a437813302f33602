//! AES in the TPM's block modes (CFB, CBC, CTR, ECB, OFB) with the TPM's IV
//! semantics: the IV that comes out is the chaining value for the next call
//! (the reference's CryptSymmetricEncrypt/Decrypt). The modes are written
//! here rather than taken from the mode crates because the TPM's rules for a
//! final partial block (CFB keeps the keystream's tail in the next IV, CTR still steps the
//! counter, OFB keeps the whole keystream block) are not theirs.

use alloc::vec::Vec;

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use zeroize::Zeroize;

use super::AlgError;

pub const BLOCK: usize = 16;

/// A TPM_ALG_ID of a symmetric mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymMode {
    Cfb,
    Cbc,
    Ctr,
    Ecb,
    Ofb,
}

impl SymMode {
    /// From a TPM_ALG_ID (Part 2, 6.3): CTR 0x40, OFB 0x41, CBC 0x42, CFB 0x43, ECB 0x44.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0040 => Some(Self::Ctr),
            0x0041 => Some(Self::Ofb),
            0x0042 => Some(Self::Cbc),
            0x0043 => Some(Self::Cfb),
            0x0044 => Some(Self::Ecb),
            _ => None,
        }
    }

    /// Whether the mode takes an IV (all but ECB).
    pub fn has_iv(self) -> bool {
        self != Self::Ecb
    }

    /// Whether the data must be a whole number of blocks (CBC and ECB:
    /// TPM_RC_SIZE otherwise).
    pub fn needs_whole_blocks(self) -> bool {
        matches!(self, Self::Cbc | Self::Ecb)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Encrypt,
    Decrypt,
}

/// The result of one call: the data, and the IV for the next call (empty for ECB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymOutput {
    pub data: Vec<u8>,
    pub iv: Vec<u8>,
}

enum Cipher {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl Cipher {
    fn new(key: &[u8]) -> Result<Self, AlgError> {
        let bad = |_| AlgError::KeySize;
        Ok(match key.len() {
            16 => Self::A128(Aes128::new_from_slice(key).map_err(bad)?),
            24 => Self::A192(Aes192::new_from_slice(key).map_err(bad)?),
            32 => Self::A256(Aes256::new_from_slice(key).map_err(bad)?),
            _ => return Err(AlgError::KeySize),
        })
    }

    fn encrypt(&self, block: &[u8; BLOCK]) -> [u8; BLOCK] {
        let mut b = (*block).into();
        match self {
            Self::A128(c) => c.encrypt_block(&mut b),
            Self::A192(c) => c.encrypt_block(&mut b),
            Self::A256(c) => c.encrypt_block(&mut b),
        }
        b.into()
    }

    fn decrypt(&self, block: &[u8; BLOCK]) -> [u8; BLOCK] {
        let mut b = (*block).into();
        match self {
            Self::A128(c) => c.decrypt_block(&mut b),
            Self::A192(c) => c.decrypt_block(&mut b),
            Self::A256(c) => c.decrypt_block(&mut b),
        }
        b.into()
    }
}

fn to_block(chunk: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    if let Some(dst) = b.get_mut(..chunk.len()) {
        dst.copy_from_slice(chunk);
    }
    b
}

fn increment(counter: &mut [u8; BLOCK]) {
    for byte in counter.iter_mut().rev() {
        *byte = byte.wrapping_add(1);
        if *byte != 0 {
            break;
        }
    }
}

/// AES-128/192/256 (by the key's length, else [`AlgError::KeySize`]) over
/// `data`. `iv` must be one block, or empty for ECB ([`AlgError::Size`]); CBC
/// and ECB need whole blocks ([`AlgError::Size`]).
pub fn aes(
    direction: Direction,
    mode: SymMode,
    key: &[u8],
    iv: &[u8],
    data: &[u8],
) -> Result<SymOutput, AlgError> {
    let cipher = Cipher::new(key)?;
    let expected_iv = if mode.has_iv() { BLOCK } else { 0 };
    if iv.len() != expected_iv {
        return Err(AlgError::Size);
    }
    if mode.needs_whole_blocks() && !data.len().is_multiple_of(BLOCK) {
        return Err(AlgError::Size);
    }
    let mut chain = to_block(iv);
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(BLOCK) {
        let input = to_block(chunk);
        let n = chunk.len();
        let produced: [u8; BLOCK] = match (mode, direction) {
            (SymMode::Ecb, Direction::Encrypt) => cipher.encrypt(&input),
            (SymMode::Ecb, Direction::Decrypt) => cipher.decrypt(&input),
            (SymMode::Cbc, Direction::Encrypt) => {
                let mut x = input;
                x.iter_mut().zip(chain).for_each(|(a, b)| *a ^= b);
                chain = cipher.encrypt(&x);
                chain
            }
            (SymMode::Cbc, Direction::Decrypt) => {
                let mut p = cipher.decrypt(&input);
                p.iter_mut().zip(chain).for_each(|(a, b)| *a ^= b);
                chain = input;
                p
            }
            (SymMode::Cfb, dir) => {
                let ks = cipher.encrypt(&chain);
                let mut o = [0u8; BLOCK];
                o.iter_mut()
                    .zip(ks.iter().zip(input))
                    .for_each(|(o, (k, i))| *o = k ^ i);
                // The next IV is this block's ciphertext; after a partial
                // block its tail is the rest of the keystream block, as the
                // reference (which works in place on the IV) leaves it.
                let ct = if dir == Direction::Encrypt { o } else { input };
                chain = ks;
                if let (Some(dst), Some(src)) = (chain.get_mut(..n), ct.get(..n)) {
                    dst.copy_from_slice(src);
                }
                o
            }
            (SymMode::Ctr, _) => {
                let ks = cipher.encrypt(&chain);
                increment(&mut chain);
                let mut o = input;
                o.iter_mut().zip(ks).for_each(|(a, b)| *a ^= b);
                o
            }
            (SymMode::Ofb, _) => {
                chain = cipher.encrypt(&chain);
                let mut o = input;
                o.iter_mut().zip(chain).for_each(|(a, b)| *a ^= b);
                o
            }
        };
        out.extend_from_slice(produced.get(..n).unwrap_or(&[]));
    }
    let iv_out = if mode.has_iv() {
        chain.to_vec()
    } else {
        Vec::new()
    };
    chain.zeroize();
    Ok(SymOutput {
        data: out,
        iv: iv_out,
    })
}

pub fn aes_encrypt(
    mode: SymMode,
    key: &[u8],
    iv: &[u8],
    data: &[u8],
) -> Result<SymOutput, AlgError> {
    aes(Direction::Encrypt, mode, key, iv, data)
}

pub fn aes_decrypt(
    mode: SymMode,
    key: &[u8],
    iv: &[u8],
    data: &[u8],
) -> Result<SymOutput, AlgError> {
    aes(Direction::Decrypt, mode, key, iv, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::testing::hex;

    // NIST SP 800-38A, appendix F: the common key, IV and plaintext.
    const KEY128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
    const KEY256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
    const IV: &str = "000102030405060708090a0b0c0d0e0f";
    const CTR_IV: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    const PT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                      30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";

    fn kat(mode: SymMode, key: &str, iv: &str, ct: &str) {
        let (key, iv, pt, ct) = (hex(key), hex(iv), hex(PT), hex(ct));
        let e = aes_encrypt(mode, &key, &iv, &pt).unwrap();
        assert_eq!(e.data, ct, "{mode:?} encrypt");
        let d = aes_decrypt(mode, &key, &iv, &ct).unwrap();
        assert_eq!(d.data, pt, "{mode:?} decrypt");
        assert_eq!(e.iv, d.iv, "{mode:?} chaining value");
    }

    #[test]
    fn sp800_38a_vectors() {
        // F.1.1/F.1.2 ECB-AES128, F.2.1/F.2.2 CBC-AES128, F.3.13/F.3.14
        // CFB128-AES128, F.4.1/F.4.2 OFB-AES128, F.5.1/F.5.2 CTR-AES128, and
        // the AES-256 variants F.1.5, F.2.5, F.3.17, F.4.5, F.5.5.
        kat(SymMode::Ecb, KEY128, "", ECB128);
        kat(SymMode::Cbc, KEY128, IV, CBC128);
        kat(SymMode::Cfb, KEY128, IV, CFB128);
        kat(SymMode::Ofb, KEY128, IV, OFB128);
        kat(SymMode::Ctr, KEY128, CTR_IV, CTR128);
        kat(SymMode::Ecb, KEY256, "", ECB256);
        kat(SymMode::Cbc, KEY256, IV, CBC256);
        kat(SymMode::Cfb, KEY256, IV, CFB256);
        kat(SymMode::Ofb, KEY256, IV, OFB256);
        kat(SymMode::Ctr, KEY256, CTR_IV, CTR256);
    }

    #[test]
    fn aes192_round_trip() {
        // F.2.3 CBC-AES192 first block.
        let key = hex("8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b");
        let e = aes_encrypt(SymMode::Cbc, &key, &hex(IV), &hex(PT)[..16]).unwrap();
        assert_eq!(e.data, hex("4f021db243bc633d7178183a9fa071e8"));
    }

    #[test]
    fn iv_out_chains_calls() {
        let key = hex(KEY128);
        let pt = hex(PT);
        for mode in [SymMode::Cfb, SymMode::Cbc, SymMode::Ctr, SymMode::Ofb] {
            let iv = hex(if mode == SymMode::Ctr { CTR_IV } else { IV });
            let whole = aes_encrypt(mode, &key, &iv, &pt).unwrap();
            let a = aes_encrypt(mode, &key, &iv, &pt[..32]).unwrap();
            let b = aes_encrypt(mode, &key, &a.iv, &pt[32..]).unwrap();
            assert_eq!([a.data, b.data].concat(), whole.data, "{mode:?}");
            assert_eq!(b.iv, whole.iv);
        }
        // CFB/CBC: the IV out is the last ciphertext block; CTR: the next counter.
        let cfb = aes_encrypt(SymMode::Cfb, &key, &hex(IV), &pt).unwrap();
        assert_eq!(cfb.iv, cfb.data[48..]);
        let ctr = aes_encrypt(SymMode::Ctr, &key, &hex(CTR_IV), &pt).unwrap();
        assert_eq!(ctr.iv, hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdff03"));
    }

    #[test]
    fn partial_final_block_follows_the_reference() {
        let key = hex(KEY128);
        let pt = hex(PT);
        let full = aes_encrypt(SymMode::Cfb, &key, &hex(IV), &pt).unwrap();
        // CFB: a 20-octet message; the IV out is the 4 octets of the last
        // ciphertext, then the last 12 octets of that block's keystream
        // (libtpms answers so; the differential harness compares it).
        let e = aes_encrypt(SymMode::Cfb, &key, &hex(IV), &pt[..20]).unwrap();
        assert_eq!(e.data, full.data[..20]);
        let keystream = aes_encrypt(SymMode::Cfb, &key, &full.data[..16], &[0; 16])
            .unwrap()
            .data;
        let mut expect = full.data[16..20].to_vec();
        expect.extend_from_slice(&keystream[4..]);
        assert_eq!(e.iv, expect);
        let d = aes_decrypt(SymMode::Cfb, &key, &hex(IV), &e.data).unwrap();
        assert_eq!((d.data, d.iv), (pt[..20].to_vec(), expect));
        // CTR: the counter steps for the partial block too.
        let e = aes_encrypt(SymMode::Ctr, &key, &hex(CTR_IV), &pt[..20]).unwrap();
        assert_eq!(e.iv, hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdff01"));
        // OFB: the IV out is the whole second keystream block.
        let e = aes_encrypt(SymMode::Ofb, &key, &hex(IV), &pt[..20]).unwrap();
        let ofb = aes_encrypt(SymMode::Ofb, &key, &hex(IV), &[0; 32]).unwrap();
        assert_eq!(e.iv, ofb.data[16..]);
        // Empty input: nothing out, IV unchanged.
        let e = aes_encrypt(SymMode::Cfb, &key, &hex(IV), &[]).unwrap();
        assert_eq!((e.data.len(), e.iv), (0, hex(IV)));
    }

    #[test]
    fn counter_wraps_around() {
        let key = hex(KEY128);
        let e = aes_encrypt(SymMode::Ctr, &key, &[0xff; 16], &[0; 32]).unwrap();
        assert_eq!(e.iv, hex("00000000000000000000000000000001"));
    }

    #[test]
    fn errors() {
        let key = hex(KEY128);
        let iv = hex(IV);
        assert_eq!(
            aes_encrypt(SymMode::Cfb, &key[..15], &iv, b"x"),
            Err(AlgError::KeySize)
        );
        assert_eq!(
            aes_encrypt(SymMode::Cfb, &[0; 64], &iv, b"x"),
            Err(AlgError::KeySize)
        );
        assert_eq!(
            aes_encrypt(SymMode::Cfb, &key, &iv[..8], b"x"),
            Err(AlgError::Size)
        );
        assert_eq!(
            aes_encrypt(SymMode::Ecb, &key, &iv, &[0; 16]),
            Err(AlgError::Size)
        );
        assert_eq!(
            aes_encrypt(SymMode::Cbc, &key, &iv, &[0; 17]),
            Err(AlgError::Size)
        );
        assert_eq!(
            aes_decrypt(SymMode::Ecb, &key, &[], &[0; 15]),
            Err(AlgError::Size)
        );
        assert!(aes_encrypt(SymMode::Ctr, &key, &iv, &[0; 17]).is_ok());
        assert_eq!(SymMode::from_id(0x43), Some(SymMode::Cfb));
        assert_eq!(SymMode::from_id(0x10), None);
    }

    const ECB128: &str = "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4";
    const CBC128: &str = "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b273bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7";
    const CFB128: &str = "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b26751f67a3cbb140b1808cf187a4f4dfc04b05357c5d1c0eeac4c66f9ff7f2e6";
    const OFB128: &str = "3b3fd92eb72dad20333449f8e83cfb4a7789508d16918f03f53c52dac54ed8259740051e9c5fecf64344f7a82260edcc304c6528f659c77866a510d9c1d6ae5e";
    const CTR128: &str = "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee";
    const ECB256: &str = "f3eed1bdb5d2a03c064b5a7e3db181f8591ccb10d410ed26dc5ba74a31362870b6ed21b99ca6f4f9f153e7b1beafed1d23304b7a39f9f3ff067d8d8f9e24ecc7";
    const CBC256: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b";
    const CFB256: &str = "dc7e84bfda79164b7ecd8486985d386039ffed143b28b1c832113c6331e5407bdf10132415e54b92a13ed0a8267ae2f975a385741ab9cef82031623d55b1e471";
    const OFB256: &str = "dc7e84bfda79164b7ecd8486985d38604febdc6740d20b3ac88f6ad82a4fb08d71ab47a086e86eedf39d1c5bba97c4080126141d67f37be8538f5a8be740e484";
    const CTR256: &str = "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c52b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6";
}
