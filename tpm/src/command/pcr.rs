//! Integrity collection (Part 3 §22): PCR_Extend, PCR_Event, PCR_Read,
//! PCR_Reset, PCR_Allocate, with the PC Client locality rules.

use alloc::vec::Vec;

use crate::command::read_hash_alg;
use crate::crypto::HashAlg;
use crate::dispatch::{Call, Ctx};
use crate::marshal::Reader;
use crate::pcr::{self as model, PcrBanks, Selection, read_selection, write_selection};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{PCR_COUNT, rh};

fn pcr_index(call: &Call) -> Option<usize> {
    let h = call.handle(0);
    if h == rh::NULL {
        None
    } else {
        usize::try_from(h).ok()
    }
}

/// TPML_DIGEST_VALUES.
fn read_digest_values(r: &mut Reader) -> CmdResult<Vec<(HashAlg, Vec<u8>)>> {
    let count = r.u32()?;
    if count > u32::try_from(HashAlg::ALL.len()).unwrap_or(0) {
        return Err(Rc::new(rc::SIZE));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let alg = read_hash_alg(r)?;
        out.push((alg, r.bytes(alg.size())?.to_vec()));
    }
    Ok(out)
}

fn extend_allowed(cx: &Ctx, pcr: usize) -> CmdResult<()> {
    if model::locality_allows(model::extend_localities(pcr), cx.locality) {
        Ok(())
    } else {
        Err(Rc::new(rc::LOCALITY))
    }
}

pub fn extend(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let digests = read_digest_values(&mut call.params).p(1)?;
    call.done()?;
    let Some(pcr) = pcr_index(call) else {
        return Ok(());
    };
    extend_allowed(cx, pcr)?;
    let banks = &mut cx.core.vol.pcrs;
    for (alg, d) in &digests {
        banks.extend(*alg, pcr, d);
    }
    banks.bump(pcr);
    Ok(())
}

pub fn event(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(1024).p(1)?;
    call.done()?;
    let pcr = pcr_index(call);
    if let Some(p) = pcr {
        extend_allowed(cx, p)?;
    }
    call.out.u32(u32::try_from(HashAlg::ALL.len()).unwrap_or(0));
    let banks = &mut cx.core.vol.pcrs;
    for alg in HashAlg::ALL {
        let d = alg.digest(&[data]);
        call.out.u16(alg.id());
        call.out.bytes(&d);
        if let Some(p) = pcr {
            banks.extend(alg, p, &d);
        }
    }
    if let Some(p) = pcr {
        banks.bump(p);
    }
    Ok(())
}

pub fn read(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let mut sel = read_selection(&mut call.params).p(1)?;
    call.done()?;
    let banks = &cx.core.vol.pcrs;
    let mut values: Vec<&[u8]> = Vec::new();
    for s in &mut sel {
        for pcr in 0..PCR_COUNT {
            let bit = 1u32 << pcr;
            if s.bits & bit == 0 {
                continue;
            }
            // Unallocated PCRs are dropped; at most 8 digests fit a TPML_DIGEST.
            if !banks.is_allocated(s.alg, pcr) || values.len() >= 8 {
                s.bits &= !bit;
                continue;
            }
            values.push(banks.get(s.alg, pcr));
        }
    }
    call.out.u32(banks.update_counter);
    write_selection(&mut call.out, &sel);
    call.out.u32(u32::try_from(values.len()).unwrap_or(0));
    for v in values {
        call.out.tpm2b(v);
    }
    Ok(())
}

pub fn reset(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let pcr = pcr_index(call).ok_or(Rc::handle(rc::VALUE, 1))?;
    if !model::locality_allows(model::reset_localities(pcr), cx.locality) {
        return Err(Rc::new(rc::LOCALITY));
    }
    let banks = &mut cx.core.vol.pcrs;
    banks.reset(pcr);
    banks.bump(pcr);
    Ok(())
}

pub fn allocate(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let request: Vec<Selection> = read_selection(&mut call.params).p(1)?;
    call.done()?;
    let ps = &mut cx.core.ps;
    let mut new = ps.pcr_pending;
    for s in &request {
        new[s.alg.index()] = s.bits & 0x00FF_FFFF;
    }
    let full = [0x00FF_FFFFu32; 3];
    let needed = PcrBanks::size_needed(&new);
    let available = PcrBanks::size_needed(&full);
    // At least one bank must hold every PCR, or the platform cannot measure.
    let ok = needed <= available && new.iter().any(|&m| m == 0x00FF_FFFF);
    if ok {
        ps.pcr_pending = new;
        cx.core.vol.pcr_reconfig = true;
        cx.core.dirty = true;
    }
    call.out.u8(u8::from(ok));
    call.out.u32(u32::try_from(PCR_COUNT).unwrap_or(0));
    call.out.u32(needed);
    call.out.u32(available);
    Ok(())
}
