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
        vol.pcrs.startup(cx.locality);
        vol.pcrs.restore(&saved.pcrs);
        vol.pcrs.update_counter = saved.pcr_update_counter;
        vol.sh_enable = saved.sh_enable;
        vol.eh_enable = saved.eh_enable;
        ps.restart_count = ps.restart_count.wrapping_add(1);
    }
    vol.ph_enable = true;
    vol.ph_enable_nv = true;
    vol.platform_auth.clear();
    vol.clock_safe = was_orderly;
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
