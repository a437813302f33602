//! Enhanced authorization (Part 3 §23): the policy commands that need no
//! signatures or NV: PolicyRestart, PolicyGetDigest, PolicyCommandCode,
//! PolicyAuthValue, PolicyPassword, PolicyLocality, PolicyPCR, PolicyOR,
//! PolicySecret, PolicyAuthorize, PolicyCpHash, PolicyNvWritten, PolicyNameHash,
//! PolicyDuplicationSelect, PolicyNV, PolicyCounterTimer, PolicyAuthorizeNV,
//! PolicySigned and PolicyTicket.
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
    // A negative expiration issues a ticket PolicyTicket accepts until the timeout.
    match timeout.filter(|_| !trial && expiration < 0) {
        Some(t) => {
            let h = entity_hierarchy(cx, auth_handle);
            let d = auth_ticket(
                cx,
                h,
                crate::spec::st::AUTH_SECRET,
                t,
                &cp_hash_a,
                &policy_ref,
                &name,
            )?;
            call.out.tpm2b(&t.to_be_bytes());
            call.out.u16(crate::spec::st::AUTH_SECRET);
            call.out.u32(h.handle());
            call.out.tpm2b(&d);
        }
        None => {
            call.out.u16(0);
            call.out.u16(crate::spec::st::AUTH_SECRET);
            call.out.u32(crate::spec::rh::NULL);
            call.out.u16(0);
        }
    }
    Ok(())
}

/// The hierarchy an authorizing entity belongs to (its tickets use that proof).
fn entity_hierarchy(cx: &mut Ctx, handle: u32) -> crate::hierarchy::Hierarchy {
    use crate::hierarchy::Hierarchy;
    use crate::spec::{ht, nv};
    match crate::spec::handle_type(handle) {
        ht::NV_INDEX => {
            let platform = cx
                .core
                .ps
                .nv
                .iter()
                .find(|n| n.handle == handle)
                .is_some_and(|n| n.attributes & nv::PLATFORMCREATE != 0);
            if platform {
                Hierarchy::Platform
            } else {
                Hierarchy::Owner
            }
        }
        ht::TRANSIENT | ht::PERSISTENT => {
            crate::key::get(cx.core, handle).map_or(Hierarchy::Owner, |k| k.hierarchy)
        }
        _ => Hierarchy::from_handle(handle).unwrap_or(Hierarchy::Owner),
    }
}

pub fn cp_hash(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let cp = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let s = session(cx, call)?;
    if cp.len() != s.hash.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    if s.policy.name_hash.is_some() || s.policy.template_hash.is_some() {
        return Err(Rc::new(rc::CPHASH));
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

/// Neither a cpHash, a nameHash nor a templateHash may be set twice or
/// together (TPM_RC_CPHASH).
fn no_hash_yet(s: &Session) -> CmdResult<()> {
    let p = &s.policy;
    if p.cp_hash.is_some() || p.name_hash.is_some() || p.template_hash.is_some() {
        return Err(Rc::new(rc::CPHASH));
    }
    Ok(())
}

/// PolicyNameHash: the session may only be used with handles whose Names hash to `nameHash`.
pub fn name_hash(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let nh = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let s = session(cx, call)?;
    if nh.len() != s.hash.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    no_hash_yet(s)?;
    s.extend_policy(&[&cc::POLICY_NAME_HASH.to_be_bytes(), &nh]);
    s.policy.name_hash = Some(nh);
    Ok(())
}

/// PolicyTemplate: the session may only create an object from a template
/// whose TPMT_PUBLIC hashes to `templateHash`.
pub fn template(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let th = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let s = session(cx, call)?;
    if th.len() != s.hash.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    if s.policy.template_hash.as_ref().is_some_and(|t| *t != th) {
        return Err(Rc::param(rc::VALUE, 1));
    }
    if s.policy.cp_hash.is_some() || s.policy.name_hash.is_some() {
        return Err(Rc::new(rc::CPHASH));
    }
    s.extend_policy(&[&cc::POLICY_TEMPLATE.to_be_bytes(), &th]);
    s.policy.template_hash = Some(th);
    Ok(())
}

/// PolicyPhysicalPresence: the authorization needs physical presence.
pub fn physical_presence(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let s = session(cx, call)?;
    s.extend_policy(&[&cc::POLICY_PHYSICAL_PRESENCE.to_be_bytes()]);
    s.policy.pp_required = true;
    Ok(())
}

/// PolicyDuplicationSelect: Duplicate only to `newParentName` (and, with
/// includeObject, only of `objectName`).
pub fn duplication_select(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let object = call.params.tpm2b(MAX_DIGEST + 2).p(1)?.to_vec();
    let parent = call.params.tpm2b(MAX_DIGEST + 2).p(2)?.to_vec();
    let include = call.params.yes_no().p(3)?;
    call.done()?;
    let s = session(cx, call)?;
    no_hash_yet(s)?;
    if s.policy.command_code.is_some_and(|c| c != cc::DUPLICATE) {
        return Err(Rc::new(rc::COMMAND_CODE));
    }
    let nh = s.hash.digest(&[&object, &parent]);
    let code = cc::POLICY_DUPLICATION_SELECT.to_be_bytes();
    let flag = [u8::from(include)];
    if include {
        s.extend_policy(&[&code, &object, &parent, &flag]);
    } else {
        s.extend_policy(&[&code, &parent, &flag]);
    }
    s.policy.name_hash = Some(nh);
    s.policy.command_code = Some(cc::DUPLICATE);
    Ok(())
}

/// TPM_EO comparison of `a` (from the TPM) with `b` (the caller's operand),
/// both big-endian of the same length. None for an unknown operation.
fn compare(a: &[u8], b: &[u8], op: u16) -> Option<bool> {
    use core::cmp::Ordering;
    let unsigned = a.cmp(b);
    let negative = |x: &[u8]| x.first().is_some_and(|v| v & 0x80 != 0);
    let signed = match (negative(a), negative(b)) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => unsigned,
    };
    let bits = |f: fn(u8, u8) -> bool| a.iter().zip(b).all(|(x, y)| f(*x, *y));
    Some(match op {
        0 => a == b,
        1 => a != b,
        2 => signed == Ordering::Greater,
        3 => unsigned == Ordering::Greater,
        4 => signed == Ordering::Less,
        5 => unsigned == Ordering::Less,
        6 => signed != Ordering::Less,
        7 => unsigned != Ordering::Less,
        8 => signed != Ordering::Greater,
        9 => unsigned != Ordering::Greater,
        0xA => bits(|x, y| x & y == y),
        0xB => bits(|x, y| x & y == 0),
        _ => return None,
    })
}

/// The operand part of PolicyNV/PolicyCounterTimer: (operandB, offset, operation).
fn read_operand(call: &mut Call) -> CmdResult<(Vec<u8>, u16, u16)> {
    let b = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let offset = call.params.u16().p(2)?;
    let op = call.params.u16().p(3)?;
    call.done()?;
    if op > 0xB {
        return Err(Rc::param(rc::VALUE, 3));
    }
    Ok((b, offset, op))
}

/// Compare operandB with `data[offset..]` unless the session is a trial;
/// then policyDigest := H(policyDigest ‖ code ‖ H(operandB ‖ offset ‖ op) ‖ extra).
fn operand_policy(
    cx: &mut Ctx,
    handle: u32,
    code: u32,
    data: &[u8],
    (b, offset, op): (Vec<u8>, u16, u16),
    extra: &[u8],
) -> CmdResult<()> {
    let s = cx
        .core
        .vol
        .sessions
        .get_mut(handle)
        .ok_or(Rc::handle(rc::VALUE, 1))?;
    if s.kind != Kind::Trial {
        let start = usize::from(offset);
        let a = start
            .checked_add(b.len())
            .and_then(|end| data.get(start..end))
            .ok_or(Rc::new(rc::RANGE))?;
        if !compare(a, &b, op).ok_or(Rc::param(rc::VALUE, 3))? {
            return Err(Rc::new(rc::POLICY));
        }
    }
    let args = s
        .hash
        .digest(&[&b, &offset.to_be_bytes(), &op.to_be_bytes()]);
    s.extend_policy(&[&code.to_be_bytes(), &args, extra]);
    Ok(())
}

/// PolicyNV: the contents of an NV index (read with authHandle's
/// authorization) compared with operandB.
pub fn nv(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let operand = read_operand(call)?;
    let (auth, index, handle) = (call.handle(0), call.handle(1), call.handle(2));
    let n = cx
        .core
        .ps
        .nv
        .iter()
        .find(|n| n.handle == index)
        .ok_or(Rc::handle(rc::HANDLE, 2))?;
    crate::command::nv::read_access(auth, n).map_err(|e| Rc::handle(e.base, 1))?;
    if usize::from(operand.1).saturating_add(operand.0.len()) > usize::from(n.data_size) {
        return Err(Rc::new(rc::NV_RANGE));
    }
    let data = n.data.clone();
    let name = crate::command::nv::name(n);
    operand_policy(cx, handle, cc::POLICY_NV, &data, operand, &name).map_err(|e| {
        if e.base == rc::RANGE {
            Rc::new(rc::NV_RANGE)
        } else {
            e
        }
    })
}

/// PolicyCounterTimer: TPMS_TIME_INFO (time ‖ clock ‖ resetCount ‖
/// restartCount ‖ safe) compared with operandB.
pub fn counter_timer(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let operand = read_operand(call)?;
    let v = &cx.core.vol;
    let time = v
        .clock_anchor
        .1
        .saturating_add(v.now_clock.saturating_sub(v.clock_anchor.0))
        .saturating_sub(v.init_ms);
    let mut w = Writer::new();
    w.u64(time);
    w.u64(v.now_clock);
    w.u32(cx.core.ps.reset_count);
    w.u32(cx.core.ps.restart_count);
    w.u8(u8::from(v.clock_safe));
    let handle = call.handle(0);
    operand_policy(cx, handle, cc::POLICY_COUNTER_TIMER, &w.buf, operand, &[])
}

/// PolicyAuthorizeNV: the policy approved by the TPMT_HA stored in an NV
/// index replaces the digest: H(0 ‖ TPM_CC_PolicyAuthorizeNV ‖ nvIndexName).
pub fn authorize_nv(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let (auth, index, handle) = (call.handle(0), call.handle(1), call.handle(2));
    let n = cx
        .core
        .ps
        .nv
        .iter()
        .find(|n| n.handle == index)
        .ok_or(Rc::handle(rc::HANDLE, 2))?;
    crate::command::nv::read_access(auth, n).map_err(|e| Rc::handle(e.base, 1))?;
    if (n.attributes >> 4) & 0xF != 0 {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    let data = n.data.clone();
    let name = crate::command::nv::name(n);
    let s = cx
        .core
        .vol
        .sessions
        .get_mut(handle)
        .ok_or(Rc::handle(rc::VALUE, 3))?;
    if s.kind != Kind::Trial {
        let alg = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        if alg != Some(s.hash.id()) {
            return Err(Rc::new(rc::HASH));
        }
        let approved = data.get(2..2 + s.hash.size()).ok_or(Rc::new(rc::HASH))?;
        if !crate::crypto::ct_eq(approved, &s.policy_digest) {
            return Err(Rc::new(rc::VALUE));
        }
    }
    s.policy_digest = alloc::vec![0; s.hash.size()];
    s.extend_policy(&[&cc::POLICY_AUTHORIZE_NV.to_be_bytes(), &name]);
    Ok(())
}

/// TPMT_TK_AUTH digest: HMAC(proof, tag ‖ timeout ‖ cpHashA ‖ policyRef ‖ authName).
fn auth_ticket(
    cx: &mut Ctx,
    h: crate::hierarchy::Hierarchy,
    tag: u16,
    timeout: u64,
    cp_hash_a: &[u8],
    policy_ref: &[u8],
    name: &[u8],
) -> CmdResult<Vec<u8>> {
    crate::key::ticket(
        cx,
        h,
        &[
            &tag.to_be_bytes(),
            &timeout.to_be_bytes(),
            cp_hash_a,
            policy_ref,
            name,
        ],
    )
}

/// What PolicySigned, PolicySecret and PolicyTicket bind into a session
/// (PolicyContextUpdate): H(H(policyDigest ‖ code ‖ authName) ‖ policyRef),
/// the cpHash restriction and the timeout.
fn context_update(
    s: &mut Session,
    code: u32,
    name: &[u8],
    policy_ref: &[u8],
    cp_hash_a: &[u8],
    timeout: Option<u64>,
) {
    s.extend_policy(&[&code.to_be_bytes(), name]);
    s.extend_policy(&[policy_ref]);
    if s.kind == Kind::Trial {
        return;
    }
    if !cp_hash_a.is_empty() {
        s.policy.cp_hash = Some(cp_hash_a.to_vec());
    }
    if let Some(t) = timeout {
        s.policy.timeout = Some(s.policy.timeout.map_or(t, |old| old.min(t)));
    }
}

/// PolicySigned: an authority's signature over
/// aHash = H_sig(nonceTPM ‖ expiration ‖ cpHashA ‖ policyRef).
pub fn signed(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let nonce = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let cp_hash_a = call.params.tpm2b(MAX_DIGEST).p(2)?.to_vec();
    let policy_ref = call.params.tpm2b(MAX_DIGEST).p(3)?.to_vec();
    let expiration = call.params.u32().p(4)? as i32;
    let sig_bytes = call.params.rest();
    let sig_hash = sig_bytes
        .get(2..4)
        .and_then(|b| crate::crypto::HashAlg::from_id(u16::from_be_bytes([b[0], b[1]])));
    let sig = crate::command::signature::read_signature(&mut call.params).p(5)?;
    call.done()?;
    let sig_hash = sig_hash.ok_or(Rc::param(rc::HASH, 5))?;
    let k = crate::command::object::key_at(cx, call.handle(0), 1)?;
    let now = cx.core.vol.now_clock;
    let handle = call.handle(1);
    let (trial, nonce_tpm, hash) = {
        let s = cx
            .core
            .vol
            .sessions
            .get(handle)
            .ok_or(Rc::handle(rc::VALUE, 2))?;
        (s.kind == Kind::Trial, s.nonce_tpm.clone(), s.hash)
    };
    let mut timeout = None;
    if !trial {
        if !nonce.is_empty() && !crate::crypto::ct_eq(&nonce, &nonce_tpm) {
            return Err(Rc::param(rc::NONCE, 1));
        }
        if !cp_hash_a.is_empty() && cp_hash_a.len() != hash.size() {
            return Err(Rc::param(rc::SIZE, 2));
        }
        if expiration != 0 {
            if nonce.is_empty() && expiration > 0 {
                return Err(Rc::param(rc::EXPIRED, 4));
            }
            timeout =
                Some(now.saturating_add(u64::from(expiration.unsigned_abs()).saturating_mul(1000)));
        }
        let a_hash = sig_hash.digest(&[&nonce, &expiration.to_be_bytes(), &cp_hash_a, &policy_ref]);
        crate::command::signature::verify(&k, &a_hash, &sig).p(5)?;
    }
    let name = k.name.clone();
    let ticket = if !trial && expiration < 0 && !nonce.is_empty() {
        let t = timeout.unwrap_or(0);
        let d = auth_ticket(
            cx,
            k.hierarchy,
            crate::spec::st::AUTH_SIGNED,
            t,
            &cp_hash_a,
            &policy_ref,
            &name,
        )?;
        Some((t, k.hierarchy.handle(), d))
    } else {
        None
    };
    let s = cx
        .core
        .vol
        .sessions
        .get_mut(handle)
        .ok_or(Rc::handle(rc::VALUE, 2))?;
    if !trial && !cp_hash_a.is_empty() {
        no_hash_yet(s).or_else(|e| {
            if s.policy.cp_hash.as_ref() == Some(&cp_hash_a) {
                Ok(())
            } else {
                Err(Rc::param(e.base, 2))
            }
        })?;
    }
    context_update(
        s,
        cc::POLICY_SIGNED,
        &name,
        &policy_ref,
        &cp_hash_a,
        timeout,
    );
    match ticket {
        Some((t, hy, d)) => {
            call.out.tpm2b(&t.to_be_bytes());
            call.out.u16(crate::spec::st::AUTH_SIGNED);
            call.out.u32(hy);
            call.out.tpm2b(&d);
        }
        None => {
            call.out.u16(0);
            call.out.u16(crate::spec::st::AUTH_SIGNED);
            call.out.u32(crate::spec::rh::NULL);
            call.out.u16(0);
        }
    }
    Ok(())
}

/// PolicyTicket: replay a PolicySigned (or PolicySecret) authorization by
/// its TPMT_TK_AUTH until the ticket's timeout.
pub fn ticket(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let timeout = call.params.tpm2b(8).p(1)?.to_vec();
    let cp_hash_a = call.params.tpm2b(MAX_DIGEST).p(2)?.to_vec();
    let policy_ref = call.params.tpm2b(MAX_DIGEST).p(3)?.to_vec();
    let name = call.params.tpm2b(MAX_DIGEST + 2).p(4)?.to_vec();
    let tag = call.params.u16().p(5)?;
    let hierarchy = crate::command::read_hierarchy_or_null(&mut call.params).p(5)?;
    let digest = call.params.tpm2b(MAX_DIGEST).p(5)?.to_vec();
    call.done()?;
    let code = match tag {
        crate::spec::st::AUTH_SIGNED => cc::POLICY_SIGNED,
        crate::spec::st::AUTH_SECRET => cc::POLICY_SECRET,
        _ => return Err(Rc::param(rc::TAG, 5)),
    };
    let t: [u8; 8] = timeout
        .as_slice()
        .try_into()
        .map_err(|_| Rc::param(rc::SIZE, 1))?;
    let t = u64::from_be_bytes(t);
    if cx.core.vol.now_clock > t {
        return Err(Rc::param(rc::EXPIRED, 1));
    }
    let h = crate::hierarchy::Hierarchy::from_handle(hierarchy).ok_or(Rc::param(rc::TICKET, 5))?;
    let expect = auth_ticket(cx, h, tag, t, &cp_hash_a, &policy_ref, &name)?;
    if !crate::crypto::ct_eq(&expect, &digest) {
        return Err(Rc::param(rc::TICKET, 5));
    }
    let s = session(cx, call)?;
    if !cp_hash_a.is_empty() && s.policy.cp_hash.as_ref().is_some_and(|c| *c != cp_hash_a) {
        return Err(Rc::param(rc::CPHASH, 2));
    }
    context_update(s, code, &name, &policy_ref, &cp_hash_a, Some(t));
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

    /// An owner-read/write ordinary index holding `data`.
    fn nv_index(tpm: &mut Tpm<TestPlatform>, data: &[u8]) {
        let attrs = nv::OWNERWRITE | nv::OWNERREAD;
        let mut p = IDX.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0x0B]);
        p.extend_from_slice(&attrs.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        let define = Cmd::new(0x12A).h(OWNER).pw(b"").tpm2b(b"").tpm2b(&p);
        assert_eq!(run(tpm, 0, &define).0, 0);
        let write = Cmd::new(0x137).h(OWNER).h(IDX).pw(b"").tpm2b(data).u16(0);
        assert_eq!(run(tpm, 0, &write).0, 0);
    }

    fn nv_name(tpm: &mut Tpm<TestPlatform>) -> Vec<u8> {
        let (rc, b) = run(tpm, 0, &Cmd::new(0x169).h(IDX));
        assert_eq!(rc, 0);
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let p = 2 + n;
        b[p + 2..].to_vec()
    }

    #[test]
    fn name_hash_and_duplication_select() {
        let mut tpm = started();
        let t = start(&mut tpm, 3);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x170).h(t).tpm2b(&[1; 31])).0,
            0x1D5
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x170).h(t).tpm2b(&[1; 32])).0, 0);
        let d = ext(&[0; 32], &[&0x170u32.to_be_bytes(), &[1; 32]]);
        assert_eq!(digest(&mut tpm, t), d);
        // A second nameHash, or a cpHash after it: TPM_RC_CPHASH.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x170).h(t).tpm2b(&[1; 32])).0,
            0x151
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x16E).h(t).tpm2b(&[2; 32])).0,
            0x151
        );
        let t2 = start(&mut tpm, 3);
        let select = |inc: u8| {
            Cmd::new(0x188)
                .h(t2)
                .tpm2b(b"object")
                .tpm2b(b"parent")
                .u8(inc)
        };
        assert_eq!(run(&mut tpm, 0, &select(1)).0, 0);
        let d = ext(
            &[0; 32],
            &[&0x188u32.to_be_bytes(), b"object", b"parent", &[1]],
        );
        assert_eq!(digest(&mut tpm, t2), d);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x180).h(t2)).0, 0);
        assert_eq!(run(&mut tpm, 0, &select(0)).0, 0);
        let d = ext(&[0; 32], &[&0x188u32.to_be_bytes(), b"parent", &[0]]);
        assert_eq!(digest(&mut tpm, t2), d);
        // It also fixes the command code to Duplicate.
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x180).h(t2)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16C).h(t2).u32(0x15D)).0, 0);
        assert_eq!(run(&mut tpm, 0, &select(0)).0, 0x143);
    }

    #[test]
    fn nv_and_counter_timer_comparisons() {
        let mut tpm = started();
        nv_index(&mut tpm, &[0, 0, 0, 5, 0xF0, 0, 0, 0]);
        let name = nv_name(&mut tpm);
        let s = start(&mut tpm, 1);
        let policy_nv = |b: &[u8], offset: u16, op: u16| {
            Cmd::new(0x149)
                .h(OWNER)
                .h(IDX)
                .h(s)
                .pw(b"")
                .tpm2b(b)
                .u16(offset)
                .u16(op)
        };
        // 5 == 5, 5 > 4 (unsigned), bits 0xF0 set, 5 < 4 fails.
        let mut d = alloc::vec![0u8; 32];
        for (b, off, op) in [
            (&[0u8, 0, 0, 5][..], 0u16, 0u16),
            (&[0, 0, 0, 4], 0, 3),
            (&[0xF0], 4, 0xA),
        ] {
            assert_eq!(run(&mut tpm, 0, &policy_nv(b, off, op)).0, 0);
            let args = SHA256.digest(&[b, &off.to_be_bytes(), &op.to_be_bytes()]);
            d = ext(&d, &[&0x149u32.to_be_bytes(), &args, &name]);
        }
        assert_eq!(digest(&mut tpm, s), d);
        assert_eq!(run(&mut tpm, 0, &policy_nv(&[0, 0, 0, 4], 0, 5)).0, 0x126);
        assert_eq!(run(&mut tpm, 0, &policy_nv(&[0; 4], 6, 0)).0, 0x146);
        assert_eq!(run(&mut tpm, 0, &policy_nv(&[0; 4], 0, 12)).0, 0x3C4);
        // Signed comparison: 0xF0 is negative, so it is below 1.
        assert_eq!(run(&mut tpm, 0, &policy_nv(&[1], 4, 4)).0, 0);
        // The session still holds; a wrong owner password is TPM_RC_BAD_AUTH (owner is DA-exempt).
        let bad = Cmd::new(0x149)
            .h(OWNER)
            .h(IDX)
            .h(s)
            .pw(b"wrong")
            .tpm2b(&[0])
            .u16(0)
            .u16(0);
        assert_eq!(run(&mut tpm, 0, &bad).0, 0x9A2);

        // PolicyCounterTimer: resetCount (offset 16) is small after manufacture.
        let ct = |b: &[u8], offset: u16, op: u16| Cmd::new(0x16D).h(s).tpm2b(b).u16(offset).u16(op);
        assert_eq!(run(&mut tpm, 0, &ct(&[0xFF; 4], 16, 5)).0, 0);
        assert_eq!(run(&mut tpm, 0, &ct(&[0xFF; 4], 16, 0)).0, 0x126);
        assert_eq!(run(&mut tpm, 0, &ct(&[0; 4], 24, 0)).0, 0x08D);
    }

    #[test]
    fn authorize_nv_takes_the_approved_policy_from_nv() {
        let mut tpm = started();
        let approved = ext(&[0; 32], &[&0x16Bu32.to_be_bytes()]);
        let mut ha = 0x000Bu16.to_be_bytes().to_vec();
        ha.extend_from_slice(&approved);
        nv_index(&mut tpm, &ha);
        let name = nv_name(&mut tpm);
        let s = start(&mut tpm, 1);
        let auth_nv = Cmd::new(0x192).h(OWNER).h(IDX).h(s).pw(b"");
        // Before PolicyAuthValue the digest differs: TPM_RC_VALUE.
        assert_eq!(run(&mut tpm, 0, &auth_nv).0, 0x084);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x16B).h(s)).0, 0);
        assert_eq!(run(&mut tpm, 0, &auth_nv).0, 0);
        let d = ext(&[0; 32], &[&0x192u32.to_be_bytes(), &name]);
        assert_eq!(digest(&mut tpm, s), d);
    }

    #[test]
    fn signed_with_a_tpm_signature_and_its_ticket() {
        use crate::command::object::tests::{SIGN_ATTRS, ecc_signer, primary};
        let mut tpm = started();
        let (rc, key, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(SIGN_ATTRS));
        assert_eq!(rc, 0);
        let name = {
            let r = tpm.execute(0, &Cmd::new(0x173).h(key).bytes());
            let n = usize::from(u16::from_be_bytes([r[10], r[11]]));
            let p = 12 + n;
            r[p + 2..p + 2 + usize::from(u16::from_be_bytes([r[p], r[p + 1]]))].to_vec()
        };
        let s = start(&mut tpm, 1);
        let nonce = {
            // nonceTPM is not readable directly: use an empty nonce (no ticket then).
            Vec::new()
        };
        let expiration = 0i32;
        let a_hash = SHA256.digest(&[&nonce, &expiration.to_be_bytes(), b"", b"ref"]);
        let sign = Cmd::new(0x15D)
            .h(key)
            .pw(b"")
            .tpm2b(&a_hash)
            .u16(0x10)
            .u16(0x8024)
            .u32(0x4000_0007)
            .u16(0);
        let (rc, sig) = run(&mut tpm, 0, &sign);
        assert_eq!(rc, 0, "{rc:#x}");
        let signed = |sig: &[u8]| {
            Cmd::new(0x160)
                .h(key)
                .h(s)
                .tpm2b(&nonce)
                .tpm2b(b"")
                .tpm2b(b"ref")
                .u32(expiration as u32)
                .b(sig)
        };
        let mut bad = sig.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(run(&mut tpm, 0, &signed(&bad)).0, 0x5DB);
        assert_eq!(run(&mut tpm, 0, &signed(&sig)).0, 0);
        let d = ext(&ext(&[0; 32], &[&0x160u32.to_be_bytes(), &name]), &[b"ref"]);
        assert_eq!(digest(&mut tpm, s), d);
        // A made-up ticket is refused.
        let ticket = Cmd::new(0x172)
            .h(s)
            .tpm2b(&u64::MAX.to_be_bytes())
            .tpm2b(b"")
            .tpm2b(b"ref")
            .tpm2b(&name)
            .u16(0x8025)
            .u32(OWNER)
            .tpm2b(&[0; 48]);
        assert_eq!(run(&mut tpm, 0, &ticket).0, 0x5E0);
    }

    #[test]
    fn secret_ticket_replays_until_its_timeout() {
        let mut tpm = started();
        let start_nonce = |tpm: &mut Tpm<TestPlatform>| {
            let cmd = Cmd::new(0x176)
                .h(0x4000_0007)
                .h(0x4000_0007)
                .tpm2b(&[1; 16])
                .u16(0)
                .u8(1)
                .u16(0x10)
                .u16(0x0B);
            let r = tpm.execute(0, &cmd.bytes());
            assert_eq!(rc_of(&r), 0);
            let h = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
            (h, r[16..].to_vec())
        };
        let (s, nonce) = start_nonce(&mut tpm);
        let secret = Cmd::new(0x151)
            .h(OWNER)
            .h(s)
            .pw(b"")
            .tpm2b(&nonce)
            .tpm2b(b"")
            .tpm2b(b"ref")
            .u32((-10i32) as u32);
        let (rc, b) = run(&mut tpm, 0, &secret);
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(&b[..2], &[0, 8]);
        let timeout = b[2..10].to_vec();
        assert_eq!(&b[10..12], &0x8023u16.to_be_bytes());
        let hierarchy = u32::from_be_bytes(b[12..16].try_into().unwrap());
        assert_eq!(hierarchy, OWNER);
        let ticket = b[18..].to_vec();
        assert_eq!(ticket.len(), 48);
        let want = digest(&mut tpm, s);
        let replay = |s2: u32, name: &[u8]| {
            Cmd::new(0x172)
                .h(s2)
                .tpm2b(&timeout)
                .tpm2b(b"")
                .tpm2b(b"ref")
                .tpm2b(name)
                .u16(0x8023)
                .u32(hierarchy)
                .tpm2b(&ticket)
        };
        let (s2, _) = start_nonce(&mut tpm);
        assert_eq!(run(&mut tpm, 0, &replay(s2, &OWNER.to_be_bytes())).0, 0);
        assert_eq!(digest(&mut tpm, s2), want);
        // Another name, or after the timeout: refused.
        let (s3, _) = start_nonce(&mut tpm);
        assert_eq!(run(&mut tpm, 0, &replay(s3, &IDX.to_be_bytes())).0, 0x5E0);
        tpm.platform_mut().now += 11_000;
        assert_eq!(run(&mut tpm, 0, &replay(s3, &OWNER.to_be_bytes())).0, 0x1E3);
    }

    /// PolicyTemplate restricts Create to one template; PolicyPhysicalPresence
    /// can never be satisfied (no physical-presence signal): TPM_RC_PP.
    #[test]
    fn template_and_physical_presence() {
        use crate::command::object::tests::{AK_ATTRS, SIGN_ATTRS, ecc_signer, primary, srk_ecc};
        let mut tpm = started();
        let child = ecc_signer(SIGN_ATTRS);
        let th = SHA256.digest(&[&child]);
        let policy = ext(&[0; 32], &[&0x190u32.to_be_bytes(), &th]);
        // The storage primary's template with that authPolicy.
        let mut parent = srk_ecc();
        parent.splice(8..10, [&[0u8, 32][..], &policy].concat());
        let (rc, srk, _, _) = primary(&mut tpm, OWNER, b"", &parent);
        assert_eq!(rc, 0, "{rc:#x}");
        let create = |tpm: &mut Tpm<TestPlatform>, s: u32, template: &[u8]| {
            let cmd = Cmd::new(0x153)
                .h(srk)
                .pw(b"")
                .tpm2b(&[0, 0, 0, 0])
                .tpm2b(template)
                .tpm2b(b"")
                .u32(0);
            let mut b = cmd.bytes();
            b[18..22].copy_from_slice(&s.to_be_bytes());
            b[24] = 0;
            rc_of(&tpm.execute(0, &b))
        };
        let t = start(&mut tpm, 1);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x190).h(t).tpm2b(&th[..31])).0,
            0x1D5
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x190).h(t).tpm2b(&th)).0, 0);
        assert_eq!(digest(&mut tpm, t), policy);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x16E).h(t).tpm2b(&[0; 32])).0,
            0x151
        );
        assert_eq!(create(&mut tpm, t, &ecc_signer(AK_ATTRS)), 0x99D);
        assert_eq!(create(&mut tpm, t, &child), 0);
        // PolicyPhysicalPresence.
        let p = start(&mut tpm, 1);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x187).h(p)).0, 0);
        assert_eq!(
            digest(&mut tpm, p),
            ext(&[0; 32], &[&0x187u32.to_be_bytes()])
        );
        let mut pp_parent = srk_ecc();
        let pp_policy = ext(&[0; 32], &[&0x187u32.to_be_bytes()]);
        pp_parent.splice(8..10, [&[0u8, 32][..], &pp_policy].concat());
        let (rc, pp_srk, _, _) = primary(&mut tpm, OWNER, b"", &pp_parent);
        assert_eq!(rc, 0, "{rc:#x}");
        let cmd = Cmd::new(0x153)
            .h(pp_srk)
            .pw(b"")
            .tpm2b(&[0, 0, 0, 0])
            .tpm2b(&child)
            .tpm2b(b"")
            .u32(0);
        let mut b = cmd.bytes();
        b[18..22].copy_from_slice(&p.to_be_bytes());
        assert_eq!(rc_of(&tpm.execute(0, &b)), 0x090);
    }
}
