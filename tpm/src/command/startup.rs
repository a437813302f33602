//! TPM2_Startup and TPM2_Shutdown (Part 3 §9): TPM Reset, Restart and Resume.

use crate::dispatch::{Call, Ctx};
use crate::pcr::PcrBanks;
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{nv, su};
use crate::state::SavedState;

pub fn startup(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let kind = call.params.u16().p(1)?;
    call.done()?;
    let core = &mut *cx.core;
    let ps = &mut core.ps;
    match kind {
        su::CLEAR => {}
        su::STATE => {
            // Resume needs a preceding Shutdown(STATE) and an unchanged PCR allocation.
            if ps.orderly != Some(su::STATE)
                || ps.saved.is_none()
                || ps.pcr_pending != ps.pcr_allocated
            {
                return Err(Rc::param(rc::VALUE, 1));
            }
        }
        _ => return Err(Rc::param(rc::VALUE, 1)),
    }
    let vol = &mut core.vol;
    vol.startup_locality = cx.locality;
    let was_orderly = ps.orderly.is_some();
    if kind == su::CLEAR {
        ps.pcr_allocated = ps.pcr_pending;
        vol.pcrs = PcrBanks::new(ps.pcr_allocated);
        vol.pcrs.startup(cx.locality);
        if ps.orderly == Some(su::STATE) {
            // TPM Restart.
            ps.restart_count = ps.restart_count.wrapping_add(1);
        } else {
            // TPM Reset.
            ps.reset_count = ps.reset_count.wrapping_add(1);
            ps.restart_count = 0;
        }
        vol.sh_enable = true;
        vol.eh_enable = true;
        for index in &mut ps.nv {
            let a = &mut index.attributes;
            if *a & nv::CLEAR_STCLEAR != 0 {
                *a &= !nv::WRITTEN;
            }
            if *a & nv::READ_STCLEAR != 0 {
                *a &= !nv::READLOCKED;
            }
            if *a & nv::WRITEDEFINE == 0 && *a & (nv::WRITE_STCLEAR | nv::GLOBALLOCK) != 0 {
                *a &= !nv::WRITELOCKED;
            }
        }
    } else {
        // TPM Resume.
        let saved = ps.saved.take().unwrap_or_default();
        vol.pcrs = PcrBanks::new(ps.pcr_allocated);
        vol.pcrs
            .resume(cx.locality, &saved.pcrs, saved.pcr_update_counter);
        vol.sh_enable = saved.sh_enable;
        vol.eh_enable = saved.eh_enable;
        ps.restart_count = ps.restart_count.wrapping_add(1);
    }
    // lockoutRecovery 0: only a Startup re-enables a disabled lockoutAuth.
    if ps.lockout_recovery == 0 {
        ps.lockout_auth_enabled = true;
    }
    vol.ph_enable = true;
    vol.ph_enable_nv = true;
    vol.platform_auth.clear();
    vol.clock_safe = was_orderly;
    vol.orderly_startup = was_orderly;
    ps.orderly = None;
    ps.saved = None;
    vol.started = true;
    core.dirty = true;
    Ok(())
}

pub fn shutdown(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let kind = call.params.u16().p(1)?;
    call.done()?;
    let core = &mut *cx.core;
    match kind {
        su::CLEAR => core.ps.saved = None,
        su::STATE => {
            if core.vol.pcr_reconfig {
                return Err(Rc::param(rc::TYPE, 1));
            }
            let v = &core.vol;
            core.ps.saved = Some(SavedState {
                pcrs: v.pcrs.save(),
                pcr_update_counter: v.pcrs.update_counter,
                sh_enable: v.sh_enable,
                eh_enable: v.eh_enable,
            });
        }
        _ => return Err(Rc::param(rc::VALUE, 1)),
    }
    core.ps.orderly = Some(kind);
    core.dirty = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Tpm;
    use crate::testutil::{Cmd, TestPlatform, platform, run, started};

    fn clock(tpm: &mut Tpm<TestPlatform>) -> (u32, u32, u8) {
        let (rc, b) = run(tpm, 0, &Cmd::new(0x181));
        assert_eq!(rc, 0);
        (
            u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
            u32::from_be_bytes([b[20], b[21], b[22], b[23]]),
            b[24],
        )
    }
    fn pcr(tpm: &mut Tpm<TestPlatform>, n: usize) -> alloc::vec::Vec<u8> {
        let mut bits = [0u8; 3];
        bits[n / 8] = 1 << (n % 8);
        run(tpm, 0, &Cmd::new(0x17E).u32(1).u16(0x0B).u8(3).b(&bits)).1[20..].to_vec()
    }
    fn extend(tpm: &mut Tpm<TestPlatform>, n: u32) {
        assert_eq!(
            run(
                tpm,
                0,
                &Cmd::new(0x182).h(n).pw(b"").u32(1).u16(0x0B).b(&[7; 32])
            )
            .0,
            0
        );
    }
    fn cycle(tpm: &mut Tpm<TestPlatform>, shutdown: Option<u16>, startup: u16) -> u32 {
        if let Some(s) = shutdown {
            assert_eq!(run(tpm, 0, &Cmd::new(0x145).u16(s)).0, 0);
        }
        tpm.power_on();
        run(tpm, 0, &Cmd::new(0x144).u16(startup)).0
    }

    #[test]
    fn reset_restart_resume() {
        let mut tpm = started();
        assert_eq!(clock(&mut tpm), (1, 0, 0));
        // Resume without Shutdown(STATE) is refused.
        assert_eq!(cycle(&mut tpm, None, 1), 0x1C4);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x144).u16(0)).0, 0);
        assert_eq!(clock(&mut tpm), (2, 0, 0));
        extend(&mut tpm, 1);
        extend(&mut tpm, 16);
        let (p1, p16) = (pcr(&mut tpm, 1), pcr(&mut tpm, 16));
        // Resume: state-saved PCRs come back, others reset.
        assert_eq!(cycle(&mut tpm, Some(1), 1), 0);
        assert_eq!(clock(&mut tpm), (2, 1, 1));
        assert_eq!(pcr(&mut tpm, 1), p1);
        assert_ne!(pcr(&mut tpm, 16), p16);
        // Restart: Shutdown(STATE) + Startup(CLEAR) resets PCRs, bumps restartCount.
        assert_eq!(cycle(&mut tpm, Some(1), 0), 0);
        assert_eq!(clock(&mut tpm), (2, 2, 1));
        assert_eq!(pcr(&mut tpm, 1), [0; 32]);
        // Reset after Shutdown(CLEAR).
        assert_eq!(cycle(&mut tpm, Some(0), 0), 0);
        assert_eq!(clock(&mut tpm), (3, 0, 1));
        // A saved state is used once; NV changes after Shutdown void it.
        assert_eq!(cycle(&mut tpm, Some(1), 1), 0);
        assert_eq!(cycle(&mut tpm, None, 1), 0x1C4);
        run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
        run(&mut tpm, 0, &Cmd::new(0x145).u16(1));
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x129).h(0x4000_0001).pw(b"").tpm2b(b"")
            )
            .0,
            0
        );
        assert_eq!(cycle(&mut tpm, None, 1), 0x1C4);
        // Bad values.
        run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x145).u16(2)).0, 0x1C4);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x145).u8(0)).0, 0x1DA);
    }

    #[test]
    fn startup_state_survives_restore_and_locality_marks_pcr0() {
        let mut tpm = started();
        extend(&mut tpm, 5);
        let p5 = pcr(&mut tpm, 5);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x145).u16(1)).0, 0);
        let blob = tpm.state();
        let mut again = Tpm::restore(platform(), &blob).unwrap();
        assert_eq!(run(&mut again, 3, &Cmd::new(0x144).u16(1)).0, 0);
        assert_eq!(pcr(&mut again, 5), p5);
        let mut fresh = Tpm::manufacture(platform()).unwrap();
        assert_eq!(run(&mut fresh, 3, &Cmd::new(0x144).u16(0)).0, 0);
        let mut want = [0u8; 32];
        want[31] = 3;
        assert_eq!(pcr(&mut fresh, 0), want);
    }
}
