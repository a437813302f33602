//! Signing and verification (Part 3 §20): Sign and VerifySignature, and the
//! scheme selection and TPMT_SIGNATURE production that the attestation
//! commands share.

use alloc::vec::Vec;

use crate::alg::sign::{
    EcdsaSignature, ecdsa_sign, ecdsa_verify, hmac_sign, hmac_verify, rsapss_sign, rsapss_verify,
    rsassa_sign, rsassa_verify,
};
use crate::command::object::key_at;
use crate::command::read_hash_alg;
use crate::crypto::{HashAlg, ct_eq};
use crate::dispatch::{Call, Ctx};
use crate::key::{self, KeyObject, PrivateKey, oa};
use crate::marshal::{Reader, Writer};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, alg, rh, st};

/// A signing scheme with its hash (TPMT_SIG_SCHEME with a scheme chosen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigScheme {
    pub alg: u16,
    pub hash: HashAlg,
}

/// TPMT_SIG_SCHEME+: None for TPM_ALG_NULL (errors without a location).
pub fn read_sig_scheme(r: &mut Reader) -> CmdResult<Option<SigScheme>> {
    let a = r.u16()?;
    match a {
        alg::NULL => Ok(None),
        alg::RSASSA | alg::RSAPSS | alg::ECDSA | alg::HMAC => Ok(Some(SigScheme {
            alg: a,
            hash: read_hash_alg(r)?,
        })),
        _ => Err(Rc::new(rc::SCHEME)),
    }
}

/// Whether `scheme` signs with a key of this type.
fn fits(k: &KeyObject, scheme: u16) -> bool {
    match k.public.kind {
        alg::RSA => matches!(scheme, alg::RSASSA | alg::RSAPSS),
        alg::ECC => scheme == alg::ECDSA,
        alg::KEYEDHASH => scheme == alg::HMAC,
        _ => false,
    }
}

/// CryptSelectSignScheme: the key's own scheme, or the caller's when the
/// key has none; both given must agree. TPM_RC_SCHEME otherwise (no location).
pub fn select_scheme(k: &KeyObject, requested: Option<SigScheme>) -> CmdResult<SigScheme> {
    let own = k.public.scheme();
    let chosen = if own.alg == alg::NULL {
        requested.ok_or(Rc::new(rc::SCHEME))?
    } else {
        let own = SigScheme {
            alg: own.alg,
            hash: own.hash.ok_or(Rc::new(rc::SCHEME))?,
        };
        if requested.is_some_and(|r| r != own) {
            return Err(Rc::new(rc::SCHEME));
        }
        own
    };
    if !fits(k, chosen.alg) {
        return Err(Rc::new(rc::SCHEME));
    }
    Ok(chosen)
}

/// Sign `digest` with `k` and write the TPMT_SIGNATURE.
pub fn sign_digest(
    cx: &mut Ctx,
    k: &KeyObject,
    scheme: SigScheme,
    digest: &[u8],
    out: &mut Writer,
) -> CmdResult<()> {
    let h = scheme.hash;
    let mut rng = key::fresh_rng(cx, b"Sign")?;
    let fail = |e| key::alg_rc(e, rc::KEY);
    out.u16(scheme.alg);
    out.u16(h.id());
    match (scheme.alg, &k.private) {
        (alg::RSASSA, Some(PrivateKey::Rsa(key))) => {
            out.tpm2b(&rsassa_sign(&mut rng, key, h, digest).map_err(fail)?);
        }
        (alg::RSAPSS, Some(PrivateKey::Rsa(key))) => {
            out.tpm2b(&rsapss_sign(&mut rng, key, h, digest).map_err(fail)?);
        }
        (alg::ECDSA, Some(PrivateKey::Ecc(key))) => {
            let sig = ecdsa_sign(&mut rng, key, digest).map_err(fail)?;
            out.tpm2b(&sig.r);
            out.tpm2b(&sig.s);
        }
        (alg::HMAC, Some(PrivateKey::Bits)) => {
            out.bytes(&hmac_sign(h, k.secret(), digest));
        }
        _ => return Err(Rc::new(rc::KEY)),
    }
    Ok(())
}

/// A key that can sign: sign attribute SET and a private part
/// (TPM_RC_KEY for the handle otherwise).
pub fn check_signer(k: &KeyObject, n: u8) -> CmdResult<()> {
    if !k.public.has(oa::SIGN) || k.private.is_none() {
        return Err(Rc::handle(rc::KEY, n));
    }
    Ok(())
}

/// TPMT_TK_HASHCHECK: (hierarchy, digest). Errors without a location.
fn read_hashcheck(r: &mut Reader) -> CmdResult<(u32, Vec<u8>)> {
    if r.u16()? != st::HASHCHECK {
        return Err(Rc::new(rc::TAG));
    }
    let h = crate::command::read_hierarchy_or_null(r)?;
    let d = r.tpm2b(spec::MAX_DIGEST)?.to_vec();
    Ok((h, d))
}

pub fn sign(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let digest = call.params.tpm2b(spec::MAX_DIGEST).p(1)?.to_vec();
    let requested = read_sig_scheme(&mut call.params).p(2)?;
    let (ticket_h, ticket) = read_hashcheck(&mut call.params).p(3)?;
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    check_signer(&k, 1)?;
    let scheme = select_scheme(&k, requested).p(2)?;
    // A restricted key signs only digests the TPM hashed itself (with a
    // ticket); without a ticket the digest must have the scheme's size.
    if k.public.has(oa::RESTRICTED) || !ticket.is_empty() {
        let h =
            crate::hierarchy::Hierarchy::from_handle(ticket_h).ok_or(Rc::param(rc::TICKET, 3))?;
        let tag = st::HASHCHECK.to_be_bytes();
        let expect = if ticket_h == rh::NULL {
            None
        } else {
            Some(crate::command::CONTEXT_HASH.hmac(&h.proof(cx.core), &[&tag, &digest]))
        };
        if !expect.is_some_and(|e| ct_eq(&e, &ticket)) {
            return Err(Rc::param(rc::TICKET, 3));
        }
    } else if digest.len() != scheme.hash.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    let mut out = Writer::new();
    sign_digest(cx, &k, scheme, &digest, &mut out)?;
    call.out.bytes(&out.buf);
    Ok(())
}

/// A TPMT_SIGNATURE as read from a command.
pub enum Signature {
    Rsa {
        scheme: u16,
        hash: HashAlg,
        sig: Vec<u8>,
    },
    Ecdsa(EcdsaSignature),
    Hmac {
        hash: HashAlg,
        mac: Vec<u8>,
    },
}

pub fn read_signature(r: &mut Reader) -> CmdResult<Signature> {
    let a = r.u16()?;
    match a {
        alg::RSASSA | alg::RSAPSS => Ok(Signature::Rsa {
            scheme: a,
            hash: read_hash_alg(r)?,
            sig: r.tpm2b(key::MAX_RSA_BYTES)?.to_vec(),
        }),
        alg::ECDSA => {
            // The digest is given; the hash only has to be a valid one.
            read_hash_alg(r)?;
            let rr = r.tpm2b(key::MAX_ECC_BYTES)?.to_vec();
            let s = r.tpm2b(key::MAX_ECC_BYTES)?.to_vec();
            Ok(Signature::Ecdsa(EcdsaSignature { r: rr, s }))
        }
        alg::HMAC => {
            let hash = read_hash_alg(r)?;
            let mac = r.bytes(hash.size())?.to_vec();
            Ok(Signature::Hmac { hash, mac })
        }
        _ => Err(Rc::new(rc::SCHEME)),
    }
}

/// Check `sig` over `digest` with `k` (TPM_RC_SIGNATURE / TPM_RC_SCHEME, no location).
pub fn verify(k: &KeyObject, digest: &[u8], sig: &Signature) -> CmdResult<()> {
    let bad = |_| Rc::new(rc::SIGNATURE);
    match sig {
        Signature::Rsa { scheme, hash, sig } if k.public.kind == alg::RSA => {
            let public = k.rsa_public()?;
            if *scheme == alg::RSASSA {
                rsassa_verify(&public, *hash, digest, sig).map_err(bad)
            } else {
                rsapss_verify(&public, *hash, digest, sig).map_err(bad)
            }
        }
        Signature::Ecdsa(sig) if k.public.kind == alg::ECC => {
            ecdsa_verify(&k.ecc_public()?, digest, sig).map_err(bad)
        }
        Signature::Hmac { hash, mac } if k.public.kind == alg::KEYEDHASH => {
            if k.sensitive.is_none() {
                return Err(Rc::new(rc::KEY));
            }
            hmac_verify(*hash, k.secret(), digest, mac).map_err(bad)
        }
        _ => Err(Rc::new(rc::SCHEME)),
    }
}

pub fn verify_signature(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let digest = call.params.tpm2b(spec::MAX_DIGEST).p(1)?.to_vec();
    let sig = read_signature(&mut call.params).p(2)?;
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    if !k.public.has(oa::SIGN) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    verify(&k, &digest, &sig).p(2)?;
    // TPMT_TK_VERIFIED: HMAC(proof, TPM_ST_VERIFIED || digest || keyName).
    call.out.u16(st::VERIFIED);
    if k.hierarchy == crate::hierarchy::Hierarchy::Null || k.public.name_alg.is_none() {
        call.out.u32(rh::NULL);
        call.out.u16(0);
        return Ok(());
    }
    let tag = st::VERIFIED.to_be_bytes();
    let t = key::ticket(cx, k.hierarchy, &[&tag, &digest, &k.name])?;
    call.out.u32(k.hierarchy.handle());
    call.out.tpm2b(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::command::object::tests::*;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, rc_of, started};

    const SIGN: u32 = 0x15D;
    const VERIFY: u32 = 0x177;

    fn null_ticket() -> Vec<u8> {
        alloc::vec![0x80, 0x24, 0x40, 0, 0, 7, 0, 0]
    }

    fn sign(
        tpm: &mut Tpm<TestPlatform>,
        key: u32,
        digest: &[u8],
        scheme: &[u8],
        ticket: &[u8],
    ) -> (u32, Vec<u8>) {
        let cmd = Cmd::new(SIGN)
            .h(key)
            .pw(b"")
            .tpm2b(digest)
            .b(scheme)
            .b(ticket);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        (rc, body)
    }

    fn verify(tpm: &mut Tpm<TestPlatform>, key: u32, digest: &[u8], sig: &[u8]) -> (u32, Vec<u8>) {
        let resp = tpm.execute(0, &Cmd::new(VERIFY).h(key).tpm2b(digest).b(sig).bytes());
        (rc_of(&resp), resp[10..].to_vec())
    }

    #[test]
    fn sign_and_verify_every_scheme() {
        let mut tpm = started();
        let digest = HashAlg::Sha256.digest(&[b"message"]);
        let (rc, ecc, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(SIGN_ATTRS));
        assert_eq!(rc, 0);
        let (rc, sig) = sign(&mut tpm, ecc, &digest, &[0, 0x10], &null_ticket());
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(&sig[..4], &[0, 0x18, 0, 0x0B]);
        let (rc, ticket) = verify(&mut tpm, ecc, &digest, &sig);
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(&ticket[..6], &[0x80, 0x22, 0x40, 0, 0, 1]);
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(verify(&mut tpm, ecc, &digest, &bad).0, 0x2DB);
        // The key's scheme is ECDSA-SHA256: another hash is TPM_RC_SCHEME.
        assert_eq!(
            sign(&mut tpm, ecc, &digest, &[0, 0x18, 0, 0x0C], &null_ticket()).0,
            0x2D2
        );
        // A digest of the wrong size.
        assert_eq!(
            sign(&mut tpm, ecc, &digest[..20], &[0, 0x10], &null_ticket()).0,
            0x1D5
        );
        flush(&mut tpm, ecc);

        let (rc, rsa, _, _) = primary(&mut tpm, OWNER, b"", &rsa_signer(SIGN_ATTRS, 0x10));
        assert_eq!(rc, 0);
        for scheme in [0x14u16, 0x16] {
            let mut s = scheme.to_be_bytes().to_vec();
            s.extend_from_slice(&[0, 0x0B]);
            let (rc, sig) = sign(&mut tpm, rsa, &digest, &s, &null_ticket());
            assert_eq!(rc, 0, "{rc:#x}");
            assert_eq!(sig.len(), 4 + 2 + 256);
            assert_eq!(verify(&mut tpm, rsa, &digest, &sig).0, 0);
            let other = HashAlg::Sha256.digest(&[b"other"]);
            assert_eq!(verify(&mut tpm, rsa, &other, &sig).0, 0x2DB);
        }
        // No scheme on key or command; an ECDSA scheme on an RSA key.
        assert_eq!(
            sign(&mut tpm, rsa, &digest, &[0, 0x10], &null_ticket()).0,
            0x2D2
        );
        assert_eq!(
            sign(&mut tpm, rsa, &digest, &[0, 0x18, 0, 0x0B], &null_ticket()).0,
            0x2D2
        );
        flush(&mut tpm, rsa);

        // HMAC with a keyedHash key.
        let hmac_key = template(8, SIGN_ATTRS, &[0x00, 0x05, 0x00, 0x0B, 0x00, 0x00]);
        let (rc, hk, _, _) = primary(&mut tpm, OWNER, b"", &hmac_key);
        assert_eq!(rc, 0, "{rc:#x}");
        let (rc, sig) = sign(&mut tpm, hk, &digest, &[0, 0x10], &null_ticket());
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(sig.len(), 4 + 32);
        assert_eq!(verify(&mut tpm, hk, &digest, &sig).0, 0);
    }

    #[test]
    fn restricted_key_needs_a_ticket() {
        let mut tpm = started();
        let (rc, ak, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(AK_ATTRS));
        assert_eq!(rc, 0);
        let data = b"to be signed";
        let digest = HashAlg::Sha256.digest(&[data]);
        assert_eq!(
            sign(&mut tpm, ak, &digest, &[0, 0x10], &null_ticket()).0,
            0x3E0
        );
        // TPM2_Hash in the owner hierarchy gives the ticket.
        let resp = tpm.execute(0, &Cmd::new(0x17D).tpm2b(data).u16(0x0B).u32(OWNER).bytes());
        assert_eq!(rc_of(&resp), 0);
        let ticket = resp[10 + 2 + 32..].to_vec();
        let (rc, _) = sign(&mut tpm, ak, &digest, &[0, 0x10], &ticket);
        assert_eq!(rc, 0, "{rc:#x}");
        // The ticket is bound to the digest.
        let other = HashAlg::Sha256.digest(&[b"other"]);
        assert_eq!(sign(&mut tpm, ak, &other, &[0, 0x10], &ticket).0, 0x3E0);
        // Data that starts with TPM_GENERATED_VALUE gets no ticket.
        let forged = [&[0xFF, 0x54, 0x43, 0x47][..], b"attest"].concat();
        let resp = tpm.execute(
            0,
            &Cmd::new(0x17D).tpm2b(&forged).u16(0x0B).u32(OWNER).bytes(),
        );
        let t2 = resp[10 + 2 + 32..].to_vec();
        let d2 = HashAlg::Sha256.digest(&[&forged]);
        assert_eq!(sign(&mut tpm, ak, &d2, &[0, 0x10], &t2).0, 0x3E0);
        // A storage key cannot sign; wrong key password.
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        assert_eq!(
            sign(&mut tpm, srk, &digest, &[0, 0x18, 0, 0x0B], &null_ticket()).0,
            0x19C
        );
        let cmd = Cmd::new(SIGN)
            .h(ak)
            .pw(b"x")
            .tpm2b(&digest)
            .u16(0x10)
            .b(&ticket);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x98E);
    }
}

#[cfg(test)]
mod larger_key_tests {
    use crate::command::object::tests::*;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, rc_of, started};

    /// RSA 3072 (RSAPSS-SHA384) and ECC P-384 (ECDSA-SHA384) primaries sign and verify.
    #[test]
    fn rsa3072_and_p384_keys() {
        let mut tpm = started();
        let digest = HashAlg::Sha384.digest(&[b"m"]);
        let rsa = template(
            0x01,
            SIGN_ATTRS,
            &[0, 0x10, 0, 0x16, 0, 0x0C, 0x0C, 0x00, 0, 0, 0, 0, 0, 0],
        );
        let ecc = template(
            0x23,
            SIGN_ATTRS,
            &[0, 0x10, 0, 0x18, 0, 0x0C, 0, 4, 0, 0x10, 0, 0, 0, 0],
        );
        for (t, sig_len) in [(rsa, 4 + 2 + 384), (ecc, 4 + 2 + 48 + 2 + 48)] {
            let (rc, k, public, _) = primary(&mut tpm, OWNER, b"", &t);
            assert_eq!(rc, 0, "{rc:#x}");
            assert!(public.len() > t.len());
            let cmd = Cmd::new(0x15D)
                .h(k)
                .pw(b"")
                .tpm2b(&digest)
                .u16(0x10)
                .b(&[0x80, 0x24, 0x40, 0, 0, 7, 0, 0]);
            let (rc, _, sig) = split(&tpm.execute(0, &cmd.bytes()), false);
            assert_eq!(rc, 0, "{rc:#x}");
            assert_eq!(sig.len(), sig_len);
            let v = Cmd::new(0x177).h(k).tpm2b(&digest).b(&sig);
            assert_eq!(rc_of(&tpm.execute(0, &v.bytes())), 0);
            flush(&mut tpm, k);
        }
    }
}
