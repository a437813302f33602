//! Symmetric primitives (Part 3 §15): EncryptDecrypt, EncryptDecrypt2 and
//! HMAC with loaded symmetric and keyedHash keys.

use alloc::boxed::Box;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::alg::sym::{Direction, SymMode, aes};
use crate::command::object::key_at;
use crate::command::read_hash_alg_or_null;
use crate::crypto::{HashAlg, Hasher};
use crate::dispatch::{Call, Ctx};
use crate::key::{self, oa};
use crate::object::{Kind, Object};
use crate::public::PublicParms;
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, MAX_DIGEST_BUFFER, alg};

/// The shared body of EncryptDecrypt(2); `pn` numbers decrypt, mode, ivIn, inData.
fn encrypt_decrypt(
    cx: &mut Ctx,
    call: &mut Call,
    decrypt: bool,
    mode: u16,
    iv: &[u8],
    data: &[u8],
    pn: [u8; 4],
) -> CmdResult<()> {
    let k = key_at(cx, call.handle(0), 1)?;
    let PublicParms::SymCipher { sym } = k.public.parms else {
        return Err(Rc::handle(rc::KEY, 1));
    };
    if k.public.has(oa::RESTRICTED) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    // decrypt needs the decrypt attribute, encrypt the sign attribute.
    let allowed = if decrypt {
        k.public.has(oa::DECRYPT)
    } else {
        k.public.has(oa::SIGN)
    };
    if !allowed {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    let mode = match (sym.mode, mode) {
        (alg::NULL, r) => r,
        (m, alg::NULL) => m,
        (m, r) if m == r => m,
        _ => return Err(Rc::param(rc::MODE, pn[1])),
    };
    let mode = SymMode::from_id(mode).ok_or(Rc::param(rc::MODE, pn[1]))?;
    if iv.len() != if mode.has_iv() { 16 } else { 0 } {
        return Err(Rc::param(rc::SIZE, pn[2]));
    }
    if mode.needs_whole_blocks() && !data.len().is_multiple_of(16) {
        return Err(Rc::param(rc::SIZE, pn[3]));
    }
    let dir = if decrypt {
        Direction::Decrypt
    } else {
        Direction::Encrypt
    };
    let out = aes(dir, mode, k.secret(), iv, data).map_err(|e| key::alg_rc(e, rc::KEY))?;
    call.out.tpm2b(&out.data);
    call.out.tpm2b(&out.iv);
    Ok(())
}

/// TPMI_ALG_CIPHER_MODE+.
fn read_mode(call: &mut Call) -> CmdResult<u16> {
    let m = call.params.u16()?;
    if m != alg::NULL && SymMode::from_id(m).is_none() {
        return Err(Rc::new(rc::MODE));
    }
    Ok(m)
}

pub fn encrypt_decrypt_cmd(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let decrypt = call.params.yes_no().p(1)?;
    let mode = read_mode(call).p(2)?;
    let iv = call.params.tpm2b(16).p(3)?.to_vec();
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(4)?.to_vec();
    call.done()?;
    encrypt_decrypt(cx, call, decrypt, mode, &iv, &data, [1, 2, 3, 4])
}

pub fn encrypt_decrypt2_cmd(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?.to_vec();
    let decrypt = call.params.yes_no().p(2)?;
    let mode = read_mode(call).p(3)?;
    let iv = call.params.tpm2b(16).p(4)?.to_vec();
    call.done()?;
    encrypt_decrypt(cx, call, decrypt, mode, &iv, &data, [2, 3, 4, 1])
}

/// The hash an HMAC key uses: its scheme's, or the caller's when it has none.
pub fn hmac_hash(k: &key::KeyObject, requested: Option<HashAlg>, pn: u8) -> CmdResult<HashAlg> {
    let PublicParms::KeyedHash { scheme, .. } = k.public.parms else {
        return Err(Rc::handle(rc::TYPE, 1));
    };
    if k.public.has(oa::RESTRICTED) || !k.public.has(oa::SIGN) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    match (scheme.hash, requested) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(r)) if r == own => Ok(own),
        (None, Some(r)) => Ok(r),
        _ => Err(Rc::param(rc::VALUE, pn)),
    }
}

pub fn hmac(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?.to_vec();
    let requested = read_hash_alg_or_null(&mut call.params).p(2)?;
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    let h = hmac_hash(&k, requested, 2)?;
    call.out.tpm2b(&h.hmac(k.secret(), &[&data]));
    Ok(())
}

/// A running HMAC over a sequence (RFC 2104 with the TPM's hashes).
pub struct HmacState {
    inner: Hasher,
    outer_key: Zeroizing<Vec<u8>>,
}

impl HmacState {
    pub fn new(h: HashAlg, key: &[u8]) -> Self {
        let block = if h == HashAlg::Sha384 { 128 } else { 64 };
        let mut k = Zeroizing::new(if key.len() > block {
            h.digest(&[key])
        } else {
            key.to_vec()
        });
        k.resize(block, 0);
        let ipad: Zeroizing<Vec<u8>> = Zeroizing::new(k.iter().map(|b| b ^ 0x36).collect());
        let outer_key = Zeroizing::new(k.iter().map(|b| b ^ 0x5C).collect());
        let mut inner = Hasher::new(h);
        inner.update(&ipad);
        Self { inner, outer_key }
    }
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }
    /// (hash, inner state, outer key) for a context save.
    pub fn save(&self) -> (HashAlg, Vec<u8>, &[u8]) {
        (self.inner.alg(), self.inner.save(), &self.outer_key)
    }
    pub fn restore(h: HashAlg, inner: &[u8], outer_key: &[u8]) -> Option<Self> {
        Some(Self {
            inner: Hasher::restore(h, inner)?,
            outer_key: Zeroizing::new(outer_key.to_vec()),
        })
    }
    pub fn finish(self) -> Vec<u8> {
        let h = self.inner.alg();
        let inner = self.inner.finish();
        h.digest(&[&self.outer_key, &inner])
    }
}

pub fn hmac_start(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let auth = call.params.tpm2b(spec::MAX_DIGEST).p(1)?.to_vec();
    let requested = read_hash_alg_or_null(&mut call.params).p(2)?;
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    let h = hmac_hash(&k, requested, 2)?;
    let state = HmacState::new(h, k.secret());
    call.out_handle = Some(cx.core.vol.objects.insert(Object {
        auth: crate::crypto::trim_auth(&auth).to_vec(),
        kind: Kind::HmacSequence(Box::new(state)),
        ticket_safe: None,
    })?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::command::object::tests::*;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, started};

    const ENCRYPT_DECRYPT: u32 = 0x164;
    const ENCRYPT_DECRYPT_2: u32 = 0x193;
    const HMAC: u32 = 0x155;

    /// AES-128 symmetric key, mode NULL, sign|decrypt|userWithAuth|origin|fixed.
    fn aes_key(mode: u16) -> Vec<u8> {
        let mut p = alloc::vec![0x00, 0x06, 0x00, 0x80];
        p.extend_from_slice(&mode.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        template(0x25, 0x0006_0072, &p)
    }

    fn ed(
        tpm: &mut Tpm<TestPlatform>,
        k: u32,
        decrypt: u8,
        mode: u16,
        iv: &[u8],
        data: &[u8],
    ) -> (u32, Vec<u8>, Vec<u8>) {
        let cmd = Cmd::new(ENCRYPT_DECRYPT)
            .h(k)
            .pw(b"")
            .u8(decrypt)
            .u16(mode)
            .tpm2b(iv)
            .tpm2b(data);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        if rc != 0 {
            return (rc, Vec::new(), Vec::new());
        }
        let (out, pos) = tpm2b(&body, 0);
        (rc, out, tpm2b(&body, pos).0)
    }

    #[test]
    fn encrypt_decrypt_every_mode() {
        let mut tpm = started();
        let (rc, k, _, _) = primary(&mut tpm, OWNER, b"", &aes_key(0x10));
        assert_eq!(rc, 0, "{rc:#x}");
        let data = [7u8; 48];
        for mode in [0x40u16, 0x41, 0x42, 0x43, 0x44] {
            let iv: &[u8] = if mode == 0x44 { &[] } else { &[1; 16] };
            let (rc, ct, _) = ed(&mut tpm, k, 0, mode, iv, &data);
            assert_eq!(rc, 0, "{mode:#x} {rc:#x}");
            assert_ne!(ct, data);
            let (rc, pt, _) = ed(&mut tpm, k, 1, mode, iv, &ct);
            assert_eq!(rc, 0);
            assert_eq!(pt, data);
        }
        // EncryptDecrypt2 puts the data first; CFB chains through ivOut.
        let cmd = Cmd::new(ENCRYPT_DECRYPT_2)
            .h(k)
            .pw(b"")
            .tpm2b(&data)
            .u8(0)
            .u16(0x43)
            .tpm2b(&[1; 16]);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0);
        let (ct2, _) = tpm2b(&body, 0);
        let (ct1, iv1) = {
            let (_, c, iv) = ed(&mut tpm, k, 0, 0x43, &[1; 16], &data[..32]);
            (c, iv)
        };
        let (_, c2, _) = ed(&mut tpm, k, 0, 0x43, &iv1, &data[32..]);
        assert_eq!(ct2, [ct1, c2].concat());
        // Wrong IV size, partial block in CBC, no mode anywhere.
        assert_eq!(ed(&mut tpm, k, 0, 0x43, &[1; 8], &data).0, 0x3D5);
        assert_eq!(ed(&mut tpm, k, 0, 0x42, &[1; 16], &data[..5]).0, 0x4D5);
        assert_eq!(ed(&mut tpm, k, 0, 0x10, &[1; 16], &data).0, 0x2C9);
        flush(&mut tpm, k);
        // A key fixed to CFB refuses CBC.
        let (_, k, _, _) = primary(&mut tpm, OWNER, b"", &aes_key(0x43));
        assert_eq!(ed(&mut tpm, k, 0, 0x42, &[1; 16], &data).0, 0x2C9);
        assert_eq!(ed(&mut tpm, k, 0, 0x10, &[1; 16], &data).0, 0);
    }

    #[test]
    fn hmac_with_keyed_hash_key() {
        let mut tpm = started();
        // A caller-supplied HMAC key (sensitiveDataOrigin CLEAR).
        let t = template(8, 0x0004_0052, &[0x00, 0x05, 0x00, 0x0B, 0x00, 0x00]);
        let cmd = create_primary_cmd(OWNER, &sensitive(b"", b"key bytes"), &t);
        let (rc, k, _) = split(&tpm.execute(0, &cmd.bytes()), true);
        assert_eq!(rc, 0, "{rc:#x}");
        let cmd = Cmd::new(HMAC).h(k).pw(b"").tpm2b(b"data").u16(0x10);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(
            tpm2b(&body, 0).0,
            HashAlg::Sha256.hmac(b"key bytes", &[b"data"])
        );
        // HMAC_Start + SequenceUpdate + SequenceComplete give the same HMAC.
        let cmd = Cmd::new(0x15B).h(k).pw(b"").tpm2b(b"seq").u16(0x10);
        let (rc, seq, _) = split(&tpm.execute(0, &cmd.bytes()), true);
        assert_eq!(rc, 0, "{rc:#x}");
        let cmd = Cmd::new(0x15C).h(seq).pw(b"seq").tpm2b(b"da");
        assert_eq!(split(&tpm.execute(0, &cmd.bytes()), false).0, 0);
        let cmd = Cmd::new(0x13E).h(seq).pw(b"seq").tpm2b(b"ta").u32(OWNER);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (mac, pos) = tpm2b(&body, 0);
        assert_eq!(mac, HashAlg::Sha256.hmac(b"key bytes", &[b"data"]));
        assert_eq!(&body[pos..], &[0x80, 0x24, 0x40, 0, 0, 7, 0, 0]);
        // Long keys are hashed first (SHA-384 block is 128 bytes).
        for (h, key) in [(HashAlg::Sha384, [7u8; 200]), (HashAlg::Sha1, [9u8; 200])] {
            let mut st = super::HmacState::new(h, &key);
            st.update(b"abc");
            assert_eq!(st.finish(), h.hmac(&key, &[b"abc"]));
        }
        let cmd = Cmd::new(HMAC).h(k).pw(b"").tpm2b(b"data").u16(0x04);
        assert_eq!(split(&tpm.execute(0, &cmd.bytes()), false).0, 0x2C4);
    }
}
