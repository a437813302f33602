//! The authorization area: session parsing (Part 1 §18.7 ordering) and
//! password (TPM_RS_PW) authorization with dictionary-attack protection.
//! HMAC and policy sessions are modelled as handles but none can be loaded
//! yet, so they fail as not loaded (TPM_RC_REFERENCE_S0 + n).

use alloc::vec::Vec;

use crate::Core;
use crate::crypto::{ct_eq, trim_auth};
use crate::marshal::Reader;
use crate::rc::{self, CmdResult, Rc};
use crate::session::Sessions;
use crate::spec::{self, cc, ht, nv, rh, sa};

/// One TPMS_AUTH_COMMAND (handle and attributes matter once HMAC and
/// policy sessions exist).
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Session {
    pub handle: u32,
    pub attributes: u8,
    pub hmac: Vec<u8>,
}

pub fn parse_sessions(loaded: &Sessions, area: &[u8]) -> CmdResult<Vec<Session>> {
    let mut r = Reader::new(area);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let i = out.len();
        let n = u8::try_from(i + 1).unwrap_or(7);
        if i == spec::MAX_SESSIONS {
            return Err(Rc::session(rc::SIZE, n));
        }
        let at = |e: Rc| Rc::session(e.base, n);
        let handle = r.u32().map_err(at)?;
        let nonce = r.tpm2b(spec::MAX_DIGEST).map_err(at)?;
        let attributes = r.u8().map_err(at)?;
        // TPMA_SESSION bits 3 and 4 are reserved.
        if attributes & 0x18 != 0 {
            return Err(Rc::session(rc::RESERVED_BITS, n));
        }
        let hmac = r.tpm2b(spec::MAX_DIGEST).map_err(at)?.to_vec();
        match spec::handle_type(handle) {
            _ if handle == rh::PW => {
                if attributes
                    & (sa::ENCRYPT
                        | sa::DECRYPT
                        | sa::AUDIT
                        | sa::AUDIT_EXCLUSIVE
                        | sa::AUDIT_RESET)
                    != 0
                {
                    return Err(Rc::session(rc::ATTRIBUTES, n));
                }
                if !nonce.is_empty() {
                    return Err(Rc::session(rc::NONCE, n));
                }
            }
            ht::HMAC_SESSION | ht::POLICY_SESSION => {
                if loaded.get(handle).is_none() {
                    return Err(Rc::new(rc::REFERENCE_S0 + u32::try_from(i).unwrap_or(0)));
                }
                // HMAC and policy session checks arrive with StartAuthSession.
                return Err(Rc::session(rc::HANDLE, n));
            }
            _ => return Err(Rc::session(rc::VALUE, n)),
        }
        out.push(Session {
            handle,
            attributes,
            hmac,
        });
    }
    Ok(out)
}

/// Commands that read an NV index (AUTHREAD applies) or write it (AUTHWRITE).
fn nv_read_op(code: u32) -> bool {
    matches!(code, cc::NV_READ | cc::NV_READ_LOCK)
}
fn nv_write_op(code: u32) -> bool {
    matches!(
        code,
        cc::NV_WRITE | cc::NV_INCREMENT | cc::NV_SET_BITS | cc::NV_EXTEND | cc::NV_WRITE_LOCK
    )
}

/// Check a password session for `handle` (Part 1 §19.6.4); errors carry no
/// location, the caller adds the session number.
pub fn check_password(core: &mut Core, code: u32, handle: u32, s: &Session) -> CmdResult<()> {
    let da_exempt;
    let auth: Vec<u8> = match spec::handle_type(handle) {
        ht::PERMANENT => {
            da_exempt = handle != rh::LOCKOUT;
            crate::hierarchy::permanent_auth(core, handle)
        }
        ht::NV_INDEX => {
            let index = core
                .ps
                .nv
                .iter()
                .find(|n| n.handle == handle)
                .ok_or(Rc::new(rc::HANDLE))?;
            let a = index.attributes;
            if (nv_read_op(code) && a & nv::AUTHREAD == 0)
                || (nv_write_op(code) && a & nv::AUTHWRITE == 0)
            {
                return Err(Rc::new(rc::AUTH_UNAVAILABLE));
            }
            da_exempt = a & nv::NO_DA != 0;
            index.auth.clone()
        }
        ht::TRANSIENT => {
            let o = core.vol.objects.get(handle).ok_or(Rc::new(rc::HANDLE))?;
            da_exempt = true;
            o.auth.clone()
        }
        // PCRs: authValue is the Empty Buffer (no PCR_SetAuthValue yet); DA exempt.
        _ => {
            da_exempt = true;
            Vec::new()
        }
    };
    if !da_exempt {
        if handle == rh::LOCKOUT {
            if !core.ps.lockout_auth_enabled {
                return Err(Rc::new(rc::LOCKOUT));
            }
        } else if core.ps.failed_tries >= core.ps.max_tries {
            return Err(Rc::new(rc::LOCKOUT));
        }
    }
    if ct_eq(trim_auth(&s.hmac), trim_auth(&auth)) {
        return Ok(());
    }
    if da_exempt {
        return Err(Rc::new(rc::BAD_AUTH));
    }
    if handle == rh::LOCKOUT {
        core.ps.lockout_auth_enabled = false;
        core.vol.lockout_disabled_at = core.vol.now_clock;
    } else {
        core.ps.failed_tries = core.ps.failed_tries.saturating_add(1);
        core.vol.da_heal_ms = core.vol.now_clock;
    }
    core.dirty = true;
    Err(Rc::new(rc::AUTH_FAIL))
}

impl Core {
    /// Self-healing of DA counters (Part 1 §19.8.6): one failure forgiven per
    /// recoveryTime seconds; lockoutAuth re-enabled after lockoutRecovery.
    pub fn heal_dictionary_attack(&mut self) {
        let now = self.vol.now_clock;
        let recovery = u64::from(self.ps.recovery_time).saturating_mul(1000);
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
