//! Hierarchy commands (Part 3 §24) and dictionary-attack reset (§25):
//! HierarchyControl, Clear, ClearControl, HierarchyChangeAuth,
//! DictionaryAttackLockReset.

use crate::command::random;
use crate::dispatch::{Call, Ctx};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{MAX_DIGEST, nv, rh};
use crate::state::SEED_LEN;

pub fn change_auth(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let new = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let new = crate::crypto::trim_auth(&new).to_vec();
    let ps = &mut cx.core.ps;
    match call.handle(0) {
        rh::OWNER => ps.owner_auth = new,
        rh::ENDORSEMENT => ps.endorsement_auth = new,
        rh::LOCKOUT => ps.lockout_auth = new,
        _ => {
            cx.core.vol.platform_auth = new;
            return Ok(());
        }
    }
    cx.core.dirty = true;
    Ok(())
}

pub fn clear(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    if cx.core.ps.disable_clear {
        return Err(Rc::new(rc::DISABLED));
    }
    let mut fresh = [[0u8; SEED_LEN]; 3];
    for s in &mut fresh {
        random(cx, s)?;
    }
    let core = &mut *cx.core;
    let ps = &mut core.ps;
    ps.sps = fresh[0];
    ps.sh_proof = fresh[1];
    ps.eh_proof = fresh[2];
    zeroize::Zeroize::zeroize(&mut fresh);
    ps.owner_auth.clear();
    ps.endorsement_auth.clear();
    ps.lockout_auth.clear();
    ps.nv.retain(|n| n.attributes & nv::PLATFORMCREATE != 0);
    ps.persistent_objects.clear();
    ps.reset_count = 0;
    ps.restart_count = 0;
    ps.clock = 0;
    let v = &mut core.vol;
    v.clock_anchor = (
        0,
        v.clock_anchor
            .1
            .saturating_add(v.now_clock.saturating_sub(v.clock_anchor.0)),
    );
    v.now_clock = 0;
    v.da_heal_ms = 0;
    v.lockout_disabled_at = 0;
    v.clock_safe = true;
    v.sh_enable = true;
    v.eh_enable = true;
    v.pcrs.update_counter = v.pcrs.update_counter.wrapping_add(1);
    core.dirty = true;
    Ok(())
}

pub fn clear_control(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let disable = call.params.yes_no().p(1)?;
    call.done()?;
    // Only the platform may re-enable TPM2_Clear.
    if call.handle(0) == rh::LOCKOUT && !disable {
        return Err(Rc::new(rc::AUTH_FAIL));
    }
    cx.core.ps.disable_clear = disable;
    cx.core.dirty = true;
    Ok(())
}

pub fn hierarchy_control(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let enable = call.params.u32().p(1)?;
    if !matches!(
        enable,
        rh::OWNER | rh::ENDORSEMENT | rh::PLATFORM | rh::PLATFORM_NV
    ) {
        return Err(Rc::param(rc::VALUE, 1));
    }
    let state = call.params.yes_no().p(2)?;
    call.done()?;
    let auth = call.handle(0);
    let v = &mut cx.core.vol;
    let flag = match enable {
        rh::PLATFORM | rh::PLATFORM_NV => {
            if auth != rh::PLATFORM {
                return Err(Rc::new(rc::AUTH_TYPE));
            }
            if enable == rh::PLATFORM {
                &mut v.ph_enable
            } else {
                &mut v.ph_enable_nv
            }
        }
        rh::OWNER => {
            if auth != rh::PLATFORM && auth != rh::OWNER {
                return Err(Rc::new(rc::AUTH_TYPE));
            }
            &mut v.sh_enable
        }
        _ => {
            if auth != rh::PLATFORM && auth != rh::ENDORSEMENT {
                return Err(Rc::new(rc::AUTH_TYPE));
            }
            &mut v.eh_enable
        }
    };
    // A hierarchy can be re-enabled only with platform authorization.
    if state && !*flag && auth != rh::PLATFORM {
        return Err(Rc::new(rc::AUTH_TYPE));
    }
    *flag = state;
    Ok(())
}

pub fn da_lock_reset(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    cx.core.ps.failed_tries = 0;
    cx.core.dirty = true;
    Ok(())
}
