//! CTR_DRBG (NIST SP 800-90A rev. 1, 10.2) with AES-256 and no derivation
//! function, as the TCG reference uses: seedlen = 48 bytes, reseeded from the
//! platform's entropy source. Entropy failure is reported to the caller, which
//! puts the TPM in failure mode.

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use zeroize::Zeroize;

const KEY_LEN: usize = 32;
const BLOCK: usize = 16;
pub const SEED_LEN: usize = KEY_LEN + BLOCK;
/// Requests between reseeds (far below the 2^48 the standard allows).
const RESEED_INTERVAL: u64 = 1 << 16;
/// Bytes per request (SP 800-90A table 3 allows 2^19 bits).
pub const MAX_REQUEST: usize = 1 << 16;

pub struct Drbg {
    key: [u8; KEY_LEN],
    v: [u8; BLOCK],
    reseed_counter: u64,
}

impl Drbg {
    /// Instantiate from `SEED_LEN` bytes of entropy and a personalization string.
    pub fn new(entropy: &[u8; SEED_LEN], personalization: &[u8]) -> Self {
        let mut d = Self {
            key: [0; KEY_LEN],
            v: [0; BLOCK],
            reseed_counter: 1,
        };
        let mut seed = *entropy;
        xor_into(&mut seed, personalization);
        d.update(&seed);
        seed.zeroize();
        d
    }

    pub fn needs_reseed(&self) -> bool {
        self.reseed_counter > RESEED_INTERVAL
    }

    pub fn reseed(&mut self, entropy: &[u8; SEED_LEN], additional: &[u8]) {
        let mut seed = *entropy;
        xor_into(&mut seed, additional);
        self.update(&seed);
        seed.zeroize();
        self.reseed_counter = 1;
    }

    /// Mix caller data into the state (TPM2_StirRandom): CTR_DRBG_Update with
    /// the data folded into seedlen bytes.
    pub fn stir(&mut self, data: &[u8]) {
        let mut seed = [0u8; SEED_LEN];
        xor_into(&mut seed, data);
        self.update(&seed);
        seed.zeroize();
    }

    /// Generate; `out.len()` must be at most MAX_REQUEST (callers cap it).
    pub fn generate(&mut self, out: &mut [u8]) {
        let cipher = Aes256::new(&self.key.into());
        for chunk in out.chunks_mut(BLOCK) {
            increment(&mut self.v);
            let mut block = self.v.into();
            cipher.encrypt_block(&mut block);
            let block: [u8; BLOCK] = block.into();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        self.update(&[0u8; SEED_LEN]);
        self.reseed_counter = self.reseed_counter.saturating_add(1);
    }

    fn update(&mut self, provided: &[u8; SEED_LEN]) {
        let cipher = Aes256::new(&self.key.into());
        let mut temp = [0u8; SEED_LEN];
        for chunk in temp.chunks_mut(BLOCK) {
            increment(&mut self.v);
            let mut block = self.v.into();
            cipher.encrypt_block(&mut block);
            let block: [u8; BLOCK] = block.into();
            chunk.copy_from_slice(&block);
        }
        for (t, p) in temp.iter_mut().zip(provided) {
            *t ^= p;
        }
        self.key.copy_from_slice(&temp[..KEY_LEN]);
        self.v.copy_from_slice(&temp[KEY_LEN..]);
        temp.zeroize();
    }
}

impl Drop for Drbg {
    fn drop(&mut self) {
        self.key.zeroize();
        self.v.zeroize();
    }
}

fn increment(v: &mut [u8; BLOCK]) {
    for b in v.iter_mut().rev() {
        *b = b.wrapping_add(1);
        if *b != 0 {
            break;
        }
    }
}

/// XOR `data` into `seed`, folding anything longer than seedlen.
fn xor_into(seed: &mut [u8; SEED_LEN], data: &[u8]) {
    for (i, b) in data.iter().enumerate() {
        seed[i % SEED_LEN] ^= b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST CAVP CTR_DRBG AES-256 no-df, no prediction resistance, count 0
    /// (EntropyInput/Nonce-less vector set, PersonalizationString empty).
    #[test]
    fn cavp_vector() {
        let h = |s: &str| -> alloc::vec::Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let e = h(
            "df5d73faa468649edda33b5cca79b0b05600419ccb7a879ddfec9db32ee494e5531b51de16a30f769262474c73bec010",
        );
        let mut d = Drbg::new(&e.try_into().unwrap(), &[]);
        let mut out = [0u8; 64];
        d.generate(&mut out);
        d.generate(&mut out);
        assert_eq!(
            out.to_vec(),
            h(
                "d1c07cd95af8a7f11012c84ce48bb8cb87189e99d40fccb1771c619bdf82ab2280b1dc2f2581f39164f7ac0c510494b3a43c41b7db17514c87b107ae793e01c5"
            )
        );
    }

    #[test]
    fn stir_changes_output() {
        let mut a = Drbg::new(&[7; SEED_LEN], b"x");
        let mut b = Drbg::new(&[7; SEED_LEN], b"x");
        b.stir(b"more");
        let (mut x, mut y) = ([0u8; 20], [0u8; 20]);
        a.generate(&mut x);
        b.generate(&mut y);
        assert_ne!(x, y);
    }
}
