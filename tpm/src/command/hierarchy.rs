//! Hierarchy commands (Part 3 §24) and dictionary-attack reset (§25):
//! HierarchyControl, Clear, ClearControl, HierarchyChangeAuth,
//! DictionaryAttackLockReset.

use crate::command::random;
use crate::dispatch::{Call, Ctx};
use crate::hierarchy::Hierarchy;
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{MAX_DIGEST, nv, rh};
use crate::state::SEED_LEN;

pub fn change_auth(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let new = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let new = crate::crypto::trim_auth(&new).to_vec();
    if new.len() > super::CONTEXT_HASH.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
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
    ps.reset_count = 0;
    ps.restart_count = 0;
    ps.clock = 0;
    // Dictionary-attack parameters back to their defaults.
    ps.failed_tries = 0;
    ps.max_tries = 3;
    ps.recovery_time = 1000;
    ps.lockout_recovery = 1000;
    ps.lockout_auth_enabled = true;
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
    // Owner and endorsement objects go (platform ones stay).
    crate::key::flush_hierarchy(core, Hierarchy::Owner, true);
    crate::key::flush_hierarchy(core, Hierarchy::Endorsement, true);
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
    // Disabling a hierarchy flushes its transient objects.
    if !state && let Some(h) = Hierarchy::from_handle(enable) {
        crate::key::flush_hierarchy(cx.core, h, false);
    }
    Ok(())
}

/// TPM2_ChangeEPS / TPM2_ChangePPS (Part 3 §24.5, §24.6): a new primary seed
/// and proof; the hierarchy's objects (transient and persistent) go, and with
/// them every key derived from the old seed.
fn change_seed(cx: &mut Ctx, call: &mut Call, h: Hierarchy) -> CmdResult<()> {
    call.done()?;
    let mut fresh = [[0u8; SEED_LEN]; 2];
    for s in &mut fresh {
        random(cx, s)?;
    }
    let ps = &mut cx.core.ps;
    match h {
        Hierarchy::Endorsement => {
            ps.eps = fresh[0];
            ps.eh_proof = fresh[1];
            // endorsementAuth and endorsementPolicy are reset (no policy store yet).
            ps.endorsement_auth.clear();
        }
        _ => {
            ps.pps = fresh[0];
            ps.ph_proof = fresh[1];
        }
    }
    zeroize::Zeroize::zeroize(&mut fresh);
    crate::key::flush_hierarchy(cx.core, h, true);
    cx.core.dirty = true;
    Ok(())
}

pub fn change_eps(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    change_seed(cx, call, Hierarchy::Endorsement)
}

pub fn change_pps(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    change_seed(cx, call, Hierarchy::Platform)
}

pub fn da_parameters(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let max_tries = call.params.u32().p(1)?;
    let recovery_time = call.params.u32().p(2)?;
    let lockout_recovery = call.params.u32().p(3)?;
    call.done()?;
    let ps = &mut cx.core.ps;
    ps.max_tries = max_tries;
    ps.recovery_time = recovery_time;
    ps.lockout_recovery = lockout_recovery;
    cx.core.dirty = true;
    Ok(())
}

pub fn da_lock_reset(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    cx.core.ps.failed_tries = 0;
    cx.core.dirty = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Tpm;
    use crate::spec::nv;
    use crate::testutil::{Cmd, TestPlatform, run, started};

    const OWNER: u32 = 0x4000_0001;
    const LOCKOUT: u32 = 0x4000_000A;
    const ENDORSEMENT: u32 = 0x4000_000B;
    const PLATFORM: u32 = 0x4000_000C;

    fn change(tpm: &mut Tpm<TestPlatform>, h: u32, old: &[u8], new: &[u8]) -> u32 {
        run(tpm, 0, &Cmd::new(0x129).h(h).pw(old).tpm2b(new)).0
    }
    fn define(tpm: &mut Tpm<TestPlatform>, h: u32, index: u32, extra: u32) -> u32 {
        let attrs = nv::OWNERREAD | nv::OWNERWRITE | nv::PPREAD | nv::PPWRITE | extra;
        let mut p = index.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0x0B]);
        p.extend_from_slice(&attrs.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 4]);
        run(tpm, 0, &Cmd::new(0x12A).h(h).pw(b"").tpm2b(b"").tpm2b(&p)).0
    }

    #[test]
    fn change_auth_per_hierarchy() {
        let mut tpm = started();
        for h in [OWNER, ENDORSEMENT, LOCKOUT, PLATFORM] {
            assert_eq!(change(&mut tpm, h, b"", b"secret\0\0"), 0);
            // Trailing zeros do not count.
            assert_eq!(change(&mut tpm, h, b"secret", b"new"), 0);
            let wrong = if h == LOCKOUT { 0x98E } else { 0x9A2 };
            assert_eq!(change(&mut tpm, h, b"secret", b""), wrong);
        }
        assert_eq!(change(&mut tpm, OWNER, b"new", &[1; 49]), 0x1D5);
        assert_eq!(change(&mut tpm, 0x4000_0007, b"", b""), 0x184);
        // Lockout is now disabled after one failure; platform auth resets at Startup.
        assert_eq!(change(&mut tpm, LOCKOUT, b"new", b""), 0x921);
        let (rc, body) = run(&mut tpm, 0, &Cmd::new(0x17A).u32(6).u32(0x200).u32(1));
        assert_eq!(rc, 0);
        assert_eq!(&body[body.len() - 4..], &(0b111u32 | 1 << 10).to_be_bytes());
        tpm.power_on();
        run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
        assert_eq!(change(&mut tpm, PLATFORM, b"", b""), 0);
        assert_eq!(change(&mut tpm, OWNER, b"new", b""), 0);
    }

    #[test]
    fn clear_resets_owner_state() {
        let mut tpm = started();
        assert_eq!(define(&mut tpm, OWNER, 0x0100_0001, 0), 0);
        assert_eq!(
            define(&mut tpm, PLATFORM, 0x0100_0002, nv::PLATFORMCREATE),
            0
        );
        assert_eq!(change(&mut tpm, OWNER, b"", b"o"), 0);
        let sps = tpm.core.ps.sps;
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x126).h(LOCKOUT).pw(b"")).0, 0);
        assert_ne!(tpm.core.ps.sps, sps);
        assert_eq!(change(&mut tpm, OWNER, b"", b""), 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(0x0100_0001)).0, 0x18B);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(0x0100_0002)).0, 0);
        // ClearControl: lockout may disable but not re-enable.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x127).h(LOCKOUT).pw(b"").u8(1)).0,
            0
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x126).h(LOCKOUT).pw(b"")).0,
            0x120
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x127).h(LOCKOUT).pw(b"").u8(0)).0,
            0x08E
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x127).h(PLATFORM).pw(b"").u8(0)).0,
            0
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x126).h(PLATFORM).pw(b"")).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x126).h(OWNER).pw(b"")).0, 0x184);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x127).h(PLATFORM).pw(b"").u8(2)).0,
            0x1C4
        );
    }

    #[test]
    fn dictionary_attack_parameters() {
        let mut tpm = started();
        let set = Cmd::new(0x13A).h(LOCKOUT).pw(b"").u32(5).u32(10).u32(20);
        assert_eq!(run(&mut tpm, 0, &set).0, 0);
        let (_, b) = run(&mut tpm, 0, &Cmd::new(0x17A).u32(6).u32(0x20F).u32(3));
        assert_eq!(
            &b[9..],
            &[
                0, 0, 2, 0x0F, 0, 0, 0, 5, 0, 0, 2, 0x10, 0, 0, 0, 10, 0, 0, 2, 0x11, 0, 0, 0, 20
            ]
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x13A).h(OWNER).pw(b"").u32(5).u32(10).u32(20)
            )
            .0,
            0x184
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x13A).h(LOCKOUT).pw(b"").u32(5).u32(10)
            )
            .0,
            0x3DA
        );
    }

    /// Part 1 §19.8: failures count up to lockout, heal one per recoveryTime,
    /// a wrong lockoutAuth disables it for lockoutRecovery (or, when that is
    /// 0, until the next Startup), recoveryTime 0 disables DA protection.
    #[test]
    fn lockout_counting_healing_and_recovery() {
        let mut tpm = started();
        let params = |max: u32, rec: u32, lrec: u32| {
            Cmd::new(0x13A)
                .h(LOCKOUT)
                .pw(b"")
                .u32(max)
                .u32(rec)
                .u32(lrec)
        };
        assert_eq!(run(&mut tpm, 0, &params(2, 10, 0)).0, 0);
        // A DA-protected NV index (no NO_DA) with a password.
        let mut p = 0x0150_0001u32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0x0B]);
        p.extend_from_slice(&(nv::AUTHREAD | nv::AUTHWRITE).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 4]);
        let define = Cmd::new(0x12A).h(OWNER).pw(b"").tpm2b(b"pw").tpm2b(&p);
        assert_eq!(run(&mut tpm, 0, &define).0, 0);
        let write = |pw: &[u8]| {
            Cmd::new(0x137)
                .h(0x0150_0001)
                .h(0x0150_0001)
                .pw(pw)
                .tpm2b(b"data")
                .u16(0)
        };
        let counter = |tpm: &mut Tpm<TestPlatform>| {
            let (_, b) = run(tpm, 0, &Cmd::new(0x17A).u32(6).u32(0x20E).u32(1));
            u32::from_be_bytes(b[b.len() - 4..].try_into().unwrap())
        };
        assert_eq!(run(&mut tpm, 0, &write(b"no")).0, 0x98E);
        assert_eq!(run(&mut tpm, 0, &write(b"no")).0, 0x98E);
        assert_eq!(counter(&mut tpm), 2);
        // In lockout even the right password is refused.
        assert_eq!(run(&mut tpm, 0, &write(b"pw")).0, 0x921);
        // One failure heals after recoveryTime (10 s).
        tpm.platform_mut().now += 10_000;
        assert_eq!(counter(&mut tpm), 1);
        assert_eq!(run(&mut tpm, 0, &write(b"pw")).0, 0);
        // A wrong lockoutAuth disables lockoutAuth; with lockoutRecovery 0
        // only the next Startup enables it again.
        let reset = |pw: &[u8]| Cmd::new(0x139).h(LOCKOUT).pw(pw);
        assert_eq!(run(&mut tpm, 0, &reset(b"x")).0, 0x98E);
        assert_eq!(run(&mut tpm, 0, &reset(b"")).0, 0x921);
        tpm.platform_mut().now += 100_000_000;
        assert_eq!(run(&mut tpm, 0, &reset(b"")).0, 0x921);
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x144).u16(0)).0, 0);
        assert_eq!(run(&mut tpm, 0, &reset(b"")).0, 0);
        assert_eq!(counter(&mut tpm), 0);
        // lockoutRecovery 5 s: lockoutAuth comes back by itself.
        assert_eq!(run(&mut tpm, 0, &params(2, 0, 5)).0, 0);
        assert_eq!(run(&mut tpm, 0, &reset(b"x")).0, 0x98E);
        assert_eq!(run(&mut tpm, 0, &reset(b"")).0, 0x921);
        tpm.platform_mut().now += 5_000;
        assert_eq!(run(&mut tpm, 0, &reset(b"")).0, 0);
        // recoveryTime 0: failures never accumulate into a lockout.
        for _ in 0..4 {
            assert_eq!(run(&mut tpm, 0, &write(b"no")).0, 0x98E);
        }
        assert_eq!(run(&mut tpm, 0, &write(b"pw")).0, 0);
    }

    #[test]
    fn hierarchy_control() {
        let mut tpm = started();
        let ctl = |tpm: &mut Tpm<TestPlatform>, auth: u32, enable: u32, state: u8| {
            run(
                tpm,
                0,
                &Cmd::new(0x121).h(auth).pw(b"").u32(enable).u8(state),
            )
            .0
        };
        assert_eq!(define(&mut tpm, OWNER, 0x0100_0001, 0), 0);
        assert_eq!(ctl(&mut tpm, OWNER, PLATFORM, 0), 0x124);
        assert_eq!(ctl(&mut tpm, ENDORSEMENT, OWNER, 0), 0x124);
        assert_eq!(ctl(&mut tpm, OWNER, 0x4000_0007, 0), 0x1C4);
        assert_eq!(ctl(&mut tpm, OWNER, OWNER, 0), 0);
        // Owner hierarchy off: its handle and its NV indices are unavailable.
        assert_eq!(change(&mut tpm, OWNER, b"", b""), 0x185);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(0x0100_0001)).0, 0x18B);
        assert_eq!(ctl(&mut tpm, PLATFORM, OWNER, 1), 0);
        assert_eq!(change(&mut tpm, OWNER, b"", b""), 0);
        // Platform NV off, then platform hierarchy off until the next Startup.
        assert_eq!(
            define(&mut tpm, PLATFORM, 0x0100_0002, nv::PLATFORMCREATE),
            0
        );
        assert_eq!(ctl(&mut tpm, PLATFORM, 0x4000_000D, 0), 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(0x0100_0002)).0, 0x18B);
        assert_eq!(
            define(&mut tpm, PLATFORM, 0x0100_0003, nv::PLATFORMCREATE),
            0x185
        );
        assert_eq!(ctl(&mut tpm, PLATFORM, PLATFORM, 0), 0);
        assert_eq!(change(&mut tpm, PLATFORM, b"", b""), 0x185);
        tpm.power_on();
        run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
        assert_eq!(change(&mut tpm, PLATFORM, b"", b""), 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(0x0100_0002)).0, 0);
    }
}
