//! Asymmetric primitives (Part 3 §14): RSA_Encrypt, RSA_Decrypt,
//! ECDH_KeyGen and ECDH_ZGen.

use alloc::vec::Vec;

use crate::alg::asym_enc::{RsaEncScheme, ecdh_keygen, ecdh_zgen, rsa_decrypt, rsa_encrypt};
use crate::alg::keys::EccPoint;
use crate::command::object::key_at;
use crate::command::read_hash_alg;
use crate::dispatch::{Call, Ctx};
use crate::key::{self, KeyObject, MAX_DATA, MAX_ECC_BYTES, MAX_RSA_BYTES, PrivateKey, oa};
use crate::marshal::{Reader, Writer};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::alg;

/// TPMT_RSA_DECRYPT+ (errors without a location).
fn read_rsa_scheme(r: &mut Reader) -> CmdResult<RsaEncScheme> {
    match r.u16()? {
        alg::NULL => Ok(RsaEncScheme::Null),
        alg::RSAES => Ok(RsaEncScheme::RsaEs),
        alg::OAEP => Ok(RsaEncScheme::Oaep(read_hash_alg(r)?)),
        _ => Err(Rc::new(rc::VALUE)),
    }
}

/// CryptRsaSelectScheme: the key's scheme wins; a different one requested is
/// TPM_RC_SCHEME (no location).
fn select(k: &KeyObject, requested: RsaEncScheme) -> CmdResult<RsaEncScheme> {
    let own = k.public.scheme();
    let own = match (own.alg, own.hash) {
        (alg::NULL, _) => return Ok(requested),
        (alg::RSAES, _) => RsaEncScheme::RsaEs,
        (alg::OAEP, Some(h)) => RsaEncScheme::Oaep(h),
        _ => return Err(Rc::new(rc::SCHEME)),
    };
    if requested != RsaEncScheme::Null && requested != own {
        return Err(Rc::new(rc::SCHEME));
    }
    Ok(own)
}

/// An unrestricted RSA decryption key (TPM_RC_KEY / TPM_RC_ATTRIBUTES on handle 1).
fn rsa_decrypt_key(k: &KeyObject) -> CmdResult<()> {
    if k.public.kind != alg::RSA {
        return Err(Rc::handle(rc::KEY, 1));
    }
    if k.public.has(oa::RESTRICTED) || !k.public.has(oa::DECRYPT) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    Ok(())
}

struct RsaIn {
    data: Vec<u8>,
    scheme: RsaEncScheme,
    label: Vec<u8>,
}

fn read_rsa_in(call: &mut Call) -> CmdResult<RsaIn> {
    let data = call.params.tpm2b(MAX_RSA_BYTES).p(1)?.to_vec();
    let scheme = read_rsa_scheme(&mut call.params).p(2)?;
    let label = call.params.tpm2b(MAX_DATA).p(3)?.to_vec();
    call.done()?;
    if label.last().is_some_and(|&b| b != 0) {
        return Err(Rc::param(rc::VALUE, 3));
    }
    Ok(RsaIn {
        data,
        scheme,
        label,
    })
}

pub fn rsa_encrypt_cmd(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let inp = read_rsa_in(call)?;
    let k = key_at(cx, call.handle(0), 1)?;
    rsa_decrypt_key(&k)?;
    let scheme = select(&k, inp.scheme).p(2)?;
    let public = k.rsa_public()?;
    let mut rng = key::fresh_rng(cx, b"RSA_Encrypt")?;
    // The reference returns the algorithm's code without a parameter number.
    let out = rsa_encrypt(&mut rng, &public, scheme, &inp.label, &inp.data)
        .map_err(|e| key::alg_rc(e, rc::KEY))?;
    call.out.tpm2b(&out);
    Ok(())
}

pub fn rsa_decrypt_cmd(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let inp = read_rsa_in(call)?;
    let k = key_at(cx, call.handle(0), 1)?;
    rsa_decrypt_key(&k)?;
    let scheme = select(&k, inp.scheme).p(2)?;
    let Some(PrivateKey::Rsa(private)) = &k.private else {
        return Err(Rc::handle(rc::KEY, 1));
    };
    let mut rng = key::fresh_rng(cx, b"RSA_Decrypt")?;
    let out = rsa_decrypt(&mut rng, private, scheme, &inp.label, &inp.data)
        .map_err(|e| key::alg_rc(e, rc::KEY))?;
    call.out.tpm2b(&out);
    Ok(())
}

/// TPM2B_ECC_POINT (errors without a location).
fn read_point(r: &mut Reader) -> CmdResult<EccPoint> {
    let body = r.tpm2b(2 * (MAX_ECC_BYTES + 2))?;
    if body.is_empty() {
        return Err(Rc::new(rc::SIZE));
    }
    let mut inner = Reader::new(body);
    let x = inner.tpm2b(MAX_ECC_BYTES).map_err(key::sized)?.to_vec();
    let y = inner.tpm2b(MAX_ECC_BYTES).map_err(key::sized)?.to_vec();
    inner.finish()?;
    Ok(EccPoint { x, y })
}

fn write_point(w: &mut Writer, p: &EccPoint) {
    let mut inner = Writer::new();
    inner.tpm2b(&p.x);
    inner.tpm2b(&p.y);
    w.tpm2b(&inner.buf);
}

pub fn ecdh_keygen_cmd(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    if k.public.kind != alg::ECC {
        return Err(Rc::handle(rc::KEY, 1));
    }
    let public = k.ecc_public()?;
    let mut rng = key::fresh_rng(cx, b"ECDH_KeyGen")?;
    let (z, q) = ecdh_keygen(&mut rng, &public).map_err(|e| key::alg_rc(e, rc::KEY))?;
    write_point(&mut call.out, &z);
    write_point(&mut call.out, &q);
    Ok(())
}

pub fn ecdh_zgen_cmd(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let point = read_point(&mut call.params).p(1)?;
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    if k.public.kind != alg::ECC {
        return Err(Rc::handle(rc::KEY, 1));
    }
    if k.public.has(oa::RESTRICTED) || !k.public.has(oa::DECRYPT) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    if !matches!(k.public.scheme().alg, alg::NULL | alg::ECDH) {
        return Err(Rc::handle(rc::SCHEME, 1));
    }
    let Some(PrivateKey::Ecc(private)) = &k.private else {
        return Err(Rc::handle(rc::KEY, 1));
    };
    let z = ecdh_zgen(private, &point)
        .map_err(|e| key::alg_rc(e, rc::KEY))
        .p(1)?;
    write_point(&mut call.out, &z);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::command::object::tests::*;
    use crate::testutil::{Cmd, TestPlatform, rc_of, started};

    const RSA_ENCRYPT: u32 = 0x174;
    const RSA_DECRYPT: u32 = 0x159;
    const ECDH_KEYGEN: u32 = 0x163;
    const ECDH_ZGEN: u32 = 0x154;

    /// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|decrypt.
    const DECRYPT_ATTRS: u32 = 0x0002_0072;

    fn rsa_key(scheme: &[u8]) -> Vec<u8> {
        let mut p = alloc::vec![0x00, 0x10];
        p.extend_from_slice(scheme);
        p.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0, 0, 0]);
        template(0x01, DECRYPT_ATTRS, &p)
    }

    fn enc(
        tpm: &mut Tpm<TestPlatform>,
        k: u32,
        msg: &[u8],
        scheme: &[u8],
        label: &[u8],
    ) -> (u32, Vec<u8>) {
        let resp = tpm.execute(
            0,
            &Cmd::new(RSA_ENCRYPT)
                .h(k)
                .tpm2b(msg)
                .b(scheme)
                .tpm2b(label)
                .bytes(),
        );
        let rc = rc_of(&resp);
        if rc != 0 {
            return (rc, Vec::new());
        }
        (rc, tpm2b(&resp, 10).0)
    }

    fn dec(
        tpm: &mut Tpm<TestPlatform>,
        k: u32,
        ct: &[u8],
        scheme: &[u8],
        label: &[u8],
    ) -> (u32, Vec<u8>) {
        let cmd = Cmd::new(RSA_DECRYPT)
            .h(k)
            .pw(b"")
            .tpm2b(ct)
            .b(scheme)
            .tpm2b(label);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        if rc != 0 {
            return (rc, Vec::new());
        }
        (rc, tpm2b(&body, 0).0)
    }

    #[test]
    fn rsa_encrypt_decrypt_round_trips() {
        let mut tpm = started();
        let (rc, k, _, _) = primary(&mut tpm, OWNER, b"", &rsa_key(&[0x00, 0x10]));
        assert_eq!(rc, 0, "{rc:#x}");
        for scheme in [&[0x00, 0x17, 0x00, 0x0B][..], &[0x00, 0x15], &[0x00, 0x10]] {
            let label: &[u8] = if scheme[1] == 0x17 { b"label\0" } else { b"" };
            let (rc, ct) = enc(&mut tpm, k, b"hello", scheme, label);
            assert_eq!(rc, 0, "{rc:#x}");
            assert_eq!(ct.len(), 256);
            let (rc, pt) = dec(&mut tpm, k, &ct, scheme, label);
            assert_eq!(rc, 0, "{rc:#x}");
            if scheme[1] == 0x10 {
                assert_eq!(&pt[pt.len() - 5..], b"hello");
            } else {
                assert_eq!(pt, b"hello");
            }
        }
        // A label without its NUL; a wrong OAEP label; a short ciphertext.
        assert_eq!(enc(&mut tpm, k, b"x", &[0, 0x17, 0, 0x0B], b"abc").0, 0x3C4);
        let (_, ct) = enc(&mut tpm, k, b"x", &[0, 0x17, 0, 0x0B], b"a\0");
        // Decryption failures carry no parameter number, as the reference's.
        assert_eq!(dec(&mut tpm, k, &ct, &[0, 0x17, 0, 0x0B], b"b\0").0, 0x084);
        assert_eq!(
            dec(&mut tpm, k, &ct[1..], &[0, 0x17, 0, 0x0B], b"a\0").0,
            0x095
        );
        flush(&mut tpm, k);
        // The key's own scheme (OAEP-SHA256) refuses another.
        let (_, k2, _, _) = primary(&mut tpm, OWNER, b"", &rsa_key(&[0x00, 0x17, 0x00, 0x0B]));
        assert_eq!(enc(&mut tpm, k2, b"x", &[0, 0x15], b"").0, 0x2D2);
        let (rc, ct) = enc(&mut tpm, k2, b"x", &[0, 0x10], b"");
        assert_eq!(rc, 0);
        assert_eq!(dec(&mut tpm, k2, &ct, &[0, 0x10], b"").1, b"x");
        // A signing key cannot encrypt.
        let (_, s, _, _) = primary(&mut tpm, OWNER, b"", &rsa_signer(SIGN_ATTRS, 0x14));
        assert_eq!(enc(&mut tpm, s, b"x", &[0, 0x10], b"").0, 0x182);
    }

    #[test]
    fn ecdh_keygen_and_zgen_agree() {
        let mut tpm = started();
        let t = template(
            0x23,
            DECRYPT_ATTRS,
            &[0, 0x10, 0, 0x19, 0, 0x0B, 0, 3, 0, 0x10, 0, 0, 0, 0],
        );
        let (rc, k, _, _) = primary(&mut tpm, OWNER, b"", &t);
        assert_eq!(rc, 0, "{rc:#x}");
        let resp = tpm.execute(0, &Cmd::new(ECDH_KEYGEN).h(k).bytes());
        assert_eq!(rc_of(&resp), 0);
        let (z, pos) = tpm2b(&resp, 10);
        let (q, _) = tpm2b(&resp, pos);
        let cmd = Cmd::new(ECDH_ZGEN).h(k).pw(b"").tpm2b(&q);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(tpm2b(&body, 0).0, z);
        // A point off the curve.
        let mut bad = q.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let cmd = Cmd::new(ECDH_ZGEN).h(k).pw(b"").tpm2b(&bad);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x1E7);
        // A signing key cannot do ZGen.
        let (_, s, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(SIGN_ATTRS));
        let cmd = Cmd::new(ECDH_ZGEN).h(s).pw(b"").tpm2b(&q);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x182);
    }
}
