//! Enhanced authorization (Part 3 §23): the policy commands that need no
//! signatures or NV: PolicyRestart, PolicyGetDigest, PolicyCommandCode,
//! PolicyAuthValue, PolicyPassword, PolicyLocality, PolicyPCR, PolicyOR,
//! PolicySecret, PolicyAuthorize, PolicyCpHash, PolicyNvWritten.
//! Each extends the session's policyDigest and records what must hold when
//! the session authorizes (auth.rs checks it).

use alloc::vec::Vec;

use crate::dispatch::{Call, Ctx, lookup};
use crate::marshal::Writer;
use crate::pcr::{read_selection, write_selection};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::session::{Kind, Session};
use crate::spec::{MAX_DIGEST, PCR_COUNT, cc};

fn session<'a>(cx: &'a mut Ctx, call: &Call) -> CmdResult<&'a mut Session> {
    cx.core
        .vol
        .sessions
        .get_mut(call.handle(0))
        .ok_or(Rc::handle(rc::VALUE, 1))
}

pub fn restart(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    session(cx, call)?.restart_policy();
    Ok(())
}

pub fn get_digest(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let digest = session(cx, call)?.policy_digest.clone();
    call.out.tpm2b(&digest);
    Ok(())
}

pub fn command_code(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let code = call.params.u32().p(1)?;
    call.done()?;
    if lookup(code).is_none() {
        return Err(Rc::param(rc::POLICY_CC, 1));
    }
    let s = session(cx, call)?;
    if s.policy.command_code.is_some_and(|c| c != code) {
        return Err(Rc::param(rc::VALUE, 1));
    }
    s.extend_policy(&[&cc::POLICY_COMMAND_CODE.to_be_bytes(), &code.to_be_bytes()]);
    s.policy.command_code = Some(code);
    Ok(())
}

pub fn auth_value(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let s = session(cx, call)?;
    s.extend_policy(&[&cc::POLICY_AUTH_VALUE.to_be_bytes()]);
    s.policy.auth_value_needed = true;
    s.policy.password_needed = false;
    Ok(())
}

/// PolicyPassword extends with TPM_CC_PolicyAuthValue: both yield the same
/// policy, only the way the authValue is proven differs.
pub fn password(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let s = session(cx, call)?;
    s.extend_policy(&[&cc::POLICY_AUTH_VALUE.to_be_bytes()]);
    s.policy.password_needed = true;
    s.policy.auth_value_needed = false;
    Ok(())
}

pub fn locality(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let locality = call.params.u8().p(1)?;
    call.done()?;
    if locality == 0 {
        return Err(Rc::param(rc::RANGE, 1));
    }
    let s = session(cx, call)?;
    // Localities 0-4 are a bit mask that narrows with each call; an extended
    // locality (32-255) must be the same every time.
    let merged = match s.policy.locality {
        None => locality,
        Some(prev) if prev < 32 && locality < 32 => prev & locality,
        Some(prev) if prev == locality => prev,
        Some(_) => 0,
    };
    if merged == 0 {
        return Err(Rc::param(rc::RANGE, 1));
    }
    s.extend_policy(&[&cc::POLICY_LOCALITY.to_be_bytes(), &[locality]]);
    s.policy.locality = Some(merged);
    Ok(())
}

pub fn pcr(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let given = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let selection = read_selection(&mut call.params).p(2)?;
    call.done()?;
    let handle = call.handle(0);
    let (hash, trial) = {
        let s = cx
            .core
            .vol
            .sessions
            .get(handle)
            .ok_or(Rc::handle(rc::VALUE, 1))?;
        (s.hash, s.kind == Kind::Trial)
    };
    // Digest of the selected, allocated PCRs in selection order.
    let banks = &cx.core.vol.pcrs;
    let mut values: Vec<&[u8]> = Vec::new();
    for sel in &selection {
        for p in
            (0..PCR_COUNT).filter(|p| sel.bits & (1 << p) != 0 && banks.is_allocated(sel.alg, *p))
        {
            values.push(banks.get(sel.alg, p));
        }
    }
    let current = hash.digest(&values);
    let digest = if trial && !given.is_empty() {
        given
    } else if !trial && !given.is_empty() && !crate::crypto::ct_eq(&given, &current) {
        return Err(Rc::param(rc::VALUE, 1));
    } else {
        current
    };
    let counter = banks.update_counter;
    let mut w = Writer::new();
    write_selection(&mut w, &selection);
    let s = cx
        .core
        .vol
        .sessions
        .get_mut(handle)
        .ok_or(Rc::handle(rc::VALUE, 1))?;
    s.extend_policy(&[&cc::POLICY_PCR.to_be_bytes(), &w.buf, &digest]);
    if !trial {
        s.policy.pcr_counter = Some(counter);
    }
    Ok(())
}

/// PolicySecret: the authorization of `authHandle` (checked like any other
/// authorization before this runs) is bound into the policy:
/// policyDigest := H(H(policyDigest ‖ TPM_CC_PolicySecret ‖ authName) ‖ policyRef).
pub fn secret(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let nonce_tpm = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let cp_hash_a = call.params.tpm2b(MAX_DIGEST).p(2)?.to_vec();
    let policy_ref = call.params.tpm2b(MAX_DIGEST).p(3)?.to_vec();
    let expiration = call.params.u32().p(4)? as i32;
    call.done()?;
    let auth_handle = call.handle(0);
    if auth_handle == crate::spec::rh::NULL {
        return Err(Rc::handle(rc::VALUE, 1));
    }
    let name = crate::auth::name(cx.core, auth_handle);
    let now = cx.core.vol.now_clock;
    let handle = call.handle(1);
    let s = cx
        .core
        .vol
        .sessions
        .get_mut(handle)
        .ok_or(Rc::handle(rc::VALUE, 2))?;
    let trial = s.kind == Kind::Trial;
    let mut timeout = None;
    if !trial {
        // PolicyParameterChecks: the nonce must be this session's, cpHashA a
        // digest of the session's size that agrees with any earlier one.
        if !nonce_tpm.is_empty() && !crate::crypto::ct_eq(&nonce_tpm, &s.nonce_tpm) {
            return Err(Rc::param(rc::NONCE, 1));
        }
        if !cp_hash_a.is_empty() {
            if cp_hash_a.len() != s.hash.size() {
                return Err(Rc::param(rc::SIZE, 2));
            }
            if s.policy.cp_hash.as_ref().is_some_and(|c| *c != cp_hash_a) {
                return Err(Rc::param(rc::CPHASH, 2));
            }
        }
        if expiration != 0 {
            // An expiration counts from the nonce's issue, so it needs the nonce.
            if nonce_tpm.is_empty() {
                return Err(Rc::param(rc::EXPIRED, 4));
            }
            let t = now.saturating_add(u64::from(expiration.unsigned_abs()).saturating_mul(1000));
            timeout = Some(s.policy.timeout.map_or(t, |old| old.min(t)));
        }
    }
    s.extend_policy(&[&cc::POLICY_SECRET.to_be_bytes(), &name]);
    s.extend_policy(&[&policy_ref]);
    if !trial {
        if !cp_hash_a.is_empty() {
            s.policy.cp_hash = Some(cp_hash_a.clone());
        }
        if timeout.is_some() {
            s.policy.timeout = timeout;
        }
    }
    // A ticket is issued for a negative expiration; PolicyTicket is not
    // implemented yet, so every ticket is the NULL ticket and no timeout is given.
    call.out.u16(0);
    call.out.u16(crate::spec::st::AUTH_SECRET);
    call.out.u32(crate::spec::rh::NULL);
    call.out.u16(0);
    Ok(())
}

pub fn cp_hash(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let cp = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let s = session(cx, call)?;
    if cp.len() != s.hash.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    if s.policy.cp_hash.as_ref().is_some_and(|c| *c != cp) {
        return Err(Rc::param(rc::CPHASH, 1));
    }
    s.extend_policy(&[&cc::POLICY_CP_HASH.to_be_bytes(), &cp]);
    s.policy.cp_hash = Some(cp);
    Ok(())
}

pub fn nv_written(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let written = call.params.yes_no().p(1)?;
    call.done()?;
    let s = session(cx, call)?;
    if s.policy.nv_written.is_some_and(|w| w != written) {
        return Err(Rc::param(rc::VALUE, 1));
    }
    s.extend_policy(&[&cc::POLICY_NV_WRITTEN.to_be_bytes(), &[u8::from(written)]]);
    s.policy.nv_written = Some(written);
    Ok(())
}

/// PolicyAuthorize: a policy approved by a signing key (its TPMT_TK_VERIFIED
/// from VerifySignature over aHash = H_nameAlg(approvedPolicy ‖ policyRef))
/// replaces the digest: H(H(0 ‖ TPM_CC_PolicyAuthorize ‖ keySign) ‖ policyRef).
pub fn authorize(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let approved = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let policy_ref = call.params.tpm2b(MAX_DIGEST).p(2)?.to_vec();
    let key_sign = call.params.tpm2b(MAX_DIGEST + 2).p(3)?.to_vec();
    let tag = call.params.u16().p(4)?;
    if tag != crate::spec::st::VERIFIED {
        return Err(Rc::param(rc::TAG, 4));
    }
    let hierarchy = crate::command::read_hierarchy_or_null(&mut call.params).p(4)?;
    let ticket = call.params.tpm2b(MAX_DIGEST).p(4)?.to_vec();
    call.done()?;
    let name_alg = key_sign
        .get(..2)
        .and_then(|b| crate::crypto::HashAlg::from_id(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(Rc::param(rc::HASH, 3))?;
    if key_sign.len() != name_alg.size() + 2 {
        return Err(Rc::param(rc::SIZE, 3));
    }
    let (trial, digest) = {
        let s = session(cx, call)?;
        (s.kind == Kind::Trial, s.policy_digest.clone())
    };
    if !trial {
        if !crate::crypto::ct_eq(&approved, &digest) {
            return Err(Rc::param(rc::VALUE, 1));
        }
        let a_hash = name_alg.digest(&[&approved, &policy_ref]);
        let h =
            crate::hierarchy::Hierarchy::from_handle(hierarchy).ok_or(Rc::param(rc::VALUE, 4))?;
        let vtag = crate::spec::st::VERIFIED.to_be_bytes();
        let expect = crate::key::ticket(cx, h, &[&vtag, &a_hash, &key_sign])?;
        if !crate::crypto::ct_eq(&expect, &ticket) {
            return Err(Rc::param(rc::VALUE, 4));
        }
    }
    let s = session(cx, call)?;
    s.policy_digest = alloc::vec![0; s.hash.size()];
    s.extend_policy(&[&cc::POLICY_AUTHORIZE.to_be_bytes(), &key_sign]);
    s.extend_policy(&[&policy_ref]);
    Ok(())
}

pub fn or(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let count = call.params.u32().p(1)?;
    if !(2..=8).contains(&count) {
        return Err(Rc::param(rc::SIZE, 1));
    }
    let mut list = Vec::new();
    for _ in 0..count {
        list.push(call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec());
    }
    call.done()?;
    let s = session(cx, call)?;
    if s.kind != Kind::Trial
        && !list
            .iter()
            .any(|d| crate::crypto::ct_eq(d, &s.policy_digest))
    {
        return Err(Rc::param(rc::VALUE, 1));
    }
    s.policy_digest = alloc::vec![0; s.hash.size()];
    let mut parts: Vec<&[u8]> = Vec::new();
    let code = cc::POLICY_OR.to_be_bytes();
    parts.push(&code);
    parts.extend(list.iter().map(Vec::as_slice));
    s.extend_policy(&parts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::crypto::HashAlg;
    use crate::spec::nv;
    use crate::testutil::{Cmd, TestPlatform, rc_of, run, started};

    const SHA256: HashAlg = HashAlg::Sha256;
    const OWNER: u32 = 0x4000_0001;
    const IDX: u32 = 0x0150_0100;

    fn start(tpm: &mut Tpm<TestPlatform>, kind: u8) -> u32 {
        let cmd = Cmd::new(0x176)
            .h(0x4000_0007)
            .h(0x4000_0007)
            .tpm2b(&[1; 16])
            .u16(0)
            .u8(kind)
            .u16(0x10)
            .u16(0x0B);
        let r = tpm.execute(0, &cmd.bytes());
        assert_eq!(rc_of(&r), 0);
        u32::from_be_bytes([r[10], r[11], r[12], r[13]])
    }
    fn digest(tpm: &mut Tpm<TestPlatform>, h: u32) -> Vec<u8> {
        let (rc, b) = run(tpm, 0, &Cmd::new(0x189).h(h));
        assert_eq!(rc, 0);
        b[2..].to_vec()
    }
    fn ext(old: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut all: Vec<&[u8]> = alloc::vec![old];
        all.extend_from_slice(parts);
        SHA256.digest(&all)
    }

    #[test]
    fn digests_follow_part_3() {
        let mut tpm = started();
        let t = start(&mut tpm, 3);
        assert_eq!(digest(&mut tpm, t), [0; 32]);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16C).h(t).u32(0x137)).0, 0);
        let d1 = ext(
            &[0; 32],
            &[&0x16Cu32.to_be_bytes(), &0x137u32.to_be_bytes()],
        );
        assert_eq!(digest(&mut tpm, t), d1);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16C).h(t).u32(0x14E)).0, 0x1C4);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16B).h(t)).0, 0);
        let d2 = ext(&d1, &[&0x16Bu32.to_be_bytes()]);
        assert_eq!(digest(&mut tpm, t), d2);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16F).h(t).u8(0b11)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16F).h(t).u8(0b100)).0, 0x1CD);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16F).h(t).u8(0)).0, 0x1CD);
        let d3 = ext(&d2, &[&0x16Fu32.to_be_bytes(), &[0b11]]);
        assert_eq!(digest(&mut tpm, t), d3);
        // PolicyPCR over PCR 0 (SHA-256 bank): digest of the PCR value.
        let pcr0 = {
            let (_, b) = run(
                &mut tpm,
                0,
                &Cmd::new(0x17E).u32(1).u16(0x0B).u8(3).b(&[1, 0, 0]),
            );
            b[20..].to_vec()
        };
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x17F)
                    .h(t)
                    .tpm2b(&[])
                    .u32(1)
                    .u16(0x0B)
                    .u8(3)
                    .b(&[1, 0, 0])
            )
            .0,
            0
        );
        let sel = [0, 0, 0, 1, 0, 0x0B, 3, 1, 0, 0];
        let d4 = ext(
            &d3,
            &[&0x17Fu32.to_be_bytes(), &sel, &SHA256.digest(&[&pcr0])],
        );
        assert_eq!(digest(&mut tpm, t), d4);
        // PolicyOR, then PolicyRestart.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x171).h(t).u32(2).tpm2b(&d4).tpm2b(&[9; 32])
            )
            .0,
            0
        );
        let d5 = ext(&[0; 32], &[&0x171u32.to_be_bytes(), &d4, &[9; 32]]);
        assert_eq!(digest(&mut tpm, t), d5);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x171).h(t).u32(1).tpm2b(&d4)).0,
            0x1D5
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x180).h(t)).0, 0);
        assert_eq!(digest(&mut tpm, t), [0; 32]);
        // Handles: HMAC session, unloaded policy session.
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x189).h(0x0200_0000)).0, 0x184);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x189).h(0x0300_0009)).0, 0x910);
    }

    /// An NV index whose policy is PolicyCommandCode(NV_Read) + PolicyPassword:
    /// a policy session that replays the policy can read it, not write it.
    #[test]
    fn policy_session_authorizes_nv_read() {
        let mut tpm = started();
        let policy = ext(
            &ext(
                &[0; 32],
                &[&0x16Cu32.to_be_bytes(), &0x14Eu32.to_be_bytes()],
            ),
            &[&0x16Bu32.to_be_bytes()],
        );
        let attrs = nv::POLICYREAD | nv::POLICYWRITE | nv::OWNERWRITE | nv::OWNERREAD;
        let mut p = IDX.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0x0B]);
        p.extend_from_slice(&attrs.to_be_bytes());
        p.extend_from_slice(&32u16.to_be_bytes());
        p.extend_from_slice(&policy);
        p.extend_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x12A).h(OWNER).pw(b"").tpm2b(b"pin").tpm2b(&p)
            )
            .0,
            0
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x137)
                    .h(OWNER)
                    .h(IDX)
                    .pw(b"")
                    .tpm2b(b"data")
                    .u16(0)
            )
            .0,
            0
        );
        let s = start(&mut tpm, 1);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16C).h(s).u32(0x14E)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x18C).h(s)).0, 0);
        assert_eq!(digest(&mut tpm, s), policy);
        let read = |pw: &[u8], cc: u32, params: &[u8]| {
            let mut c = Cmd::new(cc).h(IDX).h(IDX).pw(pw).b(params).bytes();
            c[22..26].copy_from_slice(&s.to_be_bytes());
            // attributes: continueSession
            c
        };
        let r = tpm.execute(0, &read(b"pin", 0x14E, &[0, 4, 0, 0]));
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        assert_eq!(&r[16..20], b"data");
        // Wrong password (DA protected index): TPM_RC_AUTH_FAIL on session 1.
        assert_eq!(
            rc_of(&tpm.execute(0, &read(b"pix", 0x14E, &[0, 4, 0, 0]))),
            0x98E
        );
        // The policy names NV_Read only.
        assert_eq!(
            rc_of(&tpm.execute(0, &read(b"pin", 0x137, &[0, 1, 0x41, 0, 0]))),
            0x9A4
        );
        // A policy session for an entity without a policy.
        let mut c = Cmd::new(0x129).h(OWNER).pw(b"").tpm2b(b"").bytes();
        c[18..22].copy_from_slice(&s.to_be_bytes());
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x12F);
    }

    /// PolicySecret(endorsement), as the default EK templates' policy.
    #[test]
    fn policy_secret_binds_the_entity_authorization() {
        let mut tpm = started();
        let endorsement = 0x4000_000Bu32;
        let t = start(&mut tpm, 3);
        let secret = |tpm: &mut Tpm<TestPlatform>, s: u32, pw: &[u8], exp: u32| {
            run(
                tpm,
                0,
                &Cmd::new(0x151)
                    .h(endorsement)
                    .h(s)
                    .pw(pw)
                    .tpm2b(&[])
                    .tpm2b(&[])
                    .tpm2b(&[])
                    .u32(exp),
            )
        };
        assert_eq!(secret(&mut tpm, t, b"", 0).0, 0);
        // The well-known EK policy: H(0^32 ‖ TPM_CC_PolicySecret ‖ TPM_RH_ENDORSEMENT), then ‖ empty policyRef.
        let expected = ext(
            &ext(
                &[0; 32],
                &[&0x151u32.to_be_bytes(), &endorsement.to_be_bytes()],
            ),
            &[],
        );
        assert_eq!(digest(&mut tpm, t), expected);
        assert_eq!(
            expected[..4],
            [0x83, 0x71, 0x97, 0x67],
            "the TCG EK credential profile's PolicySecret(TPM_RH_ENDORSEMENT) digest"
        );
        // The authorization of the entity is checked: endorsement is DA exempt.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x129).h(endorsement).pw(b"").tpm2b(b"e")
            )
            .0,
            0
        );
        let p = start(&mut tpm, 1);
        assert_eq!(secret(&mut tpm, p, b"x", 0).0, 0x9A2);
        assert_eq!(secret(&mut tpm, p, b"e", 0).0, 0);
        assert_eq!(digest(&mut tpm, p), expected);
        // A nonce that is not the session's; an expiration without a nonce.
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x151)
                .h(endorsement)
                .h(p)
                .pw(b"e")
                .tpm2b(&[1; 16])
                .tpm2b(&[])
                .tpm2b(&[])
                .u32(0),
        );
        assert_eq!(rc, 0x1CF);
        assert_eq!(secret(&mut tpm, p, b"e", 10).0, 0x4E3);
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x151)
                    .h(0x4000_0007)
                    .h(p)
                    .pw(b"")
                    .tpm2b(&[])
                    .tpm2b(&[])
                    .tpm2b(&[])
                    .u32(0)
            )
            .0,
            0x184
        );
    }

    /// PolicyAuthorize with a ticket from VerifySignature over aHash.
    #[test]
    fn policy_authorize_with_a_verified_ticket() {
        let mut tpm = started();
        // An ECDSA P-256 signing key under the owner.
        let mut public = Vec::new();
        for v in [0x0023u16, 0x000B] {
            public.extend_from_slice(&v.to_be_bytes());
        }
        public.extend_from_slice(&0x0004_0072u32.to_be_bytes());
        for v in [0u16, 0x0010, 0x0018, 0x000B, 0x0003, 0x0010, 0, 0] {
            public.extend_from_slice(&v.to_be_bytes());
        }
        let r = tpm.execute(
            0,
            &Cmd::new(0x131)
                .h(OWNER)
                .pw(b"")
                .u16(4)
                .u32(0)
                .tpm2b(&public)
                .u16(0)
                .u32(0)
                .bytes(),
        );
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        let key = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
        let (_, rp) = run(&mut tpm, 0, &Cmd::new(0x173).h(key));
        let skip = 2 + u16::from_be_bytes([rp[0], rp[1]]) as usize;
        let name_len = u16::from_be_bytes([rp[skip], rp[skip + 1]]) as usize;
        let name = rp[skip + 2..skip + 2 + name_len].to_vec();
        // The approved policy: PolicyCommandCode(NV_Read).
        let approved = ext(
            &[0; 32],
            &[&0x16Cu32.to_be_bytes(), &0x14Eu32.to_be_bytes()],
        );
        let policy_ref = b"ref".to_vec();
        let a_hash = SHA256.digest(&[&approved, &policy_ref]);
        let null_ticket = [0x80u8, 0x24, 0x40, 0, 0, 7, 0, 0];
        let (rc, sig) = run(
            &mut tpm,
            0,
            &Cmd::new(0x15D)
                .h(key)
                .pw(b"")
                .tpm2b(&a_hash)
                .u16(0x10)
                .b(&null_ticket),
        );
        assert_eq!(rc, 0);
        let (rc, ticket) = run(&mut tpm, 0, &Cmd::new(0x177).h(key).tpm2b(&a_hash).b(&sig));
        assert_eq!(rc, 0);
        let authorize = |tpm: &mut Tpm<TestPlatform>, s: u32, approved: &[u8], ticket: &[u8]| {
            run(
                tpm,
                0,
                &Cmd::new(0x16A)
                    .h(s)
                    .tpm2b(approved)
                    .tpm2b(b"ref")
                    .tpm2b(&name)
                    .b(ticket),
            )
            .0
        };
        let expected = ext(
            &ext(&[0; 32], &[&0x16Au32.to_be_bytes(), &name]),
            &[&policy_ref],
        );
        // A trial session needs no ticket.
        let t = start(&mut tpm, 3);
        assert_eq!(
            authorize(&mut tpm, t, &[], &[0x80, 0x22, 0x40, 0, 0, 7, 0, 0]),
            0
        );
        assert_eq!(digest(&mut tpm, t), expected);
        // A policy session at the approved digest, with the ticket.
        let p = start(&mut tpm, 1);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16C).h(p).u32(0x14E)).0, 0);
        assert_eq!(authorize(&mut tpm, p, &[1; 32], &ticket), 0x1C4);
        let mut bad = ticket.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(authorize(&mut tpm, p, &approved, &bad), 0x4C4);
        assert_eq!(
            authorize(&mut tpm, p, &approved, &[0x80, 0x24, 0x40, 0, 0, 7, 0, 0]),
            0x4D7
        );
        assert_eq!(authorize(&mut tpm, p, &approved, &ticket), 0);
        assert_eq!(digest(&mut tpm, p), expected);
        // PolicyCpHash and PolicyNvWritten digests.
        let c = start(&mut tpm, 3);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16E).h(c).tpm2b(&[3; 32])).0, 0);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x16E).h(c).tpm2b(&[4; 32])).0,
            0x151
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x16E).h(c).tpm2b(&[4; 20])).0,
            0x1D5
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x18F).h(c).u8(1)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x18F).h(c).u8(0)).0, 0x1C4);
        let d = ext(
            &ext(&[0; 32], &[&0x16Eu32.to_be_bytes(), &[3; 32]]),
            &[&0x18Fu32.to_be_bytes(), &[1]],
        );
        assert_eq!(digest(&mut tpm, c), d);
    }
}
