//! Duplication (Part 1 §23.3, Part 3 §13): Duplicate, Import and
//! Rewrap. A seed goes to the new parent (key::encrypt_seed, label
//! "DUPLICATE"); KDFa turns it into the outer wrapper's AES-CFB key
//! ("STORAGE", bound to the object's Name) and HMAC key ("INTEGRITY").
//! Duplication may add an inner AES-CFB wrapper whose key the caller
//! holds. Touches only loaded key objects.

use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::alg::kdf::kdfa;
use crate::alg::sym::{SymMode, aes_decrypt, aes_encrypt};
use crate::command::object::key_at;
use crate::crypto::{HashAlg, ct_eq};
use crate::dispatch::{Call, Ctx};
use crate::key::{self, KeyObject, MAX_PRIVATE, Sensitive, oa};
use crate::marshal::{Reader, Writer};
use crate::public::{AES_KEY_BITS, SymDef};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{MAX_DIGEST, alg, rh};

const DUPLICATE: &[u8] = b"DUPLICATE";
/// TPM2B_ENCRYPTED_SECRET capacity (sizeof TPMU_ENCRYPTED_SECRET).
const MAX_SECRET: usize = 512;

fn bits(h: HashAlg) -> u32 {
    u32::try_from(h.size() * 8).unwrap_or(0)
}

/// An asymmetric restricted decryption key, the only kind that receives seeds.
fn is_seed_key(k: &KeyObject) -> bool {
    matches!(k.public.kind, alg::RSA | alg::ECC) && k.public.has(oa::RESTRICTED | oa::DECRYPT)
}

/// (AES key, HMAC key).
type KeyPair = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// The outer wrapper of Part 1 §23.3.2.2: keyed by a seed, the protecting
/// key's nameAlg and symmetric definition, bound to the object's Name.
struct Outer<'a> {
    hash: HashAlg,
    key_bits: u16,
    seed: &'a [u8],
}

impl<'a> Outer<'a> {
    fn of(parent: &KeyObject, seed: &'a [u8]) -> CmdResult<Self> {
        let sym = parent.public.sym().ok_or(Rc::new(rc::TYPE))?;
        Ok(Self {
            hash: parent.public.hash(),
            key_bits: sym.key_bits,
            seed,
        })
    }

    fn keys(&self, name: &[u8]) -> CmdResult<KeyPair> {
        let sym = kdfa(
            self.hash,
            self.seed,
            b"STORAGE",
            name,
            &[],
            u32::from(self.key_bits),
        )
        .map_err(|e| key::alg_rc(e, rc::KEY))?;
        let mac = kdfa(
            self.hash,
            self.seed,
            b"INTEGRITY",
            &[],
            &[],
            bits(self.hash),
        )
        .map_err(|e| key::alg_rc(e, rc::KEY))?;
        Ok((Zeroizing::new(sym), Zeroizing::new(mac)))
    }

    /// TPM2B(outerHMAC) ‖ AES-CFB(plain), IV zero.
    fn wrap(&self, name: &[u8], plain: &[u8]) -> CmdResult<Vec<u8>> {
        let (sym, mac) = self.keys(name)?;
        let enc = aes_encrypt(SymMode::Cfb, &sym, &[0; 16], plain)
            .map_err(|e| key::alg_rc(e, rc::KEY))?
            .data;
        let mut w = Writer::new();
        w.tpm2b(&self.hash.hmac(&mac, &[&enc, name]));
        w.bytes(&enc);
        Ok(w.buf)
    }

    /// Check the outer HMAC (TPM_RC_INTEGRITY) and decrypt.
    fn unwrap(&self, name: &[u8], blob: &[u8]) -> CmdResult<Zeroizing<Vec<u8>>> {
        let mut r = Reader::new(blob);
        let outer = r.tpm2b(MAX_DIGEST).map_err(|_| Rc::new(rc::INSUFFICIENT))?;
        let enc = r.rest();
        if outer.len() != self.hash.size() {
            return Err(Rc::new(rc::SIZE));
        }
        let (sym, mac) = self.keys(name)?;
        if !ct_eq(&self.hash.hmac(&mac, &[enc, name]), outer) {
            return Err(Rc::new(rc::INTEGRITY));
        }
        Ok(Zeroizing::new(
            aes_decrypt(SymMode::Cfb, &sym, &[0; 16], enc)
                .map_err(|_| Rc::new(rc::INTEGRITY))?
                .data,
        ))
    }
}

/// TPMT_SYM_DEF_OBJECT+ (AES only; the inner wrapper always runs CFB).
fn read_sym_def_object(r: &mut Reader) -> CmdResult<Option<SymDef>> {
    let a = r.u16()?;
    if a == alg::NULL {
        return Ok(None);
    }
    if a != alg::AES {
        return Err(Rc::new(rc::SYMMETRIC));
    }
    let key_bits = r.u16()?;
    if !AES_KEY_BITS.contains(&key_bits) {
        return Err(Rc::new(rc::KEY_SIZE));
    }
    let mode = r.u16()?;
    if mode != alg::CFB && mode != alg::NULL && !crate::public::SYM_MODES.contains(&mode) {
        return Err(Rc::new(rc::MODE));
    }
    Ok(Some(SymDef {
        alg: a,
        key_bits,
        mode,
    }))
}

// ------------------------------------------------------------- duplication

/// TPM2B_SENSITIVE of an object.
fn sensitive_2b(kind: u16, s: &Sensitive) -> Zeroizing<Vec<u8>> {
    let mut inner = Writer::new();
    s.write(kind, &mut inner);
    let mut w = Writer::new();
    w.tpm2b(&inner.buf);
    zeroize::Zeroize::zeroize(&mut inner.buf);
    Zeroizing::new(core::mem::take(&mut w.buf))
}

/// The inner wrapper: AES-CFB(innerKey, TPM2B(H_nameAlg(sensitive ‖ name)) ‖ sensitive).
fn inner_wrap(h: HashAlg, name: &[u8], sens: &[u8], key: &[u8]) -> CmdResult<Vec<u8>> {
    let mut plain = Writer::new();
    plain.tpm2b(&h.digest(&[sens, name]));
    plain.bytes(sens);
    let plain = Zeroizing::new(plain.buf);
    Ok(aes_encrypt(SymMode::Cfb, key, &[0; 16], &plain)
        .map_err(|e| key::alg_rc(e, rc::KEY))?
        .data)
}

fn inner_unwrap(h: HashAlg, name: &[u8], enc: &[u8], key: &[u8]) -> CmdResult<Zeroizing<Vec<u8>>> {
    let plain = Zeroizing::new(
        aes_decrypt(SymMode::Cfb, key, &[0; 16], enc)
            .map_err(|_| Rc::new(rc::INTEGRITY))?
            .data,
    );
    let mut r = Reader::new(&plain);
    let integrity = r.tpm2b(MAX_DIGEST).map_err(|_| Rc::new(rc::INTEGRITY))?;
    let sens = r.rest();
    if !ct_eq(&h.digest(&[sens, name]), integrity) {
        return Err(Rc::new(rc::INTEGRITY));
    }
    Ok(Zeroizing::new(sens.to_vec()))
}

/// TPM2_Duplicate (DUP role: a policy session authorizes it).
pub fn duplicate(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let key_in = Zeroizing::new(call.params.tpm2b(key::MAX_DATA).p(1)?.to_vec());
    let sym = read_sym_def_object(&mut call.params).p(2)?;
    call.done()?;
    let object = key_at(cx, call.handle(0), 1)?;
    let new_parent_handle = call.handle(1);
    let new_parent = if new_parent_handle == rh::NULL {
        None
    } else {
        Some(key_at(cx, new_parent_handle, 2)?)
    };
    if object.public.has(oa::FIXED_PARENT) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    let Some(h) = object.public.name_alg else {
        return Err(Rc::handle(rc::TYPE, 1));
    };
    let s = object.sensitive.as_ref().ok_or(Rc::handle(rc::TYPE, 1))?;
    if let Some(p) = &new_parent
        && (!p.public.is_storage() || !is_seed_key(p))
    {
        return Err(Rc::handle(rc::TYPE, 2));
    }
    if object.public.has(oa::ENCRYPTED_DUPLICATION) {
        if sym.is_none() {
            return Err(Rc::param(rc::SYMMETRIC, 2));
        }
        if new_parent.is_none() {
            return Err(Rc::handle(rc::HIERARCHY, 2));
        }
    }
    let inner_key = match sym {
        None if !key_in.is_empty() => return Err(Rc::param(rc::SIZE, 1)),
        None => None,
        Some(d) => {
            let n = usize::from(d.key_bits / 8);
            if key_in.is_empty() {
                let mut k = Zeroizing::new(alloc::vec![0u8; n]);
                crate::command::random(cx, &mut k)?;
                Some((k, true))
            } else if key_in.len() == n {
                Some((key_in.clone(), false))
            } else {
                return Err(Rc::param(rc::SIZE, 1));
            }
        }
    };
    let sens = sensitive_2b(object.public.kind, s);
    let name = object.name.clone();
    let mut data = match &inner_key {
        Some((k, _)) => inner_wrap(h, &name, &sens, k)?,
        None => sens.to_vec(),
    };
    let mut out_seed = Vec::new();
    if let Some(p) = &new_parent {
        let (seed, secret) =
            key::encrypt_seed(cx, p, DUPLICATE).map_err(|e| Rc::handle(e.base, 2))?;
        data = Outer::of(p, &seed)
            .map_err(|e| Rc::handle(e.base, 2))?
            .wrap(&name, &data)?;
        out_seed = secret;
    }
    match &inner_key {
        Some((k, true)) => call.out.tpm2b(k),
        _ => call.out.tpm2b(&[]),
    }
    call.out.tpm2b(&data);
    call.out.tpm2b(&out_seed);
    Ok(())
}

/// DuplicateToSensitive: remove the outer (seed given) and inner wrappers.
fn duplicate_to_sensitive(
    cx: &mut Ctx,
    parent: &KeyObject,
    name: &[u8],
    h: HashAlg,
    blob: &[u8],
    sym_seed: &[u8],
    inner: Option<&[u8]>,
) -> CmdResult<Zeroizing<Vec<u8>>> {
    let mut data = Zeroizing::new(blob.to_vec());
    if !sym_seed.is_empty() {
        let seed = key::decrypt_seed(cx, parent, sym_seed, DUPLICATE).p(4)?;
        data = Outer::of(parent, &seed)
            .map_err(|e| Rc::handle(e.base, 1))?
            .unwrap(name, &data)
            .p(3)?;
    }
    if let Some(k) = inner {
        data = inner_unwrap(h, name, &data, k).p(3)?;
    }
    Ok(data)
}

fn read_sensitive_2b(kind: u16, data: &[u8]) -> CmdResult<Sensitive> {
    let mut r = Reader::new(data);
    let body = r.tpm2b(MAX_PRIVATE)?;
    r.finish()?;
    let mut br = Reader::new(body);
    let s = Sensitive::read(&mut br, kind)?;
    br.finish()?;
    Ok(s)
}

/// TPM2_Import: a duplicated object becomes a child of `parentHandle`.
pub fn import(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let key_in = Zeroizing::new(call.params.tpm2b(key::MAX_DATA).p(1)?.to_vec());
    let (public, _) = key::read_public_2b(&mut call.params, false).p(2)?;
    let dup = call.params.tpm2b(MAX_PRIVATE).p(3)?.to_vec();
    let sym_seed = call.params.tpm2b(MAX_SECRET).p(4)?.to_vec();
    let sym = read_sym_def_object(&mut call.params).p(5)?;
    call.done()?;
    let parent = key_at(cx, call.handle(0), 1)?;
    if !parent.public.is_storage() || parent.sensitive.is_none() {
        return Err(Rc::handle(rc::TYPE, 1));
    }
    if public.has(oa::FIXED_TPM) || public.has(oa::FIXED_PARENT) {
        return Err(Rc::param(rc::ATTRIBUTES, 2));
    }
    if public.has(oa::ENCRYPTED_DUPLICATION) {
        if sym.is_none() {
            return Err(Rc::param(rc::SYMMETRIC, 5));
        }
        if sym_seed.is_empty() {
            return Err(Rc::param(rc::ATTRIBUTES, 4));
        }
    }
    match sym {
        Some(d) if key_in.len() != usize::from(d.key_bits / 8) => {
            return Err(Rc::param(rc::SIZE, 1));
        }
        None if !key_in.is_empty() => return Err(Rc::param(rc::SIZE, 1)),
        _ => {}
    }
    if !sym_seed.is_empty() && !is_seed_key(&parent) {
        return Err(Rc::handle(rc::TYPE, 1));
    }
    let h = public.hash();
    let name = key::name_of(public.name_alg, &public.to_bytes());
    let inner = sym.map(|_| key_in.as_slice());
    let data = duplicate_to_sensitive(cx, &parent, &name, h, &dup, &sym_seed, inner)?;
    let s = read_sensitive_2b(public.kind, &data).map_err(|_| Rc::param(rc::INTEGRITY, 3))?;
    key::check_attributes(Some(&parent.public), &public).p(2)?;
    if s.auth.len() > h.size() {
        return Err(Rc::param(rc::SIZE, 3));
    }
    key::private_from_sensitive(&public, &s).map_err(|e| {
        if e.base == rc::BINDING {
            Rc::new(rc::BINDING)
        } else {
            Rc::param(e.base, 3)
        }
    })?;
    let private = key::ParentProtection::of(&parent)
        .map_err(|e| Rc::handle(e.base, 1))?
        .wrap(public.kind, &name, &s)?;
    call.out.tpm2b(&private);
    Ok(())
}

/// TPM2_Rewrap: move a duplication blob from one parent's outer wrapper to
/// another's (either may be TPM_RH_NULL: no outer wrapper).
pub fn rewrap(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let blob = call.params.tpm2b(MAX_PRIVATE).p(1)?.to_vec();
    let name = call.params.tpm2b(MAX_DIGEST + 2).p(2)?.to_vec();
    let in_seed = call.params.tpm2b(MAX_SECRET).p(3)?.to_vec();
    call.done()?;
    let old = match call.handle(0) {
        rh::NULL => None,
        hd => Some(key_at(cx, hd, 1)?),
    };
    let new = match call.handle(1) {
        rh::NULL => None,
        hd => Some(key_at(cx, hd, 2)?),
    };
    if let Some(k) = &old
        && (!is_seed_key(k) || !k.public.is_storage() || k.private.is_none())
    {
        return Err(Rc::handle(rc::TYPE, 1));
    }
    if let Some(k) = &new
        && (!is_seed_key(k) || !k.public.is_storage())
    {
        return Err(Rc::handle(rc::TYPE, 2));
    }
    let mut data = Zeroizing::new(blob);
    if let Some(k) = &old {
        if in_seed.is_empty() {
            return Err(Rc::param(rc::VALUE, 3));
        }
        let seed = key::decrypt_seed(cx, k, &in_seed, DUPLICATE).p(3)?;
        data = Outer::of(k, &seed)
            .map_err(|e| Rc::handle(e.base, 1))?
            .unwrap(&name, &data)
            .p(1)?;
    } else if !in_seed.is_empty() {
        return Err(Rc::param(rc::SIZE, 3));
    }
    let (out, out_seed) = match &new {
        Some(k) => {
            let (seed, secret) =
                key::encrypt_seed(cx, k, DUPLICATE).map_err(|e| Rc::handle(e.base, 2))?;
            let out = Outer::of(k, &seed)
                .map_err(|e| Rc::handle(e.base, 2))?
                .wrap(&name, &data)?;
            (out, secret)
        }
        None => (data.to_vec(), Vec::new()),
    };
    call.out.tpm2b(&out);
    call.out.tpm2b(&out_seed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::command::object::tests::*;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, rc_of, started};

    const DUPLICATE: u32 = 0x14B;
    const IMPORT: u32 = 0x156;
    const REWRAP: u32 = 0x152;

    /// sensitiveDataOrigin|userWithAuth|sign: a duplicable ECDSA key whose
    /// authPolicy is PolicyCommandCode(TPM2_Duplicate).
    fn duplicable(policy: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&[0x00, 0x23, 0x00, 0x0B]);
        t.extend_from_slice(&0x0004_0060u32.to_be_bytes());
        t.extend_from_slice(&u16::try_from(policy.len()).unwrap().to_be_bytes());
        t.extend_from_slice(policy);
        t.extend_from_slice(&[
            0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x10, 0, 0, 0, 0,
        ]);
        t
    }

    fn dup_policy() -> Vec<u8> {
        HashAlg::Sha256.digest(&[&[0; 32], &0x16Cu32.to_be_bytes(), &DUPLICATE.to_be_bytes()])
    }

    /// A policy session that has run PolicyCommandCode(TPM2_Duplicate).
    fn dup_session(tpm: &mut Tpm<TestPlatform>) -> u32 {
        let start = Cmd::new(0x176)
            .h(NULL)
            .h(NULL)
            .tpm2b(&[7; 16])
            .u16(0)
            .u8(1)
            .u16(0x10)
            .u16(0x0B);
        let r = tpm.execute(0, &start.bytes());
        assert_eq!(rc_of(&r), 0);
        let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
        let cc = Cmd::new(0x16C).h(s).u32(DUPLICATE);
        assert_eq!(rc_of(&tpm.execute(0, &cc.bytes())), 0);
        s
    }

    /// A command whose first (password) session is replaced by `session`
    /// with an empty HMAC (an unbound, unsalted policy session has no key).
    fn with_session(cmd: &Cmd, session: u32) -> Vec<u8> {
        let mut b = cmd.bytes();
        let pos = 10 + 4 * cmd.handles.len() + 4;
        b[pos..pos + 4].copy_from_slice(&session.to_be_bytes());
        // continueSession CLEAR: the session ends with the command.
        b[pos + 6] = 0;
        b
    }

    fn duplicate_cmd(object: u32, parent: u32, key: &[u8], aes: bool) -> Cmd {
        let c = Cmd::new(DUPLICATE).h(object).h(parent).pw(b"").tpm2b(key);
        if aes {
            c.u16(0x06).u16(128).u16(0x43)
        } else {
            c.u16(0x10)
        }
    }

    fn import_cmd(parent: u32, key: &[u8], public: &[u8], dup: &[u8], seed: &[u8]) -> Cmd {
        let c = Cmd::new(IMPORT)
            .h(parent)
            .pw(b"")
            .tpm2b(key)
            .tpm2b(public)
            .tpm2b(dup)
            .tpm2b(seed);
        if key.is_empty() {
            c.u16(0x10)
        } else {
            c.u16(0x06).u16(128).u16(0x43)
        }
    }

    /// (rc, encryptionKeyOut, duplicate, outSymSeed).
    fn run_duplicate(
        tpm: &mut Tpm<TestPlatform>,
        object: u32,
        parent: u32,
        key: &[u8],
        aes: bool,
    ) -> (u32, Vec<u8>, Vec<u8>, Vec<u8>) {
        let s = dup_session(tpm);
        let cmd = duplicate_cmd(object, parent, key, aes);
        let (rc, _, body) = split(&tpm.execute(0, &with_session(&cmd, s)), false);
        if rc != 0 {
            return (rc, Vec::new(), Vec::new(), Vec::new());
        }
        let (k, p) = tpm2b(&body, 0);
        let (d, p) = tpm2b(&body, p);
        let (seed, _) = tpm2b(&body, p);
        (rc, k, d, seed)
    }

    #[test]
    fn duplicate_then_import_under_another_parent() {
        let mut tpm = started();
        let (rc, mut a, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        assert_eq!(rc, 0);
        let (rc, b, _, _) = primary(&mut tpm, ENDORSEMENT, b"", &srk_ecc());
        assert_eq!(rc, 0);
        let (rc, private, public) = create(
            &mut tpm,
            a,
            &sensitive(b"k", b""),
            &duplicable(&dup_policy()),
        );
        assert_eq!(rc, 0, "{rc:#x}");
        let (rc, key) = load(&mut tpm, a, &private, &public);
        assert_eq!(rc, 0, "{rc:#x}");

        // The DUP role needs a policy session: a password is TPM_RC_AUTH_TYPE.
        let pw = duplicate_cmd(key, b, b"", false);
        assert_eq!(rc_of(&tpm.execute(0, &pw.bytes())), 0x124);
        // A policy session without PolicyCommandCode fails the policy.
        let start = Cmd::new(0x176)
            .h(NULL)
            .h(NULL)
            .tpm2b(&[7; 16])
            .u16(0)
            .u8(1)
            .u16(0x10)
            .u16(0x0B);
        let r = tpm.execute(0, &start.bytes());
        let bare = u32::from_be_bytes(r[10..14].try_into().unwrap());
        assert_eq!(rc_of(&tpm.execute(0, &with_session(&pw, bare))), 0x99D);
        flush(&mut tpm, bare);

        for aes in [false, true] {
            let (rc, inner, dup, seed) = run_duplicate(&mut tpm, key, b, b"", aes);
            assert_eq!(rc, 0, "{rc:#x}");
            assert_eq!(inner.len(), if aes { 16 } else { 0 });
            assert!(!seed.is_empty());
            let import = import_cmd(b, &inner, &public, &dup, &seed);
            let (rc, _, body) = split(&tpm.execute(0, &import.bytes()), false);
            assert_eq!(rc, 0, "{rc:#x}");
            let (new_private, _) = tpm2b(&body, 0);
            // Three object slots: make room for the imported key.
            flush(&mut tpm, a);
            let (rc, h) = load(&mut tpm, b, &new_private, &public);
            assert_eq!(rc, 0, "{rc:#x}");
            flush(&mut tpm, h);
            a = primary(&mut tpm, OWNER, b"", &srk_ecc()).1;
            // A flipped bit, a wrong inner key or the wrong parent: TPM_RC_INTEGRITY (duplicate).
            let mut bad = dup.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            let import = import_cmd(b, &inner, &public, &bad, &seed);
            assert_eq!(rc_of(&tpm.execute(0, &import.bytes())), 0x3DF);
            if aes {
                let import = import_cmd(b, &[9; 16], &public, &dup, &seed);
                assert_eq!(rc_of(&tpm.execute(0, &import.bytes())), 0x3DF);
            }
            let import = import_cmd(a, &inner, &public, &dup, &seed);
            assert_ne!(rc_of(&tpm.execute(0, &import.bytes())), 0);
        }

        // Rewrap moves the blob from parent b's outer wrapper to a's.
        let (_, _, dup, seed) = run_duplicate(&mut tpm, key, b, b"", false);
        let name = {
            let r = tpm.execute(0, &Cmd::new(0x173).h(key).bytes());
            let (_, p) = tpm2b(&r, 10);
            tpm2b(&r, p).0
        };
        let rewrap = Cmd::new(REWRAP)
            .h(b)
            .h(a)
            .pw(b"")
            .tpm2b(&dup)
            .tpm2b(&name)
            .tpm2b(&seed);
        let (rc, _, body) = split(&tpm.execute(0, &rewrap.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (dup2, p) = tpm2b(&body, 0);
        let (seed2, _) = tpm2b(&body, p);
        let import = import_cmd(a, b"", &public, &dup2, &seed2);
        assert_eq!(split(&tpm.execute(0, &import.bytes()), false).0, 0);

        // Without a new parent there is no outer wrapper.
        let (rc, _, dup, seed) = run_duplicate(&mut tpm, key, NULL, b"", false);
        assert_eq!(rc, 0, "{rc:#x}");
        assert!(seed.is_empty());
        let import = import_cmd(a, b"", &public, &dup, b"");
        assert_eq!(split(&tpm.execute(0, &import.bytes()), false).0, 0);
    }

    #[test]
    fn duplicate_refuses_fixed_parent_and_import_fixed_objects() {
        let mut tpm = started();
        let (_, a, srk_public, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let (rc, private, public) =
            create(&mut tpm, a, &sensitive(b"", b""), &ecc_signer(SIGN_ATTRS));
        assert_eq!(rc, 0);
        let (_, key) = load(&mut tpm, a, &private, &public);
        let s = dup_session(&mut tpm);
        let cmd = duplicate_cmd(key, NULL, b"", false);
        // The key has no authPolicy: a policy session cannot authorize it.
        assert_ne!(rc_of(&tpm.execute(0, &with_session(&cmd, s))), 0);
        // Importing a fixedTPM object is TPM_RC_ATTRIBUTES (objectPublic).
        let import = import_cmd(a, b"", &public, &[0, 0], b"");
        assert_eq!(rc_of(&tpm.execute(0, &import.bytes())), 0x2C2);
        // An inner key without a symmetric algorithm: TPM_RC_SIZE (encryptionKey).
        let import = import_cmd(a, b"", &duplicable(&[]), &[0, 0], b"");
        let mut bytes = import.bytes();
        bytes.truncate(bytes.len() - 2);
        let _ = srk_public;
        assert_ne!(rc_of(&tpm.execute(0, &bytes)), 0);
    }

    fn name_of(tpm: &mut Tpm<TestPlatform>, h: u32) -> Vec<u8> {
        let r = tpm.execute(0, &Cmd::new(0x173).h(h).bytes());
        assert_eq!(rc_of(&r), 0);
        let (_, p) = tpm2b(&r, 10);
        tpm2b(&r, p).0
    }

    /// PolicyDuplicationSelect pins the new parent: its nameHash is checked
    /// against the Names of Duplicate's handles.
    #[test]
    fn duplication_select_pins_the_new_parent() {
        let mut tpm = started();
        let (_, a, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let (_, b, _, _) = primary(&mut tpm, ENDORSEMENT, b"", &srk_ecc());
        let b_name = name_of(&mut tpm, b);
        let policy = HashAlg::Sha256.digest(&[&[0; 32], &0x188u32.to_be_bytes(), &b_name, &[0]]);
        let (rc, private, public) = create(&mut tpm, a, &sensitive(b"", b""), &duplicable(&policy));
        assert_eq!(rc, 0, "{rc:#x}");
        let (_, key) = load(&mut tpm, a, &private, &public);
        let key_name = name_of(&mut tpm, key);
        let select = |tpm: &mut Tpm<TestPlatform>| {
            let start = Cmd::new(0x176)
                .h(NULL)
                .h(NULL)
                .tpm2b(&[7; 16])
                .u16(0)
                .u8(1)
                .u16(0x10)
                .u16(0x0B);
            let r = tpm.execute(0, &start.bytes());
            let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
            let sel = Cmd::new(0x188).h(s).tpm2b(&key_name).tpm2b(&b_name).u8(0);
            assert_eq!(rc_of(&tpm.execute(0, &sel.bytes())), 0);
            s
        };
        let s = select(&mut tpm);
        let to_a = duplicate_cmd(key, a, b"", false);
        assert_eq!(rc_of(&tpm.execute(0, &with_session(&to_a, s))), 0x99D);
        let s = select(&mut tpm);
        let to_b = duplicate_cmd(key, b, b"", false);
        assert_eq!(rc_of(&tpm.execute(0, &with_session(&to_b, s))), 0);
    }

    /// Truncated and corrupted Duplicate, Import, Rewrap and part-3 policy
    /// commands get well-formed responses, never a panic.
    #[test]
    fn mangled_part3_commands_do_not_panic() {
        let mut tpm = started();
        let (_, a, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let (_, private, public) = create(
            &mut tpm,
            a,
            &sensitive(b"", b""),
            &duplicable(&dup_policy()),
        );
        let (_, key) = load(&mut tpm, a, &private, &public);
        let (_, _, dup, seed) = run_duplicate(&mut tpm, key, a, b"", true);
        let s = dup_session(&mut tpm);
        let cmds = [
            duplicate_cmd(key, a, b"", true).bytes(),
            import_cmd(a, &[1; 16], &public, &dup, &seed).bytes(),
            Cmd::new(REWRAP)
                .h(a)
                .h(a)
                .pw(b"")
                .tpm2b(&dup)
                .tpm2b(&[0; 34])
                .tpm2b(&seed)
                .bytes(),
            Cmd::new(0x160)
                .h(key)
                .h(s)
                .tpm2b(b"")
                .tpm2b(b"")
                .tpm2b(b"")
                .u32(0)
                .u16(0x18)
                .u16(0x0B)
                .tpm2b(&[1; 32])
                .tpm2b(&[2; 32])
                .bytes(),
            Cmd::new(0x172)
                .h(s)
                .tpm2b(&[0; 8])
                .tpm2b(b"")
                .tpm2b(b"")
                .tpm2b(&[0; 34])
                .u16(0x8025)
                .u32(OWNER)
                .tpm2b(&[0; 48])
                .bytes(),
            Cmd::new(0x16D).h(s).tpm2b(&[0; 8]).u16(0).u16(3).bytes(),
            Cmd::new(0x188)
                .h(s)
                .tpm2b(&[1; 34])
                .tpm2b(&[2; 34])
                .u8(1)
                .bytes(),
            Cmd::new(0x170).h(s).tpm2b(&[3; 32]).bytes(),
        ];
        let mut seed_state = 0x2545_F491u32;
        for bytes in &cmds {
            for n in 0..bytes.len() {
                rc_of(&tpm.execute(0, &bytes[..n]));
            }
            for _ in 0..200 {
                let mut b = bytes.clone();
                seed_state ^= seed_state << 13;
                seed_state ^= seed_state >> 17;
                seed_state ^= seed_state << 5;
                let i = seed_state as usize % b.len();
                b[i] ^= (seed_state >> 24) as u8 | 1;
                rc_of(&tpm.execute(0, &b));
            }
        }
    }
}
