//! Session commands (Part 3 §11): StartAuthSession for HMAC, policy and
//! trial sessions, unsalted or salted with an RSA (OAEP) or ECC (ECDH) key.

use alloc::vec;
use alloc::vec::Vec;

use crate::alg::kdf::kdfa;
use crate::command::{random, read_hash_alg};
use crate::dispatch::{Call, Ctx};
use crate::marshal::Reader;
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::session::{Kind, Session, Symmetric};
use crate::spec::{MAX_DIGEST, alg, rh};

/// TPMT_SYM_DEF+ (errors without a location).
fn read_sym_def(r: &mut Reader) -> CmdResult<Symmetric> {
    match r.u16()? {
        alg::NULL => Ok(Symmetric::Null),
        alg::XOR => Ok(Symmetric::Xor(read_hash_alg(r)?)),
        alg::AES => {
            let bits = r.u16()?;
            if !crate::public::AES_KEY_BITS.contains(&bits) {
                return Err(Rc::new(rc::VALUE));
            }
            let mode = r.u16()?;
            if mode == alg::CFB {
                Ok(Symmetric::AesCfb(bits))
            } else if crate::public::SYM_MODES.contains(&mode) || mode == alg::NULL {
                // Sessions encrypt parameters with CFB only.
                Err(Rc::new(rc::MODE))
            } else {
                Err(Rc::new(rc::MODE))
            }
        }
        _ => Err(Rc::new(rc::SYMMETRIC)),
    }
}

/// Recover the salt sent to `tpm_key` (Part 1 §24.3): RSA-OAEP with label
/// "SECRET" and the key's nameAlg, or ECDH with the key and
/// KDFe(nameAlg, Z, "SECRET", ephemeral.x, key.x).
fn decrypt_salt(cx: &mut Ctx, tpm_key: u32, encrypted: &[u8]) -> CmdResult<Vec<u8>> {
    use crate::key::{PrivateKey, oa};
    // A loaded object that is not a key (a sequence object) is TPM_RC_KEY.
    let k = crate::key::get(cx.core, tpm_key).map_err(|_| Rc::handle(rc::KEY, 1))?;
    if k.public.kind != alg::RSA && k.public.kind != alg::ECC {
        return Err(Rc::handle(rc::KEY, 1));
    }
    if encrypted.is_empty() {
        return Err(Rc::param(rc::VALUE, 2));
    }
    if k.private.is_none() {
        return Err(Rc::handle(rc::HANDLE, 1));
    }
    if !k.public.has(oa::DECRYPT) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    let hash = k.public.hash();
    let bad = || Rc::param(rc::VALUE, 2);
    match &k.private {
        Some(PrivateKey::Rsa(private)) => {
            let mut rng = crate::key::fresh_rng(cx, b"StartAuthSession")?;
            crate::alg::asym_enc::rsa_decrypt(
                &mut rng,
                private,
                crate::alg::asym_enc::RsaEncScheme::Oaep(hash),
                b"SECRET\0",
                encrypted,
            )
            .map_err(|_| bad())
        }
        Some(PrivateKey::Ecc(private)) => {
            let mut r = Reader::new(encrypted);
            let x = r.tpm2b(MAX_DIGEST).map_err(|_| bad())?.to_vec();
            let y = r.tpm2b(MAX_DIGEST).map_err(|_| bad())?.to_vec();
            r.finish().map_err(|_| bad())?;
            let point = crate::alg::keys::EccPoint { x, y };
            let z = crate::alg::asym_enc::ecdh_zgen(private, &point).map_err(|_| bad())?;
            let key_x = match &k.public.unique {
                crate::key::Unique::Ecc(p) => p.x.clone(),
                _ => return Err(Rc::handle(rc::KEY, 1)),
            };
            let bits = u32::try_from(hash.size() * 8).unwrap_or(0);
            crate::alg::kdf::kdfe(hash, &z.x, b"SECRET", &point.x, &key_x, bits).map_err(|_| bad())
        }
        _ => Err(Rc::handle(rc::KEY, 1)),
    }
}

pub fn start_auth_session(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let nonce_caller = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let salt = call.params.tpm2b(512).p(2)?.to_vec();
    let kind = match call.params.u8().p(3)? {
        0 => Kind::Hmac,
        1 => Kind::Policy,
        3 => Kind::Trial,
        _ => return Err(Rc::param(rc::VALUE, 3)),
    };
    let symmetric = read_sym_def(&mut call.params).p(4)?;
    let hash = read_hash_alg(&mut call.params).p(5)?;
    call.done()?;
    if nonce_caller.len() < 16 || nonce_caller.len() > hash.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    let salt = if call.handle(0) == rh::NULL {
        if !salt.is_empty() {
            return Err(Rc::param(rc::VALUE, 2));
        }
        Vec::new()
    } else {
        decrypt_salt(cx, call.handle(0), &salt)?
    };
    let bind = call.handle(1);
    // nonceTPM has the size of nonceCaller, now and on every later response.
    let mut nonce_tpm = vec![0u8; nonce_caller.len()];
    random(cx, &mut nonce_tpm)?;
    let (da_bound, lockout_bound) = (
        bind != rh::NULL && !crate::auth::da_exempt(cx.core, bind),
        bind == rh::LOCKOUT,
    );
    let bind = (bind != rh::NULL).then(|| (bind, crate::auth::bind_auth(cx.core, bind)));
    // sessionKey = KDFa(authHash, bind.authValue ‖ salt, "ATH", nonceTPM, nonceCaller).
    let key = if bind.is_some() || !salt.is_empty() {
        let mut secret = bind.as_ref().map(|(_, a)| a.clone()).unwrap_or_default();
        secret.extend_from_slice(&salt);
        let bits = u32::try_from(hash.size() * 8).unwrap_or(0);
        let key = kdfa(hash, &secret, b"ATH", &nonce_tpm, &nonce_caller, bits)
            .map_err(|_| Rc::new(rc::SIZE));
        zeroize::Zeroize::zeroize(&mut secret);
        key?
    } else {
        Vec::new()
    };
    let session = Session {
        handle: 0,
        kind,
        hash,
        key,
        nonce_tpm: nonce_tpm.clone(),
        symmetric,
        bind,
        da_bound,
        lockout_bound,
        policy_digest: vec![0; hash.size()],
        policy: crate::session::PolicyState::default(),
        audit: false,
        audit_digest: Vec::new(),
    };
    call.out_handle = Some(cx.core.vol.sessions.insert(session)?);
    call.out.tpm2b(&nonce_tpm);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::alg::kdf::kdfa;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, rc_of, run, started};

    const OWNER: u32 = 0x4000_0001;
    const SHA256: HashAlg = HashAlg::Sha256;

    /// Start a session; returns (handle, nonceTPM).
    fn start(
        tpm: &mut Tpm<TestPlatform>,
        bind: u32,
        kind: u8,
        sym: &[u8],
        nonce: &[u8],
    ) -> (u32, u32, Vec<u8>) {
        let cmd = Cmd::new(0x176)
            .h(0x4000_0007)
            .h(bind)
            .tpm2b(nonce)
            .u16(0)
            .u8(kind)
            .b(sym)
            .u16(0x0B);
        let resp = tpm.execute(0, &cmd.bytes());
        let rc = rc_of(&resp);
        if rc != 0 {
            return (rc, 0, Vec::new());
        }
        let h = u32::from_be_bytes([resp[10], resp[11], resp[12], resp[13]]);
        (0, h, resp[16..].to_vec())
    }

    /// A command authorized by an HMAC session, built by hand as a caller would.
    struct Hmac<'a> {
        cc: u32,
        handles: &'a [u32],
        names: &'a [Vec<u8>],
        params: Vec<u8>,
        session: u32,
        key: Vec<u8>,
        nonce_caller: Vec<u8>,
        nonce_tpm: Vec<u8>,
        attrs: u8,
    }

    impl<'a> Hmac<'a> {
        fn clone_ref(&self) -> Hmac<'a> {
            Hmac {
                cc: self.cc,
                handles: self.handles,
                names: self.names,
                params: self.params.clone(),
                session: self.session,
                key: self.key.clone(),
                nonce_caller: self.nonce_caller.clone(),
                nonce_tpm: self.nonce_tpm.clone(),
                attrs: self.attrs,
            }
        }

        fn bytes(&self, corrupt: bool) -> Vec<u8> {
            let mut cp_parts: Vec<&[u8]> = Vec::new();
            let code = self.cc.to_be_bytes();
            cp_parts.push(&code);
            cp_parts.extend(self.names.iter().map(Vec::as_slice));
            cp_parts.push(&self.params);
            let cp = SHA256.digest(&cp_parts);
            let mut mac = SHA256.hmac(
                &self.key,
                &[&cp, &self.nonce_caller, &self.nonce_tpm, &[self.attrs]],
            );
            if corrupt {
                mac[0] ^= 1;
            }
            let mut area = self.session.to_be_bytes().to_vec();
            area.extend_from_slice(&(self.nonce_caller.len() as u16).to_be_bytes());
            area.extend_from_slice(&self.nonce_caller);
            area.push(self.attrs);
            area.extend_from_slice(&(mac.len() as u16).to_be_bytes());
            area.extend_from_slice(&mac);
            let mut c = alloc::vec![0x80, 0x02, 0, 0, 0, 0];
            c.extend_from_slice(&self.cc.to_be_bytes());
            for h in self.handles {
                c.extend_from_slice(&h.to_be_bytes());
            }
            c.extend_from_slice(&(area.len() as u32).to_be_bytes());
            c.extend_from_slice(&area);
            c.extend_from_slice(&self.params);
            let n = (c.len() as u32).to_be_bytes();
            c[2..6].copy_from_slice(&n);
            c
        }

        /// Check the response HMAC; returns (parameters, new nonceTPM).
        fn check_response(&self, resp: &[u8]) -> (Vec<u8>, Vec<u8>) {
            assert_eq!(rc_of(resp), 0, "{resp:02x?}");
            let psize = u32::from_be_bytes([resp[10], resp[11], resp[12], resp[13]]) as usize;
            let params = resp[14..14 + psize].to_vec();
            let mut rest = &resp[14 + psize..];
            let nlen = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let nonce = rest[2..2 + nlen].to_vec();
            rest = &rest[2 + nlen..];
            let attrs = rest[0];
            let mac = &rest[3..];
            let rp = SHA256.digest(&[&[0, 0, 0, 0], &self.cc.to_be_bytes(), &params]);
            assert_eq!(
                mac,
                SHA256
                    .hmac(&self.key, &[&rp, &nonce, &self.nonce_caller, &[attrs]])
                    .as_slice()
            );
            (params, nonce)
        }
    }

    #[test]
    fn unbound_hmac_session_authorizes_and_rolls_nonces() {
        let mut tpm = started();
        let (rc, h, nonce_tpm) = start(&mut tpm, 0x4000_0007, 0, &[0, 0x10], &[7; 16]);
        assert_eq!((rc, h), (0, 0x0200_0000));
        // nonceTPM is as long as nonceCaller.
        assert_eq!(nonce_tpm.len(), 16);
        let names = [OWNER.to_be_bytes().to_vec()];
        let mut cmd = Hmac {
            cc: 0x129,
            handles: &[OWNER],
            names: &names,
            params: alloc::vec![0, 2, b'p', b'w'],
            session: h,
            key: Vec::new(),
            nonce_caller: alloc::vec![1; 16],
            nonce_tpm,
            attrs: 1,
        };
        // A wrong HMAC: owner is DA exempt, so TPM_RC_BAD_AUTH on session 1.
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes(true))), 0x9A2);
        let resp = tpm.execute(0, &cmd.bytes(false));
        // The response HMAC already uses the new authValue (as ESYS expects).
        let (_, next) = Hmac {
            key: b"pw".to_vec(),
            params: Vec::new(),
            ..cmd.clone_ref()
        }
        .check_response(&resp);
        assert_ne!(next, cmd.nonce_tpm);
        // The owner's new authValue now keys the HMAC; the stale nonce fails.
        cmd.params = alloc::vec![0, 0];
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes(false))), 0x9A2);
        cmd.nonce_tpm = next;
        cmd.key = b"pw".to_vec();
        cmd.attrs = 0;
        let resp = tpm.execute(0, &cmd.bytes(false));
        Hmac {
            key: Vec::new(),
            ..cmd.clone_ref()
        }
        .check_response(&resp);
        // continueSession was clear: the session is gone.
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes(false))), 0x918);
    }

    #[test]
    fn bound_session_leaves_bind_auth_out() {
        let mut tpm = started();
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x129).h(OWNER).pw(b"").tpm2b(b"own")).0,
            0
        );
        let nonce_caller = [3u8; 16];
        let (_, h, nonce_tpm) = start(&mut tpm, OWNER, 0, &[0, 0x10], &nonce_caller);
        let key = kdfa(SHA256, b"own", b"ATH", &nonce_tpm, &nonce_caller, 256).unwrap();
        let names = [OWNER.to_be_bytes().to_vec()];
        let cmd = Hmac {
            cc: 0x129,
            handles: &[OWNER],
            names: &names,
            params: alloc::vec![0, 3, b'o', b'w', b'n'],
            session: h,
            key,
            nonce_caller: alloc::vec![4; 16],
            nonce_tpm,
            attrs: 1,
        };
        cmd.check_response(&tpm.execute(0, &cmd.bytes(false)));
    }

    #[test]
    fn parameter_encryption_xor_and_aes() {
        for sym in [
            alloc::vec![0, 0x0A, 0, 0x0B],
            alloc::vec![0, 0x06, 0, 128, 0, 0x43],
        ] {
            let mut tpm = started();
            let (_, h, nonce_tpm) = start(&mut tpm, 0x4000_0007, 0, &sym, &[5; 16]);
            // GetRandom with an encrypt session (not an authorization).
            let cmd = Hmac {
                cc: 0x17B,
                handles: &[],
                names: &[],
                params: alloc::vec![0, 16],
                session: h,
                key: Vec::new(),
                nonce_caller: alloc::vec![6; 16],
                nonce_tpm,
                attrs: 0x41,
            };
            let (params, next) = cmd.check_response(&tpm.execute(0, &cmd.bytes(false)));
            assert_eq!(&params[..2], &[0, 16]);
            // Decrypt what the TPM sent, as the caller would, and compare
            // with what a plain GetRandom run on a twin TPM... (random differs),
            // so instead round-trip: a decrypt session on StirRandom must accept
            // an encrypted buffer of the right size.
            assert_eq!(params.len(), 18);
            let stir = Hmac {
                cc: 0x146,
                params: alloc::vec![0, 4, 1, 2, 3, 4],
                nonce_tpm: next,
                attrs: 0x21,
                ..cmd
            };
            stir.check_response(&tpm.execute(0, &stir.bytes(false)));
        }
    }

    #[test]
    fn decrypted_parameter_reaches_the_command() {
        let mut tpm = started();
        let nonce_caller = alloc::vec![8u8; 16];
        let (_, h, nonce_tpm) = start(
            &mut tpm,
            0x4000_0007,
            0,
            &[0, 0x06, 0, 128, 0, 0x43],
            &[9; 16],
        );
        // Encrypt the new owner authValue "secret" with AES-128-CFB as a caller would.
        let kv = kdfa(SHA256, b"", b"CFB", &nonce_caller, &nonce_tpm, 256).unwrap();
        let enc = crate::alg::sym::aes_encrypt(
            crate::alg::sym::SymMode::Cfb,
            &kv[..16],
            &kv[16..],
            b"secret",
        )
        .unwrap();
        let mut params = alloc::vec![0, 6];
        params.extend_from_slice(&enc.data);
        let names = [OWNER.to_be_bytes().to_vec()];
        let cmd = Hmac {
            cc: 0x129,
            handles: &[OWNER],
            names: &names,
            params,
            session: h,
            key: Vec::new(),
            nonce_caller,
            nonce_tpm,
            attrs: 0x21,
        };
        let resp = tpm.execute(0, &cmd.bytes(false));
        Hmac {
            key: b"secret".to_vec(),
            ..cmd.clone_ref()
        }
        .check_response(&resp);
        // The owner's authValue is the decrypted value.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x129).h(OWNER).pw(b"secret").tpm2b(b"")
            )
            .0,
            0
        );
    }

    #[test]
    fn start_auth_session_errors_and_limits() {
        let mut tpm = started();
        let null = 0x4000_0007;
        assert_eq!(start(&mut tpm, null, 0, &[0, 0x10], &[1; 15]).0, 0x1D5);
        assert_eq!(start(&mut tpm, null, 2, &[0, 0x10], &[1; 16]).0, 0x3C4);
        assert_eq!(
            start(&mut tpm, null, 0, &[0, 0x06, 0, 128, 0, 0x42], &[1; 16]).0,
            0x4C9
        );
        assert_eq!(start(&mut tpm, null, 0, &[0, 0x25], &[1; 16]).0, 0x4D6);
        assert_eq!(
            start(&mut tpm, 0x4000_000E, 0, &[0, 0x10], &[1; 16]).0,
            0x284
        );
        let salted = Cmd::new(0x176)
            .h(null)
            .h(null)
            .tpm2b(&[1; 16])
            .tpm2b(&[1])
            .u8(0)
            .u16(0x10)
            .u16(0x0B);
        assert_eq!(run(&mut tpm, 0, &salted).0, 0x2C4);
        let (_, seq) = {
            let r = tpm.execute(0, &Cmd::new(0x186).tpm2b(b"").u16(0x0B).bytes());
            (0, u32::from_be_bytes([r[10], r[11], r[12], r[13]]))
        };
        let keyed = Cmd::new(0x176)
            .h(seq)
            .h(null)
            .tpm2b(&[1; 16])
            .tpm2b(&[])
            .u8(0)
            .u16(0x10)
            .u16(0x0B);
        assert_eq!(run(&mut tpm, 0, &keyed).0, 0x19C);
        // Three loaded sessions at most; FlushContext frees one.
        let handles: Vec<u32> = (0..3)
            .map(|_| start(&mut tpm, null, 0, &[0, 0x10], &[1; 16]).1)
            .collect();
        assert_eq!(handles, [0x0200_0000, 0x0200_0001, 0x0200_0002]);
        assert_eq!(start(&mut tpm, null, 1, &[0, 0x10], &[1; 16]).0, 0x903);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x165).u32(0x0200_0001)).0, 0);
        let (rc, policy, _) = start(&mut tpm, null, 1, &[0, 0x10], &[1; 16]);
        assert_eq!((rc, policy), (0, 0x0300_0001));
        let (_, b) = run(
            &mut tpm,
            0,
            &Cmd::new(0x17A).u32(1).u32(0x0200_0000).u32(10),
        );
        // TPM_HT_LOADED_SESSION lists HMAC and policy sessions by number.
        assert_eq!(&b[5..], &[0, 0, 0, 3, 2, 0, 0, 0, 3, 0, 0, 1, 2, 0, 0, 2]);
        let (_, b) = run(
            &mut tpm,
            0,
            &Cmd::new(0x17A).u32(1).u32(0x0300_0000).u32(10),
        );
        assert_eq!(&b[5..], &[0, 0, 0, 0]);
        let (_, b) = run(&mut tpm, 0, &Cmd::new(0x17A).u32(6).u32(0x203).u32(4));
        assert_eq!(
            &b[9..],
            &[
                0, 0, 2, 3, 0, 0, 0, 3, 0, 0, 2, 4, 0, 0, 0, 0, 0, 0, 2, 5, 0, 0, 0, 3, 0, 0, 2, 6,
                0, 0, 0, 61
            ]
        );
        // A policy session cannot authorize an entity without a policy.
        let mut c = Cmd::new(0x129).h(OWNER).pw(b"").tpm2b(b"").bytes();
        c[18..22].copy_from_slice(&policy.to_be_bytes());
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x12F);
        // Sessions do not survive _TPM_Init.
        tpm.power_on();
        run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x918);
    }

    #[test]
    fn session_area_rules() {
        let mut tpm = started();
        let null = 0x4000_0007;
        let (_, plain, _) = start(&mut tpm, null, 0, &[0, 0x10], &[1; 16]);
        let (_, xor, _) = start(&mut tpm, null, 0, &[0, 0x0A, 0, 0x0B], &[1; 16]);
        let area = |h: u32, attrs: u8| {
            let mut a = h.to_be_bytes().to_vec();
            a.extend_from_slice(&[0, 16]);
            a.extend_from_slice(&[2; 16]);
            a.push(attrs);
            a.extend_from_slice(&[0, 32]);
            a.extend_from_slice(&[0; 32]);
            a
        };
        let build = |areas: &[Vec<u8>], cc: u32, params: &[u8]| {
            let all: Vec<u8> = areas.concat();
            let mut c = alloc::vec![0x80, 0x02, 0, 0, 0, 0];
            c.extend_from_slice(&cc.to_be_bytes());
            c.extend_from_slice(&(all.len() as u32).to_be_bytes());
            c.extend_from_slice(&all);
            c.extend_from_slice(params);
            let n = (c.len() as u32).to_be_bytes();
            c[2..6].copy_from_slice(&n);
            c
        };
        let get_random = [0u8, 8];
        // A session that authorizes nothing must encrypt, decrypt or audit.
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(plain, 1)], 0x17B, &get_random))),
            0x982
        );
        // Encryption needs a symmetric algorithm; GetRandom has no TPM2B to decrypt.
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(plain, 0x41)], 0x17B, &get_random))),
            0x996
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(xor, 0x21)], 0x17B, &get_random))),
            0x982
        );
        // The same session twice.
        assert_eq!(
            rc_of(&tpm.execute(
                0,
                &build(&[area(xor, 0x41), area(xor, 0x41)], 0x17B, &get_random)
            )),
            0xA8B
        );
        // Audit is accepted (the HMAC here is wrong); auditExclusive or
        // auditReset without audit is not.
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(xor, 0x81)], 0x17B, &get_random))),
            0x9A2
        );
        for attrs in [0x03, 0x05] {
            assert_eq!(
                rc_of(&tpm.execute(0, &build(&[area(xor, attrs)], 0x17B, &get_random))),
                0x982
            );
        }
        // A wrong HMAC on an unbound encrypt-only session: no DA consequence.
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(xor, 0x41)], 0x17B, &get_random))),
            0x9A2
        );
        // Session handles outside the session ranges.
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(0x8000_0000, 0x41)], 0x17B, &get_random))),
            0x984
        );
        // A session bound to lockoutAuth: a wrong HMAC counts as a lockout failure.
        let (_, bound, _) = start(&mut tpm, 0x4000_000A, 0, &[0, 0x0A, 0, 0x0B], &[1; 16]);
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(bound, 0x41)], 0x17B, &get_random))),
            0x98E
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x139).h(0x4000_000A).pw(b"")).0,
            0x921
        );
    }

    /// An ECC-salted session: the caller's ECDH with the TPM's key gives the
    /// same salt, so both sides derive the same session key.
    #[test]
    fn ecc_salted_session() {
        use crate::alg::asym_enc::ecdh_keygen;
        use crate::alg::kdf::{KdfRng, kdfe};
        use crate::alg::keys::{EccCurve, EccPoint, EccPublicKey};
        let mut tpm = started();
        // CreatePrimary: ECC P-256 restricted decryption key (AES-128-CFB) under the owner.
        let mut public = Vec::new();
        for v in [0x0023u16, 0x000B] {
            public.extend_from_slice(&v.to_be_bytes());
        }
        public.extend_from_slice(&0x0003_0072u32.to_be_bytes());
        for v in [0u16, 0x0006, 128, 0x0043, 0x0010, 0x0003, 0x0010, 0, 0] {
            public.extend_from_slice(&v.to_be_bytes());
        }
        let create = Cmd::new(0x131)
            .h(OWNER)
            .pw(b"")
            .u16(4)
            .u32(0)
            .tpm2b(&public)
            .u16(0)
            .u32(0);
        let r = tpm.execute(0, &create.bytes());
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        let key = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
        let x = r[44..76].to_vec();
        let y = r[78..110].to_vec();
        assert_eq!(&r[42..44], &[0, 32]);
        let peer =
            EccPublicKey::from_point(EccCurve::NistP256, &EccPoint { x: x.clone(), y }).unwrap();
        let mut rng = KdfRng::new(SHA256, b"test", b"salt", b"", b"");
        let (z, eph) = ecdh_keygen(&mut rng, &peer).unwrap();
        let salt = kdfe(SHA256, &z.x, b"SECRET", &eph.x, &x, 256).unwrap();
        let mut secret = Vec::new();
        for c in [&eph.x, &eph.y] {
            secret.extend_from_slice(&(c.len() as u16).to_be_bytes());
            secret.extend_from_slice(c);
        }
        let nonce_caller = [7u8; 32];
        let cmd = Cmd::new(0x176)
            .h(key)
            .h(0x4000_0007)
            .tpm2b(&nonce_caller)
            .tpm2b(&secret)
            .u8(0)
            .u16(0x10)
            .u16(0x0B);
        let r = tpm.execute(0, &cmd.bytes());
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        let h = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
        let nonce_tpm = r[16..].to_vec();
        let session_key = kdfa(SHA256, &salt, b"ATH", &nonce_tpm, &nonce_caller, 256).unwrap();
        let names = [OWNER.to_be_bytes().to_vec()];
        let change = Hmac {
            cc: 0x129,
            handles: &[OWNER],
            names: &names,
            params: alloc::vec![0, 0],
            session: h,
            key: session_key.clone(),
            nonce_caller: alloc::vec![8; 16],
            nonce_tpm,
            attrs: 1,
        };
        change.check_response(&tpm.execute(0, &change.bytes(false)));
        // A salt for another key, an empty salt, a key that cannot decrypt.
        let mut bad = secret.clone();
        bad[5] ^= 1;
        let cmd = Cmd::new(0x176)
            .h(key)
            .h(0x4000_0007)
            .tpm2b(&nonce_caller)
            .tpm2b(&bad)
            .u8(0)
            .u16(0x10)
            .u16(0x0B);
        assert_eq!(run(&mut tpm, 0, &cmd).0, 0x2C4);
        let cmd = Cmd::new(0x176)
            .h(key)
            .h(0x4000_0007)
            .tpm2b(&nonce_caller)
            .tpm2b(&[])
            .u8(0)
            .u16(0x10)
            .u16(0x0B);
        assert_eq!(run(&mut tpm, 0, &cmd).0, 0x2C4);
    }

    /// What Linux (6.10+) does for its in-kernel sessions: an ECC P-256
    /// primary in the null hierarchy, a session salted to it with AES-128-CFB,
    /// then a command whose first parameter goes in encrypted and whose first
    /// response parameter comes back encrypted (TPM2_Hash: both are TPM2B).
    #[test]
    fn linux_null_primary_salted_session_encrypts_both_ways() {
        use crate::alg::asym_enc::ecdh_keygen;
        use crate::alg::kdf::{KdfRng, kdfe};
        use crate::alg::keys::{EccCurve, EccPoint, EccPublicKey};
        use crate::alg::sym::{SymMode, aes_decrypt, aes_encrypt};
        let mut tpm = started();
        let mut public = Vec::new();
        for v in [0x0023u16, 0x000B] {
            public.extend_from_slice(&v.to_be_bytes());
        }
        public.extend_from_slice(&0x0003_0072u32.to_be_bytes());
        for v in [0u16, 0x0006, 128, 0x0043, 0x0010, 0x0003, 0x0010, 0, 0] {
            public.extend_from_slice(&v.to_be_bytes());
        }
        let create = Cmd::new(0x131)
            .h(0x4000_0007)
            .pw(b"")
            .u16(4)
            .u32(0)
            .tpm2b(&public)
            .u16(0)
            .u32(0);
        let r = tpm.execute(0, &create.bytes());
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        let key = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
        let x = r[44..76].to_vec();
        let y = r[78..110].to_vec();
        let peer =
            EccPublicKey::from_point(EccCurve::NistP256, &EccPoint { x: x.clone(), y }).unwrap();
        let mut rng = KdfRng::new(SHA256, b"linux", b"salt", b"", b"");
        let (z, eph) = ecdh_keygen(&mut rng, &peer).unwrap();
        let salt = kdfe(SHA256, &z.x, b"SECRET", &eph.x, &x, 256).unwrap();
        let mut secret = Vec::new();
        for c in [&eph.x, &eph.y] {
            secret.extend_from_slice(&(c.len() as u16).to_be_bytes());
            secret.extend_from_slice(c);
        }
        let nonce_caller = [9u8; 32];
        let cmd = Cmd::new(0x176)
            .h(key)
            .h(0x4000_0007)
            .tpm2b(&nonce_caller)
            .tpm2b(&secret)
            .u8(0)
            .b(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43])
            .u16(0x0B);
        let r = tpm.execute(0, &cmd.bytes());
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        let h = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
        let nonce_tpm = r[16..].to_vec();
        let session_key = kdfa(SHA256, &salt, b"ATH", &nonce_tpm, &nonce_caller, 256).unwrap();
        let cfb = |newer: &[u8], older: &[u8]| {
            let kv = kdfa(SHA256, &session_key, b"CFB", newer, older, 256).unwrap();
            (kv[..16].to_vec(), kv[16..].to_vec())
        };
        // TPM2_Hash("the kernel's data", SHA-256, TPM_RH_NULL), data encrypted.
        let nonce_caller = alloc::vec![5u8; 32];
        let data = b"the kernel's data";
        let (k, iv) = cfb(&nonce_caller, &nonce_tpm);
        let enc = aes_encrypt(SymMode::Cfb, &k, &iv, data).unwrap().data;
        let mut params = (enc.len() as u16).to_be_bytes().to_vec();
        params.extend_from_slice(&enc);
        params.extend_from_slice(&0x000Bu16.to_be_bytes());
        params.extend_from_slice(&0x4000_0007u32.to_be_bytes());
        let hash = Hmac {
            cc: 0x17D,
            handles: &[],
            names: &[],
            params,
            session: h,
            key: session_key.clone(),
            nonce_caller: nonce_caller.clone(),
            nonce_tpm,
            attrs: 0x61,
        };
        let (out, new_nonce) = hash.check_response(&tpm.execute(0, &hash.bytes(false)));
        let (k, iv) = cfb(&new_nonce, &nonce_caller);
        assert_eq!(&out[..2], &[0, 32]);
        let digest = aes_decrypt(SymMode::Cfb, &k, &iv, &out[2..34])
            .unwrap()
            .data;
        assert_eq!(digest, SHA256.digest(&[data]));
        // A wrong HMAC under the salted session is refused (unbound: no DA).
        let again = Hmac {
            nonce_tpm: new_nonce,
            ..hash.clone_ref()
        };
        assert_eq!(rc_of(&tpm.execute(0, &again.bytes(true))), 0x9A2);
    }

    /// Send `cmd` (continueSession|audit plus `extra` attributes); returns
    /// the response parameters and the attributes the TPM answered with, and
    /// rolls the nonce.
    fn audited(tpm: &mut Tpm<TestPlatform>, cmd: &mut Hmac, extra: u8) -> (Vec<u8>, u8) {
        cmd.attrs = 0x81 | extra;
        let resp = tpm.execute(0, &cmd.bytes(false));
        let (params, nonce) = cmd.check_response(&resp);
        cmd.nonce_tpm = nonce;
        (params, resp[resp.len() - 35])
    }

    /// cpHash and rpHash of an audited command, computed independently.
    fn cp_rp(cc: u32, names: &[Vec<u8>], params: &[u8], out: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut cp: Vec<&[u8]> = Vec::new();
        let code = cc.to_be_bytes();
        cp.push(&code);
        cp.extend(names.iter().map(Vec::as_slice));
        cp.push(params);
        (
            SHA256.digest(&cp),
            SHA256.digest(&[&[0, 0, 0, 0], &code, out]),
        )
    }

    fn session_audit_digest(
        tpm: &mut Tpm<TestPlatform>,
        key: u32,
        session: u32,
    ) -> (u32, Vec<u8>, Vec<u8>) {
        let cmd = Cmd::new(0x14D)
            .h(0x4000_000B)
            .h(key)
            .h(session)
            .pw(b"")
            .pw(b"")
            .tpm2b(b"q")
            .u16(0x10);
        let (rc, _, body) =
            crate::command::object::tests::split(&tpm.execute(0, &cmd.bytes()), false);
        if rc != 0 {
            return (rc, Vec::new(), Vec::new());
        }
        let (attest, pos) = crate::command::object::tests::tpm2b(&body, 0);
        (0, attest, body[pos..].to_vec())
    }

    #[test]
    fn audit_session_digest_and_signed_report() {
        use crate::command::object::tests::{AK_ATTRS, ecc_signer, primary};
        let mut tpm = started();
        let (rc, ak, _, _) = primary(&mut tpm, 0x4000_000B, b"", &ecc_signer(AK_ATTRS));
        assert_eq!(rc, 0);
        let (_, h, nonce_tpm) = start(&mut tpm, 0x4000_0007, 0, &[0, 0x10], &[7; 16]);
        // Not yet an audit session: TPM_RC_TYPE for sessionHandle (handle 3).
        assert_eq!(session_audit_digest(&mut tpm, ak, h).0, 0x38A);
        // 1: HierarchyChangeAuth(owner) authorized and audited by the session.
        let names = [OWNER.to_be_bytes().to_vec()];
        let cmd = Hmac {
            cc: 0x129,
            handles: &[OWNER],
            names: &names,
            params: alloc::vec![0, 2, b'p', b'w'],
            session: h,
            key: Vec::new(),
            nonce_caller: alloc::vec![1; 16],
            nonce_tpm,
            attrs: 0x81,
        };
        let resp = tpm.execute(0, &cmd.bytes(false));
        // The response HMAC already uses the new authValue.
        let (p1, n1) = Hmac {
            key: b"pw".to_vec(),
            ..cmd.clone_ref()
        }
        .check_response(&resp);
        // First use as an audit session: it is exclusive.
        assert_eq!(resp[resp.len() - 35], 0x83);
        let (cp1, rp1) = cp_rp(0x129, &names, &cmd.params, &p1);
        let d1 = SHA256.digest(&[&[0; 32], &cp1, &rp1]);
        // 2: GetRandom, the session auditing without authorizing.
        let mut get = Hmac {
            cc: 0x17B,
            handles: &[],
            names: &[],
            params: alloc::vec![0, 8],
            session: h,
            key: Vec::new(),
            nonce_caller: alloc::vec![2; 16],
            nonce_tpm: n1,
            attrs: 0x81,
        };
        let (p2, attrs) = audited(&mut tpm, &mut get, 0x02);
        assert_eq!(attrs, 0x83);
        let (cp2, rp2) = cp_rp(0x17B, &[], &get.params, &p2);
        let d2 = SHA256.digest(&[&d1, &cp2, &rp2]);
        // The signed report carries that digest and the exclusive flag.
        let (rc, attest, sig) = session_audit_digest(&mut tpm, ak, h);
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(&attest[..6], &[0xFF, 0x54, 0x43, 0x47, 0x80, 0x16]);
        let mut tail = alloc::vec![1, 0, 32];
        tail.extend_from_slice(&d2);
        assert_eq!(&attest[attest.len() - 35..], tail.as_slice());
        let digest = SHA256.digest(&[&attest]);
        let verify = Cmd::new(0x177).h(ak).tpm2b(&digest).b(&sig);
        assert_eq!(rc_of(&tpm.execute(0, &verify.bytes())), 0);
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let verify = Cmd::new(0x177).h(ak).tpm2b(&digest).b(&bad);
        assert_ne!(rc_of(&tpm.execute(0, &verify.bytes())), 0);
        // GetSessionAuditDigest was not audited by it: no longer exclusive.
        let (_, attest, _) = session_audit_digest(&mut tpm, ak, h);
        assert_eq!(attest[attest.len() - 35], 0);
        // auditExclusive on a session that is not exclusive: TPM_RC_EXCLUSIVE.
        get.attrs = 0x83;
        assert_eq!(rc_of(&tpm.execute(0, &get.bytes(false))), 0x121);
        // Audited again without auditExclusive: extends, stays non-exclusive.
        let (p3, attrs) = audited(&mut tpm, &mut get, 0);
        assert_eq!(attrs, 0x81);
        let (cp3, rp3) = cp_rp(0x17B, &[], &get.params, &p3);
        let d3 = SHA256.digest(&[&d2, &cp3, &rp3]);
        let (_, attest, _) = session_audit_digest(&mut tpm, ak, h);
        assert_eq!(&attest[attest.len() - 32..], d3.as_slice());
        // auditReset restarts the digest from zeros and makes it exclusive.
        let (p4, attrs) = audited(&mut tpm, &mut get, 0x06);
        assert_eq!(attrs, 0x83);
        let (cp4, rp4) = cp_rp(0x17B, &[], &get.params, &p4);
        let d4 = SHA256.digest(&[&[0; 32], &cp4, &rp4]);
        let (_, attest, _) = session_audit_digest(&mut tpm, ak, h);
        assert_eq!(attest[attest.len() - 35], 1);
        assert_eq!(&attest[attest.len() - 32..], d4.as_slice());
        // The audit state survives ContextSave/ContextLoad.
        let (rc, ctx) = run(&mut tpm, 0, &Cmd::new(0x162).h(h));
        assert_eq!(rc, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x161).b(&ctx)).0, 0);
        let (_, attest, _) = session_audit_digest(&mut tpm, ak, h);
        assert_eq!(&attest[attest.len() - 32..], d4.as_slice());
    }

    #[test]
    fn audit_session_wrong_uses() {
        let mut tpm = started();
        let (_, policy, _) = start(&mut tpm, 0x4000_0007, 1, &[0, 0x10], &[7; 16]);
        let (_, a, _) = start(&mut tpm, 0x4000_0007, 0, &[0, 0x10], &[7; 16]);
        let (_, b, _) = start(&mut tpm, 0x4000_0007, 0, &[0, 0x10], &[7; 16]);
        let area = |h: u32, attrs: u8| {
            let mut v = h.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 16]);
            v.extend_from_slice(&[9; 16]);
            v.push(attrs);
            v.extend_from_slice(&[0, 0]);
            v
        };
        let build = |areas: &[Vec<u8>]| {
            let all: Vec<u8> = areas.concat();
            let mut c = alloc::vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x7B];
            c.extend_from_slice(&(all.len() as u32).to_be_bytes());
            c.extend_from_slice(&all);
            c.extend_from_slice(&[0, 8]);
            let n = (c.len() as u32).to_be_bytes();
            c[2..6].copy_from_slice(&n);
            c
        };
        // Audit on a policy session: TPM_RC_ATTRIBUTES for session 1.
        assert_eq!(rc_of(&tpm.execute(0, &build(&[area(policy, 0x81)]))), 0x982);
        // Two audit sessions: TPM_RC_ATTRIBUTES for session 2.
        assert_eq!(
            rc_of(&tpm.execute(0, &build(&[area(a, 0x81), area(b, 0x81)]))),
            0xA82
        );
        // GetSessionAuditDigest of a policy session: TPM_RC_VALUE (handle 3).
        assert_eq!(session_audit_digest(&mut tpm, 0x4000_0007, policy).0, 0x384);
        assert_eq!(session_audit_digest(&mut tpm, 0x4000_0007, a).0, 0x38A);
    }
}
