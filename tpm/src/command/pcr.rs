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
    if !model::reset_allowed(pcr, cx.locality) {
        return Err(Rc::new(rc::LOCALITY));
    }
    cx.core.vol.pcrs.reset(pcr);
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
    // Some bank must keep the H-CRTM PCR (0) and a DRTM PCR (17), as the
    // reference requires; otherwise the request is refused outright.
    if !new.iter().any(|m| m & 1 != 0) || !new.iter().any(|m| m & (1 << 17) != 0) {
        return Err(Rc::new(rc::PCR));
    }
    let needed = PcrBanks::size_needed(&new);
    let available = PcrBanks::size_needed(&full);
    let ok = needed <= available;
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

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, run, started};

    fn extend(tpm: &mut Tpm<TestPlatform>, loc: u8, pcr: u32, d: &[u8; 32]) -> u32 {
        run(
            tpm,
            loc,
            &Cmd::new(0x182).h(pcr).pw(b"").u32(1).u16(0x0B).b(d),
        )
        .0
    }
    fn read(tpm: &mut Tpm<TestPlatform>, alg: u16, bits: [u8; 3]) -> (u32, Vec<u8>) {
        run(tpm, 0, &Cmd::new(0x17E).u32(1).u16(alg).u8(3).b(&bits))
    }
    fn value(tpm: &mut Tpm<TestPlatform>, alg: u16, pcr: usize) -> Vec<u8> {
        let mut bits = [0u8; 3];
        bits[pcr / 8] = 1 << (pcr % 8);
        let (rc, body) = read(tpm, alg, bits);
        assert_eq!(rc, 0);
        // counter(4) selection(4+2+1+3) count(4) size(2)
        body[20..].to_vec()
    }

    #[test]
    fn extend_and_read() {
        let mut tpm = started();
        assert_eq!(value(&mut tpm, 0x0B, 23), [0; 32]);
        assert_eq!(value(&mut tpm, 0x0B, 17), [0xFF; 32]);
        assert_eq!(extend(&mut tpm, 0, 23, &[1; 32]), 0);
        let want = HashAlg::Sha256.digest(&[&[0; 32], &[1; 32]]);
        assert_eq!(value(&mut tpm, 0x0B, 23), want);
        // pcrUpdateCounter: 20 from Startup, +1 per allocated bank extended,
        // nothing for PCRs in the no-increment group.
        let (_, body) = read(&mut tpm, 0x0B, [0, 0, 0x80]);
        assert_eq!(&body[..4], &20u32.to_be_bytes());
        assert_eq!(extend(&mut tpm, 0, 5, &[1; 32]), 0);
        let two = Cmd::new(0x182)
            .h(5)
            .pw(b"")
            .u32(3)
            .u16(0x04)
            .b(&[0; 20])
            .u16(0x0B)
            .b(&[0; 32])
            .u16(0x0C)
            .b(&[0; 48]);
        assert_eq!(run(&mut tpm, 0, &two).0, 0);
        let (_, body) = read(&mut tpm, 0x0B, [0, 0, 0x80]);
        assert_eq!(&body[..4], &23u32.to_be_bytes());
        // NULL handle: accepted, no effect.
        assert_eq!(extend(&mut tpm, 0, 0x4000_0007, &[1; 32]), 0);
        // Bad PCR handle, unimplemented hash, bad select size, too many banks.
        assert_eq!(extend(&mut tpm, 0, 24, &[1; 32]), 0x184);
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x182).h(0).pw(b"").u32(1).u16(0x0D).b(&[0; 64])
            )
            .0,
            0x1C3
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x182).h(0).pw(b"").u32(4)).0,
            0x1D5
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x17E).u32(1).u16(0x0B).u8(2).b(&[1, 0])
            )
            .0,
            0x1C4
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x17E).u32(1).u16(0x12).u8(3).b(&[1, 0, 0])
            )
            .0,
            0x1C3
        );
        // PCR_Extend needs authorization.
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x182).h(0).u32(0)).0, 0x125);
    }

    #[test]
    fn read_limits_and_inactive_banks() {
        let mut tpm = started();
        let (rc, body) = read(&mut tpm, 0x0B, [0xFF, 0xFF, 0]);
        assert_eq!(rc, 0);
        // Only the first eight digests are returned; the selection says which.
        assert_eq!(&body[4..14], &[0, 0, 0, 1, 0, 0x0B, 3, 0xFF, 0, 0]);
        assert_eq!(&body[14..18], &8u32.to_be_bytes());
        // SHA-384 is not allocated by default: empty selection, no digests.
        let (rc, body) = read(&mut tpm, 0x0C, [0xFF, 0, 0]);
        assert_eq!(rc, 0);
        assert_eq!(&body[4..18], &[0, 0, 0, 1, 0, 0x0C, 3, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn locality_rules() {
        let mut tpm = started();
        assert_eq!(extend(&mut tpm, 0, 17, &[1; 32]), 0x907);
        assert_eq!(extend(&mut tpm, 2, 17, &[1; 32]), 0);
        assert_eq!(extend(&mut tpm, 1, 21, &[1; 32]), 0x907);
        assert_eq!(extend(&mut tpm, 2, 21, &[1; 32]), 0);
        let reset = |tpm: &mut Tpm<TestPlatform>, loc: u8, pcr: u32| {
            run(tpm, loc, &Cmd::new(0x13D).h(pcr).pw(b"")).0
        };
        assert_eq!(reset(&mut tpm, 0, 0), 0x907);
        assert_eq!(reset(&mut tpm, 4, 0), 0x907);
        assert_eq!(reset(&mut tpm, 3, 17), 0x907);
        assert_eq!(reset(&mut tpm, 4, 17), 0x907);
        assert_eq!(reset(&mut tpm, 4, 16), 0x907);
        assert_eq!(reset(&mut tpm, 2, 21), 0);
        assert_eq!(value(&mut tpm, 0x0B, 21), [0; 32]);
        assert_eq!(reset(&mut tpm, 0, 0x4000_0007), 0x184);
        assert_eq!(extend(&mut tpm, 0, 16, &[1; 32]), 0);
        assert_eq!(reset(&mut tpm, 0, 16), 0);
        assert_eq!(value(&mut tpm, 0x0B, 16), [0; 32]);
    }

    #[test]
    fn event_hashes_every_algorithm() {
        let mut tpm = started();
        let (rc, body) = run(&mut tpm, 0, &Cmd::new(0x13C).h(10).pw(b"").tpm2b(b"event"));
        assert_eq!(rc, 0);
        assert_eq!(&body[..4], &3u32.to_be_bytes());
        assert_eq!(&body[6..26], HashAlg::Sha1.digest(&[b"event"]).as_slice());
        let d256 = HashAlg::Sha256.digest(&[b"event"]);
        assert_eq!(
            value(&mut tpm, 0x0B, 10),
            HashAlg::Sha256.digest(&[&[0; 32], &d256])
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x13C).h(10).pw(b"").tpm2b(&[0; 1025])
            )
            .0,
            0x1D5
        );
    }

    #[test]
    fn allocate_takes_effect_at_next_startup_clear() {
        let mut tpm = started();
        let plat = 0x4000_000C;
        // SHA-384 all, SHA-1 none.
        let cmd = Cmd::new(0x12B)
            .h(plat)
            .pw(b"")
            .u32(2)
            .u16(0x0C)
            .u8(3)
            .b(&[0xFF; 3])
            .u16(0x04)
            .u8(3)
            .b(&[0; 3]);
        let (rc, body) = run(&mut tpm, 0, &cmd);
        assert_eq!(rc, 0);
        assert_eq!(body[0], 1);
        assert_eq!(&body[1..5], &24u32.to_be_bytes());
        assert_eq!(&body[5..9], &(24u32 * (32 + 48)).to_be_bytes());
        // Still the old allocation, and Shutdown(STATE) is refused.
        assert_eq!(read(&mut tpm, 0x0C, [1, 0, 0]).1[11], 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x145).u16(1)).0, 0x1CA);
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x144).u16(0)).0, 0);
        assert_eq!(read(&mut tpm, 0x0C, [1, 0, 0]).1[11], 1);
        assert_eq!(read(&mut tpm, 0x04, [1, 0, 0]).1[11], 0);
        // Wrong platform auth; an allocation with no full bank is refused.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x12B).h(plat).pw(b"x").u32(0)).0,
            0x9A2
        );
        let none = Cmd::new(0x12B)
            .h(plat)
            .pw(b"")
            .u32(2)
            .u16(0x0C)
            .u8(3)
            .b(&[0, 0, 0])
            .u16(0x0B)
            .u8(3)
            .b(&[0xFF, 0xFF, 0xFD]);
        assert_eq!(run(&mut tpm, 0, &none).0, 0x127);
        let no_pcr0 = Cmd::new(0x12B)
            .h(plat)
            .pw(b"")
            .u32(2)
            .u16(0x0C)
            .u8(3)
            .b(&[0, 0, 0])
            .u16(0x0B)
            .u8(3)
            .b(&[0xFE, 0xFF, 0xFF]);
        assert_eq!(run(&mut tpm, 0, &no_pcr0).0, 0x127);
        let partial = Cmd::new(0x12B)
            .h(plat)
            .pw(b"")
            .u32(1)
            .u16(0x0B)
            .u8(3)
            .b(&[0x01, 0x00, 0x02]);
        let (rc, body) = run(&mut tpm, 0, &partial);
        assert_eq!((rc, body[0]), (0, 1));
    }
}
