//! Command processing (Part 1 §18, Part 3 §5): header, handle area, auth area,
//! parameters, response. A table maps each command code to its handle count,
//! the handles that need authorization, attributes and handler.

use alloc::vec::Vec;

use crate::auth::{self, AuthArea};
use crate::command;
use crate::marshal::{Reader, Writer};
use crate::rc::{self, CmdResult, Rc};
use crate::spec::{self, cc, ht, nv, rh, st};
use crate::{Core, Platform};

/// How a handle in the handle area is typed (TPMI_* of Part 2) and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleKind {
    /// TPMI_RH_PROVISION: owner or platform.
    Provision,
    /// TPMI_RH_CLEAR: lockout or platform.
    ClearAuth,
    /// TPMI_RH_HIERARCHY: owner, endorsement or platform.
    Hierarchy,
    /// TPMI_RH_HIERARCHY_AUTH: lockout, endorsement, owner or platform.
    HierarchyAuth,
    /// TPMI_RH_PLATFORM.
    Platform,
    /// TPMI_RH_LOCKOUT.
    Lockout,
    /// TPMI_RH_NV_AUTH: owner, platform or an NV index.
    NvAuth,
    /// TPMI_RH_NV_INDEX.
    NvIndex,
    /// TPMI_DH_PCR, with or without TPM_RH_NULL.
    Pcr { null: bool },
    /// TPMI_DH_OBJECT: a transient (or, later, persistent) object.
    Object,
    /// TPMI_DH_OBJECT+: an object or TPM_RH_NULL.
    ObjectOrNull,
    /// TPMI_DH_ENTITY+: any entity with an authValue, or TPM_RH_NULL.
    Entity,
    /// TPMI_SH_POLICY: a loaded policy (or trial) session.
    PolicySession,
    /// TPMI_SH_HMAC: a loaded HMAC session.
    HmacSession,
    /// TPMI_RH_HIERARCHY+: owner, endorsement, platform or null.
    HierarchyOrNull,
    /// TPMI_DH_PARENT+: a hierarchy (or null) or an object.
    Parent,
    /// TPMI_RH_ENDORSEMENT.
    Endorsement,
    /// TPMI_DH_CONTEXT: a transient object or a loaded session.
    Context,
}

pub type Handler = fn(&mut Ctx, &mut Call) -> CmdResult<()>;

pub struct Entry {
    pub cc: u32,
    pub handles: &'static [HandleKind],
    /// The first `auth` handles need an authorization session.
    pub auth: usize,
    pub response_handle: bool,
    /// TPMA_CC.nv: the command may write NV.
    pub nv: bool,
    /// Sessions are not allowed (TPM_RC_AUTH_CONTEXT if given).
    pub no_sessions: bool,
    /// The first command parameter is a TPM2B a session may decrypt.
    pub decrypt: bool,
    /// The first response parameter is a TPM2B a session may encrypt.
    pub encrypt: bool,
    pub handler: Handler,
}

const fn e(cc: u32, handles: &'static [HandleKind], auth: usize, handler: Handler) -> Entry {
    Entry {
        cc,
        handles,
        auth,
        response_handle: false,
        nv: false,
        no_sessions: false,
        decrypt: false,
        encrypt: false,
        handler,
    }
}
const fn dec(mut x: Entry) -> Entry {
    x.decrypt = true;
    x
}
const fn enc(mut x: Entry) -> Entry {
    x.encrypt = true;
    x
}
const fn nvw(mut x: Entry) -> Entry {
    x.nv = true;
    x
}

use HandleKind as K;
use command::{
    asymmetric, attestation, capability, clock, context, credential, duplication, hash, hierarchy,
    nv as nvc, object, pcr, policy, random, session, signature, startup, symmetric, testing,
};

/// The implemented commands, sorted by command code.
#[rustfmt::skip]
pub static TABLE: &[Entry] = &[
    nvw(e(cc::NV_UNDEFINE_SPACE_SPECIAL, &[K::NvIndex, K::Platform], 2, nvc::undefine_space_special)),
    nvw(e(cc::EVICT_CONTROL, &[K::Provision, K::Object], 1, object::evict_control)),
    nvw(e(cc::HIERARCHY_CONTROL, &[K::Hierarchy], 1, hierarchy::hierarchy_control)),
    nvw(e(cc::NV_UNDEFINE_SPACE, &[K::Provision, K::NvIndex], 1, nvc::undefine_space)),
    nvw(e(cc::CHANGE_EPS, &[K::Platform], 1, hierarchy::change_eps)),
    nvw(e(cc::CHANGE_PPS, &[K::Platform], 1, hierarchy::change_pps)),
    nvw(e(cc::CLEAR, &[K::ClearAuth], 1, hierarchy::clear)),
    nvw(e(cc::CLEAR_CONTROL, &[K::ClearAuth], 1, hierarchy::clear_control)),
    nvw(e(cc::CLOCK_SET, &[K::Provision], 1, clock::clock_set)),
    dec(nvw(e(cc::HIERARCHY_CHANGE_AUTH, &[K::HierarchyAuth], 1, hierarchy::change_auth))),
    dec(nvw(e(cc::NV_DEFINE_SPACE, &[K::Provision], 1, nvc::define_space))),
    nvw(e(cc::PCR_ALLOCATE, &[K::Platform], 1, pcr::allocate)),
    e(cc::CLOCK_RATE_ADJUST, &[K::Provision], 1, clock::clock_rate_adjust),
    Entry { response_handle: true, ..enc(dec(e(cc::CREATE_PRIMARY, &[K::HierarchyOrNull], 1, object::create_primary))) },
    nvw(e(cc::NV_GLOBAL_WRITE_LOCK, &[K::Provision], 1, nvc::global_write_lock)),
    nvw(e(cc::NV_INCREMENT, &[K::NvAuth, K::NvIndex], 1, nvc::increment)),
    nvw(e(cc::NV_SET_BITS, &[K::NvAuth, K::NvIndex], 1, nvc::set_bits)),
    dec(nvw(e(cc::NV_EXTEND, &[K::NvAuth, K::NvIndex], 1, nvc::extend))),
    dec(nvw(e(cc::NV_WRITE, &[K::NvAuth, K::NvIndex], 1, nvc::write))),
    nvw(e(cc::NV_WRITE_LOCK, &[K::NvAuth, K::NvIndex], 1, nvc::write_lock)),
    nvw(e(cc::DICTIONARY_ATTACK_LOCK_RESET, &[K::Lockout], 1, hierarchy::da_lock_reset)),
    nvw(e(cc::DICTIONARY_ATTACK_PARAMETERS, &[K::Lockout], 1, hierarchy::da_parameters)),
    dec(nvw(e(cc::NV_CHANGE_AUTH, &[K::NvIndex], 1, nvc::change_auth))),
    dec(e(cc::PCR_EVENT, &[K::Pcr { null: true }], 1, pcr::event)),
    e(cc::PCR_RESET, &[K::Pcr { null: false }], 1, pcr::reset),
    enc(dec(e(cc::SEQUENCE_COMPLETE, &[K::Object], 1, hash::sequence_complete))),
    e(cc::INCREMENTAL_SELF_TEST, &[], 0, testing::incremental_self_test),
    e(cc::SELF_TEST, &[], 0, testing::self_test),
    Entry { no_sessions: true, ..nvw(e(cc::STARTUP, &[], 0, startup::startup)) },
    nvw(e(cc::SHUTDOWN, &[], 0, startup::shutdown)),
    dec(e(cc::STIR_RANDOM, &[], 0, random::stir_random)),
    enc(dec(e(cc::ACTIVATE_CREDENTIAL, &[K::Object, K::Object], 2, credential::activate_credential))),
    enc(dec(e(cc::CERTIFY, &[K::Object, K::ObjectOrNull], 2, attestation::certify))),
    dec(e(cc::POLICY_NV, &[K::NvAuth, K::NvIndex, K::PolicySession], 1, policy::nv)),
    enc(dec(e(cc::CERTIFY_CREATION, &[K::ObjectOrNull, K::Object], 1, attestation::certify_creation))),
    enc(dec(e(cc::DUPLICATE, &[K::Object, K::ObjectOrNull], 1, duplication::duplicate))),
    enc(dec(e(cc::GET_TIME, &[K::Endorsement, K::ObjectOrNull], 2, attestation::get_time))),
    enc(dec(e(cc::GET_SESSION_AUDIT_DIGEST, &[K::Endorsement, K::ObjectOrNull, K::HmacSession], 2, attestation::get_session_audit_digest))),
    enc(e(cc::NV_READ, &[K::NvAuth, K::NvIndex], 1, nvc::read)),
    nvw(e(cc::NV_READ_LOCK, &[K::NvAuth, K::NvIndex], 1, nvc::read_lock)),
    enc(dec(e(cc::OBJECT_CHANGE_AUTH, &[K::Object, K::Object], 1, object::object_change_auth))),
    enc(dec(e(cc::POLICY_SECRET, &[K::Entity, K::PolicySession], 1, policy::secret))),
    enc(dec(e(cc::REWRAP, &[K::ObjectOrNull, K::ObjectOrNull], 1, duplication::rewrap))),
    enc(dec(e(cc::CREATE, &[K::Object], 1, object::create))),
    enc(dec(e(cc::ECDH_ZGEN, &[K::Object], 1, asymmetric::ecdh_zgen_cmd))),
    enc(dec(e(cc::HMAC, &[K::Object], 1, symmetric::hmac))),
    enc(dec(e(cc::IMPORT, &[K::Object], 1, duplication::import))),
    Entry { response_handle: true, ..enc(dec(e(cc::LOAD, &[K::Object], 1, object::load))) },
    enc(dec(e(cc::QUOTE, &[K::ObjectOrNull], 1, attestation::quote))),
    enc(dec(e(cc::RSA_DECRYPT, &[K::Object], 1, asymmetric::rsa_decrypt_cmd))),
    Entry { response_handle: true, ..dec(e(cc::HMAC_START, &[K::Object], 1, symmetric::hmac_start)) },
    dec(e(cc::SEQUENCE_UPDATE, &[K::Object], 1, hash::sequence_update)),
    dec(e(cc::SIGN, &[K::Object], 1, signature::sign)),
    enc(e(cc::UNSEAL, &[K::Object], 1, object::unseal)),
    enc(dec(e(cc::POLICY_SIGNED, &[K::Object, K::PolicySession], 0, policy::signed))),
    Entry { response_handle: true, ..e(cc::CONTEXT_LOAD, &[], 0, context::context_load) },
    e(cc::CONTEXT_SAVE, &[K::Context], 0, context::context_save),
    enc(e(cc::ECDH_KEYGEN, &[K::Object], 0, asymmetric::ecdh_keygen_cmd)),
    enc(e(cc::ENCRYPT_DECRYPT, &[K::Object], 1, symmetric::encrypt_decrypt_cmd)),
    Entry { no_sessions: true, ..e(cc::FLUSH_CONTEXT, &[], 0, hash::flush_context) },
    Entry { response_handle: true, ..enc(dec(e(cc::LOAD_EXTERNAL, &[], 0, object::load_external))) },
    enc(dec(e(cc::MAKE_CREDENTIAL, &[K::Object], 0, credential::make_credential))),
    enc(e(cc::NV_READ_PUBLIC, &[K::NvIndex], 0, nvc::read_public)),
    dec(e(cc::POLICY_AUTHORIZE, &[K::PolicySession], 0, policy::authorize)),
    e(cc::POLICY_AUTH_VALUE, &[K::PolicySession], 0, policy::auth_value),
    e(cc::POLICY_COMMAND_CODE, &[K::PolicySession], 0, policy::command_code),
    dec(e(cc::POLICY_COUNTER_TIMER, &[K::PolicySession], 0, policy::counter_timer)),
    dec(e(cc::POLICY_CP_HASH, &[K::PolicySession], 0, policy::cp_hash)),
    e(cc::POLICY_LOCALITY, &[K::PolicySession], 0, policy::locality),
    dec(e(cc::POLICY_NAME_HASH, &[K::PolicySession], 0, policy::name_hash)),
    e(cc::POLICY_OR, &[K::PolicySession], 0, policy::or),
    dec(e(cc::POLICY_TICKET, &[K::PolicySession], 0, policy::ticket)),
    enc(e(cc::READ_PUBLIC, &[K::Object], 0, object::read_public)),
    enc(dec(e(cc::RSA_ENCRYPT, &[K::Object], 0, asymmetric::rsa_encrypt_cmd))),
    Entry { response_handle: true, ..enc(dec(e(cc::START_AUTH_SESSION, &[K::ObjectOrNull, K::Entity], 0, session::start_auth_session))) },
    dec(e(cc::VERIFY_SIGNATURE, &[K::Object], 0, signature::verify_signature)),
    e(cc::GET_CAPABILITY, &[], 0, capability::get_capability),
    enc(e(cc::GET_RANDOM, &[], 0, random::get_random)),
    enc(e(cc::GET_TEST_RESULT, &[], 0, testing::get_test_result)),
    enc(dec(e(cc::HASH, &[], 0, hash::hash))),
    e(cc::PCR_READ, &[], 0, pcr::read),
    dec(e(cc::POLICY_PCR, &[K::PolicySession], 0, policy::pcr)),
    e(cc::POLICY_RESTART, &[K::PolicySession], 0, policy::restart),
    e(cc::READ_CLOCK, &[], 0, clock::read_clock),
    e(cc::PCR_EXTEND, &[K::Pcr { null: true }], 1, pcr::extend),
    dec(e(cc::EVENT_SEQUENCE_COMPLETE, &[K::Pcr { null: true }, K::Object], 2, hash::event_sequence_complete)),
    Entry { response_handle: true, ..dec(e(cc::HASH_SEQUENCE_START, &[], 0, hash::sequence_start)) },
    e(cc::POLICY_PHYSICAL_PRESENCE, &[K::PolicySession], 0, policy::physical_presence),
    dec(e(cc::POLICY_DUPLICATION_SELECT, &[K::PolicySession], 0, policy::duplication_select)),
    enc(e(cc::POLICY_GET_DIGEST, &[K::PolicySession], 0, policy::get_digest)),
    e(cc::TEST_PARMS, &[], 0, testing::test_parms),
    e(cc::POLICY_PASSWORD, &[K::PolicySession], 0, policy::password),
    e(cc::POLICY_NV_WRITTEN, &[K::PolicySession], 0, policy::nv_written),
    dec(e(cc::POLICY_TEMPLATE, &[K::PolicySession], 0, policy::template)),
    Entry { response_handle: true, ..enc(dec(e(cc::CREATE_LOADED, &[K::Parent], 1, object::create_loaded))) },
    e(cc::POLICY_AUTHORIZE_NV, &[K::NvAuth, K::NvIndex, K::PolicySession], 1, policy::authorize_nv),
    enc(dec(e(cc::ENCRYPT_DECRYPT_2, &[K::Object], 1, symmetric::encrypt_decrypt2_cmd))),
];

pub fn lookup(code: u32) -> Option<&'static Entry> {
    TABLE
        .binary_search_by_key(&code, |e| e.cc)
        .ok()
        .and_then(|i| TABLE.get(i))
}

/// The handler's view of the TPM.
pub struct Ctx<'a> {
    pub core: &'a mut Core,
    pub platform: &'a mut dyn Platform,
    pub locality: u8,
}

/// One command in flight.
pub struct Call<'a> {
    pub cc: u32,
    pub handles: Vec<u32>,
    pub params: Reader<'a>,
    pub out: Writer,
    pub out_handle: Option<u32>,
}

impl Call<'_> {
    pub fn handle(&self, i: usize) -> u32 {
        self.handles.get(i).copied().unwrap_or(rh::NULL)
    }
    /// All parameters read: anything left over is TPM_RC_SIZE.
    pub fn done(&self) -> CmdResult<()> {
        self.params.finish()
    }
}

pub fn error_response(tag: u16, code: u32) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(if code == rc::BAD_TAG {
        st::RSP_COMMAND
    } else {
        tag
    });
    w.u32(10);
    w.u32(code);
    w.buf
}

pub fn execute(
    core: &mut Core,
    platform: &mut dyn Platform,
    locality: u8,
    command: &[u8],
) -> Vec<u8> {
    let now = platform.now_ms();
    core.vol.now_clock = core
        .vol
        .clock_anchor
        .0
        .saturating_add(now.saturating_sub(core.vol.clock_anchor.1));
    let mut cx = Ctx {
        core,
        platform,
        locality,
    };
    match run(&mut cx, command) {
        Ok(resp) => resp,
        Err(e) => {
            // A command the exclusive audit session did not audit.
            cx.core.vol.sessions.exclusive_audit = None;
            error_response(st::NO_SESSIONS, e.code())
        }
    }
}

fn run(cx: &mut Ctx, command: &[u8]) -> CmdResult<Vec<u8>> {
    let mut r = Reader::new(command);
    let failure = cx.core.vol.failure.is_some();
    let tag = r.u16()?;
    if tag != st::SESSIONS && tag != st::NO_SESSIONS {
        return Err(Rc::new(rc::BAD_TAG));
    }
    let size = r.u32()?;
    if usize::try_from(size).ok() != Some(command.len()) || command.len() > spec::MAX_COMMAND_SIZE {
        return Err(Rc::new(rc::COMMAND_SIZE));
    }
    let code = r.u32()?;
    if failure && code != cc::GET_TEST_RESULT && code != cc::GET_CAPABILITY {
        return Err(Rc::new(rc::FAILURE));
    }
    let entry = lookup(code).ok_or(Rc::new(rc::COMMAND_CODE))?;
    if cx.locality > 4 {
        return Err(Rc::new(rc::LOCALITY));
    }
    if !failure && (cx.core.vol.started == (code == cc::STARTUP)) {
        return Err(Rc::new(rc::INITIALIZE));
    }
    if !failure {
        cx.core.heal_dictionary_attack();
    }

    // Handle area.
    let mut handles = Vec::with_capacity(entry.handles.len());
    for (i, kind) in entry.handles.iter().enumerate() {
        let n = u8::try_from(i + 1).unwrap_or(7);
        let h = r.u32().map_err(|e| Rc::handle(e.base, n))?;
        check_handle(cx.core, *kind, h).map_err(|e| {
            // An unloaded object is TPM_RC_REFERENCE_H0 + index (a warning, no H bit).
            if e.base == rc::REFERENCE_H0 {
                Rc::new(rc::REFERENCE_H0 + u32::from(n - 1))
            } else {
                Rc::handle(e.base, n)
            }
        })?;
        handles.push(h);
    }

    // Authorization area.
    let mut area = AuthArea::default();
    let with_sessions = tag == st::SESSIONS;
    if with_sessions {
        let auth_size = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if auth_size < 9 || auth_size > r.remaining() {
            return Err(Rc::new(rc::SIZE));
        }
        if entry.no_sessions {
            return Err(Rc::new(rc::AUTH_CONTEXT));
        }
        let bytes = r.bytes(auth_size)?;
        area = auth::parse_sessions(&cx.core.vol.sessions, entry, bytes)?;
        if area.sessions.len() < entry.auth {
            return Err(Rc::new(rc::AUTH_MISSING));
        }
        auth::authorize(cx.core, entry, &handles, &area, r.rest(), cx.locality)?;
    } else if entry.auth > 0 {
        return Err(Rc::new(rc::AUTH_MISSING));
    }
    let audit_cp = auth::audit_cp_hash(cx.core, entry, &handles, &area, r.rest());
    let mut params = r.rest().to_vec();
    auth::decrypt_parameter(cx.core, entry, &handles, &area, &mut params)?;

    // Parameters and execution.
    let mut call = Call {
        cc: entry.cc,
        handles,
        params: Reader::new(&params),
        out: Writer::new(),
        out_handle: None,
    };
    (entry.handler)(cx, &mut call)?;
    // Any NV change after Shutdown makes the stop unorderly again (no Resume).
    if entry.nv && call.cc != cc::SHUTDOWN && cx.core.dirty && cx.core.ps.orderly.is_some() {
        cx.core.ps.orderly = None;
        cx.core.ps.saved = None;
    }

    // Sessions: fresh nonceTPM, response encryption, response HMACs.
    for s in &area.sessions {
        let Some(size) = cx
            .core
            .vol
            .sessions
            .get(s.handle)
            .map(|x| x.nonce_tpm.len())
        else {
            continue;
        };
        let mut nonce = alloc::vec![0u8; size];
        command::random(cx, &mut nonce)?;
        if let Some(x) = cx.core.vol.sessions.get_mut(s.handle) {
            x.nonce_tpm = nonce;
        }
    }
    auth::encrypt_parameter(cx.core, entry, &call.handles, &area, &mut call.out.buf)?;
    auth::update_audit(
        cx.core,
        entry,
        &mut area,
        audit_cp.as_deref(),
        &call.out.buf,
    );
    let session_area = auth::response_area(cx.core, entry, &call.handles, &area, &call.out.buf);
    for s in &area.sessions {
        if s.attributes & spec::sa::CONTINUE_SESSION == 0 && s.handle != rh::PW {
            cx.core.vol.sessions.remove(s.handle);
        }
    }

    let mut w = Writer::new();
    w.u16(tag);
    w.u32(0);
    w.u32(rc::SUCCESS);
    if let Some(h) = call.out_handle {
        w.u32(h);
    }
    if with_sessions {
        w.u32(u32::try_from(call.out.len()).unwrap_or(0));
    }
    w.bytes(&call.out.buf);
    w.bytes(&session_area);
    let len = u32::try_from(w.len()).unwrap_or(0).to_be_bytes();
    w.buf[2..6].copy_from_slice(&len);
    Ok(w.buf)
}

/// Unmarshal-time type check (TPM_RC_VALUE) then load status (Part 1 §18.6).
fn check_handle(core: &Core, kind: HandleKind, h: u32) -> CmdResult<()> {
    let v = &core.vol;
    let allowed: &[u32] = match kind {
        K::Provision => &[rh::OWNER, rh::PLATFORM],
        K::ClearAuth => &[rh::LOCKOUT, rh::PLATFORM],
        K::Hierarchy => &[rh::OWNER, rh::ENDORSEMENT, rh::PLATFORM],
        K::HierarchyAuth => &[rh::LOCKOUT, rh::ENDORSEMENT, rh::OWNER, rh::PLATFORM],
        K::Platform => &[rh::PLATFORM],
        K::Lockout => &[rh::LOCKOUT],
        K::NvAuth => &[rh::OWNER, rh::PLATFORM],
        K::NvIndex => &[],
        K::Pcr { null } => {
            if null && h == rh::NULL {
                return Ok(());
            }
            return if usize::try_from(h).is_ok_and(|p| p < spec::PCR_COUNT) {
                Ok(())
            } else {
                Err(Rc::new(rc::VALUE))
            };
        }
        K::HierarchyOrNull => &[rh::OWNER, rh::ENDORSEMENT, rh::PLATFORM, rh::NULL],
        K::Endorsement => &[rh::ENDORSEMENT],
        K::Context => {
            return match spec::handle_type(h) {
                ht::TRANSIENT => check_handle(core, K::Object, h),
                ht::HMAC_SESSION | ht::POLICY_SESSION => {
                    if v.sessions.get(h).is_some() {
                        Ok(())
                    } else {
                        Err(Rc::new(rc::REFERENCE_H0))
                    }
                }
                _ => Err(Rc::new(rc::VALUE)),
            };
        }
        K::Parent if spec::handle_type(h) == ht::PERMANENT => {
            return check_handle(core, K::HierarchyOrNull, h);
        }
        K::Parent => return check_handle(core, K::Object, h),
        K::HmacSession => {
            return if spec::handle_type(h) != ht::HMAC_SESSION {
                Err(Rc::new(rc::VALUE))
            } else if core.vol.sessions.get(h).is_some() {
                Ok(())
            } else {
                Err(Rc::new(rc::REFERENCE_H0))
            };
        }
        K::PolicySession => {
            return if spec::handle_type(h) != ht::POLICY_SESSION {
                Err(Rc::new(rc::VALUE))
            } else if core.vol.sessions.get(h).is_some() {
                Ok(())
            } else {
                Err(Rc::new(rc::REFERENCE_H0))
            };
        }
        K::ObjectOrNull if h == rh::NULL => return Ok(()),
        K::ObjectOrNull => return check_handle(core, K::Object, h),
        K::Entity => {
            return match spec::handle_type(h) {
                _ if h == rh::NULL => Ok(()),
                ht::PERMANENT => {
                    if matches!(h, rh::OWNER | rh::ENDORSEMENT | rh::PLATFORM | rh::LOCKOUT) {
                        hierarchy_enabled(core, h)
                    } else {
                        Err(Rc::new(rc::VALUE))
                    }
                }
                ht::PCR => check_handle(core, K::Pcr { null: false }, h),
                ht::NV_INDEX => check_handle(core, K::NvIndex, h),
                ht::TRANSIENT | ht::PERSISTENT => check_handle(core, K::Object, h),
                _ => Err(Rc::new(rc::VALUE)),
            };
        }
        K::Object => {
            return match spec::handle_type(h) {
                ht::TRANSIENT => {
                    if v.objects.get(h).is_some() {
                        Ok(())
                    } else {
                        Err(Rc::new(rc::REFERENCE_H0))
                    }
                }
                // Persistent objects (EvictControl) are loaded while their hierarchy is enabled.
                ht::PERSISTENT => {
                    if crate::key::persistent_usable(core, h) {
                        Ok(())
                    } else {
                        Err(Rc::new(rc::HANDLE))
                    }
                }
                _ => Err(Rc::new(rc::VALUE)),
            };
        }
    };
    if allowed.contains(&h) {
        return hierarchy_enabled(core, h);
    }
    let nv_ok = matches!(kind, K::NvAuth | K::NvIndex);
    if nv_ok && spec::handle_type(h) == ht::NV_INDEX {
        let index = core
            .ps
            .nv
            .iter()
            .find(|n| n.handle == h)
            .ok_or(Rc::new(rc::HANDLE))?;
        let enabled = if index.attributes & nv::PLATFORMCREATE != 0 {
            v.ph_enable_nv
        } else {
            v.sh_enable
        };
        return if enabled {
            Ok(())
        } else {
            Err(Rc::new(rc::HANDLE))
        };
    }
    Err(Rc::new(rc::VALUE))
}

fn hierarchy_enabled(core: &Core, h: u32) -> CmdResult<()> {
    match crate::hierarchy::Hierarchy::from_handle(h) {
        Some(hy) if !hy.enabled(core) => Err(Rc::new(rc::HIERARCHY)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].cc < w[1].cc));
        for e in TABLE {
            assert!(e.auth <= e.handles.len());
            assert!(lookup(e.cc).is_some());
        }
    }
}

#[cfg(test)]
mod command_tests {
    use crate::testutil::{Cmd, platform, rc_of, run, started};
    use crate::{Platform, Tpm};

    const STARTUP: u32 = 0x144;
    const GET_RANDOM: u32 = 0x17B;

    #[test]
    fn header_errors() {
        let mut tpm = started();
        assert_eq!(rc_of(&tpm.execute(0, &[])), 0x09A);
        assert_eq!(rc_of(&tpm.execute(0, &[0x80])), 0x09A);
        let bad_tag = tpm.execute(0, &[0x00, 0xC1, 0, 0, 0, 10, 0, 0, 0, 0]);
        assert_eq!(rc_of(&bad_tag), 0x01E);
        assert_eq!(&bad_tag[..2], &[0x00, 0xC4]);
        let mut c = Cmd::new(GET_RANDOM).u16(8).bytes();
        c[5] += 1;
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x142);
        let big = Cmd::new(0x146).tpm2b(&[0; 4100]).bytes();
        assert_eq!(rc_of(&tpm.execute(0, &big)), 0x142);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x1FF)).0, 0x143);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(STARTUP).u16(0)).0, 0x100);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(GET_RANDOM).u16(8).u8(0)).0,
            0x095
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(GET_RANDOM)).0, 0x1DA);
        assert_eq!(run(&mut tpm, 5, &Cmd::new(GET_RANDOM).u16(8)).0, 0x907);
    }

    #[test]
    fn startup_is_required_first() {
        let mut tpm = Tpm::manufacture(platform()).unwrap();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(GET_RANDOM).u16(8)).0, 0x100);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(STARTUP).u16(0)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(GET_RANDOM).u16(8)).0, 0);
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(GET_RANDOM).u16(8)).0, 0x100);
    }

    #[test]
    fn auth_area_errors() {
        let mut tpm = started();
        let change = |pw: &[u8]| Cmd::new(0x129).h(0x4000_0001).pw(pw).tpm2b(b"x");
        // Missing authorization.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x129).h(0x4000_0001).tpm2b(b"x")).0,
            0x125
        );
        // authorizationSize too small / too large.
        let mut c = change(b"").bytes();
        c[17] = 8;
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x095);
        let mut c = change(b"").bytes();
        c[17] = 200;
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x095);
        // A nonce on a password session, an audit attribute.
        let mut c = change(b"").bytes();
        let pos = 18 + 4;
        c[pos + 1] = 1;
        c.insert(pos + 2, 0xAA);
        let n = c.len() as u32;
        c[2..6].copy_from_slice(&n.to_be_bytes());
        c[17] += 1;
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x98F);
        let mut c = change(b"").bytes();
        c[pos + 2] = 0x81;
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x982);
        c[pos + 2] = 0x09;
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x9A1);
        // An HMAC session handle that is not loaded.
        let mut c = change(b"").bytes();
        c[18..22].copy_from_slice(&0x0200_0000u32.to_be_bytes());
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x918);
        let mut c = change(b"").bytes();
        c[18..22].copy_from_slice(&0x4000_0001u32.to_be_bytes());
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x984);
        // A second password session has no handle to authorize.
        assert_eq!(run(&mut tpm, 0, &change(b"").pw(b"")).0, 0xA8B);
        // Four sessions are too many.
        assert_eq!(
            run(&mut tpm, 0, &change(b"").pw(b"").pw(b"").pw(b"")).0,
            0xC95
        );
        // Sessions are not allowed on Startup.
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(STARTUP).pw(b"").u16(0)).0, 0x145);
    }

    #[test]
    fn password_session_response_area() {
        let mut tpm = started();
        let mut c = Cmd::new(0x129).h(0x4000_0001).pw(b"").tpm2b(b"").bytes();
        // continueSession clear in the command: still SET in the response.
        c[24] = 0;
        let resp = tpm.execute(0, &c);
        assert_eq!(
            resp,
            [
                0x80, 0x02, 0, 0, 0, 19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0
            ]
        );
    }

    #[test]
    fn failure_mode_answers_only_test_result_and_capability() {
        let mut p = platform();
        p.fail_entropy = false;
        let mut tpm = Tpm::manufacture(p).unwrap();
        tpm.platform_mut().fail_entropy = true;
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(STARTUP).u16(0)).0, 0x101);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(GET_RANDOM).u16(8)).0, 0x101);
        let (rc, body) = run(&mut tpm, 0, &Cmd::new(0x17C));
        assert_eq!(rc, 0);
        assert_eq!(&body[body.len() - 4..], &0x101u32.to_be_bytes());
        let (rc, _) = run(&mut tpm, 0, &Cmd::new(0x17A).u32(6).u32(0x105).u32(1));
        assert_eq!(rc, 0);
        // A power cycle with a working source recovers.
        tpm.platform_mut().fail_entropy = false;
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(STARTUP).u16(0)).0, 0);
    }

    #[test]
    fn entropy_failure_on_reseed_enters_failure_mode() {
        let mut tpm = started();
        tpm.platform_mut().fail_entropy = true;
        for _ in 0..70_000 {
            let (rc, _) = run(&mut tpm, 0, &Cmd::new(GET_RANDOM).u16(1));
            if rc != 0 {
                assert_eq!(rc, 0x101);
                assert_eq!(run(&mut tpm, 0, &Cmd::new(0x181)).0, 0x101);
                return;
            }
        }
        panic!("reseed never happened");
    }

    /// Every truncation and random corruption of valid commands gets a
    /// well-formed response and no panic.
    #[test]
    fn no_panic_on_mangled_input() {
        let cmds = [
            Cmd::new(0x12A)
                .h(0x4000_0001)
                .pw(b"")
                .tpm2b(b"pw")
                .tpm2b(&[1, 0x50, 0, 1, 0, 0x0B, 0, 0x06, 0, 0x04, 0, 0, 0, 8]),
            Cmd::new(0x17E)
                .u32(1)
                .u16(0x0B)
                .u8(3)
                .b(&[0xFF, 0xFF, 0xFF]),
            Cmd::new(0x182).h(0).pw(b"").u32(1).u16(0x0B).b(&[0; 32]),
            Cmd::new(0x17A).u32(6).u32(0x100).u32(200),
            Cmd::new(0x17D).tpm2b(b"abc").u16(0x0B).u32(0x4000_0001),
            Cmd::new(0x186).tpm2b(b"").u16(0x10),
        ];
        let mut tpm = started();
        let mut seed = 0x1234_5678u32;
        for c in &cmds {
            let bytes = c.bytes();
            for n in 0..bytes.len() {
                let resp = tpm.execute(0, &bytes[..n]);
                assert_ne!(rc_of(&resp), 0);
            }
            for _ in 0..300 {
                let mut b = bytes.clone();
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (seed >> 8) as usize % b.len();
                b[i] ^= (seed >> 24) as u8 | 1;
                let resp = tpm.execute((seed % 5) as u8, &b);
                rc_of(&resp);
            }
        }
        let _ = tpm.platform_mut().now_ms();
    }
}
