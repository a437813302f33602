//! The authorization area (Part 1 §18.7, §19): session parsing in the
//! reference's order, password (TPM_RS_PW) and HMAC-session authorization
//! with dictionary-attack protection, cpHash/rpHash, response HMACs and
//! parameter encryption. Policy sessions authorize when their policyDigest
//! equals the entity's authPolicy.

use alloc::vec::Vec;

use crate::Core;
use crate::command::nv::name as nv_name;
use crate::crypto::{HashAlg, ct_eq, trim_auth};
use crate::dispatch::Entry;
use crate::marshal::Reader;
use crate::rc::{self, CmdResult, Rc};
use crate::session::{Kind, Sessions, Symmetric};
use crate::spec::{self, cc, ht, nv, rh, sa};

/// One TPMS_AUTH_COMMAND.
#[derive(Clone, Debug)]
pub struct AuthCommand {
    pub handle: u32,
    pub nonce: Vec<u8>,
    pub attributes: u8,
    pub hmac: Vec<u8>,
}

/// The parsed authorization area.
#[derive(Default)]
pub struct AuthArea {
    pub sessions: Vec<AuthCommand>,
    /// Index of the session that decrypts the first command parameter.
    pub decrypt: Option<usize>,
    /// Index of the session that encrypts the first response parameter.
    pub encrypt: Option<usize>,
    /// Index of the audit session.
    pub audit: Option<usize>,
}

fn number(i: usize) -> u8 {
    u8::try_from(i + 1).unwrap_or(7)
}

/// Unmarshal the sessions (RetrieveSessionData): per-session errors carry
/// the session number.
pub fn parse_sessions(loaded: &Sessions, entry: &Entry, area: &[u8]) -> CmdResult<AuthArea> {
    let mut r = Reader::new(area);
    let mut out = AuthArea::default();
    while r.remaining() > 0 {
        let i = out.sessions.len();
        let n = number(i);
        if i == spec::MAX_SESSIONS {
            return Err(Rc::session(rc::SIZE, n));
        }
        let at = |e: Rc| Rc::session(e.base, n);
        let handle = r.u32().map_err(at)?;
        let nonce = r.tpm2b(spec::MAX_DIGEST).map_err(at)?.to_vec();
        let attributes = r.u8().map_err(at)?;
        // TPMA_SESSION bits 3 and 4 are reserved.
        if attributes & 0x18 != 0 {
            return Err(Rc::session(rc::RESERVED_BITS, n));
        }
        let hmac = r.tpm2b(spec::MAX_DIGEST).map_err(at)?.to_vec();
        if handle == rh::PW {
            if attributes
                & (sa::ENCRYPT | sa::DECRYPT | sa::AUDIT | sa::AUDIT_EXCLUSIVE | sa::AUDIT_RESET)
                != 0
            {
                return Err(Rc::session(rc::ATTRIBUTES, n));
            }
            if !nonce.is_empty() {
                return Err(Rc::session(rc::NONCE, n));
            }
        } else {
            let kind = spec::handle_type(handle);
            if kind != ht::HMAC_SESSION && kind != ht::POLICY_SESSION {
                return Err(Rc::session(rc::VALUE, n));
            }
            let Some(s) = loaded.get(handle) else {
                return Err(Rc::new(rc::REFERENCE_S0 + u32::try_from(i).unwrap_or(0)));
            };
            if out.sessions.iter().any(|x| x.handle == handle) {
                return Err(Rc::session(rc::HANDLE, n));
            }
            if attributes & sa::DECRYPT != 0 {
                if !entry.decrypt || out.decrypt.is_some() {
                    return Err(Rc::session(rc::ATTRIBUTES, n));
                }
                if s.symmetric == Symmetric::Null {
                    return Err(Rc::session(rc::SYMMETRIC, n));
                }
                out.decrypt = Some(i);
            }
            if attributes & sa::ENCRYPT != 0 {
                if !entry.encrypt || out.encrypt.is_some() {
                    return Err(Rc::session(rc::ATTRIBUTES, n));
                }
                if s.symmetric == Symmetric::Null {
                    return Err(Rc::session(rc::SYMMETRIC, n));
                }
                out.encrypt = Some(i);
            }
            // auditExclusive and auditReset need audit (Part 2 TPMA_SESSION).
            if attributes & sa::AUDIT == 0
                && attributes & (sa::AUDIT_EXCLUSIVE | sa::AUDIT_RESET) != 0
            {
                return Err(Rc::session(rc::ATTRIBUTES, n));
            }
            if attributes & sa::AUDIT != 0 {
                // One audit session per command, and never a policy session.
                if out.audit.is_some() || kind == ht::POLICY_SESSION {
                    return Err(Rc::session(rc::ATTRIBUTES, n));
                }
                // Unless this is its first use as an audit session or a reset,
                // auditExclusive asks that the session still be exclusive.
                if attributes & sa::AUDIT_RESET == 0
                    && s.audit
                    && attributes & sa::AUDIT_EXCLUSIVE != 0
                    && loaded.exclusive_audit != Some(handle)
                {
                    return Err(Rc::new(rc::EXCLUSIVE));
                }
                out.audit = Some(i);
            }
        }
        out.sessions.push(AuthCommand {
            handle,
            nonce,
            attributes,
            hmac,
        });
    }
    Ok(out)
}

/// Commands that read an NV index (AUTHREAD applies) or write it (AUTHWRITE).
fn nv_read_op(code: u32) -> bool {
    matches!(
        code,
        cc::NV_READ | cc::NV_READ_LOCK | cc::POLICY_NV | cc::POLICY_AUTHORIZE_NV
    )
}
fn nv_write_op(code: u32) -> bool {
    matches!(
        code,
        cc::NV_WRITE | cc::NV_INCREMENT | cc::NV_SET_BITS | cc::NV_EXTEND | cc::NV_WRITE_LOCK
    )
}

/// Handles used in the ADMIN role (Part 3 tables, "Auth Role: ADMIN").
fn nv_admin(code: u32, i: usize) -> bool {
    i == 0 && matches!(code, cc::NV_CHANGE_AUTH | cc::NV_UNDEFINE_SPACE_SPECIAL)
}

/// What authorizing an entity needs: its authValue (trailing zeros removed),
/// its authPolicy (hash, digest), and whether it is exempt from DA.
struct Entity {
    auth: Vec<u8>,
    policy: Option<(HashAlg, Vec<u8>)>,
    da_exempt: bool,
    /// NV indices: the command may not use the authValue (AUTHREAD/AUTHWRITE
    /// clear) or the policy (POLICYREAD/POLICYWRITE clear).
    no_auth: bool,
    no_policy: bool,
}

fn entity(core: &Core, code: u32, handle: u32) -> CmdResult<Entity> {
    Ok(match spec::handle_type(handle) {
        ht::PERMANENT => Entity {
            auth: crate::hierarchy::permanent_auth(core, handle),
            policy: None,
            da_exempt: handle != rh::LOCKOUT,
            no_auth: false,
            no_policy: false,
        },
        ht::NV_INDEX => {
            let index = core
                .ps
                .nv
                .iter()
                .find(|n| n.handle == handle)
                .ok_or(Rc::new(rc::HANDLE))?;
            let a = index.attributes;
            let no_auth = (nv_read_op(code) && a & nv::AUTHREAD == 0)
                || (nv_write_op(code) && a & nv::AUTHWRITE == 0);
            let no_policy = (nv_read_op(code) && a & nv::POLICYREAD == 0)
                || (nv_write_op(code) && a & nv::POLICYWRITE == 0);
            let policy = (!index.auth_policy.is_empty())
                .then(|| (index.name_alg, index.auth_policy.clone()));
            Entity {
                auth: index.auth.clone(),
                policy,
                da_exempt: a & nv::NO_DA != 0,
                no_auth,
                no_policy,
            }
        }
        ht::TRANSIENT | ht::PERSISTENT => {
            if let Some(o) = crate::key::object_auth(core, code, handle) {
                Entity {
                    auth: o.auth,
                    policy: o.policy,
                    da_exempt: o.da_exempt,
                    no_auth: false,
                    no_policy: false,
                }
            } else if spec::handle_type(handle) == ht::TRANSIENT {
                let o = core.vol.objects.get(handle).ok_or(Rc::new(rc::HANDLE))?;
                Entity {
                    auth: o.auth.clone(),
                    policy: None,
                    da_exempt: true,
                    no_auth: false,
                    no_policy: false,
                }
            } else {
                return Err(Rc::new(rc::HANDLE));
            }
        }
        // PCRs: authValue is the Empty Buffer (no PCR_SetAuthValue yet); DA exempt.
        _ => Entity {
            auth: Vec::new(),
            policy: None,
            da_exempt: true,
            no_auth: false,
            no_policy: false,
        },
    })
}

/// The authValue of a session's bind entity (trailing zeros removed).
pub fn bind_auth(core: &Core, handle: u32) -> Vec<u8> {
    entity(core, 0, handle)
        .map(|e| trim_auth(&e.auth).to_vec())
        .unwrap_or_default()
}

/// The Name of an entity in the handle area (Part 1 §16).
pub fn name(core: &Core, handle: u32) -> Vec<u8> {
    match spec::handle_type(handle) {
        ht::NV_INDEX => core
            .ps
            .nv
            .iter()
            .find(|n| n.handle == handle)
            .map(nv_name)
            .unwrap_or_default(),
        // Keys have their Name; sequence objects have no nameAlg (Empty Buffer).
        ht::TRANSIENT | ht::PERSISTENT => crate::key::object_name(core, handle).unwrap_or_default(),
        _ => handle.to_be_bytes().to_vec(),
    }
}

fn lockout_check(core: &Core, handle: u32, e: &Entity) -> CmdResult<()> {
    if e.da_exempt {
        return Ok(());
    }
    let locked = if handle == rh::LOCKOUT {
        !core.ps.lockout_auth_enabled
    } else {
        core.ps.failed_tries >= core.ps.max_tries
    };
    if locked {
        Err(Rc::new(rc::LOCKOUT))
    } else {
        Ok(())
    }
}

/// Whether an entity is exempt from dictionary-attack protection.
pub fn da_exempt(core: &Core, handle: u32) -> bool {
    entity(core, 0, handle).map_or(true, |e| e.da_exempt)
}

/// A failed HMAC (IncrementLockout): a session bound to lockoutAuth counts
/// as a lockout failure; one bound to a DA-protected entity counts even when
/// the authorized entity (or none) is exempt.
fn hmac_failure(core: &mut Core, session: u32, handle: Option<u32>) -> Rc {
    let (da_bound, lockout_bound) = core
        .vol
        .sessions
        .get(session)
        .map_or((false, false), |s| (s.da_bound, s.lockout_bound));
    let handle = if lockout_bound {
        Some(rh::LOCKOUT)
    } else {
        handle
    };
    let exempt = handle.is_none_or(|h| da_exempt(core, h));
    let h = handle.unwrap_or(rh::NULL);
    let e = Entity {
        auth: Vec::new(),
        policy: None,
        da_exempt: exempt && !da_bound,
        no_auth: false,
        no_policy: false,
    };
    auth_failure(core, h, &e)
}

/// A failed authorization: DA-protected entities count it (TPM_RC_AUTH_FAIL).
fn auth_failure(core: &mut Core, handle: u32, e: &Entity) -> Rc {
    if e.da_exempt {
        return Rc::new(rc::BAD_AUTH);
    }
    if handle == rh::LOCKOUT {
        core.ps.lockout_auth_enabled = false;
        core.vol.lockout_disabled_at = core.vol.now_clock;
    } else {
        core.ps.failed_tries = core.ps.failed_tries.saturating_add(1);
        core.vol.da_heal_ms = core.vol.now_clock;
    }
    core.dirty = true;
    Rc::new(rc::AUTH_FAIL)
}

/// cpHash := H(commandCode ‖ Name1 ‖ … ‖ parameters).
pub fn cp_hash(core: &Core, alg: HashAlg, code: u32, handles: &[u32], params: &[u8]) -> Vec<u8> {
    let names: Vec<Vec<u8>> = handles.iter().map(|h| name(core, *h)).collect();
    let mut parts: Vec<&[u8]> = Vec::new();
    let code = code.to_be_bytes();
    parts.push(&code);
    parts.extend(names.iter().map(Vec::as_slice));
    parts.push(params);
    alg.digest(&parts)
}

/// Check every session of the area (ParseSessionBuffer's second loop);
/// errors carry the session number where the spec gives one.
pub fn authorize(
    core: &mut Core,
    entry: &Entry,
    handles: &[u32],
    area: &AuthArea,
    params: &[u8],
    locality: u8,
) -> CmdResult<()> {
    for (i, s) in area.sessions.iter().enumerate() {
        let n = number(i);
        let at = |e: Rc| Rc::session(e.base, n);
        let assoc = handles.get(i).copied().filter(|_| i < entry.auth);
        // The ADMIN role of an NV index and the DUP role (Duplicate's object)
        // can only be given by a policy session.
        let dup = entry.cc == cc::DUPLICATE && i == 0;
        if assoc
            .is_some_and(|h| dup || (nv_admin(entry.cc, i) && spec::handle_type(h) == ht::NV_INDEX))
            && (s.handle == rh::PW || spec::handle_type(s.handle) == ht::HMAC_SESSION)
        {
            return Err(Rc::new(rc::AUTH_TYPE));
        }
        if s.handle == rh::PW {
            // A password session must authorize a handle.
            let h = assoc.ok_or(Rc::session(rc::HANDLE, n))?;
            let e = entity(core, entry.cc, h).map_err(at)?;
            if e.no_auth
                || crate::key::object_auth_at(core, entry.cc, h, Some(i))
                    .is_some_and(|o| !o.auth_allowed)
            {
                return Err(Rc::new(rc::AUTH_UNAVAILABLE));
            }
            lockout_check(core, h, &e)?;
            if !ct_eq(trim_auth(&s.hmac), trim_auth(&e.auth)) {
                return Err(at(auth_failure(core, h, &e)));
            }
            continue;
        }
        let Some(session) = core.vol.sessions.get(s.handle) else {
            return Err(Rc::new(rc::REFERENCE_S0 + u32::try_from(i).unwrap_or(0)));
        };
        if session.kind == Kind::Trial {
            return Err(Rc::session(rc::ATTRIBUTES, n));
        }
        if session.da_bound {
            let locked = if session.lockout_bound {
                !core.ps.lockout_auth_enabled
            } else {
                core.ps.failed_tries >= core.ps.max_tries
            };
            if locked {
                return Err(Rc::new(rc::LOCKOUT));
            }
        }
        let alg = session.hash;
        let cp = cp_hash(core, alg, entry.cc, handles, params);
        // nonceTPM of the decrypt/encrypt sessions goes into the first session's HMAC.
        let mut extra: Vec<Vec<u8>> = Vec::new();
        if i == 0 {
            for j in [
                area.decrypt,
                area.encrypt.filter(|e| Some(*e) != area.decrypt),
            ]
            .into_iter()
            .flatten()
            {
                if j != 0
                    && let Some(o) = area
                        .sessions
                        .get(j)
                        .and_then(|x| core.vol.sessions.get(x.handle))
                {
                    extra.push(o.nonce_tpm.clone());
                }
            }
        }
        let Some(h) = assoc else {
            // Not an authorization: it must encrypt, decrypt or audit.
            if s.attributes & (sa::AUDIT | sa::ENCRYPT | sa::DECRYPT) == 0 {
                return Err(Rc::session(rc::ATTRIBUTES, n));
            }
            if session.kind == Kind::Hmac && !verify_hmac(core, s, &[], &cp, &extra) {
                return Err(at(hmac_failure(core, s.handle, None)));
            }
            continue;
        };
        let e = entity(core, entry.cc, h).map_err(at)?;
        let session = core
            .vol
            .sessions
            .get(s.handle)
            .ok_or(Rc::session(rc::HANDLE, n))?;
        match session.kind {
            Kind::Policy => {
                let Some((policy_alg, policy)) = e.policy.as_ref().filter(|_| !e.no_policy) else {
                    return Err(Rc::new(rc::AUTH_UNAVAILABLE));
                };
                if *policy_alg != session.hash || !ct_eq(policy, &session.policy_digest) {
                    return Err(Rc::session(rc::POLICY_FAIL, n));
                }
                let p = session.policy.clone();
                if p.timeout.is_some_and(|t| core.vol.now_clock > t) {
                    return Err(Rc::session(rc::EXPIRED, n));
                }
                if p.command_code.is_some_and(|c| c != entry.cc) {
                    return Err(Rc::session(rc::POLICY_CC, n));
                }
                if p.cp_hash.as_ref().is_some_and(|c| !ct_eq(c, &cp)) {
                    return Err(Rc::session(rc::POLICY_FAIL, n));
                }
                if let Some(want) = &p.template_hash
                    && !template_matches(alg, entry.cc, params, want)
                {
                    return Err(Rc::session(rc::POLICY_FAIL, n));
                }
                // No physical-presence signal reaches the engine: never asserted.
                if p.pp_required {
                    return Err(Rc::new(rc::PP));
                }
                if let Some(want) = &p.name_hash {
                    let names: Vec<Vec<u8>> = handles.iter().map(|x| name(core, *x)).collect();
                    let parts: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                    if !ct_eq(want, &alg.digest(&parts)) {
                        return Err(Rc::session(rc::POLICY_FAIL, n));
                    }
                }
                if let Some(want) = p.nv_written {
                    let written = core
                        .ps
                        .nv
                        .iter()
                        .find(|x| x.handle == h)
                        .map(|x| x.attributes & nv::WRITTEN != 0);
                    if written.is_some_and(|w| w != want) {
                        return Err(Rc::session(rc::POLICY_FAIL, n));
                    }
                }
                if p.locality
                    .is_some_and(|m| !crate::pcr::locality_allows(m, locality))
                {
                    return Err(Rc::new(rc::LOCALITY));
                }
                if p.pcr_counter
                    .is_some_and(|c| c != core.vol.pcrs.update_counter)
                {
                    return Err(Rc::new(rc::PCR_CHANGED));
                }
                if p.password_needed {
                    lockout_check(core, h, &e)?;
                    if !ct_eq(trim_auth(&s.hmac), trim_auth(&e.auth)) {
                        return Err(at(auth_failure(core, h, &e)));
                    }
                } else {
                    if p.auth_value_needed {
                        lockout_check(core, h, &e)?;
                    }
                    let auth = if p.auth_value_needed {
                        trim_auth(&e.auth).to_vec()
                    } else {
                        Vec::new()
                    };
                    if !verify_hmac(core, s, &auth, &cp, &extra) {
                        return Err(at(hmac_failure(core, s.handle, Some(h))));
                    }
                }
            }
            _ => {
                if e.no_auth
                    || crate::key::object_auth_at(core, entry.cc, h, Some(i))
                        .is_some_and(|o| !o.auth_allowed)
                {
                    return Err(Rc::new(rc::AUTH_UNAVAILABLE));
                }
                let include_auth = !session.bound_to(h, trim_auth(&e.auth));
                if include_auth {
                    lockout_check(core, h, &e)?;
                }
                let auth = if include_auth {
                    trim_auth(&e.auth).to_vec()
                } else {
                    Vec::new()
                };
                if !verify_hmac(core, s, &auth, &cp, &extra) {
                    return Err(at(hmac_failure(core, s.handle, Some(h))));
                }
            }
        }
    }
    Ok(())
}

/// PolicyTemplate: H(inPublic's TPMT_PUBLIC) of Create, CreatePrimary or
/// CreateLoaded (their second parameter, after TPM2B_SENSITIVE_CREATE).
fn template_matches(alg: HashAlg, code: u32, params: &[u8], want: &[u8]) -> bool {
    if !matches!(code, cc::CREATE | cc::CREATE_PRIMARY | cc::CREATE_LOADED) {
        return false;
    }
    let mut r = Reader::new(params);
    let template = r
        .tpm2b(usize::from(u16::MAX))
        .and_then(|_| r.tpm2b(usize::from(u16::MAX)));
    template.is_ok_and(|t| ct_eq(&alg.digest(&[t]), want))
}

fn verify_hmac(core: &Core, s: &AuthCommand, auth: &[u8], cp: &[u8], extra: &[Vec<u8>]) -> bool {
    let Some(session) = core.vol.sessions.get(s.handle) else {
        return false;
    };
    let mut key = session.key.clone();
    key.extend_from_slice(auth);
    // With an empty HMAC key an empty HMAC is accepted (as the reference).
    if key.is_empty() && s.hmac.is_empty() {
        return true;
    }
    let attrs = [s.attributes];
    let mut parts: Vec<&[u8]> = alloc::vec![cp, &s.nonce, &session.nonce_tpm];
    parts.extend(extra.iter().map(Vec::as_slice));
    parts.push(&attrs);
    let expected = session.hash.hmac(&key, &parts);
    zeroize::Zeroize::zeroize(&mut key);
    ct_eq(&expected, &s.hmac)
}

/// The authValue that keys session `i`'s HMAC (`for_hmac`) or parameter
/// encryption: that of the handle it authorizes; an HMAC leaves it out when
/// the session is bound to that entity, and policy sessions never use it.
fn session_auth(
    core: &Core,
    entry: &Entry,
    handles: &[u32],
    area: &AuthArea,
    i: usize,
    for_hmac: bool,
) -> Vec<u8> {
    let Some(h) = handles.get(i).copied().filter(|_| i < entry.auth) else {
        return Vec::new();
    };
    let Ok(e) = entity(core, entry.cc, h) else {
        return Vec::new();
    };
    let auth = trim_auth(&e.auth).to_vec();
    if !for_hmac {
        return auth;
    }
    match area
        .sessions
        .get(i)
        .and_then(|s| core.vol.sessions.get(s.handle))
    {
        Some(s) if s.kind == Kind::Hmac && !s.bound_to(h, &auth) => auth,
        Some(s) if s.kind == Kind::Policy && s.policy.auth_value_needed => auth,
        _ => Vec::new(),
    }
}

/// The contents of the first parameter when it is a TPM2B.
fn first_tpm2b(buf: &mut [u8]) -> Option<&mut [u8]> {
    let size = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    buf.get_mut(2..2usize.checked_add(size)?)
}

/// Decrypt the first command parameter in place (after authorization).
pub fn decrypt_parameter(
    core: &Core,
    entry: &Entry,
    handles: &[u32],
    area: &AuthArea,
    params: &mut [u8],
) -> CmdResult<()> {
    let Some(d) = area.decrypt else { return Ok(()) };
    let n = number(d);
    let cmd = area.sessions.get(d).ok_or(Rc::session(rc::HANDLE, n))?;
    let session = core
        .vol
        .sessions
        .get(cmd.handle)
        .ok_or(Rc::session(rc::HANDLE, n))?;
    let auth = session_auth(core, entry, handles, area, d, false);
    let data = first_tpm2b(params).ok_or(Rc::session(rc::SIZE, n))?;
    session
        .crypt(&auth, &cmd.nonce, &session.nonce_tpm, data, false)
        .map_err(|e| Rc::session(e.base, n))
}

/// Encrypt the first response parameter in place (nonceTPM already renewed).
pub fn encrypt_parameter(
    core: &Core,
    entry: &Entry,
    handles: &[u32],
    area: &AuthArea,
    out: &mut [u8],
) -> CmdResult<()> {
    let Some(j) = area.encrypt else { return Ok(()) };
    let n = number(j);
    let cmd = area.sessions.get(j).ok_or(Rc::session(rc::HANDLE, n))?;
    let session = core
        .vol
        .sessions
        .get(cmd.handle)
        .ok_or(Rc::session(rc::HANDLE, n))?;
    let auth = session_auth(core, entry, handles, area, j, false);
    let Some(data) = first_tpm2b(out) else {
        return Ok(());
    };
    session
        .crypt(&auth, &session.nonce_tpm, &cmd.nonce, data, true)
        .map_err(|e| Rc::session(e.base, n))
}

/// The audit session's cpHash, computed before the command runs (Names can
/// change with it).
pub fn audit_cp_hash(
    core: &Core,
    entry: &Entry,
    handles: &[u32],
    area: &AuthArea,
    params: &[u8],
) -> Option<Vec<u8>> {
    let i = area.audit?;
    let s = core.vol.sessions.get(area.sessions.get(i)?.handle)?;
    Some(cp_hash(core, s.hash, entry.cc, handles, params))
}

/// After a successful command (Part 1 §19.6.14): the audit session's digest
/// becomes H(auditDigest ‖ cpHash ‖ rpHash), starting from zeros on its
/// first use as an audit session or on auditReset, which also make it the
/// exclusive audit session; any command it does not audit ends exclusivity.
/// The response reports auditExclusive as the session's state after the
/// command, and auditReset CLEAR.
pub fn update_audit(
    core: &mut Core,
    entry: &Entry,
    area: &mut AuthArea,
    cp: Option<&[u8]>,
    params: &[u8],
) {
    let (Some(i), Some(cp)) = (area.audit, cp) else {
        core.vol.sessions.exclusive_audit = None;
        return;
    };
    let Some(cmd) = area.sessions.get_mut(i) else {
        core.vol.sessions.exclusive_audit = None;
        return;
    };
    let handle = cmd.handle;
    let was_exclusive = core.vol.sessions.exclusive_audit == Some(handle);
    let Some(s) = core.vol.sessions.get_mut(handle) else {
        core.vol.sessions.exclusive_audit = None;
        return;
    };
    let restart = !s.audit || cmd.attributes & sa::AUDIT_RESET != 0;
    if restart {
        s.audit = true;
        s.audit_digest = alloc::vec![0; s.hash.size()];
    }
    let rp = s
        .hash
        .digest(&[&rc::SUCCESS.to_be_bytes(), &entry.cc.to_be_bytes(), params]);
    s.audit_digest = s.hash.digest(&[&s.audit_digest, cp, &rp]);
    let exclusive = restart || was_exclusive;
    core.vol.sessions.exclusive_audit = exclusive.then_some(handle);
    cmd.attributes &= !(sa::AUDIT_EXCLUSIVE | sa::AUDIT_RESET);
    if exclusive {
        cmd.attributes |= sa::AUDIT_EXCLUSIVE;
    }
}

/// The response authorization area: per session nonceTPM, attributes and
/// HMAC(sessionKey ‖ authValue, rpHash ‖ nonceTPM ‖ nonceCaller ‖ attributes).
pub fn response_area(
    core: &Core,
    entry: &Entry,
    handles: &[u32],
    area: &AuthArea,
    params: &[u8],
) -> Vec<u8> {
    let mut w = crate::marshal::Writer::new();
    for (i, s) in area.sessions.iter().enumerate() {
        let Some(session) = core
            .vol
            .sessions
            .get(s.handle)
            .filter(|_| s.handle != rh::PW)
        else {
            // A password session always reports continueSession SET (Part 1 §19.6.4).
            w.u16(0);
            w.u8(sa::CONTINUE_SESSION);
            w.u16(0);
            continue;
        };
        w.tpm2b(&session.nonce_tpm);
        w.u8(s.attributes);
        // Policy sessions answer with an HMAC too, except under PolicyPassword.
        if session.kind == Kind::Trial || session.policy.password_needed {
            w.u16(0);
            continue;
        }
        let rp =
            session
                .hash
                .digest(&[&rc::SUCCESS.to_be_bytes(), &entry.cc.to_be_bytes(), params]);
        let mut key = session.key.clone();
        key.extend_from_slice(&session_auth(core, entry, handles, area, i, true));
        // An empty key and an empty command HMAC give an empty response HMAC.
        if key.is_empty() && s.hmac.is_empty() {
            w.u16(0);
            continue;
        }
        let mac = session
            .hash
            .hmac(&key, &[&rp, &session.nonce_tpm, &s.nonce, &[s.attributes]]);
        zeroize::Zeroize::zeroize(&mut key);
        w.tpm2b(&mac);
    }
    w.buf
}
impl Core {
    /// Self-healing of DA counters (Part 1 §19.8.6): one failure forgiven per
    /// recoveryTime seconds; lockoutAuth re-enabled after lockoutRecovery.
    pub fn heal_dictionary_attack(&mut self) {
        let now = self.vol.now_clock;
        let recovery = u64::from(self.ps.recovery_time).saturating_mul(1000);
        // recoveryTime 0 disables DA protection: failures are forgiven at once.
        if self.ps.failed_tries > 0 && recovery == 0 {
            self.ps.failed_tries = 0;
            self.dirty = true;
        }
        if self.ps.failed_tries > 0 && recovery > 0 {
            let elapsed = now.saturating_sub(self.vol.da_heal_ms);
            let healed = elapsed / recovery;
            if healed > 0 {
                let healed = u32::try_from(healed).unwrap_or(u32::MAX);
                self.ps.failed_tries = self.ps.failed_tries.saturating_sub(healed);
                self.vol.da_heal_ms = self
                    .vol
                    .da_heal_ms
                    .saturating_add(u64::from(healed).saturating_mul(recovery));
                self.dirty = true;
            }
        } else {
            self.vol.da_heal_ms = now;
        }
        let lr = u64::from(self.ps.lockout_recovery).saturating_mul(1000);
        if !self.ps.lockout_auth_enabled
            && lr > 0
            && now.saturating_sub(self.vol.lockout_disabled_at) >= lr
        {
            self.ps.lockout_auth_enabled = true;
            self.dirty = true;
        }
    }
}
